//! Computing the consensus from votes: a pure, deterministic function of its inputs, so that
//! every authority holding the same votes and reveals produces the same bytes.
//!
//! Rules (see `docs/consensus.md`):
//! - at least `threshold` votes from distinct pinned authorities, or no consensus;
//! - a node enters only if `threshold` distinct votes carry the same signed descriptor of it;
//! - at most K nodes per IPv4 address, IPv4 /24, IPv6 /48 and family (the network parameters),
//!   the best ranked kept ([`crate::rank`]);
//! - nodes sorted by identity encoding; a node's compact id is its index;
//! - the shared random value hashes every reveal that matches its voter's commitment;
//! - mixes are spread over the layers so that sizes differ by at most one, nodes that stay keep
//!   their previous layer unless balance needs them elsewhere, and the shared random value (not
//!   any authority) decides who moves and where newcomers go.

use std::collections::{BTreeMap, BTreeSet};

use p2pmix_proto::v1::{Consensus, ConsensusNode, NetworkParameters, Role};
use thiserror::Error;

use crate::{
    address::{GroupCaps, groups, within_caps},
    authorities::PinnedAuthorities,
    descriptor::VerifiedDescriptor,
    rank::RankBasis,
    schedule::EpochSchedule,
    vote::{VerifiedReveal, VerifiedVote, commitment},
};

/// Most nodes a consensus holds: compact node ids are 16 bits.
pub const MAX_NODES: usize = 1 << 16;

/// Everything a consensus is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ConsensusInputs<'a> {
    /// The epoch the consensus is for.
    pub epoch: u64,
    /// The network's clock (for the validity window).
    pub schedule: EpochSchedule,
    /// Parameters to publish.
    pub parameters: &'a NetworkParameters,
    /// The pinned authorities (for the threshold).
    pub authorities: &'a PinnedAuthorities,
    /// Verified votes for `epoch`, at most one per authority.
    pub votes: &'a [&'a VerifiedVote],
    /// Verified reveals for `epoch`.
    pub reveals: &'a [VerifiedReveal],
    /// The previous epoch's consensus this authority holds, with its digest. It is used for
    /// stable layers only if a threshold of votes names the same digest, so that every
    /// authority computes from the same document or none.
    pub previous: Option<(&'a [u8; 32], &'a Consensus)>,
}

/// Why no consensus could be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// Fewer votes than the threshold arrived.
    #[error("{got} votes from distinct authorities, {needed} needed")]
    NotEnoughVotes {
        /// Votes held.
        got: usize,
        /// The threshold.
        needed: usize,
    },
    /// A threshold of votes builds on a previous consensus this authority does not hold.
    #[error("the votes build on previous consensus {0}, which this authority does not hold")]
    MissingPrevious(String),
}

/// Computes the consensus document for `inputs.epoch`.
pub fn compute_consensus(inputs: ConsensusInputs<'_>) -> Result<Consensus, ComputeError> {
    let needed = inputs.authorities.threshold();
    // One vote per pinned authority, in a fixed order whatever order they arrived in.
    let mut votes: BTreeMap<&[u8], &VerifiedVote> = BTreeMap::new();
    for &vote in inputs.votes {
        if inputs.authorities.get(&vote.authority).is_some() {
            votes
                .entry(&vote.authority)
                .and_modify(|held| {
                    if vote.signed.vote < held.signed.vote {
                        *held = vote;
                    }
                })
                .or_insert(vote);
        }
    }
    if votes.len() < needed {
        return Err(ComputeError::NotEnoughVotes {
            got: votes.len(),
            needed,
        });
    }

    // The previous document counts only if a threshold of votes names it.
    let mut named: BTreeMap<&[u8], usize> = BTreeMap::new();
    for vote in votes.values() {
        if !vote.previous.is_empty() {
            *named.entry(&vote.previous).or_default() += 1;
        }
    }
    let agreed = named
        .into_iter()
        .find(|(_, n)| *n >= needed)
        .map(|(d, _)| d);
    let previous = match (agreed, inputs.previous) {
        (None, _) => None,
        (Some(digest), Some((held, document))) if digest == held.as_slice() => Some(document),
        (Some(digest), _) => {
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ComputeError::MissingPrevious(hex));
        }
    };

    let shared_random = shared_random(inputs.epoch, &votes, inputs.reveals);

    // Count, per signed descriptor, the distinct votes that carry it. A vote naming one node
    // twice counts for neither descriptor.
    let mut counts: BTreeMap<&[u8], (usize, &VerifiedDescriptor)> = BTreeMap::new();
    for vote in votes.values() {
        let mut per_node: BTreeMap<&[u8], Vec<&VerifiedDescriptor>> = BTreeMap::new();
        for d in &vote.descriptors {
            per_node
                .entry(&d.descriptor.identity)
                .or_default()
                .push(d.as_ref());
        }
        for (_, ds) in per_node {
            if let [d] = ds[..] {
                counts.entry(&d.signed.descriptor).or_insert((0, d)).0 += 1;
            }
        }
    }
    let mut admitted: Vec<&VerifiedDescriptor> = counts
        .into_values()
        .filter(|(n, d)| {
            *n >= needed && d.descriptor.protocol_version >= inputs.parameters.min_protocol_version
        })
        .map(|(_, d)| d)
        .collect();
    // Admission caps, best ranked first (a measurement score would join the rank here).
    let basis = RankBasis::new(previous);
    admitted.sort_by_cached_key(|d| {
        (
            basis.rank(&d.descriptor.identity),
            d.descriptor.identity.clone(),
        )
    });
    let caps = GroupCaps::of(inputs.parameters);
    let ranked = admitted
        .into_iter()
        .map(|d| (d, groups(&d.descriptor.addresses, &d.descriptor.family)));
    let (mut admitted, _) = within_caps(ranked, &caps);
    admitted.truncate(MAX_NODES);
    admitted.sort_by(|a, b| a.descriptor.identity.cmp(&b.descriptor.identity));

    let layers = assign_layers(
        &admitted,
        inputs.parameters.layers,
        &shared_random,
        previous,
    );
    let nodes = admitted
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut addresses = d.descriptor.addresses.clone();
            addresses.sort();
            addresses.dedup();
            ConsensusNode {
                node_id: i as u32,
                identity: d.descriptor.identity.clone(),
                addresses,
                role: d.descriptor.role,
                layer: layers.get(&d.descriptor.identity[..]).copied().unwrap_or(0),
                sphinx_public_key: d.sphinx_key.to_bytes().to_vec(),
                family: d.descriptor.family.clone(),
                protocol_version: d.descriptor.protocol_version,
                software_version: d.descriptor.software_version.clone(),
            }
        })
        .collect();

    let schedule = inputs.schedule;
    Ok(Consensus {
        epoch: inputs.epoch,
        valid_after_ms: schedule.start_of(inputs.epoch),
        fresh_until_ms: schedule.start_of(inputs.epoch.saturating_add(1)),
        // One extra epoch: if the next consensus fails, the network keeps using this one.
        valid_until_ms: schedule.start_of(inputs.epoch.saturating_add(2)),
        parameters: Some(*inputs.parameters),
        nodes,
        shared_random: shared_random.to_vec(),
        voters: votes.keys().map(|a| a.to_vec()).collect(),
    })
}

/// The hash of every reveal that matches its voter's commitment, in voter order.
fn shared_random(
    epoch: u64,
    votes: &BTreeMap<&[u8], &VerifiedVote>,
    reveals: &[VerifiedReveal],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("p2pmix 2026-11 shared random value v1");
    h.update(&epoch.to_le_bytes());
    for (authority, vote) in votes {
        let matching = reveals.iter().find(|r| {
            r.authority.as_slice() == *authority
                && commitment(epoch, authority, &r.value).as_slice() == vote.commit.as_slice()
        });
        if let Some(r) = matching {
            h.update(&(authority.len() as u64).to_le_bytes());
            h.update(authority);
            h.update(&r.value);
        }
    }
    *h.finalize().as_bytes()
}

/// Layer (1..=layers) of every admitted mix, keyed by identity encoding; gateways get none.
fn assign_layers<'a>(
    admitted: &[&'a VerifiedDescriptor],
    layers: u32,
    shared_random: &[u8; 32],
    previous: Option<&Consensus>,
) -> BTreeMap<&'a [u8], u32> {
    let mut out = BTreeMap::new();
    let layers = layers.clamp(1, 255) as usize;
    let score = |identity: &[u8]| *blake3::keyed_hash(shared_random, identity).as_bytes();
    let previous_layer: BTreeMap<&[u8], u32> = previous
        .map(|c| {
            c.nodes
                .iter()
                .filter(|n| n.role() == Role::Mix)
                .map(|n| (n.identity.as_slice(), n.layer))
                .collect()
        })
        .unwrap_or_default();

    // members[l]: (score, identity) of mixes in layer l + 1, kept sorted by score.
    let mut members: Vec<BTreeSet<([u8; 32], &'a [u8])>> = vec![BTreeSet::new(); layers];
    let mut pool: BTreeSet<([u8; 32], &'a [u8])> = BTreeSet::new();
    let mixes: Vec<&[u8]> = admitted
        .iter()
        .filter(|d| d.role() == Role::Mix)
        .map(|d| d.descriptor.identity.as_slice())
        .collect();
    let cap = mixes.len().div_ceil(layers);
    for identity in &mixes {
        let entry = (score(identity), *identity);
        match previous_layer.get(identity) {
            Some(&l) if (1..=layers as u32).contains(&l) => {
                members[l as usize - 1].insert(entry);
            }
            _ => {
                pool.insert(entry);
            }
        }
    }
    // Layers over capacity give up their highest-scoring members.
    for layer in &mut members {
        while layer.len() > cap {
            if let Some(moved) = layer.pop_last() {
                pool.insert(moved);
            }
        }
    }
    // Newcomers and movers go, lowest score first, to the smallest layer (lowest index on ties).
    for entry in pool {
        if let Some(smallest) = (0..layers).min_by_key(|&l| (members[l].len(), l)) {
            members[smallest].insert(entry);
        }
    }
    // Rebalance until sizes differ by at most one (nodes that left can unbalance kept layers).
    loop {
        let largest = (0..layers).max_by_key(|&l| (members[l].len(), usize::MAX - l));
        let smallest = (0..layers).min_by_key(|&l| (members[l].len(), l));
        let (Some(big), Some(small)) = (largest, smallest) else {
            break;
        };
        if members[big].len() <= members[small].len() + 1 {
            break;
        }
        if let Some(moved) = members[big].pop_last() {
            members[small].insert(moved);
        }
    }
    for (l, layer) in members.iter().enumerate() {
        for (_, identity) in layer {
            out.insert(*identity, l as u32 + 1);
        }
    }
    out
}
