//! Encoding: a byte stream in, erasure-coded segments and a manifest out.
//!
//! Per window of input (a few segments' worth), on all cores: cut chunks,
//! hash them (chunk id, match tag, object hash), compress where it pays,
//! assign each new chunk a place in the open segment, encrypt it straight
//! into that place, and when a segment is full, Reed-Solomon it and hash its
//! shards into CIDs. Chunks the tenant already stored (told through
//! [`KnownChunks`]) or already met in this object are not stored again: the
//! manifest points at the segment that holds them.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use rayon::prelude::*;

use crate::address::Cid;
use crate::cdc::Window;
use crate::erasure::Coder;
use crate::error::{Error, Result};
use crate::keys::{ChunkId, ChunkKey, ReadKey, TenantSecret, digest, match_tag};
use crate::manifest::{ChunkEntry, Contents, Manifest, Segment};
use crate::params::Params;
use crate::seal;

/// A finished segment handed to a [`SegmentSink`].
#[derive(Debug)]
pub struct EncodedSegment<'a> {
    /// Index of the segment in the manifest being built.
    pub index: usize,
    /// The segment as the manifest will list it.
    pub segment: &'a Segment,
    /// The n shards, data first, each `segment.shard_len()` bytes. A sink
    /// that sends them on after it returns keeps these handles, not copies.
    pub shards: Vec<ShardBytes>,
}

/// One shard's bytes, owned and cheap to clone (a count of references, not
/// a copy): the shards of a segment share its buffer, the parity coded
/// behind the data (the buffer is freed when the last of them goes).
#[derive(Clone)]
pub struct ShardBytes {
    buf: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl ShardBytes {
    /// The shards `buf` holds back to back, `len` bytes each (a segment
    /// that arrived whole, as an SPN receives a client's).
    pub fn from_vec(buf: Vec<u8>, len: usize) -> Vec<ShardBytes> {
        Self::split(buf, len)
    }

    /// The shards `buf` holds back to back, `len` bytes each.
    fn split(buf: Vec<u8>, len: usize) -> Vec<ShardBytes> {
        let buf = Arc::new(buf);
        let n = buf.len() / len.max(1);
        (0..n).map(|i| ShardBytes { buf: buf.clone(), range: i * len..(i + 1) * len }).collect()
    }
}

impl std::ops::Deref for ShardBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl AsRef<[u8]> for ShardBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for ShardBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardBytes({} bytes)", self.range.len())
    }
}

/// Where encoded segments go: files, a network scatter, memory.
pub trait SegmentSink: Send {
    /// Store one segment's shards. An error aborts the encoding.
    fn put_segment(
        &mut self,
        segment: EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// A sink that keeps every shard in memory, by CID.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Shards by CID.
    pub shards: HashMap<Cid, Vec<u8>>,
}

impl SegmentSink for MemorySink {
    fn put_segment(
        &mut self,
        seg: EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for (cid, bytes) in seg.segment.shards().iter().zip(seg.shards) {
            self.shards.insert(*cid, bytes.to_vec());
        }
        Ok(())
    }
}

/// Chunks a tenant has already stored, by id, so that a new encoding stores
/// only what is new (a firmware v2 after v1, tonight's backup after last night's).
#[derive(Debug, Default, Clone)]
pub struct KnownChunks {
    segments: Vec<Segment>,
    by_segment_cid: HashMap<Cid, usize>,
    chunks: HashMap<ChunkId, Known>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    segment: usize,
    key: ChunkKey,
    offset: u32,
    stored_len: u32,
}

impl KnownChunks {
    /// Nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn every chunk of an object from its manifest and opened contents.
    pub fn add(&mut self, manifest: &Manifest, contents: &Contents) -> Result<()> {
        contents.check_against(manifest)?;
        let mut local = vec![None; manifest.segments().len()];
        if contents.ids.len() != contents.chunks.len() {
            return Err(Error::InvalidParams(
                "these contents were opened for decoding only (no chunk ids): open the manifest with `open`"
                    .to_string(),
            ));
        }
        for (ch, id) in contents.chunks().iter().zip(&contents.ids) {
            if self.chunks.contains_key(id) {
                continue;
            }
            let s = ch.segment();
            let idx = *local[s].get_or_insert_with(|| {
                let seg = &manifest.segments()[s];
                *self.by_segment_cid.entry(seg.cid()).or_insert_with(|| {
                    self.segments.push(seg.clone());
                    self.segments.len() - 1
                })
            });
            self.chunks.insert(*id, Known { segment: idx, key: ch.key, offset: ch.offset, stored_len: ch.stored_len });
        }
        Ok(())
    }

    /// How many distinct chunks are known.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True if nothing is known.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// What an encoding produced.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The manifest (store it; its CID names the object).
    pub manifest: Manifest,
    /// The key that opens it.
    pub read_key: ReadKey,
    /// Figures about the work.
    pub stats: EncodeStats,
}

/// Figures about one encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodeStats {
    /// Bytes of input.
    pub object_len: u64,
    /// Chunks in the object.
    pub chunks: u64,
    /// Chunks stored by this encoding (not known before, not repeated).
    pub new_chunks: u64,
    /// Of those, how many were compressed.
    pub compressed_chunks: u64,
    /// Plaintext bytes of the new chunks.
    pub new_plain_bytes: u64,
    /// Bytes of new segments (stored chunks, before erasure coding).
    pub new_segment_bytes: u64,
    /// Bytes of all new shards (data and parity).
    pub new_shard_bytes: u64,
    /// New segments written.
    pub new_segments: u64,
}

/// Encodes objects for one tenant with one set of parameters.
#[derive(Debug)]
pub struct Encoder<'a> {
    params: Params,
    secret: &'a TenantSecret,
    known: Option<&'a KnownChunks>,
    salt: [u8; 32],
    /// A match key given outright (a predecessor's), instead of one from the salt.
    match_key: Option<[u8; 32]>,
    /// Keys drawn from one-time material instead of derived from the secret.
    data_keys: Option<DataKeys>,
    coder: Coder,
}

/// Keys of one encoding that derive from one-time random material (see
/// [`Encoder::with_data_keys`]), not from the tenant's secret.
#[derive(Clone)]
struct DataKeys {
    chunk_key_key: [u8; 32],
    read_key: ReadKey,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKeys(<hidden>)")
    }
}

const CTX_DATA_CHUNK_KEY: &str = "ionshard 2026-12 data chunk key v1";
const CTX_DATA_READ_KEY: &str = "ionshard 2026-12 data read key v1";

/// The encoding so far.
struct State {
    match_key: [u8; 32],
    hasher: blake3::Hasher,
    /// Segments in manifest order; `None` until finished.
    segments: Vec<Option<Segment>>,
    /// Known segment index → manifest segment index.
    known_map: HashMap<usize, u32>,
    /// Chunks stored (or referenced) so far: segment, offset, stored length, key.
    seen: HashMap<ChunkId, (u32, u32, u32, ChunkKey)>,
    entries: Vec<ChunkEntry>,
    ids: Vec<ChunkId>,
    open: Option<OpenSegment>,
    stats: EncodeStats,
    done: u64,
}

/// A segment being filled.
struct OpenSegment {
    index: usize,
    data: Vec<u8>,
}

/// What happens to one chunk of a window.
enum Plan {
    /// Stored before (known, or earlier in this object).
    Reuse { segment: u32, offset: u32, stored_len: u32, key: ChunkKey },
    /// Stored now, into `segment` at `offset`.
    New { segment: u32, offset: u32, stored_len: u32, key: ChunkKey },
}

impl<'a> Encoder<'a> {
    /// An encoder; fails on parameters that cannot work.
    pub fn new(params: Params, secret: &'a TenantSecret) -> Result<Self> {
        params.validate()?;
        let coder = Coder::new(params.coding.data, params.coding.parity)?;
        Ok(Encoder { params, secret, known: None, salt: [0; 32], match_key: None, data_keys: None, coder })
    }

    /// Keys that can be destroyed: the chunks this encoding stores and its
    /// read key get keys derived from `material` (32 random bytes the
    /// caller draws for this encoding alone and then forgets) instead of
    /// from the tenant's secret. Chunk ids still come from the secret, so
    /// dedup works as before; a chunk reused from `known` keeps the key it
    /// was stored with. Each chunk's key is in the manifest's sealed part
    /// (as always), so whoever destroys every copy of the read key (and of
    /// the manifests that reuse the chunks) has made them unreadable for
    /// good, whatever a peer kept: crypto-shredding. Without this, keys can
    /// always be derived again from the secret (right for releases).
    pub fn with_data_keys(mut self, material: [u8; 32]) -> Self {
        self.data_keys = Some(DataKeys {
            chunk_key_key: blake3::derive_key(CTX_DATA_CHUNK_KEY, &material),
            read_key: ReadKey(blake3::derive_key(CTX_DATA_READ_KEY, &material)),
        });
        self
    }

    /// Store only chunks not in `known` (which must be the same tenant's).
    pub fn with_known(mut self, known: &'a KnownChunks) -> Self {
        self.known = Some(known);
        self
    }

    /// A per-object salt (random, chosen by the caller) for the match key.
    /// Without one the match key is the tenant's default, the same for all
    /// its objects; set one whenever readers of different objects differ.
    pub fn with_salt(mut self, salt: [u8; 32]) -> Self {
        self.salt = salt;
        self
    }

    /// Tag chunks under `key`, the match key of an earlier object read by
    /// the same readers ([`Contents::match_key`]), instead of a fresh one:
    /// the chunks both share then have the same tags, so that a manifest
    /// sent as a delta against the earlier one copies them instead of
    /// carrying 16 new bytes per chunk. Whoever can open both manifests
    /// already sees which chunks they share (their ids are equal), so this
    /// tells such a reader nothing new; use it only when the readers are
    /// the same.
    pub fn with_match_key(mut self, key: [u8; 32]) -> Self {
        self.match_key = Some(key);
        self
    }

    /// Encode everything `input` yields. `progress` is told the number of
    /// input bytes done so far after each window.
    pub fn encode(
        &self,
        mut input: impl Read + Send,
        sink: &mut dyn SegmentSink,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Encoded> {
        let params = &self.params;
        // 4 MiB windows whatever the segment size (cut points and segments
        // do not depend on it): 8 MiB ones, as large as the default segment,
        // were as fast and held 12 MiB more of a backup client's peak.
        let window = 4 << 20;
        let mut st = State {
            match_key: self.match_key.unwrap_or_else(|| self.secret.match_key(&self.salt)),
            hasher: blake3::Hasher::new(),
            segments: Vec::new(),
            known_map: HashMap::new(),
            seen: HashMap::new(),
            entries: Vec::new(),
            ids: Vec::new(),
            open: None,
            stats: EncodeStats::default(),
            done: 0,
        };
        // Two windows: while one is hashed, sealed and coded, the next is
        // read and cut on the other core (chunking is the one serial step).
        let mut cur = Window::fill(&mut input, vec![0; window], &[], params.chunking)
            .map_err(|e| Error::io("reading input", e))?;
        let mut spare = vec![0; window];
        while !cur.chunks.is_empty() {
            let carry = &cur.buf[cur.end..cur.len];
            let (next, done) = rayon::join(
                || Window::fill(&mut input, spare, carry, params.chunking),
                || self.process_window(&cur.buf[..cur.end], &cur.chunks, &mut st, sink),
            );
            done?;
            progress(st.done);
            let next = next.map_err(|e| Error::io("reading input", e))?;
            spare = std::mem::replace(&mut cur, next).buf;
        }
        // The last segment, then only what the manifest needs stays in memory.
        drop((cur, spare, std::mem::take(&mut st.seen)));
        if let Some(seg) = st.open.take() {
            let (i, s) = self.finish_segment(seg, sink, &mut st.stats)?;
            st.segments[i] = Some(s);
        }
        let segments: Vec<Segment> = st
            .segments
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| Error::InvalidParams("internal: a segment was never finished".to_string()))?;
        let object_hash = *st.hasher.finalize().as_bytes();
        st.stats.object_len = st.done;
        let contents =
            Contents { object_len: st.done, object_hash, match_key: st.match_key, chunks: st.entries, ids: st.ids };
        let read_key = match &self.data_keys {
            Some(d) => d.read_key,
            None => self.secret.read_key(&object_hash),
        };
        let manifest = Manifest::seal(*params, segments, &contents, &read_key);
        Ok(Encoded { manifest, read_key, stats: st.stats })
    }

    /// Hash, place, seal and code the chunks of one window.
    fn process_window(
        &self,
        data: &[u8],
        ranges: &[std::ops::Range<usize>],
        st: &mut State,
        sink: &mut dyn SegmentSink,
    ) -> Result<()> {
        let params = &self.params;
        let segment_size = params.segment_size as usize;
        let known = self.known;
        // 1. Hash every chunk, and compress those that may be new; hash the object meanwhile.
        let prepared = self.prepare(data, ranges, st);

        // 2. Decide, in order, where each chunk lives.
        let mut plans = Vec::with_capacity(ranges.len());
        let mut closed: Vec<OpenSegment> = Vec::new();
        for (r, (id, _, compressed)) in ranges.iter().zip(&prepared) {
            if let Some(&(segment, offset, stored_len, key)) = st.seen.get(id) {
                plans.push(Plan::Reuse { segment, offset, stored_len, key });
                continue;
            }
            if let Some((kc, c)) = known.and_then(|k| k.chunks.get(id).map(|c| (k, *c))) {
                let segments = &mut st.segments;
                let segment = *st.known_map.entry(c.segment).or_insert_with(|| {
                    segments.push(Some(kc.segments[c.segment].clone()));
                    (segments.len() - 1) as u32
                });
                st.seen.insert(*id, (segment, c.offset, c.stored_len, c.key));
                plans.push(Plan::Reuse { segment, offset: c.offset, stored_len: c.stored_len, key: c.key });
                continue;
            }
            let body = compressed.as_ref().map_or(r.len(), Vec::len);
            let stored_len = seal::stored_len(body);
            if st.open.as_ref().is_some_and(|o| o.data.len() + stored_len > segment_size) {
                closed.extend(st.open.take());
            }
            let segments = &mut st.segments;
            let seg = st.open.get_or_insert_with(|| {
                segments.push(None);
                // Room for the parity behind the data: it is coded in this buffer.
                let (k, m) = (usize::from(params.coding.data), usize::from(params.coding.parity));
                OpenSegment {
                    index: segments.len() - 1,
                    data: Vec::with_capacity((segment_size + 256).div_ceil(k) * (k + m)),
                }
            });
            let offset = seg.data.len();
            seg.data.resize(offset + stored_len, 0);
            let key = match &self.data_keys {
                Some(d) => ChunkKey(*blake3::keyed_hash(&d.chunk_key_key, &id.0).as_bytes()),
                None => self.secret.chunk_key(id),
            };
            let (segment, offset, stored_len) = (seg.index as u32, offset as u32, stored_len as u32);
            st.seen.insert(*id, (segment, offset, stored_len, key));
            plans.push(Plan::New { segment, offset, stored_len, key });
            st.stats.new_chunks += 1;
            st.stats.new_plain_bytes += r.len() as u64;
            st.stats.compressed_chunks += u64::from(compressed.is_some());
        }

        // 3. Encrypt new chunks straight into their segment slots.
        {
            let mut slots = carve_slots(&mut closed, st.open.as_mut(), &plans)?;
            slots
                .par_iter_mut()
                .try_for_each(|(i, out)| {
                    let Plan::New { key, .. } = &plans[*i] else {
                        return Err(());
                    };
                    seal::seal_into(key, &data[ranges[*i].clone()], prepared[*i].2.as_deref(), out);
                    Ok(())
                })
                .map_err(|()| Error::InvalidParams("internal: slot for a reused chunk".to_string()))?;
        }
        for ((r, (id, tag, _)), plan) in ranges.iter().zip(&prepared).zip(&plans) {
            let (Plan::Reuse { segment, offset, stored_len, key } | Plan::New { segment, offset, stored_len, key }) =
                *plan;
            st.ids.push(*id);
            st.entries.push(ChunkEntry { key, tag: *tag, plain_len: r.len() as u32, segment, offset, stored_len });
        }
        st.stats.chunks += ranges.len() as u64;

        // 4. Erasure-code and hand over the segments that filled up.
        for seg in closed {
            let (i, s) = self.finish_segment(seg, sink, &mut st.stats)?;
            st.segments[i] = Some(s);
        }
        st.done += data.len() as u64;
        Ok(())
    }

    /// Each chunk's id, match tag and (if it may be new and compression
    /// pays) compressed body, on all cores; the object's hash meanwhile.
    fn prepare(
        &self,
        data: &[u8],
        ranges: &[std::ops::Range<usize>],
        st: &mut State,
    ) -> Vec<(ChunkId, [u8; 16], Option<Vec<u8>>)> {
        let (params, known) = (&self.params, self.known);
        let (seen, match_key, hasher) = (&st.seen, &st.match_key, &mut st.hasher);
        let (prepared, ()) = rayon::join(
            || {
                ranges
                    .par_iter()
                    .map(|r| {
                        let plain = &data[r.clone()];
                        let d = digest(plain);
                        let id = self.secret.chunk_id(&d);
                        let tag = match_tag(match_key, &d);
                        let is_new = !seen.contains_key(&id) && known.is_none_or(|k| !k.chunks.contains_key(&id));
                        let compressed = if is_new { seal::compress_if_pays(params.zstd_level, plain) } else { None };
                        (id, tag, compressed)
                    })
                    .collect::<Vec<_>>()
            },
            || {
                hasher.update(data);
            },
        );
        prepared
    }

    fn finish_segment(
        &self,
        seg: OpenSegment,
        sink: &mut dyn SegmentSink,
        stats: &mut EncodeStats,
    ) -> Result<(usize, Segment)> {
        let OpenSegment { index, data } = seg;
        let len = data.len();
        let segment = crate::delta::code_segment(&self.coder, self.params.coding.data, index, data, sink)?;
        stats.new_segments += 1;
        stats.new_segment_bytes += len as u64;
        stats.new_shard_bytes += segment.shard_len() * segment.shards().len() as u64;
        Ok((index, segment))
    }
}

/// Split the segment buffers into one disjoint slot per new chunk, in order.
fn carve_slots<'s>(
    closed: &'s mut [OpenSegment],
    open: Option<&'s mut OpenSegment>,
    plans: &[Plan],
) -> Result<Vec<(usize, &'s mut [u8])>> {
    // New chunks of a window fill segments in increasing (segment, offset)
    // order, so each buffer can be cut front to back.
    let internal = |what: &str| Error::InvalidParams(format!("internal: {what} while placing chunks"));
    let mut bufs: HashMap<u32, (usize, &'s mut [u8])> = HashMap::new();
    for s in closed.iter_mut().chain(open) {
        bufs.insert(s.index as u32, (0, s.data.as_mut_slice()));
    }
    let mut out = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        if let Plan::New { segment, offset, stored_len, .. } = *p {
            let (cut, rest) = bufs.remove(&segment).ok_or_else(|| internal("a segment buffer is missing"))?;
            let skip = (offset as usize).checked_sub(cut).ok_or_else(|| internal("slots out of order"))?;
            if skip + stored_len as usize > rest.len() {
                return Err(internal("a slot beyond its segment"));
            }
            let (_, rest) = rest.split_at_mut(skip);
            let (slot, rest) = rest.split_at_mut(stored_len as usize);
            out.push((i, slot));
            bufs.insert(segment, (offset as usize + stored_len as usize, rest));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_handles_share_their_segment_and_show_only_their_own_bytes() {
        let buf: Vec<u8> = (0..30u8).collect();
        let shards = ShardBytes::split(buf, 10);
        assert_eq!(shards.len(), 3);
        assert_eq!(&shards[1][..], &(10..20u8).collect::<Vec<_>>()[..]);
        let copy = shards[2].clone();
        assert!(Arc::ptr_eq(&copy.buf, &shards[0].buf), "a clone is a handle, not a copy");
        assert_eq!(format!("{copy:?}"), "ShardBytes(10 bytes)");
    }
}
