//! The node's Prometheus gauges and the counters of its sans-IO parts, exported on a timer from
//! a snapshot the driver takes (the parts themselves never touch the metrics recorder).

use std::time::{Duration, Instant};

use metrics::{counter, gauge};

use crate::{
    mailbox::{MailboxError, MailboxStats},
    node::cover::CoverStats,
    runtime::status::{Admitted, InForce, Readiness},
};

/// How often the gauges are brought up to date.
pub const EXPORT_INTERVAL: Duration = Duration::from_millis(250);

/// The consensus in force, as the gauges show it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConsensusGauges {
    /// Its epoch.
    pub epoch: u64,
    /// Seconds since it became valid.
    pub age_seconds: f64,
    /// Whether it admits this node.
    pub admitted: bool,
    /// This node's layer in it, if it admits this node as a mix.
    pub layer: Option<u32>,
}

/// A gateway's mailboxes, as the gauges show them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MailboxGauges {
    /// Registered clients.
    pub clients: usize,
    /// Packets held.
    pub packets: usize,
    /// Bytes held.
    pub bytes: usize,
    /// The server's counters.
    pub stats: MailboxStats,
}

/// One epoch key's replay filter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplayFilterGauge {
    /// The key's epoch.
    pub epoch: u64,
    /// Tags in over tags its segments are sized for (1: it refuses fresh packets).
    pub fill_ratio: f64,
    /// Bytes of filter memory.
    pub bytes: u64,
    /// Fresh tags recorded.
    pub tags: u64,
}

/// What the node looks like at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The epoch by the clock.
    pub epoch: u64,
    /// Peers with a connection.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table.
    pub kad_peers: usize,
    /// The consensus in force.
    pub consensus: Option<ConsensusGauges>,
    /// The node's loop cover.
    pub cover: CoverStats,
    /// A gateway's mailboxes.
    pub mailbox: Option<MailboxGauges>,
    /// Whether the relay holds this epoch's Sphinx key (a restart retires it).
    pub has_epoch_key: bool,
    /// The live keys' replay filters.
    pub replay: Vec<ReplayFilterGauge>,
    /// Bytes all replay filters hold, and the budget they share.
    pub replay_memory: (u64, u64),
    /// Fresh tags waiting for the journal writer, and packets waiting for their tags to be on
    /// disk.
    pub replay_backlog: (usize, usize),
}

impl Snapshot {
    /// What `/ready` says of the node at this moment.
    pub fn readiness(&self) -> Readiness {
        let in_force = self.consensus.map(|c| InForce {
            epoch: c.epoch,
            admitted: c.admitted.then_some(Admitted { layer: c.layer }),
        });
        Readiness::of_node(self.epoch, in_force, self.has_epoch_key)
    }
}

/// The export timer. See the module documentation.
#[derive(Debug)]
pub struct Gauges {
    next: Instant,
    /// The epochs whose replay filter gauges the last export set: a key retired since is set
    /// to zero once (the recorder keeps a labelled gauge's last value for ever, and an alert on
    /// a retired filter's fill would never clear).
    replay_epochs: Vec<u64>,
}

impl Gauges {
    /// Exports first at `now`.
    pub fn new(now: Instant) -> Self {
        Gauges {
            next: now,
            replay_epochs: Vec::new(),
        }
    }

    /// When the next export is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    /// Whether an export is due at `now` (the next one is then [`EXPORT_INTERVAL`] later).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + EXPORT_INTERVAL;
        true
    }

    /// Writes `snapshot` to the metrics recorder.
    pub fn export(&mut self, snapshot: &Snapshot) {
        gauge!("p2pmix_epoch").set(snapshot.epoch as f64);
        gauge!("p2pmix_connected_peers").set(snapshot.connected_peers as f64);
        gauge!("p2pmix_kad_peers").set(snapshot.kad_peers as f64);
        match snapshot.consensus {
            Some(c) => {
                gauge!("p2pmix_consensus_epoch").set(c.epoch as f64);
                gauge!("p2pmix_consensus_age_seconds").set(c.age_seconds);
                gauge!("p2pmix_admitted").set(if c.admitted { 1.0 } else { 0.0 });
            }
            None => gauge!("p2pmix_admitted").set(0.0),
        }
        gauge!("p2pmix_ready").set(if snapshot.readiness().is_ready() {
            1.0
        } else {
            0.0
        });
        for key in &snapshot.replay {
            export_replay_filter(key.epoch, key.fill_ratio, key.bytes, key.tags);
        }
        for retired in self
            .replay_epochs
            .iter()
            .filter(|e| !snapshot.replay.iter().any(|k| k.epoch == **e))
        {
            export_replay_filter(*retired, 0.0, 0, 0);
        }
        self.replay_epochs = snapshot.replay.iter().map(|k| k.epoch).collect();
        gauge!("p2pmix_replay_memory_bytes").set(snapshot.replay_memory.0 as f64);
        gauge!("p2pmix_replay_memory_budget_bytes").set(snapshot.replay_memory.1 as f64);
        gauge!("p2pmix_replay_journal_pending").set(snapshot.replay_backlog.0 as f64);
        gauge!("p2pmix_replay_awaiting_disk_packets").set(snapshot.replay_backlog.1 as f64);
        counter!("p2pmix_loop_cover_sent_total").absolute(snapshot.cover.sent);
        counter!("p2pmix_loop_cover_returned_total").absolute(snapshot.cover.returned);
        if let Some(MailboxGauges {
            clients,
            packets,
            bytes,
            stats,
        }) = snapshot.mailbox
        {
            gauge!("p2pmix_mailbox_clients").set(clients as f64);
            gauge!("p2pmix_mailbox_packets").set(packets as f64);
            gauge!("p2pmix_mailbox_bytes").set(bytes as f64);
            counter!("p2pmix_mailbox_registered_total").absolute(stats.registered);
            counter!("p2pmix_mailbox_stored_total").absolute(stats.stored);
            counter!("p2pmix_mailbox_handed_total").absolute(stats.handed);
            counter!("p2pmix_mailbox_fetches_total").absolute(stats.fetches);
            counter!("p2pmix_mailbox_expired_total").absolute(stats.expired);
            counter!("p2pmix_mailbox_evicted_total").absolute(stats.evicted);
            counter!("p2pmix_mailbox_registrations_refused_total")
                .absolute(stats.registrations_refused);
            for (reason, count) in MailboxError::REASONS.iter().zip(stats.refused) {
                if count > 0 {
                    counter!("p2pmix_mailbox_refused_total", "reason" => *reason).absolute(count);
                }
            }
        }
    }
}

/// One key's replay filter gauges.
fn export_replay_filter(epoch: u64, fill_ratio: f64, bytes: u64, tags: u64) {
    let epoch = epoch.to_string();
    gauge!("p2pmix_replay_filter_fill_ratio", "epoch" => epoch.clone()).set(fill_ratio);
    gauge!("p2pmix_replay_filter_bytes", "epoch" => epoch.clone()).set(bytes as f64);
    gauge!("p2pmix_replay_filter_tags", "epoch" => epoch).set(tags as f64);
}
