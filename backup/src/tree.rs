//! A snapshot's tree: every file, directory and symlink with its metadata,
//! and where each file's bytes are (a range of one of the snapshot's data
//! objects). Stored as an object of its own (JSON, zstd-compressed, then
//! through the chunker like any data, so an unchanged part of the tree is
//! stored once).
//!
//! ```text
//! tree  = zstd(JSON { "format": "ionshard-backup-tree/1", "entries": [entry, ...] })
//! entry = { "path": "home/ann/a.txt" (absolute path without its leading '/';
//!             "path_hex" instead when the name is not UTF-8),
//!           "kind": "file" | "dir" | "symlink" | "other",
//!           "mode", "uid", "gid", "mtime", "mtime_nsec", "size",
//!           "dev", "inode", "ctime", "ctime_nsec"   (how the next run knows it unchanged),
//!           "target"   (symlinks), "link_to" (hard links: the path of the entry it is a link of),
//!           "target_hex", "link_to_hex"  (format 3: the same, as hex, when not UTF-8),
//!           "data": { "object": index into the snapshot's data objects, "offset" },
//!           "blake3"   (files: hash of the bytes, checked at restore),
//!           "xattrs": [{ "name", "value": base64 }]   (format 2; files and directories),
//!           "rdev"     (format 2; device nodes) }
//! ```
//! Format 2 adds `xattrs` and `rdev`; this build reads format 1 trees as they are
//! (no extended attributes), and an earlier build refuses a format 2 tree
//! with a clear error rather than restore it without them. Format 3 adds
//! `target_hex` and `link_to_hex`: before it, a symlink target or a hard
//! link's first path that was not UTF-8 was kept lossily (a symlink restored
//! pointing elsewhere; two such names could be taken for each other). A tree
//! is written as format 3 only when one of its entries needs those fields,
//! so every other tree stays readable by the builds that read format 2.
//! Entries are in walk order (each directory before what it holds), paths
//! unique. Metadata costs about 71 bytes per file after zstd (docs/backup.md).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The newest tree format this build writes and reads.
pub const TREE_FORMAT: &str = "ionshard-backup-tree/3";
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The earlier tree formats this build still reads; format 2 is also what
/// it writes for a tree that has no name that is not UTF-8 in a symlink
/// target or a hard link.
const TREE_FORMAT_1: &str = "ionshard-backup-tree/1";
const TREE_FORMAT_2: &str = "ionshard-backup-tree/2";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device node, FIFO or socket: device nodes (as root) and FIFOs are
    /// made again at a restore; sockets are not (their program makes them).
    Other,
}

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    /// Index into the snapshot's data objects.
    pub object: u32,
    /// Byte offset of the file in that object (its length is the entry's size).
    pub offset: u64,
}

/// One file, directory or link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The absolute path without its leading '/', when UTF-8.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The path's bytes in hex, when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// What it is.
    pub kind: Kind,
    /// Permission and type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// and nanoseconds.
    pub mtime_nsec: u32,
    /// Length in bytes (files).
    pub size: u64,
    /// Device, for the next run's comparison.
    pub dev: u64,
    /// Inode, for the next run's comparison.
    pub inode: u64,
    /// Change time, for the next run's comparison.
    pub ctime: i64,
    /// and nanoseconds.
    pub ctime_nsec: u32,
    /// A device node's device number (format 2).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// A symlink's target, when UTF-8 ([`Entry::target_bytes`] reads either form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A symlink's target in hex, when not UTF-8 (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    /// A hard link of this earlier entry (same device and inode): its path,
    /// when UTF-8 ([`Entry::link_to_bytes`] reads either form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_to: Option<String>,
    /// The same in hex, when the path is not UTF-8 (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_to_hex: Option<String>,
    /// A file's bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRef>,
    /// A file's BLAKE3, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Extended attributes (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<crate::xattr::Xattr>,
}

impl Entry {
    /// The entry for `path` with metadata `m` (no data yet).
    pub(crate) fn from_meta(path: &Path, m: &std::fs::Metadata) -> Entry {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let xattrs = if matches!(kind, Kind::File | Kind::Dir) { crate::xattr::read(path) } else { Vec::new() };
        let (path, path_hex) = stored_path(path);
        Entry {
            path,
            path_hex,
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            size: if kind == Kind::File { m.len() } else { 0 },
            dev: m.dev(),
            inode: m.ino(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec() as u32,
            rdev: if kind == Kind::Other { m.rdev() } else { 0 },
            target: None,
            target_hex: None,
            link_to: None,
            link_to_hex: None,
            data: None,
            blake3: None,
            xattrs,
        }
    }

    /// The stored path as bytes (relative: no leading '/').
    pub fn path_bytes(&self) -> Vec<u8> {
        self.path_key().into_owned()
    }

    /// The path's bytes, borrowed where they are stored as text.
    pub(crate) fn path_key(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.path_hex {
            Some(h) => data_encoding::HEXLOWER.decode(h.as_bytes()).unwrap_or_default().into(),
            None => self.path.as_bytes().into(),
        }
    }

    /// A symlink's target as bytes, exactly as it was read.
    pub fn target_bytes(&self) -> Option<Vec<u8>> {
        text_or_hex_bytes(self.target.as_deref(), self.target_hex.as_deref())
    }

    /// The path (as [`Entry::path_bytes`] gives it) of the entry this one is a hard link of.
    pub fn link_to_bytes(&self) -> Option<Vec<u8>> {
        text_or_hex_bytes(self.link_to.as_deref(), self.link_to_hex.as_deref())
    }

    /// Keep `bytes` as this symlink's target.
    pub(crate) fn set_target(&mut self, bytes: &[u8]) {
        (self.target, self.target_hex) = text_or_hex(bytes);
    }

    /// Keep this file as a hard link of the entry whose path bytes are `path`.
    pub(crate) fn set_link_to(&mut self, path: &[u8]) {
        (self.link_to, self.link_to_hex) = text_or_hex(path);
    }

    /// Whether the file is a hard link of an earlier entry.
    pub fn is_hard_link(&self) -> bool {
        self.link_to.is_some() || self.link_to_hex.is_some()
    }

    /// Whether the entry needs format 3 to be kept exactly.
    fn needs_format_3(&self) -> bool {
        self.target_hex.is_some() || self.link_to_hex.is_some()
    }

    /// The stored path, for display.
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path_bytes()).into_owned()
    }

    /// The stored path, checked to stay inside wherever it is restored:
    /// relative, no `..`, no empty or `.` components.
    pub fn safe_relative(&self) -> Result<PathBuf> {
        let bytes = self.path_bytes();
        let p = Path::new(OsStr::from_bytes(&bytes));
        if bytes.is_empty() {
            return Err(Error::Outside { path: self.display_path(), why: "an empty path".into() });
        }
        // Checked on the bytes, not on `components()` (which drops `.` and
        // repeated slashes): a stored path is canonical or refused.
        for part in bytes.split(|b| *b == b'/') {
            if part.is_empty() || part == b"." || part == b".." {
                return Err(Error::Outside {
                    path: self.display_path(),
                    why: "the path leaves the restore target or is not canonical (absolute, or with '..', '.' or '//')"
                        .into(),
                });
            }
            // What no file system makes: found here, not halfway through
            // the restore.
            if part.contains(&0) || part.len() > 255 {
                return Err(Error::Outside {
                    path: self.display_path().replace('\0', "\\0"),
                    why: "a name with a NUL byte or longer than 255 bytes, which no file here can have".into(),
                });
            }
        }
        if p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Outside { path: self.display_path(), why: "not a relative path".into() });
        }
        Ok(p.to_path_buf())
    }

    /// Whether the file is unchanged since `old` was taken (restic's test:
    /// kind, size, modification and change time, device and inode).
    pub(crate) fn same_file_as(&self, old: &Entry) -> bool {
        self.kind == Kind::File
            && old.kind == Kind::File
            && old.data.is_some()
            && self.size == old.size
            && (self.mtime, self.mtime_nsec) == (old.mtime, old.mtime_nsec)
            && (self.ctime, self.ctime_nsec) == (old.ctime, old.ctime_nsec)
            && (self.dev, self.inode) == (old.dev, old.inode)
    }
}

/// The stored form of an absolute path: UTF-8 text, or hex of its bytes.
fn stored_path(path: &Path) -> (String, Option<String>) {
    let bytes = path.as_os_str().as_bytes();
    let (text, hex) = text_or_hex(bytes.strip_prefix(b"/").unwrap_or(bytes));
    (text.unwrap_or_default(), hex)
}

/// Bytes as UTF-8 text when they are, else as hex.
fn text_or_hex(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(data_encoding::HEXLOWER.encode(bytes))),
    }
}

/// What [`text_or_hex`] kept, as bytes again (hex that does not decode: none).
fn text_or_hex_bytes(text: Option<&str>, hex: Option<&str>) -> Option<Vec<u8>> {
    match (text, hex) {
        (_, Some(h)) => data_encoding::HEXLOWER.decode(h.as_bytes()).ok(),
        (Some(t), None) => Some(t.as_bytes().to_vec()),
        (None, None) => None,
    }
}

/// A snapshot's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// [`TREE_FORMAT`].
    pub format: String,
    /// Every entry, in walk order.
    pub entries: Vec<Entry>,
}

/// The largest tree accepted, uncompressed (about four million files).
const MAX_TREE: usize = 1 << 30;

impl Tree {
    /// A tree of `entries`.
    pub fn new(entries: Vec<Entry>) -> Tree {
        let format = if entries.iter().any(Entry::needs_format_3) { TREE_FORMAT } else { TREE_FORMAT_2 };
        Tree { format: format.to_string(), entries }
    }

    /// The stored bytes.
    ///
    /// The JSON goes straight into the compressor: never whole in memory
    /// (about 400 bytes per entry, 21 MB for 52,000 files).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut z = zstd::stream::Encoder::new(Vec::new(), 3).map_err(|e| Error::format("tree", e))?;
        let mut w = std::io::BufWriter::with_capacity(64 << 10, &mut z);
        serde_json::to_writer(&mut w, self).map_err(|e| Error::format("tree", e))?;
        std::io::Write::flush(&mut w).map_err(|e| Error::format("tree", e))?;
        drop(w);
        z.finish().map_err(|e| Error::format("tree", e))
    }

    /// A tree from its stored bytes, checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tree> {
        let mut json = Vec::new();
        let mut d = zstd::stream::read::Decoder::new(bytes).map_err(|e| Error::format("tree", e))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut d, MAX_TREE as u64 + 1), &mut json)
            .map_err(|e| Error::format("tree", e))?;
        if json.len() > MAX_TREE {
            return Err(Error::format("tree", "over 1 GiB uncompressed"));
        }
        let t: Tree = serde_json::from_slice(&json).map_err(|e| Error::format("tree", e))?;
        if ![TREE_FORMAT, TREE_FORMAT_2, TREE_FORMAT_1].contains(&t.format.as_str()) {
            return Err(Error::format("tree", format!("format {:?}; this build reads {TREE_FORMAT}", t.format)));
        }
        Ok(t)
    }
}

/// One difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `U` metadata only, `T` kind changed.
    pub what: char,
    /// The path (absolute).
    pub path: String,
}

/// What changed from `a` to `b`, in path order (as `restic diff` says it).
pub fn diff(a: &Tree, b: &Tree) -> Vec<Change> {
    use std::collections::BTreeMap;
    let index =
        |t: &Tree| -> BTreeMap<Vec<u8>, Entry> { t.entries.iter().map(|e| (e.path_bytes(), e.clone())).collect() };
    let (old, new) = (index(a), index(b));
    let mut out = Vec::new();
    let name = |e: &Entry| format!("/{}", e.display_path());
    for (p, e) in &old {
        if !new.contains_key(p) {
            out.push(Change { what: '-', path: name(e) });
        }
    }
    for (p, e) in &new {
        let Some(o) = old.get(p) else {
            out.push(Change { what: '+', path: name(e) });
            continue;
        };
        let what = if o.kind != e.kind {
            'T'
        } else if o.blake3 != e.blake3
            || o.size != e.size
            || o.target_bytes() != e.target_bytes()
            || o.link_to_bytes() != e.link_to_bytes()
        {
            'M'
        } else if (o.mode, o.uid, o.gid, o.mtime, o.mtime_nsec) != (e.mode, e.uid, e.gid, e.mtime, e.mtime_nsec)
            && o.kind != Kind::Dir
        {
            'U'
        } else {
            continue;
        };
        out.push(Change { what, path: name(e) });
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symlink(path: &[u8], target: &[u8]) -> Entry {
        let m = std::fs::symlink_metadata("/").expect("the root's metadata");
        let mut e = Entry::from_meta(Path::new(OsStr::from_bytes(path)), &m);
        e.kind = Kind::Symlink;
        e.set_target(target);
        e
    }

    #[test]
    fn a_tree_is_format_3_only_when_a_link_needs_it_and_every_format_reads_back() {
        let plain = Tree::new(vec![symlink(b"/t/s", b"../x")]);
        assert_eq!(plain.format, TREE_FORMAT_2, "nothing needs format 3: earlier builds read it");
        let odd = Tree::new(vec![symlink(b"/t/s", b"a\xff")]);
        assert_eq!(odd.format, TREE_FORMAT);
        assert_eq!(odd.entries[0].target, None);
        assert_eq!(odd.entries[0].target_bytes().as_deref(), Some(&b"a\xff"[..]), "kept exactly");
        for t in [plain, odd] {
            assert_eq!(Tree::from_bytes(&t.to_bytes().expect("bytes")).expect("read"), t);
        }
        let mut later = Tree::new(vec![]);
        later.format = "ionshard-backup-tree/4".to_string();
        let err = Tree::from_bytes(&later.to_bytes().expect("bytes")).expect_err("a later format");
        assert!(err.to_string().contains("ionshard-backup-tree/4"), "{err}");
    }

    /// testdata/backup-vectors.json, "tree": a format 3 tree's JSON (before
    /// zstd): a file whose name is not UTF-8, a hard link of it, and a
    /// symlink to it. This build writes exactly that JSON and reads it back.
    #[test]
    fn tree_vectors_hold() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/backup-vectors.json")).expect("vectors");
        let want = v["tree"]["json"].as_str().expect("tree json");
        let base = |path: &[u8], kind: Kind, inode: u64| {
            let (path, path_hex) = stored_path(Path::new(OsStr::from_bytes(path)));
            Entry {
                path,
                path_hex,
                kind,
                mode: if kind == Kind::Symlink { 0o120777 } else { 0o100644 },
                uid: 1000,
                gid: 1000,
                mtime: 1_796_000_000,
                mtime_nsec: 5,
                size: if kind == Kind::File { 6 } else { 0 },
                dev: 2049,
                inode,
                ctime: 1_796_000_001,
                ctime_nsec: 7,
                rdev: 0,
                target: None,
                target_hex: None,
                link_to: None,
                link_to_hex: None,
                data: None,
                blake3: None,
                xattrs: Vec::new(),
            }
        };
        let mut file = base(b"/srv/caf\xe9", Kind::File, 11);
        file.data = Some(DataRef { object: 0, offset: 0 });
        file.blake3 = Some(blake3::hash(b"coffee").to_hex().to_string());
        let mut link = base(b"/srv/hard", Kind::File, 11);
        link.set_link_to(&file.path_bytes());
        link.size = 0;
        let mut sym = base(b"/srv/sym", Kind::Symlink, 12);
        sym.set_target(b"caf\xe9");
        let tree = Tree::new(vec![file, link, sym]);
        let json = serde_json::to_string(&tree).expect("json");
        if std::env::var_os("IONSHARD_PRINT_VECTORS").is_some() {
            eprintln!("tree {json}");
        }
        assert_eq!(json, want, "the tree's JSON is a format: a change needs a new format and new vectors");
        let back: Tree = serde_json::from_str(want).expect("read");
        assert_eq!(back, tree);
        assert_eq!(back.format, TREE_FORMAT);
        assert_eq!(back.entries[1].link_to_bytes().as_deref(), Some(&b"srv/caf\xe9"[..]));
        assert_eq!(back.entries[2].target_bytes().as_deref(), Some(&b"caf\xe9"[..]));
    }

    #[test]
    fn diff_tells_apart_targets_that_differ_only_where_they_are_not_utf8() {
        let a = Tree::new(vec![symlink(b"/t/s", b"a\xfe")]);
        let b = Tree::new(vec![symlink(b"/t/s", b"a\xff")]);
        assert_eq!(diff(&a, &b), vec![Change { what: 'M', path: "/t/s".to_string() }]);
    }
}
