//! The client's label tables: what each label it handed out (in a SURB or a loop packet) was
//! for, so that a packet the gateway delivers under that label finds its way. Bounded in
//! entries and in time: under loss labels pile up, and an attacker may not grow them.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use p2pmix_mix::{Label, SurbKeys};

use crate::client::frame::MessageId;

/// How long loop labels are kept (their packets come back within seconds, or are lost).
pub(super) const LOOP_LABEL_LIFETIME: Duration = Duration::from_secs(600);
/// Most outstanding labels of each kind.
pub(super) const MAX_LABELS: usize = 1 << 16;

/// A fragment's acknowledgement SURB: which fragment, when it was sent, and the keys to open
/// the reply.
#[derive(Debug)]
pub(super) struct AckLabel {
    pub(super) message: MessageId,
    pub(super) index: u16,
    /// When the attempt left (its round trip is measured from here).
    pub(super) sent: Instant,
    pub(super) keys: SurbKeys,
}

/// A reply SURB given with a message: which message it answers, and the keys to open it.
#[derive(Debug)]
pub(super) struct ReplyLabel {
    pub(super) answered: MessageId,
    pub(super) keys: SurbKeys,
}

/// One kind of label, bounded in number (the oldest goes first) and in age. See the module
/// documentation.
#[derive(Debug)]
pub(super) struct LabelTable<T> {
    entries: HashMap<Label, (T, Instant)>,
    /// Labels by issue time, oldest first (entries already taken are skipped).
    order: VecDeque<(Instant, Label)>,
    lifetime: Duration,
}

impl<T> LabelTable<T> {
    /// An empty table whose labels live `lifetime`.
    pub(super) fn new(lifetime: Duration) -> Self {
        LabelTable {
            entries: HashMap::new(),
            order: VecDeque::new(),
            lifetime,
        }
    }

    /// Remembers `label` (issued at `now`); when the table is full the oldest label goes, and
    /// is returned.
    pub(super) fn insert(&mut self, label: Label, value: T, now: Instant) -> Option<(Label, T)> {
        let mut evicted = None;
        if self.entries.len() >= MAX_LABELS {
            while let Some((_, oldest)) = self.order.pop_front() {
                if let Some((v, _)) = self.entries.remove(&oldest) {
                    evicted = Some((oldest, v));
                    break;
                }
            }
        }
        self.entries.insert(label, (value, now));
        self.order.push_back((now, label));
        self.compact();
        evicted
    }

    /// Takes what `label` was for: each label is used once.
    pub(super) fn take(&mut self, label: &Label) -> Option<T> {
        let taken = self.entries.remove(label).map(|(v, _)| v);
        self.compact();
        taken
    }

    /// Forgets labels older than the table's lifetime at `now`, and returns them.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<(Label, T)> {
        let mut gone = Vec::new();
        while let Some((issued, label)) = self.order.front().copied() {
            if now.saturating_duration_since(issued) < self.lifetime {
                break;
            }
            self.order.pop_front();
            if let Some((v, _)) = self.entries.remove(&label) {
                gone.push((label, v));
            }
        }
        gone
    }

    /// Keeps only the labels for which `keep` holds; returns the others.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<(Label, T)> {
        let labels: Vec<Label> = self
            .entries
            .iter()
            .filter(|(_, (v, _))| !keep(v))
            .map(|(l, _)| *l)
            .collect();
        let gone = labels
            .into_iter()
            .filter_map(|l| self.entries.remove(&l).map(|(v, _)| (l, v)))
            .collect();
        self.compact();
        gone
    }

    /// Labels held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops order entries of labels already taken once they outnumber the live ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(t, l)| entries.get(l).is_some_and(|(_, issued)| issued == t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_drops_its_oldest_label_and_labels_expire_in_order() {
        let t0 = Instant::now();
        let mut table = LabelTable::new(Duration::from_secs(10));
        let label = |n: u32| {
            let mut l = [0u8; 16];
            l[..4].copy_from_slice(&n.to_be_bytes());
            Label(l)
        };
        for n in 0..MAX_LABELS as u32 {
            assert!(table.insert(label(n), n, t0).is_none());
        }
        assert_eq!(table.take(&label(0)), Some(0));
        assert!(table.insert(label(u32::MAX), 7, t0).is_none(), "room again");
        let evicted = table.insert(label(u32::MAX - 1), 8, t0 + Duration::from_secs(1));
        assert_eq!(evicted, Some((label(1), 1)), "the oldest goes");
        let gone = table.expire(t0 + Duration::from_secs(10));
        assert_eq!(gone.len(), MAX_LABELS - 1, "all but the last one expired");
        assert_eq!(table.len(), 1);
        assert_eq!(table.take(&label(u32::MAX - 1)), Some(8));
    }
}
