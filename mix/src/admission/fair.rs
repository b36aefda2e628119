//! A bounded round-robin queue by source, in front of the Sphinx workers. Admission caps what
//! one source may send, but a source's share (an address's, in clients' rates) can still be more
//! than the node unwraps; in one first-come queue its backlog would then delay, and at the
//! queue's bound drop, everyone's packets. Here each source (a node, or a client prefix: what
//! the delay queue's shares are keyed on) waits in its own line and the workers take one packet
//! from each line in turn, so a flooding source mostly waits behind itself: an honest packet
//! waits for at most one packet of each other active source.
//!
//! Sans-IO and generic: a source is any `K: Eq + Hash + Clone`.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

/// Why [`FairQueue::push`] refused an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FairRefusal {
    /// The source's line is full.
    SourceFull,
    /// The whole queue is full.
    Full,
}

/// Items in lines by source, served round-robin; at most `max_per_source` in one line and
/// `max_total` in all.
#[derive(Debug, Clone)]
pub struct FairQueue<K, T> {
    lines: HashMap<K, VecDeque<T>>,
    /// Sources with a non-empty line, in serving order.
    turns: VecDeque<K>,
    len: usize,
    max_total: usize,
    max_per_source: usize,
}

impl<K: Eq + Hash + Clone, T> FairQueue<K, T> {
    /// An empty queue.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        FairQueue {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
            max_total,
            max_per_source,
        }
    }

    /// Puts `item` at the end of `source`'s line, or gives it back with the reason.
    pub fn push(&mut self, source: K, item: T) -> Result<(), (T, FairRefusal)> {
        if self.len >= self.max_total {
            return Err((item, FairRefusal::Full));
        }
        let line = self.lines.entry(source.clone()).or_default();
        if line.len() >= self.max_per_source {
            return Err((item, FairRefusal::SourceFull));
        }
        if line.is_empty() {
            self.turns.push_back(source);
        }
        line.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The first item of the line whose turn it is (that line goes to the back).
    pub fn pop(&mut self) -> Option<(K, T)> {
        // A turn without a line (only a misused `restore` leaves one) is skipped, never a stop.
        while let Some(source) = self.turns.pop_front() {
            let Some(line) = self.lines.get_mut(&source) else {
                continue;
            };
            let Some(item) = line.pop_front() else {
                self.lines.remove(&source);
                continue;
            };
            self.len -= 1;
            if line.is_empty() {
                self.lines.remove(&source);
            } else {
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
        }
        self.turns.push_front(source);
        line.push_front(item);
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
        assert_eq!(q.push("d", 6), Err((6, FairRefusal::Full)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, i)| i).collect();
        assert_eq!(order, [1, 3, 5, 2, 4]);
        assert!(q.is_empty() && q.lines.is_empty() && q.turns.is_empty());
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
