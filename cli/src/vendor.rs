//! `ionshard vendor …`: a vendor's keys, roots and registration; releases
//! are in `vendor/publish.rs`, documents signed by separate people in
//! `vendor/sign.rs`.
//!
//! A vendor directory holds:
//! - `keys/KEYID.key`: root keys (32 bytes, mode 0600) that sign releases and
//!   roots; retired ones move to `keys/retired/`. Keys may live apart, one
//!   holder each (`vendor key export|import`, `vendor sign`).
//! - `timestamp/KEYID.key`: the online key that re-signs timestamps (kept on
//!   the machine that runs `vendor timestamp` from cron).
//! - `roots/N.root.json`: every root version, each signed by its
//!   predecessor's threshold and its own; `roots/N.v1.root.json`: its format 1
//!   projection, for devices of releases before timestamps.
//! - `root.json` (and `root.v1.json`): the newest root, to give to devices
//!   once (rotations reach them in release bundles).
//! - `products/PRODUCT.key`: product keys for confidential releases.
//! - `releases/PRODUCT@VERSION.{bundle,release}.json`: what each publish
//!   produced, and the signed release alone (what `vendor timestamp` reads);
//!   `withdrawn/PRODUCT@VERSION.json`: signed withdrawals.
//! - `timestamps/PRODUCT.json`: the last timestamp signed.

pub(crate) mod cmd;
mod publish;
mod sign;
mod withdraw;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ota::meta::{self, Role, Root, Signed, VendorKey};
use serde_json::json;

use crate::files::{load_or_create_secret, write_atomic};
use crate::http;

pub(crate) use publish::{PublishOpts, Published, publish, resign, timestamp};
pub(crate) use sign::{export_key, import_key, sign, submit};
pub(crate) use withdraw::withdraw;

pub(crate) use client::files::now;

pub(crate) fn default_dir() -> PathBuf {
    crate::files::home().join("vendor")
}

/// A vendor directory, loaded: the newest root and the keys at hand.
pub(crate) struct Vendor {
    pub(crate) dir: PathBuf,
    pub(crate) root: Root,
    /// Root keys present in `keys/` (maybe fewer than the threshold).
    pub(crate) keys: Vec<VendorKey>,
    /// The online timestamp key, if this directory holds it.
    pub(crate) timestamp_key: Option<VendorKey>,
}

fn roots_dir(dir: &Path) -> PathBuf {
    dir.join("roots")
}

pub(crate) fn load(dir: &Path) -> Result<Vendor> {
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
    let root = meta::parse_root(&text).context("reading the newest root")?.signed;
    let key_in = |sub: &str, id: &str| -> Result<Option<VendorKey>> {
        let p = dir.join(sub).join(format!("{id}.key"));
        if !p.exists() {
            return Ok(None);
        }
        Ok(Some(VendorKey::from_bytes(load_or_create_secret(&p)?.0)))
    };
    let mut keys = Vec::new();
    for id in root.keys.keys() {
        keys.extend(key_in("keys", id)?);
    }
    let mut timestamp_key = None;
    if let Some(role) = &root.timestamp {
        for id in role.keys.keys() {
            if let Some(k) = key_in("timestamp", id)? {
                timestamp_key = Some(k);
            }
        }
    }
    Ok(Vendor { dir: dir.to_path_buf(), root, keys, timestamp_key })
}

impl Vendor {
    /// The keys that sign, up to the threshold; an error saying what to do
    /// when this directory holds fewer.
    pub(crate) fn signers(&self) -> Result<Vec<&VendorKey>> {
        if self.keys.len() < self.root.threshold as usize {
            bail!(
                "root v{} needs {} signatures; only {} of its keys are in {} (the others sign with `ionshard vendor sign`)",
                self.root.version,
                self.root.threshold,
                self.keys.len(),
                self.dir.join("keys").display()
            );
        }
        Ok(self.keys.iter().take(self.root.threshold as usize).collect())
    }

    /// Every root from version 1, as sent to an SPN (with projections).
    pub(crate) fn all_roots(&self) -> Result<Vec<spn::types::NewRoot>> {
        (1..=self.root.version).map(|n| read_root(&self.dir, n)).collect()
    }
}

fn read_root(dir: &Path, n: u64) -> Result<spn::types::NewRoot> {
    let p = roots_dir(dir).join(format!("{n}.root.json"));
    let root = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let lp = roots_dir(dir).join(format!("{n}.v1.root.json"));
    let legacy = if lp.exists() { Some(std::fs::read_to_string(&lp)?) } else { None };
    Ok(spn::types::NewRoot { root, legacy })
}

/// Format 1 roots after version 1, oldest first: what release bundles of
/// format 1 carry (kept for `vendor bundle` and tests).
#[allow(dead_code)]
pub(crate) fn legacy_roots(dir: &Path, version: u64) -> Result<Vec<String>> {
    (2..=version).map(|n| read_root(dir, n).map(|r| r.legacy.unwrap_or(r.root))).collect()
}

/// A new key, created through the 0600 secret-file path in `dir/sub`.
fn new_key(dir: &Path, sub: &str) -> Result<VendorKey> {
    let tmp = dir.join(sub).join(format!(".new-{}.key", std::process::id()));
    let (b, _) = load_or_create_secret(&tmp)?;
    let k = VendorKey::from_bytes(b);
    std::fs::rename(&tmp, dir.join(sub).join(format!("{}.key", k.id())))?;
    Ok(k)
}

/// Keep a root that meets its thresholds: `roots/N.root.json`, its format 1
/// projection, and `root.json`/`root.v1.json`.
pub(crate) fn save_root(dir: &Path, doc: &Signed<Root>, legacy: Option<&Signed<Root>>) -> Result<()> {
    let text = meta::to_json(doc);
    let n = doc.signed.version;
    write_atomic(&roots_dir(dir).join(format!("{n}.root.json")), text.as_bytes())?;
    write_atomic(&dir.join("root.json"), text.as_bytes())?;
    let legacy_text = legacy.map_or_else(|| text.clone(), meta::to_json);
    if legacy.is_some() {
        write_atomic(&roots_dir(dir).join(format!("{n}.v1.root.json")), legacy_text.as_bytes())?;
    }
    write_atomic(&dir.join("root.v1.json"), legacy_text.as_bytes())
}

fn print_root(dir: &Path, root: &Root, json_out: bool, what: &str) {
    if json_out {
        println!(
            "{}",
            json!({ "vendor": root.vendor, "root_version": root.version, "root_format": root.format(),
                    "threshold": root.threshold, "keys": root.keys.keys().collect::<Vec<_>>(),
                    "timestamp_keys": root.timestamp.as_ref().map(|t| t.keys.keys().collect::<Vec<_>>()),
                    "expires": root.expires, "root": dir.join("root.json").display().to_string() })
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
        match &root.timestamp {
            Some(t) => println!("  timestamp key {}", t.keys.keys().cloned().collect::<Vec<_>>().join(", ")),
            None => println!("  no timestamp key (devices cannot tell a frozen SPN): `ionshard vendor key timestamp`"),
        }
        println!("root for devices: {}", dir.join("root.json").display());
        println!("root for devices of releases before timestamps: {}", dir.join("root.v1.json").display());
    }
}

fn role_of(key: &VendorKey) -> Role {
    Role { threshold: 1, keys: [(key.id(), key.public_hex())].into_iter().collect() }
}

pub(crate) fn init(dir: &Path, name: &str, keys: u32, threshold: u32, expires_days: u64, json_out: bool) -> Result<()> {
    check_name("--name", name)?;
    if keys == 0 || threshold == 0 || threshold > keys {
        bail!("--threshold {threshold} with --keys {keys}: need 1 <= threshold <= keys");
    }
    if threshold == 1 {
        eprintln!(
            "warning: --threshold 1: whoever steals any one of these keys can sign releases for every device; \
             the default is 2 of 3, with the keys kept by different people (`ionshard vendor key export`)"
        );
    }
    if roots_dir(dir).exists() {
        bail!("{} already holds a vendor; use `ionshard vendor key add|rotate` to change its keys", dir.display());
    }
    for sub in ["keys", "timestamp", "roots"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let ks: Vec<VendorKey> = (0..keys).map(|_| new_key(dir, "keys")).collect::<Result<_>>()?;
    let ts = new_key(dir, "timestamp")?;
    let root = Root {
        vendor: name.to_string(),
        version: 1,
        expires: now() + expires_days * 86400,
        threshold,
        keys: ks.iter().map(|k| (k.id(), k.public_hex())).collect(),
        timestamp: Some(role_of(&ts)),
    };
    let signers: Vec<&VendorKey> = ks.iter().collect();
    let doc = meta::sign_root(root.clone(), &signers);
    let legacy = meta::sign_root(root.legacy(), &signers);
    save_root(dir, &doc, Some(&legacy))?;
    print_root(dir, &root, json_out, "created");
    Ok(())
}

/// How the root's keys change.
pub(crate) enum KeyChange<'a> {
    /// A new root key.
    Add,
    /// Replace this root key by a new one.
    Rotate(&'a str),
    /// A new online timestamp key (replacing the old one, if any).
    Timestamp,
}

/// Add, replace or create keys: a new root version, signed by the old keys
/// and the new ones (threshold of each), with its format 1 projection.
pub(crate) fn change_keys(
    dir: &Path,
    change: KeyChange<'_>,
    threshold: Option<u32>,
    expires_days: u64,
    json_out: bool,
) -> Result<()> {
    let v = load(dir)?;
    let mut keys = v.root.keys.clone();
    let mut role = v.root.timestamp.clone();
    let mut added = None;
    std::fs::create_dir_all(dir.join("timestamp"))?;
    match change {
        KeyChange::Add => {
            let k = new_key(dir, "keys")?;
            keys.insert(k.id(), k.public_hex());
            added = Some(k);
        }
        KeyChange::Rotate(old) => {
            if keys.remove(old).is_none() {
                bail!("key {old} is not in root v{} (`ionshard vendor show` lists them)", v.root.version);
            }
            let k = new_key(dir, "keys")?;
            keys.insert(k.id(), k.public_hex());
            added = Some(k);
        }
        KeyChange::Timestamp => role = Some(role_of(&new_key(dir, "timestamp")?)),
    }
    let threshold = threshold.unwrap_or(v.root.threshold);
    if threshold == 0 || threshold as usize > keys.len() {
        bail!("--threshold {threshold} with {} keys", keys.len());
    }
    let root = Root {
        vendor: v.root.vendor.clone(),
        version: v.root.version + 1,
        expires: now() + expires_days * 86400,
        threshold,
        keys,
        timestamp: role,
    };
    // The old threshold and the new: the old keys at hand, plus the new one.
    let mut signers: Vec<&VendorKey> = v.keys.iter().filter(|k| v.root.keys.contains_key(&k.id())).collect();
    signers.extend(added.as_ref());
    let doc = meta::sign_root(root.clone(), &signers);
    let legacy = root.timestamp.is_some().then(|| meta::sign_root(root.legacy(), &signers));
    let text = meta::to_json(&doc);
    match meta::rotate_root(&v.root, text.as_bytes()) {
        Ok(_) => {}
        Err(ota::Error::BelowThreshold { .. }) => {
            let pending = sign::write_pending_root(dir, &doc, legacy.as_ref())?;
            if json_out {
                println!("{}", json!({ "pending": pending.display().to_string(), "root_version": root.version }));
                return Ok(());
            }
            println!(
                "root v{} needs more signatures than the keys here give: have the other key holders run \
                 `ionshard vendor sign {}`, then `ionshard vendor submit {}`",
                root.version,
                pending.display(),
                pending.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("the new root does not verify"),
    }
    save_root(dir, &doc, legacy.as_ref())?;
    if let KeyChange::Rotate(old) = change {
        let retired = dir.join("keys").join("retired");
        std::fs::create_dir_all(&retired)?;
        let _ = std::fs::rename(dir.join("keys").join(format!("{old}.key")), retired.join(format!("{old}.key")));
    }
    let what = match change {
        KeyChange::Add => "added a key",
        KeyChange::Rotate(_) => "rotated",
        KeyChange::Timestamp => "new timestamp key",
    };
    print_root(dir, &root, json_out, what);
    if !json_out {
        println!("send it to the SPNs that serve your releases: `ionshard vendor register --spn URL`");
    }
    Ok(())
}

pub(crate) fn show(dir: &Path, json_out: bool) -> Result<()> {
    let v = load(dir)?;
    print_root(dir, &v.root, json_out, "vendor");
    Ok(())
}

/// Make sure the SPN knows this vendor's roots up to the newest: register
/// it (`register`: the first time), or send the roots it lacks.
pub(crate) fn sync_roots(api: &http::Spn, v: &Vendor, register: bool) -> Result<spn::types::VendorInfo> {
    let Some(info) = api.vendor(&v.root.vendor)? else {
        if !register {
            bail!(
                "the SPN does not know vendor {}: register its root there once with `ionshard vendor register --spn URL`",
                v.root.vendor
            );
        }
        return Ok(api.register_vendor(&spn::types::Roots { roots: v.all_roots()? })?);
    };
    if info.root_version == v.root.version && info.root_format == v.root.format() {
        return Ok(info);
    }
    let roots = v.all_roots()?.into_iter().skip(info.root_version.saturating_sub(1) as usize).collect();
    Ok(api.add_roots(&v.root.vendor, &spn::types::Roots { roots })?)
}

pub(crate) fn register(dir: &Path, spn_url: &str, token: Option<String>, json_out: bool) -> Result<()> {
    let v = load(dir)?;
    let api = http::spn(spn_url, http::token(token, None)?)?;
    let info = sync_roots(&api, &v, true)?;
    if json_out {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!(
            "vendor {} known to the SPN at {spn_url} with root v{} (format {}); products: {}",
            info.vendor,
            info.root_version,
            info.root_format,
            if info.products.is_empty() { "none yet".to_string() } else { info.products.join(", ") }
        );
    }
    Ok(())
}

/// Names the SPN accepts (tenants, products): checked here, before any upload.
pub(crate) fn check_name(what: &str, s: &str) -> Result<()> {
    if !spn::valid_name(s) {
        bail!("{what} {s:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'");
    }
    Ok(())
}
