//! The measurer, sans-IO: a Poisson stream of probes through the consensus in force, the record
//! of what came back, and per-node reports over a sliding window.
//!
//! The driver installs the network of the consensus in force ([`Measurer::set_network`]), says
//! at which gateways the measurer has asked to register its mailbox ([`Measurer::set_gateway_ready`]:
//! probes go only through those, so that none is sent before its return could be taken; a
//! gateway that then refuses or fails stays probed and its lost returns count against it), sends what [`Measurer::poll_transmit`] gives it to the named gateway, hands
//! back what that gateway's mailbox returns ([`Measurer::handle_delivery`]) and asks for
//! [`Measurer::report`] when the authority votes. Time and randomness are passed in.
//!
//! A node that leaves the topology and comes back later starts afresh: its earlier probes are
//! kept for what they say of the other nodes, but no longer count for it (it was left out for
//! them once already).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use libp2p_identity::PeerId;
use p2pmix_bootstrap::{VerifiedConsensus, peer_id};
use p2pmix_mix::{
    ClientId, Destination, Geometry, Label, NodeId, build_cover_packet, sample_exponential,
};
use p2pmix_proto::v1::{NetworkParameters, NodeMeasurement};
use rand::CryptoRng;

use super::score::{NodeScore, Outcome, score};
use crate::client::{RoutePolicy, Topology, choose_route};

/// How long the stream waits before looking again when it has nowhere to send.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// How far the stream may fall behind before missed probes are skipped rather than sent in a
/// burst (a burst is a pattern no client's Poisson stream makes).
const MAX_LAG: Duration = Duration::from_secs(1);
/// Most probes remembered (the window's memory bound: about 100 bytes each).
pub const MAX_PROBES: usize = 1 << 20;

/// How a measurer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureConfig {
    /// Probes per epoch through each node (through each mix of the largest layer, or each
    /// gateway if there are more gateways than that).
    pub probes_per_node: u32,
    /// Probes a node needs in the window before it is reported.
    pub min_probes: u32,
    /// The epoch length.
    pub epoch: Duration,
    /// How far back reports look (two epochs).
    pub window: Duration,
    /// A probe not back this long after the delays its headers asked is lost.
    pub loss_timeout: Duration,
    /// Route independence rules (those of clients).
    pub policy: RoutePolicy,
}

impl MeasureConfig {
    /// The measurement a network's parameters ask for with epochs of `period_ms`; `None` when
    /// it measures nothing (`health_probes_per_node` is 0).
    pub fn from_parameters(parameters: &NetworkParameters, period_ms: u64) -> Option<Self> {
        if parameters.health_probes_per_node == 0 {
            return None;
        }
        let epoch = Duration::from_millis(period_ms.max(1));
        Some(MeasureConfig {
            probes_per_node: parameters.health_probes_per_node,
            min_probes: parameters.health_min_probes,
            epoch,
            window: epoch * 2,
            loss_timeout: (epoch / 8).clamp(Duration::from_secs(2), Duration::from_secs(20)),
            policy: RoutePolicy::default(),
        })
    }
}

/// Counters of a measurer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeasureStats {
    /// Probes sent.
    pub sent: u64,
    /// Probes that came back in time.
    pub returned: u64,
    /// Probes that came back after their loss timeout (counted as lost).
    pub late: u64,
    /// Deliveries whose label was no probe under way (forgotten, duplicated or forged).
    pub unknown: u64,
    /// Ticks of the stream that sent nothing (no route could be built).
    pub unroutable: u64,
}

/// The network a measurer probes: the routable topology and who each node is.
#[derive(Debug, Clone)]
pub struct MeasuredNetwork {
    topology: Topology,
    /// Identity encoding (as in descriptors and votes) and layer (0: gateway) by peer.
    nodes: HashMap<PeerId, (Vec<u8>, u32)>,
}

impl MeasuredNetwork {
    /// The network of a verified consensus.
    pub fn from_consensus(consensus: &VerifiedConsensus) -> Self {
        let nodes = consensus
            .nodes()
            .iter()
            .filter_map(|n| Some((peer_id(n)?, (n.identity.clone(), n.layer))))
            .collect();
        MeasuredNetwork {
            topology: Topology::from_consensus(consensus),
            nodes,
        }
    }

    /// A network from its parts (simulations): each node is known by its peer id's bytes.
    pub fn new(topology: Topology) -> Self {
        let mut nodes = HashMap::new();
        for g in topology.gateways() {
            nodes.insert(g.peer, (g.peer.to_bytes(), 0));
        }
        for l in 1..=topology.layers() {
            for m in topology.layer(l) {
                nodes.insert(m.peer, (m.peer.to_bytes(), l));
            }
        }
        MeasuredNetwork { topology, nodes }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Probes per epoch for `probes_per_node` through each node: enough for the largest layer
    /// (or the gateways, when there are more of them).
    fn probes_per_epoch(&self, probes_per_node: u32) -> u64 {
        let widest = (1..=self.topology.layers())
            .map(|l| self.topology.layer(l).len())
            .chain([self.topology.gateways().len()])
            .max()
            .unwrap_or(0);
        u64::from(probes_per_node) * widest as u64
    }
}

/// One node's report, for the authority's vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub peer: PeerId,
    /// Its identity encoding.
    pub identity: Vec<u8>,
    /// Probes through it whose fate is known (in the window).
    pub probes: u32,
    /// Of those, the ones that came back in time.
    pub returned: u32,
    /// Delivery relative to the upper quartile of its layer, per mille (the upper confidence
    /// bound; the worse of the whole window and its recent half).
    pub delivery_permille: u32,
    /// 90th percentile of the delay it added, milliseconds (the worse of the whole window and
    /// its recent half).
    pub delay_p90_ms: u32,
}

impl NodeReport {
    /// The vote's form of `reports`: sorted by identity.
    pub fn to_measurements(reports: &[NodeReport]) -> Vec<NodeMeasurement> {
        let mut out: Vec<NodeMeasurement> = reports
            .iter()
            .map(|r| NodeMeasurement {
                identity: r.identity.clone(),
                probes: r.probes,
                delivery_permille: r.delivery_permille,
                delay_p90_ms: r.delay_p90_ms,
            })
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out.dedup_by(|a, b| a.identity == b.identity);
        out
    }
}

/// One probe sent.
#[derive(Debug)]
struct Probe {
    sent: Instant,
    /// When it would be back if no hop added anything: sent + the delays its headers ask.
    due: Instant,
    /// Its nodes (indices into the node table), each once.
    route: Box<[u32]>,
    label: Label,
    back: Option<Instant>,
}

/// Who each node index is, and which indices the current network uses.
#[derive(Debug, Default)]
struct NodeTable {
    /// Identity and peer by index.
    nodes: Vec<(Vec<u8>, PeerId)>,
    /// The index each identity has now, and its layer while it is in the network.
    current: HashMap<Vec<u8>, u32>,
    layers: Vec<Option<u32>>,
    /// Index by the node id of the network in force.
    by_id: HashMap<NodeId, u32>,
}

impl NodeTable {
    /// Switches to `network`: nodes that stay keep their index, nodes that come (back) get a
    /// fresh one, nodes that went keep theirs without a layer.
    fn install(&mut self, network: &MeasuredNetwork) {
        let mut layers = vec![None; self.nodes.len()];
        self.by_id.clear();
        let topology = &network.topology;
        let all = topology
            .gateways()
            .iter()
            .chain((1..=topology.layers()).flat_map(|l| topology.layer(l)));
        for node in all {
            let Some((identity, layer)) = network.nodes.get(&node.peer) else {
                continue;
            };
            let stays = self
                .current
                .get(identity)
                .copied()
                .filter(|&i| self.layers.get(i as usize).copied().flatten().is_some());
            let index = match stays {
                Some(i) => i,
                None => {
                    let i = self.nodes.len() as u32;
                    self.nodes.push((identity.clone(), node.peer));
                    layers.push(None);
                    self.current.insert(identity.clone(), i);
                    i
                }
            };
            layers[index as usize] = Some(*layer);
            self.by_id.insert(node.id, index);
        }
        self.layers = layers;
    }
}

/// The measurer. See the module documentation.
#[derive(Debug)]
pub struct Measurer {
    config: MeasureConfig,
    me: ClientId,
    /// Time buckets of the delay fit count from here.
    origin: Instant,
    network: Option<(MeasuredNetwork, Duration)>,
    table: NodeTable,
    ready: HashSet<PeerId>,
    next: Instant,
    outgoing: VecDeque<(PeerId, Vec<u8>)>,
    probes: VecDeque<Probe>,
    /// Sequence number of `probes[0]`.
    first_seq: u64,
    in_flight: HashMap<Label, u64>,
    stats: MeasureStats,
}

impl Measurer {
    /// A measurer whose probes come back to the mailbox of client `me`, first due at `now`.
    pub fn new(config: MeasureConfig, me: ClientId, now: Instant) -> Self {
        Measurer {
            config,
            me,
            origin: now,
            network: None,
            table: NodeTable::default(),
            ready: HashSet::new(),
            next: now,
            outgoing: VecDeque::new(),
            probes: VecDeque::new(),
            first_seq: 0,
            in_flight: HashMap::new(),
            stats: MeasureStats::default(),
        }
    }

    /// The client id probes are addressed to.
    pub fn client(&self) -> ClientId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &MeasureConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> MeasureStats {
        self.stats
    }

    /// The epoch of the network probed.
    pub fn epoch(&self) -> Option<u64> {
        self.network.as_ref().map(|(n, _)| n.topology.epoch())
    }

    /// Probes remembered (the window and those under way).
    pub fn remembered(&self) -> usize {
        self.probes.len()
    }

    /// Probes `network` (the consensus in force); `None`: nothing is in force, nothing is sent.
    pub fn set_network(&mut self, network: Option<MeasuredNetwork>) {
        self.network = network.map(|n| {
            self.table.install(&n);
            let per_epoch = n.probes_per_epoch(self.config.probes_per_node).max(1);
            let interval = self.config.epoch / u32::try_from(per_epoch).unwrap_or(u32::MAX);
            (n, interval.max(Duration::from_micros(1)))
        });
        if self.network.is_none() {
            self.table.layers.iter_mut().for_each(|l| *l = None);
        }
    }

    /// Whether the measurer's mailbox at `gateway` is registered (probes go through gateways
    /// that are).
    pub fn set_gateway_ready(&mut self, gateway: PeerId, ready: bool) {
        if ready {
            self.ready.insert(gateway);
        } else {
            self.ready.remove(&gateway);
        }
    }

    /// The mean interval between probes in the network probed.
    pub fn interval(&self) -> Option<Duration> {
        self.network.as_ref().map(|(_, i)| *i)
    }

    /// When the next probe is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    /// Sends the probes due at `now` and forgets those older than the window.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        self.expire(now);
        while self.next <= now {
            let Some((_, interval)) = &self.network else {
                self.next = now + IDLE_RECHECK;
                return;
            };
            let interval = *interval;
            if now.saturating_duration_since(self.next) > MAX_LAG {
                self.next = now;
            }
            self.next += sample_exponential(interval, rng).as_duration();
            if !self.send_probe(now, rng) {
                self.stats.unroutable += 1;
            }
        }
    }

    /// Builds one probe through a ready gateway; false when none can be built.
    fn send_probe<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> bool {
        let Some((network, _)) = &self.network else {
            return false;
        };
        let topology = &network.topology;
        let gateways: Vec<PeerId> = topology
            .gateways()
            .iter()
            .map(|g| g.peer)
            .filter(|p| self.ready.contains(p))
            .collect();
        if gateways.is_empty() {
            return false;
        }
        let gateway = gateways[(rng.next_u64() % gateways.len() as u64) as usize];
        let Ok(route) = choose_route(topology, &gateway, &gateway, &self.config.policy, rng) else {
            return false;
        };
        let mut label = [0u8; 16];
        rng.fill_bytes(&mut label);
        let label = Label(label);
        let destination = Destination::Deliver {
            client: self.me,
            label,
        };
        // Built as a client's loop cover is: a random body, so that at the gateway it comes back
        // to a probe looks like any other delivered packet.
        let Ok(packet) = build_cover_packet(&Geometry::DEFAULT, &route, &destination, rng) else {
            return false;
        };
        let mut nodes: Vec<u32> = Vec::with_capacity(route.len());
        for hop in &route {
            if let Some(&i) = self.table.by_id.get(&hop.node)
                && !nodes.contains(&i)
            {
                nodes.push(i);
            }
        }
        let asked: Duration = route.iter().map(|h| h.delay.as_duration()).sum();
        let seq = self.first_seq + self.probes.len() as u64;
        self.probes.push_back(Probe {
            sent: now,
            due: now + asked,
            route: nodes.into_boxed_slice(),
            label,
            back: None,
        });
        self.in_flight.insert(label, seq);
        while self.probes.len() > MAX_PROBES {
            self.pop_oldest();
        }
        self.stats.sent += 1;
        self.outgoing.push_back((gateway, packet));
        true
    }

    /// The next probe to send, and the gateway it enters at.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Vec<u8>)> {
        self.outgoing.pop_front()
    }

    /// A packet the measurer's mailbox received under `label`, at `now`; returns whether it was
    /// a probe under way.
    pub fn handle_delivery(&mut self, now: Instant, label: &Label) -> bool {
        let Some(seq) = self.in_flight.remove(label) else {
            self.stats.unknown += 1;
            return false;
        };
        let Some(probe) = seq
            .checked_sub(self.first_seq)
            .and_then(|i| self.probes.get_mut(i as usize))
        else {
            self.stats.unknown += 1;
            return false;
        };
        probe.back = Some(now);
        if now > probe.due + self.config.loss_timeout {
            self.stats.late += 1;
        } else {
            self.stats.returned += 1;
        }
        true
    }

    /// Every node of the network probed with enough probes in the window ending at `now`
    /// whose fate is known (probes still under their loss timeout are left out).
    pub fn report(&mut self, now: Instant) -> Vec<NodeReport> {
        self.expire(now);
        let timeout = self.config.loss_timeout;
        // Eight buckets an epoch: short enough for a node that changes within the window to be
        // judged by what it did when, long enough for each node to have probes in each.
        let bucket_us = (self.config.epoch / 8).as_micros().max(1);
        let origin = self.origin;
        let recent_from = now.checked_sub(self.config.window / 2);
        let mut all = Vec::new();
        let mut recent = Vec::new();
        for p in &self.probes {
            let deadline = p.due + timeout;
            let excess_us = match p.back {
                Some(back) if back <= deadline => Some(
                    i64::try_from(back.saturating_duration_since(p.due).as_micros())
                        .unwrap_or(i64::MAX),
                ),
                Some(_) => None,
                None if now > deadline => None,
                None => continue,
            };
            let outcome = Outcome {
                route: p.route.to_vec(),
                excess_us,
                bucket: u32::try_from(
                    p.sent.saturating_duration_since(origin).as_micros() / bucket_us,
                )
                .unwrap_or(u32::MAX),
            };
            if recent_from.is_none_or(|from| p.sent >= from) {
                recent.push(outcome.clone());
            }
            all.push(outcome);
        }
        // The worse of the whole window and its recent half: a node that turned bad is caught
        // from the recent half before its good past is out of the window, and the whole
        // window gives the steady state its full number of probes.
        let min = self.config.min_probes;
        let recent: HashMap<u32, NodeScore> = score(&recent, &self.table.layers, min)
            .into_iter()
            .map(|s| (s.node, s))
            .collect();
        score(&all, &self.table.layers, min)
            .into_iter()
            .filter_map(|s| {
                let (identity, peer) = self.table.nodes.get(s.node as usize)?.clone();
                let (delivery_permille, delay_p90_ms) = match recent.get(&s.node) {
                    Some(r) => (
                        s.delivery_permille.min(r.delivery_permille),
                        s.delay_p90_ms.max(r.delay_p90_ms),
                    ),
                    None => (s.delivery_permille, s.delay_p90_ms),
                };
                Some(NodeReport {
                    peer,
                    identity,
                    probes: s.probes,
                    returned: s.returned,
                    delivery_permille,
                    delay_p90_ms,
                })
            })
            .collect()
    }

    /// Forgets probes sent before the window ending at `now`.
    fn expire(&mut self, now: Instant) {
        let Some(start) = now.checked_sub(self.config.window) else {
            return;
        };
        while self.probes.front().is_some_and(|p| p.sent < start) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(p) = self.probes.pop_front() {
            self.first_seq += 1;
            if p.back.is_none() {
                self.in_flight.remove(&p.label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use p2pmix_mix::NodeSecretKey;
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;
    use crate::client::RouteNode;

    fn network(epoch: u64) -> MeasuredNetwork {
        let mut rng = StdRng::seed_from_u64(1);
        let mut id = 0u16;
        let mut node = || {
            id += 1;
            let key = NodeSecretKey::random(&mut rng).public_key();
            RouteNode::new(NodeId(id), PeerId::random(), key, "", &[])
        };
        let gateways = vec![node(), node()];
        let layers = (0..3).map(|_| vec![node(), node(), node()]).collect();
        MeasuredNetwork::new(Topology::new(
            epoch,
            Duration::from_millis(50),
            gateways,
            layers,
        ))
    }

    fn config() -> MeasureConfig {
        MeasureConfig {
            probes_per_node: 100,
            min_probes: 10,
            epoch: Duration::from_secs(60),
            window: Duration::from_secs(120),
            loss_timeout: Duration::from_secs(5),
            policy: RoutePolicy::default(),
        }
    }

    #[test]
    fn probes_go_only_through_ready_gateways_at_the_configured_rate() {
        let t0 = Instant::now();
        let mut m = Measurer::new(config(), ClientId([9; 32]), t0);
        let mut rng = StdRng::seed_from_u64(2);
        m.handle_timeout(t0, &mut rng);
        assert!(m.poll_transmit().is_none(), "no network, nothing sent");
        let net = network(4);
        let ready = net.topology().gateways()[1].peer;
        m.set_network(Some(net));
        // 100 probes per node of the widest layer (3 mixes): 300 per 60 s epoch.
        assert_eq!(m.interval(), Some(Duration::from_millis(200)));
        let mut now = t0;
        while now < t0 + Duration::from_secs(60) {
            now = m.poll_timeout().unwrap();
            m.handle_timeout(now, &mut rng);
        }
        assert_eq!(m.stats().sent, 0, "no gateway ready yet");
        assert!(m.stats().unroutable > 200);
        m.set_gateway_ready(ready, true);
        let start = now;
        let mut sent = 0;
        while now < start + Duration::from_secs(600) {
            now = m.poll_timeout().unwrap();
            m.handle_timeout(now, &mut rng);
            while let Some((gateway, packet)) = m.poll_transmit() {
                assert_eq!(gateway, ready);
                assert_eq!(packet.len(), Geometry::DEFAULT.packet_size());
                sent += 1;
            }
        }
        // 3000 expected; the standard deviation of a Poisson count is about 55.
        assert!((2_750..3_250).contains(&sent), "{sent} probes in 600 s");
        // Only the last two epochs are remembered.
        assert!(m.remembered() < 700, "{}", m.remembered());
    }

    #[test]
    fn returns_are_matched_by_label_and_late_or_unknown_ones_do_not_count() {
        let t0 = Instant::now();
        let mut m = Measurer::new(config(), ClientId([9; 32]), t0);
        let net = network(4);
        for g in net.topology().gateways() {
            m.set_gateway_ready(g.peer, true);
        }
        m.set_network(Some(net));
        let mut rng = StdRng::seed_from_u64(3);
        m.handle_timeout(t0 + Duration::from_millis(1), &mut rng);
        let labels: Vec<Label> = m.probes.iter().map(|p| p.label).collect();
        assert!(!labels.is_empty());
        let due = m.probes[0].due;
        assert!(m.handle_delivery(due + Duration::from_millis(3), &labels[0]));
        assert!(!m.handle_delivery(due, &labels[0]), "a duplicate");
        assert!(!m.handle_delivery(due, &Label([0; 16])), "never sent");
        if let Some(late) = labels.get(1) {
            let late_due = m.probes[1].due;
            assert!(m.handle_delivery(late_due + Duration::from_secs(6), late));
            assert_eq!(m.stats().late, 1);
        }
        assert_eq!(m.stats().returned, 1);
        assert_eq!(m.stats().unknown, 2);
    }

    #[test]
    fn a_node_that_leaves_and_comes_back_starts_afresh() {
        let net = network(4);
        let mut table = NodeTable::default();
        table.install(&net);
        let peer = net.topology().layer(2)[0].peer;
        let (identity, _) = net.nodes[&peer].clone();
        let before = table.current[&identity];
        // The next consensus leaves it out: its index keeps no layer.
        let mut without = net.clone();
        without.nodes.remove(&peer);
        table.install(&without);
        assert_eq!(table.layers[before as usize], None);
        // Back again: a new index.
        table.install(&net);
        let after = table.current[&identity];
        assert_ne!(before, after);
        assert_eq!(table.layers[after as usize], Some(2));
        // A node that stays keeps its index.
        let other = &net.nodes[&net.topology().layer(1)[0].peer].0;
        let kept = table.current[other];
        table.install(&net);
        assert_eq!(table.current[other], kept);
    }
}
