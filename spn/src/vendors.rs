//! Vendors' roots, checked as a device checks them, and everything signed
//! against them: the SPN keeps only releases, withdrawals and timestamps
//! that the vendor's newest root vouches for, so nobody (not even a holder
//! of a vendor's API token) can make it serve a release that devices would
//! refuse, and freeze `@latest` with it.

use ota::meta::{self, Release, Root, Version};

use crate::error::{Error, Result};
use crate::state::{ReleaseRecord, RootRecord, State, VendorRecord};
use crate::types::{NewRoot, VendorInfo};

/// Clock skew the SPN allows on timestamps it accepts.
const SKEW: u64 = 300;

/// Check one sent root as the next after `prev` (or as version 1, self
/// signed, when `prev` is `None`), with its format 1 projection.
fn check_next(prev: Option<&Root>, new: &NewRoot) -> Result<(Root, RootRecord)> {
    let bad = |e: ota::Error| Error::BadRequest(format!("root: {e}"));
    let peek = meta::parse_root(new.root.as_bytes()).map_err(bad)?.signed;
    let root = match prev {
        None if peek.version == 1 => meta::load_root(new.root.as_bytes()).map_err(bad)?,
        None => {
            return Err(Error::BadRequest(format!(
                "the first root sent is version {}; register with every root from version 1 on",
                peek.version
            )));
        }
        Some(p) if peek.version == p.version && p.timestamp.is_none() => {
            meta::upgrade_root(p, new.root.as_bytes()).map_err(bad)?
        }
        Some(p) => meta::rotate_root(p, new.root.as_bytes()).map_err(bad)?,
    };
    let legacy = match (&root.timestamp, &new.legacy) {
        (None, None) => None,
        (None, Some(_)) => return Err(Error::BadRequest("a format 1 root needs no projection".into())),
        (Some(_), None) => {
            return Err(Error::BadRequest(format!(
                "root v{} has a timestamp key: send its format 1 projection too (devices of earlier releases need it)",
                root.version
            )));
        }
        (Some(_), Some(text)) => {
            let l = meta::load_root(text.as_bytes()).map_err(bad)?;
            if l != root.legacy() {
                return Err(Error::BadRequest(format!("the projection of root v{} differs from it", root.version)));
            }
            Some(text.clone())
        }
    };
    let rec = RootRecord { version: root.version, root: new.root.clone(), legacy };
    Ok((root, rec))
}

/// The vendor's newest root.
pub(crate) fn current_root(state: &State, vendor: &str) -> Result<Root> {
    let roots = state.roots(vendor)?;
    let newest = roots.last().ok_or_else(|| {
        Error::NotFound(format!("vendor {vendor} (register its root with this SPN first, from the vendor's machine)"))
    })?;
    meta::parse_root(newest.root.as_bytes()).map(|d| d.signed).map_err(|e| Error::Db(format!("vendor root: {e}")))
}

/// What the SPN knows of a vendor.
pub(crate) fn info(state: &State, vendor: &str) -> Result<VendorInfo> {
    let root = current_root(state, vendor)?;
    let mut products: Vec<String> =
        state.releases(None)?.into_iter().filter(|r| r.vendor == vendor).map(|r| r.product).collect();
    products.sort();
    products.dedup();
    Ok(VendorInfo { vendor: vendor.to_string(), root_version: root.version, root_format: root.format(), products })
}

/// Register a vendor: its whole chain of roots from version 1, each
/// following the last by TUF's rules; the newest must not have expired.
/// Releases a format 1 SPN kept unchecked for this vendor are checked now:
/// those the root does not vouch for are dropped.
pub(crate) fn register(state: &State, vendor: &str, roots: &[NewRoot], now: u64) -> Result<VendorInfo> {
    if !meta::valid_name(vendor) {
        return Err(Error::BadRequest(format!("vendor name {vendor:?}")));
    }
    let mut prev: Option<Root> = None;
    let mut recs: Vec<RootRecord> = Vec::new();
    for r in roots {
        let (root, rec) = check_next(prev.as_ref(), r)?;
        if root.vendor != vendor {
            return Err(Error::Forbidden(format!("the roots are vendor {:?}'s, not {vendor:?}'s", root.vendor)));
        }
        if recs.last().is_some_and(|l| l.version == rec.version) {
            recs.pop();
        }
        recs.push(rec);
        prev = Some(root);
    }
    let newest = prev.ok_or_else(|| Error::BadRequest("no roots sent".into()))?;
    if now >= newest.expires {
        return Err(Error::BadRequest(format!("root v{} has expired; rotate it before registering", newest.version)));
    }
    state.register_vendor(&VendorRecord { vendor: vendor.to_string(), registered: now }, &recs)?;
    recheck_releases(state, vendor, &newest)?;
    info(state, vendor)
}

/// A registered vendor's new roots (rotations, or its root's format 2 form).
/// Releases the new root no longer vouches for stop being served.
pub(crate) fn rotate(state: &State, vendor: &str, roots: &[NewRoot], now: u64) -> Result<VendorInfo> {
    let mut prev = current_root(state, vendor)?;
    let mut recs = Vec::new();
    for r in roots {
        let peek = meta::parse_root(r.root.as_bytes()).map_err(|e| Error::BadRequest(format!("root: {e}")))?.signed;
        let same = peek.version == prev.version;
        if peek.version < prev.version || (same && (prev.timestamp.is_some() || peek.timestamp.is_none())) {
            continue; // known already
        }
        let (root, rec) = check_next(Some(&prev), r)?;
        recs.push(rec);
        prev = root;
    }
    if now >= prev.expires {
        return Err(Error::BadRequest(format!("root v{} has expired", prev.version)));
    }
    for rec in &recs {
        state.add_root(vendor, rec)?;
    }
    if !recs.is_empty() {
        recheck_releases(state, vendor, &prev)?;
    }
    info(state, vendor)
}

/// Check every kept release of `vendor` against `root`: serve those it
/// vouches for; a release kept unchecked by a format 1 SPN that it does not
/// vouch for is dropped (so the vendor can publish that version properly).
fn recheck_releases(state: &State, vendor: &str, root: &Root) -> Result<()> {
    for mut r in state.releases(None)? {
        if r.vendor != vendor || r.withdrawn.is_some() {
            continue;
        }
        let ok = meta::release_signed_by(root, r.release.as_bytes()).is_ok();
        if !ok && !r.verified {
            tracing::warn!(release = %r.id, "dropped: not signed by vendor {vendor}'s registered root");
            state.remove_release(&r.id)?;
        } else if ok != r.verified {
            r.verified = ok;
            state.update_release(&r)?;
        }
    }
    Ok(())
}

/// Check a release sent by `vendor`'s token against the vendor's newest root
/// (threshold, root and release expiry, well-formed version and hash).
pub(crate) fn check_release(state: &State, vendor: &str, text: &str, now: u64) -> Result<Release> {
    let root = current_root(state, vendor)?;
    let policy = meta::Policy { product: None, hardware: None, installed: None, now };
    let r = meta::verify_release(&root, text.as_bytes(), &policy).map_err(|e| Error::Refused(e.to_string()))?;
    if r.hardware.is_empty() {
        return Err(Error::BadRequest("a release must name the hardware it fits".into()));
    }
    Ok(r)
}

/// Check a withdrawal against the vendor's root; returns the release it names.
pub(crate) fn withdraw(state: &State, vendor: &str, id: &str, text: &str) -> Result<ReleaseRecord> {
    let root = current_root(state, vendor)?;
    let w = meta::verify_withdrawal(&root, text.as_bytes()).map_err(|e| Error::Refused(e.to_string()))?;
    if w.id() != id {
        return Err(Error::BadRequest(format!("the withdrawal names {}, not {id}", w.id())));
    }
    let mut rec = state.release(id)?.ok_or_else(|| Error::NotFound(format!("release {id}")))?;
    if rec.vendor != vendor || !rec.blake3.eq_ignore_ascii_case(&w.blake3) {
        return Err(Error::BadRequest(format!("the withdrawal names another image of {id}")));
    }
    rec.withdrawn = Some(if w.reason.is_empty() { "withdrawn by the vendor".into() } else { w.reason });
    state.update_release(&rec)?;
    Ok(rec)
}

/// Check and keep a timestamp: signed by the vendor's timestamp role, for a
/// product the vendor owns, current, and newer than the one kept.
pub(crate) fn accept_timestamp(state: &State, vendor: &str, text: &str, now: u64) -> Result<meta::Timestamp> {
    let root = current_root(state, vendor)?;
    let peek: meta::Signed<meta::Timestamp> =
        serde_json::from_str(text).map_err(|e| Error::BadRequest(format!("timestamp: {e}")))?;
    let product = peek.signed.product;
    if state.product_owner(&product)?.is_some_and(|o| o != vendor) {
        return Err(Error::Forbidden(format!("product {product} belongs to another vendor")));
    }
    let t = meta::verify_timestamp(&root, text.as_bytes(), &product, now, SKEW)
        .map_err(|e| Error::Refused(e.to_string()))?;
    // A timestamp claims its product, as a first upload does: kept for a
    // product nobody owned, it would outrank the owner's own later ones
    // (a number they cannot pass), and devices would refuse them.
    if state.claim_product(&product, vendor)? != vendor {
        return Err(Error::Forbidden(format!("product {product} belongs to another vendor")));
    }
    state.put_timestamp(&product, text, |old| {
        let Some(old) = old else { return Ok(()) };
        let old: meta::Signed<meta::Timestamp> =
            serde_json::from_str(old).map_err(|e| Error::Db(format!("kept timestamp: {e}")))?;
        if t.version <= old.signed.version {
            return Err(Error::Conflict(format!(
                "timestamp number {} is not newer than number {} kept for {product}",
                t.version, old.signed.version
            )));
        }
        Ok(())
    })?;
    Ok(t)
}

/// The newest servable release of `product` for `hardware` (any hardware if
/// `None`, as devices of earlier releases ask).
pub(crate) fn newest(state: &State, product: &str, hardware: Option<&str>) -> Result<Option<ReleaseRecord>> {
    let mut best: Option<(Version, ReleaseRecord)> = None;
    for r in state.releases(Some(product))? {
        if !r.verified || r.withdrawn.is_some() || hardware.is_some_and(|h| !r.hardware.iter().any(|x| x == h)) {
            continue;
        }
        let Ok(v) = Version::parse(&r.version) else { continue };
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, r));
        }
    }
    Ok(best.map(|(_, r)| r))
}

/// Roots for a bundle of `format`: format 2 and later, every root as the
/// vendor keeps it from version 1; format 1, the format 1 forms after version 1.
pub(crate) fn bundle_roots(state: &State, vendor: &str, format: u32) -> Result<Vec<String>> {
    let roots = state.roots(vendor)?;
    Ok(if format >= ota::TIMESTAMP_BUNDLE_FORMAT {
        roots.into_iter().map(|r| r.root).collect()
    } else {
        roots.into_iter().filter(|r| r.version > 1).map(|r| r.legacy.unwrap_or(r.root)).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota::meta::{Role, Timestamp, VendorKey};

    fn now() -> u64 {
        proto::now()
    }

    /// A vendor with one root key and one timestamp key, registered.
    fn vendor(state: &State, name: &str) -> (VendorKey, VendorKey) {
        let (rk, tk) = (VendorKey::generate(), VendorKey::generate());
        let root = Root {
            vendor: name.into(),
            version: 1,
            expires: now() + 3600,
            threshold: 1,
            keys: [(rk.id(), rk.public_hex())].into_iter().collect(),
            timestamp: Some(Role { threshold: 1, keys: [(tk.id(), tk.public_hex())].into_iter().collect() }),
        };
        let text = meta::to_json(&meta::sign_root(root.clone(), &[&rk]));
        let legacy = meta::to_json(&meta::sign_root(root.legacy(), &[&rk]));
        register(state, name, &[NewRoot { root: text, legacy: Some(legacy) }], now()).expect("register");
        (rk, tk)
    }

    fn stamp(vendor: &str, product: &str, number: u64, key: &VendorKey) -> String {
        let t = Timestamp {
            vendor: vendor.into(),
            product: product.into(),
            version: number,
            issued: now(),
            expires: now() + 3600,
            latest: Default::default(),
        };
        meta::to_json(&meta::sign_timestamp(t, &[key]))
    }

    /// Vendor B kept a timestamp numbered u64::MAX for product "router"
    /// before its vendor A ever uploaded: the product stayed unclaimed, A's
    /// own timestamps were refused as "not newer" forever, and devices got
    /// B's. A timestamp now claims its product, as a first upload does.
    #[test]
    fn a_vendor_cannot_squat_another_vendors_product_with_a_timestamp() {
        let dir = tempfile::tempdir().expect("dir");
        let state = State::open(&dir.path().join("spn")).expect("open");
        let (_, a_ts) = vendor(&state, "acme");
        let (_, b_ts) = vendor(&state, "mallory");
        accept_timestamp(&state, "mallory", &stamp("mallory", "router", u64::MAX, &b_ts), now()).expect("first");
        assert_eq!(state.product_owner("router").expect("owner").as_deref(), Some("mallory"), "claimed by it");
        // acme learns at once that the name is taken (not later, from devices).
        let e = state.claim_product("router", "acme").expect("claim");
        assert_eq!(e, "mallory");
        let refused = accept_timestamp(&state, "acme", &stamp("acme", "router", 1, &a_ts), now());
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
        // A product of its own: fine.
        accept_timestamp(&state, "acme", &stamp("acme", "switch", 1, &a_ts), now()).expect("its own");
        assert_eq!(state.product_owner("switch").expect("owner").as_deref(), Some("acme"));
    }
}
