//! What an authority takes from others: node descriptors, and the votes, reveals and consensus
//! signatures of the other authorities.
//!
//! Every check is done before anything is stored, cheap checks before signature checks, each
//! refusal names its reason, and what is stored per sender is bounded: descriptors by the round's
//! store ([`super::store`]), votes and signatures to two per authority (a second different one is
//! the proof of equivocation), reveals to [`MAX_PER_AUTHORITY`]. Votes, reveals and signatures
//! are relayed once when first accepted, and the proof of an equivocation once when caught (see
//! the module documentation of [`super`]).

use p2pmix_proto::v1::{
    ConsensusSignature, SignedDescriptor, SignedReveal, SignedVote, directory_request::Request,
};

use super::{
    Authority, EquivocationKind, Event, MAX_PER_AUTHORITY, Rejection, SignatureError,
    round::{Round, SIGNATURES_PER_AUTHORITY},
};
use crate::{
    descriptor::{DescriptorError, verify_descriptor},
    schedule::Phase,
    signing::{consensus_digest, verify_consensus_signature},
    vote::{VoteError, commitment, open_vote, verify_reveal, verify_vote_reusing, vote_author},
};

impl Authority {
    /// A node's descriptor for the round, during the descriptor phase, once per node, within
    /// the round's bounds.
    pub(super) fn handle_descriptor(
        &mut self,
        now_ms: u64,
        signed: &SignedDescriptor,
    ) -> Result<(), Rejection> {
        if self.config.schedule.phase_at(now_ms) != Phase::Descriptors {
            return Err(DescriptorError::Late.into());
        }
        let verified = verify_descriptor(signed, self.round.epoch, &self.config.parameters)?;
        if self.round.descriptors.contains(&verified.peer_id) {
            return Err(DescriptorError::Duplicate.into());
        }
        let peer = verified.peer_id;
        let rank = self.round.basis.rank(&verified.descriptor.identity);
        let addresses = verified
            .descriptor
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let caps = crate::address::GroupCaps::of(&self.config.parameters);
        let evicted =
            self.round
                .descriptors
                .insert(verified, rank, &self.config.limits.store, &caps)?;
        for p in &evicted {
            self.reach.dequeue(p);
        }
        self.reach.enqueue(peer, addresses, self.round.epoch);
        Ok(())
    }

    /// Another authority's vote, before the reveal deadline; a second, different vote from the
    /// same authority is equivocation.
    pub(super) fn handle_vote(
        &mut self,
        now_ms: u64,
        signed: &SignedVote,
    ) -> Result<(), Rejection> {
        // Replays of a vote already handled cost one hash, not thousands of signature checks.
        let seen = *blake3::hash(&signed.vote).as_bytes();
        if self.round.seen_votes.contains(&seen) {
            return Ok(());
        }
        let author = vote_author(signed)?;
        if self.round.equivocators.contains(&author) {
            // Caught already: its further votes are neither checked, kept nor relayed.
            return Err(VoteError::Equivocator.into());
        }
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Reveal) {
            return Err(VoteError::Late.into());
        }
        if self.round.votes.contains_key(&author) {
            // A different vote from an authority we hold a vote of: its signature alone proves
            // the equivocation (the descriptors inside are not checked). Relay it once as
            // evidence, so that every authority learns it, and leave that voter out.
            let vote = open_vote(signed, &self.config.authorities, self.round.epoch)?;
            self.round.seen_votes.insert(seen);
            self.round.equivocators.insert(vote.authority.clone());
            self.round
                .second_votes
                .insert(vote.authority.clone(), signed.clone());
            self.evidence.record_vote();
            self.events.push_back(Event::Equivocation {
                epoch: self.round.epoch,
                authority: vote.authority,
                kind: EquivocationKind::Vote,
            });
            self.relay(Request::Vote(signed.clone()));
            return Err(VoteError::Duplicate.into());
        }
        let store = &self.round.descriptors;
        let vote = verify_vote_reusing(
            signed,
            &self.config.authorities,
            self.round.epoch,
            &self.config.parameters,
            |d| store.known(d),
        )?;
        self.round.seen_votes.insert(seen);
        let names_previous = !vote.previous.is_empty();
        self.round.votes.insert(vote.authority.clone(), vote);
        self.relay(Request::Vote(signed.clone()));
        if names_previous {
            self.adopt_named_waiting();
            self.ask_for_previous();
        }
        Ok(())
    }

    /// Another authority's reveal, before the sign deadline; one that contradicts a vote held is
    /// refused.
    pub(super) fn handle_reveal(
        &mut self,
        now_ms: u64,
        signed: &SignedReveal,
    ) -> Result<(), Rejection> {
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Sign) {
            return Err(VoteError::Late.into());
        }
        let reveal = verify_reveal(signed, &self.config.authorities, self.round.epoch)?;
        let key = (reveal.authority.clone(), reveal.value.clone());
        if self.round.reveals.contains_key(&key) {
            return Ok(());
        }
        if let Some(vote) = self.round.votes.get(&reveal.authority)
            && commitment(self.round.epoch, &reveal.authority, &reveal.value).as_slice()
                != vote.commit.as_slice()
        {
            return Err(VoteError::CommitMismatch.into());
        }
        // Kept whatever the order of arrival: the one matching the voter's commitment counts
        // when the consensus is computed. A few per authority at most.
        if Round::count_from(&self.round.reveals, &reveal.authority) >= MAX_PER_AUTHORITY {
            return Err(VoteError::Duplicate.into());
        }
        self.round.reveals.insert(key, reveal);
        self.relay(Request::Reveal(signed.clone()));
        Ok(())
    }

    /// Another authority's consensus signature for this round's epoch, at any time of the round.
    /// Signatures for other epochs (replays of published documents) are refused before their
    /// signature is checked; a second digest from one authority is equivocation: recorded,
    /// relayed once, and neither of its signatures counts from then on.
    pub(super) fn handle_signature(
        &mut self,
        now_ms: u64,
        signature: ConsensusSignature,
    ) -> Result<(), Rejection> {
        if signature.epoch != self.round.epoch {
            return Err(SignatureError::WrongEpoch {
                got: signature.epoch,
                expected: self.round.epoch,
            }
            .into());
        }
        let held = self
            .round
            .signatures
            .get(&signature.authority)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if held.iter().any(|s| s.digest == signature.digest) {
            return Ok(());
        }
        if held.len() >= SIGNATURES_PER_AUTHORITY {
            // Caught already: nothing more to prove, nothing more is kept.
            return Err(SignatureError::Equivocation.into());
        }
        self.check_signature(&signature)?;
        let first = held.first().cloned();
        self.round
            .signatures
            .entry(signature.authority.clone())
            .or_default()
            .push(signature.clone());
        if let Some(first) = first {
            // Two digests, one epoch, one key: proof that it signed two documents.
            self.round
                .double_signers
                .insert(signature.authority.clone());
            if self.evidence.record_signatures(first, signature.clone()) {
                self.events.push_back(Event::Equivocation {
                    epoch: self.round.epoch,
                    authority: signature.authority.clone(),
                    kind: EquivocationKind::Signature,
                });
            }
            self.relay(Request::Signature(signature));
            return Err(SignatureError::Equivocation.into());
        }
        if let Some(published) = self.consensuses.get_mut(&self.round.epoch)
            && consensus_digest(&published.consensus).as_slice() == signature.digest.as_slice()
            && !published
                .signatures
                .iter()
                .any(|s| s.authority == signature.authority)
        {
            published.signatures.push(signature.clone());
            published
                .signatures
                .sort_by(|a, b| a.authority.cmp(&b.authority));
            self.events.push_back(Event::SignaturesAdded {
                epoch: self.round.epoch,
                signatures: published.signatures.len(),
            });
        }
        self.relay(Request::Signature(signature));
        self.try_publish(now_ms, false);
        Ok(())
    }

    /// Checks that a signature is by a pinned authority and valid over the epoch and digest it
    /// names.
    pub(super) fn check_signature(
        &self,
        signature: &ConsensusSignature,
    ) -> Result<(), SignatureError> {
        let key = self
            .config
            .authorities
            .get(&signature.authority)
            .ok_or(SignatureError::UnknownAuthority)?;
        if signature.digest.len() != 32 {
            return Err(SignatureError::Malformed);
        }
        if !verify_consensus_signature(key, signature) {
            return Err(SignatureError::BadSignature);
        }
        Ok(())
    }
}
