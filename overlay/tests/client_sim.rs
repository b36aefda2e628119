//! Client cores over a simulated mixnet (no sockets, virtual time): real Sphinx relays for two
//! gateways and three layers of mixes, links that lose packets, a dead mix, a mix that tampers.
//! Every message arrives exactly once, fragments reassemble whatever their order, replies come
//! back through SURBs, a tampered payload is never delivered, an oversized message is refused.
#![allow(missing_docs, unreachable_pub)]

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use p2pmix::client::{
    Address, ClientConfig, ClientCore, ClientEvent, MessageId, RouteNode, SendError, StaticKey,
    StreamRates, Topology, client_id,
};
use p2pmix::sphinx::{
    ClientId, Decision, Destination, Geometry, KeyRing, Label, NodeId, NodeSecretKey, Relay,
    RelayConfig, ReplayConfig,
};
use rand::{Rng, RngExt};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const EPOCH: u64 = 4;
const LINK: Duration = Duration::from_millis(2);

enum Ev {
    AtNode(usize, Vec<u8>),
    ToClient(usize, Label, Vec<u8>),
}

struct Sim {
    now: Instant,
    nodes: Vec<Relay<usize>>,
    dead: Option<usize>,
    tamperer: Option<usize>,
    loss: f64,
    clients: Vec<ClientCore>,
    ids: Vec<ClientId>,
    gateway_of: Vec<usize>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    rng: ChaCha20Rng,
    received: Vec<Vec<ClientEvent>>,
}

/// Two gateways (0, 1) and `per_layer` mixes in each of three layers.
fn network(per_layer: usize, seed: u64) -> (Vec<Relay<usize>>, Topology, Vec<PeerId>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let n = 2 + 3 * per_layer;
    let mut relays = Vec::new();
    let mut route_nodes = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        let secret = NodeSecretKey::random(&mut rng);
        let public = secret.public_key();
        let mut ring = KeyRing::new(
            EPOCH,
            Duration::from_secs(60),
            ReplayConfig {
                expected_packets: 100_000,
                false_positive_rate: 1e-6,
            },
        );
        ring.insert(EPOCH, secret).unwrap();
        let relay = Relay::new(
            Geometry::DEFAULT,
            RelayConfig {
                max_delay: Duration::from_secs(60),
            },
            ring,
        );
        relay.set_topology(EPOCH, (0..n).map(|j| (NodeId(j as u16), j)).collect());
        relays.push(relay);
        let peer = PeerId::random();
        peers.push(peer);
        route_nodes.push(RouteNode::new(NodeId(i as u16), peer, public, "", &[]));
    }
    let gateways = route_nodes[..2].to_vec();
    let layers = (0..3)
        .map(|l| route_nodes[2 + l * per_layer..2 + (l + 1) * per_layer].to_vec())
        .collect();
    (
        relays,
        Topology::new(EPOCH, Duration::from_millis(20), gateways, layers),
        peers,
    )
}

const RATES: StreamRates = StreamRates {
    send: Duration::from_millis(10),
    loop_cover: Duration::from_millis(100),
    drop_cover: Duration::from_millis(100),
};

impl Sim {
    fn new(per_layer: usize, seed: u64, config: ClientConfig) -> Sim {
        let (nodes, topology, peers) = network(per_layer, seed);
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
        let mut clients = Vec::new();
        let mut ids = Vec::new();
        for gateway in peers.iter().take(2) {
            let id = client_id(&PeerId::random());
            let mut c = ClientCore::new(
                now,
                config,
                id,
                *gateway,
                StaticKey::generate().unwrap(),
                RATES,
                &mut rng,
            );
            c.set_topology(topology.clone(), RATES);
            clients.push(c);
            ids.push(id);
        }
        Sim {
            now,
            nodes,
            dead: None,
            tamperer: None,
            loss: 0.0,
            clients,
            ids,
            gateway_of: vec![0, 1],
            heap: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            rng,
            received: vec![Vec::new(), Vec::new()],
        }
    }

    fn address(&self, c: usize) -> Address {
        self.clients[c].address()
    }

    fn at(&mut self, t: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn lost(&mut self) -> bool {
        self.rng.random::<f64>() < self.loss
    }

    /// Runs until `done` holds or `limit` of virtual time passes.
    fn run(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let end = self.now + limit;
        while self.now < end && !done(self) {
            let next_client = self
                .clients
                .iter()
                .map(|c| c.poll_timeout())
                .min()
                .unwrap_or(end);
            let next_event = self.heap.peek().map_or(end, |Reverse((t, _))| *t);
            self.now = next_client.min(next_event).max(self.now).min(end);
            let now = self.now;
            for c in 0..self.clients.len() {
                self.clients[c].handle_timeout(now);
                while let Some(packet) = self.clients[c].poll_transmit(now, &mut self.rng) {
                    if !self.lost() {
                        let g = self.gateway_of[c];
                        self.at(now + LINK, Ev::AtNode(g, packet));
                    }
                }
                while let Some(e) = self.clients[c].poll_event() {
                    self.received[c].push(e);
                }
            }
            while let Some(Reverse((t, seq))) = self.heap.peek().copied() {
                if t > now {
                    break;
                }
                self.heap.pop();
                let Some(ev) = self.events.remove(&seq) else {
                    continue;
                };
                self.deliver(now, ev);
            }
        }
    }

    fn deliver(&mut self, now: Instant, ev: Ev) {
        match ev {
            Ev::AtNode(n, packet) => {
                if self.dead == Some(n) {
                    return;
                }
                match self.nodes[n].process(now, packet) {
                    Ok(Decision::Forward {
                        to,
                        mut packet,
                        release,
                        ..
                    }) => {
                        if self.tamperer == Some(n) {
                            let i = self.rng.random_range(400..packet.len());
                            packet[i] ^= 0x40;
                        }
                        if !self.lost() {
                            self.at(release + LINK, Ev::AtNode(to, packet));
                        }
                    }
                    Ok(Decision::Final {
                        destination: Destination::Deliver { client, label },
                        packet,
                        release,
                        ..
                    }) => {
                        if let Some(c) = self.ids.iter().position(|id| *id == client) {
                            let body = packet[Geometry::DEFAULT.header_size()..].to_vec();
                            self.at(release + LINK, Ev::ToClient(c, label, body));
                        }
                    }
                    _ => {}
                }
            }
            Ev::ToClient(c, label, mut body) => {
                self.clients[c].handle_delivery(now, label, &mut body);
                while let Some(e) = self.clients[c].poll_event() {
                    self.received[c].push(e);
                }
            }
        }
    }

    fn received_messages(&self, c: usize) -> Vec<(MessageId, Vec<u8>)> {
        self.received[c]
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Received { id, bytes, .. } => Some((*id, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    fn delivered(&self, c: usize) -> Vec<MessageId> {
        self.received[c]
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn failed(&self, c: usize) -> usize {
        self.received[c]
            .iter()
            .filter(|e| matches!(e, ClientEvent::Failed(..)))
            .count()
    }
}

fn message(rng: &mut impl Rng, i: usize) -> Vec<u8> {
    let len = rng.random_range(1..6_000);
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn lossy_links_and_a_dead_mix_still_deliver_every_message_exactly_once() {
    let config = ClientConfig {
        max_attempts: 30,
        ack_slack: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    let mut sim = Sim::new(2, 1, config);
    sim.loss = 0.10;
    sim.dead = Some(4); // the first mix of layer 2
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut sent = HashMap::new();
    for i in 0..30 {
        let bytes = message(&mut rng, i);
        let id = sim.clients[0].send(to_b, &bytes, 0, &mut rng).unwrap();
        sent.insert(id, bytes);
    }
    sim.run(Duration::from_secs(3600), |s| {
        s.delivered(0).len() + s.failed(0) == 30
    });
    for e in &sim.received[0] {
        if let ClientEvent::Failed(id, reason) = e {
            eprintln!("failed {id}: {reason} ({} bytes)", sent[id].len());
        }
    }
    assert_eq!(sim.failed(0), 0, "no message failed");
    let mut delivered = sim.delivered(0);
    delivered.sort();
    let mut expected: Vec<MessageId> = sent.keys().copied().collect();
    expected.sort();
    assert_eq!(delivered, expected, "every message acknowledged once");
    // Let stragglers and retransmitted duplicates arrive, then count.
    sim.run(Duration::from_secs(30), |_| false);
    let got = sim.received_messages(1);
    assert_eq!(got.len(), 30, "each message handed over exactly once");
    for (id, bytes) in got {
        assert_eq!(sent.get(&id), Some(&bytes), "intact");
    }
    let stats = sim.clients[0].stats();
    assert!(stats.retransmissions > 0, "losses forced retransmissions");
    assert!(stats.drop_cover_sent > 0 && stats.loop_cover_sent > 0);
}

#[test]
fn replies_come_back_through_surbs_and_tampered_payloads_are_never_delivered() {
    let config = ClientConfig {
        max_attempts: 30,
        ack_slack: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    let mut sim = Sim::new(2, 2, config);
    sim.tamperer = Some(6); // a layer-3 mix flips a byte of what passes through it
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    // Twenty one-fragment messages first: about half cross the tamperer on the way.
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let bytes = vec![i; 100];
        sim.clients[0].send(to_b, &bytes, 0, &mut rng).unwrap();
        sent.push(bytes);
    }
    sim.run(Duration::from_secs(600), |s| s.delivered(0).len() == 20);
    assert_eq!(
        sim.delivered(0).len(),
        20,
        "retransmission got around the tamperer"
    );
    assert!(
        sim.clients[1].stats().undecodable > 0,
        "tampered fragments arrived and were refused"
    );
    let question = b"what time is it?".to_vec();
    let id = sim.clients[0].send(to_b, &question, 2, &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| {
        s.received_messages(1).len() == 21
    });
    let handle = sim.received[1]
        .iter_mut()
        .find_map(|e| match e {
            ClientEvent::Received { bytes, reply, .. } if *bytes == question => reply.take(),
            _ => None,
        })
        .expect("the question arrives with reply SURBs");
    assert_eq!(handle.surbs(), 2);
    sim.clients[1].reply(handle, b"noon", &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| {
        s.received[0].iter().any(|e| {
            matches!(
                e,
                ClientEvent::Received {
                    in_reply_to: Some(_),
                    ..
                }
            )
        })
    });
    let answer = sim.received[0].iter().find_map(|e| match e {
        ClientEvent::Received {
            bytes,
            in_reply_to: Some(q),
            ..
        } => Some((bytes.clone(), *q)),
        _ => None,
    });
    // The reply may have crossed the tampering mix and been dropped; if it arrived it is intact.
    if let Some((bytes, q)) = answer {
        assert_eq!(bytes, b"noon");
        assert_eq!(q, id);
    }
    // Nothing tampered was ever handed over: every received message is one that was sent,
    // once.
    let got = sim.received_messages(1);
    assert_eq!(got.len(), 21);
    for (_, bytes) in got {
        assert!(
            bytes == question || sent.contains(&bytes),
            "tampered bytes delivered"
        );
    }
    for (_, bytes) in sim.received_messages(0) {
        assert_eq!(bytes, b"noon", "tampered reply delivered");
    }
}

#[test]
fn fragments_reassemble_in_any_order_and_oversized_messages_are_refused() {
    let mut sim = Sim::new(3, 5, ClientConfig::default());
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    // 40 fragments, each on its own route with its own exponential delays: they arrive in
    // another order than they were sent.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let id = sim.clients[0].send(to_b, &big, 0, &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| !s.delivered(0).is_empty());
    assert_eq!(sim.delivered(0), vec![id]);
    assert_eq!(sim.received_messages(1), vec![(id, big)]);
    let limit = ClientConfig::default().max_message;
    assert_eq!(
        sim.clients[0].send(to_b, &vec![0; limit + 1], 0, &mut rng),
        Err(SendError::TooLarge {
            len: limit + 1,
            max: limit
        })
    );
}

#[test]
fn a_message_that_cannot_be_routed_fails_and_the_stream_keeps_its_pace() {
    let mut sim = Sim::new(2, 9, ClientConfig::default());
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    // An address naming a gateway the consensus does not have.
    let nowhere = Address {
        gateway: PeerId::random(),
        ..sim.address(1)
    };
    let before = sim.clients[0].stats();
    sim.clients[0]
        .send(nowhere, b"lost cause", 0, &mut rng)
        .unwrap();
    sim.run(Duration::from_secs(120), |s| s.failed(0) > 0);
    assert_eq!(sim.failed(0), 1, "the message fails after its attempts");
    let after = sim.clients[0].stats();
    assert_eq!(after.fragments_sent, before.fragments_sent);
    // Every send tick that carried the unroutable fragment sent drop cover instead.
    assert!(
        after.drop_cover_sent - before.drop_cover_sent
            >= ClientConfig::default().max_attempts as u64
    );
}
