//! `p2pmix testnet up|start|stop|host|status|send|down`: a test network of this binary's
//! processes on this machine, driven through [`p2pmix::testnet`] (what `testnet/run.sh`, the
//! multi-process tests and the examples use too).

use std::{
    collections::HashMap,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use p2pmix::testnet::{
    self, HostMode, LocalNet, NodeStart, Plan, RunDir, Signal, TestnetError, Wan,
};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// The run directory (made if missing; it must not hold another network).
    #[arg(long)]
    dir: PathBuf,
    /// Gateways.
    #[arg(long, default_value_t = 2)]
    gateways: usize,
    /// Mixes, spread over three layers.
    #[arg(long, default_value_t = 6)]
    mixes: usize,
    /// Epoch length, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    epoch_ms: u64,
    /// How long after the authorities start the first epoch begins, milliseconds.
    #[arg(long, default_value_t = 4_000)]
    genesis_delay_ms: u64,
    /// A network parameter the authorities publish, NAME=VALUE (repeatable), e.g.
    /// mean_delay_us=50000.
    #[arg(long = "parameter", value_name = "NAME=VALUE", value_parser = parse_parameter)]
    parameters: Vec<(String, u64)>,
    /// Where the processes run: loopback, or a network namespace each with an address in a /16
    /// of its own (spread) or all in one /16 (crowded); namespaces need root.
    #[arg(long, value_enum, default_value_t = Hosts::Loopback)]
    hosts: Hosts,
    /// With namespaces: delay and loss on every host's link, DELAY[,LOSS] (e.g. 30ms,1%), where
    /// the kernel has netem (the run says when it has not, and goes on without).
    #[arg(long, value_parser = parse_wan)]
    wan: Option<Wan>,
    /// Nodes record link traces and ground truth (links.trace, truth.trace in their directories).
    #[arg(long)]
    traces: bool,
    /// RUST_LOG of the authorities and nodes.
    #[arg(long, default_value = "info")]
    log: String,
    /// Longest wait for a consensus that admits every node, seconds (0: do not wait).
    #[arg(long, default_value_t = 120)]
    wait_s: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Hosts {
    Loopback,
    Spread,
    Crowded,
}

fn parse_parameter(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the value is not a whole number"))?;
    Ok((name.trim().to_string(), value))
}

fn parse_wan(s: &str) -> Result<Wan, String> {
    s.parse().map_err(|e: TestnetError| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// Until disarmed, SIGINT or SIGTERM runs `undo` and exits with 130: a command interrupted
/// half-way must not leave behind what it started (processes in their own process groups, which
/// a Ctrl-C at the terminal does not reach, and namespaces). The handlers are in place when
/// this returns.
struct OnInterrupt {
    armed: Arc<AtomicBool>,
    /// Set once a signal came: the watcher is undoing, and exits the process when done.
    caught: Arc<AtomicBool>,
}

impl OnInterrupt {
    fn arm(undo: impl FnOnce() + Send + 'static) -> Result<OnInterrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the signal watcher")?;
        let (mut int, mut term) = {
            let _inside = rt.enter();
            (
                signal(SignalKind::interrupt()).context("watching SIGINT")?,
                signal(SignalKind::terminate()).context("watching SIGTERM")?,
            )
        };
        let armed = Arc::new(AtomicBool::new(true));
        let caught = Arc::new(AtomicBool::new(false));
        let (watching, catching) = (armed.clone(), caught.clone());
        std::thread::spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            catching.store(true, Ordering::SeqCst);
            if watching.load(Ordering::SeqCst) {
                eprintln!("==> interrupted: stopping what this command started");
                undo();
            }
            std::process::exit(130);
        });
        Ok(OnInterrupt { armed, caught })
    }

    /// After a failure: if it came from the interruption (whatever the undoing stopped fails
    /// too), leave the process to the watcher, which exits once everything is stopped.
    fn hold_if_caught(&self) {
        if self.caught.load(Ordering::SeqCst) {
            // The watcher's undoing is bounded (down: SIGTERM, SIGKILL after 5 s).
            sleep(Duration::from_secs(120));
        }
    }

    /// What was started is the caller's to keep from now on.
    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

/// `up`: starts the network, waits for its first consensus, and leaves it running. Interrupted
/// before that, it stops whatever it started (as `down` does).
pub(crate) fn up(args: UpArgs) -> Result<ExitCode> {
    let dir = args.dir.clone();
    let interrupt = OnInterrupt::arm(move || {
        // Nothing starts once this returns, so down finds everything there is.
        testnet::stop_starting();
        if let Err(e) = testnet::down(&dir) {
            eprintln!("testnet down: {e}");
        }
    })?;
    let result = start_network(args, &interrupt);
    if result.is_err() {
        interrupt.hold_if_caught();
    }
    result
}

fn start_network(args: UpArgs, interrupt: &OnInterrupt) -> Result<ExitCode> {
    let started = Instant::now();
    let bin = std::env::current_exe().context("the path of this binary")?;
    let mut plan = Plan::new(bin, &args.dir)
        .with_gateways(args.gateways)
        .with_mixes(args.mixes)
        .with_epoch_ms(args.epoch_ms)
        .with_genesis_delay_ms(args.genesis_delay_ms)
        .with_log(&args.log, &args.log)
        .with_hosts(match args.hosts {
            Hosts::Loopback => HostMode::Loopback,
            Hosts::Spread => HostMode::Spread,
            Hosts::Crowded => HostMode::Crowded,
        });
    for (name, value) in &args.parameters {
        plan = plan.with_parameter(name, *value);
    }
    if let Some(wan) = args.wan.clone() {
        plan = plan.with_wan(wan);
    }
    if args.traces {
        plan = plan.with_node_args([
            "--trace-links",
            "links.trace",
            "--trace-truth",
            "truth.trace",
        ]);
    }
    let mut net = match LocalNet::up(plan) {
        Ok(net) => net,
        Err(e) => return Err(with_log_tail(e, &args.dir)),
    };
    let run = net.run_dir().clone();
    println!(
        "==> 3 authorities, {} gateways and {} mixes listen in {}",
        args.gateways,
        args.mixes,
        run.path().display()
    );
    if let Some(applied) = run.wan_applied() {
        match (applied, &args.wan) {
            (true, Some(w)) => println!("==> WAN: every host's link delays and loses {w}"),
            _ => println!(
                "==> WAN: this kernel has no netem (tc does not know the qdisc): running without delay and loss"
            ),
        }
    }
    if args.wait_s > 0 {
        if let Err(e) = net.wait_admitted(Duration::from_secs(args.wait_s)) {
            return Err(with_log_tail(e, run.path()));
        }
        println!(
            "==> consensus in force: {} nodes admitted, {}s after the start",
            run.nodes().len(),
            started.elapsed().as_secs()
        );
    }
    println!(
        "==> stop it with: p2pmix testnet down --dir {}",
        run.path().display()
    );
    interrupt.disarm();
    net.detach();
    Ok(ExitCode::SUCCESS)
}

/// The error, with the first authority's log when nothing more precise says why.
fn with_log_tail(e: TestnetError, dir: &Path) -> anyhow::Error {
    match &e {
        TestnetError::Timeout { .. } => {
            let tail = RunDir::open(dir)
                .map(|run| run.log_tail("auth0", 20))
                .unwrap_or_default();
            anyhow::Error::new(e).context(format!("the last lines of auth0/log:\n{tail}"))
        }
        _ => e.into(),
    }
}

#[derive(clap::Args)]
pub(crate) struct StartArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// The node to start (again): gw0, mix3, …
    name: String,
    /// Listen here instead of a free port (repeatable): a restarted node keeps the address the
    /// consensus has for it. (In namespaces a node has genconfig's fixed address, and these come
    /// beside it.)
    #[arg(long)]
    listen: Vec<String>,
    /// An environment variable of the process, KEY=VALUE (repeatable).
    #[arg(long, value_parser = parse_env)]
    env: Vec<(String, String)>,
}

/// `start`: starts one node again on its data directory.
pub(crate) fn start(args: StartArgs) -> Result<ExitCode> {
    let mut net = LocalNet::open(&args.dir)?;
    let mut how = NodeStart::default();
    for l in args.listen {
        how = how.with_listen(l);
    }
    for (k, v) in args.env {
        how = how.with_env(k, v);
    }
    let pid = net.start_node(&args.name, &how)?;
    println!("{} started as process {pid}", args.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct StopArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// The process to stop (a node, an authority, or a client a script recorded).
    name: String,
    /// How: term (a clean stop), int (as Ctrl-C) or kill (a crash). After 10 s, SIGKILL.
    #[arg(long, value_enum, default_value_t = SignalArg::Term)]
    signal: SignalArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum SignalArg {
    Term,
    Int,
    Kill,
}

/// `stop`: stops one process.
pub(crate) fn stop(args: StopArgs) -> Result<ExitCode> {
    let mut net = LocalNet::open(&args.dir)?;
    let how = match args.signal {
        SignalArg::Term => Signal::Term,
        SignalArg::Int => Signal::Int,
        SignalArg::Kill => Signal::Kill,
    };
    if net.stop(&args.name, how)? {
        println!("{} stopped", args.name);
    } else {
        println!("{} was not running", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct RecordArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// The process's name (e.g. a client).
    name: String,
    /// Its process id.
    pid: u32,
}

/// `record`: lists a process a script started, so that `down` stops it too.
pub(crate) fn record(args: RecordArgs) -> Result<ExitCode> {
    RunDir::open(&args.dir)?;
    testnet::record_pid(&args.dir, args.pid, &args.name)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct HostArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// The process (e.g. a client a script starts): its host is made if it has none.
    name: String,
}

/// `host`: prints `NAMESPACE ADDRESS` of a process's host (`-` for the namespace on loopback).
pub(crate) fn host(args: HostArgs) -> Result<ExitCode> {
    let run = RunDir::open(&args.dir)?;
    let host = run.add_host(&args.name)?;
    println!(
        "{} {}",
        host.namespace.as_deref().unwrap_or("-"),
        host.address
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub(crate) struct DirArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `status`: every process, running or not; exit 1 if an authority or node is down.
pub(crate) fn status(args: DirArgs) -> Result<ExitCode> {
    let run = RunDir::open(&args.dir)?;
    let all = testnet::status(&run);
    let mut expected = run.authorities();
    expected.extend(run.nodes());
    let down: Vec<&String> = expected
        .iter()
        .filter(|n| !all.iter().any(|s| &s.name == *n && s.running))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({"dir": run.path(), "processes": all, "down": down})
        );
    } else {
        println!(
            "{:<10} {:>8}  {:<8} {:<9} listen",
            "name", "pid", "state", "admitted"
        );
        for s in &all {
            println!(
                "{:<10} {:>8}  {:<8} {:<9} {}",
                s.name,
                s.pid,
                if s.running { "running" } else { "gone" },
                match s.admitted {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                },
                s.listen.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(if down.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `down`: stops every process and removes the namespaces.
pub(crate) fn down(args: DirArgs) -> Result<ExitCode> {
    let report = testnet::down(&args.dir)?;
    if args.json {
        println!("{}", json!(report));
    } else {
        println!(
            "stopped {} processes of {} ({} needed SIGKILL), removed {} network namespaces",
            report.stopped,
            args.dir.display(),
            report.killed,
            report.namespaces
        );
        if !report.running.is_empty() {
            println!("still running: {}", report.running.join(" "));
        }
        if !report.left.is_empty() {
            println!(
                "could not remove (run again as root): {}",
                report.left.join(" ")
            );
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    /// The run directory.
    #[arg(long)]
    dir: PathBuf,
    /// Messages to send.
    #[arg(long, default_value_t = 10)]
    messages: u32,
    /// Pause between messages, milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Longest wait for every message, seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// `send`: a sender on the first gateway sends to a receiver on the last; exit 0 when every
/// message arrived exactly once. The clients' data, events and logs stay in `DIR/send-N/`.
pub(crate) fn send(args: SendArgs) -> Result<ExitCode> {
    let run = RunDir::open(&args.dir)?;
    let round = (1..10_000)
        .find(|n| !run.path().join(format!("send-{n}")).exists())
        .context("10,000 send rounds in this directory already")?;
    let home = run.path().join(format!("send-{round}"));
    let (alice, bob) = (format!("alice{round}"), format!("bob{round}"));
    let gateways = run.gateways();
    let gateway = |name: &str| {
        run.listen_addr(name)
            .with_context(|| format!("{name} does not listen"))
    };
    let (alice_gw, bob_gw) = (
        gateway(&gateways[0])?,
        gateway(&gateways[gateways.len() - 1])?,
    );
    let bin = run.bin().to_path_buf();
    let authorities = run.authorities_file();
    let (alice_dir, bob_dir) = (home.join("alice"), home.join("bob"));
    for d in [&alice_dir, &bob_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let out = Command::new(&bin)
        .args(["client", "address", "--data-dir"])
        .arg(&bob_dir)
        .args(["--gateway", &bob_gw])
        .output()
        .context("running p2pmix client address")?;
    if !out.status.success() {
        bail!(
            "client address: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Interrupted, the clients stop too (they would run until their own timeouts). None once
    // stopping: no client starts after that (the lock is held from a start to its listing).
    let clients: Arc<Mutex<Option<Vec<u32>>>> = Arc::new(Mutex::new(Some(Vec::new())));
    let started = clients.clone();
    let _interrupt = OnInterrupt::arm(move || {
        let pids = started
            .lock()
            .map(|mut p| p.take().unwrap_or_default())
            .unwrap_or_default();
        for pid in pids {
            let _ = testnet::signal(pid, Signal::Term);
        }
    })?;
    let client = |name: &str, dir: &Path, args: &[&str]| -> Result<std::process::Child> {
        let mut listed = clients
            .lock()
            .map_err(|_| anyhow::anyhow!("the client list is poisoned"))?;
        let Some(pids) = listed.as_mut() else {
            bail!("interrupted");
        };
        let child = run
            .add_host(name)?
            .command(&bin)
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .arg("--authorities")
            .arg(&authorities)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("events.jsonl"))?)
            .stderr(fs::File::create(dir.join("log"))?)
            .process_group(0)
            .spawn()
            .context("starting a client")?;
        pids.push(child.id());
        testnet::record_pid(run.path(), child.id(), name)?;
        Ok(child)
    };
    let timeout = args.timeout.to_string();
    let listen_timeout = (args.timeout + 60).to_string();
    let mut bob_proc = client(
        &bob,
        &bob_dir,
        &[
            "client",
            "listen",
            "--json",
            "--gateway",
            &bob_gw,
            "--timeout",
            &listen_timeout,
        ],
    )?;
    let (count, interval) = (args.messages.to_string(), args.interval_ms.to_string());
    let mut alice_proc = client(
        &alice,
        &alice_dir,
        &[
            "client",
            "send",
            "--json",
            "--gateway",
            &alice_gw,
            "--to",
            &address,
            "--message",
            "hello through the mixnet",
            "--count",
            &count,
            "--interval-ms",
            &interval,
            "--timeout",
            &timeout,
        ],
    )?;
    println!(
        "==> {alice} ({}) sends {} messages to {bob} ({})",
        gateways[0],
        args.messages,
        gateways[gateways.len() - 1]
    );
    // The sender stops once every message is acknowledged or failed (its own --timeout).
    let deadline = Instant::now() + Duration::from_secs(args.timeout + 30);
    while matches!(alice_proc.try_wait(), Ok(None)) && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    let _ = alice_proc.kill();
    let _ = alice_proc.wait();
    // The receiver leaves as after Ctrl-C: its last acknowledgements go out.
    let _ = testnet::signal(bob_proc.id(), Signal::Int);
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(bob_proc.try_wait(), Ok(None)) && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    let _ = bob_proc.kill();
    let _ = bob_proc.wait();
    let tally = Tally::of(
        &alice_dir.join("events.jsonl"),
        &bob_dir.join("events.jsonl"),
    );
    println!(
        "sent {}, received {} exactly once, {} duplicates, {} lost",
        tally.sent, tally.once, tally.duplicates, tally.lost
    );
    println!(
        "{}",
        json!({"sent": tally.sent, "delivered": tally.once, "duplicates": tally.duplicates,
               "lost": tally.lost, "dir": home})
    );
    Ok(if tally.exactly_once(args.messages) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What a sender's and a receiver's event logs say.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    sent: u32,
    once: u32,
    duplicates: u32,
    lost: u32,
}

impl Tally {
    fn of(sent: &Path, received: &Path) -> Tally {
        let events = |p: &Path| -> Vec<Value> {
            fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        let ids = |events: &[Value], kind: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["event"].as_str() == Some(kind))
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        };
        Tally::count(
            &ids(&events(sent), "sent"),
            &ids(&events(received), "received"),
        )
    }

    fn count(sent: &[String], received: &[String]) -> Tally {
        let mut copies: HashMap<&str, u32> = sent.iter().map(|s| (s.as_str(), 0)).collect();
        let mut strangers = 0;
        for r in received {
            match copies.get_mut(r.as_str()) {
                Some(n) => *n += 1,
                None => strangers += 1,
            }
        }
        Tally {
            sent: copies.len() as u32,
            once: copies.values().filter(|n| **n >= 1).count() as u32,
            duplicates: copies.values().map(|n| n.saturating_sub(1)).sum::<u32>() + strangers,
            lost: copies.values().filter(|n| **n == 0).count() as u32,
        }
    }

    fn exactly_once(&self, asked: u32) -> bool {
        self.sent == asked && self.once == asked && self.duplicates == 0 && self.lost == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_tally_catches_losses_duplicates_and_strangers() {
        let sent = ids(&["a", "b", "c"]);
        assert!(Tally::count(&sent, &ids(&["c", "a", "b"])).exactly_once(3));
        let lost = Tally::count(&sent, &ids(&["a", "b"]));
        assert_eq!((lost.once, lost.lost), (2, 1));
        assert!(!lost.exactly_once(3));
        let twice = Tally::count(&sent, &ids(&["a", "b", "c", "a"]));
        assert_eq!(twice.duplicates, 1);
        assert!(!twice.exactly_once(3));
        assert!(!Tally::count(&sent, &ids(&["a", "b", "c", "x"])).exactly_once(3));
        // Fewer sent than asked (the sender gave up early) is no success either.
        assert!(!Tally::count(&ids(&["a"]), &ids(&["a"])).exactly_once(3));
    }
}
