//! One segment of a replay cache: a cache-line-blocked Bloom filter of fixed capacity, split into
//! shards behind their own locks.
//!
//! Each tag index touches one 64-byte block, so a check costs one cache miss; the shard lock
//! makes a check-and-insert atomic, so two copies of one packet unwrapped at once on two worker
//! threads cannot both pass. The false-positive model is the Poisson mixture over block loads
//! (a blocked filter is worse than a classic one at the same size: 24.3 bits per tag at 5e-5
//! instead of about 20.6, for one cache miss instead of k).

use std::{
    io::{self, Read, Write},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Bits in one Bloom block: one 64-byte cache line.
pub(crate) const BLOCK_BITS: u64 = 512;
pub(crate) const WORDS_PER_BLOCK: usize = 8;
/// Independent locks; an index's first byte picks one.
pub(crate) const SHARDS: usize = 64;
/// Most bits set per tag: 9 bits of index pick one of 512, and 16 bytes hold 14 of them.
pub(crate) const MAX_HASHES: u32 = 14;
/// The largest segment built, whatever it is asked for (4 GiB).
pub(crate) const MAX_SEGMENT_BYTES: u64 = 4 << 30;

/// A tag re-hashed under the cache's secret index key: which shard, block and bits it sets.
pub type TagIndex = [u8; 32];

/// The shape of a segment: what it was sized for and how it is laid out (and what a snapshot
/// records of it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shape {
    /// Tags it was sized for.
    pub(crate) capacity: u64,
    /// Its false-positive rate once `capacity` tags are in.
    pub(crate) target: f64,
    pub(crate) blocks_per_shard: u64,
    pub(crate) hashes: u32,
}

impl Shape {
    /// The smallest shape that holds `capacity` tags at `target` (capped at 4 GiB).
    pub(crate) fn for_capacity(capacity: u64, target: f64) -> Shape {
        let (blocks, hashes) = size_for(capacity, target);
        Shape {
            capacity: capacity.max(1),
            target,
            blocks_per_shard: blocks.div_ceil(SHARDS as u64).max(1),
            hashes,
        }
    }

    /// Bytes of filter memory a segment of this shape holds.
    pub(crate) fn bytes(&self) -> u64 {
        self.blocks_per_shard * SHARDS as u64 * (BLOCK_BITS / 8)
    }

    /// Whether a snapshot's shape is one this code could have built (bounded, sane).
    pub(crate) fn is_plausible(&self) -> bool {
        self.capacity > 0
            && self.target.is_finite()
            && self.target > 0.0
            && self.target < 1.0
            && (1..=MAX_HASHES).contains(&self.hashes)
            && self.blocks_per_shard > 0
            && self.bytes() <= MAX_SEGMENT_BYTES
    }

    fn words_per_shard(&self) -> usize {
        usize::try_from(self.blocks_per_shard).unwrap_or(usize::MAX / 16) * WORDS_PER_BLOCK
    }
}

/// One blocked Bloom filter. See the module documentation.
pub(crate) struct Segment {
    shards: Box<[Mutex<Box<[u64]>>]>,
    shape: Shape,
    inserted: AtomicU64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("shape", &self.shape)
            .field("inserted", &self.len())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// An empty segment of `shape`. The memory is zeroed by the allocator, so pages are only
    /// committed as tags land in them.
    pub(crate) fn new(shape: Shape) -> Segment {
        let words = shape.words_per_shard();
        Segment {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(vec![0u64; words].into_boxed_slice()))
                .collect(),
            shape,
            inserted: AtomicU64::new(0),
        }
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// Fresh tags recorded.
    pub(crate) fn len(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// Whether it holds the tags it was sized for: from here on its rate climbs above target.
    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.shape.capacity
    }

    /// Records `index`; `false` if it was (probably) there already.
    pub(crate) fn insert(&self, index: &TagIndex) -> bool {
        let (shard, block, masks) = self.locate(index);
        let mut guard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut fresh = false;
        if let Some(words) = guard.get_mut(block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK) {
            for (word, mask) in words.iter_mut().zip(masks) {
                fresh |= *word & mask != mask;
                *word |= mask;
            }
        }
        drop(guard);
        if fresh {
            self.inserted.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Whether `index` is (probably) there, without recording it.
    pub(crate) fn contains(&self, index: &TagIndex) -> bool {
        let (shard, block, masks) = self.locate(index);
        let guard = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .get(block * WORDS_PER_BLOCK..(block + 1) * WORDS_PER_BLOCK)
            .is_some_and(|words| words.iter().zip(masks).all(|(w, m)| w & m == m))
    }

    /// The shard, the block within it, and the bit mask per block word for `index`.
    fn locate(&self, index: &TagIndex) -> (usize, usize, [u64; WORDS_PER_BLOCK]) {
        let shard = usize::from(index[0]) % SHARDS;
        let mut block_bytes = [0u8; 8];
        block_bytes.copy_from_slice(&index[1..9]);
        let block = reduce(u64::from_le_bytes(block_bytes), self.shape.blocks_per_shard) as usize;
        let mut bit_bytes = [0u8; 16];
        bit_bytes.copy_from_slice(&index[9..25]);
        let mut h = u128::from_le_bytes(bit_bytes);
        let mut masks = [0u64; WORDS_PER_BLOCK];
        for _ in 0..self.shape.hashes {
            // 9 bits of the (uniformly random) index pick one of the block's 512 bits.
            let bit = (h & 0x1ff) as usize;
            h >>= 9;
            masks[bit / 64] |= 1u64 << (bit % 64);
        }
        (shard, block, masks)
    }

    /// The false-positive rate of this segment once `tags` are in.
    pub(crate) fn false_positive_rate_at(&self, tags: u64) -> f64 {
        let blocks = self.shape.blocks_per_shard * SHARDS as u64;
        false_positive_rate(tags as f64 / blocks as f64, self.shape.hashes)
    }

    /// Writes the filter words (little-endian), shard by shard, each under its lock.
    pub(crate) fn write_words(&self, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64 * 1024);
        for shard in self.shards.iter() {
            let guard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for chunk in guard.chunks(8 * 1024) {
                buf.clear();
                for word in chunk {
                    buf.extend_from_slice(&word.to_le_bytes());
                }
                out.write_all(&buf)?;
            }
        }
        Ok(())
    }

    /// A segment of `shape` holding `inserted` tags, its words read from `input` (as
    /// [`Segment::write_words`] wrote them).
    pub(crate) fn read_words(
        shape: Shape,
        inserted: u64,
        input: &mut impl Read,
    ) -> io::Result<Segment> {
        let segment = Segment::new(shape);
        let mut buf = vec![0u8; 64 * 1024];
        for shard in segment.shards.iter() {
            let mut guard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for chunk in guard.chunks_mut(8 * 1024) {
                let bytes = &mut buf[..chunk.len() * 8];
                input.read_exact(bytes)?;
                for (word, b) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(b);
                    *word = u64::from_le_bytes(w);
                }
            }
        }
        segment.inserted.store(inserted, Ordering::Relaxed);
        Ok(segment)
    }
}

/// Maps a uniform 64-bit value onto `0..n` without division (Lemire's multiply-shift).
fn reduce(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// Expected false-positive rate of a blocked Bloom filter with `load` tags per block on average
/// and `k` bits per tag: the Poisson mixture over how full each block is.
pub(crate) fn false_positive_rate(load: f64, k: u32) -> f64 {
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

/// Smallest number of blocks (and its best hash count) that meets `target` for `capacity` tags.
fn size_for(capacity: u64, target: f64) -> (u64, u32) {
    let n = capacity.max(1) as f64;
    let target = if target.is_nan() {
        1e-6
    } else {
        target.clamp(1e-12, 0.5)
    };
    let max_blocks = MAX_SEGMENT_BYTES / (BLOCK_BITS / 8);
    // Bits per tag from 4 upward in 5% steps.
    let mut bits_per_tag = 4.0f64;
    loop {
        let blocks = ((n * bits_per_tag) / BLOCK_BITS as f64).ceil().max(1.0) as u64;
        if blocks >= max_blocks {
            return (max_blocks, 12);
        }
        let load = n / blocks as f64;
        if let Some(k) = (1..=MAX_HASHES).find(|&k| false_positive_rate(load, k) <= target) {
            return (blocks, k);
        }
        bits_per_tag *= 1.05;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(i: u64) -> TagIndex {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    #[test]
    fn sizing_meets_the_model() {
        for (n, p) in [(1_000u64, 1e-3), (1_000_000, 1e-6), (50_000_000, 1e-6)] {
            let shape = Shape::for_capacity(n, p);
            let blocks = shape.blocks_per_shard * SHARDS as u64;
            let rate = false_positive_rate(n as f64 / blocks as f64, shape.hashes);
            assert!(rate <= p, "n={n}: {rate} > {p}");
            let bits_per_tag = (blocks * BLOCK_BITS) as f64 / n as f64;
            assert!(bits_per_tag < 64.0, "n={n}: {bits_per_tag} bits per tag");
        }
    }

    #[test]
    fn absurd_shapes_stay_bounded() {
        assert_eq!(false_positive_rate(1e6, 8), 1.0);
        assert!(Shape::for_capacity(1000, f64::NAN).bytes() < 1 << 20);
        assert!(Shape::for_capacity(u64::MAX, 1e-12).bytes() <= MAX_SEGMENT_BYTES);
        assert!(
            !Shape {
                hashes: 0,
                ..Shape::for_capacity(10, 1e-3)
            }
            .is_plausible()
        );
    }

    #[test]
    fn words_round_trip() {
        let s = Segment::new(Shape::for_capacity(5_000, 1e-4));
        for i in 0..5_000 {
            assert!(s.insert(&index(i)));
        }
        let mut bytes = Vec::new();
        s.write_words(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, s.shape().bytes());
        let back = Segment::read_words(s.shape(), s.len(), &mut &bytes[..]).unwrap();
        assert!((0..5_000).all(|i| back.contains(&index(i))));
        assert_eq!(back.len(), 5_000);
        assert!(Segment::read_words(s.shape(), 0, &mut &bytes[..100]).is_err());
    }
}
