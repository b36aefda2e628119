//! The processes of a run directory: `pids` (`PID NAME` a line), signals, whether a listed
//! process still runs, and stopping them all.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{RunDir, TestnetError, error::io, hosts};

/// A signal for [`signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// A clean stop.
    Term,
    /// What Ctrl-C sends: clients send their last acknowledgements and close their traces.
    Int,
    /// No clean-up at all (a crash).
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
        }
    }
}

/// Sends `signal` to `pid` with `kill(1)`; false if it is gone (or `kill` could not run).
pub fn signal(pid: u32, signal: Signal) -> bool {
    Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` still runs a p2pmix program. A listed id of a process that ended long ago may
/// belong to someone else by now, so this looks at the command line (`/proc` on Linux, `ps`
/// elsewhere); a zombie has none and counts as gone.
pub(crate) fn is_ours(pid: u32) -> bool {
    let proc_root = Path::new("/proc/self");
    if proc_root.exists() {
        return fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("p2pmix"));
    }
    Command::new("ps")
        .args(["-p", &pid.to_string(), "-o", "command="])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("p2pmix"))
}

/// `DIR/pids`: the newest process of each name, in the order they were first started.
pub(crate) fn read_pids(dir: &Path) -> Vec<(u32, String)> {
    let text = fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let mut out: Vec<(u32, String)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some(name)) = (f.next().and_then(|p| p.parse().ok()), f.next()) else {
            continue;
        };
        match out.iter_mut().find(|(_, n)| n == name) {
            Some(entry) => entry.0 = pid,
            None => out.push((pid, name.to_string())),
        }
    }
    out
}

/// Records in `dir/pids` that `name` now runs as `pid` (replacing its earlier line), so that
/// [`down`] stops it too.
pub fn record_pid(dir: &Path, pid: u32, name: &str) -> Result<(), TestnetError> {
    let path = dir.join("pids");
    let mut entries = read_pids(dir);
    match entries.iter_mut().find(|(_, n)| n == name) {
        Some(entry) => entry.0 = pid,
        None => entries.push((pid, name.to_string())),
    }
    let text: String = entries.iter().map(|(p, n)| format!("{p} {n}\n")).collect();
    let tmp = dir.join("pids.new");
    fs::write(&tmp, text).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))
}

/// The listed process of `name`, if it still runs.
pub(crate) fn running_pid(dir: &Path, name: &str) -> Option<u32> {
    read_pids(dir)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(p, _)| p)
        .filter(|p| is_ours(*p))
}

/// Signals `pid` and waits up to `grace` for it to go; then SIGKILL. True if it was running.
pub(crate) fn stop_pid(pid: u32, first: Signal, grace: Duration) -> bool {
    if !is_ours(pid) {
        return false;
    }
    signal(pid, first);
    let deadline = Instant::now() + grace;
    while is_ours(pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if is_ours(pid) {
        signal(pid, Signal::Kill);
    }
    true
}

/// What [`down`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Processes that were still running and were stopped.
    pub stopped: usize,
    /// Of them, those that needed SIGKILL after the grace period.
    pub killed: usize,
    /// Network namespaces removed.
    pub namespaces: usize,
}

/// Stops every process listed in `dir/pids` (SIGTERM, then SIGKILL for those still running
/// after 5 s) and removes the namespaces and the bridge the network made. Works on any run
/// directory with a `pids` file, `testnet/run.sh`'s included.
pub fn down(dir: &Path) -> Result<DownReport, TestnetError> {
    if !dir.join("pids").exists() && !dir.join("testnet.json").exists() {
        return Err(TestnetError::NotARunDir(dir.to_path_buf()));
    }
    let ours: Vec<u32> = read_pids(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| is_ours(*p))
        .collect();
    for pid in &ours {
        signal(*pid, Signal::Term);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours.iter().any(|p| is_ours(*p)) && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    let mut report = DownReport {
        stopped: ours.len(),
        ..DownReport::default()
    };
    for pid in ours.iter().filter(|p| is_ours(**p)) {
        signal(*pid, Signal::Kill);
        report.killed += 1;
    }
    report.namespaces = hosts::remove_all(dir);
    Ok(report)
}

/// One process of a network as [`status`] sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Its name.
    pub name: String,
    /// Its newest process id.
    pub pid: u32,
    /// Whether that process still runs.
    pub running: bool,
    /// Where it listens (nodes and authorities).
    pub listen: Option<String>,
    /// For nodes: whether the newest consensus it holds lists it.
    pub admitted: Option<bool>,
}

/// Every listed process: running or not, where it listens, and for nodes whether they are in
/// the consensus they hold.
pub fn status(run: &RunDir) -> Vec<ProcessStatus> {
    let nodes = run.nodes();
    read_pids(run.path())
        .into_iter()
        .map(|(pid, name)| ProcessStatus {
            running: is_ours(pid),
            listen: run.listen_addr(&name),
            admitted: nodes
                .contains(&name)
                .then(|| super::net::admitted(run, &name)),
            name,
            pid,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pids_file_keeps_the_newest_process_of_each_name() {
        let dir = std::env::temp_dir().join(format!("p2pmix-pids-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        record_pid(&dir, 10, "gw0").unwrap();
        record_pid(&dir, 11, "mix0").unwrap();
        record_pid(&dir, 12, "gw0").unwrap();
        // A line a script appended, and garbage, are read as well as they can be.
        let mut text = fs::read_to_string(dir.join("pids")).unwrap();
        text.push_str("13 alice\nnot a line\n\n14\n");
        fs::write(dir.join("pids"), text).unwrap();
        assert_eq!(
            read_pids(&dir),
            [
                (12, "gw0".to_string()),
                (11, "mix0".to_string()),
                (13, "alice".to_string())
            ]
        );
        // Nothing of ours runs under these ids (ours is not a "p2pmix" command line here
        // either: the unit test binary is p2pmix-<hash>, so use an id that cannot exist).
        assert!(!is_ours(u32::MAX - 1));
        fs::remove_dir_all(&dir).unwrap();
    }
}
