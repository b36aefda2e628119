//! This authority's own steps, one per phase deadline: vote, reveal, compute and sign, publish.
//!
//! [`Authority::handle_timeout`](super::Authority::handle_timeout) decides when each runs; the
//! steps here only do the work and queue what must be sent or reported.

use p2pmix_proto::v1::{
    Consensus, ConsensusSignature, SignedConsensus, directory_request::Request,
};
use prost::Message;
use rand_core::CryptoRng;

use super::{Authority, Event, RoundFailure, round::Round};
use crate::{
    consensus::{ConsensusInputs, compute_consensus},
    signing::{Context, consensus_digest, sign},
    vote::{
        VerifiedReveal, VerifiedVote, build_reveal, build_vote, commitment, verify_reveal,
        verify_vote,
    },
};

impl Authority {
    /// Draws (once per round) the random value, commits to it and sends the vote.
    pub(super) fn vote<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        let value = *self.round.own_random.get_or_insert_with(|| {
            let mut v = [0u8; 32];
            rng.fill_bytes(&mut v);
            v
        });
        let commit = commitment(self.round.epoch, &self.me, &value);
        let descriptors = self.round.descriptors.values().map(|d| d.signed.clone());
        let previous = self
            .consensuses
            .get(&self.round.epoch.saturating_sub(1))
            .map(|s| consensus_digest(&s.consensus));
        let Some(signed) = build_vote(
            &self.config.keypair,
            self.round.epoch,
            descriptors,
            commit,
            previous,
        ) else {
            return;
        };
        match verify_vote(
            &signed,
            &self.config.authorities,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        ) {
            Ok(vote) => {
                self.round
                    .seen_votes
                    .insert(*blake3::hash(&signed.vote).as_bytes());
                self.round.votes.insert(self.me.clone(), vote);
                self.relay(Request::Vote(signed));
            }
            // Our own key is not pinned: we cannot take part.
            Err(_) => self.round.compute_failed = true,
        }
    }

    /// Reveals the value our vote committed to (nothing if we did not vote).
    pub(super) fn reveal(&mut self) {
        let Some(value) = self.round.own_random else {
            return;
        };
        let Some(signed) = build_reveal(&self.config.keypair, self.round.epoch, value) else {
            return;
        };
        if let Ok(reveal) = verify_reveal(&signed, &self.config.authorities, self.round.epoch) {
            self.round
                .reveals
                .insert((self.me.clone(), reveal.value.clone()), reveal);
            self.relay(Request::Reveal(signed));
        }
    }

    /// Computes the document from the votes and reveals held, signs its digest and sends the
    /// signature; or reports why there is none.
    pub(super) fn compute_and_sign(&mut self) {
        let previous = self
            .consensuses
            .get(&self.round.epoch.saturating_sub(1))
            .and_then(|s| {
                let digest = consensus_digest(&s.consensus);
                Consensus::decode(&s.consensus[..])
                    .ok()
                    .map(|c| (digest, c))
            });
        let votes: Vec<VerifiedVote> = self
            .round
            .votes
            .values()
            .filter(|v| !self.round.equivocators.contains(&v.authority))
            .cloned()
            .collect();
        let reveals: Vec<VerifiedReveal> = self.round.reveals.values().cloned().collect();
        let computed = compute_consensus(ConsensusInputs {
            epoch: self.round.epoch,
            schedule: self.config.schedule,
            parameters: &self.config.parameters,
            authorities: &self.config.authorities,
            votes: &votes,
            reveals: &reveals,
            previous: previous.as_ref().map(|(d, c)| (d, c)),
        });
        match computed {
            Ok(consensus) => {
                let bytes = consensus.encode_to_vec();
                let digest = consensus_digest(&bytes);
                if let Some(signature) = sign(&self.config.keypair, Context::Consensus, &digest) {
                    let own = ConsensusSignature {
                        authority: self.me.clone(),
                        digest: digest.to_vec(),
                        signature,
                    };
                    self.round
                        .signatures
                        .insert((self.me.clone(), own.digest.clone()), own.clone());
                    self.relay(Request::Signature(own));
                }
                self.round.computed = Some((bytes, digest));
            }
            Err(e) => {
                self.round.compute_failed = true;
                self.events.push_back(Event::Failed {
                    epoch: self.round.epoch,
                    reason: RoundFailure::Compute(e),
                });
            }
        }
    }

    /// Publishes once a threshold of signatures over our digest is in. `deadline` marks the
    /// publish deadline: a shortfall then is reported (once); later signatures can still
    /// complete the document until the epoch turns.
    pub(super) fn try_publish(&mut self, deadline: bool) {
        if self.round.published {
            return;
        }
        let Some((bytes, digest)) = &self.round.computed else {
            return;
        };
        let mut signatures: Vec<ConsensusSignature> =
            self.round.signatures_over(digest).cloned().collect();
        let needed = self.config.authorities.threshold();
        if signatures.len() >= needed {
            signatures.sort_by(|a, b| a.authority.cmp(&b.authority));
            let count = signatures.len();
            let digest = *digest;
            self.consensuses.insert(
                self.round.epoch,
                SignedConsensus {
                    consensus: bytes.clone(),
                    signatures,
                },
            );
            self.round.published = true;
            self.events.push_back(Event::Published {
                epoch: self.round.epoch,
                digest,
                signatures: count,
            });
        } else if deadline && !self.round.publish_failure_reported {
            self.round.publish_failure_reported = true;
            self.events.push_back(Event::Failed {
                epoch: self.round.epoch,
                reason: RoundFailure::NotEnoughSignatures {
                    got: signatures.len(),
                    needed,
                },
            });
        }
    }

    /// Reports a round that computed a document but never gathered a threshold of signatures
    /// on it (and had not said so at its publish deadline): called when the round is dropped.
    pub(super) fn report_publish_failure(&mut self, round: &Round) {
        if let Some((_, digest)) = &round.computed {
            let got = round.signatures_over(digest).count();
            self.events.push_back(Event::Failed {
                epoch: round.epoch,
                reason: RoundFailure::NotEnoughSignatures {
                    got,
                    needed: self.config.authorities.threshold(),
                },
            });
        }
    }
}
