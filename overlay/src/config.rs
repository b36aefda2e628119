//! Configuration files: the pinned authorities list and an authority's own configuration.
//!
//! ```toml
//! # authorities.toml: the root of trust every node and client ships with
//! [[authority]]
//! public_key = "12D3KooW…"            # the authority's peer id, or the hex of its libp2p
//!                                     # protobuf public key (both printed by `p2pmix keygen`)
//! addresses = ["/dns4/dir1.example.org/tcp/4001"]
//! [network]                           # the epoch schedule nodes and clients follow
//! genesis_unix_ms = 1764000000000
//! epoch_ms = 3600000
//! test_network = true                 # only for local test networks: loopback addresses, traces
//! ```
//!
//! ```toml
//! # authority.toml
//! identity = "identity.key"           # paths are relative to this file
//! data_dir = "data"
//! authorities = "authorities.toml"
//! listen = ["/ip4/0.0.0.0/tcp/4001"]
//! metrics = "127.0.0.1:9200"          # optional: Prometheus text at http://ADDR/metrics
//! [network]
//! genesis_unix_ms = 1764000000000
//! epoch_ms = 3600000
//! test_network = true                 # only for local test networks (published in the consensus)
//! [network.parameters]                # optional overrides of the defaults
//! mean_delay_us = 50000
//! max_nodes_per_ipv4_24 = 4           # admission caps (0: none)
//! ```

#[cfg(feature = "toml")]
use std::{fs, path::Path};
use std::{net::SocketAddr, path::PathBuf};

use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;
use libp2p_identity::PublicKey;
#[cfg(feature = "toml")]
use p2pmix_bootstrap::default_parameters;
use p2pmix_bootstrap::{EpochSchedule, PinnedAuthorities};
use p2pmix_proto::v1::{NetworkParameters, Role};
use serde::Deserialize;
use thiserror::Error;

pub use crate::node::replay::ReplaySettings;
pub use crate::runtime::trace::TraceConfig;

/// Why a configuration file was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[cfg(feature = "toml")]
fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(feature = "toml")]
fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    toml::from_str(&read(path)?).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(feature = "toml")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoritiesFile {
    authority: Vec<AuthorityEntry>,
    #[serde(default)]
    network: Option<ScheduleSection>,
}

#[cfg(feature = "toml")]
/// The epoch schedule, as nodes and clients read it from the authorities file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    genesis_unix_ms: u64,
    epoch_ms: u64,
    #[serde(default)]
    test_network: bool,
}

#[cfg(feature = "toml")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityEntry {
    public_key: String,
    #[serde(default)]
    addresses: Vec<String>,
}

/// One pinned authority: its key, peer id and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityAddress {
    /// The authority's identity key.
    pub public_key: PublicKey,
    /// Its peer id.
    pub peer_id: PeerId,
    /// Where it listens (may be empty: it dials us).
    pub addresses: Vec<Multiaddr>,
}

/// The parsed authorities file.
#[derive(Debug, Clone)]
pub struct Authorities {
    /// Each authority with its addresses.
    pub entries: Vec<AuthorityAddress>,
    /// The network's epoch schedule, when the file gives one (`[network]` with
    /// `genesis_unix_ms` and `epoch_ms`): nodes and clients need it to know when to upload
    /// descriptors and fetch the next consensus.
    pub schedule: Option<EpochSchedule>,
    /// Whether the file declares a local test network (`test_network = true` in `[network]`):
    /// only then do nodes announce loopback and private listen addresses. The file is the root
    /// of trust every participant ships, so a production network's file never has it.
    pub test_network: bool,
}

#[cfg(feature = "toml")]
impl std::str::FromStr for Authorities {
    type Err = ConfigError;

    /// An authorities file's text (see [`Authorities::from_toml`]).
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml(text, "<string>")
    }
}

#[cfg(feature = "toml")]
/// An authority's key as people have it: its peer id (`12D3KooW…`, which embeds an ed25519 key)
/// or the hex of the libp2p protobuf public key (what `p2pmix keygen` prints).
fn parse_authority_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if let Ok(peer) = text.parse::<PeerId>() {
        // An identity multihash carries the protobuf public key itself; a hashed one (keys
        // longer than 42 bytes, such as RSA) does not, and authorities use ed25519.
        let multihash: &libp2p_core::multihash::Multihash<64> = peer.as_ref();
        if multihash.code() != 0 {
            return Err("is a peer id that does not contain its key (use the hex key)".into());
        }
        return PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| "is a peer id whose key does not decode".into());
    }
    let bytes = hex::decode(text)
        .map_err(|_| "is neither a peer id (12D3KooW…) nor hex of a public key".to_string())?;
    PublicKey::try_decode_protobuf(&bytes).map_err(|_| "is not a libp2p public key".into())
}

impl Authorities {
    #[cfg(feature = "toml")]
    /// Reads and checks an authorities file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read(path)?, &path.display().to_string())
    }

    #[cfg(feature = "toml")]
    /// Checks an authorities file's text, for an application that ships it inside itself (with
    /// `include_str!`) or gets it from its own configuration; `origin` names it in errors.
    /// `"…".parse::<Authorities>()` is the same with the origin `<string>`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let file: AuthoritiesFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        if file.authority.is_empty() {
            return Err(invalid("no [[authority]] entries".into()));
        }
        let mut entries = Vec::new();
        for (i, entry) in file.authority.iter().enumerate() {
            let public_key = parse_authority_key(&entry.public_key)
                .map_err(|why| invalid(format!("authority {i}: public_key {why}")))?;
            let addresses = entry
                .addresses
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .map_err(|e| invalid(format!("authority {i}: address {a}: {e}")))
                })
                .collect::<Result<_, _>>()?;
            entries.push(AuthorityAddress {
                peer_id: public_key.to_peer_id(),
                public_key,
                addresses,
            });
        }
        let test_network = file.network.is_some_and(|n| n.test_network);
        let schedule = match file.network {
            Some(n) if n.epoch_ms < MIN_EPOCH_MS => {
                return Err(invalid(format!(
                    "network.epoch_ms must be at least {MIN_EPOCH_MS}"
                )));
            }
            Some(n) => Some(EpochSchedule::new(n.genesis_unix_ms, n.epoch_ms)),
            None => None,
        };
        Ok(Authorities {
            entries,
            schedule,
            test_network,
        })
    }

    /// The authorities' peer ids (where the directory is fetched from).
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.entries.iter().map(|e| e.peer_id).collect()
    }

    /// The configured addresses of `peer`, if it is an authority (dialled again after every
    /// failed dial: an authority that restarts must stay reachable).
    pub fn addresses_of(&self, peer: &PeerId) -> &[Multiaddr] {
        self.entries
            .iter()
            .find(|e| e.peer_id == *peer)
            .map_or(&[], |e| e.addresses.as_slice())
    }

    /// The pinned set for verification.
    pub fn pinned(&self) -> PinnedAuthorities {
        PinnedAuthorities::new(self.entries.iter().map(|e| e.public_key.clone()))
    }

    /// The IP addresses the authorities are pinned at (names left out): where their
    /// connections come from, known before any handshake.
    pub fn ip_addresses(&self) -> Vec<std::net::IpAddr> {
        self.entries
            .iter()
            .flat_map(|e| &e.addresses)
            .filter_map(crate::runtime::caps::ip_of)
            .collect()
    }

    /// The TOML entry for one authority, as `p2pmix keygen` prints it.
    pub fn entry(public_key: &PublicKey, addresses: &[Multiaddr]) -> String {
        let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        format!(
            "[[authority]]\npublic_key = \"{}\"\naddresses = [{}]\n",
            hex::encode(public_key.encode_protobuf()),
            addresses
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(feature = "toml")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityFile {
    identity: PathBuf,
    data_dir: PathBuf,
    authorities: PathBuf,
    #[serde(default)]
    listen: Vec<String>,
    metrics: Option<String>,
    max_connections: Option<u32>,
    network: NetworkSection,
}

#[cfg(feature = "toml")]
/// The `[network]` section: the schedule and parameters every authority must share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    genesis_unix_ms: u64,
    epoch_ms: u64,
    /// A local test network: published in the consensus (`test_network`), it lets loopback and
    /// private addresses in.
    #[serde(default)]
    test_network: bool,
    #[serde(default)]
    parameters: ParameterOverrides,
}

/// The keys of `[network.parameters]` with what each means, in the order `p2pmix authority
/// init` writes them (each is a field of the consensus's `NetworkParameters` of the same name).
pub const PARAMETERS: [(&str, &str); 17] = [
    (
        "mean_delay_us",
        "Mean per-hop delay senders draw from (exponential), microseconds.",
    ),
    (
        "max_delay_us",
        "Largest per-hop delay a node accepts, microseconds.",
    ),
    (
        "client_send_interval_us",
        "A client's Poisson stream of real or drop-cover packets: mean interval, microseconds.",
    ),
    (
        "client_loop_interval_us",
        "A client's loop cover: mean interval, microseconds.",
    ),
    (
        "client_drop_interval_us",
        "A client's extra drop cover: mean interval, microseconds.",
    ),
    (
        "mix_loop_interval_us",
        "A node's own loop cover: mean interval, microseconds (0: none).",
    ),
    ("layers", "Mix layers of every route (1..=16)."),
    (
        "min_protocol_version",
        "Nodes below this protocol version are left out.",
    ),
    (
        "max_nodes_per_ipv4",
        "Nodes admitted per public IPv4 address (0: no cap).",
    ),
    (
        "max_nodes_per_ipv4_24",
        "Nodes admitted per public IPv4 /24 (0: no cap).",
    ),
    (
        "max_nodes_per_ipv6_48",
        "Nodes admitted per public IPv6 /48 (0: no cap).",
    ),
    (
        "max_nodes_per_family",
        "Nodes admitted per declared operator family (0: no cap).",
    ),
    (
        "health_probes_per_node",
        "Health measurement: probes each authority sends per node and epoch (0: none, nobody is left out for health).",
    ),
    (
        "health_min_probes",
        "Health: probes a node needs in an authority's window before that authority reports it.",
    ),
    (
        "health_min_delivery_permille",
        "Health: a node measured below this delivery (per mille of its layer's best quarter) is left out.",
    ),
    (
        "health_max_delay_p90_ms",
        "Health: a node whose added delay's 90th percentile is above this (milliseconds) is left out.",
    ),
    (
        "health_good_delivery_permille",
        "Health: a node at or above this delivery earns back one strike.",
    ),
];

/// The value of the parameter `key` (one of [`PARAMETERS`]) in `parameters`.
pub fn parameter_value(parameters: &NetworkParameters, key: &str) -> Option<u64> {
    Some(match key {
        "mean_delay_us" => parameters.mean_delay_us,
        "max_delay_us" => parameters.max_delay_us,
        "client_send_interval_us" => parameters.client_send_interval_us,
        "client_loop_interval_us" => parameters.client_loop_interval_us,
        "client_drop_interval_us" => parameters.client_drop_interval_us,
        "mix_loop_interval_us" => parameters.mix_loop_interval_us,
        "layers" => u64::from(parameters.layers),
        "min_protocol_version" => u64::from(parameters.min_protocol_version),
        "max_nodes_per_ipv4" => u64::from(parameters.max_nodes_per_ipv4),
        "max_nodes_per_ipv4_24" => u64::from(parameters.max_nodes_per_ipv4_24),
        "max_nodes_per_ipv6_48" => u64::from(parameters.max_nodes_per_ipv6_48),
        "max_nodes_per_family" => u64::from(parameters.max_nodes_per_family),
        "health_probes_per_node" => u64::from(parameters.health_probes_per_node),
        "health_min_probes" => u64::from(parameters.health_min_probes),
        "health_min_delivery_permille" => u64::from(parameters.health_min_delivery_permille),
        "health_max_delay_p90_ms" => u64::from(parameters.health_max_delay_p90_ms),
        "health_good_delivery_permille" => u64::from(parameters.health_good_delivery_permille),
        _ => return None,
    })
}

/// Sets the parameter `key` (one of [`PARAMETERS`]) in `parameters`; false for an unknown key
/// or a value out of the field's range.
pub fn set_parameter(parameters: &mut NetworkParameters, key: &str, value: u64) -> bool {
    let wide = match key {
        "mean_delay_us" => Some(&mut parameters.mean_delay_us),
        "max_delay_us" => Some(&mut parameters.max_delay_us),
        "client_send_interval_us" => Some(&mut parameters.client_send_interval_us),
        "client_loop_interval_us" => Some(&mut parameters.client_loop_interval_us),
        "client_drop_interval_us" => Some(&mut parameters.client_drop_interval_us),
        "mix_loop_interval_us" => Some(&mut parameters.mix_loop_interval_us),
        _ => None,
    };
    if let Some(slot) = wide {
        *slot = value;
        return true;
    }
    let slot = match key {
        "layers" => &mut parameters.layers,
        "min_protocol_version" => &mut parameters.min_protocol_version,
        "max_nodes_per_ipv4" => &mut parameters.max_nodes_per_ipv4,
        "max_nodes_per_ipv4_24" => &mut parameters.max_nodes_per_ipv4_24,
        "max_nodes_per_ipv6_48" => &mut parameters.max_nodes_per_ipv6_48,
        "max_nodes_per_family" => &mut parameters.max_nodes_per_family,
        "health_probes_per_node" => &mut parameters.health_probes_per_node,
        "health_min_probes" => &mut parameters.health_min_probes,
        "health_min_delivery_permille" => &mut parameters.health_min_delivery_permille,
        "health_max_delay_p90_ms" => &mut parameters.health_max_delay_p90_ms,
        "health_good_delivery_permille" => &mut parameters.health_good_delivery_permille,
        _ => return false,
    };
    match u32::try_from(value) {
        Ok(v) => {
            *slot = v;
            true
        }
        Err(_) => false,
    }
}

#[cfg(feature = "toml")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterOverrides {
    mean_delay_us: Option<u64>,
    max_delay_us: Option<u64>,
    client_send_interval_us: Option<u64>,
    client_loop_interval_us: Option<u64>,
    client_drop_interval_us: Option<u64>,
    mix_loop_interval_us: Option<u64>,
    layers: Option<u32>,
    min_protocol_version: Option<u32>,
    max_nodes_per_ipv4: Option<u32>,
    max_nodes_per_ipv4_24: Option<u32>,
    max_nodes_per_ipv6_48: Option<u32>,
    max_nodes_per_family: Option<u32>,
    health_probes_per_node: Option<u32>,
    health_min_probes: Option<u32>,
    health_min_delivery_permille: Option<u32>,
    health_max_delay_p90_ms: Option<u32>,
    health_good_delivery_permille: Option<u32>,
}

/// An authority's configuration, resolved.
#[derive(Debug, Clone)]
pub struct AuthorityConfigFile {
    /// Identity key file.
    pub identity: PathBuf,
    /// Where state and published documents go.
    pub data_dir: PathBuf,
    /// The pinned authorities file.
    pub authorities_path: PathBuf,
    /// The pinned authorities (this one included).
    pub authorities: Authorities,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Where to serve metrics, `/health` and `/ready`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The epoch schedule.
    pub schedule: EpochSchedule,
    /// Network parameters to publish (`test_network` among them).
    pub parameters: NetworkParameters,
    /// Incoming connections held at most, besides those of the other pinned authorities and
    /// of the nodes in the consensus held (`max_connections`;
    /// [`DEFAULT_AUTHORITY_MAX_CONNECTIONS`]).
    pub max_connections: u32,
}

/// Incoming connections an authority holds at most from peers that are neither pinned
/// authorities nor nodes of its consensus: new nodes uploading their first descriptor and
/// clients fetching the consensus. Each is an open file; the authority raises its open-files
/// limit to fit them and every node of a full consensus.
pub const DEFAULT_AUTHORITY_MAX_CONNECTIONS: u32 = 4096;

/// Shortest epoch accepted: each phase needs time for messages to cross the network.
pub const MIN_EPOCH_MS: u64 = 800;

/// Command-line (or environment) values that override an authority's configuration file.
#[derive(Debug, Clone, Default)]
pub struct AuthorityOverrides {
    /// `--identity`.
    pub identity: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` (replaces the file's list when given).
    pub listen: Vec<Multiaddr>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
}

impl AuthorityConfigFile {
    #[cfg(feature = "toml")]
    /// Reads an authority configuration; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, AuthorityOverrides::default())
    }

    #[cfg(feature = "toml")]
    /// Reads an authority configuration and applies `overrides`.
    pub fn load_with(path: &Path, overrides: AuthorityOverrides) -> Result<Self, ConfigError> {
        let file: AuthorityFile = parse(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        if file.network.epoch_ms < MIN_EPOCH_MS {
            return Err(invalid(format!(
                "network.epoch_ms must be at least {MIN_EPOCH_MS}"
            )));
        }
        let listen = if file.listen.is_empty() {
            vec![DEFAULT_LISTEN.to_string()]
        } else {
            file.listen
        };
        let mut listen: Vec<Multiaddr> = listen
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| invalid(format!("listen address {a}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if !overrides.listen.is_empty() {
            listen = overrides.listen;
        }
        let metrics = match (overrides.metrics, file.metrics) {
            (Some(m), _) => Some(m),
            (None, Some(m)) => Some(
                m.parse()
                    .map_err(|e| invalid(format!("metrics address {m}: {e}")))?,
            ),
            (None, None) => None,
        };
        let mut parameters = default_parameters();
        let o = &file.network.parameters;
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut parameters.mean_delay_us, o.mean_delay_us);
        set(&mut parameters.max_delay_us, o.max_delay_us);
        set(
            &mut parameters.client_send_interval_us,
            o.client_send_interval_us,
        );
        set(
            &mut parameters.client_loop_interval_us,
            o.client_loop_interval_us,
        );
        set(
            &mut parameters.client_drop_interval_us,
            o.client_drop_interval_us,
        );
        set(&mut parameters.mix_loop_interval_us, o.mix_loop_interval_us);
        if let Some(l) = o.layers {
            if !(1..=16).contains(&l) {
                return Err(invalid("network.parameters.layers must be 1..=16".into()));
            }
            parameters.layers = l;
        }
        if let Some(v) = o.min_protocol_version {
            parameters.min_protocol_version = v;
        }
        let set32 = |slot: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set32(&mut parameters.max_nodes_per_ipv4, o.max_nodes_per_ipv4);
        set32(
            &mut parameters.max_nodes_per_ipv4_24,
            o.max_nodes_per_ipv4_24,
        );
        set32(
            &mut parameters.max_nodes_per_ipv6_48,
            o.max_nodes_per_ipv6_48,
        );
        set32(&mut parameters.max_nodes_per_family, o.max_nodes_per_family);
        set32(
            &mut parameters.health_probes_per_node,
            o.health_probes_per_node,
        );
        set32(&mut parameters.health_min_probes, o.health_min_probes);
        set32(
            &mut parameters.health_min_delivery_permille,
            o.health_min_delivery_permille,
        );
        set32(
            &mut parameters.health_max_delay_p90_ms,
            o.health_max_delay_p90_ms,
        );
        set32(
            &mut parameters.health_good_delivery_permille,
            o.health_good_delivery_permille,
        );
        parameters.test_network = file.network.test_network;
        let authorities_path = base.join(file.authorities);
        Ok(AuthorityConfigFile {
            identity: overrides
                .identity
                .unwrap_or_else(|| base.join(file.identity)),
            data_dir: overrides
                .data_dir
                .unwrap_or_else(|| base.join(file.data_dir)),
            authorities: Authorities::load(&authorities_path)?,
            authorities_path,
            listen,
            metrics,
            schedule: EpochSchedule::new(file.network.genesis_unix_ms, file.network.epoch_ms),
            parameters,
            max_connections: file
                .max_connections
                .unwrap_or(DEFAULT_AUTHORITY_MAX_CONNECTIONS),
        })
    }
}

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A mix in one of the layers.
    Mix,
    /// An entry and exit point where clients connect.
    Gateway,
}

impl NodeRole {
    /// The name the configuration file and `--role` use.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Mix => "mix",
            NodeRole::Gateway => "gateway",
        }
    }
}

impl From<NodeRole> for Role {
    fn from(role: NodeRole) -> Self {
        match role {
            NodeRole::Mix => Role::Mix,
            NodeRole::Gateway => Role::Gateway,
        }
    }
}

/// The keys of a node's configuration file, in the order `p2pmix node init` writes them (each is
/// also the flag of the same name, `_` written `-`).
pub const NODE_FILE_KEYS: [&str; 13] = [
    "data_dir",
    "authorities",
    "identity",
    "listen",
    "announce",
    "bootstrap",
    "role",
    "metrics",
    "family",
    "max_connections",
    "replay_memory_mib",
    "replay_min_rate",
    "sphinx_workers",
];

/// Sphinx worker threads a node may be given at most.
pub const MAX_SPHINX_WORKERS: usize = 256;

/// Incoming connections a node holds at most by default (clients and nodes that dialled it; its
/// own dials to the consensus's nodes come on top). Each is one open file: the systemd unit's
/// `LimitNOFILE` leaves room for this, the consensus's nodes and the node's files.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8192;

#[cfg(feature = "toml")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    data_dir: Option<PathBuf>,
    authorities: Option<PathBuf>,
    identity: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    announce: Vec<String>,
    role: Option<NodeRole>,
    metrics: Option<String>,
    family: Option<String>,
    max_connections: Option<u32>,
    replay_memory_mib: Option<u64>,
    replay_min_rate: Option<f64>,
    sphinx_workers: Option<usize>,
}

/// Command-line values that override a node's configuration file.
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--authorities`.
    pub authorities: Option<PathBuf>,
    /// `--identity`.
    pub identity: Option<PathBuf>,
    /// `--listen` (replaces the file's list when given).
    pub listen: Vec<Multiaddr>,
    /// `--bootstrap` (replaces the file's list when given).
    pub bootstrap: Vec<Multiaddr>,
    /// `--announce` (replaces the file's list when given).
    pub announce: Vec<Multiaddr>,
    /// `--role`.
    pub role: Option<NodeRole>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--family`.
    pub family: Option<String>,
    /// `--max-connections`.
    pub max_connections: Option<u32>,
    /// `--replay-memory-mib`.
    pub replay_memory_mib: Option<u64>,
    /// `--replay-min-rate`.
    pub replay_min_rate: Option<f64>,
    /// `--sphinx-workers`.
    pub sphinx_workers: Option<usize>,
    /// `--trace-links` and `--trace-truth` (flags and environment only: never in a file).
    pub trace: TraceConfig,
}

/// Where a process listens when nothing says: loopback, a port the OS picks.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// A node's settings as its file, the environment and the command line give them, before any
/// file they name is read: what `p2pmix node --print-config` prints.
///
/// ```toml
/// # node.toml (paths are relative to this file; `p2pmix node init` writes one with every default)
/// data_dir = "data"                       # epoch keys, consensus cache (and identity.key)
/// authorities = "authorities.toml"        # pinned keys; its [network] gives the schedule
/// # identity = "/run/credentials/p2pmix-node.service/identity.key"  # default DATA_DIR/identity.key
/// listen = ["/ip4/0.0.0.0/tcp/4100"]
/// announce = ["/dns4/mix1.example.org/tcp/4100"]  # what the descriptor carries
/// bootstrap = ["/dns4/boot.example.org/tcp/4100/p2p/12D3KooW…"]
/// role = "mix"                            # or "gateway"
/// metrics = "127.0.0.1:9100"              # /metrics, /health, /ready
/// family = "operator-name"                # nodes of one operator share it
/// max_connections = 8192                  # incoming connections held at most (besides: 4 per
///                                         # peer; 64 per client address, 1024 per /24 or /48)
/// replay_memory_mib = 1024                # all replay filters together (docs/sphinx.md)
/// replay_min_rate = 1000                  # packets/s a key's filter is sized for at least
/// sphinx_workers = 4                      # unwrapping threads (default: one per core)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettings {
    /// Epoch keys, cached consensus documents, `listen-addrs`, `metrics-addr`, and the identity
    /// unless `identity` says otherwise.
    pub data_dir: PathBuf,
    /// The pinned authorities file.
    pub authorities: PathBuf,
    /// The identity key file, when not `DATA_DIR/identity.key` (it must then exist: a node
    /// creates only its default identity).
    pub identity: Option<PathBuf>,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through.
    pub bootstrap: Vec<Multiaddr>,
    /// The addresses the node's descriptor carries (what mixes and clients dial). Empty: its
    /// public listen addresses (and, on a test network, its loopback and private ones).
    pub announce: Vec<Multiaddr>,
    /// Mix or gateway.
    pub role: NodeRole,
    /// Where to serve metrics, `/health` and `/ready`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Operator family.
    pub family: String,
    /// Incoming connections held at most (more are refused).
    pub max_connections: u32,
    /// How the replay filters are sized and how much memory they may take.
    pub replay: ReplaySettings,
    /// Sphinx worker threads (`None`: one per core the process may use).
    pub sphinx_workers: Option<usize>,
    /// Test-network traces to write (refused unless the authorities file declares a test
    /// network). Flags and environment only: no file key, and `--print-config` leaves them out.
    pub trace: TraceConfig,
}

impl NodeSettings {
    #[cfg(feature = "toml")]
    /// Reads `file` (if any) and applies `overrides`; every missing or malformed value is a
    /// clear error naming its source. Relative paths in the file are relative to the file.
    pub fn resolve(file: Option<&Path>, overrides: NodeOverrides) -> Result<Self, ConfigError> {
        let (parsed, base, source) = match file {
            Some(path) => (
                parse::<NodeFile>(path)?,
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.display().to_string(),
            ),
            None => (
                NodeFile::default(),
                PathBuf::from("."),
                "command line".into(),
            ),
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: source.clone(),
            message,
        };
        let addresses = |list: &[String], what: &str| -> Result<Vec<Multiaddr>, ConfigError> {
            list.iter()
                .map(|a| {
                    a.parse()
                        .map_err(|e| invalid(format!("{what} address {a}: {e}")))
                })
                .collect()
        };
        let data_dir = overrides
            .data_dir
            .or(parsed.data_dir.map(|d| base.join(d)))
            .ok_or_else(|| invalid("no data directory (data_dir or --data-dir)".into()))?;
        let authorities = overrides
            .authorities
            .or(parsed.authorities.map(|a| base.join(a)))
            .ok_or_else(|| invalid("no authorities file (authorities or --authorities)".into()))?;
        let mut listen = overrides.listen;
        if listen.is_empty() {
            listen = addresses(&parsed.listen, "listen")?;
        }
        if listen.is_empty() {
            listen.push(
                DEFAULT_LISTEN
                    .parse()
                    .map_err(|e| invalid(format!("default listen address: {e}")))?,
            );
        }
        let mut bootstrap = overrides.bootstrap;
        if bootstrap.is_empty() {
            bootstrap = addresses(&parsed.bootstrap, "bootstrap")?;
        }
        let mut announce = overrides.announce;
        if announce.is_empty() {
            announce = addresses(&parsed.announce, "announce")?;
        }
        let metrics = match (overrides.metrics, parsed.metrics) {
            (Some(m), _) => Some(m),
            (None, Some(m)) => Some(
                m.parse()
                    .map_err(|e| invalid(format!("metrics address {m}: {e}")))?,
            ),
            (None, None) => None,
        };
        let defaults = ReplaySettings::default();
        let replay = ReplaySettings {
            min_rate: match overrides.replay_min_rate.or(parsed.replay_min_rate) {
                Some(r) if r.is_finite() && r > 0.0 => r,
                Some(r) => return Err(invalid(format!("replay_min_rate {r}: not a rate"))),
                None => defaults.min_rate,
            },
            memory_bytes: overrides
                .replay_memory_mib
                .or(parsed.replay_memory_mib)
                .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
        };
        let sphinx_workers = match overrides.sphinx_workers.or(parsed.sphinx_workers) {
            Some(n) if !(1..=MAX_SPHINX_WORKERS).contains(&n) => {
                return Err(invalid(format!(
                    "sphinx_workers {n}: from 1 to {MAX_SPHINX_WORKERS}"
                )));
            }
            n => n,
        };
        Ok(NodeSettings {
            data_dir,
            authorities,
            identity: overrides.identity.or(parsed.identity.map(|i| base.join(i))),
            listen,
            bootstrap,
            announce,
            role: overrides.role.or(parsed.role).unwrap_or(NodeRole::Mix),
            metrics,
            family: overrides.family.or(parsed.family).unwrap_or_default(),
            max_connections: overrides
                .max_connections
                .or(parsed.max_connections)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS),
            replay,
            sphinx_workers,
            trace: overrides.trace,
        })
    }
}

/// A node's configuration, resolved from its file (optional) and the command line, with the
/// authorities file read. See [`NodeSettings`] for the file.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity, epoch keys, cached consensus documents, `listen-addrs`, `metrics-addr`.
    pub data_dir: PathBuf,
    /// The identity key file, when not `DATA_DIR/identity.key` (then it must exist).
    pub identity: Option<PathBuf>,
    /// The pinned authorities.
    pub authorities: Authorities,
    /// The epoch schedule (from the authorities file).
    pub schedule: EpochSchedule,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through.
    pub bootstrap: Vec<Multiaddr>,
    /// The addresses the node's descriptor carries (what mixes and clients dial). Empty: its
    /// public listen addresses (and, on a test network, its loopback and private ones).
    pub announce: Vec<Multiaddr>,
    /// Mix or gateway.
    pub role: NodeRole,
    /// Where to serve metrics, `/health` and `/ready`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Operator family.
    pub family: String,
    /// Incoming connections held at most.
    pub max_connections: u32,
    /// How the replay filters are sized and how much memory they may take.
    pub replay: ReplaySettings,
    /// Sphinx worker threads (`None`: one per core the process may use).
    pub sphinx_workers: Option<usize>,
    /// Test-network traces to write (refused unless the authorities file declares a test
    /// network).
    pub trace: TraceConfig,
}

impl NodeConfig {
    #[cfg(feature = "toml")]
    /// Reads `file` (if any), applies `overrides` and reads the authorities file.
    pub fn load(file: Option<&Path>, overrides: NodeOverrides) -> Result<Self, ConfigError> {
        Self::from_settings(NodeSettings::resolve(file, overrides)?)
    }

    #[cfg(feature = "toml")]
    /// Reads the authorities file `settings` names, and checks the announced addresses against
    /// the network it declares (loopback and private ones only on a test network).
    pub fn from_settings(settings: NodeSettings) -> Result<Self, ConfigError> {
        let authorities = Authorities::load(&settings.authorities)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: settings.authorities.display().to_string(),
            message,
        };
        let schedule = authorities.schedule.ok_or_else(|| {
            invalid("no [network] section with genesis_unix_ms and epoch_ms".into())
        })?;
        for a in &settings.announce {
            p2pmix_bootstrap::address::check_address(
                &a.to_string(),
                None,
                authorities.test_network,
            )
            .map_err(|e| {
                invalid(format!(
                    "announce address {a}: {e} (announce /ip4, /ip6 or /dns* with /tcp/PORT \
                     or /udp/PORT/quic-v1; loopback and private addresses only on a test \
                     network)"
                ))
            })?;
        }
        Ok(NodeConfig {
            data_dir: settings.data_dir,
            identity: settings.identity,
            authorities,
            schedule,
            listen: settings.listen,
            bootstrap: settings.bootstrap,
            announce: settings.announce,
            role: settings.role,
            metrics: settings.metrics,
            family: settings.family,
            max_connections: settings.max_connections,
            replay: settings.replay,
            sphinx_workers: settings.sphinx_workers,
            trace: settings.trace,
        })
    }
}

#[cfg(all(test, feature = "toml"))]
mod tests {
    use libp2p_identity::Keypair;

    use super::*;

    fn load(text: &str) -> Result<Authorities, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "p2pmix-config-{}-{}",
            std::process::id(),
            blake3::hash(text.as_bytes()).to_hex()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("authorities.toml");
        fs::write(&path, text).unwrap();
        let loaded = Authorities::load(&path);
        let _ = fs::remove_dir_all(&dir);
        loaded
    }

    /// The fields a `deny_unknown_fields` struct takes, from serde's refusal of an unknown one
    /// ("expected one of `a`, `b`"): the key lists cannot fall behind the structs.
    fn fields_of<T: for<'de> Deserialize<'de> + std::fmt::Debug>() -> Vec<String> {
        let err = toml::from_str::<T>("not_a_key_of_anything = 1").unwrap_err();
        let message = err.to_string();
        let list = message
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("serde lists the fields: {message}"));
        list.split(',')
            .filter_map(|f| f.split('`').nth(1).map(str::to_string))
            .collect()
    }

    #[test]
    fn the_key_lists_name_every_field_of_the_files() {
        let mut node = fields_of::<NodeFile>();
        node.sort();
        let mut listed: Vec<String> = NODE_FILE_KEYS.iter().map(|k| k.to_string()).collect();
        listed.sort();
        assert_eq!(node, listed, "NODE_FILE_KEYS and NodeFile differ");
        let mut parameters = fields_of::<ParameterOverrides>();
        parameters.sort();
        let mut listed: Vec<String> = PARAMETERS.iter().map(|(k, _)| k.to_string()).collect();
        listed.sort();
        assert_eq!(
            parameters, listed,
            "PARAMETERS and ParameterOverrides differ"
        );
        let defaults = default_parameters();
        for (i, (key, _)) in PARAMETERS.iter().enumerate() {
            assert!(parameter_value(&defaults, key).is_some(), "{key}");
            let mut p = defaults;
            assert!(set_parameter(&mut p, key, 7 + i as u64), "{key}");
            assert_eq!(parameter_value(&p, key), Some(7 + i as u64), "{key}");
        }
        let mut p = defaults;
        assert!(!set_parameter(&mut p, "layers", u64::MAX));
        assert!(!set_parameter(&mut p, "no_such_parameter", 1));
    }

    #[test]
    fn an_authority_key_may_be_given_as_its_peer_id_or_as_hex() {
        let key = Keypair::generate_ed25519().public();
        let by_peer = load(&format!(
            "[[authority]]\npublic_key = \"{}\"\n",
            key.to_peer_id()
        ))
        .unwrap();
        let by_hex = load(&format!(
            "[[authority]]\npublic_key = \"{}\"\n",
            hex::encode(key.encode_protobuf())
        ))
        .unwrap();
        assert_eq!(by_peer.entries[0].public_key, key);
        assert_eq!(by_hex.entries[0].public_key, key);
        for (text, why) in [
            ("not-a-key", "neither a peer id"),
            ("12D3KooWnope", "whose key does not decode"),
        ] {
            let err = load(&format!("[[authority]]\npublic_key = \"{text}\"\n")).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn an_authorities_file_reads_the_same_from_a_path_and_from_a_string() {
        let key = Keypair::generate_ed25519().public();
        let text = format!(
            "[[authority]]\npublic_key = \"{}\"\naddresses = [\"/ip4/127.0.0.1/tcp/4001\"]\n\n\
             [network]\ngenesis_unix_ms = 1764000000000\nepoch_ms = 60000\n",
            key.to_peer_id()
        );
        let from_file = load(&text).unwrap();
        let from_string: Authorities = text.parse().unwrap();
        assert_eq!(from_string.entries, from_file.entries);
        assert_eq!(from_string.schedule, from_file.schedule);
        assert_eq!(from_string.entries[0].public_key, key);
        // A string's errors name where it came from.
        let err =
            Authorities::from_toml("[[authority]]\npublic_key = 1\n", "embedded").unwrap_err();
        assert!(
            matches!(err, ConfigError::Parse { ref path, .. } if path == "embedded"),
            "{err}"
        );
        let err = "".parse::<Authorities>().unwrap_err();
        assert!(err.to_string().starts_with("<string>: "), "{err}");
    }
}
