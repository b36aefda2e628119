//! The replay journal's hand-off between the Sphinx workers and the thread that writes it to disk.
//!
//! A worker that records a fresh tag pushes its index here before its packet can go anywhere.
//! The writer takes everything pending in one batch, writes and syncs it, and marks the batch
//! durable by the instant it was taken. A packet whose worker finished before that instant has
//! its tag on disk, so the relay lets it leave only then ([`ReplayLog::is_durable`]): whatever a
//! node forwarded, a restarted node remembers. Records that never became durable belong to
//! packets that never left, so forgetting them opens no replay. The backlog is bounded: when the
//! disk falls behind, fresh packets are refused instead of queued without limit.

use std::{
    sync::{Condvar, Mutex},
    task::Waker,
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;

use super::bloom::TagIndex;

/// One fresh tag to be written: the epoch of the key that saw it and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The epoch of the key.
    pub epoch: u64,
    /// The tag's index under that key's cache.
    pub index: TagIndex,
}

/// Records taken for writing, and the instant they were taken (every record pushed before it is
/// among them).
#[derive(Debug)]
pub struct ReplayBatch {
    /// The records, in the order they were pushed.
    pub records: Vec<ReplayRecord>,
    /// When they were taken.
    pub taken_at: Instant,
}

/// The hand-off. See the module documentation.
#[derive(Debug)]
pub struct ReplayLog {
    pending: Mutex<Vec<ReplayRecord>>,
    ready: Condvar,
    /// Every record pushed before this instant is durable.
    durable_before: Mutex<Option<Instant>>,
    waker: AtomicWaker,
    max_pending: usize,
}

impl ReplayLog {
    /// A log that holds at most `max_pending` records not yet taken.
    pub fn new(max_pending: usize) -> Self {
        ReplayLog {
            pending: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            durable_before: Mutex::new(None),
            waker: AtomicWaker::new(),
            max_pending: max_pending.max(1),
        }
    }

    /// Queues `record` for writing; `false` if the backlog is full (the packet must not leave).
    pub(crate) fn push(&self, record: ReplayRecord) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= self.max_pending {
            return false;
        }
        pending.push(record);
        if pending.len() == 1 {
            self.ready.notify_one();
        }
        true
    }

    /// Records waiting to be taken.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes every pending record, waiting up to `wait` for one to arrive; `None` if none came.
    pub fn take(&self, wait: Duration) -> Option<ReplayBatch> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut pending, _) = self
            .ready
            .wait_timeout_while(pending, wait, |p| p.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            return None;
        }
        // Read the clock under the lock: every push that completed before it is in this batch.
        let taken_at = Instant::now();
        Some(ReplayBatch {
            records: std::mem::take(&mut *pending),
            taken_at,
        })
    }

    /// Wakes a writer blocked in [`ReplayLog::take`] (to shut down or to snapshot).
    pub fn nudge(&self) {
        self.ready.notify_all();
    }

    /// The batch taken at `taken_at` is on disk: packets finished before it may leave.
    pub fn mark_durable(&self, taken_at: Instant) {
        let mut durable = self
            .durable_before
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if durable.is_none_or(|d| d < taken_at) {
            *durable = Some(taken_at);
        }
        drop(durable);
        self.waker.wake();
    }

    /// Whether every record pushed before `at` is durable.
    pub fn is_durable(&self, at: Instant) -> bool {
        self.durable_before
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| at < d)
    }

    /// Wakes `waker` at the next [`ReplayLog::mark_durable`].
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u8) -> ReplayRecord {
        ReplayRecord {
            epoch: 3,
            index: [i; 32],
        }
    }

    #[test]
    fn only_what_was_taken_before_a_commit_counts_as_durable() {
        let log = ReplayLog::new(2);
        assert!(log.take(Duration::ZERO).is_none());
        assert!(log.push(record(1)));
        let before_take = Instant::now();
        assert!(!log.is_durable(before_take));
        let batch = log.take(Duration::ZERO).unwrap();
        assert_eq!(batch.records, vec![record(1)]);
        assert!(log.push(record(2)));
        let after_take = Instant::now();
        log.mark_durable(batch.taken_at);
        assert!(log.is_durable(before_take));
        assert!(!log.is_durable(after_take), "record 2 is not on disk yet");
        // A bounded backlog.
        assert!(log.push(record(3)));
        assert!(!log.push(record(4)));
        assert_eq!(log.pending(), 2);
    }
}
