//! Restoring an authority from an arbitrary (corrupt) state file: never a panic.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, EpochSchedule, Now, PinnedAuthorities, default_parameters,
};
use p2pmix_proto::v1::AuthorityState;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = AuthorityState::decode(data) else { return };
    let key = Keypair::ed25519_from_bytes([1; 32]).expect("32 bytes");
    let config = AuthorityConfig {
        authorities: PinnedAuthorities::new([key.public()]),
        keypair: key,
        schedule: EpochSchedule::new(0, 8_000),
        parameters: default_parameters(),
    };
    let authority = Authority::restore(config, &state, Now::new(Instant::now(), 100));
    let _ = authority.state().encode_to_vec();
});
