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
    /// peers it displaced, or why it is refused (nothing changes then).
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
        let size = descriptor.signed.descriptor.len();
        let node_groups = groups(&descriptor.descriptor.addresses, &descriptor.descriptor.family);
        // Plan first, change nothing until the descriptor is known to fit.
        let mut evict: BTreeSet<(Rank, PeerId)> = BTreeSet::new();
        for g in &node_groups {
            let Some(cap) = caps.scaled(g, limits.group_factor) else {
                continue;
            };
            let Some(members) = self.per_group.get(g) else {
                continue;
            };
            let staying = members.iter().filter(|m| !evict.contains(m)).count();
            if staying >= cap {
                match members.iter().rev().find(|m| !evict.contains(m)) {
                    Some(worst) if me < *worst => {
                        evict.insert(*worst);
                    }
                    _ => return Err(DescriptorError::GroupFull(group_kind(g))),
                }
            }
        }
        let mut count = self.by_peer.len() - evict.len();
        let mut bytes = self.bytes
            - evict
                .iter()
                .filter_map(|(_, p)| self.by_peer.get(p))
                .map(|e| e.descriptor.signed.descriptor.len())
                .sum::<usize>();
        let mut worst = self.ranked.iter().rev();
        while count + 1 > limits.max_descriptors || bytes + size > limits.max_bytes {
            match worst.find(|m| !evict.contains(m)) {
                Some(w) if me < *w => {
                    count -= 1;
                    bytes -= self
                        .by_peer
                        .get(&w.1)
                        .map_or(0, |e| e.descriptor.signed.descriptor.len());
                    evict.insert(*w);
                }
                _ => return Err(DescriptorError::Full),
            }
        }
        let evicted: Vec<PeerId> = evict.iter().map(|(_, p)| *p).collect();
        for p in &evicted {
            self.remove(p);
        }
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
                groups: node_groups,
            },
        );
        Ok(evicted)
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
