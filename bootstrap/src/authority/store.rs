//! The descriptors an authority holds for one round, bounded in count, in bytes and per prefix
//! group, whatever arrives.
//!
//! When a bound is reached a newcomer takes the place of the worst-ranked holder it beats
//! ([`crate::rank`]), or is refused: the store ends up holding the best-ranked descriptors of
//! all that arrived, not the first ones, so a flood early in the round cannot crowd out the nodes
//! that upload after it, and authorities that received the same descriptors hold the same ones.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use libp2p_identity::PeerId;
use p2pmix_proto::v1::SignedDescriptor;

use crate::{
    address::{Group, GroupCaps, group_kind, groups},
    descriptor::{DescriptorError, VerifiedDescriptor},
    rank::Rank,
};

/// What the store charges per descriptor besides its bytes (the decoded copy is charged as its
/// bytes again): maps, indexes, the decoded structure's headers.
pub(super) const ENTRY_OVERHEAD_BYTES: usize = 768;

/// Bounds on one round's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most descriptors held.
    pub max_descriptors: usize,
    /// Most bytes of signed descriptors held.
    pub max_bytes: usize,
    /// Per prefix group or family, the store keeps this many times the consensus cap (room for
    /// nodes that turn out unreachable).
    pub group_factor: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_descriptors: 20_000,
            max_bytes: 16 * 1024 * 1024,
            group_factor: 4,
        }
    }
}

/// One held descriptor.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) descriptor: Arc<VerifiedDescriptor>,
    pub(super) rank: Rank,
    pub(super) groups: BTreeSet<Group>,
}

/// The round's descriptors. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Store {
    by_peer: BTreeMap<PeerId, Entry>,
    by_hash: HashMap<[u8; 32], PeerId>,
    ranked: BTreeSet<(Rank, PeerId)>,
    per_group: HashMap<Group, BTreeSet<(Rank, PeerId)>>,
    bytes: usize,
    /// Nothing ranked at or below this enters any more (set when the count or bytes bound
    /// displaced a holder).
    threshold: Option<(Rank, PeerId)>,
    /// The same, per group.
    group_thresholds: HashMap<Group, (Rank, PeerId)>,
    evicted: u64,
}

fn hash_of(signed: &SignedDescriptor) -> [u8; 32] {
    *blake3::hash(&signed.descriptor).as_bytes()
}

impl Store {
    pub(super) fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Bytes of signed descriptors held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The held descriptor with exactly these signed bytes.
    pub(super) fn known(&self, signed: &SignedDescriptor) -> Option<Arc<VerifiedDescriptor>> {
        let peer = self.by_hash.get(&hash_of(signed))?;
        self.by_peer.get(peer).map(|e| e.descriptor.clone())
    }

    /// Every entry, best ranked first.
    pub(super) fn ranked(&self) -> impl Iterator<Item = &Entry> {
        self.ranked.iter().filter_map(|(_, p)| self.by_peer.get(p))
    }

    /// Every descriptor held (in no particular order).
    pub(super) fn descriptors(&self) -> impl Iterator<Item = &Arc<VerifiedDescriptor>> {
        self.by_peer.values().map(|e| &e.descriptor)
    }

    /// Takes `descriptor` at `rank` within `limits` and the store's share of `caps`; returns the
    /// peers it displaced, or why it is refused.
    ///
    /// The store keeps a threshold per bound: once a bound displaced a holder, nothing ranked at
    /// or below that holder enters again this round. So the store always holds, of everything
    /// that arrived, the longest prefix of the ranking that fits (per group, then in all), and
    /// the same one whatever the order of arrival.
    pub(super) fn insert(
        &mut self,
        descriptor: VerifiedDescriptor,
        rank: Rank,
        limits: &StoreLimits,
        caps: &GroupCaps,
    ) -> Result<Vec<PeerId>, DescriptorError> {
        let peer = descriptor.peer_id;
        if self.by_peer.contains_key(&peer) {
            // One descriptor per node and epoch: a second one (even identical) is refused, so a
            // node cannot swap its keys or addresses after the authority has seen it.
            return Err(DescriptorError::Duplicate);
        }
        let me = (rank, peer);
        if self.threshold.is_some_and(|t| me >= t) {
            return Err(DescriptorError::Full);
        }
        let node_groups = groups(
            &descriptor.descriptor.addresses,
            &descriptor.descriptor.family,
        );
        for g in &node_groups {
            if self.group_thresholds.get(g).is_some_and(|t| me >= *t) {
                return Err(DescriptorError::GroupFull(group_kind(g)));
            }
        }
        let size = descriptor.signed.descriptor.len();
        for g in &node_groups {
            self.per_group.entry(g.clone()).or_default().insert(me);
        }
        self.ranked.insert(me);
        self.by_hash.insert(hash_of(&descriptor.signed), peer);
        self.bytes += size;
        self.by_peer.insert(
            peer,
            Entry {
                descriptor: Arc::new(descriptor),
                rank,
                groups: node_groups.clone(),
            },
        );
        let mut evicted = Vec::new();
        let mut refused = None;
        for g in &node_groups {
            let Some(cap) = caps.scaled(g, limits.group_factor) else {
                continue;
            };
            while self.per_group.get(g).is_some_and(|m| m.len() > cap) {
                let Some(worst) = self.per_group.get(g).and_then(|m| m.last().copied()) else {
                    break;
                };
                let t = self.group_thresholds.entry(g.clone()).or_insert(worst);
                *t = (*t).min(worst);
                self.remove(&worst.1);
                if worst == me {
                    refused = Some(DescriptorError::GroupFull(group_kind(g)));
                } else {
                    evicted.push(worst.1);
                }
            }
        }
        while self.by_peer.len() > limits.max_descriptors || self.bytes > limits.max_bytes {
            let Some(worst) = self.ranked.last().copied() else {
                break;
            };
            self.threshold = Some(self.threshold.map_or(worst, |t| t.min(worst)));
            self.remove(&worst.1);
            if worst == me {
                refused = Some(DescriptorError::Full);
            } else {
                evicted.push(worst.1);
            }
        }
        self.evicted += evicted.len() as u64;
        match refused {
            Some(e) => {
                // Those it displaced on the way out stay out: their place went to a better one
                // of some group, or the bound is below them all the same.
                Err(e)
            }
            None => Ok(evicted),
        }
    }

    /// The same descriptors ranked by `basis` (the round's previous document came late): a
    /// new store they are taken into again, best newly ranked first, within the same bounds.
    pub(super) fn reranked(
        &self,
        basis: &crate::rank::RankBasis,
        limits: &StoreLimits,
        caps: &GroupCaps,
    ) -> Store {
        let mut entries: Vec<_> = self
            .by_peer
            .values()
            .map(|e| (basis.rank(&e.descriptor.descriptor.identity), e))
            .collect();
        entries.sort_by_key(|(rank, e)| (*rank, e.descriptor.peer_id));
        let mut store = Store {
            evicted: self.evicted,
            ..Store::default()
        };
        for (rank, e) in entries {
            let _ = store.insert(VerifiedDescriptor::clone(&e.descriptor), rank, limits, caps);
        }
        store
    }

    /// Holders displaced by better-ranked newcomers this round.
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }

    fn remove(&mut self, peer: &PeerId) {
        let Some(entry) = self.by_peer.remove(peer) else {
            return;
        };
        let key = (entry.rank, *peer);
        self.ranked.remove(&key);
        for g in &entry.groups {
            if let Some(members) = self.per_group.get_mut(g) {
                members.remove(&key);
                if members.is_empty() {
                    self.per_group.remove(g);
                }
            }
        }
        self.by_hash.remove(&hash_of(&entry.descriptor.signed));
        self.bytes -= entry.descriptor.signed.descriptor.len();
    }

    /// What the store holds in memory, as charged: the signed bytes, their decoded copy, and
    /// [`ENTRY_OVERHEAD_BYTES`] per descriptor.
    pub(super) fn memory_bytes(&self) -> usize {
        2 * self.bytes + self.by_peer.len() * ENTRY_OVERHEAD_BYTES
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use libp2p_identity::Keypair;
    use p2pmix_mix::NodeSecretKey;
    use p2pmix_proto::v1::{EpochKey, NodeDescriptor, Role};
    use proptest::prelude::*;
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    use super::*;
    use crate::{
        descriptor::{sign_descriptor, verify_descriptor},
        params::default_parameters,
        rank::RankBasis,
    };

    /// 40 descriptors of different sizes, a quarter of them in one /24 and a few sharing a
    /// family.
    fn descriptors() -> &'static [VerifiedDescriptor] {
        static ALL: OnceLock<Vec<VerifiedDescriptor>> = OnceLock::new();
        ALL.get_or_init(|| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            (0..40u8)
                .map(|i| {
                    let key = Keypair::ed25519_from_bytes([i + 1; 32]).expect("32 bytes");
                    let net = if i % 4 == 0 { 9 } else { i };
                    let d = NodeDescriptor {
                        epoch: 2,
                        identity: key.public().encode_protobuf(),
                        addresses: vec![format!("/ip4/45.{net}.0.{i}/tcp/1")],
                        role: Role::Mix as i32,
                        sphinx_keys: vec![EpochKey {
                            epoch: 2,
                            sphinx_public_key: NodeSecretKey::random(&mut rng)
                                .public_key()
                                .to_bytes()
                                .to_vec(),
                        }],
                        software_version: "v".repeat(usize::from(i) * 37 % 500),
                        protocol_version: 1,
                        family: if i % 7 == 0 {
                            "f".into()
                        } else {
                            String::new()
                        },
                    };
                    let signed = sign_descriptor(&key, &d).expect("signs");
                    verify_descriptor(&signed, 2, &default_parameters()).expect("valid")
                })
                .collect()
        })
    }

    fn fill(order: &[usize], limits: &StoreLimits) -> BTreeSet<PeerId> {
        let basis = RankBasis::default();
        let caps = GroupCaps::of(&default_parameters());
        let mut store = Store::default();
        for &i in order {
            let d = descriptors()[i].clone();
            let rank = basis.rank(&d.descriptor.identity);
            let _ = store.insert(d, rank, limits, &caps);
            assert!(store.len() <= limits.max_descriptors);
            assert!(store.bytes() <= limits.max_bytes);
        }
        store.by_peer.keys().copied().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever order the same descriptors arrive in, the store ends up holding the same
        /// ones, within its bounds.
        #[test]
        fn the_store_holds_the_same_descriptors_whatever_the_order(
            seed in any::<u64>(),
            max_descriptors in 5usize..40,
            max_bytes in 2_000usize..12_000,
        ) {
            let limits = StoreLimits { max_descriptors, max_bytes, group_factor: 1 };
            let reference: Vec<usize> = (0..40).collect();
            let mut shuffled = reference.clone();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            for i in (1..shuffled.len()).rev() {
                let j = (rand_chacha::rand_core::Rng::next_u64(&mut rng) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            prop_assert_eq!(fill(&reference, &limits), fill(&shuffled, &limits));
        }
    }
}
