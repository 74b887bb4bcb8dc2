//! `ionshard drive sync DIR`: a folder on this client kept in sync with a
//! folder of the drive, both ways ([`drive::sync`] decides what to do; this
//! scans, stores, fetches and renames). As a daemon it runs a pass when the
//! folder changes (inotify, through `notify`) and every `--interval` (the
//! drive's changes, and a safety net for missed notifications); `--once`
//! runs one pass.
//!
//! Its state (the last sync's view, and downloads under way) lives in
//! `DIR/.ionshard-sync/`, which is never synced. A file is replaced or
//! removed here only if it is still as the pass saw it; a file is named in
//! the drive only if the drive's version is still the one the pass saw:
//! anything that changed meanwhile waits for the next pass, where it is a
//! conflict if both sides changed. Nothing is overwritten silently:
//! conflicts keep both copies, removals in the drive go to its trash.
//! A pass killed halfway loses nothing: an upload run again sends only the
//! shards the devices lack; a download resumes from its partial file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drive::sync::{Action, Base, BaseFile, LocalFile, STATE_FORMAT, Side};
use drive::tree::{Entry, Version};
use serde_json::json;
use std::os::unix::fs::MetadataExt;

use crate::drive_files::On;
use crate::progress::Bars;

/// The folder of the sync's own state, inside the synced folder.
pub(crate) const STATE_DIR: &str = ".ionshard-sync";

/// Names a tree write every this many uploads, at least (a long first pass
/// killed halfway keeps what it named).
const NAME_EVERY: usize = 200;

/// `drive sync`'s settings.
pub(crate) struct SyncArgs {
    pub(crate) dir: PathBuf,
    pub(crate) remote: String,
    pub(crate) once: bool,
    pub(crate) interval: Duration,
    pub(crate) name: Option<String>,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn ctime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// A local file's identity as the sync compares it (not its content).
fn stamp(m: &std::fs::Metadata, blake3: String) -> LocalFile {
    LocalFile { blake3, len: m.len(), mtime_ns: mtime_ns(m), ctime_ns: ctime_ns(m), ino: m.ino() }
}

fn same_stamp(m: &std::fs::Metadata, f: &LocalFile) -> bool {
    m.is_file() && m.len() == f.len && mtime_ns(m) == f.mtime_ns && ctime_ns(m) == f.ctime_ns && m.ino() == f.ino
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this client".into())
}

/// What a pass did.
#[derive(Debug, Default, serde::Serialize)]
struct Pass {
    uploaded: Vec<String>,
    downloaded: Vec<String>,
    removed_here: Vec<String>,
    removed_there: Vec<String>,
    conflicts: Vec<String>,
    /// Changed on a side while the pass ran: left for the next pass.
    deferred: Vec<String>,
    /// Paths that failed this pass (their base kept): tried again next pass.
    errors: Vec<String>,
    skipped: Vec<String>,
    shard_bytes: u64,
    resumed_bytes: u64,
    bytes_down: u64,
    /// Shards of uploads dropped (their file changed while it was read):
    /// deleted once what the pass stored meanwhile is named, not before, as
    /// another upload waiting to be named may use the same shards.
    #[serde(skip)]
    orphans: Vec<String>,
}

impl Pass {
    fn changed(&self) -> bool {
        !(self.uploaded.is_empty()
            && self.downloaded.is_empty()
            && self.removed_here.is_empty()
            && self.removed_there.is_empty()
            && self.conflicts.is_empty())
    }
}

/// A change to the drive's tree, applied with the others at the end of a
/// pass (or every [`NAME_EVERY`] uploads), each only if what it expects
/// is still there.
enum TreeOp {
    Add { rel: String, version: Version, over: Option<String> },
    Remove { rel: String, manifest: String },
    Mkdir(String),
    Rmdir(String),
}

struct Syncer {
    d: drive::Drive,
    dir: PathBuf,
    remote: String,
    host: String,
    json: bool,
    state: PathBuf,
}

/// The drive path of `rel` under the synced drive folder.
fn join_remote(remote: &str, rel: &str) -> String {
    if remote == "/" { format!("/{rel}") } else { format!("{remote}/{rel}") }
}

impl Syncer {
    fn load_base(&self) -> Result<Base> {
        let path = self.state.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let b: Base = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a sync state: remove it to start over", path.display()))?;
                if b.format != STATE_FORMAT {
                    bail!("{} has sync state format {}, this build reads {STATE_FORMAT}", path.display(), b.format);
                }
                if b.remote != self.remote {
                    bail!(
                        "{} is synced with the drive's {}, not {}: give --remote {} (or sync another folder)",
                        self.dir.display(),
                        b.remote,
                        self.remote,
                        b.remote
                    );
                }
                Ok(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Base { format: STATE_FORMAT, remote: self.remote.clone(), ..Base::default() })
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_base(&self, b: &Base) -> Result<()> {
        client::write_atomic(&self.state.join("state.json"), &serde_json::to_vec(b)?)?;
        Ok(())
    }

    /// The local folder now; files whose length, times and inode match
    /// the base are not read again. What cannot be synced (links, special
    /// files, unreadable ones, names the drive does not take, another
    /// sync's state folder) is skipped, and said: never taken as removed.
    fn scan(&self, base: &Base, said: &mut Vec<String>) -> Result<Side<LocalFile>> {
        let mut side = Side::default();
        let mut stack = vec![(self.dir.clone(), String::new())];
        while let Some((abs, rel)) = stack.pop() {
            let rd = match std::fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if rel.is_empty() => return Err(e).with_context(|| format!("reading {}", abs.display())),
                Err(e) => {
                    said.push(format!("{rel}: {e}"));
                    side.skipped.insert(rel);
                    continue;
                }
            };
            for e in rd {
                let Ok(e) = e else { continue };
                let name = e.file_name();
                let Some(name) = name.to_str() else {
                    said.push(format!("{}: not UTF-8", e.path().display()));
                    continue;
                };
                let r = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
                let ft = match e.file_type() {
                    Ok(ft) => ft,
                    Err(_) => {
                        side.skipped.insert(r);
                        continue;
                    }
                };
                if name == STATE_DIR {
                    side.skipped.insert(r);
                    continue;
                }
                if drive::tree::normal(&format!("{}/{r}", self.remote)).is_err() {
                    said.push(format!("{r}: a name the drive does not take"));
                    side.skipped.insert(r);
                    continue;
                }
                if ft.is_dir() {
                    side.dirs.insert(r.clone());
                    stack.push((e.path(), r));
                } else if ft.is_file() {
                    let Ok(m) = e.metadata() else {
                        side.skipped.insert(r);
                        continue;
                    };
                    let hash = match base.files.get(&r) {
                        Some(b)
                            if b.len == m.len()
                                && b.mtime_ns == mtime_ns(&m)
                                && b.ctime_ns == ctime_ns(&m)
                                && b.ino == m.ino() =>
                        {
                            Ok(b.blake3.clone())
                        }
                        _ => hash_file(&e.path()),
                    };
                    match hash {
                        Ok(h) => {
                            side.files.insert(r, stamp(&m, h));
                        }
                        Err(err) => {
                            said.push(format!("{r}: {err}"));
                            side.skipped.insert(r);
                        }
                    }
                } else {
                    said.push(format!("{r}: not a regular file or folder"));
                    side.skipped.insert(r);
                }
            }
        }
        Ok(side)
    }

    /// The local folders now (a walk that reads no file: the end of a pass
    /// needs only these).
    fn local_dirs(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut stack = vec![(self.dir.clone(), String::new())];
        while let Some((abs, rel)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&abs) else { continue };
            for e in rd.flatten() {
                let (Ok(ft), Some(name)) = (e.file_type(), e.file_name().to_str().map(str::to_string)) else {
                    continue;
                };
                if !ft.is_dir() || name == STATE_DIR {
                    continue;
                }
                let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                out.insert(r.clone());
                stack.push((e.path(), r));
            }
        }
        out
    }

    /// The drive folder now, and the number of its tree.
    async fn remote_side(&self) -> Result<(Side<Version>, u64)> {
        let read = self.d.read().await?;
        let (tree, seq) = (read.tree, read.root.seq);
        let mut side = Side::default();
        let prefix = if self.remote == "/" { "/".to_string() } else { format!("{}/", self.remote) };
        match tree.get(&self.remote) {
            Some(Entry::Dir { .. }) => {}
            None if self.remote == "/" => {}
            None => {} // made at the first upload
            Some(Entry::File { .. }) => bail!("{} is a file in the drive, not a folder", self.remote),
        }
        for (path, e) in tree.entries.range(prefix.clone()..) {
            let Some(rel) = path.strip_prefix(&prefix) else { break };
            if rel.split('/').any(|part| part == STATE_DIR) {
                side.skipped.insert(rel.to_string());
                continue;
            }
            match e {
                Entry::Dir { .. } => {
                    side.dirs.insert(rel.to_string());
                }
                Entry::File { versions } => {
                    if let Some(v) = versions.last() {
                        side.files.insert(rel.to_string(), v.clone());
                    }
                    side.history.entry(rel.to_string()).or_default().extend(versions.iter().map(|v| v.blake3.clone()));
                }
            }
        }
        // What the trash keeps counts as known: a removal is taken over
        // only if the drive holds what it removed.
        for t in &tree.trash {
            for (path, e) in &t.entries {
                if let (Some(rel), Entry::File { versions }) = (path.strip_prefix(&prefix), e) {
                    side.history.entry(rel.to_string()).or_default().extend(versions.iter().map(|v| v.blake3.clone()));
                }
            }
        }
        Ok((side, seq))
    }

    /// Is the local file at `rel` still `was` (absent if `None`)?
    fn still(&self, rel: &str, was: Option<&LocalFile>) -> bool {
        if !self.real_folders(rel) {
            return false;
        }
        match (std::fs::symlink_metadata(self.dir.join(rel)), was) {
            (Err(e), None) => e.kind() == std::io::ErrorKind::NotFound,
            (Ok(m), Some(f)) => same_stamp(&m, f),
            _ => false,
        }
    }

    /// Is every folder above `rel` a real folder in the synced one (no
    /// link that would lead a write outside it)? Missing ones count as
    /// real: they are made.
    fn real_folders(&self, rel: &str) -> bool {
        let mut at = self.dir.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
                _ => return false,
            }
        }
        true
    }

    /// Fetch `v` into the state folder, then put it at `rel` if the local
    /// file there is still `over`; the base entry of what was written.
    async fn download(
        &self,
        rel: &str,
        v: &Version,
        over: Option<&LocalFile>,
        bars: &Arc<Bars>,
    ) -> Result<Option<BaseFile>> {
        let tmp = self.state.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // Named by content: a killed pass's partial download resumes.
        let part = tmp.join(&v.blake3);
        self.d.fetch(v, &part, bars.clone()).await.with_context(|| format!("fetching {rel}"))?;
        if !self.still(rel, over) {
            let _ = std::fs::remove_file(&part);
            return Ok(None);
        }
        let dest = self.dir.join(rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        // The stamp of what is written, taken before it takes the name (a
        // rename keeps the inode and times but for the change time, so the
        // next scan reads it once again and finds it the same).
        let m = std::fs::metadata(&part)?;
        let written = stamp(&m, v.blake3.clone()).to_base();
        std::fs::rename(&part, &dest).with_context(|| format!("writing {}", dest.display()))?;
        Ok(Some(written))
    }

    /// Store the local file at `rel` (against `over`, sending only what
    /// changed); the version and the file's base entry as it was read.
    /// A file that changed while it was read is not named: next pass.
    async fn upload(
        &self,
        rel: &str,
        over: Option<&Version>,
        bars: &Arc<Bars>,
        pass: &mut Pass,
    ) -> Result<Option<(Version, BaseFile)>> {
        let path = self.dir.join(rel);
        let Ok(before) = std::fs::symlink_metadata(&path) else { return Ok(None) };
        let s = self.d.store_from(&path, now(), bars.clone(), over).await.with_context(|| format!("storing {rel}"))?;
        pass.shard_bytes += s.shard_bytes;
        pass.resumed_bytes += s.resumed_bytes;
        let read = stamp(&before, s.version.blake3.clone());
        match std::fs::symlink_metadata(&path) {
            Ok(after) if same_stamp(&after, &read) && after.len() == s.version.len => {
                Ok(Some((s.version, read.to_base())))
            }
            _ => {
                // Being written: what was stored is dropped (but for shards
                // another version names), and the file waits.
                pass.orphans.extend(s.version.shards.iter().chain([&s.version.stored]).cloned());
                pass.deferred.push(rel.to_string());
                Ok(None)
            }
        }
    }

    /// Apply `ops` to the drive's tree, each only if the drive is still as
    /// the pass saw it; the paths left for the next pass.
    async fn name(&self, ops: &mut Vec<TreeOp>) -> Result<Vec<String>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let remote = self.remote.clone();
        let taken = std::mem::take(ops);
        let (deferred, gone) = self
            .d
            .update(|t| {
                let mut deferred = Vec::new();
                let mut dropped = Vec::new();
                let newest = |t: &drive::tree::Tree, p: &str| match t.get(p) {
                    Some(Entry::File { versions }) => versions.last().map(|v| v.manifest.clone()),
                    _ => None,
                };
                if remote != "/" {
                    t.mkdir(&remote, now())?;
                }
                for op in &taken {
                    match op {
                        TreeOp::Add { rel, version, over } => {
                            let p = join_remote(&remote, rel);
                            if drive::tree::normal(&p).ok().as_deref() != Some(p.as_str())
                                || newest(t, &p) != *over
                                || matches!(t.get(&p), Some(Entry::Dir { .. }))
                            {
                                deferred.push(rel.clone());
                                continue;
                            }
                            match t.add_version(&p, version.clone(), now()) {
                                Ok(d) => dropped.extend(d),
                                Err(_) => deferred.push(rel.clone()),
                            }
                        }
                        TreeOp::Remove { rel, manifest } => {
                            let p = join_remote(&remote, rel);
                            if newest(t, &p).as_deref() != Some(manifest.as_str()) || t.remove(&p, now()).is_err() {
                                deferred.push(rel.clone());
                            }
                        }
                        TreeOp::Mkdir(rel) => {
                            if t.mkdir(&join_remote(&remote, rel), now()).is_err() {
                                deferred.push(rel.clone());
                            }
                        }
                        TreeOp::Rmdir(rel) => {
                            let p = join_remote(&remote, rel);
                            let inside = format!("{p}/");
                            let empty =
                                t.entries.range(inside.clone()..).next().is_none_or(|(k, _)| !k.starts_with(&inside));
                            if !empty || t.remove(&p, now()).is_err() {
                                deferred.push(rel.clone());
                            }
                        }
                    }
                }
                dropped.extend(t.purge(now(), drive::tree::TRASH_SECS));
                Ok((deferred, t.unreferenced(&dropped)))
            })
            .await?;
        self.d.delete(&gone).await;
        // What a deferred upload stored is named by nothing: dropped (the
        // next pass stores it again, sending what the devices lack).
        let orphans: Vec<String> = taken
            .iter()
            .filter_map(|op| match op {
                TreeOp::Add { rel, version, .. } if deferred.contains(rel) => Some(version),
                _ => None,
            })
            .flat_map(|v| v.shards.iter().chain([&v.stored]).cloned())
            .collect();
        if !orphans.is_empty() {
            self.d.delete(&self.d.unnamed(&orphans).await).await;
        }
        Ok(deferred)
    }

    /// One pass: scan both sides, plan, apply; the new base saved as it goes.
    async fn pass(&self, bars: &Arc<Bars>) -> Result<Pass> {
        let mut pass = Pass::default();
        let base = self.load_base()?;
        let local = self.scan(&base, &mut pass.skipped)?;
        let (remote, seq) = self.remote_side().await?;
        if seq < base.seq {
            bail!(
                "the devices that answered keep an older tree of the drive (number {seq}) than the last sync saw \
                 ({}): waiting for the others rather than taking what they lack as removed",
                base.seq
            );
        }
        let actions = drive::sync::plan(&base, &local, &remote, &self.host, now());
        let mut next = base.clone();
        let mut ops = Vec::new();
        // Base entries that wait for their tree op: rel → entry.
        let mut waiting: BTreeMap<String, Option<BaseFile>> = BTreeMap::new();
        let mut uploads = 0;
        for a in actions {
            // One path's trouble is that path's: said, its base kept, tried
            // again next pass; the others go on.
            let what = format!("{a:?}").chars().take(200).collect::<String>();
            let done = self.apply(a, bars, &mut pass, &mut next, &mut ops, &mut waiting, &mut uploads).await;
            if let Err(e) = done {
                pass.errors.push(format!("{e:#} ({what})"));
            }
            if uploads >= NAME_EVERY {
                uploads = 0;
                self.settle(&mut ops, &mut waiting, &mut next, &mut pass).await?;
            }
        }
        self.settle(&mut ops, &mut waiting, &mut next, &mut pass).await?;
        // Folders both sides have now, and the drive's number, as the next
        // pass's base.
        let (remote_now, seq_now) = self.remote_side().await?;
        next.dirs = self.local_dirs().intersection(&remote_now.dirs).cloned().collect();
        next.seq = seq_now.max(seq);
        self.save_base(&next)?;
        Ok(pass)
    }

    /// Do one action.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        a: Action,
        bars: &Arc<Bars>,
        pass: &mut Pass,
        next: &mut Base,
        ops: &mut Vec<TreeOp>,
        waiting: &mut BTreeMap<String, Option<BaseFile>>,
        uploads: &mut usize,
    ) -> Result<()> {
        match a {
            Action::Same { rel, local } => {
                next.files.insert(rel, local.to_base());
            }
            Action::Forget { rel } => {
                next.files.remove(&rel);
            }
            Action::Upload { rel, over } => {
                if let Some((version, b)) = self.upload(&rel, over.as_ref(), bars, pass).await? {
                    ops.push(TreeOp::Add { rel: rel.clone(), version, over: over.map(|v| v.manifest) });
                    waiting.insert(rel.clone(), Some(b));
                    pass.uploaded.push(rel);
                    *uploads += 1;
                }
            }
            Action::Download { rel, version, over } => {
                match self.download(&rel, &version, over.as_ref(), bars).await? {
                    Some(b) => {
                        pass.bytes_down += b.len;
                        next.files.insert(rel.clone(), b);
                        pass.downloaded.push(rel);
                    }
                    None => pass.deferred.push(rel),
                }
            }
            Action::RemoveRemote { rel, version } => {
                ops.push(TreeOp::Remove { rel: rel.clone(), manifest: version.manifest });
                waiting.insert(rel.clone(), None);
                pass.removed_there.push(rel);
            }
            Action::RemoveLocal { rel, file } => {
                if self.still(&rel, Some(&file)) {
                    std::fs::remove_file(self.dir.join(&rel)).with_context(|| format!("removing {rel}"))?;
                    next.files.remove(&rel);
                    pass.removed_here.push(rel);
                } else {
                    pass.deferred.push(rel);
                }
            }
            Action::Conflict { rel, keep_as, local, version } => {
                // The local copy steps aside (here, then in the drive); the
                // drive's takes the name.
                if !self.still(&rel, Some(&local)) || self.dir.join(&keep_as).exists() {
                    pass.deferred.push(rel);
                    return Ok(());
                }
                std::fs::rename(self.dir.join(&rel), self.dir.join(&keep_as))
                    .with_context(|| format!("keeping {rel} as {keep_as}"))?;
                pass.conflicts.push(format!("{rel} -> {keep_as}"));
                // The copy is a new local file now: if its upload does not
                // happen this pass, the next one uploads it.
                if let Some((v, b)) = self.upload(&keep_as, None, bars, pass).await? {
                    ops.push(TreeOp::Add { rel: keep_as.clone(), version: v, over: None });
                    waiting.insert(keep_as.clone(), Some(b));
                }
                if let Some(b) = self.download(&rel, &version, None, bars).await? {
                    next.files.insert(rel.clone(), b);
                }
            }
            Action::MkdirRemote(d) => ops.push(TreeOp::Mkdir(d)),
            Action::MkdirLocal(d) => {
                if !self.real_folders(&format!("{d}/x")) {
                    bail!("{d} is not a real folder here (a link or a file on the way)");
                }
                std::fs::create_dir_all(self.dir.join(&d)).with_context(|| format!("creating {d}"))?;
            }
            Action::RmdirRemote(d) => ops.push(TreeOp::Rmdir(d)),
            Action::RmdirLocal(d) => {
                // Only if empty: anything put there meanwhile keeps it.
                let _ = std::fs::remove_dir(self.dir.join(&d));
            }
        }
        Ok(())
    }

    /// Name what waits in the tree; the base learns what was named.
    async fn settle(
        &self,
        ops: &mut Vec<TreeOp>,
        waiting: &mut BTreeMap<String, Option<BaseFile>>,
        next: &mut Base,
        pass: &mut Pass,
    ) -> Result<()> {
        let deferred = self.name(ops).await?;
        if !pass.orphans.is_empty() {
            let orphans = std::mem::take(&mut pass.orphans);
            self.d.delete(&self.d.unnamed(&orphans).await).await;
        }
        for (rel, b) in std::mem::take(waiting) {
            if deferred.contains(&rel) {
                pass.deferred.push(rel);
                continue;
            }
            match b {
                Some(b) => next.files.insert(rel, b),
                None => next.files.remove(&rel),
            };
        }
        self.save_base(next)?;
        Ok(())
    }

    fn report(&self, p: &Pass, took: Duration) {
        if self.json {
            println!("{}", json!({ "pass": p, "seconds": took.as_secs_f64() }));
            return;
        }
        if !p.changed() && p.deferred.is_empty() && p.errors.is_empty() {
            return;
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (p.uploaded.len(), "up"),
            (p.downloaded.len(), "down"),
            (p.removed_there.len(), "removed in the drive (to its trash)"),
            (p.removed_here.len(), "removed here"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        println!(
            "synced in {:.1} s: {}; {} bytes of shards sent{}",
            took.as_secs_f64(),
            if parts.is_empty() { "nothing to move".to_string() } else { parts.join(", ") },
            p.shard_bytes,
            if p.resumed_bytes > 0 { format!(" ({} already there)", p.resumed_bytes) } else { String::new() }
        );
        for c in &p.conflicts {
            println!("  conflict, both kept: {c}");
        }
        for d in &p.deferred {
            println!("  changed while syncing, next pass: {d}");
        }
        for e in &p.errors {
            println!("  not synced this pass (tried again next): {e}");
        }
    }
}

fn hash_file(p: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// `ionshard drive sync`.
pub(crate) fn run(a: SyncArgs, on: On) -> Result<()> {
    let remote = drive::tree::normal(&a.remote)?;
    let dir = std::fs::canonicalize(&a.dir)
        .with_context(|| format!("{} is not a folder here: make it first", a.dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let state = dir.join(STATE_DIR);
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&state)
        .with_context(|| format!("creating {}", state.display()))?;
    // One sync of a folder at a time.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("lock"))
        .with_context(|| format!("opening {}", state.join("lock").display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| anyhow::anyhow!("{} is being synced by another `drive sync` already", dir.display()))?;
    let rt = crate::node_cmd::runtime()?;
    rt.block_on(async move {
        let (d, _h) = on.open().await?;
        let s = Syncer { d, dir: dir.clone(), remote, host: a.name.unwrap_or_else(host), json: on.json, state };
        let bars = Bars::new(on.json);
        if a.once {
            let t = Instant::now();
            let p = s.pass(&bars).await?;
            s.report(&p, t.elapsed());
            return Ok(());
        }
        // Notified of changes in the folder (not in its state folder).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let skip = s.state.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reads (the pass's own scans open every folder) are not
            // changes; an event with no path (the queue overflowed) may
            // hide any.
            let Ok(ev) = ev else { return };
            let read = matches!(
                ev.kind,
                notify::EventKind::Access(
                    notify::event::AccessKind::Open(_)
                        | notify::event::AccessKind::Read
                        | notify::event::AccessKind::Close(notify::event::AccessMode::Read)
                        | notify::event::AccessKind::Any
                        | notify::event::AccessKind::Other
                )
            );
            if !read && (ev.paths.is_empty() || ev.paths.iter().any(|p| !p.starts_with(&skip))) {
                let _ = tx.send(());
            }
        })
        .context("watching the folder")?;
        notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        if !on.json {
            println!(
                "syncing {} with the drive's {} (every {} s, and on every change here; Ctrl-C stops)",
                dir.display(),
                s.remote,
                a.interval.as_secs()
            );
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut last_error = String::new();
        loop {
            let t = Instant::now();
            // A stop cuts a pass short: a pass is safe to kill.
            let done = tokio::select! {
                r = s.pass(&bars) => r,
                _ = int.recv() => break,
                _ = term.recv() => break,
            };
            match done {
                Ok(p) => {
                    last_error.clear();
                    s.report(&p, t.elapsed());
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if why != last_error {
                        eprintln!(
                            "sync pass failed (tried again at the next change or in {} s): {why}",
                            a.interval.as_secs()
                        );
                        last_error = why;
                    }
                }
            }
            // Wait for a change here, or the interval; changes arriving in
            // a burst make one pass.
            tokio::select! {
                _ = rx.recv() => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(a.interval) => {}
                _ = int.recv() => break,
                _ = term.recv() => break,
            }
        }
        anyhow::Ok(())
    })
}
