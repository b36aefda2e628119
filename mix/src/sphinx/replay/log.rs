//! The replay journal's hand-off between the Sphinx workers and the thread that writes it to disk.
//!
//! A worker that records a fresh tag pushes its index here before its packet can go anywhere.
//! Every push is numbered; the writer takes everything pending in one batch, writes and syncs
//! it, and marks durable every record up to the batch's last number. The relay notes the count
//! of pushes once a packet's worker is done with it ([`ReplayLog::mark`]: its tag is among them)
//! and lets the packet leave only once that many are durable ([`ReplayLog::is_durable`]; a
//! count, not an instant, so a writer that takes the record before the relay looks cannot leave
//! the packet waiting for a batch that never comes): whatever a
//! node forwarded, a restarted node remembers. Records that never became durable belong to
//! packets that never left, so forgetting them opens no replay. The backlog is bounded: when the
//! disk falls behind, fresh packets are refused instead of queued without limit.

use std::{
    sync::{Condvar, Mutex},
    task::Waker,
    time::Duration,
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

/// Records taken for writing, and how many had been pushed when they were taken (every record
/// numbered up to it is in this batch or an earlier one).
#[derive(Debug)]
pub struct ReplayBatch {
    /// The records, in the order they were pushed.
    pub records: Vec<ReplayRecord>,
    /// The count of pushes when they were taken.
    pub through: u64,
}

/// What the writer's lock guards: records not yet taken and the count of pushes.
#[derive(Debug, Default)]
struct Pending {
    records: Vec<ReplayRecord>,
    pushed: u64,
}

/// The hand-off. See the module documentation.
#[derive(Debug)]
pub struct ReplayLog {
    pending: Mutex<Pending>,
    ready: Condvar,
    /// Records numbered up to this are durable.
    durable_through: Mutex<u64>,
    waker: AtomicWaker,
    max_pending: usize,
}

impl ReplayLog {
    /// A log that holds at most `max_pending` records not yet taken.
    pub fn new(max_pending: usize) -> Self {
        ReplayLog {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            durable_through: Mutex::new(0),
            waker: AtomicWaker::new(),
            max_pending: max_pending.max(1),
        }
    }

    /// Queues `record` for writing; `false` if the backlog is full (the packet must not leave).
    pub(crate) fn push(&self, record: ReplayRecord) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.records.len() >= self.max_pending {
            return false;
        }
        pending.records.push(record);
        pending.pushed += 1;
        if pending.records.len() == 1 {
            self.ready.notify_one();
        }
        true
    }

    /// Records waiting to be taken.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .len()
    }

    /// The count of pushes so far: a packet whose tag was pushed before this call may leave once
    /// [`ReplayLog::is_durable`] says so for the count.
    pub fn mark(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pushed
    }

    /// Takes every pending record, waiting up to `wait` for one to arrive; `None` if none came.
    pub fn take(&self, wait: Duration) -> Option<ReplayBatch> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut pending, _) = self
            .ready
            .wait_timeout_while(pending, wait, |p| p.records.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        if pending.records.is_empty() {
            return None;
        }
        Some(ReplayBatch {
            records: std::mem::take(&mut pending.records),
            through: pending.pushed,
        })
    }

    /// Wakes a writer blocked in [`ReplayLog::take`] (to shut down or to snapshot).
    pub fn nudge(&self) {
        self.ready.notify_all();
    }

    /// The records numbered up to `through` (a batch's) are on disk.
    pub fn mark_durable(&self, through: u64) {
        let mut durable = self
            .durable_through
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *durable = (*durable).max(through);
        drop(durable);
        self.waker.wake();
    }

    /// Whether the records numbered up to `mark` (from [`ReplayLog::mark`]) are durable.
    pub fn is_durable(&self, mark: u64) -> bool {
        *self
            .durable_through
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            >= mark
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
        assert!(
            log.is_durable(log.mark()),
            "nothing pushed, nothing to wait for"
        );
        assert!(log.push(record(1)));
        // The writer takes the record before the relay looks (the race an instant lost).
        let batch = log.take(Duration::ZERO).unwrap();
        let first = log.mark();
        assert!(!log.is_durable(first));
        assert_eq!(batch.records, vec![record(1)]);
        assert!(log.push(record(2)));
        let second = log.mark();
        log.mark_durable(batch.through);
        assert!(log.is_durable(first));
        assert!(!log.is_durable(second), "record 2 is not on disk yet");
        log.mark_durable(log.take(Duration::ZERO).unwrap().through);
        assert!(log.is_durable(second));
        // A bounded backlog.
        assert!(log.push(record(3)));
        assert!(log.push(record(4)));
        assert!(!log.push(record(5)));
        assert_eq!(log.pending(), 2);
    }
}
