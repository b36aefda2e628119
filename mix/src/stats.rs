//! What a mix behaviour counts, for tests, benchmarks and metrics.
//!
//! Every figure is kept twice on purpose: as lock-free atomics in [`Stats`] (readable from any
//! thread, exact, used by tests and the relay bench) and through the [`metrics`] facade (so that a
//! node binary that installs a recorder, e.g. the Prometheus one, exports them without polling).
//! The facade handles are taken when the [`Stats`] is created: install the recorder first.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::{admission::ConnectionRefusal, relay::DropReason};

/// Most packets a Sphinx worker unwraps together. A worker takes what is waiting, up to this, and
/// never waits for more: 32 brings the shared encoding step to about 1/32 of an inversion per
/// packet while a batch still takes only about a millisecond.
pub const MAX_BATCH: usize = 32;

/// Sub-buckets per power of two: durations are resolved to 1/8 of their order of magnitude.
const SUB_BUCKETS: usize = 8;
/// Durations below this many microseconds get one bucket each.
const EXACT_BELOW: u64 = 2 * SUB_BUCKETS as u64;
/// Buckets of a [`DurationHistogram`]: exact up to 16 µs, then 8 per power of two up to 2^25 µs
/// (about 34 s); longer durations land in the last bucket.
pub const HISTOGRAM_BUCKETS: usize = EXACT_BELOW as usize + (25 - 4 + 1) * SUB_BUCKETS;

/// A lock-free log-linear histogram of durations (HDR-style, 3 significant bits): each bucket is at
/// most 12.5% wide, fine enough to tell 0.9 ms from 1.0 ms.
#[derive(Debug)]
pub struct DurationHistogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket a duration of `micros` falls in.
fn bucket_of(micros: u64) -> usize {
    if micros < EXACT_BELOW {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros() as usize; // >= 4
    let mantissa = (micros >> (exponent - 3)) as usize; // 8..16
    (EXACT_BELOW as usize + (exponent - 4) * SUB_BUCKETS + (mantissa - SUB_BUCKETS))
        .min(HISTOGRAM_BUCKETS - 1)
}

/// The exclusive upper edge of bucket `i`, in microseconds.
fn upper_edge(i: usize) -> u64 {
    if (i as u64) < EXACT_BELOW {
        return i as u64 + 1;
    }
    let j = i - EXACT_BELOW as usize;
    let exponent = j / SUB_BUCKETS + 4;
    let mantissa = (j % SUB_BUCKETS + SUB_BUCKETS) as u64;
    (mantissa + 1) << (exponent - 3)
}

impl DurationHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get(bucket_of(micros)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The bucket counts now (subtract two snapshots to look at an interval).
    pub fn snapshot(&self) -> [u64; HISTOGRAM_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// An upper bound for the `q` quantile (0..=1): the upper edge of the bucket it falls in.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile_of(&self.snapshot(), q)
    }
}

/// An upper bound for the `q` quantile of bucket counts from [`DurationHistogram::snapshot`].
pub fn quantile_of(counts: &[u64; HISTOGRAM_BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(Duration::from_micros(upper_edge(i)));
        }
    }
    None
}

/// Handles into the installed `metrics` recorder (no-ops when none is installed).
#[derive(Debug, Clone)]
struct Exported {
    received: Counter,
    forwarded: Counter,
    delivered: Counter,
    cover_dropped: Counter,
    banned: Counter,
    connections_refused: [Counter; ConnectionRefusal::LABELS.len()],
    dropped: [Counter; DropReason::ALL.len()],
    unwrap_time: Histogram,
    batch_size: Histogram,
    added_latency: Histogram,
    held: Histogram,
    queue_packets: Gauge,
    queue_bytes: Gauge,
}

impl Exported {
    fn new() -> Self {
        Exported {
            received: counter!("p2pmix_packets_received_total"),
            forwarded: counter!("p2pmix_packets_forwarded_total"),
            delivered: counter!("p2pmix_packets_delivered_total"),
            cover_dropped: counter!("p2pmix_packets_cover_ended_total"),
            banned: counter!("p2pmix_peers_banned_total"),
            connections_refused: ConnectionRefusal::LABELS
                .map(|r| counter!("p2pmix_connections_refused_total", "reason" => r)),
            dropped: DropReason::ALL
                .map(|r| counter!("p2pmix_packets_dropped_total", "reason" => r.label())),
            unwrap_time: histogram!("p2pmix_unwrap_seconds"),
            batch_size: histogram!("p2pmix_unwrap_batch_packets"),
            added_latency: histogram!("p2pmix_added_latency_seconds"),
            held: histogram!("p2pmix_hold_seconds"),
            queue_packets: gauge!("p2pmix_queue_packets"),
            queue_bytes: gauge!("p2pmix_queue_bytes"),
        }
    }
}

/// Counters of one mix behaviour, readable from any thread, and exported through `metrics`.
#[derive(Debug)]
pub struct Stats {
    /// How long past its release time each forwarded or delivered packet left the delay queue:
    /// the time this node held a packet beyond the delay its sender chose (worker queueing, the
    /// unwrap itself, event-loop latency).
    pub added_latency: DurationHistogram,
    /// How long each forwarded or delivered packet stayed in this node, from the arrival of its
    /// frame to its departure (its header's delay plus the added latency).
    pub held: DurationHistogram,
    /// How long each Sphinx unwrap took on a worker thread (a batch's time shared equally by its
    /// packets).
    pub unwrap_time: DurationHistogram,
    /// How many packets each batch a worker unwrapped held: `batch_sizes[n]` counts batches of
    /// `n` packets (the last entry: [`MAX_BATCH`] or more).
    batch_sizes: [AtomicU64; MAX_BATCH + 1],
    received: AtomicU64,
    forwarded: AtomicU64,
    delivered: AtomicU64,
    cover_dropped: AtomicU64,
    banned: AtomicU64,
    connections_refused: [AtomicU64; ConnectionRefusal::LABELS.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    exported: Exported,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            added_latency: DurationHistogram::default(),
            held: DurationHistogram::default(),
            unwrap_time: DurationHistogram::default(),
            batch_sizes: std::array::from_fn(|_| AtomicU64::new(0)),
            received: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            cover_dropped: AtomicU64::new(0),
            banned: AtomicU64::new(0),
            connections_refused: std::array::from_fn(|_| AtomicU64::new(0)),
            dropped: std::array::from_fn(|_| AtomicU64::new(0)),
            exported: Exported::new(),
        }
    }
}

impl Stats {
    /// Frames received from neighbours or injected locally.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Packets sent on to their next hop.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Packets delivered to this node's clients.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Drop-cover packets that ended here.
    pub fn cover_dropped(&self) -> u64 {
        self.cover_dropped.load(Ordering::Relaxed)
    }

    /// Neighbours cut off for invalid traffic.
    pub fn banned(&self) -> u64 {
        self.banned.load(Ordering::Relaxed)
    }

    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.exported.received.increment(1);
    }

    pub(crate) fn count_forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        self.exported.forwarded.increment(1);
    }

    pub(crate) fn count_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.exported.delivered.increment(1);
    }

    pub(crate) fn count_cover_dropped(&self) {
        self.cover_dropped.fetch_add(1, Ordering::Relaxed);
        self.exported.cover_dropped.increment(1);
    }

    /// Inbound connections refused for the reason `label` (one of [`ConnectionRefusal::LABELS`]).
    pub fn connections_refused(&self, label: &str) -> u64 {
        ConnectionRefusal::LABELS
            .iter()
            .position(|l| *l == label)
            .and_then(|i| self.connections_refused.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn count_connection_refused(&self, refusal: &ConnectionRefusal) {
        if let Some(c) = self.connections_refused.get(refusal.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = self.exported.connections_refused.get(refusal.index()) {
            c.increment(1);
        }
    }

    pub(crate) fn count_banned(&self) {
        self.banned.fetch_add(1, Ordering::Relaxed);
        self.exported.banned.increment(1);
    }

    pub(crate) fn count_drops(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.dropped.get(reason.index()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(c) = self.exported.dropped.get(reason.index()) {
            c.increment(n);
        }
    }

    /// Batches unwrapped so far by size: entry `n` counts batches of `n` packets.
    pub fn batch_sizes(&self) -> [u64; MAX_BATCH + 1] {
        std::array::from_fn(|i| self.batch_sizes[i].load(Ordering::Relaxed))
    }

    /// A worker unwrapped a batch of `packets` packets in `d`.
    pub(crate) fn record_batch(&self, packets: usize, d: Duration) {
        if packets == 0 {
            return;
        }
        let each = d / u32::try_from(packets).unwrap_or(u32::MAX);
        let micros = u64::try_from(each.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.unwrap_time.buckets.get(bucket_of(micros)) {
            b.fetch_add(packets as u64, Ordering::Relaxed);
        }
        if let Some(b) = self.batch_sizes.get(packets.min(MAX_BATCH)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.exported
            .unwrap_time
            .record_many(each.as_secs_f64(), packets);
        self.exported.batch_size.record(packets as f64);
    }

    /// The delay queue now holds `packets` packets of `bytes` bytes in all.
    pub(crate) fn record_queue(&self, packets: usize, bytes: usize) {
        self.exported.queue_packets.set(packets as f64);
        self.exported.queue_bytes.set(bytes as f64);
    }

    /// A packet left (forwarded or delivered) `added` after its release time, `held` after it
    /// arrived.
    pub(crate) fn record_departure(&self, added: Duration, held: Duration) {
        self.added_latency.record(added);
        self.held.record(held);
        self.exported.added_latency.record(added.as_secs_f64());
        self.exported.held.record(held.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_at_most_an_eighth_wide() {
        let mut lower = 0;
        for i in 0..HISTOGRAM_BUCKETS {
            let upper = upper_edge(i);
            assert!(upper > lower, "bucket {i}");
            assert_eq!(bucket_of(lower), i, "lower edge of bucket {i}");
            assert_eq!(bucket_of(upper - 1), i, "upper edge of bucket {i}");
            if lower >= EXACT_BELOW {
                assert!((upper - lower) * 8 <= lower, "bucket {i} too wide");
            }
            lower = upper;
        }
        assert!(lower >= 1 << 25);
        assert_eq!(bucket_of(u64::MAX), HISTOGRAM_BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let h = DurationHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(300)); // bucket [288, 320) µs
        }
        h.record(Duration::from_micros(950)); // [896, 960) µs
        h.record(Duration::from_secs(3600)); // clamps into the last bucket
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(320)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_micros(960)));
        assert_eq!(
            h.quantile(1.0),
            Some(Duration::from_micros(upper_edge(HISTOGRAM_BUCKETS - 1)))
        );
        let before = h.snapshot();
        h.record(Duration::from_micros(1));
        let mut diff = h.snapshot();
        for (d, b) in diff.iter_mut().zip(before) {
            *d -= b;
        }
        assert_eq!(quantile_of(&diff, 0.5), Some(Duration::from_micros(2)));
    }

    #[test]
    fn batches_count_packets_and_sizes() {
        let s = Stats::default();
        s.record_batch(4, Duration::from_micros(160));
        s.record_batch(1, Duration::from_micros(45));
        s.record_batch(500, Duration::from_millis(20));
        s.record_batch(0, Duration::ZERO);
        assert_eq!(s.unwrap_time.count(), 505);
        let sizes = s.batch_sizes();
        assert_eq!((sizes[1], sizes[4], sizes[MAX_BATCH]), (1, 1, 1));
        assert_eq!(sizes.iter().sum::<u64>(), 3);
        assert_eq!(
            s.unwrap_time.quantile(0.001),
            Some(Duration::from_micros(44))
        );
    }

    #[test]
    fn counts_by_drop_reason() {
        let s = Stats::default();
        s.count_drops(DropReason::Replay, 3);
        s.count_drops(DropReason::QueueFull, 1);
        assert_eq!(s.dropped(DropReason::Replay), 3);
        assert_eq!(s.dropped(DropReason::QueueFull), 1);
        assert_eq!(s.dropped(DropReason::BadMac), 0);
    }
}
