//! The processes of a run directory: `pids` (`PID NAME` a line), signals, whether a listed
//! process still runs, and stopping them all.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
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

/// Sends `signal` to `pid` with `kill(1)`. `Ok(false)` if the process is gone; an error if
/// `kill` could not run or was refused (e.g. a network started by root, stopped by a user).
pub fn signal(pid: u32, signal: Signal) -> Result<bool, TestnetError> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(TestnetError::UnknownProcess(format!("process id {pid}")));
    }
    let out = Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestnetError::Spawn {
            program: "kill".into(),
            source,
        })?;
    if out.status.success() {
        return Ok(true);
    }
    if start_time(pid).is_none() {
        return Ok(false);
    }
    Err(TestnetError::Command {
        command: format!("kill -s {} {pid}", signal.name()),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// When `pid` started, as the OS counts it (`/proc/PID/stat`'s field 22 on Linux, `ps -o
/// lstart` elsewhere; both stay the same across exec), or `None` if no such process runs. With
/// the process id, it names one process: an id alone may be reused by another once ours ended.
pub(crate) fn start_time(pid: u32) -> Option<String> {
    if Path::new("/proc/self/stat").exists() {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // `after` starts at field 3 (the state); a zombie has ended.
        if fields.first() == Some(&"Z") {
            return None;
        }
        return fields.get(22 - 3).map(|s| s.to_string());
    }
    let out = Command::new("ps")
        .args(["-o", "lstart=", "-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace(' ', "_");
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// One listed process: its id, name and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) pid: u32,
    pub(crate) name: String,
    /// `None` in lines written without one (by hand, or before start times were recorded).
    pub(crate) start: Option<String>,
}

impl Listed {
    /// Whether the listed process still runs: the same id with the same start time, or, for a
    /// line without a start time, an id whose program is a p2pmix binary.
    pub(crate) fn runs(&self) -> bool {
        match (&self.start, start_time(self.pid)) {
            (_, None) => false,
            (Some(listed), Some(now)) => *listed == now,
            (None, Some(_)) => runs_p2pmix(self.pid),
        }
    }
}

/// Whether `pid`'s program (its first argument) is a `p2pmix` binary.
fn runs_p2pmix(pid: u32) -> bool {
    let argv0 = if Path::new("/proc/self/cmdline").exists() {
        fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(|a| a.to_vec()))
            .map(|a| String::from_utf8_lossy(&a).into_owned())
    } else {
        Command::new("ps")
            .args(["-o", "comm=", "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    argv0.is_some_and(|a| Path::new(&a).file_name().is_some_and(|f| f == "p2pmix"))
}

/// `DIR/pids`: the newest process of each name, in the order they were first started.
pub(crate) fn read_pids(dir: &Path) -> Vec<Listed> {
    let text = fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let mut out: Vec<Listed> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some(name)) = (f.next().and_then(|p| p.parse().ok()), f.next()) else {
            continue;
        };
        let listed = Listed {
            pid,
            name: name.to_string(),
            start: f.next().map(str::to_string),
        };
        match out.iter_mut().find(|l| l.name == name) {
            Some(entry) => *entry = listed,
            None => out.push(listed),
        }
    }
    out
}

/// Whether this program stopped starting things ([`stop_starting`]); held while something is
/// made and listed, so that a stop waits for a start under way to be listed.
static STOPPED_STARTING: Mutex<bool> = Mutex::new(false);

/// Refuses every later start of a process, namespace or link by this program's test networks
/// (they fail with [`TestnetError::Interrupted`]), once a start under way is listed. An
/// interrupted command calls it before [`down`], which then finds everything there is.
pub fn stop_starting() {
    *STOPPED_STARTING
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = true;
}

/// Leave to make something and list it: hold the guard until it is listed.
pub(crate) fn may_start() -> Result<MutexGuard<'static, bool>, TestnetError> {
    let guard = STOPPED_STARTING
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if *guard {
        return Err(TestnetError::Interrupted);
    }
    Ok(guard)
}

/// Records in `dir/pids` that `name` now runs as `pid` (the newest line of a name counts, so
/// this appends), with its start time, so that [`down`] stops it and nothing else.
pub fn record_pid(dir: &Path, pid: u32, name: &str) -> Result<(), TestnetError> {
    use std::io::Write;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(TestnetError::UnknownProcess(format!("{name:?}")));
    }
    let path = dir.join("pids");
    let start = start_time(pid).unwrap_or_else(|| "-".into());
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    writeln!(file, "{pid} {name} {start}").map_err(io(&path))
}

/// The listed process of `name`, if it still runs.
pub(crate) fn running_pid(dir: &Path, name: &str) -> Option<u32> {
    read_pids(dir)
        .into_iter()
        .find(|l| l.name == name)
        .filter(Listed::runs)
        .map(|l| l.pid)
}

/// Signals the listed process and waits up to `grace` for it to go; then SIGKILL, and up to
/// 5 s more. `Ok(true)` if it was running.
pub(crate) fn stop_listed(
    listed: &Listed,
    first: Signal,
    grace: Duration,
) -> Result<bool, TestnetError> {
    if !listed.runs() {
        return Ok(false);
    }
    signal(listed.pid, first)?;
    let mut deadline = Instant::now() + grace;
    let mut killed = false;
    while listed.runs() {
        if Instant::now() >= deadline {
            if killed {
                return Err(TestnetError::Timeout {
                    what: format!("{} to end after SIGKILL", listed.name),
                    secs: 5,
                });
            }
            signal(listed.pid, Signal::Kill)?;
            killed = true;
            deadline = Instant::now() + Duration::from_secs(5);
        }
        sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Waits up to `within` until none of `listed` runs.
fn wait_gone(listed: &[Listed], within: Duration) {
    let deadline = Instant::now() + within;
    while listed.iter().any(Listed::runs) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
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
    /// Namespaces and links that could not be removed (still listed for the next try).
    pub left: Vec<String>,
    /// Processes still running after everything (none, unless a signal was refused).
    pub running: Vec<String>,
}

impl DownReport {
    /// Whether everything is gone.
    pub fn is_clean(&self) -> bool {
        self.left.is_empty() && self.running.is_empty()
    }
}

/// Stops every process listed in `dir/pids` (SIGTERM, then SIGKILL for those still running
/// after 5 s) and removes the namespaces and the bridge the network made. Works on any run
/// directory with a `pids` file, `testnet/run.sh`'s included.
pub fn down(dir: &Path) -> Result<DownReport, TestnetError> {
    if !dir.join("pids").exists() && !dir.join("testnet.json").exists() {
        return Err(TestnetError::NotARunDir(dir.to_path_buf()));
    }
    let ours: Vec<Listed> = read_pids(dir).into_iter().filter(Listed::runs).collect();
    let mut refused = None;
    for l in &ours {
        if let Err(e) = signal(l.pid, Signal::Term) {
            refused.get_or_insert(e);
        }
    }
    wait_gone(&ours, Duration::from_secs(5));
    let mut report = DownReport {
        stopped: ours.len(),
        ..DownReport::default()
    };
    for l in ours.iter().filter(|l| l.runs()) {
        if let Err(e) = signal(l.pid, Signal::Kill) {
            refused.get_or_insert(e);
        }
        report.killed += 1;
    }
    wait_gone(&ours, Duration::from_secs(5));
    let (removed, left) = hosts::remove_all(dir);
    report.namespaces = removed;
    report.left = left;
    report.running = ours
        .iter()
        .filter(|l| l.runs())
        .map(|l| l.name.clone())
        .collect();
    match refused {
        Some(e) if !report.running.is_empty() => Err(e),
        _ => Ok(report),
    }
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
        .map(|l| ProcessStatus {
            running: l.runs(),
            listen: run.listen_addr(&l.name),
            admitted: nodes
                .contains(&l.name)
                .then(|| super::net::admitted(run, &l.name)),
            name: l.name,
            pid: l.pid,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pids_file_keeps_the_newest_process_of_each_name_and_knows_it_by_its_start() {
        let dir = std::env::temp_dir().join(format!("p2pmix-pids-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        record_pid(&dir, me, "gw0").unwrap();
        record_pid(&dir, 11, "mix0").unwrap();
        record_pid(&dir, me, "gw0").unwrap();
        // Lines a script appended by hand, and garbage, are read as well as they can be.
        let mut text = fs::read_to_string(dir.join("pids")).unwrap();
        text.push_str(&format!("13 alice\nnot a line\n\n14\n{me} reused 1\n"));
        fs::write(dir.join("pids"), text).unwrap();
        let listed = read_pids(&dir);
        let names: Vec<(u32, &str)> = listed.iter().map(|l| (l.pid, l.name.as_str())).collect();
        assert_eq!(
            names,
            [(me, "gw0"), (11, "mix0"), (13, "alice"), (me, "reused")]
        );
        // This process, with its recorded start time, runs; the same id with another start
        // time is someone else (a reused id); an id without a start time counts only if its
        // program is a p2pmix binary, which this test binary (p2pmix-<hash>) is not.
        assert!(listed[0].runs());
        assert!(!listed[3].runs());
        let unrecorded = Listed {
            pid: me,
            name: "x".into(),
            start: None,
        };
        assert!(!unrecorded.runs());
        assert!(start_time(u32::MAX - 1).is_none());
        assert!(record_pid(&dir, 1, "two words").is_err());
        assert!(signal(0, Signal::Term).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
