//! `p2pmix testnet genconfig`: every identity and configuration of a network for a list of hosts
//! (Katzenpost's genconfig is the model), ready to copy: one directory a process.
//!
//! ```text
//! OUT/authorities.toml        the pinned authorities file with the [network] schedule
//! OUT/authority-0/            authority.toml, authorities.toml, identity.key
//! OUT/gateway-0/, OUT/mix-0/  node.toml, authorities.toml, data/identity.key
//! OUT/network.json            every process: role, host, peer id, address, metrics address
//! OUT/prometheus.yml          a scrape configuration for every metrics endpoint
//! OUT/kubernetes/config.yaml  a ConfigMap (configurations) and a Secret (identities)
//! ```
//!
//! Processes are dealt to the hosts in turn (authorities, then gateways, then mixes); the k-th
//! process on a host listens on `--p2p-port + k` and serves metrics on `--metrics-port + k`, so
//! one host (`127.0.0.1`) takes a whole network and separate hosts all use the base ports. Where
//! a process listens and where others reach it is decided in one place, [`Addresses::of`].

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, bail, ensure};
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use p2pmix::{
    bootstrap::{MAX_NODES, address::check_address, default_parameters},
    config::{Authorities, MIN_EPOCH_MS, NodeRole, NodeSettings, PARAMETERS, set_parameter},
    identity::{IDENTITY_FILE, write_identity},
    proto::v1::NetworkParameters,
    runtime::unix_ms,
};
use serde::Serialize;

use super::kubernetes;
use crate::cli::{
    authority::AuthorityFile,
    node::{self, Header},
};

#[derive(clap::Args)]
pub(crate) struct GenconfigArgs {
    /// The directory to write (it must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// The hosts, by address or DNS name (comma-separated or repeated); processes are dealt to
    /// them in turn: authorities first, then gateways, then mixes.
    #[arg(long, value_delimiter = ',', required_unless_present = "host_pattern")]
    hosts: Vec<String>,
    /// Instead of --hosts: every process on its own host, named from this pattern with {name}
    /// and {role}, e.g. {name}.{role}.p2pmix.example.org, or for a test network inside one
    /// Kubernetes cluster {name}.{role}.p2pmix.svc.cluster.local with --test-network.
    #[arg(long, conflicts_with = "hosts")]
    host_pattern: Option<String>,
    /// Directory authorities (a consensus needs a majority of them).
    #[arg(long, default_value_t = 3)]
    authorities: usize,
    /// Gateways.
    #[arg(long, default_value_t = 2)]
    gateways: usize,
    /// Mixes (at least one per layer).
    #[arg(long, default_value_t = 6)]
    mixes: usize,
    /// The first process on a host listens on this TCP port, the next one on the port after it.
    #[arg(long, default_value_t = 4100)]
    p2p_port: u16,
    /// Likewise for the metrics endpoints (/metrics, /health, /ready).
    #[arg(long, default_value_t = 9100)]
    metrics_port: u16,
    /// Serve metrics on loopback only (a Prometheus on every host) instead of the host's address.
    #[arg(long)]
    metrics_loopback: bool,
    /// Epoch length, milliseconds.
    #[arg(long, default_value_t = 3_600_000)]
    epoch_ms: u64,
    /// When epoch 0 starts, milliseconds since the UNIX epoch (default: --genesis-in-s from now).
    #[arg(long)]
    genesis_unix_ms: Option<u64>,
    /// Seconds from now to epoch 0: the time to copy the files and start every process. Nodes up
    /// within the first quarter of epoch 0 are in the first consensus (epoch 1's).
    #[arg(long, default_value_t = 300)]
    genesis_in_s: u64,
    /// A network parameter for [network.parameters], KEY=VALUE (repeatable), e.g.
    /// mean_delay_us=50000.
    #[arg(long = "parameter", value_parser = parse_parameter)]
    parameters: Vec<(String, u64)>,
    /// Give the nodes of each host one operator family (no route then uses two of them).
    #[arg(long)]
    family_per_host: bool,
    /// A local test network (`test_network = true` in both [network] sections): loopback and
    /// private addresses admitted, traces allowed. Hosts given by a loopback or private address
    /// need it; a production network never has it.
    #[arg(long)]
    test_network: bool,
}

fn parse_parameter(text: &str) -> Result<(String, u64), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: not KEY=VALUE"))?;
    let key = key.trim();
    if !PARAMETERS.iter().any(|(k, _)| *k == key) {
        let keys: Vec<&str> = PARAMETERS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "{key}: not a parameter (one of {})",
            keys.join(", ")
        ));
    }
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("{text}: the value is not a number"))?;
    Ok((key.to_string(), value))
}

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A directory authority.
    Authority,
    /// A gateway.
    Gateway,
    /// A mix.
    Mix,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Authority => "authority",
            Kind::Gateway => "gateway",
            Kind::Mix => "mix",
        }
    }
}

/// A host as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    /// An address.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl Host {
    fn parse(text: &str) -> Result<Host> {
        let text = text.trim();
        let text = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = text.parse() {
            return Ok(Host::Ip(ip));
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        ensure!(
            !text.is_empty() && text.len() <= 253 && text.split('.').all(valid_label),
            "{text:?} is neither an IP address nor a DNS name"
        );
        Ok(Host::Name(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Where a process listens and where the others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addresses {
    /// What it binds.
    pub(crate) listen: Multiaddr,
    /// What the others dial: authorities' addresses in the pinned file, bootstrap addresses,
    /// and what a node announces in its descriptor.
    pub(crate) public: Multiaddr,
    /// Where its metrics endpoint binds.
    pub(crate) metrics: SocketAddr,
    /// Where Prometheus scrapes it.
    pub(crate) metrics_target: String,
}

impl Addresses {
    /// The one place that decides: a process on an address binds that address; one on a DNS
    /// name binds every interface and is reached by the name.
    pub(crate) fn of(host: &Host, p2p_port: u16, metrics_port: u16, loopback: bool) -> Self {
        let tcp = Protocol::Tcp(p2p_port);
        let (listen, public) = match host {
            Host::Ip(ip) => {
                let a = Multiaddr::empty().with((*ip).into()).with(tcp);
                (a.clone(), a)
            }
            Host::Name(name) => (
                Multiaddr::empty()
                    .with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED))
                    .with(tcp.clone()),
                Multiaddr::empty()
                    .with(Protocol::Dns(name.clone().into()))
                    .with(tcp),
            ),
        };
        let (metrics, metrics_target) = match (host, loopback) {
            (_, true) => {
                let m = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
                (m, m.to_string())
            }
            (Host::Ip(ip), false) => {
                let m = SocketAddr::new(*ip, metrics_port);
                (m, m.to_string())
            }
            (Host::Name(name), false) => (
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, metrics_port)),
                format!("{name}:{metrics_port}"),
            ),
        };
        Addresses {
            listen,
            public,
            metrics,
            metrics_target,
        }
    }
}

/// One process of the network.
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) host: Host,
    pub(crate) addresses: Addresses,
    pub(crate) keypair: Keypair,
}

impl Process {
    fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Its public address with its peer id (what a bootstrap list holds).
    fn dial_address(&self) -> Multiaddr {
        self.addresses
            .public
            .clone()
            .with(Protocol::P2p(self.peer_id()))
    }
}

/// What to generate.
pub(crate) struct Spec {
    pub(crate) hosts: HostPlan,
    pub(crate) authorities: usize,
    pub(crate) gateways: usize,
    pub(crate) mixes: usize,
    pub(crate) p2p_port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) metrics_loopback: bool,
    pub(crate) genesis_unix_ms: u64,
    pub(crate) epoch_ms: u64,
    pub(crate) parameters: NetworkParameters,
    pub(crate) family_per_host: bool,
}

/// Which host each process goes to.
pub(crate) enum HostPlan {
    /// Dealt in turn.
    List(Vec<Host>),
    /// Each on its own, named from a pattern with `{name}` and `{role}`.
    Pattern(String),
}

impl Spec {
    fn from_args(args: &GenconfigArgs) -> Result<Spec> {
        let hosts = match &args.host_pattern {
            Some(p) => {
                ensure!(p.contains("{name}"), "--host-pattern must contain {{name}}");
                HostPlan::Pattern(p.clone())
            }
            None => HostPlan::List(
                args.hosts
                    .iter()
                    .map(|h| Host::parse(h))
                    .collect::<Result<_>>()?,
            ),
        };
        let mut parameters = NetworkParameters {
            test_network: args.test_network,
            ..default_parameters()
        };
        for (key, value) in &args.parameters {
            ensure!(
                set_parameter(&mut parameters, key, *value),
                "--parameter {key}={value}: out of range"
            );
        }
        Ok(Spec {
            hosts,
            authorities: args.authorities,
            gateways: args.gateways,
            mixes: args.mixes,
            p2p_port: args.p2p_port,
            metrics_port: args.metrics_port,
            metrics_loopback: args.metrics_loopback,
            genesis_unix_ms: args
                .genesis_unix_ms
                .unwrap_or_else(|| unix_ms().saturating_add(args.genesis_in_s * 1000)),
            epoch_ms: args.epoch_ms,
            parameters,
            family_per_host: args.family_per_host,
        })
    }

    /// Every process, with its host, ports and a fresh identity.
    fn processes(&self) -> Result<Vec<Process>> {
        ensure!(self.authorities >= 1, "--authorities: at least 1");
        ensure!(self.gateways >= 1, "--gateways: at least 1");
        let layers = self.parameters.layers as usize;
        ensure!(
            self.mixes >= layers,
            "--mixes: at least {layers}, one per layer"
        );
        ensure!(
            self.gateways + self.mixes <= MAX_NODES,
            "at most {MAX_NODES} nodes in a consensus"
        );
        ensure!(self.authorities <= 64, "--authorities: at most 64");
        ensure!(
            self.epoch_ms >= MIN_EPOCH_MS,
            "--epoch-ms: at least {MIN_EPOCH_MS}"
        );
        if let HostPlan::List(hosts) = &self.hosts {
            ensure!(!hosts.is_empty(), "--hosts: at least one host");
        }
        let names = (0..self.authorities)
            .map(|i| (Kind::Authority, i))
            .chain((0..self.gateways).map(|i| (Kind::Gateway, i)))
            .chain((0..self.mixes).map(|i| (Kind::Mix, i)));
        let mut on_host: HashMap<Host, u16> = HashMap::new();
        let mut processes = Vec::new();
        for (j, (kind, i)) in names.enumerate() {
            let name = format!("{}-{i}", kind.as_str());
            let host = match &self.hosts {
                HostPlan::List(hosts) => hosts[j % hosts.len()].clone(),
                HostPlan::Pattern(p) => {
                    Host::parse(&p.replace("{name}", &name).replace("{role}", kind.as_str()))?
                }
            };
            let k = on_host.entry(host.clone()).or_default();
            let port = |base: u16, what: &str| {
                base.checked_add(*k)
                    .with_context(|| format!("--{what}-port {base}: too many processes on {host}"))
            };
            let addresses = Addresses::of(
                &host,
                port(self.p2p_port, "p2p")?,
                port(self.metrics_port, "metrics")?,
                self.metrics_loopback,
            );
            // What the authorities would refuse in a descriptor (and the node at its start).
            if let Err(e) = check_address(
                &addresses.public.to_string(),
                None,
                self.parameters.test_network,
            ) {
                bail!(
                    "{name} on {host}: {}: {e}; only a test network admits loopback, private \
                     and local (.local, .internal, …) ones (add --test-network)",
                    addresses.public
                );
            }
            *k += 1;
            processes.push(Process {
                name,
                kind,
                host,
                addresses,
                keypair: Keypair::generate_ed25519(),
            });
        }
        Ok(processes)
    }
}

/// One process in `network.json`.
#[derive(Serialize)]
struct InventoryEntry<'a> {
    name: &'a str,
    role: Kind,
    host: String,
    peer_id: String,
    /// Its public address with `/p2p/` (a gateway's is what clients give as `--gateway`).
    address: String,
    listen: String,
    metrics: String,
    metrics_target: &'a str,
    /// Its directory in the output.
    dir: &'a str,
}

/// `network.json`.
#[derive(Serialize)]
struct Inventory<'a> {
    genesis_unix_ms: u64,
    epoch_ms: u64,
    processes: Vec<InventoryEntry<'a>>,
}

/// What genconfig wrote, for the summary.
pub(crate) struct Network {
    pub(crate) processes: Vec<Process>,
}

/// Runs `p2pmix testnet genconfig`.
pub(crate) fn run(args: GenconfigArgs) -> Result<ExitCode> {
    let spec = Spec::from_args(&args)?;
    let network = generate(&spec, &args.out)?;
    println!(
        "wrote a network of {} authorities, {} gateways and {} mixes to {} (epoch 0 at {} ms, epochs of {} ms)\n",
        spec.authorities,
        spec.gateways,
        spec.mixes,
        args.out.display(),
        spec.genesis_unix_ms,
        spec.epoch_ms
    );
    println!("{:<14} {:<24} {:<40} metrics", "process", "host", "address");
    for p in &network.processes {
        println!(
            "{:<14} {:<24} {:<40} {}",
            p.name,
            p.host.to_string(),
            p.addresses.public.to_string(),
            p.addresses.metrics_target
        );
    }
    println!(
        "\nCopy each directory to its host and start it from there:\n  \
         p2pmix authority --config authority.toml    (authority-*)\n  \
         p2pmix node --config node.toml              (gateway-*, mix-*)\n\
         Every node must be up within the first quarter of epoch 0 to be in the first consensus."
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the network of `spec` into `out`.
pub(crate) fn generate(spec: &Spec, out: &Path) -> Result<Network> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).with_context(|| format!("{}", out.display()))?;
        ensure!(
            entries.next().is_none(),
            "{} is not empty: genconfig writes a fresh directory",
            out.display()
        );
    }
    let processes = spec.processes()?;
    let mut network_section = format!(
        "[network]\ngenesis_unix_ms = {}\nepoch_ms = {}\n",
        spec.genesis_unix_ms, spec.epoch_ms
    );
    if spec.parameters.test_network {
        network_section.push_str("test_network = true\n");
    }
    let mut pinned = String::from(
        "# The pinned authorities of this network, written by p2pmix testnet genconfig: every\n\
         # node, client and authority needs this file.\n\n",
    );
    for p in processes.iter().filter(|p| p.kind == Kind::Authority) {
        pinned.push_str(&Authorities::entry(
            &p.keypair.public(),
            std::slice::from_ref(&p.addresses.public),
        ));
        pinned.push('\n');
    }
    pinned.push_str(&network_section);
    write(&out.join("authorities.toml"), &pinned)?;

    let gateways: Vec<&Process> = processes
        .iter()
        .filter(|p| p.kind == Kind::Gateway)
        .collect();
    let mut files: Vec<(String, String)> = vec![("authorities.toml".into(), pinned.clone())];
    for p in &processes {
        let dir = out.join(&p.name);
        write(&dir.join("authorities.toml"), &pinned)?;
        let origin = format!(
            "Written by p2pmix testnet genconfig for {} ({}) on {}.",
            p.name,
            p.kind.as_str(),
            p.host
        );
        let (file, text) = match p.kind {
            Kind::Authority => {
                write_identity(&dir.join(IDENTITY_FILE), &p.keypair)?;
                let text = AuthorityFile {
                    identity: IDENTITY_FILE.into(),
                    data_dir: "data".into(),
                    authorities: "authorities.toml".into(),
                    listen: vec![p.addresses.listen.clone()],
                    metrics: Some(p.addresses.metrics),
                    max_connections: p2pmix::config::DEFAULT_AUTHORITY_MAX_CONNECTIONS,
                    genesis_unix_ms: spec.genesis_unix_ms,
                    epoch_ms: spec.epoch_ms,
                    parameters: spec.parameters,
                }
                .render(false);
                ("authority.toml", text)
            }
            Kind::Gateway | Kind::Mix => {
                std::fs::create_dir_all(dir.join("data"))
                    .with_context(|| format!("creating {}", dir.display()))?;
                write_identity(&dir.join("data").join(IDENTITY_FILE), &p.keypair)?;
                let role = if p.kind == Kind::Gateway {
                    NodeRole::Gateway
                } else {
                    NodeRole::Mix
                };
                let settings = NodeSettings {
                    listen: vec![p.addresses.listen.clone()],
                    // What the others reach, also when the node binds every interface.
                    announce: vec![p.addresses.public.clone()],
                    bootstrap: gateways
                        .iter()
                        .filter(|g| g.name != p.name)
                        .map(|g| g.dial_address())
                        .collect(),
                    metrics: Some(p.addresses.metrics),
                    family: if spec.family_per_host {
                        p.host.to_string()
                    } else {
                        String::new()
                    },
                    ..node::init_settings(role)
                };
                ("node.toml", node::render(&settings, Header::Init))
            }
        };
        let text = format!("# {origin}\n{text}");
        write(&dir.join(file), &text)?;
        files.push((format!("{}.toml", p.name), text));
    }

    let inventory = Inventory {
        genesis_unix_ms: spec.genesis_unix_ms,
        epoch_ms: spec.epoch_ms,
        processes: processes
            .iter()
            .map(|p| InventoryEntry {
                name: &p.name,
                role: p.kind,
                host: p.host.to_string(),
                peer_id: p.peer_id().to_string(),
                address: p.dial_address().to_string(),
                listen: p.addresses.listen.to_string(),
                metrics: p.addresses.metrics.to_string(),
                metrics_target: &p.addresses.metrics_target,
                dir: &p.name,
            })
            .collect(),
    };
    write(
        &out.join("network.json"),
        &(serde_json::to_string_pretty(&inventory)? + "\n"),
    )?;
    write(&out.join("prometheus.yml"), &prometheus(&processes))?;
    write(
        &out.join("kubernetes").join("config.yaml"),
        &kubernetes::config(&files, &processes)?,
    )?;
    Ok(Network { processes })
}

/// A Prometheus configuration scraping every process, labelled with its name and role, with the
/// alert rules of `deploy/monitoring/` beside it.
fn prometheus(processes: &[Process]) -> String {
    let mut text = String::from(
        "# Prometheus scrape configuration for this network (written by p2pmix testnet genconfig).\n\
         # Copy deploy/monitoring/alerts.yml next to it.\n\
         global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
         rule_files:\n  - alerts.yml\n\
         scrape_configs:\n",
    );
    for kind in [Kind::Authority, Kind::Gateway, Kind::Mix] {
        text.push_str(&format!(
            "  - job_name: p2pmix-{}\n    static_configs:\n",
            kind.as_str()
        ));
        for p in processes.iter().filter(|p| p.kind == kind) {
            text.push_str(&format!(
                "      - targets: [\"{}\"]\n        labels: {{name: \"{}\", role: \"{}\"}}\n",
                p.addresses.metrics_target,
                p.name,
                kind.as_str()
            ));
        }
    }
    text
}

/// Writes `text` to `path`, creating its directory.
fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        bail!("{} exists", path.display());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hosts: &[&str]) -> Spec {
        Spec {
            hosts: HostPlan::List(hosts.iter().map(|h| Host::parse(h).unwrap()).collect()),
            authorities: 3,
            gateways: 2,
            mixes: 6,
            p2p_port: 4100,
            metrics_port: 9100,
            metrics_loopback: false,
            genesis_unix_ms: 1,
            epoch_ms: 60_000,
            parameters: NetworkParameters {
                test_network: true,
                ..default_parameters()
            },
            family_per_host: false,
        }
    }

    #[test]
    fn one_host_takes_consecutive_ports_and_separate_hosts_the_base_ports() {
        let one = spec(&["127.0.0.1"]).processes().unwrap();
        let ports: Vec<String> = one.iter().map(|p| p.addresses.listen.to_string()).collect();
        assert_eq!(ports[0], "/ip4/127.0.0.1/tcp/4100");
        assert_eq!(ports[10], "/ip4/127.0.0.1/tcp/4110");
        assert_eq!(one[10].addresses.metrics.to_string(), "127.0.0.1:9110");
        let hosts: Vec<String> = (0..11).map(|i| format!("192.0.2.{}", i + 1)).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let many = spec(&hosts).processes().unwrap();
        assert!(
            many.iter()
                .all(|p| p.addresses.listen.to_string().ends_with("/tcp/4100"))
        );
        assert_eq!(many[3].name, "gateway-0");
        assert_eq!(many[3].host, Host::Ip("192.0.2.4".parse().unwrap()));
    }

    #[test]
    fn a_named_host_binds_every_interface_and_is_reached_by_name() {
        let a = Addresses::of(
            &Host::parse("Mix-0.example.org").unwrap(),
            4100,
            9100,
            false,
        );
        assert_eq!(a.listen.to_string(), "/ip4/0.0.0.0/tcp/4100");
        assert_eq!(a.public.to_string(), "/dns/mix-0.example.org/tcp/4100");
        assert_eq!(a.metrics_target, "mix-0.example.org:9100");
        let v6 = Addresses::of(&Host::parse("[2001:db8::1]").unwrap(), 4100, 9100, true);
        assert_eq!(v6.public.to_string(), "/ip6/2001:db8::1/tcp/4100");
        assert_eq!(v6.metrics.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn bad_hosts_counts_and_ports_are_refused() {
        for bad in ["", "a..b", "-a.b", "a_b", "x/y"] {
            assert!(Host::parse(bad).is_err(), "{bad:?}");
        }
        let mut s = spec(&["127.0.0.1"]);
        s.mixes = 2;
        assert!(s.processes().is_err(), "fewer mixes than layers");
        let mut s = spec(&["127.0.0.1"]);
        s.p2p_port = u16::MAX - 3;
        assert!(s.processes().is_err(), "ports past 65535");
        let mut s = spec(&["127.0.0.1"]);
        s.epoch_ms = 10;
        assert!(s.processes().is_err(), "epoch too short");
        let mut s = spec(&["127.0.0.1"]);
        s.parameters.test_network = false;
        assert!(s.processes().is_err(), "loopback without --test-network");
        let mut s = spec(&["192.0.2.1"]);
        s.parameters.test_network = false;
        assert!(s.processes().is_err(), "documentation range is not public");
        let mut s = spec(&["93.184.216.34", "mix.example.org"]);
        s.parameters.test_network = false;
        assert!(s.processes().is_ok(), "public addresses and names");
        let mut s = spec(&[]);
        s.hosts = HostPlan::Pattern("{name}.{role}.p2pmix.svc.cluster.local".into());
        s.parameters.test_network = false;
        assert!(
            s.processes().is_err(),
            "a .local name without --test-network"
        );
        assert!(parse_parameter("mean_delay_us=10").is_ok());
        assert!(parse_parameter("mean_delay=10").is_err());
        assert!(parse_parameter("mean_delay_us=ten").is_err());
    }

    #[test]
    fn a_pattern_gives_every_process_its_own_host() {
        let mut s = spec(&[]);
        s.hosts = HostPlan::Pattern("{name}.{role}.p2pmix.svc.cluster.local".into());
        let p = s.processes().unwrap();
        assert_eq!(
            p[0].addresses.public.to_string(),
            "/dns/authority-0.authority.p2pmix.svc.cluster.local/tcp/4100"
        );
        assert!(p.iter().all(|p| p.addresses.metrics.port() == 9100));
    }
}
