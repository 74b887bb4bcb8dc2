//! The drive's tree: folders, files and their versions, and the trash.
//! Pure: no I/O, no clock (times are passed in). The client seals it with
//! the drive's key and keeps it on every device ([`crate::protocol`]'s root).
//!
//! A file's content is named by its version (manifest, key, shards), so a
//! rename or a move changes the tree only, never the content. Removing
//! puts the entry in the trash; versions are thinned as Nextcloud does
//! (dense when recent, sparse with age); what neither the tree nor the
//! trash still names is returned to be deleted from the devices.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The tree's format.
pub const FORMAT: u32 = 1;
/// The longest name of one file or folder, in bytes.
pub const MAX_NAME: usize = 255;
/// The longest path, in bytes.
pub const MAX_PATH: usize = 4096;

/// Entries trashed under a folder at most this long (seconds) before the
/// folder itself come back with it ([`Tree::untrash`]).
const FOLDED_WITHIN: u64 = 3600;
/// How long a removed entry stays in the trash (seconds).
pub const TRASH_SECS: u64 = 30 * 86_400;

/// One version of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// When it was stored (seconds since the epoch).
    pub at: u64,
    /// Bytes.
    pub len: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// The manifest's CID.
    pub manifest: String,
    /// The CID of the manifest's bytes as kept on the devices.
    pub stored: String,
    /// The key that opens the manifest, hex.
    pub read_key: String,
    /// Every shard the content is kept in.
    pub shards: Vec<String>,
}

/// A folder or a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A folder.
    Dir {
        /// When it was made.
        created: u64,
    },
    /// A file: its versions, oldest first (the last is the content).
    File {
        /// Oldest first.
        versions: Vec<Version>,
    },
}

/// Something removed, kept for [`TRASH_SECS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trashed {
    /// Where it was.
    pub path: String,
    /// When it was removed.
    pub at: u64,
    /// It, and what was under it (paths as they were).
    pub entries: BTreeMap<String, Entry>,
}

/// A property a WebDAV client set on a file or folder (a "dead" property:
/// kept as given, never read by the drive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prop {
    /// Its name.
    pub name: String,
    /// Its XML prefix.
    pub prefix: Option<String>,
    /// Its XML namespace.
    pub namespace: Option<String>,
    /// Its value, as XML.
    pub xml: Option<String>,
}

impl Prop {
    /// What names it: namespace and name.
    pub fn key(&self) -> String {
        format!("{}|{}", self.namespace.as_deref().unwrap_or(""), self.name)
    }
}

/// Properties one path may have, at most.
pub const MAX_PROPS: usize = 64;
/// The longest value of a property, in bytes.
pub const MAX_PROP: usize = 16 << 10;
/// Bytes of properties in the whole drive, at most (they live in the tree,
/// which every change rewrites).
pub const MAX_PROPS_BYTES: usize = 1 << 20;

/// The whole drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// [`FORMAT`].
    pub format: u32,
    /// Every entry by path (`/a/b`); the root `/` is implied.
    pub entries: BTreeMap<String, Entry>,
    /// Removed entries, oldest first.
    pub trash: Vec<Trashed>,
    /// WebDAV properties by path, then by [`Prop::key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: BTreeMap<String, BTreeMap<String, Prop>>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree { format: FORMAT, entries: BTreeMap::new(), trash: Vec::new(), props: BTreeMap::new() }
    }
}

/// A path as the drive keeps it (`/a/b`), from what a user or a WebDAV
/// client gave: `..`, `.`, NUL, control characters, over-long names and
/// paths are refused; empty components and a trailing slash are dropped.
pub fn normal(path: &str) -> Result<String> {
    let bad = |why: String| Error::BadPath { path: path.escape_debug().to_string(), why };
    if path.len() > MAX_PATH {
        return Err(bad(format!("over {MAX_PATH} bytes")));
    }
    let mut out = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part == "." {
            return Err(bad(format!("{part:?} is not a name: give the path from the drive's root")));
        }
        if part.len() > MAX_NAME {
            return Err(bad(format!("a name over {MAX_NAME} bytes")));
        }
        if let Some(c) = part.chars().find(|c| c.is_control()) {
            return Err(bad(format!("a name with the control character {c:?}")));
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&path[..i]),
        _ => None,
    }
}

/// Whether `path` is `dir` or under it.
fn under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Its path.
    pub path: String,
    /// A folder.
    pub dir: bool,
    /// Bytes (a file's newest version).
    pub len: u64,
    /// When its newest version was stored, or the folder made.
    pub at: u64,
    /// Versions kept.
    pub versions: usize,
}

impl Tree {
    /// The tree in `bytes` (JSON), checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tree> {
        let t: Tree = serde_json::from_slice(bytes).map_err(|e| Error::Drive(format!("the drive's tree: {e}")))?;
        if t.format != FORMAT {
            return Err(Error::Drive(format!(
                "the drive's tree is format {}, this build reads {FORMAT}: update ionshard",
                t.format
            )));
        }
        // Paths are checked as any name given by hand is: a tree that names
        // `..` would write outside the folder a `get` fills.
        let paths =
            t.entries.keys().chain(t.trash.iter().flat_map(|x| std::iter::once(&x.path).chain(x.entries.keys())));
        for p in paths {
            if normal(p).ok().as_deref() != Some(p.as_str()) || p == "/" {
                return Err(Error::Drive(format!(
                    "the drive's tree names {:?}, not a path it keeps",
                    p.escape_debug()
                )));
            }
        }
        Ok(t)
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The entry at `path` (normal).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        path == "/" || matches!(self.entries.get(path), Some(Entry::Dir { .. }))
    }

    /// Make folder `path` and any missing parents.
    pub fn mkdir(&mut self, path: &str, now: u64) -> Result<()> {
        if path == "/" {
            return Ok(());
        }
        if let Some(p) = parent(path) {
            self.mkdir(p, now)?;
        }
        match self.entries.get(path) {
            Some(Entry::Dir { .. }) => Ok(()),
            Some(Entry::File { .. }) => Err(Error::Drive(format!("{path} is a file, not a folder"))),
            None => {
                self.entries.insert(path.to_string(), Entry::Dir { created: now });
                Ok(())
            }
        }
    }

    /// Add `version` as file `path`'s newest (making the file and its
    /// folders if need be); the versions thinning dropped.
    pub fn add_version(&mut self, path: &str, mut version: Version, now: u64) -> Result<Vec<Version>> {
        // A clock ahead of this one does not put a version in the future.
        version.at = version.at.min(now);
        if path == "/" {
            return Err(Error::Drive("the drive's root is a folder, not a file".into()));
        }
        if let Some(p) = parent(path) {
            self.mkdir(p, now)?;
        }
        match self.entries.entry(path.to_string()).or_insert_with(|| Entry::File { versions: Vec::new() }) {
            Entry::Dir { .. } => Err(Error::Drive(format!("{path} is a folder: put the file inside it"))),
            Entry::File { versions } => {
                if versions.last().is_some_and(|v| v.manifest == version.manifest) {
                    return Ok(Vec::new());
                }
                versions.push(version);
                Ok(thin(versions, now))
            }
        }
    }

    /// What is directly in folder `path` (or `path` itself, if a file).
    pub fn list(&self, path: &str) -> Result<Vec<Listed>> {
        let line = |p: &str, e: &Entry| match e {
            Entry::Dir { created } => Listed { path: p.to_string(), dir: true, len: 0, at: *created, versions: 0 },
            Entry::File { versions } => {
                let v = versions.last();
                Listed {
                    path: p.to_string(),
                    dir: false,
                    len: v.map_or(0, |v| v.len),
                    at: v.map_or(0, |v| v.at),
                    versions: versions.len(),
                }
            }
        };
        match self.entries.get(path) {
            Some(e @ Entry::File { .. }) => return Ok(vec![line(path, e)]),
            None if path != "/" => return Err(Error::NotInDrive(path.to_string())),
            _ => {}
        }
        Ok(self.entries.iter().filter(|(p, _)| parent(p) == Some(path)).map(|(p, e)| line(p, e)).collect())
    }

    /// Every file at or under `path`, with its newest version.
    pub fn files_under(&self, path: &str) -> Vec<(String, Version)> {
        self.entries
            .iter()
            .filter(|(p, _)| under(p, path))
            .filter_map(|(p, e)| match e {
                Entry::File { versions } => versions.last().map(|v| (p.clone(), v.clone())),
                Entry::Dir { .. } => None,
            })
            .collect()
    }

    /// Move or rename `from` (a file, or a folder with all under it) to
    /// `to`, which must not exist; into a folder `to` names, if it is one.
    pub fn mv(&mut self, from: &str, to: &str, now: u64) -> Result<String> {
        let to = if self.is_dir(to) {
            let name = from.rsplit('/').next().unwrap_or_default();
            if to == "/" { format!("/{name}") } else { format!("{to}/{name}") }
        } else {
            to.to_string()
        };
        if to == from {
            return Err(Error::Drive(format!("{from} is there already")));
        }
        self.rename(from, &to, now)?;
        Ok(to)
    }

    /// Give `from` (a file, or a folder with all under it) the path `to`
    /// exactly, making `to`'s folders if need be; `to` must not exist.
    pub fn rename(&mut self, from: &str, to: &str, now: u64) -> Result<()> {
        if from == "/" {
            return Err(Error::Drive("the drive's root cannot be moved".into()));
        }
        if !self.entries.contains_key(from) {
            return Err(Error::NotInDrive(from.to_string()));
        }
        if under(to, from) {
            return Err(Error::Drive(format!("{from} cannot move into itself ({to})")));
        }
        if self.entries.contains_key(to) || to == "/" {
            return Err(Error::Exists(to.to_string()));
        }
        let moving: Vec<String> = self.entries.keys().filter(|p| under(p, from)).cloned().collect();
        // Every new path checked before anything moves: one past the
        // limits would make a tree no device reads back (nothing moved).
        for p in &moving {
            normal(&format!("{to}{}", &p[from.len()..]))?;
        }
        if let Some(p) = parent(to) {
            self.mkdir(p, now)?;
        }
        for p in moving {
            let dest = format!("{to}{}", &p[from.len()..]);
            if let Some(e) = self.entries.remove(&p) {
                self.entries.insert(dest.clone(), e);
            }
            if let Some(props) = self.props.remove(&p) {
                self.props.insert(dest, props);
            }
        }
        Ok(())
    }

    /// Set (`true`) or remove properties of `path`; each as asked, or the
    /// limits' refusal.
    pub fn patch_props(&mut self, path: &str, patch: &[(bool, Prop)]) -> Result<()> {
        if path != "/" && !self.entries.contains_key(path) {
            return Err(Error::NotInDrive(path.to_string()));
        }
        let mut props = self.props.get(path).cloned().unwrap_or_default();
        for (set, p) in patch {
            if *set {
                if p.xml.as_ref().is_some_and(|x| x.len() > MAX_PROP) {
                    return Err(Error::NoRoom(format!("a property of {path} over {MAX_PROP} bytes")));
                }
                props.insert(p.key(), p.clone());
            } else {
                props.remove(&p.key());
            }
        }
        if props.len() > MAX_PROPS {
            return Err(Error::NoRoom(format!("{path} would have over {MAX_PROPS} properties")));
        }
        let size = |m: &BTreeMap<String, Prop>| {
            m.values().map(|p| p.name.len() + p.xml.as_ref().map_or(0, String::len)).sum::<usize>()
        };
        let others: usize = self.props.iter().filter(|(p, _)| *p != path).map(|(_, m)| size(m)).sum();
        if others + size(&props) > MAX_PROPS_BYTES {
            return Err(Error::NoRoom(format!("the drive's WebDAV properties would pass {MAX_PROPS_BYTES} bytes")));
        }
        if props.is_empty() {
            self.props.remove(path);
        } else {
            self.props.insert(path.to_string(), props);
        }
        Ok(())
    }

    /// Make file `to` (which must not exist) with `from`'s newest content:
    /// the same shards, nothing stored again.
    pub fn copy_file(&mut self, from: &str, to: &str, now: u64) -> Result<()> {
        let Some(Entry::File { versions }) = self.entries.get(from) else {
            return Err(Error::NotInDrive(from.to_string()));
        };
        let mut v = versions.last().cloned().ok_or_else(|| Error::NotInDrive(from.to_string()))?;
        if self.entries.contains_key(to) {
            return Err(Error::Exists(to.to_string()));
        }
        v.at = now;
        self.add_version(to, v, now)?;
        if let Some(props) = self.props.get(from).cloned() {
            self.props.insert(to.to_string(), props);
        }
        Ok(())
    }

    /// Put `path` (and all under it) in the trash.
    pub fn remove(&mut self, path: &str, now: u64) -> Result<()> {
        if path == "/" {
            return Err(Error::Drive("the drive's root cannot be removed".into()));
        }
        if !self.entries.contains_key(path) {
            return Err(Error::NotInDrive(path.to_string()));
        }
        let gone: Vec<String> = self.entries.keys().filter(|p| under(p, path)).cloned().collect();
        for p in &gone {
            self.props.remove(p);
        }
        let entries = gone.into_iter().filter_map(|p| self.entries.remove(&p).map(|e| (p, e))).collect();
        self.trash.push(Trashed { path: path.to_string(), at: now, entries });
        Ok(())
    }

    /// Bring the newest trashed entry at `path` back where it was.
    pub fn untrash(&mut self, path: &str, now: u64) -> Result<()> {
        let i = self
            .trash
            .iter()
            .rposition(|t| t.path == path)
            .ok_or_else(|| Error::Drive(format!("{path} is not in the trash (`ionshard drive trash` lists it)")))?;
        // A folder made again meanwhile (restoring something that was in
        // it makes it) takes back what was in it; anything else in the way
        // stops the restore before it changes a thing.
        // A folder deleted over WebDAV or by a sync is removed one file at
        // a time and then itself: each file is a trash entry of its own.
        // Those removed under it in the hour before it come back with it
        // (the folder alone came back empty, its files purged later).
        let at = self.trash[i].at;
        // The newest trash entry of each path (an older one of the same path stays).
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        for u in &self.trash {
            let n = newest.entry(u.path.as_str()).or_insert(u.at);
            *n = (*n).max(u.at);
        }
        let mut taken: Vec<usize> = (0..self.trash.len())
            .filter(|&j| {
                let u = &self.trash[j];
                j == i
                    || (u.path != path
                        && under(&u.path, path)
                        && u.at <= at
                        && at - u.at <= FOLDED_WITHIN
                        && newest.get(u.path.as_str()) == Some(&u.at))
            })
            .collect();
        let clash = taken.iter().flat_map(|&j| self.trash[j].entries.iter()).find(|(p, e)| {
            !matches!((self.entries.get(*p), e), (None, _) | (Some(Entry::Dir { .. }), Entry::Dir { .. }))
        });
        if let Some((p, _)) = clash {
            return Err(Error::Drive(format!("{p} exists again: move it away first")));
        }
        if let Some(p) = parent(path) {
            self.mkdir(p, now)?;
        }
        taken.sort_unstable();
        for j in taken.into_iter().rev() {
            let t = self.trash.remove(j);
            for (p, e) in t.entries {
                self.entries.entry(p).or_insert(e);
            }
        }
        Ok(())
    }

    /// Make file `path`'s version `index` (0 = oldest) its newest again.
    pub fn restore_version(&mut self, path: &str, index: usize, now: u64) -> Result<Vec<Version>> {
        let Some(Entry::File { versions }) = self.entries.get(path) else {
            return Err(Error::NotInDrive(path.to_string()));
        };
        let mut v = versions
            .get(index)
            .cloned()
            .ok_or_else(|| Error::Drive(format!("{path} has {} versions; there is no {index}", versions.len())))?;
        v.at = now;
        self.add_version(path, v, now)
    }

    /// Empty the trash of what was removed `older_than` seconds ago or
    /// more (everything with 0); the versions dropped.
    pub fn purge(&mut self, now: u64, older_than: u64) -> Vec<Version> {
        let (gone, kept): (Vec<Trashed>, Vec<Trashed>) =
            std::mem::take(&mut self.trash).into_iter().partition(|t| now.saturating_sub(t.at) >= older_than);
        self.trash = kept;
        gone.into_iter()
            .flat_map(|t| t.entries.into_values())
            .flat_map(|e| match e {
                Entry::File { versions } => versions,
                Entry::Dir { .. } => Vec::new(),
            })
            .collect()
    }

    /// Every shard any version in the tree or the trash still names.
    pub fn live_shards(&self) -> BTreeSet<&str> {
        let files = self.entries.values().chain(self.trash.iter().flat_map(|t| t.entries.values()));
        files
            .flat_map(|e| match e {
                Entry::File { versions } => versions.as_slice(),
                Entry::Dir { .. } => &[],
            })
            .flat_map(|v| v.shards.iter().map(String::as_str).chain([v.stored.as_str()]))
            .collect()
    }

    /// Of `dropped` versions' shards, those nothing in the tree still names.
    pub fn unreferenced(&self, dropped: &[Version]) -> Vec<String> {
        let live = self.live_shards();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for v in dropped {
            for s in v.shards.iter().chain([&v.stored]) {
                if !live.contains(s.as_str()) {
                    out.insert(s.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The bands of Nextcloud's version thinning: up to an age, one version
/// kept per step.
const BANDS: [(u64, u64); 6] = [
    (10, 2),                // the first 10 s: one per 2 s
    (60, 10),               // the first minute: one per 10 s
    (3_600, 60),            // the first hour: one per minute
    (86_400, 3_600),        // the first day: one per hour
    (30 * 86_400, 86_400),  // the first 30 days: one per day
    (u64::MAX, 7 * 86_400), // after: one per week
];

/// Thin `versions` (oldest first) as of `now`: the newest always stays;
/// of the rest, one per step of each age band (the newest in each). The
/// versions dropped.
pub fn thin(versions: &mut Vec<Version>, now: u64) -> Vec<Version> {
    let Some(newest) = versions.pop() else { return Vec::new() };
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for v in versions.drain(..).rev() {
        if v.at > now {
            // From a clock ahead of this one: kept, not thinned as new.
            kept.push(v);
            continue;
        }
        let age = now - v.at;
        let (band, step) =
            BANDS.iter().enumerate().find(|(_, (upto, _))| age < *upto).map_or((5, 7 * 86_400), |(i, b)| (i, b.1));
        if seen.insert((band, age / step)) { kept.push(v) } else { dropped.push(v) }
    }
    kept.reverse();
    kept.push(newest);
    *versions = kept;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(at: u64, tag: &str) -> Version {
        Version {
            at,
            len: 1,
            blake3: String::new(),
            manifest: tag.to_string(),
            stored: format!("m-{tag}"),
            read_key: String::new(),
            shards: vec![format!("s-{tag}")],
        }
    }

    /// `..`, `.`, NUL, control characters and over-long names are refused;
    /// slashes are tidied.
    #[test]
    fn path_traversal_and_bad_names_are_refused() {
        for bad in ["../etc/passwd", "/a/../../b", "a/./b", "a\0b", "a\nb", &"x".repeat(256), &"a/".repeat(2100)] {
            assert!(normal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normal("a//b/").expect("ok"), "/a/b");
        assert_eq!(normal("/").expect("ok"), "/");
        assert_eq!(normal("").expect("ok"), "/");
        assert_eq!(normal("/Ünïcode name.txt").expect("ok"), "/Ünïcode name.txt");
        // A tree that names `..` (whoever holds the key wrote it) is refused whole.
        let mut t = Tree::default();
        t.entries.insert("/../../etc/x".into(), Entry::Dir { created: 1 });
        assert!(Tree::from_bytes(&t.to_bytes()).is_err());
    }

    /// A move that would make a path under the folder longer than
    /// [`MAX_PATH`] wrote a tree no device could read back (every path is
    /// checked when a tree is read): the whole drive was locked. It is
    /// refused, and nothing moves.
    #[test]
    fn a_move_that_makes_a_path_too_long_is_refused_whole() {
        let mut t = Tree::default();
        let deep = format!("/a/{}/f.txt", vec!["d".repeat(200); 20].join("/"));
        assert!(deep.len() > 4000 && deep.len() <= MAX_PATH, "{}", deep.len());
        t.add_version(&deep, v(1, "f"), 1).expect("add");
        t.add_version("/a/short.txt", v(1, "s"), 1).expect("add");
        let long = format!("/{}", "n".repeat(250));
        assert!(matches!(t.rename("/a", &long, 2), Err(Error::BadPath { .. })));
        assert!(t.get(&deep).is_some() && t.get("/a/short.txt").is_some(), "nothing moved");
        assert!(t.get(&long).is_none(), "no folder made for it either");
        Tree::from_bytes(&t.to_bytes()).expect("the tree still reads back");
    }

    /// A file manager deleting /Photos over WebDAV (or a sync) removes
    /// each file, then the folder: restoring the folder brought it back
    /// empty, and its files were purged from the trash 30 days later.
    #[test]
    fn a_folder_deleted_file_by_file_comes_back_whole_from_the_trash() {
        let mut t = Tree::default();
        t.add_version("/Photos/a.jpg", v(1, "a"), 1).expect("add");
        t.add_version("/Photos/2025/b.jpg", v(1, "b"), 1).expect("add");
        t.add_version("/Photos/old.jpg", v(1, "o"), 1).expect("add");
        t.remove("/Photos/old.jpg", 1_000).expect("rm, well before");
        t.remove("/Photos/a.jpg", 10_000).expect("rm");
        t.remove("/Photos/2025/b.jpg", 10_001).expect("rm");
        t.remove("/Photos/2025", 10_001).expect("rmdir");
        t.remove("/Photos", 10_002).expect("rmdir");
        t.untrash("/Photos", 20_000).expect("restore");
        assert!(t.get("/Photos/a.jpg").is_some() && t.get("/Photos/2025/b.jpg").is_some(), "{:?}", t.entries);
        assert!(t.get("/Photos/old.jpg").is_none(), "deleted on its own, hours before: stays in the trash");
        assert_eq!(t.trash.len(), 1, "{:?}", t.trash);
        assert_eq!(t.trash[0].path, "/Photos/old.jpg");
    }

    /// A folder moves with everything under it and nothing else; it
    /// cannot move into itself or over something; the trash gives back
    /// what it took.
    #[test]
    fn moves_renames_and_the_trash_keep_content_where_it_was() {
        let mut t = Tree::default();
        t.add_version("/docs/a.txt", v(1, "a"), 1).expect("add");
        t.add_version("/docs/sub/b.txt", v(1, "b"), 1).expect("add");
        t.add_version("/docs2/c.txt", v(1, "c"), 1).expect("add");
        assert!(t.mv("/docs", "/docs/sub", 2).is_err(), "into itself");
        assert!(t.mv("/docs/a.txt", "/docs2/c.txt", 2).is_err(), "over a file");
        assert!(matches!(t.rename("/docs", "/docs2", 2), Err(Error::Exists(_))), "a rename is exact, never into");
        t.copy_file("/docs2/c.txt", "/docs2/copy.txt", 2).expect("copy");
        assert_eq!(t.live_shards().len(), 6, "a copy shares its shards");
        t.remove("/docs2/copy.txt", 2).expect("rm");
        let dropped = t.purge(3, 0);
        assert!(t.unreferenced(&dropped).is_empty(), "the original still names the copy's shards");
        assert_eq!(t.mv("/docs", "/papers", 2).expect("mv"), "/papers");
        assert!(t.get("/papers/sub/b.txt").is_some());
        assert!(t.get("/docs2/c.txt").is_some(), "a sibling with the prefix stays");
        assert_eq!(t.mv("/papers/a.txt", "/docs2", 3).expect("into a folder"), "/docs2/a.txt");
        t.remove("/papers", 4).expect("rm");
        assert!(t.get("/papers/sub/b.txt").is_none());
        assert_eq!(t.live_shards().len(), 6, "trashed content is still live");
        t.untrash("/papers", 5).expect("back");
        t.remove("/papers/sub/b.txt", 5).expect("rm");
        t.remove("/papers", 5).expect("rm");
        t.untrash("/papers/sub/b.txt", 5).expect("the file first: it makes /papers/sub again");
        t.untrash("/papers", 5).expect("then the folder, around it");
        assert!(t.get("/papers/sub/b.txt").is_some() && t.trash.is_empty());
        assert!(t.mv("/papers", "/", 5).is_err(), "already there");
        assert!(t.get("/papers/sub/b.txt").is_some());
        t.remove("/docs2/c.txt", 6).expect("rm");
        assert!(t.purge(7, TRASH_SECS).is_empty(), "not old enough");
        let dropped = t.purge(6 + TRASH_SECS, TRASH_SECS);
        assert_eq!(t.unreferenced(&dropped), vec!["m-c".to_string(), "s-c".to_string()]);
        assert_eq!(t.list("/").expect("ls").len(), 2);
    }

    /// Versions thin like Nextcloud's: all of the last ten seconds at two
    /// second steps, then one a minute, an hour, a day, a week.
    #[test]
    fn versions_thin_dense_when_recent_and_sparse_with_age() {
        let now = 100 * 86_400;
        // One version a minute over the last three hours.
        let mut vs: Vec<Version> = (0..180).rev().map(|m| v(now - m * 60, &m.to_string())).collect();
        let dropped = thin(&mut vs, now);
        assert_eq!(vs.len() + dropped.len(), 180);
        assert_eq!(vs.last().expect("newest").at, now, "the newest stays");
        // The last hour at one a minute (60), then one an hour for two more hours (2 or 3).
        assert!((61..=64).contains(&vs.len()), "{}", vs.len());
        // A second pass changes nothing.
        assert!(thin(&mut vs, now).is_empty());
        // Shared shards stay: a dropped version whose shards another keeps.
        let mut t = Tree::default();
        t.add_version("/f", v(1, "x"), 1).expect("add");
        let mut same = v(2, "y");
        same.shards = vec!["s-x".into()];
        assert!(t.unreferenced(&[same]).contains(&"m-y".to_string()));
        assert!(!t.unreferenced(&[v(3, "x")]).contains(&"s-x".to_string()));
    }
}
