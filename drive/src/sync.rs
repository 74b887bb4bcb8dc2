//! Keeping a folder on a client in sync with a folder of the drive, both
//! ways: what to do, decided from three views of every path, the local
//! folder now, the drive now, and both as they were at the last sync (the
//! base). Pure: the caller scans, fetches, stores and renames.
//!
//! - Changed on one side only: the change goes to the other side (a new
//!   version in the drive, or the file replaced locally).
//! - Removed on one side, unchanged on the other: removed there too (in
//!   the drive, to its trash).
//! - Changed on both sides (or made on both, differently): a conflict.
//!   Both are kept: the drive's stays at the path, the local one moves to
//!   a name that says whose and when, on both sides. A removal against a
//!   change: the change wins, nothing is lost.
//! - The same on both sides: only the base learns it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::tree::Version;

/// Days since 1970-01-01 as a date (the workspace's one calendar).
pub use proto::civil;

/// The state file's format.
pub const STATE_FORMAT: u32 = 1;

/// A file as it was when last in sync (both sides equal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseFile {
    /// BLAKE3 of its content, hex.
    pub blake3: String,
    /// Its length.
    pub len: u64,
    /// Its local modification time then (ns since the epoch): a file with
    /// the same length, times and inode is taken as unchanged without
    /// reading it.
    pub mtime_ns: i128,
    /// Its inode's change time then (ns; no program can set it back).
    #[serde(default)]
    pub ctime_ns: i128,
    /// Its inode then.
    #[serde(default)]
    pub ino: u64,
}

/// The last sync's view: every file and folder both sides had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The drive folder synced.
    pub remote: String,
    /// Files, by path relative to the synced folder (`a/b.txt`).
    pub files: BTreeMap<String, BaseFile>,
    /// Folders, likewise.
    pub dirs: BTreeSet<String>,
    /// The drive's tree sequence number the last pass saw: a drive read
    /// that is older (devices that missed writes answering alone) is not
    /// synced against.
    #[serde(default)]
    pub seq: u64,
}

/// A local file now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// BLAKE3 of its content, hex.
    pub blake3: String,
    /// Its length.
    pub len: u64,
    /// Its modification time (ns since the epoch).
    pub mtime_ns: i128,
    /// Its inode's change time (ns).
    pub ctime_ns: i128,
    /// Its inode.
    pub ino: u64,
}

impl LocalFile {
    /// As the base will keep it.
    pub fn to_base(&self) -> BaseFile {
        BaseFile {
            blake3: self.blake3.clone(),
            len: self.len,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
        }
    }
}

/// What one side holds now: files and folders by relative path.
#[derive(Debug, Clone)]
pub struct Side<F> {
    /// Files.
    pub files: BTreeMap<String, F>,
    /// Folders.
    pub dirs: BTreeSet<String>,
    /// Paths that are there but not synced (a link, a special file, one
    /// that could not be read, a name the drive does not take), and all
    /// under them: left alone on both sides, never taken as removed.
    pub skipped: BTreeSet<String>,
    /// The drive's side only: every content (BLAKE3) the drive still knows
    /// at each path, its versions and its trash. A change or a removal in
    /// the drive is taken over only if the drive's history holds what this
    /// side last synced; otherwise the drive lost it (two clients' writes
    /// that crossed), and nothing here is replaced or removed for it.
    pub history: BTreeMap<String, BTreeSet<String>>,
}

impl<F> Default for Side<F> {
    fn default() -> Self {
        Side { files: BTreeMap::new(), dirs: BTreeSet::new(), skipped: BTreeSet::new(), history: BTreeMap::new() }
    }
}

/// Is `rel` one of `skipped`, or under one?
fn is_skipped(skipped: &BTreeSet<String>, rel: &str) -> bool {
    skipped
        .iter()
        .any(|s| rel == s || (rel.len() > s.len() && rel.starts_with(s.as_str()) && rel.as_bytes()[s.len()] == b'/'))
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Store the local file as a new version in the drive; `over` is the
    /// drive's version it replaces (the change applies only if it is still
    /// the newest there), `None` for a new file.
    Upload {
        /// Relative path.
        rel: String,
        /// The drive's version it replaces.
        over: Option<Version>,
    },
    /// Write the drive's version locally; `over` is the local file it
    /// replaces (only if it is still the same), `None` if there is none.
    Download {
        /// Relative path.
        rel: String,
        /// The drive's version.
        version: Version,
        /// The local file it replaces.
        over: Option<LocalFile>,
    },
    /// Move the drive's file to its trash (it was removed locally).
    RemoveRemote {
        /// Relative path.
        rel: String,
        /// The drive's version removed (only if still the newest).
        version: Version,
    },
    /// Remove the local file (it was removed from the drive).
    RemoveLocal {
        /// Relative path.
        rel: String,
        /// The local file removed (only if still the same).
        file: LocalFile,
    },
    /// Both changed: move the local file to `keep_as` (here and in the
    /// drive), then write the drive's version at `rel`.
    Conflict {
        /// Relative path.
        rel: String,
        /// Where the local file goes (relative path).
        keep_as: String,
        /// The local file.
        local: LocalFile,
        /// The drive's version, which stays at `rel`.
        version: Version,
    },
    /// Both sides are equal: the base learns the file.
    Same {
        /// Relative path.
        rel: String,
        /// The local file.
        local: LocalFile,
    },
    /// Gone from both sides: the base forgets it.
    Forget {
        /// Relative path.
        rel: String,
    },
    /// A folder made locally: made in the drive.
    MkdirRemote(String),
    /// A folder made in the drive: made locally.
    MkdirLocal(String),
    /// A folder removed locally, empty in the drive: removed there.
    RmdirRemote(String),
    /// A folder removed from the drive, empty locally: removed here.
    RmdirLocal(String),
}

/// The name a conflicting local copy of `rel` is kept under:
/// `name (conflict from HOST YYYY-MM-DD HHMMSS).ext`, beside it.
pub fn conflict_name(rel: &str, host: &str, now: u64) -> String {
    let (dir, name) = match rel.rfind('/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => ("", rel),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let host: String =
        host.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).take(40).collect();
    let days = (now / 86_400) as i64;
    let (y, m, d) = civil(days);
    let t = now % 86_400;
    let tail =
        format!(" (conflict from {host} {y:04}-{m:02}-{d:02} {:02}{:02}{:02}){ext}", t / 3600, t / 60 % 60, t % 60);
    // A name fits in MAX_NAME bytes: the stem gives way, on a character
    // boundary (the extension and the tail tell the copy apart).
    let room = crate::tree::MAX_NAME.saturating_sub(tail.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{dir}{}{tail}", &stem[..cut])
}

/// What to do to bring `local` and `remote` together, given `base`.
/// `host` names this client in conflict names; `now` dates them.
pub fn plan(base: &Base, local: &Side<LocalFile>, remote: &Side<Version>, host: &str, now: u64) -> Vec<Action> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = base.files.keys().chain(local.files.keys()).chain(remote.files.keys()).collect();
    let taken: BTreeSet<&String> = local.files.keys().chain(remote.files.keys()).collect();
    let skipped = |rel: &str| is_skipped(&local.skipped, rel) || is_skipped(&remote.skipped, rel);
    let knows = |rel: &str, h: Option<&str>| h.is_some_and(|h| remote.history.get(rel).is_some_and(|k| k.contains(h)));
    for rel in paths {
        if skipped(rel) {
            continue;
        }
        let b = base.files.get(rel).map(|f| f.blake3.as_str());
        let l = local.files.get(rel);
        let r = remote.files.get(rel);
        let lh = l.map(|f| f.blake3.as_str());
        let rh = r.map(|v| v.blake3.as_str());
        let act = match (l, r) {
            (None, None) => Action::Forget { rel: rel.clone() },
            (Some(lf), Some(_)) if lh == rh => Action::Same { rel: rel.clone(), local: lf.clone() },
            // One side as it was: the other side's change goes over.
            (_, Some(v)) if lh == b && b.is_some() && knows(rel, b) => {
                Action::Download { rel: rel.clone(), version: v.clone(), over: l.cloned() }
            }
            (Some(lf), None) if lh == b && knows(rel, b) => Action::RemoveLocal { rel: rel.clone(), file: lf.clone() },
            // Gone from the drive without a trace (not in its trash): the
            // drive lost it, and it goes back.
            (Some(_), None) if lh == b => Action::Upload { rel: rel.clone(), over: None },
            (Some(_), _) if rh == b && b.is_some() => Action::Upload { rel: rel.clone(), over: r.cloned() },
            (None, Some(v)) if rh == b => Action::RemoveRemote { rel: rel.clone(), version: v.clone() },
            // New on one side only, or removed on one side against a change
            // on the other: what exists goes over (nothing is lost).
            (Some(_), None) => Action::Upload { rel: rel.clone(), over: None },
            (None, Some(v)) => Action::Download { rel: rel.clone(), version: v.clone(), over: None },
            // Changed on both sides, or new on both, differently.
            (Some(lf), Some(v)) => {
                let mut keep_as = conflict_name(rel, host, now);
                // The host is cut to 40 characters in the name: the count
                // goes after a shorter cut of it, or a long host name gave
                // the same name every time and this never ended.
                let short: String = host.chars().take(30).collect();
                let mut n = 2u64;
                while taken.contains(&keep_as) {
                    keep_as = conflict_name(rel, &format!("{short}-{n}"), now);
                    n += 1;
                }
                Action::Conflict { rel: rel.clone(), keep_as, local: lf.clone(), version: v.clone() }
            }
        };
        out.push(act);
    }
    // Folders: made where missing; removed where the other side removed
    // them and nothing is left in them there.
    let removed_remote: BTreeSet<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::RemoveRemote { rel, .. } => Some(rel.clone()),
            _ => None,
        })
        .collect();
    let removed_local: BTreeSet<String> = out
        .iter()
        .filter_map(|a| match a {
            Action::RemoveLocal { rel, .. } => Some(rel.clone()),
            _ => None,
        })
        .collect();
    let under =
        |dir: &str, rel: &str| rel.len() > dir.len() && rel.starts_with(dir) && rel.as_bytes()[dir.len()] == b'/';
    let empty_after = |dir: &str, files: Vec<&String>, dirs: &BTreeSet<String>, removed: &BTreeSet<String>| {
        files.into_iter().filter(|f| under(dir, f)).all(|f| removed.contains(f))
            && !dirs.iter().any(|d| under(dir, d) && !base.dirs.contains(d))
    };
    let dirs: BTreeSet<&String> = base.dirs.iter().chain(local.dirs.iter()).chain(remote.dirs.iter()).collect();
    let mut rm_remote = Vec::new();
    let mut rm_local = Vec::new();
    for d in dirs {
        if skipped(d) {
            continue;
        }
        let (inb, inl, inr) = (base.dirs.contains(d), local.dirs.contains(d), remote.dirs.contains(d));
        match (inb, inl, inr) {
            (_, true, false) if !inb => out.push(Action::MkdirRemote(d.clone())),
            (_, false, true) if !inb => out.push(Action::MkdirLocal(d.clone())),
            (true, false, true) => {
                if empty_after(d, remote.files.keys().collect(), &remote.dirs, &removed_remote) {
                    rm_remote.push(d.clone());
                } else {
                    // Something new is in it there: it comes back here.
                    out.push(Action::MkdirLocal(d.clone()));
                }
            }
            (true, true, false) => {
                if empty_after(d, local.files.keys().collect(), &local.dirs, &removed_local) {
                    rm_local.push(d.clone());
                } else {
                    out.push(Action::MkdirRemote(d.clone()));
                }
            }
            _ => {}
        }
    }
    // Deepest first, so a folder is empty when its turn comes.
    rm_remote.sort_by_key(|d| std::cmp::Reverse(d.len()));
    rm_local.sort_by_key(|d| std::cmp::Reverse(d.len()));
    out.extend(rm_remote.into_iter().map(Action::RmdirRemote));
    out.extend(rm_local.into_iter().map(Action::RmdirLocal));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(h: &str) -> Version {
        Version {
            at: 1,
            len: 1,
            blake3: h.into(),
            manifest: format!("m{h}"),
            stored: String::new(),
            read_key: String::new(),
            shards: vec![],
        }
    }
    fn l(h: &str) -> LocalFile {
        LocalFile { blake3: h.into(), len: 1, mtime_ns: 1, ctime_ns: 1, ino: 1 }
    }
    fn base(files: &[(&str, &str)]) -> Base {
        Base {
            format: STATE_FORMAT,
            remote: "/".into(),
            files: files
                .iter()
                .map(|(p, h)| {
                    (p.to_string(), BaseFile { blake3: h.to_string(), len: 1, mtime_ns: 1, ctime_ns: 1, ino: 1 })
                })
                .collect(),
            dirs: BTreeSet::new(),
            seq: 0,
        }
    }
    fn sides(local: &[(&str, &str)], remote: &[(&str, &str)]) -> (Side<LocalFile>, Side<Version>) {
        // An intact drive: its history knows every content "1" was, and
        // what it holds now.
        let mut history: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (p, h) in local.iter().chain(remote) {
            let e = history.entry(p.to_string()).or_default();
            e.insert("1".into());
            e.insert(h.to_string());
        }
        for p in ["gone", "ldel", "rdel", "lchg-rdel", "link.bin", "locked/a", "d/x", "e/y"] {
            history.entry(p.into()).or_default().insert("1".into());
        }
        (
            Side { files: local.iter().map(|(p, h)| (p.to_string(), l(h))).collect(), ..Side::default() },
            Side { files: remote.iter().map(|(p, h)| (p.to_string(), v(h))).collect(), history, ..Side::default() },
        )
    }

    #[test]
    fn a_drive_that_lost_a_change_replaces_and_removes_nothing_here() {
        // Two clients' tree writes crossed: the drive lost this side's
        // last synced content of "kept" (now an older one) and all trace
        // of "added". Neither is overwritten or removed here.
        let b = base(&[("kept", "new"), ("added", "x")]);
        let (lo, mut re) = sides(&[("kept", "new"), ("added", "x")], &[("kept", "old")]);
        re.history = [("kept".to_string(), ["old".to_string()].into())].into();
        let acts = plan(&b, &lo, &re, "h", 5);
        assert!(
            matches!(acts.iter().find(|a| format!("{a:?}").contains("\"kept\"")), Some(Action::Conflict { .. })),
            "{acts:?}"
        );
        assert!(
            matches!(
                acts.iter().find(|a| format!("{a:?}").contains("\"added\"")),
                Some(Action::Upload { over: None, .. })
            ),
            "{acts:?}"
        );
    }

    #[test]
    fn each_case_of_three_views_gives_its_action() {
        let b = base(&[
            ("same", "1"),
            ("lchg", "1"),
            ("rchg", "1"),
            ("both", "1"),
            ("ldel", "1"),
            ("rdel", "1"),
            ("gone", "1"),
            ("ldel-rchg", "1"),
            ("lchg-rdel", "1"),
            ("eq", "1"),
        ]);
        let (lo, re) = sides(
            &[
                ("same", "1"),
                ("lchg", "2"),
                ("rchg", "1"),
                ("both", "2"),
                ("rdel", "1"),
                ("lchg-rdel", "2"),
                ("eq", "5"),
                ("lnew", "7"),
                ("bnew", "8"),
            ],
            &[
                ("same", "1"),
                ("lchg", "1"),
                ("rchg", "2"),
                ("both", "3"),
                ("ldel", "1"),
                ("ldel-rchg", "2"),
                ("eq", "5"),
                ("rnew", "9"),
                ("bnew", "6"),
            ],
        );
        let acts = plan(&b, &lo, &re, "laptop", 86_400 * 365);
        let find = |rel: &str| acts.iter().find(|a| format!("{a:?}").contains(&format!("rel: {rel:?}"))).cloned();
        assert!(matches!(find("same"), Some(Action::Same { .. })));
        assert!(matches!(find("lchg"), Some(Action::Upload { over: Some(_), .. })));
        assert!(matches!(find("rchg"), Some(Action::Download { over: Some(_), .. })));
        assert!(matches!(find("both"), Some(Action::Conflict { .. })));
        assert!(matches!(find("ldel"), Some(Action::RemoveRemote { .. })));
        assert!(matches!(find("rdel"), Some(Action::RemoveLocal { .. })));
        assert!(matches!(find("gone"), Some(Action::Forget { .. })));
        assert!(matches!(find("ldel-rchg"), Some(Action::Download { over: None, .. })), "a change beats a removal");
        assert!(matches!(find("lchg-rdel"), Some(Action::Upload { over: None, .. })), "a change beats a removal");
        assert!(matches!(find("eq"), Some(Action::Same { .. })), "changed alike on both: no conflict");
        assert!(matches!(find("lnew"), Some(Action::Upload { over: None, .. })));
        assert!(matches!(find("rnew"), Some(Action::Download { over: None, .. })));
        assert!(matches!(find("bnew"), Some(Action::Conflict { .. })), "new on both, differently");
    }

    #[test]
    fn a_conflict_name_keeps_the_extension_and_the_folder_and_never_takes_a_used_name() {
        assert_eq!(
            conflict_name("docs/report.final.pdf", "my laptop", 1_700_000_000),
            "docs/report.final (conflict from my-laptop 2023-11-14 221320).pdf"
        );
        assert_eq!(conflict_name(".bashrc", "h", 0), ".bashrc (conflict from h 1970-01-01 000000)");
        let taken = conflict_name("a.txt", "h", 5);
        let b = base(&[("a.txt", "1")]);
        let (lo, re) = sides(&[("a.txt", "2"), (&taken, "x")], &[("a.txt", "3")]);
        let acts = plan(&b, &lo, &re, "h", 5);
        let keep = acts.iter().find_map(|a| match a {
            Action::Conflict { keep_as, .. } => Some(keep_as.clone()),
            _ => None,
        });
        assert!(keep.is_some_and(|k| k != taken), "a second conflict at the same second gets its own name");
    }

    #[test]
    fn a_path_the_scan_could_not_read_is_never_taken_as_removed() {
        // A file turned into a link, and a folder that could not be read:
        // both in the base, unchanged in the drive, absent from the scan.
        let b = base(&[("link.bin", "1"), ("locked/a", "1"), ("other", "1")]);
        let (mut lo, re) = sides(&[("other", "1")], &[("link.bin", "1"), ("locked/a", "1"), ("other", "1")]);
        lo.skipped = ["link.bin".to_string(), "locked".to_string()].into();
        let acts = plan(&b, &lo, &re, "h", 5);
        assert!(
            !acts
                .iter()
                .any(|a| matches!(a, Action::RemoveRemote { .. } | Action::Download { .. } | Action::Forget { .. })),
            "{acts:?}"
        );
    }

    #[test]
    fn a_second_conflict_of_a_host_with_a_long_name_gets_a_name_of_its_own() {
        let host = "a-workstation-with-a-very-long-host-name-indeed";
        let taken = conflict_name("a.txt", host, 5);
        let b = base(&[("a.txt", "1")]);
        let (lo, re) = sides(&[("a.txt", "2"), (&taken, "x")], &[("a.txt", "3")]);
        let acts = plan(&b, &lo, &re, host, 5);
        let keep = acts.iter().find_map(|a| match a {
            Action::Conflict { keep_as, .. } => Some(keep_as.clone()),
            _ => None,
        });
        assert!(keep.is_some_and(|k| k != taken), "the host's cut kept the count off: the plan never ended");
    }

    #[test]
    fn a_conflict_name_for_a_long_name_still_fits() {
        let long = format!("{}.txt", "名".repeat(80));
        let c = conflict_name(&format!("dir/{long}"), "phone", 5);
        let name = c.rsplit('/').next().expect("name");
        assert!(name.len() <= crate::tree::MAX_NAME && name.ends_with(").txt"), "{name}");
        assert!(crate::tree::normal(&format!("/{c}")).is_ok());
    }

    #[test]
    fn a_folder_removed_on_one_side_goes_only_if_nothing_new_is_in_it_on_the_other() {
        let mut b = base(&[("d/x", "1"), ("e/y", "1")]);
        b.dirs = ["d".to_string(), "e".to_string()].into();
        // d removed locally with its file; e removed locally, but a new file
        // was put in it in the drive meanwhile.
        let (lo, mut re) = sides(&[], &[("d/x", "1"), ("e/y", "1"), ("e/new", "2")]);
        re.dirs = ["d".to_string(), "e".to_string()].into();
        let acts = plan(&b, &lo, &re, "h", 5);
        assert!(acts.contains(&Action::RmdirRemote("d".into())), "{acts:?}");
        assert!(!acts.contains(&Action::RmdirRemote("e".into())), "{acts:?}");
        assert!(acts.contains(&Action::MkdirLocal("e".into())), "{acts:?}");
        assert!(acts.iter().any(|a| matches!(a, Action::Download { rel, .. } if rel == "e/new")));
    }
}
