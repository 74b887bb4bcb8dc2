//! The pairing mailbox's messages from an untrusted peer (requests a
//! bootstrap node reads, answers a device or client reads), and the
//! mailbox itself fed what decodes: no decoder panics or allocates beyond
//! its limits, what decodes encodes back to the same bytes, and no
//! sequence of requests panics the mailbox.
#![no_main]

use drive::mailbox::{Answer, Mailbox, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data, "a request with two encodings");
    }
    if let Ok(a) = Answer::decode(data)
        && !matches!(a, Answer::Refused { .. })
    {
        assert_eq!(a.encode(), data, "an answer with two encodings");
    }
    // Requests from two peers, split at zero bytes, at a clock that moves.
    // Fixed peers and a seeded generator, so a failure replays.
    use rand::SeedableRng;
    let key = |b: u8| net::Keypair::ed25519_from_bytes([b; 32]).expect("key").public().to_peer_id();
    let peers = [key(1), key(2)];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut m = Mailbox::new();
    for (i, part) in data.split(|b| *b == 0xff).enumerate().take(64) {
        if let Ok(r) = Request::decode(part) {
            let _ = m.handle(peers[i % 2], r, i as u64 * 7, &mut rng);
        }
    }
});
