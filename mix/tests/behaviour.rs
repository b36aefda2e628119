//! The mix behaviour on real libp2p swarms over TCP on 127.0.0.1 (port 0): a five-hop route
//! (entry gateway, three mixes, exit gateway) delivers every packet once, each hop holding it for
//! the sender's delay; a peer flooding garbage is counted, cut off, and does not stop the traffic.
#![allow(missing_docs, unreachable_pub)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{EPOCH, rng, small_replay};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, Swarm, identity::Keypair, noise, swarm::SwarmEvent, tcp, yamux};
use p2pmix_mix::{
    ClientId, Delay, Destination, DropReason, Geometry, HEADER_VERSION, Hop, KeyRing, Label,
    NodeId, NodeSecretKey, Relay, RelayConfig,
    behaviour::{Behaviour, Config, Event, Stats},
    build_packet, open_payload,
    trace::{Direction, PacketTag, TraceSink, Truth},
};
use tokio::sync::mpsc;

enum Command {
    Inject(Vec<u8>),
    Send(PeerId, Vec<u8>),
    Dial(PeerId, Multiaddr),
}

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    commands: mpsc::Sender<Command>,
    stats: Arc<Stats>,
}

fn swarm(keypair: Keypair, behaviour: Behaviour) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Starts a swarm task; returns its handle once it listens.
async fn start(
    keypair: Keypair,
    behaviour: Behaviour,
    known: Vec<(PeerId, Multiaddr)>,
    events: mpsc::Sender<(PeerId, Event)>,
) -> Node {
    let peer = keypair.public().to_peer_id();
    let stats = behaviour.stats();
    let mut swarm = swarm(keypair, behaviour);
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    for (p, a) in known {
        swarm.add_peer_address(p, a);
    }
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (commands, mut rx) = mpsc::channel::<Command>(1024);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Inject(p)) => swarm.behaviour_mut().inject(p),
                    Some(Command::Send(to, p)) => swarm.behaviour_mut().send(to, p),
                    Some(Command::Dial(to, a)) => { swarm.add_peer_address(to, a); let _ = swarm.dial(to); }
                    None => return,
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(e) = event
                        && events.send((peer, e)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    Node {
        peer,
        addr,
        commands,
        stats,
    }
}

struct Network {
    nodes: Vec<Node>,
    keys: Vec<p2pmix_mix::NodePublicKey>,
    events: mpsc::Receiver<(PeerId, Event)>,
    events_tx: mpsc::Sender<(PeerId, Event)>,
}

async fn network(n: usize, config: Config) -> Network {
    network_with(n, config, |_, _, _| {}, &[]).await
}

/// A network whose node `i` records into `sinks[i]` (when given).
async fn network_traced(n: usize, config: Config, sinks: &[Arc<dyn TraceSink>]) -> Network {
    network_with(n, config, |_, _, _| {}, sinks).await
}

/// [`network`], with `setup(i, peers, behaviour)` run on each node's behaviour before it starts
/// and node `i` recording into `sinks[i]` (when given).
async fn network_with(
    n: usize,
    config: Config,
    setup: impl Fn(usize, &[PeerId], &mut Behaviour),
    sinks: &[Arc<dyn TraceSink>],
) -> Network {
    let mut r = rng(900);
    let keypairs: Vec<Keypair> = (0..n).map(|_| Keypair::generate_ed25519()).collect();
    let peers: Vec<PeerId> = keypairs.iter().map(|k| k.public().to_peer_id()).collect();
    let topology: HashMap<NodeId, PeerId> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (NodeId(i as u16), *p))
        .collect();
    let (events_tx, events) = mpsc::channel(4096);
    let mut nodes: Vec<Node> = Vec::new();
    let mut keys = Vec::new();
    for (i, keypair) in keypairs.into_iter().enumerate() {
        let mut ring = KeyRing::new(EPOCH, Duration::from_secs(60), small_replay());
        let secret = NodeSecretKey::random(&mut r);
        keys.push(secret.public_key());
        ring.insert(EPOCH, secret).unwrap();
        let relay = Arc::new(Relay::new(
            Geometry::DEFAULT,
            RelayConfig {
                max_delay: Duration::from_secs(5),
            },
            ring,
        ));
        relay.set_topology(EPOCH, topology.clone());
        // Each node knows the addresses of those started before it; later ones it learns by
        // being told below.
        let known = nodes.iter().map(|n| (n.peer, n.addr.clone())).collect();
        let mut behaviour = Behaviour::new(relay, config);
        setup(i, &peers, &mut behaviour);
        if let Some(sink) = sinks.get(i) {
            behaviour.set_trace(sink.clone());
        }
        nodes.push(start(keypair, behaviour, known, events_tx.clone()).await);
    }
    // Everyone learns everyone's address (as the consensus would tell them).
    for a in &nodes {
        for b in &nodes {
            if a.peer != b.peer {
                a.commands
                    .send(Command::Dial(b.peer, b.addr.clone()))
                    .await
                    .unwrap();
            }
        }
    }
    Network {
        nodes,
        keys,
        events,
        events_tx,
    }
}

fn report(net: &Network) -> String {
    net.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let s = &n.stats;
            let drops: Vec<String> = DropReason::ALL
                .iter()
                .filter(|r| s.dropped(**r) > 0)
                .map(|r| format!("{}={}", r.label(), s.dropped(*r)))
                .collect();
            format!(
                "node {i}: received {} forwarded {} delivered {} drops [{}]",
                s.received(),
                s.forwarded(),
                s.delivered(),
                drops.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds a packet for `hops` delivering `payload` to `client` with a label starting with `i`,
/// and injects it at node 0.
async fn inject(
    net: &Network,
    hops: &[Hop],
    client: u8,
    i: u8,
    payload: &[u8],
    r: &mut impl rand::CryptoRng,
) {
    let destination = Destination::Deliver {
        client: ClientId([client; 32]),
        label: Label([i; 16]),
    };
    let packet = build_packet(&Geometry::DEFAULT, hops, &destination, payload, r).unwrap();
    net.nodes[0]
        .commands
        .send(Command::Inject(packet))
        .await
        .unwrap();
}

fn route(net: &Network, delays_ms: &[u64]) -> Vec<Hop> {
    delays_ms
        .iter()
        .enumerate()
        .map(|(i, &ms)| Hop {
            node: NodeId(i as u16),
            key: net.keys[i],
            delay: Delay::from_duration(Duration::from_millis(ms)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hops_deliver_every_packet_once_after_the_chosen_delays() {
    let mut net = network(
        5,
        Config {
            workers: 1,
            ..Config::default()
        },
    )
    .await;
    let delays = [10u64, 30, 20, 40, 0];
    let total = Duration::from_millis(delays.iter().sum());
    let hops = route(&net, &delays);
    let mut r = rng(901);
    let count = 40u8;
    let mut sent_at = HashMap::new();
    for i in 0..count {
        let destination = Destination::Deliver {
            client: ClientId([7; 32]),
            label: Label([i; 16]),
        };
        let packet =
            build_packet(&Geometry::DEFAULT, &hops, &destination, &[i; 100], &mut r).unwrap();
        sent_at.insert(i, Instant::now());
        net.nodes[0]
            .commands
            .send(Command::Inject(packet))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < usize::from(count) {
        let Ok(received) = tokio::time::timeout_at(deadline.into(), net.events.recv()).await else {
            panic!("not all packets within 30 s: {}", report(&net));
        };
        let (at, event) = received.unwrap();
        if let Event::Delivered {
            client,
            label,
            body,
        } = event
        {
            assert_eq!(at, net.nodes[4].peer, "delivered by the exit gateway");
            assert_eq!(client, ClientId([7; 32]));
            let i = label.0[0];
            let held = sent_at[&i].elapsed();
            assert!(
                held >= total,
                "packet {i} arrived after {held:?}, before the {total:?} of delays"
            );
            assert!(
                held < total + Duration::from_secs(5),
                "packet {i} took {held:?}"
            );
            assert_eq!(
                open_payload(&Geometry::DEFAULT, &body).unwrap()[..100],
                [i; 100]
            );
            assert!(seen.insert(i), "packet {i} delivered twice");
        }
    }
    // No drops anywhere.
    for (n, node) in net.nodes.iter().enumerate() {
        for reason in DropReason::ALL {
            assert_eq!(
                node.stats.dropped(reason),
                0,
                "node {n} dropped for {reason:?}"
            );
        }
    }
    drop(net.events_tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_counted_and_cut_off_while_traffic_flows() {
    // Garbage is dropped and counted (a bad MAC is no fault: an honest packet for a retired
    // key fails it too); sending past the client rate is, and bans.
    let config = Config {
        workers: 1,
        max_peer_faults: 50,
        client_rate: 50.0,
        client_burst: 50.0,
        ..Config::default()
    };
    let mut net = network(5, config).await;
    // The attacker: a swarm with the behaviour but no keys, sending garbage to node 1.
    let attacker_relay = Arc::new(Relay::new(
        Geometry::DEFAULT,
        RelayConfig {
            max_delay: Duration::from_secs(1),
        },
        KeyRing::new(EPOCH, Duration::from_secs(1), small_replay()),
    ));
    let attacker = start(
        Keypair::generate_ed25519(),
        Behaviour::new(attacker_relay, config),
        vec![],
        net.events_tx.clone(),
    )
    .await;
    attacker
        .commands
        .send(Command::Dial(net.nodes[1].peer, net.nodes[1].addr.clone()))
        .await
        .unwrap();
    let size = Geometry::DEFAULT.packet_size();
    for i in 0..400u32 {
        let mut garbage = vec![(i % 251) as u8; size];
        garbage[0] = HEADER_VERSION;
        attacker
            .commands
            .send(Command::Send(net.nodes[1].peer, garbage))
            .await
            .unwrap();
    }
    // Honest traffic through node 1 at the same time.
    let hops = route(&net, &[5, 5, 5, 5, 0]);
    let mut r = rng(902);
    for i in 0..10u8 {
        let destination = Destination::Deliver {
            client: ClientId([1; 32]),
            label: Label([i; 16]),
        };
        let packet = build_packet(&Geometry::DEFAULT, &hops, &destination, b"ok", &mut r).unwrap();
        net.nodes[0]
            .commands
            .send(Command::Inject(packet))
            .await
            .unwrap();
    }
    let mut delivered = HashSet::new();
    let mut banned = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.len() < 10 || !banned {
        let (at, event) = tokio::time::timeout_at(deadline.into(), net.events.recv())
            .await
            .expect("traffic and the ban within 30 s")
            .unwrap();
        match event {
            Event::Delivered { label, .. } => {
                delivered.insert(label.0[0]);
            }
            Event::PeerBanned(peer) => {
                assert_eq!(at, net.nodes[1].peer);
                assert_eq!(peer, attacker.peer);
                banned = true;
            }
        }
    }
    let stats = &net.nodes[1].stats;
    assert!(
        stats.dropped(DropReason::BadMac) >= 1,
        "garbage counted: {}",
        stats.dropped(DropReason::BadMac)
    );
    assert!(
        stats.dropped(DropReason::RateLimited) > 50,
        "past the rate: {}",
        stats.dropped(DropReason::RateLimited)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_broken_for_a_later_hop_do_not_get_honest_nodes_banned() {
    let config = Config {
        workers: 1,
        max_peer_faults: 20,
        ..Config::default()
    };
    let mut net = network(5, config).await;
    let mut r = rng(903);
    // A client builds packets valid for node 0 but sealed for the wrong key at node 1.
    let mut broken = route(&net, &[1, 1]);
    broken[1].key = NodeSecretKey::random(&mut r).public_key();
    for i in 0..100u8 {
        inject(&net, &broken, 2, i, b"bad", &mut r).await;
    }
    // Then honest traffic through the same link.
    let hops = route(&net, &[1, 1, 1, 1, 0]);
    for i in 0..10u8 {
        inject(&net, &hops, 3, i, b"ok", &mut r).await;
    }
    let mut delivered = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.len() < 10 {
        let Ok(received) = tokio::time::timeout_at(deadline.into(), net.events.recv()).await else {
            panic!("honest traffic stopped: {}", report(&net));
        };
        match received.unwrap().1 {
            Event::Delivered { label, .. } => {
                delivered.insert(label.0[0]);
            }
            Event::PeerBanned(peer) => panic!("{peer} banned for a client's packets"),
        }
    }
    // The broken packets were sent first but each waits its own random delay at node 0, so
    // some may still be queued there (seen on a loaded machine: 90 of 100 counted when the
    // honest ones were in). Wait for the rest, still banning no one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while net.nodes[1].stats.dropped(DropReason::BadMac) < 100 && Instant::now() < deadline {
        if let Ok(Some((_, Event::PeerBanned(peer)))) =
            tokio::time::timeout(Duration::from_millis(50), net.events.recv()).await
        {
            panic!("{peer} banned for a client's packets");
        }
    }
    assert_eq!(
        net.nodes[1].stats.dropped(DropReason::BadMac),
        100,
        "{}",
        report(&net)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_takes_deliveries_for_clients_only_from_last_layer_mixes() {
    // Node 2 is the gateway; node 1 its only last-layer mix. A packet through node 1 is
    // delivered; one sent from node 0 straight to the gateway (a one-hop packet that would fill
    // mailboxes without crossing the mixnet) is dropped and counted.
    let mut net = network_with(
        3,
        Config {
            workers: 1,
            ..Config::default()
        },
        |i, peers, behaviour| {
            if i == 2 {
                behaviour.set_final_senders(Some(HashSet::from([peers[1]])));
            }
        },
        &[],
    )
    .await;
    let mut r = rng(903);
    let through_mix = route(&net, &[0, 0, 0]);
    let one_hop: Vec<Hop> = [0usize, 2]
        .iter()
        .map(|&i| Hop {
            node: NodeId(i as u16),
            key: net.keys[i],
            delay: Delay::from_duration(Duration::ZERO),
        })
        .collect();
    for (i, hops) in [(1u8, &one_hop), (2, &through_mix), (3, &one_hop)] {
        inject(&net, hops, 9, i, b"for a mailbox", &mut r).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delivered = Vec::new();
    // Drops raise no event: wait in short steps so a drop counted after the last event is seen.
    while net.nodes[2].stats.dropped(DropReason::FinalFromNonMix) < 2 || delivered.is_empty() {
        assert!(Instant::now() < deadline, "within 30 s: {}", report(&net));
        match tokio::time::timeout(Duration::from_millis(100), net.events.recv()).await {
            Ok(Some((_, Event::Delivered { label, .. }))) => delivered.push(label.0[0]),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the nodes stopped: {}", report(&net)),
        }
    }
    // Nothing else arrives late.
    while let Ok(Some((_, event))) =
        tokio::time::timeout(Duration::from_millis(500), net.events.recv()).await
    {
        if let Event::Delivered { label, .. } = event {
            delivered.push(label.0[0]);
        }
    }
    assert_eq!(delivered, [2], "only the packet through the last layer");
    assert_eq!(net.nodes[2].stats.dropped(DropReason::FinalFromNonMix), 2);
    assert_eq!(net.nodes[2].stats.delivered(), 1);
}

/// Identities are free: a dozen of them on one address, each asking for long delays, filled the
/// whole delay queue before packets counted against their source's share (all clients of one
/// address prefix share one eighth of the queue, each consensus node another). A node's packet
/// then found the queue full and was lost; now it goes through while the attackers' packets wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_identities_on_one_address_cannot_fill_the_delay_queue() {
    let config = Config {
        workers: 1,
        queue: p2pmix_mix::QueueLimits {
            max_packets: 400,
            max_bytes: 64 << 20,
        },
        ..Config::default()
    };
    let mut net = network(2, config).await;
    let share = config.queue.per_source();
    let mut r = rng(904);
    // Node 1 holds each attacker packet 4 s, then node 0 delivers it.
    let hold_long = [
        Hop {
            node: NodeId(1),
            key: net.keys[1],
            delay: Delay::from_duration(Duration::from_secs(4)),
        },
        Hop {
            node: NodeId(0),
            key: net.keys[0],
            delay: Delay::from_duration(Duration::ZERO),
        },
    ];
    let identities = 12;
    let per_identity = 40;
    let mut attackers = Vec::new();
    for _ in 0..identities {
        let relay = Arc::new(Relay::new(
            Geometry::DEFAULT,
            RelayConfig {
                max_delay: Duration::from_secs(1),
            },
            KeyRing::new(EPOCH, Duration::from_secs(1), small_replay()),
        ));
        let attacker = start(
            Keypair::generate_ed25519(),
            Behaviour::new(
                relay,
                Config {
                    workers: 1,
                    ..config
                },
            ),
            vec![],
            net.events_tx.clone(),
        )
        .await;
        attacker
            .commands
            .send(Command::Dial(net.nodes[1].peer, net.nodes[1].addr.clone()))
            .await
            .unwrap();
        attackers.push(attacker);
    }
    for (a, attacker) in attackers.iter().enumerate() {
        for i in 0..per_identity {
            let destination = Destination::Deliver {
                client: ClientId([9; 32]),
                label: Label([a as u8, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            };
            let packet = build_packet(
                &Geometry::DEFAULT,
                &hold_long,
                &destination,
                b"hold me",
                &mut r,
            )
            .unwrap();
            attacker
                .commands
                .send(Command::Send(net.nodes[1].peer, packet))
                .await
                .unwrap();
        }
    }
    // Wait until node 1 has taken every attacker frame.
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.nodes[1].stats.received() < (identities * per_identity) as u64 {
        assert!(Instant::now() < deadline, "frames lost: {}", report(&net));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    // A node's packet through node 1, without delays.
    let through = [
        Hop {
            node: NodeId(0),
            key: net.keys[0],
            delay: Delay::from_duration(Duration::ZERO),
        },
        Hop {
            node: NodeId(1),
            key: net.keys[1],
            delay: Delay::from_duration(Duration::ZERO),
        },
        Hop {
            node: NodeId(0),
            key: net.keys[0],
            delay: Delay::from_duration(Duration::ZERO),
        },
    ];
    inject(&net, &through, 5, 77, b"honest", &mut r).await;
    loop {
        let left = Duration::from_millis(3_000).saturating_sub(started.elapsed());
        let Ok(received) = tokio::time::timeout(left, net.events.recv()).await else {
            panic!(
                "the honest packet did not get through before the attackers' packets left: {}",
                report(&net)
            );
        };
        if let (_, Event::Delivered { client, .. }) = received.unwrap() {
            assert_eq!(client, ClientId([5; 32]), "an attacker packet left early");
            break;
        }
    }
    let refused = net.nodes[1].stats.dropped(DropReason::QueueFull);
    assert_eq!(
        refused,
        (identities * per_identity - share) as u64,
        "the attackers' address holds its share and no more"
    );
}

/// A sink that keeps what it is given, with the time of each link record.
#[derive(Debug, Default)]
struct Memory {
    links: std::sync::Mutex<Vec<(Direction, PeerId, PacketTag, Instant)>>,
    truth: std::sync::Mutex<Vec<Truth>>,
}

impl TraceSink for Memory {
    fn link(&self, direction: Direction, peer: &PeerId, tag: PacketTag) {
        self.links
            .lock()
            .unwrap()
            .push((direction, *peer, tag, Instant::now()));
    }
    fn truth(&self, record: Truth) {
        self.truth.lock().unwrap().push(record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_follow_each_packet_hop_by_hop_and_the_links_agree_with_the_truth() {
    let memories: Vec<Arc<Memory>> = (0..5).map(|_| Arc::new(Memory::default())).collect();
    let sinks: Vec<Arc<dyn TraceSink>> = memories
        .iter()
        .map(|m| m.clone() as Arc<dyn TraceSink>)
        .collect();
    let config = Config {
        workers: 1,
        ..Config::default()
    };
    let mut net = network_traced(5, config, &sinks).await;
    let delays = [0u64, 20, 20, 20, 0];
    let hops = route(&net, &delays);
    let mut r = rng(904);
    let count = 20u8;
    for i in 0..count {
        inject(&net, &hops, 9, i, b"traced", &mut r).await;
    }
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered < count {
        let Ok(received) = tokio::time::timeout_at(deadline.into(), net.events.recv()).await else {
            panic!("not delivered within 30 s: {}", report(&net));
        };
        if let (_, Event::Delivered { .. }) = received.unwrap() {
            delivered += 1;
        }
    }
    let truth: Vec<Vec<Truth>> = memories
        .iter()
        .map(|m| m.truth.lock().unwrap().clone())
        .collect();
    let links: Vec<_> = memories
        .iter()
        .map(|m| m.links.lock().unwrap().clone())
        .collect();
    // Node 0 took the packets by injection: no link record, but a forward for each.
    assert!(links[0].iter().all(|l| l.0 == Direction::Out));
    let mut finals = 0;
    for first in truth[0].iter() {
        let Truth::Forwarded { mut output, .. } = *first else {
            panic!("node 0 recorded {first:?}");
        };
        for hop in 1..5 {
            let (from, to) = (net.nodes[hop - 1].peer, net.nodes[hop].peer);
            // What left the previous hop for this one is what arrived here, under one tag.
            let out = links[hop - 1]
                .iter()
                .find(|l| l.0 == Direction::Out && l.2 == output)
                .unwrap_or_else(|| panic!("hop {hop}: no departure of {output:?}"));
            assert_eq!(out.1, to);
            let arrival = links[hop]
                .iter()
                .find(|l| l.0 == Direction::In && l.2 == output)
                .unwrap_or_else(|| panic!("hop {hop}: no arrival of {output:?}"));
            assert_eq!(arrival.1, from);
            assert!(arrival.3 >= out.3);
            let record = truth[hop]
                .iter()
                .find(|t| match t {
                    Truth::Forwarded { input, .. } | Truth::Delivered { input } => *input == output,
                    _ => false,
                })
                .unwrap_or_else(|| panic!("hop {hop}: no truth for {output:?}"));
            match *record {
                Truth::Forwarded { output: next, .. } => {
                    assert!(hop < 4, "the exit forwarded");
                    // The hold is the sender's delay: the departure is at least that late.
                    let left = links[hop]
                        .iter()
                        .find(|l| l.0 == Direction::Out && l.2 == next)
                        .expect("departure recorded");
                    assert!(left.3 - arrival.3 >= Duration::from_millis(delays[hop]));
                    assert_ne!(next, output, "every hop changes the tag");
                    output = next;
                }
                Truth::Delivered { .. } => {
                    assert_eq!(hop, 4);
                    finals += 1;
                }
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(finals, usize::from(count));
    drop(net.events_tx);
}
