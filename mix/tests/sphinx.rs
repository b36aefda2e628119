//! Properties of the packet format: round trips, tamper detection, replay, SURBs, bad input.
#![allow(missing_docs, unreachable_pub)]

mod common;

use common::{EPOCH, Network, deliver, rng, small_replay};
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, HEADER_VERSION, KeyRing, Label, NodeSecretKey,
    OpenError, Processed, ReplayCache, Surb, SurbKeys, SurbKeysError, UnwrapError, body,
    build_packet, create_surb, open_payload, unwrap_packet,
};
use proptest::prelude::*;

fn indices(len: usize, offset: usize) -> Vec<usize> {
    (0..len).map(|i| (i + offset) % 8).collect()
}

fn final_payload(net: &Network, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
    let body = body(&net.geometry, packet).ok_or(OpenError::Tampered)?;
    open_payload(&net.geometry, body).map(<[u8]>::to_vec)
}

fn padded(payload: &[u8], size: usize) -> Vec<u8> {
    let mut out = payload.to_vec();
    out.resize(size, 0);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random routes of 1..=5 hops and random payloads arrive intact, each hop seeing exactly
    /// the next hop and delay the sender chose.
    #[test]
    fn random_routes_round_trip(
        hops in 1usize..=5,
        offset in 0usize..8,
        delays in proptest::collection::vec(any::<u32>(), 5),
        payload in proptest::collection::vec(any::<u8>(), 0..=2048),
        seed in any::<u64>(),
    ) {
        let net = Network::new(8, 1);
        let mut route = net.route(&indices(hops, offset));
        for (hop, d) in route.iter_mut().zip(&delays) {
            hop.delay = Delay::from_micros(*d);
        }
        let packet = build_packet(&net.geometry, &route, &deliver(1, 2), &payload, &mut rng(seed)).unwrap();
        prop_assert_eq!(packet.len(), net.geometry.packet_size());
        let (trace, out) = net.walk(route[0].node, packet);
        prop_assert_eq!(trace.len(), hops);
        for (i, (node, outcome)) in trace.iter().enumerate() {
            prop_assert_eq!(*node, route[i].node);
            let expected = if i + 1 < hops {
                Processed::Forward { next: route[i + 1].node, delay: route[i].delay }
            } else {
                Processed::Final { destination: deliver(1, 2), delay: route[i].delay }
            };
            prop_assert_eq!(outcome, &Ok(expected));
        }
        prop_assert_eq!(final_payload(&net, &out), Ok(padded(&payload, 2048)));
    }

    /// Any single bit flipped in the header a hop receives is caught by that hop.
    #[test]
    fn header_bit_flip_rejected_where_seen(hops in 1usize..=5, at in 0usize..5, bit in 0usize..(324 * 8), seed in any::<u64>()) {
        let at = at % hops;
        let net = Network::new(8, 2);
        let route = net.route(&indices(hops, 0));
        let mut packet = build_packet(&net.geometry, &route, &deliver(1, 2), b"hi", &mut rng(seed)).unwrap();
        for hop in &route[..at] {
            net.node(hop.node).ring.process(&net.geometry, &mut packet).unwrap();
        }
        packet[bit / 8] ^= 1 << (bit % 8);
        let outcome = net.node(route[at].node).ring.process(&net.geometry, &mut packet);
        prop_assert!(matches!(outcome, Err(UnwrapError::Mac | UnwrapError::InvalidElement | UnwrapError::UnknownVersion(_))), "{outcome:?}");
    }

    /// A bit flipped in the body at any hop passes the mixes (bodies are not authenticated per
    /// hop, so that replies look like forward messages) and is caught at the end.
    #[test]
    fn body_bit_flip_detected_at_final_hop(hops in 1usize..=5, at in 0usize..5, bit in 0usize..(2064 * 8), seed in any::<u64>()) {
        let at = at % hops;
        let net = Network::new(8, 3);
        let route = net.route(&indices(hops, 3));
        let mut packet = build_packet(&net.geometry, &route, &deliver(1, 2), b"payload", &mut rng(seed)).unwrap();
        for hop in &route[..at] {
            net.node(hop.node).ring.process(&net.geometry, &mut packet).unwrap();
        }
        let header = net.geometry.header_size();
        packet[header + bit / 8] ^= 1 << (bit % 8);
        let mut last = Ok(Processed::Forward { next: route[0].node, delay: Delay::ZERO });
        for hop in &route[at..] {
            last = net.node(hop.node).ring.process(&net.geometry, &mut packet);
            prop_assert!(last.is_ok());
        }
        let is_final = matches!(last, Ok(Processed::Final { .. }));
        prop_assert!(is_final);
        prop_assert_eq!(final_payload(&net, &packet), Err(OpenError::Tampered));
    }

    /// Bytes off the wire never panic a node, whatever their length or content.
    #[test]
    fn arbitrary_bytes_are_rejected_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000), id in any::<u8>()) {
        let net = Network::new(1, 4);
        let mut packet = bytes;
        if packet.len() > 2000 {
            // Packet-sized, and (mostly) with the version byte, so the bytes reach the element
            // decoding and the MAC check.
            packet.resize(net.geometry.packet_size(), 0);
            packet[0] = if id < 200 { HEADER_VERSION } else { id };
        }
        prop_assert!(net.nodes[0].ring.process(&net.geometry, &mut packet).is_err());
    }
}

/// Every bit of every header at every hop of one five-hop packet, exhaustively.
#[test]
fn every_header_bit_flip_is_rejected_exhaustively() {
    let net = Network::new(5, 5);
    let route = net.route(&[0, 1, 2, 3, 4]);
    let mut packet =
        build_packet(&net.geometry, &route, &deliver(9, 9), b"x", &mut rng(5)).unwrap();
    for hop in &route {
        let ring = &net.node(hop.node).ring;
        for bit in 0..net.geometry.header_size() * 8 {
            let mut tampered = packet.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let outcome = ring.process(&net.geometry, &mut tampered);
            assert!(
                matches!(
                    outcome,
                    Err(UnwrapError::Mac
                        | UnwrapError::InvalidElement
                        | UnwrapError::UnknownVersion(_))
                ),
                "hop {:?} bit {bit}: {outcome:?}",
                hop.node
            );
        }
        ring.process(&net.geometry, &mut packet).unwrap();
    }
}

#[test]
fn replays_are_rejected_at_every_hop() {
    let net = Network::new(5, 6);
    let route = net.route(&[0, 1, 2, 3, 4]);
    let mut packet =
        build_packet(&net.geometry, &route, &deliver(1, 1), b"once", &mut rng(6)).unwrap();
    for hop in &route {
        let ring = &net.node(hop.node).ring;
        let mut copy = packet.clone();
        ring.process(&net.geometry, &mut packet).unwrap();
        assert_eq!(
            ring.process(&net.geometry, &mut copy),
            Err(UnwrapError::Replay)
        );
        assert_eq!(
            ring.for_epoch(EPOCH).unwrap().replay_cache().hits(),
            1,
            "hit counted"
        );
    }
}

#[test]
fn forged_packets_do_not_poison_the_replay_cache() {
    let net = Network::new(2, 7);
    let route = net.route(&[0, 1]);
    let packet = build_packet(&net.geometry, &route, &deliver(1, 1), b"x", &mut rng(7)).unwrap();
    // Same element (same shared secret, same tag) but a broken MAC arrives first.
    let mut forged = packet.clone();
    forged[40] ^= 1;
    let ring = &net.nodes[0].ring;
    assert_eq!(
        ring.process(&net.geometry, &mut forged),
        Err(UnwrapError::Mac)
    );
    let mut genuine = packet;
    assert!(ring.process(&net.geometry, &mut genuine).is_ok());
}

#[test]
fn wrong_epoch_key_is_rejected() {
    let net = Network::new(3, 8);
    // Built for a key the node does not hold (a stale consensus, a retired epoch): nothing in
    // the header says so, and no live key's MAC verifies.
    let mut foreign = net.route(&[0, 1, 2]);
    foreign[0].key = NodeSecretKey::random(&mut rng(98)).public_key();
    let packet = build_packet(&net.geometry, &foreign, &deliver(1, 1), b"x", &mut rng(8)).unwrap();
    assert_eq!(
        net.nodes[0]
            .ring
            .process(&net.geometry, &mut packet.clone()),
        Err(UnwrapError::Mac)
    );
    let other = NodeSecretKey::random(&mut rng(99));
    let cache = ReplayCache::new(small_replay(), [0; 32]);
    assert_eq!(
        unwrap_packet(&net.geometry, &other, &cache, &mut packet.clone()),
        Err(UnwrapError::Mac)
    );
    // A node without the current epoch's key (lost at a restart) cannot tell such a packet
    // from an honest one built for the key it lost: not a forgery, an unknown key.
    let mut ring = KeyRing::new(EPOCH, std::time::Duration::from_secs(60), small_replay());
    ring.insert(EPOCH + 1, NodeSecretKey::random(&mut rng(97)))
        .unwrap();
    assert_eq!(
        ring.process(&net.geometry, &mut packet.clone()),
        Err(UnwrapError::UnknownKey)
    );
}

/// What every hop sees of a packet does not say which epoch's key its sender used: a client on
/// the previous consensus (during the grace period) or a little ahead at a boundary sends
/// packets that look like everyone's. Before, the first byte named the epoch, so such packets
/// stood out at every hop for a whole epoch.
#[test]
fn a_header_does_not_say_which_epoch_key_built_it() {
    let g = Geometry::DEFAULT;
    let t0 = common::now();
    let mut r = rng(31);
    let mut ring = KeyRing::new(
        EPOCH - 1,
        std::time::Duration::from_secs(60),
        small_replay(),
    );
    ring.insert(EPOCH - 1, NodeSecretKey::random(&mut r))
        .unwrap();
    ring.insert(EPOCH, NodeSecretKey::random(&mut r)).unwrap();
    ring.advance(EPOCH, t0);
    ring.insert(EPOCH + 1, NodeSecretKey::random(&mut r))
        .unwrap();
    const PER_EPOCH: usize = 300;
    let mut headers: Vec<Vec<Vec<u8>>> = Vec::new();
    for epoch in [EPOCH - 1, EPOCH, EPOCH + 1] {
        let hop = p2pmix_mix::Hop {
            node: p2pmix_mix::NodeId(0),
            key: ring.for_epoch(epoch).unwrap().public_key(),
            delay: Delay::ZERO,
        };
        let mut seen = Vec::new();
        for _ in 0..PER_EPOCH {
            let mut packet = build_packet(&g, &[hop], &deliver(1, 1), b"x", &mut r).unwrap();
            seen.push(packet[..g.header_size()].to_vec());
            let (opened, _) = ring.process_keyed(&g, &mut packet).unwrap();
            assert_eq!(
                opened, epoch,
                "opened by trial with the key it was built for"
            );
        }
        headers.push(seen);
    }
    // The only bytes in clear that are not pseudo-random: the same for every epoch.
    for seen in &headers {
        assert!(seen.iter().all(|h| h[0] == p2pmix_mix::HEADER_VERSION));
    }
    // The rest: byte values pooled over the header, previous-key packets against current-key
    // ones, in 16 bins (chi-square, 15 degrees of freedom; 50 is far past p = 0.00001).
    let histogram = |seen: &Vec<Vec<u8>>| {
        let mut bins = [0f64; 16];
        for h in seen {
            for &b in &h[1..] {
                bins[usize::from(b >> 4)] += 1.0;
            }
        }
        bins
    };
    let current = histogram(&headers[1]);
    for other in [&headers[0], &headers[2]] {
        let other = histogram(other);
        let chi: f64 = current
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).powi(2) / (a + b))
            .sum();
        assert!(chi < 50.0, "byte statistics differ: chi-square {chi:.1}");
    }
}

#[test]
fn malformed_sizes_and_all_zero_are_rejected() {
    let net = Network::new(1, 9);
    let size = net.geometry.packet_size();
    let ring = &net.nodes[0].ring;
    for len in [0, 1, size - 1, size + 1, 2 * size] {
        assert_eq!(
            ring.process(&net.geometry, &mut vec![HEADER_VERSION; len]),
            Err(UnwrapError::WrongSize {
                expected: size,
                got: len
            }),
            "length {len}"
        );
    }
    // All zero: not this format's version...
    assert_eq!(
        ring.process(&net.geometry, &mut vec![0u8; size]),
        Err(UnwrapError::UnknownVersion(0))
    );
    // ...and with the version byte the all-zero element is the identity.
    let mut zero = vec![0u8; size];
    zero[0] = HEADER_VERSION;
    let secret = NodeSecretKey::random(&mut rng(10));
    let cache = ReplayCache::new(small_replay(), [0; 32]);
    assert_eq!(
        unwrap_packet(&net.geometry, &secret, &cache, &mut zero),
        Err(UnwrapError::InvalidElement)
    );
    // A non-canonical element encoding.
    let mut packet = vec![0u8; size];
    packet[0] = HEADER_VERSION;
    packet[1..33].fill(0xff);
    assert_eq!(
        ring.process(&net.geometry, &mut packet),
        Err(UnwrapError::InvalidElement)
    );
}

#[test]
fn drop_cover_ends_in_drop() {
    let net = Network::new(5, 11);
    let route = net.route(&[0, 1, 2]);
    let packet =
        build_packet(&net.geometry, &route, &Destination::Drop, b"", &mut rng(11)).unwrap();
    let (trace, _) = net.walk(route[0].node, packet);
    assert_eq!(
        trace.last().map(|t| t.1),
        Some(Ok(Processed::Final {
            destination: Destination::Drop,
            delay: route[2].delay
        }))
    );
}

#[test]
fn surb_round_trip_and_single_use() {
    let net = Network::new(5, 12);
    let geometry = net.geometry;
    let back = net.route(&[4, 3, 2, 1, 0]);
    let client = ClientId([7; 32]);
    let label = Label([8; 16]);
    let (surb, keys) = create_surb(&geometry, &back, client, label, &mut rng(12)).unwrap();
    assert_eq!(keys.label(), label);

    // The SURB travels inside a message, as bytes.
    let bytes = surb.to_bytes();
    assert_eq!(bytes.len(), Surb::encoded_size(&geometry));
    let received = Surb::from_bytes(&geometry, &bytes).unwrap();
    let reused = Surb::from_bytes(&geometry, &bytes).unwrap();
    let first = received.first_hop();
    let reply = received.into_reply(&geometry, b"the answer").unwrap();
    // The first hop must not see the reply in clear.
    assert!(!reply.windows(10).any(|w| w == b"the answer"));

    let (trace, mut out) = net.walk(first, reply);
    assert_eq!(trace.len(), 5);
    assert_eq!(
        trace.last().map(|t| t.1),
        Some(Ok(Processed::Final {
            destination: Destination::Deliver { client, label },
            delay: back[4].delay
        }))
    );
    // The gateway cannot read it; the creator can.
    let header = geometry.header_size();
    assert_eq!(
        open_payload(&geometry, &out[header..]),
        Err(OpenError::Tampered)
    );
    let payload = keys.open_reply(&geometry, &mut out[header..]).unwrap();
    assert_eq!(&payload[..10], b"the answer");
    assert!(payload[10..].iter().all(|&b| b == 0));

    // A second use of the same SURB dies at its first hop.
    let mut again = reused.into_reply(&geometry, b"twice").unwrap();
    assert_eq!(
        net.node(first).ring.process(&geometry, &mut again),
        Err(UnwrapError::Replay)
    );
}

#[test]
fn tampered_reply_is_detected_by_its_creator() {
    let net = Network::new(3, 13);
    let geometry = net.geometry;
    let back = net.route(&[0, 1, 2]);
    let (surb, keys) = create_surb(
        &geometry,
        &back,
        ClientId([1; 32]),
        Label([2; 16]),
        &mut rng(13),
    )
    .unwrap();
    let mut reply = surb.into_reply(&geometry, b"r").unwrap();
    reply[geometry.header_size() + 100] ^= 4;
    let (trace, mut out) = net.walk(back[0].node, reply);
    assert!(
        matches!(trace.last(), Some((_, Ok(Processed::Final { .. })))),
        "the tampered reply must still reach its creator's gateway: {trace:?}"
    );
    let header = geometry.header_size();
    assert_eq!(
        keys.open_reply(&geometry, &mut out[header..]),
        Err(OpenError::Tampered)
    );
}

#[test]
fn surb_keys_survive_their_encoding_and_bad_encodings_are_errors() {
    let net = Network::new(5, 15);
    let geometry = net.geometry;
    let back = net.route(&[4, 3, 2, 1, 0]);
    let label = Label([9; 16]);
    let (surb, keys) =
        create_surb(&geometry, &back, ClientId([3; 32]), label, &mut rng(15)).unwrap();
    // The creator writes its keys to disk and restarts: the restored keys read the reply.
    let stored = keys.to_bytes();
    assert_eq!(stored.len(), SurbKeys::encoded_size(back.len()));
    drop(keys);
    let restored = SurbKeys::from_bytes(&stored).unwrap();
    assert_eq!(restored.label(), label);
    let reply = surb.into_reply(&geometry, b"after a restart").unwrap();
    let (_, mut out) = net.walk(back[0].node, reply);
    let header = geometry.header_size();
    let payload = restored.open_reply(&geometry, &mut out[header..]).unwrap();
    assert_eq!(&payload[..15], b"after a restart");
    assert_eq!(
        restored.to_bytes()[..],
        stored[..],
        "the encoding is canonical"
    );

    // Every cut, a foreign version and impossible hop counts are errors.
    for len in 0..stored.len() {
        assert!(
            SurbKeys::from_bytes(&stored[..len]).is_err(),
            "cut at {len}"
        );
    }
    let mut longer = stored.to_vec();
    longer.push(0);
    assert_eq!(
        SurbKeys::from_bytes(&longer).err(),
        Some(SurbKeysError::Truncated)
    );
    let mut version = stored.to_vec();
    version[0] = 2;
    assert_eq!(
        SurbKeys::from_bytes(&version).err(),
        Some(SurbKeysError::Version(2))
    );
    let mut hops = stored.to_vec();
    hops[49] = 0;
    assert_eq!(
        SurbKeys::from_bytes(&hops).err(),
        Some(SurbKeysError::Hops(0))
    );
}

#[test]
fn surb_decoding_checks_length() {
    let g = Geometry::DEFAULT;
    let size = Surb::encoded_size(&g);
    for len in [0, size - 1, size + 1] {
        assert!(Surb::from_bytes(&g, &vec![0; len]).is_err());
    }
}

#[test]
fn build_rejects_bad_routes_and_payloads() {
    let net = Network::new(8, 14);
    let g = net.geometry;
    let mut r = rng(14);
    assert!(build_packet(&g, &[], &deliver(1, 1), b"", &mut r).is_err());
    let six = net.route(&[0, 1, 2, 3, 4, 5]);
    assert!(build_packet(&g, &six, &deliver(1, 1), b"", &mut r).is_err());
    let ok = net.route(&[0]);
    assert!(build_packet(&g, &ok, &deliver(1, 1), &[0; 2049], &mut r).is_err());
}

#[test]
fn hops_see_unrelated_headers() {
    // No 8-byte run of a hop's outgoing header appears in its incoming header: nothing but the
    // fixed key id survives a hop.
    let net = Network::new(5, 15);
    let route = net.route(&[0, 1, 2, 3, 4]);
    let mut packet =
        build_packet(&net.geometry, &route, &deliver(1, 1), b"x", &mut rng(15)).unwrap();
    let h = net.geometry.header_size();
    for hop in &route[..4] {
        let before = packet.clone();
        net.node(hop.node)
            .ring
            .process(&net.geometry, &mut packet)
            .unwrap();
        for window in packet[1..h].windows(8) {
            assert!(!before[1..h].windows(8).any(|w| w == window));
        }
        for window in packet[h..h + 64].windows(8) {
            assert!(!before[h..].windows(8).any(|w| w == window));
        }
    }
}

#[test]
fn key_ring_rotation_with_grace() {
    let g = Geometry::DEFAULT;
    let t0 = common::now();
    let grace = std::time::Duration::from_secs(120);
    let mut ring = KeyRing::new(EPOCH, grace, small_replay());
    let mut r = rng(16);
    ring.insert(EPOCH, NodeSecretKey::random(&mut r)).unwrap();
    ring.insert(EPOCH + 1, NodeSecretKey::random(&mut r))
        .unwrap();
    assert!(
        ring.insert(EPOCH + 2, NodeSecretKey::random(&mut r))
            .is_err()
    );
    assert!(
        ring.insert(EPOCH + 1, NodeSecretKey::random(&mut r))
            .is_err()
    );

    let hop = |ring: &KeyRing, epoch| p2pmix_mix::Hop {
        node: p2pmix_mix::NodeId(0),
        key: ring.for_epoch(epoch).unwrap().public_key(),
        delay: Delay::ZERO,
    };
    let old = build_packet(&g, &[hop(&ring, EPOCH)], &deliver(1, 1), b"old", &mut r).unwrap();
    let early = build_packet(&g, &[hop(&ring, EPOCH + 1)], &deliver(1, 1), b"new", &mut r).unwrap();
    assert!(
        ring.process(&g, &mut early.clone()).is_ok(),
        "next epoch accepted early"
    );

    assert!(ring.advance(EPOCH + 1, t0).is_empty());
    assert_eq!(ring.poll_timeout(), Some(t0 + grace));
    assert!(
        ring.process(&g, &mut old.clone()).is_ok(),
        "previous key in grace"
    );
    assert!(ring.handle_timeout(t0 + grace / 2).is_empty());
    assert_eq!(ring.handle_timeout(t0 + grace), vec![EPOCH]);
    assert_eq!(ring.process(&g, &mut old.clone()), Err(UnwrapError::Mac));
    // The current key's cache still remembers the early packet.
    assert_eq!(
        ring.process(&g, &mut early.clone()),
        Err(UnwrapError::Replay)
    );
    assert_eq!(ring.epochs(), vec![EPOCH + 1]);

    // A jump of several epochs retires everything older than the previous epoch at once.
    ring.insert(EPOCH + 2, NodeSecretKey::random(&mut r))
        .unwrap();
    assert_eq!(
        ring.advance(EPOCH + 10, t0 + grace * 2),
        vec![EPOCH + 1, EPOCH + 2]
    );
    assert!(ring.epochs().is_empty());
}
