//! The manifest: how to turn shards back into an object.
//!
//! A manifest is CBOR, versioned, and named by its own CID (cbor codec,
//! BLAKE3). It has a public part, which anyone who holds the manifest can read
//! (what to fetch and how it is coded, so an SPN can place, audit and repair
//! shards without being able to read the object), and a sealed part, which
//! only a holder of the object's read key can open (what the object is).
//!
//! ```text
//! manifest = [ "ionshard/manifest", version: 2,
//!              params:   [chunk_min, chunk_avg, chunk_max, zstd_level, segment_size, k, m],
//!              segments: [ [len, k, digests: bytes(32 × n)], ... ],
//!              sealed:   bytes(head ‖ page_0 ‖ … ‖ page_(p-1)) ]
//! head     = seal(0, object_len u64 ‖ object_blake3(32) ‖ match_key(32) ‖ chunks u64 ‖ page_chunks u32)
//! page_i   = seal(i + 1, entry × min(page_chunks, chunks left))
//! entry    = id(32) ‖ key(32) ‖ match(16) ‖ plain_len u32 ‖ segment u32 ‖ offset u32 ‖ stored_len u32
//! seal(j, x) = nonce(12) ‖ AES-256-GCM(read key, aad_j, x) ‖ tag(16)
//! aad_j    = BLAKE3(CBOR of [params, segments]) ‖ j u64 ‖ (j = 0 ? 0 : 1 + p) u64
//! ```
//! (integers in the sealed part are little-endian.)
//!
//! - `digests` are the BLAKE3 digests of the segment's n = k + m shards in
//!   shard order (data first); each shard's CID is CIDv1(raw, BLAKE3, digest).
//!   A segment's k is its own, so a manifest may reference segments of older
//!   objects coded differently. Shard length is `ceil(len / k)`.
//! - Chunks are listed in object order; `offset`/`stored_len` locate the
//!   stored (encrypted) chunk in its segment, which is the concatenation of
//!   its k data shards.
//! - The chunk table is sealed in pages of `page_chunks` entries (1024, 96
//!   KiB), each opened on its own: a reader holds one page at a time, never
//!   the table (a device fetching an image of any size). Every piece's
//!   associated data names the public part and the piece's index (a page's
//!   also the number of pieces), so pieces cannot be moved or mixed between
//!   manifests; the head fixes the number of chunks, so the sealed length is
//!   known, and checked, before any page is read: none can be dropped.
//!   The object hash is sealed because, in the clear, it would let anyone
//!   holding a manifest confirm a guess of the whole file.
//!
//! Size: about 100 bytes per chunk plus 32 bytes per shard. Measured with
//! the defaults (32 KiB average chunks, 10+4 over 8 MiB segments): 2.6 MB
//! per GiB of incompressible data (662 KiB for 256 MiB), 2.2 MB per GiB on a
//! source tree; a 4 GiB image has a manifest of about 10–13 MB.
//!
//! Decoding trusts nothing: every count is checked against the bytes that are
//! left before anything is allocated, and every index and length against what
//! it refers to, so a decoded manifest can be followed without further checks.

use std::convert::Infallible;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use minicbor::{Decoder, Encoder};

use crate::address::Cid;
use crate::decode::Seed;
use crate::encode::ShardBytes;
use crate::error::{Error, Result};
use crate::keys::{ChunkId, ChunkKey, ReadKey};
use crate::params::{Chunking, Coding, Params};
use crate::seal::STORED_OVERHEAD;

const MAGIC: &str = "ionshard/manifest";
/// The manifest format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 2;

/// Limits applied when decoding a manifest from untrusted bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
}

impl Default for Limits {
    /// 256 MiB: enough for an object of about 80 GiB at default chunking.
    fn default() -> Self {
        Limits { max_manifest_bytes: 256 << 20 }
    }
}

/// One erasure-coded segment: its length and its n shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub(crate) len: u64,
    pub(crate) k: u8,
    pub(crate) shards: Vec<Cid>,
}

impl Segment {
    /// Length of the segment (stored chunks back to back, before padding).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the segment holds nothing (never the case in a valid manifest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// k: how many of the shards carry data (and how many any rebuild needs).
    pub fn data_shards(&self) -> usize {
        usize::from(self.k)
    }

    /// The n shard CIDs, data shards first.
    pub fn shards(&self) -> &[Cid] {
        &self.shards
    }

    /// Length of each shard.
    pub fn shard_len(&self) -> u64 {
        self.len.div_ceil(u64::from(self.k))
    }

    /// A segment someone else encoded (a backup client), from its n shards
    /// (data first) and its length: checks that the shards have the length
    /// `len` and `k` give and that the parity is the Reed-Solomon parity of
    /// the data (so any k of them rebuild the rest, which repair relies
    /// on), and names each shard by its CID. Costs a hash and an encode of
    /// the segment.
    pub fn from_shards(len: u64, k: u8, shards: &[&[u8]]) -> Result<Segment> {
        let n = shards.len();
        if k == 0 || len == 0 || len > 1 << 30 || n < usize::from(k) || n > 255 {
            return Err(Error::InvalidParams(format!(
                "a segment of {len} bytes in {n} shards with k = {k} is impossible (k >= 1, k <= n <= 255, 1 byte to 1 GiB)"
            )));
        }
        let shard_len = len.div_ceil(u64::from(k));
        if let Some(i) = shards.iter().position(|s| s.len() as u64 != shard_len) {
            return Err(Error::InvalidParams(format!(
                "shard {i} has {} bytes; a segment of {len} bytes with k = {k} has shards of {shard_len}",
                shards[i].len()
            )));
        }
        let parity = n - usize::from(k);
        if parity > 0 {
            let coder = crate::erasure::Coder::new(k, parity as u8)?;
            let mut want = vec![vec![0u8; shard_len as usize]; parity];
            coder.encode(&shards[..usize::from(k)], &mut want)?;
            if let Some(i) = want.iter().zip(&shards[usize::from(k)..]).position(|(a, b)| a.as_slice() != *b) {
                return Err(Error::InvalidParams(format!(
                    "parity shard {} is not the Reed-Solomon parity of the data shards",
                    usize::from(k) + i
                )));
            }
        }
        Ok(Segment { len, k, shards: shards.iter().map(|s| Cid::of_raw(s)).collect() })
    }

    /// A segment someone else encoded, from its k data shards only (`data`:
    /// back to back, as long as `len` and `k` make them): the `parity`
    /// shards are computed here, in the same buffer, and every shard is
    /// named by its CID. What an SPN does for a backup client that sends no
    /// parity; the client compares the segment's CID with its own. Costs an
    /// encode and a hash of the segment, as [`Segment::from_shards`] does.
    pub fn from_data(len: u64, k: u8, parity: u8, mut data: Vec<u8>) -> Result<(Segment, Vec<ShardBytes>)> {
        let n = usize::from(k) + usize::from(parity);
        if k == 0 || len == 0 || len > 1 << 30 || n > 255 {
            return Err(Error::InvalidParams(format!(
                "a segment of {len} bytes with k = {k} and {parity} parity shards is impossible \
                 (k >= 1, k + parity <= 255, 1 byte to 1 GiB)"
            )));
        }
        let shard_len = len.div_ceil(u64::from(k)) as usize;
        if data.len() != shard_len * usize::from(k) {
            return Err(Error::InvalidParams(format!(
                "{} bytes are not {k} data shards of {shard_len} bytes (a segment of {len} bytes with k = {k})",
                data.len()
            )));
        }
        data.resize(shard_len * n, 0);
        if parity > 0 {
            let coder = crate::erasure::Coder::new(k, parity)?;
            let (head, tail) = data.split_at_mut(shard_len * usize::from(k));
            let ins: Vec<&[u8]> = head.chunks(shard_len).collect();
            let mut outs: Vec<&mut [u8]> = tail.chunks_mut(shard_len).collect();
            coder.encode_into(&ins, &mut outs)?;
        }
        let shards = ShardBytes::from_vec(data, shard_len);
        let cids = {
            use rayon::prelude::*;
            shards.par_iter().map(|s| Cid::of_raw(s)).collect()
        };
        Ok((Segment { len, k, shards: cids }, shards))
    }

    /// The segment's own address: the CID of the CBOR of `[len, k, digests]`.
    pub fn cid(&self) -> Cid {
        let mut e = Encoder::new(Vec::new());
        infallible(encode_segment(&mut e, self));
        Cid::of_cbor(&e.into_writer())
    }
}

/// One chunk as the sealed part lists it (its id aside: a decoder needs none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    pub(crate) key: ChunkKey,
    pub(crate) tag: [u8; 16],
    pub(crate) plain_len: u32,
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) stored_len: u32,
}

impl ChunkEntry {
    /// Whether the stored chunk lies inside a segment of `manifest`.
    pub(crate) fn fits(&self, manifest: &Manifest) -> bool {
        manifest
            .segments
            .get(self.segment as usize)
            .is_some_and(|s| u64::from(self.offset) + u64::from(self.stored_len) <= s.len)
    }
    /// Plaintext length.
    pub fn plain_len(&self) -> u32 {
        self.plain_len
    }
    /// Index of the segment holding it.
    pub fn segment(&self) -> usize {
        self.segment as usize
    }
    /// Byte offset of the stored chunk in its segment.
    pub fn offset(&self) -> u64 {
        u64::from(self.offset)
    }
    /// Stored (compressed, encrypted) length.
    pub fn stored_len(&self) -> u32 {
        self.stored_len
    }
}

/// What the sealed part says: the object's length, hash and chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub(crate) object_len: u64,
    pub(crate) object_hash: [u8; 32],
    pub(crate) match_key: [u8; 32],
    pub(crate) chunks: Vec<ChunkEntry>,
    /// The chunk ids, one per chunk (what dedup against this object needs).
    pub(crate) ids: Vec<ChunkId>,
}

impl Contents {
    /// Length of the object in bytes.
    pub fn object_len(&self) -> u64 {
        self.object_len
    }
    /// BLAKE3 hash of the whole object.
    pub fn object_hash(&self) -> &[u8; 32] {
        &self.object_hash
    }
    /// The chunks in object order.
    pub fn chunks(&self) -> &[ChunkEntry] {
        &self.chunks
    }
    /// The key of the chunks' match tags (see [`crate::Encoder::with_match_key`]).
    pub fn match_key(&self) -> [u8; 32] {
        self.match_key
    }

    /// Check that every chunk lies inside a segment of `manifest` (true for
    /// contents opened from it; guards against pairing contents with another
    /// manifest of the same object).
    pub fn check_against(&self, manifest: &Manifest) -> Result<()> {
        if self.chunks.iter().all(|c| c.fits(manifest)) {
            Ok(())
        } else {
            Err(Error::ManifestMalformed("these contents belong to another manifest".to_string()))
        }
    }
}

/// A manifest as stored: public part plus the sealed contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub(crate) params: Params,
    pub(crate) segments: Vec<Segment>,
    pub(crate) sealed: Vec<u8>,
}

fn infallible<T>(r: std::result::Result<T, minicbor::encode::Error<Infallible>>) -> T {
    r.unwrap_or_else(|_| unreachable!("writing CBOR to a Vec cannot fail"))
}

type EncResult = std::result::Result<(), minicbor::encode::Error<Infallible>>;

fn encode_params(e: &mut Encoder<Vec<u8>>, p: &Params) -> EncResult {
    e.array(7)?
        .u32(p.chunking.min)?
        .u32(p.chunking.avg)?
        .u32(p.chunking.max)?
        .i32(p.zstd_level)?
        .u32(p.segment_size)?
        .u8(p.coding.data)?
        .u8(p.coding.parity)?;
    Ok(())
}

fn encode_segment(e: &mut Encoder<Vec<u8>>, s: &Segment) -> EncResult {
    let mut digests = Vec::with_capacity(32 * s.shards.len());
    for c in &s.shards {
        digests.extend_from_slice(c.digest());
    }
    e.array(3)?.u64(s.len)?.u8(s.k)?.bytes(&digests)?;
    Ok(())
}

fn public_part(params: &Params, segments: &[Segment]) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    infallible(encode_params(&mut e, params));
    infallible(e.array(segments.len() as u64).map(|_| ()));
    for s in segments {
        infallible(encode_segment(&mut e, s));
    }
    e.into_writer()
}

/// Chunks per sealed page of the chunk table.
const PAGE_CHUNKS: u32 = 1024;
/// Bytes of one entry in a page.
const ENTRY: usize = 96;
/// Nonce and tag around every sealed piece.
const SEAL: usize = 12 + 16;
/// The head's plaintext: object length, hash, match key, chunk count, page size.
const HEAD_PLAIN: usize = 8 + 32 + 32 + 8 + 4;
/// The sealed head.
pub(crate) const HEAD: usize = SEAL + HEAD_PLAIN;

fn piece_aad(public: &blake3::Hash, index: u64, pieces: u64) -> [u8; 48] {
    let mut a = [0u8; 48];
    a[..32].copy_from_slice(public.as_bytes());
    a[32..40].copy_from_slice(&index.to_le_bytes());
    a[40..].copy_from_slice(&pieces.to_le_bytes());
    a
}

/// A nonce derived from the key, the associated data and the plaintext, so
/// sealing is deterministic (the same object gives the same manifest) and a
/// nonce repeats only with the same plaintext under the same piece name.
fn sealing_nonce(key: &ReadKey, aad: &[u8], body: &[u8]) -> [u8; 12] {
    let mut h = blake3::Hasher::new_keyed(&blake3::derive_key("ionshard 2026-11 manifest nonce v2", &key.0));
    h.update(aad);
    h.update(body);
    let mut n = [0u8; 12];
    n.copy_from_slice(&h.finalize().as_bytes()[..12]);
    n
}

fn seal_piece(cipher: &Aes256Gcm, key: &ReadKey, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
    let nonce = sealing_nonce(key, aad, plain);
    out.extend_from_slice(&nonce);
    let at = out.len();
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), aad, out[at..].as_mut().into())
        .unwrap_or_else(|_| unreachable!("a piece is far below the GCM length limit"));
    out.extend_from_slice(tag.as_slice());
}

/// Open one sealed piece in place; the plaintext is `piece[12..len - 16]`.
fn open_piece(cipher: &Aes256Gcm, aad: &[u8], piece: &mut [u8]) -> Result<()> {
    if piece.len() < SEAL {
        return Err(Error::ManifestMalformed("sealed piece too short".to_string()));
    }
    let (nonce, rest) = piece.split_at_mut(12);
    let (body, tag) = rest.split_at_mut(rest.len() - 16);
    let n: [u8; 12] = nonce.try_into().unwrap_or_default();
    let t: [u8; 16] = (&*tag).try_into().unwrap_or_default();
    cipher.decrypt_inout_detached(&n.into(), aad, body.into(), &t.into()).map_err(|_| Error::WrongReadKey)
}

/// The opened head of a sealed chunk table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) object_len: u64,
    pub(crate) object_hash: [u8; 32],
    pub(crate) match_key: [u8; 32],
    pub(crate) chunks: u64,
    pub(crate) page_chunks: u32,
}

impl Head {
    fn pages(&self) -> u64 {
        self.chunks.div_ceil(u64::from(self.page_chunks))
    }

    /// Where page `i` lies in the sealed part, and how many entries it holds.
    fn page(&self, i: u64) -> (u64, usize) {
        debug_assert!(i < self.pages(), "page {i} of {}", self.pages());
        let per = u64::from(self.page_chunks);
        let at = HEAD as u64 + i * (SEAL as u64 + per * ENTRY as u64);
        (at, (self.chunks - i * per).min(per) as usize)
    }

    fn sealed_len(&self) -> u64 {
        HEAD as u64 + self.pages() * SEAL as u64 + self.chunks * ENTRY as u64
    }
}

/// The keys and names a reader of the sealed part needs.
pub(crate) struct Opener {
    cipher: Aes256Gcm,
    public: blake3::Hash,
    pub(crate) head: Head,
}

impl Opener {
    /// Open the head (the first [`HEAD`] bytes of the sealed part, whose
    /// whole length is `sealed_len`) and check it against that length.
    pub(crate) fn new(m: &Manifest, key: &ReadKey, head: &[u8], sealed_len: u64) -> Result<Self> {
        let cipher = Aes256Gcm::new(&key.0.into());
        let public = blake3::hash(&public_part(&m.params, &m.segments));
        let mut h = [0u8; HEAD];
        if head.len() < HEAD || sealed_len < HEAD as u64 {
            return Err(Error::ManifestMalformed("sealed part too short".to_string()));
        }
        h.copy_from_slice(&head[..HEAD]);
        // The head names no piece count: it fixes it (chunks and page size),
        // and the sealed length is checked against it below.
        open_piece(&cipher, &piece_aad(&public, 0, 0), &mut h)?;
        let b = &h[12..12 + HEAD_PLAIN];
        let head = Head {
            object_len: u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
            object_hash: b[8..40].try_into().unwrap_or_default(),
            match_key: b[40..72].try_into().unwrap_or_default(),
            chunks: u64::from_le_bytes(b[72..80].try_into().unwrap_or_default()),
            page_chunks: u32::from_le_bytes(b[80..84].try_into().unwrap_or_default()),
        };
        if head.page_chunks == 0 || head.page_chunks > 1 << 16 {
            return Err(Error::ManifestMalformed(format!("{} chunks per page", head.page_chunks)));
        }
        if head.chunks > sealed_len / ENTRY as u64 || head.sealed_len() != sealed_len {
            return Err(Error::ManifestMalformed(format!(
                "a sealed part of {sealed_len} bytes cannot hold {} chunks",
                head.chunks
            )));
        }
        Ok(Opener { cipher, public, head })
    }

    /// Page `i`: where to read it, and how long it is.
    pub(crate) fn page_span(&self, i: u64) -> (u64, usize) {
        let (at, n) = self.head.page(i);
        (at, SEAL + n * ENTRY)
    }

    /// Open page `i` (its sealed bytes, in place) and decode its entries,
    /// checking each against the manifest's segments and parameters.
    pub(crate) fn open_page(
        &self,
        m: &Manifest,
        i: u64,
        sealed: &mut [u8],
        out: &mut Vec<ChunkEntry>,
        mut ids: Option<&mut Vec<ChunkId>>,
    ) -> Result<()> {
        let (_, n) = self.head.page(i);
        if sealed.len() != SEAL + n * ENTRY {
            return Err(Error::ManifestMalformed(format!("page {i} has the wrong length")));
        }
        open_piece(&self.cipher, &piece_aad(&self.public, i + 1, 1 + self.head.pages()), sealed)?;
        let first = i * u64::from(self.head.page_chunks);
        let max_plain = m.params.chunking.max;
        for (j, e) in sealed[12..12 + n * ENTRY].chunks_exact(ENTRY).enumerate() {
            let u = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap_or_default());
            let (plain_len, segment, offset, stored_len) = (u(80), u(84), u(88), u(92));
            let chunk = first + j as u64;
            let Some(seg) = m.segments.get(segment as usize) else {
                return Err(Error::ManifestMalformed(format!("chunk {chunk}: segment {segment} does not exist")));
            };
            if u64::from(offset) + u64::from(stored_len) > seg.len {
                return Err(Error::ManifestMalformed(format!(
                    "chunk {chunk}: bytes {offset}+{stored_len} lie outside segment {segment}"
                )));
            }
            if plain_len == 0 || plain_len > max_plain {
                return Err(Error::ManifestMalformed(format!(
                    "chunk {chunk}: plaintext length {plain_len} outside 1..={max_plain}"
                )));
            }
            if (stored_len as usize) < STORED_OVERHEAD || stored_len as usize > plain_len as usize + STORED_OVERHEAD {
                return Err(Error::ManifestMalformed(format!(
                    "chunk {chunk}: stored length {stored_len} impossible for {plain_len} plaintext bytes"
                )));
            }
            if let Some(ids) = ids.as_deref_mut() {
                ids.push(ChunkId(e[..32].try_into().unwrap_or_default()));
            }
            out.push(ChunkEntry {
                key: ChunkKey(e[32..64].try_into().unwrap_or_default()),
                tag: e[64..80].try_into().unwrap_or_default(),
                plain_len,
                segment,
                offset,
                stored_len,
            });
        }
        Ok(())
    }
}

fn seal_contents(params: &Params, segments: &[Segment], c: &Contents, key: &ReadKey) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&key.0.into());
    let public = blake3::hash(&public_part(params, segments));
    let head = Head {
        object_len: c.object_len,
        object_hash: c.object_hash,
        match_key: c.match_key,
        chunks: c.chunks.len() as u64,
        page_chunks: PAGE_CHUNKS,
    };
    let pieces = 1 + head.pages();
    let mut out = Vec::with_capacity(head.sealed_len() as usize);
    let mut h = Vec::with_capacity(HEAD_PLAIN);
    h.extend_from_slice(&head.object_len.to_le_bytes());
    h.extend_from_slice(&head.object_hash);
    h.extend_from_slice(&head.match_key);
    h.extend_from_slice(&head.chunks.to_le_bytes());
    h.extend_from_slice(&head.page_chunks.to_le_bytes());
    seal_piece(&cipher, key, &piece_aad(&public, 0, 0), &h, &mut out);
    let mut page = Vec::with_capacity(PAGE_CHUNKS as usize * ENTRY);
    for (i, (chunks, ids)) in c.chunks.chunks(PAGE_CHUNKS as usize).zip(c.ids.chunks(PAGE_CHUNKS as usize)).enumerate()
    {
        page.clear();
        for (ch, id) in chunks.iter().zip(ids) {
            page.extend_from_slice(&id.0);
            page.extend_from_slice(&ch.key.0);
            page.extend_from_slice(&ch.tag);
            for v in [ch.plain_len, ch.segment, ch.offset, ch.stored_len] {
                page.extend_from_slice(&v.to_le_bytes());
            }
        }
        seal_piece(&cipher, key, &piece_aad(&public, i as u64 + 1, pieces), &page, &mut out);
    }
    out
}

impl Manifest {
    /// Build and seal a manifest.
    pub(crate) fn seal(params: Params, segments: Vec<Segment>, contents: &Contents, key: &ReadKey) -> Self {
        debug_assert_eq!(contents.chunks.len(), contents.ids.len());
        let sealed = seal_contents(&params, &segments, contents, key);
        Manifest { params, segments, sealed }
    }

    /// The parameters the object was encoded with.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The segments, in the order chunk entries refer to them.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The canonical CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.public_prefix();
        out.reserve(self.sealed.len() + 9);
        out.extend_from_slice(&bytes_header(self.sealed.len() as u64));
        out.extend_from_slice(&self.sealed);
        out
    }

    /// The manifest's CID.
    pub fn cid(&self) -> Cid {
        Cid::of_cbor(&self.to_bytes())
    }

    /// Decode untrusted bytes; never panics, allocates in proportion to the input.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        if bytes.len() > limits.max_manifest_bytes {
            return Err(Error::ManifestMalformed(format!(
                "{} bytes is over the limit of {} bytes",
                bytes.len(),
                limits.max_manifest_bytes
            )));
        }
        let mut d = Decoder::new(bytes);
        let m = decode_manifest(&mut d).map_err(|e| e.into_error(d.position()))?;
        if d.position() != bytes.len() {
            return Err(Error::ManifestMalformed(format!(
                "{} trailing bytes after the manifest",
                bytes.len() - d.position()
            )));
        }
        // Canonical form only: one object, one manifest, one CID.
        // Canonical: the sealed part is copied as it is, so comparing what
        // comes before it is enough (and spares a copy of the whole).
        m.starts_canonically(bytes, m.sealed.len() as u64)?;
        Ok(m)
    }

    /// Decode bytes fetched under `cid`, checking that they hash to it.
    pub fn from_bytes_with_cid(bytes: &[u8], cid: &Cid, limits: &Limits) -> Result<Self> {
        let actual = Cid::of_cbor(bytes);
        if actual != *cid {
            return Err(Error::ManifestCidMismatch { expected: cid.to_string(), actual: actual.to_string() });
        }
        Self::from_bytes(bytes, limits)
    }

    /// Read a manifest kept in `file` (its bytes, read at will) without
    /// loading its sealed part: check that the whole hashes to `cid` and is
    /// canonical, decode the public part, and say where the sealed part lies
    /// (offset, length) for [`crate::PagedContents`]. Memory: the public
    /// part (about 450 bytes per 8 MiB segment) and a read buffer.
    pub fn read_public(file: &dyn Seed, cid: &Cid, limits: &Limits) -> Result<(Manifest, u64, u64)> {
        let size = file.size();
        if size > limits.max_manifest_bytes as u64 {
            return Err(Error::ManifestMalformed(format!(
                "{size} bytes is over the limit of {} bytes",
                limits.max_manifest_bytes
            )));
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(buf.len() as u64) as usize;
            file.read_at(at, &mut buf[..n]).map_err(|e| Error::io("reading the manifest", e))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let actual = Cid::cbor(*hasher.finalize().as_bytes());
        if actual != *cid {
            return Err(Error::ManifestCidMismatch { expected: cid.to_string(), actual: actual.to_string() });
        }
        // The public part comes first; read a prefix long enough to hold it.
        let mut prefix_len = (64u64 << 10).min(size);
        loop {
            let mut prefix = vec![0u8; prefix_len as usize];
            file.read_at(0, &mut prefix).map_err(|e| Error::io("reading the manifest", e))?;
            let mut d = Decoder::new(&prefix);
            let public = decode_public(&mut d);
            let pos = d.position();
            match public.map(|p| (p, read_bytes_header(&prefix[pos..]))) {
                Ok(((params, segments), Some((hl, sealed_len)))) => {
                    let start = (pos + hl) as u64;
                    if start.checked_add(sealed_len) != Some(size) {
                        return Err(Error::ManifestMalformed(format!(
                            "the sealed part ({sealed_len} bytes at {start}) does not end the manifest ({size} bytes)"
                        )));
                    }
                    let m = Manifest { params, segments, sealed: Vec::new() };
                    m.starts_canonically(&prefix[..start as usize], sealed_len)?;
                    return Ok((m, start, sealed_len));
                }
                Err(e) if prefix_len == size => return Err(e.into_error(pos)),
                Ok((_, None)) if prefix_len == size => {
                    return Err(Error::ManifestMalformed("no sealed part after the segments".to_string()));
                }
                _ => prefix_len = (prefix_len * 4).min(size),
            }
        }
    }

    /// The canonical bytes before the sealed part.
    pub(crate) fn public_prefix(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        infallible(e.array(5).and_then(|e| e.str(MAGIC)).and_then(|e| e.u64(FORMAT_VERSION)).map(|_| ()));
        let mut out = e.into_writer();
        out.extend_from_slice(&public_part(&self.params, &self.segments));
        out
    }

    /// Whether `bytes` start as this manifest's canonical encoding does, up
    /// to the sealed part's bytes (which decoding copies as they are).
    fn starts_canonically(&self, bytes: &[u8], sealed_len: u64) -> Result<()> {
        let mut canonical = self.public_prefix();
        canonical.extend_from_slice(&bytes_header(sealed_len));
        if bytes.get(..canonical.len()) == Some(&canonical[..]) {
            Ok(())
        } else {
            Err(Error::ManifestMalformed("not in canonical encoding".to_string()))
        }
    }

    /// Open the sealed part with the read key, then let go of it: what a
    /// decoder needs (parameters, segments, the opened chunk table without
    /// chunk ids) without the sealed bytes. The manifest returned is for
    /// decoding only: it has no sealed part, so `to_bytes` and `cid` no
    /// longer describe the original. (A reader that must not hold the whole
    /// table reads it a page at a time: [`crate::PagedContents`].)
    pub fn open_for_decoding(mut self, key: &ReadKey) -> Result<(Manifest, Contents)> {
        let contents = self.open_pages(key, false)?;
        self.sealed = Vec::new();
        Ok((self, contents))
    }

    /// Open the sealed part with the object's read key.
    pub fn open(&self, key: &ReadKey) -> Result<Contents> {
        self.open_pages(key, true)
    }

    fn open_pages(&self, key: &ReadKey, with_ids: bool) -> Result<Contents> {
        let opener = Opener::new(self, key, &self.sealed, self.sealed.len() as u64)?;
        let head = opener.head;
        // The head was checked against the sealed length: the count is bounded.
        let n = head.chunks as usize;
        let mut chunks = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(if with_ids { n } else { 0 });
        let mut page = Vec::new();
        for i in 0..head.pages() {
            let (at, len) = opener.page_span(i);
            page.clear();
            page.extend_from_slice(&self.sealed[at as usize..at as usize + len]);
            opener.open_page(self, i, &mut page, &mut chunks, with_ids.then_some(&mut ids))?;
        }
        let total: u64 = chunks.iter().map(|c| u64::from(c.plain_len)).sum();
        if total != head.object_len {
            return Err(Error::ManifestMalformed(format!(
                "chunks add up to {total} bytes, object length is {}",
                head.object_len
            )));
        }
        Ok(Contents {
            object_len: head.object_len,
            object_hash: head.object_hash,
            match_key: head.match_key,
            chunks,
            ids,
        })
    }
}

enum DecErr {
    Cbor(minicbor::decode::Error),
    Bad(String),
    Version(u64),
}

impl From<minicbor::decode::Error> for DecErr {
    fn from(e: minicbor::decode::Error) -> Self {
        DecErr::Cbor(e)
    }
}

impl DecErr {
    fn into_error(self, pos: usize) -> Error {
        match self {
            DecErr::Cbor(e) => Error::ManifestMalformed(format!("at byte {pos}: {e}")),
            DecErr::Bad(s) => Error::ManifestMalformed(format!("at byte {pos}: {s}")),
            DecErr::Version(v) => Error::ManifestVersion { found: v, supported: FORMAT_VERSION },
        }
    }
}

fn bad<T>(msg: impl Into<String>) -> std::result::Result<T, DecErr> {
    Err(DecErr::Bad(msg.into()))
}

/// A definite-length array header of exactly `n` items.
fn array_of(d: &mut Decoder<'_>, n: u64, what: &str) -> std::result::Result<(), DecErr> {
    match d.array()? {
        Some(len) if len == n => Ok(()),
        Some(len) => bad(format!("{what}: expected {n} items, found {len}")),
        None => bad(format!("{what}: indefinite-length arrays are not used")),
    }
}

/// A definite-length array header whose count the remaining input can hold,
/// each item taking at least `min_item` bytes.
fn counted_array(d: &mut Decoder<'_>, min_item: usize, what: &str) -> std::result::Result<usize, DecErr> {
    let Some(n) = d.array()? else {
        return bad(format!("{what}: indefinite-length arrays are not used"));
    };
    let left = d.input().len() - d.position();
    if n > (left / min_item) as u64 {
        return bad(format!("{what}: {n} items cannot fit in the {left} bytes left"));
    }
    Ok(n as usize)
}

fn decode_params(d: &mut Decoder<'_>) -> std::result::Result<Params, DecErr> {
    array_of(d, 7, "params")?;
    let chunking = Chunking { min: d.u32()?, avg: d.u32()?, max: d.u32()? };
    let zstd_level = d.i32()?;
    let segment_size = d.u32()?;
    let coding = Coding { data: d.u8()?, parity: d.u8()? };
    let p = Params { chunking, coding, segment_size, zstd_level };
    p.validate().or_else(|e| bad(format!("params: {e}")))?;
    Ok(p)
}

fn decode_manifest(d: &mut Decoder<'_>) -> std::result::Result<Manifest, DecErr> {
    let (params, segments) = decode_public(d)?;
    let sealed = d.bytes()?.to_vec();
    Ok(Manifest { params, segments, sealed })
}

/// Everything before the sealed part: header, params, segments.
/// The public part (as [`Manifest::public_prefix`] writes it) from `d`.
pub(crate) fn decode_public_part(d: &mut Decoder<'_>) -> Result<(Params, Vec<Segment>)> {
    decode_public(d).map_err(|e| e.into_error(d.position()))
}

fn decode_public(d: &mut Decoder<'_>) -> std::result::Result<(Params, Vec<Segment>), DecErr> {
    array_of(d, 5, "manifest")?;
    if d.str()? != MAGIC {
        return bad("not an ionshard manifest");
    }
    let version = d.u64()?;
    if version != FORMAT_VERSION {
        return Err(DecErr::Version(version));
    }
    let params = decode_params(d)?;
    // Smallest segment: array header, len, k, byte-string header and one digest.
    let n_segments = counted_array(d, 1 + 1 + 1 + 1 + 32, "segments")?;
    let mut segments = Vec::with_capacity(n_segments);
    for i in 0..n_segments {
        array_of(d, 3, "segment")?;
        let len = d.u64()?;
        let k = d.u8()?;
        let digests = d.bytes()?;
        if k == 0 || len == 0 || len > 1 << 30 {
            return bad(format!("segment {i}: k = {k}, length {len} is impossible"));
        }
        if digests.len() % 32 != 0 || digests.len() / 32 < usize::from(k) || digests.len() / 32 > 255 {
            return bad(format!("segment {i}: {} digest bytes do not make k..=255 shards", digests.len()));
        }
        let shards = digests
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                Cid::raw(a)
            })
            .collect();
        segments.push(Segment { len, k, shards });
    }
    Ok((params, segments))
}

/// The canonical CBOR header of a byte string of `len` bytes.
fn bytes_header(len: u64) -> Vec<u8> {
    match len {
        0..24 => vec![0x40 | len as u8],
        24..0x100 => vec![0x58, len as u8],
        0x100..0x1_0000 => [&[0x59u8][..], &(len as u16).to_be_bytes()].concat(),
        0x1_0000..0x1_0000_0000 => [&[0x5au8][..], &(len as u32).to_be_bytes()].concat(),
        _ => [&[0x5bu8][..], &len.to_be_bytes()].concat(),
    }
}

/// Length of a CBOR byte-string header at the start of `b`, and the length it announces.
fn read_bytes_header(b: &[u8]) -> Option<(usize, u64)> {
    let first = *b.first()?;
    if first >> 5 != 2 {
        return None;
    }
    let n = |k: usize| -> Option<u64> { Some(b.get(1..1 + k)?.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x))) };
    match first & 31 {
        v @ 0..24 => Some((1, u64::from(v))),
        24 => Some((2, n(1)?)),
        25 => Some((3, n(2)?)),
        26 => Some((5, n(4)?)),
        27 => Some((9, n(8)?)),
        _ => None,
    }
}
