//! A node's Sphinx keys across epoch boundaries: previous, current and next epoch.
//!
//! Senders build packets with the keys of the epoch they believe is current; around a boundary,
//! clocks and in-flight delays disagree. So a node keeps the previous epoch's key for a grace
//! period after the boundary and already accepts packets for the next epoch once its key is
//! announced. Each key owns its replay cache; retiring the key frees the cache. The caches share
//! one memory budget and, on nodes that persist their replay state, one journal hand-off
//! ([`ReplayLog`]). Time is passed in.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;

use super::{
    error::UnwrapError,
    geometry::Geometry,
    keys::{NodePublicKey, NodeSecretKey},
    peel::{Processed, unwrap_packet, unwrap_with_ring},
    replay::{
        ReplayBudget, ReplayCache, ReplayConfig, bloom::MAX_SEGMENT_BYTES, index_key_for,
        log::ReplayLog,
    },
};

/// One epoch's key with its replay cache.
#[derive(Debug)]
pub struct EpochKey {
    epoch: u64,
    secret: NodeSecretKey,
    public: NodePublicKey,
    replay: Arc<ReplayCache>,
}

impl EpochKey {
    /// The epoch this key serves.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The public key published for this epoch.
    pub fn public_key(&self) -> NodePublicKey {
        self.public
    }

    /// The replay cache of this key.
    pub fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// The secret key, for batched unwrapping (`peel::unwrap_batch`).
    pub(crate) fn secret(&self) -> &NodeSecretKey {
        &self.secret
    }

    /// A handle on the replay cache that outlives the ring's lock (to snapshot it).
    pub fn replay_handle(&self) -> Arc<ReplayCache> {
        self.replay.clone()
    }

    /// Unwraps one layer of `packet` with this key and its replay cache; see [`unwrap_packet`].
    pub fn process(
        &self,
        geometry: &Geometry,
        packet: &mut [u8],
    ) -> Result<Processed, UnwrapError> {
        unwrap_packet(geometry, &self.secret, &self.replay, packet)
    }
}

/// Why a key could not be added to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// Only keys for the current epoch and the next one can be added (and, restored from disk,
    /// the previous one within its grace period).
    #[error("epoch {epoch} is outside the ring's window around current epoch {current}")]
    OutsideWindow {
        /// The epoch of the key offered.
        epoch: u64,
        /// The ring's current epoch.
        current: u64,
    },
    /// A key for this epoch is already held; keys never change within an epoch.
    #[error("a key for epoch {0} is already held")]
    Duplicate(u64),
}

/// Holds at most three epoch keys: previous (until its grace period ends), current and next.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<EpochKey>,
    current: u64,
    previous_retires_at: Option<Instant>,
    grace: Duration,
    replay: ReplayConfig,
    budget: Arc<ReplayBudget>,
    log: Option<Arc<ReplayLog>>,
}

impl KeyRing {
    /// An empty ring whose current epoch is `current`; the previous key is kept `grace` after each
    /// boundary; each key gets a replay cache sized by `replay`, out of a budget of 4 GiB.
    pub fn new(current: u64, grace: Duration, replay: ReplayConfig) -> Self {
        KeyRing {
            keys: Vec::with_capacity(3),
            current,
            previous_retires_at: None,
            grace,
            replay,
            budget: ReplayBudget::new(MAX_SEGMENT_BYTES),
            log: None,
        }
    }

    /// The same ring with its caches' memory out of `budget`.
    pub fn with_replay_budget(mut self, budget: Arc<ReplayBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The same ring handing every fresh tag to `log` before accepting it (see [`ReplayLog`]).
    pub fn with_replay_log(mut self, log: Arc<ReplayLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// How the caches of keys added from now on are sized (a new consensus, a new load).
    pub fn set_replay_config(&mut self, replay: ReplayConfig) {
        self.replay = replay;
    }

    /// How new keys' caches are sized.
    pub fn replay_config(&self) -> ReplayConfig {
        self.replay
    }

    /// The memory budget of the caches.
    pub fn replay_budget(&self) -> &Arc<ReplayBudget> {
        &self.budget
    }

    /// The journal hand-off, if the ring has one.
    pub fn replay_log(&self) -> Option<&Arc<ReplayLog>> {
        self.log.as_ref()
    }

    /// How long the previous key stays after a boundary.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The current epoch.
    pub fn current_epoch(&self) -> u64 {
        self.current
    }

    /// Adds the key for `epoch` (the current or the next one).
    pub fn insert(&mut self, epoch: u64, secret: NodeSecretKey) -> Result<(), KeyRingError> {
        if epoch != self.current && Some(epoch) != self.current.checked_add(1) {
            return Err(KeyRingError::OutsideWindow {
                epoch,
                current: self.current,
            });
        }
        let cache =
            ReplayCache::with_budget(self.replay, index_key_for(&secret), self.budget.clone());
        self.push(epoch, secret, cache)
    }

    /// Adds the key for `epoch` with `cache`, its replay cache read back from disk (with
    /// [`ReplayCache::read_snapshot`] on this ring's budget). Besides the current and next
    /// epoch, the previous one is accepted while its grace period lasts: `previous_until` says
    /// when it ends.
    pub fn insert_restored(
        &mut self,
        epoch: u64,
        secret: NodeSecretKey,
        cache: ReplayCache,
        previous_until: Option<Instant>,
    ) -> Result<(), KeyRingError> {
        let previous = epoch.checked_add(1) == Some(self.current);
        match previous_until {
            Some(until) if previous => {
                self.previous_retires_at =
                    Some(self.previous_retires_at.map_or(until, |t| t.min(until)));
            }
            _ if epoch == self.current || Some(epoch) == self.current.checked_add(1) => {}
            _ => {
                return Err(KeyRingError::OutsideWindow {
                    epoch,
                    current: self.current,
                });
            }
        }
        self.push(epoch, secret, cache)
    }

    fn push(
        &mut self,
        epoch: u64,
        secret: NodeSecretKey,
        mut cache: ReplayCache,
    ) -> Result<(), KeyRingError> {
        if self.keys.iter().any(|k| k.epoch == epoch) {
            return Err(KeyRingError::Duplicate(epoch));
        }
        if let Some(log) = &self.log {
            cache.attach_log(epoch, log.clone());
        }
        let public = secret.public_key();
        self.keys.push(EpochKey {
            epoch,
            secret,
            public,
            replay: Arc::new(cache),
        });
        Ok(())
    }

    /// The live keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &EpochKey> {
        self.keys.iter()
    }

    /// Moves to epoch `epoch` at `now`: the key of `epoch - 1` stays for the grace period, older
    /// keys retire at once. Returns the epochs whose keys retired.
    pub fn advance(&mut self, epoch: u64, now: Instant) -> Vec<u64> {
        if epoch <= self.current {
            return Vec::new();
        }
        self.current = epoch;
        self.previous_retires_at = now.checked_add(self.grace);
        let retired =
            self.retire(|k| k.epoch.saturating_add(1) < epoch || k.epoch > epoch.saturating_add(1));
        if self.grace.is_zero() {
            let mut more = self.handle_timeout(now);
            more.extend(retired);
            return more;
        }
        retired
    }

    /// Retires the previous key once its grace period is over. Returns the retired epochs.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<u64> {
        match self.previous_retires_at {
            Some(at) if now >= at => {
                self.previous_retires_at = None;
                let current = self.current;
                self.retire(|k| k.epoch < current)
            }
            _ => Vec::new(),
        }
    }

    /// When [`KeyRing::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous_retires_at
    }

    /// The live keys in the order a packet tries them: the current epoch's (nearly every
    /// packet's), then the next one's (senders whose clock is a little ahead at a boundary),
    /// then the previous one's (packets in flight or built from the last consensus during the
    /// grace period).
    pub fn trial_order(&self) -> impl Iterator<Item = &EpochKey> {
        let current = self.current;
        let rank = move |k: &EpochKey| {
            if k.epoch == current {
                0
            } else if Some(k.epoch) == current.checked_add(1) {
                1
            } else {
                2
            }
        };
        (0..3).flat_map(move |r| self.keys.iter().filter(move |k| rank(k) == r))
    }

    /// The key held for `epoch`.
    pub fn for_epoch(&self, epoch: u64) -> Option<&EpochKey> {
        self.keys.iter().find(|k| k.epoch == epoch)
    }

    /// Epochs whose keys are live, oldest first.
    pub fn epochs(&self) -> Vec<u64> {
        let mut epochs: Vec<u64> = self.keys.iter().map(|k| k.epoch).collect();
        epochs.sort_unstable();
        epochs
    }

    /// Unwraps one layer of `packet` with the first live key whose MAC verifies (see
    /// [`unwrap_with_ring`]).
    pub fn process(
        &self,
        geometry: &Geometry,
        packet: &mut [u8],
    ) -> Result<Processed, UnwrapError> {
        self.process_keyed(geometry, packet)
            .map(|(_, processed)| processed)
    }

    /// [`KeyRing::process`], with the epoch of the key that opened the packet (whose topology
    /// names its next hop).
    pub fn process_keyed(
        &self,
        geometry: &Geometry,
        packet: &mut [u8],
    ) -> Result<(u64, Processed), UnwrapError> {
        unwrap_with_ring(geometry, self, packet)
    }

    fn retire(&mut self, condition: impl Fn(&EpochKey) -> bool) -> Vec<u64> {
        let mut retired = Vec::new();
        self.keys.retain(|k| {
            let retire = condition(k);
            if retire {
                retired.push(k.epoch);
            }
            !retire
        });
        retired
    }
}
