//! The run directory: where each process's files are, and `testnet.json`, what `up` wrote for
//! the commands that come after it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::{Host, Plan, TestnetError, error::io, hosts};

/// What `up` records in `DIR/testnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) plan: Plan,
    pub(crate) genesis_unix_ms: u64,
    /// Names this network's namespaces and links apart from another's (the starter's pid).
    pub(crate) tag: String,
    /// Whether the kernel took netem (with a WAN plan).
    pub(crate) wan_applied: bool,
}

const MANIFEST: &str = "testnet.json";

/// A run directory made by [`super::LocalNet::up`]: the names of its processes and where their
/// files are.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
    pub(crate) manifest: Manifest,
}

impl RunDir {
    /// Opens `dir`, which `up` made.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TestnetError> {
        let dir = dir.into();
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Err(TestnetError::NotARunDir(dir));
        }
        // Processes run in their own directories: every path handed to them is absolute.
        let dir = dir.canonicalize().map_err(io(&dir))?;
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TestnetError::NotARunDir(dir));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|source| TestnetError::Manifest { path, source })?;
        manifest.plan.check()?;
        Ok(RunDir { dir, manifest })
    }

    pub(crate) fn create(dir: PathBuf, manifest: Manifest) -> Result<Self, TestnetError> {
        let path = dir.join(MANIFEST);
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|source| TestnetError::Manifest {
                path: path.clone(),
                source,
            })?;
        fs::write(&path, text + "\n").map_err(io(&path))?;
        Ok(RunDir { dir, manifest })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The pinned authorities file every node and client of the network reads (with the
    /// network's epoch schedule).
    pub fn authorities_file(&self) -> PathBuf {
        self.dir.join("authorities.toml")
    }

    /// Process `name`'s directory (its configuration, `data/`, `log`).
    pub fn process_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The authorities' names: `auth0`, `auth1`, `auth2`.
    pub fn authorities(&self) -> Vec<String> {
        (0..3).map(|i| format!("auth{i}")).collect()
    }

    /// The gateways' names: `gw0`, ….
    pub fn gateways(&self) -> Vec<String> {
        (0..self.manifest.plan.gateways)
            .map(|i| format!("gw{i}"))
            .collect()
    }

    /// The mixes' names: `mix0`, ….
    pub fn mixes(&self) -> Vec<String> {
        (0..self.manifest.plan.mixes)
            .map(|i| format!("mix{i}"))
            .collect()
    }

    /// Gateways, then mixes.
    pub fn nodes(&self) -> Vec<String> {
        let mut all = self.gateways();
        all.extend(self.mixes());
        all
    }

    /// When the first epoch starts (ms since the UNIX epoch).
    pub fn genesis_unix_ms(&self) -> u64 {
        self.manifest.genesis_unix_ms
    }

    /// The epoch length.
    pub fn epoch_ms(&self) -> u64 {
        self.manifest.plan.epoch_ms
    }

    /// The `p2pmix` binary the network runs.
    pub fn bin(&self) -> &Path {
        &self.manifest.plan.bin
    }

    /// Whether WAN delay and loss were put on the links (`None`: none were asked for).
    pub fn wan_applied(&self) -> Option<bool> {
        self.manifest
            .plan
            .wan
            .as_ref()
            .map(|_| self.manifest.wan_applied)
    }

    /// Process `name`'s host, if it has one yet (on loopback every name has).
    pub fn host(&self, name: &str) -> Option<Host> {
        hosts::host_of(&self.dir, &self.manifest, name)
    }

    /// Process `name`'s host, made if it has none yet (a namespace, for a client a script adds).
    pub fn add_host(&self, name: &str) -> Result<Host, TestnetError> {
        hosts::add_host(&self.dir, &self.manifest, name)
    }

    /// Every address process `name` listens on, as it wrote them (`data/listen-addrs`).
    pub fn listen_addrs(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.process_dir(name).join("data/listen-addrs"))
            .map(|all| all.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Where process `name` listens on its host's address (its first address if none is
    /// there), with `/p2p/<peer id>`.
    pub fn listen_addr(&self, name: &str) -> Option<String> {
        let all = self.listen_addrs(name);
        let own = self
            .host(name)
            .map(|h| format!("/ip4/{}/", h.address))
            .unwrap_or_default();
        all.iter()
            .find(|a| !own.is_empty() && a.starts_with(&own))
            .or(all.first())
            .cloned()
    }

    /// Process `name`'s peer id, from its listen address.
    pub fn peer(&self, name: &str) -> Option<PeerId> {
        let addr: Multiaddr = self.listen_addr(name)?.parse().ok()?;
        match addr.iter().last() {
            Some(Protocol::P2p(p)) => Some(p),
            _ => None,
        }
    }

    /// `ADDRESS:PORT` of process `name`'s metrics endpoint (in its host's namespace).
    pub fn metrics_addr(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.process_dir(name).join("data/metrics-addr"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
    }

    /// Process `name`'s log (empty if it has none).
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.process_dir(name).join("log")).unwrap_or_default()
    }

    /// The last `lines` lines of process `name`'s log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let log = self.log(name);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
