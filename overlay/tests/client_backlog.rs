//! A program that stops reading its [`Client`]'s events does not show on the client's links
//! (issue 14: "the schedule never shows the application"), on a real network of processes over
//! 127.0.0.1 (3 authorities, 2 gateways, 6 mixes; `common::net`).
//!
//! Bob runs the real `Client` handle with a small [`HandleConfig::max_unread_events`] and reads
//! nothing while Alice's messages pile up past it. What Bob's gateway sees of him is compared
//! between a window where he reads and one where he is backlogged: the Sphinx packets arriving
//! from him (the gateway's own link trace) and his mailbox fetches (its fetch counter) go on at
//! the same pace, while the gateway hands him nothing. Then Bob reads again and every message
//! arrives exactly once, and Alice is told each was delivered.
#![allow(missing_docs, unreachable_pub)]

use std::{
    collections::HashMap,
    fs,
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId, identity::Keypair};
use p2pmix::{
    client::{
        self, Client, ClientConfig, Config, Event, HandleConfig, MessageId, ReceivedMessage,
        StaticKey,
    },
    config::Authorities,
};
use p2pmix_mix::trace::{
    Direction,
    format::{Line, parse_line},
};

mod common;
use common::{net::Net, unix_ms, wait_for};

/// Longest wait for one step on the network.
const STEP: Duration = Duration::from_secs(90);
/// Each observed window (at the default rates, about 360 packets and 60 fetches).
const WINDOW: Duration = Duration::from_secs(6);
/// Events Bob's program may leave unread before his client is backlogged.
const MAX_UNREAD: usize = 4;
/// Messages Alice sends Bob while he reads nothing (many more than [`MAX_UNREAD`]).
const MESSAGES: usize = 20;
/// Bob's gateway (node 1); Alice's is node 0.
const BOB_GATEWAY: usize = 1;
/// The gateway's link trace, in its directory.
const TRACE: &str = "links.trace";

fn start_client(net: &Net, gateway: usize, swarm: Keypair, handle: HandleConfig) -> Client {
    let address: Multiaddr = net.listen_addr(gateway).parse().unwrap();
    let config = Config {
        gateway: net.peer(gateway),
        gateway_addresses: vec![address],
        authorities: Authorities::load(&net.authorities_file()).unwrap(),
        client: ClientConfig::default(),
        store: None,
    };
    Client::start_with(
        swarm,
        client::ClientIdentity::Key(client::ClientKey::generate()),
        StaticKey::generate().unwrap(),
        config,
        handle,
        None,
    )
    .unwrap()
}

/// What the gateway counted of its clients at one moment.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: u64,
    fetches: f64,
    handed: f64,
}

fn seen(net: &Net) -> Seen {
    let m = net.metrics(BOB_GATEWAY);
    Seen {
        at_ms: unix_ms(),
        fetches: m.get("p2pmix_mailbox_fetches_total"),
        handed: m.get("p2pmix_mailbox_handed_total"),
    }
}

/// Times (µs) of the packets the gateway's trace shows arriving from `peer`.
fn arrivals_from(trace: &str, peer: PeerId) -> Vec<u64> {
    let mut number = None;
    let mut times = Vec::new();
    for line in trace.lines() {
        match parse_line(line) {
            Ok(Line::Peer { index, peer: p }) if p == peer => number = Some(index),
            Ok(Line::Link {
                direction: Direction::In,
                at_us,
                peer: p,
                ..
            }) if Some(p) == number => times.push(at_us),
            _ => {}
        }
    }
    times
}

fn count_between(times: &[u64], from: &Seen, to: &Seen) -> usize {
    let (from, to) = (from.at_ms * 1000, to.at_ms * 1000);
    times.iter().filter(|t| (from..to).contains(*t)).count()
}

/// Reads Bob's events for `limit`, recording what arrived.
async fn read_for(bob: &mut Client, limit: Duration, received: &mut HashMap<MessageId, usize>) {
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, bob.next_event()).await {
        if let Event::Received(ReceivedMessage { id, .. }) = event {
            *received.entry(id).or_default() += 1;
        }
    }
}

#[test]
fn a_program_that_reads_nothing_leaves_its_clients_links_unchanged_and_loses_nothing() {
    // Nodes send no loop cover and nobody measures: the gateway sees only Bob's traffic and
    // what is delivered to him.
    let net = Net::start_with_env(
        "backlog",
        "mix_loop_interval_us = 0\nhealth_probes_per_node = 0\n",
        |i, _| {
            if i == BOB_GATEWAY {
                vec![("P2PMIX_NODE_TRACE_LINKS".into(), TRACE.into())]
            } else {
                Vec::new()
            }
        },
    );
    let _ = net.consensus(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bob_swarm = Keypair::generate_ed25519();
    let bob_peer = bob_swarm.public().to_peer_id();
    runtime.block_on(async {
        let mut alice = start_client(
            &net,
            0,
            Keypair::generate_ed25519(),
            HandleConfig::default(),
        );
        let mut bob = start_client(
            &net,
            BOB_GATEWAY,
            bob_swarm,
            HandleConfig {
                max_unread_events: MAX_UNREAD,
            },
        );
        for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
            let deadline = tokio::time::Instant::now() + STEP;
            loop {
                match tokio::time::timeout_at(deadline, client.next_event()).await {
                    Ok(Some(Event::Consensus { .. })) => break,
                    Ok(Some(_)) => {}
                    _ => panic!("{who} never got a consensus"),
                }
            }
        }
        // Bob's fetches register him; then his pace settles.
        wait_for("bob's registration", STEP, || {
            net.log(BOB_GATEWAY)
                .contains("client registered")
                .then_some(())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Window A: Bob reads everything.
        let mut received = HashMap::new();
        let reading_from = seen(&net);
        read_for(&mut bob, WINDOW, &mut received).await;
        let reading_to = seen(&net);

        // Alice writes; Bob reads nothing. Past MAX_UNREAD events his client is backlogged and
        // takes nothing more from the gateway: wait until it hands him nothing for 2 s.
        let mut sent = HashMap::new();
        for i in 0..MESSAGES {
            let bytes = format!("message {i} for a busy program").into_bytes();
            let id = alice.send(&bob.address(), bytes.clone(), 0).await.unwrap();
            sent.insert(id, bytes);
        }
        let deadline = Instant::now() + STEP;
        let mut last = seen(&net);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = seen(&net);
            if now.handed == last.handed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway kept handing Bob packets: {last:?} -> {now:?}"
            );
            last = now;
        }

        // Window B: Bob is backlogged (Alice's events are read, so that only Bob is behind).
        let backlogged_from = seen(&net);
        let mut delivered: HashMap<MessageId, usize> = HashMap::new();
        let until = tokio::time::Instant::now() + WINDOW;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, alice.next_event()).await {
            if let Event::Delivered(id) = event {
                *delivered.entry(id).or_default() += 1;
            }
        }
        let backlogged_to = seen(&net);

        // Bob reads again: every message arrives, and Alice learns each was delivered.
        let deadline = tokio::time::Instant::now() + STEP;
        while received.len() < MESSAGES || delivered.len() < MESSAGES {
            tokio::select! {
                event = bob.next_event() => match event {
                    Some(Event::Received(ReceivedMessage { id, bytes, .. })) => {
                        assert_eq!(sent.get(&id), Some(&bytes), "a message Alice sent");
                        *received.entry(id).or_default() += 1;
                    }
                    Some(Event::Failed(id, reason)) => panic!("bob: {id} failed: {reason}"),
                    Some(_) => {}
                    None => panic!("bob's client stopped"),
                },
                event = alice.next_event() => match event {
                    Some(Event::Delivered(id)) => *delivered.entry(id).or_default() += 1,
                    Some(Event::Failed(id, reason)) => panic!("alice: {id} failed: {reason}"),
                    Some(_) => {}
                    None => panic!("alice's client stopped"),
                },
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "timed out: bob received {} of {MESSAGES}, alice was told of {}",
                    received.len(),
                    delivered.len()
                ),
            }
        }
        // Retransmissions that were under way must not arrive twice.
        read_for(&mut bob, Duration::from_secs(2), &mut received).await;
        assert!(
            received.values().all(|n| *n == 1) && delivered.values().all(|n| *n == 1),
            "each message once: received {received:?}, delivered {delivered:?}"
        );
        assert_eq!(received.len(), MESSAGES);
        assert!(received.keys().all(|id| sent.contains_key(id)));

        // What the gateway saw of Bob in each window. Its trace is flushed once a second at
        // least; the delivery phase above took longer than that.
        let trace = fs::read_to_string(net.nodes[BOB_GATEWAY].dir.join(TRACE)).unwrap();
        let arrivals = arrivals_from(&trace, bob_peer);
        let per_second =
            |n: f64, from: &Seen, to: &Seen| n * 1000.0 / (to.at_ms - from.at_ms) as f64;
        let packets = [
            per_second(
                count_between(&arrivals, &reading_from, &reading_to) as f64,
                &reading_from,
                &reading_to,
            ),
            per_second(
                count_between(&arrivals, &backlogged_from, &backlogged_to) as f64,
                &backlogged_from,
                &backlogged_to,
            ),
        ];
        let fetches = [
            per_second(
                reading_to.fetches - reading_from.fetches,
                &reading_from,
                &reading_to,
            ),
            per_second(
                backlogged_to.fetches - backlogged_from.fetches,
                &backlogged_from,
                &backlogged_to,
            ),
        ];
        eprintln!(
            "packets from bob per second (reading, backlogged): {packets:?}; fetches: {fetches:?}"
        );
        assert!(
            packets[0] > 10.0 && fetches[0] > 2.0,
            "bob's gateway saw his traffic while he read: {packets:?} {fetches:?}"
        );
        // At 60 packets a second a window holds about 360 (Poisson: a standard deviation of
        // about 19, the ratio of two windows about 0.075); a paused client sends none. The bounds
        // (over 4 standard deviations) leave room for a loaded machine and still catch a halved rate.
        let same_pace = |[before, during]: [f64; 2]| (0.65..1.54).contains(&(during / before));
        assert!(
            same_pace(packets),
            "bob's packet stream changed while he was backlogged: {packets:?} per second"
        );
        assert!(
            same_pace(fetches),
            "bob's fetch pace changed while he was backlogged: {fetches:?} per second"
        );
        assert_eq!(
            backlogged_to.handed, backlogged_from.handed,
            "a backlogged client takes nothing from its mailbox"
        );
    });
}
