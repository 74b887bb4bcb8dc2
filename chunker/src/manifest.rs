//! The manifest: how to turn shards back into an object.
//!
//! A manifest is CBOR, versioned, and named by its own CID (cbor codec,
//! BLAKE3). It has a public part, which anyone who holds the manifest can read
//! (what to fetch and how it is coded, so an SPN can place, audit and repair
//! shards without being able to read the object), and a sealed part, which
//! only a holder of the object's read key can open (what the object is).
//!
//! ```text
//! manifest = [ "ionshard/manifest", version: 1,
//!              params:   [chunk_min, chunk_avg, chunk_max, zstd_level, segment_size, k, m],
//!              segments: [ [len, k, digests: bytes(32 × n)], ... ],
//!              sealed:   bytes(nonce(12) ‖ AES-256-GCM(read key, contents) ‖ tag(16)) ]
//! contents = [ object_len, object_blake3: bytes(32), match_key: bytes(32),
//!              chunks: [ [id: bytes(32), key: bytes(32), match: bytes(16),
//!                         plain_len, segment, offset, stored_len], ... ] ]
//! ```
//!
//! - `digests` are the BLAKE3 digests of the segment's n = k + m shards in
//!   shard order (data first); each shard's CID is CIDv1(raw, BLAKE3, digest).
//!   A segment's k is its own, so a manifest may reference segments of older
//!   objects coded differently. Shard length is `ceil(len / k)`.
//! - Chunks are listed in object order; `offset`/`stored_len` locate the
//!   stored (encrypted) chunk in its segment, which is the concatenation of
//!   its k data shards.
//! - The sealed part's associated data is the BLAKE3 hash of the CBOR of
//!   `[params, segments]`, so the two parts cannot be mixed between manifests.
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
use crate::error::{Error, Result};
use crate::keys::{ChunkId, ChunkKey, ReadKey};
use crate::params::{Chunking, Coding, Params};
use crate::seal::STORED_OVERHEAD;

const MAGIC: &str = "ionshard/manifest";
/// The manifest format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

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

    /// The segment's own address: the CID of the CBOR of `[len, k, digests]`.
    pub fn cid(&self) -> Cid {
        let mut e = Encoder::new(Vec::new());
        infallible(encode_segment(&mut e, self));
        Cid::of_cbor(&e.into_writer())
    }
}

/// One chunk as the sealed part lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    pub(crate) id: ChunkId,
    pub(crate) key: ChunkKey,
    pub(crate) tag: [u8; 16],
    pub(crate) plain_len: u32,
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) stored_len: u32,
}

impl ChunkEntry {
    /// The chunk id (tenant-keyed hash of the plaintext).
    pub fn id(&self) -> &ChunkId {
        &self.id
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

    /// Check that every chunk lies inside a segment of `manifest` (true for
    /// contents opened from it; guards against pairing contents with another
    /// manifest of the same object).
    pub fn check_against(&self, manifest: &Manifest) -> Result<()> {
        let fits = self.chunks.iter().all(|c| {
            manifest
                .segments
                .get(c.segment as usize)
                .is_some_and(|s| u64::from(c.offset) + u64::from(c.stored_len) <= s.len)
        });
        if fits {
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

fn encode_contents_into(c: &Contents, out: &mut Vec<u8>) {
    out.reserve(64 + 100 * c.chunks.len());
    let mut e = Encoder::new(out);
    let r: EncResult = (|| {
        e.array(4)?.u64(c.object_len)?.bytes(&c.object_hash)?.bytes(&c.match_key)?.array(c.chunks.len() as u64)?;
        for ch in &c.chunks {
            e.array(7)?
                .bytes(&ch.id.0)?
                .bytes(&ch.key.0)?
                .bytes(&ch.tag)?
                .u32(ch.plain_len)?
                .u32(ch.segment)?
                .u32(ch.offset)?
                .u32(ch.stored_len)?;
        }
        Ok(())
    })();
    infallible(r);
}

fn sealing_nonce(key: &ReadKey, aad: &blake3::Hash, body: &[u8]) -> [u8; 12] {
    // A key of its own for the nonce (not the AES key), over the associated
    // data and the contents: a different public part never reuses a nonce.
    let mut h = blake3::Hasher::new_keyed(&blake3::derive_key("ionshard 2026-11 manifest nonce v1", &key.0));
    h.update(aad.as_bytes());
    h.update(body);
    let mut n = [0u8; 12];
    n.copy_from_slice(&h.finalize().as_bytes()[..12]);
    n
}

impl Manifest {
    /// Build and seal a manifest.
    pub(crate) fn seal(params: Params, segments: Vec<Segment>, contents: &Contents, key: &ReadKey) -> Self {
        let aad = blake3::hash(&public_part(&params, &segments));
        // Sealed in place: nonce ‖ body ‖ tag in one buffer.
        let mut sealed = vec![0u8; 12];
        encode_contents_into(contents, &mut sealed);
        // Deterministic, and distinct for distinct contents: the same object
        // encoded twice yields the same manifest, and a read key never seals
        // two different contents under one nonce.
        let nonce = sealing_nonce(key, &aad, &sealed[12..]);
        sealed[..12].copy_from_slice(&nonce);
        let cipher = Aes256Gcm::new(&key.0.into());
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), aad.as_bytes(), sealed[12..].as_mut().into())
            .unwrap_or_else(|_| unreachable!("manifest far below the GCM length limit"));
        sealed.extend_from_slice(tag.as_slice());
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
        let mut e = Encoder::new(Vec::with_capacity(self.sealed.len() + 64 + 600 * self.segments.len()));
        let r: EncResult = (|| {
            e.array(5)?.str(MAGIC)?.u64(FORMAT_VERSION)?;
            encode_params(&mut e, &self.params)?;
            e.array(self.segments.len() as u64)?;
            for s in &self.segments {
                encode_segment(&mut e, s)?;
            }
            e.bytes(&self.sealed)?;
            Ok(())
        })();
        infallible(r);
        e.into_writer()
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
        if m.to_bytes() != bytes {
            return Err(Error::ManifestMalformed("not in canonical encoding".to_string()));
        }
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

    /// Open the sealed part with the read key, then let go of it: what a
    /// decoder needs (parameters, segments, the opened contents) without the
    /// sealed bytes, which are as large again as the chunk table (a device
    /// fetching a 4 GiB image saves about 10 MB). The manifest returned is
    /// for decoding only: it has no sealed part, so `to_bytes` and `cid`
    /// no longer describe the original.
    pub fn open_for_decoding(mut self, key: &ReadKey) -> Result<(Manifest, Contents)> {
        let contents = self.open(key)?;
        self.sealed = Vec::new();
        Ok((self, contents))
    }

    /// Open the sealed part with the object's read key.
    pub fn open(&self, key: &ReadKey) -> Result<Contents> {
        if self.sealed.len() < 28 {
            return Err(Error::ManifestMalformed("sealed part too short".to_string()));
        }
        let aad = blake3::hash(&public_part(&self.params, &self.segments));
        let (nonce, rest) = self.sealed.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let mut body = ct.to_vec();
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        let mut t = [0u8; 16];
        t.copy_from_slice(tag);
        Aes256Gcm::new(&key.0.into())
            .decrypt_inout_detached(&n.into(), aad.as_bytes(), body.as_mut_slice().into(), &t.into())
            .map_err(|_| Error::WrongReadKey)?;
        let mut d = Decoder::new(&body);
        let c = decode_contents(&mut d, self).map_err(|e| e.into_error(d.position()))?;
        if d.position() != body.len() {
            return Err(Error::ManifestMalformed("trailing bytes in the sealed part".to_string()));
        }
        Ok(c)
    }
}

/// A decoding failure before it is given its position.
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

fn fixed<const N: usize>(d: &mut Decoder<'_>, what: &str) -> std::result::Result<[u8; N], DecErr> {
    let b = d.bytes()?;
    <[u8; N]>::try_from(b).or_else(|_| bad(format!("{what}: expected {N} bytes, found {}", b.len())))
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
    let sealed = d.bytes()?.to_vec();
    Ok(Manifest { params, segments, sealed })
}

fn decode_contents(d: &mut Decoder<'_>, m: &Manifest) -> std::result::Result<Contents, DecErr> {
    array_of(d, 4, "contents")?;
    let object_len = d.u64()?;
    let object_hash = fixed::<32>(d, "object hash")?;
    let match_key = fixed::<32>(d, "match key")?;
    // Smallest possible entry: array header, three byte strings, four one-byte ints.
    let n = counted_array(d, 1 + 34 + 34 + 17 + 4, "chunks")?;
    let mut chunks = Vec::with_capacity(n);
    let max_plain = m.params.chunking.max;
    let mut total: u64 = 0;
    for i in 0..n {
        array_of(d, 7, "chunk")?;
        let id = ChunkId(fixed::<32>(d, "chunk id")?);
        let key = ChunkKey(fixed::<32>(d, "chunk key")?);
        let tag = fixed::<16>(d, "chunk match tag")?;
        let (plain_len, segment, offset, stored_len) = (d.u32()?, d.u32()?, d.u32()?, d.u32()?);
        let Some(seg) = m.segments.get(segment as usize) else {
            return bad(format!("chunk {i}: segment {segment} does not exist"));
        };
        if u64::from(offset) + u64::from(stored_len) > seg.len {
            return bad(format!("chunk {i}: bytes {offset}+{stored_len} lie outside segment {segment}"));
        }
        if plain_len == 0 || plain_len > max_plain {
            return bad(format!("chunk {i}: plaintext length {plain_len} outside 1..={max_plain}"));
        }
        if (stored_len as usize) < STORED_OVERHEAD || stored_len as usize > plain_len as usize + STORED_OVERHEAD {
            return bad(format!("chunk {i}: stored length {stored_len} impossible for {plain_len} plaintext bytes"));
        }
        total += u64::from(plain_len);
        chunks.push(ChunkEntry { id, key, tag, plain_len, segment, offset, stored_len });
    }
    if total != object_len {
        return bad(format!("chunks add up to {total} bytes, object length is {object_len}"));
    }
    Ok(Contents { object_len, object_hash, match_key, chunks })
}
