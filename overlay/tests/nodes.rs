//! Mix nodes as real processes on 127.0.0.1 (port 0 everywhere): 3 authorities, 2 gateways and 6
//! mixes. Nodes are given one bootstrap address and find each other through Kademlia, are
//! admitted into the consensus and relay packets gateway -> 3 layers -> gateway, each hop holding
//! a packet for the delay in its header; a flooding peer is cut off while other traffic flows; a
//! mix killed mid-epoch keeps its peer id, relays again at once and refuses replays of what it
//! unwrapped before.
//!
//! The tests run one at a time (11 processes each on a 2-core machine).
#![allow(missing_docs, unreachable_pub)]

use std::{collections::HashMap, fs, process::Command, sync::Mutex, thread::sleep, time::Duration};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, identity::Keypair, swarm::SwarmEvent};
use p2pmix::{
    build_swarm,
    directory::{VerifiedConsensus, peer_id, sphinx_key},
    proto::v1::{ConsensusNode, Role},
    sphinx::{
        ClientId, Delay, Destination, Geometry, HEADER_VERSION, Hop, Label, NodeId, build_packet,
    },
};

mod common;
use common::{
    BIN, Scratch,
    client::{TestClient, packet_with_delays},
    keygen,
    net::{EPOCH_MS, Net, spawn},
    netns::Namespace,
    sleep_until, unix_ms, wait_for,
};

/// The delay every mix hop of the test routes asks for.
const MIX_DELAY: Duration = Duration::from_millis(150);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A packet from gateway `entry` through one mix per layer to gateway `exit`, every mix hop
/// holding it for [`MIX_DELAY`].
fn packet_through(
    entry: &ConsensusNode,
    mixes: [&ConsensusNode; 3],
    exit: &ConsensusNode,
    label: u16,
) -> Vec<u8> {
    packet_with_delays(entry, mixes, exit, label, [MIX_DELAY; 3])
}

fn gateways(c: &VerifiedConsensus) -> Vec<&ConsensusNode> {
    c.gateways().collect()
}

fn layer(c: &VerifiedConsensus, l: u32) -> Vec<&ConsensusNode> {
    c.layer(l).collect()
}

/// Sends `count` packets entry gateway -> layers -> exit gateway, cycling through the mixes of
/// each layer; returns how many went through each mix (by peer).
fn send_traffic(
    net: &Net,
    client: &TestClient,
    consensus: &VerifiedConsensus,
    count: u16,
    first_label: u16,
) -> HashMap<PeerId, u64> {
    let gws = gateways(consensus);
    send_traffic_via(net, client, consensus, [gws[0], gws[1]], count, first_label)
}

/// [`send_traffic`] from gateway `ends[0]` to gateway `ends[1]`.
fn send_traffic_via(
    net: &Net,
    client: &TestClient,
    consensus: &VerifiedConsensus,
    [entry, exit]: [&ConsensusNode; 2],
    count: u16,
    first_label: u16,
) -> HashMap<PeerId, u64> {
    let entry_peer = peer_id(entry).unwrap();
    let entry_addr = net.listen_addr(net.index_of(entry_peer));
    let layers = [
        layer(consensus, 1),
        layer(consensus, 2),
        layer(consensus, 3),
    ];
    let mut through = HashMap::new();
    for i in 0..count {
        let mixes = [
            layers[0][i as usize % layers[0].len()],
            layers[1][(i as usize / 2) % layers[1].len()],
            layers[2][(i as usize / 3) % layers[2].len()],
        ];
        for m in mixes {
            *through.entry(peer_id(m).unwrap()).or_default() += 1;
        }
        let packet = packet_through(entry, mixes, exit, first_label + i);
        client.send(&entry_addr, entry_peer, packet);
    }
    through
}

/// Packets the test sent that the exit gateway delivered (its own loop cover, which also ends
/// there, left out).
fn delivered_at_exit(net: &Net, consensus: &VerifiedConsensus) -> f64 {
    delivered_at(net, peer_id(gateways(consensus)[1]).unwrap())
}

/// Packets delivered at gateway `exit`, loop cover left out.
fn delivered_at(net: &Net, exit: PeerId) -> f64 {
    let m = net.metrics(net.index_of(exit));
    m.get("p2pmix_packets_delivered_total") - m.get("p2pmix_loop_cover_returned_total")
}

#[test]
fn nodes_find_each_other_get_admitted_and_relay_with_the_chosen_delays() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::start("relay");
    // Kademlia: before any consensus exists (it is published 5/8 into epoch 0), every node has
    // found all seven others from one bootstrap address.
    let publish = net.genesis + EPOCH_MS * 5 / 8;
    let discovered = wait_for(
        "every node to know the 7 others through Kademlia",
        Duration::from_secs(40),
        || {
            let counts: Vec<f64> = (0..8)
                .map(|i| net.metrics(i).get("p2pmix_kad_peers"))
                .collect();
            counts.iter().all(|c| *c >= 7.0).then_some(counts)
        },
    );
    assert!(
        unix_ms() < publish,
        "discovery happened before the first consensus: {discovered:?}"
    );

    // Admission: all eight nodes, mixes spread 2/2/2 over three layers.
    let consensus = net.consensus(1);
    assert_eq!(consensus.nodes().len(), 8, "every node admitted");
    assert_eq!(gateways(&consensus).len(), 2);
    for l in 1..=3 {
        assert_eq!(layer(&consensus, l).len(), 2, "layer {l}");
        assert!(
            layer(&consensus, l)
                .iter()
                .all(|n| n.role == Role::Mix as i32)
        );
    }

    // Relay in epoch 1.
    sleep_until(net.epoch_start(1) + 500);
    let client = TestClient::new();
    let count = 30;
    let through = send_traffic(&net, &client, &consensus, count, 0);
    let delivered = wait_for_delivery(&net, &consensus, count as f64);
    assert_eq!(delivered, count as f64, "every packet arrives exactly once");

    // Every mix held each packet for its header's delay (150 ms), give or take what the machine
    // adds: nothing left before 100 ms, everything by 250 ms.
    for (peer, n) in through {
        let m = net.metrics(net.index_of(peer));
        let held = m.get("p2pmix_hold_seconds_count");
        assert_eq!(
            held, n as f64,
            "{peer} forwarded what was routed through it"
        );
        assert_eq!(
            m.get("p2pmix_hold_seconds_bucket{le=\"0.1\"}"),
            0.0,
            "{peer} held too briefly"
        );
        assert_eq!(
            m.get("p2pmix_hold_seconds_bucket{le=\"0.25\"}"),
            n as f64,
            "{peer} held too long"
        );
        assert_eq!(
            m.get("p2pmix_packets_forwarded_total"),
            n as f64,
            "{peer} forwarded"
        );
    }
}

fn wait_for_delivery(net: &Net, consensus: &VerifiedConsensus, expected: f64) -> f64 {
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "delivery at the exit gateway",
            Duration::from_secs(30),
            || {
                let d = delivered_at_exit(net, consensus);
                (d >= expected).then_some(d)
            },
        )
    }));
    match got {
        Ok(d) => {
            // Let duplicates, if any, arrive before counting.
            sleep(Duration::from_secs(1));
            let after = delivered_at_exit(net, consensus);
            assert_eq!(after, d, "no packet delivered twice");
            d
        }
        Err(e) => {
            net.dump_logs();
            std::panic::resume_unwind(e)
        }
    }
}

#[test]
fn a_flooding_peer_is_cut_off_while_other_traffic_flows() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::start("flood");
    let consensus = net.consensus(1);
    sleep_until(net.epoch_start(1) + 500);
    let entry = peer_id(gateways(&consensus)[0]).unwrap();
    let entry_index = net.index_of(entry);
    let entry_addr = net.listen_addr(entry_index);

    // The attacker: one valid packet replayed, then garbage with the version byte, far faster
    // than a client may send. Replays and bad MACs are dropped and counted but are no fault (an
    // honest packet for a retired key fails the MAC too); sending past the rate is, and the
    // gateway cuts a peer off after 100 faults.
    let mut attacker = TestClient::new();
    let replayed = {
        let gws = gateways(&consensus);
        let l = [
            layer(&consensus, 1),
            layer(&consensus, 2),
            layer(&consensus, 3),
        ];
        packet_through(gws[0], [l[0][0], l[1][0], l[2][0]], gws[1], 9_999)
    };
    for _ in 0..60 {
        attacker.send(&entry_addr, entry, replayed.clone());
    }
    // The replays first, within the attacker's rate, before the flood spends its bucket.
    wait_for("the replays to be dropped", Duration::from_secs(30), || {
        let m = net.metrics(entry_index);
        (m.get("p2pmix_packets_dropped_total{reason=\"replay\"}") >= 59.0).then_some(())
    });
    let size = Geometry::DEFAULT.packet_size();
    for i in 0..3_000u32 {
        let mut garbage = vec![(i % 251) as u8; size];
        garbage[0] = HEADER_VERSION;
        attacker.send(&entry_addr, entry, garbage);
    }
    // Honest traffic at the same time, from another peer.
    let honest = TestClient::new();
    let count = 20;
    send_traffic(&net, &honest, &consensus, count, 0);

    // The gateway cuts the attacker off.
    let closed = attacker.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), attacker.closed.recv()).await
    });
    assert_eq!(
        closed.ok().flatten(),
        Some(entry),
        "the attacker was disconnected"
    );
    // Honest packets all arrive (plus the one copy of the replayed packet that was fresh).
    let delivered = wait_for_delivery(&net, &consensus, count as f64 + 1.0);
    assert_eq!(delivered, count as f64 + 1.0);
    let m = net.metrics(entry_index);
    let (bad_mac, replays, rate_limited) = (
        m.get("p2pmix_packets_dropped_total{reason=\"bad_mac\"}"),
        m.get("p2pmix_packets_dropped_total{reason=\"replay\"}"),
        m.get("p2pmix_packets_dropped_total{reason=\"rate_limited\"}"),
    );
    // 59 replays, garbage dropped for its MAC, then past the rate until the 101st fault.
    assert_eq!(replays, 59.0, "every replayed copy but the first dropped");
    assert!(bad_mac >= 1.0, "{bad_mac} bad MACs");
    assert!(rate_limited > 100.0, "{rate_limited} frames past the rate");
    assert!(m.get("p2pmix_peers_banned_total") >= 1.0);
    assert!(
        net.log(entry_index)
            .contains("cut off a peer for invalid traffic")
    );
}

/// A packet whose route starts at `hops[0]` (as it arrives there from the hop before), each hop
/// holding it for its delay, delivered by the last hop.
fn packet_via(hops: &[(&ConsensusNode, Duration)], label: u16) -> Vec<u8> {
    let route: Vec<Hop> = hops
        .iter()
        .map(|(n, delay)| Hop {
            node: NodeId(n.node_id as u16),
            key: sphinx_key(n).expect("a valid key"),
            delay: Delay::from_micros(delay.as_micros() as u32),
        })
        .collect();
    let mut l = [0u8; 16];
    l[..2].copy_from_slice(&label.to_be_bytes());
    build_packet(
        &Geometry::DEFAULT,
        &route,
        &Destination::Deliver {
            client: ClientId([7; 32]),
            label: Label(l),
        },
        b"through a restarted mix",
        &mut rand::rng(),
    )
    .unwrap()
}

/// A mix killed with SIGKILL in the middle of an epoch and started again on its data directory
/// relays again within seconds under the same epoch key (before this change it retired the key
/// of the epoch under way, and dropped everything as an unknown key for the rest of the epoch),
/// and packets it unwrapped before the kill, replayed to it after, are dropped as replays: their
/// tags were on disk before the packets left.
#[test]
fn a_mix_killed_mid_epoch_relays_again_at_once_and_refuses_replays_of_what_it_unwrapped() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::start("restart");
    let consensus = net.consensus(1);
    sleep_until(net.epoch_start(1) + 300);
    let victim_node = layer(&consensus, 2)[0];
    let victim_peer = peer_id(victim_node).unwrap();
    let victim = net.index_of(victim_peer);
    let exit = gateways(&consensus)[1];
    let via_victim = |label| {
        packet_via(
            &[
                (victim_node, MIX_DELAY),
                (layer(&consensus, 3)[0], Duration::ZERO),
                (exit, Duration::ZERO),
            ],
            label,
        )
    };
    let client = TestClient::new();
    let count = 10u16;
    let before: Vec<Vec<u8>> = (0..count).map(via_victim).collect();
    let address = net.listen_addr(victim);
    for p in &before {
        client.send(&address, victim_peer, p.clone());
    }
    let delivered = wait_for_delivery(&net, &consensus, f64::from(count));
    assert_eq!(delivered, f64::from(count));

    // SIGKILL, then the same data directory and port.
    let listen = address.split("/p2p/").next().unwrap().to_string();
    net.kill(victim);
    let restarted = std::time::Instant::now();
    net.start_node_listening(victim, Some(&listen));
    assert_eq!(
        net.peer(victim),
        victim_peer,
        "same peer id after the restart"
    );
    assert_eq!(net.listen_addr(victim), address);

    // Fresh packets under the same epoch key go through again.
    for label in count..2 * count {
        client.send(&address, victim_peer, via_victim(label));
    }
    let delivered = wait_for_delivery(&net, &consensus, f64::from(2 * count));
    assert_eq!(delivered, f64::from(2 * count));
    eprintln!(
        "relaying again {:?} after the restart began (epoch {} of 8 s epochs, now {})",
        restarted.elapsed(),
        consensus.epoch(),
        (unix_ms() - net.genesis) / EPOCH_MS
    );
    assert!(
        net.log(victim)
            .contains("epoch keys taken back with their replay filters"),
        "{}",
        net.log(victim)
    );

    // The packets it unwrapped before the kill, replayed: all dropped as replays.
    for p in &before {
        client.send(&address, victim_peer, p.clone());
    }
    let replays = wait_for("the replays to be dropped", Duration::from_secs(30), || {
        let m = net.metrics(victim);
        let r = m.get("p2pmix_packets_dropped_total{reason=\"replay\"}");
        (r >= f64::from(count)).then_some(m)
    });
    assert_eq!(
        replays.get("p2pmix_packets_dropped_total{reason=\"unknown_key\"}"),
        0.0
    );
    sleep(Duration::from_secs(1));
    assert_eq!(
        delivered_at_exit(&net, &consensus),
        f64::from(2 * count),
        "no replayed packet was delivered"
    );
}

#[test]
fn node_refuses_bad_flags_and_files_and_retries_an_unreachable_bootstrap_peer() {
    let scratch = Scratch::new("node-errors");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(&scratch.0)
            .output()
            .unwrap()
    };
    let out = run(&["node", "--role", "relay"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'relay'"));
    let out = run(&["node", "--authorities", "missing.toml", "--data-dir", "d"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    // An authorities file without the schedule is refused with the reason.
    let key = keygen(&scratch.0.join("a"));
    fs::write(
        scratch.0.join("no-network.toml"),
        format!("[[authority]]\npublic_key = \"{key}\"\n"),
    )
    .unwrap();
    let out = run(&[
        "node",
        "--authorities",
        "no-network.toml",
        "--data-dir",
        "d",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[network]"));
    // A bootstrap peer that refuses connections: the node says so and keeps retrying.
    fs::write(
        scratch.0.join("authorities.toml"),
        format!(
            "[[authority]]\npublic_key = \"{key}\"\n[network]\ngenesis_unix_ms = {}\nepoch_ms = 8000\n",
            unix_ms()
        ),
    )
    .unwrap();
    // Traces are refused on a network its authorities file does not declare a test network,
    // by nodes and clients alike, before anything is recorded.
    let refused = |out: std::process::Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("test_network = true"), "{stderr}");
        assert!(!scratch.0.join("links.trace").exists());
    };
    refused(run(&[
        "node",
        "--authorities",
        "authorities.toml",
        "--data-dir",
        "d",
        "--trace-links",
        "links.trace",
    ]));
    let gateway = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", PeerId::random());
    let address = run(&[
        "client",
        "address",
        "--data-dir",
        "c",
        "--gateway",
        &gateway,
    ]);
    let address = String::from_utf8_lossy(&address.stdout).trim().to_string();
    refused(run(&[
        "client",
        "send",
        "--data-dir",
        "c",
        "--authorities",
        "authorities.toml",
        "--to",
        &address,
        "--message",
        "hi",
        "--trace-links",
        "links.trace",
    ]));
    let node = spawn(
        &scratch.0,
        &[
            "node",
            "--authorities",
            "authorities.toml",
            "--data-dir",
            "d",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1",
        ],
        "info",
    );
    let log = || fs::read_to_string(scratch.0.join("log")).unwrap_or_default();
    wait_for(
        "two failed bootstrap attempts",
        Duration::from_secs(30),
        || (log().matches("bootstrap peer unreachable").count() >= 2).then_some(()),
    );
    drop(node);
}

#[test]
fn a_node_bootstraps_from_a_dns4_name() {
    let scratch = Scratch::new("node-dns");
    let key = keygen(&scratch.0.join("a"));
    fs::write(
        scratch.0.join("authorities.toml"),
        format!(
            "[[authority]]\npublic_key = \"{key}\"\n[network]\ngenesis_unix_ms = {}\nepoch_ms = 8000\ntest_network = true\n",
            unix_ms()
        ),
    )
    .unwrap();
    let start = |name: &str, bootstrap: Option<&str>| {
        let dir = scratch.0.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut args = vec![
            "node",
            "--authorities",
            "../authorities.toml",
            "--data-dir",
            "data",
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap", b]);
        }
        (spawn(&dir, &args, "info"), dir)
    };
    let (first, first_dir) = start("first", None);
    let listen = wait_for("the first node to listen", Duration::from_secs(30), || {
        fs::read_to_string(first_dir.join("data/listen-addrs"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    });
    // /ip4/127.0.0.1/tcp/PORT/p2p/ID -> /dns4/localhost/tcp/PORT/p2p/ID
    let by_name = listen.replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1);
    assert!(by_name.starts_with("/dns4/localhost/tcp/"), "{by_name}");
    let (second, second_dir) = start("second", Some(&by_name));
    let log = || fs::read_to_string(second_dir.join("log")).unwrap_or_default();
    wait_for(
        &format!("the second node to reach {by_name}"),
        Duration::from_secs(30),
        || log().contains("reached bootstrap peer").then_some(()),
    );
    drop((first, second));
}

/// Makes the test binary the flooder of
/// `a_thousand_identities_from_one_address_hold_one_addresss_share_of_a_gateways_connections`.
const FLOOD_ENV: &str = "P2PMIX_TEST_FLOOD_TARGET";
/// Fresh identities the flooder makes.
const FLOOD_IDENTITIES: usize = 1_000;
/// Connections one address may hold at a node (the mix behaviour's default).
const PER_ADDRESS: usize = 64;

/// The flooder, run in a namespace of its own: [`FLOOD_IDENTITIES`] fresh identities dial
/// `target`, 50 at a time (under the gateway's limit on pending connections), and hold what
/// they get; every 200 ms it prints `held <connections open now> tried <dials so far>`.
fn flood_child(target: &str) -> ! {
    let addr: Multiaddr = target.parse().expect("a multiaddr");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let held = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let report = {
            let held = held.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    println!("held {}", held.load(std::sync::atomic::Ordering::Relaxed));
                }
            })
        };
        for i in 0..FLOOD_IDENTITIES {
            let (addr, held) = (addr.clone(), held.clone());
            tokio::spawn(async move {
                let mut swarm = build_swarm(Keypair::generate_ed25519(), |_| {
                    libp2p::swarm::dummy::Behaviour
                })
                .unwrap();
                if swarm.dial(addr).is_err() {
                    return;
                }
                loop {
                    let change = match swarm.select_next_some().await {
                        SwarmEvent::ConnectionEstablished { .. } => 1,
                        SwarmEvent::ConnectionClosed { .. } => -1,
                        _ => continue,
                    };
                    held.fetch_add(change, std::sync::atomic::Ordering::Relaxed);
                }
            });
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = report.await;
    });
    std::process::exit(0)
}

/// Identities are free: 1 000 of them from one address (a namespace of the test's own) dial the
/// entry gateway and try to hold its connections (each also costing it a Noise handshake).
/// The gateway holds 64 of them, refuses the rest as `address` (or as `pending`, before their
/// handshake, when 16 of the address's are under way) and counts them; honest packets
/// from another address still go through it. Before the per-address connection limit, all
/// 1 000 were held (up to the node's 8 192 incoming connections).
#[test]
fn a_thousand_identities_from_one_address_hold_one_addresss_share_of_a_gateways_connections() {
    const NAME: &str =
        "a_thousand_identities_from_one_address_hold_one_addresss_share_of_a_gateways_connections";
    if let Ok(target) = std::env::var(FLOOD_ENV) {
        flood_child(&target);
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ns = match Namespace::create("flood") {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: this test needs root and network namespaces ({why})");
            return;
        }
    };
    let host = ns.host;
    let net = Net::start_listening("connflood", |i| {
        if i == 0 {
            vec![format!("/ip4/{host}/tcp/0")]
        } else {
            Vec::new()
        }
    });
    let consensus = net.consensus(1);
    sleep_until(net.epoch_start(1) + 500);
    let entry = net.peer(0);
    let gws = gateways(&consensus);
    let (entry_node, exit_node) = if peer_id(gws[0]).unwrap() == entry {
        (gws[0], gws[1])
    } else {
        (gws[1], gws[0])
    };
    let flood_addr = net
        .listen_addrs(0)
        .into_iter()
        .find(|a| a.starts_with(&format!("/ip4/{host}/")))
        .expect("the gateway listens on the link to the namespace");

    let mut child = ns
        .command(&std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(FLOOD_ENV, format!("{flood_addr}/p2p/{entry}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let flooder = common::Running { child };
    let held = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(n) = line.strip_prefix("held ").and_then(|n| n.parse().ok()) {
                    held.store(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    // Refused once connected (the address's share is held) or before the handshake (as many
    // of its handshakes under way as one address may have: the flood dials 50 at a time).
    let refused = |net: &Net| {
        let m = net.metrics(0);
        m.get("p2pmix_connections_refused_total{reason=\"address\"}")
            + m.get("p2pmix_connections_refused_total{reason=\"pending\"}")
    };
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "the gateway to refuse the flood's connections past its share",
            Duration::from_secs(90),
            || (refused(&net) >= (FLOOD_IDENTITIES - PER_ADDRESS) as f64 * 0.9).then_some(()),
        )
    }));
    if let Err(e) = got {
        net.dump_logs();
        std::panic::resume_unwind(e);
    }
    // Let the last refusals reach the flooder's count.
    sleep(Duration::from_secs(2));
    let held_now = held.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=PER_ADDRESS as i64).contains(&held_now),
        "the flood holds {held_now} connections (at most {PER_ADDRESS}; at least one, or the test tried nothing)"
    );
    let refused_now = refused(&net);
    eprintln!("the flood holds {held_now} connections; {refused_now} refused");
    assert!(
        refused_now <= (FLOOD_IDENTITIES - held_now as usize) as f64,
        "{refused_now} refused for {FLOOD_IDENTITIES} identities, {held_now} held"
    );

    // Honest packets from 127.0.0.1 go through the flooded gateway.
    let honest = TestClient::new();
    let count = 20;
    let exit = peer_id(exit_node).unwrap();
    let before = delivered_at(&net, exit);
    send_traffic_via(&net, &honest, &consensus, [entry_node, exit_node], count, 0);
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "honest packets through the flooded gateway",
            Duration::from_secs(60),
            || {
                let d = delivered_at(&net, exit) - before;
                (d >= f64::from(count)).then_some(d)
            },
        )
    }));
    match delivered {
        Ok(d) => assert_eq!(d, f64::from(count)),
        Err(e) => {
            net.dump_logs();
            std::panic::resume_unwind(e);
        }
    }
    // The flood still holds no more than its share.
    let held_end = held.load(std::sync::atomic::Ordering::Relaxed);
    assert!(held_end <= PER_ADDRESS as i64, "{held_end} held at the end");
    drop(flooder);
    drop(ns);
}
