//! The replay state on disk, as bytes (the node decides where the files live and when they are
//! written): a snapshot of a whole cache, and a journal of the tags recorded since.
//!
//! ```text
//! snapshot = "p2pmix-replay-s1" ‖ key check (32) ‖ expected u64 ‖ target f64 ‖ hits u64 ‖
//!            full u8 ‖ segments u32 ‖ per segment: capacity u64 ‖ target f64 ‖
//!            blocks per shard u64 ‖ hashes u32 ‖ inserted u64 ‖
//!            then every segment's words (u64) ‖ BLAKE3 of everything before (32)
//! journal  = "p2pmix-replay-j1" ‖ epoch u64 ‖ key check (32) ‖ records of 32 bytes (tag indexes)
//! ```
//! Integers are little-endian. The key check is derived from the cache's secret index key, so a
//! file is only ever read back into the cache of the key that wrote it. A journal's torn tail
//! (a record cut short by a crash) is ignored: it was never reported durable, so its packet never
//! left. Everything read is bounded before it is allocated, and a snapshot that fails its checksum
//! is refused whole.

use std::{
    io::{self, Read, Write},
    sync::Arc,
};

use thiserror::Error;

use super::{
    ReplayBudget, ReplayCache, ReplayConfig, ReplayRefusal, TagIndex,
    bloom::{Segment, Shape},
    index_key_for,
};
use crate::sphinx::keys::NodeSecretKey;

const SNAPSHOT_MAGIC: &[u8; 16] = b"p2pmix-replay-s1";
const JOURNAL_MAGIC: &[u8; 16] = b"p2pmix-replay-j1";
/// Bytes of a journal's header.
pub const JOURNAL_HEADER_BYTES: usize = 16 + 8 + 32;
/// Bytes of one journal record.
pub const JOURNAL_RECORD_BYTES: usize = 32;
/// Most segments a snapshot may hold.
const MAX_SNAPSHOT_SEGMENTS: u32 = 64;

/// Why replay state could not be read back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PersistError {
    /// Reading failed (or the data ends early).
    #[error("reading replay state: {0}")]
    Io(#[from] io::Error),
    /// Not a file of this format.
    #[error("not a replay state file of this version")]
    Format,
    /// Written for another key (or another epoch).
    #[error("replay state of another key")]
    OtherKey,
    /// A field is out of bounds.
    #[error("replay state out of bounds: {0}")]
    Bounds(&'static str),
    /// The checksum does not match: the file is damaged.
    #[error("replay snapshot damaged (checksum mismatch)")]
    Checksum,
    /// The memory budget cannot hold it.
    #[error("replay state larger than the memory budget")]
    Budget,
}

fn key_check(index_key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("p2pmix 2026-12 replay state key check", index_key)
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    read_array::<8>(r).map(u64::from_le_bytes)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    read_array::<4>(r).map(u32::from_le_bytes)
}

impl ReplayCache {
    /// Writes a snapshot of this cache. Tags recorded while it is written may or may not be in
    /// it: a writer that wants them all replays the journal written since it began.
    pub fn write_snapshot(&self, out: &mut impl Write) -> io::Result<()> {
        let mut w = Hashing {
            inner: out,
            hasher: blake3::Hasher::new(),
        };
        w.write_all(SNAPSHOT_MAGIC)?;
        w.write_all(&key_check(&self.index_key))?;
        w.write_all(&self.config.expected_packets.to_le_bytes())?;
        w.write_all(&self.config.false_positive_rate.to_bits().to_le_bytes())?;
        w.write_all(&self.hits().to_le_bytes())?;
        w.write_all(&[u8::from(self.is_saturated())])?;
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let count = u32::try_from(segments.len()).unwrap_or(u32::MAX);
        w.write_all(&count.to_le_bytes())?;
        for s in segments.iter() {
            let shape = s.shape();
            w.write_all(&shape.capacity.to_le_bytes())?;
            w.write_all(&shape.target.to_bits().to_le_bytes())?;
            w.write_all(&shape.blocks_per_shard.to_le_bytes())?;
            w.write_all(&shape.hashes.to_le_bytes())?;
            w.write_all(&s.len().to_le_bytes())?;
        }
        for s in segments.iter() {
            s.write_words(&mut w)?;
        }
        drop(segments);
        let sum = w.hasher.finalize();
        w.inner.write_all(sum.as_bytes())
    }

    /// Reads a snapshot written by the cache of `secret` back into a cache whose segments come
    /// out of `budget`.
    pub fn read_snapshot(
        input: &mut impl Read,
        secret: &NodeSecretKey,
        budget: Arc<ReplayBudget>,
    ) -> Result<ReplayCache, PersistError> {
        let index_key = index_key_for(secret);
        let mut r = HashingReader {
            inner: input,
            hasher: blake3::Hasher::new(),
        };
        if &read_array::<16>(&mut r)? != SNAPSHOT_MAGIC {
            return Err(PersistError::Format);
        }
        if read_array::<32>(&mut r)? != key_check(&index_key) {
            return Err(PersistError::OtherKey);
        }
        let config = ReplayConfig {
            expected_packets: read_u64(&mut r)?,
            false_positive_rate: f64::from_bits(read_u64(&mut r)?),
        };
        let hits = read_u64(&mut r)?;
        let full = match read_array::<1>(&mut r)? {
            [0] => false,
            [1] => true,
            _ => return Err(PersistError::Bounds("full flag")),
        };
        let count = read_u32(&mut r)?;
        if count > MAX_SNAPSHOT_SEGMENTS {
            return Err(PersistError::Bounds("segments"));
        }
        let mut shapes = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        for _ in 0..count {
            let shape = Shape {
                capacity: read_u64(&mut r)?,
                target: f64::from_bits(read_u64(&mut r)?),
                blocks_per_shard: read_u64(&mut r)?,
                hashes: read_u32(&mut r)?,
            };
            let inserted = read_u64(&mut r)?;
            if !shape.is_plausible() {
                return Err(PersistError::Bounds("segment shape"));
            }
            total = total.saturating_add(shape.bytes());
            shapes.push((shape, inserted));
        }
        if !budget.try_take(total, 0) {
            return Err(PersistError::Budget);
        }
        // From here on the budget holds `total`: a cache built below gives it back on drop; on
        // an error before that, give it back here.
        let mut segments = Vec::with_capacity(shapes.len());
        for (shape, inserted) in shapes {
            match Segment::read_words(shape, inserted, &mut r) {
                Ok(s) => segments.push(s),
                Err(e) => {
                    budget.give(total);
                    return Err(e.into());
                }
            }
        }
        let computed = r.hasher.finalize();
        let stored = match read_array::<32>(&mut r.inner) {
            Ok(s) => s,
            Err(e) => {
                budget.give(total);
                return Err(e.into());
            }
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            computed.as_bytes().as_slice(),
            stored.as_slice(),
        )) {
            budget.give(total);
            return Err(PersistError::Checksum);
        }
        Ok(ReplayCache::from_parts(
            config, index_key, budget, segments, full, hits,
        ))
    }

    /// The header a journal of this cache (under the key of `epoch`) starts with.
    pub fn journal_header(&self, epoch: u64) -> [u8; JOURNAL_HEADER_BYTES] {
        let mut h = [0u8; JOURNAL_HEADER_BYTES];
        h[..16].copy_from_slice(JOURNAL_MAGIC);
        h[16..24].copy_from_slice(&epoch.to_le_bytes());
        h[24..].copy_from_slice(&key_check(&self.index_key));
        h
    }

    /// Records every index of `journal` (a journal of this cache's key for `epoch`, as written
    /// after [`ReplayCache::journal_header`]), read to its end; returns how many were fresh. A
    /// torn last record is ignored.
    pub fn replay_journal(&self, epoch: u64, journal: &mut impl Read) -> Result<u64, PersistError> {
        let mut head = [0u8; JOURNAL_HEADER_BYTES];
        read_fully(journal, &mut head)
            .and_then(|n| {
                if n == JOURNAL_HEADER_BYTES {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                }
            })
            .map_err(|_| PersistError::Format)?;
        check_header(&head, &self.journal_header(epoch))?;
        let mut buf = vec![0u8; 1024 * JOURNAL_RECORD_BYTES];
        let mut fresh = 0;
        loop {
            let n = read_fully(journal, &mut buf)?;
            for c in buf[..n].chunks_exact(JOURNAL_RECORD_BYTES) {
                let mut index = [0u8; 32];
                index.copy_from_slice(c);
                match self.insert_index(&index) {
                    Ok(true) => fresh += 1,
                    Ok(false) => {}
                    Err(ReplayRefusal::Full | ReplayRefusal::Replay) => {
                        return Err(PersistError::Budget);
                    }
                }
            }
            if n < buf.len() {
                return Ok(fresh);
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_fully(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn check_header(
    head: &[u8; JOURNAL_HEADER_BYTES],
    expected: &[u8; JOURNAL_HEADER_BYTES],
) -> Result<(), PersistError> {
    if head[..16] != expected[..16] {
        return Err(PersistError::Format);
    }
    if head != expected {
        return Err(PersistError::OtherKey);
    }
    Ok(())
}

/// The records of `journal` if it starts with `header`; a torn tail is left out.
pub fn journal_records<'a>(
    journal: &'a [u8],
    header: &[u8; JOURNAL_HEADER_BYTES],
) -> Result<impl Iterator<Item = TagIndex> + 'a, PersistError> {
    let Some((head, body)) = journal.split_at_checked(JOURNAL_HEADER_BYTES) else {
        return Err(PersistError::Format);
    };
    let mut h = [0u8; JOURNAL_HEADER_BYTES];
    h.copy_from_slice(head);
    check_header(&h, header)?;
    Ok(body.chunks_exact(JOURNAL_RECORD_BYTES).map(|c| {
        let mut index = [0u8; 32];
        index.copy_from_slice(c);
        index
    }))
}

/// Appends the encoding of `indexes` as journal records to `out`.
pub fn encode_records<'a>(indexes: impl IntoIterator<Item = &'a TagIndex>, out: &mut Vec<u8>) {
    for index in indexes {
        out.extend_from_slice(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u64) -> [u8; 32] {
        *blake3::hash(&i.to_le_bytes()).as_bytes()
    }

    fn secret(seed: u8) -> NodeSecretKey {
        let mut s = [seed; 32];
        s[31] = 0;
        NodeSecretKey::from_bytes(s).unwrap()
    }

    fn cache_of(key: &NodeSecretKey, budget: Arc<ReplayBudget>) -> ReplayCache {
        ReplayCache::with_budget(
            ReplayConfig {
                expected_packets: 3_000,
                false_positive_rate: 1e-5,
            },
            index_key_for(key),
            budget,
        )
    }

    #[test]
    fn a_snapshot_and_its_journal_bring_every_tag_back() {
        let key = secret(3);
        let budget = ReplayBudget::new(1 << 30);
        let cache = cache_of(&key, budget.clone());
        for i in 0..5_000 {
            cache.check_and_insert(&tag(i)).unwrap();
        }
        assert_eq!(cache.segments(), 2);
        let mut snapshot = Vec::new();
        cache.write_snapshot(&mut snapshot).unwrap();
        // Tags after the snapshot go to the journal (with a torn record at its end).
        let mut journal = cache.journal_header(7).to_vec();
        let later: Vec<TagIndex> = (5_000..5_100).map(|i| cache.index_of(&tag(i))).collect();
        encode_records(&later, &mut journal);
        journal.extend_from_slice(&[1, 2, 3]);

        let back = ReplayCache::read_snapshot(&mut &snapshot[..], &key, budget.clone()).unwrap();
        assert_eq!(back.len(), 5_000);
        assert_eq!(back.segments(), 2);
        assert_eq!(back.replay_journal(7, &mut &journal[..]).unwrap(), 100);
        for i in 0..5_100 {
            assert_eq!(
                back.check_and_insert(&tag(i)),
                Err(ReplayRefusal::Replay),
                "{i}"
            );
        }
        assert_eq!(budget.used(), 2 * cache.memory_bytes());
    }

    #[test]
    fn damaged_or_foreign_state_is_refused() {
        let key = secret(3);
        let budget = ReplayBudget::new(1 << 30);
        let cache = cache_of(&key, budget.clone());
        cache.check_and_insert(&tag(1)).unwrap();
        let mut snapshot = Vec::new();
        cache.write_snapshot(&mut snapshot).unwrap();
        let used = budget.used();
        let read = |bytes: &[u8], key: &NodeSecretKey| {
            ReplayCache::read_snapshot(&mut &bytes[..], key, budget.clone())
        };
        assert!(matches!(
            read(&snapshot, &secret(4)),
            Err(PersistError::OtherKey)
        ));
        let mut flipped = snapshot.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        assert!(matches!(read(&flipped, &key), Err(PersistError::Checksum)));
        assert!(matches!(
            read(&snapshot[..snapshot.len() - 1], &key),
            Err(PersistError::Io(_))
        ));
        assert!(matches!(read(b"short", &key), Err(PersistError::Io(_))));
        assert!(matches!(read(&[0u8; 200], &key), Err(PersistError::Format)));
        assert_eq!(budget.used(), used, "refused snapshots hold no budget");
        assert!(matches!(
            ReplayCache::read_snapshot(&mut &snapshot[..], &key, ReplayBudget::new(10)),
            Err(PersistError::Budget)
        ));
        // Journals of another key or epoch.
        let journal = cache.journal_header(7);
        assert!(matches!(
            cache.replay_journal(8, &mut &journal[..]),
            Err(PersistError::OtherKey)
        ));
        assert!(matches!(
            cache.replay_journal(7, &mut &journal[..10]),
            Err(PersistError::Format)
        ));
        assert_eq!(cache.replay_journal(7, &mut &journal[..]).unwrap(), 0);
        assert_eq!(
            journal_records(&journal, &cache.journal_header(7))
                .unwrap()
                .count(),
            0
        );
    }
}
