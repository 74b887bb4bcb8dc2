//! Shard protocol messages from an untrusted peer (`/ionshard/shard/1`
//! requests and responses, the put and get protocols' heads and ready
//! frames): decoding never panics, never allocates beyond what the limits
//! allow, and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::wire::{GetHead, Limits, PutHead, Ready, Request, Response};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Some((&kind, body)) = data.split_first() else { return };
    match kind % 5 {
        0 => {
            if let Ok(r) = Request::decode(body, &limits) {
                assert_eq!(r.encode(), body);
            }
        }
        1 => {
            if let Ok(r) = Response::decode(body, &limits) {
                // Error messages are cut and made valid UTF-8 on decoding,
                // and a status's reserved flag bits are ignored (later
                // releases may set them); the rest is exact.
                match r {
                    Response::Error { .. } => {}
                    Response::Status { .. } => {
                        let (flags, rest) = body.split_last().expect("a status has a flags byte");
                        assert_eq!(r.encode(), [rest, &[flags & 1]].concat());
                    }
                    _ => assert_eq!(r.encode(), body),
                }
            }
        }
        2 => {
            if let Ok(h) = PutHead::decode(body) {
                assert_eq!(h.encode(), body);
            }
        }
        3 => {
            if let Ok(h) = GetHead::decode(body) {
                assert_eq!(h.encode(), body);
            }
        }
        _ => {
            let _ = Ready::decode(body);
        }
    }
});
