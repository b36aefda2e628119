//! A bounded round-robin queue by source, in front of the Sphinx workers. Admission caps what
//! one source may send, but a source's share (an address's, in clients' rates) can still be more
//! than the node unwraps; in one first-come queue its backlog would then delay, and at the
//! queue's bound drop, everyone's packets. Here each source (a node, or a client prefix: what
//! the delay queue's shares are keyed on) waits in its own line and the workers take one packet
//! from each line in turn, so a flooding source mostly waits behind itself: an honest packet
//! waits for at most one packet of each other active source. When the whole queue is full, a
//! packet from a shorter line pushes out the newest packet of the longest one, so that a few
//! flooding sources that fill the queue between them still leave room for everyone else.
//!
//! Sans-IO and generic: a source is any `K: Ord + Hash + Clone`.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    hash::Hash,
};

/// Why [`FairQueue::push`] refused an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FairRefusal {
    /// The source's line is full.
    SourceFull,
    /// The whole queue is full, and no line is two or more longer than the source's.
    Full,
}

/// Items in lines by source, served round-robin; at most `max_per_source` in one line and
/// `max_total` in all.
#[derive(Debug, Clone)]
pub struct FairQueue<K, T> {
    lines: HashMap<K, VecDeque<T>>,
    /// Sources with a non-empty line, in serving order.
    turns: VecDeque<K>,
    /// Every non-empty line as (length, source): the longest is the last.
    lengths: BTreeSet<(usize, K)>,
    len: usize,
    max_total: usize,
    max_per_source: usize,
}

impl<K: Ord + Hash + Clone, T> FairQueue<K, T> {
    /// An empty queue.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        FairQueue {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            lengths: BTreeSet::new(),
            len: 0,
            max_total,
            max_per_source,
        }
    }

    /// Puts `item` at the end of `source`'s line, or gives it back with the reason. When the
    /// queue is full and another line is at least two longer than `source`'s, the newest item
    /// of the longest line makes room and is returned (the caller counts it dropped).
    pub fn push(&mut self, source: K, item: T) -> Result<Option<(K, T)>, (T, FairRefusal)> {
        let own = self.waiting(&source);
        if own >= self.max_per_source {
            return Err((item, FairRefusal::SourceFull));
        }
        let mut pushed_out = None;
        if self.len >= self.max_total {
            match self.lengths.last() {
                Some((longest, victim)) if *longest >= own + 2 => {
                    let victim = victim.clone();
                    let evicted = self.take(&victim, Take::Newest);
                    pushed_out = evicted.map(|item| (victim, item));
                }
                _ => return Err((item, FairRefusal::Full)),
            }
        }
        let line = self.lines.entry(source.clone()).or_default();
        if line.is_empty() {
            self.turns.push_back(source.clone());
        } else {
            self.lengths.remove(&(line.len(), source.clone()));
        }
        line.push_back(item);
        self.lengths.insert((line.len(), source));
        self.len += 1;
        Ok(pushed_out)
    }

    /// Takes the oldest or the newest item of `source`'s line, keeping the indexes; an emptied
    /// line is removed (its turn is left for [`FairQueue::pop`] to skip).
    fn take(&mut self, source: &K, which: Take) -> Option<T> {
        let line = self.lines.get_mut(source)?;
        let before = line.len();
        let item = match which {
            Take::Oldest => line.pop_front(),
            Take::Newest => line.pop_back(),
        }?;
        self.len -= 1;
        self.lengths.remove(&(before, source.clone()));
        if line.is_empty() {
            self.lines.remove(source);
        } else {
            self.lengths.insert((before - 1, source.clone()));
        }
        Some(item)
    }

    /// The first item of the line whose turn it is (that line goes to the back).
    pub fn pop(&mut self) -> Option<(K, T)> {
        // A turn without a line (an emptied one, or a misused `restore`) is skipped, never a
        // stop.
        while let Some(source) = self.turns.pop_front() {
            let Some(item) = self.take(&source, Take::Oldest) else {
                continue;
            };
            if self.lines.contains_key(&source) {
                self.turns.push_back(source.clone());
            }
            return Some((source, item));
        }
        None
    }

    /// Puts back the item the last [`FairQueue::pop`] returned (the workers had no room): first
    /// in its line, and its line first in turn. Call it before anything else touches the queue;
    /// it may take the queue one over its bounds, never more.
    pub fn restore(&mut self, source: K, item: T) {
        let line = self.lines.entry(source.clone()).or_default();
        if !line.is_empty() {
            // `pop` sent this line's turn to the back; take that turn back (O(1), whatever the
            // number of sources waiting).
            if self.turns.back() == Some(&source) {
                self.turns.pop_back();
            }
            self.lengths.remove(&(line.len(), source.clone()));
        }
        self.turns.push_front(source.clone());
        line.push_front(item);
        self.lengths.insert((line.len(), source));
        self.len += 1;
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items waiting in `source`'s line.
    pub fn waiting(&self, source: &K) -> usize {
        self.lines.get(source).map_or(0, VecDeque::len)
    }
}

/// Which end of a line [`FairQueue::take`] takes from.
#[derive(Debug, Clone, Copy)]
enum Take {
    Oldest,
    Newest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_source_waits_behind_itself() {
        let mut q = FairQueue::new(10_000, 1_000);
        // The flood got there first: a thousand packets.
        for i in 0..1_000 {
            q.push("flood", i).unwrap();
        }
        assert_eq!(
            q.push("flood", 1_000),
            Err((1_000, FairRefusal::SourceFull))
        );
        // An honest packet after it is served second, not 1 001st.
        q.push("honest", 7).unwrap();
        assert_eq!(q.pop(), Some(("flood", 0)));
        assert_eq!(q.pop(), Some(("honest", 7)));
        assert_eq!(q.pop(), Some(("flood", 1)));
        assert_eq!(
            (q.len(), q.waiting(&"flood"), q.waiting(&"honest")),
            (998, 998, 0)
        );
    }

    #[test]
    fn sources_take_turns_and_the_bounds_hold() {
        let mut q = FairQueue::new(5, 3);
        for (s, i) in [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5)] {
            q.push(s, i).unwrap();
        }
        assert_eq!(q.push("a", 0), Err((0, FairRefusal::SourceFull)));
        // Full: a new source pushes out the newest of the longest line (a, 3 long), and the
        // next one too (a, now 2 long: still two longer than an empty line)...
        assert_eq!(q.push("d", 6), Ok(Some(("a", 4))));
        assert_eq!(q.push("e", 7), Ok(Some(("a", 2))));
        // ...but with every line as long as the next, a newcomer is refused.
        assert_eq!(q.push("f", 8), Err((8, FairRefusal::Full)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, i)| i).collect();
        assert_eq!(order, [1, 3, 5, 6, 7]);
        assert!(q.is_empty() && q.lines.is_empty() && q.turns.is_empty());
        assert!(q.lengths.is_empty());
    }

    /// Four sources at their line's bound (4 x 1024) fill the whole queue (4096); a packet of a
    /// fifth was refused as `Full` however fast the workers freed room, since the floods took
    /// every freed slot. Now it takes a flood's newest slot and is served in the next round.
    #[test]
    fn four_flooding_sources_cannot_shut_out_a_fifth() {
        let mut q = FairQueue::new(4096, 1024);
        // The floods refill every freed slot at once (a full line refuses its source).
        let refill = |q: &mut FairQueue<usize, usize>| {
            for s in (0..4).cycle().take(100_000) {
                if q.len() >= 4096 {
                    break;
                }
                let _ = q.push(s, 0);
            }
        };
        for round in 0..100 {
            refill(&mut q);
            assert_eq!(q.len(), 4096);
            let honest = 4 + round;
            let Ok(Some((victim, _))) = q.push(honest, round) else {
                panic!("round {round}: the honest packet was refused");
            };
            assert!(victim < 4, "a flood made room, not an honest source");
            // Served within one round of the four floods.
            let served: Vec<_> = std::iter::from_fn(|| q.pop()).take(5).collect();
            assert!(
                served.contains(&(honest, round)),
                "round {round}: {served:?}"
            );
        }
        assert!(q.len() <= 4096);
    }

    #[test]
    fn a_restored_item_is_served_next_in_its_place() {
        let mut q = FairQueue::new(10, 10);
        for (s, i) in [("a", 1), ("a", 2), ("b", 3)] {
            q.push(s, i).unwrap();
        }
        let (s, i) = q.pop().unwrap();
        q.restore(s, i);
        assert_eq!(q.len(), 3);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, i)| i).collect();
        assert_eq!(order, [1, 3, 2]);
        // Restoring the last item of a line brings the line back.
        q.push("c", 9).unwrap();
        let (s, i) = q.pop().unwrap();
        q.restore(s, i);
        assert_eq!(q.pop(), Some(("c", 9)));
        assert!(q.pop().is_none());
    }
}
