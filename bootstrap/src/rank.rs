//! The order in which candidates win when there are more than room: in an authority's store for
//! the round, in its vote, and under the admission caps of the consensus. Every honest authority
//! holding the same candidates keeps the same ones, whatever order they arrived in.
//!
//! The rule (docs/consensus.md, "Admission"): nodes of the previous consensus first (they were
//! reached and admitted before; a fresh identity costs nothing, a place in the last document
//! does), then by `BLAKE3-keyed(previous shared random value; identity)`, lowest first. A later
//! measurement score (issue 13) goes between the two.

use std::collections::BTreeSet;

use p2pmix_proto::v1::Consensus;

/// Where a candidate stands: lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// Not a node of the previous consensus.
    newcomer: bool,
    /// The keyed hash of its identity.
    hash: [u8; 32],
}

/// What ranking needs of the previous consensus: who was in it, and its shared random value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RankBasis {
    members: BTreeSet<Vec<u8>>,
    key: [u8; 32],
}

impl RankBasis {
    /// The basis of a round whose previous consensus is `previous` (`None`: every node is a
    /// newcomer and the key is fixed).
    pub fn new(previous: Option<&Consensus>) -> Self {
        match previous {
            Some(c) => RankBasis {
                members: c.nodes.iter().map(|n| n.identity.clone()).collect(),
                key: <[u8; 32]>::try_from(c.shared_random.as_slice()).unwrap_or([0; 32]),
            },
            None => RankBasis::default(),
        }
    }

    /// The rank of the node with this identity encoding.
    pub fn rank(&self, identity: &[u8]) -> Rank {
        Rank {
            newcomer: !self.members.contains(identity),
            hash: *blake3::keyed_hash(&self.key, identity).as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use p2pmix_proto::v1::ConsensusNode;

    use super::*;

    #[test]
    fn members_of_the_previous_consensus_come_first() {
        let previous = Consensus {
            nodes: vec![ConsensusNode {
                identity: b"old".to_vec(),
                ..ConsensusNode::default()
            }],
            shared_random: vec![7; 32],
            ..Consensus::default()
        };
        let basis = RankBasis::new(Some(&previous));
        for fresh in [&b"a"[..], b"b", b"zzz", b"new"] {
            assert!(basis.rank(b"old") < basis.rank(fresh));
        }
        // Without a previous document everyone is a newcomer, ordered by the hash.
        let none = RankBasis::new(None);
        assert_ne!(none.rank(b"a"), none.rank(b"b"));
    }
}
