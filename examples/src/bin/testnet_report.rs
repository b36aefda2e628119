//! `p2pmix-testnet-report`: turns the event logs of a testnet run (`testnet/run.sh`) into a
//! human summary, a PNG of the measured end-to-end latency against the theoretical one, and, as
//! the last line of its output, one JSON object. Exits 1 when a message was lost or duplicated
//! or a drill failed; with `--expected N`, messages the sender never sent count as lost.
//!
//! The theory: a message waits for a tick of the sender's Poisson stream (exponential, mean the
//! send interval), then each of the `layers` mixes holds it for an exponential delay (mean
//! `mean-delay-ms`); gateways add no delay. Its distribution is drawn by sampling.
//!
//! `--sent` and `--received` may be given several times (one event log per client). With
//! `--anonymity RUN_DIR` (a run with link traces) the report adds how anonymous each message
//! was (`p2pmix_examples::anonymity`): more lines, an `anonymity` object in the JSON line, and
//! three more panels in the PNG (entropy per message against the ideal, the adversary's success
//! against chance, epsilon). `--cpu NAME=CORES` adds measured CPU use. `--excluded NAMES` (comma
//! separated, possibly empty) names the nodes the consensus left out for health in a drill: an
//! `excluded` list in the JSON line, beside the delivery counts. `--drill NAME=RESULT` lines
//! go into a `drills` object at the end of the JSON line (`fail` fails the run). A sender's
//! `resumed` events (it was started again on its data dir) count as sent, with the time of the
//! first line that names the message.

use std::{collections::HashMap, fs, io::BufWriter, path::PathBuf, process::ExitCode};

use p2pmix_examples::{
    anonymity::{Analysis, analyse, score::quantile},
    chart::{Bar, Marker, Series, bar_chart, cdf_chart, density_chart, grid, histogram},
    plot::Canvas,
};
use rand::RngExt;

struct Args {
    expected: Option<usize>,
    sent: Vec<PathBuf>,
    received: Vec<PathBuf>,
    anonymity: Option<PathBuf>,
    cpu: Vec<(String, f64)>,
    mean_delay_ms: f64,
    layers: u32,
    send_interval_ms: f64,
    plot: Option<PathBuf>,
    summary: Option<PathBuf>,
    drills: Vec<(String, String)>,
    excluded: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        expected: None,
        sent: Vec::new(),
        received: Vec::new(),
        anonymity: None,
        cpu: Vec::new(),
        mean_delay_ms: 50.0,
        layers: 3,
        send_interval_ms: 20.0,
        plot: None,
        summary: None,
        drills: Vec::new(),
        excluded: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--expected" => args.expected = Some(number(value()?)? as usize),
            "--sent" => args.sent.push(value()?.into()),
            "--received" => args.received.push(value()?.into()),
            "--anonymity" => args.anonymity = Some(value()?.into()),
            "--cpu" => {
                let v = value()?;
                let (k, v) = v.split_once('=').ok_or("--cpu NAME=CORES")?;
                let cores = v.parse::<f64>().map_err(|e| format!("--cpu {k}: {e}"))?;
                args.cpu.push((k.into(), cores));
            }
            "--mean-delay-ms" => args.mean_delay_ms = number(value()?)?,
            "--layers" => args.layers = number(value()?)? as u32,
            "--send-interval-ms" => args.send_interval_ms = number(value()?)?,
            "--plot" => args.plot = Some(value()?.into()),
            "--summary" => args.summary = Some(value()?.into()),
            "--drill" => {
                let v = value()?;
                let (k, v) = v.split_once('=').ok_or("--drill NAME=RESULT")?;
                args.drills.push((k.into(), v.into()));
            }
            "--excluded" => {
                let v = value()?;
                let names = v.split(',').map(str::trim).filter(|n| !n.is_empty());
                args.excluded = Some(names.map(String::from).collect());
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.sent.is_empty() || args.received.is_empty() {
        return Err("give --sent FILE and --received FILE".into());
    }
    Ok(args)
}

/// The JSON objects of JSON-lines files (lines that do not parse are skipped).
fn events(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    paths
        .iter()
        .flat_map(|path: &PathBuf| {
            fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut sent_at: HashMap<String, f64> = HashMap::new();
    let mut failed = 0;
    for e in events(&args.sent) {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str() {
            Some("sent") => {
                sent_at.insert(id, e["ms"].as_f64().unwrap_or(0.0));
            }
            // A sender started again on its data dir resumes what its outbox held; one killed
            // after the message was durable but before it printed `sent` has only this line.
            Some("resumed") => {
                sent_at
                    .entry(id)
                    .or_insert_with(|| e["ms"].as_f64().unwrap_or(0.0));
            }
            Some("failed") => failed += 1,
            _ => {}
        }
    }
    let mut copies: HashMap<String, u32> = HashMap::new();
    let mut latencies = Vec::new();
    let mut strangers = 0;
    for e in events(&args.received) {
        // Replies (answers through SURBs) are not the messages sent.
        if e["event"].as_str() != Some("received") || !e["in_reply_to"].is_null() {
            continue;
        }
        let id = e["id"].as_str().unwrap_or_default().to_string();
        let n = copies.entry(id.clone()).or_default();
        *n += 1;
        match sent_at.get(&id) {
            Some(t) if *n == 1 => latencies.push(e["ms"].as_f64().unwrap_or(0.0) - t),
            Some(_) => {}
            None => strangers += 1,
        }
    }
    // Messages the sender was asked to send but did not (it stopped early) count as lost.
    let sent = sent_at.len().max(args.expected.unwrap_or(0));
    let delivered = latencies.len();
    let duplicates: u32 = copies.values().map(|n| n.saturating_sub(1)).sum();
    let lost = sent - delivered;
    latencies.sort_by(f64::total_cmp);
    let (p50, p90, p99) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
    );
    let expected_mean = args.layers as f64 * args.mean_delay_ms + args.send_interval_ms;

    // Theory by sampling: one send-stream wait plus one exponential hold per mix.
    let mut rng = rand::rng();
    let mut exp = |mean: f64| -> f64 { -(1.0 - rng.random::<f64>()).ln() * mean };
    let mut theory: Vec<f64> = (0..200_000)
        .map(|_| {
            exp(args.send_interval_ms)
                + (0..args.layers)
                    .map(|_| exp(args.mean_delay_ms))
                    .sum::<f64>()
        })
        .collect();
    theory.sort_by(f64::total_cmp);
    let measured_mean = latencies.iter().sum::<f64>() / delivered.max(1) as f64;

    let mut summary = String::new();
    summary += &format!("messages sent       {sent}\n");
    summary += &format!("delivered           {delivered}\n");
    summary += &format!("lost                {lost}\n");
    summary += &format!("duplicates          {duplicates}\n");
    if failed > 0 {
        summary += &format!("reported failed     {failed}\n");
    }
    if strangers > 0 {
        summary += &format!("unexpected messages {strangers}\n");
    }
    summary += &format!(
        "latency (ms)        p50 {p50:.0}  p90 {p90:.0}  p99 {p99:.0}  mean {measured_mean:.0}\n"
    );
    summary += &format!(
        "theory (ms)         p50 {:.0}  p90 {:.0}  p99 {:.0}  mean {expected_mean:.0}  ({} mixes x {} ms mean hold + {} ms mean send wait)\n",
        percentile(&theory, 0.5),
        percentile(&theory, 0.9),
        percentile(&theory, 0.99),
        args.layers,
        args.mean_delay_ms,
        args.send_interval_ms
    );
    if let Some(names) = &args.excluded {
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" ")
        };
        summary += &format!("left out (health)   {names}\n");
    }
    let mut drills_ok = true;
    for (name, result) in &args.drills {
        summary += &format!("drill {name:<13} {result}\n");
        drills_ok &= result != "fail";
    }
    if !args.cpu.is_empty() {
        let parts: Vec<String> = args
            .cpu
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        summary += &format!("cpu (cores)         {}\n", parts.join("  "));
    }
    let mut anonymity_ok = true;
    let anonymity = args.anonymity.as_ref().map(|dir| match analyse(dir) {
        Ok(a) => {
            for p in &a.problems {
                eprintln!("warning: {p}");
            }
            summary += &a.summary().human();
            summary += &a.timings.human();
            anonymity_ok &= !a.messages.is_empty();
            Some(a)
        }
        Err(e) => {
            eprintln!("anonymity analysis failed: {e:#}");
            anonymity_ok = false;
            None
        }
    });

    if let Some(path) = &args.plot {
        // Retransmitted outliers (a killed mix) land in the last bin rather than squash the rest.
        let max = (percentile(&theory, 0.995).max(percentile(&latencies, 0.9)) * 1.3).max(1.0);
        let bins = 40;
        let series = [
            Series {
                name: format!("MEASURED ({delivered} MESSAGES)"),
                colour: [200, 40, 40],
                density: histogram(&latencies, max, bins),
            },
            Series {
                name: "THEORY".into(),
                colour: [40, 80, 200],
                density: histogram(&theory, max, bins),
            },
        ];
        let latency = density_chart(
            "P2PMIX TESTNET: LATENCY, MEASURED AND THEORY",
            "END-TO-END LATENCY (MS)",
            max,
            &series,
            &[],
        );
        let cdf = cdf_chart(
            "LATENCY: CUMULATIVE, MEASURED AND THEORY",
            "END-TO-END LATENCY (MS)",
            max,
            &series,
        );
        let chart = match &anonymity {
            Some(Some(a)) => grid(&anonymity_panels(latency, cdf, a), 2),
            _ => grid(&[latency, cdf], 2),
        };
        match fs::File::create(path) {
            Ok(f) => {
                if let Err(e) = chart.write_png(&mut BufWriter::new(f)) {
                    eprintln!("could not write {}: {e}", path.display());
                } else {
                    summary += &format!("plot                {}\n", path.display());
                }
            }
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    let excluded = args.excluded.as_ref().map_or(String::new(), |names| {
        format!("\"excluded\":{},", serde_json::Value::from(names.clone()))
    });
    let mut json = format!(
        "{{\"sent\":{sent},\"delivered\":{delivered},\"duplicates\":{duplicates},\"lost\":{lost},{excluded}\"latency_ms\":{{\"p50\":{p50:.1},\"p90\":{p90:.1},\"p99\":{p99:.1}}},\"expected_mean_ms\":{expected_mean:.1}"
    );
    match &anonymity {
        Some(Some(a)) => json += &format!(",\"anonymity\":{}", a.summary().json()),
        Some(None) => json += ",\"anonymity\":null",
        None => {}
    }
    if !args.cpu.is_empty() {
        let parts: Vec<String> = args
            .cpu
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v:.3}"))
            .collect();
        json += &format!(",\"cpu_cores\":{{{}}}", parts.join(","));
    }
    if !args.drills.is_empty() {
        let drills: serde_json::Map<String, serde_json::Value> = args
            .drills
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect();
        json += &format!(",\"drills\":{}", serde_json::Value::Object(drills));
    }
    json += "}";
    print!("{summary}");
    println!("{json}");
    if let Some(path) = &args.summary
        && let Err(e) = fs::write(path, format!("{summary}{json}\n"))
    {
        eprintln!("could not write {}: {e}", path.display());
    }
    if lost == 0 && duplicates == 0 && sent > 0 && drills_ok && anonymity_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The latency panel and the three anonymity panels: entropy per message against the ideal,
/// the adversary's success against chance, epsilon.
fn anonymity_panels(latency: Canvas, cdf: Canvas, a: &Analysis) -> Vec<Canvas> {
    let s = a.summary();
    let entropies: Vec<f64> = a.messages.iter().map(|m| m.entropy_bits).collect();
    let h_max = (s.ideal_bits.ceil() + 0.5).max(1.0);
    let entropy = density_chart(
        "SENDER ENTROPY PER MESSAGE",
        "ENTROPY (BITS)",
        h_max,
        &[Series {
            name: format!("MEASURED ({} MESSAGES)", s.messages),
            colour: [200, 40, 40],
            density: histogram(&entropies, h_max, 40),
        }],
        &[
            Marker {
                at: s.ideal_bits,
                label: format!("IDEAL LOG2({}) = {:.2}", s.senders, s.ideal_bits),
                colour: [40, 80, 200],
            },
            Marker {
                at: 0.9 * s.ideal_bits,
                label: "TARGET: 90% OF IDEAL".into(),
                colour: [40, 160, 40],
            },
            Marker {
                at: s.entropy_bits_p50,
                label: format!("MEDIAN {:.2}", s.entropy_bits_p50),
                colour: [120, 120, 120],
            },
        ],
    );
    let pct = |v: f64| 100.0 * v;
    let success = bar_chart(
        "ADVERSARY TOP-1 SUCCESS AGAINST CHANCE",
        "%",
        (pct(s.top1_success).max(pct(2.0 * s.chance)) * 1.25).max(1.0),
        &[
            Bar {
                label: "TOP-1 SUCCESS".into(),
                value: pct(s.top1_success),
                colour: [200, 40, 40],
            },
            Bar {
                label: format!("CHANCE 1/{}", s.senders),
                value: pct(s.chance),
                colour: [40, 80, 200],
            },
        ],
        &[Marker {
            at: pct(2.0 * s.chance),
            label: "TARGET: AT MOST 2X CHANCE".into(),
            colour: [40, 160, 40],
        }],
    );
    let mut finite: Vec<f64> = a
        .messages
        .iter()
        .map(|m| m.epsilon)
        .filter(|e| e.is_finite())
        .collect();
    let e_max = (quantile(&mut finite, 0.95).unwrap_or(1.0) * 1.2).max(0.5);
    let epsilon = density_chart(
        "EPSILON PER MESSAGE: LN(MAX P / MIN P)",
        "EPSILON",
        e_max,
        &[Series {
            name: format!("FINITE: {:.0}% OF MESSAGES", 100.0 - 100.0 * s.ruled_out),
            colour: [200, 40, 40],
            density: histogram(&finite, e_max, 40),
        }],
        &[Marker {
            at: s.epsilon_p50.min(e_max),
            label: if s.epsilon_p50.is_finite() {
                format!("MEDIAN {:.2}", s.epsilon_p50)
            } else {
                "MEDIAN INFINITE".into()
            },
            colour: [120, 120, 120],
        }],
    );
    vec![latency, cdf, entropy, success, epsilon]
}
