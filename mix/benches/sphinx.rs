//! Sphinx speed against Nym's `sphinx-packet` 0.8, in one run on one machine.
//!
//! `cargo bench -p p2pmix-mix --bench sphinx`
//!
//! Groups: `unwrap` (one hop's processing of a wire packet: `p2pmix`, `sphinx-packet`, and
//! `floor`, one variable-base Ristretto scalar multiplication as our unwrap does it) and
//! `create` (a five-hop packet with a 2048-byte plaintext: `p2pmix`, `sphinx-packet`).
//! `unwrap_parts` splits our unwrap into its public-key and symmetric halves.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::{ristretto::RistrettoPoint, scalar::Scalar};
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, Hop, KeyId, Label, NodeId, NodeSecretKey, ReplayCache,
    ReplayConfig, build_packet, unwrap_packet,
};
use sphinx_packet::{
    SphinxPacket,
    constants::{DESTINATION_ADDRESS_LENGTH, IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH},
    header::delays,
    packet::builder::SphinxPacketBuilder,
    payload::PAYLOAD_OVERHEAD_SIZE,
    route::{Destination as NymDestination, DestinationAddressBytes, Node, NodeAddressBytes},
};

const HOPS: usize = 5;
const PLAINTEXT: usize = 2048;

fn small_cache() -> ReplayCache {
    ReplayCache::new(
        ReplayConfig {
            expected_packets: 1024,
            false_positive_rate: 1e-6,
        },
        [1; 32],
    )
}

struct Ours {
    geometry: Geometry,
    secrets: Vec<NodeSecretKey>,
    route: Vec<Hop>,
    destination: Destination,
    payload: Vec<u8>,
}

fn ours() -> Ours {
    let mut rng = rand::rng();
    let geometry = Geometry::DEFAULT;
    assert_eq!(geometry.payload_size(), PLAINTEXT);
    let secrets: Vec<NodeSecretKey> = (0..HOPS).map(|_| NodeSecretKey::random(&mut rng)).collect();
    let route = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| Hop {
            node: NodeId(i as u16),
            key: s.public_key(),
            delay: Delay::from_micros(15_000),
        })
        .collect();
    Ours {
        geometry,
        secrets,
        route,
        destination: Destination::Deliver {
            client: ClientId([3; 32]),
            label: Label([4; 16]),
        },
        payload: vec![13u8; PLAINTEXT],
    }
}

struct Theirs {
    builder: SphinxPacketBuilder<'static>,
    first_secret: x25519_dalek::StaticSecret,
    route: Vec<Node>,
    destination: NymDestination,
    delays: Vec<delays::Delay>,
    payload: Vec<u8>,
}

fn theirs() -> Theirs {
    let keys: Vec<x25519_dalek::StaticSecret> = (0..HOPS)
        .map(|_| x25519_dalek::StaticSecret::random())
        .collect();
    let route = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Node::new(
                NodeAddressBytes::from_bytes([i as u8; NODE_ADDRESS_LENGTH]),
                x25519_dalek::PublicKey::from(k),
            )
        })
        .collect();
    Theirs {
        builder: SphinxPacketBuilder::new().with_payload_size(PLAINTEXT + PAYLOAD_OVERHEAD_SIZE),
        first_secret: keys[0].clone(),
        route,
        destination: NymDestination::new(
            DestinationAddressBytes::from_bytes([3u8; DESTINATION_ADDRESS_LENGTH]),
            [4u8; IDENTIFIER_LENGTH],
        ),
        delays: delays::generate_from_average_duration(HOPS, Duration::from_millis(15)),
        payload: vec![13u8; PLAINTEXT],
    }
}

fn unwrap(c: &mut Criterion) {
    let ours = ours();
    let theirs = theirs();
    let packet = build_packet(
        &ours.geometry,
        KeyId(1),
        &ours.route,
        &ours.destination,
        &ours.payload,
        &mut rand::rng(),
    )
    .unwrap();
    let their_packet = theirs
        .builder
        .build_packet(
            &theirs.payload,
            &theirs.route,
            &theirs.destination,
            &theirs.delays,
        )
        .unwrap()
        .to_bytes();
    println!(
        "packet bytes: p2pmix {}, sphinx-packet {}",
        packet.len(),
        their_packet.len()
    );

    let mut group = c.benchmark_group("unwrap");
    group.bench_function("p2pmix", |b| {
        b.iter_batched_ref(
            || (packet.clone(), small_cache()),
            |(p, cache)| {
                unwrap_packet(
                    &ours.geometry,
                    KeyId(1),
                    &ours.secrets[0],
                    cache,
                    black_box(p),
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("sphinx-packet", |b| {
        b.iter_batched_ref(
            || their_packet.clone(),
            |bytes| {
                SphinxPacket::from_bytes(black_box(bytes))
                    .unwrap()
                    .process(&theirs.first_secret)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let mut rng = rand::rng();
    let point = RistrettoPoint::random(&mut rng);
    let scalar = Scalar::random(&mut rng);
    group.bench_function("floor", |b| b.iter(|| black_box(point) * black_box(scalar)));
    group.finish();

    let mut parts = c.benchmark_group("unwrap_parts");
    let encoded = point.compress();
    parts.bench_function("decode+mul+encode", |b| {
        b.iter(|| (black_box(encoded).decompress().unwrap() * black_box(scalar)).compress())
    });
    parts.finish();
}

fn create(c: &mut Criterion) {
    let ours = ours();
    let theirs = theirs();
    let mut group = c.benchmark_group("create");
    let mut rng = rand::rng();
    group.bench_function("p2pmix", |b| {
        b.iter(|| {
            build_packet(
                &ours.geometry,
                KeyId(1),
                black_box(&ours.route),
                &ours.destination,
                black_box(&ours.payload),
                &mut rng,
            )
            .unwrap()
        })
    });
    group.bench_function("sphinx-packet", |b| {
        b.iter(|| {
            theirs
                .builder
                .build_packet(
                    black_box(&theirs.payload),
                    black_box(&theirs.route),
                    &theirs.destination,
                    &theirs.delays,
                )
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(Duration::from_secs(4));
    targets = unwrap, create
}
criterion_main!(benches);
