//! A test network of real `p2pmix` processes on 127.0.0.1 (port 0 everywhere): 3 authorities,
//! 2 gateways and 6 mixes, every node bootstrapping from the first gateway. Started and stopped
//! by `p2pmix::testnet` (what `p2pmix testnet up` and testnet/run.sh use); this adds the tests'
//! conveniences: nodes by index, metrics scrapes, verified consensus documents.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use libp2p::PeerId;
use p2pmix::{
    config::Authorities,
    directory::{VerifiedConsensus, verify_consensus},
    testnet::{LocalNet, NodeStart, Plan, Signal},
};

use super::{BIN, Running, Scratch, unix_ms, wait_for};

/// Parameters of [`Net::start`]: no loop cover from nodes, no measurement.
pub const QUIET: &str = "mix_loop_interval_us = 0\nhealth_probes_per_node = 0\n";

/// Epoch length of the test networks.
pub const EPOCH_MS: u64 = 8_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Gateway,
    Mix,
}

pub struct NodeProc {
    pub kind: Kind,
    /// Its name in the run directory (`gw0`, `mix3`).
    pub name: String,
    /// Environment variables of its process.
    pub env: Vec<(String, String)>,
    /// Where it listens besides 127.0.0.1 (port 0).
    pub also_listen: Vec<String>,
    pub dir: PathBuf,
}

pub struct Net {
    /// Dropped first: the processes die before their directory goes.
    pub local: LocalNet,
    pub scratch: Scratch,
    pub genesis: u64,
    pub nodes: Vec<NodeProc>,
}

/// `name = value` lines (of `[network.parameters]`) as pairs.
fn parameter_lines(parameters: &str) -> Vec<(String, u64)> {
    parameters
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("name = value");
            (
                k.trim().to_string(),
                v.trim().parse().expect("a whole number"),
            )
        })
        .collect()
}

impl Net {
    /// Starts 3 authorities, then 2 gateways and 6 mixes, every node bootstrapping from the
    /// first gateway only. Nodes send no loop cover of their own, so that tests can count
    /// exactly the packets they route; for the same reason the authorities measure nothing
    /// (`tests/health.rs` turns measurement on).
    pub fn start(name: &str) -> Net {
        Net::start_with(name, QUIET)
    }

    /// [`Net::start`], node `i` also listening on `also_listen(i)`.
    pub fn start_listening(name: &str, also_listen: impl Fn(usize) -> Vec<String>) -> Net {
        Net::start_with_env_listening(name, QUIET, |_, _| Vec::new(), also_listen)
    }

    /// [`Net::start`] with `parameters` (lines of `[network.parameters]`) for the authorities.
    pub fn start_with(name: &str, parameters: &str) -> Net {
        Net::start_with_env(name, parameters, |_, _| Vec::new())
    }

    /// [`Net::start_with`], node `i`'s process with the environment `env(i, genesis_unix_ms)`.
    pub fn start_with_env(
        name: &str,
        parameters: &str,
        env: impl Fn(usize, u64) -> Vec<(String, String)>,
    ) -> Net {
        Net::start_with_env_listening(name, parameters, env, |_| Vec::new())
    }

    /// [`Net::start_with_env`], node `i` also listening on `also_listen(i)`.
    pub fn start_with_env_listening(
        name: &str,
        parameters: &str,
        env: impl Fn(usize, u64) -> Vec<(String, String)>,
        also_listen: impl Fn(usize) -> Vec<String>,
    ) -> Net {
        let scratch = Scratch::new(name);
        let mut plan = Plan::new(BIN, scratch.0.join("net"))
            .with_epoch_ms(EPOCH_MS)
            .with_genesis_delay_ms(9_000)
            .with_log("info", "info,p2pmix=debug");
        for (k, v) in parameter_lines(parameters) {
            plan = plan.with_parameter(&k, v);
        }
        let start = |i: usize, genesis: u64| node_start(&env(i, genesis), &also_listen(i));
        let local = LocalNet::up_with(plan, start).expect("the test network starts");
        let run = local.run_dir().clone();
        let genesis = run.genesis_unix_ms();
        let nodes = run
            .nodes()
            .into_iter()
            .enumerate()
            .map(|(i, name)| NodeProc {
                kind: if i < 2 { Kind::Gateway } else { Kind::Mix },
                dir: run.process_dir(&name),
                name,
                env: env(i, genesis),
                also_listen: also_listen(i),
            })
            .collect();
        Net {
            local,
            scratch,
            genesis,
            nodes,
        }
    }

    /// The run directory (`auth0`…, `gw0`…, `mix0`…, `authorities.toml`).
    pub fn dir(&self) -> PathBuf {
        self.local.run_dir().path().to_path_buf()
    }

    /// The pinned authorities file.
    pub fn authorities_file(&self) -> PathBuf {
        self.local.run_dir().authorities_file()
    }

    /// Authority `i`'s log.
    pub fn authority_log(&self, i: usize) -> String {
        self.local.run_dir().log(&format!("auth{i}"))
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_listening(i, None);
    }

    /// Starts node `i` on `listen` (e.g. the address an earlier run of it was given by the OS,
    /// as a restarted production node keeps its configured port), or on port 0.
    pub fn start_node_listening(&mut self, i: usize, listen: Option<&str>) {
        let node = &self.nodes[i];
        let mut start = node_start(&node.env, &node.also_listen);
        if let Some(l) = listen {
            start = start.with_listen(l);
        }
        let name = node.name.clone();
        self.local
            .start_node(&name, &start)
            .expect("the node starts");
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.local.pid(&self.nodes[i].name)
    }

    /// Kills node `i` (SIGKILL: a crash).
    pub fn kill(&mut self, i: usize) {
        let name = self.nodes[i].name.clone();
        self.local
            .stop(&name, Signal::Kill)
            .expect("a node of the test");
    }

    /// Where node `i` listens on 127.0.0.1 (its first address if none is there).
    pub fn listen_addr(&self, i: usize) -> String {
        self.local
            .run_dir()
            .listen_addr(&self.nodes[i].name)
            .expect("node listens")
    }

    /// Every address node `i` listens on.
    pub fn listen_addrs(&self, i: usize) -> Vec<String> {
        self.local.run_dir().listen_addrs(&self.nodes[i].name)
    }

    pub fn peer(&self, i: usize) -> PeerId {
        self.local
            .run_dir()
            .peer(&self.nodes[i].name)
            .expect("listen-addrs ends in /p2p/")
    }

    pub fn metrics(&self, i: usize) -> Metrics {
        let addr = self
            .local
            .run_dir()
            .metrics_addr(&self.nodes[i].name)
            .expect("metrics-addr");
        scrape(&addr)
    }

    pub fn log(&self, i: usize) -> String {
        self.local.run_dir().log(&self.nodes[i].name)
    }

    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.genesis + epoch * EPOCH_MS
    }

    /// The verified consensus of `epoch`, as authority 0 published it.
    pub fn consensus(&self, epoch: u64) -> VerifiedConsensus {
        let pinned = Authorities::load(&self.authorities_file())
            .unwrap()
            .pinned();
        let path = self
            .local
            .run_dir()
            .process_dir("auth0")
            .join(format!("data/consensus-{epoch}.pb"));
        let bytes = wait_for("the consensus", Duration::from_secs(30), || {
            fs::read(&path).ok()
        });
        let at = unix_ms().max(self.epoch_start(epoch));
        verify_consensus(&bytes, &pinned, at, Some(epoch)).expect("a valid consensus")
    }

    /// Index of the node process with `peer`.
    pub fn index_of(&self, peer: PeerId) -> usize {
        (0..self.nodes.len())
            .find(|i| self.peer(*i) == peer)
            .expect("a node of the test")
    }

    /// Dumps every log on failure, to see why.
    pub fn dump_logs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            eprintln!("--- node {i} ({}) ---", node.name);
            eprintln!("{}", self.local.run_dir().log_tail(&node.name, 40));
        }
    }
}

/// How node processes of the tests start: their environment, and 127.0.0.1 plus `also_listen`.
fn node_start(env: &[(String, String)], also_listen: &[String]) -> NodeStart {
    let mut start = NodeStart::default();
    for (k, v) in env {
        start = start.with_env(k.clone(), v.clone());
    }
    for l in also_listen {
        start = start.with_also_listen(l.clone());
    }
    start
}

pub fn spawn(dir: &std::path::Path, args: &[&str], log: &str) -> Running {
    spawn_with_env(dir, args, log, &[])
}

pub fn spawn_with_env(
    dir: &std::path::Path,
    args: &[&str],
    log: &str,
    env: &[(String, String)],
) -> Running {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", log)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Running { child }
}

/// One scrape of a node's `/metrics`: series (name with labels) -> value.
pub struct Metrics(pub HashMap<String, f64>);

impl Metrics {
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

pub fn scrape(addr: &str) -> Metrics {
    let mut stream = TcpStream::connect(addr).expect("metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Metrics(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}
