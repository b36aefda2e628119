//! The node's replay state on disk, so that a restarted node keeps relaying under the keys it
//! held, without a replay window.
//!
//! `DATA_DIR/replay/<epoch>/` holds one key's state: `snapshot-<g>` (a whole filter, covering
//! every journal before generation `g`) and `journal-<g>` files (the tag indexes recorded since,
//! appended and synced by the [`writer`] before their packets may leave). A key's directory and
//! an empty `journal-0` are made durable before the key enters the ring ([`ReplayStore::prepare`]),
//! so a key without state never unwrapped a packet under this code. At start-up a key whose state
//! reads back whole comes back with its filter ([`ReplayStore::restore`]); one whose state is
//! missing or damaged is retired if it may have been used. The argument is in docs/sphinx.md.

pub mod writer;

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use p2pmix_mix::{NodeSecretKey, PersistError, ReplayBudget, ReplayCache, ReplayConfig};
use p2pmix_proto::v1::NetworkParameters;
use thiserror::Error;

use crate::runtime::files::{Access, FileError, create_dir, sync_dir, write_new};

/// Why a key's replay state could not be read back (the key is then retired).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayStateError {
    /// The file system refused.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file is damaged, foreign or too large for the budget.
    #[error("{path}: {source}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: PersistError,
    },
    /// Files are missing (a journal generation, or the first journal).
    #[error("replay state of epoch {0} is incomplete")]
    Incomplete(u64),
}

/// Snapshots and journals present for one key, by generation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    pub(crate) snapshots: Vec<u64>,
    pub(crate) journals: Vec<u64>,
}

impl Listing {
    /// The next generation to write.
    pub(crate) fn next_generation(&self) -> u64 {
        self.snapshots
            .iter()
            .chain(&self.journals)
            .max()
            .map_or(0, |g| g + 1)
    }
}

pub(crate) fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}"))
}

pub(crate) fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}"))
}

pub(crate) fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = name.strip_prefix("snapshot-").and_then(|g| g.parse().ok()) {
            listing.snapshots.push(g);
        } else if let Some(g) = name.strip_prefix("journal-").and_then(|g| g.parse().ok()) {
            listing.journals.push(g);
        }
    }
    listing.snapshots.sort_unstable();
    listing.journals.sort_unstable();
    Ok(listing)
}

/// The replay state directory. See the module documentation.
#[derive(Debug, Clone)]
pub struct ReplayStore {
    dir: PathBuf,
}

impl ReplayStore {
    /// Opens (creating) `data_dir/replay`.
    pub fn open(data_dir: &Path) -> Result<Self, FileError> {
        let dir = data_dir.join("replay");
        create_dir(&dir)?;
        Ok(ReplayStore { dir })
    }

    /// Where the states live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.dir.join(epoch.to_string())
    }

    /// Whether a state exists for `epoch`'s key.
    pub fn has_state(&self, epoch: u64) -> bool {
        self.epoch_dir(epoch).is_dir()
    }

    /// Epochs with a state on disk.
    pub fn epochs(&self) -> Vec<u64> {
        let mut epochs: Vec<u64> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        epochs.sort_unstable();
        epochs
    }

    /// Makes the state of a key about to enter the ring durable: its directory and an empty
    /// first journal (with `cache`'s header), so that a restart knows the key may have been used.
    pub fn prepare(&self, epoch: u64, cache: &ReplayCache) -> Result<(), FileError> {
        let dir = self.epoch_dir(epoch);
        create_dir(&dir)?;
        let path = journal_path(&dir, 0);
        write_new(
            &path,
            &cache.journal_header(epoch),
            Access::OwnerOnly,
            false,
        )?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)
    }

    /// Reads back the cache of `epoch`'s key (`secret`): its newest snapshot, then every journal
    /// written since. Without a snapshot, the journals from the first on go into an empty cache
    /// sized by `config`. Segments come out of `budget`.
    pub fn restore(
        &self,
        epoch: u64,
        secret: &NodeSecretKey,
        config: ReplayConfig,
        budget: Arc<ReplayBudget>,
    ) -> Result<ReplayCache, ReplayStateError> {
        let dir = self.epoch_dir(epoch);
        let listing = list(&dir).map_err(FileError::on(&dir))?;
        let (cache, from) = match listing.snapshots.last() {
            Some(&g) => {
                let path = snapshot_path(&dir, g);
                let file = fs::File::open(&path).map_err(FileError::on(&path))?;
                let mut reader = io::BufReader::with_capacity(1 << 20, file);
                let cache = ReplayCache::read_snapshot(&mut reader, secret, budget)
                    .map_err(|source| ReplayStateError::Persist { path, source })?;
                (cache, g)
            }
            None => (ReplayCache::for_key(config, secret, budget), 0),
        };
        let journals: Vec<u64> = listing
            .journals
            .iter()
            .copied()
            .filter(|g| *g >= from)
            .collect();
        let contiguous =
            journals.first() == Some(&from) && journals.windows(2).all(|w| w[1] == w[0] + 1);
        if !contiguous {
            return Err(ReplayStateError::Incomplete(epoch));
        }
        for g in journals {
            let path = journal_path(&dir, g);
            let file = fs::File::open(&path).map_err(FileError::on(&path))?;
            let mut reader = io::BufReader::with_capacity(1 << 20, file);
            cache
                .replay_journal(epoch, &mut reader)
                .map_err(|source| ReplayStateError::Persist { path, source })?;
        }
        Ok(cache)
    }

    /// Deletes the state of `epoch`'s key.
    pub fn retire(&self, epoch: u64) -> Result<(), FileError> {
        let dir = self.epoch_dir(epoch);
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FileError::on(&dir)(e)),
        }
    }
}

/// What a node expects one key to carry, and the memory its filters may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySettings {
    /// The fewest packets per second a key's filter is sized for.
    pub min_rate: f64,
    /// Bytes all replay filters together may take.
    pub memory_bytes: u64,
}

impl Default for ReplaySettings {
    /// 1,000 packets per second at least, within 1 GiB.
    fn default() -> Self {
        ReplaySettings {
            min_rate: 1_000.0,
            memory_bytes: ReplayBudget::NODE_DEFAULT_BYTES,
        }
    }
}

/// The packets per second one node is expected to unwrap: the most of `settings.min_rate`, the
/// rate this node measured under its current key (`observed`), and what the consensus itself
/// makes every mix carry: the nodes' loop cover, one packet per `mix_loop_interval_us` from
/// each of `nodes` nodes through one mix of each layer (`layers` over `mixes`). How many clients
/// there are the consensus does not say; their traffic comes in through `observed`.
pub fn expected_rate(
    settings: &ReplaySettings,
    parameters: &NetworkParameters,
    nodes: usize,
    mixes: usize,
    observed: Option<f64>,
) -> f64 {
    let loops = if parameters.mix_loop_interval_us == 0 || mixes == 0 {
        0.0
    } else {
        let per_node = 1e6 / parameters.mix_loop_interval_us as f64;
        per_node * nodes as f64 * f64::from(parameters.layers.max(1)) / mixes as f64
    };
    [settings.min_rate, loops, observed.unwrap_or(0.0)]
        .into_iter()
        .filter(|r| r.is_finite())
        .fold(0.0, f64::max)
}

/// How the filter of a key of an epoch lasting `epoch` is sized at `rate`.
pub fn sizing(rate: f64, epoch: Duration) -> ReplayConfig {
    ReplayConfig::for_load(rate, epoch)
}

#[cfg(test)]
mod tests;
