//! Replay protection: one filter per epoch key that remembers every tag the key unwrapped, sized
//! from the load the key is expected to carry, grown when the load is higher, bounded by a memory
//! budget, and never answering from beyond its rate.
//!
//! A replayed packet yields the same per-hop shared secret and therefore the same tag. The filter
//! is a chain of cache-line-blocked Bloom segments ([`bloom`]): the first is sized for the packets
//! the key is expected to see ([`ReplayConfig::for_load`]); when it holds that many, a second of
//! the same size is added with half the false-positive target, and so on (a scalable Bloom
//! filter), so the compound rate stays under [`ReplayConfig::false_positive_rate`] however many
//! tags come. Segments come out of a [`ReplayBudget`] shared by a node's keys; when the budget
//! cannot pay for another, the key refuses every fresh packet ([`ReplayRefusal::Full`], counted)
//! rather than let its rate climb unseen. A false positive drops one honest packet (the sender's
//! retransmission covers it); a false negative never happens. With a [`ReplayLog`] attached, each
//! fresh tag is handed to the node's journal writer before its packet can leave (see [`log`]),
//! and [`persist`] holds the on-disk formats a restarted node reads back.

pub(crate) mod bloom;
pub(crate) mod log;
pub(crate) mod persist;

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use thiserror::Error;

pub use self::{bloom::TagIndex, persist::PersistError};
use self::{
    bloom::{MAX_SEGMENT_BYTES, Segment, Shape},
    log::{ReplayLog, ReplayRecord},
};
use super::keys::NodeSecretKey;

/// Segments one key's filter may grow to (each after the first is as large as the first).
const MAX_SEGMENTS: usize = 32;

/// How large a replay filter to build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayConfig {
    /// Tags one segment holds at its target: the packets one epoch key is expected to see (with
    /// headroom). More make the filter grow another segment of the same size.
    pub expected_packets: u64,
    /// The highest false-positive rate the key's filter reaches, however many segments it grows:
    /// the first is built for half of it, each further one for half the previous.
    pub false_positive_rate: f64,
}

impl Default for ReplayConfig {
    /// One million packets per segment at a one-in-a-million false positive rate (~5 MiB).
    fn default() -> Self {
        ReplayConfig {
            expected_packets: 1_000_000,
            false_positive_rate: 1e-6,
        }
    }
}

impl ReplayConfig {
    /// The false-positive rate nodes size for: an honest packet crosses five hops and its
    /// acknowledgement five more, so about one fragment in a thousand is retransmitted for it.
    pub const NODE_FALSE_POSITIVE_RATE: f64 = 1e-4;
    /// Headroom over the expected load.
    pub const HEADROOM: f64 = 1.5;

    /// A filter for a key that carries `packets_per_second` for `active` (the epoch during which
    /// the key is the current one), with [`ReplayConfig::HEADROOM`], at
    /// [`ReplayConfig::NODE_FALSE_POSITIVE_RATE`]. The grace period after the key's epoch carries
    /// stragglers only, unless the next consensus failed and clients stay on this key: then the
    /// filter grows a second segment.
    pub fn for_load(packets_per_second: f64, active: Duration) -> ReplayConfig {
        let tags = packets_per_second.max(1.0) * active.as_secs_f64().max(1.0) * Self::HEADROOM;
        ReplayConfig {
            expected_packets: if tags.is_finite() {
                (tags.ceil() as u64).max(1024)
            } else {
                u64::MAX
            },
            false_positive_rate: Self::NODE_FALSE_POSITIVE_RATE,
        }
    }

    /// Bytes of the first segment of a filter of this config.
    pub fn segment_bytes(&self) -> u64 {
        self.shape(0).bytes()
    }

    /// The shape of segment `i`.
    fn shape(&self, i: usize) -> Shape {
        let target = if self.false_positive_rate.is_nan() {
            ReplayConfig::default().false_positive_rate
        } else {
            self.false_positive_rate.clamp(1e-12, 0.5)
        };
        Shape::for_capacity(self.expected_packets, target / 2f64.powi(i as i32 + 1))
    }
}

/// Filter memory shared by a node's keys: no segment is built that would take more. A key that
/// grows beyond its first segment leaves room for one first segment, so that the key of the
/// next epoch can always start.
#[derive(Debug)]
pub struct ReplayBudget {
    limit: u64,
    used: AtomicU64,
}

impl ReplayBudget {
    /// The budget nodes give their replay filters unless configured otherwise (1 GiB): two
    /// epochs' keys at 1.5 times 32,000 packets a second for an hour each (docs/sphinx.md).
    pub const NODE_DEFAULT_BYTES: u64 = 1 << 30;

    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(ReplayBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes the budget allows.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by filters now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if `keep_free` stays available afterwards.
    fn try_take(&self, bytes: u64, keep_free: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(bytes)?;
                (after.checked_add(keep_free)? <= self.limit).then_some(after)
            })
            .is_ok()
    }

    fn give(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Why a tag was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayRefusal {
    /// Seen before (or a false positive, within the filter's target).
    #[error("seen before")]
    Replay,
    /// The filter cannot record more: its budget is spent, or the journal is behind. Answering
    /// anyway would either accept replays or drop honest packets at a rate above the target.
    #[error("the replay filter is full")]
    Full,
}

/// Remembers the replay tags seen under one epoch key. Thread-safe. See the module documentation.
///
/// Tags are re-hashed under a secret index key before they pick a shard, a block and bits:
/// a sender knows its packets' tags (it knows every hop's shared secret) and could otherwise
/// aim them all at one block to make honest packets look like replays.
pub struct ReplayCache {
    index_key: [u8; 32],
    config: ReplayConfig,
    segments: RwLock<Vec<Segment>>,
    budget: Arc<ReplayBudget>,
    /// The budget refused a segment: every fresh tag is refused from now on.
    full: AtomicBool,
    hits: AtomicU64,
    refused: AtomicU64,
    /// Where fresh tags are handed for the journal, with the key's epoch.
    journal: Option<(u64, Arc<ReplayLog>)>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("segments", &self.segments())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

impl Drop for ReplayCache {
    fn drop(&mut self) {
        self.budget.give(self.memory_bytes());
        zeroize::Zeroize::zeroize(&mut self.index_key);
    }
}

/// The secret index key of the replay cache of `secret`.
pub(crate) fn index_key_for(secret: &NodeSecretKey) -> [u8; 32] {
    blake3::derive_key(
        "p2pmix 2026-11 sphinx v1 replay index",
        &zeroize::Zeroizing::new(secret.to_bytes())[..],
    )
}

impl ReplayCache {
    /// A cache sized by `config`, with a budget of its own of 4 GiB. `index_key` must be secret
    /// from senders; [`crate::KeyRing`] derives it from the node's epoch secret key.
    pub fn new(config: ReplayConfig, index_key: [u8; 32]) -> Self {
        Self::with_budget(config, index_key, ReplayBudget::new(MAX_SEGMENT_BYTES))
    }

    /// The empty cache of `secret`'s key (its index key derived as [`crate::KeyRing`] does).
    pub fn for_key(
        config: ReplayConfig,
        secret: &NodeSecretKey,
        budget: Arc<ReplayBudget>,
    ) -> Self {
        Self::with_budget(config, index_key_for(secret), budget)
    }

    /// A cache sized by `config` whose segments come out of `budget`. If the budget cannot pay
    /// for the first segment, the cache refuses every tag.
    pub fn with_budget(
        config: ReplayConfig,
        index_key: [u8; 32],
        budget: Arc<ReplayBudget>,
    ) -> Self {
        let first = config.shape(0);
        let segments = if budget.try_take(first.bytes(), 0) {
            vec![Segment::new(first)]
        } else {
            Vec::new()
        };
        let full = segments.is_empty();
        Self::from_parts(config, index_key, budget, segments, full, 0)
    }

    fn from_parts(
        config: ReplayConfig,
        index_key: [u8; 32],
        budget: Arc<ReplayBudget>,
        segments: Vec<Segment>,
        full: bool,
        hits: u64,
    ) -> Self {
        ReplayCache {
            index_key,
            config,
            segments: RwLock::new(segments),
            budget,
            full: AtomicBool::new(full),
            hits: AtomicU64::new(hits),
            refused: AtomicU64::new(0),
            journal: None,
        }
    }

    /// Hands every fresh tag from now on to `log` (as a record of `epoch`) before accepting it.
    pub fn attach_log(&mut self, epoch: u64, log: Arc<ReplayLog>) {
        self.journal = Some((epoch, log));
    }

    /// The sizing this cache was built with.
    pub fn config(&self) -> ReplayConfig {
        self.config
    }

    /// `tag` re-hashed under the secret index key: what the filter and the journal hold.
    pub fn index_of(&self, tag: &[u8; 32]) -> TagIndex {
        *blake3::keyed_hash(&self.index_key, tag).as_bytes()
    }

    /// Records `tag`: `Ok` if it is fresh (and, with a log attached, handed to the journal).
    pub fn check_and_insert(&self, tag: &[u8; 32]) -> Result<(), ReplayRefusal> {
        let index = self.index_of(tag);
        let result = self.record(&index);
        match result {
            Ok(()) => {
                if let Some((epoch, log)) = &self.journal
                    && !log.push(ReplayRecord {
                        epoch: *epoch,
                        index,
                    })
                {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(ReplayRefusal::Full);
                }
            }
            Err(ReplayRefusal::Replay) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Err(ReplayRefusal::Full) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Records an index read back from disk (nothing is logged or counted as a hit); `Ok(false)`
    /// if it was there already.
    pub fn insert_index(&self, index: &TagIndex) -> Result<bool, ReplayRefusal> {
        match self.record(index) {
            Ok(()) => Ok(true),
            Err(ReplayRefusal::Replay) => Ok(false),
            Err(ReplayRefusal::Full) => Err(ReplayRefusal::Full),
        }
    }

    fn record(&self, index: &TagIndex) -> Result<(), ReplayRefusal> {
        loop {
            let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
            let Some((active, frozen)) = segments.split_last() else {
                return Err(ReplayRefusal::Full);
            };
            if frozen.iter().any(|s| s.contains(index)) {
                return Err(ReplayRefusal::Replay);
            }
            if !active.is_full() {
                return if active.insert(index) {
                    Ok(())
                } else {
                    Err(ReplayRefusal::Replay)
                };
            }
            if active.contains(index) {
                return Err(ReplayRefusal::Replay);
            }
            drop(segments);
            if !self.grow() {
                return Err(ReplayRefusal::Full);
            }
        }
    }

    /// Adds a segment if the active one is full and the budget pays for it; `false` if the cache
    /// is full for good.
    fn grow(&self) -> bool {
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if segments.last().is_some_and(|s| !s.is_full()) {
            return true; // another thread grew it
        }
        if self.full.load(Ordering::Relaxed) || segments.len() >= MAX_SEGMENTS {
            self.full.store(true, Ordering::Relaxed);
            return false;
        }
        let shape = self.config.shape(segments.len());
        if !self
            .budget
            .try_take(shape.bytes(), self.config.segment_bytes())
        {
            self.full.store(true, Ordering::Relaxed);
            tracing::warn!(
                tags = self.len(),
                budget = self.budget.limit(),
                "replay filter full: the memory budget pays for no further segment; fresh \
                 packets under this key are refused until it retires"
            );
            return false;
        }
        segments.push(Segment::new(shape));
        true
    }

    /// Whether `tag` was (probably) seen before, without recording it.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        let index = self.index_of(tag);
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|s| s.contains(&index))
    }

    /// Replays caught so far (including false positives).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Fresh tags refused because the filter was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Fresh tags recorded so far.
    pub fn len(&self) -> u64 {
        self.read_segments(|s| s.iter().map(Segment::len).sum())
    }

    /// Whether no tag has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segments built so far.
    pub fn segments(&self) -> usize {
        self.read_segments(|s| s.len())
    }

    /// Whether the filter refuses fresh tags (its budget paid for no further segment).
    pub fn is_saturated(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// How full the filter is: tags in over tags its segments are sized for; 1 once it refuses
    /// fresh tags.
    pub fn fill_ratio(&self) -> f64 {
        if self.is_saturated() {
            return 1.0;
        }
        self.read_segments(|s| {
            let capacity: u64 = s.iter().map(|s| s.shape().capacity).sum();
            let len: u64 = s.iter().map(Segment::len).sum();
            if capacity == 0 {
                1.0
            } else {
                (len as f64 / capacity as f64).min(1.0)
            }
        })
    }

    /// Bytes of filter memory held.
    pub fn memory_bytes(&self) -> u64 {
        self.read_segments(|s| s.iter().map(|s| s.shape().bytes()).sum())
    }

    /// The rate at which a fresh tag is taken for a replay now, by the model.
    pub fn false_positive_rate(&self) -> f64 {
        self.read_segments(|s| {
            1.0 - s
                .iter()
                .map(|s| 1.0 - s.false_positive_rate_at(s.len()))
                .product::<f64>()
        })
    }

    /// The false-positive rate of the first segment once `packets` tags are in it.
    pub fn false_positive_rate_at(&self, packets: u64) -> f64 {
        self.read_segments(|s| s.first().map_or(1.0, |s| s.false_positive_rate_at(packets)))
    }

    fn read_segments<T>(&self, f: impl FnOnce(&[Segment]) -> T) -> T {
        f(&self.segments.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u64) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    fn config(n: u64, p: f64) -> ReplayConfig {
        ReplayConfig {
            expected_packets: n,
            false_positive_rate: p,
        }
    }

    #[test]
    fn remembers_what_it_saw() {
        let cache = ReplayCache::new(config(10_000, 1e-6), [7; 32]);
        for i in 0..10_000 {
            assert_eq!(
                cache.check_and_insert(&tag(i)),
                Ok(()),
                "fresh tag {i} refused"
            );
        }
        for i in 0..10_000 {
            assert_eq!(
                cache.check_and_insert(&tag(i)),
                Err(ReplayRefusal::Replay),
                "replay {i} accepted"
            );
        }
        assert_eq!(cache.hits(), 10_000);
        assert_eq!(cache.len(), 10_000);
        assert_eq!(cache.segments(), 1);
        assert!((cache.fill_ratio() - 1.0).abs() < 1e-9);
        // One more grows a second segment, and the old tags are still replays.
        assert_eq!(cache.check_and_insert(&tag(10_000)), Ok(()));
        assert_eq!(cache.segments(), 2);
        assert!(cache.fill_ratio() < 0.51);
        assert_eq!(cache.check_and_insert(&tag(5)), Err(ReplayRefusal::Replay));
        assert_eq!(
            cache.check_and_insert(&tag(10_000)),
            Err(ReplayRefusal::Replay)
        );
    }

    #[test]
    fn false_positive_rate_is_near_the_target() {
        let n = 50_000;
        let cache = ReplayCache::new(config(n, 1e-3), [8; 32]);
        for i in 0..n {
            // A fresh tag may be a false positive while the filter fills.
            let _ = cache.check_and_insert(&tag(i));
        }
        let probes = 200_000;
        let false_hits = (n..n + probes).filter(|&i| cache.contains(&tag(i))).count();
        let rate = false_hits as f64 / probes as f64;
        assert!(
            rate < 1e-3,
            "false positive rate {rate} for a target of 1e-3"
        );
        assert!(cache.false_positive_rate() <= 1e-3 / 2.0);
    }

    #[test]
    fn a_spent_budget_refuses_instead_of_answering_beyond_the_target() {
        let c = config(2_000, 1e-4);
        // Room for the first segment and one more, with one first segment kept free.
        let budget = ReplayBudget::new(c.segment_bytes() * 2 + c.shape(1).bytes());
        let cache = ReplayCache::with_budget(c, [9; 32], budget.clone());
        for i in 0..4_000 {
            assert_eq!(cache.check_and_insert(&tag(i)), Ok(()), "tag {i}");
        }
        assert_eq!(cache.segments(), 2);
        assert_eq!(
            cache.check_and_insert(&tag(4_000)),
            Err(ReplayRefusal::Full)
        );
        assert!(cache.is_saturated());
        assert_eq!(cache.fill_ratio(), 1.0);
        assert_eq!(cache.refused(), 1);
        // Replays are still replays.
        assert_eq!(cache.check_and_insert(&tag(7)), Err(ReplayRefusal::Replay));
        // The next key can still start, and the memory comes back when a key goes.
        let next = ReplayCache::with_budget(c, [10; 32], budget.clone());
        assert_eq!(next.check_and_insert(&tag(1)), Ok(()));
        let used = budget.used();
        drop(cache);
        assert_eq!(budget.used(), used - c.segment_bytes() - c.shape(1).bytes());
        drop(next);
        assert_eq!(budget.used(), 0);
        // No budget at all: every tag refused.
        let none = ReplayCache::with_budget(c, [11; 32], ReplayBudget::new(0));
        assert_eq!(none.check_and_insert(&tag(1)), Err(ReplayRefusal::Full));
    }

    #[test]
    fn fresh_tags_go_to_the_log_and_a_full_log_refuses() {
        let log = Arc::new(ReplayLog::new(2));
        let mut cache = ReplayCache::new(config(100, 1e-6), [1; 32]);
        cache.attach_log(9, log.clone());
        assert_eq!(cache.check_and_insert(&tag(1)), Ok(()));
        assert_eq!(cache.check_and_insert(&tag(1)), Err(ReplayRefusal::Replay));
        assert_eq!(cache.check_and_insert(&tag(2)), Ok(()));
        assert_eq!(cache.check_and_insert(&tag(3)), Err(ReplayRefusal::Full));
        let batch = log.take(Duration::ZERO).unwrap();
        assert_eq!(
            batch.records,
            vec![
                ReplayRecord {
                    epoch: 9,
                    index: cache.index_of(&tag(1))
                },
                ReplayRecord {
                    epoch: 9,
                    index: cache.index_of(&tag(2))
                }
            ]
        );
        // Tag 3 never left, but it is remembered in memory.
        assert_eq!(cache.check_and_insert(&tag(3)), Err(ReplayRefusal::Replay));
    }

    #[test]
    fn sizing_follows_the_load() {
        let c = ReplayConfig::for_load(1_200.0, Duration::from_secs(3600));
        assert_eq!(c.expected_packets, 6_480_000);
        assert_eq!(c.false_positive_rate, 1e-4);
        // About 24 bits per tag for the first segment (built for 5e-5).
        let bits = c.segment_bytes() as f64 * 8.0 / c.expected_packets as f64;
        assert!((23.0..26.0).contains(&bits), "{bits} bits per tag");
        assert_eq!(
            ReplayConfig::for_load(0.0, Duration::ZERO).expected_packets,
            1024
        );
        assert_eq!(
            ReplayConfig::for_load(f64::INFINITY, Duration::from_secs(1)).expected_packets,
            u64::MAX
        );
    }
}
