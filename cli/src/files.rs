//! Files written so that a crash never leaves a half-written file that looks whole.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Write `bytes` to `path` through a temporary file, fsync, rename, and
/// fsync of the directory (the one implementation: `client::files`).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    client::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Write through a temporary file and rename, so a killed process never
/// leaves a partial file under the final name; with `sync`, fsync first so a
/// power loss cannot either. (Shard files are written without, then synced
/// together with [`sync_files`] before the manifest that names them.)
pub(crate) fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let tmp = temp_beside(path);
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// fsync many files, on all cores.
pub(crate) fn sync_files(paths: &[PathBuf]) -> Result<()> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .try_for_each(|p| File::open(p).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", p.display())))
}

/// A hidden temporary name next to `path` (same filesystem, so rename is atomic).
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Make sure changes to entries of `dir` (renames) survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

/// Load the tenant secret from `path`, creating a random one (mode 0600) if
/// the file does not exist.
pub(crate) fn load_or_create_secret(path: &Path) -> Result<([u8; 32], bool)> {
    match File::open(path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).with_context(|| format!("reading secret {}", path.display()))?;
            let Ok(bytes) = <[u8; 32]>::try_from(buf.as_slice()) else {
                bail!(
                    "secret file {} holds {} bytes, expected 32: it is not an ionshard tenant secret \
                     (point --secret at the right file, or at a new path to create one)",
                    path.display(),
                    buf.len()
                );
            };
            Ok((bytes, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let bytes: [u8; 32] = rand::random();
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).with_context(|| format!("creating secret {}", path.display()))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing secret {}", path.display()))?;
            Ok((bytes, true))
        }
        Err(e) => Err(e).with_context(|| format!("opening secret {}", path.display())),
    }
}

/// Write a new secret file (mode 0600 from the start, synced); refuses to
/// replace an existing file.
pub(crate) fn write_secret_new(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", path.display()))
}

/// The default home for ionshard's own files: `$IONSHARD_HOME`, else `~/.ionshard`.
pub(crate) fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("IONSHARD_HOME") {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".ionshard"), |h| PathBuf::from(h).join(".ionshard"))
}
