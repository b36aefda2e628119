//! The client's frame codec (what a recipient decodes after end-to-end decryption, and what a
//! SURB's creator decodes from a reply): decoding never panics, and what decodes re-encodes to
//! the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix::client::frame::{Frame, from_payload};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let encoded = frame.encode();
        assert_eq!(Frame::decode(&encoded).as_ref(), Ok(&frame));
    }
    if let Ok(inner) = from_payload(data) {
        let _ = Frame::decode(inner);
    }
});
