//! `backup restore`: a snapshot (or part of it) into a target directory.
//!
//! Each data object the selected files use is fetched whole from the peers
//! with the one fetcher (verified range by range, resumable) into
//! `TARGET/.ionshard-restore/`, then each file is copied out of it into a
//! temporary name beside its final one, checked against the file's BLAKE3
//! and given its metadata; a batch of them is made durable with one
//! `syncfs` and then renamed into place: an existing file is replaced whole
//! or not at all, and no name shows bytes that are not on disk. Nothing is written through a symlink or
//! outside the target: paths with `..` are refused, every parent is checked
//! to be a real directory, and symlinks whose target is absolute or climbs
//! out of the target are not created (the report lists them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::{ObjectCap, Repo, Skipped};
use crate::tree::{Entry, Kind};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The snapshot (an id, a unique prefix, or `latest`).
    pub snapshot: String,
    /// Where to.
    pub target: PathBuf,
    /// Only these paths (as in the snapshot, absolute) and what is under them.
    pub include: Vec<String>,
    /// Restore setuid and setgid bits, device nodes and `security.*` and
    /// `trusted.*` attributes from a snapshot the full key did not mark
    /// (a put-only host's: whoever took over that host chose them).
    pub trust_added: bool,
}

impl RestoreOptions {
    /// All of `snapshot` into `target`; an unmarked snapshot without its
    /// privileges ([`RestoreOptions::trust_added`] false).
    pub fn new(snapshot: impl Into<String>, target: impl Into<PathBuf>) -> RestoreOptions {
        RestoreOptions { snapshot: snapshot.into(), target: target.into(), include: Vec::new(), trust_added: false }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot.
    pub snapshot: String,
    /// Files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symlinks made.
    pub symlinks: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Bytes downloaded from peers.
    pub downloaded_bytes: u64,
    /// Entries not restored, and why.
    pub skipped: Vec<Skipped>,
    /// Extended attributes that could not be set (the file system has none,
    /// or they need root).
    pub xattrs_not_set: u64,
    /// Bytes of zeros left as holes (sparse files).
    pub hole_bytes: u64,
    /// Device nodes and FIFOs made.
    pub specials: u64,
    /// Who added the snapshot, if not the full key (see
    /// [`crate::Snapshot::added_by`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
    /// Setuid and setgid bits and `security.*`/`trusted.*` attributes left
    /// out because the full key did not mark the snapshot (device nodes
    /// are in `skipped`).
    pub privileges_dropped: u64,
}

/// A tree the full key did not mark, made harmless to restore (as root
/// above all): no setuid or setgid bit, no device node, no attribute of
/// the `security` (file capabilities, SELinux labels) or `trusted`
/// namespaces. What was left out is counted, device nodes reported.
fn without_privileges(tree: &crate::tree::Tree, report: &mut RestoreReport) -> crate::tree::Tree {
    use rustix::fs::FileType;
    let mut entries = Vec::with_capacity(tree.entries.len());
    for e in &tree.entries {
        let kind = FileType::from_raw_mode(e.mode);
        if e.kind == Kind::Other && matches!(kind, FileType::CharacterDevice | FileType::BlockDevice) {
            report.skipped.push(Skipped {
                path: format!("/{}", e.display_path()),
                why: "a device node in a snapshot the full key did not mark: not made (--trust-put-only makes it)"
                    .into(),
            });
            continue;
        }
        let mut e = e.clone();
        if e.mode & 0o6000 != 0 {
            e.mode &= !0o6000;
            report.privileges_dropped += 1;
        }
        let before = e.xattrs.len();
        e.xattrs.retain(|x| !x.name.starts_with("security.") && !x.name.starts_with("trusted."));
        report.privileges_dropped += (before - e.xattrs.len()) as u64;
        entries.push(e);
    }
    crate::tree::Tree { format: tree.format.clone(), entries }
}

/// Make a device node or FIFO again, with its owner, mode and times; a
/// socket, or a device node without root, is reported, not made.
fn make_special(at: &Path, e: &Entry) -> Result<()> {
    use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
    let kind = FileType::from_raw_mode(e.mode);
    let skip = |why: String| Error::Outside { path: e.display_path(), why };
    if !matches!(kind, FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) {
        return Err(skip("a socket: not restored (the program that listens makes it)".into()));
    }
    if std::fs::symlink_metadata(at).is_ok() {
        return Err(skip(format!("{} exists: left as it is", at.display())));
    }
    rustix::fs::mknodat(CWD, at, kind, Mode::from_raw_mode(e.mode & 0o7777), e.rdev).map_err(|err| {
        skip(format!(
            "could not be made ({err}{})",
            if kind == FileType::Fifo { "" } else { "; device nodes need root" }
        ))
    })?;
    set_owner(at, e);
    let t = Timespec { tv_sec: e.mtime, tv_nsec: e.mtime_nsec.min(999_999_999).into() };
    let _ =
        rustix::fs::utimensat(CWD, at, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW);
    // chmod does not follow a device node anywhere: it is the node itself.
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(e.mode & 0o7777))
        .map_err(Error::file("setting permissions", at))
}

fn selected(e: &Entry, include: &[String]) -> bool {
    if include.is_empty() {
        return true;
    }
    let p = e.display_path();
    include.iter().any(|i| {
        let i = i.trim_start_matches('/').trim_end_matches('/');
        // `--include /` is everything.
        i.is_empty() || p == i || p.starts_with(&format!("{i}/")) || i.starts_with(&format!("{p}/"))
    })
}

/// Hard links `--include` chose without the path their file was first
/// seen at (the one that holds the bytes): each becomes a file of its own
/// with that path's bytes, instead of a link to something not restored.
fn lone_links(all: &[Entry], include: &[String]) -> Vec<Entry> {
    if include.is_empty() {
        return Vec::new();
    }
    let firsts: HashMap<Vec<u8>, &Entry> =
        all.iter().filter(|e| e.kind == Kind::File && !e.is_hard_link()).map(|e| (e.path_bytes(), e)).collect();
    all.iter()
        .filter(|e| e.kind == Kind::File && selected(e, include))
        .filter_map(|e| {
            let first = firsts.get(&e.link_to_bytes()?)?;
            if selected(first, include) {
                return None;
            }
            let mut own = e.clone();
            (own.link_to, own.link_to_hex) = (None, None);
            (own.data, own.blake3, own.size) = (first.data, first.blake3.clone(), first.size);
            Some(own)
        })
        .collect()
}

/// Whether a symlink at `rel` (inside the target) pointing at `target` stays
/// inside: relative, its `..` all at the front and no more of them than
/// `rel` is deep. A `..` after a name is refused: the name may itself be a
/// symlink of the same restore (`a/up -> ..` points at the target, and
/// `a/out -> up/..` through it at the target's parent), and the kernel
/// follows the link before it goes up.
fn link_stays_inside(rel: &Path, t: &Path) -> bool {
    if t.is_absolute() {
        return false;
    }
    let mut depth = rel.components().count() as i64 - 1;
    let mut named = false;
    for c in t.components() {
        match c {
            Component::ParentDir if named => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => {
                named = true;
                depth += 1;
            }
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// A link or special file is not made where a directory is (a restore
/// into a tree that has one there): reported, not a failed restore.
fn not_a_directory(at: &Path, e: &Entry) -> Result<()> {
    if std::fs::symlink_metadata(at).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Outside {
            path: e.display_path(),
            why: format!("{} is a directory: left as it is", at.display()),
        });
    }
    Ok(())
}

/// Whether only this user (or root) can change what is in a directory: a
/// directory another user can write lets that user swap one of its
/// entries for a symlink between our check and our write.
fn only_ours(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    (m.uid() == me || m.uid() == 0) && m.mode() & 0o022 == 0
}

/// Refuse a restore target other users can write (see [`only_ours`]), or
/// one inside a folder where another user could rename it (or a folder
/// above it) and put a symlink in its place while the restore writes:
/// every folder above must be only ours, or sticky (as `/tmp`: there only
/// an entry's owner and the folder's may rename it) and ours or root's,
/// with the entry below it ours. The target is resolved first (a symlink
/// in its path is followed once, here) and the real path is what is
/// checked and returned, to be used for every write.
fn check_target(root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(root).map_err(Error::file("resolving", root))?;
    let m = std::fs::symlink_metadata(&real).map_err(Error::file("reading", &real))?;
    if !m.is_dir() || !only_ours(&m) {
        return Err(Error::Invalid(format!(
            "{} can be written by other users (mode {:o}, owner {}): one of them could swap a folder for a \
             symlink while the restore writes and send files elsewhere; restore into a new folder only you can \
             write (it is made for you if it does not exist), or `chmod go-w` it if it is yours",
            real.display(),
            m.mode() & 0o7777,
            m.uid()
        )));
    }
    let mut child = real.as_path();
    while let Some(parent) = child.parent() {
        let pm = std::fs::symlink_metadata(parent).map_err(Error::file("reading", parent))?;
        if !only_ours(&pm) {
            let cm = std::fs::symlink_metadata(child).map_err(Error::file("reading", child))?;
            let sticky = pm.mode() & 0o1000 != 0;
            if !(sticky && owned_by_us(&pm) && owned_by_us(&cm)) {
                return Err(Error::Invalid(format!(
                    "{} is in {}, which another user can change (mode {:o}, owner {}): they could rename \
                     {} and put a symlink in its place while the restore writes, sending files elsewhere. \
                     Restore into a folder whose parents only you (or root) can change (`chmod go-w` a parent \
                     that is yours); as root, for another user's folder, restore as that user, or into a \
                     folder of root's and move it",
                    root.display(),
                    parent.display(),
                    pm.mode() & 0o7777,
                    pm.uid(),
                    child.display()
                )));
            }
        }
        child = parent;
    }
    Ok(real)
}

/// Owned by this user or by root.
fn owned_by_us(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.uid() == rustix::process::geteuid().as_raw() || m.uid() == 0
}

/// The restore's scratch folder in the target (the data objects, whole,
/// in plain text while their files are copied out): made private, or,
/// if it is there already, used only if it is a real folder of this user
/// that no one else can enter (else a planted symlink or a folder handed
/// to another user could take the objects' bytes elsewhere).
fn scratch_dir(root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let scratch = root.join(SCRATCH);
    match std::fs::DirBuilder::new().mode(0o700).create(&scratch) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::file("creating", &scratch)(e)),
    }
    let m = std::fs::symlink_metadata(&scratch).map_err(Error::file("reading", &scratch))?;
    if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{} is not a private folder of this user (a {}, mode {:o}, owner {}): a restore keeps plain text \
             there; remove it and restore again",
            scratch.display(),
            if m.is_symlink() {
                "symlink"
            } else if m.is_dir() {
                "folder"
            } else {
                "file"
            },
            m.mode() & 0o7777,
            m.uid()
        )));
    }
    Ok(scratch)
}

/// The scratch folder's name in the target; a snapshot's path there is
/// not restored.
const SCRATCH: &str = ".ionshard-restore";

/// The entries a restore writes, each with its checked relative path, and
/// those it leaves out with why. Every path is checked before anything
/// is written: one that leaves the target refuses the whole restore, and
/// so does a path named twice (a tree ionshard made never does; a forged
/// one could make one path a symlink and then hard-link "the file" there
/// from another depth, where the symlink would point outside). The
/// backed-up root folder itself (a backup of `/`: the empty path) is the
/// target, whose own metadata is never set from a snapshot.
fn plan(entries: Vec<&Entry>) -> Result<(Vec<&Entry>, Vec<PathBuf>, Vec<Skipped>)> {
    let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(entries.len());
    let (mut kept, mut rels, mut skipped) = (Vec::with_capacity(entries.len()), Vec::new(), Vec::new());
    for e in entries {
        let bytes = e.path_bytes();
        if bytes.is_empty() && e.kind == Kind::Dir {
            continue;
        }
        let rel = e.safe_relative()?;
        if !seen.insert(bytes) {
            return Err(Error::Outside {
                path: e.display_path(),
                why: "the snapshot's tree names this path twice (ionshard never makes such a tree): not restored"
                    .into(),
            });
        }
        if rel.components().next().is_some_and(|c| c.as_os_str() == SCRATCH) {
            skipped.push(Skipped {
                path: format!("/{}", e.display_path()),
                why: format!("{SCRATCH} in the target is the restore's own scratch folder: not restored"),
            });
            continue;
        }
        kept.push(e);
        rels.push(rel);
    }
    Ok((kept, rels, skipped))
}

/// The target's directories, each checked once per restore.
struct Parents<'a> {
    root: &'a Path,
    /// Directories under `root` found (or made) real and only this user's,
    /// with all their parents. No other user can change them afterwards
    /// (that is what was checked), so they need no second look: checking
    /// every parent of every file was 12 `statx` calls per file of the
    /// toolchain's tree, each walking the whole path.
    checked: std::sync::Mutex<HashSet<PathBuf>>,
}

impl<'a> Parents<'a> {
    fn new(root: &'a Path) -> Parents<'a> {
        Parents { root, checked: Default::default() }
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make sure every parent of `rel` under the root is a real directory
    /// (never a symlink) that only this user can change, making the
    /// missing ones.
    fn ensure(&self, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else { return Ok(()) };
        if self.checked().contains(parent) {
            return Ok(());
        }
        let (mut at, mut rel_at) = (self.root.to_path_buf(), PathBuf::new());
        for c in parent.components() {
            at.push(c);
            rel_at.push(c);
            if self.checked().contains(&rel_at) {
                continue;
            }
            let m = match std::fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(_) => {
                    match std::fs::DirBuilder::new().mode(0o700).create(&at) {
                        Ok(()) => {
                            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o700))
                                .map_err(Error::file("creating", &at))?;
                            continue;
                        }
                        // Made meanwhile by another of this restore's threads: look again.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            std::fs::symlink_metadata(&at).map_err(Error::file("reading", &at))?
                        }
                        Err(e) => return Err(Error::File { what: "creating", path: at, source: e }),
                    }
                }
            };
            if !m.is_dir() {
                return Err(Error::Outside {
                    path: rel.display().to_string(),
                    why: format!("{} is not a directory (a symlink or a file): not written through", at.display()),
                });
            }
            if !only_ours(&m) {
                return Err(Error::Outside {
                    path: rel.display().to_string(),
                    why: format!("{} can be written by other users: not written through", at.display()),
                });
            }
        }
        let mut checked = self.checked();
        for a in parent.ancestors().take_while(|a| !a.as_os_str().is_empty()) {
            checked.insert(a.to_path_buf());
        }
        Ok(())
    }
}

/// The entry's modification time; before 1970 too (the stored seconds are
/// negative, the nanoseconds count forward from them, as `stat` gives them).
fn mtime(e: &Entry) -> std::time::SystemTime {
    let nsec = std::time::Duration::from_nanos(u64::from(e.mtime_nsec.min(999_999_999)));
    let secs = std::time::Duration::from_secs(e.mtime.unsigned_abs());
    let whole =
        if e.mtime >= 0 { std::time::UNIX_EPOCH.checked_add(secs) } else { std::time::UNIX_EPOCH.checked_sub(secs) };
    whole.and_then(|t| t.checked_add(nsec)).unwrap_or(std::time::UNIX_EPOCH)
}

fn set_times(path: &Path, e: &Entry) -> Result<()> {
    let t = mtime(e);
    let f = std::fs::File::options()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(path)
        .map_err(Error::file("opening", path))?;
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t)).map_err(Error::file("setting times", path))
}

/// O_NOFOLLOW on Linux.
const fn libc_nofollow() -> i32 {
    0o400000
}

fn set_owner(path: &Path, e: &Entry) {
    // Only root may give files away; others keep their own.
    let _ = std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid));
}

/// Restore `o.snapshot` into `o.target`.
pub async fn restore(
    repo: &Repo,
    net: &net::Client,
    o: &RestoreOptions,
    progress: Arc<dyn client::Progress>,
) -> Result<RestoreReport> {
    repo.key.need_full("restore")?;
    let snap = repo.snapshot(&o.snapshot)?;
    let tree = repo.tree(Some(net), &snap).await?;
    let mut report = RestoreReport { added_by: snap.added_by.clone(), ..Default::default() };
    let tree = match &snap.added_by {
        Some(_) if !o.trust_added => without_privileges(&tree, &mut report),
        _ => tree,
    };
    let mut done = write_tree(&tree, &snap.id, &snap.data, o, &FromPeers { repo, net, progress }).await?;
    report.skipped.append(&mut done.skipped);
    Ok(RestoreReport {
        added_by: report.added_by,
        privileges_dropped: report.privileges_dropped,
        skipped: report.skipped,
        ..done
    })
}

/// Where a restore's data objects come from.
trait Objects {
    /// Fetch the object `cap` names into the file `to`: the bytes downloaded.
    async fn fetch(&self, cap: &ObjectCap, to: &Path) -> Result<u64>;
}

/// The peers, by the repository's placement.
struct FromPeers<'a> {
    repo: &'a Repo,
    net: &'a net::Client,
    progress: Arc<dyn client::Progress>,
}

impl Objects for FromPeers<'_> {
    async fn fetch(&self, cap: &ObjectCap, to: &Path) -> Result<u64> {
        Ok(self.repo.fetch_object(self.net, cap, to, self.progress.clone()).await?.downloaded_bytes)
    }
}

/// Write `tree` (snapshot `id`, whose data objects are `data`) into `o.target`.
async fn write_tree(
    tree: &crate::tree::Tree,
    id: &str,
    data: &[ObjectCap],
    o: &RestoreOptions,
    objects: &impl Objects,
) -> Result<RestoreReport> {
    let root = &o.target;
    if std::fs::symlink_metadata(root).is_err() {
        // Folders made on the way private too (a umask of 002 would leave
        // them open to the group, and the check below would refuse them).
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(Error::file("creating", root))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::file("creating", root))?;
    }
    let root = &check_target(root)?;
    let parents = Parents::new(root);
    let mut report = RestoreReport { snapshot: id.to_string(), ..Default::default() };
    let alone = lone_links(&tree.entries, &o.include);
    let replaced: HashSet<Vec<u8>> = alone.iter().map(Entry::path_bytes).collect();
    let entries: Vec<&Entry> = tree
        .entries
        .iter()
        .filter(|e| selected(e, &o.include) && !replaced.contains(e.path_key().as_ref()))
        .chain(&alone)
        .collect();
    let (entries, rels, left_out) = plan(entries)?;
    report.skipped.extend(left_out);
    // Directories first (private while filled), files by data object, links, then directory metadata.
    for (e, rel) in entries.iter().zip(&rels) {
        if e.kind == Kind::Dir {
            parents.ensure(rel)?;
            let at = root.join(rel);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() && !only_ours(&m) => {
                    return Err(Error::Outside {
                        path: e.display_path(),
                        why: format!("{} exists and other users can write it: not restored into", at.display()),
                    });
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Outside {
                        path: e.display_path(),
                        why: format!("{} exists and is not a directory", at.display()),
                    });
                }
                Err(_) => {
                    // New directories are private while they are filled (their
                    // modes come last); one that exists keeps its mode until then,
                    // so a restore that stops leaves it as it was.
                    std::fs::DirBuilder::new().mode(0o700).create(&at).map_err(Error::file("creating", &at))?;
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o700))
                        .map_err(Error::file("creating", &at))?;
                    report.dirs += 1;
                }
            }
        }
    }
    let by_object: BTreeMap<u32, Vec<usize>> = entries.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, e)| {
        if let (Kind::File, Some(d)) = (e.kind, e.data) {
            m.entry(d.object).or_insert_with(Vec::new).push(i);
        }
        m
    });
    let scratch = scratch_dir(root)?;
    let mut written: HashSet<usize> = HashSet::new();
    let mut pending = Pending::default();
    for (object, files) in &by_object {
        let cap = data.get(*object as usize).ok_or_else(|| {
            Error::format(
                format!("snapshot {id}"),
                format!("a file points at data object {object}, which it does not list"),
            )
        })?;
        // A CID, checked, names the scratch file (never a path from the record).
        let cid: chunker::Cid = cap.manifest.parse()?;
        let obj_path = scratch.join(cid.to_string());
        if std::fs::metadata(&obj_path).map(|m| m.len()).ok() != Some(cap.length) {
            report.downloaded_bytes += objects.fetch(cap, &obj_path).await?;
        }
        // Batches of files (or bytes), each copied out by a few threads at
        // once, then synced and renamed into place together.
        let mut start = 0;
        while start < files.len() {
            let (mut end, mut bytes) = (start, 0u64);
            while end < files.len() && end - start < BATCH_FILES && bytes < BATCH_BYTES {
                bytes += entries[files[end]].size;
                end += 1;
            }
            let mut done = copy_out(&parents, &entries, &rels, &files[start..end], &obj_path)?;
            if let Some(at) = done.iter().position(|(_, r)| matches!(r, Err(e) if !matches!(e, Error::Outside { .. })))
            {
                // What this batch wrote under temporary names goes.
                for (_, r) in &done {
                    if let Ok((tmp, _)) = r {
                        let _ = std::fs::remove_file(tmp);
                    }
                }
                return Err(done.swap_remove(at).1.err().unwrap_or_else(|| Error::Invalid("restore".into())));
            }
            for (i, r) in done {
                let e = entries[i];
                match r {
                    Ok((tmp, w)) => {
                        report.xattrs_not_set += w.xattrs_not_set;
                        report.hole_bytes += w.holes;
                        pending.files.push((tmp, root.join(&rels[i])));
                        written.insert(i);
                        report.files += 1;
                        report.bytes += e.size;
                    }
                    Err(err) => {
                        report.skipped.push(Skipped { path: format!("/{}", e.display_path()), why: err.to_string() })
                    }
                }
            }
            pending.finish(root)?;
            start = end;
        }
        // The object's files are in place before the object is removed.
        pending.finish(root)?;
        let _ = std::fs::remove_file(&obj_path);
    }
    // Keyed by the paths' bytes: two names that are not UTF-8 may read the same once made text.
    let by_path: HashMap<Vec<u8>, usize> = entries.iter().enumerate().map(|(i, e)| (e.path_bytes(), i)).collect();
    // Empty files (no data object), then links to what is in place.
    for (i, (e, rel)) in entries.iter().zip(&rels).enumerate() {
        if e.kind == Kind::File && e.data.is_none() && !e.is_hard_link() {
            let mut empty = std::io::empty();
            match write_file_from(&parents, rel, e, &mut empty, &mut [0u8; 64]) {
                Ok((tmp, w)) => {
                    report.xattrs_not_set += w.xattrs_not_set;
                    pending.files.push((tmp, root.join(rel)));
                    written.insert(i);
                    report.files += 1;
                }
                Err(err @ Error::Outside { .. }) => {
                    report.skipped.push(Skipped { path: format!("/{}", e.display_path()), why: err.to_string() })
                }
                Err(err) => return Err(err),
            }
        }
    }
    pending.finish(root)?;
    for (e, rel) in entries.iter().zip(&rels) {
        let at = root.join(rel);
        let outcome = match e.kind {
            Kind::File if e.data.is_none() && !e.is_hard_link() => Ok(()),
            Kind::File => match e.link_to_bytes() {
                Some(first) => match by_path.get(&first).filter(|j| written.contains(j)) {
                    Some(&j) => parents
                        .ensure(rel)
                        .and_then(|()| {
                            not_a_directory(&at, e)?;
                            // Never a link to a symlink (carried to another depth, it
                            // could point outside): to a file this restore wrote.
                            let src = root.join(&rels[j]);
                            if !std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_file()) {
                                return Err(Error::Outside {
                                    path: e.display_path(),
                                    why: format!("a hard link of {}, which is not a regular file", src.display()),
                                });
                            }
                            link_in_place(&at, "linking", |t| std::fs::hard_link(&src, t))
                        })
                        .map(|()| report.files += 1),
                    None => Err(Error::Outside {
                        path: e.display_path(),
                        why: format!(
                            "a hard link of /{}, which this restore does not include",
                            String::from_utf8_lossy(&first)
                        ),
                    }),
                },
                None => Ok(()),
            },
            Kind::Symlink => {
                let target = PathBuf::from(std::ffi::OsString::from_vec(e.target_bytes().unwrap_or_default()));
                if !link_stays_inside(rel, &target) {
                    Err(Error::Outside {
                        path: e.display_path(),
                        why: format!("a symlink to {target:?}, outside the restore target: not created"),
                    })
                } else {
                    parents.ensure(rel).and_then(|()| {
                        not_a_directory(&at, e)?;
                        link_in_place(&at, "creating the symlink", |t| std::os::unix::fs::symlink(&target, t))?;
                        set_owner(&at, e);
                        report.symlinks += 1;
                        Ok(())
                    })
                }
            }
            Kind::Other => parents.ensure(rel).and_then(|()| {
                not_a_directory(&at, e)?;
                make_special(&at, e)?;
                report.specials += 1;
                Ok(())
            }),
            Kind::Dir => Ok(()),
        };
        if let Err(err) = outcome {
            match err {
                Error::Outside { .. } => {
                    report.skipped.push(Skipped { path: format!("/{}", e.display_path()), why: err.to_string() })
                }
                other => return Err(other),
            }
        }
    }
    // Directory metadata last, deepest first (writing into one changes its mtime).
    let mut dirs: Vec<(usize, &PathBuf)> = entries
        .iter()
        .zip(&rels)
        .enumerate()
        .filter(|(_, (e, _))| e.kind == Kind::Dir)
        .map(|(i, (_, r))| (i, r))
        .collect();
    dirs.sort_by_key(|(_, r)| std::cmp::Reverse(r.components().count()));
    for (i, rel) in dirs {
        let (e, at) = (entries[i], root.join(rel));
        set_owner(&at, e);
        report.xattrs_not_set += crate::xattr::write_path(&at, &e.xattrs);
        // Times first: a directory without owner-read cannot be opened after.
        set_times(&at, e)?;
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(Error::file("setting permissions", &at))?;
    }
    let _ = std::fs::remove_dir(&scratch);
    // The renames and the directories' metadata, durable before we say done.
    sync_fs(root)?;
    Ok(report)
}

/// Copy a file's bytes out of its data object into place.
/// A file copied out (its index in the entries): its temporary name, or why not.
type CopiedOut = (usize, Result<(PathBuf, Written)>);

/// Copy the files `batch` names (indexes into `entries`) out of the object
/// at `obj_path`, on as many threads as the machine has cores (at most 4):
/// making tens of thousands of files is mostly the kernel's work (inode
/// allocation), and after the fetch the restore has the machine to itself.
/// Each file's result, in `batch`'s order.
fn copy_out(
    parents: &Parents<'_>,
    entries: &[&Entry],
    rels: &[PathBuf],
    batch: &[usize],
    obj_path: &Path,
) -> Result<Vec<CopiedOut>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let per = batch.len().div_ceil(workers).max(1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = batch
            .chunks(per)
            .map(|part| {
                sc.spawn(move || -> Result<Vec<CopiedOut>> {
                    let mut obj = std::fs::File::open(obj_path).map_err(Error::file("opening", obj_path))?;
                    // One buffer per thread: a fresh one per file was mapped
                    // and unmapped by the allocator, file after file.
                    let mut buf = vec![0u8; 256 << 10];
                    Ok(part
                        .iter()
                        .map(|&i| (i, write_file(parents, &rels[i], entries[i], &mut obj, &mut buf)))
                        .collect())
                })
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for h in handles {
            out.extend(h.join().map_err(|_| Error::Invalid("a restore thread stopped".to_string()))??);
        }
        Ok(out)
    })
}

fn write_file(
    parents: &Parents<'_>,
    rel: &Path,
    e: &Entry,
    obj: &mut std::fs::File,
    buf: &mut [u8],
) -> Result<(PathBuf, Written)> {
    let d = e.data.ok_or_else(|| Error::format("tree", "a file without data"))?;
    obj.seek(SeekFrom::Start(d.offset)).map_err(Error::file("reading the data object", parents.root))?;
    let mut part = obj.take(e.size);
    write_file_from(parents, rel, e, &mut part, buf)
}

/// Write `src` to a temporary name beside the file, check its hash and
/// give it its metadata; the caller syncs and renames it into place
/// ([`Pending::finish`]), copying through `buf`. Returns the temporary name.
fn write_file_from(
    parents: &Parents<'_>,
    rel: &Path,
    e: &Entry,
    src: &mut dyn Read,
    buf: &mut [u8],
) -> Result<(PathBuf, Written)> {
    parents.ensure(rel)?;
    let at = parents.root.join(rel);
    if std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Outside { path: e.display_path(), why: format!("{} is a directory", at.display()) });
    }
    let (tmp, mut f) = temp_file(&at)?;
    let mut hasher = blake3::Hasher::new();
    let mut n_total = 0u64;
    let mut holes = 0u64;
    let copied = (|| -> std::io::Result<()> {
        loop {
            let n = src.read(buf)?;
            if n == 0 {
                // A file that ends in a hole gets its length all the same.
                return f.set_len(n_total);
            }
            hasher.update(&buf[..n]);
            holes += write_sparse(&mut f, &buf[..n])?;
            n_total += n as u64;
        }
    })();
    let fail = |err: Error| {
        let _ = std::fs::remove_file(&tmp);
        err
    };
    copied.map_err(|err| fail(Error::File { what: "writing", path: tmp.clone(), source: err }))?;
    let want = e.blake3.clone().unwrap_or_default();
    if n_total != e.size || (!want.is_empty() && hasher.finalize().to_hex().as_str() != want) {
        return Err(fail(Error::format(
            format!("file /{}", e.display_path()),
            "its restored bytes do not match the hash the snapshot recorded",
        )));
    }
    set_owner(&tmp, e);
    // Times through the open handle, before the mode (a file without
    // owner-read could not be opened again to set them).
    f.set_times(std::fs::FileTimes::new().set_modified(mtime(e)).set_accessed(mtime(e)))
        .map_err(|err| fail(Error::File { what: "setting times", path: tmp.clone(), source: err }))?;
    let xattrs_not_set = crate::xattr::write_fd(&f, &e.xattrs);
    f.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))
        .map_err(|err| fail(Error::File { what: "setting permissions", path: tmp.clone(), source: err }))?;
    drop(f);
    Ok((tmp, Written { xattrs_not_set, holes }))
}

/// A new file under a short random name beside `at` (created exclusively,
/// never following a link). Not made from the file's own name: a name of
/// 238 bytes or more (80 CJK characters) would pass the 255-byte limit
/// with a suffix, two names that are not UTF-8 could make the same text,
/// and a snapshot may itself hold a file named like the temporary one.
/// Nothing already there is removed.
fn temp_file(at: &Path) -> Result<(PathBuf, std::fs::File)> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = at.with_file_name(format!(".ionshard-restore-{:016x}", rand::random::<u64>()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_nofollow())
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(Error::File { what: "creating", path: tmp, source: e }),
        }
    }
    let (path, source) = last.unwrap_or_else(|| (at.to_path_buf(), std::io::Error::other("no temporary name")));
    Err(Error::File { what: "creating", path, source })
}

/// Make a link (`make` at a short random name beside `at`), then rename
/// it over `at`: a file already there is replaced whole or not at all (it
/// was removed first, and lost when the link could not be made).
fn link_in_place(at: &Path, what: &'static str, make: impl Fn(&Path) -> std::io::Result<()>) -> Result<()> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = at.with_file_name(format!(".ionshard-restore-{:016x}", rand::random::<u64>()));
        match make(&tmp) {
            Ok(()) => {
                let renamed = std::fs::rename(&tmp, at);
                // Renaming a link over another link of the same file does
                // nothing and succeeds: the temporary name stays otherwise.
                if renamed.is_err() || std::fs::symlink_metadata(&tmp).is_ok() {
                    let _ = std::fs::remove_file(&tmp);
                }
                return renamed.map_err(Error::file(what, at));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => return Err(Error::File { what, path: at.to_path_buf(), source: e }),
        }
    }
    let (path, source) = last.unwrap_or_else(|| (at.to_path_buf(), std::io::Error::other("no temporary name")));
    Err(Error::File { what, path, source })
}

/// What writing one file left to report.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    xattrs_not_set: u64,
    holes: u64,
}

/// Write `bytes` at the file's position, leaving every run of zeros of a
/// block or more as a hole (sparse files come back sparse; a run of zeros
/// costs no disk); the bytes of holes left.
fn write_sparse(f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<u64> {
    const BLOCK: usize = 4096;
    let mut holes = 0;
    let mut at = 0;
    while at < bytes.len() {
        // The next block-sized run of zeros, if any.
        let mut zero_at = at;
        let found = loop {
            if zero_at + BLOCK > bytes.len() {
                break None;
            }
            if bytes[zero_at..zero_at + BLOCK].iter().all(|b| *b == 0) {
                break Some(zero_at);
            }
            zero_at += BLOCK;
        };
        let Some(z) = found else {
            f.write_all(&bytes[at..])?;
            break;
        };
        f.write_all(&bytes[at..z])?;
        let mut end = z + BLOCK;
        while end < bytes.len() && bytes[end] == 0 {
            end += 1;
        }
        f.seek(SeekFrom::Current((end - z) as i64))?;
        holes += (end - z) as u64;
        at = end;
    }
    Ok(holes)
}

/// Files written under temporary names, waiting to be made durable and
/// renamed: one `syncfs` for a batch instead of an fsync per file (a tree of
/// 50,000 small files is otherwise 50,000 waits on the disk), and only
/// then the renames, so no name ever shows a file whose bytes are not on
/// disk.
#[derive(Default)]
struct Pending {
    files: Vec<(PathBuf, PathBuf)>,
    bytes: u64,
}

impl Pending {
    /// Sync the file system under `root` and rename every file into place.
    fn finish(&mut self, root: &Path) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        if let Err(e) = sync_fs(root) {
            self.discard();
            return Err(e);
        }
        let mut files = std::mem::take(&mut self.files).into_iter();
        for (tmp, at) in files.by_ref() {
            if let Err(e) = std::fs::rename(&tmp, &at) {
                let _ = std::fs::remove_file(&tmp);
                // The rest of the batch is not left behind under temporary names.
                for (tmp, _) in files {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(Error::File { what: "renaming into place", path: at, source: e });
            }
        }
        self.bytes = 0;
        Ok(())
    }

    /// Remove the batch's temporary files (a restore that stops).
    fn discard(&mut self) {
        for (tmp, _) in self.files.drain(..) {
            let _ = std::fs::remove_file(tmp);
        }
        self.bytes = 0;
    }
}

/// Make everything written under `root` durable (syncfs of its file system).
fn sync_fs(root: &Path) -> Result<()> {
    let dir = std::fs::File::open(root).map_err(Error::file("opening", root))?;
    rustix::fs::syncfs(&dir).map_err(|e| Error::File { what: "syncing", path: root.to_path_buf(), source: e.into() })
}

/// Files (or bytes) written before a batch is synced and renamed.
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_that_leave_the_target_are_recognised() {
        assert!(link_stays_inside(Path::new("a/b/link"), Path::new("c")));
        assert!(link_stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/b/link"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("a/b/link"), Path::new("../../../etc/passwd")));
        assert!(!link_stays_inside(Path::new("a/link"), Path::new("/etc/passwd")));
        assert!(!link_stays_inside(Path::new("link"), Path::new("..")));
    }

    #[test]
    fn times_before_1970_and_include_of_the_root() {
        let m = std::fs::metadata("/").expect("metadata");
        let mut e = Entry::from_meta(Path::new("/t/old"), &m);
        (e.mtime, e.mtime_nsec) = (-86_400, 500_000_000);
        let want =
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(86_400) + std::time::Duration::from_millis(500);
        assert_eq!(mtime(&e), want, "a day before 1970, plus half a second");
        assert!(selected(&e, &["/".to_string()]), "--include / is everything");
        assert!(selected(&e, &["/t".to_string()]) && !selected(&e, &["/u".to_string()]));
    }

    /// No data objects: the trees below hold empty files only.
    struct NoObjects;

    impl Objects for NoObjects {
        async fn fetch(&self, _: &ObjectCap, _: &Path) -> Result<u64> {
            Err(Error::Invalid("this test has no data objects".into()))
        }
    }

    /// An entry of `kind` at `path` (stored as the snapshot would), with
    /// this test's own metadata.
    fn entry(path: &str, kind: Kind) -> Entry {
        let m = std::fs::metadata(std::env::temp_dir()).expect("metadata");
        let mut e = Entry::from_meta(Path::new(path), &m);
        (e.kind, e.mode, e.size, e.data) = (kind, if kind == Kind::Dir { 0o755 } else { 0o644 }, 0, None);
        e
    }

    fn write(entries: Vec<Entry>, target: &Path) -> Result<RestoreReport> {
        let tree = crate::tree::Tree::new(entries);
        let o = RestoreOptions::new("test", target);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(write_tree(&tree, "test", &[], &o, &NoObjects))
    }

    /// A private folder to restore into, in a fresh temporary one.
    fn target() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().join("target");
        std::fs::DirBuilder::new().mode(0o700).create(&t).expect("target");
        (dir, t)
    }

    /// A forged tree makes `a/b/s` a symlink to `../..` (the target: inside),
    /// names `a/b/s` again as an empty file, and hard-links `x` to "the
    /// file": the link would be the symlink itself, one level up, pointing
    /// out of the target.
    #[test]
    fn a_snapshot_naming_one_path_twice_to_hard_link_a_symlink_elsewhere_is_refused() {
        let (_d, t) = target();
        let mut s = entry("/a/b/s", Kind::Symlink);
        s.set_target(b"../..");
        let mut x = entry("/x", Kind::File);
        x.set_link_to(b"a/b/s");
        let tree = vec![entry("/a", Kind::Dir), entry("/a/b", Kind::Dir), s, entry("/a/b/s", Kind::File), x];
        let err = write(tree, &t).expect_err("a path named twice");
        assert!(err.to_string().contains("names this path twice"), "{err}");
        assert!(std::fs::symlink_metadata(t.join("x")).is_err(), "nothing made");
        assert!(std::fs::symlink_metadata(t.join("a")).is_err(), "nothing written before the check");
    }

    /// A tree that makes the restore's scratch folder (open to all, its
    /// owner another user) would have the next restore into the same
    /// target write its objects' plain text where that user chooses.
    #[test]
    fn a_snapshot_that_makes_the_scratch_folder_for_another_user_is_refused() {
        let (_d, t) = target();
        let mut dir = entry("/.ionshard-restore", Kind::Dir);
        (dir.mode, dir.uid) = (0o777, 65534);
        let tree = vec![dir, entry("/.ionshard-restore/keep", Kind::File), entry("/ok", Kind::File)];
        let r = write(tree, &t).expect("the rest restores");
        assert_eq!(r.skipped.len(), 2, "{r:?}");
        assert!(r.skipped.iter().all(|s| s.why.contains("scratch folder")), "{r:?}");
        assert!(std::fs::symlink_metadata(t.join(".ionshard-restore")).is_err(), "the scratch folder is gone");
        assert!(t.join("ok").is_file());
    }

    /// A scratch folder someone planted in the target before the restore
    /// (here a symlink to a folder elsewhere) is not written into.
    #[test]
    fn a_scratch_folder_planted_as_a_symlink_is_refused() {
        let (d, t) = target();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, t.join(".ionshard-restore")).expect("plant");
        let err = write(vec![entry("/ok", Kind::File)], &t).expect_err("planted");
        assert!(err.to_string().contains("not a private folder"), "{err}");
        // Open to others: refused too.
        std::fs::remove_file(t.join(".ionshard-restore")).expect("unplant");
        std::fs::DirBuilder::new().mode(0o777).create(t.join(".ionshard-restore")).expect("open folder");
        std::fs::set_permissions(t.join(".ionshard-restore"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = write(vec![entry("/ok", Kind::File)], &t).expect_err("open to others");
        assert!(err.to_string().contains("not a private folder"), "{err}");
    }

    #[test]
    fn a_snapshot_with_a_nul_or_an_overlong_name_is_refused_before_anything_is_written() {
        for bad in ["/d/bad\0name".to_string(), format!("/d/{}", "n".repeat(256))] {
            let (_d, t) = target();
            let tree = vec![entry("/d", Kind::Dir), entry("/d/ok", Kind::File), entry(&bad, Kind::File)];
            let err = write(tree, &t).expect_err("refused");
            assert!(err.to_string().contains("NUL byte or longer than 255"), "{err}");
            assert!(std::fs::symlink_metadata(t.join("d")).is_err(), "nothing written");
        }
    }

    /// A backup of `/` holds the root folder as the empty path: it is the
    /// target, left as it is, and the rest restores.
    #[test]
    fn a_backup_of_the_root_folder_restores() {
        let (_d, t) = target();
        let mut root = entry("/", Kind::Dir);
        root.mode = 0o755;
        let tree = vec![root, entry("/etc", Kind::Dir), entry("/etc/hosts", Kind::File)];
        let r = write(tree, &t).expect("restores");
        assert!(t.join("etc/hosts").is_file(), "{r:?}");
        assert_eq!(std::fs::metadata(&t).expect("meta").permissions().mode() & 0o777, 0o700, "the target as it was");
    }

    /// Another user who can write the folder the target is in could rename
    /// the target and put a symlink in its place while the restore writes.
    #[test]
    fn a_target_inside_a_folder_others_can_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("shared");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let t = shared.join("mine");
        std::fs::DirBuilder::new().mode(0o700).create(&t).expect("target");
        let err = write(vec![entry("/ok", Kind::File)], &t).expect_err("refused");
        assert!(err.to_string().contains("which another user can change"), "{err}");
        assert!(!t.join("ok").exists());
        // Sticky, as /tmp: only the target's owner and the folder's may rename it.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        write(vec![entry("/ok", Kind::File)], &t).expect("restores");
        assert!(t.join("ok").is_file());
        // Sticky but another user's: that user may rename anything in it.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&shared, Some(65534), None).expect("chown");
            let err = write(vec![entry("/ok2", Kind::File)], &t).expect_err("refused");
            assert!(err.to_string().contains("which another user can change"), "{err}");
            std::os::unix::fs::chown(&shared, Some(0), None).expect("chown back");
        } else {
            eprintln!("not root: a sticky folder of another user's is not tried (it needs chown)");
        }
        // A target given through a symlink of ours is the folder it names.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&t, &link).expect("symlink");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        write(vec![entry("/ok3", Kind::File)], &link).expect("restores through the link");
        assert!(t.join("ok3").is_file());
    }

    /// A link replaces a file already in the target only once it is made:
    /// one that cannot be (here a symlink target longer than the kernel
    /// takes) leaves the file as it was. Restoring the same links twice
    /// leaves no temporary names behind.
    #[test]
    fn a_link_that_cannot_be_made_leaves_the_file_it_would_replace() {
        let (_d, t) = target();
        std::fs::write(t.join("l"), b"keep").expect("existing");
        let mut l = entry("/l", Kind::Symlink);
        l.set_target("x/".repeat(2100).as_bytes());
        write(vec![l], &t).expect_err("the symlink cannot be made");
        assert_eq!(std::fs::read(t.join("l")).expect("still there"), b"keep");
        let tree = || {
            let mut h = entry("/h", Kind::File);
            h.set_link_to(b"f");
            let mut l = entry("/l", Kind::Symlink);
            l.set_target(b"f");
            vec![entry("/f", Kind::File), h, l]
        };
        for _ in 0..2 {
            write(tree(), &t).expect("restores");
            use std::os::unix::fs::MetadataExt;
            let ino = |p: &str| std::fs::symlink_metadata(t.join(p)).expect("made").ino();
            assert_eq!(ino("h"), ino("f"), "a hard link");
            assert_eq!(std::fs::read_link(t.join("l")).expect("a symlink"), Path::new("f"));
            let left: Vec<_> = std::fs::read_dir(&t)
                .expect("ls")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(".ionshard-restore"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    /// `a/up -> ..` points at the target itself (allowed); `a/out -> up/..`
    /// counts as one level down and one up, but the kernel follows `up`
    /// first and lands in the target's parent.
    #[test]
    fn a_chain_of_symlinks_cannot_point_outside_the_target() {
        assert!(link_stays_inside(Path::new("a/up"), Path::new("..")));
        assert!(!link_stays_inside(Path::new("a/out"), Path::new("up/..")));
        assert!(!link_stays_inside(Path::new("a/out"), Path::new("up/../x")));
        assert!(!link_stays_inside(Path::new("a/b/out"), Path::new("../up/../..")));
        assert!(link_stays_inside(Path::new("a/b/ok"), Path::new("../../a/up/x")), "leading .. then names: inside");
    }
}
