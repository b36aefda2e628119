//! The testnet report on made-up client event logs: counts, exit status, the JSON line and the
//! plot file.
#![allow(missing_docs)]

use std::{fs, path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_p2pmix-testnet-report");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2pmix-report-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the report on `sent` ids (sent at 1000 ms) and `received` (id, ms) lines; returns the
/// exit code and the last line.
fn report(name: &str, expected: usize, sent: &[&str], received: &[(&str, u64)]) -> (i32, String) {
    report_with(name, expected, sent, received, &[])
}

/// [`report`] with more flags.
fn report_with(
    name: &str,
    expected: usize,
    sent: &[&str],
    received: &[(&str, u64)],
    flags: &[&str],
) -> (i32, String) {
    let dir = scratch(name);
    let sent_log: String = sent
        .iter()
        .map(|id| format!("{{\"event\":\"sent\",\"id\":\"{id}\",\"ms\":1000}}\n"))
        .collect();
    let received_log: String = received
        .iter()
        .map(|(id, ms)| format!("{{\"event\":\"received\",\"id\":\"{id}\",\"ms\":{ms}}}\n"))
        .collect();
    fs::write(dir.join("sent.jsonl"), sent_log).unwrap();
    fs::write(dir.join("received.jsonl"), received_log).unwrap();
    let out = Command::new(BIN)
        .args(["--expected", &expected.to_string(), "--sent"])
        .arg(dir.join("sent.jsonl"))
        .arg("--received")
        .arg(dir.join("received.jsonl"))
        .arg("--plot")
        .arg(dir.join("report.png"))
        .args(flags)
        .output()
        .unwrap();
    let png = fs::read(dir.join("report.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let _ = fs::remove_dir_all(&dir);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    (out.status.code().unwrap_or(-1), last)
}

#[test]
fn every_message_once_passes_with_its_percentiles() {
    let (code, json) = report(
        "ok",
        3,
        &["a", "b", "c"],
        &[("a", 1100), ("b", 1200), ("c", 1300)],
    );
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        json,
        "{\"sent\":3,\"delivered\":3,\"duplicates\":0,\"lost\":0,\"latency_ms\":{\"p50\":200.0,\"p90\":300.0,\"p99\":300.0},\"expected_mean_ms\":170.0}"
    );
}

#[test]
fn a_lost_or_duplicated_or_unsent_message_fails_the_run() {
    let (code, json) = report("lost", 2, &["a", "b"], &[("a", 1100)]);
    assert_eq!(code, 1);
    assert!(json.contains("\"lost\":1"), "{json}");

    let (code, json) = report("dup", 1, &["a"], &[("a", 1100), ("a", 1500)]);
    assert_eq!(code, 1);
    assert!(json.contains("\"duplicates\":1"), "{json}");

    // The sender stopped after one of the two messages it was asked to send.
    let (code, json) = report("unsent", 2, &["a"], &[("a", 1100)]);
    assert_eq!(code, 1);
    assert!(
        json.contains("\"sent\":2") && json.contains("\"lost\":1"),
        "{json}"
    );
}

#[test]
fn several_event_logs_add_up_and_a_failed_anonymity_analysis_fails_the_run() {
    let dir = scratch("many");
    // Two clients, each sending one message to the other (and printing what it received).
    fs::write(
        dir.join("c0.jsonl"),
        "{\"event\":\"sent\",\"id\":\"a\",\"ms\":1000}\n{\"event\":\"received\",\"id\":\"b\",\"ms\":1300}\n",
    )
    .unwrap();
    fs::write(
        dir.join("c1.jsonl"),
        "{\"event\":\"sent\",\"id\":\"b\",\"ms\":1000}\n{\"event\":\"received\",\"id\":\"a\",\"ms\":1100}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--expected").arg("2");
        for c in ["c0", "c1"] {
            let log = dir.join(format!("{c}.jsonl"));
            cmd.arg("--sent").arg(&log).arg("--received").arg(&log);
        }
        let out = cmd.args(extra).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        (
            out.status.code().unwrap_or(-1),
            stdout.lines().last().unwrap_or_default().to_string(),
        )
    };
    let (code, json) = run(&["--cpu", "clients=0.25"]);
    assert_eq!(code, 0, "{json}");
    assert!(json.contains("\"sent\":2,\"delivered\":2"), "{json}");
    assert!(
        json.contains("\"p50\":100.0") && json.contains("\"p90\":300.0"),
        "{json}"
    );
    assert!(
        json.ends_with(",\"cpu_cores\":{\"clients\":0.250}}"),
        "{json}"
    );
    // A run directory without traces: the analysis fails, and so does the run.
    let (code, json) = run(&["--anonymity", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(json.contains("\"anonymity\":null"), "{json}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_nodes_left_out_for_health_are_listed_beside_the_counts() {
    let sent = ["a", "b"];
    let received = [("a", 1100), ("b", 1200)];
    let (code, json) = report_with(
        "excluded",
        2,
        &sent,
        &received,
        &["--excluded", "mix1,mix4", "--drill", "blackhole=ok"],
    );
    assert_eq!(code, 0, "{json}");
    assert!(
        json.starts_with(
            "{\"sent\":2,\"delivered\":2,\"duplicates\":0,\"lost\":0,\"excluded\":[\"mix1\",\"mix4\"],\"latency_ms\":"
        ),
        "{json}"
    );
    // Asked for and none left out: an empty list, not a missing field.
    let (_, json) = report_with("none", 2, &sent, &received, &["--excluded", ""]);
    assert!(json.contains("\"lost\":0,\"excluded\":[],"), "{json}");
    // A failed black-hole drill fails the run although every message arrived.
    let (code, _) = report_with(
        "drill",
        2,
        &sent,
        &received,
        &["--excluded", "", "--drill", "blackhole=fail"],
    );
    assert_eq!(code, 1);
}
