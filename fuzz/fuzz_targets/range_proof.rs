//! Range proofs from an untrusted peer, checked against a fixed shard: a
//! proof never panics the verifier, and whatever verifies is the shard's bytes.
#![no_main]

use std::sync::OnceLock;

use chunker::{Cid, proof};
use libfuzzer_sys::fuzz_target;

fn shard() -> &'static (Vec<u8>, Cid) {
    static SHARD: OnceLock<(Vec<u8>, Cid)> = OnceLock::new();
    SHARD.get_or_init(|| {
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let cid = Cid::of_raw(&bytes);
        (bytes, cid)
    })
}

fuzz_target!(|data: &[u8]| {
    let (bytes, cid) = shard();
    if data.len() < 8 {
        return;
    }
    let len = bytes.len() as u64;
    let a = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])) % len;
    let b = u64::from(u32::from_le_bytes([data[4], data[5], data[6], data[7]])) % len;
    let range = a.min(b)..a.max(b) + 1;
    let body = &data[8..];
    // Half the time, start from a real proof and let the fuzzer damage it.
    let real;
    let candidate: &[u8] = if body.first().is_some_and(|b| b & 1 == 1) {
        let mut p = proof::prove(bytes, &proof::Outboard::create(bytes), &[range.clone()]).expect("prove");
        for (i, d) in body.iter().enumerate().skip(1) {
            let at = (usize::from(*d) * 7919 + i * 104_729) % p.len();
            p[at] ^= d.rotate_left(i as u32 % 8);
        }
        real = p;
        &real
    } else {
        body
    };
    if let Ok(out) = proof::verify(cid, len, &[range.clone()], candidate) {
        assert_eq!(out[0], bytes[range.start as usize..range.end as usize]);
    }
});
