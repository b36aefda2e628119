//! Batched unwrapping: a batch gives every packet exactly what unwrapping it alone gives, and no
//! packet in a batch, however malformed, changes what another one gets.
#![allow(missing_docs, unreachable_pub)]

mod common;

use std::time::Duration;

use common::{EPOCH, deliver, rng, small_replay};
use p2pmix_mix::{
    Delay, Geometry, Hop, KeyRing, NodeId, NodeSecretKey, Processed, UnwrapError, build_packet,
    unwrap_batch,
};
use proptest::prelude::*;

/// Two rings with the same keys (previous in its grace period, current and next epoch) and
/// separate replay caches.
fn twin_rings(seed: u64) -> (KeyRing, KeyRing) {
    let (batch, single, _) = twin_rings_holding(seed, 0b111);
    (batch, single)
}

/// The public keys of the previous, current and next epoch of [`twin_rings_holding`].
type Publics = [p2pmix_mix::NodePublicKey; 3];

/// Two rings holding those of the previous, current and next epoch's keys that bits 0, 1 and 2
/// of `held` name (none, some, all: a ring may lack its current key after a restart), with
/// separate replay caches; and the public keys of all three.
fn twin_rings_holding(seed: u64, held: u8) -> (KeyRing, KeyRing, Publics) {
    let mut r = rng(seed);
    let keys: Vec<[u8; 32]> = (0..3)
        .map(|_| NodeSecretKey::random(&mut r).to_bytes())
        .collect();
    let key = |i: usize| NodeSecretKey::from_bytes(keys[i]).unwrap();
    let now = std::time::Instant::now();
    let ring = || {
        let mut ring = KeyRing::new(EPOCH - 1, Duration::from_secs(60), small_replay());
        for i in 0..2 {
            if held & (1 << i) != 0 {
                ring.insert(EPOCH - 1 + i as u64, key(i)).unwrap();
            }
        }
        ring.advance(EPOCH, now);
        if held & 0b100 != 0 {
            ring.insert(EPOCH + 1, key(2)).unwrap();
        }
        ring
    };
    let publics = [0, 1, 2].map(|i| key(i).public_key());
    (ring(), ring(), publics)
}

/// What one packet of the batch is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Built for the ring's key of epoch `EPOCH - 1 + offset` (previous, current, next).
    Valid { offset: u64 },
    /// A copy of an earlier packet of the batch (a replay inside the batch).
    Copy(usize),
    /// A valid packet with one header bit flipped.
    FlippedHeader(usize),
    /// Random bytes of packet size with this format's version byte.
    Random,
    /// The identity as its element (all-zero encoding).
    IdentityElement,
    /// Bytes that are not a Ristretto encoding.
    NotAnElement,
    /// Built for a key the ring does not hold (a retired or foreign one).
    UnknownKey,
    /// Another format version.
    UnknownVersion,
    /// One byte short.
    Short,
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (0u64..3).prop_map(|offset| Kind::Valid { offset }),
        1 => (0usize..16).prop_map(Kind::Copy),
        1 => (0usize..324 * 8).prop_map(Kind::FlippedHeader),
        1 => Just(Kind::Random),
        1 => Just(Kind::IdentityElement),
        1 => Just(Kind::NotAnElement),
        1 => Just(Kind::UnknownKey),
        1 => Just(Kind::UnknownVersion),
        1 => Just(Kind::Short),
    ]
}

fn make(kind: Kind, publics: &Publics, made: &[Vec<u8>], seed: u64) -> Vec<u8> {
    let g = Geometry::DEFAULT;
    let mut r = rng(seed);
    let build = |key: p2pmix_mix::NodePublicKey, r: &mut _| {
        let route = [Hop {
            node: NodeId(1),
            key,
            delay: Delay::from_micros(5),
        }];
        build_packet(&g, &route, &deliver(1, 2), b"batch", r).unwrap()
    };
    let valid = |offset: u64, r: &mut _| build(publics[offset as usize], r);
    match kind {
        Kind::Valid { offset } => valid(offset, &mut r),
        Kind::Copy(i) if !made.is_empty() => made[i % made.len()].clone(),
        Kind::Copy(_) => valid(1, &mut r),
        Kind::FlippedHeader(bit) => {
            let mut p = valid(1, &mut r);
            // The version byte included: that gives an unknown version.
            let bit = bit % (g.header_size() * 8);
            p[bit / 8] ^= 1 << (bit % 8);
            p
        }
        Kind::Random => {
            let mut p = vec![0u8; g.packet_size()];
            rand::Rng::fill_bytes(&mut r, &mut p);
            p[0] = p2pmix_mix::HEADER_VERSION;
            p
        }
        Kind::IdentityElement => {
            let mut p = valid(1, &mut r);
            p[1..33].fill(0);
            p
        }
        Kind::NotAnElement => {
            let mut p = valid(1, &mut r);
            p[1..33].fill(0xff);
            p
        }
        Kind::UnknownKey => {
            // A key from a stream no ring key comes from (a seed byte `rng` leaves zero).
            use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
            let mut domain = [0u8; 32];
            domain[..8].copy_from_slice(&seed.to_le_bytes());
            domain[31] = 0xaa;
            let foreign = NodeSecretKey::random(&mut ChaCha20Rng::from_seed(domain));
            build(foreign.public_key(), &mut r)
        }
        Kind::UnknownVersion => {
            let mut p = valid(1, &mut r);
            p[0] = p2pmix_mix::HEADER_VERSION.wrapping_add(1);
            p
        }
        Kind::Short => {
            let mut p = valid(1, &mut r);
            p.pop();
            p
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_gives_each_packet_what_it_gets_alone(kinds in proptest::collection::vec(any_kind(), 1..24), seed in any::<u64>(), held in prop_oneof![3 => Just(0b111u8), 1 => 0u8..8]) {
        let g = Geometry::DEFAULT;
        let (batch_ring, single_ring, publics) = twin_rings_holding(seed, held);
        let no_key = if held & 0b010 != 0 { UnwrapError::Mac } else { UnwrapError::UnknownKey };
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let p = make(*kind, &publics, &packets, seed.wrapping_add(i as u64));
            packets.push(p);
        }
        let mut alone = packets.clone();
        let expected: Vec<Result<(u64, Processed), UnwrapError>> =
            alone.iter_mut().map(|p| single_ring.process_keyed(&g, p)).collect();
        let mut batched = packets.clone();
        let mut views: Vec<&mut [u8]> = batched.iter_mut().map(Vec::as_mut_slice).collect();
        let got = unwrap_batch(&g, &batch_ring, &mut views);
        prop_assert_eq!(&got, &expected);
        for (i, (kind, result)) in kinds.iter().zip(&got).enumerate() {
            if result.is_ok() {
                prop_assert_eq!(&batched[i], &alone[i], "packet {} ({:?}) differs", i, kind);
            }
            match kind {
                Kind::Valid { offset } => {
                    // Honest packets open under the key they were built for (found by trial:
                    // nothing in the header names it), or fail as replays of an earlier copy;
                    // under a key the ring lacks, as no key at all.
                    match result {
                        Ok((epoch, _)) => prop_assert_eq!(*epoch, EPOCH - 1 + offset),
                        Err(e) if held & (1 << offset) == 0 => prop_assert_eq!(*e, no_key),
                        Err(e) => prop_assert_eq!(*e, UnwrapError::Replay, "{} {:?}", i, kind),
                    }
                }
                Kind::UnknownKey => prop_assert_eq!(result, &Err(no_key)),
                Kind::UnknownVersion => prop_assert_eq!(
                    result,
                    &Err(UnwrapError::UnknownVersion(p2pmix_mix::HEADER_VERSION.wrapping_add(1)))
                ),
                _ => {}
            }
        }
    }
}

#[test]
fn empty_batch() {
    let (ring, _) = twin_rings(1);
    assert!(unwrap_batch(&Geometry::DEFAULT, &ring, &mut []).is_empty());
}

/// The relay's batch decides for every packet what it decides for it alone: forwards with the
/// right peer, finals, unknown next hops, delays over the cap, bad packets.
#[test]
fn relay_batch_decides_as_one_by_one() {
    use std::{collections::HashMap, time::Instant};

    use p2pmix_mix::{Relay, RelayConfig};

    let g = Geometry::DEFAULT;
    let (batch_ring, single_ring) = twin_rings(9);
    let public = batch_ring.for_epoch(EPOCH).unwrap().public_key();
    let relay = |ring| {
        let relay = Relay::new(
            g,
            RelayConfig {
                max_delay: Duration::from_millis(10),
            },
            ring,
        );
        relay.set_topology(EPOCH, HashMap::from([(NodeId(2), "two")]));
        relay
    };
    let (batched, single) = (relay(batch_ring), relay(single_ring));
    let mut r = rng(10);
    let mut packet = |next: u16, delay_us: u32, hops: usize| {
        let mut route = vec![Hop {
            node: NodeId(1),
            key: public,
            delay: Delay::from_micros(delay_us),
        }];
        if hops == 2 {
            route.push(Hop {
                node: NodeId(next),
                key: public,
                delay: Delay::ZERO,
            });
        }
        build_packet(&g, &route, &deliver(1, 2), b"x", &mut r).unwrap()
    };
    let now = Instant::now();
    let packets = vec![
        packet(2, 5, 2),      // forward to "two"
        packet(3, 5, 2),      // next hop not in the topology
        packet(2, 20_000, 2), // delay over the cap
        packet(2, 5, 1),      // final
        vec![0u8; 10],        // wrong size
    ];
    let expected: Vec<_> = packets
        .iter()
        .map(|p| single.process(now, p.clone()))
        .collect();
    let got = batched.process_batch(packets.into_iter().map(|p| (now, p)).collect());
    assert_eq!(got, expected);
    assert!(matches!(
        got[0],
        Ok(p2pmix_mix::Decision::Forward { to: "two", .. })
    ));
    assert_eq!(got[1], Err(p2pmix_mix::DropReason::UnknownNextHop));
    assert_eq!(got[2], Err(p2pmix_mix::DropReason::DelayTooLong));
    assert!(matches!(got[3], Ok(p2pmix_mix::Decision::Final { .. })));
    assert_eq!(got[4], Err(p2pmix_mix::DropReason::WrongSize));
}

/// The next hop is looked up in the topology of the epoch whose key opened the packet (found
/// by trial): a packet built from the next epoch's consensus goes to that epoch's peer for the
/// node id, one from the current consensus to the current one's, alone and in a batch.
#[test]
fn the_key_that_opens_a_packet_picks_the_topology_of_its_next_hop() {
    use std::{collections::HashMap, time::Instant};

    use p2pmix_mix::{Decision, Relay, RelayConfig};

    let g = Geometry::DEFAULT;
    let (ring, _) = twin_rings(21);
    let key_of = |epoch| ring.for_epoch(epoch).unwrap().public_key();
    let (current, next) = (key_of(EPOCH), key_of(EPOCH + 1));
    let relay = Relay::new(
        g,
        RelayConfig {
            max_delay: Duration::from_secs(1),
        },
        ring,
    );
    relay.set_topology(EPOCH, HashMap::from([(NodeId(2), "current")]));
    relay.set_topology(EPOCH + 1, HashMap::from([(NodeId(2), "next")]));
    let mut r = rng(22);
    let mut packet = |key| {
        let hop = |node, key| Hop {
            node: NodeId(node),
            key,
            delay: Delay::ZERO,
        };
        build_packet(
            &g,
            &[hop(1, key), hop(2, key)],
            &deliver(1, 2),
            b"x",
            &mut r,
        )
        .unwrap()
    };
    let to = |d: &Result<Decision<&'static str>, p2pmix_mix::DropReason>| match d {
        Ok(Decision::Forward { to, .. }) => Some(*to),
        _ => None,
    };
    let now = Instant::now();
    assert_eq!(to(&relay.process(now, packet(next))), Some("next"));
    assert_eq!(to(&relay.process(now, packet(current))), Some("current"));
    let batch = relay.process_batch(vec![(now, packet(current)), (now, packet(next))]);
    assert_eq!(
        batch.iter().map(to).collect::<Vec<_>>(),
        vec![Some("current"), Some("next")]
    );
}
