//! One relay over real loopback connections, measured by its own CPU per relayed packet.
//!
//! `cargo bench -p p2pmix --bench relay` (`P2PMIX_RELAY_WORKERS=1,2` picks the relay's Sphinx
//! worker counts to run, one relay process each; default: both).
//!
//! The relay under test runs in its own process (this binary, started again with
//! `P2PMIX_BENCH_ROLE=relay`): the mix behaviour on a one-thread tokio runtime plus its Sphinx
//! workers. This process runs the sender and the receiver (two swarms, TCP + Noise + yamux on
//! 127.0.0.1). Routes are sender -> relay -> receiver, zero delays, 2 KiB payloads. The receiver
//! only counts frames (it holds no key for the packets' epoch, so each costs it one byte
//! comparison): the relay is the only party that unwraps.
//!
//! Per relay it measures:
//! - the peak: as many packets as the relay takes, at most 1000 in flight, counted at the
//!   receiver;
//! - the relay's CPU per relayed packet over that run, from `/proc/<pid>/task/*/schedstat`
//!   (nanoseconds on a CPU per thread), split into its Sphinx workers and the rest (event loop:
//!   Noise, yamux, syscalls, the behaviour);
//! - next to it, in the same run: one unwrap (alone, and per packet of a 32-packet batch) and
//!   libp2p's cost per frame, which is this process's CPU per packet (one frame sent by the
//!   sender plus one frame received by the receiver: the transport work a relay does per packet);
//! - then, paced at half the peak for 3 s, the relay's own added latency (arrival at its
//!   behaviour to leaving its delay queue, beyond the header's delay) and the batch sizes its
//!   workers saw.
//!
//! Ends with one line per relay:
//! `relay (W workers): <N> pkt/s, CPU <c> us/pkt = <r> x (unwrap + transport), added p50 <x> ms p99 <y> ms`.
//! All processes share the machine's cores, so the peak is what one relay reaches on this
//! machine next to its sender and receiver; the CPU figure does not depend on that sharing.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, identity::Keypair, swarm::SwarmEvent};
use p2pmix::{
    build_swarm,
    sphinx::{
        Delay, Destination, DropReason, Geometry, Hop, KeyRing, NodeId, NodeSecretKey, Relay,
        RelayConfig, ReplayCache, ReplayConfig,
        behaviour::{Behaviour, Config, HISTOGRAM_BUCKETS, MAX_BATCH, Stats, quantile_of},
        build_packet, unwrap_batch, unwrap_packet,
    },
};
use tokio::sync::mpsc;

const EPOCH: u64 = 1;
const PEAK_PACKETS: usize = 20_000;
const WINDOW: usize = 1000;
const ROLE: &str = "P2PMIX_BENCH_ROLE";

fn main() {
    if std::env::var_os(ROLE).is_some() {
        relay_process();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn geometry() -> Geometry {
    Geometry::DEFAULT
}

fn config(workers: usize) -> Config {
    Config {
        workers,
        client_rate: 1e9,
        client_burst: 1e9,
        node_rate: 1e9,
        node_burst: 1e9,
        ..Config::default()
    }
}

fn relay_with(
    secret: Option<NodeSecretKey>,
    topology: HashMap<NodeId, PeerId>,
) -> Arc<Relay<PeerId>> {
    let mut ring = KeyRing::new(
        EPOCH,
        Duration::from_secs(600),
        ReplayConfig {
            expected_packets: 1 << 22,
            false_positive_rate: 1e-9,
        },
    );
    if let Some(secret) = secret {
        ring.insert(EPOCH, secret).unwrap();
    }
    let relay = Arc::new(Relay::new(
        geometry(),
        RelayConfig {
            max_delay: Duration::from_secs(10),
        },
        ring,
    ));
    relay.set_topology(EPOCH, topology);
    relay
}

// ---- the relay process ----

fn hex_decode(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn relay_process() {
    let var = |name: &str| std::env::var(name).expect(name);
    let keypair = Keypair::from_protobuf_encoding(&hex_decode(&var("P2PMIX_BENCH_KEY"))).unwrap();
    let secret =
        NodeSecretKey::from_bytes(hex_decode(&var("P2PMIX_BENCH_SECRET")).try_into().unwrap())
            .unwrap();
    let receiver: PeerId = var("P2PMIX_BENCH_RECEIVER").parse().unwrap();
    let receiver_addr: Multiaddr = var("P2PMIX_BENCH_RECEIVER_ADDR").parse().unwrap();
    let workers: usize = var("P2PMIX_BENCH_WORKERS").parse().unwrap();
    // The honest sender is a node of the consensus (another mix): its frames wait in a line of
    // their own, keyed by its identity; the flood's come from a client.
    let sender: PeerId = var("P2PMIX_BENCH_SENDER").parse().unwrap();
    let me = keypair.public().to_peer_id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let relay = relay_with(
            Some(secret),
            HashMap::from([(NodeId(0), me), (NodeId(1), receiver), (NodeId(2), sender)]),
        );
        let behaviour = Behaviour::new(relay, config(workers));
        let stats = behaviour.stats();
        let mut swarm = build_swarm(keypair, |_| behaviour).unwrap();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        swarm.behaviour_mut().add_address(receiver, receiver_addr);
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        println!("addr {addr}");
        std::io::stdout().flush().unwrap();
        // Commands on stdin: "mark" remembers the counters, "report" prints what changed since;
        // end of input ends the process.
        let (tx, mut commands) = mpsc::channel::<String>(8);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut mark = Mark::of(&stats);
        loop {
            tokio::select! {
                c = commands.recv() => match c.as_deref() {
                    Some("mark") => mark = Mark::of(&stats),
                    Some("report") => {
                        println!("{}", mark.report(&stats));
                        std::io::stdout().flush().unwrap();
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = swarm.select_next_some() => {}
            }
        }
    });
}

/// The relay's counters at one moment.
struct Mark {
    forwarded: u64,
    bad_mac: u64,
    queue_full: u64,
    latency: [u64; HISTOGRAM_BUCKETS],
    batches: [u64; MAX_BATCH + 1],
}

impl Mark {
    fn of(stats: &Stats) -> Self {
        Mark {
            forwarded: stats.forwarded(),
            bad_mac: stats.dropped(DropReason::BadMac),
            queue_full: stats.dropped(DropReason::QueueFull),
            latency: stats.added_latency.snapshot(),
            batches: stats.batch_sizes(),
        }
    }

    /// `report forwarded=N bad_mac=B queue_full=Q p50_us=X p99_us=Y batches=c1,c2,...` (batch
    /// counts by size 1..).
    fn report(&self, stats: &Stats) -> String {
        let now = Mark::of(stats);
        let mut latency = now.latency;
        for (l, b) in latency.iter_mut().zip(self.latency) {
            *l -= b;
        }
        let us = |q| quantile_of(&latency, q).map_or(0, |d| d.as_micros());
        let batches: Vec<String> = now
            .batches
            .iter()
            .zip(self.batches)
            .skip(1)
            .map(|(n, b)| (n - b).to_string())
            .collect();
        format!(
            "report forwarded={} bad_mac={} queue_full={} p50_us={} p99_us={} batches={}",
            now.forwarded - self.forwarded,
            now.bad_mac - self.bad_mac,
            now.queue_full - self.queue_full,
            us(0.5),
            us(0.99),
            batches.join(",")
        )
    }
}

// ---- this process: sender, receiver, measurements ----

/// CPU time (ns) of every thread of process `pid`, by thread id, with the thread's name.
fn thread_cpu(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Some(tid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
            .unwrap_or(0);
        out.insert(tid, (name.trim().to_string(), ns));
    }
    out
}

/// CPU seconds between two snapshots: (Sphinx worker threads, all other threads).
fn cpu_between(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> (f64, f64) {
    let mut workers = 0u64;
    let mut rest = 0u64;
    for (tid, (name, ns)) in after {
        let spent = ns - before.get(tid).map_or(0, |(_, b)| *b);
        if name.starts_with("p2pmix-sphinx") {
            workers += spent;
        } else {
            rest += spent;
        }
    }
    (workers as f64 * 1e-9, rest as f64 * 1e-9)
}

struct RelayChild {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl RelayChild {
    fn command(&mut self, command: &str) -> Option<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        (command == "report").then(|| self.lines.next().unwrap().unwrap())
    }
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("0")
}

async fn start_swarm(
    keypair: Keypair,
    behaviour: Behaviour,
    peers: Vec<(PeerId, Multiaddr)>,
) -> (Multiaddr, mpsc::Sender<(PeerId, Vec<u8>)>) {
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
    let (tx, mut rx) = mpsc::channel::<(PeerId, Vec<u8>)>(8192);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some((to, p)) => swarm.behaviour_mut().send(to, p),
                    None => return,
                },
                _ = swarm.select_next_some() => {}
            }
        }
    });
    (addr, tx)
}

/// Sends 3 s of packets from `build` paced at `rate` and returns the relay's report of them,
/// with `received=<n of count>` in front (what the receiver counted).
async fn paced(
    sender: &mpsc::Sender<(PeerId, Vec<u8>)>,
    relay: &mut RelayChild,
    receiver_stats: &Stats,
    relay_peer: PeerId,
    rate: f64,
    build: &impl Fn(&mut rand::rngs::ThreadRng) -> Vec<u8>,
) -> String {
    let mut rng = rand::rng();
    let count = (rate * 3.0) as usize;
    let packets: Vec<Vec<u8>> = (0..count).map(|_| build(&mut rng)).collect();
    let base = receiver_stats.received();
    relay.command("mark");
    let start = Instant::now();
    for (i, p) in packets.into_iter().enumerate() {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        sender.send((relay_peer, p)).await.unwrap();
    }
    let _ = received_by(receiver_stats, base + count as u64).await;
    let report = relay.command("report").unwrap();
    format!(
        "received={}/{count} {report}",
        receiver_stats.received() - base
    )
}

/// Waits until the receiver has counted `target` frames; `None` after 5 s without progress.
async fn received_by(stats: &Stats, target: u64) -> Option<Instant> {
    let mut last = (stats.received(), Instant::now());
    loop {
        let got = stats.received();
        if got >= target {
            return Some(Instant::now());
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

struct Unwrap {
    alone: Duration,
    batched: Duration,
}

fn measure_unwrap(
    route: &[Hop],
    secret: &NodeSecretKey,
    rng: &mut rand::rngs::ThreadRng,
) -> Unwrap {
    let g = geometry();
    let build = |rng: &mut rand::rngs::ThreadRng| {
        build_packet(&g, route, &Destination::Drop, &[0; 2048], rng).unwrap()
    };
    let samples: Vec<Vec<u8>> = (0..1024).map(|_| build(rng)).collect();
    let cache = ReplayCache::new(
        ReplayConfig {
            expected_packets: 4096,
            false_positive_rate: 1e-9,
        },
        [0; 32],
    );
    let mut alone = samples.clone();
    let t = Instant::now();
    for p in &mut alone {
        unwrap_packet(&g, secret, &cache, p).unwrap();
    }
    let alone = t.elapsed() / 1024;
    let mut ring = KeyRing::new(EPOCH, Duration::from_secs(60), ReplayConfig::default());
    ring.insert(EPOCH, NodeSecretKey::from_bytes(secret.to_bytes()).unwrap())
        .unwrap();
    let mut batched = samples;
    let t = Instant::now();
    for chunk in batched.chunks_mut(MAX_BATCH) {
        let mut views: Vec<&mut [u8]> = chunk.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(
            unwrap_batch(&g, &ring, &mut views)
                .iter()
                .all(Result::is_ok)
        );
    }
    Unwrap {
        alone,
        batched: t.elapsed() / 1024,
    }
}

async fn run() {
    let workers: Vec<usize> = std::env::var("P2PMIX_RELAY_WORKERS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let g = geometry();
    let mut rng = rand::rng();
    let receiver_kp = Keypair::generate_ed25519();
    let receiver_peer = receiver_kp.public().to_peer_id();
    // The receiver holds no key for EPOCH: every frame is counted, then dropped at a byte
    // comparison (an unknown key id is not held against the sender).
    let receiver_behaviour = Behaviour::new(relay_with(None, HashMap::new()), config(1));
    let receiver_stats = receiver_behaviour.stats();
    let (receiver_addr, _receiver) = start_swarm(receiver_kp, receiver_behaviour, vec![]).await;

    let mut lines = Vec::new();
    for w in workers {
        let relay_kp = Keypair::generate_ed25519();
        let relay_peer = relay_kp.public().to_peer_id();
        let relay_secret = NodeSecretKey::random(&mut rng);
        let route = [
            Hop {
                node: NodeId(0),
                key: relay_secret.public_key(),
                delay: Delay::ZERO,
            },
            Hop {
                node: NodeId(1),
                key: NodeSecretKey::random(&mut rng).public_key(),
                delay: Delay::ZERO,
            },
        ];
        let unwrap = measure_unwrap(&route, &relay_secret, &mut rng);

        let sender_kp = Keypair::generate_ed25519();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "relay")
            .env(
                "P2PMIX_BENCH_SENDER",
                sender_kp.public().to_peer_id().to_string(),
            )
            .env(
                "P2PMIX_BENCH_KEY",
                hex::encode(relay_kp.to_protobuf_encoding().unwrap()),
            )
            .env("P2PMIX_BENCH_SECRET", hex::encode(relay_secret.to_bytes()))
            .env("P2PMIX_BENCH_RECEIVER", receiver_peer.to_string())
            .env("P2PMIX_BENCH_RECEIVER_ADDR", receiver_addr.to_string())
            .env("P2PMIX_BENCH_WORKERS", w.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut relay = RelayChild {
            lines: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
        };
        let relay_addr: Multiaddr = relay
            .lines
            .next()
            .unwrap()
            .unwrap()
            .strip_prefix("addr ")
            .unwrap()
            .parse()
            .unwrap();
        let empty = relay_with(None, HashMap::new());
        let (_, sender) = start_swarm(
            sender_kp,
            Behaviour::new(empty, config(1)),
            vec![(relay_peer, relay_addr.clone())],
        )
        .await;
        let build = |rng: &mut rand::rngs::ThreadRng| {
            build_packet(&g, &route, &Destination::Drop, &[7; 2048], rng).unwrap()
        };

        // Warm up the connections.
        let base = receiver_stats.received();
        for _ in 0..200 {
            sender.send((relay_peer, build(&mut rng))).await.unwrap();
        }
        received_by(&receiver_stats, base + 200)
            .await
            .expect("warm-up");

        // Peak, with at most WINDOW packets in flight.
        let packets: Vec<Vec<u8>> = (0..PEAK_PACKETS).map(|_| build(&mut rng)).collect();
        let base = receiver_stats.received();
        let (relay_before, own_before) = (thread_cpu(pid), thread_cpu(std::process::id()));
        relay.command("mark");
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut end = t0;
        let mut packets = packets.into_iter();
        loop {
            let got = receiver_stats.received() - base;
            if got >= PEAK_PACKETS as u64 {
                end = Instant::now();
                break;
            }
            while sent < PEAK_PACKETS as u64 && sent - got < WINDOW as u64 {
                let Some(p) = packets.next() else { break };
                sender.send((relay_peer, p)).await.unwrap();
                sent += 1;
            }
            if received_by(&receiver_stats, base + (got + 1).min(sent))
                .await
                .is_none()
            {
                break;
            }
        }
        let (relay_after, own_after) = (thread_cpu(pid), thread_cpu(std::process::id()));
        let peak_report = relay.command("report").unwrap();
        let relayed: u64 = field(&peak_report, "forwarded").parse().unwrap();
        let got = receiver_stats.received() - base;
        let elapsed = end.duration_since(t0).as_secs_f64();
        let peak = got as f64 / elapsed;
        let (relay_workers, relay_loop) = cpu_between(&relay_before, &relay_after);
        let (own_workers, own_rest) = cpu_between(&own_before, &own_after);
        let per = |s: f64| s / relayed.max(1) as f64 * 1e6;
        let relay_cpu = per(relay_workers + relay_loop);
        let transport = per(own_rest);
        let floor = unwrap.batched.as_secs_f64() * 1e6 + transport;
        eprintln!(
            "relay ({w} workers) peak: {got} of {PEAK_PACKETS} received in {elapsed:.2} s; relayed {relayed}; batches by size 1..{MAX_BATCH}: {}",
            field(&peak_report, "batches")
        );
        eprintln!(
            "  relay CPU per packet {relay_cpu:.1} us (Sphinx workers {:.1}, event loop {:.1}); machine busy {:.2} of 2 cores",
            per(relay_workers),
            per(relay_loop),
            (relay_workers + relay_loop + own_workers + own_rest) / elapsed
        );
        eprintln!(
            "  unwrap alone {:.1} us, in a batch of {MAX_BATCH} {:.1} us; libp2p per frame (one sent + one received, this process) {transport:.1} us; receiver's byte check {:.1} us",
            unwrap.alone.as_secs_f64() * 1e6,
            unwrap.batched.as_secs_f64() * 1e6,
            per(own_workers)
        );

        // Half the peak, paced: the relay's added latency and its batch sizes at that load.
        let rate = (peak / 2.0).max(100.0);
        let half = paced(
            &sender,
            &mut relay,
            &receiver_stats,
            relay_peer,
            rate,
            &build,
        )
        .await;
        let ms = |report: &str, key| field(report, key).parse::<f64>().unwrap() / 1e3;
        eprintln!(
            "  paced at {rate:.0} pkt/s: {} received; relay added latency p50 <= {:.3} ms p99 <= {:.3} ms; batches by size: {}",
            field(&half, "received"),
            ms(&half, "p50_us"),
            ms(&half, "p99_us"),
            field(&half, "batches")
        );

        // A quarter of the peak from the honest node, alone and then under a flood of invalid
        // frames from one client at twice the peak (each costs the relay a key agreement before
        // its MAC fails): the flood waits in its own line.
        let honest_rate = (peak / 4.0).max(100.0);
        let quiet = paced(
            &sender,
            &mut relay,
            &receiver_stats,
            relay_peer,
            honest_rate,
            &build,
        )
        .await;
        let (_, flood) = start_swarm(
            Keypair::generate_ed25519(),
            Behaviour::new(relay_with(None, HashMap::new()), config(1)),
            vec![(relay_peer, relay_addr)],
        )
        .await;
        let flood_rate = 2.0 * peak;
        // A real packet with one bit of its routing information flipped: the relay does the
        // whole key agreement before the MAC fails (random bytes would mostly fail the cheaper
        // decoding of the element).
        let mut forged = build(&mut rng);
        forged[1 + 32 + 8] ^= 1;
        let flooding = tokio::spawn(async move {
            let start = Instant::now();
            for i in 0u64.. {
                tokio::time::sleep_until(
                    (start + Duration::from_secs_f64(i as f64 / flood_rate)).into(),
                )
                .await;
                if flood.send((relay_peer, forged.clone())).await.is_err() {
                    return;
                }
            }
        });
        // Let the flood fill the relay's queues first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let flooded = paced(
            &sender,
            &mut relay,
            &receiver_stats,
            relay_peer,
            honest_rate,
            &build,
        )
        .await;
        flooding.abort();
        eprintln!(
            "  honest node paced at {honest_rate:.0} pkt/s: quiet p50 <= {:.3} ms p99 <= {:.3} ms ({} received); under a flood at {flood_rate:.0} frames/s from one client p50 <= {:.3} ms p99 <= {:.3} ms ({} received), the relay tried {} flood frames and refused {} for a full queue",
            ms(&quiet, "p50_us"),
            ms(&quiet, "p99_us"),
            field(&quiet, "received"),
            ms(&flooded, "p50_us"),
            ms(&flooded, "p99_us"),
            field(&flooded, "received"),
            field(&flooded, "bad_mac"),
            field(&flooded, "queue_full"),
        );
        lines.push(format!(
            "relay ({w} workers): {peak:.0} pkt/s, CPU {relay_cpu:.1} us/pkt = {:.2} x (unwrap {:.1} + transport {transport:.1}), added p50 {:.3} ms p99 {:.3} ms; honest p99 quiet {:.3} ms, flooded {:.3} ms",
            relay_cpu / floor,
            unwrap.batched.as_secs_f64() * 1e6,
            ms(&half, "p50_us"),
            ms(&half, "p99_us"),
            ms(&quiet, "p99_us"),
            ms(&flooded, "p99_us"),
        ));
        drop(sender);
        drop(relay);
    }
    for line in lines {
        println!("{line}");
    }
}
