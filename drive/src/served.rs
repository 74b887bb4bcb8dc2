//! The drive as a client's local drive node serves it (`ionshard drive
//! serve`), to WebDAV ([`crate::dav`]) and to the web page alike.
//!
//! The node keeps the drive's tree in memory while it serves: listings and
//! metadata come from it, changes are applied to it at once and written to
//! the devices shortly after (every [`FLUSH_EVERY`], and on stop), as one
//! new tree for many changes. Changes are kept as operations until the
//! devices have the tree; if another client wrote meanwhile, the node reads
//! the devices' tree and applies them again on top. A tree nobody here
//! changed is read again after [`FRESH_FOR`].
//!
//! A file being read is fetched whole into a spool file first (verified
//! against its hash), then served from it, ranges included. A file being
//! written goes to a spool file ([`Upload`]), and is stored on the devices
//! and named in the tree only when the upload ends: an upload cut off
//! halfway leaves nothing visible.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::remote::{Drive, RootId};
use crate::tree::{self, Tree, Version};

/// How often pending changes are written to the devices.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How long a tree read from the devices is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// A change to the served drive, kept until the devices have a tree with it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new version of a file (made by [`Upload::finish`]).
    Add(String, Version),
    /// A folder.
    Mkdir(String),
    /// To the trash.
    Remove(String),
    /// Moved or renamed (content not sent again).
    Rename(String, String),
    /// Copied (content shared).
    Copy(String, String),
    /// WebDAV properties set or removed.
    Props(String, Vec<(bool, tree::Prop)>),
    /// The newest trashed entry at a path, back where it was.
    Untrash(String),
    /// A file's version (0 = oldest) its newest again.
    RestoreVersion(String, usize),
}

fn apply(t: &mut Tree, op: &Change, now: u64) -> Result<Vec<Version>> {
    match op {
        Change::Add(p, v) => t.add_version(p, v.clone(), now),
        Change::Mkdir(p) => t.mkdir(p, now).map(|()| Vec::new()),
        Change::Remove(p) => t.remove(p, now).map(|()| Vec::new()),
        Change::Rename(a, b) => t.rename(a, b, now).map(|()| Vec::new()),
        Change::Copy(a, b) => t.copy_file(a, b, now).map(|()| Vec::new()),
        Change::Props(p, patch) => t.patch_props(p, patch).map(|()| Vec::new()),
        Change::Untrash(p) => t.untrash(p, now).map(|()| Vec::new()),
        Change::RestoreVersion(p, i) => t.restore_version(p, *i, now),
    }
}

struct State {
    tree: Tree,
    root: RootId,
    read_at: Option<Instant>,
    pending: Vec<Change>,
    /// Versions dropped by changes not yet on the devices: their shards
    /// are deleted once the tree that dropped them is.
    doomed: Vec<Version>,
}

/// A drive being served.
pub struct Served {
    drive: Drive,
    spool: PathBuf,
    state: Mutex<State>,
    /// One tree write at a time.
    writing: Mutex<()>,
    /// Uploads under way: while any is, no shard is deleted (the same
    /// content makes the same shards, which an upload may be keeping).
    uploads: AtomicUsize,
    /// Files fetched lately, by content hash, newest last: a client that
    /// reads one file in several ranges at once (rclone does), or again,
    /// fetches it once.
    cache: std::sync::Mutex<Vec<(String, Fetching)>>,
}

/// A file being fetched, or fetched: every reader waits on the one fetch.
type Fetching = Arc<tokio::sync::OnceCell<Arc<Fetched>>>;

/// Files kept fetched at once, at most (besides those being read).
const CACHED: usize = 4;

/// A spool file, removed when dropped (with what a fetch into it left
/// half-done beside it).
#[derive(Debug)]
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        for tail in [".part", ".part.manifest"] {
            let mut p = self.0.clone().into_os_string();
            p.push(tail);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An upload counted while it lives: no shard is deleted meanwhile.
#[derive(Debug)]
struct Counted(Arc<Served>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fetched file (verified against its hash), removed when the last
/// reader is done with it.
#[derive(Debug)]
pub struct Fetched {
    file: std::fs::File,
    _spool: Spool,
}

impl Fetched {
    /// The file, to read at offsets.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("spool", &self.spool).finish_non_exhaustive()
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A file being written: a spool file of the owner's alone, removed when
/// dropped; while it lives, no shard is deleted.
#[derive(Debug)]
pub struct Upload {
    file: std::fs::File,
    spool: Spool,
    counted: Counted,
}

impl Upload {
    /// The spool file.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// The spool file, to write.
    pub fn file_mut(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// The upload is over and `len` bytes long: store it on the devices,
    /// then name it `path` in the tree (a new version if a file is there).
    pub async fn finish(&mut self, path: &str, len: u64) -> Result<Version> {
        let served = &self.counted.0;
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(Error::file("writing the upload to", &self.spool.0))?;
        // A new version of a file there sends only what changed.
        let base = match served.tree().await?.get(path) {
            Some(tree::Entry::File { versions }) => versions.last().cloned(),
            _ => None,
        };
        let stored = served.drive.store_from(&self.spool.0, now(), Arc::new(client::Hidden), base.as_ref()).await?;
        served.change(Change::Add(path.to_string(), stored.version.clone())).await?;
        Ok(stored.version)
    }
}

/// The tree being served, locked: read it, nothing else runs meanwhile.
pub struct Locked<'a>(tokio::sync::MutexGuard<'a, State>);

impl std::ops::Deref for Locked<'_> {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &self.0.tree
    }
}

impl Served {
    /// Serve `drive`, spooling files in `spool` (emptied first).
    pub async fn start(drive: Drive, spool: &Path) -> Result<Arc<Served>> {
        let _ = std::fs::remove_dir_all(spool);
        // Spooled files are plaintext: the owner's alone.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(spool)
            .map_err(Error::file("creating", spool))?;
        let read = drive.read().await?;
        let state = State {
            tree: read.tree,
            root: read.root,
            read_at: Some(Instant::now()),
            pending: Vec::new(),
            doomed: Vec::new(),
        };
        let served = Arc::new(Served {
            drive,
            spool: spool.to_path_buf(),
            state: Mutex::new(state),
            writing: Mutex::new(()),
            uploads: AtomicUsize::new(0),
            cache: Default::default(),
        });
        let weak = Arc::downgrade(&served);
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(s) = weak.upgrade() else { return };
                match s.flush().await {
                    Ok(()) => last.clear(),
                    Err(e) => {
                        // Said once per new trouble, where the owner sees it.
                        let why = e.to_string();
                        if why != last {
                            eprintln!("the drive's changes are not on the devices yet: {why}; retrying");
                            last = why;
                        }
                    }
                }
            }
        });
        Ok(served)
    }

    /// The drive served.
    pub fn drive(&self) -> &Drive {
        &self.drive
    }

    /// The tree, read again from the devices if it is stale and nothing
    /// here is pending.
    pub async fn tree(&self) -> Result<Locked<'_>> {
        let mut st = self.state.lock().await;
        if st.pending.is_empty() && st.read_at.is_none_or(|t| t.elapsed() > FRESH_FOR) {
            match self.drive.read().await {
                Ok(r) if r.root.seq >= st.root.seq => {
                    st.tree = r.tree;
                    st.root = r.root;
                    st.read_at = Some(Instant::now());
                }
                Ok(_) => st.read_at = Some(Instant::now()),
                Err(e) => {
                    tracing::warn!("reading the drive's tree: {e}");
                    return Err(e);
                }
            }
        }
        Ok(Locked(st))
    }

    /// Make a change: at once here, on the devices shortly after.
    pub async fn change(&self, op: Change) -> Result<()> {
        let mut st = self.tree().await?.0;
        let dropped = apply(&mut st.tree, &op, now())?;
        st.doomed.extend(dropped);
        st.pending.push(op);
        Ok(())
    }

    /// Write pending changes to the devices now.
    pub async fn flush(&self) -> Result<()> {
        let _one = self.writing.lock().await;
        let (tree, seq, n) = {
            let st = self.state.lock().await;
            if st.pending.is_empty() {
                return Ok(());
            }
            (st.tree.clone(), st.root, st.pending.len())
        };
        let written = match self.drive.write(seq, &tree).await {
            Ok((root, _)) => Ok(root),
            Err(Error::Device { reason: crate::protocol::Refusal::Stale, .. }) => {
                // Another client wrote; or this tree was taken after all
                // (its write was finished by the vote).
                let fresh = self.drive.read().await?;
                if fresh.tree.to_bytes() == tree.to_bytes() { Ok(fresh.root) } else { Err(fresh) }
            }
            Err(e) => return Err(e),
        };
        match written {
            Ok(root) => {
                let doomed = {
                    let mut st = self.state.lock().await;
                    st.root = root;
                    st.pending.drain(..n);
                    st.read_at = Some(Instant::now());
                    let uploading = self.uploads.load(Ordering::SeqCst) > 0;
                    if !st.pending.is_empty() || uploading {
                        // Still to be written, or an upload may be keeping
                        // the same shards: delete later.
                        Vec::new()
                    } else {
                        let doomed = std::mem::take(&mut st.doomed);
                        st.tree.unreferenced(&doomed)
                    }
                };
                self.drive.delete(&doomed).await;
                Ok(())
            }
            Err(fresh) => {
                // Another client wrote: its tree, with ours on top.
                let mut st = self.state.lock().await;
                let mut tree = fresh.tree;
                let t = now();
                let mut dropped = Vec::new();
                for op in &st.pending {
                    match apply(&mut tree, op, t) {
                        Ok(d) => dropped.extend(d),
                        Err(e) => eprintln!("a change made here no longer applies to the drive ({e}): {op:?}"),
                    }
                }
                st.doomed.extend(dropped);
                st.tree = tree;
                st.root = fresh.root;
                Ok(())
            }
        }
    }

    /// Version `v`'s content in a spool file: fetched once (verified),
    /// shared by every reader meanwhile.
    pub async fn fetched(&self, v: &Version) -> Result<Arc<Fetched>> {
        let cell = {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let cell = match c.iter().position(|(h, _)| *h == v.blake3) {
                Some(i) => c.remove(i).1,
                None => Arc::default(),
            };
            c.push((v.blake3.clone(), cell.clone()));
            if c.len() > CACHED {
                c.remove(0);
            }
            cell
        };
        let got = cell
            .get_or_try_init(|| async {
                // Removed however the fetch ends, a cancelled one included.
                let spool = Spool(self.spool_path());
                self.drive.fetch(v, &spool.0, Arc::new(client::Hidden)).await.inspect_err(|e| {
                    tracing::warn!("fetching a file of {} bytes: {e}", v.len);
                })?;
                let file = std::fs::File::open(&spool.0).map_err(Error::file("opening", &spool.0))?;
                Ok::<_, Error>(Arc::new(Fetched { file, _spool: spool }))
            })
            .await?;
        Ok(got.clone())
    }

    /// Changes not yet on the devices.
    pub async fn pending(&self) -> usize {
        self.state.lock().await.pending.len()
    }

    fn spool_path(&self) -> PathBuf {
        self.spool.join(format!("{:016x}", rand::random::<u64>()))
    }

    /// Start writing a file: an empty spool file, or (`from`) one that
    /// holds that version's content to write over.
    pub async fn upload(self: &Arc<Self>, from: Option<&Version>) -> Result<Upload> {
        // Counted before any fetch, and uncounted however this ends (a
        // request cancelled mid-fetch included): shards it may keep are
        // not deleted meanwhile.
        self.uploads.fetch_add(1, Ordering::SeqCst);
        let counted = Counted(self.clone());
        let spool = Spool(self.spool_path());
        if let Some(v) = from {
            self.drive.fetch(v, &spool.0, Arc::new(client::Hidden)).await?;
        }
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().read(true).write(true).create(from.is_some()).create_new(from.is_none()),
            0o600,
        )
        .open(&spool.0)
        .map_err(Error::file("creating", &spool.0))?;
        Ok(Upload { file, spool, counted })
    }
}
