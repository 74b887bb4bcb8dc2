//! Verified byte ranges of a shard.
//!
//! A shard's CID digest is the BLAKE3 root of its bytes. BLAKE3 is a Merkle
//! tree over 1 KiB chunks, so a holder of the shard can prove any byte range by
//! sending the range's data plus the sibling hashes on the way to the root
//! (the "bao" encoding, here from the `bao-tree` crate). The verifier needs
//! only the CID and the shard length; the first byte that does not hash into
//! the root is rejected, so a reader knows exactly which peer lied.
//!
//! Proof granularity is 4 KiB blocks (`PROOF_BLOCK_LOG` = 2 chunks of 1 KiB
//! as a power of two): a proven range is rounded out to 4 KiB, and a prover
//! keeps an outboard (the tree's inner hashes) of 64 bytes per 4 KiB, 1.6% of
//! the shard. Proof format: the bao-tree pre-order encoding of the rounded
//! ranges, no length prefix: the verifier takes the length from the manifest.
//! (A proof of a middle range does not by itself pin the length to the byte:
//! lengths that end in the same 1 KiB chunk give the same tree shape. A proof
//! that covers the last block does.)

use std::ops::Range;

use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::io::sync::encode_ranges_validated;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use crate::address::Cid;
use crate::error::{Error, Result};

mod verify;
pub use verify::Verified;

/// log2 of the proof block in 1 KiB BLAKE3 chunks: 2 → 4 KiB.
pub const PROOF_BLOCK_LOG: u8 = 2;

fn block() -> BlockSize {
    BlockSize::from_chunk_log(PROOF_BLOCK_LOG)
}

/// The inner hashes of one shard's BLAKE3 tree, kept by whoever serves ranges.
#[derive(Debug, Clone)]
pub struct Outboard(PostOrderMemOutboard);

impl Outboard {
    /// Hash a shard and keep its tree.
    pub fn create(shard: &[u8]) -> Self {
        Outboard(PostOrderMemOutboard::create(shard, block()))
    }

    /// The shard's BLAKE3 root (its CID digest).
    pub fn root(&self) -> [u8; 32] {
        *self.0.root.as_bytes()
    }

    /// Length of the shard this outboard describes.
    pub fn shard_len(&self) -> u64 {
        self.0.tree.size()
    }

    /// The stored form: hash pairs in post order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.data
    }

    /// Rebuild from the stored form; refused if its length does not fit.
    pub fn from_parts(root: [u8; 32], shard_len: u64, bytes: Vec<u8>) -> Result<Self> {
        let tree = BaoTree::new(shard_len, block());
        if bytes.len() as u64 != tree.outboard_size() {
            return Err(Error::Proof(format!(
                "outboard of {} bytes does not fit a shard of {shard_len} bytes (want {})",
                bytes.len(),
                tree.outboard_size()
            )));
        }
        Ok(Outboard(PostOrderMemOutboard { root: root.into(), tree, data: bytes }))
    }
}

fn chunk_ranges(shard_len: u64, ranges: &[Range<u64>]) -> Result<ChunkRanges> {
    let mut set = ChunkRanges::empty();
    for r in ranges {
        if r.start >= r.end || r.end > shard_len {
            return Err(Error::Proof(format!(
                "range {}..{} is empty or outside a shard of {shard_len} bytes",
                r.start, r.end
            )));
        }
        set |= ChunkRanges::from(ChunkNum::full_chunks(r.start)..ChunkNum::chunks(r.end));
    }
    Ok(set)
}

/// Prove `ranges` of `shard` (whose outboard is `outboard`). Fails if the
/// shard's bytes do not match the outboard (a corrupt shard is never proven).
pub fn prove(shard: &[u8], outboard: &Outboard, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
    let set = chunk_ranges(outboard.shard_len(), ranges)?;
    let mut out = Vec::new();
    encode_ranges_validated(shard, &outboard.0, &set, &mut out)
        .map_err(|e| Error::Proof(format!("cannot prove from this shard: {e}")))?;
    Ok(out)
}

/// Prove `ranges` of a shard read at will through `shard` (a file, say):
/// only the 1 KiB chunks the ranges touch are read, never the whole shard,
/// each run of them in one read. Fails if those bytes do not match the
/// outboard.
pub fn prove_at(shard: &dyn crate::Seed, outboard: &Outboard, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    prove_at_into(shard, outboard, ranges, &mut out)?;
    Ok(out)
}

thread_local! {
    /// The runs a prover reads, kept for the thread's next proof.
    static RUNS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`prove_at`] into `out` (emptied first; its allocation reused).
pub fn prove_at_into(
    shard: &dyn crate::Seed,
    outboard: &Outboard,
    ranges: &[Range<u64>],
    out: &mut Vec<u8>,
) -> Result<()> {
    let size = outboard.shard_len();
    let set = chunk_ranges(size, ranges)?;
    let chunk = blake3::CHUNK_LEN as u64;
    out.clear();
    out.reserve(max_proof_len(size, ranges) as usize);
    RUNS.with(|cell| {
        let mut data = cell.borrow_mut();
        // The runs of chunks the proof carries, read once each into one
        // buffer (a read per 4 KiB block was a system call per block).
        let mut runs = Vec::new();
        let mut at = 0usize;
        for q in chunk_query(size, ranges)? {
            let (a, b) = (q.start * chunk, (q.end * chunk).min(size));
            let n = (b - a) as usize;
            if data.len() < at + n {
                data.resize(at + n, 0);
            }
            shard.read_at(a, &mut data[at..at + n]).map_err(|e| Error::Proof(format!("reading the shard: {e}")))?;
            runs.push((a..b, at));
            at += n;
        }
        let r = encode_ranges_validated(Runs { runs: &runs, data: &data, shard }, &outboard.0, &set, &mut *out)
            .map_err(|e| Error::Proof(format!("cannot prove from this shard: {e}")));
        // A thread keeps at most a few MiB between proofs.
        if data.capacity() > 8 << 20 {
            *data = Vec::new();
        }
        r
    })
}

/// Runs of a shard read ahead, and the shard for anything outside them.
struct Runs<'a> {
    /// (shard bytes, offset in `data`).
    runs: &'a [(Range<u64>, usize)],
    data: &'a [u8],
    shard: &'a dyn crate::Seed,
}

impl bao_tree::io::sync::ReadAt for Runs<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = pos + buf.len() as u64;
        if let Some((r, at)) = self.runs.iter().find(|(r, _)| r.start <= pos && end <= r.end) {
            let from = at + (pos - r.start) as usize;
            buf.copy_from_slice(&self.data[from..from + buf.len()]);
            return Ok(buf.len());
        }
        // Outside the runs (bao-tree asks only for what the ranges touch,
        // so this is not expected): read it from the shard.
        let size = self.shard.size();
        if pos >= size {
            return Ok(0);
        }
        let n = buf.len().min((size - pos) as usize);
        self.shard.read_at(pos, &mut buf[..n])?;
        Ok(n)
    }
}

/// An upper bound on the length of a proof of `ranges` of a shard of
/// `shard_len` bytes, so a reader can refuse an oversized answer before
/// looking at it. Per range: its bytes rounded out to blocks, plus a hash pair
/// for every node on the two root paths that bound it and for every block
/// inside it (a block-aligned range crossing a high power-of-two boundary
/// needs a pair at every level on both sides).
pub fn max_proof_len(shard_len: u64, ranges: &[Range<u64>]) -> u64 {
    let blk = block().bytes() as u64;
    let blocks = shard_len.div_ceil(blk).max(1);
    let depth = u64::from(64 - blocks.leading_zeros());
    // Hash pairs inside a block (1 KiB chunks of a 4 KiB block) when only part of it is asked for.
    let inner = 2 * u64::from(PROOF_BLOCK_LOG);
    // Saturating: the ranges may be a stranger's, not yet checked against
    // the shard (an end near u64::MAX).
    ranges
        .iter()
        .map(|r| {
            let start = r.start / blk * blk;
            let end = r.end.div_ceil(blk).saturating_mul(blk);
            let span = end.saturating_sub(start);
            let pairs = (2 * depth + 2 + 2 * inner).saturating_add(span / blk * 2);
            span.saturating_add(pairs.saturating_mul(64))
        })
        .fold(0u64, u64::saturating_add)
}

/// Check a proof of `ranges` of the shard named `cid` (of `shard_len` bytes)
/// and return the bytes of each range, in order.
pub fn verify(cid: &Cid, shard_len: u64, ranges: &[Range<u64>], proof: &[u8]) -> Result<Vec<Vec<u8>>> {
    let proven = verify_owned(cid, shard_len, ranges, proof.to_vec())?;
    ranges
        .iter()
        .map(|r| {
            proven
                .get(r)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::Proof(format!("proof does not cover bytes {}..{}", r.start, r.end)))
        })
        .collect()
}

/// Check a proof of `ranges` of the shard named `cid` (of `shard_len`
/// bytes) in its own buffer: the proven bytes are moved to the front of it,
/// with no copy elsewhere (see [`Verified`]).
pub fn verify_owned(cid: &Cid, shard_len: u64, ranges: &[Range<u64>], proof: Vec<u8>) -> Result<Verified> {
    verify::verify_owned(cid.digest(), shard_len, chunk_query(shard_len, ranges)?, proof)
}

/// The ranges in 1 KiB chunks, sorted, overlapping and touching ones merged
/// (what a proof of them carries data for).
fn chunk_query(shard_len: u64, ranges: &[Range<u64>]) -> Result<Vec<Range<u64>>> {
    chunk_ranges(shard_len, ranges)?;
    let chunk = blake3::CHUNK_LEN as u64;
    let mut q: Vec<Range<u64>> = ranges.iter().map(|r| r.start / chunk..r.end.div_ceil(chunk)).collect();
    q.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(q.len());
    for r in q {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer bounds the answer to a stranger's ranges before it checks them
    /// against the shard: an end at u64::MAX overflowed (a panic in a debug
    /// build, a wrapped, too small bound in a release one).
    #[test]
    fn a_range_ending_at_u64_max_does_not_overflow_the_bound() {
        assert_eq!(max_proof_len(1 << 20, &[0..u64::MAX]), u64::MAX);
        // No panic, and at least the bytes asked for.
        assert!(max_proof_len(1 << 20, &[0..10, (u64::MAX - 5)..u64::MAX]) >= 15);
        assert!(max_proof_len(1 << 20, &[0..4096]) < 8192);
    }

    fn shard(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        blake3::Hasher::new().update(b"shard").finalize_xof().fill(&mut v);
        v
    }

    /// bao-tree's own decoder, the reference the in-place verifier must agree with.
    fn reference(cid: &Cid, len: u64, ranges: &[Range<u64>], proof: &[u8]) -> bool {
        use bao_tree::io::BaoContentItem;
        use bao_tree::io::sync::DecodeResponseIter;
        let Ok(set) = chunk_ranges(len, ranges) else { return false };
        let tree = BaoTree::new(len, block());
        let mut reader = proof;
        let root = blake3::Hash::from_bytes(*cid.digest());
        let mut data = 0u64;
        for item in DecodeResponseIter::new(root, tree, &mut reader, &set) {
            match item {
                Ok(BaoContentItem::Leaf(l)) => data += l.data.len() as u64,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        reader.is_empty() && data > 0
    }

    #[test]
    fn the_in_place_verifier_agrees_with_bao_tree_at_every_boundary() {
        // Lengths around chunk, block and power-of-two boundaries; ranges
        // starting and ending inside chunks, inside blocks, on boundaries.
        let lens = [1u64, 1023, 1024, 1025, 3000, 4095, 4096, 4097, 8191, 8192, 12_289, 65_536, 70_001, 262_145];
        let mut cases = 0;
        for &len in &lens {
            let s = shard(len as usize);
            let ob = Outboard::create(&s);
            let cid = Cid::of_raw(&s);
            let points: Vec<u64> =
                [0, 1, 1023, 1024, 1500, 4095, 4096, 5000, 8192, 9000, 40_000, 65_535, 65_536, 70_000]
                    .into_iter()
                    .chain([len / 2, len - 1, len])
                    .filter(|&p| p <= len)
                    .collect();
            for &a in &points {
                for &b in points.iter().filter(|&&b| b > a) {
                    for extra in [None, Some((b + 5000).min(len)..len)] {
                        let mut ranges = vec![a..b];
                        if let Some(e) = extra.filter(|e| !e.is_empty()) {
                            ranges.push(e);
                        }
                        let p = prove(&s, &ob, &ranges).expect("prove");
                        assert!(reference(&cid, len, &ranges, &p), "bao-tree refuses {len} {ranges:?}");
                        let got = verify_owned(&cid, len, &ranges, p.clone()).expect("verify");
                        for r in &ranges {
                            assert_eq!(got.get(r), Some(&s[r.start as usize..r.end as usize]), "{len} {ranges:?}");
                        }
                        // Shorter, longer, or any byte changed: refused.
                        assert!(verify_owned(&cid, len, &ranges, p[..p.len() - 1].to_vec()).is_err());
                        let mut long = p.clone();
                        long.push(0);
                        assert!(verify_owned(&cid, len, &ranges, long).is_err());
                        for i in (0..p.len()).step_by(p.len() / 7 + 1) {
                            let mut bad = p.clone();
                            bad[i] ^= 0x10;
                            let ours = verify_owned(&cid, len, &ranges, bad.clone()).is_ok();
                            // Inside a subtree the query covers whole, a pair is not
                            // needed (the data is hashed as one subtree); bao-tree checks it.
                            if ours {
                                assert!(got.get(&ranges[0]).is_some());
                                assert_eq!(
                                    verify_owned(&cid, len, &ranges, bad).expect("verify").get(&ranges[0]),
                                    got.get(&ranges[0]),
                                    "a changed byte changed the output: {len} {ranges:?} byte {i}"
                                );
                            }
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 500, "{cases}");
    }

    #[test]
    fn ranges_prove_and_verify() {
        for len in [1usize, 1000, 4096, 4097, 100_000, 1 << 20] {
            let s = shard(len);
            let ob = Outboard::create(&s);
            let cid = Cid::of_raw(&s);
            assert_eq!(ob.root(), *cid.digest());
            let ranges = vec![0..1, (len as u64 / 2)..(len as u64), (len as u64 / 3)..(len as u64 / 3 + 1)];
            let proof = prove(&s, &ob, &ranges).expect("prove");
            assert!(proof.len() as u64 <= max_proof_len(len as u64, &ranges), "len {len}");
            let got = verify(&cid, len as u64, &ranges, &proof).expect("verify");
            for (r, g) in ranges.iter().zip(&got) {
                assert_eq!(&s[r.start as usize..r.end as usize], g.as_slice());
            }
        }
    }

    #[test]
    fn proving_from_a_reader_gives_the_same_proof_and_reads_only_the_ranges() {
        struct Counting(Vec<u8>, std::sync::atomic::AtomicU64);
        impl crate::Seed for Counting {
            fn size(&self) -> u64 {
                self.0.len() as u64
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
                self.1.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
                buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
                Ok(())
            }
        }
        let s = shard(4 << 20);
        let ob = Outboard::create(&s);
        let ranges = vec![100..5000, 3_000_000..3_010_000];
        let src = Counting(s.clone(), Default::default());
        let at = prove_at(&src, &ob, &ranges).expect("prove from a reader");
        assert_eq!(at, prove(&s, &ob, &ranges).expect("prove"));
        let read = src.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read < 64 << 10, "read {read} bytes of a 4 MiB shard for 15 KB of ranges");
        // A corrupt block inside the ranges is caught.
        let mut bad = s.clone();
        bad[3_005_000] ^= 1;
        assert!(prove_at(&Counting(bad, Default::default()), &ob, &ranges).is_err());
    }

    #[test]
    fn short_ranges_across_high_boundaries_stay_within_the_bound() {
        // 205 blocks; blocks 15 and 16 straddle the 64 KiB boundary, so the
        // proof carries a hash pair at every level on both sides.
        let s = shard(839_000);
        let ob = Outboard::create(&s);
        let ranges = vec![61_500..69_000];
        let proof = prove(&s, &ob, &ranges).expect("prove");
        assert!(proof.len() as u64 <= max_proof_len(839_000, &ranges), "{} bytes", proof.len());
        // Every small range near every power-of-two boundary stays within the bound.
        for boundary in (12..20).map(|b| 1u64 << b) {
            for (a, b) in
                [(boundary - 3000, boundary + 3000), (boundary - 4096, boundary + 4096), (boundary - 1, boundary + 1)]
            {
                let r = vec![a..b];
                let p = prove(&s, &ob, &r).expect("prove");
                assert!(p.len() as u64 <= max_proof_len(839_000, &r), "{a}..{b}: {} bytes", p.len());
            }
        }
        verify(&Cid::of_raw(&s), 839_000, &ranges, &proof).expect("verify");
    }

    #[test]
    fn any_tampering_is_rejected() {
        let s = shard(200_000);
        let ob = Outboard::create(&s);
        let cid = Cid::of_raw(&s);
        let ranges = std::iter::once(50_000..90_000u64).collect::<Vec<_>>();
        let proof = prove(&s, &ob, &ranges).expect("prove");
        for i in (0..proof.len()).step_by(997) {
            let mut bad = proof.clone();
            bad[i] ^= 0x40;
            assert!(verify(&cid, 200_000, &ranges, &bad).is_err(), "byte {i}");
        }
        assert!(verify(&cid, 200_000, &ranges, &proof[..proof.len() - 1]).is_err());
        let mut long = proof.clone();
        long.push(0);
        assert!(verify(&cid, 200_000, &ranges, &long).is_err());
        // A proof for another length of tree does not verify.
        assert!(verify(&cid, 100_000, &ranges, &proof).is_err());
        // A corrupt shard cannot be proven by its honest outboard.
        let mut bad_shard = s.clone();
        bad_shard[60_000] ^= 1;
        assert!(prove(&bad_shard, &ob, &ranges).is_err());
    }
}
