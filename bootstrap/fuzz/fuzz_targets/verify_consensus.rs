//! The shared consensus verification on arbitrary bytes: never a panic, never accepted.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;
use p2pmix_bootstrap::{PinnedAuthorities, verify_consensus};

fn pinned() -> &'static PinnedAuthorities {
    static P: OnceLock<PinnedAuthorities> = OnceLock::new();
    P.get_or_init(|| {
        PinnedAuthorities::new((0..3u8).map(|i| {
            Keypair::ed25519_from_bytes([i + 1; 32]).expect("32 bytes").public()
        }))
    })
}

fuzz_target!(|data: &[u8]| {
    // Forging three ed25519 signatures is out of the fuzzer's reach: nothing may verify.
    assert!(verify_consensus(data, pinned(), 1_000, None).is_err());
});
