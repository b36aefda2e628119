//! The threads that make replay tags durable: a journal writer that appends every batch the
//! Sphinx workers handed over and syncs it before marking it durable (group commit: one
//! `fdatasync` per batch, batches at most every [`MIN_COMMIT_INTERVAL`]), and a snapshot writer
//! that, now and then and at shutdown, writes each key's whole filter so that restarts read a
//! bounded journal.
//!
//! Until a batch is durable its packets wait (the mix behaviour holds them); if the disk fails,
//! nothing is marked durable, the packets wait, the delay queue fills and packets are refused:
//! the node stops relaying rather than relay without replay protection.

use std::{
    collections::HashMap,
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use p2pmix_mix::{ReplayBatch, ReplayCache, ReplayLog, ReplayRecord};
use tracing::{debug, warn};

use super::{journal_path, list, snapshot_path};
use crate::runtime::files::sync_dir;

/// The shortest gap between two commits: batches gather this long at most under load, which is
/// what a zero-delay packet may wait for its tag to be on disk.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(2);

/// How long shutdown waits for the workers' last tags before it writes the snapshots.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// When the snapshot writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Every this long.
    pub interval: Duration,
    /// Or once a key's journals since its last snapshot hold this many bytes (what a restart
    /// must read back).
    pub journal_bytes: u64,
}

impl Default for SnapshotPolicy {
    /// Every 10 minutes, or every 256 MiB of journal (8 million tags, about 2 s to read back).
    fn default() -> Self {
        SnapshotPolicy {
            interval: Duration::from_secs(600),
            journal_bytes: 256 << 20,
        }
    }
}

/// The live keys' caches, by epoch (read from the relay's key ring).
pub type Caches = Box<dyn Fn() -> Vec<(u64, Arc<ReplayCache>)> + Send>;

/// The running writers. Dropping it (or [`JournalWriter::shutdown`]) commits what is pending and
/// snapshots every live key.
pub struct JournalWriter {
    stop: Arc<AtomicBool>,
    log: Arc<ReplayLog>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JournalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalWriter").finish_non_exhaustive()
    }
}

impl JournalWriter {
    /// Starts writing `log`'s batches into `dir` (`DATA_DIR/replay`).
    pub fn start(
        dir: PathBuf,
        log: Arc<ReplayLog>,
        caches: Caches,
        policy: SnapshotPolicy,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs, job_rx) = sync_channel::<SnapshotJob>(8);
        let snapshots = std::thread::Builder::new()
            .name("p2pmix-replay-snapshot".into())
            .spawn(move || run_snapshots(job_rx))?;
        let mut journals = Journals {
            dir,
            open: HashMap::new(),
            unwritten: Vec::new(),
            unwritten_through: None,
            caches,
            jobs,
            policy,
            last_snapshot: Instant::now(),
        };
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::Builder::new()
                .name("p2pmix-replay-journal".into())
                .spawn(move || {
                    journals.run(&log, &stop);
                    drop(journals); // closes the job channel: the snapshot thread ends
                    let _ = snapshots.join();
                })?
        };
        Ok(JournalWriter {
            stop,
            log,
            thread: Some(thread),
        })
    }

    /// Commits what is pending, snapshots every live key and stops.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.log.nudge();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One key's journal being appended to.
struct OpenJournal {
    file: fs::File,
    generation: u64,
    /// Bytes in this key's journals since its last snapshot.
    since_snapshot: u64,
}

struct SnapshotJob {
    dir: PathBuf,
    generation: u64,
    cache: Arc<ReplayCache>,
}

/// The journal writer's state.
struct Journals {
    dir: PathBuf,
    open: HashMap<u64, OpenJournal>,
    /// Records taken but not yet written (the disk refused): retried first.
    unwritten: Vec<ReplayRecord>,
    unwritten_through: Option<u64>,
    caches: Caches,
    jobs: SyncSender<SnapshotJob>,
    policy: SnapshotPolicy,
    last_snapshot: Instant,
}

impl Journals {
    fn run(&mut self, log: &ReplayLog, stop: &AtomicBool) {
        let mut failing = false;
        let mut stop_by = None;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            if stopping && stop_by.is_none() {
                stop_by = Some(Instant::now() + STOP_WITHIN);
            }
            let wait = if stopping || !self.unwritten.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_millis(250)
            };
            let started = Instant::now();
            // While records wait for a retry, nothing more is taken: the log's bounded backlog
            // then fills and fresh packets are refused, instead of this buffer growing for as
            // long as the disk fails.
            if self.unwritten.is_empty()
                && let Some(batch) = log.take(wait)
            {
                self.push(batch);
            }
            if let Some(through) = self.unwritten_through {
                match self.commit() {
                    Ok(()) => {
                        log.mark_durable(through);
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            warn!(%e, "replay journal: cannot write; packets wait until it can");
                        }
                        failing = true;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            let drained = log.pending() == 0 && self.unwritten.is_empty();
            if stopping && (drained || stop_by.is_some_and(|t| Instant::now() >= t)) {
                // Whatever is still pending never became durable: its packets never left.
                self.snapshot_all(true);
                return;
            }
            self.maybe_snapshot();
            // Gather the next batch a little, unless the disk is slower than that anyway.
            if let Some(rest) = MIN_COMMIT_INTERVAL.checked_sub(started.elapsed())
                && !stopping
            {
                std::thread::sleep(rest);
            }
        }
    }

    fn push(&mut self, batch: ReplayBatch) {
        self.unwritten.extend(batch.records);
        self.unwritten_through = Some(batch.through);
    }

    /// Appends every unwritten record to its key's journal and syncs the files written. On an
    /// error the journals touched are closed, so the retry writes everything again into a fresh
    /// generation: a failed write may have left a torn record (which would shift every later one
    /// in that file), and a failed sync may have dropped the pages while clearing the error.
    fn commit(&mut self) -> io::Result<()> {
        let result = self.append_unwritten();
        if result.is_err() {
            let touched: std::collections::HashSet<u64> =
                self.unwritten.iter().map(|r| r.epoch).collect();
            self.open.retain(|epoch, _| !touched.contains(epoch));
        }
        result
    }

    fn append_unwritten(&mut self) -> io::Result<()> {
        let mut by_epoch: HashMap<u64, Vec<u8>> = HashMap::new();
        for r in &self.unwritten {
            by_epoch
                .entry(r.epoch)
                .or_default()
                .extend_from_slice(&r.index);
        }
        let live: HashMap<u64, Arc<ReplayCache>> = (self.caches)().into_iter().collect();
        for (epoch, bytes) in &by_epoch {
            // A key retired since its packets were unwrapped: a restart will not hold it, so a
            // replay of them is refused as an unknown key; nothing to keep.
            let Some(cache) = live.get(epoch) else {
                continue;
            };
            let journal = self.journal(*epoch, cache)?;
            journal.file.write_all(bytes)?;
            journal.since_snapshot += bytes.len() as u64;
        }
        for epoch in by_epoch.keys() {
            if let Some(j) = self.open.get(epoch) {
                j.file.sync_data()?;
            }
        }
        self.unwritten.clear();
        self.unwritten_through = None;
        self.open.retain(|epoch, _| live.contains_key(epoch));
        Ok(())
    }

    /// The open journal of `epoch`, starting a new generation (durably) if there is none.
    fn journal(&mut self, epoch: u64, cache: &ReplayCache) -> io::Result<&mut OpenJournal> {
        if !self.open.contains_key(&epoch) {
            let dir = self.dir.join(epoch.to_string());
            // The node made it before the key entered the ring; made again only if someone
            // removed it since (its earlier tags are then gone, which no code here does).
            fs::create_dir_all(&dir)?;
            let generation = list(&dir)?.next_generation();
            let file = start_journal(&dir, generation, &cache.journal_header(epoch))?;
            self.open.insert(
                epoch,
                OpenJournal {
                    file,
                    generation,
                    since_snapshot: 0,
                },
            );
        }
        self.open
            .get_mut(&epoch)
            .ok_or_else(|| io::Error::other("journal vanished"))
    }

    fn maybe_snapshot(&mut self) {
        let due_all = self.last_snapshot.elapsed() >= self.policy.interval;
        let big: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, j)| j.since_snapshot >= self.policy.journal_bytes)
            .map(|(e, _)| *e)
            .collect();
        if due_all {
            self.snapshot_all(false);
        } else {
            for epoch in big {
                self.snapshot(epoch, false);
            }
        }
    }

    fn snapshot_all(&mut self, wait: bool) {
        self.last_snapshot = Instant::now();
        let epochs: Vec<u64> = (self.caches)().into_iter().map(|(e, _)| e).collect();
        for epoch in epochs {
            self.snapshot(epoch, wait);
        }
    }

    /// Starts a new journal generation for `epoch` and has the snapshot writer write its filter
    /// as of now (covering every earlier generation). With `wait`, writes it here.
    fn snapshot(&mut self, epoch: u64, wait: bool) {
        let Some(cache) = (self.caches)()
            .into_iter()
            .find_map(|(e, c)| (e == epoch).then_some(c))
        else {
            return;
        };
        let dir = self.dir.join(epoch.to_string());
        if !dir.is_dir() {
            return;
        }
        // Everything written so far is in earlier generations; the new one takes what follows.
        self.open.remove(&epoch);
        let generation = match self.journal(epoch, &cache) {
            Ok(j) => j.generation,
            Err(e) => {
                warn!(epoch, %e, "replay journal: cannot start a new generation");
                return;
            }
        };
        let job = SnapshotJob {
            dir,
            generation,
            cache,
        };
        if wait {
            write_snapshot(&job);
        } else if self.jobs.try_send(job).is_err() {
            debug!(
                epoch,
                "replay snapshot writer busy; the journal keeps growing"
            );
        }
    }
}

/// Creates journal `generation` in `dir` with `header`, durably (file and directory).
fn start_journal(dir: &Path, generation: u64, header: &[u8]) -> io::Result<fs::File> {
    let path = journal_path(dir, generation);
    let mut options = fs::OpenOptions::new();
    options.create_new(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(header)?;
    file.sync_all()?;
    sync_dir(dir).map_err(|e| e.source)?;
    Ok(file)
}

fn run_snapshots(jobs: Receiver<SnapshotJob>) {
    while let Ok(job) = jobs.recv() {
        write_snapshot(&job);
    }
}

/// Writes `job`'s snapshot (temporary file, sync, rename, sync the directory), then deletes the
/// journals and snapshots it covers.
fn write_snapshot(job: &SnapshotJob) {
    let started = Instant::now();
    match try_write_snapshot(job) {
        Ok(bytes) => debug!(
            dir = %job.dir.display(),
            generation = job.generation,
            bytes,
            took = ?started.elapsed(),
            "replay snapshot written"
        ),
        Err(e) => warn!(dir = %job.dir.display(), %e, "replay snapshot failed; journals kept"),
    }
}

fn try_write_snapshot(job: &SnapshotJob) -> io::Result<u64> {
    let path = snapshot_path(&job.dir, job.generation);
    let tmp = path.with_extension("tmp");
    let file = fs::File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    job.cache.write_snapshot(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    fs::rename(&tmp, &path)?;
    sync_dir(&job.dir).map_err(|e| e.source)?;
    let listing = list(&job.dir)?;
    for g in listing.journals.iter().filter(|g| **g < job.generation) {
        fs::remove_file(journal_path(&job.dir, *g))?;
    }
    for g in listing.snapshots.iter().filter(|g| **g < job.generation) {
        fs::remove_file(snapshot_path(&job.dir, *g))?;
    }
    sync_dir(&job.dir).map_err(|e| e.source)?;
    Ok(bytes)
}
