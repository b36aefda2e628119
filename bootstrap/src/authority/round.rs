//! The state of one round: everything an authority gathers and decides while it prepares one
//! epoch, and which deadline of that epoch's schedule it waits for next.
//!
//! A round lives for one epoch of the clock (during epoch `c` it prepares `c + 1`) and is thrown
//! away when the clock moves on; only published documents outlive it (they are kept by the
//! [`Authority`](super::Authority)).

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;
use p2pmix_proto::v1::ConsensusSignature;

use crate::{
    descriptor::VerifiedDescriptor,
    schedule::{EpochSchedule, Phase},
    vote::{VerifiedReveal, VerifiedVote},
};

/// The work on one upcoming epoch.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// The epoch being prepared.
    pub(super) epoch: u64,
    /// Accepted node descriptors, one per node.
    pub(super) descriptors: BTreeMap<PeerId, VerifiedDescriptor>,
    /// The random value this authority committed to in its vote.
    pub(super) own_random: Option<[u8; 32]>,
    /// Votes by authority (the first one seen of each).
    pub(super) votes: BTreeMap<Vec<u8>, VerifiedVote>,
    /// BLAKE3 of every vote already handled (accepted or used as evidence): replays of public
    /// votes are answered without checking their signatures again.
    pub(super) seen_votes: BTreeSet<[u8; 32]>,
    /// Authorities caught sending two different votes: their votes do not count this round.
    pub(super) equivocators: BTreeSet<Vec<u8>>,
    /// Reveals by (authority, value); the one matching the voter's commitment counts.
    pub(super) reveals: BTreeMap<(Vec<u8>, Vec<u8>), VerifiedReveal>,
    /// Signatures by (authority, digest); only those over our digest count.
    pub(super) signatures: BTreeMap<(Vec<u8>, Vec<u8>), ConsensusSignature>,
    /// Our vote is sent, or it is too late to send one this round.
    pub(super) vote_done: bool,
    /// Our reveal is sent, or it is too late to send one this round.
    pub(super) reveal_done: bool,
    /// The document we computed (encoded) and its digest.
    pub(super) computed: Option<(Vec<u8>, [u8; 32])>,
    /// Computing failed (too few votes, a missing previous document, our key not pinned).
    pub(super) compute_failed: bool,
    /// A document with a threshold of signatures over our digest is published.
    pub(super) published: bool,
    /// The shortfall of signatures at the publish deadline has been reported.
    pub(super) publish_failure_reported: bool,
}

impl Round {
    /// A round with nothing gathered yet for `epoch`.
    pub(super) fn new(epoch: u64) -> Self {
        Round {
            epoch,
            ..Round::default()
        }
    }

    /// When the next step of this round is due, in milliseconds since the UNIX epoch: the
    /// deadline of the first phase whose work is not done yet, or, once everything is done (or
    /// given up), the start of the epoch being prepared, when the next round begins.
    pub(super) fn next_deadline_ms(&self, schedule: &EpochSchedule) -> u64 {
        let current = self.epoch.saturating_sub(1);
        if !self.vote_done {
            schedule.phase_start(current, Phase::Vote)
        } else if !self.reveal_done {
            schedule.phase_start(current, Phase::Reveal)
        } else if self.computed.is_none() && !self.compute_failed {
            schedule.phase_start(current, Phase::Sign)
        } else if self.computed.is_some() && !self.published && !self.publish_failure_reported {
            schedule.phase_start(current, Phase::Publish)
        } else {
            schedule.start_of(self.epoch)
        }
    }

    /// The signatures held over `digest`, one per authority (signatures are kept by authority
    /// and digest).
    pub(super) fn signatures_over<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> impl Iterator<Item = &'a ConsensusSignature> + 'a {
        self.signatures
            .values()
            .filter(move |s| s.digest.as_slice() == digest.as_slice())
    }

    /// How many entries of `map` (keyed by authority first) come from `authority`.
    pub(super) fn count_from<V>(map: &BTreeMap<(Vec<u8>, Vec<u8>), V>, authority: &[u8]) -> usize {
        map.keys()
            .filter(|(a, _)| a.as_slice() == authority)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_deadline_is_that_of_the_first_phase_not_done() {
        let s = EpochSchedule::new(0, 8_000);
        let mut r = Round::new(2);
        assert_eq!(r.next_deadline_ms(&s), s.phase_start(1, Phase::Vote));
        r.vote_done = true;
        assert_eq!(r.next_deadline_ms(&s), s.phase_start(1, Phase::Reveal));
        r.reveal_done = true;
        assert_eq!(r.next_deadline_ms(&s), s.phase_start(1, Phase::Sign));
        r.computed = Some((Vec::new(), [0; 32]));
        assert_eq!(r.next_deadline_ms(&s), s.phase_start(1, Phase::Publish));
        r.published = true;
        assert_eq!(r.next_deadline_ms(&s), s.start_of(2));

        // A round that cannot compute waits for the next one, not for the publish deadline.
        let mut failed = Round::new(2);
        failed.vote_done = true;
        failed.reveal_done = true;
        failed.compute_failed = true;
        assert_eq!(failed.next_deadline_ms(&s), s.start_of(2));
    }
}
