//! Mix cores in a simulated network with simulated time: a stratified route of five relays, each
//! holding packets for exactly the sender's delay; drops by reason.
#![allow(missing_docs, unreachable_pub)]

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{EPOCH, deliver, key_id, rng, small_replay};
use p2pmix_mix::{
    Decision, Delay, DelayQueue, Destination, DropReason, Geometry, Hop, KeyRing, NodeId,
    NodeSecretKey, QueueLimits, Relay, RelayConfig, build_packet, open_payload,
};

struct SimNode {
    relay: Relay<u16>,
    queue: DelayQueue<u16>,
}

struct SimNet {
    nodes: Vec<SimNode>,
    route_keys: Vec<p2pmix_mix::NodePublicKey>,
    delivered: Vec<(Instant, Destination, Vec<u8>)>,
    drops: HashMap<DropReason, usize>,
}

impl SimNet {
    fn new(n: u16, max_delay: Duration, limits: QueueLimits) -> Self {
        let mut r = rng(500);
        let topology: HashMap<NodeId, u16> = (0..n).map(|i| (NodeId(i), i)).collect();
        let mut route_keys = Vec::new();
        let nodes = (0..n)
            .map(|_| {
                let mut ring = KeyRing::new(EPOCH, Duration::from_secs(60), small_replay());
                let secret = NodeSecretKey::random(&mut r);
                route_keys.push(secret.public_key());
                ring.insert(EPOCH, secret).unwrap();
                let relay = Relay::new(Geometry::DEFAULT, RelayConfig { max_delay }, ring);
                relay.set_topology(EPOCH, topology.clone());
                SimNode {
                    relay,
                    queue: DelayQueue::new(limits),
                }
            })
            .collect();
        SimNet {
            nodes,
            route_keys,
            delivered: Vec::new(),
            drops: HashMap::new(),
        }
    }

    fn receive(&mut self, at: u16, now: Instant, packet: Vec<u8>) {
        let node = &mut self.nodes[usize::from(at)];
        let outcome = node
            .relay
            .process(now, packet)
            .and_then(|d| node.queue.push(d));
        if let Err(reason) = outcome {
            *self.drops.entry(reason).or_default() += 1;
        }
    }

    /// Runs every queue until all are empty, in global time order.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.queue.poll_timeout().map(|t| (t, i)))
                .min();
            let Some((now, i)) = next else { return };
            let Some(decision) = self.nodes[i].queue.poll_transmit(now) else {
                continue;
            };
            match decision {
                Decision::Forward { to, packet, .. } => self.receive(to, now, packet),
                Decision::Final {
                    destination,
                    packet,
                    ..
                } => self.delivered.push((now, destination, packet)),
            }
        }
        panic!("the simulation did not settle");
    }

    fn route(&self, delays_ms: &[u64]) -> Vec<Hop> {
        delays_ms
            .iter()
            .enumerate()
            .map(|(i, &ms)| Hop {
                node: NodeId(i as u16),
                key: self.route_keys[i],
                delay: Delay::from_duration(Duration::from_millis(ms)),
            })
            .collect()
    }
}

#[test]
fn each_hop_holds_the_packet_for_exactly_its_delay() {
    let mut net = SimNet::new(5, Duration::from_secs(10), QueueLimits::default());
    let t0 = Instant::now();
    let mut r = rng(501);
    let delays = [3u64, 40, 7, 120, 0];
    let route = net.route(&delays);
    for i in 0..50u8 {
        let packet = build_packet(
            &Geometry::DEFAULT,
            key_id(),
            &route,
            &deliver(1, i),
            &[i; 64],
            &mut r,
        )
        .unwrap();
        net.receive(0, t0, packet);
    }
    net.run();
    assert_eq!(net.delivered.len(), 50, "drops: {:?}", net.drops);
    let total: u64 = delays.iter().sum();
    for (at, destination, packet) in &net.delivered {
        assert_eq!(*at, t0 + Duration::from_millis(total));
        let Destination::Deliver { label, .. } = destination else {
            panic!("not a delivery")
        };
        let payload = open_payload(
            &Geometry::DEFAULT,
            &packet[Geometry::DEFAULT.header_size()..],
        )
        .unwrap();
        assert_eq!(payload[0], label.0[0]);
    }
}

#[test]
fn drops_are_counted_by_reason() {
    let mut net = SimNet::new(
        5,
        Duration::from_millis(500),
        QueueLimits {
            max_packets: 4,
            max_bytes: usize::MAX,
        },
    );
    let t0 = Instant::now();
    let mut r = rng(502);
    let g = Geometry::DEFAULT;
    // Garbage of the wrong size, and of the right size.
    net.receive(0, t0, vec![1; 100]);
    net.receive(0, t0, vec![key_id().0; g.packet_size()]);
    // A replay.
    let route = net.route(&[1, 1, 1]);
    let packet = build_packet(&g, key_id(), &route, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, t0, packet.clone());
    net.receive(0, t0, packet);
    // A next hop outside the topology.
    let mut stranger = net.route(&[1, 1]);
    stranger[1].node = NodeId(999);
    let packet = build_packet(&g, key_id(), &stranger, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, t0, packet);
    // A delay above the cap.
    let slow = net.route(&[501, 1]);
    let packet = build_packet(&g, key_id(), &slow, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, t0, packet);
    // A full queue (4 packets): one is already queued at node 0, three more fit, the fourth not.
    for _ in 0..4 {
        let packet = build_packet(&g, key_id(), &route, &deliver(1, 1), b"x", &mut r).unwrap();
        net.receive(0, t0, packet);
    }
    let expected: HashMap<DropReason, usize> = [
        (DropReason::WrongSize, 1),
        (DropReason::BadMac, 1),
        (DropReason::Replay, 1),
        (DropReason::UnknownNextHop, 1),
        (DropReason::DelayTooLong, 1),
        (DropReason::QueueFull, 1),
    ]
    .into();
    assert_eq!(net.drops, expected);
    net.run();
    assert_eq!(net.delivered.len(), 4, "the accepted packets still arrive");
    assert!(DropReason::ALL.iter().all(|r| !r.label().is_empty()));
}
