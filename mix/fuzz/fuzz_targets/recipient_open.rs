//! The recipient layer on arbitrary bodies (any length, any representative): never a panic,
//! bodies of the wrong size are refused by size, random ones as tampered; and a body sealed for
//! the key opens, while the same body with one bit flipped (chosen by the input) does not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, Hop, Label, NodeId, NodeSecretKey, OpenError,
    RecipientKey, ReplayCache, ReplayConfig, build_packet_to, unwrap_packet,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

const G: Geometry = Geometry::DEFAULT;

fn key() -> &'static RecipientKey {
    static K: OnceLock<RecipientKey> = OnceLock::new();
    K.get_or_init(|| RecipientKey::from_seed(&[5; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        // Arbitrary bytes as a delivered body.
        let mut body = rest.to_vec();
        match key().open(&G, &mut body) {
            Err(OpenError::WrongSize { .. }) => assert_ne!(rest.len(), G.body_size()),
            Err(OpenError::Tampered) => {}
            Ok(_) => panic!("random bytes opened"),
            Err(_) => {}
        }
        return;
    }
    // A real body for the key: one hop, seeded by the input, then one flipped bit.
    let mut seed = [0u8; 32];
    for (s, d) in seed.iter_mut().zip(rest) {
        *s = *d;
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let node = NodeSecretKey::random(&mut rng);
    let hop = Hop { node: NodeId(0), key: node.public_key(), delay: Delay::ZERO };
    let destination = Destination::Deliver { client: ClientId([1; 32]), label: Label([2; 16]) };
    let payload = rest.get(32..).unwrap_or(&[]);
    let payload = &payload[..payload.len().min(G.recipient_payload_size())];
    let Ok(mut packet) =
        build_packet_to(&G, &[hop], &destination, &key().public_key(), payload, &mut rng)
    else {
        panic!("a payload within the size builds");
    };
    let cache = ReplayCache::new(ReplayConfig { expected_packets: 16, false_positive_rate: 1e-6 }, [0; 32]);
    unwrap_packet(&G, &node, &cache, &mut packet).expect("the one hop unwraps");
    let body = packet[G.header_size()..].to_vec();
    let mut sealed = body.clone();
    let opened = key().open(&G, &mut sealed).expect("a sealed body opens");
    assert_eq!(&opened[..payload.len()], payload);
    let bit = usize::from(mode >> 1) * 131 % (8 * body.len());
    let mut flipped = body;
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(key().open(&G, &mut flipped), Err(OpenError::Tampered));
});
