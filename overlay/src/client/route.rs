//! Routes for one packet, chosen from the verified consensus: the sender's gateway, one mix per
//! layer, the recipient's gateway. No two hops share an operator family or an IPv4 /16 (unless
//! the policy says otherwise), so one operator or one network cannot see both ends of a route;
//! every mix hop holds the packet for an exponential delay with the consensus mean. Pure
//! functions over the consensus and a random source: no sockets, no clock.

use std::{net::Ipv4Addr, time::Duration};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use p2pmix_bootstrap::{VerifiedConsensus, mean_delay, peer_id, sphinx_key};
use p2pmix_mix::{Delay, Hop, NodeId, NodePublicKey, sample_exponential};
use p2pmix_proto::v1::{ConsensusNode, Role};
use rand::{CryptoRng, RngExt};
use thiserror::Error;

/// Why no route could be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The gateway is not a gateway of this consensus.
    #[error("{0} is not a gateway of the consensus")]
    UnknownGateway(PeerId),
    /// The node is not in this consensus.
    #[error("{0} is not in the consensus")]
    UnknownNode(PeerId),
    /// A layer has no mix at all.
    #[error("layer {0} has no mix")]
    EmptyLayer(u32),
    /// Every mix of a layer shares a family or a /16 with another hop of the route.
    #[error("no mix in layer {0} is independent of the other hops")]
    NoIndependentMix(u32),
    /// Every gateway shares a family or a /16 with another hop of a node's loop.
    #[error("no gateway is independent of the other hops")]
    NoIndependentGateway,
}

/// Which independence rules routes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    /// No two hops of one operator family (nodes that name none are their own family).
    pub distinct_families: bool,
    /// No two hops in one IPv4 /16 (loopback addresses belong to no /16: local testnets).
    pub distinct_subnets: bool,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            distinct_families: true,
            distinct_subnets: true,
        }
    }
}

/// One node as routes use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteNode {
    /// Its id in the consensus (the header's next-hop field).
    pub id: NodeId,
    /// Its libp2p identity.
    pub peer: PeerId,
    /// Its Sphinx key for the consensus epoch.
    pub key: NodePublicKey,
    family: String,
    subnets: Vec<[u8; 2]>,
}

impl RouteNode {
    /// A node from its parts (simulations, custom directories); `addresses` give its /16s.
    pub fn new(
        id: NodeId,
        peer: PeerId,
        key: NodePublicKey,
        family: impl Into<String>,
        addresses: &[Multiaddr],
    ) -> Self {
        RouteNode {
            id,
            peer,
            key,
            family: family.into(),
            subnets: addresses.iter().filter_map(subnet).collect(),
        }
    }

    fn from_consensus(node: &ConsensusNode) -> Option<Self> {
        Some(RouteNode {
            id: NodeId(u16::try_from(node.node_id).ok()?),
            peer: peer_id(node)?,
            key: sphinx_key(node)?,
            family: node.family.clone(),
            subnets: node
                .addresses
                .iter()
                .filter_map(|a| subnet(&a.parse().ok()?))
                .collect(),
        })
    }

    fn conflicts(&self, other: &RouteNode, policy: &RoutePolicy) -> bool {
        if self.peer == other.peer {
            return true;
        }
        let family =
            policy.distinct_families && !self.family.is_empty() && self.family == other.family;
        let subnet =
            policy.distinct_subnets && self.subnets.iter().any(|s| other.subnets.contains(s));
        family || subnet
    }
}

/// The /16 of an address's first IPv4 component, unless it is loopback, private or link-local
/// (those say nothing about who runs the network the node is in).
fn subnet(addr: &Multiaddr) -> Option<[u8; 2]> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) if !ip.is_loopback() && !ip.is_private() && !ip.is_link_local() => {
            Some(first_two(ip))
        }
        _ => None,
    })
}

fn first_two(ip: Ipv4Addr) -> [u8; 2] {
    let o = ip.octets();
    [o[0], o[1]]
}

/// The routable part of one consensus: gateways and layers with decoded keys.
#[derive(Debug, Clone)]
pub struct Topology {
    epoch: u64,
    mean_delay: Duration,
    gateways: Vec<RouteNode>,
    layers: Vec<Vec<RouteNode>>,
}

impl Topology {
    /// A topology from its parts (simulations, custom directories).
    pub fn new(
        epoch: u64,
        mean_delay: Duration,
        gateways: Vec<RouteNode>,
        layers: Vec<Vec<RouteNode>>,
    ) -> Self {
        Topology {
            epoch,
            mean_delay,
            gateways,
            layers,
        }
    }

    /// Decodes the gateways and mixes of `consensus` (a node whose key does not decode is left
    /// out rather than failing the whole document).
    pub fn from_consensus(consensus: &VerifiedConsensus) -> Self {
        let parameters = consensus.parameters();
        let layers = (1..=parameters.layers)
            .map(|l| {
                consensus
                    .layer(l)
                    .filter(|n| n.role == Role::Mix as i32)
                    .filter_map(RouteNode::from_consensus)
                    .collect()
            })
            .collect();
        Topology {
            epoch: consensus.epoch(),
            mean_delay: mean_delay(&parameters),
            gateways: consensus
                .gateways()
                .filter_map(RouteNode::from_consensus)
                .collect(),
            layers,
        }
    }

    /// The consensus epoch (whose keys build the packets).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Mean per-hop delay of the consensus.
    pub fn mean_delay(&self) -> Duration {
        self.mean_delay
    }

    /// The gateways.
    pub fn gateways(&self) -> &[RouteNode] {
        &self.gateways
    }

    /// The gateway or mix with this peer id.
    pub fn node(&self, peer: &PeerId) -> Option<&RouteNode> {
        self.gateways
            .iter()
            .chain(self.layers.iter().flatten())
            .find(|n| n.peer == *peer)
    }

    /// The gateway or mix with this node id.
    pub fn by_id(&self, id: NodeId) -> Option<&RouteNode> {
        self.gateways
            .iter()
            .chain(self.layers.iter().flatten())
            .find(|n| n.id == id)
    }

    /// The gateway with this peer id.
    pub fn gateway(&self, peer: &PeerId) -> Option<&RouteNode> {
        self.gateways.iter().find(|g| g.peer == *peer)
    }

    /// Mixes of layer `l` (1-based).
    pub fn layer(&self, l: u32) -> &[RouteNode] {
        l.checked_sub(1)
            .and_then(|i| self.layers.get(i as usize))
            .map_or(&[], Vec::as_slice)
    }

    /// Number of mix layers.
    pub fn layers(&self) -> u32 {
        self.layers.len() as u32
    }
}

/// One mix per layer, each independent of the `chosen` nodes and of each other, with an
/// exponential delay (the consensus mean) each.
fn choose_mixes<'a, R: CryptoRng + ?Sized>(
    topology: &'a Topology,
    mut chosen: Vec<&'a RouteNode>,
    policy: &RoutePolicy,
    avoid: &dyn Fn(NodeId) -> bool,
    rng: &mut R,
) -> Result<Vec<Hop>, RouteError> {
    let mut hops = Vec::new();
    for l in 1..=topology.layers() {
        let mix = choose_mix(topology, l, &chosen, policy, avoid, rng)?;
        chosen.push(mix);
        hops.push(held_at(mix, topology, rng));
    }
    Ok(hops)
}

/// A hop at `mix` with an exponential hold (the consensus mean).
fn held_at<R: CryptoRng + ?Sized>(mix: &RouteNode, topology: &Topology, rng: &mut R) -> Hop {
    Hop {
        node: mix.id,
        key: mix.key,
        delay: sample_exponential(topology.mean_delay, rng),
    }
}

/// One mix of layer `l`, independent of the `chosen` nodes, preferring those `avoid` is false
/// for.
fn choose_mix<'a, R: CryptoRng + ?Sized>(
    topology: &'a Topology,
    l: u32,
    chosen: &[&RouteNode],
    policy: &RoutePolicy,
    avoid: &dyn Fn(NodeId) -> bool,
    rng: &mut R,
) -> Result<&'a RouteNode, RouteError> {
    let layer = topology.layer(l);
    if layer.is_empty() {
        return Err(RouteError::EmptyLayer(l));
    }
    let mut candidates: Vec<&RouteNode> = layer
        .iter()
        .filter(|m| !chosen.iter().any(|c| m.conflicts(c, policy)))
        .collect();
    if candidates.is_empty() {
        return Err(RouteError::NoIndependentMix(l));
    }
    if candidates.iter().any(|m| !avoid(m.id)) {
        candidates.retain(|m| !avoid(m.id));
    }
    Ok(candidates[rng.random_range(0..candidates.len())])
}

/// A node's loop-cover route, shaped so that every hop sees what client traffic shows it: from
/// the node's own layer `L` onwards through one mix of each later layer, out through a gateway
/// (as a layer-3 mix sends), back in through layer 1 (as a gateway sends) and up to layer `L-1`,
/// then to `me` with no delay. So `me`'s first hop gets the packet from a mix of the layer
/// before its own (a gateway for `me` in the last layer), and its last hop sends to a mix of the
/// next layer (a gateway sends to layer 1), as for anyone's packets. A gateway's loop is one
/// mix per layer and back. Every node on the route is independent of `me` and of each other
/// (family, /16). The gateway in the middle of a mix's loop sees a packet come from layer 3 and
/// go on to layer 1, which client traffic never does (as in Loopix): it learns that this is a
/// mix's loop, not whose, unless `me` is in layer 1, when `me` is its next hop.
pub fn choose_loop<R: CryptoRng + ?Sized>(
    topology: &Topology,
    me: &PeerId,
    policy: &RoutePolicy,
    rng: &mut R,
) -> Result<Vec<Hop>, RouteError> {
    let node = topology.node(me).ok_or(RouteError::UnknownNode(*me))?;
    let own = (1..=topology.layers()).find(|&l| topology.layer(l).iter().any(|m| m.peer == *me));
    let mut chosen = vec![node];
    let Some(own) = own else {
        // A gateway: one mix per layer and back.
        let mut hops = choose_mixes(topology, chosen, policy, &|_| false, rng)?;
        hops.push(Hop {
            node: node.id,
            key: node.key,
            delay: Delay::ZERO,
        });
        return Ok(hops);
    };
    let mut hops = Vec::new();
    for l in own + 1..=topology.layers() {
        let mix = choose_mix(topology, l, &chosen, policy, &|_| false, rng)?;
        chosen.push(mix);
        hops.push(held_at(mix, topology, rng));
    }
    let gateways: Vec<&RouteNode> = topology
        .gateways()
        .iter()
        .filter(|g| !chosen.iter().any(|c| g.conflicts(c, policy)))
        .collect();
    if gateways.is_empty() {
        return Err(RouteError::NoIndependentGateway);
    }
    let gateway = gateways[rng.random_range(0..gateways.len())];
    chosen.push(gateway);
    hops.push(Hop {
        node: gateway.id,
        key: gateway.key,
        delay: Delay::ZERO,
    });
    for l in 1..own {
        let mix = choose_mix(topology, l, &chosen, policy, &|_| false, rng)?;
        chosen.push(mix);
        hops.push(held_at(mix, topology, rng));
    }
    hops.push(Hop {
        node: node.id,
        key: node.key,
        delay: Delay::ZERO,
    });
    Ok(hops)
}

/// A route from gateway `entry` through one mix per layer to gateway `exit`, with an exponential
/// delay (the consensus mean) at every mix and none at the gateways.
pub fn choose_route<R: CryptoRng + ?Sized>(
    topology: &Topology,
    entry: &PeerId,
    exit: &PeerId,
    policy: &RoutePolicy,
    rng: &mut R,
) -> Result<Vec<Hop>, RouteError> {
    choose_route_avoiding(topology, entry, exit, policy, &|_| false, rng)
}

/// [`choose_route`], preferring mixes for which `avoid` is false (mixes the client suspects of
/// being down); a layer whose every independent mix is avoided still gets one of them.
pub fn choose_route_avoiding<R: CryptoRng + ?Sized>(
    topology: &Topology,
    entry: &PeerId,
    exit: &PeerId,
    policy: &RoutePolicy,
    avoid: &dyn Fn(NodeId) -> bool,
    rng: &mut R,
) -> Result<Vec<Hop>, RouteError> {
    let entry = topology
        .gateway(entry)
        .ok_or(RouteError::UnknownGateway(*entry))?;
    let exit = topology
        .gateway(exit)
        .ok_or(RouteError::UnknownGateway(*exit))?;
    // The two gateways may be one node (sender and recipient share it); that is allowed.
    let mut hops = vec![Hop {
        node: entry.id,
        key: entry.key,
        delay: Delay::ZERO,
    }];
    hops.extend(choose_mixes(
        topology,
        vec![entry, exit],
        policy,
        avoid,
        rng,
    )?);
    hops.push(Hop {
        node: exit.id,
        key: exit.key,
        delay: Delay::ZERO,
    });
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pmix_mix::NodeSecretKey;

    fn node(id: u16, family: &str, ip: [u8; 4]) -> RouteNode {
        let key = NodeSecretKey::random(&mut rand::rng()).public_key();
        RouteNode {
            id: NodeId(id),
            peer: PeerId::random(),
            key,
            family: family.into(),
            subnets: subnet(
                &format!("/ip4/{}.{}.{}.{}/tcp/1", ip[0], ip[1], ip[2], ip[3])
                    .parse()
                    .unwrap(),
            )
            .into_iter()
            .collect(),
        }
    }

    fn topology(layers: Vec<Vec<RouteNode>>) -> Topology {
        Topology {
            epoch: 3,
            mean_delay: Duration::from_millis(50),
            gateways: vec![node(0, "gw", [20, 0, 0, 1]), node(1, "gw2", [21, 1, 0, 1])],
            layers,
        }
    }

    #[test]
    fn routes_avoid_shared_families_and_subnets() {
        let t = topology(vec![
            vec![node(2, "gw", [11, 0, 0, 1]), node(3, "a", [12, 0, 0, 1])],
            vec![
                node(4, "b", [20, 0, 9, 9]),
                node(5, "a", [13, 0, 0, 1]),
                node(6, "c", [14, 0, 0, 1]),
            ],
            vec![node(7, "", [15, 0, 0, 1])],
        ]);
        let (entry, exit) = (t.gateways[0].peer, t.gateways[1].peer);
        let mut rng = rand::rng();
        for _ in 0..200 {
            let route = choose_route(&t, &entry, &exit, &RoutePolicy::default(), &mut rng).unwrap();
            let ids: Vec<u16> = route.iter().map(|h| h.node.0).collect();
            // Layer 1: node 2 shares the entry's family. Layer 2: node 4 shares the entry's /16,
            // node 5 the family of node 3.
            assert_eq!(ids, vec![0, 3, 6, 7, 1]);
            assert_eq!(route[0].delay, Delay::ZERO);
            assert_eq!(route[4].delay, Delay::ZERO);
        }
        let loose = RoutePolicy {
            distinct_families: false,
            distinct_subnets: false,
        };
        let seen: std::collections::HashSet<u16> = (0..200)
            .map(|_| {
                choose_route(&t, &entry, &exit, &loose, &mut rng).unwrap()[2]
                    .node
                    .0
            })
            .collect();
        assert_eq!(seen.len(), 3, "without the rules every layer-2 mix is used");
    }

    #[test]
    fn private_and_loopback_addresses_belong_to_no_subnet() {
        for a in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
        ] {
            assert_eq!(subnet(&a.parse().unwrap()), None, "{a}");
        }
        assert_eq!(
            subnet(&"/ip4/198.51.100.7/tcp/1".parse().unwrap()),
            Some([198, 51])
        );
    }

    #[test]
    fn impossible_routes_are_clear_errors() {
        let t = topology(vec![vec![node(2, "gw", [11, 0, 0, 1])], vec![]]);
        let (entry, exit) = (t.gateways[0].peer, t.gateways[1].peer);
        let mut rng = rand::rng();
        let policy = RoutePolicy::default();
        assert_eq!(
            choose_route(&t, &entry, &exit, &policy, &mut rng),
            Err(RouteError::NoIndependentMix(1))
        );
        let stranger = PeerId::random();
        assert_eq!(
            choose_route(&t, &stranger, &exit, &policy, &mut rng),
            Err(RouteError::UnknownGateway(stranger))
        );
        let t = topology(vec![vec![node(2, "x", [11, 0, 0, 1])], vec![]]);
        let (entry, exit) = (t.gateways[0].peer, t.gateways[1].peer);
        assert_eq!(
            choose_route(&t, &entry, &exit, &policy, &mut rng),
            Err(RouteError::EmptyLayer(2))
        );
    }

    #[test]
    fn loopback_nodes_share_no_subnet_and_one_gateway_may_be_both_ends() {
        let mut t = topology(vec![vec![node(2, "", [127, 0, 0, 1])]]);
        t.gateways[0].subnets.clear();
        let entry = t.gateways[0].peer;
        let route = choose_route(
            &t,
            &entry,
            &entry,
            &RoutePolicy::default(),
            &mut rand::rng(),
        )
        .unwrap();
        assert_eq!(route.len(), 3);
    }

    #[test]
    fn mix_delays_are_exponential_with_the_consensus_mean() {
        let t = topology(vec![vec![node(2, "", [11, 0, 0, 1])]]);
        let (entry, exit) = (t.gateways[0].peer, t.gateways[1].peer);
        let mut rng = rand::rng();
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| {
                choose_route(&t, &entry, &exit, &RoutePolicy::default(), &mut rng).unwrap()[1]
                    .delay
                    .as_duration()
                    .as_secs_f64()
            })
            .sum();
        let mean = total / n as f64;
        // Standard error of the mean is 50 ms / sqrt(20 000) = 0.35 ms; allow 6 of them.
        assert!((mean - 0.050).abs() < 0.0021, "mean {mean}");
    }

    #[test]
    fn loop_routes_cross_every_layer_and_end_at_the_node() {
        let t = topology(vec![
            vec![node(2, "a", [11, 0, 0, 1]), node(3, "b", [12, 0, 0, 1])],
            vec![node(4, "c", [13, 0, 0, 1]), node(5, "d", [14, 0, 0, 1])],
        ]);
        let me = t.layers[1][0].clone();
        for _ in 0..50 {
            let route =
                choose_loop(&t, &me.peer, &RoutePolicy::default(), &mut rand::rng()).unwrap();
            let ids: Vec<u16> = route.iter().map(|h| h.node.0).collect();
            // Out through a gateway (no later layer), in through layer 1, back home.
            assert_eq!(ids.len(), 3);
            assert!([0, 1].contains(&ids[0]));
            assert!([2, 3].contains(&ids[1]));
            assert_eq!(ids[2], 4);
            assert_eq!(route[0].delay, Delay::ZERO, "no hold at the gateway");
            assert_eq!(route[2].delay, Delay::ZERO);
        }
        assert!(matches!(
            choose_loop(
                &t,
                &PeerId::random(),
                &RoutePolicy::default(),
                &mut rand::rng()
            ),
            Err(RouteError::UnknownNode(_))
        ));
    }

    /// The layer a node id is in (0: a gateway).
    fn layer_of(t: &Topology, id: NodeId) -> u32 {
        (1..=t.layers())
            .find(|&l| t.layer(l).iter().any(|m| m.id == id))
            .unwrap_or(0)
    }

    /// What each mix on a route sees of it: the layer the packet came from, its own and the
    /// layer it goes to (0: a gateway), for every mix hop but the last, with `from` as the
    /// sender of the first.
    fn seen_by_mixes(t: &Topology, from: NodeId, route: &[Hop]) -> Vec<(u32, u32, u32)> {
        let mut ids = vec![from];
        ids.extend(route.iter().map(|h| h.node));
        ids.windows(3)
            .map(|w| (layer_of(t, w[0]), layer_of(t, w[1]), layer_of(t, w[2])))
            .filter(|(_, at, _)| *at != 0)
            .collect()
    }

    /// A node's loop looks like client traffic to every mix on it, its first and last hops
    /// included: each sees the packet come from the layer before its own (a gateway before
    /// layer 1) and go to the layer after (a gateway after the last). The loops of the first
    /// round went from any node straight into layer 1 and from layer 3 straight back to the
    /// node, which client traffic never does: a layer-1 mix receiving from a layer-2 mix, say,
    /// knew it held that mix's loop.
    #[test]
    fn every_mix_on_a_nodes_loop_sees_what_client_traffic_shows_it() {
        let t = topology(vec![
            vec![node(2, "a", [11, 0, 0, 1]), node(3, "b", [12, 0, 0, 1])],
            vec![node(4, "c", [13, 0, 0, 1]), node(5, "d", [14, 0, 0, 1])],
            vec![node(6, "e", [15, 0, 0, 1]), node(7, "f", [16, 0, 0, 1])],
        ]);
        let client_view = |(from, at, to): (u32, u32, u32)| {
            let before = if at == 1 { 0 } else { at - 1 };
            let after = if at == t.layers() { 0 } else { at + 1 };
            from == before && to == after
        };
        let mut rng = rand::rng();
        // Client routes, for the check itself.
        for _ in 0..20 {
            let g = &t.gateways[0];
            let route = choose_route(
                &t,
                &g.peer,
                &t.gateways[1].peer,
                &RoutePolicy::default(),
                &mut rng,
            )
            .unwrap();
            assert!(seen_by_mixes(&t, g.id, &route).into_iter().all(client_view));
        }
        let nodes: Vec<RouteNode> = t
            .layers
            .iter()
            .flatten()
            .chain(&t.gateways)
            .cloned()
            .collect();
        for me in &nodes {
            for _ in 0..20 {
                let route = choose_loop(&t, &me.peer, &RoutePolicy::default(), &mut rng).unwrap();
                assert_eq!(route.last().map(|h| h.node), Some(me.id), "it comes back");
                // Every hop but `me` at both ends, gateways left out (see `choose_loop`).
                let seen = seen_by_mixes(&t, me.id, &route);
                assert!(!seen.is_empty());
                for view in seen {
                    assert!(
                        client_view(view),
                        "node {} (layer {}): a mix saw {view:?} on {:?}",
                        me.id.0,
                        layer_of(&t, me.id),
                        route.iter().map(|h| h.node.0).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
