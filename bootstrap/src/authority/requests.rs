//! What an authority takes from others: node descriptors, and the votes, reveals and consensus
//! signatures of the other authorities.
//!
//! Every check is done before anything is stored, each refusal names its reason, and what is
//! stored per sender is bounded. Votes, reveals and signatures are relayed once when first
//! accepted (see the module documentation of [`super`]).

use p2pmix_proto::v1::{
    ConsensusSignature, SignedDescriptor, SignedReveal, SignedVote, directory_request::Request,
};

use super::{Authority, Event, MAX_PER_AUTHORITY, Rejection, SignatureError, round::Round};
use crate::{
    descriptor::{DescriptorError, verify_descriptor},
    schedule::Phase,
    signing::{Context, consensus_digest, verify},
    vote::{VoteError, commitment, verify_reveal, verify_vote},
};

impl Authority {
    /// A node's descriptor for the round, during the descriptor phase, once per node.
    pub(super) fn handle_descriptor(
        &mut self,
        now_ms: u64,
        signed: &SignedDescriptor,
    ) -> Result<(), Rejection> {
        let verified = verify_descriptor(
            signed,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        )?;
        if self.config.schedule.phase_at(now_ms) != Phase::Descriptors {
            return Err(DescriptorError::Late.into());
        }
        if self.round.descriptors.contains_key(&verified.peer_id) {
            // One descriptor per node and epoch: a second one (even identical) is refused, so a
            // node cannot swap its keys or addresses after the authority has seen it.
            return Err(DescriptorError::Duplicate.into());
        }
        self.round.descriptors.insert(verified.peer_id, verified);
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
        let vote = verify_vote(
            signed,
            &self.config.authorities,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        )?;
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Reveal) {
            return Err(VoteError::Late.into());
        }
        self.round.seen_votes.insert(seen);
        if self.round.votes.contains_key(&vote.authority) {
            // Two different votes from one authority: equivocation. Relay the second as
            // evidence, so that every authority learns it, and leave that voter out.
            self.round.equivocators.insert(vote.authority.clone());
            self.relay(Request::Vote(signed.clone()));
            return Err(VoteError::Duplicate.into());
        }
        self.round.votes.insert(vote.authority.clone(), vote);
        self.relay(Request::Vote(signed.clone()));
        Ok(())
    }

    /// Another authority's reveal, before the sign deadline; one that contradicts a vote held is
    /// refused.
    pub(super) fn handle_reveal(
        &mut self,
        now_ms: u64,
        signed: &SignedReveal,
    ) -> Result<(), Rejection> {
        let reveal = verify_reveal(signed, &self.config.authorities, self.round.epoch)?;
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Sign) {
            return Err(VoteError::Late.into());
        }
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

    /// Another authority's consensus signature, at any time; it may complete our document.
    pub(super) fn handle_signature(
        &mut self,
        signature: ConsensusSignature,
    ) -> Result<(), Rejection> {
        let key = (signature.authority.clone(), signature.digest.clone());
        if self.round.signatures.contains_key(&key) {
            return Ok(());
        }
        self.check_signature(&signature)?;
        if Round::count_from(&self.round.signatures, &signature.authority) >= MAX_PER_AUTHORITY {
            return Err(SignatureError::Duplicate.into());
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
        self.round.signatures.insert(key, signature.clone());
        self.relay(Request::Signature(signature));
        self.try_publish(false);
        Ok(())
    }

    /// Checks that a signature is by a pinned authority and valid over the digest it names.
    /// Signatures over other digests (other epochs, other views) are kept but never counted.
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
        if !verify(
            key,
            Context::Consensus,
            &signature.digest,
            &signature.signature,
        ) {
            return Err(SignatureError::BadSignature);
        }
        Ok(())
    }
}
