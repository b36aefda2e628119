//! The client's label tables: what each label it handed out (in a SURB or a loop packet) was
//! for, so that a packet the gateway delivers under that label finds its way. Bounded in
//! entries and in time: under loss labels pile up, and an attacker may not grow them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use p2pmix_mix::{Label, SurbKeys};

use crate::client::frame::MessageId;

/// Labels older than this are forgotten (their packets are long lost).
pub(super) const LABEL_LIFETIME: Duration = Duration::from_secs(3600);
/// Most outstanding labels of each kind.
pub(super) const MAX_LABELS: usize = 1 << 16;

/// A fragment's acknowledgement SURB: which fragment, and the keys to open the reply.
#[derive(Debug)]
pub(super) struct AckLabel {
    pub(super) message: MessageId,
    pub(super) index: u16,
    pub(super) keys: SurbKeys,
}

/// A reply SURB given with a message: which message it answers, and the keys to open it.
#[derive(Debug)]
pub(super) struct ReplyLabel {
    pub(super) answered: MessageId,
    pub(super) keys: SurbKeys,
}

/// One kind of label, bounded. See the module documentation.
#[derive(Debug)]
pub(super) struct LabelTable<T> {
    entries: HashMap<Label, (T, Instant)>,
}

impl<T> Default for LabelTable<T> {
    fn default() -> Self {
        LabelTable {
            entries: HashMap::new(),
        }
    }
}

impl<T> LabelTable<T> {
    /// Remembers `label` (issued at `now`) unless the table is full.
    pub(super) fn insert(&mut self, label: Label, value: T, now: Instant) {
        if self.entries.len() < MAX_LABELS {
            self.entries.insert(label, (value, now));
        }
    }

    /// Takes what `label` was for: each label is used once.
    pub(super) fn take(&mut self, label: &Label) -> Option<T> {
        self.entries.remove(label).map(|(v, _)| v)
    }

    /// Forgets labels older than [`LABEL_LIFETIME`] at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|_, (_, t)| now.saturating_duration_since(*t) < LABEL_LIFETIME);
    }

    /// Keeps only the labels for which `keep` holds.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.entries.retain(|_, (v, _)| keep(v));
    }
}
