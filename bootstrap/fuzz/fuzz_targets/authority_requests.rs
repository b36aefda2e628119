//! Arbitrary directory requests (descriptors, votes, reveals, signatures) into an authority,
//! then its clock run through a whole epoch: never a panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, EpochSchedule, Now, PinnedAuthorities, default_parameters,
};
use p2pmix_proto::v1::DirectoryRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let keys: Vec<Keypair> = (0..3u8)
        .map(|i| Keypair::ed25519_from_bytes([i + 1; 32]).expect("32 bytes"))
        .collect();
    let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
    let schedule = EpochSchedule::new(0, 8_000);
    let start = Now::new(Instant::now(), 100);
    let at = |ms: u64| start.later(Duration::from_millis(ms - 100));
    let mut authority = Authority::new(
        AuthorityConfig {
            keypair: keys[0].clone(),
            authorities: pinned,
            schedule,
            parameters: default_parameters(),
        },
        start,
    );
    // The input is a sequence of length-prefixed requests.
    let mut rest = data;
    let mut now = 100;
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (message, next) = tail.split_at(len);
        rest = next;
        if let Ok(request) = DirectoryRequest::decode(message) {
            let _ = authority.handle_request(at(now), request);
        }
        now += 500;
    }
    let mut rng = rand_core_compat::Counter(0);
    for t in (now..16_000).step_by(1_000) {
        authority.handle_timeout(at(t), &mut rng);
        while authority.poll_transmit().is_some() {}
        while authority.poll_event().is_some() {}
    }
});

mod rand_core_compat {
    /// A deterministic generator (the fuzz target needs repeatable runs, not secrecy).
    pub struct Counter(pub u64);
    impl rand_core::TryRng for Counter {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            self.0 += 1;
            Ok(self.0 as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            self.0 += 1;
            Ok(self.0)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            for b in dst {
                self.0 += 1;
                *b = self.0 as u8;
            }
            Ok(())
        }
    }
    impl rand_core::TryCryptoRng for Counter {}
}
