//! Nothing lost, nothing twice, on the simulated mixnet (virtual time, real Sphinx relays, see
//! `sim_net`), with clients that keep their state in a real store on disk:
//! - a sender killed halfway through a message and restarted on its store: delivered once;
//! - a recipient killed halfway through several messages and restarted: each once, none twice;
//! - a recipient away for ten minutes (its gateway keeps what arrives): every message arrives
//!   and every sender is told so, none gives up;
//! - 10,000 junk fragments from a stranger who knows the address do not evict an honest
//!   message being reassembled: the junk is refused, the honest message arrives.
#![allow(missing_docs, unreachable_pub)]

mod sim_net;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use p2pmix::client::{
    Address, ClientConfig, MessageId, RoutePolicy, choose_route, e2e, fragment_capacity,
    frame::{Frame, to_payload},
};
use p2pmix_mix::{Destination, Geometry, Label, build_packet_to};
use p2pmix_sim::mix::MixMessage;
use rand::RngExt;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
use sim_net::Net;

/// A store file removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "p2pmix-client-durable-{name}-{}.redb",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        ack_slack: Duration::from_millis(300),
        ..ClientConfig::default()
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// How many times each message id was handed to client `c`.
fn receipts(net: &Net, c: usize) -> HashMap<MessageId, (usize, Vec<u8>)> {
    let mut seen: HashMap<MessageId, (usize, Vec<u8>)> = HashMap::new();
    for (id, b) in net.received_messages(c) {
        seen.entry(id).or_insert((0, b)).0 += 1;
    }
    seen
}

#[test]
fn a_sender_killed_halfway_through_a_message_resumes_it_from_its_store_and_it_arrives_once() {
    let store = Scratch::new("sender");
    let mut net = Net::new(2, 21, config());
    net.use_store(0, &store.0);
    let to_b = net.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    // 1 MiB: several hundred fragments at the client's send rate, so the kill lands mid-way.
    let big = bytes(1 << 20, 1);
    let fragments = big.len().div_ceil(fragment_capacity(0, false)) as u64;
    let id = net.send(0, to_b, &big, 0, &mut rng).unwrap();
    net.run(Duration::from_secs(5), |_| false);
    let sent_before = net.client(0).stats().fragments_sent;
    assert!(
        sent_before > fragments / 5 && sent_before < fragments * 4 / 5,
        "killed halfway: {sent_before} of {fragments} fragments sent"
    );
    net.kill_and_restart(0, Some(&store.0), Duration::from_secs(3));
    assert_eq!(net.client(0).outbox(), vec![id], "the outbox came back");
    net.run(Duration::from_secs(600), |n| !n.delivered(0).is_empty());
    assert_eq!(
        net.delivered(0),
        vec![id],
        "the resumed message is delivered"
    );
    net.run(Duration::from_secs(20), |_| false);
    let got = receipts(&net, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got.get(&id).map(|(n, b)| (*n, b == &big)),
        Some((1, true)),
        "once, intact"
    );
}

#[test]
fn a_recipient_killed_halfway_comes_back_from_its_store_and_gets_every_message_once() {
    let store = Scratch::new("recipient");
    let mut net = Net::new(2, 22, config());
    net.set_loss(0.02);
    net.use_store(1, &store.0);
    let to_b = net.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let mut sent = HashMap::new();
    for i in 0..12u8 {
        let m = bytes(1_000 + 9_000 * (i as usize % 3), i);
        sent.insert(net.send(0, to_b, &m, 0, &mut rng).unwrap(), m);
    }
    // Some messages are whole at the recipient, some partly there, when it is killed.
    net.run(Duration::from_millis(900), |_| false);
    let before = receipts(&net, 1).len();
    assert!(before < 12, "killed before the end: {before} arrived");
    net.kill_and_restart(1, Some(&store.0), Duration::from_secs(5));
    net.run(Duration::from_secs(1800), |n| n.delivered(0).len() == 12);
    assert_eq!(net.failed(0), 0);
    assert_eq!(net.delivered(0).len(), 12, "every message acknowledged");
    // Retransmitted copies of what arrived before the kill come in too; none is handed over
    // again.
    net.run(Duration::from_secs(60), |_| false);
    let got = receipts(&net, 1);
    assert_eq!(got.len(), 12, "every message");
    for (id, (n, b)) in &got {
        assert_eq!(*n, 1, "{id} handed over {n} times");
        assert_eq!(sent.get(id), Some(b), "intact");
    }
}

#[test]
fn a_recipient_away_for_ten_minutes_gets_every_message_and_no_sender_gives_up() {
    let mut net = Net::new(2, 23, config());
    net.set_loss(0.05);
    let to_b = net.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    net.go_away(1, Duration::from_secs(600));
    let mut sent = HashMap::new();
    for i in 0..8u8 {
        let m = bytes(500 + 3_000 * (i as usize % 3), i);
        sent.insert(net.send(0, to_b, &m, 0, &mut rng).unwrap(), m);
    }
    net.run(Duration::from_secs(3 * 3600), |n| {
        n.delivered(0).len() + n.failed(0) == 8
    });
    assert_eq!(
        net.failed(0),
        0,
        "no sender gave up while the recipient was away"
    );
    assert_eq!(net.delivered(0).len(), 8);
    net.run(Duration::from_secs(60), |_| false);
    let got = receipts(&net, 1);
    assert_eq!(got.len(), 8);
    for (id, (n, b)) in &got {
        assert_eq!(*n, 1);
        assert_eq!(sent.get(id), Some(b));
    }
}

/// A fragment of a message that never completes, sealed to `to` and built on a route from
/// gateway 0: what a stranger who knows the address can send.
fn junk(net: &Net, to: &Address, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let capacity = fragment_capacity(0, false);
    let data = vec![0xAA; capacity];
    let frame = Frame::Fragment {
        message: MessageId(rng.random()),
        index: 0,
        count: 2,
        ack: None,
        reply_surbs: Vec::new(),
        data: &data,
    };
    let sealed = e2e::seal(&to.noise_key, None, &frame.encode()).unwrap();
    let entry = net.topology.gateways()[0].peer;
    let route = choose_route(
        &net.topology,
        &entry,
        &to.gateway,
        &RoutePolicy::default(),
        rng,
    )
    .unwrap();
    let label = Label(rng.random());
    build_packet_to(
        &Geometry::DEFAULT,
        &route,
        &Destination::Deliver {
            client: to.client,
            label,
        },
        &to.recipient_public_key().unwrap(),
        &to_payload(&sealed),
        rng,
    )
    .unwrap()
}

#[test]
fn ten_thousand_junk_fragments_do_not_evict_an_honest_message_being_reassembled() {
    let mut net = Net::new(2, 24, config());
    let to_b = net.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let honest = bytes(300_000, 7);
    let id = net.send(0, to_b, &honest, 0, &mut rng).unwrap();
    // The honest message is partly there (and those fragments acknowledged) ...
    net.run(Duration::from_millis(500), |_| false);
    assert!(receipts(&net, 1).is_empty());
    // ... when the junk comes: more than reassembly memory holds.
    let gateway0 = net.relays[0];
    let from = net.clients[0];
    for _ in 0..10_000 {
        let packet = junk(&net, &to_b, &mut rng);
        net.sim.send(from, gateway0, MixMessage::Packet(packet));
    }
    net.run(Duration::from_secs(600), |n| !n.delivered(0).is_empty());
    assert_eq!(net.delivered(0), vec![id]);
    net.run(Duration::from_secs(10), |_| false);
    let got = receipts(&net, 1);
    assert_eq!(
        got.get(&id).map(|(n, b)| (*n, b == &honest)),
        Some((1, true))
    );
    let refused = net.client(1).stats().partials_refused;
    assert!(
        refused > 1_000,
        "the junk beyond the memory bound was refused: {refused}"
    );
}

#[test]
fn a_client_without_a_store_forgets_across_a_restart() {
    // The same kill as above without a store: the message being sent is gone (the check that
    // the store, not luck, makes the first test pass).
    let mut net = Net::new(2, 21, config());
    let to_b = net.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    net.send(0, to_b, &bytes(200_000, 1), 0, &mut rng).unwrap();
    net.run(Duration::from_millis(600), |_| false);
    net.kill_and_restart(0, None, Duration::from_secs(3));
    assert!(net.client(0).outbox().is_empty());
    net.run(Duration::from_secs(120), |_| false);
    assert!(net.delivered(0).is_empty());
    assert!(
        receipts(&net, 1).is_empty(),
        "half a message is never handed over"
    );
}
