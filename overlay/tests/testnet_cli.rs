//! `p2pmix testnet up|status|send|stop|start|down` end to end: the commands testnet/run.sh
//! drives, on 127.0.0.1 with port 0 everywhere.

mod common;

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{BIN, Scratch, wait_for};
use p2pmix::testnet::{Signal, signal};
use serde_json::Value;

fn p2pmix(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("p2pmix runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops the network if the test fails half-way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = p2pmix(&["testnet", "down", "--dir", &self.0]);
    }
}

fn status(dir: &str) -> (bool, Value) {
    let out = p2pmix(&["testnet", "status", "--dir", dir, "--json"]);
    let json = serde_json::from_slice(&out.stdout).expect("status prints JSON");
    (out.status.success(), json)
}

/// Whether any process of the network still runs (its pids, read by this test itself).
fn any_running(dir: &str) -> bool {
    std::fs::read_to_string(format!("{dir}/pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("p2pmix"))
        })
}

#[test]
fn a_network_comes_up_carries_messages_survives_a_restart_and_goes_down() {
    let scratch = Scratch::new("testnet-cli");
    let dir = scratch.0.join("net").display().to_string();
    let _down = Down(dir.clone());
    let up = p2pmix(&[
        "testnet",
        "up",
        "--dir",
        &dir,
        "--epoch-ms",
        "4000",
        "--parameter",
        "health_probes_per_node=0",
        "--parameter",
        "mix_loop_interval_us=0",
        "--wait-s",
        "90",
    ]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("8 nodes admitted"), "{}", text(&up));

    let (ok, json) = status(&dir);
    assert!(ok, "{json}");
    let processes = json["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 11, "{json}");
    for p in processes {
        assert_eq!(p["running"], true, "{p}");
        if p["name"].as_str().unwrap().starts_with("auth") {
            assert!(p["admitted"].is_null(), "{p}");
        } else {
            assert_eq!(p["admitted"], true, "{p}");
        }
    }

    let send = p2pmix(&["testnet", "send", "--dir", &dir, "--messages", "3"]);
    assert!(send.status.success(), "{}", text(&send));
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&send.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&last["sent"], &last["delivered"], &last["duplicates"]),
        (&Value::from(3), &Value::from(3), &Value::from(0)),
        "{last}"
    );

    // A crashed gateway shows in the status (exit 1, named), and comes back on its address.
    let addr = std::fs::read_to_string(format!("{dir}/gw1/data/listen-addrs")).unwrap();
    let addr = addr.lines().next().unwrap().split("/p2p/").next().unwrap();
    let stop = p2pmix(&["testnet", "stop", "--dir", &dir, "gw1", "--signal", "kill"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let (ok, json) = status(&dir);
    assert!(!ok, "{json}");
    assert_eq!(json["down"], serde_json::json!(["gw1"]), "{json}");
    // Started twice, or a name the network does not have: refused, nothing started.
    let start = p2pmix(&["testnet", "start", "--dir", &dir, "gw1", "--listen", addr]);
    assert!(start.status.success(), "{}", text(&start));
    let again = p2pmix(&["testnet", "start", "--dir", &dir, "gw1"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("still runs"), "{}", text(&again));
    let unknown = p2pmix(&["testnet", "start", "--dir", &dir, "gw9"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no process gw9"),
        "{}",
        text(&unknown)
    );
    assert!(status(&dir).0);

    // A second network in the same directory is refused before anything starts.
    let twice = p2pmix(&["testnet", "up", "--dir", &dir]);
    assert!(!twice.status.success());
    assert!(text(&twice).contains("already holds"), "{}", text(&twice));

    let down = p2pmix(&["testnet", "down", "--dir", &dir]);
    assert!(down.status.success(), "{}", text(&down));
    wait_for("every process gone", Duration::from_secs(15), || {
        (!any_running(&dir)).then_some(())
    });
    assert!(!status(&dir).0);
}

#[test]
fn an_up_interrupted_half_way_stops_what_it_started() {
    let scratch = Scratch::new("testnet-cli-interrupt");
    let dir = scratch.0.join("net").display().to_string();
    let _down = Down(dir.clone());
    let mut up = Command::new(BIN)
        .args(["testnet", "up", "--dir", &dir, "--wait-s", "90"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("p2pmix runs");
    // Some processes run (in process groups of their own, which a terminal's Ctrl-C misses).
    wait_for("the first node to start", Duration::from_secs(60), || {
        let pids = std::fs::read_to_string(format!("{dir}/pids")).unwrap_or_default();
        pids.lines().any(|l| l.contains(" gw0")).then_some(())
    });
    assert!(any_running(&dir));
    assert!(signal(up.id(), Signal::Int).expect("kill -INT"));
    let status = wait_for("up to exit", Duration::from_secs(60), || {
        up.try_wait().expect("waiting for up")
    });
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(up.stderr.as_mut().expect("piped"), &mut err);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!any_running(&dir), "processes left running: {err}");
}

#[test]
fn wrong_flags_and_directories_get_clear_errors() {
    let scratch = Scratch::new("testnet-cli-flags");
    let dir = scratch.0.join("net").display().to_string();
    for (args, says) in [
        (vec!["--hosts", "moon"], "invalid value 'moon'"),
        (vec!["--mixes", "2"], "at least 3 mixes"),
        (
            vec!["--parameter", "no_such=1"],
            "unknown network parameter no_such",
        ),
        (vec!["--parameter", "mean_delay_us"], "expected NAME=VALUE"),
        (vec!["--wan", "30ms"], "needs network namespaces"),
        (
            vec!["--hosts", "spread", "--wan", "30"],
            "the delay must look like 30ms",
        ),
    ] {
        let mut all = vec!["testnet", "up", "--dir", &dir];
        all.extend(args.iter().copied());
        let out = p2pmix(&all);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
        assert!(
            !scratch.0.join("net/auth0").exists(),
            "{args:?} started something"
        );
    }
    for cmd in ["status", "down", "send"] {
        let out = p2pmix(&["testnet", cmd, "--dir", &scratch.0.display().to_string()]);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            text(&out).contains("not a test network run directory"),
            "{cmd}: {}",
            text(&out)
        );
    }
}
