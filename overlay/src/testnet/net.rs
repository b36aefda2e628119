//! Starting a test network's processes, restarting one, and waiting until every node is in a
//! consensus.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use libp2p_core::Multiaddr;
use libp2p_identity::Keypair;
use p2pmix_bootstrap::{PinnedAuthorities, verify_consensus};

use super::{
    DownReport, HostMode, Plan, RunDir, Signal, TestnetError,
    error::io,
    hosts,
    layout::Manifest,
    procs::{self, Listed, record_pid, signal},
};
use crate::{config::Authorities, identity::write_identity, runtime::unix_ms};

/// How long a process may take to write its listen addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// genconfig's ports in a network of namespaces (one process a host, so no two collide).
const GENCONFIG_P2P_PORT: u16 = 4100;
const GENCONFIG_METRICS_PORT: u16 = 9100;

/// How a node process is started: where it listens and what environment it gets.
#[derive(Debug, Clone, Default)]
pub struct NodeStart {
    listen: Vec<String>,
    also_listen: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<String>,
}

impl NodeStart {
    /// Listen on `addr` instead of a free port on the host's address (a restarted node keeps
    /// the address the consensus has for it). In a network of namespaces, where the node has
    /// genconfig's fixed address already, `addr` comes beside that one.
    pub fn with_listen(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(addr.into());
        self
    }

    /// Listen on `addr` besides the host's address.
    pub fn with_also_listen(mut self, addr: impl Into<String>) -> Self {
        self.also_listen.push(addr.into());
        self
    }

    /// One more environment variable of the process.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `RUST_LOG` of this process instead of the plan's.
    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }
}

/// A test network of `p2pmix` processes. Dropping it stops the processes it started (SIGKILL)
/// and removes its namespaces, unless it was [detached](LocalNet::detach) or
/// [opened](LocalNet::open) from a run directory.
#[derive(Debug)]
pub struct LocalNet {
    run: RunDir,
    children: Vec<(String, Child)>,
    owned: bool,
}

impl LocalNet {
    /// Starts the network of `plan`: three authorities, then the gateways and the mixes, each
    /// once it wrote where it listens. On loopback the files are ours (port 0, each authority
    /// told where the earlier ones listen); in namespaces they are what `p2pmix testnet
    /// genconfig` writes for the hosts' addresses, started as an operator would. Returns once
    /// every process listens; [`LocalNet::wait_admitted`] waits for the consensus.
    pub fn up(plan: Plan) -> Result<Self, TestnetError> {
        Self::up_with(plan, |_, _| NodeStart::default())
    }

    /// [`LocalNet::up`], node `i` (gateways first) started as `node(i, genesis_unix_ms)` says.
    pub fn up_with(
        plan: Plan,
        node: impl Fn(usize, u64) -> NodeStart,
    ) -> Result<Self, TestnetError> {
        plan.check()?;
        let dir = plan.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Files of a script's own (e.g. binaries) may be there; another network may not.
        if ["testnet.json", "pids", "auth0"]
            .iter()
            .any(|f| dir.join(f).exists())
        {
            return Err(TestnetError::NotEmpty(dir));
        }
        let dir = dir.canonicalize().map_err(io(&dir))?;
        let bin = if plan.bin.components().count() > 1 {
            plan.bin.canonicalize().map_err(io(&plan.bin))?
        } else {
            plan.bin.clone()
        };
        let mut manifest = Manifest {
            plan: Plan {
                bin,
                dir: dir.clone(),
                ..plan
            },
            genesis_unix_ms: 0,
            // Interface names stay within Linux's 15 bytes: p2pbr + 7 digits, v + 7 + - + 5.
            tag: std::process::id().to_string(),
            wan_applied: false,
        };
        fs::write(dir.join("pids"), "").map_err(io(&dir))?;
        // From here on, dropping `net` removes whatever was made.
        let mut net = LocalNet {
            run: RunDir::create(dir.clone(), manifest.clone())?,
            children: Vec::new(),
            owned: true,
        };
        manifest.wan_applied = hosts::prepare(&dir, &manifest)?;
        manifest.genesis_unix_ms = unix_ms() + manifest.plan.genesis_delay_ms;
        net.run = RunDir::create(dir.clone(), manifest)?;
        if net.run.manifest.plan.hosts != HostMode::Loopback {
            net.genconfig()?;
            for name in net.run.authorities() {
                net.spawn_authority(&name)?;
            }
        } else {
            net.start_loopback_authorities()?;
        }
        let genesis = net.run.genesis_unix_ms();
        for (i, name) in net.run.nodes().into_iter().enumerate() {
            net.start_node(&name, &node(i, genesis))?;
        }
        Ok(net)
    }

    /// Whether the processes run on `genconfig`'s files (made for a network of namespaces: an
    /// address each, so genconfig's fixed ports are free on every host), rather than on files of
    /// ours with port 0 (loopback, where the processes share one address). Read from the run
    /// directory, so that one made before namespaces ran on genconfig still restarts its way.
    fn runs_genconfig_files(&self) -> bool {
        self.run.path().join("genconfig").is_dir()
    }

    /// Writes the network with `p2pmix testnet genconfig` into `DIR/genconfig`, every host
    /// given by its namespace's address, and makes each process's directory (`auth0`, `gw0`,
    /// …) a link to its own there (`authority-0`, `gateway-0`, …): the operator's path, tested.
    fn genconfig(&self) -> Result<(), TestnetError> {
        let run = &self.run;
        let plan = &run.manifest.plan;
        let roles = [
            ("authority", run.authorities()),
            ("gateway", run.gateways()),
            ("mix", run.mixes()),
        ];
        // In genconfig's order (authorities, gateways, mixes: one host each, dealt in turn),
        // which is also the order `up` used to make the hosts in.
        let mut hosts = Vec::new();
        for (_, names) in &roles {
            for name in names {
                hosts.push(run.add_host(name)?.address.to_string());
            }
        }
        let out = run.path().join("genconfig");
        let mut args: Vec<String> = vec![
            "testnet".into(),
            "genconfig".into(),
            "--hosts".into(),
            hosts.join(","),
            "--test-network".into(),
            "--authorities".into(),
            run.authorities().len().to_string(),
            "--gateways".into(),
            plan.gateways.to_string(),
            "--mixes".into(),
            plan.mixes.to_string(),
            "--p2p-port".into(),
            GENCONFIG_P2P_PORT.to_string(),
            "--metrics-port".into(),
            GENCONFIG_METRICS_PORT.to_string(),
            "--metrics-loopback".into(),
            "--epoch-ms".into(),
            run.epoch_ms().to_string(),
            "--genesis-unix-ms".into(),
            run.genesis_unix_ms().to_string(),
        ];
        for (name, value) in &plan.parameters {
            args.extend(["--parameter".into(), format!("{name}={value}")]);
        }
        let command = std::process::Command::new(run.bin())
            .args(&args)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestnetError::Spawn {
                program: run.bin().display().to_string(),
                source,
            })?;
        if !command.status.success() {
            return Err(TestnetError::Command {
                command: format!(
                    "{} {} --out {}",
                    run.bin().display(),
                    args.join(" "),
                    out.display()
                ),
                stderr: String::from_utf8_lossy(&command.stderr).trim().to_string(),
            });
        }
        for (role, names) in &roles {
            for (i, name) in names.iter().enumerate() {
                let link = run.process_dir(name);
                std::os::unix::fs::symlink(format!("genconfig/{role}-{i}"), &link)
                    .map_err(io(&link))?;
            }
        }
        let file = run.authorities_file();
        fs::copy(out.join("authorities.toml"), &file).map_err(io(&file))?;
        Ok(())
    }

    /// Starts authority `name` on the `authority.toml` in its directory.
    fn spawn_authority(&mut self, name: &str) -> Result<u32, TestnetError> {
        let log = self.run.manifest.plan.authority_log.clone();
        self.spawn(
            name,
            &["authority", "--config", "authority.toml"],
            &log,
            &[],
        )
    }

    /// Starts the three authorities on loopback, one after another (each on port 0, told where
    /// the earlier ones listen), then writes the pinned file with every address.
    fn start_loopback_authorities(&mut self) -> Result<(), TestnetError> {
        let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
        let network = self.network_section();
        let mut addresses: Vec<Vec<Multiaddr>> = vec![Vec::new(); 3];
        for (i, key) in keys.iter().enumerate() {
            let name = format!("auth{i}");
            let home = self.run.process_dir(&name);
            fs::create_dir_all(&home).map_err(io(&home))?;
            write_identity(&home.join("identity.key"), key)?;
            let pinned = pinned_file(&keys, &addresses);
            fs::write(home.join("authorities.toml"), pinned).map_err(io(&home))?;
            let host = self.run.add_host(&name)?;
            let config = format!(
                "identity = \"identity.key\"\ndata_dir = \"data\"\nauthorities = \"authorities.toml\"\nlisten = [\"{}\"]\n{network}{}",
                host.listen(),
                self.parameters_section()
            );
            fs::write(home.join("authority.toml"), config).map_err(io(&home))?;
            self.spawn_authority(&name)?;
            let listen = self.run.listen_addr(&name).unwrap_or_default();
            let addr: Multiaddr = listen.parse().map_err(|_| TestnetError::Command {
                command: format!("{name} listen address"),
                stderr: format!("{listen:?} is not a multiaddr"),
            })?;
            addresses[i] = vec![addr];
        }
        let file = self.run.authorities_file();
        fs::write(
            &file,
            format!("{}{network}", pinned_file(&keys, &addresses)),
        )
        .map_err(io(&file))?;
        Ok(())
    }

    /// The network in `dir`, made earlier by [`LocalNet::up`] (in this process or another):
    /// its processes keep running when this value is dropped.
    pub fn open(dir: impl Into<std::path::PathBuf>) -> Result<Self, TestnetError> {
        Ok(LocalNet {
            run: RunDir::open(dir)?,
            children: Vec::new(),
            owned: false,
        })
    }

    /// The run directory: names, files, addresses.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// The process id process `name` runs as, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        procs::running_pid(self.run.path(), name)
    }

    /// Leaves every process and namespace running (stop them with [`super::down`]).
    pub fn detach(mut self) {
        self.owned = false;
    }

    /// Stops everything (SIGTERM, then SIGKILL after 5 s) and removes the namespaces.
    pub fn down(mut self) -> Result<DownReport, TestnetError> {
        let report = super::down(self.run.path());
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let report = report?;
        self.owned = false;
        Ok(report)
    }

    fn network_section(&self) -> String {
        format!(
            "[network]\ngenesis_unix_ms = {}\nepoch_ms = {}\ntest_network = true\n",
            self.run.genesis_unix_ms(),
            self.run.epoch_ms()
        )
    }

    fn parameters_section(&self) -> String {
        let mut s = String::from("\n[network.parameters]\n");
        for (name, value) in &self.run.manifest.plan.parameters {
            s.push_str(&format!("{name} = {value}\n"));
        }
        s
    }

    /// Starts (or starts again) node `name` (`gw…` or `mix…`) on its data directory, waits
    /// until it wrote where it listens, and returns its process id.
    pub fn start_node(&mut self, name: &str, start: &NodeStart) -> Result<u32, TestnetError> {
        let role = if self.run.gateways().iter().any(|g| g == name) {
            "gateway"
        } else if self.run.mixes().iter().any(|m| m == name) {
            "mix"
        } else {
            return Err(TestnetError::UnknownProcess(name.into()));
        };
        if let Some(pid) = procs::running_pid(self.run.path(), name) {
            return Err(TestnetError::Command {
                command: format!("start {name}"),
                stderr: format!("{name} still runs as process {pid}"),
            });
        }
        let home = self.run.process_dir(name);
        fs::create_dir_all(&home).map_err(io(&home))?;
        let _ = fs::remove_file(home.join("data/listen-addrs"));
        let host = self.run.add_host(name)?;
        let log = start
            .log
            .clone()
            .unwrap_or_else(|| self.run.manifest.plan.node_log.clone());
        if self.runs_genconfig_files() {
            // genconfig's node.toml says everything; flags only where `start` asks for more.
            // The node keeps genconfig's address (the consensus has it); the addresses asked for
            // come beside it, announced too where their port is known.
            let mut args: Vec<String> = ["node", "--config", "node.toml"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let own = format!("/ip4/{}/tcp/{GENCONFIG_P2P_PORT}", host.address);
            let mut listen = vec![own];
            for l in start.listen.iter().chain(&start.also_listen) {
                // An address as listen-addrs has it ends in /p2p/<peer id>.
                let l = l.split("/p2p/").next().unwrap_or(l).to_string();
                if !listen.contains(&l) {
                    listen.push(l);
                }
            }
            if listen.len() > 1 {
                for l in &listen {
                    args.extend(["--listen".into(), l.clone()]);
                }
                for l in listen.iter().filter(|l| !l.ends_with("/tcp/0")) {
                    args.extend(["--announce".into(), l.clone()]);
                }
            }
            args.extend(self.run.manifest.plan.node_args.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            return self.spawn(name, &args, &log, &start.env);
        }
        let authorities = self.run.authorities_file().display().to_string();
        let mut args: Vec<String> = [
            "node",
            "--authorities",
            &authorities,
            "--data-dir",
            "data",
            "--role",
            role,
            "--metrics",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if name != "gw0" {
            let boot = self
                .run
                .listen_addr("gw0")
                .ok_or_else(|| TestnetError::UnknownProcess("gw0 (not listening)".into()))?;
            args.extend(["--bootstrap".into(), boot]);
        }
        let listen = if start.listen.is_empty() {
            vec![host.listen()]
        } else {
            start.listen.clone()
        };
        for l in listen.iter().chain(&start.also_listen) {
            args.extend(["--listen".into(), l.clone()]);
        }
        args.extend(self.run.manifest.plan.node_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(name, &args, &log, &start.env)
    }

    /// Runs the binary as process `name` on its host, records it, and waits for its listen
    /// addresses.
    fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        log: &str,
        env: &[(String, String)],
    ) -> Result<u32, TestnetError> {
        let home = self.run.process_dir(name);
        let host = self.run.add_host(name)?;
        let log_path = home.join("log");
        let open_log = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io(&log_path))
        };
        let starting = procs::may_start()?;
        let mut command = host.command(self.run.bin());
        // The process's settings are its flags and files alone: a P2PMIX_NODE_* or
        // P2PMIX_AUTHORITY_* of the caller's (set for a real node, or by a container image)
        // would override them, as the environment outranks the files. `env` may set them.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("P2PMIX_NODE_") || key_text.starts_with("P2PMIX_AUTHORITY_") {
                command.env_remove(&key);
            }
        }
        let child = command
            .args(args)
            .current_dir(&home)
            .env("RUST_LOG", log)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            // Not in the caller's process group: a Ctrl-C meant for a script reaches the
            // script, which stops the network itself.
            .process_group(0)
            .spawn()
            .map_err(|source| TestnetError::Spawn {
                program: self.run.bin().display().to_string(),
                source,
            })?;
        let pid = child.id();
        self.children.retain(|(n, _)| n != name);
        self.children.push((name.to_string(), child));
        record_pid(self.run.path(), pid, name)?;
        drop(starting);
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while self.run.listen_addr(name).is_none() {
            self.check_alive(name, "it was starting")?;
            if Instant::now() >= deadline {
                return Err(TestnetError::Timeout {
                    what: format!("{name} to listen"),
                    secs: LISTEN_TIMEOUT.as_secs(),
                });
            }
            sleep(Duration::from_millis(50));
        }
        Ok(pid)
    }

    /// Fails if process `name` is listed and no longer runs.
    fn check_alive(&mut self, name: &str, during: &str) -> Result<(), TestnetError> {
        let gone = match self.children.iter_mut().find(|(n, _)| n == name) {
            Some((_, child)) => !matches!(child.try_wait(), Ok(None)),
            None => procs::read_pids(self.run.path())
                .iter()
                .any(|l| l.name == name && !l.runs()),
        };
        if gone {
            return Err(TestnetError::Stopped {
                name: name.into(),
                during: during.into(),
                log: self.run.log_tail(name, 20),
            });
        }
        Ok(())
    }

    /// Stops process `name` with `how`; after 10 s without it going, SIGKILL. False if it was
    /// not running.
    pub fn stop(&mut self, name: &str, how: Signal) -> Result<bool, TestnetError> {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.swap_remove(i);
            if !matches!(child.try_wait(), Ok(None)) {
                return Ok(false);
            }
            signal(child.id(), how)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Ok(true);
        }
        let listed: Listed = procs::read_pids(self.run.path())
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| TestnetError::UnknownProcess(name.into()))?;
        procs::stop_listed(&listed, how, Duration::from_secs(10))
    }

    /// Waits up to `timeout` until every node holds a verified consensus that lists it; fails
    /// at once if an authority or a node stops meanwhile.
    pub fn wait_admitted(&mut self, timeout: Duration) -> Result<(), TestnetError> {
        let pinned = Authorities::load(&self.run.authorities_file())?.pinned();
        let deadline = Instant::now() + timeout;
        let mut names = self.run.authorities();
        names.extend(self.run.nodes());
        loop {
            let missing = self
                .run
                .nodes()
                .into_iter()
                .filter(|n| !admitted_with(&self.run, n, &pinned))
                .count();
            if missing == 0 {
                return Ok(());
            }
            for name in &names {
                self.check_alive(name, "waiting for the first consensus")?;
            }
            if Instant::now() >= deadline {
                return Err(TestnetError::Timeout {
                    what: format!(
                        "a consensus that admits every node ({missing} of {} not yet)",
                        self.run.nodes().len()
                    ),
                    secs: timeout.as_secs(),
                });
            }
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        hosts::remove_all(self.run.path());
    }
}

/// The pinned authorities, with the addresses known so far.
fn pinned_file(keys: &[Keypair], addresses: &[Vec<Multiaddr>]) -> String {
    keys.iter()
        .zip(addresses)
        .map(|(k, a)| Authorities::entry(&k.public(), a) + "\n")
        .collect()
}

/// Whether node `name` holds a verified consensus that lists it (its newest).
pub(crate) fn admitted(run: &RunDir, name: &str) -> bool {
    Authorities::load(&run.authorities_file())
        .map(|a| admitted_with(run, name, &a.pinned()))
        .unwrap_or(false)
}

fn admitted_with(run: &RunDir, name: &str, pinned: &PinnedAuthorities) -> bool {
    let Some(peer) = run.peer(name) else {
        return false;
    };
    let data = run.process_dir(name).join("data");
    let Some(epoch) = newest_consensus(&data) else {
        return false;
    };
    let Ok(bytes) = fs::read(data.join(format!("consensus-{epoch}.pb"))) else {
        return false;
    };
    let start = run.genesis_unix_ms() + epoch.saturating_mul(run.epoch_ms());
    verify_consensus(&bytes, pinned, unix_ms().max(start), Some(epoch)).is_ok_and(|c| {
        c.nodes()
            .iter()
            .any(|n| p2pmix_bootstrap::peer_id(n) == Some(peer))
    })
}

/// The highest epoch of a `consensus-EPOCH.pb` in `data`.
fn newest_consensus(data: &Path) -> Option<u64> {
    fs::read_dir(data)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("consensus-")?
                .strip_suffix(".pb")?
                .parse()
                .ok()
        })
        .max()
}
