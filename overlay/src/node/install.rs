//! What a verified consensus means for this node, as a value: a pure function from the document
//! to what the node installs (the relay's topology for that epoch, where peers listen, whether
//! this node is admitted, and, from the newest document, the limits the relay enforces).
//!
//! Only addresses that pass the admission rules are dialled ([`check_address`]: public, or on a
//! network whose parameters say `test_network` loopback and private too; a supported shape; no
//! `/p2p/` of another peer), so that even a document signed by a faulty majority cannot turn the
//! node into a reflector into its operator's private network.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;
use p2pmix_bootstrap::{VerifiedConsensus, address::check_address, peer_id};
use p2pmix_mix::NodeId;
use p2pmix_proto::v1::{NetworkParameters, Role};

/// The per-client rate limit a relay applies, from the consensus's sending rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientRate {
    /// Packets per second.
    pub rate: f64,
    /// Packets in one burst.
    pub burst: f64,
}

impl ClientRate {
    /// The rate one client may send at: its three Poisson streams (real-or-drop, loop, drop)
    /// with four times headroom, and a burst of two seconds of it (at least 100 packets). A
    /// stream that is off (interval 0) adds nothing, except an unpaced send stream (0), which
    /// sends real packets as they come: it is allowed what a 1 ms stream would send.
    pub fn from_parameters(p: &NetworkParameters) -> Self {
        let per_second = |interval_us: u64| match interval_us {
            0 => 0.0,
            us => 1e6 / us as f64,
        };
        let send = match p.client_send_interval_us {
            0 => 1_000.0,
            us => per_second(us),
        };
        let rate = 4.0
            * (send
                + per_second(p.client_loop_interval_us)
                + per_second(p.client_drop_interval_us));
        ClientRate {
            rate,
            burst: (2.0 * rate).max(100.0),
        }
    }
}

/// Limits that follow the newest consensus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayLimits {
    /// The longest per-hop delay accepted.
    pub max_delay: Duration,
    /// Each client's rate.
    pub client_rate: ClientRate,
}

impl RelayLimits {
    /// The limits of `parameters`.
    pub fn from_parameters(parameters: &NetworkParameters) -> Self {
        RelayLimits {
            max_delay: Duration::from_micros(parameters.max_delay_us),
            client_rate: ClientRate::from_parameters(parameters),
        }
    }
}

/// What the node installs for one epoch's consensus.
#[derive(Debug, Clone, PartialEq)]
pub struct Installation {
    /// The consensus's epoch.
    pub epoch: u64,
    /// Node id -> peer, for the relay to resolve next hops of packets built for this epoch.
    pub topology: HashMap<NodeId, PeerId>,
    /// Where the other nodes listen, for dialling next hops.
    pub addresses: Vec<(PeerId, Multiaddr)>,
    /// This node's layer, if the consensus admits it.
    pub layer: Option<u32>,
    /// Mixes in the consensus.
    pub mixes: usize,
    /// Gateways in the consensus.
    pub gateways: usize,
    /// The mixes of the last layer: the only peers from which a gateway takes deliveries to
    /// its clients.
    pub last_layer: HashSet<PeerId>,
    /// The limits, when this is the newest document held (older ones keep routing packets in
    /// flight but do not set limits).
    pub limits: Option<RelayLimits>,
}

impl Installation {
    /// What `consensus` means for the node `me`; `newest` says whether it is the newest document
    /// held. Nodes whose identity or id does not decode are left out.
    pub fn of(consensus: &VerifiedConsensus, me: &PeerId, newest: bool) -> Self {
        let mut topology = HashMap::new();
        let mut addresses = Vec::new();
        let mut layer = None;
        let test_network = consensus.parameters().test_network;
        for node in consensus.nodes() {
            let (Some(peer), Ok(id)) = (peer_id(node), u16::try_from(node.node_id)) else {
                continue;
            };
            topology.insert(NodeId(id), peer);
            if peer == *me {
                layer = Some(node.layer);
                continue;
            }
            addresses.extend(
                node.addresses
                    .iter()
                    .filter_map(|a| check_address(a, Some(&peer), test_network).ok())
                    .map(|a: Multiaddr| (peer, a)),
            );
        }
        Installation {
            epoch: consensus.epoch(),
            topology,
            addresses,
            layer,
            mixes: consensus
                .nodes()
                .iter()
                .filter(|n| n.role == Role::Mix as i32)
                .count(),
            gateways: consensus.gateways().count(),
            last_layer: consensus
                .layer(consensus.parameters().layers)
                .filter(|n| n.role == Role::Mix as i32)
                .filter_map(peer_id)
                .collect(),
            limits: newest.then(|| RelayLimits::from_parameters(&consensus.parameters())),
        }
    }
}

#[cfg(test)]
mod tests {
    use p2pmix_proto::v1::{Consensus, ConsensusNode, ConsensusSignature, SignedConsensus};

    use super::*;

    /// A consensus of two nodes announcing `addresses`, verified against one authority.
    fn consensus_with(addresses: &[&str], test_network: bool) -> (VerifiedConsensus, PeerId) {
        let authority = libp2p_identity::Keypair::generate_ed25519();
        let node = libp2p_identity::Keypair::generate_ed25519();
        let other = libp2p_identity::Keypair::generate_ed25519();
        let entry = |k: &libp2p_identity::Keypair, id: u32, addrs: Vec<String>| ConsensusNode {
            node_id: id,
            identity: k.public().encode_protobuf(),
            addresses: addrs,
            sphinx_public_key: vec![0; 32],
            ..ConsensusNode::default()
        };
        let c = Consensus {
            epoch: 1,
            valid_after_ms: 0,
            fresh_until_ms: 10,
            valid_until_ms: 20,
            parameters: Some(NetworkParameters {
                test_network,
                ..NetworkParameters::default()
            }),
            nodes: vec![
                entry(&node, 0, addresses.iter().map(|a| a.to_string()).collect()),
                entry(&other, 1, vec!["/ip4/45.0.0.1/tcp/1".into()]),
            ],
            ..Consensus::default()
        };
        let bytes = prost::Message::encode_to_vec(&c);
        let digest = p2pmix_bootstrap::consensus_digest(&bytes);
        let signature: ConsensusSignature =
            p2pmix_bootstrap::sign_consensus(&authority, 1, &digest).unwrap();
        let pinned = p2pmix_bootstrap::PinnedAuthorities::new([authority.public()]);
        let signed = SignedConsensus {
            consensus: bytes,
            signatures: vec![signature],
        };
        let verified =
            p2pmix_bootstrap::verify_signed_consensus(signed, &pinned, 5, None).expect("valid");
        (verified, node.public().to_peer_id())
    }

    #[test]
    fn only_addresses_that_pass_the_rules_are_dialled() {
        let me = PeerId::random();
        let (c, node) = consensus_with(
            &[
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/10.1.1.1/tcp/1",
                "/ip4/46.1.1.1/tcp/1",
                "/unknown",
            ],
            false,
        );
        let dialled: Vec<String> = Installation::of(&c, &me, true)
            .addresses
            .into_iter()
            .filter(|(p, _)| *p == node)
            .map(|(_, a)| a.to_string())
            .collect();
        assert_eq!(dialled, vec!["/ip4/46.1.1.1/tcp/1".to_string()]);
        // On a test network loopback is fine.
        let (c, node) = consensus_with(&["/ip4/127.0.0.1/tcp/1"], true);
        let i = Installation::of(&c, &me, true);
        assert!(i.addresses.iter().any(|(p, _)| *p == node));
    }

    #[test]
    fn the_client_rate_is_four_times_the_three_streams() {
        let p = NetworkParameters {
            client_send_interval_us: 20_000,
            client_loop_interval_us: 100_000,
            client_drop_interval_us: 100_000,
            ..NetworkParameters::default()
        };
        let r = ClientRate::from_parameters(&p);
        assert!((r.rate - 4.0 * (50.0 + 10.0 + 10.0)).abs() < 1e-9);
        assert!((r.burst - 560.0).abs() < 1e-9);
        let slow = ClientRate::from_parameters(&NetworkParameters {
            client_send_interval_us: 1_000_000,
            client_loop_interval_us: 1_000_000,
            client_drop_interval_us: 1_000_000,
            ..NetworkParameters::default()
        });
        assert_eq!(slow.burst, 100.0, "at least 100 packets of burst");
        // Cover off: a stream of interval 0 adds nothing (it used to count as a million a
        // second), an unpaced send stream what a 1 ms one would.
        let off = ClientRate::from_parameters(&NetworkParameters {
            client_send_interval_us: 20_000,
            client_loop_interval_us: 0,
            client_drop_interval_us: 0,
            ..NetworkParameters::default()
        });
        assert!((off.rate - 4.0 * 50.0).abs() < 1e-9);
        let unpaced = ClientRate::from_parameters(&NetworkParameters::default());
        assert!((unpaced.rate - 4.0 * 1_000.0).abs() < 1e-9);
    }
}
