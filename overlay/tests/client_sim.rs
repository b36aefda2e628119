//! Client cores over a simulated mixnet (the shared virtual-time simulator, no sockets, see
//! `sim_net`): every message arrives exactly once over lossy links and past a dead mix,
//! fragments reassemble whatever their order, replies come back through SURBs, a tampered
//! payload is never delivered, an oversized message is refused.
#![allow(missing_docs, unreachable_pub)]

mod sim_net;

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;
use p2pmix::client::{
    Address, ClientConfig, ClientEvent, FailReason, MessageId, ReceivedMessage, RouteError,
    SendError, Unroutable,
};
use rand::{Rng, RngExt};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
use sim_net::{Net, Seen};

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
    let mut sim = Net::new(2, 1, config);
    sim.set_loss(0.10);
    sim.kill(4); // the first mix of layer 2
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut sent = HashMap::new();
    for i in 0..30 {
        let bytes = message(&mut rng, i);
        let id = sim.send(0, to_b, &bytes, 0, &mut rng).unwrap();
        sent.insert(id, bytes);
    }
    sim.run(Duration::from_secs(3600), |s| {
        s.delivered(0).len() + s.failed(0) == 30
    });
    for e in sim.events(0) {
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
    let stats = sim.client(0).stats();
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
    let mut sim = Net::new(2, 2, config);
    sim.tamper(6); // a layer-3 mix flips a byte of what passes through it
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    // Twenty one-fragment messages first: about half cross the tamperer on the way.
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let bytes = vec![i; 100];
        sim.send(0, to_b, &bytes, 0, &mut rng).unwrap();
        sent.push(bytes);
    }
    sim.run(Duration::from_secs(600), |s| s.delivered(0).len() == 20);
    assert_eq!(
        sim.delivered(0).len(),
        20,
        "retransmission got around the tamperer"
    );
    assert!(
        sim.client(1).stats().undecodable > 0,
        "tampered fragments arrived and were refused"
    );
    let question = b"what time is it?".to_vec();
    let id = sim.send(0, to_b, &question, 2, &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| {
        s.received_messages(1).len() == 21
    });
    let handle = sim
        .received(1)
        .iter_mut()
        .find_map(|e| match e {
            ClientEvent::Received(ReceivedMessage { bytes, reply, .. }) if *bytes == question => {
                reply.take()
            }
            _ => None,
        })
        .expect("the question arrives with reply SURBs");
    assert_eq!(handle.surbs(), 2);
    sim.client(1).reply(handle, b"noon", &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| {
        s.events(0).iter().any(|e| {
            matches!(
                e,
                ClientEvent::Received(ReceivedMessage {
                    in_reply_to: Some(_),
                    ..
                })
            )
        })
    });
    let answer = sim.events(0).iter().find_map(|e| match e {
        ClientEvent::Received(ReceivedMessage {
            bytes,
            in_reply_to: Some(q),
            ..
        }) => Some((bytes.clone(), *q)),
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
    let mut sim = Net::new(3, 5, ClientConfig::default());
    let to_b = sim.address(1);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    // 40 fragments, each on its own route with its own exponential delays: they arrive in
    // another order than they were sent.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let id = sim.send(0, to_b, &big, 0, &mut rng).unwrap();
    sim.run(Duration::from_secs(600), |s| !s.delivered(0).is_empty());
    assert_eq!(sim.delivered(0), vec![id]);
    assert_eq!(sim.received_messages(1), vec![(id, big)]);
    let limit = ClientConfig::default().max_message;
    assert_eq!(
        sim.send(0, to_b, &vec![0; limit + 1], 0, &mut rng),
        Err(SendError::TooLarge {
            len: limit + 1,
            max: limit
        })
    );
}

#[test]
fn a_message_that_cannot_be_routed_fails_and_the_stream_keeps_its_pace() {
    let config = ClientConfig {
        max_attempts: 8,
        ..ClientConfig::default()
    };
    let mut sim = Net::new(2, 9, config);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    // An address naming a gateway the consensus does not have.
    let nowhere = Address {
        gateway: PeerId::random(),
        ..sim.address(1)
    };
    let before = sim.client(0).stats();
    sim.send(0, nowhere, b"lost cause", 0, &mut rng).unwrap();
    sim.run(Duration::from_secs(120), |s| s.failed(0) > 0);
    assert_eq!(sim.failed(0), 1, "the message fails after its attempts");
    // The sender heard why at once (once: the reason never changed), and the failure says it.
    let why = RouteError::UnknownGateway(nowhere.gateway);
    let told: Vec<&ClientEvent> = sim
        .events(0)
        .iter()
        .filter(|e| matches!(e, ClientEvent::Unroutable(..)))
        .collect();
    assert!(
        matches!(told[..], [ClientEvent::Unroutable(_, Unroutable::Route(r))] if *r == why),
        "one Unroutable event naming the missing gateway: {told:?}"
    );
    let failure = sim.events(0).iter().find_map(|e| match e {
        ClientEvent::Failed(_, reason) => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(failure, Some(FailReason::Unroutable { reason: Unroutable::Route(ref r), .. }) if *r == why),
        "the failure names the reason: {failure:?}"
    );
    let after = sim.client(0).stats();
    assert_eq!(after.fragments_sent, before.fragments_sent);
    // Every send tick that carried the unroutable fragment sent drop cover instead.
    assert!(after.drop_cover_sent - before.drop_cover_sent >= config.max_attempts as u64);
}

/// Why `bodies` do not look like uniformly random bytes, if they do not: a chi-square test of
/// the byte histogram over all of them, and a balance test of every bit position across them
/// (a constant field, such as a zero tag, a length or a pattern byte, is a bit that never
/// changes). Thresholds at about six standard deviations.
fn not_random(bodies: &[&[u8]]) -> Option<String> {
    let n = bodies.len();
    let size = bodies[0].len();
    let mut histogram = [0u64; 256];
    let mut ones = vec![0u32; 8 * size];
    for body in bodies {
        assert_eq!(body.len(), size, "every delivered body has the same size");
        for (i, &b) in body.iter().enumerate() {
            histogram[b as usize] += 1;
            for bit in 0..8 {
                ones[8 * i + bit] += u32::from((b >> bit) & 1);
            }
        }
    }
    let expected = (n * size) as f64 / 256.0;
    let chi2: f64 = histogram
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    // 255 degrees of freedom: mean 255, standard deviation 22.6.
    if chi2 > 255.0 + 6.0 * 22.6 {
        return Some(format!("byte histogram chi-square {chi2:.0}"));
    }
    let sd = (n as f64).sqrt() / 2.0;
    if let Some((pos, &c)) = ones
        .iter()
        .enumerate()
        .find(|(_, c)| (f64::from(**c) - n as f64 / 2.0).abs() > 6.0 * sd)
    {
        return Some(format!(
            "bit {} of byte {} is one in {c} of {n} bodies",
            pos % 8,
            pos / 8
        ));
    }
    None
}

/// What the exit gateway sees of a packet after its own layer: loop cover, forward messages
/// (anonymous and known senders, short and long), acknowledgements and replies all have one
/// size and pass the same byte statistics. Before the recipient layer, loop cover was all zeros
/// and forward bodies showed their zero tag, length and Noise pattern byte.
#[test]
fn the_exit_gateway_sees_every_kind_of_packet_as_random_bytes() {
    const SAMPLES: usize = 64;
    let mut seen: HashMap<&str, Vec<Vec<u8>>> = HashMap::new();
    for known_sender in [false, true] {
        let config = ClientConfig {
            known_sender,
            ..ClientConfig::default()
        };
        let mut sim = Net::new(1, 21 + u64::from(known_sender), config);
        let to_b = sim.address(1);
        let long = p2pmix::client::fragment_capacity(0, known_sender);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        sim.tap(0);
        sim.tap(1);
        // Short messages carry a reply SURB (Bob answers each), long ones fill a fragment.
        for i in 0..SAMPLES {
            sim.send(0, to_b, &[i as u8; 10], 1, &mut rng).unwrap();
            sim.send(0, to_b, &vec![i as u8; long], 0, &mut rng)
                .unwrap();
        }
        sim.run(Duration::from_secs(600), |s| {
            s.received_messages(1).len() == 2 * SAMPLES
        });
        let handles: Vec<_> = sim
            .received(1)
            .iter_mut()
            .filter_map(|e| match e {
                ClientEvent::Received(ReceivedMessage { reply, .. }) => reply.take(),
                _ => None,
            })
            .collect();
        assert_eq!(handles.len(), SAMPLES);
        for handle in handles {
            sim.client(1).reply(handle, b"re", &mut rng).unwrap();
        }
        sim.run(Duration::from_secs(600), |s| {
            s.received_messages(0).len() == SAMPLES && s.delivered(0).len() == 2 * SAMPLES
        });
        for (kind, body) in sim.tapped(0).into_iter().chain(sim.tapped(1)) {
            let name = match kind {
                Seen::Loop => "loop",
                Seen::Ack => "ack",
                Seen::Reply => "reply",
                Seen::Forward { known, len } => {
                    assert_eq!(known, known_sender);
                    match (known, len == long) {
                        (false, false) => "forward N short",
                        (false, true) => "forward N long",
                        (true, false) => "forward X short",
                        (true, true) => "forward X long",
                    }
                }
                // A retransmitted duplicate, say: not one of the kinds counted.
                Seen::Other => continue,
            };
            seen.entry(name).or_default().push(body);
        }
    }
    let kinds = [
        "loop",
        "ack",
        "reply",
        "forward N short",
        "forward N long",
        "forward X short",
        "forward X long",
    ];
    let size = seen["ack"][0].len();
    let mut failures = Vec::new();
    for kind in kinds {
        let bodies: Vec<&[u8]> = seen[kind].iter().take(SAMPLES).map(Vec::as_slice).collect();
        assert_eq!(bodies.len(), SAMPLES, "{kind}: enough samples");
        assert!(bodies.iter().all(|b| b.len() == size), "{kind}: one size");
        if let Some(why) = not_random(&bodies) {
            failures.push(format!("{kind}: {why}"));
        }
    }
    assert!(failures.is_empty(), "the gateway can tell: {failures:#?}");
}
