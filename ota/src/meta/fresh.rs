//! Statements about releases that change after they are signed: which is
//! the newest (timestamps, TUF's timestamp role) and which the vendor took
//! back (withdrawals).
//!
//! A **timestamp** is signed by the root's online timestamp role, lives for
//! hours, and names per hardware revision the newest release of one product
//! (its version and image hash). Devices refuse one that has expired (allowing
//! a bounded clock skew), one issued further in the future than the skew,
//! and one older (lower `version`) than the last they accepted. A device that
//! asked for the newest release and is offered an older one than the
//! timestamp names has caught a freeze.
//!
//! A **withdrawal** is signed by the root's threshold (the offline keys) and
//! names one release (product, version, image hash): an SPN stops serving it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Kind, Root, Signed, Version, check_role, check_threshold, parse, unhex};
use crate::error::{Error, Result};

/// The newest release of a product for one hardware revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latest {
    /// Its version.
    pub version: String,
    /// Its image's BLAKE3, hex.
    pub blake3: String,
}

/// A short-lived signed statement of the newest releases of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// Vendor (must match the root's).
    pub vendor: String,
    /// The product.
    pub product: String,
    /// Grows with every statement of this vendor and product.
    pub version: u64,
    /// Seconds since the epoch when signed.
    pub issued: u64,
    /// Seconds since the epoch after which devices refuse it.
    pub expires: u64,
    /// Hardware revision → the newest release for it.
    pub latest: BTreeMap<String, Latest>,
}

/// A release the vendor takes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    /// Vendor (must match the root's).
    pub vendor: String,
    /// Product of the release.
    pub product: String,
    /// Its version.
    pub version: String,
    /// Its image's BLAKE3, hex (the very release, not a re-publication).
    pub blake3: String,
    /// Seconds since the epoch when signed.
    pub issued: u64,
    /// Why, for people.
    pub reason: String,
}

impl Withdrawal {
    /// `product@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.product, self.version)
    }
}

impl Kind for Timestamp {
    const KIND: &'static str = "timestamp";
}
impl Kind for Withdrawal {
    const KIND: &'static str = "withdrawal";
}

/// Parse and check a timestamp for `product` against `root`'s timestamp role:
/// signed to the role's threshold, of the root's vendor and this product,
/// not expired and not from the future (each within `skew` seconds of `now`).
pub fn verify_timestamp(root: &Root, bytes: &[u8], product: &str, now: u64, skew: u64) -> Result<Timestamp> {
    let Some(role) = &root.timestamp else {
        return Err(Error::NoTimestampRole { vendor: root.vendor.clone(), root_version: root.version });
    };
    let doc: Signed<Timestamp> = parse(bytes, "timestamp metadata")?;
    check_role(&doc, &role.keys, role.threshold, root.version)?;
    let t = doc.signed;
    if t.vendor != root.vendor || t.product != product {
        return Err(Error::Malformed(format!(
            "timestamp is for {}/{}, this device is {}/{product}",
            t.vendor, t.product, root.vendor
        )));
    }
    if now > t.expires.saturating_add(skew) {
        return Err(Error::StaleTimestamp { product: t.product, expired: t.expires, now });
    }
    if t.issued > now.saturating_add(skew) {
        return Err(Error::TimestampFromFuture { product: t.product, issued: t.issued, now });
    }
    for (hw, l) in &t.latest {
        Version::parse(&l.version)?;
        if unhex(&l.blake3, "image hash")?.len() != 32 {
            return Err(Error::Malformed(format!("timestamp entry for {hw}: image hash is not 32 bytes")));
        }
    }
    Ok(t)
}

/// Parse and check a withdrawal against `root` (its threshold, its vendor).
pub fn verify_withdrawal(root: &Root, bytes: &[u8]) -> Result<Withdrawal> {
    let doc: Signed<Withdrawal> = parse(bytes, "withdrawal")?;
    check_threshold(&doc, root)?;
    let w = doc.signed;
    if w.vendor != root.vendor {
        return Err(Error::Malformed(format!("withdrawal is from vendor {:?}, root is {:?}", w.vendor, root.vendor)));
    }
    Version::parse(&w.version)?;
    Ok(w)
}

/// Whether `offered` (a release of `version` with image `blake3`) is what a
/// device asking for the newest release must take, given what the timestamp
/// names for its hardware: exactly that release. An older one is a freeze;
/// a newer one, or one for hardware the timestamp does not list, is not
/// vouched for by the online key (keys that sign releases alone, stolen say,
/// cannot push a release to devices that ask for the newest).
pub fn check_newest(named: Option<&Latest>, version: &str, blake3: &str, hardware: &str) -> Result<()> {
    let Some(named) = named else {
        return Err(Error::Unannounced {
            hardware: hardware.to_string(),
            offered: version.to_string(),
            newest: "no release".to_string(),
        });
    };
    let (named_v, offered_v) = (Version::parse(&named.version)?, Version::parse(version)?);
    if offered_v < named_v {
        return Err(Error::Frozen {
            hardware: hardware.to_string(),
            offered: version.to_string(),
            newest: named.version.clone(),
        });
    }
    if offered_v > named_v {
        return Err(Error::Unannounced {
            hardware: hardware.to_string(),
            offered: version.to_string(),
            newest: named.version.clone(),
        });
    }
    if !named.blake3.eq_ignore_ascii_case(blake3) {
        return Err(Error::ImageMismatch(format!(
            "the timestamp names {} with image {}, the release offered has {blake3}",
            named.version, named.blake3
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Role, VendorKey, hex, sign_timestamp, sign_withdrawal, to_json};
    use super::*;

    fn setup() -> (Root, VendorKey, VendorKey) {
        let (k, t) = (VendorKey::generate(), VendorKey::generate());
        let root = Root {
            vendor: "acme".into(),
            version: 1,
            expires: 2_000_000_000,
            threshold: 1,
            keys: [(k.id(), k.public_hex())].into_iter().collect(),
            timestamp: Some(Role { threshold: 1, keys: [(t.id(), t.public_hex())].into_iter().collect() }),
        };
        (root, k, t)
    }

    fn ts(issued: u64, expires: u64) -> Timestamp {
        let latest = Latest { version: "2.1".into(), blake3: hex(blake3::hash(b"i").as_bytes()) };
        Timestamp {
            vendor: "acme".into(),
            product: "router".into(),
            version: 7,
            issued,
            expires,
            latest: [("rev-b".to_string(), latest)].into_iter().collect(),
        }
    }

    #[test]
    fn a_timestamp_is_checked_for_signer_expiry_skew_and_product() {
        let (root, k, t) = setup();
        let now = 1_800_000_000;
        let good = to_json(&sign_timestamp(ts(now - 60, now + 3600), &[&t]));
        assert_eq!(verify_timestamp(&root, good.as_bytes(), "router", now, 300).expect("valid").version, 7);
        // Signed by a root key, not the online role: unknown key.
        let by_root_key = to_json(&sign_timestamp(ts(now - 60, now + 3600), &[&k]));
        assert!(matches!(
            verify_timestamp(&root, by_root_key.as_bytes(), "router", now, 300),
            Err(Error::UnknownKey { .. })
        ));
        // Expired beyond the skew, within the skew.
        let old = to_json(&sign_timestamp(ts(now - 7200, now - 600), &[&t]));
        assert!(matches!(
            verify_timestamp(&root, old.as_bytes(), "router", now, 300),
            Err(Error::StaleTimestamp { .. })
        ));
        assert!(verify_timestamp(&root, old.as_bytes(), "router", now, 900).is_ok());
        // From the future.
        let future = to_json(&sign_timestamp(ts(now + 3600, now + 7200), &[&t]));
        assert!(matches!(
            verify_timestamp(&root, future.as_bytes(), "router", now, 300),
            Err(Error::TimestampFromFuture { .. })
        ));
        // For another product; a root without the role.
        assert!(verify_timestamp(&root, good.as_bytes(), "camera", now, 300).is_err());
        let legacy = root.legacy();
        assert!(matches!(
            verify_timestamp(&legacy, good.as_bytes(), "router", now, 300),
            Err(Error::NoTimestampRole { .. })
        ));
    }

    #[test]
    fn newest_must_not_be_older_than_named() {
        let named = Latest { version: "2.1".into(), blake3: "ab".repeat(32) };
        let n = Some(&named);
        assert!(check_newest(n, "2.1", &"ab".repeat(32), "b").is_ok());
        assert!(matches!(check_newest(n, "2.2", &"cd".repeat(32), "b"), Err(Error::Unannounced { .. })));
        assert!(matches!(check_newest(n, "2.0", &"ab".repeat(32), "b"), Err(Error::Frozen { .. })));
        assert!(matches!(check_newest(n, "2.1", &"cd".repeat(32), "b"), Err(Error::ImageMismatch(_))));
        assert!(matches!(check_newest(None, "2.1", &"ab".repeat(32), "b"), Err(Error::Unannounced { .. })));
    }

    #[test]
    fn withdrawals_need_the_root_threshold() {
        let (root, k, t) = setup();
        let w = Withdrawal {
            vendor: "acme".into(),
            product: "router".into(),
            version: "9999".into(),
            blake3: "ab".repeat(32),
            issued: 5,
            reason: "signed with a stolen key".into(),
        };
        let good = to_json(&sign_withdrawal(w.clone(), &[&k]));
        assert_eq!(verify_withdrawal(&root, good.as_bytes()).expect("valid"), w);
        let by_online_key = to_json(&sign_withdrawal(w, &[&t]));
        assert!(verify_withdrawal(&root, by_online_key.as_bytes()).is_err());
    }
}
