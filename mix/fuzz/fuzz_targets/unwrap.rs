//! Arbitrary bytes off the wire into a node's key ring: never a panic, never an accepted packet.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{Geometry, HEADER_VERSION, KeyRing, NodeSecretKey, ReplayConfig};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut ring = KeyRing::new(0, Duration::from_secs(60), ReplayConfig::default());
        for epoch in 0..2 {
            let _ = ring.insert(epoch, NodeSecretKey::random(&mut rng));
        }
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::DEFAULT;
    let mut packet = data.to_vec();
    // Half the inputs are stretched to the packet size so that they reach the crypto (tried
    // under both live keys); most of them get the format's version byte.
    if let Some(first) = data.first().copied().filter(|b| b & 1 == 1) {
        packet.resize(geometry.packet_size(), 0);
        packet[0] = if first & 2 == 0 { HEADER_VERSION } else { first >> 2 };
    }
    assert!(ring().process(&geometry, &mut packet).is_err());
});
