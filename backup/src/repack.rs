//! Repacking, in `prune`: a data object that kept snapshots still use in
//! part is encoded again with only the files they use, under fresh keys,
//! and the snapshots are rewritten to point at the new object; the old one
//! then has no user and `prune` deletes it with its keys.
//!
//! Why: the unit of deletion is the data object (one run's new files).
//! Without repacking, one file kept from a run keeps the whole run's bytes
//! on the peers, readable with the key in the kept record; restic repacks
//! partly used packs for the same reason.
//!
//! The rewrite keeps each snapshot's id, host, paths, tags, time and
//! figures; its tree is the same but for where the files' bytes are. A
//! record is replaced whole (one SPN write), so a crash leaves every
//! snapshot pointing at the old object or at the new one, both complete;
//! the next prune deletes whichever no snapshot uses.
//!
//! The new object does not deduplicate against anything: its chunks get
//! new keys (a chunk the new object shared with the old one under the old
//! key would keep the old key alive).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use chunker::{Encoder, Manifest, Params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::{ObjectCap, Repo, Snapshot};
use crate::run::Uploader;

/// One object repacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repacked {
    /// The old object's manifest CID (deleted by the prune that follows).
    pub object: String,
    /// Its length.
    pub length: u64,
    /// The bytes kept snapshots still use (what the new object holds).
    pub live: u64,
    /// The new object's manifest CID (none when nothing was live).
    pub new_object: Option<String>,
}

/// What repacking did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepackReport {
    /// The objects repacked.
    pub repacked: Vec<Repacked>,
    /// The snapshots whose records now point at the new objects.
    pub snapshots_rewritten: Vec<String>,
    /// Objects whose use could not be worked out, left as they are, and why.
    pub left_alone: Vec<String>,
    /// What went wrong on the way (a tree not read, an object not fetched
    /// or placed): each left its objects as they were.
    pub problems: Vec<String>,
}

/// Byte ranges `(start, end)`, sorted and merged (empty ones dropped).
pub(crate) fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|r| r.1 > r.0);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Where each live range of an old object lands in the new one.
#[derive(Debug)]
pub(crate) struct Relocation {
    /// (old start, old end, new start), sorted.
    ranges: Vec<(u64, u64, u64)>,
}

impl Relocation {
    pub(crate) fn new(merged: &[(u64, u64)]) -> Relocation {
        let mut at = 0;
        let ranges = merged
            .iter()
            .map(|&(s, e)| {
                let r = (s, e, at);
                at += e - s;
                r
            })
            .collect();
        Relocation { ranges }
    }

    /// The new object's length.
    pub(crate) fn live(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.2 + (r.1 - r.0))
    }

    /// The new offset of `len` bytes at `offset` (None if they are not all live).
    pub(crate) fn map(&self, offset: u64, len: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.0 <= offset).checked_sub(1)?;
        let (s, e, new) = self.ranges[i];
        (offset.checked_add(len)? <= e).then_some(new + (offset - s))
    }
}

/// Whether an object of `length` bytes with `live` of them used is repacked:
/// more than `max_unused_pct` percent of it unused.
pub(crate) fn worth_it(length: u64, live: u64, max_unused_pct: u8) -> bool {
    let unused = length.saturating_sub(live);
    unused > 0 && u128::from(unused) * 100 > u128::from(length) * u128::from(max_unused_pct)
}

/// Reads the live ranges of a file, one after another.
struct LiveReader {
    file: std::fs::File,
    ranges: Vec<(u64, u64)>,
    next: usize,
    left: u64,
}

impl LiveReader {
    fn open(path: &Path, ranges: Vec<(u64, u64)>) -> std::io::Result<LiveReader> {
        Ok(LiveReader { file: std::fs::File::open(path)?, ranges, next: 0, left: 0 })
    }
}

impl Read for LiveReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.left == 0 {
            let Some(&(s, e)) = self.ranges.get(self.next) else { return Ok(0) };
            self.next += 1;
            self.file.seek(SeekFrom::Start(s))?;
            self.left = e - s;
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the object ended early"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Encode `input` as a new object of the session `job`, under fresh keys
/// and salt, deduplicating against nothing.
async fn encode_fresh(
    repo: &Repo,
    (job, parity_here): (u64, bool),
    params: Params,
    input: impl Read + Send + 'static,
    progress: Option<(Arc<dyn client::Progress>, u64)>,
) -> Result<chunker::Encoded> {
    let (spn, secret) = (repo.spn.clone(), repo.key.tenant_secret());
    tokio::task::spawn_blocking(move || -> Result<chunker::Encoded> {
        let mut up = Uploader::new(spn, job, false, parity_here);
        if let Some((p, total)) = &progress {
            p.start("repack", *total);
        }
        let r = Encoder::new(params, &secret)?.with_data_keys(rand::random()).with_salt(rand::random()).encode(
            std::io::BufReader::with_capacity(1 << 20, input),
            &mut up,
            &mut |d| {
                if let Some((p, _)) = &progress {
                    p.set(d);
                }
            },
        );
        up.finish()?;
        if let Some((p, _)) = &progress {
            p.finish();
        }
        Ok(r?)
    })
    .await
    .map_err(|e| Error::Invalid(format!("the encoder stopped: {e}")))?
}

/// Remove what a repack left in the scratch folder (plaintext of objects).
fn sweep(scratch: &Path) {
    let Ok(rd) = std::fs::read_dir(scratch) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("repack-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Repack the data objects of `snaps` with more than `max_unused_pct`
/// percent unused, among `eligible` (old enough to delete afterwards).
/// A snapshot whose tree cannot be read, or an object that cannot be
/// fetched or placed, is left as it is and said in the report: the
/// deletion that follows must run all the same.
pub(crate) async fn repack(
    repo: &Repo,
    net: &net::Client,
    snaps: &[Snapshot],
    eligible: &HashSet<String>,
    max_unused_pct: u8,
    progress: Arc<dyn client::Progress>,
) -> Result<RepackReport> {
    let mut report = RepackReport::default();
    // What every kept snapshot's files use of each data object, merged as
    // each tree is read (one tree in memory at a time).
    let mut caps: HashMap<String, ObjectCap> = HashMap::new();
    let mut uses: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut bad: BTreeMap<String, String> = BTreeMap::new();
    for s in snaps {
        let tree = match repo.tree(Some(net), s).await {
            Ok(t) => t,
            Err(e) => {
                report.problems.push(format!(
                    "snapshot {}: its tree cannot be read ({e}); its objects are left as they are",
                    s.id
                ));
                for cap in &s.data {
                    bad.insert(cap.manifest.clone(), format!("used by snapshot {}, whose tree cannot be read", s.id));
                }
                continue;
            }
        };
        for cap in &s.data {
            let first = caps.entry(cap.manifest.clone()).or_insert_with(|| cap.clone());
            // Every snapshot must agree on what the object is.
            if first != cap {
                bad.insert(
                    cap.manifest.clone(),
                    format!("snapshot {} names it with another length, hash or key", s.id),
                );
            }
            uses.entry(cap.manifest.clone()).or_default();
        }
        let mut touched: HashSet<&str> = HashSet::new();
        for e in &tree.entries {
            let Some(d) = e.data.filter(|_| e.kind == crate::tree::Kind::File) else { continue };
            let Some(cap) = s.data.get(d.object as usize) else { continue };
            match d.offset.checked_add(e.size).filter(|end| *end <= cap.length) {
                Some(end) => {
                    uses.entry(cap.manifest.clone()).or_default().push((d.offset, end));
                    touched.insert(&cap.manifest);
                }
                None => {
                    bad.insert(cap.manifest.clone(), format!("a file of snapshot {} points past its end", s.id));
                }
            }
        }
        for cid in touched {
            if let Some(u) = uses.get_mut(cid) {
                *u = merge(std::mem::take(u));
            }
        }
    }
    // A put-only host compares its next run with its own last snapshot and
    // reuses that snapshot's objects by name: repacking them away would make
    // that run fail and the one after it upload everything again.
    let mut newest: HashMap<(&str, &str, &[String]), &Snapshot> = HashMap::new();
    for s in snaps {
        if let Some(by) = &s.added_by {
            newest
                .entry((by.as_str(), s.host.as_str(), s.paths.as_slice()))
                .and_modify(|n| {
                    if s.time_ns >= n.time_ns {
                        *n = s;
                    }
                })
                .or_insert(s);
        }
    }
    let put_only_last: HashSet<&str> =
        newest.values().flat_map(|s| s.data.iter().map(|c| c.manifest.as_str())).collect();
    let mut moves: BTreeMap<String, (Relocation, Vec<(u64, u64)>)> = BTreeMap::new();
    for (cid, u) in uses {
        if bad.contains_key(&cid) || !eligible.contains(&cid) || put_only_last.contains(cid.as_str()) {
            continue;
        }
        let merged = merge(u);
        let rel = Relocation::new(&merged);
        if worth_it(caps[&cid].length, rel.live(), max_unused_pct) {
            moves.insert(cid, (rel, merged));
        }
    }
    report.left_alone = bad.iter().map(|(c, why)| format!("{c}: {why}")).collect();
    if moves.is_empty() {
        return Ok(report);
    }
    let scratch = repo.scratch_dir()?;
    sweep(&scratch);
    // Each object in a session of its own: one that fails leaves the others done.
    let mut new_caps: HashMap<String, (Relocation, Option<ObjectCap>)> = HashMap::new();
    for (cid, (rel, ranges)) in moves {
        let old = &caps[&cid];
        let live = rel.live();
        if live == 0 {
            report.repacked.push(Repacked { object: cid.clone(), length: old.length, live, new_object: None });
            new_caps.insert(cid, (rel, None));
            continue;
        }
        let r = repack_object(repo, net, old, ranges, live, &scratch, progress.clone()).await;
        sweep(&scratch);
        match r {
            Ok(cap) => {
                report.repacked.push(Repacked {
                    object: cid.clone(),
                    length: old.length,
                    live,
                    new_object: Some(cap.manifest.clone()),
                });
                new_caps.insert(cid, (rel, Some(cap)));
            }
            Err(e) => report.problems.push(format!("object {cid} not repacked: {e}")),
        }
    }
    // Then each snapshot that uses a repacked object: its tree rewritten,
    // placed and committed before its record names it.
    for s in snaps.iter().filter(|s| s.data.iter().any(|c| new_caps.contains_key(&c.manifest))) {
        match rewrite(repo, net, s, &new_caps).await {
            Ok(true) => report.snapshots_rewritten.push(s.id.clone()),
            Ok(false) => {}
            Err(e) => report.problems.push(format!("snapshot {} not rewritten (it keeps the old object): {e}", s.id)),
        }
    }
    Ok(report)
}

/// Fetch `old`, encode its live `ranges` as a new object in a session of
/// its own, commit it; its capability.
async fn repack_object(
    repo: &Repo,
    net: &net::Client,
    old: &ObjectCap,
    ranges: Vec<(u64, u64)>,
    live: u64,
    scratch: &Path,
    progress: Arc<dyn client::Progress>,
) -> Result<ObjectCap> {
    let cid = &old.manifest;
    let tmp = scratch.join(format!("repack-{}", &cid[..cid.len().min(24)]));
    repo.fetch_object(net, old, &tmp, progress.clone()).await?;
    // The old object's coding and chunking; fresh keys and salt.
    let m = Manifest::from_bytes_with_cid(&repo.spn.manifest(cid, 256 << 20)?, &cid.parse()?, &Default::default())?;
    let reader = LiveReader::open(&tmp, ranges).map_err(Error::file("reading", &tmp))?;
    let session = repo.spn.open_session(repo.name())?;
    let job = session.job;
    let placed = async {
        let enc =
            encode_fresh(repo, (job, session.parity_here), *m.params(), reader, Some((progress.clone(), live))).await?;
        let cap = ObjectCap::of(&enc)?;
        if cap.length != live {
            return Err(Error::Invalid(format!("{} bytes encoded where {live} are live", cap.length)));
        }
        repo.spn.commit(job, &[enc.manifest.to_bytes()], &[])?;
        Ok(cap)
    }
    .await;
    if placed.is_err() {
        let _ = repo.spn.abandon(job);
    }
    placed
}

/// Rewrite snapshot `s` to use the new objects: its tree (files moved),
/// placed and committed, then its record replaced (same id). False if the
/// snapshot was forgotten meanwhile.
async fn rewrite(
    repo: &Repo,
    net: &net::Client,
    s: &Snapshot,
    new_caps: &HashMap<String, (Relocation, Option<ObjectCap>)>,
) -> Result<bool> {
    let mut tree = repo.tree(Some(net), s).await?;
    // The snapshot's objects: kept, replaced, or dropped (nothing live).
    let mut data: Vec<ObjectCap> = Vec::new();
    let mut index: Vec<Option<u32>> = Vec::new();
    for cap in &s.data {
        let now = match new_caps.get(&cap.manifest) {
            Some((_, replaced)) => replaced.clone(),
            None => Some(cap.clone()),
        };
        index.push(now.map(|c| {
            data.push(c);
            (data.len() - 1) as u32
        }));
    }
    for e in &mut tree.entries {
        let is_file = e.kind == crate::tree::Kind::File;
        let Some(d) = e.data.as_mut() else { continue };
        let Some(cap) = s.data.get(d.object as usize) else { continue };
        if !is_file {
            // Only files have bytes (a tree that says otherwise was not written by a run).
            e.data = None;
            continue;
        }
        match (index[d.object as usize], new_caps.get(&cap.manifest)) {
            (Some(i), None) => d.object = i,
            (Some(i), Some((rel, _))) => {
                // A file of zero bytes has no range: any offset reads nothing.
                d.offset = if e.size == 0 {
                    0
                } else {
                    rel.map(d.offset, e.size)
                        .ok_or_else(|| Error::Invalid("a file is not in the live ranges".to_string()))?
                };
                d.object = i;
            }
            (None, _) if e.size == 0 => e.data = None,
            (None, _) => return Err(Error::Invalid("it uses an object found unused".to_string())),
        }
    }
    let bytes = tree.to_bytes()?;
    let m = Manifest::from_bytes_with_cid(
        &repo.spn.manifest(&s.tree.manifest, 256 << 20)?,
        &s.tree.manifest.parse()?,
        &Default::default(),
    )?;
    let session = repo.spn.open_session(repo.name())?;
    let job = session.job;
    let placed = async {
        let enc =
            encode_fresh(repo, (job, session.parity_here), *m.params(), std::io::Cursor::new(bytes.clone()), None)
                .await?;
        let cap = ObjectCap::of(&enc)?;
        // Every object the record will name: the SPN refuses if one is gone
        // (another prune deleted it) and restarts their grace, so no prune
        // deletes them before the record below names them.
        let uses: Vec<String> = data.iter().map(|c| c.manifest.clone()).collect();
        repo.spn.commit(job, &[enc.manifest.to_bytes()], &uses)?;
        Ok::<_, Error>(cap)
    }
    .await;
    let tree_cap = match placed {
        Ok(c) => c,
        Err(e) => {
            let _ = repo.spn.abandon(job);
            return Err(e);
        }
    };
    // A snapshot forgotten meanwhile stays forgotten (a forget between this
    // check and the write below is undone: run one prune at a time).
    if repo.spn.record(repo.name(), &format!("snap-{}", s.id))?.is_none() {
        return Ok(false);
    }
    let mut new = s.clone();
    new.tree = tree_cap;
    new.data = data;
    new.added_by = None;
    // Written again by the full key, but not made its own: a snapshot it
    // did not mark stays unmarked.
    repo.save_snapshot(&new, s.added_by.is_none())?;
    repo.cache_tree(&s.id, &bytes)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_relocate() {
        let m = merge(vec![(100, 150), (0, 10), (120, 170), (10, 15), (300, 300)]);
        assert_eq!(m, vec![(0, 15), (100, 170)]);
        let r = Relocation::new(&m);
        assert_eq!(r.live(), 85);
        assert_eq!(r.map(0, 10), Some(0));
        assert_eq!(r.map(10, 5), Some(10));
        assert_eq!(r.map(100, 50), Some(15));
        assert_eq!(r.map(120, 50), Some(35));
        assert_eq!(r.map(14, 2), None, "crosses a hole");
        assert_eq!(r.map(50, 1), None, "in a hole");
        assert_eq!(r.map(169, 2), None, "past the end");
    }

    #[test]
    fn an_object_is_repacked_past_the_threshold_only() {
        assert!(!worth_it(1000, 1000, 0), "nothing unused");
        assert!(worth_it(1000, 999, 0));
        assert!(!worth_it(1000, 900, 10), "exactly 10% unused is not more than 10%");
        assert!(worth_it(1000, 899, 10));
        assert!(!worth_it(1000, 0, 100), "100% never repacks");
        assert!(worth_it(u64::MAX, 0, 99), "no overflow");
    }

    #[test]
    fn the_live_reader_yields_the_ranges_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("o");
        std::fs::write(&p, b"0123456789abcdef").expect("write");
        let mut r = LiveReader::open(&p, vec![(1, 3), (10, 12), (15, 16)]).expect("open");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, b"12abf");
        let mut short = LiveReader::open(&p, vec![(14, 20)]).expect("open");
        assert!(short.read_to_end(&mut Vec::new()).is_err(), "a short object is an error, not a short read");
    }
}
