//! Persistence: what an authority writes to disk after every call, and how it resumes from it.
//!
//! A restart within an epoch must not cost the round: the saved state holds the round's
//! descriptors, votes, reveals, own random value and signatures, plus the documents kept. On
//! restore the round's inputs are verified again exactly as if they had just arrived (a state
//! file is not trusted more than the network); the documents are the authority's own output and
//! are only decoded.

use p2pmix_proto::v1::{AuthorityState, Consensus};
use prost::Message;

use super::{Authority, AuthorityConfig};
use crate::{
    descriptor::verify_descriptor,
    time::Now,
    vote::{verify_reveal, verify_vote},
};

impl Authority {
    /// Resumes from persisted `state` at `now`: everything in it is verified again.
    pub fn restore(config: AuthorityConfig, state: &AuthorityState, now: Now) -> Self {
        let mut authority = Authority::new(config, now);
        for signed in &state.consensuses {
            if let Ok(consensus) = Consensus::decode(&signed.consensus[..]) {
                authority
                    .consensuses
                    .insert(consensus.epoch, signed.clone());
            }
        }
        if state.epoch != authority.round.epoch {
            return authority;
        }
        let epoch = state.epoch;
        let min = authority.config.parameters.min_protocol_version;
        for d in &state.descriptors {
            if let Ok(v) = verify_descriptor(d, epoch, min) {
                authority.round.descriptors.insert(v.peer_id, v);
            }
        }
        for v in &state.votes {
            if let Ok(v) = verify_vote(v, &authority.config.authorities, epoch, min) {
                authority
                    .round
                    .seen_votes
                    .insert(*blake3::hash(&v.signed.vote).as_bytes());
                authority.round.votes.insert(v.authority.clone(), v);
            }
        }
        for r in &state.reveals {
            if let Ok(r) = verify_reveal(r, &authority.config.authorities, epoch) {
                authority
                    .round
                    .reveals
                    .insert((r.authority.clone(), r.value.clone()), r);
            }
        }
        // Straight into the round: the published document (if any) already carries its own.
        for s in &state.signatures {
            if authority.check_signature(s).is_ok() {
                authority
                    .round
                    .signatures
                    .insert((s.authority.clone(), s.digest.clone()), s.clone());
            }
        }
        authority.round.own_random = <[u8; 32]>::try_from(state.own_random.as_slice()).ok();
        let me = authority.me.clone();
        authority.round.vote_done = authority.round.votes.contains_key(&me);
        authority.round.reveal_done = authority.round.reveals.keys().any(|(a, _)| *a == me);
        authority.round.published = authority.consensuses.contains_key(&epoch);
        authority
    }

    /// What to persist after every call.
    pub fn state(&self) -> AuthorityState {
        AuthorityState {
            epoch: self.round.epoch,
            descriptors: self
                .round
                .descriptors
                .values()
                .map(|d| d.signed.clone())
                .collect(),
            votes: self
                .round
                .votes
                .values()
                .map(|v| v.signed.clone())
                .collect(),
            reveals: self
                .round
                .reveals
                .values()
                .map(|r| r.signed.clone())
                .collect(),
            own_random: self
                .round
                .own_random
                .map(|r| r.to_vec())
                .unwrap_or_default(),
            signatures: self.round.signatures.values().cloned().collect(),
            consensuses: self.consensuses.values().cloned().collect(),
        }
    }
}
