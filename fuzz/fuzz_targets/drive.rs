//! The drive protocol's messages from an untrusted peer (requests a
//! device reads, answers a client reads, among them the vote on the
//! drive's root): no decoder panics or allocates beyond its limits, and
//! what decodes encodes back to the same bytes.
#![no_main]

use drive::protocol::{Answer, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data, "a request with two encodings");
    }
    if let Ok(a) = Answer::decode(data)
        && !matches!(a, Answer::Refused { .. } | Answer::Drive(Some(_)) | Answer::Drive(None))
    {
        assert_eq!(a.encode(), data, "an answer with two encodings");
    }
});
