//! SURB decoding and use with arbitrary bytes: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{Geometry, Surb};

fuzz_target!(|data: &[u8]| {
    let geometry = Geometry::DEFAULT;
    let mut bytes = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.resize(Surb::encoded_size(&geometry), 0);
    }
    if let Ok(surb) = Surb::from_bytes(&geometry, &bytes) {
        assert_eq!(surb.to_bytes(), bytes);
        let payload = data.get(..data.len().min(geometry.payload_size() + 1)).unwrap_or_default();
        let _ = surb.into_reply(&geometry, payload);
    }
});
