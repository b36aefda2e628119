//! End-to-end decryption of whatever arrives for a client (Noise N and X handshake messages
//! from anyone): never panics, and nothing random opens.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p2pmix::client::{StaticKey, e2e};

fn key() -> &'static StaticKey {
    static KEY: OnceLock<StaticKey> = OnceLock::new();
    KEY.get_or_init(|| StaticKey::from_secret(&[7; 32]).expect("a valid key"))
}

fuzz_target!(|data: &[u8]| {
    let _ = e2e::open(key(), data);
});
