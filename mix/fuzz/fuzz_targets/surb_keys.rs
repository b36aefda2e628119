//! Stored SURB keys decoded from arbitrary bytes: never a panic, and whatever decodes encodes
//! back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::{Geometry, SurbKeys};

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = SurbKeys::from_bytes(data) {
        assert_eq!(&keys.to_bytes()[..], data);
        let geometry = Geometry::DEFAULT;
        let mut body = vec![0u8; geometry.body_size()];
        let _ = keys.open_reply(&geometry, &mut body);
    }
});
