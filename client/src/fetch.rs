//! The one fetcher: an object by its manifest, from the peers a placement
//! names, into a verified file. Release images, backup snapshots and drive
//! files are all fetched this way.
//!
//! Shards are found from the placement (peer ids) and the DHT (their
//! addresses); the chunker's decoder asks for the byte ranges of the chunks
//! it needs, verifies each against the shard's CID, and rebuilds from other
//! shards what is missing, late or false. This module supplies the network
//! source and the files:
//!
//! - **Partial file** `OUT.part`, written in place at each chunk's offset and
//!   synced every 32 MiB. A rerun reads it back as a *seed*: chunks
//!   already there (checked by their keyed tag) are copied, not downloaded.
//!   Whatever a crash or power loss left in it is safe: a chunk that does not
//!   match is fetched again. A partial file of another object moves aside to
//!   `OUT.part.old` and serves as a read-only seed.
//! - **Seed** (an older version of the object): the same mechanism gives
//!   delta updates.
//! - **Manifest** `OUT.part.manifest`: kept on disk; its chunk table is read
//!   a sealed page (1024 chunks) at a time, so memory does not grow with the
//!   object (only the segment list does, about 60 KB per GiB).
//! - **Long tail**: [`PeerBook`] decides deadlines and which peers to skip.
//! - Only after the whole object matches the expected length and BLAKE3
//!   hash: fsync, rename to `OUT`, fsync the directory.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunker::{
    ChunkTable, Cid, Decoder, Manifest, PagedContents, PatchTable, Piece, ReadKey, Seed, Selection, ShardRequest,
    ShardSource, SourceError,
};
use net::wire::{Code, Request, Response};
use net::{Client, PeerId};
use proto::api::Placement;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::files::{sync_dir, with_suffix, write_atomic};
use crate::partial::{FileSpan, PartWriter, Seeds, open_part, part_path};
use crate::peers::{Ask, Dropped, PeerBook, PeerUse};
use crate::progress::Progress;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where the verified object goes (`OUT.part` beside it meanwhile).
    pub out: PathBuf,
    /// An older version whose chunks need not be downloaded.
    pub seed: Option<PathBuf>,
    /// Shortest wait before a range counts as late and is rebuilt elsewhere.
    pub min_late: Duration,
    /// Requests in flight at once.
    pub parallel: usize,
    /// Object bytes decoded at a time (memory is a few times this).
    pub window: u64,
    /// The most windows fetched at once: one is decoded while the others
    /// arrive; two while the next is always ready, more while the fetch
    /// waits on the network (memory is at most about `ahead + 1` windows).
    pub ahead: usize,
    /// Where to ask for the current placement when every holder a
    /// placement names for a shard fails (repair moved it since).
    pub placement_from: Option<Arc<dyn PlacementSource>>,
    /// The object's patch table, sealed (from a format 4 bundle): chunks
    /// the seed lacks are made from patches against chunks it has.
    pub patches: Option<Vec<u8>>,
}

impl FetchOptions {
    /// Defaults for `out`.
    pub fn new(out: PathBuf) -> Self {
        FetchOptions {
            out,
            seed: None,
            min_late: Duration::from_secs(3),
            parallel: 48,
            window: 2 << 20,
            ahead: 4,
            placement_from: None,
            patches: None,
        }
    }
}

/// Where a fetch gets a fresher placement (the SPN a format 3 bundle names).
pub trait PlacementSource: Send + Sync + std::fmt::Debug {
    /// The placement as it is now, or why not.
    fn current(&self) -> std::result::Result<Placement, String>;
}

/// Fresher placements asked for at most this often in one fetch.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// And at most this many times.
const MAX_REFRESHES: u32 = 30;

/// The object a fetch must end with: what its manifest must describe.
#[derive(Debug, Clone)]
pub struct Expect {
    /// What it is, for messages and the report (`product@version`).
    pub label: String,
    /// The manifest's CID.
    pub manifest: Cid,
    /// The object's length.
    pub length: u64,
    /// Its BLAKE3 hash.
    pub blake3: [u8; 32],
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The object's label.
    pub object: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its length.
    pub image_bytes: u64,
    /// Bytes received from peers (ranges and proofs).
    pub downloaded_bytes: u64,
    /// Bytes taken from the partial file of an interrupted fetch.
    pub resumed_bytes: u64,
    /// Bytes taken from the seed.
    pub seed_bytes: u64,
    /// Requests made.
    pub requests: u64,
    /// Ranges rebuilt with Reed-Solomon (missing, late or lying shards).
    pub rebuilt_ranges: u64,
    /// Peers that answered, with what each sent.
    pub peers_used: Vec<PeerUse>,
    /// Peers dropped, and why.
    pub dropped: Vec<Dropped>,
    /// Shards that could not be used, and why.
    pub problems: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// Of it, until the first range arrived: finding the peers (DHT
    /// lookups) and connecting to them; the rest is the transfer. 0 when
    /// nothing was downloaded.
    pub setup_seconds: f64,
    /// The most windows that were in flight at once: more than two means the
    /// decoder waited on the network and fetched further ahead.
    pub most_ahead: usize,
    /// Chunks made from patches against the seed's chunks.
    pub patched_chunks: u64,
    /// Image bytes made from patches.
    pub patched_bytes: u64,
    /// Patches that could not be used (the chunk was fetched instead), and why.
    pub patch_fallbacks: Vec<String>,
    /// Why the patch table was not used at all, when it was not.
    pub patches_unused: Option<String>,
}

/// Longest wait for one answer, whatever the median.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Shards from peers on the network. Called from decoder threads; each
/// request blocks its thread on the tokio runtime.
struct NetSource {
    client: Client,
    rt: tokio::runtime::Handle,
    holders: std::sync::RwLock<Holders>,
    /// The object's shards (what a fresher placement may add holders for);
    /// filled only when there is somewhere to ask.
    known: std::collections::HashSet<Cid>,
    refresh: Option<Arc<dyn PlacementSource>>,
    /// When a fresher placement was last asked for, and how many times.
    refreshed: tokio::sync::Mutex<(Option<Instant>, u32)>,
    /// Requests in flight at most.
    slots: tokio::sync::Semaphore,
    book: Mutex<PeerBook>,
    /// When the first range arrived.
    first: std::sync::OnceLock<Instant>,
}

impl NetSource {
    fn new(
        client: &Client,
        placement: Placement,
        known: std::collections::HashSet<Cid>,
        refresh: Option<Arc<dyn PlacementSource>>,
        parallel: usize,
        min_late: Duration,
    ) -> NetSource {
        let mut holders = Holders::default();
        holders.merge(placement, None);
        NetSource {
            client: client.clone(),
            rt: tokio::runtime::Handle::current(),
            holders: std::sync::RwLock::new(holders),
            known,
            refresh,
            refreshed: tokio::sync::Mutex::new((None, 0)),
            slots: tokio::sync::Semaphore::new(parallel.max(1)),
            book: Mutex::new(PeerBook::new(min_late, MAX_WAIT)),
            first: std::sync::OnceLock::new(),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, PeerBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn holders_of(&self, cid: &Cid) -> Vec<PeerId> {
        let h = self.holders.read().unwrap_or_else(|p| p.into_inner());
        h.of.get(cid).into_iter().flatten().filter_map(|&i| h.peers.get(i as usize).copied()).collect()
    }

    /// Ask for the current placement and add the holders it names (at most
    /// every [`REFRESH_EVERY`], [`MAX_REFRESHES`] times a fetch). Requests
    /// that need one while another is under way wait for it. Whether there
    /// may be holders that a request begun at `since` has not tried.
    async fn refresh(&self, since: Instant) -> bool {
        let Some(source) = self.refresh.clone() else { return false };
        let mut r = self.refreshed.lock().await;
        if r.0.is_some_and(|t| t >= since) {
            // One began after this request did: what it found is in.
            return true;
        }
        if r.1 >= MAX_REFRESHES || r.0.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return false;
        }
        *r = (Some(Instant::now()), r.1 + 1);
        let added = match tokio::task::spawn_blocking(move || source.current()).await {
            Ok(Ok(p)) => self.holders.write().unwrap_or_else(|p| p.into_inner()).merge(p, Some(&self.known)),
            Ok(Err(e)) => {
                tracing::warn!("asking for the current placement: {e}");
                0
            }
            Err(e) => {
                tracing::warn!("asking for the current placement: {e}");
                0
            }
        };
        tracing::info!(added, "asked for the current placement: {added} holder(s) more");
        added > 0
    }

    async fn fetch_async(&self, cid: Cid, ranges: Vec<std::ops::Range<u64>>) -> Result<Piece, SourceError> {
        let _slot = self.slots.acquire().await.map_err(|_| SourceError::Failed("fetch stopped".to_string()))?;
        let mut why = Vec::new();
        let mut tried: Vec<PeerId> = Vec::new();
        let since = Instant::now();
        for pass in 0..2 {
            let holding: Vec<PeerId> = self.holders_of(&cid).into_iter().filter(|p| !tried.contains(p)).collect();
            for peer in holding {
                tried.push(peer);
                let wait = match self.book().ask(&peer, Instant::now()) {
                    Ask::Yes(wait) => wait,
                    Ask::No(reason) => {
                        why.push(reason);
                        continue;
                    }
                };
                let mut started = Instant::now();
                let request = Request::Ranges { cid, ranges: ranges.clone() };
                let mut answer = tokio::time::timeout(wait, self.client.request(peer, request.clone())).await;
                let alive = |b: &PeerBook| {
                    started.checked_sub(wait).is_some_and(|t| b.heard_since(&peer, t))
                        && matches!(b.ask(&peer, Instant::now()), Ask::Yes(_))
                };
                if answer.is_err() && alive(&self.book()) {
                    // Late from a peer that answered within a deadline of
                    // being asked (and is not resting since): on a lossy
                    // link most often a connection waiting out
                    // retransmissions. Asked once more of it (on the direct
                    // channel the late connection is closed, so on another)
                    // before it rests and the range is rebuilt from k other
                    // shards, k times the bytes. A peer gone quiet for
                    // longer is not waited for twice.
                    tracing::debug!(%peer, "range late after {:.1} s; asked again", wait.as_secs_f64());
                    started = Instant::now();
                    answer = tokio::time::timeout(wait, self.client.request(peer, request)).await;
                }
                let (reason, lied) = match answer {
                    Ok(Ok(Response::Proof(p))) => {
                        tracing::debug!(%peer, bytes = p.len(), ms = started.elapsed().as_millis() as u64, "range answered");
                        self.first.get_or_init(Instant::now);
                        let mut book = self.book();
                        book.answered(peer, cid, &ranges, p.len() as u64, started.elapsed());
                        book.heard(peer, Instant::now());
                        return Ok(Piece::Proof(p));
                    }
                    Ok(Ok(Response::Error { code: Code::NotFound, message })) => {
                        why.push(format!("peer {peer} does not have it: {message}"));
                        continue;
                    }
                    Ok(Ok(Response::Error { code: Code::Busy, message })) => {
                        why.push(format!("peer {peer} busy: {message}"));
                        continue;
                    }
                    Ok(Ok(Response::Error { code, message })) => {
                        why.push(format!("peer {peer} refused ({code:?}): {message}"));
                        continue;
                    }
                    Ok(Ok(_)) => ("answered a range request with something else".to_string(), true),
                    Ok(Err(e)) => (e.to_string(), false),
                    Err(_) => (
                        format!("no answer within {:.1} s (late); rebuilt from other shards", wait.as_secs_f64()),
                        false,
                    ),
                };
                self.book().failed(peer, reason.clone(), lied, Instant::now());
                why.push(format!("peer {peer}: {reason}"));
            }
            // Every holder named failed, or none is: a fresher placement may
            // name others (repair moves shards after a bundle is made).
            if pass > 0 || !self.refresh(since).await {
                break;
            }
        }
        if why.is_empty() { Err(SourceError::Missing) } else { Err(SourceError::Failed(why.join("; "))) }
    }
}

impl ShardSource for NetSource {
    fn fetch(&self, req: &ShardRequest<'_>) -> Result<Piece, SourceError> {
        // Runs on a decoder thread: the future (and its timer) run inside the runtime.
        self.rt.block_on(self.fetch_async(*req.cid, req.ranges.to_vec()))
    }

    fn fetch_many(&self, reqs: &[ShardRequest<'_>]) -> Vec<Result<Piece, SourceError>> {
        // All in flight at once (up to the slot limit) from one thread.
        let asks = reqs.iter().map(|r| self.fetch_async(*r.cid, r.ranges.to_vec()));
        self.rt.block_on(futures::future::join_all(asks))
    }

    fn rejected(&self, req: &ShardRequest<'_>, reason: &str) -> bool {
        let holders = self.holders_of(req.cid);
        let mut book = self.book();
        if let Some(peer) = book.rejected(req.cid, req.ranges, reason, Instant::now()) {
            tracing::warn!(%peer, cid = %req.cid, "peer sent bytes that fail their proof: {reason}; dropped");
        }
        // Another holder that has not lied may have the true bytes.
        holders.iter().any(|p| !book.lied(p))
    }

    fn recycle(&self, buf: Vec<u8>) {
        net::recycle(buf);
    }
}

/// The files of one fetch to `OUT`.
struct Paths {
    out: PathBuf,
    part: PathBuf,
    manifest: PathBuf,
    /// Which object the partial file holds (its manifest CID).
    tag: PathBuf,
    /// A partial file of another object, moved aside as a seed.
    old: PathBuf,
}

impl Paths {
    fn of(out: PathBuf) -> Paths {
        let part = part_path(&out);
        Paths {
            manifest: with_suffix(&part, ".manifest"),
            tag: with_suffix(&part, ".cid"),
            old: with_suffix(&part, ".old"),
            part,
            out,
        }
    }
}

/// Write the manifest to its file (bounded) and check it describes `expect`.
fn check_manifest(paths: &Paths, manifest: impl Read, expect: &Expect, key: &ReadKey) -> Result<(Manifest, FileSpan)> {
    let limit = chunker::Limits::default().max_manifest_bytes as u64;
    let mut manifest = manifest.take(limit + 1);
    let written = File::create(&paths.manifest).and_then(|mut f| std::io::copy(&mut manifest, &mut f));
    written.map_err(Error::file("writing", &paths.manifest))?;
    let file = File::open(&paths.manifest).map_err(Error::file("opening", &paths.manifest))?;
    let whole = FileSpan::whole(file, &paths.manifest)?;
    let (manifest, at, len) = Manifest::read_public(&whole, &expect.manifest, &Default::default())?;
    let sealed = FileSpan { file: whole.file, start: at, len };
    let table = PagedContents::open(&manifest, &sealed, key)?;
    if table.object_len() != expect.length || table.object_hash()[..] != expect.blake3[..] {
        return Err(Error::Mismatch {
            label: expect.label.clone(),
            got_len: table.object_len(),
            got_hash: hex(&table.object_hash()),
            want_len: expect.length,
            want_hash: hex(&expect.blake3),
        });
    }
    drop(table);
    Ok((manifest, sealed))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Which peers hold which shards: the placement's text (CIDs and peer ids
/// as strings) as indices; the text is let go (it grows with the object).
#[derive(Debug, Default)]
struct Holders {
    peers: Vec<PeerId>,
    of: HashMap<Cid, Vec<u32>>,
}

impl Holders {
    /// Add what `placement` says (holders are added, never removed: a peer
    /// that lost a shard answers NotFound); only for shards in `known`, if
    /// given. Returns how many holders were added.
    fn merge(&mut self, placement: Placement, known: Option<&std::collections::HashSet<Cid>>) -> usize {
        let Placement { peers: names, shards } = placement;
        let mut at: HashMap<PeerId, u32> = self.peers.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let index: Vec<Option<u32>> = names
            .iter()
            .map(|p| {
                p.parse::<PeerId>().ok().map(|id| {
                    *at.entry(id).or_insert_with(|| {
                        self.peers.push(id);
                        self.peers.len() as u32 - 1
                    })
                })
            })
            .collect();
        let mut added = 0;
        for (cid, idx) in shards {
            let Ok(cid) = cid.parse::<Cid>() else { continue };
            if known.is_some_and(|k| !k.contains(&cid)) {
                continue;
            }
            let list = self.of.entry(cid).or_default();
            for i in idx.iter().filter_map(|&i| index.get(i as usize).copied().flatten()) {
                if !list.contains(&i) {
                    list.push(i);
                    added += 1;
                }
            }
        }
        added
    }
}

/// The partial file to write (a stale one of another object moved aside),
/// and every seed to read: the partial file, the old one, the given seed.
fn seeds(paths: &Paths, file: File, expect: &Expect, seed: Option<&PathBuf>) -> Result<(File, Seeds)> {
    let mut part_len = file.metadata().map_err(Error::file("reading", &paths.part))?.len();
    let mine = expect.manifest.to_string();
    let stale = part_len > 0 && std::fs::read_to_string(&paths.tag).map_or(true, |t| t.trim() != mine);
    let mut aside = None;
    let file = if stale {
        std::fs::rename(&paths.part, &paths.old).map_err(Error::file("moving aside", &paths.part))?;
        let fresh = open_part(&paths.part)?;
        aside = Some((file, part_len));
        part_len = 0;
        fresh
    } else {
        file
    };
    write_atomic(&paths.tag, mine.as_bytes()).map_err(Error::file("writing", &paths.tag))?;
    let reader = file.try_clone().map_err(Error::file("opening", &paths.part))?;
    let mut parts = vec![(reader, part_len)];
    parts.extend(aside);
    if let Some(seed) = seed {
        let f = File::open(seed).map_err(Error::file("opening the seed", seed))?;
        let len = f.metadata().map_err(Error::file("reading the seed", seed))?.len();
        parts.push((f, len));
    }
    Ok((file, Seeds::new(parts)))
}

/// Fetch the object `expect` names: `manifest` reads the manifest's bytes
/// (kept in a file beside the partial one and checked here against the
/// expected CID, length and hash), `placement` says which peers hold which
/// shards. Progress is one phase, `"fetch"`, of the object's length.
pub async fn fetch(
    client: &Client,
    manifest: impl Read + Send,
    placement: Placement,
    expect: &Expect,
    read_key: [u8; 32],
    opts: &FetchOptions,
    progress: Arc<dyn Progress>,
) -> Result<FetchReport> {
    let started = Instant::now();
    let paths = Paths::of(opts.out.clone());
    if let Some(parent) = paths.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(Error::file("creating", parent))?;
    }
    // The partial file is locked first: a second fetch to the same place
    // stops there, before it touches this one's files.
    let file = open_part(&paths.part)?;
    let read_key = ReadKey::from_bytes(read_key);
    let (manifest, sealed) = match check_manifest(&paths, manifest, expect, &read_key) {
        Ok(m) => m,
        Err(e) => {
            // Refused before anything was fetched: leave no files behind
            // (an earlier partial file with data in it stays for a rerun).
            let _ = std::fs::remove_file(&paths.manifest);
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&paths.part);
            }
            return Err(e);
        }
    };
    let known = match &opts.placement_from {
        Some(_) => manifest.segments().iter().flat_map(|s| s.shards().iter().copied()).collect(),
        None => Default::default(),
    };
    let source = NetSource::new(client, placement, known, opts.placement_from.clone(), opts.parallel, opts.min_late);
    let (file, seeds) = seeds(&paths, file, expect, opts.seed.as_ref())?;
    let (window, ahead, len) = (opts.window, opts.ahead, expect.length);
    progress.start("fetch", len);
    let bar = progress.clone();
    let part_path = paths.part.clone();
    let sealed_patches = opts.patches.clone();
    let (decoded, source, seeds, patches_unused) = tokio::task::spawn_blocking(move || {
        let mut writer = PartWriter::new(file);
        let mut report = |n| bar.set(n);
        let mut unused = None;
        let r = PagedContents::open(&manifest, &sealed, &read_key).and_then(|table| {
            // A table that does not open or check costs the patches, not the fetch.
            let patches = sealed_patches.as_deref().and_then(|b| {
                PatchTable::open(b, &read_key, &manifest, table.chunk_count())
                    .map_err(|e| unused = Some(format!("the patch table was refused: {e}")))
                    .ok()
            });
            let decoder = Decoder::new(&manifest, &table, &source).with_window(window).with_ahead(ahead);
            let decoder = if seeds.size() > 0 { decoder.with_seed(&seeds) } else { decoder };
            let decoder = match &patches {
                Some(p) if seeds.size() > 0 => decoder.with_patches(p),
                Some(_) => {
                    unused = Some("there is no seed to apply patches to".to_string());
                    decoder
                }
                None => decoder,
            };
            decoder.decode_at(&mut writer, &mut report)
        });
        // The whole object is in: trim and sync it here, off the runtime's threads.
        let part = writer.into_file();
        let r = r.map_err(Error::from).and_then(|stats| {
            part.set_len(len).map_err(Error::file("trimming", &part_path))?;
            part.sync_all().map_err(Error::file("syncing", &part_path))?;
            Ok(stats)
        });
        (r, source, seeds, unused)
    })
    .await
    .map_err(Error::Thread)?;
    progress.finish();
    let setup_seconds = source.first.get().map_or(0.0, |t| (*t - started).as_secs_f64());
    let (dropped, peers_used) = source.book.into_inner().unwrap_or_else(|p| p.into_inner()).into_report();
    let stats = match decoded {
        Ok(s) => s,
        Err(e) => {
            for d in &dropped {
                tracing::warn!("dropped peer {}: {}", d.peer, d.reason);
            }
            return Err(e);
        }
    };
    std::fs::rename(&paths.part, &paths.out).map_err(Error::file("renaming into place", &paths.out))?;
    sync_dir(&paths.out).map_err(Error::file("syncing the directory of", &paths.out))?;
    for done in [&paths.tag, &paths.old, &paths.manifest] {
        let _ = std::fs::remove_file(done);
    }
    Ok(FetchReport {
        object: expect.label.clone(),
        path: paths.out,
        image_bytes: stats.object_len,
        downloaded_bytes: stats.fetched_bytes,
        resumed_bytes: seeds.from_part.load(std::sync::atomic::Ordering::Relaxed).min(stats.seed_bytes),
        seed_bytes: seeds.from_seed.load(std::sync::atomic::Ordering::Relaxed).min(stats.seed_bytes),
        requests: stats.requests,
        rebuilt_ranges: stats.rebuilt_ranges,
        peers_used,
        dropped,
        problems: stats.problems.iter().map(|p| p.to_string()).collect(),
        seconds: started.elapsed().as_secs_f64(),
        setup_seconds,
        most_ahead: stats.most_ahead,
        patched_chunks: stats.patched_chunks,
        patched_bytes: stats.patched_bytes,
        patch_fallbacks: stats.patch_fallbacks,
        patches_unused,
    })
}

/// Read some chunks of an object from the peers `placement` names (what a
/// publisher reads of an earlier release to make patches against it): the
/// chunks of `selection`, back to back, each checked as it is opened.
pub async fn read_chunks(
    client: &Client,
    manifest: &Manifest,
    selection: Selection,
    placement: Placement,
) -> Result<Vec<u8>> {
    let source = NetSource::new(client, placement, Default::default(), None, 48, Duration::from_secs(3));
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(selection.object_len() as usize);
        Decoder::new(&manifest, &selection, &source).decode(&mut out, &mut |_| {})?;
        Ok(out)
    })
    .await
    .map_err(Error::Thread)?
}
