//! Sphinx speed against the other Rust Sphinx implementations that build here, in one run on one
//! machine: Nym's `sphinx-packet` 0.8 (5 hops) and `nox-crypto` 0.1 (4 hops, its maximum).
//!
//! `cargo bench -p p2pmix-mix --bench sphinx`
//!
//! Groups:
//! - `unwrap`: one hop's processing of a wire packet with a 2064-byte body (our body size):
//!   `p2pmix` (one packet alone), `p2pmix-batch-N` (a batch of N distinct packets through
//!   `unwrap_batch`, time per batch: divide by N), `sphinx-packet`, `nox-crypto` (its header with a
//!   2064-byte body: `process` does not authenticate the body, so the work is what a packet of
//!   that size costs), and `floor`, one variable-base Ristretto scalar multiplication.
//! - `unwrap_parts`: our key agreement alone (decode + multiply + encode), and with the encoding
//!   batched over 32 (time per 32).
//! - `create`: a five-hop packet with a 2048-byte plaintext (`p2pmix`, `sphinx-packet`) and a
//!   four-hop one (`p2pmix-4-hops`, `nox-crypto-4-hops`). nox-crypto always pads the body to
//!   32 296 bytes, so `nox_lioness` measures its Lioness at that size and at 2064 bytes: its
//!   create at our body size is `nox-crypto-4-hops - 4 x (32296 - 2064)`, printed at the end.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::{ristretto::RistrettoPoint, scalar::Scalar};
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, Hop, KeyRing, Label, NodeId, NodeSecretKey,
    RecipientKey, ReplayCache, ReplayConfig, build_cover_packet, build_packet, build_packet_to,
    unwrap_batch, unwrap_packet,
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
const NOX_HOPS: usize = 4;
const PLAINTEXT: usize = 2048;
const BODY: usize = 2064;
const BATCHES: [usize; 3] = [4, 8, 32];

fn small_replay() -> ReplayConfig {
    ReplayConfig {
        expected_packets: 1024,
        false_positive_rate: 1e-6,
    }
}

fn small_cache() -> ReplayCache {
    ReplayCache::new(small_replay(), [1; 32])
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
    assert_eq!(geometry.body_size(), BODY);
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

impl Ours {
    fn packet(&self) -> Vec<u8> {
        build_packet(
            &self.geometry,
            &self.route,
            &self.destination,
            &self.payload,
            &mut rand::rng(),
        )
        .unwrap()
    }

    /// A ring holding the first hop's key under key id 1, with a fresh replay cache.
    fn ring(&self) -> KeyRing {
        let mut ring = KeyRing::new(1, Duration::from_secs(60), small_replay());
        ring.insert(
            1,
            NodeSecretKey::from_bytes(self.secrets[0].to_bytes()).unwrap(),
        )
        .unwrap();
        ring
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

struct Nox {
    first_secret: x25519_dalek_2::StaticSecret,
    path: Vec<nox_crypto::PathHop>,
    payload: Vec<u8>,
}

fn nox() -> Nox {
    let keys: Vec<x25519_dalek_2::StaticSecret> = (0..NOX_HOPS)
        .map(|_| x25519_dalek_2::StaticSecret::random())
        .collect();
    let path = keys
        .iter()
        .enumerate()
        .map(|(i, k)| nox_crypto::PathHop {
            public_key: x25519_dalek_2::PublicKey::from(k),
            // Two bytes, as our node ids.
            address: format!("{i:02}"),
        })
        .collect();
    Nox {
        first_secret: keys[0].clone(),
        path,
        payload: vec![13u8; PLAINTEXT],
    }
}

fn unwrap(c: &mut Criterion) {
    let ours = ours();
    let theirs = theirs();
    let nox = nox();
    let packet = ours.packet();
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
    let nox_full = nox_crypto::build_multi_hop_packet(&nox.path, &nox.payload, 0).unwrap();
    let nox_packet = nox_full[..nox_crypto::HEADER_SIZE + BODY].to_vec();
    println!(
        "packet bytes: p2pmix {}, sphinx-packet {}, nox-crypto {} (its own body: {})",
        packet.len(),
        their_packet.len(),
        nox_packet.len(),
        nox_full.len()
    );

    let mut group = c.benchmark_group("unwrap");
    group.bench_function("p2pmix", |b| {
        b.iter_batched_ref(
            || (packet.clone(), small_cache()),
            |(p, cache)| {
                unwrap_packet(&ours.geometry, &ours.secrets[0], cache, black_box(p)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    for n in BATCHES {
        let packets: Vec<Vec<u8>> = (0..n).map(|_| ours.packet()).collect();
        group.bench_function(format!("p2pmix-batch-{n}"), |b| {
            b.iter_batched_ref(
                || (packets.clone(), ours.ring()),
                |(ps, ring)| {
                    let mut views: Vec<&mut [u8]> = ps.iter_mut().map(Vec::as_mut_slice).collect();
                    let results = unwrap_batch(&ours.geometry, ring, black_box(&mut views));
                    assert!(results.iter().all(Result::is_ok));
                },
                BatchSize::SmallInput,
            )
        });
    }
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
    group.bench_function("nox-crypto", |b| {
        b.iter_batched_ref(
            || nox_packet.clone(),
            |bytes| {
                let (header, body) =
                    nox_crypto::SphinxHeader::from_bytes(black_box(bytes)).unwrap();
                header.process(&nox.first_secret, body.to_vec()).unwrap()
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
    let encodings: Vec<_> = (0..32)
        .map(|_| RistrettoPoint::random(&mut rng).compress())
        .collect();
    parts.bench_function("decode+mul+batch-encode-32", |b| {
        b.iter(|| {
            let halves: Vec<RistrettoPoint> = black_box(&encodings)
                .iter()
                .map(|e| e.decompress().unwrap() * black_box(scalar))
                .collect();
            RistrettoPoint::double_and_compress_batch(&halves)
        })
    });
    parts.finish();
}

/// What trial decryption costs (the header names no epoch key since issue 14): a ring holding
/// the previous (in its grace period), current and next epoch's keys opens packets under each,
/// and refuses a forgery, which tries all three. The peer is the current key's packet, which
/// nearly every packet is.
fn trial(c: &mut Criterion) {
    let ours = ours();
    let mut rng = rand::rng();
    let keys: Vec<NodeSecretKey> = (0..3).map(|_| NodeSecretKey::random(&mut rng)).collect();
    let ring = || {
        let mut ring = KeyRing::new(1, Duration::from_secs(3600), small_replay());
        let copy = |k: &NodeSecretKey| NodeSecretKey::from_bytes(k.to_bytes()).unwrap();
        ring.insert(1, copy(&keys[0])).unwrap();
        ring.insert(2, copy(&keys[1])).unwrap();
        ring.advance(2, std::time::Instant::now());
        ring.insert(3, copy(&keys[2])).unwrap();
        ring
    };
    let under = |key: &NodeSecretKey| {
        let mut route = ours.route.clone();
        route[0].key = key.public_key();
        build_packet(
            &ours.geometry,
            &route,
            &ours.destination,
            &ours.payload,
            &mut rand::rng(),
        )
        .unwrap()
    };
    let forged = under(&NodeSecretKey::random(&mut rng));
    let mut group = c.benchmark_group("trial");
    for (name, packet, ok) in [
        ("current-key", under(&keys[1]), true),
        ("next-key", under(&keys[2]), true),
        ("previous-key", under(&keys[0]), true),
        ("forgery-3-keys", forged, false),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (packet.clone(), ring()),
                |(p, ring)| {
                    let result = ring.process(&ours.geometry, black_box(p));
                    assert_eq!(result.is_ok(), ok);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn create(c: &mut Criterion) {
    let ours = ours();
    let theirs = theirs();
    let nox = nox();
    let mut group = c.benchmark_group("create");
    let mut rng = rand::rng();
    group.bench_function("p2pmix", |b| {
        b.iter(|| {
            build_packet(
                &ours.geometry,
                black_box(&ours.route),
                &ours.destination,
                black_box(&ours.payload),
                &mut rng,
            )
            .unwrap()
        })
    });
    // The client's forward packets since issue 14: the recipient layer innermost (an
    // Elligator-encoded ephemeral, one more multiplication, one more HCTR2 pass).
    let recipient = RecipientKey::random(&mut rng);
    let recipient_public = recipient.public_key();
    let short_payload = &ours.payload[..ours.geometry.recipient_payload_size()];
    group.bench_function("p2pmix-recipient-layer", |b| {
        b.iter(|| {
            build_packet_to(
                &ours.geometry,
                black_box(&ours.route),
                &ours.destination,
                &recipient_public,
                black_box(short_payload),
                &mut rng,
            )
            .unwrap()
        })
    });
    group.bench_function("p2pmix-cover-random-body", |b| {
        b.iter(|| {
            build_cover_packet(
                &ours.geometry,
                black_box(&ours.route),
                &ours.destination,
                &mut rng,
            )
            .unwrap()
        })
    });
    // What the recipient pays to take the layer off (decode, one multiplication, HCTR2): the
    // body as a one-hop route's final hop delivers it.
    let mut delivered = build_packet_to(
        &ours.geometry,
        &ours.route[..1],
        &ours.destination,
        &recipient_public,
        short_payload,
        &mut rng,
    )
    .unwrap();
    unwrap_packet(
        &ours.geometry,
        &ours.secrets[0],
        &ReplayCache::new(small_replay(), [1; 32]),
        &mut delivered,
    )
    .unwrap();
    let body = delivered[ours.geometry.header_size()..].to_vec();
    group.bench_function("p2pmix-recipient-open", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |body| {
                recipient
                    .open(&ours.geometry, body)
                    .map(|p| p.len())
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
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
    group.bench_function("p2pmix-4-hops", |b| {
        b.iter(|| {
            build_packet(
                &ours.geometry,
                black_box(&ours.route[..NOX_HOPS]),
                &ours.destination,
                black_box(&ours.payload),
                &mut rng,
            )
            .unwrap()
        })
    });
    group.bench_function("nox-crypto-4-hops", |b| {
        b.iter(|| {
            nox_crypto::build_multi_hop_packet(black_box(&nox.path), black_box(&nox.payload), 0)
                .unwrap()
        })
    });
    group.finish();

    let mut lioness = c.benchmark_group("nox_lioness");
    for size in [nox_crypto::PACKET_SIZE - nox_crypto::HEADER_SIZE, BODY] {
        let mut body = vec![5u8; size];
        lioness.bench_function(format!("{size}"), |b| {
            b.iter(|| {
                let keys = nox_crypto::sphinx::lioness::LionessKeys::from_pi(black_box(&[6; 32]));
                nox_crypto::sphinx::lioness::lioness_encrypt(&keys, &mut body)
            })
        });
    }
    lioness.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(Duration::from_secs(4));
    targets = unwrap, trial, create
}
criterion_main!(benches);
