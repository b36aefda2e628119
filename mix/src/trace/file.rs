//! Trace files: records go over a bounded channel to a writer thread, which numbers peers,
//! formats lines and writes them, flushing at least once a second. The packet path only stamps
//! the time and tries to send (a full channel is a counted drop, never a wait); a file stops at
//! its line cap (counted), and a write error stops it with the error kept for [`TraceFile::finish`]
//! and logged once.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use libp2p_identity::PeerId;
use thiserror::Error;

use super::{Direction, PacketTag, TraceSink, Truth, format::Line};

/// Which records a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceKind {
    /// Link records: the observer's view.
    Links,
    /// Ground truth.
    Truth,
}

/// Bounds of one trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLimits {
    /// Lines written at most (peer definitions included); later records are counted as capped.
    pub max_lines: u64,
    /// Records waiting for the writer at most; more are counted as dropped.
    pub channel: usize,
}

impl Default for TraceLimits {
    /// Two million lines (about 80 MB of link records: a busy testnet mix for half an hour),
    /// 16 384 records waiting.
    fn default() -> Self {
        TraceLimits {
            max_lines: 2_000_000,
            channel: 16_384,
        }
    }
}

/// Why a trace file failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be created.
    #[error("cannot create the trace file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Writing failed; recording stopped there.
    #[error("cannot write the trace file {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the trace writer for {path}: {source}")]
    Thread {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What became of a file's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceSummary {
    /// Records written.
    pub written: u64,
    /// Records lost because the writer fell behind.
    pub dropped: u64,
    /// Records not written because of the cap or an earlier write error.
    pub capped: u64,
}

enum Entry {
    Link {
        direction: Direction,
        at_us: u64,
        peer: PeerId,
        tag: PacketTag,
    },
    Truth(Truth),
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    capped: AtomicU64,
}

impl Counters {
    fn summary(&self) -> TraceSummary {
        TraceSummary {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            capped: self.capped.load(Ordering::Relaxed),
        }
    }
}

/// One trace file being written. See the module documentation.
#[derive(Debug)]
pub struct TraceFile {
    path: PathBuf,
    /// `None` once finished.
    tx: Mutex<Option<SyncSender<Entry>>>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<Result<(), String>>>>,
}

/// Microseconds since the UNIX epoch, now.
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl TraceFile {
    /// Creates (truncates) `path` with the header of `kind` recorded by `local`.
    pub fn create(
        path: &Path,
        kind: TraceKind,
        local: PeerId,
        limits: TraceLimits,
    ) -> Result<Self, TraceError> {
        let file = File::create(path).map_err(|source| TraceError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        writeln!(out, "{}", Line::Header { kind, local }).map_err(|source| TraceError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = sync_channel(limits.channel.max(1));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            out,
            rx,
            counters: counters.clone(),
            peers: HashMap::new(),
            lines: 1,
            max_lines: limits.max_lines,
            failed: None,
        };
        let name = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("p2pmix-trace".into())
            .spawn(move || writer.run(&name))
            .map_err(|source| TraceError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(TraceFile {
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, entry: Entry) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        match tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer stopped on an error: counted there as capped from now on.
            Err(TrySendError::Disconnected(_)) => {
                self.counters.capped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records a packet crossing the link to or from `peer`, stamped now.
    pub fn link(&self, direction: Direction, peer: PeerId, tag: PacketTag) {
        self.send(Entry::Link {
            direction,
            at_us: unix_us(),
            peer,
            tag,
        });
    }

    /// Records a ground-truth line.
    pub fn truth(&self, record: Truth) {
        self.send(Entry::Truth(record));
    }

    /// Counts so far.
    pub fn summary(&self) -> TraceSummary {
        self.counters.summary()
    }

    /// Writes what is waiting and the trailer, and closes the file (later records are ignored).
    /// Idempotent; the error is that of the first failed write, if any.
    pub fn finish(&self) -> Result<TraceSummary, TraceError> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let result = thread
                .join()
                .unwrap_or_else(|_| Err("the writer thread panicked".into()));
            if let Err(reason) = result {
                return Err(TraceError::Write {
                    path: self.path.clone(),
                    reason,
                });
            }
        }
        Ok(self.summary())
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The writer thread's state.
struct Writer {
    out: BufWriter<File>,
    rx: Receiver<Entry>,
    counters: Arc<Counters>,
    peers: HashMap<PeerId, u32>,
    lines: u64,
    max_lines: u64,
    /// The first write error; nothing more is written after it.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, name: &str) -> Result<(), String> {
        loop {
            match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(entry) => self.write(entry),
                Err(RecvTimeoutError::Timeout) => self.io(|out| out.flush()),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Some(reason) = &self.failed {
                tracing::error!(file = name, %reason, "trace file: write failed, recording stopped");
                // Dropping the receiver makes every later record count as capped.
                return Err(reason.clone());
            }
        }
        let end = Line::End {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            capped: self.counters.capped.load(Ordering::Relaxed),
        };
        self.io(|out| writeln!(out, "{end}"));
        self.io(|out| out.flush());
        self.io(|out| out.get_ref().sync_data());
        match self.failed {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn io(&mut self, f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) {
        if self.failed.is_none()
            && let Err(e) = f(&mut self.out)
        {
            self.failed = Some(e.to_string());
        }
    }

    /// Writes `line` if the cap allows; false if it did not.
    fn line(&mut self, line: &Line) -> bool {
        if self.lines >= self.max_lines {
            return false;
        }
        self.lines += 1;
        self.io(|out| writeln!(out, "{line}"));
        true
    }

    fn write(&mut self, entry: Entry) {
        let line = match entry {
            Entry::Link {
                direction,
                at_us,
                peer,
                tag,
            } => {
                let index = match self.peers.get(&peer) {
                    Some(i) => *i,
                    None => {
                        let index = self.peers.len() as u32;
                        if !self.line(&Line::Peer { index, peer }) {
                            self.counters.capped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        self.peers.insert(peer, index);
                        index
                    }
                };
                Line::Link {
                    direction,
                    at_us,
                    peer: index,
                    tag,
                }
            }
            Entry::Truth(t) => Line::Truth(t),
        };
        if self.line(&line) {
            self.counters.written.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.capped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The file-backed [`TraceSink`] of one process: a links file, a truth file, or both.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    links: Option<Arc<TraceFile>>,
    truth: Option<Arc<TraceFile>>,
}

impl Tracer {
    /// Opens the files asked for (either may be `None`), recorded by `local`.
    pub fn open(
        links: Option<&Path>,
        truth: Option<&Path>,
        local: PeerId,
        limits: TraceLimits,
    ) -> Result<Self, TraceError> {
        let open = |path: Option<&Path>, kind| {
            path.map(|p| TraceFile::create(p, kind, local, limits).map(Arc::new))
                .transpose()
        };
        Ok(Tracer {
            links: open(links, TraceKind::Links)?,
            truth: open(truth, TraceKind::Truth)?,
        })
    }

    /// Whether any file is open.
    pub fn is_on(&self) -> bool {
        self.links.is_some() || self.truth.is_some()
    }

    /// Finishes both files (see [`TraceFile::finish`]); returns their summaries.
    pub fn finish(&self) -> Result<Vec<(PathBuf, TraceSummary)>, TraceError> {
        let mut out = Vec::new();
        for f in self.links.iter().chain(&self.truth) {
            out.push((f.path().to_path_buf(), f.finish()?));
        }
        Ok(out)
    }
}

impl TraceSink for Tracer {
    fn link(&self, direction: Direction, peer: &PeerId, tag: PacketTag) {
        if let Some(f) = &self.links {
            f.link(direction, *peer, tag);
        }
    }

    fn truth(&self, record: Truth) {
        if let Some(f) = &self.truth {
            f.truth(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::format::parse_line;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pmix-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines(path: &Path) -> Vec<Line> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| parse_line(l).unwrap())
            .collect()
    }

    #[test]
    fn records_come_back_in_order_with_numbered_peers_and_a_trailer() {
        let dir = scratch("order");
        let path = dir.join("links.trace");
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let file = TraceFile::create(&path, TraceKind::Links, me, TraceLimits::default()).unwrap();
        file.link(Direction::In, a, PacketTag(1));
        file.link(Direction::Out, b, PacketTag(2));
        file.link(Direction::In, a, PacketTag(3));
        let summary = file.finish().unwrap();
        assert_eq!(summary.written, 3);
        let got = lines(&path);
        assert_eq!(
            got[0],
            Line::Header {
                kind: TraceKind::Links,
                local: me
            }
        );
        assert_eq!(got[1], Line::Peer { index: 0, peer: a });
        assert!(matches!(
            got[2],
            Line::Link {
                direction: Direction::In,
                peer: 0,
                tag: PacketTag(1),
                ..
            }
        ));
        assert_eq!(got[3], Line::Peer { index: 1, peer: b });
        assert!(matches!(
            got[4],
            Line::Link {
                direction: Direction::Out,
                peer: 1,
                tag: PacketTag(2),
                ..
            }
        ));
        assert!(matches!(
            got[5],
            Line::Link {
                peer: 0,
                tag: PacketTag(3),
                ..
            }
        ));
        assert_eq!(
            got[6],
            Line::End {
                written: 3,
                dropped: 0,
                capped: 0
            }
        );
        // Finishing again changes nothing; records after it are ignored.
        file.link(Direction::In, a, PacketTag(4));
        assert_eq!(file.finish().unwrap().written, 3);
        assert_eq!(lines(&path).len(), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_stops_the_file_and_counts_what_it_kept_out() {
        let dir = scratch("cap");
        let path = dir.join("truth.trace");
        let limits = TraceLimits {
            max_lines: 11, // the header and ten records
            channel: 1_000,
        };
        let file = TraceFile::create(&path, TraceKind::Truth, PeerId::random(), limits).unwrap();
        for i in 0..25 {
            file.truth(Truth::Delivered {
                input: PacketTag(i),
            });
        }
        let summary = file.finish().unwrap();
        assert_eq!(
            summary,
            TraceSummary {
                written: 10,
                dropped: 0,
                capped: 15
            }
        );
        let got = lines(&path);
        assert_eq!(got.len(), 12, "header, ten records, trailer");
        assert_eq!(
            got[11],
            Line::End {
                written: 10,
                dropped: 0,
                capped: 15
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let dir = scratch("bad");
        let path = dir.join("no/such/dir/links.trace");
        let err = TraceFile::create(
            &path,
            TraceKind::Links,
            PeerId::random(),
            TraceLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no/such/dir/links.trace"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failing_disk_stops_recording_with_the_error() {
        // /dev/full accepts the open and fails every write.
        let file = TraceFile::create(
            Path::new("/dev/full"),
            TraceKind::Links,
            PeerId::random(),
            TraceLimits::default(),
        );
        let file = match file {
            Ok(f) => f,
            // The 64 KiB buffer holds the header; creation itself cannot fail on the write.
            Err(e) => panic!("{e}"),
        };
        for i in 0..100_000 {
            file.link(Direction::In, PeerId::random(), PacketTag(i));
        }
        let err = file.finish().unwrap_err();
        assert!(err.to_string().contains("/dev/full"), "{err}");
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_waiting() {
        let dir = scratch("full");
        let path = dir.join("links.trace");
        let limits = TraceLimits {
            max_lines: u64::MAX,
            channel: 1,
        };
        let file = TraceFile::create(&path, TraceKind::Links, PeerId::random(), limits).unwrap();
        let peer = PeerId::random();
        for i in 0..200_000 {
            file.link(Direction::In, peer, PacketTag(i));
        }
        let s = file.finish().unwrap();
        assert_eq!(s.written + s.dropped, 200_000);
        assert!(s.dropped > 0, "a one-slot channel cannot keep up: {s:?}");
        let got = lines(&path);
        assert_eq!(
            got.last(),
            Some(&Line::End {
                written: s.written,
                dropped: s.dropped,
                capped: 0
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
