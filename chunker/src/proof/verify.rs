//! Checking a range proof in place, at full hashing speed.
//!
//! The proof is the bao pre-order encoding of the requested ranges (see the
//! module above): for every tree node that the query touches, top down, a
//! hash pair (64 bytes: left and right chaining values); for every 4 KiB
//! block entirely in the query, its bytes; inside a block only partly in the
//! query, the pairs and 1 KiB chunks the query touches. This walks that
//! grammar once:
//!
//! - the data is moved to the front of the proof's own buffer as it is read
//!   (the pairs dropped), so the verified bytes of each run of chunks end up
//!   contiguous, with no second buffer and no allocation per leaf;
//! - a node entirely in the query is checked by hashing its data as one
//!   BLAKE3 subtree against the chaining value its verified parent gave
//!   (eight chunks at a time with AVX2, not the four of a 4 KiB block); the
//!   pairs inside it are read past unused, so bytes there cannot matter;
//! - a node partly in the query has its pair checked against the parent's
//!   value, and only the children the query touches are visited.
//!
//! Nothing is returned unless every byte hashed into the root.

use std::ops::Range;

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::error::{Error, Result};

const CHUNK: u64 = blake3::CHUNK_LEN as u64;
/// Bytes of a proof block (4 KiB): below it, nodes fully in the query carry no pair.
const BLOCK: u64 = CHUNK << super::PROOF_BLOCK_LOG;

/// Verified bytes of one shard: the proof's buffer, its data moved to the
/// front, and where each run of proven bytes lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    buf: Vec<u8>,
    /// (shard bytes, offset in `buf`), in shard order.
    runs: Vec<(Range<u64>, usize)>,
}

impl Verified {
    /// The proven bytes `r` of the shard, if one run holds all of them.
    pub fn get(&self, r: &Range<u64>) -> Option<&[u8]> {
        let (run, at) = self.runs.iter().find(|(run, _)| run.start <= r.start && r.end <= run.end)?;
        let from = at + (r.start - run.start) as usize;
        self.buf.get(from..from + (r.end - r.start) as usize)
    }

    /// The runs of proven bytes (chunk-rounded ranges of the shard).
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.runs.iter().map(|(r, _)| r.clone())
    }

    /// Give the buffer back, to be reused for the next answer.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Check `proof` of `ranges` of the shard whose BLAKE3 root is `root` and
/// whose length is `size`, in place. `query` is the ranges in 1 KiB chunks,
/// sorted and merged.
pub(super) fn verify_owned(root: &[u8; 32], size: u64, query: Vec<Range<u64>>, mut proof: Vec<u8>) -> Result<Verified> {
    if size == 0 {
        return Err(Error::Proof("a shard of 0 bytes has no ranges to prove".to_string()));
    }
    let len = proof.len();
    let mut walk = Walk { buf: &mut proof, read: 0, write: 0, query: &query };
    if walk.touches(0, size) {
        walk.node(0, size, true, root)?;
    }
    if walk.read != len {
        return Err(Error::Proof("trailing bytes after the proof".to_string()));
    }
    let data = walk.write;
    proof.truncate(data);
    // The runs: the query's chunks, as bytes of the shard, back to back in the buffer.
    let mut runs = Vec::with_capacity(query.len());
    let mut at = 0usize;
    for q in &query {
        let r = (q.start * CHUNK).min(size)..(q.end * CHUNK).min(size);
        if r.is_empty() {
            continue;
        }
        let n = (r.end - r.start) as usize;
        runs.push((r, at));
        at += n;
    }
    if at != data {
        return Err(Error::Proof(format!("proof carries {data} bytes of data, the ranges need {at}")));
    }
    Ok(Verified { buf: proof, runs })
}

/// One pass over a proof.
struct Walk<'a> {
    buf: &'a mut [u8],
    /// Next byte of the proof to read.
    read: usize,
    /// Where the next data byte goes (always at or before `read`).
    write: usize,
    /// The query in chunks, sorted and merged.
    query: &'a [Range<u64>],
}

impl Walk<'_> {
    /// Whether the query touches the node of `len` bytes at byte `start`.
    fn touches(&self, start: u64, len: u64) -> bool {
        let (a, b) = (start / CHUNK, (start + len).div_ceil(CHUNK));
        self.query.iter().any(|q| q.start < b && a < q.end)
    }

    /// Whether the query covers every chunk of the node.
    fn covers(&self, start: u64, len: u64) -> bool {
        let (a, b) = (start / CHUNK, (start + len).div_ceil(CHUNK));
        self.query.iter().any(|q| q.start <= a && b <= q.end)
    }

    fn short(&self, what: &str) -> Error {
        Error::Proof(format!("proof ends early: {what} missing at byte {}", self.read))
    }

    fn pair(&mut self) -> Result<(ChainingValue, ChainingValue)> {
        let p = self.buf.get(self.read..self.read + 64).ok_or_else(|| self.short("a hash pair"))?;
        let mut l = [0u8; 32];
        let mut r = [0u8; 32];
        l.copy_from_slice(&p[..32]);
        r.copy_from_slice(&p[32..]);
        self.read += 64;
        Ok((l, r))
    }

    /// Move `len` data bytes to the front; where they now are.
    fn data(&mut self, len: u64) -> Result<Range<usize>> {
        let n = len as usize;
        if self.buf.len() - self.read < n {
            return Err(self.short("data"));
        }
        if self.write != self.read {
            self.buf.copy_within(self.read..self.read + n, self.write);
        }
        self.read += n;
        self.write += n;
        Ok(self.write - n..self.write)
    }

    /// The node of `len` bytes at byte `start` must hash to `expected` (a
    /// chaining value, or the root hash if `root`).
    fn node(&mut self, start: u64, len: u64, root: bool, expected: &[u8; 32]) -> Result<()> {
        let full = self.covers(start, len);
        if len <= CHUNK || (full && len <= BLOCK) {
            let at = self.data(len)?;
            return check(subtree(start, &self.buf[at], root), expected, start, len);
        }
        if full {
            // The whole subtree's data, its inner pairs read past: one hash.
            let from = self.write;
            self.skip(len)?;
            return check(subtree(start, &self.buf[from..self.write], root), expected, start, len);
        }
        let (l, r) = self.pair()?;
        let parent = if root {
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&l, &r, Mode::Hash)
        };
        if parent != *expected {
            return Err(Error::Proof(format!("hash pair at shard bytes {start}..{} does not match", start + len)));
        }
        let left = left_len(len);
        if self.touches(start, left) {
            self.node(start, left, false, &l)?;
        }
        if self.touches(start + left, len - left) {
            self.node(start + left, len - left, false, &r)?;
        }
        Ok(())
    }

    /// Read a subtree entirely in the query: its pairs are dropped, its data
    /// moved to the front in order.
    fn skip(&mut self, len: u64) -> Result<()> {
        if len <= BLOCK {
            self.data(len)?;
            return Ok(());
        }
        self.pair()?;
        let left = left_len(len);
        self.skip(left)?;
        self.skip(len - left)
    }
}

/// Bytes in the left child of a node of `len` bytes (more than one chunk):
/// the largest power of two of chunks that leaves the right child non-empty.
fn left_len(len: u64) -> u64 {
    (len.div_ceil(CHUNK).next_power_of_two() / 2) * CHUNK
}

/// The chaining value of the subtree `data` at byte `start`, or the root hash.
fn subtree(start: u64, data: &[u8], root: bool) -> [u8; 32] {
    if root {
        return *blake3::hash(data).as_bytes();
    }
    blake3::Hasher::new().set_input_offset(start).update(data).finalize_non_root()
}

fn check(actual: [u8; 32], expected: &[u8; 32], start: u64, len: u64) -> Result<()> {
    if actual == *expected {
        return Ok(());
    }
    Err(Error::Proof(format!("shard bytes {start}..{} do not hash into the CID", start + len)))
}
