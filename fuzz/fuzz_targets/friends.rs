//! The friends' protocol from an untrusted peer (requests a node reads,
//! answers a sender reads, envelopes a device keeps): no decoder panics or
//! allocates beyond its limits, what decodes encodes back to the same
//! bytes, and no envelope opens as a letter without its friend's key.
#![no_main]

use drive::friends::{Answer, Envelope, Letter, Request, open_part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data, "a request with two encodings");
        if let Request::Offer(e) = &r {
            // A key nobody paired with opens nothing.
            let key = drive::FriendKey([7; 32]);
            assert!(Letter::open(&key, e).is_none(), "a letter opened that nobody sealed");
            assert!(open_part(&key, e, 0, &e.header).is_none(), "a part opened that nobody sealed");
        }
    }
    if let Ok(a) = Answer::decode(data)
        && !matches!(a, Answer::Refused { .. })
    {
        assert_eq!(a.encode(), data, "an answer with two encodings");
    }
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(e.encode(), data, "an envelope with two encodings");
    }
});
