//! Decoding: a manifest, a read key and a shard source in, the exact object out.
//!
//! Chunks are taken in object order, a window at a time. For each window the
//! decoder works out which byte ranges of which data shards hold the stored
//! chunks it needs, asks the source for them (all at once, in parallel), and
//! checks every byte against the shard's CID: a whole shard by its BLAKE3
//! hash, a range by its proof. When every data range arrives, no
//! Reed-Solomon work is done. When a data shard is missing or lies, the same
//! ranges are read from other shards and rebuilt. Then each chunk is
//! decrypted, decompressed and checked, written in order, and the object's
//! BLAKE3 hash compared at the end.
//!
//! With a seed (an older version of the object), the seed is cut with the
//! manifest's chunking and each chunk's match tag looked up: chunks the seed
//! holds are copied from it, and only the others are asked of the source.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::ops::Range;

use rayon::prelude::*;

use crate::address::Cid;
use crate::cdc::ChunkStream;
use crate::erasure::Coder;
use crate::error::{Error, Result, ShardProblem};
use crate::keys::{digest, match_tag};
use crate::manifest::{ChunkEntry, Manifest};
use crate::proof;
use crate::table::ChunkTable;

/// Which bytes of which shard a decoder wants.
#[derive(Debug, Clone, Copy)]
pub struct ShardRequest<'a> {
    /// Segment index in the manifest.
    pub segment: usize,
    /// Shard index within the segment (data shards first).
    pub shard: usize,
    /// The shard's CID.
    pub cid: &'a Cid,
    /// The shard's length.
    pub shard_len: u64,
    /// Sorted, disjoint byte ranges of the shard.
    pub ranges: &'a [Range<u64>],
}

/// What a source returns for a request. The decoder verifies either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The whole shard (checked against its CID).
    Whole(Vec<u8>),
    /// A range proof of the requested ranges (see [`crate::proof`]).
    Proof(Vec<u8>),
}

/// Why a source could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// It does not have the shard.
    Missing,
    /// It failed; the text says how (and, for a network source, which peer).
    Failed(String),
}

/// Where shards come from: a directory, a store, peers on the network.
///
/// `Sync` because the decoder asks for many shards at once.
pub trait ShardSource: Sync {
    /// Answer one request.
    fn fetch(&self, req: &ShardRequest<'_>) -> std::result::Result<Piece, SourceError>;

    /// Answer several requests, in order. The default asks them in parallel
    /// on the decoder's threads; a network source overrides it to have them
    /// all in flight at once without a thread each.
    fn fetch_many(&self, reqs: &[ShardRequest<'_>]) -> Vec<std::result::Result<Piece, SourceError>> {
        reqs.par_iter().map(|r| self.fetch(r)).collect()
    }

    /// The answer to `req` did not verify against the shard's CID: whoever
    /// gave it lied or its disk rotted. A network source names and drops it.
    fn rejected(&self, req: &ShardRequest<'_>, reason: &str) {
        let _ = (req, reason);
    }
}

/// An older version of the object, whose chunks need not be fetched again.
pub trait Seed: Sync {
    /// Its length in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl<T: AsRef<[u8]> + Sync> Seed for T {
    fn size(&self) -> u64 {
        self.as_ref().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let src = self
            .as_ref()
            .get(start..start + buf.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the seed"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Where the seed's chunks are, by match tag: 16 bytes a chunk (the first 8
/// bytes of the tag; offset and length packed), sorted, so a seed of any size
/// costs about 0.05% of itself in memory.
#[derive(Debug, Default)]
struct SeedIndex(Vec<(u64, u64)>);

impl SeedIndex {
    fn entry(tag: &[u8; 16], offset: u64, len: u32) -> (u64, u64) {
        let short = u64::from_le_bytes(tag[..8].try_into().unwrap_or_default());
        // Chunks are at most 4 MiB (22 bits); offsets up to 2^40 (1 TiB).
        (short, (offset << 24) | u64::from(len & 0xff_ffff))
    }

    /// Offsets in the seed of chunks of length `len` whose tag starts like `tag`.
    fn candidates(&self, tag: &[u8; 16], len: u32) -> impl Iterator<Item = u64> + '_ {
        let short = u64::from_le_bytes(tag[..8].try_into().unwrap_or_default());
        let from = self.0.partition_point(|(t, _)| *t < short);
        self.0[from..]
            .iter()
            .take_while(move |(t, _)| *t == short)
            .filter(move |(_, v)| (*v & 0xff_ffff) as u32 == len)
            .map(|(_, v)| v >> 24)
    }
}

/// Figures about one decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Object bytes written.
    pub object_len: u64,
    /// Chunks in the object.
    pub chunks: u64,
    /// Chunks copied from the seed.
    pub seed_chunks: u64,
    /// Object bytes copied from the seed.
    pub seed_bytes: u64,
    /// Bytes received from the source (whole shards and proofs).
    pub fetched_bytes: u64,
    /// Requests made of the source.
    pub requests: u64,
    /// Shard ranges rebuilt with Reed-Solomon.
    pub rebuilt_ranges: u64,
    /// Shards that were missing or bad (the object was rebuilt around them).
    pub problems: Vec<ShardProblem>,
}

/// Decodes one object.
pub struct Decoder<'a> {
    manifest: &'a Manifest,
    contents: &'a dyn ChunkTable,
    source: &'a dyn ShardSource,
    seed: Option<&'a dyn Seed>,
    window: Option<u64>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("segments", &self.manifest.segments().len()).finish_non_exhaustive()
    }
}

/// One fetch the decoder plans: ranges of one shard.
#[derive(Debug, Clone)]
struct Want {
    segment: usize,
    shard: usize,
    ranges: Vec<Range<u64>>,
}

/// Verified bytes of one shard: ranges (in shard coordinates) and their bytes;
/// a whole shard is one range.
type Got = Vec<(Range<u64>, Vec<u8>)>;

/// The bytes of `want` inside `got`, if one of its ranges covers them.
fn slice_of<'g>(got: &'g Got, want: &Range<u64>) -> Option<&'g [u8]> {
    let (r, b) = got.iter().find(|(r, _)| r.start <= want.start && want.end <= r.end)?;
    b.get((want.start - r.start) as usize..(want.end - r.start) as usize)
}

impl<'a> Decoder<'a> {
    /// A decoder for an opened manifest: its chunk table held whole
    /// ([`crate::Contents`]) or read a page at a time ([`crate::PagedContents`]).
    pub fn new(manifest: &'a Manifest, contents: &'a dyn ChunkTable, source: &'a dyn ShardSource) -> Self {
        Decoder { manifest, contents, source, seed: None, window: None }
    }

    /// Copy chunks from `seed` where it has them.
    pub fn with_seed(mut self, seed: &'a dyn Seed) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Decode at most about `bytes` of the object at a time (default: about
    /// one segment). Smaller windows hold less memory (a device fetcher)
    /// and ask for fewer bytes per request.
    pub fn with_window(mut self, bytes: u64) -> Self {
        self.window = Some(bytes.max(256 << 10));
        self
    }

    /// Write the object to `out`. The caller must not treat `out` as final
    /// until this returns `Ok`: the whole-object hash is checked last.
    pub fn decode(&self, out: &mut (dyn Write + Send), progress: &mut dyn FnMut(u64)) -> Result<DecodeStats> {
        let count = self.contents.chunk_count();
        let mut stats = DecodeStats { chunks: count, ..DecodeStats::default() };
        let seed_index = match self.seed {
            Some(seed) => self.index_seed(seed)?,
            None => SeedIndex::default(),
        };
        let mut bad: HashMap<(usize, usize), ()> = HashMap::new();
        let mut hasher = blake3::Hasher::new();
        // About one segment per window: enough to keep both cores busy, little
        // enough for a device (a window's bytes are held about twice).
        let budget = (self.manifest.params().segment_size as u64).clamp(4 << 20, 16 << 20);
        // A window set by the caller is a hard limit (a window may then end mid-segment).
        let (budget, cap) = match self.window {
            Some(w) => (w, w),
            None => (budget, 4 * budget),
        };
        // The table is read a run at a time (a page, for a paged table):
        // only the entries of the window and the run after it are held.
        let mut ahead: std::collections::VecDeque<ChunkEntry> = std::collections::VecDeque::new();
        let mut read = 0u64;
        let mut refill = |ahead: &mut std::collections::VecDeque<ChunkEntry>| -> Result<()> {
            if ahead.is_empty() && read < count {
                let run = self.contents.read_chunks(read)?;
                if run.is_empty() {
                    return Err(Error::ManifestMalformed(format!("the chunk table ends at chunk {read} of {count}")));
                }
                read += run.len() as u64;
                ahead.extend(run);
            }
            Ok(())
        };
        let mut first = 0u64;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            refill(&mut ahead)?;
            if ahead.is_empty() {
                break;
            }
            // A window: chunks up to the budget, ending where the segment changes.
            let mut window: Vec<ChunkEntry> = Vec::new();
            let mut starts: Vec<u64> = Vec::new();
            let mut size = 0u64;
            while let Some(c) = ahead.pop_front() {
                // Contents opened from another manifest must not index past its segments.
                if !c.fits(self.manifest) {
                    return Err(Error::ManifestMalformed(format!(
                        "chunk {} lies outside the manifest's segments: these contents belong to another manifest",
                        first + window.len() as u64
                    )));
                }
                starts.push(stats.object_len + size);
                size += u64::from(c.plain_len);
                let seg = c.segment;
                window.push(c);
                refill(&mut ahead)?;
                let seg_changes = ahead.front().is_none_or(|n| n.segment != seg);
                if (size >= budget && seg_changes) || size >= cap {
                    break;
                }
            }
            if stats.object_len + size > self.contents.object_len() {
                return Err(Error::ManifestMalformed(format!(
                    "the chunks run past the object's length of {} bytes",
                    self.contents.object_len()
                )));
            }
            buf.clear();
            buf.resize(size as usize, 0);
            self.decode_window(&window, first, &starts, &seed_index, &mut bad, &mut buf, &mut stats)?;
            rayon::join(|| hasher.update(&buf), || out.write_all(&buf))
                .1
                .map_err(|e| Error::io("writing output", e))?;
            stats.object_len += size;
            first += window.len() as u64;
            progress(stats.object_len);
        }
        if stats.object_len != self.contents.object_len() {
            return Err(Error::ManifestMalformed(format!(
                "the chunks add up to {} bytes, the object's length is {}",
                stats.object_len,
                self.contents.object_len()
            )));
        }
        let actual = hasher.finalize();
        if *actual.as_bytes() != self.contents.object_hash() {
            return Err(Error::ObjectHashMismatch {
                expected: blake3::Hash::from_bytes(self.contents.object_hash()).to_hex().to_string(),
                actual: actual.to_hex().to_string(),
            });
        }
        Ok(stats)
    }

    fn index_seed(&self, seed: &dyn Seed) -> Result<SeedIndex> {
        struct SeedReader<'s> {
            seed: &'s dyn Seed,
            pos: u64,
        }
        impl std::io::Read for SeedReader<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = (self.seed.size() - self.pos).min(buf.len() as u64) as usize;
                self.seed.read_at(self.pos, &mut buf[..n])?;
                self.pos += n as u64;
                Ok(n)
            }
        }
        let key = self.contents.match_key();
        let mut index = Vec::new();
        let mut stream = ChunkStream::new(SeedReader { seed, pos: 0 }, self.manifest.params().chunking, 16 << 20);
        let mut base = 0u64;
        loop {
            let (data, ranges) = stream.next_window().map_err(|e| Error::io("reading the seed", e))?;
            if ranges.is_empty() {
                break;
            }
            let tags: Vec<[u8; 16]> = ranges.par_iter().map(|r| match_tag(&key, &digest(&data[r.clone()]))).collect();
            for (r, t) in ranges.iter().zip(tags) {
                index.push(SeedIndex::entry(&t, base + r.start as u64, r.len() as u32));
            }
            let end = ranges.last().map_or(0, |r| r.end);
            base += end as u64;
            stream.consume(end);
        }
        index.sort_unstable();
        Ok(SeedIndex(index))
    }

    /// Decode `chunks` (chunk `first_chunk` on, at object offsets `starts`) into `buf`.
    #[allow(clippy::too_many_arguments)]
    fn decode_window(
        &self,
        chunks: &[ChunkEntry],
        first_chunk: u64,
        starts: &[u64],
        seed_index: &SeedIndex,
        bad: &mut HashMap<(usize, usize), ()>,
        buf: &mut [u8],
        stats: &mut DecodeStats,
    ) -> Result<()> {
        // Each chunk's place in the window.
        let mut outs: Vec<&mut [u8]> = Vec::with_capacity(chunks.len());
        let mut rest = buf;
        for c in chunks {
            let (a, b) = rest.split_at_mut(c.plain_len as usize);
            outs.push(a);
            rest = b;
        }
        // Chunks the seed has are copied and checked first; one that no longer
        // matches (the seed file changed, a disk lied) is fetched like the rest.
        let key = self.contents.match_key();
        let from_seed: Vec<bool> = match self.seed {
            None => vec![false; chunks.len()],
            Some(seed) => outs
                .par_iter_mut()
                .zip(chunks)
                .map(|(out, c)| {
                    // A short tag may match another chunk: every candidate is
                    // read and checked against the whole tag.
                    seed_index
                        .candidates(&c.tag, c.plain_len)
                        .any(|off| seed.read_at(off, out).is_ok() && match_tag(&key, &digest(out)) == c.tag)
                })
                .collect(),
        };
        for (c, s) in chunks.iter().zip(&from_seed) {
            if *s {
                stats.seed_chunks += 1;
                stats.seed_bytes += u64::from(c.plain_len);
            }
        }
        let wants = self.wants(chunks, &from_seed);
        let mut got: HashMap<(usize, usize), Got> = HashMap::new();
        // First ask every data shard for its own ranges, then rebuild what failed.
        let first = self.fetch_all(&wants, bad, stats);
        let mut failed: Vec<Want> = Vec::new();
        for (w, r) in wants.into_iter().zip(first) {
            match r {
                Ok(g) => {
                    got.insert((w.segment, w.shard), g);
                }
                Err(p) => {
                    bad.insert((w.segment, w.shard), ());
                    stats.problems.extend(p);
                    failed.push(w);
                }
            }
        }
        // Failed data shards of one segment are rebuilt together: one read of
        // k other shards over the union of their ranges serves them all.
        let mut by_segment: BTreeMap<usize, Vec<Want>> = BTreeMap::new();
        for w in failed {
            by_segment.entry(w.segment).or_default().push(w);
        }
        for (segment, failed) in by_segment {
            // For the error, if any: the first chunk that needs bytes of a failed shard.
            let shard_len = self.manifest.segments()[segment].shard_len();
            let needs = |(c, seed): (&ChunkEntry, &bool)| {
                let (a, b) = (c.offset() / shard_len, (c.offset() + u64::from(c.stored_len) - 1) / shard_len);
                !*seed && c.segment() == segment && failed.iter().any(|w| (a..=b).contains(&(w.shard as u64)))
            };
            let p = chunks.iter().zip(&from_seed).position(needs).unwrap_or(0);
            let q = chunks.iter().zip(&from_seed).rposition(needs).unwrap_or(p);
            let end = starts[q] + u64::from(chunks[q].plain_len);
            let span = (first_chunk as usize + p..=first_chunk as usize + q, starts[p]..end);
            let rebuilt = self.rebuild(segment, &failed, &got, span, bad, stats)?;
            for (shard, g) in rebuilt {
                got.insert((segment, shard), g);
            }
        }

        // Decrypt every other chunk into its place.
        outs.into_par_iter().enumerate().filter(|(n, _)| !from_seed[*n]).try_for_each(|(n, out)| {
            let c = &chunks[n];
            let corrupt = |reason: String| Error::ChunkCorrupt {
                chunk: first_chunk as usize + n,
                segment: c.segment(),
                offset: c.offset(),
                reason,
            };
            let stored = self
                .stored_bytes(c.segment(), c.offset(), u64::from(c.stored_len), &got)
                .ok_or_else(|| corrupt("its bytes were not fetched (internal error)".to_string()))?;
            crate::seal::open_into(&c.key, &stored, out).map_err(corrupt)
        })
    }

    /// Ranges of data shards the chunks not in the seed need, per (segment, shard).
    fn wants(&self, chunks: &[ChunkEntry], from_seed: &[bool]) -> Vec<Want> {
        // Ranges of data shards the others need, per (segment, shard).
        let mut wants: BTreeMap<(usize, usize), Vec<Range<u64>>> = BTreeMap::new();
        for (c, s) in chunks.iter().zip(from_seed) {
            if *s {
                continue;
            }
            let seg = &self.manifest.segments()[c.segment()];
            let shard_len = seg.shard_len();
            let (mut a, b) = (c.offset(), c.offset() + u64::from(c.stored_len));
            while a < b {
                let shard = (a / shard_len) as usize;
                let end = b.min((shard as u64 + 1) * shard_len);
                let base = shard as u64 * shard_len;
                wants.entry((c.segment(), shard)).or_default().push(a - base..end - base);
                a = end;
            }
        }
        wants.into_iter().map(|((segment, shard), ranges)| Want { segment, shard, ranges: merge(ranges) }).collect()
    }

    /// The stored bytes of a chunk, from the verified ranges of its data shards.
    fn stored_bytes<'g>(
        &self,
        segment: usize,
        offset: u64,
        len: u64,
        got: &'g HashMap<(usize, usize), Got>,
    ) -> Option<std::borrow::Cow<'g, [u8]>> {
        let shard_len = self.manifest.segments()[segment].shard_len();
        let (first, last) = (offset / shard_len, (offset + len - 1) / shard_len);
        if first == last {
            // The usual case: the chunk lies in one shard, and is borrowed.
            let base = first * shard_len;
            let pieces = got.get(&(segment, first as usize))?;
            return slice_of(pieces, &(offset - base..offset - base + len)).map(std::borrow::Cow::Borrowed);
        }
        let mut out = Vec::with_capacity(len as usize);
        let (mut a, b) = (offset, offset + len);
        while a < b {
            let shard = a / shard_len;
            let base = shard * shard_len;
            let end = b.min(base + shard_len);
            out.extend_from_slice(slice_of(got.get(&(segment, shard as usize))?, &(a - base..end - base))?);
            a = end;
        }
        Some(std::borrow::Cow::Owned(out))
    }

    /// Ask for several wants in parallel; each answer verified.
    fn fetch_all(
        &self,
        wants: &[Want],
        bad: &HashMap<(usize, usize), ()>,
        stats: &mut DecodeStats,
    ) -> Vec<std::result::Result<Got, Option<ShardProblem>>> {
        // A shard found bad earlier in this decode is not asked again, nor reported again.
        let asked: Vec<&Want> = wants.iter().filter(|w| !bad.contains_key(&(w.segment, w.shard))).collect();
        let reqs: Vec<ShardRequest<'_>> = asked
            .iter()
            .map(|w| {
                let seg = &self.manifest.segments()[w.segment];
                ShardRequest {
                    segment: w.segment,
                    shard: w.shard,
                    cid: &seg.shards()[w.shard],
                    shard_len: seg.shard_len(),
                    ranges: &w.ranges,
                }
            })
            .collect();
        let answers = self.source.fetch_many(&reqs);
        // Checked on all cores.
        let checked: Vec<(u64, std::result::Result<Got, ShardProblem>)> =
            reqs.par_iter().zip(answers).map(|(req, answer)| self.check(req, answer)).collect();
        // In the order asked: the wants not skipped as bad.
        let mut checked = checked.into_iter();
        wants
            .iter()
            .map(|w| {
                if bad.contains_key(&(w.segment, w.shard)) {
                    return Err(None);
                }
                let (n, r) = checked.next().ok_or(None)?;
                stats.requests += 1;
                stats.fetched_bytes += n;
                r.map_err(Some)
            })
            .collect()
    }

    fn problem(&self, segment: usize, shard: usize, reason: String) -> ShardProblem {
        let cid = self.manifest.segments()[segment].shards()[shard].to_string();
        ShardProblem { segment, shard, cid, reason }
    }

    /// Verify one answer against the shard's CID.
    fn check(
        &self,
        req: &ShardRequest<'_>,
        answer: std::result::Result<Piece, SourceError>,
    ) -> (u64, std::result::Result<Got, ShardProblem>) {
        let (cid, shard_len) = (req.cid, req.shard_len);
        let fail = |reason: String| self.problem(req.segment, req.shard, reason);
        let reject = |reason: String| {
            self.source.rejected(req, &reason);
            fail(reason)
        };
        match answer {
            Err(SourceError::Missing) => (0, Err(fail("missing".to_string()))),
            Err(SourceError::Failed(why)) => (0, Err(fail(why))),
            Ok(Piece::Whole(bytes)) => {
                let n = bytes.len() as u64;
                if n != shard_len {
                    return (n, Err(reject(format!("whole shard is {n} bytes, expected {shard_len}"))));
                }
                if Cid::of_raw(&bytes) != *cid {
                    return (n, Err(reject("bytes do not match the CID".to_string())));
                }
                // Kept whole: the wanted ranges are sliced out of it when used.
                (n, Ok(vec![(0..shard_len, bytes)]))
            }
            Ok(Piece::Proof(proof_bytes)) => {
                let n = proof_bytes.len() as u64;
                if n > proof::max_proof_len(shard_len, req.ranges) {
                    return (n, Err(reject(format!("proof of {n} bytes is longer than the ranges can need"))));
                }
                match proof::verify(cid, shard_len, req.ranges, &proof_bytes) {
                    Ok(bytes) => (n, Ok(req.ranges.iter().cloned().zip(bytes).collect())),
                    Err(e) => (n, Err(reject(e.to_string()))),
                }
            }
        }
    }

    /// Rebuild the wanted ranges of failed data shards of one segment from the
    /// same ranges of any k other shards.
    fn rebuild(
        &self,
        segment: usize,
        failed: &[Want],
        have: &HashMap<(usize, usize), Got>,
        // The chunks that need this segment, and their object bytes (for errors).
        (chunks, bytes): (std::ops::RangeInclusive<usize>, Range<u64>),
        bad: &mut HashMap<(usize, usize), ()>,
        stats: &mut DecodeStats,
    ) -> Result<Vec<(usize, Got)>> {
        let seg = &self.manifest.segments()[segment];
        let k = seg.data_shards();
        let n = seg.shards().len();
        let coder = Coder::new(k as u8, (n - k) as u8)?;
        let union = merge(failed.iter().flat_map(|w| w.ranges.iter().cloned()).collect());
        let is_failed = |s: usize| failed.iter().any(|w| w.shard == s);
        // Parity first, then the healthy data shards.
        let candidates: Vec<usize> =
            (k..n).chain(0..k).filter(|&s| !is_failed(s) && !bad.contains_key(&(segment, s))).collect();
        // Healthy data shards already read for their own chunks serve again
        // where their ranges cover the union: no second read.
        let mut good: Vec<(usize, Got)> = Vec::new();
        for s in 0..k {
            if good.len() == k || is_failed(s) {
                continue;
            }
            let Some(pieces) = have.get(&(segment, s)) else { continue };
            if union.iter().all(|u| slice_of(pieces, u).is_some()) {
                good.push((s, pieces.clone()));
            }
        }
        let candidates: Vec<usize> = candidates.into_iter().filter(|c| !good.iter().any(|(s, _)| s == c)).collect();
        let mut next = 0;
        while good.len() < k && next < candidates.len() {
            let take = (k - good.len()).min(candidates.len() - next);
            let batch: Vec<Want> = candidates[next..next + take]
                .iter()
                .map(|&s| Want { segment, shard: s, ranges: union.clone() })
                .collect();
            next += take;
            for (want, r) in batch.iter().zip(self.fetch_all(&batch, bad, stats)) {
                match r {
                    Ok(g) => good.push((want.shard, g)),
                    Err(p) => {
                        bad.insert((want.segment, want.shard), ());
                        stats.problems.extend(p);
                    }
                }
            }
        }
        if good.len() < k {
            let problems = stats.problems.iter().filter(|p| p.segment == segment).cloned().collect();
            return Err(Error::Unrecoverable {
                segment,
                chunk: *chunks.start(),
                last_chunk: *chunks.end(),
                offset: bytes.start,
                end: bytes.end,
                good: good.len(),
                needed: k,
                problems,
            });
        }
        // Each union range is its own set of codewords; rebuild them on all cores.
        let rebuilt: Vec<Result<Vec<Option<Vec<u8>>>>> = (0..union.len())
            .into_par_iter()
            .map(|ri| {
                let mut pieces: Vec<Option<Vec<u8>>> = vec![None; n];
                for (s, g) in &good {
                    let bytes = slice_of(g, &union[ri])
                        .ok_or_else(|| Error::InvalidParams("internal: piece lacks a range".to_string()))?;
                    pieces[*s] = Some(bytes.to_vec());
                }
                coder.rebuild(&mut pieces, true)?;
                Ok(pieces)
            })
            .collect();
        let rebuilt: Vec<Vec<Option<Vec<u8>>>> = rebuilt.into_iter().collect::<Result<_>>()?;
        stats.rebuilt_ranges += (union.len() * failed.len()) as u64;
        let mut out = Vec::with_capacity(failed.len());
        for w in failed {
            let mut g: Got = Vec::with_capacity(w.ranges.len());
            for r in &w.ranges {
                let ri = union
                    .iter()
                    .position(|u| u.start <= r.start && r.end <= u.end)
                    .ok_or_else(|| Error::InvalidParams("internal: range outside its union".to_string()))?;
                let u = &union[ri];
                let bytes = rebuilt[ri][w.shard]
                    .as_ref()
                    .ok_or_else(|| Error::InvalidParams("internal: rebuild left a gap".to_string()))?;
                g.push((r.clone(), bytes[(r.start - u.start) as usize..(r.end - u.start) as usize].to_vec()));
            }
            out.push((w.shard, g));
        }
        Ok(out)
    }
}

/// Sort and merge ranges that overlap or nearly touch (a proof rounds to 4 KiB anyway).
fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end + 4096 => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}
