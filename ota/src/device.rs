//! A device's own state: the vendor root it trusts and what it has installed.
//!
//! `DIR/root.json` is the newest root the device has verified (first the one
//! it was provisioned with); `DIR/installed.json` records the installed
//! release, for rollback protection and as the default delta seed. Both are
//! replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a power loss leaves the old or the new record, never half.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::meta::{self, Policy, Release, Root, Signed, Version};

/// What a device has installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// The image file.
    pub path: PathBuf,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
    /// Its length.
    pub length: u64,
    /// Seconds since the epoch.
    pub installed_at: u64,
}

/// A device's state directory.
#[derive(Debug, Clone)]
pub struct Device {
    dir: PathBuf,
}

/// Write `bytes` to `path` so that a crash leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn tempfile_in(dir: &Path, path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    Ok((tmp, f))
}

impl Device {
    /// The state in `dir` (created if need be).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Device> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(Device { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn root_path(&self) -> PathBuf {
        self.dir.join("root.json")
    }

    /// The trusted root: the device's own if it has one, else `provisioned`
    /// (checked, then kept as the device's own).
    pub fn trusted_root(&self, provisioned: Option<&Path>) -> Result<Root> {
        let own = self.root_path();
        let path = if own.exists() {
            own.clone()
        } else {
            provisioned.map(Path::to_path_buf).ok_or_else(|| {
                Error::Malformed(format!(
                    "no trusted vendor root: pass --root FILE (the vendor's root.json) once; it is kept in {}",
                    own.display()
                ))
            })?
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let root = meta::load_root(&bytes)?;
        if !own.exists() {
            write_atomic(&own, &bytes).map_err(|e| Error::io(format!("writing {}", own.display()), e))?;
        }
        Ok(root)
    }

    /// The installed release, if any.
    pub fn installed(&self) -> Result<Option<Installed>> {
        let p = self.dir.join("installed.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Malformed(format!("{}: {e} (the device state is damaged)", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }

    /// Record an installed release.
    pub fn record_installed(&self, i: &Installed) -> Result<()> {
        let p = self.dir.join("installed.json");
        let json = serde_json::to_vec_pretty(i).unwrap_or_default();
        write_atomic(&p, &json).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    /// Check a bundle: follow any root rotations it carries (keeping the new
    /// root), then verify the release under the policy. Nothing is kept if
    /// any check fails.
    pub fn check(&self, trusted: Root, bundle: &Bundle, policy: &Policy<'_>) -> Result<(Release, Root)> {
        let mut root = trusted;
        let mut newest: Option<&String> = None;
        for text in &bundle.roots {
            if text.len() > meta::MAX_METADATA {
                return Err(Error::TooLarge {
                    what: "a root in the bundle".to_string(),
                    len: text.len() as u64,
                    limit: meta::MAX_METADATA as u64,
                });
            }
            let peek: Signed<Root> = match serde_json::from_str(text) {
                Ok(p) => p,
                Err(e) => return Err(Error::Malformed(format!("a root in the bundle: {e}"))),
            };
            if peek.signed.version <= root.version {
                continue;
            }
            root = meta::rotate_root(&root, text.as_bytes())?;
            newest = Some(text);
        }
        let release = meta::verify_release(&root, bundle.release.as_bytes(), policy)?;
        if let Some(text) = newest {
            let p = self.root_path();
            write_atomic(&p, text.as_bytes()).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok((release, root))
    }

    /// The installed version, for the rollback check.
    pub fn installed_version(&self) -> Result<Option<Version>> {
        self.installed()?.map(|i| Version::parse(&i.version)).transpose()
    }
}

/// Run the installer: `sh -c CMD ionshard-install IMAGE`, so the command sees
/// the image path as `$1` (and in `IONSHARD_IMAGE`, with `IONSHARD_PRODUCT`
/// and `IONSHARD_VERSION`). Returns its exit status (`None`: killed by a signal).
pub fn run_installer(cmd: &str, image: &Path, release: &Release) -> Result<Option<i32>> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg("ionshard-install")
        .arg(image)
        .env("IONSHARD_IMAGE", image)
        .env("IONSHARD_PRODUCT", &release.product)
        .env("IONSHARD_VERSION", &release.version)
        .status()
        .map_err(|e| Error::io(format!("running the install command {cmd:?}"), e))?;
    Ok(status.code())
}
