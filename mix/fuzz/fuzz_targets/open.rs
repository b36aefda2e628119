//! Opening final bodies (forward messages and SURB replies) of arbitrary bytes: never a panic,
//! and random bodies are refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{
    ClientId, Delay, Geometry, Hop, Label, NodeId, NodeSecretKey, SurbKeys, create_surb,
    open_payload,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

fn keys() -> Option<&'static SurbKeys> {
    static K: OnceLock<Option<SurbKeys>> = OnceLock::new();
    K.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let route: Vec<Hop> = (0..3)
            .map(|i| Hop {
                node: NodeId(i),
                key: NodeSecretKey::random(&mut rng).public_key(),
                delay: Delay::ZERO,
            })
            .collect();
        create_surb(&Geometry::DEFAULT, &route, ClientId([0; 32]), Label([0; 16]), &mut rng)
            .ok()
            .map(|(_, keys)| keys)
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::DEFAULT;
    let mut body = data.to_vec();
    // Half the inputs are stretched to the body size (after dropping the selector byte, so
    // that all-zero tags, the success path, are reachable).
    if data.first().is_some_and(|b| b & 1 == 1) {
        body.remove(0);
        body.resize(geometry.body_size(), 0);
    }
    let nonzero_tag = body.iter().take(16).any(|&b| b != 0);
    if let Ok(payload) = open_payload(&geometry, &body) {
        assert!(!nonzero_tag && payload.len() == geometry.payload_size());
    }
    if let Some(keys) = keys() {
        let _ = keys.open_reply(&geometry, &mut body);
    }
});
