//! Property tests: every encode/decode pair, under loss and corruption.

mod common;

use std::collections::HashMap;

use chunker::{Chunking, Cid, Coder, Error, Limits, Manifest, Params, ReadCapability, proof};
use common::*;
use proptest::prelude::*;

fn params(k: u8, m: u8, avg: u32, segment: u32) -> Params {
    Params::default().with_chunking(Chunking::with_avg(avg)).with_segment_size(segment).with_coding(k, m)
}

/// An object of `len` bytes mixing noise and runs (so some chunks compress).
fn object(seed: u64, len: usize) -> Vec<u8> {
    let mut v = noise(seed, len);
    let mut i = 0;
    while i < len {
        let run = (seed as usize ^ i) % 50_000;
        let end = (i + run).min(len);
        if (i / 7919) % 3 == 0 {
            v[i..end].fill(b'z');
        }
        i = end + 100_000;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Lose up to m shards per segment and flip one bit anywhere: the decoder
    /// returns the exact bytes or a precise error, never wrong bytes.
    #[test]
    fn lossy_corrupt_decode_is_exact_or_a_precise_error(
        seed in any::<u64>(),
        len in prop_oneof![0usize..2_000, 2_000usize..(8 << 20)],
        k in 1u8..12,
        m in 0u8..5,
        losses in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        flip in any::<(prop::sample::Index, prop::sample::Index, u8)>(),
    ) {
        let data = object(seed, len);
        let (e, mut shards) = encode(params(k, m, 4096, 512 * 1024), &data, None);
        let mut lost_in_segment = HashMap::new();
        for seg in e.manifest.segments().iter() {
            for idx in losses.iter().take(usize::from(m)) {
                let cid = seg.shards()[idx.index(seg.shards().len())];
                if shards.remove(&cid).is_some() {
                    *lost_in_segment.entry(cid).or_insert(0) += 1;
                }
            }
        }
        let mut flipped = None;
        if !shards.is_empty() {
            let mut keys: Vec<Cid> = shards.keys().copied().collect();
            keys.sort();
            let cid = keys[flip.0.index(keys.len())];
            let bytes = shards.get_mut(&cid).expect("present");
            if !bytes.is_empty() {
                let at = flip.1.index(bytes.len());
                bytes[at] ^= 1 << (flip.2 % 8);
                flipped = Some(cid);
            }
        }
        let shards_left: std::collections::HashSet<Cid> = shards.keys().copied().collect();
        match decode(&e, shards) {
            Ok((out, stats)) => {
                prop_assert_eq!(out, data);
                if let Some(cid) = flipped {
                    // A corrupt shard that was read is reported, by CID.
                    let named = stats.problems.iter().any(|p| p.cid == cid.to_string());
                    let read_any = stats.problems.iter().any(|p| p.reason.contains("do not match") || p.reason.contains("proof"));
                    prop_assert!(named || !read_any);
                }
            }
            Err(Error::Unrecoverable { segment, problems, needed, good, .. }) => {
                // Only possible when the flipped bit lands in a segment that already
                // lost m shards, or when equal shards (k = 1 makes every parity shard a
                // copy of the data shard, one CID) were lost together.
                let seg = &e.manifest.segments()[segment];
                let present = seg.shards().iter().filter(|c| shards_left.contains(c)).count();
                let flipped = flipped.map(|c| c.to_string());
                prop_assert!(flipped.is_some() || present < seg.data_shards(), "unrecoverable without enough damage");
                if present >= seg.data_shards() {
                    prop_assert!(problems.iter().any(|p| Some(&p.cid) == flipped.as_ref()), "the corrupt shard is named");
                }
                prop_assert!(good < needed);
                prop_assert!(segment < e.manifest.segments().len());
                prop_assert!(!problems.is_empty());
            }
            Err(other) => prop_assert!(false, "unexpected error: {other}"),
        }
    }

    /// Any byte range of any shard can be rebuilt from the same range of any k others.
    #[test]
    fn any_range_rebuilds_from_any_k_others(
        seed in any::<u64>(),
        k in 1u8..12,
        m in 1u8..6,
        shard_len in 1usize..20_000,
        range in any::<(prop::sample::Index, prop::sample::Index)>(),
        missing in any::<prop::sample::Index>(),
        keep in any::<prop::sample::Index>(),
    ) {
        let coder = Coder::new(k, m).expect("coder");
        let data: Vec<Vec<u8>> = (0..k).map(|i| noise(seed ^ u64::from(i), shard_len)).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = vec![vec![0u8; shard_len]; usize::from(m)];
        coder.encode(&refs, &mut parity).expect("encode");
        let all: Vec<Vec<u8>> = data.into_iter().chain(parity).collect();
        let n = all.len();
        let (a, b) = (range.0.index(shard_len), range.1.index(shard_len));
        let (start, end) = (a.min(b), a.max(b) + 1);
        let lost = missing.index(n);
        // Keep exactly k shards other than the lost one, starting somewhere.
        let first = keep.index(n);
        let kept: Vec<usize> = (0..n).map(|i| (first + i) % n).filter(|&i| i != lost).take(usize::from(k)).collect();
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; n];
        for &i in &kept {
            pieces[i] = Some(all[i][start..end].to_vec());
        }
        coder.rebuild(&mut pieces, false).expect("rebuild");
        prop_assert_eq!(pieces[lost].as_deref(), Some(&all[lost][start..end]));
    }

    /// A range proof verifies for the right bytes, and a flipped bit never
    /// yields other bytes: it fails, or (a hash pair inside a subtree the
    /// range covers whole, which the verifier does not need: it hashes that
    /// subtree's data in one go) the bytes are still the shard's.
    #[test]
    fn tampered_range_proofs_never_yield_wrong_bytes(
        seed in any::<u64>(),
        len in 1usize..300_000,
        r in any::<(prop::sample::Index, prop::sample::Index)>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let shard = noise(seed, len);
        let ob = proof::Outboard::create(&shard);
        let cid = Cid::of_raw(&shard);
        let (a, b) = (r.0.index(len) as u64, r.1.index(len) as u64);
        let ranges = vec![a.min(b)..a.max(b) + 1];
        let p = proof::prove(&shard, &ob, &ranges).expect("prove");
        prop_assert!(p.len() as u64 <= proof::max_proof_len(len as u64, &ranges));
        let got = proof::verify(&cid, len as u64, &ranges, &p).expect("verify");
        prop_assert_eq!(&got[0][..], &shard[ranges[0].start as usize..ranges[0].end as usize]);
        let at = bit.index(p.len() * 8);
        let mut bad = p.clone();
        bad[at / 8] ^= 1 << (at % 8);
        match proof::verify(&cid, len as u64, &ranges, &bad) {
            Err(_) => {}
            Ok(other) => prop_assert_eq!(&other[0][..], &shard[ranges[0].start as usize..ranges[0].end as usize]),
        }
        // A changed data byte is always refused.
        let data_at = p.len() - 1;
        let mut bad = p.clone();
        bad[data_at] ^= 1;
        prop_assert!(proof::verify(&cid, len as u64, &ranges, &bad).is_err());
    }

    /// Decoding random or damaged manifest bytes never panics, and what decodes re-encodes identically.
    #[test]
    fn manifest_decoding_never_panics(seed in any::<u64>(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::from_bytes(&junk, &Limits::default());
        let data = object(seed, 300_000);
        let (e, _) = encode(params(3, 2, 4096, 64 * 1024), &data, None);
        let bytes = e.manifest.to_bytes();
        let back = Manifest::from_bytes(&bytes, &Limits::default()).expect("decode");
        prop_assert_eq!(&back, &e.manifest);
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(Manifest::from_bytes(truncated, &Limits::default()).is_err());
        let mut damaged = bytes.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 0x5a;
        if let Ok(m) = Manifest::from_bytes(&damaged, &Limits::default()) {
            // Still well-formed: then the sealed part or the CID gives it away.
            prop_assert_ne!(m.cid(), e.manifest.cid());
            prop_assert!(m.open(&e.read_key).is_err() || m.segments() != e.manifest.segments());
        }
        let cap = ReadCapability { manifest: e.manifest.cid(), key: e.read_key };
        prop_assert_eq!(cap.to_string().parse::<ReadCapability>().expect("cap"), cap);
    }
}
