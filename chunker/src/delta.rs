//! Releases as deltas against the one before: which changed chunk gets a
//! patch against which old chunks ([`plan_patches`]), making and packing the
//! patches ([`Patcher`]), and a manifest carried as a delta against the
//! previous manifest ([`manifest_delta`], [`apply_manifest_delta`]).
//!
//! A manifest delta is a zstd frame that turns the previous manifest's
//! *plain form* into the new one's; the reader, holding both read keys,
//! rebuilds the plain form of the manifest it has, applies the frame, seals
//! the result with the new read key (sealing is deterministic) and checks the
//! CID against the signed one: nothing in a delta is trusted.
//!
//! ```text
//! delta = "ionshard/mdelta" ‖ version u8 (1) ‖ nonce(12) ‖ AES-256-GCM(new read key, aad, body) ‖ tag(16)
//! aad   = "ionshard/mdelta" ‖ version ‖ the old manifest's CID digest(32)
//! body  = plain_len u64 le ‖ zstd frame (prefix: the old plain form)
//! plain = public part (as in the manifest) ‖ object_len u64 ‖ object_hash(32) ‖ match_key(32) ‖ chunks u64
//!         ‖ ids(32 × n) ‖ keys(32 × n) ‖ tags(16 × n) ‖ plain_len(4 × n) ‖ segment(4 × n) ‖ offset(4 × n) ‖ stored_len(4 × n)
//! ```
//! (column by column, so that the chunks a release keeps are long copies.)
//! The delta is sealed with the new release's read key: it carries the new
//! chunks' keys, which only the release's readers may see (a delta is
//! served to whoever asks, as bundles are).

use std::collections::HashMap;

use crate::encode::{EncodedSegment, SegmentSink};
use crate::erasure::Coder;
use crate::error::{Error, Result};
use crate::keys::{ChunkId, ChunkKey, ReadKey, digest, match_tag};
use crate::manifest::{ChunkEntry, Contents, Manifest, Segment};
use crate::patch::{self, Base, MAX_BASES, PatchEntry, PatchTable};

/// Bases a patch is widened to with neighbours (the chunks it overlaps may be more, up to [`MAX_BASES`]).
const WIDEN_TO: usize = 2;

/// Which old chunks one new chunk's patch is made against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPlan {
    /// The new chunk (index in the new object).
    pub chunk: usize,
    /// The old chunks (indices in the old object), in order.
    pub bases: Vec<usize>,
}

/// For every chunk of `new` that `old` does not hold, the old chunks at the
/// same place in the content-defined sequence: between the same unchanged
/// neighbours, in proportion to where it lies in its changed run, widened by
/// to two with a neighbour, at most [`MAX_BASES`]. Empty when either was
/// opened without chunk ids.
pub fn plan_patches(new: &Contents, old: &Contents) -> Vec<PatchPlan> {
    if new.ids.len() != new.chunks.len() || old.ids.len() != old.chunks.len() {
        return Vec::new();
    }
    let mut at: HashMap<ChunkId, Vec<usize>> = HashMap::new();
    for (i, id) in old.ids.iter().enumerate() {
        at.entry(*id).or_default().push(i);
    }
    // Each new chunk's place in the old sequence, where it has one: the first
    // occurrence after the last one placed (so the anchors only move on).
    let mut anchor: Vec<Option<usize>> = vec![None; new.ids.len()];
    let mut last: Option<usize> = None;
    for (i, id) in new.ids.iter().enumerate() {
        if let Some(ps) = at.get(id) {
            // (Positions are sorted: the first after `last` by bisection.)
            let after = last.map_or(0, |l| ps.partition_point(|p| *p <= l));
            let p = ps.get(after).copied().unwrap_or(ps[0]);
            anchor[i] = Some(p);
            last = Some(p);
        }
    }
    let old_ends: Vec<u64> = old
        .chunks
        .iter()
        .scan(0u64, |s, c| {
            *s += u64::from(c.plain_len);
            Some(*s)
        })
        .collect();
    let mut plans = Vec::new();
    let mut i = 0;
    while i < new.ids.len() {
        if anchor[i].is_some() {
            i += 1;
            continue;
        }
        let j = (i..new.ids.len()).find(|&j| anchor[j].is_some()).unwrap_or(new.ids.len());
        let from = if i == 0 { 0 } else { anchor[i - 1].map_or(0, |a| a + 1) };
        let to = match anchor.get(j).copied().flatten() {
            Some(b) if b >= from => b,
            _ => old.chunks.len(),
        };
        // The old run [from, to) and the new run [i, j), matched by bytes.
        let (old_start, old_len) = if to > from {
            let s = if from == 0 { 0 } else { old_ends[from - 1] };
            (s, old_ends[to - 1] - s)
        } else {
            (0, 0)
        };
        let new_len: u64 = new.chunks[i..j].iter().map(|c| u64::from(c.plain_len)).sum();
        let mut x = 0u64;
        for n in i..j {
            let len = u64::from(new.chunks[n].plain_len);
            let mut bases: Vec<usize> = Vec::new();
            if old_len > 0 && new_len > 0 {
                // In u128: both runs may be gigabytes long.
                let scale = |v: u64| (u128::from(v) * u128::from(old_len) / u128::from(new_len)) as u64;
                let (a, b) = (old_start + scale(x), old_start + scale(x + len));
                let first = old_ends.partition_point(|e| *e <= a).min(old.chunks.len() - 1);
                let last = old_ends.partition_point(|e| *e < b.max(a + 1)).min(old.chunks.len() - 1);
                bases.extend(first..=last);
            }
            // A neighbour, up to two bases: the boundaries may have moved
            // (more bases make patches hardly smaller, and name 12 bytes each).
            let (mut lo, mut hi) = (bases.first().copied(), bases.last().copied());
            let candidates = old.chunks.len();
            while bases.len() < WIDEN_TO.min(candidates) {
                let before = match lo {
                    Some(l) if l > 0 => Some(l - 1),
                    None if from > 0 => Some(from - 1),
                    _ => None,
                };
                let after = match hi {
                    Some(h) if h + 1 < candidates => Some(h + 1),
                    None if from < candidates => Some(from),
                    _ => None,
                };
                match (before, after) {
                    (_, Some(a)) if bases.len().is_multiple_of(2) || before.is_none() => {
                        bases.push(a);
                        hi = Some(a);
                        lo = lo.or(Some(a));
                    }
                    (Some(b), _) => {
                        bases.insert(0, b);
                        lo = Some(b);
                        hi = hi.or(Some(b));
                    }
                    _ => break,
                }
            }
            bases.truncate(MAX_BASES);
            if !bases.is_empty() {
                plans.push(PatchPlan { chunk: n, bases });
            }
            x += len;
        }
        i = j;
    }
    plans
}

/// Makes patches for one new object against an old one and packs them into
/// segments of their own.
#[derive(Debug)]
pub struct Patcher<'a> {
    new: &'a Contents,
    old: &'a Contents,
    level: i32,
    /// A patch is kept when its stored size is at most this fraction (1/n) of the chunk's.
    keep_below: u32,
    made: Vec<(PatchPlan, Patch)>,
}

/// One patch made, to keep or not.
#[derive(Debug, Clone)]
pub struct Patch {
    sealed: Vec<u8>,
    bases: Vec<Base>,
}

impl Patch {
    /// Its stored (sealed) length.
    pub fn len(&self) -> usize {
        self.sealed.len()
    }

    /// Never true (a sealed patch has its overhead at least).
    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty()
    }
}

impl<'a> Patcher<'a> {
    /// Patches of `new` against `old` (both opened with ids), zstd at `level`.
    pub fn new(new: &'a Contents, old: &'a Contents, level: i32) -> Self {
        Patcher { new, old, level, keep_below: 3, made: Vec::new() }
    }

    /// Make the patch `plan` says from the new chunk's and the bases'
    /// plaintext: `None` unless it is at most a third of the stored chunk.
    /// The bases are named by their match tags under the *new* object's
    /// match key (computed here from their plaintext), which is how a
    /// reader of the new object finds them in its seed: no key of the old
    /// object is reused. Returns the patch, for [`Patcher::keep`]. (Runs on
    /// any thread: a publisher makes many at once.)
    pub fn make(&self, plan: &PatchPlan, new_plain: &[u8], bases: &[&[u8]]) -> Result<Option<Patch>> {
        let c =
            self.new.chunks.get(plan.chunk).ok_or_else(|| Error::InvalidParams(format!("no chunk {}", plan.chunk)))?;
        if new_plain.len() != c.plain_len as usize || bases.len() != plan.bases.len() || bases.is_empty() {
            return Err(Error::InvalidParams(format!("patch for chunk {}: wrong plaintext handed in", plan.chunk)));
        }
        let mut named = Vec::with_capacity(bases.len());
        for (b, i) in bases.iter().zip(&plan.bases) {
            let e = self.old.chunks.get(*i).ok_or_else(|| Error::InvalidParams(format!("no old chunk {i}")))?;
            if b.len() != e.plain_len as usize {
                return Err(Error::InvalidParams(format!("old chunk {i}: wrong plaintext handed in")));
            }
            let tag = match_tag(&self.new.match_key, &digest(b));
            named.push(Base { tag: tag[..8].try_into().unwrap_or_default(), len: e.plain_len });
        }
        let prefix = bases.concat();
        let Some(frame) = patch::diff(self.level, &prefix, new_plain) else { return Ok(None) };
        let sealed = patch::seal(&c.key, &c.tag, &named, &frame);
        if sealed.len() as u64 * u64::from(self.keep_below) > u64::from(c.stored_len) {
            return Ok(None);
        }
        Ok(Some(Patch { sealed, bases: named }))
    }

    /// Keep a patch [`Patcher::make`] made for `plan`.
    pub fn keep(&mut self, plan: &PatchPlan, patch: Patch) {
        self.made.push((plan.clone(), patch));
    }

    /// Patches kept so far.
    pub fn len(&self) -> usize {
        self.made.len()
    }

    /// True if none was kept.
    pub fn is_empty(&self) -> bool {
        self.made.is_empty()
    }

    /// Pack the patches into segments of at most `segment_size` bytes, coded
    /// `k` + `m`, numbered from `first_index` (after the new manifest's
    /// segments), each handed to `sink`. Returns the segments and the table.
    pub fn finish(
        self,
        segment_size: u32,
        k: u8,
        m: u8,
        first_index: usize,
        sink: &mut dyn SegmentSink,
    ) -> Result<(Vec<Segment>, PatchTable)> {
        let coder = Coder::new(k, m)?;
        let mut segments = Vec::new();
        let mut entries = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        let mut pending: Vec<PatchEntry> = Vec::new();
        let flush = |data: &mut Vec<u8>, segments: &mut Vec<Segment>, sink: &mut dyn SegmentSink| -> Result<()> {
            if data.is_empty() {
                return Ok(());
            }
            let index = first_index + segments.len();
            segments.push(code_segment(&coder, k, index, std::mem::take(data), sink)?);
            Ok(())
        };
        for (plan, Patch { sealed, bases }) in self.made {
            if !data.is_empty() && data.len() + sealed.len() > segment_size as usize {
                flush(&mut data, &mut segments, sink)?;
                entries.append(&mut pending);
            }
            pending.push(PatchEntry {
                chunk: plan.chunk as u64,
                segment: (first_index + segments.len()) as u32,
                offset: data.len() as u32,
                stored_len: sealed.len() as u32,
                bases,
            });
            data.extend_from_slice(&sealed);
        }
        flush(&mut data, &mut segments, sink)?;
        entries.append(&mut pending);
        Ok((segments, PatchTable::new(entries)))
    }
}

/// Code one segment (`data` is its bytes), name its shards and hand them over.
pub(crate) fn code_segment(
    coder: &Coder,
    k: u8,
    index: usize,
    mut data: Vec<u8>,
    sink: &mut dyn SegmentSink,
) -> Result<Segment> {
    let len = data.len();
    let shard_len = coder.shard_len(len);
    data.resize(shard_len * usize::from(k), 0);
    let (segment, all) = Segment::from_data(len as u64, k, coder.parity_shards() as u8, data)?;
    sink.put_segment(EncodedSegment { index, segment: &segment, shards: all })
        .map_err(|e| Error::Sink { segment: index, reason: e.to_string() })?;
    Ok(segment)
}

impl Manifest {
    /// This manifest with `extra` segments listed after its own (patch
    /// segments: no chunk refers to them), sealed again with `key`.
    /// `contents` must be this manifest's, opened with ids.
    pub fn with_extra_segments(&self, contents: &Contents, key: &ReadKey, extra: Vec<Segment>) -> Result<Manifest> {
        contents.check_against(self)?;
        if contents.ids.len() != contents.chunks.len() {
            return Err(Error::InvalidParams("contents opened without ids".to_string()));
        }
        let mut segments = self.segments.clone();
        segments.extend(extra);
        Ok(Manifest::seal(self.params, segments, contents, key))
    }
}

const DELTA_MAGIC: &[u8] = b"ionshard/mdelta";
const DELTA_VERSION: u8 = 1;

fn plain_form(m: &Manifest, c: &Contents) -> Vec<u8> {
    let n = c.chunks.len();
    let mut out = m.public_prefix();
    out.reserve(84 + n * 96);
    out.extend_from_slice(&c.object_len.to_le_bytes());
    out.extend_from_slice(&c.object_hash);
    out.extend_from_slice(&c.match_key);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for id in &c.ids {
        out.extend_from_slice(&id.0);
    }
    for e in &c.chunks {
        out.extend_from_slice(&e.key.0);
    }
    for e in &c.chunks {
        out.extend_from_slice(&e.tag);
    }
    for f in [
        |e: &ChunkEntry| e.plain_len,
        |e: &ChunkEntry| e.segment,
        |e: &ChunkEntry| e.offset,
        |e: &ChunkEntry| e.stored_len,
    ] {
        for e in &c.chunks {
            out.extend_from_slice(&f(e).to_le_bytes());
        }
    }
    out
}

/// The new manifest as a delta against the old one (both opened with
/// ids), made with zstd at `level` (19 for the smallest delta; lower is
/// faster on large manifests) and sealed with the new manifest's read key.
pub fn manifest_delta(
    old: &Manifest,
    old_contents: &Contents,
    new: &Manifest,
    new_contents: &Contents,
    new_key: &ReadKey,
    level: i32,
) -> Result<Vec<u8>> {
    if old_contents.ids.len() != old_contents.chunks.len() || new_contents.ids.len() != new_contents.chunks.len() {
        return Err(Error::InvalidParams("contents opened without ids".to_string()));
    }
    let (a, b) = (plain_form(old, old_contents), plain_form(new, new_contents));
    let frame = patch::diff(level, &a, &b).ok_or_else(|| Error::InvalidParams("zstd failed on a manifest".into()))?;
    let mut body = Vec::with_capacity(frame.len() + 8);
    body.extend_from_slice(&(b.len() as u64).to_le_bytes());
    body.extend_from_slice(&frame);
    let aad = delta_aad(old);
    let mut out = Vec::with_capacity(body.len() + DELTA_MAGIC.len() + 29);
    out.extend_from_slice(DELTA_MAGIC);
    out.push(DELTA_VERSION);
    crate::patch::seal_with(&new_key.0, "ionshard 2026-12 manifest delta nonce v1", &aad, &body, &mut out);
    Ok(out)
}

fn delta_aad(old: &Manifest) -> Vec<u8> {
    let mut a = DELTA_MAGIC.to_vec();
    a.push(DELTA_VERSION);
    a.extend_from_slice(old.cid().digest());
    a
}

/// Rebuild a manifest from a delta against `old` (opened with ids) and seal
/// it with `key`: the caller checks the result's CID against the one it
/// expects. Refuses a delta whose result would exceed `max_plain` bytes
/// before allocating it.
pub fn apply_manifest_delta(
    old: &Manifest,
    old_contents: &Contents,
    delta: &[u8],
    key: &ReadKey,
    max_plain: usize,
) -> Result<Manifest> {
    let bad = |why: String| Error::ManifestMalformed(format!("manifest delta: {why}"));
    if old_contents.ids.len() != old_contents.chunks.len() {
        return Err(Error::InvalidParams("contents opened without ids".to_string()));
    }
    let head = DELTA_MAGIC.len() + 1;
    if delta.len() < head || &delta[..DELTA_MAGIC.len()] != DELTA_MAGIC {
        return Err(bad("not a manifest delta".into()));
    }
    if delta[DELTA_MAGIC.len()] != DELTA_VERSION {
        return Err(bad(format!("version {} (this build reads {DELTA_VERSION})", delta[DELTA_MAGIC.len()])));
    }
    let body = crate::patch::open_with(&key.0, &delta_aad(old), &delta[head..])
        .map_err(|()| bad("it does not open with this release's key against this manifest".into()))?;
    if body.len() < 8 {
        return Err(bad("too short".into()));
    }
    let len = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
    if len > max_plain as u64 {
        return Err(bad(format!("it makes {len} bytes, over the {max_plain} allowed")));
    }
    let prefix = plain_form(old, old_contents);
    let mut plain = vec![0u8; len as usize];
    patch::decompress(&body[8..], &prefix, &mut plain).map_err(bad)?;
    drop(prefix);
    parse_plain(&plain, key).map_err(|e| bad(e.to_string()))
}

fn parse_plain(plain: &[u8], key: &ReadKey) -> Result<Manifest> {
    let bad = |why: &str| Error::ManifestMalformed(why.to_string());
    let mut d = minicbor::Decoder::new(plain);
    let (params, segments) = crate::manifest::decode_public_part(&mut d)?;
    let mut at = d.position();
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = plain.get(at..at.checked_add(n).ok_or_else(|| bad("too long"))?).ok_or_else(|| bad("cut short"))?;
        at += n;
        Ok(s)
    };
    let object_len = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
    let object_hash: [u8; 32] = take(32)?.try_into().unwrap_or_default();
    let match_key: [u8; 32] = take(32)?.try_into().unwrap_or_default();
    let n = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.checked_mul(96).is_some_and(|b| b <= plain.len()))
        .ok_or_else(|| bad("more chunks than bytes"))?;
    let ids = take(32 * n)?.chunks_exact(32).map(|b| ChunkId(b.try_into().unwrap_or_default())).collect();
    let keys: Vec<ChunkKey> =
        take(32 * n)?.chunks_exact(32).map(|b| ChunkKey(b.try_into().unwrap_or_default())).collect();
    let tags: Vec<[u8; 16]> = take(16 * n)?.chunks_exact(16).map(|b| b.try_into().unwrap_or_default()).collect();
    let mut cols = Vec::with_capacity(4);
    for _ in 0..4 {
        cols.push(
            take(4 * n)?
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect::<Vec<u32>>(),
        );
    }
    if at != plain.len() {
        return Err(bad("bytes after the chunk table"));
    }
    let chunks = (0..n)
        .map(|i| ChunkEntry {
            key: keys[i],
            tag: tags[i],
            plain_len: cols[0][i],
            segment: cols[1][i],
            offset: cols[2][i],
            stored_len: cols[3][i],
        })
        .collect();
    let contents = Contents { object_len, object_hash, match_key, chunks, ids };
    // Only what sealing needs is checked here: the CID check the caller makes
    // and the checks of every later read cover the rest.
    contents.check_against(&Manifest { params, segments: segments.clone(), sealed: Vec::new() })?;
    Ok(Manifest::seal(params, segments, &contents, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cid, Decoder, Encoder, KnownChunks, MemorySink, MemorySource, Params, TenantSecret};

    fn text(n: usize, v: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u64;
        while out.len() < n {
            let h = blake3::hash(&i.to_le_bytes());
            out.extend_from_slice(format!("line {i} {} release {v}\n", h.to_hex()).as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    /// A manifest delta is served to whoever asks (as bundles are): before
    /// it was sealed, its zstd literals held the new chunks' keys in the
    /// clear, and a stranger who knew an earlier manifest (a public
    /// release's) could read a confidential release's changed chunks.
    #[test]
    fn a_stranger_reads_no_chunk_key_from_a_manifest_delta() {
        let secret = TenantSecret::from_bytes([6; 32]);
        let params = Params::default();
        let v1 = text(1 << 20, "1");
        let mut v2 = v1.clone();
        v2[500_000..500_006].copy_from_slice(b"SECRET");
        let mut sink = MemorySink::default();
        let e1 = Encoder::new(params, &secret).expect("enc").encode(&v1[..], &mut sink, &mut |_| {}).expect("v1");
        let c1 = e1.manifest.open(&e1.read_key).expect("open");
        let mut known = KnownChunks::new();
        known.add(&e1.manifest, &c1).expect("known");
        let enc = Encoder::new(params, &secret).expect("enc").with_known(&known).with_match_key(c1.match_key);
        let e2 = enc.encode(&v2[..], &mut sink, &mut |_| {}).expect("v2");
        let c2 = e2.manifest.open(&e2.read_key).expect("open");
        let delta = manifest_delta(&e1.manifest, &c1, &e2.manifest, &c2, &e2.read_key, 19).expect("delta");
        for (e, id) in c2.chunks.iter().zip(&c2.ids) {
            for secret in [&e.key.0, &id.0] {
                assert!(!delta.windows(32).any(|w| w == secret.as_slice()), "a chunk key or id is in the delta");
            }
        }
        // Holding the old manifest and its key is not enough to open it.
        assert!(apply_manifest_delta(&e1.manifest, &c1, &delta, &e1.read_key, 64 << 20).is_err());
        let back = apply_manifest_delta(&e1.manifest, &c1, &delta, &e2.read_key, 64 << 20).expect("apply");
        assert_eq!(back.cid(), e2.manifest.cid());
    }

    #[test]
    fn a_patch_release_gets_small_patches_and_a_small_manifest_delta() {
        let secret = TenantSecret::from_bytes([5; 32]);
        let params = Params::default();
        let v1 = text(3 << 20, "1");
        let mut v2 = v1.clone();
        for at in [100_000usize, 1_500_000, 2_900_000] {
            v2[at..at + 6].copy_from_slice(b"CHANGE");
        }
        let mut sink = MemorySink::default();
        let e1 = Encoder::new(params, &secret).expect("enc").encode(&v1[..], &mut sink, &mut |_| {}).expect("v1");
        let c1 = e1.manifest.open(&e1.read_key).expect("open");
        let mut known = KnownChunks::new();
        known.add(&e1.manifest, &c1).expect("known");
        // (Patches work across match keys: bases are named under the new one.)
        let fresh = Encoder::new(params, &secret).expect("enc").with_known(&known).with_salt([9; 32]);
        let e2x = fresh.encode(&v2[..], &mut sink, &mut |_| {}).expect("v2");
        let c2x = e2x.manifest.open(&e2x.read_key).expect("open");
        assert_ne!(c2x.match_key, c1.match_key);
        assert_eq!(plan_patches(&c2x, &c1).len(), 3);
        let e2 = Encoder::new(params, &secret)
            .expect("enc")
            .with_known(&known)
            .with_match_key(c1.match_key)
            .encode(&v2[..], &mut sink, &mut |_| {})
            .expect("v2");
        let c2 = e2.manifest.open(&e2.read_key).expect("open");
        let plans = plan_patches(&c2, &c1);
        assert_eq!(plans.len(), 3, "{plans:?}");
        let starts = |c: &Contents| {
            c.chunks
                .iter()
                .scan(0usize, |s, e| {
                    let a = *s;
                    *s += e.plain_len as usize;
                    Some(a..*s)
                })
                .collect::<Vec<_>>()
        };
        let (s1, s2) = (starts(&c1), starts(&c2));
        let mut p = Patcher::new(&c2, &c1, 19);
        for plan in &plans {
            let bases: Vec<&[u8]> = plan.bases.iter().map(|i| &v1[s1[*i].clone()]).collect();
            let patch = p.make(plan, &v2[s2[plan.chunk].clone()], &bases).expect("make").expect("kept");
            assert!(patch.len() < 200, "{}", patch.len());
            p.keep(plan, patch);
        }
        let first = e2.manifest.segments().len();
        let (segs, table) = p.finish(params.segment_size, 10, 4, first, &mut sink).expect("finish");
        assert_eq!(segs.len(), 1);
        let m2 = e2.manifest.with_extra_segments(&c2, &e2.read_key, segs).expect("extra");
        let sealed = table.seal(&e2.read_key, &m2);
        let opened = PatchTable::open(&sealed, &e2.read_key, &m2, c2.chunks.len() as u64).expect("open table");
        assert_eq!(opened, table);
        assert!(PatchTable::open(&sealed, &e1.read_key, &m2, c2.chunks.len() as u64).is_err());
        // The manifest as a delta: far smaller, and exactly the manifest again.
        let c2x = m2.open(&e2.read_key).expect("open");
        let delta = manifest_delta(&e1.manifest, &c1, &m2, &c2x, &e2.read_key, 19).expect("delta");
        let full = m2.to_bytes().len();
        // Mostly the new segments' shard digests and the changed chunks' ids and keys.
        assert!(delta.len() * 5 < full, "delta {} of {full}", delta.len());
        let back = apply_manifest_delta(&e1.manifest, &c1, &delta, &e2.read_key, 64 << 20).expect("apply");
        assert_eq!(back.cid(), m2.cid());
        assert!(apply_manifest_delta(&e1.manifest, &c1, &delta, &e2.read_key, 1000).is_err());
        let mut bad = delta.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x55;
        let rebuilt = apply_manifest_delta(&e1.manifest, &c1, &bad, &e2.read_key, 64 << 20);
        assert!(rebuilt.is_err() || rebuilt.is_ok_and(|m| m.cid() != m2.cid()), "a damaged delta made the manifest");

        // A reader with v1 as its seed makes the changed chunks from the patches.
        let decode = |shards: &HashMap<Cid, Vec<u8>>, seed: &[u8]| {
            let source = MemorySource::new(shards.clone());
            let mut out = Vec::new();
            let d = Decoder::new(&m2, &c2x, &source).with_seed(&seed).with_patches(&opened);
            let stats = d.decode(&mut out, &mut |_| {}).expect("decode");
            assert!(out == v2, "the patched object differs");
            stats
        };
        let with = decode(&sink.shards, &v1);
        assert_eq!(with.patched_chunks, 3, "{with:?}");
        assert!(with.patch_fallbacks.is_empty(), "{with:?}");
        let without = {
            let source = MemorySource::new(sink.shards.clone());
            let mut out = Vec::new();
            let s = Decoder::new(&m2, &c2x, &source).with_seed(&v1).decode(&mut out, &mut |_| {}).expect("decode");
            assert!(out == v2);
            s
        };
        assert!(with.fetched_bytes < without.fetched_bytes, "{} vs {}", with.fetched_bytes, without.fetched_bytes);
        // A patch damaged on its peer: the chunk is fetched instead, and the cause named.
        let mut damaged = sink.shards.clone();
        let patch_seg = &m2.segments()[first];
        let e = &opened.entries()[0];
        let shard = (u64::from(e.offset) / patch_seg.shard_len()) as usize;
        let at = (u64::from(e.offset) % patch_seg.shard_len()) as usize + 20;
        let bytes = damaged.get_mut(&patch_seg.shards()[shard]).expect("shard");
        let last = bytes.len() - 1;
        bytes[at.min(last)] ^= 1;
        let fell = decode(&damaged, &v1);
        assert!(fell.patched_chunks < 3 && !fell.patch_fallbacks.is_empty(), "{fell:?}");
        // A seed that lacks the bases (another file): no patches, every chunk fetched.
        let other = text(1 << 20, "other");
        let none = decode(&sink.shards, &other);
        assert_eq!(none.patched_chunks, 0);
    }
}
