//! Documents a threshold of separate people sign in turn: a release, a root,
//! a withdrawal waits in a *pending* file until enough key holders ran
//! `ionshard vendor sign FILE`; `ionshard vendor submit FILE` then sends it.
//! And moving keys out of (and into) a vendor directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ota::meta::{self, Release, Root, Signed, VendorKey, Withdrawal};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{load, save_root};
use crate::files::{load_or_create_secret, write_atomic, write_secret_new};
use crate::http;

/// A pending file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "pending", rename_all = "snake_case", deny_unknown_fields)]
enum Pending {
    /// A release to publish.
    Release { doc: Signed<Release> },
    /// A new root, and its format 1 projection.
    Root { doc: Signed<Root>, legacy: Option<Signed<Root>> },
    /// A withdrawal.
    Withdrawal { doc: Signed<Withdrawal> },
}

fn write(path: &Path, p: &Pending) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    write_atomic(path, serde_json::to_string_pretty(p)?.as_bytes())
}

pub(super) fn write_pending_release(dir: &Path, doc: &Signed<Release>) -> Result<PathBuf> {
    let p = dir.join("releases").join(format!("{}.pending.json", doc.signed.id()));
    write(&p, &Pending::Release { doc: doc.clone() })?;
    Ok(p)
}

pub(super) fn write_pending_root(dir: &Path, doc: &Signed<Root>, legacy: Option<&Signed<Root>>) -> Result<PathBuf> {
    let p = dir.join("roots").join(format!("{}.pending.json", doc.signed.version));
    write(&p, &Pending::Root { doc: doc.clone(), legacy: legacy.cloned() })?;
    Ok(p)
}

pub(super) fn write_pending_withdrawal(dir: &Path, doc: &Signed<Withdrawal>) -> Result<PathBuf> {
    let p = dir.join("withdrawn").join(format!("{}.pending.json", doc.signed.id()));
    write(&p, &Pending::Withdrawal { doc: doc.clone() })?;
    Ok(p)
}

fn read(path: &Path) -> Result<Pending> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() > meta::MAX_METADATA * 3 {
        bail!("{} is too large to be a pending document", path.display());
    }
    serde_json::from_slice(&b)
        .with_context(|| format!("{} is not a pending release, root or withdrawal", path.display()))
}

/// `ionshard vendor sign FILE [--key K]...`: add signatures (the keys given,
/// or this vendor directory's root keys) to a pending document.
pub(crate) fn sign(file: &Path, keys: &[PathBuf], vendor_dir: &Path, json_out: bool) -> Result<()> {
    let mut p = read(file)?;
    let mut ks = Vec::new();
    for k in keys {
        ks.push(VendorKey::from_bytes(load_or_create_secret(k).with_context(|| format!("key {}", k.display()))?.0));
    }
    let v = load(vendor_dir).ok();
    if ks.is_empty() {
        let v = v.as_ref().context("give --key FILE (a vendor key), or --dir of a vendor directory holding keys")?;
        ks = v.keys.iter().map(|k| VendorKey::from_bytes(k.to_bytes())).collect();
    }
    if ks.is_empty() {
        bail!("no keys to sign with");
    }
    for k in &ks {
        match &mut p {
            Pending::Release { doc } => meta::add_signature(doc, k),
            Pending::Withdrawal { doc } => meta::add_signature(doc, k),
            Pending::Root { doc, legacy } => {
                meta::add_signature(doc, k);
                if let Some(l) = legacy {
                    meta::add_signature(l, k);
                }
            }
        }
    }
    write(file, &p)?;
    let ids: Vec<String> = ks.iter().map(VendorKey::id).collect();
    if json_out {
        println!("{}", json!({ "file": file.display().to_string(), "signed_by": ids }));
    } else {
        println!("signed {} with {}", file.display(), ids.join(", "));
        println!("when enough key holders have signed: ionshard vendor submit {} --spn URL", file.display());
    }
    Ok(())
}

/// `ionshard vendor submit FILE --spn URL`: send a pending document that now
/// meets its thresholds (a root is also kept in the vendor directory).
pub(crate) fn submit(
    file: &Path,
    vendor_dir: &Path,
    spn_url: Option<&str>,
    token: Option<String>,
    json_out: bool,
) -> Result<()> {
    let p = read(file)?;
    let v = load(vendor_dir)?;
    let api = || -> Result<http::Spn> {
        let url = spn_url.context("give --spn URL: the SPN to send it to")?;
        http::spn(url, http::token(token.clone(), None)?)
    };
    let what = match &p {
        Pending::Release { doc } => {
            let missing = meta::signatures_missing(doc, &v.root);
            if missing > 0 {
                bail!("the release still needs {missing} signature(s) (`ionshard vendor sign {}`)", file.display());
            }
            let api = api()?;
            super::sync_roots(&api, &v, false)?;
            let out = super::publish::submit_release(&v, &api, doc, None)?;
            format!("published {}; bundle {}", doc.signed.id(), out.display())
        }
        Pending::Withdrawal { doc } => {
            let missing = meta::signatures_missing(doc, &v.root);
            if missing > 0 {
                bail!("the withdrawal still needs {missing} signature(s) (`ionshard vendor sign {}`)", file.display());
            }
            super::withdraw::submit_withdrawal(&v, &api()?, doc)?;
            format!("withdrew {}", doc.signed.id())
        }
        Pending::Root { doc, legacy } => {
            let text = meta::to_json(doc);
            meta::rotate_root(&v.root, text.as_bytes()).context("the new root does not verify yet")?;
            if let Some(l) = legacy {
                let prev_legacy = v.root.legacy();
                meta::rotate_root(&prev_legacy, meta::to_json(l).as_bytes())
                    .context("the new root's format 1 projection does not verify yet")?;
            }
            save_root(vendor_dir, doc, legacy.as_ref())?;
            if spn_url.is_some() {
                super::sync_roots(&api()?, &load(vendor_dir)?, true)?;
            }
            format!("root v{} is now the vendor's root", doc.signed.version)
        }
    };
    let _ = std::fs::remove_file(file);
    if json_out {
        println!("{}", json!({ "submitted": file.display().to_string(), "result": what }));
    } else {
        println!("{what}");
    }
    Ok(())
}

/// `ionshard vendor key export KEYID --out FILE`: move a root key out of the
/// vendor directory, to hand it to its holder (`--keep` copies instead).
pub(crate) fn export_key(dir: &Path, id: &str, out: &Path, keep: bool, json_out: bool) -> Result<()> {
    let src = dir.join("keys").join(format!("{id}.key"));
    let (bytes, _) = {
        if !src.exists() {
            bail!("no key {id} in {}", dir.join("keys").display());
        }
        load_or_create_secret(&src)?
    };
    if out.exists() {
        bail!("{} exists; not overwriting a key file", out.display());
    }
    write_secret_new(out, &bytes)?;
    if !keep {
        std::fs::remove_file(&src)?;
    }
    if json_out {
        println!("{}", json!({ "key": id, "out": out.display().to_string(), "kept": keep }));
    } else {
        println!(
            "key {id} written to {}{}",
            out.display(),
            if keep { "" } else { " and removed from the vendor directory" }
        );
    }
    Ok(())
}

/// `ionshard vendor key import FILE`: bring a root key (back) into the vendor directory.
pub(crate) fn import_key(dir: &Path, file: &Path, json_out: bool) -> Result<()> {
    let v = load(dir)?;
    let (bytes, _) = load_or_create_secret(file)?;
    let k = VendorKey::from_bytes(bytes);
    if !v.root.keys.contains_key(&k.id()) {
        bail!("{} is key {}, which root v{} does not list", file.display(), k.id(), v.root.version);
    }
    let dest = dir.join("keys").join(format!("{}.key", k.id()));
    if !dest.exists() {
        write_secret_new(&dest, &bytes)?;
    }
    if json_out {
        println!("{}", json!({ "key": k.id() }));
    } else {
        println!("key {} is in {}", k.id(), dir.join("keys").display());
    }
    Ok(())
}
