//! What the SPN knows of vendors: their roots (both formats), the products
//! they own, their releases and withdrawals, their newest timestamps; and
//! the API tokens it issued. Checks of signatures live in `crate::vendors`;
//! this is storage.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{ReleaseRecord, State, json, parse};
use crate::error::{Error, Result};

pub(super) const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
const VENDORS: TableDefinition<&str, &[u8]> = TableDefinition::new("vendors");
/// `VENDOR/VERSION (20 digits)` → a [`RootRecord`].
const ROOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("roots");
/// product → the vendor that owns it.
const PRODUCTS: TableDefinition<&str, &str> = TableDefinition::new("products");
/// product → the newest timestamp (signed JSON).
const TIMESTAMPS: TableDefinition<&str, &str> = TableDefinition::new("timestamps");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Revoked tokens kept per tenant (listed, so an operator sees what was
/// revoked and when); older ones are forgotten when another is revoked.
/// Every request checks its token against the list: a tenant issuing and
/// revoking in a loop must not make it long.
pub(crate) const REVOKED_KEPT: usize = 64;

/// A vendor registered with this SPN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct VendorRecord {
    /// Its name.
    pub(crate) vendor: String,
    /// Seconds since the epoch.
    pub(crate) registered: u64,
}

/// One version of a vendor's root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RootRecord {
    /// The root's version.
    pub(crate) version: u64,
    /// The signed root as the vendor keeps it (format 2, or 1 for vendors
    /// without a timestamp key yet).
    pub(crate) root: String,
    /// Its format 1 projection, for devices of earlier releases (None when
    /// `root` is format 1 itself).
    pub(crate) legacy: Option<String>,
}

/// An API token (the token itself is never kept, only its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TokenRecord {
    /// Its id (printed and listed; not a secret).
    pub(crate) id: String,
    /// The tenant (vendor) it acts for.
    pub(crate) tenant: String,
    /// What the operator called it.
    pub(crate) label: String,
    /// BLAKE3 of the token, hex.
    pub(crate) hash: String,
    /// Seconds since the epoch.
    pub(crate) created: u64,
    /// When it was revoked, if it was.
    pub(crate) revoked: Option<u64>,
    /// What it may do (format 5; a format 4 token reads as full).
    #[serde(default)]
    pub(crate) scope: proto::api::TokenScope,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(RELEASES)?;
    txn.open_table(VENDORS)?;
    txn.open_table(ROOTS)?;
    txn.open_table(PRODUCTS)?;
    txn.open_table(TIMESTAMPS)?;
    txn.open_table(TOKENS)?;
    Ok(())
}

/// Format 1 kept releases unchecked: fill in what the new fields need from
/// their text, and mark them unverified (not served) until their vendor
/// registers and each is checked against its root.
pub(super) fn migrate_releases(txn: &WriteTransaction) -> Result<()> {
    use ota::meta::{Release, Signed};
    let mut t = txn.open_table(RELEASES)?;
    let mut all = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        all.push((k.value().to_string(), parse::<ReleaseRecord>(v.value(), "release")?));
    }
    for (k, mut r) in all {
        if let Ok(doc) = serde_json::from_str::<Signed<Release>>(&r.release) {
            r.vendor = doc.signed.vendor;
            r.hardware = doc.signed.hardware;
            r.blake3 = doc.signed.blake3;
        }
        r.verified = false;
        t.insert(k.as_str(), json(&r).as_slice())?;
    }
    Ok(())
}

/// A release re-signed to extend its expiry: the same image, product,
/// hardware and key, issued later.
fn is_resigning(old: &str, new: &str) -> bool {
    use ota::meta::{Release, Signed};
    let (Ok(o), Ok(n)) = (serde_json::from_str::<Signed<Release>>(old), serde_json::from_str::<Signed<Release>>(new))
    else {
        return false;
    };
    let (o, n) = (o.signed, n.signed);
    let same = |a: &Release, b: &Release| {
        (&a.vendor, &a.product, &a.hardware, &a.version, a.length, &a.blake3, &a.manifest, &a.read_key)
            == (&b.vendor, &b.product, &b.hardware, &b.version, b.length, &b.blake3, &b.manifest, &b.read_key)
    };
    same(&o, &n) && n.issued > o.issued && n.expires >= o.expires
}

fn root_key(vendor: &str, version: u64) -> String {
    format!("{vendor}/{version:020}")
}

impl State {
    /// Register a vendor with its roots (checked by the caller), once.
    pub(crate) fn register_vendor(&self, rec: &VendorRecord, roots: &[RootRecord]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut v = txn.open_table(VENDORS)?;
            if v.get(rec.vendor.as_str())?.is_some() {
                return Err(Error::Conflict(format!(
                    "vendor {} is registered already; send new roots as rotations",
                    rec.vendor
                )));
            }
            v.insert(rec.vendor.as_str(), json(rec).as_slice())?;
            let mut r = txn.open_table(ROOTS)?;
            for root in roots {
                r.insert(root_key(&rec.vendor, root.version).as_str(), json(root).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Add a vendor's next root (checked by the caller: it follows the newest).
    pub(crate) fn add_root(&self, vendor: &str, root: &RootRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut r = txn.open_table(ROOTS)?;
            let key = root_key(vendor, root.version);
            let existing: Option<RootRecord> = r.get(key.as_str())?.map(|v| parse(v.value(), "root")).transpose()?;
            match existing {
                // The same root again, or its format 2 form for a format 1 one.
                Some(e) if e.root == root.root => {}
                _ => {
                    r.insert(key.as_str(), json(root).as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A vendor's roots, oldest first.
    pub(crate) fn roots(&self, vendor: &str) -> Result<Vec<RootRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ROOTS)?;
        let (lo, hi) = (format!("{vendor}/"), format!("{vendor}0"));
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..hi.as_str())? {
            out.push(parse(e?.1.value(), "root")?);
        }
        Ok(out)
    }

    /// The vendor that owns `product`, claiming it for `vendor` if nobody does.
    pub(crate) fn claim_product(&self, product: &str, vendor: &str) -> Result<String> {
        let txn = self.db.begin_write()?;
        let owner = {
            let mut t = txn.open_table(PRODUCTS)?;
            let owner = t.get(product)?.map(|v| v.value().to_string());
            match owner {
                Some(o) => o,
                None => {
                    t.insert(product, vendor)?;
                    vendor.to_string()
                }
            }
        };
        txn.commit()?;
        Ok(owner)
    }

    /// The vendor that owns `product`.
    pub(crate) fn product_owner(&self, product: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PRODUCTS)?;
        Ok(t.get(product)?.map(|v| v.value().to_string()))
    }

    /// The newest timestamp of `product`.
    pub(crate) fn timestamp(&self, product: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TIMESTAMPS)?;
        Ok(t.get(product)?.map(|v| v.value().to_string()))
    }

    /// Keep `text` as the newest timestamp of `product` if `is_newer` says
    /// it is newer than the one kept (checked in the same transaction).
    pub(crate) fn put_timestamp(
        &self,
        product: &str,
        text: &str,
        is_newer: impl FnOnce(Option<&str>) -> Result<()>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(TIMESTAMPS)?;
            let old = t.get(product)?.map(|v| v.value().to_string());
            is_newer(old.as_deref())?;
            t.insert(product, text)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Save a release; refuses a second, different release with the same id,
    /// and any release with the id of a withdrawn one.
    pub(crate) fn put_release(&self, r: &ReleaseRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RELEASES)?;
            let existing: Option<ReleaseRecord> =
                t.get(r.id.as_str())?.map(|v| parse(v.value(), "release")).transpose()?;
            if let Some(e) = &existing
                && let Some(why) = &e.withdrawn
            {
                return Err(Error::Conflict(format!("release {} was withdrawn ({why}); publish a new version", r.id)));
            }
            if let Some(e) = existing
                && e.release != r.release
                && !is_resigning(&e.release, &r.release)
            {
                return Err(Error::Conflict(format!(
                    "release {} was already published with different metadata; publish a new version \
                     (re-signing the same image to extend its expiry is allowed: `ionshard vendor resign`)",
                    r.id
                )));
            }
            t.insert(r.id.as_str(), json(r).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replace a release's record as it is (withdrawn, verified).
    pub(crate) fn update_release(&self, r: &ReleaseRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RELEASES)?.insert(r.id.as_str(), json(r).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Forget a release that never verified (kept unchecked by a format 1 SPN).
    pub(crate) fn remove_release(&self, id: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RELEASES)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    /// A release.
    pub(crate) fn release(&self, id: &str) -> Result<Option<ReleaseRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASES)?;
        t.get(id)?.map(|v| parse(v.value(), "release")).transpose()
    }

    /// Every release (of `product`, if given).
    pub(crate) fn releases(&self, product: Option<&str>) -> Result<Vec<ReleaseRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let r: ReleaseRecord = parse(e?.1.value(), "release")?;
            if product.is_none_or(|p| p == r.product) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Keep a new token.
    pub(crate) fn put_token(&self, t: &TokenRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(TOKENS)?.insert(t.id.as_str(), json(t).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every token issued.
    pub(crate) fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(TOKENS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(parse(e?.1.value(), "token")?);
        }
        Ok(out)
    }

    /// The live token whose hash is `hash`.
    pub(crate) fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self.tokens()?.into_iter().find(|t| t.revoked.is_none() && t.hash == hash))
    }

    /// Revoke a token; false if there is none with that id.
    pub(crate) fn revoke_token(&self, id: &str, now: u64) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut t = txn.open_table(TOKENS)?;
            let rec: Option<TokenRecord> = t.get(id)?.map(|v| parse(v.value(), "token")).transpose()?;
            match rec {
                Some(mut r) => {
                    if r.revoked.is_none() {
                        r.revoked = Some(now);
                        t.insert(id, json(&r).as_slice())?;
                        // The tenant's oldest revoked ones beyond what is kept.
                        let mut revoked: Vec<(u64, String)> = Vec::new();
                        for e in t.iter()? {
                            let (k, v) = e?;
                            let other: TokenRecord = parse(v.value(), "token")?;
                            if other.tenant == r.tenant
                                && let Some(at) = other.revoked
                            {
                                revoked.push((at, k.value().to_string()));
                            }
                        }
                        if revoked.len() > REVOKED_KEPT {
                            revoked.sort_unstable();
                            for (_, old) in &revoked[..revoked.len() - REVOKED_KEPT] {
                                t.remove(old.as_str())?;
                            }
                        }
                    }
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(i: usize, tenant: &str) -> TokenRecord {
        TokenRecord {
            id: format!("{tenant}-{i:04}"),
            tenant: tenant.into(),
            label: String::new(),
            hash: format!("{i:064x}"),
            created: i as u64,
            revoked: None,
            scope: proto::api::TokenScope::Append,
        }
    }

    #[test]
    fn a_tenant_issuing_and_revoking_tokens_in_a_loop_cannot_grow_the_token_list() {
        let dir = tempfile::tempdir().expect("dir");
        let st = State::open(&dir.path().join("spn")).expect("open");
        st.put_token(&token(0, "other")).expect("put");
        assert!(st.revoke_token("other-0000", 1).expect("revoke"));
        let live = token(9999, "acme");
        st.put_token(&live).expect("put");
        for i in 0..REVOKED_KEPT * 3 {
            let t = token(i, "acme");
            st.put_token(&t).expect("put");
            assert!(st.revoke_token(&t.id, 10 + i as u64).expect("revoke"));
        }
        let all = st.tokens().expect("tokens");
        let acme: Vec<&TokenRecord> = all.iter().filter(|t| t.tenant == "acme").collect();
        assert_eq!(acme.len(), REVOKED_KEPT + 1, "the newest revoked ones and the live one");
        assert!(acme.iter().any(|t| t.id == live.id && t.revoked.is_none()), "the live token is kept");
        let oldest = acme.iter().filter_map(|t| t.revoked).min().expect("revoked ones");
        assert_eq!(oldest, 10 + (REVOKED_KEPT * 2) as u64, "the newest are the ones kept");
        assert!(all.iter().any(|t| t.id == "other-0000"), "another tenant's revoked token is not touched");
        // Revoking again (or an unknown id) changes nothing.
        assert!(st.revoke_token(&acme[0].id, 99_999).expect("revoke"));
        assert!(!st.revoke_token("nope", 1).expect("revoke"));
        assert_eq!(st.tokens().expect("tokens").len(), all.len());
    }
}
