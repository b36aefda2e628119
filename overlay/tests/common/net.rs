//! A test network of real `p2pmix` processes on 127.0.0.1 (port 0 everywhere): 3 authorities,
//! 2 gateways and 6 mixes, every node bootstrapping from the first gateway.
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

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use p2pmix::{
    config::Authorities,
    directory::{VerifiedConsensus, verify_consensus},
};

use super::{BIN, Running, Scratch, keygen, unix_ms, wait_for};

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
    /// Environment variables of its process.
    pub env: Vec<(String, String)>,
    /// Where it listens besides 127.0.0.1 (port 0).
    pub also_listen: Vec<String>,
    pub dir: PathBuf,
    pub running: Option<Running>,
}

pub struct Net {
    pub scratch: Scratch,
    pub genesis: u64,
    /// Held so that the authorities are killed with the net.
    _authorities: Vec<Running>,
    pub nodes: Vec<NodeProc>,
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
        let genesis = unix_ms() + 9_000;
        let keys: Vec<String> = (0..3)
            .map(|i| keygen(&scratch.0.join(format!("a{i}"))))
            .collect();
        // A local test network: everything listens on 127.0.0.1.
        let network = format!(
            "[network]\ngenesis_unix_ms = {genesis}\nepoch_ms = {EPOCH_MS}\ntest_network = true\n"
        );
        let mut authorities = Vec::new();
        let mut addrs: Vec<Option<String>> = vec![None; 3];
        for i in 0..3 {
            let dir = scratch.0.join(format!("a{i}"));
            fs::write(dir.join("authorities.toml"), pinned(&keys, &addrs)).unwrap();
            fs::write(
                dir.join("authority.toml"),
                format!(
                    "identity = \"identity.key\"\ndata_dir = \"data\"\nauthorities = \"authorities.toml\"\n{network}\n[network.parameters]\n{parameters}"
                ),
            )
            .unwrap();
            authorities.push(spawn(
                &dir,
                &["authority", "--config", "authority.toml"],
                "info",
            ));
            addrs[i] = Some(wait_for(
                "an authority to listen",
                Duration::from_secs(30),
                || first_line(&dir.join("data/listen-addrs")),
            ));
        }
        fs::write(
            scratch.0.join("authorities.toml"),
            format!("{}{network}", pinned(&keys, &addrs)),
        )
        .unwrap();
        let mut net = Net {
            scratch,
            genesis,
            _authorities: authorities,
            nodes: Vec::new(),
        };
        for i in 0..8 {
            let kind = if i < 2 { Kind::Gateway } else { Kind::Mix };
            let dir = net.scratch.0.join(format!("n{i}"));
            fs::create_dir_all(&dir).unwrap();
            net.nodes.push(NodeProc {
                kind,
                env: env(i, genesis),
                also_listen: also_listen(i),
                dir,
                running: None,
            });
            net.start_node(i);
        }
        net
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_listening(i, None);
    }

    /// Starts node `i` on `listen` (e.g. the address an earlier run of it was given by the OS,
    /// as a restarted production node keeps its configured port), or on port 0.
    pub fn start_node_listening(&mut self, i: usize, listen: Option<&str>) {
        let bootstrap = (i != 0).then(|| self.listen_addr(0));
        let node = &mut self.nodes[i];
        let _ = fs::remove_file(node.dir.join("data/listen-addrs"));
        let authorities = self.scratch.0.join("authorities.toml");
        let mut args = vec![
            "node".to_string(),
            "--authorities".into(),
            authorities.display().to_string(),
            "--data-dir".into(),
            "data".into(),
            "--role".into(),
            match node.kind {
                Kind::Gateway => "gateway".into(),
                Kind::Mix => "mix".into(),
            },
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap".into(), b]);
        }
        if let Some(l) = listen {
            args.extend(["--listen".into(), l.into()]);
        } else if !node.also_listen.is_empty() {
            args.extend(["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
        }
        for l in &node.also_listen {
            args.extend(["--listen".into(), l.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node.running = Some(spawn_with_env(
            &node.dir,
            &args,
            "info,p2pmix=debug",
            &node.env,
        ));
        let dir = node.dir.clone();
        wait_for("a node to listen", Duration::from_secs(30), || {
            first_line(&dir.join("data/listen-addrs"))
        });
    }

    /// Where node `i` listens on 127.0.0.1 (its first address if none is there).
    pub fn listen_addr(&self, i: usize) -> String {
        let path = self.nodes[i].dir.join("data/listen-addrs");
        fs::read_to_string(&path)
            .ok()
            .and_then(|all| {
                let mut lines = all.lines();
                let first = lines.clone().next().map(str::to_owned);
                lines
                    .find(|l| l.starts_with("/ip4/127.0.0.1/"))
                    .map(str::to_owned)
                    .or(first)
            })
            .expect("node listens")
    }

    /// Every address node `i` listens on.
    pub fn listen_addrs(&self, i: usize) -> Vec<String> {
        fs::read_to_string(self.nodes[i].dir.join("data/listen-addrs"))
            .map(|all| all.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    pub fn peer(&self, i: usize) -> PeerId {
        let addr: Multiaddr = self.listen_addr(i).parse().unwrap();
        match addr.iter().last() {
            Some(Protocol::P2p(p)) => p,
            _ => panic!("listen-addrs ends in /p2p/"),
        }
    }

    pub fn metrics(&self, i: usize) -> Metrics {
        let addr = first_line(&self.nodes[i].dir.join("data/metrics-addr")).expect("metrics-addr");
        scrape(&addr)
    }

    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
    }

    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.genesis + epoch * EPOCH_MS
    }

    /// The verified consensus of `epoch`, as authority 0 published it.
    pub fn consensus(&self, epoch: u64) -> VerifiedConsensus {
        let pinned = Authorities::load(&self.scratch.0.join("authorities.toml"))
            .unwrap()
            .pinned();
        let path = self.scratch.0.join(format!("a0/data/consensus-{epoch}.pb"));
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
        for i in 0..self.nodes.len() {
            let log = self.log(i);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node {i} ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn pinned(keys: &[String], addrs: &[Option<String>]) -> String {
    keys.iter()
        .zip(addrs)
        .map(|(k, a)| {
            let a = a.as_ref().map(|a| format!("\"{a}\"")).unwrap_or_default();
            format!("[[authority]]\npublic_key = \"{k}\"\naddresses = [{a}]\n\n")
        })
        .collect()
}

pub fn first_line(path: &std::path::Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
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
