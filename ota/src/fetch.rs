//! The device fetcher: a checked release in, a verified image on disk out.
//!
//! Shards are found from the bundle's placement (peer ids) and the DHT (their
//! addresses); the chunker's decoder asks for the byte ranges of the chunks
//! it needs, verifies each against the shard's CID, and rebuilds from other
//! shards what is missing, late or false. This module supplies the network
//! source and the files:
//!
//! - **Partial file** `OUT.part`, written in place at each chunk's offset and
//!   synced every 32 MiB. A rerun reads it back as a *seed*: chunks
//!   already there (checked by their keyed tag) are copied, not downloaded.
//!   Whatever a crash or power loss left in it is safe: a chunk that does not
//!   match is fetched again.
//! - **Seed** (an older image): the same mechanism gives delta updates.
//! - **Manifest** `OUT.part.manifest`: kept on disk; its chunk table is read
//!   a sealed page (1024 chunks) at a time, so memory does not grow with the
//!   image (only the segment list does, about 60 KB per GiB).
//! - **Long tail**: a range not answered within a deadline (a few times the
//!   median answer time) is given up and rebuilt from other shards; a peer
//!   that fails is not asked again this fetch; a peer whose bytes fail their
//!   proof is named and dropped.
//! - Only after the whole image matches the release's length and BLAKE3
//!   hash: fsync, rename to `OUT`, fsync the directory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chunker::{
    ChunkTable, Cid, Decoder, Manifest, PagedContents, Piece, ReadKey, Seed, ShardRequest, ShardSource, SourceError,
};
use net::wire::{Code, Request, Response};
use net::{Client, PeerId};
use serde::Serialize;

use crate::bundle::Placement;
use crate::error::{Error, Result};
use crate::meta::{Release, unhex};

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where the verified image goes (`OUT.part` beside it meanwhile).
    pub out: PathBuf,
    /// An older image whose chunks need not be downloaded.
    pub seed: Option<PathBuf>,
    /// Shortest wait before a range counts as late and is rebuilt elsewhere.
    pub min_late: Duration,
    /// Requests in flight at once.
    pub parallel: usize,
    /// Image bytes decoded at a time (memory is a few times this).
    pub window: u64,
}

impl FetchOptions {
    /// Defaults for `out`.
    pub fn new(out: PathBuf) -> Self {
        FetchOptions { out, seed: None, min_late: Duration::from_secs(3), parallel: 16, window: 4 << 20 }
    }
}

/// A peer dropped during a fetch, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Dropped {
    /// The peer.
    pub peer: String,
    /// Why it was set aside (for a while; for good if it lied).
    pub reason: String,
    /// True if it sent bytes that failed verification.
    pub lied: bool,
}

/// What one peer sent during a fetch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerUse {
    /// The peer.
    pub peer: String,
    /// Bytes received (ranges and proofs).
    pub bytes: u64,
    /// Answers received.
    pub answers: u64,
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// `product@version`.
    pub release: String,
    /// Where the image is.
    pub path: PathBuf,
    /// Image length.
    pub image_bytes: u64,
    /// Bytes received from peers (ranges and proofs).
    pub downloaded_bytes: u64,
    /// Image bytes taken from the partial file of an interrupted fetch.
    pub resumed_bytes: u64,
    /// Image bytes taken from the seed image.
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
}

/// How long a peer that failed or was late is left alone.
const REST: Duration = Duration::from_secs(15);

/// Shards from peers on the network. Called from decoder threads; each
/// request blocks its thread on the tokio runtime.
struct NetSource {
    client: Client,
    rt: tokio::runtime::Handle,
    /// The placement's peers, and per shard the indices of those holding it
    /// (a few bytes a shard: this map grows with the image).
    peers: Vec<PeerId>,
    holders: HashMap<Cid, Vec<u32>>,
    min_late: Duration,
    max_wait: Duration,
    /// Requests in flight at most.
    slots: tokio::sync::Semaphore,
    state: Mutex<SourceState>,
}

#[derive(Default)]
struct SourceState {
    /// Peers not to ask again, and why.
    dropped: HashMap<PeerId, Dropped>,
    /// Peers that failed or were late, not asked until then.
    resting: HashMap<PeerId, Instant>,
    /// Who answered each shard (to name a liar).
    answered_by: HashMap<Cid, PeerId>,
    /// Recent answer times, for the long-tail deadline.
    latencies: Vec<Duration>,
    by_peer: HashMap<PeerId, (u64, u64)>,
}

impl NetSource {
    fn deadline(&self) -> Duration {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut l = st.latencies.clone();
        drop(st);
        if l.len() < 4 {
            // Nothing measured yet: a generous multiple of the floor.
            return (self.min_late * 4).min(self.max_wait);
        }
        l.sort();
        (l[l.len() / 2] * 4).clamp(self.min_late, self.max_wait)
    }

    fn drop_peer(&self, peer: PeerId, reason: String, lied: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.resting.insert(peer, Instant::now() + REST);
        let e =
            st.dropped.entry(peer).or_insert_with(|| Dropped { peer: peer.to_string(), reason: reason.clone(), lied });
        if lied && !e.lied {
            *e = Dropped { peer: peer.to_string(), reason, lied };
        }
    }
}

impl NetSource {
    async fn fetch_async(
        &self,
        cid: Cid,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> std::result::Result<Piece, SourceError> {
        let Some(holding) = self.holders.get(&cid) else {
            return Err(SourceError::Missing);
        };
        let _slot = self.slots.acquire().await.map_err(|_| SourceError::Failed("fetch stopped".to_string()))?;
        let mut why = Vec::new();
        for peer in holding.iter().filter_map(|&i| self.peers.get(i as usize).copied()) {
            {
                // A liar is never asked again; a peer that failed or was late
                // is left alone for a while (it may be busy, or moving).
                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(d) = st.dropped.get(&peer) {
                    let resting = st.resting.get(&peer).is_some_and(|until| Instant::now() < *until);
                    if d.lied || resting {
                        why.push(format!("peer {peer} dropped earlier: {}", d.reason));
                        continue;
                    }
                }
            }
            let wait = self.deadline();
            let started = Instant::now();
            let request = Request::Ranges { cid, ranges: ranges.clone() };
            match tokio::time::timeout(wait, self.client.request(peer, request)).await {
                Ok(Ok(Response::Proof(p))) => {
                    let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if st.latencies.len() >= 64 {
                        st.latencies.remove(0);
                    }
                    st.latencies.push(started.elapsed());
                    st.answered_by.insert(cid, peer);
                    let e = st.by_peer.entry(peer).or_default();
                    e.0 += p.len() as u64;
                    e.1 += 1;
                    return Ok(Piece::Proof(p));
                }
                Ok(Ok(Response::Error { code: Code::NotFound, message })) => {
                    why.push(format!("peer {peer} does not have it: {message}"));
                }
                Ok(Ok(Response::Error { code: Code::Busy, message })) => {
                    why.push(format!("peer {peer} busy: {message}"));
                }
                Ok(Ok(Response::Error { code, message })) => {
                    why.push(format!("peer {peer} refused ({code:?}): {message}"));
                }
                Ok(Ok(_)) => {
                    let reason = "answered a range request with something else".to_string();
                    self.drop_peer(peer, reason.clone(), true);
                    why.push(format!("peer {peer} {reason}"));
                }
                Ok(Err(e)) => {
                    let reason = e.to_string();
                    self.drop_peer(peer, reason.clone(), false);
                    why.push(reason);
                }
                Err(_) => {
                    let reason =
                        format!("no answer within {:.1} s (late); rebuilt from other shards", wait.as_secs_f64());
                    self.drop_peer(peer, reason.clone(), false);
                    why.push(format!("peer {peer}: {reason}"));
                }
            }
        }
        if why.is_empty() { Err(SourceError::Missing) } else { Err(SourceError::Failed(why.join("; "))) }
    }
}

impl ShardSource for NetSource {
    fn fetch(&self, req: &ShardRequest<'_>) -> std::result::Result<Piece, SourceError> {
        // Runs on a decoder thread: the future (and its timer) run inside the runtime.
        self.rt.block_on(self.fetch_async(*req.cid, req.ranges.to_vec()))
    }

    fn fetch_many(&self, reqs: &[ShardRequest<'_>]) -> Vec<std::result::Result<Piece, SourceError>> {
        // All in flight at once (up to the slot limit) from one thread.
        let asks = reqs.iter().map(|r| self.fetch_async(*r.cid, r.ranges.to_vec()));
        self.rt.block_on(futures::future::join_all(asks))
    }

    fn rejected(&self, req: &ShardRequest<'_>, reason: &str) {
        let peer = self.state.lock().unwrap_or_else(|p| p.into_inner()).answered_by.get(req.cid).copied();
        if let Some(peer) = peer {
            tracing::warn!(%peer, cid = %req.cid, "peer sent bytes that fail their proof: {reason}; dropped");
            self.drop_peer(peer, format!("sent bytes of {} that fail verification: {reason}", req.cid), true);
        }
    }
}

/// The partial file of an interrupted fetch, then the seed image, as one seed.
struct Seeds {
    parts: Vec<(File, u64)>,
    /// The decoder first reads the whole seed once to index it (not counted),
    /// then copies chunks (counted).
    indexed: std::sync::atomic::AtomicBool,
    from_part: AtomicU64,
    from_seed: AtomicU64,
}

impl Seed for Seeds {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if !self.indexed.load(Ordering::Relaxed) {
            if offset + buf.len() as u64 >= self.size() {
                self.indexed.store(true, Ordering::Relaxed);
            }
            return self.read_uncounted(offset, buf).map(|_| ());
        }
        let i = self.read_uncounted(offset, buf)?;
        let counter = if i == 0 { &self.from_part } else { &self.from_seed };
        counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Seeds {
    /// Read (across files if need be), and say from which file it started.
    fn read_uncounted(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let (mut base, mut first, mut done) = (0u64, None, 0usize);
        for (i, (f, len)) in self.parts.iter().enumerate() {
            let at = offset + done as u64;
            if done < buf.len() && at < base + len {
                let n = ((base + len - at) as usize).min(buf.len() - done);
                f.read_exact_at(&mut buf[done..done + n], at - base)?;
                first.get_or_insert(i);
                done += n;
            }
            base += len;
        }
        if done < buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the seed"));
        }
        Ok(first.unwrap_or(0))
    }
}

/// Bytes `start..start + len` of a file, read at will: the manifest, or its
/// sealed part.
struct FileSpan {
    file: File,
    start: u64,
    len: u64,
}

impl FileSpan {
    fn whole(file: File) -> Result<Self> {
        let len = file.metadata().map_err(|e| Error::io("reading the manifest file", e))?.len();
        Ok(FileSpan { file, start: 0, len })
    }
}

impl Seed for FileSpan {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + buf.len() as u64 > self.len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the manifest"));
        }
        self.file.read_exact_at(buf, self.start + offset)
    }
}

/// Writes windows in order from offset 0, syncing every [`SYNC_EVERY`]
/// bytes: a kill loses nothing written (the page cache keeps it), a power
/// loss at most that much, which the next run downloads again.
struct PartWriter {
    file: File,
    unsynced: u64,
}

/// Bytes written between syncs of the partial file (a sync per 4 MiB window:
/// 118 MB/s on the OTA bench; every 32 MiB: 141 MB/s).
const SYNC_EVERY: u64 = 32 << 20;

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all(buf)?;
        self.unsynced += buf.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `OUT.part`.
pub fn part_path(out: &Path) -> PathBuf {
    with_suffix(out, ".part")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Open (or create) the partial file, locked: one fetch per output at a
/// time (the lock goes with the process).
fn open_part(part: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(part)
        .map_err(|e| Error::io(format!("opening {}", part.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
            format!("{} is being written by another fetch; wait for it or choose another --out", part.display()),
            std::io::Error::from(std::io::ErrorKind::WouldBlock),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking the partial file", e)),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Fetch the image of a checked `release`: `manifest` reads the manifest's
/// bytes (from the bundle; kept in a file beside the partial one and checked
/// against the release's CID here),
/// `placement` says which peers hold which shards.
pub async fn fetch(
    client: &Client,
    manifest: impl std::io::Read + Send,
    placement: Placement,
    release: &Release,
    read_key: [u8; 32],
    opts: &FetchOptions,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<FetchReport> {
    let started = Instant::now();
    let manifest_cid: Cid =
        release.manifest.parse().map_err(|e| Error::Malformed(format!("release manifest CID: {e}")))?;
    let out = opts.out.clone();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let part = part_path(&out);
    // The manifest waits in a file beside the partial one, and its chunk
    // table is read from there a sealed page at a time: memory does not grow
    // with the image.
    // The partial file is locked first: a second fetch to the same place
    // stops there, before it touches this one's files.
    let file = open_part(&part)?;
    let manifest_path = with_suffix(&part, ".manifest");
    {
        let limit = chunker::Limits::default().max_manifest_bytes as u64;
        let mut manifest = manifest.take(limit + 1);
        let written = File::create(&manifest_path).and_then(|mut f| std::io::copy(&mut manifest, &mut f));
        written.map_err(|e| Error::io(format!("writing {}", manifest_path.display()), e))?;
    }
    let read_key = ReadKey::from_bytes(read_key);
    let checked = (|| {
        let manifest_file =
            File::open(&manifest_path).map_err(|e| Error::io(format!("opening {}", manifest_path.display()), e))?;
        let whole = FileSpan::whole(manifest_file)?;
        let (manifest, at, len) = Manifest::read_public(&whole, &manifest_cid, &Default::default())?;
        let sealed = FileSpan { file: whole.file, start: at, len };
        let table = PagedContents::open(&manifest, &sealed, &read_key)?;
        let want_hash = unhex(&release.blake3, "image hash")?;
        if table.object_len() != release.length || table.object_hash()[..] != want_hash[..] {
            return Err(Error::ImageMismatch(format!(
                "the manifest describes {} bytes with hash {}, the release {} bytes with hash {}",
                table.object_len(),
                crate::meta::hex(&table.object_hash()),
                release.length,
                release.blake3
            )));
        }
        drop(table);
        Ok((manifest, sealed))
    })();
    let (manifest, sealed) = match checked {
        Ok(m) => m,
        Err(e) => {
            // Refused before anything was fetched: leave no files behind
            // (an earlier partial file with data in it stays for a rerun).
            let _ = std::fs::remove_file(&manifest_path);
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&part);
            }
            return Err(e);
        }
    };
    // The placement's text (CIDs and peer ids as strings) becomes indices
    // and is let go: it grows with the image.
    let Placement { peers: peer_names, shards } = placement;
    let mut peers = Vec::new();
    let index: Vec<Option<u32>> = peer_names
        .iter()
        .map(|p| {
            p.parse::<PeerId>().ok().map(|id| {
                peers.push(id);
                peers.len() as u32 - 1
            })
        })
        .collect();
    let mut holders: HashMap<Cid, Vec<u32>> = HashMap::with_capacity(shards.len());
    for (cid, idx) in shards {
        let Ok(cid) = cid.parse::<Cid>() else { continue };
        holders.insert(cid, idx.iter().filter_map(|&i| index.get(i as usize).copied().flatten()).collect());
    }
    let source = NetSource {
        client: client.clone(),
        rt: tokio::runtime::Handle::current(),
        peers,
        holders,
        min_late: opts.min_late,
        max_wait: Duration::from_secs(30).max(opts.min_late),
        slots: tokio::sync::Semaphore::new(opts.parallel.max(1)),
        state: Mutex::new(SourceState::default()),
    };

    let mut part_len = file.metadata().map_err(|e| Error::io("reading the partial file", e))?.len();
    // A partial file left by a fetch of another release is not written over
    // in place (its chunks sit at other offsets): it moves aside to
    // `OUT.part.old` and serves as a read-only seed.
    let tag = with_suffix(&part, ".cid");
    let old = with_suffix(&part, ".old");
    let mine = manifest_cid.to_string();
    let stale = part_len > 0 && std::fs::read_to_string(&tag).map_or(true, |t| t.trim() != mine);
    let mut aside = None;
    let file = if stale {
        std::fs::rename(&part, &old).map_err(|e| Error::io(format!("moving {} aside", part.display()), e))?;
        let fresh = open_part(&part)?;
        aside = Some((file, part_len));
        part_len = 0;
        fresh
    } else {
        file
    };
    crate::device::write_atomic(&tag, mine.as_bytes())
        .map_err(|e| Error::io("recording the partial file's release", e))?;
    let reader = file.try_clone().map_err(|e| Error::io("opening the partial file", e))?;
    let mut parts = vec![(reader, part_len)];
    parts.extend(aside);
    if let Some(seed) = &opts.seed {
        let f = File::open(seed).map_err(|e| Error::io(format!("opening seed {}", seed.display()), e))?;
        let len = f.metadata().map_err(|e| Error::io("reading the seed", e))?.len();
        parts.push((f, len));
    }
    let seeds =
        Seeds { parts, indexed: Default::default(), from_part: AtomicU64::new(0), from_seed: AtomicU64::new(0) };
    let window = opts.window;
    let release_len = release.length;
    let mut progress = progress;
    let (stats, source, seeds) = tokio::task::spawn_blocking(move || {
        let mut writer = PartWriter { file, unsynced: 0 };
        let len = release_len;
        let r = PagedContents::open(&manifest, &sealed, &read_key).and_then(|table| {
            let decoder = Decoder::new(&manifest, &table, &source).with_window(window);
            let decoder = if seeds.size() > 0 { decoder.with_seed(&seeds) } else { decoder };
            decoder.decode(&mut writer, &mut progress)
        });
        let r = r.map_err(Error::from).and_then(|stats| {
            writer.file.set_len(len).map_err(|e| Error::io("trimming the partial file", e))?;
            writer.file.sync_all().map_err(|e| Error::io("syncing the image", e))?;
            Ok(stats)
        });
        Ok::<_, Error>((r, source, seeds))
    })
    .await
    .map_err(|e| Error::io("fetch thread", std::io::Error::other(e)))??;
    let st = source.state.into_inner().unwrap_or_else(|p| p.into_inner());
    let dropped: Vec<Dropped> = st.dropped.into_values().collect();
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            for d in &dropped {
                tracing::warn!("dropped peer {}: {}", d.peer, d.reason);
            }
            return Err(e);
        }
    };
    std::fs::rename(&part, &out).map_err(|e| Error::io(format!("renaming into {}", out.display()), e))?;
    sync_dir(&out).map_err(|e| Error::io("syncing the image directory", e))?;
    let _ = std::fs::remove_file(&tag);
    let _ = std::fs::remove_file(&old);
    let _ = std::fs::remove_file(&manifest_path);
    let mut peers_used: Vec<PeerUse> =
        st.by_peer.into_iter().map(|(p, (bytes, answers))| PeerUse { peer: p.to_string(), bytes, answers }).collect();
    peers_used.sort_by(|a, b| a.peer.cmp(&b.peer));
    Ok(FetchReport {
        release: release.id(),
        path: out,
        image_bytes: stats.object_len,
        downloaded_bytes: stats.fetched_bytes,
        resumed_bytes: seeds.from_part.load(Ordering::Relaxed).min(stats.seed_bytes),
        seed_bytes: seeds.from_seed.load(Ordering::Relaxed).min(stats.seed_bytes),
        requests: stats.requests,
        rebuilt_ranges: stats.rebuilt_ranges,
        peers_used,
        dropped,
        problems: stats.problems.iter().map(|p| p.to_string()).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
