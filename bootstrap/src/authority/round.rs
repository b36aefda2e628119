//! The state of one round: everything an authority gathers and decides while it prepares one
//! epoch, and which deadline of that epoch's schedule it waits for next.
//!
//! A round lives for one epoch of the clock (during epoch `c` it prepares `c + 1`) and is thrown
//! away when the clock moves on; only published documents outlive it (they are kept by the
//! [`Authority`](super::Authority)).

use std::collections::{BTreeMap, BTreeSet};

use p2pmix_proto::v1::{ConsensusSignature, SignedVote};

use super::store::Store;
use crate::{
    rank::RankBasis,
    schedule::{EpochSchedule, Phase},
    vote::{VerifiedReveal, VerifiedVote},
};

/// How many digests one authority's signatures are kept for in a round: an honest authority
/// signs one; a second is the proof that it signed two documents; more prove nothing new.
pub(super) const SIGNATURES_PER_AUTHORITY: usize = 2;
/// What a decoded measurement costs beside its identity bytes (the struct and the allocation).
pub(super) const MEASUREMENT_OVERHEAD_BYTES: usize = 64;

/// The work on one upcoming epoch.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// The epoch being prepared.
    pub(super) epoch: u64,
    /// What the ranks of this round's candidates are computed from (the previous consensus).
    pub(super) basis: RankBasis,
    /// Accepted node descriptors, one per node, bounded ([`Store`]).
    pub(super) descriptors: Store,
    /// The random value this authority committed to in its vote.
    pub(super) own_random: Option<[u8; 32]>,
    /// How often this round asked the other authorities for a missing previous document.
    pub(super) previous_asked: u8,
    /// Valid answers to that request not yet named by a threshold of votes, by digest (at most
    /// one per pinned authority).
    pub(super) previous_waiting: Vec<([u8; 32], p2pmix_proto::v1::SignedConsensus)>,
    /// Votes by authority (the first one seen of each).
    pub(super) votes: BTreeMap<Vec<u8>, VerifiedVote>,
    /// The second, different vote of each authority caught equivocating (kept as evidence and
    /// for the state file; at most one per authority).
    pub(super) second_votes: BTreeMap<Vec<u8>, SignedVote>,
    /// BLAKE3 of every vote already handled (accepted or used as evidence): replays of public
    /// votes are answered without checking their signatures again. At most two per pinned
    /// authority: a third vote of an equivocator is refused before it is hashed in.
    pub(super) seen_votes: BTreeSet<[u8; 32]>,
    /// Authorities caught sending two different votes: their votes do not count this round, and
    /// further votes of theirs are refused unchecked.
    pub(super) equivocators: BTreeSet<Vec<u8>>,
    /// Reveals by (authority, value); the one matching the voter's commitment counts.
    pub(super) reveals: BTreeMap<(Vec<u8>, Vec<u8>), VerifiedReveal>,
    /// Signatures for this round's epoch by authority, at most [`SIGNATURES_PER_AUTHORITY`]
    /// digests each; only those over our digest by authorities that signed nothing else count.
    pub(super) signatures: BTreeMap<Vec<u8>, Vec<ConsensusSignature>>,
    /// Authorities caught signing two digests for this epoch: their signatures do not count.
    pub(super) double_signers: BTreeSet<Vec<u8>>,
    /// What the vote left out, by reason (a cap's group kind, `vote_size`, `unreached`).
    pub(super) left_out: BTreeMap<&'static str, u64>,
    /// Our vote is sent, or it is too late to send one this round.
    pub(super) vote_done: bool,
    /// Our reveal is sent, or it is too late to send one this round.
    pub(super) reveal_done: bool,
    /// The document we computed (encoded) and its digest.
    pub(super) computed: Option<(Vec<u8>, [u8; 32])>,
    /// Computing failed (too few votes, a missing previous document, our key not pinned, our
    /// own signature of this round over another digest).
    pub(super) compute_failed: bool,
    /// A document with a threshold of signatures over our digest is published.
    pub(super) published: bool,
    /// The shortfall of signatures at the publish deadline has been reported.
    pub(super) publish_failure_reported: bool,
}

impl Round {
    /// A round with nothing gathered yet for `epoch`, ranking candidates by `basis`.
    pub(super) fn new(epoch: u64, basis: RankBasis) -> Self {
        Round {
            epoch,
            basis,
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

    /// The signatures that count for `digest`: one per authority that signed it and nothing
    /// else this round.
    pub(super) fn signatures_over<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> impl Iterator<Item = &'a ConsensusSignature> + 'a {
        self.signatures
            .iter()
            .filter(|(a, _)| !self.double_signers.contains(*a))
            .flat_map(|(_, s)| s.iter())
            .filter(move |s| s.digest.as_slice() == digest.as_slice())
    }

    /// What the round holds in memory, as charged: descriptors ([`Store::memory_bytes`]),
    /// votes (their bytes, their decoded descriptors where not shared with the store, and their
    /// decoded measurements),
    /// reveals and signatures.
    pub(super) fn memory_bytes(&self) -> usize {
        let votes: usize = self
            .votes
            .values()
            .map(|v| {
                let own: usize = v
                    .descriptors
                    .iter()
                    .filter(|d| std::sync::Arc::strong_count(d) == 1)
                    .map(|d| 2 * d.signed.descriptor.len() + super::store::ENTRY_OVERHEAD_BYTES)
                    .sum();
                let measurements: usize = v
                    .measurements
                    .iter()
                    .map(|m| m.identity.len() + MEASUREMENT_OVERHEAD_BYTES)
                    .sum();
                v.signed.vote.len() + own + 64 * v.descriptors.len() + measurements
            })
            .sum();
        let second: usize = self.second_votes.values().map(|v| v.vote.len()).sum();
        self.descriptors.memory_bytes()
            + votes
            + second
            + 256 * (self.reveals.len() + self.signatures.len() * SIGNATURES_PER_AUTHORITY)
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
        let mut r = Round::new(2, RankBasis::default());
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
        let mut failed = Round::new(2, RankBasis::default());
        failed.vote_done = true;
        failed.reveal_done = true;
        failed.compute_failed = true;
        assert_eq!(failed.next_deadline_ms(&s), s.start_of(2));
    }
}
