//! Honest latency through a gateway that 1,000 free identities flood (issue 16).
//!
//! `sudo cargo bench -p p2pmix --bench gateway_flood` (needs root for a network namespace; says
//! so and stops without it).
//!
//! The test network of `tests/` (3 authorities, 2 gateways, 6 mixes, real processes on
//! 127.0.0.1, 8 s epochs) with the first gateway also listening on a veth link to a namespace
//! this bench makes. Honest probes go from a client in this process on 127.0.0.1, one at a time:
//! entry gateway -> one mix per layer -> exit gateway, each mix hop holding the packet for a
//! sender-chosen exponential delay (mean 50 ms, as Nym's default), and the probe's latency is
//! from its send to the exit's delivered counter moving (scraped every 2 ms). The same seeded
//! delays are drawn in both phases, so the phases differ only in the flood.
//!
//! The flood: this binary started again in the namespace (one address, as a household or a
//! rented host has) makes 1,000 identities; each dials the entry gateway and, once connected,
//! sends it copies of one valid packet at 90% of the consensus's per-client rate. Every copy
//! after the first costs the gateway a whole key agreement and is then dropped as a replay,
//! which is never held against a client: nothing gets the flood banned. What stops it: the
//! gateway holds 64 connections from one address, admits one address's clients together at 32
//! clients' rate (the rest refused before any unwrap), and its workers take turns by source, so
//! the flood waits behind itself.
//!
//! Prints per phase: the probes' p50, p90, p99 and max; the entry gateway's own added latency
//! (its `p2pmix_added_latency_seconds` histogram over the phase, as the bucket edge the p99
//! falls under); and the flood's counts at the gateway. Ends with
//! `gateway flood: honest p99 quiet <q> ms, flooded <f> ms = <r> x (...)`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    io::BufRead,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use common::{
    client::{TestClient, packet_with_delays},
    net::{EPOCH_MS, Metrics, Net, QUIET},
    netns::Namespace,
    sleep_until, unix_ms,
};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol, swarm::SwarmEvent};
use p2pmix::{
    build_swarm,
    directory::{VerifiedConsensus, peer_id, sphinx_key},
    node::install::ClientRate,
    proto::v1::ConsensusNode,
    sphinx::{
        Delay, Destination, Geometry, Hop, KeyRing, NodeId, Relay, RelayConfig, ReplayConfig,
        behaviour::{Behaviour, Config},
        build_packet,
    },
};
use rand::RngExt;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// Makes this binary the flooder; the value is the gateway's multiaddr with `/p2p/`.
const FLOOD_TARGET: &str = "P2PMIX_BENCH_FLOOD_TARGET";
/// The file the flooder reads its packet from (rewritten every epoch).
const FLOOD_PACKET: &str = "P2PMIX_BENCH_FLOOD_PACKET";
/// Frames a second each connected flood identity sends.
const FLOOD_RATE: &str = "P2PMIX_BENCH_FLOOD_RATE";
/// Identities the flooder makes.
const IDENTITIES: usize = 1_000;
/// Probes per phase.
const PROBES: usize = 200;
/// Mean of a mix hop's exponential delay.
const MEAN_DELAY: Duration = Duration::from_millis(50);
/// A probe not delivered after this is counted lost.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

fn main() {
    if let Ok(target) = std::env::var(FLOOD_TARGET) {
        flooder(&target);
    }
    let ns = match Namespace::create("gwflood") {
        Ok(ns) => ns,
        Err(why) => {
            println!("gateway_flood: skipped: needs root and network namespaces ({why})");
            return;
        }
    };
    let host = ns.host;
    let net = Net::start_with_env_listening(
        "gwflood",
        QUIET,
        |_, _| Vec::new(),
        |i| {
            if i == 0 {
                vec![format!("/ip4/{host}/tcp/0")]
            } else {
                Vec::new()
            }
        },
    );
    let mut view = View::new(&net);
    sleep_until(net.epoch_start(1) + 500);
    let packet_file = net.scratch.0.join("flood-packet");
    view.refresh(&net, &packet_file);
    let client = TestClient::new();

    // Warm the connections up.
    for i in 0..10 {
        let _ = view.probe(&net, &client, &packet_file, i, [Duration::ZERO; 3]);
    }
    let quiet = phase(&net, &client, &mut view, &packet_file, "quiet");

    let flood_addr = net
        .listen_addrs(0)
        .into_iter()
        .find(|a| a.starts_with(&format!("/ip4/{host}/")))
        .expect("the gateway listens on the link to the namespace");
    let rate = 0.9 * ClientRate::from_parameters(&view.consensus.parameters()).rate;
    let mut child = ns
        .command(&std::env::current_exe().unwrap())
        .env(FLOOD_TARGET, format!("{flood_addr}/p2p/{}", net.peer(0)))
        .env(FLOOD_PACKET, &packet_file)
        .env(FLOOD_RATE, rate.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let flooder = common::Running { child };
    let held = Arc::new(AtomicI64::new(-1));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(n) = line
                    .strip_prefix("held ")
                    .and_then(|r| r.split_whitespace().next()?.parse().ok())
                {
                    held.store(n, Ordering::Relaxed);
                }
            }
        });
    }
    // Let the flood reach its share first (every identity dialled, the queues full).
    let replays = |m: &Metrics| m.get("p2pmix_packets_dropped_total{reason=\"replay\"}");
    let start = Instant::now();
    let before = replays(&net.metrics(0));
    while replays(&net.metrics(0)) - before < 20_000.0 && start.elapsed() < Duration::from_secs(60)
    {
        view.refresh(&net, &packet_file);
        sleep(Duration::from_millis(200));
    }
    println!(
        "  flood up after {:.1} s: {} connections held by the flood's 1,000 identities, {:.0} \
         per identity and second",
        start.elapsed().as_secs_f64(),
        held.load(Ordering::Relaxed),
        rate
    );
    let flooded = phase(&net, &client, &mut view, &packet_file, "flooded");
    let held_end = held.load(Ordering::Relaxed);
    drop(flooder);
    let peak_mib = net
        .pid(0)
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            let kib: f64 = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib / 1024.0)
        })
        .unwrap_or(f64::NAN);

    let ratio = flooded.p99 / quiet.p99;
    println!(
        "gateway flood: honest p99 quiet {:.0} ms, flooded {:.0} ms = {ratio:.2} x (p50 {:.0} -> \
         {:.0} ms, lost {} -> {}); the entry gateway's own p99 <= {} -> <= {} ms; the flood \
         held {held_end} connections, the gateway dropped {:.0} of its frames as replays after \
         a key agreement each and refused {:.0} for its address's rate and {:.0} for a full \
         queue before any; the gateway's peak resident memory {peak_mib:.1} MiB",
        quiet.p99,
        flooded.p99,
        quiet.p50,
        flooded.p50,
        quiet.lost,
        flooded.lost,
        quiet.gateway_p99_ms,
        flooded.gateway_p99_ms,
        flooded.replays,
        flooded.rate_limited,
        flooded.queue_full,
    );
    drop(net);
    drop(ns);
}

/// What one phase measured.
struct Phase {
    p50: f64,
    p99: f64,
    lost: usize,
    gateway_p99_ms: String,
    replays: f64,
    rate_limited: f64,
    queue_full: f64,
}

/// [`PROBES`] probes with the delays of one seed; prints the phase's line.
fn phase(
    net: &Net,
    client: &TestClient,
    view: &mut View,
    packet_file: &std::path::Path,
    name: &str,
) -> Phase {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let before = net.metrics(0);
    let mut latencies = Vec::new();
    let mut lost = 0;
    for i in 0..PROBES {
        let delays = [(); 3].map(|()| {
            let u: f64 = rng.random();
            MEAN_DELAY.mul_f64(-(1.0 - u).ln())
        });
        match view.probe(net, client, packet_file, i, delays) {
            Some(latency) => latencies.push(latency.as_secs_f64() * 1e3),
            // A lost probe counts as the limit: a flood that drops honest packets must not
            // look faster.
            None => {
                lost += 1;
                latencies.push(PROBE_LIMIT.as_secs_f64() * 1e3);
            }
        }
    }
    let after = net.metrics(0);
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let drops = |reason: &str| {
        let series = format!("p2pmix_packets_dropped_total{{reason=\"{reason}\"}}");
        after.get(&series) - before.get(&series)
    };
    let p = Phase {
        p50: at(0.5),
        p99: at(0.99),
        lost,
        gateway_p99_ms: bucket_quantile(&before, &after, "p2pmix_added_latency_seconds", 0.99),
        replays: drops("replay"),
        rate_limited: drops("rate_limited"),
        queue_full: drops("queue_full"),
    };
    println!(
        "  {name}: {} probes delivered, {lost} lost (counted as {} ms); p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, \
         max {:.0} ms; the entry gateway's added latency p99 <= {} ms; at the gateway: \
         {:.0} frames in, {:.0} replays, {:.0} rate-limited, {:.0} queue full",
        PROBES - lost,
        PROBE_LIMIT.as_millis(),
        p.p50,
        at(0.9),
        p.p99,
        at(1.0),
        p.gateway_p99_ms,
        after.get("p2pmix_packets_received_total") - before.get("p2pmix_packets_received_total"),
        p.replays,
        p.rate_limited,
        p.queue_full,
    );
    p
}

/// The upper edge (in ms) of the histogram bucket `q` of the observations between two scrapes
/// falls in.
fn bucket_quantile(before: &Metrics, after: &Metrics, name: &str, q: f64) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = after
        .0
        .iter()
        .filter_map(|(series, &count)| {
            let le = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let edge = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((edge, count - before.get(series)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total && total > 0.0)
        .map_or("?".to_string(), |(edge, _)| format!("{}", edge * 1e3))
}

/// The consensus of the epoch under way and the route ends.
struct View {
    epoch: u64,
    consensus: VerifiedConsensus,
}

impl View {
    fn new(net: &Net) -> View {
        View {
            epoch: 1,
            consensus: net.consensus(1),
        }
    }

    /// Follows the epoch: the consensus to build with, and a fresh flood packet under its keys.
    fn refresh(&mut self, net: &Net, packet_file: &std::path::Path) {
        let epoch = (unix_ms().saturating_sub(net.genesis) / EPOCH_MS).max(1);
        if epoch != self.epoch || !packet_file.exists() {
            if epoch != self.epoch {
                self.consensus = net.consensus(epoch);
                self.epoch = epoch;
            }
            let entry = self.node(net.peer(0));
            let packet = build_packet(
                &Geometry::DEFAULT,
                &[Hop {
                    node: NodeId(entry.node_id as u16),
                    key: sphinx_key(entry).expect("a valid key"),
                    delay: Delay::from_micros(0),
                }],
                &Destination::Drop,
                b"",
                &mut rand::rng(),
            )
            .unwrap();
            let tmp = packet_file.with_extension("tmp");
            std::fs::write(&tmp, &packet).unwrap();
            std::fs::rename(&tmp, packet_file).unwrap();
        }
    }

    fn node(&self, peer: PeerId) -> &ConsensusNode {
        self.consensus
            .gateways()
            .chain((1..=3).flat_map(|l| self.consensus.layer(l)))
            .find(|n| peer_id(n) == Some(peer))
            .expect("the node is in the consensus")
    }

    /// One probe through mixes picked by `i`; its latency, or `None` if it was not delivered
    /// within [`PROBE_LIMIT`].
    fn probe(
        &mut self,
        net: &Net,
        client: &TestClient,
        packet_file: &std::path::Path,
        i: usize,
        delays: [Duration; 3],
    ) -> Option<Duration> {
        self.refresh(net, packet_file);
        let (entry, exit) = (self.node(net.peer(0)), self.node(net.peer(1)));
        let mixes = [1, 2, 3].map(|l| {
            let layer: Vec<&ConsensusNode> = self.consensus.layer(l).collect();
            layer[(i / l as usize) % layer.len()]
        });
        let packet = packet_with_delays(entry, mixes, exit, i as u16, delays);
        let delivered = || {
            let m = net.metrics(1);
            m.get("p2pmix_packets_delivered_total") - m.get("p2pmix_loop_cover_returned_total")
        };
        let before = delivered();
        let sent = Instant::now();
        client.send(&net.listen_addr(0), net.peer(0), packet);
        while sent.elapsed() < PROBE_LIMIT {
            if delivered() > before {
                return Some(sent.elapsed());
            }
            sleep(Duration::from_millis(2));
        }
        None
    }
}

/// The flooder, in the namespace: [`IDENTITIES`] fresh identities dial `target`, 50 at a time;
/// each one connected sends the packet of [`FLOOD_PACKET`] at [`FLOOD_RATE`]; an identity
/// refused dials again 5 to 10 s later. Prints `held <connections> sent <frames>` every second.
fn flooder(target: &str) -> ! {
    let addr: Multiaddr = target.parse().expect("a multiaddr");
    let Some(Protocol::P2p(gateway)) = addr.iter().last() else {
        panic!("{target} names no peer");
    };
    let rate: f64 = std::env::var(FLOOD_RATE).unwrap().parse().unwrap();
    let packet_file = std::path::PathBuf::from(std::env::var(FLOOD_PACKET).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let packet = Arc::new(RwLock::new(std::fs::read(&packet_file).unwrap()));
        let held = Arc::new(AtomicI64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        {
            let (packet, held, sent) = (packet.clone(), held.clone(), sent.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(p) = std::fs::read(&packet_file) {
                        *packet.write().unwrap() = p;
                    }
                    println!(
                        "held {} sent {}",
                        held.load(Ordering::Relaxed),
                        sent.load(Ordering::Relaxed)
                    );
                }
            });
        }
        let relay = Arc::new(Relay::new(
            Geometry::DEFAULT,
            RelayConfig {
                max_delay: Duration::from_secs(1),
            },
            KeyRing::new(0, Duration::from_secs(1), ReplayConfig::default()),
        ));
        for i in 0..IDENTITIES {
            let (addr, relay) = (addr.clone(), relay.clone());
            let (packet, held, sent) = (packet.clone(), held.clone(), sent.clone());
            tokio::spawn(async move {
                let mut swarm = build_swarm(Keypair::generate_ed25519(), |_| {
                    Behaviour::new(
                        relay,
                        Config {
                            workers: 1,
                            ..Config::default()
                        },
                    )
                })
                .unwrap();
                swarm.behaviour_mut().add_address(gateway, addr.clone());
                let mut connected = false;
                let mut next_dial = tokio::time::Instant::now();
                let mut owed = 0.0;
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if connected {
                                owed += rate * 0.05;
                                let copy = packet.read().unwrap().clone();
                                while owed >= 1.0 {
                                    owed -= 1.0;
                                    swarm.behaviour_mut().send(gateway, copy.clone());
                                    sent.fetch_add(1, Ordering::Relaxed);
                                }
                            } else if tokio::time::Instant::now() >= next_dial {
                                let _ = swarm.dial(addr.clone());
                                let wait = 5_000 + (i as u64 * 7_919) % 5_000;
                                next_dial = tokio::time::Instant::now() + Duration::from_millis(wait);
                            }
                        }
                        event = swarm.select_next_some() => match event {
                            SwarmEvent::ConnectionEstablished { .. } if !connected => {
                                connected = true;
                                held.fetch_add(1, Ordering::Relaxed);
                            }
                            SwarmEvent::ConnectionClosed { num_established: 0, .. } if connected => {
                                connected = false;
                                owed = 0.0;
                                held.fetch_sub(1, Ordering::Relaxed);
                            }
                            _ => {}
                        },
                    }
                }
            });
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        std::future::pending::<()>().await;
    });
    std::process::exit(0)
}
