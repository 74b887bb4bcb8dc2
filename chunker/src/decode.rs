//! Decoding: a manifest, a read key and a shard source in, the exact object out.
//!
//! Chunks are taken in object order, a window at a time. For each window the
//! decoder works out which byte ranges of which data shards hold the stored
//! chunks it needs, asks the source for them (all at once, in parallel), and
//! checks every byte against the shard's CID: a whole shard by its BLAKE3
//! hash, a range by its proof, in the answer's own buffer. When every data
//! range arrives, no Reed-Solomon work is done. When a data shard is missing
//! or lies, the same ranges are read from other shards and rebuilt. Then
//! each chunk is decrypted, decompressed and checked, written in order, and
//! the object's BLAKE3 hash compared at the end.
//!
//! Windows are fetched ahead, each on a thread of its own that waits on the
//! source: while one window is decrypted and written the next is on its
//! way, so neither the network nor the cores wait for the other. How many
//! adapts: one more each time the decoder has to wait for the next window
//! (the network is the bound: a long round trip, a slow peer holding a
//! window back), up to the limit ([`Decoder::with_ahead`], four by default);
//! one fewer, down to two, after eight windows in a row were ready when the
//! decoder turned to them (the cores are the bound: more would only hold
//! memory). Memory is bounded by the windows ahead, not by the object.
//! Written to a stream ([`Decoder::decode`]) the windows go out in order,
//! so one waiting on a slow answer holds those behind it; written to a file
//! ([`Decoder::decode_at`]) each goes to its offset as soon as it is done,
//! and a new window is fetched in its place.
//!
//! With a seed (an older version of the object), the seed is cut with the
//! manifest's chunking and each chunk's match tag looked up: chunks the seed
//! holds are copied from it, and only the others are asked of the source.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::ops::Range;

use rayon::prelude::*;

use crate::address::Cid;
use crate::cdc::ChunkStream;
use crate::error::{Error, Result, ShardProblem};
use crate::keys::{digest, match_tag};
use crate::manifest::{ChunkEntry, Manifest};
use crate::patch::PatchTable;
use crate::table::ChunkTable;

mod window;

use window::{Bad, Fetched, Window};

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
    /// True if asking again may bring a good answer (the source has another
    /// holder of the shard to ask): the decoder asks again, a few times at
    /// most, before it counts the shard as bad.
    fn rejected(&self, req: &ShardRequest<'_>, reason: &str) -> bool {
        let _ = (req, reason);
        false
    }

    /// The buffer of an answer ([`Piece::Proof`]) that has been used up: a
    /// source may reuse it for a later answer instead of allocating anew.
    fn recycle(&self, buf: Vec<u8>) {
        drop(buf);
    }
}

/// A file a decoder writes windows into at their offsets, and reads back
/// to hash them in order ([`Decoder::decode_at`]). A file opened to
/// append will not do (Linux's `pwrite` appends there): the object's hash
/// then fails.
pub trait WriteAt: Send {
    /// Write all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()>;
    /// Fill `buf` from `offset` (bytes written before).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

#[cfg(unix)]
impl WriteAt for std::fs::File {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Where a decoding goes.
enum Out<'o> {
    /// A stream, in order.
    Stream(&'o mut (dyn Write + Send)),
    /// A file, each window at its offset as it is done.
    At(&'o mut dyn WriteAt),
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
    /// The most windows that were fetched at once (see [`Decoder::with_ahead`]).
    pub most_ahead: usize,
    /// Chunks made from a patch against chunks of the seed.
    pub patched_chunks: u64,
    /// Object bytes made from patches.
    pub patched_bytes: u64,
    /// Patches that could not be used (the chunk was fetched instead), and why.
    pub patch_fallbacks: Vec<String>,
}

/// Decodes one object.
pub struct Decoder<'a> {
    manifest: &'a Manifest,
    contents: &'a dyn ChunkTable,
    source: &'a dyn ShardSource,
    seed: Option<&'a dyn Seed>,
    patches: Option<&'a PatchTable>,
    /// The segments the patches lie in.
    patch_segments: std::collections::HashSet<usize>,
    window: Option<u64>,
    ahead: usize,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("segments", &self.manifest.segments().len()).finish_non_exhaustive()
    }
}

/// The most windows fetched at once, by default.
const AHEAD: usize = 4;
/// Windows fetched at once while the decoder never waits for one.
const AHEAD_LEAST: usize = 2;
/// Windows found ready in a row before one fewer is fetched ahead.
const SHRINK_AFTER: u32 = 8;

impl<'a> Decoder<'a> {
    /// A decoder for an opened manifest: its chunk table held whole
    /// ([`crate::Contents`]) or read a page at a time ([`crate::PagedContents`]).
    pub fn new(manifest: &'a Manifest, contents: &'a dyn ChunkTable, source: &'a dyn ShardSource) -> Self {
        Decoder {
            manifest,
            contents,
            source,
            seed: None,
            patches: None,
            patch_segments: Default::default(),
            window: None,
            ahead: AHEAD,
        }
    }

    /// Copy chunks from `seed` where it has them.
    pub fn with_seed(mut self, seed: &'a dyn Seed) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Make chunks the seed lacks from `patches` against chunks the seed
    /// has, where it has every base a patch names (checked by their tags as
    /// they are read); a patch that fails to apply or to match its chunk's
    /// tag costs the chunk itself, fetched, and is reported in
    /// [`DecodeStats::patch_fallbacks`]. Without a seed, patches are unused.
    pub fn with_patches(mut self, patches: &'a PatchTable) -> Self {
        self.patch_segments = patches.entries().iter().map(|e| e.segment as usize).collect();
        self.patches = Some(patches);
        self
    }

    /// Decode at most about `bytes` of the object at a time (default: about
    /// one segment). Smaller windows hold less memory (a device fetcher)
    /// and ask for fewer bytes per request.
    pub fn with_window(mut self, bytes: u64) -> Self {
        self.window = Some(bytes.max(256 << 10));
        self
    }

    /// Fetch up to `n` windows at once (1 to 8; default 4): one is decoded
    /// while the others are on their way. Two are in flight while the
    /// decoder finds each window ready when it turns to it; one more each
    /// time it has to wait, up to `n`. Memory grows with it (at most about
    /// `n + 1` windows held); a link with a long round trip needs it.
    pub fn with_ahead(mut self, n: usize) -> Self {
        self.ahead = n.clamp(1, 8);
        self
    }

    /// Write the object to `out`, in order. The caller must not treat `out`
    /// as final until this returns `Ok`: the whole-object hash is checked last.
    pub fn decode(&self, out: &mut (dyn Write + Send), progress: &mut dyn FnMut(u64)) -> Result<DecodeStats> {
        self.run(Out::Stream(out), progress)
    }

    /// Write the object into `out` (a file), each window at its offset as
    /// soon as its answers are in: a window that waits on a slow answer
    /// holds no other, and the next is fetched in its place. Memory is the
    /// same as [`Decoder::decode`]'s (the windows in flight). The object's
    /// hash is still taken in order: a window written ahead of the first
    /// one missing is read back from `out` when its turn comes (moments
    /// later; the page cache has it). `progress` gets the bytes written so
    /// far. The caller must not treat `out` as final until this returns `Ok`.
    pub fn decode_at(&self, out: &mut dyn WriteAt, progress: &mut dyn FnMut(u64)) -> Result<DecodeStats> {
        self.run(Out::At(out), progress)
    }

    fn run(&self, mut out: Out<'_>, progress: &mut dyn FnMut(u64)) -> Result<DecodeStats> {
        let mut stats = DecodeStats { chunks: self.contents.chunk_count(), ..DecodeStats::default() };
        let seed_index = match self.seed {
            Some(seed) => self.index_seed(seed)?,
            None => SeedIndex::default(),
        };
        let bad = Bad::default();
        let mut plan = Plan::new(self);
        let mut hasher = blake3::Hasher::new();
        // The object's bytes hashed so far; windows written past them (at
        // offsets), by offset, with their sizes.
        let (mut hashed, mut unhashed) = (0u64, BTreeMap::<u64, usize>::new());
        // The window's plaintext; reused, so only its growth is ever zeroed.
        let mut buf: Vec<u8> = Vec::new();
        let in_order = matches!(out, Out::Stream(_));
        let panicked = || Error::InvalidParams("a fetch thread panicked".to_string());
        std::thread::scope(|s| -> Result<()> {
            // Each fetch thread sends its window, by number, when it is done.
            let (tx, rx) = std::sync::mpsc::channel::<(u64, Option<Fetched>)>();
            let mut done: BTreeMap<u64, Fetched> = BTreeMap::new();
            // Windows started, and written.
            let (mut started, mut written) = (0u64, 0u64);
            let mut depth = AHEAD_LEAST.min(self.ahead);
            let (mut ready_streak, mut first) = (0, true);
            loop {
                while started - written < depth as u64 {
                    let Some(w) = plan.next()? else { break };
                    let (seed_index, bad, tx, n) = (&seed_index, &bad, tx.clone(), started);
                    s.spawn(move || {
                        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.fetch_window(w, seed_index, bad)
                        }));
                        let _ = tx.send((n, fetched.ok()));
                    });
                    started += 1;
                }
                let held = (started - written) as usize;
                stats.most_ahead = stats.most_ahead.max(held);
                if held == 0 {
                    break;
                }
                // In order, the next window; at offsets, any that is done.
                let ready = |done: &BTreeMap<u64, Fetched>| {
                    if in_order { done.contains_key(&written) } else { !done.is_empty() }
                };
                while let Ok((n, f)) = rx.try_recv() {
                    done.insert(n, f.ok_or_else(panicked)?);
                }
                // Waiting for the network: fetch further ahead. Not waiting
                // for several windows in a row: back towards the least,
                // holding less.
                if std::mem::take(&mut first) {
                    // The first window is always waited for: it says nothing.
                } else if ready(&done) {
                    ready_streak += 1;
                    if ready_streak >= SHRINK_AFTER {
                        depth = depth.saturating_sub(1).max(AHEAD_LEAST.min(self.ahead));
                        ready_streak = 0;
                    }
                } else {
                    depth = (depth + 1).min(self.ahead);
                    ready_streak = 0;
                }
                while !ready(&done) {
                    let (n, f) = rx.recv().map_err(|_| panicked())?;
                    done.insert(n, f.ok_or_else(panicked)?);
                }
                let fetched = if in_order { done.remove(&written) } else { done.pop_first().map(|(_, f)| f) };
                let fetched = fetched.ok_or_else(panicked)?;
                let (offset, size) = (fetched.offset(), fetched.size());
                if buf.len() > size {
                    buf.truncate(size);
                } else {
                    buf.resize(size, 0);
                }
                self.finish_window(fetched, &seed_index, &bad, &mut buf, &mut stats)?;
                let in_turn = offset == hashed;
                let wrote = match &mut out {
                    Out::Stream(w) => rayon::join(|| hasher.update(&buf), || w.write_all(&buf)).1,
                    Out::At(f) => rayon::join(|| in_turn.then(|| hasher.update(&buf)), || f.write_at(offset, &buf)).1,
                };
                wrote.map_err(|e| Error::io("writing output", e))?;
                if in_turn {
                    hashed += size as u64;
                } else {
                    unhashed.insert(offset, size);
                }
                // Windows written earlier, now in turn: read back and hashed.
                while let Some(len) = unhashed.remove(&hashed) {
                    let Out::At(f) = &mut out else { break };
                    buf.resize(len, 0);
                    f.read_at(hashed, &mut buf[..len]).map_err(|e| Error::io("reading the output back", e))?;
                    hasher.update(&buf[..len]);
                    hashed += len as u64;
                }
                written += 1;
                stats.object_len += size as u64;
                progress(stats.object_len);
            }
            Ok(())
        })?;
        if !unhashed.is_empty() || hashed != stats.object_len {
            return Err(Error::InvalidParams(format!(
                "internal: {hashed} of {} bytes hashed, windows left unhashed",
                stats.object_len
            )));
        }
        stats.problems = bad.into_inner().unwrap_or_else(|p| p.into_inner()).into_values().collect();
        if stats.object_len != self.contents.object_len() {
            return Err(Error::ManifestMalformed(format!(
                "the chunks add up to {} bytes, the object's length is {}",
                stats.object_len,
                self.contents.object_len()
            )));
        }
        let actual = hasher.finalize();
        // A selection of chunks has no hash of its own: each chunk was checked as it was opened.
        if self.contents.is_whole() && *actual.as_bytes() != self.contents.object_hash() {
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
}

/// Cuts the chunk table into windows, reading it a run (a page) at a time:
/// only the entries of the windows planned and the run after them are held.
struct Plan<'d> {
    decoder: &'d Decoder<'d>,
    ahead: VecDeque<ChunkEntry>,
    /// Entries read from the table so far.
    read: u64,
    /// The next window's first chunk and object offset.
    first: u64,
    offset: u64,
    budget: u64,
    cap: u64,
}

impl<'d> Plan<'d> {
    fn new(decoder: &'d Decoder<'d>) -> Self {
        // About one segment per window: enough to keep both cores busy, little
        // enough for a device (a window's bytes are held about twice).
        let budget = (decoder.manifest.params().segment_size as u64).clamp(4 << 20, 16 << 20);
        // A window set by the caller is a hard limit (a window may then end mid-segment).
        let (budget, cap) = match decoder.window {
            Some(w) => (w, w),
            None => (budget, 4 * budget),
        };
        Plan { decoder, ahead: VecDeque::new(), read: 0, first: 0, offset: 0, budget, cap }
    }

    fn refill(&mut self) -> Result<()> {
        let count = self.decoder.contents.chunk_count();
        if self.ahead.is_empty() && self.read < count {
            let run = self.decoder.contents.read_chunks(self.read)?;
            if run.is_empty() {
                return Err(Error::ManifestMalformed(format!(
                    "the chunk table ends at chunk {} of {count}",
                    self.read
                )));
            }
            self.read += run.len() as u64;
            self.ahead.extend(run);
        }
        Ok(())
    }

    /// The next window: chunks up to the budget, ending where the segment changes.
    fn next(&mut self) -> Result<Option<Window>> {
        self.refill()?;
        if self.ahead.is_empty() {
            return Ok(None);
        }
        let manifest = self.decoder.manifest;
        let mut chunks: Vec<ChunkEntry> = Vec::new();
        let mut starts: Vec<u64> = Vec::new();
        let mut size = 0u64;
        while let Some(c) = self.ahead.pop_front() {
            // Contents opened from another manifest must not index past its segments.
            if !c.fits(manifest) {
                return Err(Error::ManifestMalformed(format!(
                    "chunk {} lies outside the manifest's segments: these contents belong to another manifest",
                    self.first + chunks.len() as u64
                )));
            }
            starts.push(self.offset + size);
            size += u64::from(c.plain_len);
            let seg = c.segment;
            chunks.push(c);
            self.refill()?;
            let seg_changes = self.ahead.front().is_none_or(|n| n.segment != seg);
            if (size >= self.budget && seg_changes) || size >= self.cap {
                break;
            }
        }
        if self.offset + size > self.decoder.contents.object_len() {
            return Err(Error::ManifestMalformed(format!(
                "the chunks run past the object's length of {} bytes",
                self.decoder.contents.object_len()
            )));
        }
        let w = Window { first: self.first, chunks, starts, size };
        self.first += w.chunks.len() as u64;
        self.offset += size;
        Ok(Some(w))
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
