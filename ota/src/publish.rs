//! The vendor's publish, as a library call: upload an image to an SPN
//! (hashing what is read: the vendor signs the hash it computed, never one
//! the SPN reports), wait for the SPN to encode and scatter it, check the
//! SPN's account of it, and sign the release with the keys at hand. Where
//! the keys live (a vendor directory, separate holders) is the caller's.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Progress, Spn, Upload};
use proto::api::{JobResult, NewRelease};

use crate::error::{Error, Result};
use crate::meta::{self, KeyWrap, Release, Root, Signed, VendorKey, Version, valid_name};

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The image file.
    pub image: PathBuf,
    /// Its product.
    pub product: String,
    /// Its version.
    pub version: String,
    /// The hardware revisions it fits (at least one).
    pub hardware: Vec<String>,
    /// Data shards per segment.
    pub data_shards: u8,
    /// Parity shards per segment.
    pub parity_shards: u8,
    /// Days the signed release stays valid.
    pub expires_days: u64,
    /// For a confidential release: the product key that wraps its read key.
    pub product_key: Option<[u8; 32]>,
    /// How long the SPN may take to encode and scatter it.
    pub patience: Duration,
    /// Let the SPN make patches of the changed chunks against the
    /// product's previous release.
    pub patches: bool,
}

/// A release encoded and scattered by the SPN and signed by the keys at hand.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The release, with the signatures of the keys given.
    pub signed: Signed<Release>,
    /// What the SPN stored.
    pub result: JobResult,
    /// Signatures the root's threshold still needs (0: ready to submit).
    pub missing: usize,
}

/// Reads the image for the upload, hashing and counting what it sends.
struct Hashing<R> {
    inner: R,
    progress: Arc<dyn Progress>,
    seen: Arc<Mutex<(blake3::Hasher, u64)>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        self.progress.set(h.1);
        Ok(n)
    }
}

impl PublishOptions {
    /// Whether these options can be published under `root` at `now`:
    /// names, version, hardware, the root's expiry. [`publish`] checks
    /// again; a caller checks first to touch nothing for options that fail.
    pub fn check(&self, root: &Root, now: u64) -> Result<()> {
        check(self, root, now)
    }
}

fn check(o: &PublishOptions, root: &Root, now: u64) -> Result<()> {
    Version::parse(&o.version)?;
    let bad = |what: &str, s: &str| {
        Error::Malformed(format!("{what} {s:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"))
    };
    if !valid_name(&o.product) {
        return Err(bad("product", &o.product));
    }
    if o.hardware.is_empty() {
        return Err(Error::Malformed("a release names at least one hardware revision it fits".into()));
    }
    if let Some(h) = o.hardware.iter().find(|h| !valid_name(h)) {
        return Err(bad("hardware", h));
    }
    if root.expires <= now {
        return Err(Error::Expired {
            what: format!("root v{} (rotate it before publishing)", root.version),
            expires: root.expires,
        });
    }
    Ok(())
}

/// Upload `o.image` to `spn` for the vendor of `root`, and sign the
/// release with `keys` (those at hand; [`Prepared::missing`] says how many
/// more the threshold needs). Progress: `"upload"`, then `"scatter"`.
pub fn publish(
    spn: &Spn,
    root: &Root,
    keys: &[&VendorKey],
    o: &PublishOptions,
    progress: Arc<dyn Progress>,
) -> Result<Prepared> {
    let now = proto::now();
    check(o, root, now)?;
    let file = std::fs::File::open(&o.image).map_err(|e| Error::io(format!("opening {}", o.image.display()), e))?;
    let len = file.metadata().map_err(|e| Error::io(format!("reading {}", o.image.display()), e))?.len();
    if len == 0 {
        return Err(Error::Malformed(format!("{} is empty", o.image.display())));
    }
    progress.start("upload", len);
    let seen = Arc::new(Mutex::new((blake3::Hasher::new(), 0u64)));
    let reader = Hashing { inner: std::io::BufReader::new(file), progress: progress.clone(), seen: seen.clone() };
    let up = Upload {
        tenant: &root.vendor,
        product: &o.product,
        data: o.data_shards.into(),
        parity: o.parity_shards.into(),
        patches: o.patches,
    };
    let result = spn.publish(&up, reader, len, o.patience, &*progress)?;
    let (hash, read) = {
        let h = seen.lock().unwrap_or_else(|p| p.into_inner());
        (h.0.finalize().to_hex().to_string(), h.1)
    };
    if read != len {
        return Err(Error::Changed(format!(
            "{} changed while it was uploaded ({len} bytes, then {read})",
            o.image.display()
        )));
    }
    // What the vendor signs is what the vendor read, not what the SPN says it got.
    if result.length != len || result.blake3 != hash {
        return Err(Error::Changed(format!(
            "the SPN encoded an object of {} bytes, hash {}, but {} is {len} bytes, hash {hash}: the upload was altered on the way",
            result.length,
            result.blake3,
            o.image.display()
        )));
    }
    let mut release = Release {
        vendor: root.vendor.clone(),
        product: o.product.clone(),
        hardware: o.hardware.clone(),
        version: o.version.clone(),
        length: len,
        blake3: hash,
        manifest: result.manifest.clone(),
        read_key: KeyWrap::Clear(result.read_key.clone()),
        issued: now,
        expires: now + o.expires_days * 86400,
    };
    if let Some(pk) = &o.product_key {
        let rk: [u8; 32] = data_encoding::HEXLOWER
            .decode(result.read_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Malformed("the SPN's read key is not 32 bytes of hex".into()))?;
        release.read_key = meta::wrap_read_key(pk, &rk, &release);
    }
    let signed = meta::sign_release(release, keys);
    let missing = meta::signatures_missing(&signed, root);
    Ok(Prepared { signed, result, missing })
}

/// Publish a release that meets its threshold on `spn`.
pub fn submit(spn: &Spn, signed: &Signed<Release>) -> Result<()> {
    Ok(spn.add_release(&NewRelease { release: meta::to_json(signed) })?)
}

/// The bundle of `release` as `spn` serves it (for its first hardware),
/// bytes as they are: a bundle's fields keep their order (signed parts
/// first). Read it after the timestamp that names the release is in.
pub fn served_bundle(spn: &Spn, release: &Release) -> Result<Vec<u8>> {
    let mut bundle = Vec::new();
    crate::update::bundle_or_older(spn, &release.id(), release.hardware.first().map(String::as_str), None)?
        .read_to_end(&mut bundle)
        .map_err(|e| Error::io(format!("reading the bundle of {} from the SPN", release.id()), e))?;
    // A bundle file travels without its SPN: where to ask, in full.
    Ok(absolute_placement_from(bundle, spn.base()))
}

/// `bundle` (JSON bytes) with a `placement_from` path made a URL on `base`.
/// The bytes are kept as they are otherwise (the fields' order matters);
/// the field's name cannot occur inside a JSON string unescaped.
fn absolute_placement_from(bundle: Vec<u8>, base: &str) -> Vec<u8> {
    let key = b"\"placement_from\":\"/";
    let Some(at) = bundle.windows(key.len()).rposition(|w| w == key) else { return bundle };
    let quoted = serde_json::to_string(base.trim_end_matches('/')).unwrap_or_default();
    let Some(base) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else { return bundle };
    let split = at + key.len() - 1;
    [&bundle[..split], base.as_bytes(), &bundle[split..]].concat()
}

#[cfg(test)]
mod placement_from_tests {
    use super::absolute_placement_from;

    #[test]
    fn a_placement_from_path_becomes_a_url_on_the_spn_and_nothing_else_changes() {
        let b =
            br#"{"format":3,"release":"{\"placement_from\":\"/x\"}","placement_from":"/v1/releases/r@1/placement"}"#;
        let out = absolute_placement_from(b.to_vec(), "http://127.0.0.1:8080/");
        let want = br#"{"format":3,"release":"{\"placement_from\":\"/x\"}","placement_from":"http://127.0.0.1:8080/v1/releases/r@1/placement"}"#;
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        let plain = br#"{"format":2}"#.to_vec();
        assert_eq!(absolute_placement_from(plain.clone(), "http://h"), plain);
    }
}
