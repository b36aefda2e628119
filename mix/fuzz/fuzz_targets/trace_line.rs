//! Trace lines as the anonymity analysis reads them: arbitrary bytes (as UTF-8 where they are)
//! into the parser; whatever parses must print back to a line that parses to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::trace::format::parse_line;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(parsed) = parse_line(line) {
            let printed = parsed.to_string();
            assert_eq!(parse_line(&printed).as_ref(), Ok(&parsed), "{printed}");
        }
    }
});
