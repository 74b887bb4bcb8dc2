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

use std::io::Read;
use std::ops::Range;

use bao_tree::io::BaoContentItem;
use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use crate::address::Cid;
use crate::error::{Error, Result};

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
/// only the 4 KiB blocks the ranges touch are read, never the whole shard.
/// Fails if those bytes do not match the outboard.
pub fn prove_at(shard: &dyn crate::Seed, outboard: &Outboard, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
    let set = chunk_ranges(outboard.shard_len(), ranges)?;
    let mut out = Vec::new();
    encode_ranges_validated(SeedAt(shard), &outboard.0, &set, &mut out)
        .map_err(|e| Error::Proof(format!("cannot prove from this shard: {e}")))?;
    Ok(out)
}

/// A [`crate::Seed`] as the positioned reader bao-tree wants.
struct SeedAt<'a>(&'a dyn crate::Seed);

impl bao_tree::io::sync::ReadAt for SeedAt<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.0.size();
        if pos >= size {
            return Ok(0);
        }
        let n = buf.len().min((size - pos) as usize);
        self.0.read_at(pos, &mut buf[..n])?;
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
    ranges
        .iter()
        .map(|r| {
            let start = r.start / blk * blk;
            let end = r.end.div_ceil(blk) * blk;
            (end - start) + 64 * (2 * depth + 2 * (end - start) / blk + 2 + 2 * inner)
        })
        .sum()
}

/// Check a proof of `ranges` of the shard named `cid` (of `shard_len` bytes)
/// and return the bytes of each range, in order.
pub fn verify(cid: &Cid, shard_len: u64, ranges: &[Range<u64>], proof: &[u8]) -> Result<Vec<Vec<u8>>> {
    let set = chunk_ranges(shard_len, ranges)?;
    let tree = BaoTree::new(shard_len, block());
    let root = blake3::Hash::from_bytes(*cid.digest());
    let mut reader = proof;
    let mut out: Vec<Vec<u8>> = ranges.iter().map(|r| vec![0u8; (r.end - r.start) as usize]).collect();
    let mut covered = vec![0u64; ranges.len()];
    for item in DecodeResponseIter::new(root, tree, &mut reader, &set) {
        let item = item.map_err(|e| Error::Proof(format!("{e}")))?;
        if let BaoContentItem::Leaf(leaf) = item {
            let leaf_range = leaf.offset..leaf.offset + leaf.data.len() as u64;
            for (i, r) in ranges.iter().enumerate() {
                let s = r.start.max(leaf_range.start);
                let e = r.end.min(leaf_range.end);
                if s < e {
                    let src = &leaf.data[(s - leaf_range.start) as usize..(e - leaf_range.start) as usize];
                    out[i][(s - r.start) as usize..(e - r.start) as usize].copy_from_slice(src);
                    covered[i] += e - s;
                }
            }
        }
    }
    let mut rest = [0u8; 1];
    if reader.read(&mut rest).unwrap_or(0) != 0 {
        return Err(Error::Proof("trailing bytes after the proof".to_string()));
    }
    for (i, r) in ranges.iter().enumerate() {
        // Overlapping requested ranges may count some bytes twice, never less.
        if covered[i] < r.end - r.start {
            return Err(Error::Proof(format!("proof does not cover bytes {}..{}", r.start, r.end)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        blake3::Hasher::new().update(b"shard").finalize_xof().fill(&mut v);
        v
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
