//! Address strings (pasted by users, read from files): parsing never panics, and a parsed
//! address prints back to a string that parses to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix::client::Address;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(address) = text.parse::<Address>()
    {
        assert_eq!(address.to_string().parse::<Address>(), Ok(address));
    }
});
