//! `ionshard vendor withdraw`: take a release back.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use ota::meta::{self, Release, Signed, VendorKey, Withdrawal};
use serde_json::json;

use super::publish::sign_timestamp;
use super::{Vendor, load, now, sync_roots};
use crate::files::write_atomic;
use crate::http;

/// `ionshard vendor withdraw ID`: take a release back (signed by the root's
/// threshold); the SPN stops serving it and the next timestamp leaves it out.
pub(crate) fn withdraw(
    dir: &Path,
    id: &str,
    reason: &str,
    spn_url: &str,
    token: Option<String>,
    json_out: bool,
) -> Result<()> {
    let v = load(dir)?;
    let (product, version) = id.split_once('@').context("give the release as PRODUCT@VERSION")?;
    let api = http::spn(spn_url, http::token(token, None)?)?;
    // The SPN's record names the image hash (the release may have been signed by stolen keys, not here).
    let list = api.releases(product)?;
    let found = list.releases.iter().find(|r| r.id == id).with_context(|| format!("the SPN has no release {id}"))?;
    let mut bundle = Vec::new();
    ota::bundle_or_older(&api, &found.id, None, None)?
        .read_to_end(&mut bundle)
        .with_context(|| format!("reading release {id} from the SPN"))?;
    // Only the signed release is read (the rest of the bundle may grow fields).
    let blake3 = serde_json::from_slice::<serde_json::Value>(&bundle)
        .ok()
        .and_then(|b| serde_json::from_str::<Signed<Release>>(b.get("release")?.as_str()?).ok())
        .map(|d| d.signed.blake3)
        .with_context(|| format!("the SPN's bundle of {id} holds no signed release"))?;
    let w = Withdrawal {
        vendor: v.root.vendor.clone(),
        product: product.to_string(),
        version: version.to_string(),
        blake3,
        issued: now(),
        reason: reason.to_string(),
    };
    let present: Vec<&VendorKey> = v.keys.iter().take(v.root.threshold as usize).collect();
    let doc = meta::sign_withdrawal(w, &present);
    let missing = meta::signatures_missing(&doc, &v.root);
    if missing > 0 {
        let p = super::sign::write_pending_withdrawal(dir, &doc)?;
        println!(
            "the withdrawal needs {missing} more signature(s): `ionshard vendor sign {}`, then submit it",
            p.display()
        );
        return Ok(());
    }
    submit_withdrawal(&v, &api, &doc)?;
    if json_out {
        println!("{}", json!({ "withdrawn": id }));
    } else {
        println!("withdrew {id}: the SPN no longer serves it, and timestamps leave it out");
    }
    Ok(())
}

pub(crate) fn submit_withdrawal(v: &Vendor, api: &http::Spn, doc: &Signed<Withdrawal>) -> Result<()> {
    sync_roots(api, v, false)?;
    let id = doc.signed.id();
    let text = meta::to_json(doc);
    api.withdraw(&id, &spn::types::NewWithdrawal { withdrawal: text.clone() })?;
    std::fs::create_dir_all(v.dir.join("withdrawn"))?;
    write_atomic(&v.dir.join("withdrawn").join(format!("{id}.json")), text.as_bytes())?;
    if v.timestamp_key.is_some() {
        sign_timestamp(v, api, &doc.signed.product, 24)?;
    }
    Ok(())
}
