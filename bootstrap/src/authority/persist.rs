//! Persistence: what an authority's driver writes to disk, and how it resumes from it.
//!
//! A restart within an epoch must not cost the round: the saved state holds the round's
//! descriptors, votes (and second votes of equivocators), reveals, own random value, signatures,
//! the nodes reached, the documents kept and the equivocations caught. On restore the round's
//! inputs are verified again exactly as if they had just arrived (a state file is not trusted
//! more than the network); the documents are the authority's own output, or ones it adopted
//! after checking them against the pinned keys and the votes (`catch_up.rs`), and are only
//! decoded.
//! Which writes must be durable before the driver answers or sends: `docs/consensus.md`,
//! "Restarts".

use libp2p_identity::PeerId;
use p2pmix_proto::v1::{AuthorityState, Consensus, Reached};
use prost::Message;

use super::{Authority, AuthorityConfig, round::SIGNATURES_PER_AUTHORITY};
use crate::{
    descriptor::verify_descriptor,
    time::Now,
    vote::{verify_reveal, verify_vote_reusing},
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
        for e in &state.equivocations {
            authority.evidence.restore(e, &authority.config.authorities);
        }
        authority.round.basis = authority.basis_for(authority.round.epoch);
        if state.epoch != authority.round.epoch {
            for r in &state.reached {
                if let Ok(peer) = PeerId::from_bytes(&r.peer_id)
                    && r.epoch.saturating_add(1) >= authority.round.epoch
                {
                    authority.reach.restore(peer, r.epoch, ip_from_bytes(&r.ip));
                }
            }
            return authority;
        }
        let epoch = state.epoch;
        let parameters = authority.config.parameters;
        let caps = crate::address::GroupCaps::of(&parameters);
        for d in &state.descriptors {
            if let Ok(v) = verify_descriptor(d, epoch, &parameters) {
                let rank = authority.round.basis.rank(&v.descriptor.identity);
                let _ = authority.round.descriptors.insert(
                    v,
                    rank,
                    &authority.config.limits.store,
                    &caps,
                );
            }
        }
        for r in &state.reached {
            if let Ok(peer) = PeerId::from_bytes(&r.peer_id)
                && r.epoch <= epoch
                && r.epoch.saturating_add(1) >= epoch
            {
                authority.reach.restore(peer, r.epoch, ip_from_bytes(&r.ip));
            }
        }
        for v in &state.votes {
            let store = &authority.round.descriptors;
            let Ok(v) =
                verify_vote_reusing(v, &authority.config.authorities, epoch, &parameters, |d| {
                    store.known(d)
                })
            else {
                continue;
            };
            let seen = *blake3::hash(&v.signed.vote).as_bytes();
            if authority.round.seen_votes.contains(&seen) {
                continue;
            }
            authority.round.seen_votes.insert(seen);
            if authority.round.votes.contains_key(&v.authority) {
                // The second vote of an equivocator, saved as evidence.
                authority.round.equivocators.insert(v.authority.clone());
                authority
                    .round
                    .second_votes
                    .insert(v.authority.clone(), v.signed);
            } else {
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
            if s.epoch != epoch || authority.check_signature(s).is_err() {
                continue;
            }
            let held = authority
                .round
                .signatures
                .entry(s.authority.clone())
                .or_default();
            if held.len() < SIGNATURES_PER_AUTHORITY && !held.iter().any(|h| h.digest == s.digest) {
                held.push(s.clone());
            }
            if held.len() > 1 {
                authority.round.double_signers.insert(s.authority.clone());
            }
        }
        authority.round.own_random = <[u8; 32]>::try_from(state.own_random.as_slice()).ok();
        let me = authority.me.clone();
        authority.round.vote_done = authority.round.votes.contains_key(&me);
        authority.round.reveal_done = authority.round.reveals.keys().any(|(a, _)| *a == me);
        authority.round.published = authority.consensuses.contains_key(&epoch);
        authority
    }

    /// What to persist (the driver writes it, debounced, before answering what must survive).
    pub fn state(&self) -> AuthorityState {
        AuthorityState {
            epoch: self.round.epoch,
            descriptors: self
                .round
                .descriptors
                .descriptors()
                .map(|d| d.signed.clone())
                .collect(),
            votes: self
                .round
                .votes
                .values()
                .map(|v| v.signed.clone())
                .chain(self.round.second_votes.values().cloned())
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
            signatures: self.round.signatures.values().flatten().cloned().collect(),
            consensuses: self.consensuses.values().cloned().collect(),
            reached: self
                .reach
                .records()
                .map(|(peer, epoch, ip)| Reached {
                    peer_id: peer.to_bytes(),
                    epoch,
                    ip: ip.map(ip_to_bytes).unwrap_or_default(),
                })
                .collect(),
            equivocations: self.evidence.equivocations(None),
        }
    }
}

/// An IP address as 4 or 16 bytes (the state file's form).
fn ip_to_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The IP address of 4 or 16 bytes; anything else is none.
fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from)
}
