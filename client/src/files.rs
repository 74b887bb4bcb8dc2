//! The one atomic write of the workspace, and the clock in seconds.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use proto::now;

/// The directory a path is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Make a rename or a new file in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

/// `path` with `suffix` added to its name (`a.img` → `a.img.part`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Write `bytes` to `path` so that a crash leaves the old file or the new
/// one, never half of either: a temporary file beside it, fsync, rename,
/// fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let (tmp, mut file) = temp_beside(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// A new file `.NAME.tmp.N` beside `path`, created exclusively.
fn temp_beside(path: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let dir = parent_dir(path);
    let pid = std::process::id();
    for n in 0..1000u32 {
        let tmp = dir.join(format!(".{name}.tmp.{pid}.{n}"));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary file name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary_behind() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write again");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn a_suffix_goes_after_the_whole_name() {
        assert_eq!(with_suffix(Path::new("d/a.img"), ".part"), PathBuf::from("d/a.img.part"));
        assert_eq!(parent_dir(Path::new("a.img")), Path::new("."));
    }
}
