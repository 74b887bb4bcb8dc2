//! Capability strings as pasted by people: parsing never panics, and what
//! parses prints back to an equivalent capability.
#![no_main]

use chunker::ReadCapability;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(cap) = s.parse::<ReadCapability>() {
            let again: ReadCapability = cap.to_string().parse().expect("printed capability parses");
            assert_eq!(again, cap);
        }
        let _ = s.parse::<chunker::Cid>();
    }
});
