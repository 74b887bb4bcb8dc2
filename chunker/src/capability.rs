//! Read capabilities: the manifest CID plus the read key, as one string.
//!
//! ```text
//! ionshard:r1:<manifest CID>:<multibase base32 of key(32) ‖ check(4)>
//! ```
//!
//! `check` is the first 4 bytes of BLAKE3 over a context, the CID and the
//! key, so a capability damaged in copying is reported as such instead of
//! failing later as a wrong key.

use std::fmt;
use std::str::FromStr;

use cid::multibase::{self, Base};

use crate::address::Cid;
use crate::error::Error;
use crate::keys::ReadKey;

const PREFIX: &str = "ionshard:r1:";

/// What it takes to read one object.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadCapability {
    /// The object's manifest.
    pub manifest: Cid,
    /// The key that opens it.
    pub key: ReadKey,
}

fn check(manifest: &Cid, key: &ReadKey) -> [u8; 4] {
    let mut h = blake3::Hasher::new_derive_key("ionshard 2026-11 capability check v1");
    h.update(&manifest.to_bytes());
    h.update(&key.0);
    let mut c = [0u8; 4];
    c.copy_from_slice(&h.finalize().as_bytes()[..4]);
    c
}

impl fmt::Display for ReadCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.key.0.to_vec();
        raw.extend_from_slice(&check(&self.manifest, &self.key));
        write!(f, "{PREFIX}{}:{}", self.manifest, multibase::encode(Base::Base32Lower, raw))
    }
}

impl fmt::Debug for ReadCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCapability({}, <key hidden>)", self.manifest)
    }
}

impl FromStr for ReadCapability {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Capability(why.to_string());
        let s = s.trim();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it must start with \"ionshard:r1:\" (copy the whole line `ionshard chunk` printed)"))?;
        let (cid, key) = rest.split_once(':').ok_or_else(|| bad("expected <manifest CID>:<key> after the prefix"))?;
        let manifest: Cid = cid.parse().map_err(|e| Error::Capability(format!("manifest part: {e}")))?;
        if manifest.is_raw() {
            return Err(bad("the CID names a shard, not a manifest"));
        }
        let (_, raw) = multibase::decode(key).map_err(|e| Error::Capability(format!("key part: {e}")))?;
        if raw.len() != 36 {
            return Err(Error::Capability(format!(
                "key part decodes to {} bytes, expected 36 (truncated or extended in copying?)",
                raw.len()
            )));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&raw[..32]);
        let key = ReadKey(k);
        if raw[32..] != check(&manifest, &key) {
            return Err(bad("checksum mismatch: the capability was altered or mistyped in copying"));
        }
        Ok(ReadCapability { manifest, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let cap = ReadCapability { manifest: Cid::of_cbor(b"m"), key: ReadKey([5; 32]) };
        let s = cap.to_string();
        assert!(s.starts_with("ionshard:r1:bafir4"), "{s}");
        assert_eq!(s.parse::<ReadCapability>().expect("parse"), cap);
        assert!(!format!("{cap:?}").contains(&s[s.len() - 10..]));
        let truncated = &s[..s.len() - 3];
        assert!(truncated.parse::<ReadCapability>().unwrap_err().to_string().contains("key part"));
        let mut typo = s.clone().into_bytes();
        let last = typo.len() - 5;
        typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(typo.parse::<ReadCapability>().unwrap_err().to_string().contains("checksum"));
        assert!("bafkqaaa".parse::<ReadCapability>().unwrap_err().to_string().contains("ionshard:r1:"));
        let shard = format!("ionshard:r1:{}:{}", Cid::of_raw(b"x"), &s[s.rfind(':').map_or(0, |i| i + 1)..]);
        assert!(shard.parse::<ReadCapability>().unwrap_err().to_string().contains("shard"));
    }
}
