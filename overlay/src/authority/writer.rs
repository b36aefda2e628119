//! The authority's disk writes, off the event loop: one writer thread that takes the latest state
//! snapshot (and the latest bytes of each document file) and writes them durably (temporary
//! file, fsync, rename, fsync of the directory: [`write_atomic`]).
//!
//! The slot holds one snapshot: a newer one replaces a snapshot not yet started, so however fast
//! requests come the thread writes at most one state file at a time and memory holds at most two
//! snapshots (the one being written and the next). The driver gives every snapshot a generation
//! and holds back the answers and messages that must not go out before the state that accepted
//! them is on disk, until [`StateWriter::durable`] reaches their generation (docs/consensus.md,
//! "Restarts").

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread::JoinHandle,
};

use tokio::sync::watch;
use tracing::error;

use crate::runtime::files::{FileError, write_atomic};

/// What is waiting for the thread.
#[derive(Debug, Default)]
struct Pending {
    /// The newest state snapshot not yet started, with its generation.
    state: Option<(u64, Vec<u8>)>,
    /// Other files, the newest bytes of each.
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// The thread is writing.
    busy: bool,
    stop: bool,
}

/// How far the writes have come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// The newest generation on disk.
    pub(super) durable: u64,
    /// State files written so far.
    pub(super) writes: u64,
    /// The size of the last one.
    pub(super) last_bytes: usize,
    /// The first write that failed, if one did (the authority stops: a state it cannot save is a
    /// state it cannot promise).
    pub(super) failed: Option<String>,
}

/// The writer thread and its slot. See the module documentation.
#[derive(Debug)]
pub(super) struct StateWriter {
    shared: Arc<(Mutex<Pending>, Condvar)>,
    progress: watch::Receiver<Progress>,
    thread: Option<JoinHandle<()>>,
    state_path: PathBuf,
}

impl StateWriter {
    /// Starts the thread that writes the state to `state_path`.
    pub(super) fn start(state_path: PathBuf) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let (tx, progress) = watch::channel(Progress::default());
        let thread = {
            let shared = shared.clone();
            let path = state_path.clone();
            std::thread::Builder::new()
                .name("authority-writer".into())
                .spawn(move || run(&shared, &path, &tx))?
        };
        Ok(StateWriter {
            shared,
            progress,
            thread: Some(thread),
            state_path,
        })
    }

    /// Hands over the state of `generation` (replacing a snapshot not yet started).
    pub(super) fn submit(&self, generation: u64, bytes: Vec<u8>) {
        let (lock, wake) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
        pending.state = Some((generation, bytes));
        wake.notify_one();
    }

    /// Hands over the bytes of another file (replacing what was not yet written of it).
    pub(super) fn write_file(&self, path: PathBuf, bytes: Vec<u8>) {
        let (lock, wake) = &*self.shared;
        let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
        pending.files.insert(path, bytes);
        wake.notify_one();
    }

    /// Whether a snapshot waits that the thread has not started: then a newer one need not be
    /// encoded yet (it would replace it unwritten).
    pub(super) fn has_waiting_snapshot(&self) -> bool {
        let (lock, _) = &*self.shared;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state
            .is_some()
    }

    /// The progress so far.
    pub(super) fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// A receiver that wakes when the progress changes.
    pub(super) fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops the thread after what is waiting, then writes `last` (the final state) here and
    /// now.
    pub(super) fn finish(mut self, last: &[u8]) -> Result<(), FileError> {
        {
            let (lock, wake) = &*self.shared;
            let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
            pending.stop = true;
            wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        write_atomic(&self.state_path, last)
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
    }
}

fn run(
    shared: &(Mutex<Pending>, Condvar),
    state_path: &std::path::Path,
    tx: &watch::Sender<Progress>,
) {
    let (lock, wake) = shared;
    loop {
        let (state, files) = {
            let mut pending = lock.lock().unwrap_or_else(PoisonError::into_inner);
            pending.busy = false;
            while pending.state.is_none() && pending.files.is_empty() && !pending.stop {
                pending = wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
            }
            if pending.state.is_none() && pending.files.is_empty() && pending.stop {
                return;
            }
            pending.busy = true;
            (pending.state.take(), std::mem::take(&mut pending.files))
        };
        let mut failed = None;
        for (path, bytes) in &files {
            if let Err(e) = write_atomic(path, bytes) {
                failed = Some(e.to_string());
            }
        }
        let mut written = None;
        if let Some((generation, bytes)) = &state {
            match write_atomic(state_path, bytes) {
                Ok(()) => written = Some((*generation, bytes.len())),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(e) = &failed {
            error!(%e, "authority state could not be written");
        }
        tx.send_modify(|p| {
            if let Some((g, bytes)) = written {
                p.durable = p.durable.max(g);
                p.writes += 1;
                p.last_bytes = bytes;
            }
            if p.failed.is_none() {
                p.failed = failed;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_latest_snapshot_reaches_the_disk_and_is_reported_durable() {
        let dir = std::env::temp_dir().join(format!("p2pmix-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.pb");
        let writer = StateWriter::start(path.clone()).unwrap();
        for g in 1..=100u64 {
            writer.submit(g, g.to_le_bytes().to_vec());
        }
        writer.write_file(dir.join("consensus-1.pb"), b"doc".to_vec());
        let start = Instant::now();
        while writer.progress().durable < 100 {
            assert!(start.elapsed() < Duration::from_secs(30), "never durable");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(std::fs::read(&path).unwrap(), 100u64.to_le_bytes());
        let writes = writer.progress().writes;
        assert!((1..=100).contains(&writes), "{writes} writes counted");
        assert_eq!(writer.progress().last_bytes, 8);
        assert_eq!(std::fs::read(dir.join("consensus-1.pb")).unwrap(), b"doc");
        writer.finish(b"last").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"last");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
