//! One window of the object: which shard ranges it needs, fetching and
//! checking them (on a fetch thread), then rebuilding what failed, copying
//! from the seed and decrypting into place (on the decoding thread).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use super::{DecodeStats, Decoder, Piece, SeedIndex, ShardRequest, SourceError, merge};
use crate::address::Cid;
use crate::erasure::Coder;
use crate::error::{Error, Result, ShardProblem};
use crate::keys::{digest, match_tag};
use crate::manifest::ChunkEntry;
use crate::patch::PatchEntry;
use crate::proof::{self, Verified};

/// A run of chunks decoded together.
pub(super) struct Window {
    /// Index of its first chunk.
    pub(super) first: u64,
    pub(super) chunks: Vec<ChunkEntry>,
    /// Object offset of each chunk.
    pub(super) starts: Vec<u64>,
    /// Plaintext bytes.
    pub(super) size: u64,
}

/// One fetch the decoder plans: ranges of one shard.
#[derive(Debug, Clone)]
struct Want {
    segment: usize,
    shard: usize,
    ranges: Vec<Range<u64>>,
}

/// Verified bytes of a shard.
enum Held {
    /// Ranges proven in the answer's own buffer.
    Proven(Verified),
    /// A whole shard, in the answer's own buffer.
    Whole(Vec<u8>),
    /// A rebuilt range: the shard bytes it covers.
    Rebuilt(Range<u64>, Vec<u8>),
}

impl Held {
    fn get(&self, want: &Range<u64>) -> Option<&[u8]> {
        let within = |r: &Range<u64>, b: &'_ [u8]| -> Option<()> {
            (r.start <= want.start && want.end <= r.end && b.len() as u64 == r.end - r.start).then_some(())
        };
        match self {
            Held::Proven(v) => v.get(want),
            Held::Whole(b) => b.get(want.start as usize..want.end as usize),
            Held::Rebuilt(r, b) => {
                within(r, b)?;
                b.get((want.start - r.start) as usize..(want.end - r.start) as usize)
            }
        }
    }

    /// The source's buffer, to give back (rebuilt bytes are the decoder's own).
    fn into_buffer(self) -> Option<Vec<u8>> {
        match self {
            Held::Proven(v) => Some(v.into_buffer()),
            Held::Whole(b) => Some(b),
            Held::Rebuilt(..) => None,
        }
    }
}

/// A short tag as the seed's index takes it (it looks at the first 8 bytes).
fn short(tag: &[u8; 8]) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(tag);
    t
}

/// Patch failures named in the stats (the rest are only counted by their chunks being fetched).
const MAX_FALLBACKS_REPORTED: usize = 32;

/// Times an answer that failed its proof is asked for again (from another
/// holder, where the source has one) before its shard counts as bad.
const ASK_AGAIN: usize = 3;

/// Shards found missing or false in this decode, with why: not asked
/// again, and reported once.
pub(super) type Bad = Mutex<BTreeMap<(usize, usize), ShardProblem>>;

/// What is held per (segment, shard).
type Got = HashMap<(usize, usize), Vec<Held>>;

/// The bytes of `want` in any of `held`.
fn slice_of<'g>(held: &'g [Held], want: &Range<u64>) -> Option<&'g [u8]> {
    held.iter().find_map(|h| h.get(want))
}

/// A window with its first fetch done.
pub(super) struct Fetched {
    window: Window,
    /// Chunks the seed's index names (copied and checked when decoded).
    seeded: Vec<bool>,
    /// Chunks to be made from a patch (its bases all named by the seed's index).
    patched: Vec<Option<PatchEntry>>,
    got: Got,
    failed: Vec<Want>,
    /// Requests and bytes of the fetch.
    stats: DecodeStats,
}

impl Fetched {
    pub(super) fn size(&self) -> usize {
        self.window.size as usize
    }

    /// The object offset of its first byte.
    pub(super) fn offset(&self) -> u64 {
        self.window.starts.first().copied().unwrap_or(0)
    }
}

impl DecodeStats {
    fn absorb(&mut self, other: DecodeStats) {
        self.fetched_bytes += other.fetched_bytes;
        self.requests += other.requests;
        self.rebuilt_ranges += other.rebuilt_ranges;
    }
}

impl Decoder<'_> {
    /// Ask for the ranges of the window's chunks the seed does not name.
    pub(super) fn fetch_window(&self, window: Window, seeds: &SeedIndex, bad: &Bad) -> Fetched {
        let seeded: Vec<bool> = match self.seed {
            None => vec![false; window.chunks.len()],
            Some(_) => window.chunks.iter().map(|c| seeds.candidates(&c.tag, c.plain_len).next().is_some()).collect(),
        };
        let patched: Vec<Option<PatchEntry>> = match (self.seed, self.patches) {
            (Some(_), Some(table)) => (0..window.chunks.len())
                .map(|i| {
                    let p = table.get(window.first + i as u64).filter(|_| !seeded[i])?;
                    p.bases.iter().all(|b| seeds.candidates(&short(&b.tag), b.len).next().is_some()).then(|| p.clone())
                })
                .collect(),
            _ => vec![None; window.chunks.len()],
        };
        let skip: Vec<bool> = seeded.iter().zip(&patched).map(|(s, p)| *s || p.is_some()).collect();
        let mut stats = DecodeStats::default();
        let mut got = Got::new();
        let mut spans = self.spans(&window.chunks, &skip);
        spans.extend(
            patched.iter().flatten().map(|p| (p.segment as usize, u64::from(p.offset), u64::from(p.stored_len))),
        );
        let failed = self.fetch_into(self.wants_of(spans), bad, &mut got, &mut stats);
        Fetched { window, seeded, patched, got, failed, stats }
    }

    /// Make one chunk from its patch: the bases read from the seed (each
    /// checked by its tag), the patch opened and applied into `out`, the
    /// result checked against the chunk's tag.
    fn apply_patch(
        &self,
        p: &PatchEntry,
        c: &ChunkEntry,
        seeds: &SeedIndex,
        got: &Got,
        out: &mut [u8],
    ) -> std::result::Result<(), String> {
        let seed = self.seed.ok_or_else(|| "no seed".to_string())?;
        let key = self.contents.match_key();
        let mut prefix = vec![0u8; p.bases.iter().map(|b| b.len as usize).sum()];
        let mut at = 0;
        for (n, b) in p.bases.iter().enumerate() {
            let slot = &mut prefix[at..at + b.len as usize];
            let found = seeds
                .candidates(&short(&b.tag), b.len)
                .any(|off| seed.read_at(off, slot).is_ok() && match_tag(&key, &digest(slot))[..8] == b.tag);
            if !found {
                return Err(format!("its base {n} is no longer in the seed"));
            }
            at += b.len as usize;
        }
        let stored = self
            .stored_bytes(p.segment as usize, u64::from(p.offset), u64::from(p.stored_len), got)
            .ok_or_else(|| "the patch could not be fetched".to_string())?;
        crate::patch::apply(&c.key, &c.tag, &p.bases, &stored, &prefix, out)?;
        if match_tag(&key, &digest(out)) != c.tag {
            return Err("the patched chunk does not match its tag".to_string());
        }
        Ok(())
    }

    /// Fetch `wants` into `got`; the wants that failed.
    fn fetch_into(&self, wants: Vec<Want>, bad: &Bad, got: &mut Got, stats: &mut DecodeStats) -> Vec<Want> {
        let answers = self.fetch_all(&wants, bad, stats);
        let mut failed = Vec::new();
        for (w, r) in wants.into_iter().zip(answers) {
            match r {
                Ok(held) => got.entry((w.segment, w.shard)).or_default().push(held),
                Err(()) => failed.push(w),
            }
        }
        failed
    }

    /// Copy the seed's chunks, fetch what it no longer has, rebuild what
    /// failed, and decrypt the rest into `buf` (exactly the window's size).
    pub(super) fn finish_window(
        &self,
        fetched: Fetched,
        seeds: &SeedIndex,
        bad: &Bad,
        buf: &mut [u8],
        stats: &mut DecodeStats,
    ) -> Result<()> {
        let Fetched { window, seeded, patched, mut got, failed, stats: s } = fetched;
        stats.absorb(s);
        let Window { first, chunks, starts, .. } = window;
        let mut outs: Vec<&mut [u8]> = Vec::with_capacity(chunks.len());
        let mut rest = buf;
        for c in &chunks {
            let (a, b) = rest.split_at_mut(c.plain_len as usize);
            outs.push(a);
            rest = b;
        }
        // Patch ranges that could not be fetched are not rebuilt: the chunk is fetched instead.
        // (A segment some chunk of the window is fetched from is rebuilt whatever a table says.)
        let fetched_from: std::collections::HashSet<usize> = chunks
            .iter()
            .zip(seeded.iter().zip(&patched))
            .filter(|(_, (s, p))| !**s && p.is_none())
            .map(|(c, _)| c.segment())
            .collect();
        let (_, mut failed): (Vec<Want>, Vec<Want>) = failed
            .into_iter()
            .partition(|w| self.patch_segments.contains(&w.segment) && !fetched_from.contains(&w.segment));
        // Chunks the seed has are copied and checked; one that no longer
        // matches (the seed file changed, a disk lied) is fetched now.
        let key = self.contents.match_key();
        let from_seed: Vec<bool> = match self.seed {
            None => vec![false; chunks.len()],
            Some(seed) => outs
                .par_iter_mut()
                .zip(&chunks)
                .zip(&seeded)
                .map(|((out, c), named)| {
                    // A short tag may match another chunk: every candidate is
                    // read and checked against the whole tag.
                    *named
                        && seeds
                            .candidates(&c.tag, c.plain_len)
                            .any(|off| seed.read_at(off, out).is_ok() && match_tag(&key, &digest(out)) == c.tag)
                })
                .collect(),
        };
        // Chunks with a patch are made from it; one that fails is fetched now.
        let patch_results: Vec<Option<std::result::Result<(), String>>> = outs
            .par_iter_mut()
            .enumerate()
            .map(|(n, out)| patched[n].as_ref().map(|p| self.apply_patch(p, &chunks[n], seeds, &got, out)))
            .collect();
        let from_patch: Vec<bool> = patch_results.iter().map(|r| matches!(r, Some(Ok(())))).collect();
        for (n, r) in patch_results.into_iter().enumerate() {
            if let Some(Err(why)) = r
                && stats.patch_fallbacks.len() < MAX_FALLBACKS_REPORTED
            {
                stats.patch_fallbacks.push(format!("chunk {}: {why}; fetched whole", first + n as u64));
            }
        }
        for ((c, s), p) in chunks.iter().zip(&from_seed).zip(&from_patch) {
            if *s {
                stats.seed_chunks += 1;
                stats.seed_bytes += u64::from(c.plain_len);
            }
            if *p {
                stats.patched_chunks += 1;
                stats.patched_bytes += u64::from(c.plain_len);
            }
        }
        let from_seed: Vec<bool> = from_seed.iter().zip(&from_patch).map(|(s, p)| *s || *p).collect();
        let missed: Vec<bool> = seeded
            .iter()
            .zip(&patched)
            .zip(&from_seed)
            .map(|((named, p), had)| (*named || p.is_some()) && !had)
            .collect();
        if missed.iter().any(|m| *m) {
            let skip: Vec<bool> = missed.iter().map(|m| !m).collect();
            failed.extend(self.fetch_into(self.wants_of(self.spans(&chunks, &skip)), bad, &mut got, stats));
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
            let span = (first as usize + p..=first as usize + q, starts[p]..end);
            let rebuilt = self.rebuild(segment, &failed, &got, span, bad, stats)?;
            for (shard, held) in rebuilt {
                got.entry((segment, shard)).or_default().extend(held);
            }
        }
        // Decrypt every other chunk into its place.
        let decrypted = outs.into_par_iter().enumerate().filter(|(n, _)| !from_seed[*n]).try_for_each(|(n, out)| {
            let c = &chunks[n];
            let corrupt = |reason: String| Error::ChunkCorrupt {
                chunk: first as usize + n,
                segment: c.segment(),
                offset: c.offset(),
                reason,
            };
            let stored = self
                .stored_bytes(c.segment(), c.offset(), u64::from(c.stored_len), &got)
                .ok_or_else(|| corrupt("its bytes were not fetched (internal error)".to_string()))?;
            crate::seal::open_into(&c.key, &stored, out).map_err(corrupt)
        });
        // The answers' buffers go back to the source for its next answers.
        for buf in got.into_values().flatten().filter_map(Held::into_buffer) {
            self.source.recycle(buf);
        }
        decrypted
    }

    /// Where the stored chunks not skipped lie: (segment, offset, length).
    fn spans(&self, chunks: &[ChunkEntry], skip: &[bool]) -> Vec<(usize, u64, u64)> {
        chunks
            .iter()
            .zip(skip)
            .filter(|(_, s)| !**s)
            .map(|(c, _)| (c.segment(), c.offset(), u64::from(c.stored_len)))
            .collect()
    }

    /// Ranges of data shards that stored bytes at `spans` need, per (segment, shard).
    fn wants_of(&self, spans: Vec<(usize, u64, u64)>) -> Vec<Want> {
        let mut wants: BTreeMap<(usize, usize), Vec<Range<u64>>> = BTreeMap::new();
        for (segment, offset, len) in spans {
            let seg = &self.manifest.segments()[segment];
            let shard_len = seg.shard_len();
            let (mut a, b) = (offset, offset + len);
            while a < b {
                let shard = (a / shard_len) as usize;
                let end = b.min((shard as u64 + 1) * shard_len);
                let base = shard as u64 * shard_len;
                wants.entry((segment, shard)).or_default().push(a - base..end - base);
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
        got: &'g Got,
    ) -> Option<std::borrow::Cow<'g, [u8]>> {
        let shard_len = self.manifest.segments()[segment].shard_len();
        let (first, last) = (offset / shard_len, (offset + len - 1) / shard_len);
        if first == last {
            // The usual case: the chunk lies in one shard, and is borrowed.
            let base = first * shard_len;
            let held = got.get(&(segment, first as usize))?;
            return slice_of(held, &(offset - base..offset - base + len)).map(std::borrow::Cow::Borrowed);
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

    /// Ask for several wants at once; each answer verified. A shard found bad
    /// earlier in this decode is not asked again; a shard found bad now is
    /// recorded in `bad` with why. An answer that fails its proof is asked
    /// for again while the source has someone else to ask (one lying holder
    /// does not make a shard that others hold bad), [`ASK_AGAIN`] times at most.
    fn fetch_all(&self, wants: &[Want], bad: &Bad, stats: &mut DecodeStats) -> Vec<std::result::Result<Held, ()>> {
        let lock = || bad.lock().unwrap_or_else(|p| p.into_inner());
        let skipped: Vec<bool> = {
            let bad = lock();
            wants.iter().map(|w| bad.contains_key(&(w.segment, w.shard))).collect()
        };
        let reqs: Vec<ShardRequest<'_>> = wants
            .iter()
            .zip(&skipped)
            .filter(|(_, s)| !**s)
            .map(|(w, _)| {
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
        let mut checked = self.fetch_checked(&reqs, stats);
        for _ in 0..ASK_AGAIN {
            let again: Vec<usize> = (0..checked.len()).filter(|&i| checked[i].1).collect();
            if again.is_empty() {
                break;
            }
            let retry: Vec<ShardRequest<'_>> = again.iter().map(|&i| reqs[i]).collect();
            for (i, c) in again.into_iter().zip(self.fetch_checked(&retry, stats)) {
                checked[i] = c;
            }
        }
        let mut checked = checked.into_iter();
        wants
            .iter()
            .zip(skipped)
            .map(|(w, skipped)| {
                if skipped {
                    return Err(());
                }
                let (r, _) = checked.next().ok_or(())?;
                r.map_err(|p| {
                    lock().entry((w.segment, w.shard)).or_insert(p);
                })
            })
            .collect()
    }

    /// Fetch `reqs` and check every answer (on all cores); each with whether
    /// it failed its proof and the source can ask someone else.
    fn fetch_checked(
        &self,
        reqs: &[ShardRequest<'_>],
        stats: &mut DecodeStats,
    ) -> Vec<(std::result::Result<Held, ShardProblem>, bool)> {
        let answers = self.source.fetch_many(reqs);
        let checked: Vec<(u64, std::result::Result<Held, ShardProblem>, bool)> =
            reqs.par_iter().zip(answers).map(|(req, answer)| self.check(req, answer)).collect();
        checked
            .into_iter()
            .map(|(n, r, again)| {
                stats.requests += 1;
                stats.fetched_bytes += n;
                (r, again)
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
    ) -> (u64, std::result::Result<Held, ShardProblem>, bool) {
        let (cid, shard_len) = (req.cid, req.shard_len);
        let fail = |reason: String| self.problem(req.segment, req.shard, reason);
        let reject = |n: u64, reason: String| {
            let again = self.source.rejected(req, &reason);
            (n, Err(fail(reason)), again)
        };
        match answer {
            Err(SourceError::Missing) => (0, Err(fail("missing".to_string())), false),
            Err(SourceError::Failed(why)) => (0, Err(fail(why)), false),
            Ok(Piece::Whole(bytes)) => {
                let n = bytes.len() as u64;
                if n != shard_len {
                    return reject(n, format!("whole shard is {n} bytes, expected {shard_len}"));
                }
                if Cid::of_raw(&bytes) != *cid {
                    return reject(n, "bytes do not match the CID".to_string());
                }
                // Kept whole: the wanted ranges are sliced out of it when used.
                (n, Ok(Held::Whole(bytes)), false)
            }
            Ok(Piece::Proof(proof_bytes)) => {
                let n = proof_bytes.len() as u64;
                if n > proof::max_proof_len(shard_len, req.ranges) {
                    return reject(n, format!("proof of {n} bytes is longer than the ranges can need"));
                }
                match proof::verify_owned(cid, shard_len, req.ranges, proof_bytes) {
                    Ok(v) => (n, Ok(Held::Proven(v)), false),
                    Err(e) => reject(n, e.to_string()),
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
        have: &Got,
        // The chunks that need this segment, and their object bytes (for errors).
        (chunks, bytes): (std::ops::RangeInclusive<usize>, Range<u64>),
        bad: &Bad,
        stats: &mut DecodeStats,
    ) -> Result<Vec<(usize, Vec<Held>)>> {
        let seg = &self.manifest.segments()[segment];
        let k = seg.data_shards();
        let n = seg.shards().len();
        let coder = Coder::new(k as u8, (n - k) as u8)?;
        let union = merge(failed.iter().flat_map(|w| w.ranges.iter().cloned()).collect());
        let is_failed = |s: usize| failed.iter().any(|w| w.shard == s);
        let is_bad = |s: usize| bad.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&(segment, s));
        // Healthy data shards already read for their own chunks serve again
        // where their ranges cover the union: no second read.
        let mut good: Vec<usize> = (0..k)
            .filter(|&s| !is_failed(s))
            .filter(|&s| have.get(&(segment, s)).is_some_and(|h| union.iter().all(|u| slice_of(h, u).is_some())))
            .take(k)
            .collect();
        // Then parity, then the other healthy data shards.
        let candidates: Vec<usize> =
            (k..n).chain(0..k).filter(|&s| !is_failed(s) && !is_bad(s) && !good.contains(&s)).collect();
        let mut fresh: HashMap<usize, Vec<Held>> = HashMap::new();
        let mut next = 0;
        while good.len() < k && next < candidates.len() {
            let take = (k - good.len()).min(candidates.len() - next);
            let batch: Vec<Want> = candidates[next..next + take]
                .iter()
                .map(|&s| Want { segment, shard: s, ranges: union.clone() })
                .collect();
            next += take;
            for (want, r) in batch.iter().zip(self.fetch_all(&batch, bad, stats)) {
                if let Ok(held) = r {
                    fresh.insert(want.shard, vec![held]);
                    good.push(want.shard);
                }
            }
        }
        if good.len() < k {
            let problems = bad
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|p| p.segment == segment)
                .cloned()
                .collect();
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
        let held =
            |s: usize| -> &[Held] { fresh.get(&s).or_else(|| have.get(&(segment, s))).map_or(&[], Vec::as_slice) };
        // Each union range is its own set of codewords; rebuild them on all cores.
        let rebuilt: Vec<Result<Vec<Option<Vec<u8>>>>> = (0..union.len())
            .into_par_iter()
            .map(|ri| {
                let mut pieces: Vec<Option<Vec<u8>>> = vec![None; n];
                for &s in &good {
                    let bytes = slice_of(held(s), &union[ri])
                        .ok_or_else(|| Error::InvalidParams("internal: piece lacks a range".to_string()))?;
                    pieces[s] = Some(bytes.to_vec());
                }
                coder.rebuild(&mut pieces, true)?;
                Ok(pieces)
            })
            .collect();
        let rebuilt: Vec<Vec<Option<Vec<u8>>>> = rebuilt.into_iter().collect::<Result<_>>()?;
        stats.rebuilt_ranges += (union.len() * failed.len()) as u64;
        let mut out = Vec::with_capacity(failed.len());
        for w in failed {
            let mut g = Vec::with_capacity(w.ranges.len());
            for r in &w.ranges {
                let ri = union
                    .iter()
                    .position(|u| u.start <= r.start && r.end <= u.end)
                    .ok_or_else(|| Error::InvalidParams("internal: range outside its union".to_string()))?;
                let u = &union[ri];
                let bytes = rebuilt[ri][w.shard]
                    .as_ref()
                    .ok_or_else(|| Error::InvalidParams("internal: rebuild left a gap".to_string()))?;
                g.push(Held::Rebuilt(
                    r.clone(),
                    bytes[(r.start - u.start) as usize..(r.end - u.start) as usize].to_vec(),
                ));
            }
            out.push((w.shard, g));
        }
        for buf in fresh.into_values().flatten().filter_map(Held::into_buffer) {
            self.source.recycle(buf);
        }
        Ok(out)
    }
}
