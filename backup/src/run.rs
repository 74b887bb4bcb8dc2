//! `backup run`: walk, read what changed, encode on this host (random data
//! keys, chunk ids under the repository's secret, so dedup works against
//! the parent snapshot), place the ciphertext segments through the SPN, and
//! save the snapshot record sealed to the repository's key.
//!
//! A run is resumable: its session, and the one-time key material of its
//! two encodings, are kept in `CACHE/run.json` (0600) until the snapshot is
//! saved. A rerun after a kill encodes the same input into the same
//! segments and places only those the session does not hold yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chunker::{EncodedSegment, Encoder, KnownChunks, Manifest, Params, ReadKey, SegmentSink};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::{LastRun, ObjectCap, Repo, RunStats, SNAPSHOT_FORMAT, Skipped, Snapshot, unhex32};
use crate::scan::{FileStream, ScanOptions, scan};
use crate::tree::{DataRef, Tree};

/// How to back up.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What to walk.
    pub scan: ScanOptions,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// The host name recorded.
    pub host: String,
    /// Data and parity shards per segment.
    pub coding: (u8, u8),
    /// Compare with this snapshot [default: the newest of this host and paths].
    pub parent: Option<String>,
    /// Read every file, comparing with no parent.
    pub force: bool,
}

/// The run in progress, for a resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    job: u64,
    /// The session's SPN computes parity: segments go as data shards alone
    /// (false in a journal of an earlier release: all n shards, as then).
    #[serde(default)]
    parity_here: bool,
    data_material: String,
    data_salt: String,
    tree_material: String,
    tree_salt: String,
}

impl Journal {
    fn fresh(session: proto::api::EncodedSession) -> Journal {
        let hex = |b: [u8; 32]| data_encoding::HEXLOWER.encode(&b);
        Journal {
            job: session.job,
            parity_here: session.parity_here,
            data_material: hex(rand::random()),
            data_salt: hex(rand::random()),
            tree_material: hex(rand::random()),
            tree_salt: hex(rand::random()),
        }
    }
}

/// Places each segment through the SPN as the encoder finishes it, on
/// threads of their own: the encoder makes the next segment while others
/// are placed, and hands it over when a placer is free (none waits between
/// them: the first backup of 1 GiB peaked at 107 MiB instead of 124, in
/// the same time, medians of 4 pairs).
pub(crate) struct Uploader {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    workers: Vec<std::thread::JoinHandle<(u64, u64)>>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

/// Segments placed at once: while the SPN places one on the peers (its
/// answer waits for their receipts), the next one is on the host's uplink,
/// which would otherwise idle (one at a time kept a 20 Mbit/s uplink 59%
/// busy in the links bench).
const UPLOADS: usize = 2;

struct Job {
    len: u64,
    k: u8,
    cid: String,
    shard_cids: Vec<String>,
    shards: Vec<chunker::ShardBytes>,
}

impl Uploader {
    /// `parity_here`: the session's SPN computes parity ([`proto::api::EncodedSession::parity_here`]),
    /// so only the data shards are sent.
    pub(crate) fn new(spn: client::Spn, job: u64, resuming: bool, parity_here: bool) -> Uploader {
        // A rendezvous: a finished segment waits in the encoder, not in a queue.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(0);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let failed: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let place = move |spn: &client::Spn, j: Job| -> std::result::Result<Option<u64>, String> {
            if resuming && spn.held(job, j.shard_cids.clone()).map_err(|e| e.to_string())?.iter().all(|h| *h) {
                return Ok(None);
            }
            let (n, k) = (j.shards.len(), usize::from(j.k));
            let mut shards = j.shards;
            // The SPN makes at most as much parity as data (n <= 2k).
            let data_only = parity_here && n <= 2 * k;
            let placed = if data_only {
                shards.truncate(k);
                spn.put_segment_data(job, j.len, j.k, n as u8, shards)
            } else {
                spn.put_segment(job, j.len, j.k, shards)
            };
            let placed = placed.map_err(|e| e.to_string())?;
            // The CID names every shard: parity the SPN made is checked here.
            if placed.segment != j.cid {
                return Err(format!("the SPN placed segment {} where {} was sent", placed.segment, j.cid));
            }
            Ok(Some(j.len.div_ceil(u64::from(j.k)) * if data_only { k } else { n } as u64))
        };
        let workers = (0..UPLOADS)
            .map(|_| {
                let (spn, rx, f) = (spn.clone(), rx.clone(), failed.clone());
                std::thread::spawn(move || {
                    let (mut uploaded, mut resumed) = (0u64, 0u64);
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(j) = next else { break };
                        match place(&spn, j) {
                            Ok(Some(bytes)) => uploaded += bytes,
                            Ok(None) => resumed += 1,
                            Err(e) => {
                                f.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                                break;
                            }
                        }
                    }
                    (uploaded, resumed)
                })
            })
            .collect();
        Uploader { tx: Some(tx), workers, failed }
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait for the segments in flight: (shard bytes uploaded, segments already held).
    pub(crate) fn finish(mut self) -> Result<(u64, u64)> {
        drop(self.tx.take());
        let mut counts = (0, 0);
        for w in std::mem::take(&mut self.workers) {
            match w.join() {
                Ok((up, resumed)) => counts = (counts.0 + up, counts.1 + resumed),
                // Its segment was not placed: the run must not end as if it were.
                Err(_) => {
                    self.failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| "an upload thread panicked".to_string());
                }
            }
        }
        match self.failure() {
            Some(e) => Err(Error::Invalid(format!("placing a segment: {e}"))),
            None => Ok(counts),
        }
    }
}

impl SegmentSink for Uploader {
    fn put_segment(
        &mut self,
        seg: EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(e) = self.failure() {
            return Err(e.into());
        }
        let job = Job {
            len: seg.segment.len(),
            k: seg.segment.data_shards() as u8,
            cid: seg.segment.cid().to_string(),
            shard_cids: seg.segment.shards().iter().map(|c| c.to_string()).collect(),
            shards: seg.shards,
        };
        let Some(tx) = &self.tx else { return Err("the uploader has stopped".into()) };
        if tx.send(job).is_err() {
            return Err(self.failure().unwrap_or_else(|| "the uploader stopped".to_string()).into());
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The snapshot saved.
    pub snapshot: Snapshot,
    /// Whether it resumed an interrupted run.
    pub resumed: bool,
    /// The renewal after it: every live snapshot's objects (the full key),
    /// or this snapshot's (a put-only key).
    pub renewed: Option<proto::api::Renewed>,
    /// Why the renewal failed (the snapshot is saved all the same).
    pub renew_error: Option<String>,
}

fn journal_path(repo: &Repo) -> PathBuf {
    repo.cache.join("run.json")
}

/// Back up `o.scan.paths` into `repo`. `net` is needed only when the
/// parent's tree is not in the local cache.
pub async fn run(
    repo: &Repo,
    net: Option<&net::Client>,
    o: &RunOptions,
    progress: Arc<dyn client::Progress>,
) -> Result<RunReport> {
    let started = Instant::now();
    repo.check_config()?;
    // The paths name the snapshot's group (parent, retention) as text: two
    // roots that are not UTF-8 would read the same ("caf\u{FFFD}") and share
    // one group, so one's retention could forget the other's snapshots.
    // Names inside the tree may be anything; the roots must be text.
    let paths: Vec<String> = o
        .scan
        .paths
        .iter()
        .map(|p| {
            p.to_str().map(str::to_string).ok_or_else(|| {
                Error::Invalid(format!(
                    "{} is not UTF-8: a path given to back up must be (back up the folder that holds it; \
                     names inside a tree may be anything)",
                    p.display()
                ))
            })
        })
        .collect::<Result<_>>()?;
    // A put-only key cannot open records: it compares with its own host's
    // last run, which it remembers (with its objects' manifests).
    let put_only = repo.key.is_put_only();
    if put_only && o.parent.is_some() {
        return Err(Error::PutOnly("name a parent snapshot (it compares with this host's own last run)"));
    }
    let last = if put_only && !o.force { repo.last_run(&o.host, &paths) } else { None };
    // A full key lists the snapshots once: for the parent, and for the
    // renewal at the end.
    let listed = if put_only { Vec::new() } else { repo.snapshots()? };
    let parent = match (&o.parent, o.force) {
        (_, true) => None,
        _ if put_only => last.as_ref().map(|l| l.snapshot.clone()),
        (Some(id), false) => Some(repo.snapshot(id)?),
        // Never a put-only key's snapshot: its tree could point this run's
        // unchanged files at anything.
        (None, false) => {
            listed.iter().rev().find(|s| s.host == o.host && s.paths == paths && s.added_by.is_none()).cloned()
        }
    };
    let (parent, parent_tree) = match parent {
        // Its tree cache gone, a put-only host cannot fetch the tree: it reads everything.
        Some(p) if put_only => match repo.tree(None, &p).await {
            Ok(t) => (Some(p), Some(t)),
            Err(_) => (None, None),
        },
        Some(p) => {
            let t = repo.tree(net, &p).await?;
            (Some(p), Some(t))
        }
        None => (None, None),
    };
    let manifest_of = |cid: &str| -> Result<Vec<u8>> {
        match &last {
            Some(l) if put_only => l
                .manifests
                .get(cid)
                .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
                .ok_or_else(|| Error::format("the last run", format!("no manifest of object {cid}"))),
            _ => Ok(repo.spn.manifest(cid, 256 << 20)?),
        }
    };
    progress.start("scan", 0);
    let scan_opts = o.scan.clone();
    // The parent's tree is needed by the walk alone: it goes with it, and is
    // gone before this run's tree is made (two copies of a 52,000-entry tree
    // were 35 MiB of a second run's peak).
    let walked = tokio::task::spawn_blocking(move || scan(&scan_opts, parent_tree.as_ref()))
        .await
        .map_err(|e| Error::Invalid(format!("the walk stopped: {e}")))??;
    progress.finish();
    // Chunks the parent's objects hold: stored once.
    let secret = repo.key.tenant_secret();
    let mut known = KnownChunks::new();
    if let Some(p) = &parent {
        for cap in p.data.iter().chain(std::iter::once(&p.tree)) {
            let bytes = manifest_of(&cap.manifest)?;
            let m = Manifest::from_bytes_with_cid(&bytes, &cap.manifest.parse()?, &Default::default())?;
            let contents = m.open(&ReadKey::from_bytes(unhex32(&cap.read_key, "read key")?))?;
            known.add(&m, &contents)?;
        }
    }
    // The session: the interrupted run's, if it is still open. The cache
    // holds the run's key material: for this host's eyes only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&repo.cache).map_err(Error::file("creating the cache", &repo.cache))?;
        std::fs::set_permissions(&repo.cache, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::file("making the cache private", &repo.cache))?;
    }
    // One run per repository on this host at a time: a second one would
    // take the first's session for an interrupted one.
    let lock_path = repo.cache.join("run.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::file("opening the run lock", &lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        Error::Invalid(format!(
            "another backup run of repository {} is in progress on this host (it holds {}); wait for it",
            repo.name(),
            lock_path.display()
        ))
    })?;
    let jpath = journal_path(repo);
    let old: Option<Journal> = std::fs::read(&jpath).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let (journal, resuming) = match old {
        Some(j) if repo.spn.job(j.job).is_ok_and(|r| !r.state.is_finished()) => (j, true),
        _ => (Journal::fresh(repo.spn.open_session(repo.name())?), false),
    };
    client::write_atomic(&jpath, &serde_json::to_vec(&journal).unwrap_or_default())
        .map_err(Error::file("saving the run journal", &jpath))?;
    // zstd level 1: a quarter less of the host's CPU than level 3 for 3%
    // more bytes stored (measured on the bench's generated tree). 8 MiB
    // segments: 4 MiB ones cut the peak RSS by a fifth but made runs 20%
    // slower (twice the puts, receipts and syncs).
    let params = Params::default().with_coding(o.coding.0, o.coding.1).with_zstd_level(1);
    params.validate()?;
    // Data: the files that changed, one after another. The stream holds the
    // walk meanwhile and gives it back.
    let total = walked.bytes_to_read;
    let spn = repo.spn.clone();
    let (j2, secret2, known2, progress2) = (journal.clone(), secret.clone(), known.clone(), progress.clone());
    let (data, reads, up, mut walked) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut stream = FileStream::new(walked);
        let reads = stream.done.clone();
        let mut up = Uploader::new(spn, j2.job, resuming, j2.parity_here);
        progress2.start("backup", total);
        let encoded = if total > 0 {
            let enc = Encoder::new(params, &secret2)?
                .with_known(&known2)
                .with_data_keys(unhex32(&j2.data_material, "key material")?)
                .with_salt(unhex32(&j2.data_salt, "salt")?);
            // The windows are read into straight from the files: no buffer between.
            let r = enc.encode(&mut stream, &mut up, &mut |d| progress2.set(d));
            // A placement's own error says more than the encoder's "sink failed".
            let counts = up.finish()?;
            Some((r?, counts))
        } else {
            up.finish()?;
            None
        };
        progress2.finish();
        let reads = std::mem::take(&mut *reads.lock().unwrap_or_else(|p| p.into_inner()));
        let counts = encoded.as_ref().map_or((0, 0), |(_, c)| *c);
        Ok((encoded.map(|(e, _)| e), reads, counts, stream.into_scan()))
    })
    .await
    .map_err(|e| Error::Invalid(format!("the encoder stopped: {e}")))??;
    // The snapshot's data objects: the parent's that unchanged files still
    // use (renumbered), then this run's.
    let mut objects: Vec<ObjectCap> = Vec::new();
    let mut renumber: HashMap<u32, u32> = HashMap::new();
    for e in &mut walked.entries {
        if let (Some(d), Some(p)) = (e.data.as_mut(), &parent) {
            let new = *renumber.entry(d.object).or_insert_with(|| {
                objects.push(p.data[d.object as usize].clone());
                (objects.len() - 1) as u32
            });
            d.object = new;
        }
    }
    let reused: Vec<String> = objects.iter().map(|o| o.manifest.clone()).collect();
    let mut skipped: Vec<Skipped> = walked.skipped;
    let mut stats = RunStats { uploaded_shard_bytes: up.0, segments_resumed: up.1, ..RunStats::default() };
    let mut manifests = Vec::new();
    let mut new_cids: Vec<String> = Vec::new();
    if let Some(enc) = &data {
        let index = objects.len() as u32;
        objects.push(ObjectCap::of(enc)?);
        manifests.push(enc.manifest.to_bytes());
        new_cids.push(enc.manifest.cid().to_string());
        for &(i, offset, len, hash) in &reads.files {
            let e = &mut walked.entries[i];
            e.size = len;
            e.data = Some(DataRef { object: index, offset });
            e.blake3 = Some(data_encoding::HEXLOWER.encode(&hash));
        }
        stats.files_read = reads.files.len() as u64;
        stats.bytes_read = reads.bytes;
        stats.new_plain_bytes = enc.stats.new_plain_bytes;
        stats.new_segment_bytes = enc.stats.new_segment_bytes;
    } else {
        // Nothing to read but empty files.
        let empty = blake3::hash(b"").to_hex().to_string();
        for &i in &walked.to_read {
            walked.entries[i].blake3 = Some(empty.clone());
        }
    }
    let mut unread: std::collections::HashSet<usize> = reads.skipped.iter().map(|(i, _)| *i).collect();
    for (i, why) in &reads.skipped {
        skipped.push(Skipped { path: format!("/{}", walked.entries[*i].display_path()), why: why.clone() });
    }
    links_of_unread(&walked.entries, &mut unread, &mut skipped);
    let entries: Vec<_> =
        walked.entries.into_iter().enumerate().filter(|(i, _)| !unread.contains(i)).map(|(_, e)| e).collect();
    for e in &entries {
        match e.kind {
            crate::tree::Kind::File => {
                stats.files += 1;
                stats.bytes += e.size;
            }
            crate::tree::Kind::Dir => stats.dirs += 1,
            _ => {}
        }
    }
    // The tree, through the chunker too (an unchanged part is stored once).
    let tree_bytes = Tree::new(entries).to_bytes()?;
    let spn = repo.spn.clone();
    let j2 = journal.clone();
    let (tree, tree_up, tree_bytes) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut up = Uploader::new(spn, j2.job, resuming, j2.parity_here);
        let enc = Encoder::new(params, &secret)?
            .with_known(&known)
            .with_data_keys(unhex32(&j2.tree_material, "key material")?)
            .with_salt(unhex32(&j2.tree_salt, "salt")?)
            .encode(&tree_bytes[..], &mut up, &mut |_| {});
        let counts = up.finish()?;
        Ok((enc?, counts, tree_bytes))
    })
    .await
    .map_err(|e| Error::Invalid(format!("the encoder stopped: {e}")))??;
    stats.uploaded_shard_bytes += tree_up.0;
    stats.segments_resumed += tree_up.1;
    manifests.push(tree.manifest.to_bytes());
    new_cids.push(tree.manifest.cid().to_string());
    // The parent's objects this snapshot goes on using: the SPN checks they
    // exist and restarts their grace, so a prune cannot take them before
    // the record below is saved.
    if let Err(e) = repo.spn.commit(journal.job, &manifests, &reused) {
        // A put-only host's remembered parent may be gone (the full key's
        // holder forgot and pruned it): the next run reads everything.
        if put_only && matches!(e, client::Error::Refused { .. }) {
            repo.forget_last_run(&o.host, &paths);
        }
        return Err(e.into());
    }
    // Length and hash as the encoder found them (no second pass over the tree).
    let tree_cap = ObjectCap::of(&tree)?;
    stats.seconds = started.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT.to_string(),
        id: data_encoding::HEXLOWER.encode(&rand::random::<[u8; 8]>()),
        time_ns: now_ns(),
        host: o.host.clone(),
        paths,
        tags: o.tags.clone(),
        parent: parent.map(|p| p.id),
        tree: tree_cap,
        data: objects,
        stats,
        skipped,
        added_by: None,
    };
    repo.save_snapshot(&snapshot, true)?;
    repo.cache_tree(&snapshot.id, &tree_bytes)?;
    if put_only {
        let mut kept = std::collections::BTreeMap::new();
        for cap in &snapshot.data {
            if let Some(i) = reused.iter().position(|c| *c == cap.manifest) {
                kept.insert(reused[i].clone(), data_encoding::BASE64.encode(&manifest_of(&reused[i])?));
            }
        }
        for (cid, m) in new_cids.iter().zip(&manifests) {
            kept.insert(cid.clone(), data_encoding::BASE64.encode(m));
        }
        repo.save_last_run(&LastRun { snapshot: snapshot.clone(), manifests: kept })?;
    }
    let _ = std::fs::remove_file(&jpath);
    drop(lock);
    // The peers keep backup data three months unless renewed: a full key
    // renews every live snapshot, a put-only key what this one uses.
    let mut live = listed;
    live.push(snapshot.clone());
    let renewal = if put_only {
        crate::upkeep::renew_of(repo, std::slice::from_ref(&snapshot))
    } else {
        crate::upkeep::renew_of(repo, &live)
    };
    let (renewed, renew_error) = match renewal {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(RunReport { snapshot, resumed: resuming, renewed, renew_error })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
/// A hard link is kept as a reference to the first path of its file: when
/// that one could not be read (`unread`), the file's other paths have no
/// bytes in the snapshot either. They join `unread` and are reported in
/// `skipped`, rather than kept as links to nothing.
fn links_of_unread(
    entries: &[crate::tree::Entry],
    unread: &mut std::collections::HashSet<usize>,
    skipped: &mut Vec<Skipped>,
) {
    let unread_paths: std::collections::HashSet<Vec<u8>> = unread.iter().map(|&i| entries[i].path_bytes()).collect();
    if unread_paths.is_empty() {
        return;
    }
    for (i, e) in entries.iter().enumerate() {
        if let Some(first) = e.link_to_bytes().filter(|f| unread_paths.contains(f)) {
            skipped.push(Skipped {
                path: format!("/{}", e.display_path()),
                why: format!(
                    "a hard link of /{}, which could not be read: not in the snapshot",
                    String::from_utf8_lossy(&first)
                ),
            });
            unread.insert(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `b` and `c` are hard links of `a`, kept as references to it; `a`
    /// could not be read (vanished or failing mid-read after the walk).
    /// Kept, they would be links to an entry the snapshot does not have:
    /// their bytes silently gone, a restore refusing them.
    #[test]
    fn hard_links_of_a_file_that_could_not_be_read_are_reported_not_kept() {
        let m = std::fs::metadata("/").expect("metadata");
        let file = |p: &str| crate::tree::Entry::from_meta(std::path::Path::new(p), &m);
        let a = file("/t/a");
        let mut b = file("/t/b");
        b.set_link_to(&a.path_bytes());
        let mut c = file("/t/c");
        c.set_link_to(&a.path_bytes());
        let entries = vec![a, b, c, file("/t/d")];
        let mut unread: std::collections::HashSet<usize> = [0].into_iter().collect();
        let mut skipped = Vec::new();
        links_of_unread(&entries, &mut unread, &mut skipped);
        assert_eq!(unread, [0, 1, 2].into_iter().collect(), "b and c leave the snapshot with a");
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].path == "/t/b" && skipped[0].why.contains("hard link of /t/a"), "{skipped:?}");
    }
}
