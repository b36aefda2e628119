//! A node's Sphinx epoch keys on disk: `DATA_DIR/keys/sphinx-<epoch>.key`, 32 bytes, owner-only.
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
};

use p2pmix_mix::NodeSecretKey;
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a key could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EpochKeyError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
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
    move |source| EpochKeyError::Io {
        path: path.display().to_string(),
        source,
    }
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
        let path = self.path(epoch);
        let tmp = path.with_extension("tmp");
        write_private(&tmp, &Zeroizing::new(key.to_bytes())[..]).map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        Ok(key)
    }
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
