//! Manifest bytes from an untrusted peer: decoding never panics, never
//! allocates beyond the input, and what decodes re-encodes to the same bytes.
#![no_main]

use chunker::{Limits, Manifest, ReadKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_bytes(data, &Limits::default()) {
        assert_eq!(m.to_bytes(), data);
        // Opening with a guessed key must fail cleanly, never panic.
        let _ = m.open(&ReadKey::from_bytes([0; 32]));
        for s in m.segments() {
            let _ = s.cid();
        }
    }
});
