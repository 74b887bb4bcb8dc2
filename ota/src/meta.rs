//! Signed release metadata, shaped after The Update Framework (TUF).
//!
//! A vendor's **root** lists its ed25519 keys and how many of them must sign
//! (the threshold). A **release** names one image: product, hardware it fits,
//! version, length, BLAKE3 hash, manifest CID and read key, and an expiry.
//! Both travel as JSON:
//!
//! ```text
//! { "signed": { ... }, "signatures": [ { "keyid": "…", "sig": "…" } ] }
//! ```
//!
//! A signature covers `ionshard:<kind>:v<N>:` followed by the compact JSON of
//! `signed` as this crate writes it; unknown fields are refused, so the bytes
//! signed and the bytes checked are the same. A new root (version N+1) must be
//! signed by a threshold of the old root's keys *and* of its own. Devices
//! refuse: unknown keys, too few signatures, expired metadata (freeze),
//! versions older than the one installed (rollback), other products or
//! hardware, and metadata over a size limit before parsing a byte of it.
//!
//! Documents and their formats:
//!
//! | kind | domain | what |
//! |---|---|---|
//! | root, format 1 | `ionshard:root:v1:` | vendor, version, expires, threshold, keys |
//! | root, format 2 | `ionshard:root:v2:` | format 1 plus `timestamp`: the online role (keys, threshold) that signs timestamps |
//! | release | `ionshard:release:v1:` | one image (unchanged since format 1) |
//! | timestamp | `ionshard:timestamp:v1:` | the newest release of a product per hardware revision, short-lived, signed by the timestamp role |
//! | withdrawal | `ionshard:withdrawal:v1:` | a release the vendor takes back, signed by the root's threshold |
//!
//! A vendor with a format 2 root also signs its *format 1 projection* (the
//! same fields without `timestamp`) for devices of releases before
//! timestamps existed: they refuse unknown fields, and follow rotations
//! through the projections. A device that trusts a format 1 root takes the
//! format 2 root of the same version when it carries exactly the same
//! vendor, version, expiry, threshold and keys and is signed by that
//! threshold ([`upgrade_root`]).
//!
//! **Timestamps** stop freezing: an SPN (or anyone in the path) that serves
//! an older release as the newest is caught, because the vendor's online key
//! re-signs, every few hours, which release is newest per hardware, and a
//! device refuses a statement past its expiry (plus a bounded clock skew).
//! **Fast-forward recovery**: a device that installed a release signed with
//! keys that were later stolen (say a bogus version 9999) drops that
//! release's version as its rollback floor when a rotated root no longer
//! validates it (see `Device::check`); likewise it forgets the last
//! timestamp it saw when the timestamp role's keys change.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod fresh;
pub use fresh::{Latest, Timestamp, Withdrawal, check_newest, verify_timestamp, verify_withdrawal};

/// Largest root or release document a device reads, in bytes.
pub const MAX_METADATA: usize = 64 * 1024;

/// A vendor signing key.
pub struct VendorKey(SigningKey);

impl fmt::Debug for VendorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VendorKey({})", self.id())
    }
}

impl VendorKey {
    /// A new random key.
    pub fn generate() -> Self {
        VendorKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// From its 32 secret bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        VendorKey(SigningKey::from_bytes(&b))
    }

    /// Its 32 secret bytes (to keep in a 0600 file).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half, hex.
    pub fn public_hex(&self) -> String {
        hex(self.0.verifying_key().as_bytes())
    }

    /// Its key id: the first 16 bytes of BLAKE3 of the public key, hex.
    pub fn id(&self) -> String {
        key_id(self.0.verifying_key().as_bytes())
    }
}

fn key_id(public: &[u8; 32]) -> String {
    hex(&blake3::hash(public).as_bytes()[..16])
}

pub(crate) fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

pub(crate) fn unhex(s: &str, what: &str) -> Result<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .map_err(|e| Error::Malformed(format!("{what} is not hex: {e}")))
}

/// A tenant, vendor or product name: 1 to 64 letters, digits, '-', '_' or
/// '.', not starting with '.' (so never `.` or `..`: names become file and
/// record names).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A firmware version: dotted numbers, compared number by number
/// (`1.10` > `1.9`; `2` = `2.0`).
#[derive(Debug, Clone)]
pub struct Version {
    parts: Vec<u64>,
    text: String,
}

impl Version {
    /// Parse `1`, `1.2`, `2026.11.3` (at most 8 parts, digits only).
    pub fn parse(s: &str) -> Result<Version> {
        let bad = || Error::Malformed(format!("version {s:?} is not dotted numbers like 1.4.2"));
        if s.is_empty() || s.split('.').count() > 8 {
            return Err(bad());
        }
        let parts = s
            .split('.')
            .map(|p| if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) { None } else { p.parse().ok() })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(bad)?;
        Ok(Version { parts, text: s.to_string() })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| self.parts.get(i).unwrap_or(&0).cmp(other.parts.get(i).unwrap_or(&0)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Version {}

/// A vendor's root of trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    /// The vendor's name.
    pub vendor: String,
    /// Starts at 1; each rotation adds one.
    pub version: u64,
    /// Seconds since the epoch after which the root is not trusted.
    pub expires: u64,
    /// Signatures needed, on releases and on the next root.
    pub threshold: u32,
    /// Key id → ed25519 public key (hex).
    pub keys: BTreeMap<String, String>,
    /// The online role that signs timestamps (format 2 roots; absent in
    /// format 1 and in the projections for earlier devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Role>,
}

impl Root {
    /// The root's format: 2 with a timestamp role, else 1.
    pub fn format(&self) -> u32 {
        if self.timestamp.is_some() { 2 } else { 1 }
    }

    /// The format 1 projection, for devices of releases before timestamps.
    pub fn legacy(&self) -> Root {
        Root { timestamp: None, ..self.clone() }
    }

    /// Vendor, version, expiry, threshold and keys equal (the role aside).
    fn same_core(&self, other: &Root) -> bool {
        self.legacy() == other.legacy()
    }
}

/// A set of keys and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Signatures needed.
    pub threshold: u32,
    /// Key id → ed25519 public key (hex).
    pub keys: BTreeMap<String, String>,
}

/// How a release's read key travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KeyWrap {
    /// A public image: the read key in the clear (hex).
    Clear(String),
    /// A confidential image: AES-256-GCM under the product key devices hold.
    Product {
        /// 12-byte nonce, hex.
        nonce: String,
        /// Read key and tag, hex.
        sealed: String,
    },
}

/// One firmware release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Vendor (must match the root's).
    pub vendor: String,
    /// Product the image is for.
    pub product: String,
    /// Hardware revisions it fits.
    pub hardware: Vec<String>,
    /// Version (dotted numbers).
    pub version: String,
    /// Image length in bytes.
    pub length: u64,
    /// Image BLAKE3 hash, hex.
    pub blake3: String,
    /// Manifest CID.
    pub manifest: String,
    /// The manifest's read key.
    pub read_key: KeyWrap,
    /// Seconds since the epoch when signed.
    pub issued: u64,
    /// Seconds since the epoch after which devices refuse it.
    pub expires: u64,
}

impl Release {
    /// `product@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.product, self.version)
    }
}

/// One signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sig {
    /// Who signed.
    pub keyid: String,
    /// ed25519 signature, hex.
    pub sig: String,
}

/// A document and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    /// The document.
    pub signed: T,
    /// Its signatures.
    pub signatures: Vec<Sig>,
}

trait Kind {
    const KIND: &'static str;
    /// The version in the signing domain.
    fn domain_version(&self) -> u32 {
        1
    }
}
impl Kind for Root {
    const KIND: &'static str = "root";
    fn domain_version(&self) -> u32 {
        self.format()
    }
}
impl Kind for Release {
    const KIND: &'static str = "release";
}
/// The bytes a signature covers: the domain, then the compact JSON.
fn message<T: Serialize + Kind>(doc: &T) -> Vec<u8> {
    let mut m = format!("ionshard:{}:v{}:", T::KIND, doc.domain_version()).into_bytes();
    // Serialising our own typed structs cannot fail.
    m.extend_from_slice(&serde_json::to_vec(doc).unwrap_or_default());
    m
}

/// Sign `doc` with each of `keys`.
fn sign<T: Serialize + Kind>(doc: T, keys: &[&VendorKey]) -> Signed<T> {
    let m = message(&doc);
    let signatures = keys.iter().map(|k| Sig { keyid: k.id(), sig: hex(&k.0.sign(&m).to_bytes()) }).collect();
    Signed { signed: doc, signatures }
}

/// Sign a root with the keys given (for a rotation: old and new keys).
pub fn sign_root(root: Root, keys: &[&VendorKey]) -> Signed<Root> {
    sign(root, keys)
}

/// Sign a release.
pub fn sign_release(release: Release, keys: &[&VendorKey]) -> Signed<Release> {
    sign(release, keys)
}

/// Sign a timestamp with the online timestamp key(s).
pub fn sign_timestamp(ts: Timestamp, keys: &[&VendorKey]) -> Signed<Timestamp> {
    sign(ts, keys)
}

/// Sign a withdrawal (with root keys, to the root's threshold).
pub fn sign_withdrawal(w: Withdrawal, keys: &[&VendorKey]) -> Signed<Withdrawal> {
    sign(w, keys)
}

/// Add `key`'s signature to a signed document (a threshold met by separate
/// people, one signature each). Replaces an earlier signature by the same key.
pub fn add_signature<T: Serialize + Signable>(doc: &mut Signed<T>, key: &VendorKey) {
    let m = message(&doc.signed);
    doc.signatures.retain(|s| s.keyid != key.id());
    doc.signatures.push(Sig { keyid: key.id(), sig: hex(&key.0.sign(&m).to_bytes()) });
}

/// The documents one can add a signature to.
#[allow(private_bounds)]
pub trait Signable: Kind {}
impl Signable for Root {}
impl Signable for Release {}
impl Signable for Timestamp {}
impl Signable for Withdrawal {}

/// The hex message a signature covers, for test vectors and other
/// implementations checking themselves.
#[allow(private_bounds)]
pub fn signing_message<T: Serialize + Signable>(doc: &T) -> Vec<u8> {
    message(doc)
}

/// JSON of a signed document, for files and the wire.
pub fn to_json<T: Serialize>(doc: &Signed<T>) -> String {
    serde_json::to_string_pretty(doc).unwrap_or_default()
}

/// Parse signed JSON of at most [`MAX_METADATA`] bytes.
fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<Signed<T>> {
    if bytes.len() > MAX_METADATA {
        return Err(Error::TooLarge { what: what.to_string(), len: bytes.len() as u64, limit: MAX_METADATA as u64 });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed(format!("{what}: {e}")))
}

/// How many distinct keys of `keys` validly signed `doc`; errors if none of
/// the signatures is by a key in `keys`.
fn count_valid<T: Serialize + Kind>(
    doc: &Signed<T>,
    keys: &BTreeMap<String, String>,
    root_version: u64,
) -> Result<usize> {
    let m = message(&doc.signed);
    let mut good = BTreeSet::new();
    let mut known = 0;
    for s in &doc.signatures {
        let Some(pk_hex) = keys.get(&s.keyid) else { continue };
        known += 1;
        let ok = (|| {
            let pk: [u8; 32] = unhex(pk_hex, "public key").ok()?.try_into().ok()?;
            let vk = VerifyingKey::from_bytes(&pk).ok()?;
            if key_id(&pk) != s.keyid {
                return None;
            }
            let sig: [u8; 64] = unhex(&s.sig, "signature").ok()?.try_into().ok()?;
            vk.verify(&m, &Signature::from_bytes(&sig)).ok()
        })();
        if ok.is_some() {
            good.insert(s.keyid.clone());
        }
    }
    if known == 0 {
        let ids: Vec<&str> = doc.signatures.iter().map(|s| s.keyid.as_str()).collect();
        return Err(Error::UnknownKey {
            what: T::KIND.to_string(),
            keyids: if ids.is_empty() { "none".to_string() } else { ids.join(", ") },
            root_version,
        });
    }
    Ok(good.len())
}

fn check_threshold<T: Serialize + Kind>(doc: &Signed<T>, root: &Root) -> Result<()> {
    check_role(doc, &root.keys, root.threshold, root.version)
}

fn check_role<T: Serialize + Kind>(
    doc: &Signed<T>,
    keys: &BTreeMap<String, String>,
    threshold: u32,
    root_version: u64,
) -> Result<()> {
    let have = count_valid(doc, keys, root_version)?;
    if have < threshold as usize {
        return Err(Error::BelowThreshold { what: T::KIND.to_string(), have, need: threshold as usize, root_version });
    }
    Ok(())
}

/// How many more signatures `doc` needs to meet `root`'s threshold (0: it
/// is complete). For documents signed by separate key holders in turn.
#[allow(private_bounds)]
pub fn signatures_missing<T: Serialize + Signable>(doc: &Signed<T>, root: &Root) -> usize {
    let have = count_valid(doc, &root.keys, root.version).unwrap_or(0);
    (root.threshold as usize).saturating_sub(have)
}

/// Parse and check a root document on its own (first trust, on a device's
/// provisioning): self-signed to its threshold and well formed.
pub fn load_root(bytes: &[u8]) -> Result<Root> {
    let doc = parse_root(bytes)?;
    check_threshold(&doc, &doc.signed)?;
    Ok(doc.signed)
}

fn check_keys(what: &str, threshold: u32, keys: &BTreeMap<String, String>) -> Result<()> {
    if threshold == 0 || threshold as usize > keys.len() {
        return Err(Error::Malformed(format!("{what} threshold {threshold} with {} keys", keys.len())));
    }
    for (id, pk) in keys {
        let pk: [u8; 32] = unhex(pk, "public key")?
            .try_into()
            .map_err(|_| Error::Malformed(format!("a {what} public key is not 32 bytes")))?;
        if key_id(&pk) != *id {
            return Err(Error::Malformed(format!("{what} key id {id} does not match its key")));
        }
    }
    Ok(())
}

fn check_root_shape(r: &Root) -> Result<()> {
    check_keys("root", r.threshold, &r.keys)?;
    if let Some(t) = &r.timestamp {
        check_keys("timestamp role", t.threshold, &t.keys)?;
        // The online key signs often and lives on a server: it must never
        // also be one of the offline keys that sign releases and roots.
        if let Some(id) = t.keys.keys().find(|id| r.keys.contains_key(*id)) {
            return Err(Error::Malformed(format!("key {id} is both a root key and the online timestamp key")));
        }
    }
    Ok(())
}

/// Parse a signed root of either format (no checks beyond its shape).
pub fn parse_root(bytes: &[u8]) -> Result<Signed<Root>> {
    let doc: Signed<Root> = parse(bytes, "root metadata")?;
    check_root_shape(&doc.signed)?;
    Ok(doc)
}

/// Take the format 2 root of the trusted root's own version: it must carry
/// the same vendor, version, expiry, threshold and keys, add a timestamp
/// role, and be signed by that threshold (the vendor upgrading its root's
/// format without changing its keys).
pub fn upgrade_root(trusted: &Root, bytes: &[u8]) -> Result<Root> {
    let doc = parse_root(bytes)?;
    let new = &doc.signed;
    if new.version != trusted.version || !new.same_core(trusted) || new.timestamp.is_none() {
        return Err(Error::Malformed(format!(
            "root v{} in the bundle differs from the trusted root v{} of the same version",
            new.version, trusted.version
        )));
    }
    check_threshold(&doc, trusted)?;
    Ok(doc.signed)
}

/// Move trust from `trusted` to the next root, `bytes`: version exactly one
/// more, signed by a threshold of both the old and the new keys.
pub fn rotate_root(trusted: &Root, bytes: &[u8]) -> Result<Root> {
    let doc = parse_root(bytes)?;
    let new = &doc.signed;
    if new.vendor != trusted.vendor {
        return Err(Error::Malformed(format!("root is for vendor {:?}, not {:?}", new.vendor, trusted.vendor)));
    }
    if new.version != trusted.version + 1 {
        return Err(Error::RootVersion { trusted: trusted.version, offered: new.version });
    }
    check_threshold(&doc, trusted)?;
    check_threshold(&doc, new)?;
    Ok(doc.signed)
}

/// What a device checks a release against.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// The device's product.
    pub product: Option<&'a str>,
    /// The device's hardware revision.
    pub hardware: Option<&'a str>,
    /// The version installed now, if any.
    pub installed: Option<Version>,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Parse a release and check only that `root`'s threshold signed it (no
/// expiry, no policy): whether a rotated root still vouches for a release.
pub fn release_signed_by(root: &Root, bytes: &[u8]) -> Result<Release> {
    let doc: Signed<Release> = parse(bytes, "release metadata")?;
    check_threshold(&doc, root)?;
    Ok(doc.signed)
}

/// Parse and check a release against a trusted root and the device's policy.
pub fn verify_release(root: &Root, bytes: &[u8], policy: &Policy<'_>) -> Result<Release> {
    let r = release_signed_by(root, bytes)?;
    if policy.now >= root.expires {
        return Err(Error::Expired { what: format!("root v{}", root.version), expires: root.expires });
    }
    if policy.now >= r.expires {
        return Err(Error::Expired { what: format!("release {}", r.id()), expires: r.expires });
    }
    if r.vendor != root.vendor {
        return Err(Error::Malformed(format!("release is from vendor {:?}, root is {:?}", r.vendor, root.vendor)));
    }
    if let Some(p) = policy.product
        && p != r.product
    {
        return Err(Error::WrongProduct { device: p.to_string(), release: r.product.clone() });
    }
    if let Some(h) = policy.hardware
        && !r.hardware.iter().any(|x| x == h)
    {
        return Err(Error::WrongHardware { device: h.to_string(), release: r.hardware.join(", ") });
    }
    let offered = Version::parse(&r.version)?;
    if let Some(installed) = &policy.installed
        && offered < *installed
    {
        return Err(Error::Rollback { installed: installed.to_string(), offered: r.version.clone() });
    }
    if unhex(&r.blake3, "image hash")?.len() != 32 {
        return Err(Error::Malformed("image hash is not 32 bytes".to_string()));
    }
    Ok(r)
}

fn wrap_aad(product: &str, version: &str, manifest: &str) -> Vec<u8> {
    format!("ionshard:readkey:v1:{product}:{version}:{manifest}").into_bytes()
}

/// Seal a read key under a product key (for a confidential release).
pub fn wrap_read_key(product_key: &[u8; 32], read_key: &[u8; 32], release: &Release) -> KeyWrap {
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    let nonce: [u8; 12] = rand::random();
    let mut body = *read_key;
    let aad = wrap_aad(&release.product, &release.version, &release.manifest);
    let tag = Aes256Gcm::new(product_key.into())
        .encrypt_inout_detached(&nonce.into(), &aad, body.as_mut_slice().into())
        .unwrap_or_else(|_| unreachable!("32 bytes are far below the GCM limit"));
    let mut sealed = body.to_vec();
    sealed.extend_from_slice(tag.as_slice());
    KeyWrap::Product { nonce: hex(&nonce), sealed: hex(&sealed) }
}

/// The read key of a checked release.
pub fn read_key(release: &Release, product_key: Option<&[u8; 32]>) -> Result<[u8; 32]> {
    match &release.read_key {
        KeyWrap::Clear(k) => {
            unhex(k, "read key")?.try_into().map_err(|_| Error::Malformed("read key is not 32 bytes".to_string()))
        }
        KeyWrap::Product { nonce, sealed } => {
            use aes_gcm::Aes256Gcm;
            use aes_gcm::aead::{AeadInOut, KeyInit};
            let Some(pk) = product_key else {
                return Err(Error::NeedProductKey(release.product.clone()));
            };
            let nonce: [u8; 12] =
                unhex(nonce, "nonce")?.try_into().map_err(|_| Error::Malformed("nonce is not 12 bytes".into()))?;
            let sealed = unhex(sealed, "wrapped key")?;
            if sealed.len() != 48 {
                return Err(Error::Malformed("wrapped read key is not 48 bytes".to_string()));
            }
            let mut body = [0u8; 32];
            body.copy_from_slice(&sealed[..32]);
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&sealed[32..]);
            let aad = wrap_aad(&release.product, &release.version, &release.manifest);
            Aes256Gcm::new(pk.into())
                .decrypt_inout_detached(&nonce.into(), &aad, body.as_mut_slice().into(), &tag.into())
                .map_err(|_| Error::WrongProductKey(release.product.clone()))?;
            Ok(body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(keys: &[&VendorKey], threshold: u32, version: u64) -> Root {
        Root {
            vendor: "acme".into(),
            version,
            expires: 2_000_000_000,
            threshold,
            keys: keys.iter().map(|k| (k.id(), k.public_hex())).collect(),
            timestamp: None,
        }
    }

    fn release(version: &str) -> Release {
        Release {
            vendor: "acme".into(),
            product: "router".into(),
            hardware: vec!["r1".into(), "r2".into()],
            version: version.into(),
            length: 10,
            blake3: hex(blake3::hash(b"x").as_bytes()),
            manifest: "bafy".into(),
            read_key: KeyWrap::Clear(hex(&[7; 32])),
            issued: 1_000,
            expires: 1_900_000_000,
        }
    }

    fn policy(installed: Option<&str>) -> Policy<'static> {
        Policy {
            product: Some("router"),
            hardware: Some("r2"),
            installed: installed.map(|v| Version::parse(v).expect("version")),
            now: 1_800_000_000,
        }
    }

    #[test]
    fn versions_compare_by_number() {
        let v = |s| Version::parse(s).expect("parse");
        assert!(v("1.10") > v("1.9"));
        assert_eq!(v("2"), v("2.0.0"));
        assert!(v("2026.11.3") > v("2026.2"));
        for bad in ["", "1..2", "v1", "1.-2", "1.2a", "1.2.3.4.5.6.7.8.9"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn threshold_unknown_expiry_rollback_hardware() {
        let (a, b, c) = (VendorKey::generate(), VendorKey::generate(), VendorKey::generate());
        let r = root(&[&a, &b, &c], 2, 1);
        let json = |s: &Signed<Release>| to_json(s).into_bytes();
        // Two of three: accepted.
        let ok = sign_release(release("1.2"), &[&a, &c]);
        assert_eq!(verify_release(&r, &json(&ok), &policy(Some("1.1"))).expect("valid").version, "1.2");
        // The same key twice counts once.
        let twice = sign_release(release("1.2"), &[&a, &a]);
        assert!(matches!(verify_release(&r, &json(&twice), &policy(None)), Err(Error::BelowThreshold { have: 1, .. })));
        // A stranger's key.
        let stranger = VendorKey::generate();
        let s = sign_release(release("1.2"), &[&stranger]);
        assert!(matches!(verify_release(&r, &json(&s), &policy(None)), Err(Error::UnknownKey { .. })));
        // A changed document no longer verifies.
        let mut tampered = ok.clone();
        tampered.signed.length = 11;
        assert!(matches!(
            verify_release(&r, &json(&tampered), &policy(None)),
            Err(Error::BelowThreshold { have: 0, .. })
        ));
        // Rollback, same version allowed (reinstall), hardware, product, expiry.
        assert!(matches!(verify_release(&r, &json(&ok), &policy(Some("1.3"))), Err(Error::Rollback { .. })));
        assert!(verify_release(&r, &json(&ok), &policy(Some("1.2"))).is_ok());
        let mut p = policy(None);
        p.hardware = Some("r9");
        assert!(matches!(verify_release(&r, &json(&ok), &p), Err(Error::WrongHardware { .. })));
        let mut p = policy(None);
        p.product = Some("camera");
        assert!(matches!(verify_release(&r, &json(&ok), &p), Err(Error::WrongProduct { .. })));
        let mut p = policy(None);
        p.now = 1_950_000_000;
        assert!(matches!(verify_release(&r, &json(&ok), &p), Err(Error::Expired { .. })));
        // Over the size limit, refused before parsing.
        let big = vec![b' '; MAX_METADATA + 1];
        assert!(matches!(verify_release(&r, &big, &policy(None)), Err(Error::TooLarge { .. })));
        // Unknown fields are refused: what is signed is what is read.
        let extra = String::from_utf8(json(&ok)).expect("utf8").replacen("\"vendor\"", "\"x\": 1, \"vendor\"", 1);
        assert!(matches!(verify_release(&r, extra.as_bytes(), &policy(None)), Err(Error::Malformed(_))));
    }

    #[test]
    fn root_rotation_needs_both_thresholds() {
        let (a, b, c) = (VendorKey::generate(), VendorKey::generate(), VendorKey::generate());
        let r1 = root(&[&a, &b], 2, 1);
        let r1_doc = to_json(&sign_root(r1.clone(), &[&a, &b]));
        assert_eq!(load_root(r1_doc.as_bytes()).expect("self-signed"), r1);
        // Rotate b out, c in: needs a+b (old) and a+c (new).
        let r2 = root(&[&a, &c], 2, 2);
        let good = to_json(&sign_root(r2.clone(), &[&a, &b, &c]));
        assert_eq!(rotate_root(&r1, good.as_bytes()).expect("rotation"), r2);
        let new_only = to_json(&sign_root(r2.clone(), &[&a, &c]));
        assert!(matches!(rotate_root(&r1, new_only.as_bytes()), Err(Error::BelowThreshold { root_version: 1, .. })));
        let old_only = to_json(&sign_root(r2.clone(), &[&a, &b]));
        assert!(matches!(rotate_root(&r1, old_only.as_bytes()), Err(Error::BelowThreshold { root_version: 2, .. })));
        // Skipping or repeating a version is refused.
        let r3 = root(&[&a, &c], 2, 3);
        let skip = to_json(&sign_root(r3, &[&a, &b, &c]));
        assert!(matches!(rotate_root(&r1, skip.as_bytes()), Err(Error::RootVersion { .. })));
        // After rotation, b alone plus a no longer reaches the threshold of r2.
        let rel = to_json(&sign_release(release("2"), &[&a, &b]));
        assert!(matches!(verify_release(&r2, rel.as_bytes(), &policy(None)), Err(Error::BelowThreshold { .. })));
    }

    #[test]
    fn wrapped_read_key_opens_only_with_the_product_key() {
        let mut r = release("3");
        let pk = [9u8; 32];
        r.read_key = wrap_read_key(&pk, &[5; 32], &r);
        assert_eq!(read_key(&r, Some(&pk)).expect("opens"), [5; 32]);
        assert!(matches!(read_key(&r, Some(&[1; 32])), Err(Error::WrongProductKey(_))));
        assert!(matches!(read_key(&r, None), Err(Error::NeedProductKey(_))));
        // Bound to the release it was wrapped for.
        let mut other = r.clone();
        other.version = "4".into();
        assert!(read_key(&other, Some(&pk)).is_err());
    }
}
