//! The `p2pmix` binary: a thin command line over the library (see `cli/`).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!("{e:?}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
