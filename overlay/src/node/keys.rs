//! A node's Sphinx epoch keys: on disk as `DATA_DIR/keys/sphinx-<epoch>.key` (32 bytes,
//! owner-only), and in the relay's key ring, rotated at epoch boundaries ([`KeyRotation`]).
//!
//! A key is written before the descriptor announcing it is uploaded, so a restarted node still
//! holds the keys the consensus names for it. Each key's replay filter is on disk too
//! ([`super::replay`]): before a key enters the ring its replay state is made durable, and a
//! restarted node takes a key back (the previous epoch's too, while its grace period lasts) only
//! with its filter. A key whose state is missing or damaged is retired if it may have unwrapped
//! packets (its epoch had begun); the node then relays from the next key on.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Instant,
};

use p2pmix_bootstrap::{EpochSchedule, Now};
use p2pmix_mix::{KeyRing, NodePublicKey, NodeSecretKey, ReplayCache};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use super::replay::ReplayStore;
use crate::runtime::files::{Access, FileError, write_atomic_with};

/// Why a key could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EpochKeyError {
    /// The file system refused.
    #[error(transparent)]
    File(#[from] FileError),
    /// A key file is not a valid secret key.
    #[error("{0}: not a Sphinx secret key")]
    Malformed(String),
}

/// The directory of epoch keys.
#[derive(Debug)]
pub struct EpochKeyStore {
    dir: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EpochKeyError + '_ {
    move |source| EpochKeyError::File(FileError::on(path)(source))
}

impl EpochKeyStore {
    /// Opens (creating) `data_dir/keys` and retires keys of epochs before `current - 1` (no ring
    /// holds them any more); returns the store and the epochs retired. Keys of the previous,
    /// current and next epoch are for [`KeyRotation`] to take back or retire.
    pub fn open(data_dir: &Path, current: u64) -> Result<(Self, Vec<u64>), EpochKeyError> {
        let dir = data_dir.join("keys");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let store = EpochKeyStore { dir };
        let retired = match current.checked_sub(2) {
            Some(stale) => store.retire_through(stale)?,
            None => Vec::new(),
        };
        Ok((store, retired))
    }

    /// Deletes the key of `epoch`, if it is on disk.
    pub fn retire(&self, epoch: u64) -> Result<(), EpochKeyError> {
        let path = self.path(epoch);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("sphinx-{epoch}.key"))
    }

    /// Epochs with a key on disk.
    pub fn epochs(&self) -> Result<Vec<u64>, EpochKeyError> {
        let mut epochs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name();
            if let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix("sphinx-"))
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse().ok())
            {
                epochs.push(epoch);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Deletes the keys of epochs `..= epoch`; returns which.
    pub fn retire_through(&self, epoch: u64) -> Result<Vec<u64>, EpochKeyError> {
        let retired: Vec<u64> = self.epochs()?.into_iter().filter(|e| *e <= epoch).collect();
        for e in &retired {
            let path = self.path(*e);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(retired)
    }

    /// The key of `epoch`, if one is on disk.
    pub fn load(&self, epoch: u64) -> Result<Option<NodeSecretKey>, EpochKeyError> {
        let path = self.path(epoch);
        let bytes = match fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let array: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| EpochKeyError::Malformed(path.display().to_string()))?,
        );
        NodeSecretKey::from_bytes(*array)
            .map(Some)
            .ok_or_else(|| EpochKeyError::Malformed(path.display().to_string()))
    }

    /// The key of `epoch`, created (and written, owner-only) if there is none yet.
    pub fn load_or_create<R: CryptoRng + ?Sized>(
        &self,
        epoch: u64,
        rng: &mut R,
    ) -> Result<NodeSecretKey, EpochKeyError> {
        if let Some(key) = self.load(epoch)? {
            return Ok(key);
        }
        let key = NodeSecretKey::random(rng);
        write_atomic_with(
            &self.path(epoch),
            &Zeroizing::new(key.to_bytes())[..],
            Access::OwnerOnly,
        )?;
        Ok(key)
    }
}

/// A key that could not be loaded this turn.
#[derive(Debug)]
pub struct UnusableKey {
    /// Its epoch.
    pub epoch: u64,
    /// Why.
    pub error: String,
}

/// What one turn of [`KeyRotation`] changed, for the driver's log.
#[derive(Debug, Default)]
pub struct Rotated {
    /// The ring moved to this epoch.
    pub advanced_to: Option<u64>,
    /// Epochs whose key is no longer on disk.
    pub retired: Vec<u64>,
    /// Keys taken back with their replay filter from disk (after a restart).
    pub restored: Vec<u64>,
    /// Keys retired because their replay state was missing or could not be read, and they may
    /// have unwrapped packets.
    pub lost: Vec<(u64, String)>,
    /// Keys that could not be loaded (a damaged file costs that epoch, not the node).
    pub unusable: Vec<UnusableKey>,
}

/// The key schedule, sans-IO but for the key and replay files: at every epoch boundary the
/// relay's ring advances (the previous key stays for its grace period), and the keys of the
/// current and next epoch (and, after a restart, the previous one) are loaded from the store as
/// soon as they exist, each with its replay filter. Time is passed in.
#[derive(Debug)]
pub struct KeyRotation {
    store: EpochKeyStore,
    replay: ReplayStore,
    schedule: EpochSchedule,
    last: Now,
    /// The ring's own next deadline (grace expiry), as of the last turn.
    ring_due: Option<Instant>,
    /// A key file appeared: load it on the next turn.
    load_due: bool,
    /// A key could not be loaded: try again then (a transient read error must not cost the
    /// rest of an epoch).
    retry_at: Option<Instant>,
}

/// The wait before a key that could not be loaded is tried again.
const LOAD_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl KeyRotation {
    /// Rotation for the network of `schedule`, keys kept in `store` and their replay state in
    /// `replay`, starting at `now`.
    pub fn new(
        store: EpochKeyStore,
        replay: ReplayStore,
        schedule: EpochSchedule,
        now: Now,
    ) -> Self {
        KeyRotation {
            store,
            replay,
            schedule,
            last: now,
            ring_due: None,
            load_due: true,
            retry_at: None,
        }
    }

    /// This node's public key for `epoch`, created and saved if it has none yet (before the
    /// descriptor announcing it leaves); the ring loads it on the next turn.
    pub fn public_key_for<R: CryptoRng + ?Sized>(
        &mut self,
        epoch: u64,
        rng: &mut R,
    ) -> Result<NodePublicKey, EpochKeyError> {
        let key = self.store.load_or_create(epoch, rng)?;
        self.load_due = true;
        Ok(key.public_key())
    }

    fn next_boundary_ms(&self) -> u64 {
        let epoch = self.schedule.epoch_at(self.last.unix_ms);
        self.schedule.start_of(epoch.saturating_add(1))
    }

    /// The next epoch boundary, the ring's next grace expiry, a load retry, or now if a key waits
    /// to load.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.load_due {
            return Some(self.last.mono);
        }
        let boundary = self.last.instant_at(self.next_boundary_ms());
        [Some(boundary), self.ring_due, self.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether [`KeyRotation::handle_timeout`] has work at `now`: the monotonic timers, or an
    /// epoch boundary on the wall clock (which a wall-clock step or a resume from suspend reaches
    /// before the instant [`KeyRotation::poll_timeout`] mapped it to).
    pub fn is_due(&self, now: Now) -> bool {
        self.poll_timeout().is_some_and(|t| t <= now.mono) || now.unix_ms >= self.next_boundary_ms()
    }

    /// Rotates `ring` to `now`: advances it at a boundary, expires grace keys, loads the keys it
    /// lacks (with their replay state), and deletes the files of keys no ring holds any more.
    pub fn handle_timeout(
        &mut self,
        now: Now,
        ring: &mut KeyRing,
    ) -> Result<Rotated, EpochKeyError> {
        self.last = now;
        self.load_due = false;
        let epoch = self.schedule.epoch_at(now.unix_ms);
        let mut rotated = Rotated::default();
        if ring.current_epoch() < epoch {
            ring.advance(epoch, now.mono);
            rotated.advanced_to = Some(epoch);
        }
        ring.handle_timeout(now.mono);
        // The previous key comes back (after a restart) only while its grace period lasts.
        let grace_ends = self
            .schedule
            .start_of(epoch)
            .saturating_add(u64::try_from(ring.grace().as_millis()).unwrap_or(u64::MAX));
        let previous = epoch
            .checked_sub(1)
            .filter(|_| now.unix_ms < grace_ends && ring.current_epoch() == epoch);
        for e in previous.into_iter().chain([epoch, epoch + 1]) {
            if ring.for_epoch(e).is_some() {
                continue;
            }
            match self.store.load(e) {
                Ok(Some(secret)) => {
                    let until = (Some(e) == previous).then(|| now.instant_at(grace_ends));
                    self.admit(e, secret, epoch, until, ring, &mut rotated);
                }
                Ok(None) => {}
                Err(error) => rotated.unusable.push(UnusableKey {
                    epoch: e,
                    error: error.to_string(),
                }),
            }
        }
        self.ring_due = ring.poll_timeout();
        self.retry_at = (!rotated.unusable.is_empty()).then(|| now.mono + LOAD_RETRY);
        rotated.retired = self.sweep(epoch, ring)?;
        Ok(rotated)
    }

    /// Puts the key of `e` into `ring` with its replay filter: read back from disk if it has a
    /// state, new (and made durable first) if its epoch has not begun; otherwise it is retired.
    fn admit(
        &mut self,
        e: u64,
        secret: NodeSecretKey,
        current: u64,
        previous_until: Option<std::time::Instant>,
        ring: &mut KeyRing,
        rotated: &mut Rotated,
    ) {
        let budget = ring.replay_budget().clone();
        let cache = if self.replay.has_state(e) {
            match self
                .replay
                .restore(e, &secret, ring.replay_config(), budget)
            {
                Ok(cache) => {
                    rotated.restored.push(e);
                    cache
                }
                Err(error) => {
                    rotated.lost.push((e, error.to_string()));
                    return;
                }
            }
        } else if e > current {
            let cache = ReplayCache::for_key(ring.replay_config(), &secret, budget);
            if let Err(error) = self.replay.prepare(e, &cache) {
                // Tried again after LOAD_RETRY; the key is not used without its state.
                rotated.unusable.push(UnusableKey {
                    epoch: e,
                    error: error.to_string(),
                });
                return;
            }
            cache
        } else {
            rotated
                .lost
                .push((e, "no replay state, and its epoch has begun".into()));
            return;
        };
        // The window was checked above and a duplicate ruled out.
        let _ = ring.insert_restored(e, secret, cache, previous_until);
    }

    /// Deletes the keys and replay states of epochs no ring holds any more (before the current
    /// one, or lost); returns the epochs whose key was deleted.
    fn sweep(&self, current: u64, ring: &KeyRing) -> Result<Vec<u64>, EpochKeyError> {
        let mut retired = Vec::new();
        for e in self.store.epochs()? {
            if ring.for_epoch(e).is_none() && e <= current {
                self.store.retire(e)?;
                retired.push(e);
            }
        }
        for e in self.replay.epochs() {
            let keyless = !self.store.path(e).exists();
            if ring.for_epoch(e).is_none() && (e <= current || keyless) {
                self.replay.retire(e)?;
            }
        }
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "p2pmix-{name}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            let _ = fs::remove_dir_all(&dir);
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ring(epoch: u64) -> KeyRing {
        KeyRing::new(
            epoch,
            Duration::from_secs(5),
            p2pmix_mix::ReplayConfig::default(),
        )
    }

    fn rotation(dir: &Path, epoch: u64, now: Now) -> KeyRotation {
        let (store, _) = EpochKeyStore::open(dir, epoch).unwrap();
        let replay = ReplayStore::open(dir).unwrap();
        KeyRotation::new(store, replay, EpochSchedule::new(0, 10_000), now)
    }

    #[test]
    fn the_ring_advances_at_each_boundary_and_loads_keys_once_they_exist() {
        let dir = Dir::new("rotation");
        let t0 = Now::new(Instant::now(), 40_000); // epoch 4 begins
        let mut rotation = rotation(&dir.0, 4, t0);
        let mut ring = ring(4);
        let mut rng = rand::rng();
        assert_eq!(rotation.poll_timeout(), Some(t0.mono), "loads at once");
        rotation.handle_timeout(t0, &mut ring).unwrap();
        assert_eq!(
            rotation.poll_timeout(),
            Some(t0.mono + Duration::from_secs(10)),
            "next: the boundary of epoch 5"
        );
        // The descriptor for epoch 5 creates its key: loaded on the next turn, with its replay
        // state made durable first.
        let public = rotation.public_key_for(5, &mut rng).unwrap();
        assert_eq!(rotation.poll_timeout(), Some(t0.mono));
        rotation.handle_timeout(t0, &mut ring).unwrap();
        assert_eq!(ring.for_epoch(5).map(|k| k.public_key()), Some(public));
        assert!(rotation.replay.has_state(5));
        // At the boundary the ring advances; the key of 5 is current, that of 4 (none here)
        // would stay for its grace period (5 s).
        let t1 = t0.later(Duration::from_secs(10));
        let rotated = rotation.handle_timeout(t1, &mut ring).unwrap();
        assert_eq!(rotated.advanced_to, Some(5));
        assert_eq!(ring.current_epoch(), 5);
        // Once the grace after the next boundary is over, the key of 5 and its state go.
        let t3 = t1.later(Duration::from_secs(20));
        let rotated = rotation.handle_timeout(t3, &mut ring).unwrap();
        assert_eq!(rotated.retired, vec![5]);
        assert!(!rotation.replay.has_state(5));
        assert!(ring.for_epoch(5).is_none());
    }

    #[test]
    fn a_wall_clock_step_is_noticed_at_once() {
        let dir = Dir::new("wallstep");
        let t0 = Now::new(Instant::now(), 40_000);
        let mut rotation = rotation(&dir.0, 4, t0);
        let mut ring = KeyRing::new(
            4,
            Duration::from_secs(10),
            p2pmix_mix::ReplayConfig::default(),
        );
        rotation.handle_timeout(t0, &mut ring).unwrap();
        // One second later by the monotonic clock, but the wall clock jumped into epoch 6 (an
        // NTP step, or a resume from suspend, which the monotonic clock does not count).
        let stepped = Now::new(t0.mono + Duration::from_secs(1), 61_000);
        assert!(rotation.poll_timeout().unwrap() > stepped.mono);
        assert!(
            rotation.is_due(stepped),
            "the boundary is past on the wall clock"
        );
        rotation.handle_timeout(stepped, &mut ring).unwrap();
        assert_eq!(ring.current_epoch(), 6);
        assert!(!rotation.is_due(stepped));
    }

    #[test]
    fn a_restarted_node_takes_keys_back_with_their_replay_state_or_retires_them() {
        let dir = Dir::new("restart");
        let mut rng = rand::rng();
        let t0 = Now::new(Instant::now(), 40_000);
        let mut first = rotation(&dir.0, 4, t0);
        let mut ring4 = ring(4);
        let k5 = first.public_key_for(5, &mut rng).unwrap();
        first.handle_timeout(t0, &mut ring4).unwrap();
        let t1 = t0.later(Duration::from_secs(10));
        first.handle_timeout(t1, &mut ring4).unwrap();
        let k6 = first.public_key_for(6, &mut rng).unwrap();
        first.handle_timeout(t1, &mut ring4).unwrap();
        drop(first);
        // Restart in the middle of epoch 5 (the process died; the ring is gone).
        let t = t1.later(Duration::from_secs(5));
        let mut again = rotation(&dir.0, 5, t);
        let mut ring5 = ring(5);
        let rotated = again.handle_timeout(t, &mut ring5).unwrap();
        assert_eq!(rotated.restored, vec![5, 6]);
        assert!(rotated.lost.is_empty());
        assert_eq!(ring5.for_epoch(5).map(|k| k.public_key()), Some(k5));
        assert_eq!(ring5.for_epoch(6).map(|k| k.public_key()), Some(k6));
        // Without its replay state, a key whose epoch has begun is retired: it may have
        // unwrapped packets nobody remembers.
        again.replay.retire(6).unwrap();
        let t2 = t1.later(Duration::from_secs(11)); // epoch 6 begins
        let mut later = rotation(&dir.0, 6, t2);
        let mut ring6 = ring(6);
        let rotated = later.handle_timeout(t2, &mut ring6).unwrap();
        assert_eq!(
            rotated.restored,
            vec![5],
            "the previous key, in its grace period"
        );
        assert_eq!(rotated.lost.len(), 1);
        assert_eq!(rotated.lost[0].0, 6);
        assert!(ring6.for_epoch(6).is_none());
        assert!(later.store.load(6).unwrap().is_none(), "its file is gone");
        // After the grace period the previous key is not taken back.
        let t3 = t2.later(Duration::from_secs(5));
        let mut last = rotation(&dir.0, 6, t3);
        let mut ring6 = ring(6);
        let rotated = last.handle_timeout(t3, &mut ring6).unwrap();
        assert!(rotated.restored.is_empty());
        assert!(ring6.for_epoch(5).is_none());
    }

    #[test]
    fn keys_survive_reopening_until_they_are_stale() {
        let dir = Dir::new("keys");
        let mut rng = rand::rng();
        let (store, retired) = EpochKeyStore::open(&dir.0, 4).unwrap();
        assert!(retired.is_empty());
        let k5 = store.load_or_create(5, &mut rng).unwrap();
        let k6 = store.load_or_create(6, &mut rng).unwrap();
        assert_eq!(
            store.load_or_create(5, &mut rng).unwrap().to_bytes(),
            k5.to_bytes()
        );
        // Reopened during epoch 7: the key of 5 can be in no ring any more.
        let (store, retired) = EpochKeyStore::open(&dir.0, 7).unwrap();
        assert_eq!(retired, vec![5]);
        assert!(store.load(5).unwrap().is_none());
        assert_eq!(store.load(6).unwrap().unwrap().to_bytes(), k6.to_bytes());
        fs::write(store.path(7), b"short").unwrap();
        assert!(matches!(store.load(7), Err(EpochKeyError::Malformed(_))));
    }
}
