//! Configuration files: the pinned authorities list and an authority's own configuration.
//!
//! ```toml
//! # authorities.toml: the root of trust every node and client ships with
//! [[authority]]
//! public_key = "08011220…"            # hex of the libp2p protobuf public key (`p2pmix keygen`)
//! addresses = ["/ip4/127.0.0.1/tcp/4001"]
//! ```
//!
//! ```toml
//! # authority.toml
//! identity = "identity.key"           # paths are relative to this file
//! data_dir = "data"
//! authorities = "authorities.toml"
//! listen = ["/ip4/127.0.0.1/tcp/0"]
//! [network]
//! genesis_unix_ms = 1764000000000
//! epoch_ms = 3600000
//! [network.parameters]                # optional overrides of the defaults
//! mean_delay_us = 50000
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use libp2p::{Multiaddr, PeerId, identity::PublicKey};
use p2pmix_bootstrap::{EpochSchedule, PinnedAuthorities, default_parameters};
use p2pmix_proto::v1::NetworkParameters;
use serde::Deserialize;
use thiserror::Error;

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
            let bytes = hex::decode(entry.public_key.trim())
                .map_err(|e| invalid(format!("authority {i}: public_key is not hex: {e}")))?;
            let public_key = PublicKey::try_decode_protobuf(&bytes).map_err(|_| {
                invalid(format!(
                    "authority {i}: public_key is not a libp2p public key"
                ))
            })?;
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
        Ok(Authorities { entries })
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
    network: NetworkSection,
}

/// The `[network]` section: the schedule and parameters every authority must share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    genesis_unix_ms: u64,
    epoch_ms: u64,
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
        Ok(AuthorityConfigFile {
            identity: base.join(file.identity),
            data_dir: base.join(file.data_dir),
            authorities: Authorities::load(&base.join(file.authorities))?,
            listen,
            schedule: EpochSchedule::new(file.network.genesis_unix_ms, file.network.epoch_ms),
            parameters,
        })
    }
}
