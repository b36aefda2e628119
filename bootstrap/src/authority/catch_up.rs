//! Catching up on a missed document. An authority computes the consensus of `e` on top of the
//! one of `e - 1` (layers stay stable, ranks come from it); one that does not hold it (down
//! while it was published, a state file lost, a round it refused to sign) cannot compute and
//! would sit out every later round too, since each one builds on the round before. So it asks
//! the other authorities for the previous document, once when a round starts and once more when
//! a vote names a previous document it lacks, and adopts an answer that a threshold of the
//! pinned keys signed, exactly as a node or client would.
//!
//! Nothing an outsider sends is adopted: the document must verify against the pinned
//! authorities for exactly the previous epoch, and it is taken only while none is held (so a
//! held document is never replaced). The round's ranks stay those it started with.

use p2pmix_proto::v1::{GetConsensus, SignedConsensus, directory_request::Request};
use thiserror::Error;

use super::{Authority, Event};
use crate::{signing::consensus_digest, time::Now, verify::VerifyError};

/// Asks a round makes at most for its previous document: one at its start, one on a vote.
const MAX_ASKS: u8 = 2;

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
}

impl Authority {
    /// The epoch whose document the round builds on, when it is not held.
    fn missing_previous(&self) -> Option<u64> {
        let previous = self.round.epoch.checked_sub(1).filter(|&e| e >= 1)?;
        (!self.consensuses.contains_key(&previous)).then_some(previous)
    }

    /// Asks every other authority for the previous document if it is missing: at the start of
    /// a round (`on_vote` false, once) and when a vote names a previous document (`on_vote`),
    /// at most [`MAX_ASKS`] times a round.
    pub(super) fn ask_for_previous(&mut self, on_vote: bool) {
        let asked = self.round.previous_asked;
        if (!on_vote && asked > 0) || asked >= MAX_ASKS {
            return;
        }
        let Some(epoch) = self.missing_previous() else {
            return;
        };
        self.round.previous_asked += 1;
        self.relay(Request::GetConsensus(GetConsensus { epoch }));
    }

    /// A document another authority sent in answer to [`Authority::poll_transmit`]'s request for
    /// the previous consensus: adopted (held, served, built on) if it is the missing one and a
    /// threshold of the pinned keys signed it. Anything else is refused and changes nothing.
    pub fn handle_consensus(
        &mut self,
        now: Now,
        signed: SignedConsensus,
    ) -> Result<(), AdoptError> {
        self.now = now;
        self.advance_round(now.unix_ms);
        let Some(epoch) = self.missing_previous() else {
            return Err(AdoptError::NotWanted(self.round.epoch.saturating_sub(1)));
        };
        let digest = consensus_digest(&signed.consensus);
        let verified = crate::verify::verify_signed_consensus(
            signed.clone(),
            &self.config.authorities,
            now.unix_ms,
            Some(epoch),
        )?;
        let signatures = verified.signers().count();
        self.consensuses.insert(epoch, signed);
        self.events.push_back(Event::Adopted {
            epoch,
            digest,
            signatures,
        });
        Ok(())
    }
}
