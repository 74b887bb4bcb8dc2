//! Release bundles from an untrusted SPN or file: reading one never panics,
//! stays within its byte budget, and never writes manifest bytes before the
//! check of the signed parts has run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut checked = false;
    let _ = ota::Bundle::read_streaming(data, &mut out, &mut |b| {
        checked = true;
        assert!(!b.release.is_empty(), "checked without a release");
        Ok(())
    });
    assert!(checked || out.is_empty(), "manifest bytes written without a check");
});
