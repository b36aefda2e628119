//! The pinned set of directory authority keys: the root of trust every node and client ships with.

use libp2p_identity::{PeerId, PublicKey};

/// The authority keys a holder trusts, and the threshold `floor(N/2) + 1` of them that must agree.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedAuthorities {
    /// (protobuf encoding, key), sorted by encoding, unique.
    keys: Vec<(Vec<u8>, PublicKey)>,
}

impl PinnedAuthorities {
    /// Pins `keys` (duplicates collapse into one).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut keys: Vec<(Vec<u8>, PublicKey)> =
            keys.into_iter().map(|k| (k.encode_protobuf(), k)).collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        PinnedAuthorities { keys }
    }

    /// How many authorities are pinned.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none are pinned (then nothing ever verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signatures or votes needed: more than half of the pinned keys.
    pub fn threshold(&self) -> usize {
        self.keys.len() / 2 + 1
    }

    /// The key with this protobuf encoding, if pinned.
    pub fn get(&self, encoded: &[u8]) -> Option<&PublicKey> {
        self.keys
            .binary_search_by(|(e, _)| e.as_slice().cmp(encoded))
            .ok()
            .and_then(|i| self.keys.get(i))
            .map(|(_, k)| k)
    }

    /// Whether `peer` is one of the authorities.
    pub fn contains_peer(&self, peer: &PeerId) -> bool {
        self.keys.iter().any(|(_, k)| &k.to_peer_id() == peer)
    }

    /// The pinned keys, sorted by encoding.
    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().map(|(_, k)| k)
    }
}
