//! `ionshard vendor init|key add|key rotate|show` and `ionshard publish`.
//!
//! A vendor directory holds:
//! - `keys/KEYID.key`: signing keys (32 bytes, mode 0600); retired ones move to `keys/retired/`;
//! - `roots/N.root.json`: every root version, each signed by its predecessor's threshold and its own;
//! - `root.json`: the newest root (give it to devices once; rotations reach them in release bundles);
//! - `products/PRODUCT.key`: product keys for confidential releases (give them to that product's devices);
//! - `releases/PRODUCT@VERSION.bundle.json`: what each publish produced.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ota::meta::{self, KeyWrap, Release, Root, Signed, VendorKey, Version};
use serde_json::{Value, json};

use crate::files::{load_or_create_secret, write_atomic};
use crate::http;

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn default_dir() -> PathBuf {
    crate::files::home().join("vendor")
}

struct Vendor {
    root: Root,
    version: u64,
    keys: Vec<VendorKey>,
}

fn roots_dir(dir: &Path) -> PathBuf {
    dir.join("roots")
}

fn load(dir: &Path) -> Result<Vendor> {
    let rd = roots_dir(dir);
    let mut latest = 0u64;
    for e in std::fs::read_dir(&rd)
        .with_context(|| format!("{} is not a vendor directory (run `ionshard vendor init` first)", dir.display()))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_suffix(".root.json").and_then(|v| v.parse::<u64>().ok()) {
            latest = latest.max(v);
        }
    }
    if latest == 0 {
        bail!("no root in {}; run `ionshard vendor init`", rd.display());
    }
    let text = std::fs::read(rd.join(format!("{latest}.root.json")))?;
    let doc: Signed<Root> = serde_json::from_slice(&text).context("reading the newest root")?;
    let root = doc.signed;
    let mut keys = Vec::new();
    for id in root.keys.keys() {
        let p = dir.join("keys").join(format!("{id}.key"));
        if p.exists() {
            let (b, _) = load_or_create_secret(&p)?;
            keys.push(VendorKey::from_bytes(b));
        }
    }
    Ok(Vendor { version: root.version, root, keys })
}

/// The vendor, with enough keys at hand to sign for its root.
fn load_signing(dir: &Path) -> Result<Vendor> {
    let v = load(dir)?;
    if v.keys.len() < v.root.threshold as usize {
        bail!(
            "root v{} needs {} signatures; only {} of its keys are in {}",
            v.version,
            v.root.threshold,
            v.keys.len(),
            dir.display()
        );
    }
    Ok(v)
}

/// Roots after version 1, oldest first, for release bundles.
fn newer_roots(dir: &Path, version: u64) -> Result<Vec<String>> {
    (2..=version)
        .map(|n| {
            let p = roots_dir(dir).join(format!("{n}.root.json"));
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        })
        .collect()
}

fn new_key(dir: &Path) -> Result<VendorKey> {
    // Created through the 0600 secret-file path, then read back.
    let tmp = dir.join("keys").join(format!(".new-{}.key", std::process::id()));
    let (b, _) = load_or_create_secret(&tmp)?;
    let k = VendorKey::from_bytes(b);
    std::fs::rename(&tmp, dir.join("keys").join(format!("{}.key", k.id())))?;
    Ok(k)
}

fn save_root(dir: &Path, doc: &Signed<Root>) -> Result<()> {
    let text = meta::to_json(doc);
    write_atomic(&roots_dir(dir).join(format!("{}.root.json", doc.signed.version)), text.as_bytes())?;
    write_atomic(&dir.join("root.json"), text.as_bytes())
}

fn print_root(dir: &Path, root: &Root, json_out: bool, what: &str) {
    if json_out {
        println!(
            "{}",
            json!({ "vendor": root.vendor, "root_version": root.version, "threshold": root.threshold,
                    "keys": root.keys.keys().collect::<Vec<_>>(), "expires": root.expires,
                    "root": dir.join("root.json").display().to_string() })
        );
    } else {
        println!(
            "{what}: vendor {} root v{} ({} of {} keys must sign)",
            root.vendor,
            root.version,
            root.threshold,
            root.keys.len()
        );
        for id in root.keys.keys() {
            println!("  key {id}");
        }
        println!("root for devices: {}", dir.join("root.json").display());
    }
}

pub(crate) fn init(dir: &Path, name: &str, keys: u32, threshold: u32, expires_days: u64, json_out: bool) -> Result<()> {
    check_name("--name", name)?;
    if keys == 0 || threshold == 0 || threshold > keys {
        bail!("--threshold {threshold} with --keys {keys}: need 1 <= threshold <= keys");
    }
    if roots_dir(dir).exists() {
        bail!("{} already holds a vendor; use `ionshard vendor key add|rotate` to change its keys", dir.display());
    }
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::create_dir_all(roots_dir(dir))?;
    let ks: Vec<VendorKey> = (0..keys).map(|_| new_key(dir)).collect::<Result<_>>()?;
    let root = Root {
        vendor: name.to_string(),
        version: 1,
        expires: now() + expires_days * 86400,
        threshold,
        keys: ks.iter().map(|k| (k.id(), k.public_hex())).collect(),
    };
    let doc = meta::sign_root(root.clone(), &ks.iter().collect::<Vec<_>>());
    save_root(dir, &doc)?;
    print_root(dir, &root, json_out, "created");
    Ok(())
}

/// Add a key (`rotate: None`) or replace one; the new root is signed by the
/// old keys and the new ones.
pub(crate) fn change_keys(
    dir: &Path,
    rotate: Option<&str>,
    threshold: Option<u32>,
    expires_days: u64,
    json_out: bool,
) -> Result<()> {
    let v = load_signing(dir)?;
    let added = new_key(dir)?;
    let mut keys = v.root.keys.clone();
    if let Some(old) = rotate
        && keys.remove(old).is_none()
    {
        bail!("key {old} is not in root v{} (`ionshard vendor show` lists them)", v.version);
    }
    keys.insert(added.id(), added.public_hex());
    let threshold = threshold.unwrap_or(v.root.threshold);
    if threshold == 0 || threshold as usize > keys.len() {
        bail!("--threshold {threshold} with {} keys", keys.len());
    }
    let root = Root {
        vendor: v.root.vendor.clone(),
        version: v.version + 1,
        expires: now() + expires_days * 86400,
        threshold,
        keys,
    };
    let mut signers: Vec<&VendorKey> = v.keys.iter().collect();
    signers.push(&added);
    let doc = meta::sign_root(root.clone(), &signers);
    // Check it as a device will before saving.
    meta::rotate_root(&v.root, meta::to_json(&doc).as_bytes()).context("the new root does not verify")?;
    save_root(dir, &doc)?;
    if let Some(old) = rotate {
        let retired = dir.join("keys").join("retired");
        std::fs::create_dir_all(&retired)?;
        let _ = std::fs::rename(dir.join("keys").join(format!("{old}.key")), retired.join(format!("{old}.key")));
    }
    print_root(dir, &root, json_out, if rotate.is_some() { "rotated" } else { "added a key" });
    Ok(())
}

pub(crate) fn show(dir: &Path, json_out: bool) -> Result<()> {
    let v = load(dir)?;
    print_root(dir, &v.root, json_out, "vendor");
    Ok(())
}

/// Options of `ionshard publish`.
pub(crate) struct PublishOpts {
    pub(crate) image: PathBuf,
    pub(crate) product: String,
    pub(crate) version: String,
    pub(crate) hardware: Vec<String>,
    pub(crate) data_shards: u8,
    pub(crate) parity_shards: u8,
    pub(crate) spn: String,
    pub(crate) token: Option<String>,
    pub(crate) vendor_dir: PathBuf,
    pub(crate) confidential: bool,
    pub(crate) expires_days: u64,
    pub(crate) out: Option<PathBuf>,
    pub(crate) json: bool,
}

/// What a publish produced (for the demo's summary).
pub(crate) struct Published {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) job: Value,
    pub(crate) seconds: f64,
}

/// Reads the image for the upload, counting and hashing what it sends: the
/// vendor signs the hash it computed, never one the SPN reports.
struct Hashing<R> {
    inner: R,
    bar: ProgressBar,
    hasher: std::sync::Arc<std::sync::Mutex<(blake3::Hasher, u64)>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.hasher.lock().unwrap_or_else(|p| p.into_inner());
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Names the SPN accepts (tenants, products): checked here, before any upload.
fn check_name(what: &str, s: &str) -> Result<()> {
    if !spn::valid_name(s) {
        bail!("{what} {s:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

pub(crate) fn bar(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

pub(crate) fn publish(o: PublishOpts) -> Result<Published> {
    let started = Instant::now();
    Version::parse(&o.version).map_err(|e| anyhow::anyhow!("--version: {e}"))?;
    check_name("--product", &o.product)?;
    if o.hardware.is_empty() {
        bail!("give at least one --hardware the image fits");
    }
    let v = load_signing(&o.vendor_dir)?;
    if v.root.expires <= now() {
        bail!("root v{} has expired; rotate it first (`ionshard vendor key add`)", v.version);
    }
    let spn = http::Spn::new(&o.spn, http::token(o.token.clone(), None)?)?;
    let file = std::fs::File::open(&o.image).with_context(|| format!("opening {}", o.image.display()))?;
    let len = file.metadata()?.len();
    if len == 0 {
        bail!("{} is empty", o.image.display());
    }
    let up = bar(len, o.json, "upload");
    let path = format!(
        "/v1/objects?tenant={}&product={}&data={}&parity={}",
        v.root.vendor, o.product, o.data_shards, o.parity_shards
    );
    let hashed = std::sync::Arc::new(std::sync::Mutex::new((blake3::Hasher::new(), 0u64)));
    let reader = Hashing { inner: std::io::BufReader::new(file), bar: up.clone(), hasher: hashed.clone() };
    let answer = spn.post_stream(&path, reader)?;
    up.finish_and_clear();
    let job = answer.get("job").and_then(Value::as_u64).context("the SPN did not name a job")?;
    let enc = bar(len, o.json, "scatter");
    let deadline = Instant::now() + Duration::from_secs(6 * 3600);
    let done = loop {
        let j = spn.get(&format!("/v1/jobs/{job}"))?;
        enc.set_position(j.get("bytes_done").and_then(Value::as_u64).unwrap_or(0));
        match j.get("state").and_then(Value::as_str) {
            Some("done") => break j,
            Some("failed") => {
                enc.abandon();
                bail!(
                    "publish failed on the SPN: {}",
                    j.get("error").and_then(Value::as_str).unwrap_or("no reason given")
                );
            }
            _ if Instant::now() > deadline => bail!("job {job} still running after 6 hours"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    enc.finish_and_clear();
    let result = done.get("result").context("finished job without a result")?;
    let field = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_string).context("incomplete job result");
    // What the vendor signs is what the vendor read, not what the SPN says it got.
    let (local_hash, local_len) = {
        let h = hashed.lock().unwrap_or_else(|p| p.into_inner());
        (h.0.finalize().to_hex().to_string(), h.1)
    };
    let spn_len = result.get("length").and_then(Value::as_u64);
    if local_len != len || spn_len != Some(local_len) || field("blake3")? != local_hash {
        bail!(
            "the SPN encoded an object of {spn_len:?} bytes, hash {}, but {} is {local_len} bytes, hash {local_hash}: \
             the upload was altered on the way; nothing signed",
            field("blake3")?,
            o.image.display()
        );
    }
    let mut release = Release {
        vendor: v.root.vendor.clone(),
        product: o.product.clone(),
        hardware: o.hardware.clone(),
        version: o.version.clone(),
        length: result.get("length").and_then(Value::as_u64).context("incomplete job result")?,
        blake3: field("blake3")?,
        manifest: field("manifest")?,
        read_key: KeyWrap::Clear(field("read_key")?),
        issued: now(),
        expires: now() + o.expires_days * 86400,
    };
    if o.confidential {
        let pk_path = o.vendor_dir.join("products").join(format!("{}.key", o.product));
        let (pk, created) = load_or_create_secret(&pk_path)?;
        if created && !o.json {
            eprintln!("created product key {} (give it to {} devices)", pk_path.display(), o.product);
        }
        let rk: [u8; 32] = data_encoding::HEXLOWER
            .decode(field("read_key")?.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .context("bad read key from the SPN")?;
        release.read_key = meta::wrap_read_key(&pk, &rk, &release);
    }
    let signers: Vec<&VendorKey> = v.keys.iter().take(v.root.threshold as usize).collect();
    let signed = meta::to_json(&meta::sign_release(release.clone(), &signers));
    let roots = newer_roots(&o.vendor_dir, v.version)?;
    let bundle = spn.post_json("/v1/releases", &json!({ "release": signed, "roots": roots }))?;
    let id = release.id();
    let out = o.out.clone().unwrap_or_else(|| o.vendor_dir.join("releases").join(format!("{id}.bundle.json")));
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    write_atomic(&out, bundle.to_string().as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    let r = |k: &str| result.get(k).and_then(Value::as_u64).unwrap_or(0);
    if o.json {
        println!(
            "{}",
            json!({ "release": id, "manifest": release.manifest, "bundle": out.display().to_string(), "bytes": len,
                    "segments": r("segments"), "new_segments": r("new_segments"), "new_shard_bytes": r("new_shard_bytes"),
                    "receipts": r("receipts"), "peers": r("peers"), "confidential": o.confidential, "seconds": seconds })
        );
    } else {
        println!("published {id}");
        println!("  manifest  {}", release.manifest);
        println!(
            "  stored    {} new shard bytes for {} image bytes ({} of {} segments new), {} receipts from {} peers",
            r("new_shard_bytes"),
            len,
            r("new_segments"),
            r("segments"),
            r("receipts"),
            r("peers")
        );
        println!("  bundle    {}", out.display());
        println!("  took      {seconds:.2} s ({:.1} MB/s)", len as f64 / seconds / 1e6);
    }
    Ok(Published { id, bundle: out, job: done, seconds })
}

/// Re-sign a published release with a later expiry (devices refuse expired
/// metadata: a vendor re-signs releases that should stay installable).
pub(crate) fn resign(
    bundle_path: &Path,
    spn: &str,
    token: Option<String>,
    vendor_dir: &Path,
    expires_days: u64,
    json_out: bool,
) -> Result<()> {
    let v = load_signing(vendor_dir)?;
    let file = std::fs::File::open(bundle_path).with_context(|| format!("opening {}", bundle_path.display()))?;
    // Only the signed release matters here: the manifest is not kept.
    let (bundle, _) = ota::Bundle::read_streaming(std::io::BufReader::new(file), &mut std::io::sink())
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let signed: Signed<Release> = serde_json::from_str(&bundle.release).context("the bundle's release")?;
    let mut release = signed.signed;
    if release.vendor != v.root.vendor {
        bail!(
            "{} is a release of vendor {:?}, this vendor is {:?}",
            bundle_path.display(),
            release.vendor,
            v.root.vendor
        );
    }
    // Issued strictly later than before, even twice within one second.
    release.issued = now().max(release.issued + 1);
    release.expires = now() + expires_days * 86400;
    let signers: Vec<&VendorKey> = v.keys.iter().take(v.root.threshold as usize).collect();
    let text = meta::to_json(&meta::sign_release(release.clone(), &signers));
    let roots = newer_roots(vendor_dir, v.version)?;
    let api = http::Spn::new(spn, http::token(token, None)?)?;
    let answer = api.post_json("/v1/releases", &json!({ "release": text, "roots": roots }))?;
    write_atomic(bundle_path, answer.to_string().as_bytes())?;
    if json_out {
        println!(
            "{}",
            json!({ "release": release.id(), "expires": release.expires, "bundle": bundle_path.display().to_string() })
        );
    } else {
        println!("re-signed {}: devices accept it until {} (seconds since the epoch)", release.id(), release.expires);
    }
    Ok(())
}
