//! What a verified consensus means for this node, as a value: a pure function from the document
//! to what the node installs (the relay's topology for that epoch, where peers listen, whether
//! this node is admitted, and, from the newest document, the limits the relay enforces).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use libp2p::{Multiaddr, PeerId};
use p2pmix_bootstrap::{VerifiedConsensus, peer_id};
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
    /// with four times headroom, and a burst of two seconds of it (at least 100 packets).
    pub fn from_parameters(p: &NetworkParameters) -> Self {
        let per_second = |interval_us: u64| 1e6 / (interval_us.max(1) as f64);
        let rate = 4.0
            * (per_second(p.client_send_interval_us)
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
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .map(|a| (peer, a)),
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
    use super::*;

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
    }
}
