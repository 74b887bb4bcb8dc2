//! A device's own state: the vendor root it trusts, what it has installed,
//! and the newest timestamp it has accepted per product.
//!
//! `DIR/root.json` is the newest root the device has verified (first the one
//! it was provisioned with); `DIR/installed.json` records the installed
//! release, for rollback protection and as the default delta seed (from this
//! release on with the signed release itself, `"format": 2`, so a rotated
//! root can void a release signed with stolen keys); `DIR/timestamps/P.json`
//! is the last timestamp accepted for product P (an older one is a replay).
//! All are replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a power loss leaves the old or the new record, never half.
//! A state directory of an earlier release (format 1 records) reads as is.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use client::files::write_atomic;

use crate::bundle::Bundle;
use crate::error::{Error, Result};
use crate::meta::{self, Policy, Release, Root, Timestamp, Version};

/// The format of `installed.json` this build writes.
const INSTALLED_FORMAT: u32 = 2;

/// What a device has installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Record format (1: releases before timestamps, without `release`).
    #[serde(default = "format_1")]
    pub format: u32,
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
    /// The signed release (JSON text), to check again after a root rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

fn format_1() -> u32 {
    1
}

impl Installed {
    /// A record of `release` installed at `path`, in this build's format.
    pub fn new(release: &Release, signed: &str, path: PathBuf, now: u64) -> Installed {
        Installed {
            format: INSTALLED_FORMAT,
            product: release.product.clone(),
            version: release.version.clone(),
            path,
            blake3: release.blake3.clone(),
            length: release.length,
            installed_at: now,
            release: Some(signed.to_string()),
        }
    }
}

/// The installed release's manifest (for manifest deltas, bundle format 4).
const MANIFEST_FILE: &str = "installed.manifest";

/// What the device asks of a bundle, besides a valid signature.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    /// The device's product.
    pub product: &'a str,
    /// The device's hardware revision.
    pub hardware: &'a str,
    /// Seconds since the epoch.
    pub now: u64,
    /// It asked for the newest release: one older than the timestamp names is refused.
    pub newest: bool,
    /// Updating on purpose without a fresh timestamp (from a file, no network).
    pub offline: bool,
    /// Seconds a timestamp may be past its expiry or ahead of the clock.
    pub skew: u64,
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The release.
    pub release: Release,
    /// The root it was checked against (kept as the device's own).
    pub root: Root,
    /// The installed version no longer bounds what may be installed, and why
    /// (its release was signed with keys the rotated root no longer trusts).
    pub floor_reset: Option<String>,
    /// The timestamp checked, if one was.
    pub timestamp: Option<Timestamp>,
    /// A newer release for this hardware, as the timestamp names it.
    pub newer: Option<String>,
    /// Why freshness was not checked, when it was not.
    pub unchecked: Option<String>,
}

/// A device's state directory.
#[derive(Debug, Clone)]
pub struct Device {
    dir: PathBuf,
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
    /// (checked, not expired at `now`, then kept as the device's own).
    pub fn trusted_root(&self, provisioned: Option<&Path>, now: u64) -> Result<Root> {
        let own = self.root_path();
        let path = if own.exists() {
            own.clone()
        } else {
            provisioned.map(Path::to_path_buf).ok_or_else(|| Error::NoRoot(own.clone()))?
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let root = meta::load_root(&bytes)?;
        if !own.exists() {
            // A device's own root may have expired since (newer ones come in
            // bundles); one given to provision it must be current.
            if now >= root.expires {
                return Err(Error::Expired {
                    what: format!("root v{} given to provision this device ({})", root.version, path.display()),
                    expires: root.expires,
                });
            }
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

    /// The installed release's manifest as kept by [`Device::keep_manifest`]
    /// (what a manifest delta applies to), with that release, if it is
    /// there and is the installed release's (checked by its CID).
    pub fn installed_manifest(&self) -> Option<(Release, chunker::Manifest)> {
        let signed = self.installed().ok()??.release?;
        let release = serde_json::from_str::<meta::Signed<Release>>(&signed).ok()?.signed;
        let bytes = std::fs::read(self.dir.join(MANIFEST_FILE)).ok()?;
        let cid: chunker::Cid = release.manifest.parse().ok()?;
        let m = chunker::Manifest::from_bytes_with_cid(&bytes, &cid, &Default::default()).ok()?;
        Some((release, m))
    }

    /// Keep the manifest of the release just recorded as installed (written
    /// whole or not at all; a crash before it leaves the previous one, whose
    /// CID no longer matches: the next update only loses its delta).
    pub fn keep_manifest(&self, bytes: &[u8]) -> Result<()> {
        let p = self.dir.join(MANIFEST_FILE);
        write_atomic(&p, bytes).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    /// Forget the kept manifest (the installed release's is not kept).
    pub fn forget_manifest(&self) -> Result<()> {
        let p = self.dir.join(MANIFEST_FILE);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", p.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Record an installed release.
    pub fn record_installed(&self, i: &Installed) -> Result<()> {
        let p = self.dir.join("installed.json");
        let json = serde_json::to_vec_pretty(i).unwrap_or_default();
        write_atomic(&p, &json).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    fn timestamp_path(&self, product: &str) -> Result<PathBuf> {
        if !meta::valid_name(product) {
            return Err(Error::Malformed(format!("product name {product:?}")));
        }
        Ok(self.dir.join("timestamps").join(format!("{product}.json")))
    }

    /// The number of the last timestamp accepted for `product` (0: none).
    fn seen_timestamp(&self, product: &str) -> Result<u64> {
        let p = self.timestamp_path(product)?;
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice::<meta::Signed<Timestamp>>(&b)
                .map(|d| d.signed.version)
                .map_err(|e| Error::Malformed(format!("{}: {e} (the device state is damaged)", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }

    /// Check a bundle: follow the root rotations it carries, void the
    /// rollback floor of an installed release the rotated root no longer
    /// vouches for, verify the release, and (unless offline) the vendor's
    /// timestamp: fresh, not older than the last accepted, and naming no
    /// newer release when the newest was asked for. Only when all of it
    /// passes are the new root and timestamp kept.
    pub fn check(&self, trusted: Root, bundle: &Bundle, want: &Want<'_>) -> Result<Checked> {
        let mut root = trusted.clone();
        let mut newest_root: Option<&String> = None;
        let mut rotated = false;
        for text in &bundle.roots {
            if text.len() > meta::MAX_METADATA {
                return Err(Error::TooLarge {
                    what: "a root in the bundle".to_string(),
                    len: text.len() as u64,
                    limit: meta::MAX_METADATA as u64,
                });
            }
            let peek = meta::parse_root(text.as_bytes())?;
            let v = peek.signed.version;
            // Once freshness is checked it stays checked: the vendor signs
            // a format 1 copy of each new root for devices from before
            // timestamps, and taking that copy (which anyone can hand over)
            // would turn the timestamp check off for good. The full copy of
            // the same root, or none, is taken instead.
            if root.timestamp.is_some() && peek.signed.timestamp.is_none() {
                continue;
            }
            if v < root.version || (v == root.version && (root.timestamp.is_some() || peek.signed.timestamp.is_none()))
            {
                continue;
            }
            root = if v == root.version {
                meta::upgrade_root(&root, text.as_bytes())?
            } else {
                rotated = true;
                meta::rotate_root(&root, text.as_bytes())?
            };
            newest_root = Some(text);
        }
        if want.now >= root.expires {
            return Err(Error::Expired { what: format!("root v{}", root.version), expires: root.expires });
        }
        // Fast-forward recovery: a release signed with keys the vendor has
        // since rotated out (stolen, say) no longer sets the floor.
        let installed = self.installed()?;
        let mut floor = installed.as_ref().map(|i| Version::parse(&i.version)).transpose()?;
        let mut floor_reset = None;
        if rotated
            && let Some(i) = &installed
            && let Some(text) = &i.release
            && let Err(e) = meta::release_signed_by(&root, text.as_bytes())
        {
            floor_reset = Some(format!(
                "installed release {}@{} is not signed by root v{} ({e}): its version no longer bounds updates",
                i.product, i.version, root.version
            ));
            floor = None;
        }
        let policy =
            Policy { product: Some(want.product), hardware: Some(want.hardware), installed: floor, now: want.now };
        let release = meta::verify_release(&root, bundle.release.as_bytes(), &policy)?;
        let (mut timestamp, mut newer, mut unchecked) = (None, None, None);
        if want.offline {
            unchecked = Some("updating offline: whether a newer release exists was not checked".to_string());
        } else if root.timestamp.is_none() {
            unchecked = Some(format!("root v{} names no timestamp key: freshness not checked", root.version));
        } else {
            let text = bundle.timestamp.as_ref().ok_or_else(|| Error::NoTimestamp { product: want.product.into() })?;
            let t = meta::verify_timestamp(&root, text.as_bytes(), want.product, want.now, want.skew)?;
            // New timestamp keys: the old count no longer binds (TUF's
            // recovery from a fast-forwarded timestamp).
            let seen = if trusted.timestamp == root.timestamp { self.seen_timestamp(want.product)? } else { 0 };
            if t.version < seen {
                return Err(Error::TimestampRollback { product: want.product.into(), seen, offered: t.version });
            }
            let named = t.latest.get(want.hardware);
            if want.newest {
                meta::check_newest(named, &release.version, &release.blake3, want.hardware)?;
            } else if let Some(named) = named
                && Version::parse(&named.version)? > Version::parse(&release.version)?
            {
                newer = Some(named.version.clone());
            }
            timestamp = Some((t, text));
        }
        if let Some(text) = newest_root {
            let p = self.root_path();
            write_atomic(&p, text.as_bytes()).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        if let Some((_, text)) = &timestamp {
            let p = self.timestamp_path(want.product)?;
            write_atomic(&p, text.as_bytes()).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok(Checked { release, root, floor_reset, timestamp: timestamp.map(|(t, _)| t), newer, unchecked })
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
