//! Catching up on a missed document. An authority computes the consensus of `e` on top of the
//! one of `e - 1` (layers stay stable, ranks come from it); one that does not hold it (down
//! while it was published, a state file lost, a round it refused to sign) cannot compute and
//! would sit out every later round too, since each one builds on the round before. So when a
//! vote names a previous document it lacks (at most twice a round), it asks the other
//! authorities for it, and adopts an answer only when
//!
//! - it verifies against the pinned authorities for exactly the previous epoch,
//! - a threshold of its signers are not authorities this one holds proof of double signing
//!   against for that epoch, and
//! - a threshold of this round's votes (equivocators left out) name its digest as the document
//!   they build on: the document the round is computed on anyway.
//!
//! The last rule is what a valid signature alone does not give: a malicious authority that
//! signed two documents for one epoch (each with one honest signer) could hand each honest
//! authority the one it did not refuse. An answer that comes before the votes waits, at most one
//! per distinct digest and as many as there are pinned authorities, and is adopted when the
//! votes name it. A held document is never replaced. Once adopted, the round's ranks are
//! computed again from it and its store rebuilt, as a restore does.

use p2pmix_proto::v1::{GetConsensus, SignedConsensus, directory_request::Request};
use thiserror::Error;

use super::{Authority, Event, KEPT_CONSENSUSES};
use crate::{
    address::GroupCaps, signing::consensus_digest, time::Now, verify::VerifyError,
    verify::verify_signed_consensus,
};

/// Asks a round makes at most for its previous document (one per vote that names it).
const MAX_ASKS: u8 = 2;

/// What became of an offered document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Adoption {
    /// Adopted: held, served and built on from now on.
    Adopted,
    /// Valid, but not (yet) named by a threshold of this round's votes: kept until they do.
    Waiting,
}

/// Why an offered document was not adopted.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdoptError {
    /// It is not the previous document of the round under way, or that one is held already.
    #[error("not wanted: a document for epoch {0}")]
    NotWanted(u64),
    /// It does not verify against the pinned authorities.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// Without the signers caught signing two documents for its epoch, it has fewer than a
    /// threshold of signatures.
    #[error("below the threshold without the double signers")]
    DoubleSigners,
    /// As many documents as there are authorities wait already.
    #[error("too many documents waiting for the votes")]
    TooManyWaiting,
}

impl Authority {
    /// The epoch whose document the round builds on, when it is not held.
    fn missing_previous(&self) -> Option<u64> {
        let previous = self.round.epoch.checked_sub(1).filter(|&e| e >= 1)?;
        (!self.consensuses.contains_key(&previous)).then_some(previous)
    }

    /// Asks every other authority for the previous document if it is missing, when a vote
    /// names one, at most [`MAX_ASKS`] times a round. (Not at the start of a round: a network's
    /// first rounds have no previous document, and only the votes can say which one to adopt.)
    pub(super) fn ask_for_previous(&mut self) {
        if self.round.previous_asked >= MAX_ASKS {
            return;
        }
        let Some(epoch) = self.missing_previous() else {
            return;
        };
        self.round.previous_asked += 1;
        self.relay(Request::GetConsensus(GetConsensus { epoch }));
    }

    /// A document another authority sent in answer to the request for the previous consensus
    /// ([`Authority::poll_transmit`]): adopted if it is the missing one and passes the rules of
    /// the module documentation, kept to wait for the votes if only the votes are missing.
    /// Anything else is refused and changes nothing.
    pub fn handle_consensus(
        &mut self,
        now: Now,
        signed: SignedConsensus,
    ) -> Result<Adoption, AdoptError> {
        self.now = now;
        self.advance_round(now.unix_ms);
        let Some(epoch) = self.missing_previous() else {
            return Err(AdoptError::NotWanted(self.round.epoch.saturating_sub(1)));
        };
        let digest = consensus_digest(&signed.consensus);
        if self
            .round
            .previous_waiting
            .iter()
            .any(|(d, _)| *d == digest)
        {
            return Ok(Adoption::Waiting);
        }
        verify_signed_consensus(
            signed.clone(),
            &self.config.authorities,
            now.unix_ms,
            Some(epoch),
        )?;
        if !self.enough_honest_signers(epoch, &signed) {
            return Err(AdoptError::DoubleSigners);
        }
        if self.named_by_votes(&digest) {
            self.adopt(epoch, digest, signed);
            return Ok(Adoption::Adopted);
        }
        if self.round.previous_waiting.len() >= self.config.authorities.len() {
            return Err(AdoptError::TooManyWaiting);
        }
        self.round.previous_waiting.push((digest, signed));
        Ok(Adoption::Waiting)
    }

    /// Adopts a waiting document once the votes name it (called when a vote is taken).
    pub(super) fn adopt_named_waiting(&mut self) {
        let Some(epoch) = self.missing_previous() else {
            return;
        };
        let Some(i) = self
            .round
            .previous_waiting
            .iter()
            .position(|(d, s)| self.named_by_votes(d) && self.enough_honest_signers(epoch, s))
        else {
            return;
        };
        let (digest, signed) = self.round.previous_waiting.swap_remove(i);
        self.adopt(epoch, digest, signed);
    }

    /// Whether a threshold of this round's votes (equivocators left out) build on `digest`.
    fn named_by_votes(&self, digest: &[u8; 32]) -> bool {
        let naming = self
            .round
            .votes
            .values()
            .filter(|v| !self.round.equivocators.contains(&v.authority))
            .filter(|v| v.previous.as_slice() == digest.as_slice())
            .count();
        naming >= self.config.authorities.threshold()
    }

    /// Whether `signed` keeps a threshold of signatures without the authorities caught signing
    /// two documents for `epoch` (its signatures are checked already: one per pinned signer).
    fn enough_honest_signers(&self, epoch: u64, signed: &SignedConsensus) -> bool {
        let caught = self.evidence.equivocations(Some(epoch));
        let honest = signed
            .signatures
            .iter()
            .filter(|s| {
                !caught
                    .iter()
                    .any(|e| e.first.as_ref().is_some_and(|f| f.authority == s.authority))
            })
            .count();
        honest >= self.config.authorities.threshold()
    }

    fn adopt(&mut self, epoch: u64, digest: [u8; 32], signed: SignedConsensus) {
        let signatures = signed.signatures.len();
        self.consensuses.insert(epoch, signed);
        while self.consensuses.len() > KEPT_CONSENSUSES {
            self.consensuses.pop_first();
        }
        self.round.previous_waiting.clear();
        // The round's ranks come from the previous document: computed again, the store rebuilt.
        self.round.basis = self.basis_for(self.round.epoch);
        let caps = GroupCaps::of(&self.config.parameters);
        self.round.descriptors =
            self.round
                .descriptors
                .reranked(&self.round.basis, &self.config.limits.store, &caps);
        self.events.push_back(Event::Adopted {
            epoch,
            digest,
            signatures,
        });
    }
}
