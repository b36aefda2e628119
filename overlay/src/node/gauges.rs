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
}

impl Gauges {
    /// Exports first at `now`.
    pub fn new(now: Instant) -> Self {
        Gauges { next: now }
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
        for slot in KeySlot::ALL {
            let key = snapshot
                .replay
                .iter()
                .filter(|k| KeySlot::of(k.epoch, snapshot.epoch) == slot)
                .max_by_key(|k| k.epoch);
            export_replay_filter(slot, key.copied().unwrap_or_default());
        }
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

/// Where a key stands against the clock's epoch: the label of its replay filter's gauges. The
/// recorder keeps every label value it ever saw, so a label holding the epoch number grew by one
/// series of each gauge an epoch for the life of the node; these are three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySlot {
    /// An earlier epoch's key, through its grace period.
    Previous,
    /// This epoch's.
    Current,
    /// A later epoch's key, installed ahead of its start.
    Next,
}

impl KeySlot {
    const ALL: [KeySlot; 3] = [KeySlot::Previous, KeySlot::Current, KeySlot::Next];

    fn of(key_epoch: u64, epoch: u64) -> KeySlot {
        match key_epoch.cmp(&epoch) {
            std::cmp::Ordering::Less => KeySlot::Previous,
            std::cmp::Ordering::Equal => KeySlot::Current,
            std::cmp::Ordering::Greater => KeySlot::Next,
        }
    }

    fn label(self) -> &'static str {
        match self {
            KeySlot::Previous => "previous",
            KeySlot::Current => "current",
            KeySlot::Next => "next",
        }
    }
}

/// The replay filter gauges of the key in `slot` (all zero when the node holds none there).
fn export_replay_filter(slot: KeySlot, key: ReplayFilterGauge) {
    let slot = slot.label();
    gauge!("p2pmix_replay_filter_epoch", "key" => slot).set(key.epoch as f64);
    gauge!("p2pmix_replay_filter_fill_ratio", "key" => slot).set(key.fill_ratio);
    gauge!("p2pmix_replay_filter_bytes", "key" => slot).set(key.bytes as f64);
    gauge!("p2pmix_replay_filter_tags", "key" => slot).set(key.tags as f64);
}

#[cfg(all(test, feature = "metrics-endpoint"))]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn key(epoch: u64, fill_ratio: f64) -> ReplayFilterGauge {
        ReplayFilterGauge {
            epoch,
            fill_ratio,
            bytes: 1 << 20,
            tags: 1000,
        }
    }

    #[test]
    fn a_long_lived_node_keeps_three_replay_filter_series_whatever_its_epochs() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut gauges = Gauges::new(Instant::now());
        metrics::with_local_recorder(&recorder, || {
            for epoch in 1..=200 {
                gauges.export(&Snapshot {
                    epoch,
                    replay: vec![key(epoch - 1, 1.0), key(epoch, 0.5), key(epoch + 1, 0.0)],
                    ..Snapshot::default()
                });
            }
            // The previous key retired: its place reads zero, not its last fill.
            gauges.export(&Snapshot {
                epoch: 200,
                replay: vec![key(200, 0.25)],
                ..Snapshot::default()
            });
        });
        let text = handle.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("p2pmix_replay_filter_fill_ratio{"))
            .collect();
        assert_eq!(series.len(), 3, "{text}");
        for (slot, value) in [("previous", "0"), ("current", "0.25"), ("next", "0")] {
            let line = format!("p2pmix_replay_filter_fill_ratio{{key=\"{slot}\"}} {value}");
            assert!(series.contains(&line.as_str()), "{line} in {series:?}");
        }
        assert!(
            text.contains("p2pmix_replay_filter_epoch{key=\"current\"} 200"),
            "{text}"
        );
    }
}
