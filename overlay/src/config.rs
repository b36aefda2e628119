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

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use libp2p::{Multiaddr, PeerId, identity::PublicKey};
use p2pmix_bootstrap::{EpochSchedule, PinnedAuthorities, default_parameters};
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

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    toml::from_str(&read(path)?).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoritiesFile {
    authority: Vec<AuthorityEntry>,
    #[serde(default)]
    network: Option<ScheduleSection>,
}

/// The epoch schedule, as nodes and clients read it from the authorities file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    genesis_unix_ms: u64,
    epoch_ms: u64,
    #[serde(default)]
    test_network: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityEntry {
    public_key: String,
    #[serde(default)]
    addresses: Vec<String>,
}

/// One pinned authority: its key, peer id and where to reach it.
#[derive(Debug, Clone)]
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

/// An authority's key as people have it: its peer id (`12D3KooW…`, which embeds an ed25519 key)
/// or the hex of the libp2p protobuf public key (what `p2pmix keygen` prints).
fn parse_authority_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if let Ok(peer) = text.parse::<PeerId>() {
        // An identity multihash carries the protobuf public key itself; a hashed one (keys
        // longer than 42 bytes, such as RSA) does not, and authorities use ed25519.
        let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
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
    /// Reads and checks an authorities file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: AuthoritiesFile = parse(path)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorityFile {
    identity: PathBuf,
    data_dir: PathBuf,
    authorities: PathBuf,
    #[serde(default)]
    listen: Vec<String>,
    metrics: Option<String>,
    network: NetworkSection,
}

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
}

/// An authority's configuration, resolved.
#[derive(Debug, Clone)]
pub struct AuthorityConfigFile {
    /// Identity key file.
    pub identity: PathBuf,
    /// Where state and published documents go.
    pub data_dir: PathBuf,
    /// The pinned authorities (this one included).
    pub authorities: Authorities,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// The epoch schedule.
    pub schedule: EpochSchedule,
    /// Network parameters to publish.
    pub parameters: NetworkParameters,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Shortest epoch accepted: each phase needs time for messages to cross the network.
pub const MIN_EPOCH_MS: u64 = 800;

impl AuthorityConfigFile {
    /// Reads an authority configuration; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
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
            vec!["/ip4/127.0.0.1/tcp/0".to_string()]
        } else {
            file.listen
        };
        let listen = listen
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| invalid(format!("listen address {a}: {e}")))
            })
            .collect::<Result<_, _>>()?;
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
        parameters.test_network = file.network.test_network;
        let metrics = file
            .metrics
            .map(|m| {
                m.parse()
                    .map_err(|e| invalid(format!("metrics address {m}: {e}")))
            })
            .transpose()?;
        Ok(AuthorityConfigFile {
            identity: base.join(file.identity),
            data_dir: base.join(file.data_dir),
            authorities: Authorities::load(&base.join(file.authorities))?,
            listen,
            schedule: EpochSchedule::new(file.network.genesis_unix_ms, file.network.epoch_ms),
            parameters,
            metrics,
        })
    }
}

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A mix in one of the layers.
    Mix,
    /// An entry and exit point where clients connect.
    Gateway,
}

impl From<NodeRole> for Role {
    fn from(role: NodeRole) -> Self {
        match role {
            NodeRole::Mix => Role::Mix,
            NodeRole::Gateway => Role::Gateway,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    data_dir: Option<PathBuf>,
    authorities: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    announce: Vec<String>,
    role: Option<NodeRole>,
    metrics: Option<String>,
    family: Option<String>,
    replay_memory_mib: Option<u64>,
    replay_min_rate: Option<f64>,
}

/// Command-line values that override a node's configuration file.
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--authorities`.
    pub authorities: Option<PathBuf>,
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
    /// `--trace-links` and `--trace-truth` (command line only).
    pub trace: TraceConfig,
}

/// A node's configuration, resolved from its file (optional) and the command line.
///
/// ```toml
/// # node.toml (paths are relative to this file)
/// data_dir = "data"                       # identity.key, epoch keys, consensus cache
/// authorities = "authorities.toml"        # pinned keys; its [network] gives the schedule
/// listen = ["/ip4/0.0.0.0/tcp/4100"]
/// announce = ["/dns4/mix1.example.org/tcp/4100"]  # what the descriptor carries
/// bootstrap = ["/dns4/boot.example.org/tcp/4100/p2p/12D3KooW…"]
/// role = "mix"                            # or "gateway"
/// metrics = "127.0.0.1:9100"              # Prometheus text at http://ADDR/metrics
/// family = "operator-name"                # nodes of one operator share it
/// replay_memory_mib = 1024                # all replay filters together (docs/sphinx.md)
/// replay_min_rate = 1000                  # packets/s a key's filter is sized for at least
/// ```
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity, epoch keys, cached consensus documents, `listen-addrs`, `metrics-addr`.
    pub data_dir: PathBuf,
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
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Operator family.
    pub family: String,
    /// How the replay filters are sized and how much memory they may take.
    pub replay: ReplaySettings,
    /// Test-network traces to write (refused unless the authorities file declares a test
    /// network).
    pub trace: TraceConfig,
}

impl NodeConfig {
    /// Reads `file` (if any) and applies `overrides`; every missing or malformed value is a
    /// clear error naming its source.
    pub fn load(file: Option<&Path>, overrides: NodeOverrides) -> Result<Self, ConfigError> {
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
        let authorities_path = overrides
            .authorities
            .or(parsed.authorities.map(|a| base.join(a)))
            .ok_or_else(|| invalid("no authorities file (authorities or --authorities)".into()))?;
        let authorities = Authorities::load(&authorities_path)?;
        let schedule = authorities.schedule.ok_or_else(|| ConfigError::Invalid {
            path: authorities_path.display().to_string(),
            message: "no [network] section with genesis_unix_ms and epoch_ms".into(),
        })?;
        let mut listen = overrides.listen;
        if listen.is_empty() {
            listen = addresses(&parsed.listen, "listen")?;
        }
        if listen.is_empty() {
            listen.push(
                "/ip4/127.0.0.1/tcp/0"
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
        for a in &announce {
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
        let metrics = match (overrides.metrics, parsed.metrics) {
            (Some(m), _) => Some(m),
            (None, Some(m)) => Some(
                m.parse()
                    .map_err(|e| invalid(format!("metrics address {m}: {e}")))?,
            ),
            (None, None) => None,
        };
        Ok(NodeConfig {
            data_dir,
            authorities,
            schedule,
            listen,
            bootstrap,
            announce,
            role: overrides.role.or(parsed.role).unwrap_or(NodeRole::Mix),
            metrics,
            family: overrides.family.or(parsed.family).unwrap_or_default(),
            replay: {
                let defaults = ReplaySettings::default();
                ReplaySettings {
                    min_rate: match parsed.replay_min_rate {
                        Some(r) if r.is_finite() && r > 0.0 => r,
                        Some(r) => return Err(invalid(format!("replay_min_rate {r}: not a rate"))),
                        None => defaults.min_rate,
                    },
                    memory_bytes: parsed
                        .replay_memory_mib
                        .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
                }
            },
            trace: overrides.trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

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
}
