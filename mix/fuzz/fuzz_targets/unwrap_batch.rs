//! Batches of fuzzer-chosen packets around two valid ones (one under the current key, one under
//! the next, found by trial), through `unwrap_batch`: never a panic, every result equals what
//! unwrapping that packet alone gives, and the valid packets come through whatever shares their
//! batch.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, HEADER_VERSION, Hop, KeyRing, Label, NodeId, NodeSecretKey,
    ReplayConfig, build_packet, unwrap_batch,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const SECRETS: [[u8; 32]; 2] = [[7; 32], [9; 32]];

fn ring() -> KeyRing {
    let mut ring = KeyRing::new(0, Duration::from_secs(60), ReplayConfig { expected_packets: 64, false_positive_rate: 1e-9 });
    for (epoch, secret) in (0..).zip(SECRETS) {
        if let Some(secret) = NodeSecretKey::from_bytes(secret) {
            let _ = ring.insert(epoch, secret);
        }
    }
    ring
}

fn valid(seed: u8, epoch: usize) -> Vec<u8> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let key = NodeSecretKey::from_bytes(SECRETS[epoch]).expect("canonical").public_key();
    let route = [Hop { node: NodeId(1), key, delay: Delay::ZERO }];
    let destination = Destination::Deliver { client: ClientId([1; 32]), label: Label([2; 16]) };
    build_packet(&Geometry::DEFAULT, &route, &destination, b"fuzz", &mut rng).expect("packet")
}

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::DEFAULT;
    let size = geometry.packet_size();
    // Up to 8 hostile packets: each takes up to a packet's worth of the input, stretched to the
    // packet size when its first byte is odd (so that they reach the crypto under both keys).
    let mut packets: Vec<Vec<u8>> = vec![valid(1, 0)];
    for chunk in data.chunks(size).take(8) {
        let mut p = chunk.to_vec();
        if chunk.first().is_some_and(|b| b & 1 == 1) {
            p.resize(size, 0);
            p[0] = HEADER_VERSION;
        }
        packets.push(p);
    }
    packets.push(valid(2, 1));
    let mut alone = packets.clone();
    let single = ring();
    let expected: Vec<_> = alone.iter_mut().map(|p| single.process_keyed(&geometry, p)).collect();
    let batch_ring = ring();
    let mut views: Vec<&mut [u8]> = packets.iter_mut().map(Vec::as_mut_slice).collect();
    let got = unwrap_batch(&geometry, &batch_ring, &mut views);
    assert_eq!(got, expected, "batch and one-by-one disagree");
    assert!(got[0].is_ok(), "a valid packet failed in a batch: {:?}", got[0]);
    let last = got.len() - 1;
    assert!(got[last].is_ok(), "a next-key packet failed in a batch: {:?}", got[last]);
    for (i, r) in got.iter().enumerate() {
        if r.is_ok() {
            assert_eq!(packets[i], alone[i]);
        }
    }
});
