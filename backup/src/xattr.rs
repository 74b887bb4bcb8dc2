//! Extended attributes: read at the walk, set at the restore, where the
//! platform and the file system have them (Linux: `user.*` for anyone;
//! `security.*`, `trusted.*` and ACLs as root). What cannot be read or set
//! is left out and counted, never a failed backup or restore.

use std::os::fd::AsFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its name, like `user.comment`.
    pub name: String,
    /// Its value, base64.
    pub value: String,
}

/// The largest list of names and the largest value Linux allows.
const MAX: usize = 64 << 10;

/// The extended attributes of `path` (not following a symlink), sorted by name.
pub(crate) fn read(path: &Path) -> Vec<Xattr> {
    let mut names = vec![0u8; MAX];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else { return Vec::new() };
    let mut out = Vec::new();
    let mut value = vec![0u8; MAX];
    for raw in names[..n.min(MAX)].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else { continue };
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut value[..]) {
            out.push(Xattr { name: name.to_string(), value: data_encoding::BASE64.encode(&value[..len.min(MAX)]) });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn decoded(x: &Xattr) -> Option<Vec<u8>> {
    data_encoding::BASE64.decode(x.value.as_bytes()).ok().filter(|v| v.len() <= MAX)
}

/// Set `xattrs` on an open file; how many could not be set.
pub(crate) fn write_fd(fd: impl AsFd, xattrs: &[Xattr]) -> u64 {
    let fd = fd.as_fd();
    xattrs
        .iter()
        .filter(|x| {
            decoded(x).is_none_or(|v| {
                rustix::fs::fsetxattr(fd, x.name.as_str(), &v, rustix::fs::XattrFlags::empty()).is_err()
            })
        })
        .count() as u64
}

/// Set `xattrs` on `path` (not following a symlink); how many could not be set.
pub(crate) fn write_path(path: &Path, xattrs: &[Xattr]) -> u64 {
    xattrs
        .iter()
        .filter(|x| {
            decoded(x).is_none_or(|v| {
                rustix::fs::lsetxattr(path, x.name.as_str(), &v, rustix::fs::XattrFlags::empty()).is_err()
            })
        })
        .count() as u64
}
