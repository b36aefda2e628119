//! `p2pmix-anonymity RUN_DIR`: how anonymous each message of a testnet run was, from the link
//! traces and the consensus (see `p2pmix_examples::anonymity`). Prints the figures for people,
//! then one JSON object as the last line. The run must have been started with tracing
//! (`./testnet/run.sh --clients N`).

use std::{path::PathBuf, process::ExitCode};

use p2pmix_examples::anonymity::analyse;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: p2pmix-anonymity RUN_DIR");
        return ExitCode::from(2);
    };
    match analyse(&PathBuf::from(&dir)) {
        Ok(analysis) => {
            for p in &analysis.problems {
                eprintln!("warning: {p}");
            }
            let summary = analysis.summary();
            print!("{}", summary.human());
            print!("{}", analysis.timings.human());
            println!(
                "analysis            {} link records, {} undelivered, {} unmatched, {:.2} s",
                analysis.events, analysis.undelivered, analysis.unmatched, analysis.seconds
            );
            println!("{}", summary.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
