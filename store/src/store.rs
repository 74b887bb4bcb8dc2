//! The store: shard files under `DIR/shards`, their index and range-proof
//! trees in `DIR/index.redb`.
//!
//! Crash safety. A put verifies the bytes against the CID, writes them to
//! `DIR/tmp/`, fsyncs, renames them to `DIR/shards/<xx>/<cid>`, fsyncs the
//! directory, and only then commits the index entry (redb commits are
//! durable and atomic). So at any moment a shard is either in the index with
//! its whole file, or not in the index: a file without an entry is a put that
//! did not finish, and [`Store::open`] removes it, with everything in `tmp/`.
//! Deletes remove the entry first, then the file.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chunker::Cid;
use chunker::proof::{self, Outboard};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::backend::{Backend, Fs};
use crate::error::{Error, Result};
use crate::meta::{MAX_OWNER, ShardMeta};

const SHARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("shards");
const OUTBOARDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outboards");
/// The config last opened with, so operator tools see the owner's quota.
const SETTINGS: TableDefinition<&str, u64> = TableDefinition::new("settings");

/// Limits of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes of shards the owner lends (quarantined shards do not count).
    pub capacity: u64,
    /// Largest shard accepted.
    pub max_shard: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { capacity: 10 << 30, max_shard: 64 << 20 }
    }
}

impl Config {
    /// Replace the capacity.
    pub fn with_capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// Replace the shard size limit.
    pub fn with_max_shard(mut self, bytes: u64) -> Self {
        self.max_shard = bytes;
        self
    }
}

/// How a put is to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    /// The storing SPN's id (at most 64 bytes).
    pub owner: Vec<u8>,
    /// Now, in seconds since the epoch.
    pub now: u64,
    /// When the shard may be removed.
    pub expiry: Option<u64>,
    /// Never expire.
    pub pinned: bool,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Stored now.
    Stored,
    /// It was already here (same CID, same bytes).
    AlreadyStored,
}

/// Space used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Healthy shards.
    pub shards: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The quota.
    pub capacity: u64,
    /// Shards found corrupt and set aside.
    pub quarantined: u64,
}

/// What opening found and mended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Partial files of unfinished puts, removed.
    pub removed_partial: u64,
    /// Index entries whose file had vanished, removed.
    pub missing: Vec<Cid>,
    /// Shards whose file had the wrong size, quarantined.
    pub quarantined: Vec<Cid>,
}

/// Result of a scrub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Shards checked.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Shards found bad (now quarantined), with the reason.
    pub bad: Vec<(Cid, String)>,
}

/// An open shard file of known size, read at any offset.
#[derive(Debug)]
pub struct ShardFile {
    file: std::fs::File,
    size: u64,
}

impl ShardFile {
    /// The shard's length.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the shard is empty (never, for a stored shard).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
}

impl chunker::Seed for ShardFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// Whether `size` more bytes fit the quota, counting puts under way.
fn fits(c: &Counters, size: u64, config: &Config) -> Result<()> {
    if c.usage.bytes + c.reserved + size > config.capacity {
        return Err(Error::QuotaExceeded {
            size,
            used: c.usage.bytes,
            reserved: c.reserved,
            capacity: config.capacity,
        });
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counters {
    usage: Usage,
    reserved: u64,
}

/// Operations on one CID are serialised (puts, deletes, quarantines of the
/// same shard must not interleave); different CIDs mostly go in parallel.
const STRIPES: usize = 64;

struct Inner {
    dir: PathBuf,
    db: Database,
    stripes: Vec<Mutex<()>>,
    backend: Box<dyn Backend>,
    counters: Mutex<Counters>,
    config: Mutex<Config>,
}

/// A peer's shard store. Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("creating", path, e))
}

impl Store {
    /// Open (or create) the store in `dir`, mending what a crash left.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<(Store, OpenReport)> {
        Self::open_with_backend(dir, config, Box::new(Fs))
    }

    /// Open with the config the store was last opened with (for operator
    /// tools that inspect a node's store without knowing its flags).
    pub fn open_as_saved(dir: impl AsRef<Path>) -> Result<(Store, OpenReport)> {
        let dir = dir.as_ref();
        let db_path = dir.join("index.redb");
        if !db_path.exists() {
            return Err(Error::Io {
                what: "no shard store at",
                path: dir.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "index.redb is missing"),
            });
        }
        let mut config = Config::default();
        {
            let db = Database::create(&db_path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(dir.display().to_string()),
                other => other.into(),
            })?;
            let txn = db.begin_read()?;
            if let Ok(t) = txn.open_table(SETTINGS) {
                if let Some(v) = t.get("capacity")? {
                    config.capacity = v.value();
                }
                if let Some(v) = t.get("max_shard")? {
                    config.max_shard = v.value();
                }
            }
        }
        Self::open(dir, config)
    }

    /// Open with injected file operations (tests make them fail or stop).
    pub fn open_with_backend(
        dir: impl AsRef<Path>,
        config: Config,
        backend: Box<dyn Backend>,
    ) -> Result<(Store, OpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["shards", "tmp", "quarantine"] {
            mkdir(&dir.join(sub))?;
        }
        let db_path = dir.join("index.redb");
        let db = Database::create(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(dir.display().to_string()),
            other => other.into(),
        })?;
        {
            let txn = db.begin_write()?;
            txn.open_table(SHARDS)?;
            txn.open_table(OUTBOARDS)?;
            let mut settings = txn.open_table(SETTINGS)?;
            settings.insert("capacity", config.capacity)?;
            settings.insert("max_shard", config.max_shard)?;
            drop(settings);
            txn.commit()?;
        }
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                db,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                backend,
                counters: Mutex::new(Counters::default()),
                config: Mutex::new(config),
            }),
        };
        let report = store.reconcile()?;
        Ok((store, report))
    }

    fn shard_path(&self, cid: &Cid) -> PathBuf {
        let name = cid.to_string();
        let fan = format!("{:02x}", cid.digest()[0]);
        self.inner.dir.join("shards").join(fan).join(name)
    }

    fn quarantine_path(&self, cid: &Cid) -> PathBuf {
        self.inner.dir.join("quarantine").join(cid.to_string())
    }

    fn lock(&self, cid: &Cid) -> std::sync::MutexGuard<'_, ()> {
        let i = usize::from(cid.digest()[1]) % STRIPES;
        self.inner.stripes[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.inner.counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn config(&self) -> Config {
        *self.inner.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Change the quota (existing shards stay even if over it).
    pub fn set_capacity(&self, capacity: u64) {
        self.inner.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner).capacity = capacity;
        self.counters().usage.capacity = capacity;
    }

    /// Make index and files agree after a crash, and count usage.
    fn reconcile(&self) -> Result<OpenReport> {
        let mut report = OpenReport::default();
        let tmp = self.inner.dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io("listing", &tmp, e))?.flatten() {
            let p = entry.path();
            self.inner.backend.remove(&p).map_err(|e| Error::io("removing", &p, e))?;
            report.removed_partial += 1;
        }
        let entries = self.list()?;
        let indexed: HashSet<Cid> = entries.iter().map(|(c, _)| *c).collect();
        let shards = self.inner.dir.join("shards");
        for fan in std::fs::read_dir(&shards).map_err(|e| Error::io("listing", &shards, e))?.flatten() {
            let fan = fan.path();
            if !fan.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&fan).map_err(|e| Error::io("listing", &fan, e))?.flatten() {
                let p = entry.path();
                let known = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<Cid>().ok());
                if !known.is_some_and(|c| indexed.contains(&c)) {
                    // A put that was killed between rename and index commit, or a stray file.
                    self.inner.backend.remove(&p).map_err(|e| Error::io("removing", &p, e))?;
                    report.removed_partial += 1;
                }
            }
        }
        let mut usage = Usage { capacity: self.config().capacity, ..Usage::default() };
        for (cid, meta) in entries {
            if meta.quarantined {
                usage.quarantined += 1;
                continue;
            }
            match std::fs::metadata(self.shard_path(&cid)) {
                Ok(m) if m.len() == meta.size => {
                    usage.shards += 1;
                    usage.bytes += meta.size;
                }
                Ok(_) => {
                    self.quarantine(&cid, "file has the wrong size")?;
                    usage.quarantined += 1;
                    report.quarantined.push(cid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.remove_entry(&cid)?;
                    report.missing.push(cid);
                }
                // Unreadable is not missing (a disk error, an unmounted volume):
                // refuse to open rather than forget shards that may be there.
                Err(e) => return Err(Error::io("checking", &self.shard_path(&cid), e)),
            }
        }
        self.counters().usage = usage;
        Ok(report)
    }

    /// Store a shard. Verifies the bytes against the CID; refuses, with a
    /// clear error, what is over the size limit or the quota.
    pub fn put(&self, cid: &Cid, bytes: &[u8], opts: &PutOptions) -> Result<Put> {
        let size = bytes.len() as u64;
        let config = self.config();
        if size > config.max_shard {
            return Err(Error::TooLarge { size, limit: config.max_shard });
        }
        if opts.owner.len() > MAX_OWNER {
            return Err(Error::Index(format!("owner id of {} bytes is over {MAX_OWNER}", opts.owner.len())));
        }
        // One pass over the bytes both checks them and builds their range-proof tree.
        let outboard = Outboard::create(bytes);
        if !cid.is_raw() || outboard.root() != *cid.digest() {
            return Err(Error::HashMismatch { cid: cid.to_string(), actual: Cid::raw(outboard.root()).to_string() });
        }
        let _guard = self.lock(cid);
        if let Some(meta) = self.meta(cid)? {
            // Held for another owner (another SPN, or this device's drive):
            // neither kept longer nor pinned nor taken over on its word, and
            // no receipt for a shard its owner may delete at any time. Said
            // only once the bytes matched: a put of a CID with bytes it
            // does not have learns nothing of what is here.
            // A quarantined copy is replaced by good bytes whoever sends
            // them (the caller keeps a drive's shard a drive's).
            if !meta.quarantined && meta.owner != opts.owner {
                return Err(Error::NotOwner { cid: cid.to_string() });
            }
            if !meta.quarantined {
                // Already here: keep it at least as long and as pinned as asked,
                // so a receipt signed for this put tells the truth.
                let merged = ShardMeta {
                    // None is "until deleted", which outlasts any date.
                    expiry: match (meta.expiry, opts.expiry) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    },
                    pinned: meta.pinned || opts.pinned,
                    ..meta.clone()
                };
                if merged != meta {
                    let txn = self.inner.db.begin_write()?;
                    txn.open_table(SHARDS)?.insert(cid.to_bytes().as_slice(), merged.to_bytes().as_slice())?;
                    txn.commit()?;
                }
                return Ok(Put::AlreadyStored);
            }
            // A good copy replaces a quarantined one.
            self.forget(cid, &meta)?;
        }
        {
            let mut c = self.counters();
            fits(&c, size, &config)?;
            c.reserved += size;
        }
        let result = self.write_shard(cid, bytes, &outboard, opts);
        let mut c = self.counters();
        c.reserved -= size;
        if result.is_ok() {
            c.usage.shards += 1;
            c.usage.bytes += size;
        }
        result.map(|()| Put::Stored)
    }

    fn write_shard(&self, cid: &Cid, bytes: &[u8], outboard: &Outboard, opts: &PutOptions) -> Result<()> {
        let b = &self.inner.backend;
        let path = self.shard_path(cid);
        let fan = path.parent().unwrap_or(&self.inner.dir).to_path_buf();
        if !fan.exists() {
            mkdir(&fan)?;
            // A new fan-out directory must survive a power loss too.
            let shards = self.inner.dir.join("shards");
            b.sync_dir(&shards).map_err(|e| Error::io("syncing", &shards, e))?;
        }
        let tmp = self.inner.dir.join("tmp").join(format!("{cid}.{:016x}", rand::random::<u64>()));
        b.write_new(&tmp, bytes).map_err(|e| Error::io("writing", &tmp, e))?;
        if let Err(e) = b.rename(&tmp, &path) {
            let _ = b.remove(&tmp);
            return Err(Error::io("renaming into", &path, e));
        }
        b.sync_dir(&fan).map_err(|e| Error::io("syncing", &fan, e))?;
        let meta = ShardMeta {
            size: bytes.len() as u64,
            owner: opts.owner.clone(),
            stored_at: opts.now,
            expiry: opts.expiry,
            pinned: opts.pinned,
            quarantined: false,
        };
        let key = cid.to_bytes();
        let commit = (|| -> Result<()> {
            let txn = self.inner.db.begin_write()?;
            txn.open_table(SHARDS)?.insert(key.as_slice(), meta.to_bytes().as_slice())?;
            txn.open_table(OUTBOARDS)?.insert(key.as_slice(), outboard.as_bytes())?;
            txn.commit()?;
            Ok(())
        })();
        if commit.is_err() {
            // Not in the index: the file must not stay (open would remove it anyway).
            let _ = b.remove(&path);
        }
        commit
    }

    /// The index entry of a shard.
    pub fn meta(&self, cid: &Cid) -> Result<Option<ShardMeta>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        let got = table.get(cid.to_bytes().as_slice())?;
        got.map(|v| ShardMeta::from_bytes(v.value())).transpose()
    }

    fn healthy(&self, cid: &Cid) -> Result<ShardMeta> {
        match self.meta(cid)? {
            Some(m) if !m.quarantined => Ok(m),
            _ => Err(Error::NotFound(cid.to_string())),
        }
    }

    /// The whole shard, verified against its CID; a corrupt one is quarantined.
    pub fn get(&self, cid: &Cid) -> Result<Vec<u8>> {
        self.healthy(cid)?;
        let path = self.shard_path(cid);
        let bytes = match self.inner.backend.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The file vanished under us: the shard is gone; say so and stop listing it.
                self.forget_vanished(cid)?;
                return Err(Error::NotFound(cid.to_string()));
            }
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        if Cid::of_raw(&bytes) != *cid {
            self.quarantine(cid, "bytes do not match the CID")?;
            return Err(Error::Corrupt { cid: cid.to_string(), reason: "bytes do not match the CID".to_string() });
        }
        Ok(bytes)
    }

    /// A proof of byte ranges of a shard (see `chunker::proof`), checked
    /// against the shard's tree as it is made; a corrupt shard is
    /// quarantined. Only the 4 KiB blocks the ranges touch are read.
    pub fn get_ranges(&self, cid: &Cid, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_ranges_into(cid, ranges, &mut out)?;
        Ok(out)
    }

    /// [`Store::get_ranges`] into `out` (emptied first; its allocation is
    /// reused, so a busy peer does not fault in fresh pages per answer).
    pub fn get_ranges_into(&self, cid: &Cid, ranges: &[Range<u64>], out: &mut Vec<u8>) -> Result<()> {
        let meta = self.healthy(cid)?;
        let ob = {
            let txn = self.inner.db.begin_read()?;
            let table = txn.open_table(OUTBOARDS)?;
            let v = table.get(cid.to_bytes().as_slice())?.ok_or_else(|| Error::NotFound(cid.to_string()))?;
            Outboard::from_parts(*cid.digest(), meta.size, v.value().to_vec())
                .map_err(|e| Error::Range { cid: cid.to_string(), reason: e.to_string() })?
        };
        if let Some(r) = ranges.iter().find(|r| r.start >= r.end || r.end > meta.size) {
            return Err(Error::Range {
                cid: cid.to_string(),
                reason: format!("range {}..{} is empty or past the end ({} bytes)", r.start, r.end, meta.size),
            });
        }
        let file = self.open_shard_file(cid, &meta)?;
        proof::prove_at_into(&file, &ob, ranges, out).or_else(|e| {
            self.quarantine(cid, "bytes do not match the CID")?;
            Err(Error::Corrupt { cid: cid.to_string(), reason: e.to_string() })
        })
    }

    /// A healthy shard's file, to stream it (a whole-shard get that must not
    /// hold the shard in memory). The reader checks the bytes against the
    /// CID as they pass; whoever finds them wrong calls [`Store::report_corrupt`].
    pub fn open_shard(&self, cid: &Cid) -> Result<ShardFile> {
        let meta = self.healthy(cid)?;
        self.open_shard_file(cid, &meta)
    }

    fn open_shard_file(&self, cid: &Cid, meta: &ShardMeta) -> Result<ShardFile> {
        let path = self.shard_path(cid);
        let file = match self.inner.backend.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_vanished(cid)?;
                return Err(Error::NotFound(cid.to_string()));
            }
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io("reading", &path, e))?.len();
        if len != meta.size {
            self.quarantine(cid, "file has the wrong size")?;
            return Err(Error::Corrupt { cid: cid.to_string(), reason: "file has the wrong size".to_string() });
        }
        Ok(ShardFile { file, size: meta.size })
    }

    /// A reader of a streamed shard found its bytes do not match the CID:
    /// quarantine it, so it is never served again.
    pub fn report_corrupt(&self, cid: &Cid, reason: &str) -> Result<()> {
        self.quarantine(cid, reason)
    }

    /// Whether a shard of `size` bytes would be accepted now (size limit and
    /// quota), checked before its bytes are read off the network.
    pub fn check_room(&self, size: u64) -> Result<()> {
        let config = self.config();
        if size > config.max_shard {
            return Err(Error::TooLarge { size, limit: config.max_shard });
        }
        fits(&self.counters(), size, &config)
    }

    /// Which of `cids` are stored and healthy.
    pub fn has_many(&self, cids: &[Cid]) -> Result<Vec<bool>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        cids.iter()
            .map(|c| {
                let v = table.get(c.to_bytes().as_slice())?;
                Ok(match v {
                    Some(v) => !ShardMeta::from_bytes(v.value())?.quarantined,
                    None => false,
                })
            })
            .collect()
    }

    /// Delete a shard on behalf of its owner. Returns false if it was not here.
    pub fn delete(&self, cid: &Cid, owner: &[u8]) -> Result<bool> {
        let _guard = self.lock(cid);
        let Some(meta) = self.meta(cid)? else { return Ok(false) };
        if meta.owner != owner {
            return Err(Error::NotOwner { cid: cid.to_string() });
        }
        self.forget(cid, &meta)?;
        Ok(true)
    }

    /// A read of `cid` found no file: forget the shard, as it is now under
    /// its lock. What the reader saw before may be stale: the owner may
    /// have deleted it and put it again meanwhile (a new file, a new
    /// receipt), and forgetting by the old entry would have removed the
    /// new shard and counted its bytes out twice.
    fn forget_vanished(&self, cid: &Cid) -> Result<()> {
        let _guard = self.lock(cid);
        let Some(meta) = self.meta(cid)? else { return Ok(()) };
        let path = if meta.quarantined { self.quarantine_path(cid) } else { self.shard_path(cid) };
        match self.inner.backend.open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.forget(cid, &meta),
            _ => Ok(()),
        }
    }

    /// Remove entry, then file (a crash between leaves a stray file that open removes).
    fn forget(&self, cid: &Cid, meta: &ShardMeta) -> Result<()> {
        self.remove_entry(cid)?;
        let paths = if meta.quarantined {
            vec![self.quarantine_path(cid), self.shard_path(cid)]
        } else {
            vec![self.shard_path(cid)]
        };
        for path in paths {
            match self.inner.backend.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("removing", &path, e)),
            }
        }
        let mut c = self.counters();
        if meta.quarantined {
            c.usage.quarantined = c.usage.quarantined.saturating_sub(1);
        } else {
            c.usage.shards = c.usage.shards.saturating_sub(1);
            c.usage.bytes = c.usage.bytes.saturating_sub(meta.size);
        }
        Ok(())
    }

    fn remove_entry(&self, cid: &Cid) -> Result<()> {
        let txn = self.inner.db.begin_write()?;
        txn.open_table(SHARDS)?.remove(cid.to_bytes().as_slice())?;
        txn.open_table(OUTBOARDS)?.remove(cid.to_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Set a corrupt shard aside: its file moves to `quarantine/`, its entry
    /// is marked, it is reported and never served.
    fn quarantine(&self, cid: &Cid, _reason: &str) -> Result<()> {
        let _guard = self.lock(cid);
        let Some(mut meta) = self.meta(cid)? else { return Ok(()) };
        if meta.quarantined {
            return Ok(());
        }
        // Index first, then the file: a kill in between leaves a quarantined
        // entry whose file is still in shards/, which is never served.
        meta.quarantined = true;
        let txn = self.inner.db.begin_write()?;
        txn.open_table(SHARDS)?.insert(cid.to_bytes().as_slice(), meta.to_bytes().as_slice())?;
        txn.commit()?;
        {
            let mut c = self.counters();
            c.usage.shards = c.usage.shards.saturating_sub(1);
            c.usage.bytes = c.usage.bytes.saturating_sub(meta.size);
            c.usage.quarantined += 1;
        }
        let (from, to) = (self.shard_path(cid), self.quarantine_path(cid));
        match self.inner.backend.rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("quarantining", &from, e)),
        }
    }

    /// Every shard in the index, quarantined ones included.
    pub fn list(&self) -> Result<Vec<(Cid, ShardMeta)>> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let cid = Cid::from_bytes(k.value()).map_err(|e| Error::Index(e.to_string()))?;
            out.push((cid, ShardMeta::from_bytes(v.value())?));
        }
        Ok(out)
    }

    /// Space used.
    pub fn usage(&self) -> Usage {
        self.counters().usage
    }

    /// Read every healthy shard and check it against its CID; quarantine the
    /// bad ones. `progress(done, total)` after each.
    pub fn scrub(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ScrubReport> {
        let entries: Vec<(Cid, ShardMeta)> = self.list()?.into_iter().filter(|(_, m)| !m.quarantined).collect();
        let total = entries.len() as u64;
        let mut report = ScrubReport::default();
        for (cid, meta) in entries {
            let path = self.shard_path(&cid);
            let problem = match self.inner.backend.read(&path) {
                Ok(bytes) => {
                    report.bytes += bytes.len() as u64;
                    if bytes.len() as u64 != meta.size {
                        Some(format!("file is {} bytes, expected {}", bytes.len(), meta.size))
                    } else if Cid::of_raw(&bytes) != cid {
                        Some("bytes do not match the CID".to_string())
                    } else {
                        None
                    }
                }
                Err(e) => Some(format!("unreadable: {e}")),
            };
            if let Some(reason) = problem {
                self.quarantine(&cid, &reason)?;
                report.bad.push((cid, reason));
            }
            report.checked += 1;
            progress(report.checked, total);
        }
        Ok(report)
    }

    /// Keep a shard at least until `expiry`: its owner only, never
    /// shorter than it was (a pinned shard stays pinned). The entry as it
    /// is now, or None if the shard is not here.
    pub fn renew(&self, cid: &Cid, owner: &[u8], expiry: u64) -> Result<Option<ShardMeta>> {
        let _guard = self.lock(cid);
        let Some(meta) = self.meta(cid)? else { return Ok(None) };
        if meta.owner != owner {
            return Err(Error::NotOwner { cid: cid.to_string() });
        }
        if meta.quarantined {
            return Ok(None);
        }
        let renewed = ShardMeta { expiry: meta.expiry.map(|e| e.max(expiry)), ..meta.clone() };
        if renewed != meta {
            let txn = self.inner.db.begin_write()?;
            txn.open_table(SHARDS)?.insert(cid.to_bytes().as_slice(), renewed.to_bytes().as_slice())?;
            txn.commit()?;
        }
        Ok(Some(renewed))
    }

    /// Shards whose expiry has passed at `now` and that are still here
    /// (the owner may clear them; the node's sweep does after a grace).
    pub fn expired(&self, now: u64) -> Result<Vec<(Cid, ShardMeta)>> {
        Ok(self.list()?.into_iter().filter(|(_, m)| m.expired(now)).collect())
    }

    /// Remove shards whose expiry has passed (pinned ones never expire).
    pub fn sweep_expired(&self, now: u64) -> Result<Vec<Cid>> {
        let mut removed = Vec::new();
        for (cid, _) in self.list()? {
            let _guard = self.lock(&cid);
            // Read again under the lock: a put may have just renewed it.
            let Some(meta) = self.meta(&cid)? else { continue };
            if meta.expired(now) {
                self.forget(&cid, &meta)?;
                removed.push(cid);
            }
        }
        Ok(removed)
    }
}
