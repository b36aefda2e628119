//! A node's Sphinx epoch keys: on disk as `DATA_DIR/keys/sphinx-<epoch>.key` (32 bytes,
//! owner-only), and in the relay's key ring, rotated at epoch boundaries ([`KeyRotation`]).
//!
//! A key is written before the descriptor announcing it is uploaded, so a restarted node still
//! holds the keys the consensus names for it. Replay caches live in memory only; a key that may
//! already have unwrapped packets (its epoch had begun when the node stopped) would accept those
//! packets again after a restart. So [`EpochKeyStore::open`] retires every key whose epoch has
//! begun: a restarted node relays again from the next epoch on (Katzenpost keeps a replay
//! database on disk instead; ours is the simpler trade of at most one epoch of service).

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Instant,
};

use p2pmix_bootstrap::{EpochSchedule, Now};
use p2pmix_mix::{KeyRing, NodePublicKey, NodeSecretKey};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

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
    /// Opens (creating) `data_dir/keys` and retires keys of epochs up to `current` (see the module
    /// documentation); returns the store and the epochs retired.
    pub fn open(data_dir: &Path, current: u64) -> Result<(Self, Vec<u64>), EpochKeyError> {
        let dir = data_dir.join("keys");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let store = EpochKeyStore { dir };
        let retired = store.retire_through(current)?;
        Ok((store, retired))
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
    pub error: EpochKeyError,
}

/// What one turn of [`KeyRotation`] changed, for the driver's log.
#[derive(Debug, Default)]
pub struct Rotated {
    /// The ring moved to this epoch.
    pub advanced_to: Option<u64>,
    /// Epochs whose key is no longer on disk.
    pub retired: Vec<u64>,
    /// Keys that could not be loaded (a damaged file costs that epoch, not the node).
    pub unusable: Vec<UnusableKey>,
}

/// The key schedule, sans-IO but for the key files: at every epoch boundary the relay's ring
/// advances (the previous key stays for its grace period), and the keys of the current and next
/// epoch are loaded from the store as soon as they exist. Time is passed in.
#[derive(Debug)]
pub struct KeyRotation {
    store: EpochKeyStore,
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
    /// Rotation for the network of `schedule`, keys kept in `store`, starting at `now`.
    pub fn new(store: EpochKeyStore, schedule: EpochSchedule, now: Now) -> Self {
        KeyRotation {
            store,
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

    /// Rotates `ring` to `now`: advances it at a boundary (retiring the old key's file), expires
    /// grace keys, and loads the current and next epochs' keys it lacks.
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
        for e in [epoch, epoch + 1] {
            if ring.for_epoch(e).is_some() {
                continue;
            }
            match self.store.load(e) {
                // Only keys of the current and next epoch are offered: insert cannot fail on
                // the window, and a duplicate was ruled out above.
                Ok(Some(secret)) => {
                    let _ = ring.insert(e, secret);
                }
                Ok(None) => {}
                Err(error) => rotated.unusable.push(UnusableKey { epoch: e, error }),
            }
        }
        self.ring_due = ring.poll_timeout();
        self.retry_at = (!rotated.unusable.is_empty()).then(|| now.mono + LOAD_RETRY);
        if rotated.advanced_to.is_some() {
            // The previous key stays in memory for its grace period; on disk it is no longer
            // needed (a restart retires it anyway).
            rotated.retired = self.store.retire_through(epoch.saturating_sub(1))?;
        }
        Ok(rotated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_advances_at_each_boundary_and_loads_keys_once_they_exist() {
        use std::time::Duration;

        let dir = std::env::temp_dir().join(format!("p2pmix-rotation-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let schedule = EpochSchedule::new(0, 10_000);
        let t0 = Now::new(Instant::now(), 40_000); // epoch 4 begins
        let (store, _) = EpochKeyStore::open(&dir, 4).unwrap();
        let mut rotation = KeyRotation::new(store, schedule, t0);
        let mut ring = KeyRing::new(
            4,
            Duration::from_secs(10),
            p2pmix_mix::ReplayConfig::default(),
        );
        let mut rng = rand::rng();
        assert_eq!(rotation.poll_timeout(), Some(t0.mono), "loads at once");
        rotation.handle_timeout(t0, &mut ring).unwrap();
        assert_eq!(
            rotation.poll_timeout(),
            Some(t0.mono + Duration::from_secs(10)),
            "next: the boundary of epoch 5"
        );
        // The descriptor for epoch 5 creates its key: loaded on the next turn.
        let public = rotation.public_key_for(5, &mut rng).unwrap();
        assert_eq!(rotation.poll_timeout(), Some(t0.mono));
        rotation.handle_timeout(t0, &mut ring).unwrap();
        assert_eq!(ring.for_epoch(5).map(|k| k.public_key()), Some(public));
        // At the boundary the ring advances, and the file of epoch 4 (none here) is retired.
        let t1 = t0.later(Duration::from_secs(10));
        let rotated = rotation.handle_timeout(t1, &mut ring).unwrap();
        assert_eq!(rotated.advanced_to, Some(5));
        assert_eq!(ring.current_epoch(), 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wall_clock_step_is_noticed_at_once() {
        use std::time::Duration;

        let dir = std::env::temp_dir().join(format!("p2pmix-wallstep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let schedule = EpochSchedule::new(0, 10_000);
        let t0 = Now::new(Instant::now(), 40_000);
        let (store, _) = EpochKeyStore::open(&dir, 4).unwrap();
        let mut rotation = KeyRotation::new(store, schedule, t0);
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
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_survive_reopening_until_their_epoch_begins() {
        let dir = std::env::temp_dir().join(format!("p2pmix-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut rng = rand::rng();
        let (store, retired) = EpochKeyStore::open(&dir, 4).unwrap();
        assert!(retired.is_empty());
        let k5 = store.load_or_create(5, &mut rng).unwrap();
        let k6 = store.load_or_create(6, &mut rng).unwrap();
        assert_eq!(
            store.load_or_create(5, &mut rng).unwrap().to_bytes(),
            k5.to_bytes()
        );
        // Reopened during epoch 5: the key of 5 may have seen packets and is retired.
        let (store, retired) = EpochKeyStore::open(&dir, 5).unwrap();
        assert_eq!(retired, vec![5]);
        assert!(store.load(5).unwrap().is_none());
        assert_eq!(store.load(6).unwrap().unwrap().to_bytes(), k6.to_bytes());
        fs::write(store.path(7), b"short").unwrap();
        assert!(matches!(store.load(7), Err(EpochKeyError::Malformed(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
