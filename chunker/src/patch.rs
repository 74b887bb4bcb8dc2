//! Patches: a changed chunk as a zstd frame against chunks a reader of the
//! previous release already has (its *bases*), so a patch release travels as
//! about what a binary diff would carry, chunk by chunk.
//!
//! A patch is made by the publisher (who holds both releases' plaintext for
//! the moment of the job), sealed, and packed with other patches into
//! segments of their own that the new manifest lists after the chunks'
//! segments: erasure-coded, placed, audited and repaired like any segment. A
//! reader that does not know patches never asks for those segments.
//!
//! ```text
//! stored patch = format u8 (1) ‖ nonce(12) ‖ AES-256-GCM(patch key, aad, zstd frame) ‖ tag(16)
//! patch key    = BLAKE3-derive("ionshard 2026-12 patch key v1", chunk key)
//! aad          = format ‖ new chunk's match tag(16) ‖ (base short tag(8) ‖ base len u32 le) × bases
//! frame        = zstd, with the bases concatenated as its reference prefix
//! ```
//!
//! The patch table ([`PatchTable`]) says which chunk each patch makes, from
//! which bases (named by the first 8 bytes of their match tags, as a reader
//! finds chunks in a seed), and where the patch lies:
//!
//! ```text
//! table  = "ionshard/patches" ‖ version u8 (1) ‖ count u32 ‖ entry × count      (le integers)
//! entry  = chunk u32 ‖ segment u32 ‖ offset u32 ‖ stored_len u32 ‖ bases u8 ‖ (short tag(8) ‖ len u32) × bases
//! sealed = nonce(12) ‖ AES-256-GCM(read key, "ionshard patches v1" ‖ BLAKE3(manifest's public part), table) ‖ tag(16)
//! ```
//!
//! A patch is untrusted until its result checks: the output is bounded by the
//! chunk's length before anything is decompressed, and the result must have
//! the chunk's match tag (from the signed manifest), exactly as a chunk
//! copied from a seed must; the whole object's hash is checked at the end.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};

use crate::error::{Error, Result};
use crate::keys::{ChunkKey, ReadKey};
use crate::manifest::Manifest;

const FORMAT: u8 = 1;
const MAGIC: &[u8] = b"ionshard/patches";
const TABLE_VERSION: u8 = 1;
/// The most bases one patch may name.
pub const MAX_BASES: usize = 4;
/// Bytes a sealed patch adds to its zstd frame.
pub(crate) const PATCH_OVERHEAD: usize = 1 + 12 + 16;

/// One base a patch applies to: a chunk the reader may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    /// The first 8 bytes of its match tag under the new manifest's match
    /// key: enough to find it in a seed (a wrong one makes a result that
    /// fails the new chunk's whole tag, and the chunk is fetched instead).
    pub tag: [u8; 8],
    /// Its length.
    pub len: u32,
}

/// Where one chunk's patch lies, and what it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchEntry {
    /// The chunk it makes (index in the object).
    pub chunk: u64,
    /// The segment holding the patch.
    pub segment: u32,
    /// Its offset there.
    pub offset: u32,
    /// Its stored (sealed) length.
    pub stored_len: u32,
    /// The chunks it is made against, in order (1 to [`MAX_BASES`]).
    pub bases: Vec<Base>,
}

/// The patches of one object, by chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchTable {
    entries: Vec<PatchEntry>,
}

fn patch_key(chunk: &ChunkKey) -> [u8; 32] {
    blake3::derive_key("ionshard 2026-12 patch key v1", &chunk.0)
}

fn aad(new_tag: &[u8; 16], bases: &[Base]) -> Vec<u8> {
    let mut a = Vec::with_capacity(17 + 20 * bases.len());
    a.push(FORMAT);
    a.extend_from_slice(new_tag);
    for b in bases {
        a.extend_from_slice(&b.tag);
        a.extend_from_slice(&b.len.to_le_bytes());
    }
    a
}

/// A zstd frame that turns `bases` (concatenated) into `new`, at `level`.
/// `None` if zstd fails (it does not on valid input).
pub(crate) fn diff(level: i32, bases: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cx = CCtx::try_create()?;
    cx.set_parameter(CParameter::CompressionLevel(level)).ok()?;
    // The window must reach back over the whole prefix.
    let need = (bases.len() + new.len()).max(1 << 10).next_power_of_two().trailing_zeros();
    cx.set_parameter(CParameter::WindowLog(need.clamp(10, 27))).ok()?;
    cx.set_pledged_src_size(Some(new.len() as u64)).ok()?;
    cx.ref_prefix(bases).ok()?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(new.len()));
    cx.compress2(&mut out, new).ok()?;
    Some(out)
}

/// Seal a patch frame for the chunk with `key` and `new_tag`, made against
/// `bases`. The nonce names the associated data and the frame: a repeat
/// means the same patch of the same chunk against the same bases.
pub(crate) fn seal(key: &ChunkKey, new_tag: &[u8; 16], bases: &[Base], frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + PATCH_OVERHEAD);
    out.push(FORMAT);
    seal_with(&patch_key(key), "ionshard 2026-12 patch nonce v1", &aad(new_tag, bases), frame, &mut out);
    out
}

/// Open a sealed patch and apply it to `prefix` (the bases, concatenated),
/// writing exactly `out.len()` bytes. The caller checks the result's tag.
pub(crate) fn apply(
    key: &ChunkKey,
    new_tag: &[u8; 16],
    bases: &[Base],
    stored: &[u8],
    prefix: &[u8],
    out: &mut [u8],
) -> std::result::Result<(), String> {
    if stored.len() < PATCH_OVERHEAD {
        return Err(format!("a sealed patch of {} bytes is too short", stored.len()));
    }
    if stored[0] != FORMAT {
        return Err(format!("patch format {} (this build reads {FORMAT})", stored[0]));
    }
    let frame = open_with(&patch_key(key), &aad(new_tag, bases), &stored[1..])
        .map_err(|()| "the patch does not open (damaged, or not this chunk's)".to_string())?;
    decompress(&frame, prefix, out)
}

/// Decompress a patch's zstd frame (what a sealed patch holds, once
/// opened) against `prefix` (its bases, concatenated) into exactly `out`,
/// the chunk's length: a frame that makes more or less fails.
pub fn patch_frame(frame: &[u8], prefix: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    decompress(frame, prefix, out)
}

/// Decompress a patch frame against `prefix` into exactly `out`.
pub(crate) fn decompress(frame: &[u8], prefix: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    use zstd::zstd_safe::DCtx;
    let mut dx = DCtx::try_create().ok_or_else(|| "no zstd context".to_string())?;
    dx.ref_prefix(prefix).map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    let want = out.len();
    // In one piece into a buffer of the chunk's length: no window is
    // allocated, and a frame that would write more fails on the full buffer.
    let n = dx.decompress(out, frame).map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
    if n != want {
        return Err(format!("the patch makes {n} bytes, not the chunk's {want}"));
    }
    Ok(())
}

impl PatchTable {
    /// A table of `entries` (sorted here by chunk).
    pub(crate) fn new(mut entries: Vec<PatchEntry>) -> Self {
        entries.sort_by_key(|e| e.chunk);
        PatchTable { entries }
    }

    /// The patches, by chunk.
    pub fn entries(&self) -> &[PatchEntry] {
        &self.entries
    }

    /// How many chunks have a patch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no chunk has one.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The patch of chunk `chunk`, if it has one.
    pub fn get(&self, chunk: u64) -> Option<&PatchEntry> {
        self.entries.binary_search_by_key(&chunk, |e| e.chunk).ok().map(|i| &self.entries[i])
    }

    /// Sealed stored bytes of the patches, in total.
    pub fn stored_bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.stored_len)).sum()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 5 + self.entries.len() * 45);
        out.extend_from_slice(MAGIC);
        out.push(TABLE_VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            for v in [e.chunk as u32, e.segment, e.offset, e.stored_len] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.push(e.bases.len() as u8);
            for b in &e.bases {
                out.extend_from_slice(&b.tag);
                out.extend_from_slice(&b.len.to_le_bytes());
            }
        }
        out
    }

    /// Decode a table from untrusted bytes, checking every entry against
    /// `manifest` (whose object has `chunks` chunks): chunks in order and in
    /// range, each patch inside a segment, 1 to [`MAX_BASES`] bases no longer
    /// than the manifest's largest chunk.
    pub fn decode(bytes: &[u8], manifest: &Manifest, chunks: u64) -> Result<PatchTable> {
        let bad = |why: String| Error::ManifestMalformed(format!("patch table: {why}"));
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(MAGIC.len()).ok_or_else(|| bad("too short".into()))? != MAGIC {
            return Err(bad("not a patch table".into()));
        }
        let version = r.u8().ok_or_else(|| bad("too short".into()))?;
        if version != TABLE_VERSION {
            return Err(bad(format!("version {version} (this build reads {TABLE_VERSION})")));
        }
        let count = r.u32().ok_or_else(|| bad("too short".into()))? as usize;
        // Every entry takes at least 29 bytes: a count is checked before any allocation.
        if count > (bytes.len() - r.at) / 29 || count as u64 > chunks {
            return Err(bad(format!("{count} entries in {} bytes for {chunks} chunks", bytes.len())));
        }
        let max = manifest.params().chunking.max;
        let mut entries = Vec::with_capacity(count);
        let mut last = None;
        for i in 0..count {
            let short = || bad(format!("entry {i} is cut short"));
            let chunk = u64::from(r.u32().ok_or_else(short)?);
            let (segment, offset, stored_len) =
                (r.u32().ok_or_else(short)?, r.u32().ok_or_else(short)?, r.u32().ok_or_else(short)?);
            let n = usize::from(r.u8().ok_or_else(short)?);
            if chunk >= chunks || last.is_some_and(|l| chunk <= l) {
                return Err(bad(format!("entry {i} names chunk {chunk} (chunks in order, below {chunks})")));
            }
            last = Some(chunk);
            let seg = manifest
                .segments()
                .get(segment as usize)
                .ok_or_else(|| bad(format!("entry {i}: no segment {segment}")))?;
            if u64::from(offset) + u64::from(stored_len) > seg.len()
                || (stored_len as usize) < PATCH_OVERHEAD
                || stored_len as usize > max as usize + PATCH_OVERHEAD + 1024
            {
                return Err(bad(format!("entry {i}: {stored_len} bytes at {offset} of segment {segment}")));
            }
            if n == 0 || n > MAX_BASES {
                return Err(bad(format!("entry {i} has {n} bases (1 to {MAX_BASES})")));
            }
            let mut bases = Vec::with_capacity(n);
            for _ in 0..n {
                let tag: [u8; 8] = r.take(8).ok_or_else(short)?.try_into().unwrap_or_default();
                let len = r.u32().ok_or_else(short)?;
                if len == 0 || len > max {
                    return Err(bad(format!("entry {i}: a base of {len} bytes")));
                }
                bases.push(Base { tag, len });
            }
            entries.push(PatchEntry { chunk, segment, offset, stored_len, bases });
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} bytes after the last entry", bytes.len() - r.at)));
        }
        Ok(PatchTable { entries })
    }

    /// The table sealed under the object's read key, bound to its manifest.
    pub fn seal(&self, key: &ReadKey, manifest: &Manifest) -> Vec<u8> {
        let mut out = Vec::new();
        seal_with(&key.0, "ionshard 2026-12 patch table nonce v1", &table_aad(manifest), &self.encode(), &mut out);
        out
    }

    /// Open a sealed table of `manifest`'s object (which has `chunks`
    /// chunks) with its read key, and decode it (see [`PatchTable::decode`]).
    pub fn open(sealed: &[u8], key: &ReadKey, manifest: &Manifest, chunks: u64) -> Result<PatchTable> {
        let body = open_with(&key.0, &table_aad(manifest), sealed)
            .map_err(|()| Error::ManifestMalformed("patch table: does not open with this release's key".into()))?;
        PatchTable::decode(&body, manifest, chunks)
    }
}

/// Append `nonce ‖ AES-256-GCM(key, aad, plain) ‖ tag` to `out`, the nonce
/// derived (under `context`) from the key, the associated data and the
/// plaintext: deterministic, and repeated only for the same message.
pub(crate) fn seal_with(key: &[u8; 32], context: &str, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
    let mut h = blake3::Hasher::new_keyed(&blake3::derive_key(context, key));
    h.update(&(aad.len() as u64).to_le_bytes());
    h.update(aad);
    h.update(plain);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&h.finalize().as_bytes()[..12]);
    out.extend_from_slice(&nonce);
    let at = out.len();
    out.extend_from_slice(plain);
    let tag = Aes256Gcm::new(key.into())
        .encrypt_inout_detached(&nonce.into(), aad, out[at..].as_mut().into())
        .unwrap_or_else(|_| unreachable!("far below the GCM length limit"));
    out.extend_from_slice(tag.as_slice());
}

/// Open what [`seal_with`] made.
pub(crate) fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> std::result::Result<Vec<u8>, ()> {
    if sealed.len() < 28 {
        return Err(());
    }
    let nonce: [u8; 12] = sealed[..12].try_into().map_err(|_| ())?;
    let tag: [u8; 16] = sealed[sealed.len() - 16..].try_into().map_err(|_| ())?;
    let mut body = sealed[12..sealed.len() - 16].to_vec();
    Aes256Gcm::new(key.into())
        .decrypt_inout_detached(&nonce.into(), aad, body.as_mut_slice().into(), &tag.into())
        .map_err(|_| ())?;
    Ok(body)
}

/// Bound to the manifest's public part (its segments name every shard,
/// patch segments included), which a reader holds without the sealed part.
fn table_aad(manifest: &Manifest) -> Vec<u8> {
    let mut a = b"ionshard patches v1".to_vec();
    a.extend_from_slice(blake3::hash(&manifest.public_prefix()).as_bytes());
    a
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize, salt: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < n {
            out.extend_from_slice(format!("def handler_{i}(request): return render('{salt}', {i})\n").as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn a_patch_rebuilds_the_chunk_from_its_base_and_is_far_smaller() {
        let base = text(40_000, "v1");
        let mut new = base.clone();
        new[20_000..20_004].copy_from_slice(b"v2.1");
        let frame = diff(19, &base, &new).expect("diff");
        assert!(frame.len() < 200, "{}", frame.len());
        let key = ChunkKey([3; 32]);
        let bases = [Base { tag: [1; 8], len: base.len() as u32 }];
        let stored = seal(&key, &[2; 16], &bases, &frame);
        let mut out = vec![0; new.len()];
        apply(&key, &[2; 16], &bases, &stored, &base, &mut out).expect("apply");
        assert_eq!(out, new);
        // Another base, another chunk's tag, a flipped bit, a short buffer: refused.
        let other = [Base { tag: [9; 8], len: base.len() as u32 }];
        assert!(apply(&key, &[2; 16], &other, &stored, &base, &mut out).is_err());
        assert!(apply(&key, &[7; 16], &bases, &stored, &base, &mut out).is_err());
        let mut bad = stored.clone();
        bad[20] ^= 1;
        assert!(apply(&key, &[2; 16], &bases, &bad, &base, &mut out).is_err());
        let mut short = vec![0; new.len() - 1];
        assert!(apply(&key, &[2; 16], &bases, &stored, &base, &mut short).is_err());
        let mut long = vec![0; new.len() + 1];
        assert!(apply(&key, &[2; 16], &bases, &stored, &base, &mut long).is_err());
    }

    /// The sealed patch format is a promise: devices of this release open
    /// what SPNs of later ones seal.
    #[test]
    fn sealed_patch_test_vector() {
        let bases = [Base { tag: [4; 8], len: 1000 }];
        let sealed = seal(&ChunkKey([7; 32]), &[9; 16], &bases, b"a zstd frame stands here");
        assert_eq!(sealed.len(), 24 + PATCH_OVERHEAD);
        assert_eq!(
            blake3::hash(&sealed).to_hex().as_str(),
            "d5e1e877191c4b9b249f7fb35bd30b0e5a54a05b76d827fb3e8f27580e4b106f"
        );
    }

    #[test]
    fn a_frame_that_claims_more_than_the_chunk_writes_nothing_past_it() {
        // A frame of 1 MiB of zeros against a buffer of 100 bytes.
        let frame = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).expect("zstd");
        let mut out = vec![0; 100];
        assert!(decompress(&frame, &[], &mut out).is_err());
        assert!(decompress(b"not zstd at all", &[], &mut out).is_err());
    }
}
