//! A bounded replay cache: a cache-line-blocked Bloom filter, sized from the packets expected in
//! one epoch and a target false-positive rate.
//!
//! A replayed packet yields the same per-hop shared secret and therefore the same tag; the cache
//! remembers every tag it saw under one epoch key and is dropped when that key retires, so memory
//! is bounded by the key's lifetime. A false positive drops one honest packet (the sender's
//! retransmission covers it); a false negative never happens. Each tag touches one 64-byte block,
//! so a check costs one cache miss. The filter is split into shards behind their own locks so
//! that worker threads unwrap in parallel and a check-and-insert is atomic.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

/// Bits in one Bloom block: one 64-byte cache line.
const BLOCK_BITS: u64 = 512;
const WORDS_PER_BLOCK: usize = 8;
/// Independent locks; a tag's first byte picks one.
const SHARDS: usize = 64;
/// The most memory a cache may take, whatever it is asked for (4 GiB).
const MAX_BYTES: u64 = 4 << 30;

/// How large a replay cache to build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayConfig {
    /// Packets one epoch key is expected to see.
    pub expected_packets: u64,
    /// Acceptable probability that a fresh packet is taken for a replay once
    /// `expected_packets` are in.
    pub false_positive_rate: f64,
}

impl Default for ReplayConfig {
    /// One million packets per epoch at a one-in-a-million false positive rate (~5 MiB).
    fn default() -> Self {
        ReplayConfig {
            expected_packets: 1_000_000,
            false_positive_rate: 1e-6,
        }
    }
}

/// Remembers the replay tags seen under one epoch key. Thread-safe.
///
/// Tags are re-hashed under a secret index key before they pick a shard, a block and bits:
/// a sender knows its packets' tags (it knows every hop's shared secret) and could otherwise
/// aim them all at one block to make honest packets look like replays.
pub struct ReplayCache {
    shards: Box<[Mutex<Box<[u64]>>]>,
    blocks_per_shard: u64,
    hashes: u32,
    index_key: [u8; 32],
    expected: u64,
    inserted: AtomicU64,
    hits: AtomicU64,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("expected", &self.expected)
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

impl Drop for ReplayCache {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.index_key);
    }
}

impl ReplayCache {
    /// A cache sized for `config` (capped at 4 GiB). `index_key` must be secret from senders;
    /// [`crate::KeyRing`] derives it from the node's epoch secret key.
    pub fn new(config: ReplayConfig, index_key: [u8; 32]) -> Self {
        let (blocks, hashes) = size_for(config);
        let blocks_per_shard = blocks.div_ceil(SHARDS as u64).max(1);
        let words = usize::try_from(blocks_per_shard).unwrap_or(usize::MAX / 16) * WORDS_PER_BLOCK;
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![0u64; words].into_boxed_slice()))
            .collect();
        ReplayCache {
            shards,
            blocks_per_shard,
            hashes,
            index_key,
            expected: config.expected_packets,
            inserted: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Records `tag`; returns `false` if it was (probably) seen before, which counts a hit.
    pub fn check_and_insert(&self, tag: &[u8; 32]) -> bool {
        let (shard, block, bits) = self.locate(tag);
        let mut guard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut fresh = false;
        if let Some(words) = guard.get_mut(block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK) {
            for (word, mask) in words.iter_mut().zip(bits) {
                fresh |= *word & mask != mask;
                *word |= mask;
            }
        }
        drop(guard);
        if fresh {
            self.inserted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Whether `tag` was (probably) seen before, without recording it.
    pub fn contains(&self, tag: &[u8; 32]) -> bool {
        let (shard, block, bits) = self.locate(tag);
        let guard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .get(block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK)
            .is_some_and(|words| words.iter().zip(bits).all(|(w, m)| w & m == m))
    }

    /// The shard, the block within it, and the bit mask per block word for `tag`.
    fn locate(&self, tag: &[u8; 32]) -> (usize, usize, [u64; WORDS_PER_BLOCK]) {
        let tag = blake3::keyed_hash(&self.index_key, tag);
        let tag = tag.as_bytes();
        let shard = usize::from(tag[0]) % SHARDS;
        let mut block_bytes = [0u8; 8];
        block_bytes.copy_from_slice(&tag[1..9]);
        let block = reduce(u64::from_le_bytes(block_bytes), self.blocks_per_shard) as usize;
        let mut bit_bytes = [0u8; 16];
        bit_bytes.copy_from_slice(&tag[9..25]);
        let mut h = u128::from_le_bytes(bit_bytes);
        let mut masks = [0u64; WORDS_PER_BLOCK];
        for _ in 0..self.hashes {
            // 9 bits of the (uniformly random) tag pick one of the block's 512 bits.
            let bit = (h & 0x1ff) as usize;
            h >>= 9;
            masks[bit / 64] |= 1u64 << (bit % 64);
        }
        (shard, block, masks)
    }

    /// Replays caught so far (including false positives).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Fresh tags recorded so far.
    pub fn len(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// Whether no tag has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether more fresh tags are in than the cache was sized for: from here on its
    /// false-positive rate climbs above the target. Nodes should alarm on it; the per-peer rate
    /// limits and the epoch length are what keep it from happening.
    pub fn is_saturated(&self) -> bool {
        self.len() > self.expected
    }

    /// Bytes of filter memory held.
    pub fn memory_bytes(&self) -> u64 {
        self.blocks_per_shard * SHARDS as u64 * (BLOCK_BITS / 8)
    }

    /// The false-positive rate this cache will show once `packets` tags are in.
    pub fn false_positive_rate_at(&self, packets: u64) -> f64 {
        let blocks = self.blocks_per_shard * SHARDS as u64;
        false_positive_rate(packets as f64 / blocks as f64, self.hashes)
    }
}

/// Maps a uniform 64-bit value onto `0..n` without division (Lemire's multiply-shift).
fn reduce(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// Expected false-positive rate of a blocked Bloom filter with `load` tags per block on average
/// and `k` bits per tag: the Poisson mixture over how full each block is.
fn false_positive_rate(load: f64, k: u32) -> f64 {
    if !load.is_finite() || load > 500.0 {
        // exp(-load) underflows; a block this full answers "seen" to nearly everything.
        return 1.0;
    }
    let mut total = 0.0;
    let mut poisson = (-load).exp(); // P(j = 0)
    let miss = 1.0 - 1.0 / BLOCK_BITS as f64;
    for j in 0..(load * 4.0 + 64.0) as u32 {
        if j > 0 {
            poisson *= load / f64::from(j);
        }
        let set = 1.0 - miss.powf(f64::from(k) * f64::from(j));
        total += poisson * set.powi(k as i32);
    }
    total
}

/// Smallest number of blocks (and its best hash count) that meets the target rate.
fn size_for(config: ReplayConfig) -> (u64, u32) {
    let n = config.expected_packets.max(1) as f64;
    let target = if config.false_positive_rate.is_nan() {
        ReplayConfig::default().false_positive_rate
    } else {
        config.false_positive_rate.clamp(1e-12, 0.5)
    };
    let max_blocks = MAX_BYTES / (BLOCK_BITS / 8);
    // Bits per tag from 4 upward in 5% steps; k up to 14 (14 * 9 bits of tag are available).
    let mut bits_per_tag = 4.0f64;
    loop {
        let blocks = ((n * bits_per_tag) / BLOCK_BITS as f64).ceil().max(1.0) as u64;
        if blocks >= max_blocks {
            return (max_blocks, 12);
        }
        let load = n / blocks as f64;
        if let Some(k) = (1..=14).find(|&k| false_positive_rate(load, k) <= target) {
            return (blocks, k);
        }
        bits_per_tag *= 1.05;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u64) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn remembers_what_it_saw() {
        let cache = ReplayCache::new(
            ReplayConfig {
                expected_packets: 10_000,
                false_positive_rate: 1e-6,
            },
            [7; 32],
        );
        for i in 0..10_000 {
            assert!(cache.check_and_insert(&tag(i)), "fresh tag {i} refused");
        }
        for i in 0..10_000 {
            assert!(!cache.check_and_insert(&tag(i)), "replay {i} accepted");
        }
        assert_eq!(cache.hits(), 10_000);
        assert_eq!(cache.len(), 10_000);
        assert!(!cache.is_saturated());
        cache.check_and_insert(&tag(10_000));
        assert!(cache.is_saturated());
    }

    #[test]
    fn false_positive_rate_is_near_the_target() {
        let n = 50_000;
        let cache = ReplayCache::new(
            ReplayConfig {
                expected_packets: n,
                false_positive_rate: 1e-3,
            },
            [8; 32],
        );
        for i in 0..n {
            cache.check_and_insert(&tag(i));
        }
        assert!(!cache.is_saturated());
        let probes = 200_000;
        let false_hits = (n..n + probes).filter(|&i| cache.contains(&tag(i))).count();
        let rate = false_hits as f64 / probes as f64;
        assert!(
            rate < 2e-3,
            "false positive rate {rate} for a target of 1e-3"
        );
        assert!(cache.false_positive_rate_at(n) <= 1e-3);
    }

    #[test]
    fn sizing_meets_the_model() {
        for (n, p) in [(1_000u64, 1e-3), (1_000_000, 1e-6), (50_000_000, 1e-6)] {
            let (blocks, k) = size_for(ReplayConfig {
                expected_packets: n,
                false_positive_rate: p,
            });
            let rate = false_positive_rate(n as f64 / blocks as f64, k);
            assert!(rate <= p, "n={n}: {rate} > {p}");
            let bits_per_tag = (blocks * BLOCK_BITS) as f64 / n as f64;
            assert!(bits_per_tag < 64.0, "n={n}: {bits_per_tag} bits per tag");
        }
    }

    #[test]
    fn absurd_configs_stay_bounded() {
        assert_eq!(false_positive_rate(1e6, 8), 1.0);
        let (blocks, _) = size_for(ReplayConfig {
            expected_packets: 1000,
            false_positive_rate: f64::NAN,
        });
        assert!(blocks * BLOCK_BITS / 8 < 1 << 20);
    }

    #[test]
    fn memory_is_capped() {
        let cache_blocks = size_for(ReplayConfig {
            expected_packets: u64::MAX,
            false_positive_rate: 1e-12,
        });
        assert!(cache_blocks.0 * BLOCK_BITS / 8 <= MAX_BYTES);
    }
}
