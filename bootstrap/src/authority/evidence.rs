//! The equivocations an authority caught: pairs of signatures by one authority for one epoch over
//! different digests. Each pair proves on its own that its signer signed two documents (the epoch
//! is signed), so it is kept for a few epochs, served to whoever asks (`GetEvidence`) and
//! persisted.

use std::collections::BTreeMap;

use p2pmix_proto::v1::{ConsensusSignature, Equivocation};

use crate::{authorities::PinnedAuthorities, verify::verify_equivocation};

/// The equivocations caught, by (epoch, authority). See the module documentation.
#[derive(Debug, Default)]
pub(super) struct EvidenceLog {
    signatures: BTreeMap<(u64, Vec<u8>), Equivocation>,
    /// Every equivocation caught (votes and signatures), for the counter.
    caught: u64,
}

impl EvidenceLog {
    /// Records that the signer of `first` and `second` signed both (the caller checked them);
    /// `false` if that pair's signer and epoch was known already.
    pub(super) fn record_signatures(
        &mut self,
        first: ConsensusSignature,
        second: ConsensusSignature,
    ) -> bool {
        let key = (first.epoch, first.authority.clone());
        if self.signatures.contains_key(&key) {
            return false;
        }
        self.caught += 1;
        self.signatures.insert(
            key,
            Equivocation {
                first: Some(first),
                second: Some(second),
            },
        );
        true
    }

    /// Counts a vote equivocation (its evidence is the two votes, relayed, not kept here).
    pub(super) fn record_vote(&mut self) {
        self.caught += 1;
    }

    /// Equivocations caught so far, of either kind.
    pub(super) fn caught(&self) -> u64 {
        self.caught
    }

    /// The signature equivocations of `epoch`, or all kept.
    pub(super) fn equivocations(&self, epoch: Option<u64>) -> Vec<Equivocation> {
        self.signatures
            .iter()
            .filter(|((e, _), _)| epoch.is_none_or(|want| *e == want))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Drops what is older than `epoch`.
    pub(super) fn forget_before(&mut self, epoch: u64) {
        self.signatures.retain(|(e, _), _| *e >= epoch);
    }

    /// A pair from the state file, if it still proves what it says.
    pub(super) fn restore(&mut self, e: &Equivocation, authorities: &PinnedAuthorities) {
        if let (true, Some(a), Some(b)) = (verify_equivocation(e, authorities), &e.first, &e.second)
        {
            self.signatures
                .entry((a.epoch, a.authority.clone()))
                .or_insert_with(|| Equivocation {
                    first: Some(a.clone()),
                    second: Some(b.clone()),
                });
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.signatures.len() * 512
    }
}
