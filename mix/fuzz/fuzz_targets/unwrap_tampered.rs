//! A valid three-hop packet with fuzzer-chosen bytes XORed into it, followed along its route:
//! any change to the header is refused at the hop that sees it; a body change fails at the end.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, Hop, KeyRing, Label, NodeId, NodeSecretKey,
    Processed, ReplayConfig, body, build_packet, open_payload,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

struct Fixture {
    secrets: Vec<[u8; 32]>,
    packet: Vec<u8>,
}

/// Fresh key rings (and so fresh replay caches) for every input.
fn rings(secrets: &[[u8; 32]]) -> Vec<KeyRing> {
    let small = ReplayConfig { expected_packets: 16, false_positive_rate: 1e-9 };
    secrets
        .iter()
        .map(|s| {
            let mut ring = KeyRing::new(0, Duration::from_secs(60), small);
            if let Some(secret) = NodeSecretKey::from_bytes(*s) {
                let _ = ring.insert(0, secret);
            }
            ring
        })
        .collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let secrets: Vec<[u8; 32]> =
            (0..3).map(|_| NodeSecretKey::random(&mut rng).to_bytes()).collect();
        let rings = rings(&secrets);
        let route: Vec<Hop> = rings
            .iter()
            .enumerate()
            .map(|(i, r)| Hop {
                node: NodeId(i as u16),
                key: r.for_epoch(0).expect("fixture key").public_key(),
                delay: Delay::from_micros(5),
            })
            .collect();
        let destination = Destination::Deliver {
            client: ClientId([1; 32]),
            label: Label([2; 16]),
        };
        let packet = build_packet(&Geometry::DEFAULT, &route, &destination, b"fuzz", &mut rng)
            .expect("fixture packet");
        Fixture { secrets, packet }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let geometry = Geometry::DEFAULT;
    let mut packet = f.packet.clone();
    let changed = data.iter().take(packet.len()).any(|&b| b != 0);
    for (p, d) in packet.iter_mut().zip(data) {
        *p ^= d;
    }
    let rings = rings(&f.secrets);
    let mut at = 0usize;
    for _ in 0..3 {
        let Some(ring) = rings.get(at) else { return };
        match ring.process(&geometry, &mut packet) {
            Ok(Processed::Forward { next, .. }) => at = usize::from(next.0),
            Ok(Processed::Final { .. }) => {
                if let Some(b) = body(&geometry, &packet) {
                    let opened = open_payload(&geometry, b);
                    assert!(changed == opened.is_err(), "tampering undetected or false alarm");
                }
                return;
            }
            Err(_) => return,
        }
    }
});
