//! This authority's own steps, one per phase deadline: vote, reveal, compute and sign, publish.
//!
//! [`Authority::handle_timeout`](super::Authority::handle_timeout) decides when each runs; the
//! steps here only do the work and queue what must be sent or reported.

use std::{collections::BTreeMap, sync::Arc};

use p2pmix_proto::v1::{
    Consensus, ConsensusSignature, SignedConsensus, directory_request::Request,
};
use prost::Message;
use rand_core::CryptoRng;

use super::{Authority, Event, RoundFailure, round::Round};
use crate::{
    address::{GroupCaps, ip_groups, within_caps},
    consensus::{ConsensusInputs, compute_consensus},
    descriptor::VerifiedDescriptor,
    schedule::Phase,
    signing::{consensus_digest, sign_consensus},
    vote::{
        MAX_VOTE_BYTES, VOTE_HEADER_BYTES, VerifiedReveal, VerifiedVote, VoteError, build_reveal,
        build_vote, commitment, open_vote, verify_reveal, vote_entry_bytes,
    },
};

impl Authority {
    /// Draws (once per round) the random value, commits to it and sends the vote.
    pub(super) fn vote<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        if self.config.authorities.get(&self.me).is_none() {
            self.round.compute_failed = true;
            self.events.push_back(Event::Failed {
                epoch: self.round.epoch,
                reason: RoundFailure::OwnVote(VoteError::UnknownAuthority),
            });
            return;
        }
        let value = *self.round.own_random.get_or_insert_with(|| {
            let mut v = [0u8; 32];
            rng.fill_bytes(&mut v);
            v
        });
        let commit = commitment(self.round.epoch, &self.me, &value);
        let (chosen, left_out) = self.vote_candidates();
        self.round.left_out = left_out;
        let previous = self
            .consensuses
            .get(&self.round.epoch.saturating_sub(1))
            .map(|s| consensus_digest(&s.consensus));
        let Some(signed) = build_vote(
            &self.config.keypair,
            self.round.epoch,
            chosen.iter().map(|d| d.signed.clone()),
            commit,
            previous,
        ) else {
            return;
        };
        // The descriptors were checked when they arrived and the size was kept under the limit:
        // only the outer signature is checked again, not every descriptor.
        match open_vote(&signed, &self.config.authorities, self.round.epoch) {
            Ok(vote) => {
                let mut descriptors = chosen;
                descriptors.sort_by(|a, b| a.signed.descriptor.cmp(&b.signed.descriptor));
                self.round
                    .seen_votes
                    .insert(*blake3::hash(&signed.vote).as_bytes());
                self.round.votes.insert(
                    self.me.clone(),
                    VerifiedVote {
                        signed: signed.clone(),
                        authority: vote.authority,
                        commit: vote.commit,
                        previous: vote.previous,
                        descriptors,
                    },
                );
                self.relay(Request::Vote(signed));
            }
            Err(e) => {
                self.round.compute_failed = true;
                self.events.push_back(Event::Failed {
                    epoch: self.round.epoch,
                    reason: RoundFailure::OwnVote(e),
                });
            }
        }
    }

    /// The descriptors this authority votes for, and what it left out by reason: of the
    /// descriptors held, those whose node was reached this round or the previous one, in rank
    /// order, within the admission caps (counting the address each node was reached at), as many
    /// as fit in [`MAX_VOTE_BYTES`] (docs/consensus.md, "Admission").
    fn vote_candidates(&self) -> (Vec<Arc<VerifiedDescriptor>>, BTreeMap<&'static str, u64>) {
        let mut left_out = BTreeMap::new();
        let epoch = self.round.epoch;
        let mut reached = Vec::new();
        for entry in self.round.descriptors.ranked() {
            let peer = entry.descriptor.peer_id;
            if !self.reach.eligible(&peer, epoch) {
                *left_out.entry("unreached").or_default() += 1;
                continue;
            }
            let mut groups = entry.groups.clone();
            if let Some(ip) = self.reach.observed(&peer) {
                groups.extend(ip_groups(ip));
            }
            reached.push((entry.descriptor.clone(), groups));
        }
        let (capped, by_cap) = within_caps(reached, &GroupCaps::of(&self.config.parameters));
        for (kind, n) in by_cap {
            *left_out.entry(kind).or_default() += n;
        }
        let mut room = MAX_VOTE_BYTES - VOTE_HEADER_BYTES;
        let mut chosen = Vec::with_capacity(capped.len());
        let mut over = 0u64;
        for d in capped {
            let size = vote_entry_bytes(&d.signed);
            if over > 0 || size > room {
                // The longest prefix of the ranking that fits: the same on every authority that
                // holds the same candidates.
                over += 1;
                continue;
            }
            room -= size;
            chosen.push(d);
        }
        if over > 0 {
            left_out.insert("vote_size", over);
        }
        (chosen, left_out)
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
        let votes: Vec<&VerifiedVote> = self
            .round
            .votes
            .values()
            .filter(|v| !self.round.equivocators.contains(&v.authority))
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
                let held = self.round.signatures.get(&self.me);
                if held.is_some_and(|h| h.iter().any(|s| s.digest != digest)) {
                    // Signed before a restart, over inputs we no longer hold: never a second.
                    self.round.compute_failed = true;
                    self.events.push_back(Event::Failed {
                        epoch: self.round.epoch,
                        reason: RoundFailure::AlreadySigned,
                    });
                    return;
                }
                if let Some(own) = sign_consensus(&self.config.keypair, self.round.epoch, &digest) {
                    self.round
                        .signatures
                        .insert(self.me.clone(), vec![own.clone()]);
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

    /// Publishes, from the publish deadline on, once a threshold of signatures over our digest
    /// is in (by authorities that signed nothing else this round). Waiting for the deadline
    /// gives the relay time to carry a double signature to everyone before anyone publishes.
    /// `deadline` marks the publish deadline itself: a shortfall then is reported (once); later
    /// signatures can still complete the document until the epoch turns.
    pub(super) fn try_publish(&mut self, now_ms: u64, deadline: bool) {
        if self.round.published {
            return;
        }
        let current = self.round.epoch.saturating_sub(1);
        if now_ms < self.config.schedule.phase_start(current, Phase::Publish) {
            return;
        }
        let Some((bytes, digest)) = &self.round.computed else {
            return;
        };
        let mut signatures: Vec<ConsensusSignature> =
            self.round.signatures_over(digest).cloned().collect();
        signatures.dedup_by(|a, b| a.authority == b.authority);
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
