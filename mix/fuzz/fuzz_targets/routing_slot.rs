//! The routing-slot parser: never a panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = p2pmix_mix::fuzzing::decode_slot(data) {
        assert_eq!(&encoded[..], data);
    }
});
