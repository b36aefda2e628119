//! What test-network tracing costs the relay path, over real loopback connections.
//!
//! `cargo bench -p p2pmix --bench trace`
//!
//! Three swarms in this process on 127.0.0.1 (TCP, Noise, yamux): a sender, the relay under test
//! (the mix behaviour, one Sphinx worker thread) and a receiver that is the packets' final hop;
//! routes are sender -> relay -> receiver with zero delays and 2 KiB payloads. It measures the
//! cost of one record on the packet path (tag, clock, channel), then the relay's peak four times
//! in one process, alternately without and with `--trace-links` and `--trace-truth` (files in a
//! temporary directory), and prints the ratio (a peer in the same run). The relay's own CPU per
//! packet is `benches/relay.rs`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, identity::Keypair, swarm::SwarmEvent};
use p2pmix::{
    build_swarm,
    sphinx::{
        ClientId, Delay, Destination, Geometry, Hop, KeyRing, Label, NodeId, NodeSecretKey, Relay,
        RelayConfig, ReplayCache, ReplayConfig,
        behaviour::{Behaviour, Config, Event, Stats, quantile_of},
        build_packet,
        trace::{Direction, PacketTag, TraceLimits, TraceSink, Tracer},
        unwrap_packet,
    },
};
use tokio::sync::mpsc;

const EPOCH: u64 = 1;
const PEAK_PACKETS: usize = 20_000;

enum Command {
    Send(PeerId, Vec<u8>),
}

async fn start(
    keypair: Keypair,
    behaviour: Behaviour,
    peers: Vec<(PeerId, Multiaddr)>,
    delivered: mpsc::Sender<(u64, Instant)>,
) -> (Multiaddr, mpsc::Sender<Command>) {
    let mut swarm = build_swarm(keypair, |_| behaviour).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    for (p, a) in peers {
        swarm.behaviour_mut().add_address(p, a);
    }
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Command>(8192);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(Command::Send(to, p)) => swarm.behaviour_mut().send(to, p),
                    None => return,
                },
                e = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Delivered { label, .. }) = e {
                        let mut seq = [0u8; 8];
                        seq.copy_from_slice(&label.0[..8]);
                        let _ = delivered.try_send((u64::from_le_bytes(seq), Instant::now()));
                    }
                }
            }
        }
    });
    (addr, tx)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("p2pmix-bench-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    record_cost(&dir);
    let mut peaks = [Vec::new(), Vec::new()];
    for round in 0..4 {
        let traced = round % 2 == 1;
        let tracer = traced.then(|| {
            Tracer::open(
                Some(&dir.join("links.trace")),
                Some(&dir.join("truth.trace")),
                PeerId::random(),
                TraceLimits {
                    max_lines: u64::MAX,
                    ..TraceLimits::default()
                },
            )
            .unwrap()
        });
        let peak = runtime.block_on(run(tracer.clone()));
        if let Some(t) = tracer {
            for (path, s) in t.finish().unwrap() {
                eprintln!(
                    "{}: {} written, {} dropped",
                    path.display(),
                    s.written,
                    s.dropped
                );
            }
        }
        peaks[usize::from(traced)].push(peak);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "tracing: peak {:.0} pkt/s without, {:.0} pkt/s with ({:.3} of untraced; runs {:?} and {:?})",
        mean(&peaks[0]),
        mean(&peaks[1]),
        mean(&peaks[1]) / mean(&peaks[0]),
        peaks[0].iter().map(|p| p.round()).collect::<Vec<_>>(),
        peaks[1].iter().map(|p| p.round()).collect::<Vec<_>>(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What one trace record costs the packet path: tagging a packet, reading the clock, handing the
/// record to the writer's channel (without waiting: a full channel is a counted drop).
fn record_cost(dir: &std::path::Path) {
    let tracer = Tracer::open(
        Some(&dir.join("cost.trace")),
        None,
        PeerId::random(),
        TraceLimits {
            max_lines: u64::MAX,
            channel: 1 << 20,
        },
    )
    .unwrap();
    let packet = vec![7u8; Geometry::DEFAULT.packet_size()];
    let peer = PeerId::random();
    let n = 200_000u32;
    let t = Instant::now();
    for _ in 0..n {
        tracer.link(Direction::In, &peer, PacketTag::of(&packet));
    }
    let per = t.elapsed() / n;
    let summary = tracer.finish().unwrap();
    println!(
        "trace record: {:.0} ns on the packet path ({} of {n} written, {} dropped)",
        per.as_nanos(),
        summary[0].1.written,
        summary[0].1.dropped
    );
}

/// One bench run; the relay records into `tracer` when given. Returns the peak, pkt/s.
async fn run(tracer: Option<Tracer>) -> f64 {
    let geometry = Geometry::DEFAULT;
    let mut rng = rand::rng();
    let (relay_kp, receiver_kp, sender_kp) = (
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
    );
    let (relay_peer, receiver_peer) = (
        relay_kp.public().to_peer_id(),
        receiver_kp.public().to_peer_id(),
    );
    let relay_secret = NodeSecretKey::random(&mut rng);
    let receiver_secret = NodeSecretKey::random(&mut rng);
    let route = [
        Hop {
            node: NodeId(0),
            key: relay_secret.public_key(),
            delay: Delay::ZERO,
        },
        Hop {
            node: NodeId(1),
            key: receiver_secret.public_key(),
            delay: Delay::ZERO,
        },
    ];

    // One unwrap, for the crypto bound.
    let sample = build_packet(&geometry, &route, &Destination::Drop, &[0; 2048], &mut rng).unwrap();
    let _ = sample;
    let samples: Vec<Vec<u8>> = (0..1000)
        .map(|_| build_packet(&geometry, &route, &Destination::Drop, &[0; 2048], &mut rng).unwrap())
        .collect();
    let cache = ReplayCache::new(
        ReplayConfig {
            expected_packets: 2000,
            false_positive_rate: 1e-9,
        },
        [0; 32],
    );
    let t = Instant::now();
    for mut p in samples {
        unwrap_packet(&geometry, &relay_secret, &cache, &mut p).unwrap();
    }
    let unwrap = t.elapsed() / 1000;

    let relay_for = |secret: NodeSecretKey| {
        let mut ring = KeyRing::new(
            EPOCH,
            Duration::from_secs(600),
            ReplayConfig {
                expected_packets: 1 << 22,
                false_positive_rate: 1e-9,
            },
        );
        ring.insert(EPOCH, secret).unwrap();
        let relay = Arc::new(Relay::new(
            geometry,
            RelayConfig {
                max_delay: Duration::from_secs(10),
            },
            ring,
        ));
        relay.set_topology(
            EPOCH,
            HashMap::from([(NodeId(0), relay_peer), (NodeId(1), receiver_peer)]),
        );
        relay
    };
    let config = Config {
        workers: 1,
        client_rate: 1e9,
        client_burst: 1e9,
        node_rate: 1e9,
        node_burst: 1e9,
        ..Config::default()
    };
    let (delivered_tx, mut delivered) = mpsc::channel(1 << 20);
    let (receiver_addr, _receiver) = start(
        receiver_kp,
        Behaviour::new(relay_for(receiver_secret), config),
        vec![],
        delivered_tx.clone(),
    )
    .await;
    let mut relay_behaviour = Behaviour::new(relay_for(relay_secret), config);
    if let Some(t) = tracer {
        relay_behaviour.set_trace(Arc::new(t));
    }
    let relay_stats: Arc<Stats> = relay_behaviour.stats();
    let (relay_addr, _relay) = start(
        relay_kp,
        relay_behaviour,
        vec![(receiver_peer, receiver_addr)],
        delivered_tx.clone(),
    )
    .await;
    let empty = Arc::new(Relay::new(
        geometry,
        RelayConfig {
            max_delay: Duration::ZERO,
        },
        KeyRing::new(EPOCH, Duration::ZERO, ReplayConfig::default()),
    ));
    let (_, sender) = start(
        sender_kp,
        Behaviour::new(empty, config),
        vec![(relay_peer, relay_addr)],
        delivered_tx,
    )
    .await;

    let packet = |seq: u64, rng: &mut rand::rngs::ThreadRng| {
        let mut label = [0u8; 16];
        label[..8].copy_from_slice(&seq.to_le_bytes());
        let destination = Destination::Deliver {
            client: ClientId([1; 32]),
            label: Label(label),
        };
        build_packet(&geometry, &route, &destination, &[7; 2048], rng).unwrap()
    };
    // Warm up the connections.
    for seq in 0..100 {
        sender
            .send(Command::Send(relay_peer, packet(seq, &mut rng)))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        tokio::time::timeout(Duration::from_secs(20), delivered.recv())
            .await
            .expect("warm-up")
            .unwrap();
    }

    // Peak: everything at once.
    let packets: Vec<Vec<u8>> = (0..PEAK_PACKETS as u64)
        .map(|s| packet(1_000_000 + s, &mut rng))
        .collect();
    // At most WINDOW packets in flight, so that no queue on the way overflows: this measures
    // the sustained rate, not how much a burst can be buffered.
    const WINDOW: usize = 1000;
    let t0 = Instant::now();
    let mut packets = packets.into_iter();
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut last = t0;
    while got < PEAK_PACKETS {
        while sent < PEAK_PACKETS && sent - got < WINDOW {
            let Some(p) = packets.next() else { break };
            sender.send(Command::Send(relay_peer, p)).await.unwrap();
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(5), delivered.recv()).await {
            Ok(Some((_, at))) => {
                got += 1;
                last = at;
            }
            _ => break,
        }
    }
    let peak = got as f64 / last.duration_since(t0).as_secs_f64();
    eprintln!(
        "peak: {got} of {PEAK_PACKETS} delivered in {:?}",
        last.duration_since(t0)
    );

    // Half the peak, paced, per-packet latency.
    let rate = (peak / 2.0).max(100.0);
    let count = (rate * 4.0) as u64;
    let packets: Vec<Vec<u8>> = (0..count)
        .map(|s| packet(2_000_000 + s, &mut rng))
        .collect();
    let mut sent_at = HashMap::new();
    let before = relay_stats.added_latency.snapshot();
    let start = Instant::now();
    for (i, p) in packets.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        sent_at.insert(2_000_000 + i as u64, Instant::now());
        sender.send(Command::Send(relay_peer, p)).await.unwrap();
    }
    let mut latencies = Vec::new();
    while latencies.len() < count as usize {
        match tokio::time::timeout(Duration::from_secs(5), delivered.recv()).await {
            Ok(Some((seq, at))) => {
                if let Some(sent) = sent_at.get(&seq) {
                    latencies.push(at.duration_since(*sent).as_secs_f64() * 1e3);
                }
            }
            _ => break,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut held = relay_stats.added_latency.snapshot();
    for (h, b) in held.iter_mut().zip(before) {
        *h -= b;
    }
    let ms = |q| quantile_of(&held, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    eprintln!(
        "paced at {rate:.0} pkt/s: {} of {count} delivered; end to end (two links, two unwraps) p50 {:.2} ms p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    // The relay's own figure: time held beyond the header's delay (arrival at the behaviour to
    // leaving the delay queue), as power-of-two bucket upper bounds.
    println!(
        "relay: {:.0} pkt/s, added latency p50 {:.3} ms p99 {:.3} ms, crypto-bound {:.0} pkt/s",
        peak,
        ms(0.5),
        ms(0.99),
        2.0 / unwrap.as_secs_f64()
    );
    peak
}
