//! The Sphinx worker threads of a mix behaviour.
//!
//! Each worker has its own bounded job queue: the event loop deals frames out round-robin (to the
//! next worker whose queue has room), so the packet path has no lock that all workers share (the
//! receive side of one shared queue would be one). A worker blocks for its first job, then takes
//! whatever else is already waiting, up to [`MAX_BATCH`], without waiting for more, and unwraps
//! those together ([`Relay::process_batch`]: one read of the key ring and the topologies, one
//! shared encoding step of the key agreement). Outcomes go back on one bounded channel, and the
//! behaviour is woken once per batch.

use std::{
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Instant,
};

use futures::task::AtomicWaker;
use libp2p_identity::PeerId;

use crate::{
    relay::{Decision, DropReason, Relay},
    stats::{MAX_BATCH, Stats},
    trace::PacketTag,
};

/// A frame for the Sphinx workers.
pub(crate) struct Job {
    /// When it arrived (its delay counts from then).
    pub(crate) arrived: Instant,
    /// The neighbour that sent it (`None`: injected locally), for counting its faults.
    pub(crate) from: Option<PeerId>,
    pub(crate) packet: Vec<u8>,
    /// Its tag, when tracing.
    pub(crate) tag: Option<PacketTag>,
}

/// What a worker decided for one [`Job`].
pub(crate) struct Outcome {
    /// The job's sender.
    pub(crate) from: Option<PeerId>,
    pub(crate) decision: Result<Decision<PeerId>, DropReason>,
    /// The job's tag, when tracing.
    pub(crate) tag: Option<PacketTag>,
}

/// The event loop's handle on the worker threads: one job queue per worker.
pub(crate) struct Workers {
    queues: Vec<SyncSender<Job>>,
    /// The queue the next job tries first.
    next: usize,
}

impl Workers {
    /// Starts `count` (at least one) workers whose queues hold `capacity` jobs in all; they end
    /// when this handle (their queues) or the outcome channel is gone.
    pub(crate) fn start(
        count: usize,
        capacity: usize,
        relay: &Arc<Relay<PeerId>>,
        outcomes: &SyncSender<Outcome>,
        waker: &Arc<AtomicWaker>,
        stats: &Arc<Stats>,
    ) -> Self {
        let count = count.max(1);
        let per_worker = (capacity / count).max(MAX_BATCH);
        let mut queues = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, rx) = sync_channel::<Job>(per_worker);
            let worker = Worker {
                jobs: rx,
                relay: relay.clone(),
                outcomes: outcomes.clone(),
                waker: waker.clone(),
                stats: stats.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("p2pmix-sphinx-{i}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(_) => queues.push(tx),
                Err(e) => tracing::error!(%e, "could not start a Sphinx worker thread"),
            }
        }
        Workers { queues, next: 0 }
    }

    /// Hands `job` to the next worker with room; gives it back when every queue is full (or no
    /// worker runs).
    pub(crate) fn submit(&mut self, mut job: Job) -> Option<Job> {
        for _ in 0..self.queues.len() {
            let i = self.next % self.queues.len();
            self.next = self.next.wrapping_add(1);
            match self.queues[i].try_send(job) {
                Ok(()) => return None,
                Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => job = j,
            }
        }
        Some(job)
    }
}

/// One worker thread's state.
struct Worker {
    jobs: Receiver<Job>,
    relay: Arc<Relay<PeerId>>,
    outcomes: SyncSender<Outcome>,
    waker: Arc<AtomicWaker>,
    stats: Arc<Stats>,
}

impl Worker {
    fn run(self) {
        let mut senders = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = self.jobs.recv() {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut next = Some(first);
            while let Some(job) = next.take() {
                senders.push((job.from, job.tag));
                batch.push((job.arrived, job.packet));
                if batch.len() < MAX_BATCH {
                    next = self.jobs.try_recv().ok();
                }
            }
            let started = Instant::now();
            let decisions = self.relay.process_batch(batch);
            self.stats.record_batch(decisions.len(), started.elapsed());
            for ((from, tag), decision) in senders.drain(..).zip(decisions) {
                if self
                    .outcomes
                    .send(Outcome {
                        from,
                        decision,
                        tag,
                    })
                    .is_err()
                {
                    return;
                }
            }
            self.waker.wake();
        }
    }
}
