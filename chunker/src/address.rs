//! Content addresses: CIDv1 with a BLAKE3 multihash.
//!
//! Shards use the `raw` codec (0x55), manifests the `cbor` codec (0x51), and
//! the digest is always BLAKE3-256 (multihash 0x1e). The text form is the
//! usual base32 multibase (`bafkr4…` for shards), valid wherever IPFS CIDs are.
//! Because a shard's digest is the BLAKE3 root of its bytes, any byte range of
//! a shard can be checked against its CID with a small proof (see [`crate::proof`]).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

const RAW: u64 = 0x55;
const CBOR: u64 = 0x51;
const BLAKE3: u64 = 0x1e;

/// A CIDv1 (raw or cbor codec, BLAKE3-256 digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    codec: u64,
    digest: [u8; 32],
}

impl Cid {
    /// The CID of a shard (raw bytes) with this BLAKE3 digest.
    pub fn raw(digest: [u8; 32]) -> Self {
        Cid { codec: RAW, digest }
    }

    /// The CID of a CBOR document (a manifest) with this BLAKE3 digest.
    pub fn cbor(digest: [u8; 32]) -> Self {
        Cid { codec: CBOR, digest }
    }

    /// Hash raw bytes into their CID.
    pub fn of_raw(bytes: &[u8]) -> Self {
        Self::raw(*blake3::hash(bytes).as_bytes())
    }

    /// Hash a CBOR document into its CID.
    pub fn of_cbor(bytes: &[u8]) -> Self {
        Self::cbor(*blake3::hash(bytes).as_bytes())
    }

    /// The BLAKE3 digest (for a shard, the root of its verified-streaming tree).
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// True for the raw codec (shards), false for cbor (manifests).
    pub fn is_raw(&self) -> bool {
        self.codec == RAW
    }

    /// The binary CID (36 bytes: version, codec, multihash).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_lib().to_bytes()
    }

    /// Parse a binary CID.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let lib =
            cid::Cid::try_from(bytes).map_err(|e| Error::Cid { text: hex_prefix(bytes), reason: e.to_string() })?;
        Self::from_lib(lib, || hex_prefix(bytes))
    }

    fn to_lib(self) -> cid::Cid {
        // A 32-byte digest always fits a 64-byte multihash.
        let mh = cid::multihash::Multihash::<64>::wrap(BLAKE3, &self.digest)
            .unwrap_or_else(|_| unreachable!("32-byte digest fits"));
        cid::Cid::new_v1(self.codec, mh)
    }

    fn from_lib(lib: cid::Cid, text: impl Fn() -> String) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Cid { text: text(), reason: reason.to_string() };
        if lib.version() != cid::Version::V1 {
            return Err(bad("only CIDv1 is used by ionshard"));
        }
        if lib.codec() != RAW && lib.codec() != CBOR {
            return Err(bad("codec must be raw (0x55) or cbor (0x51)"));
        }
        let mh = lib.hash();
        if mh.code() != BLAKE3 || mh.size() != 32 {
            return Err(bad("hash must be BLAKE3-256 (multihash 0x1e, 32 bytes)"));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(mh.digest());
        Ok(Cid { codec: lib.codec(), digest })
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(40).map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_lib(), f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let text = || s.chars().take(120).collect::<String>();
        let lib = cid::Cid::try_from(s).map_err(|e| Error::Cid { text: text(), reason: e.to_string() })?;
        Self::from_lib(lib, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_blake3_cids_print_as_bafkr4() {
        let c = Cid::of_raw(b"hello");
        let s = c.to_string();
        assert!(s.starts_with("bafkr4"), "{s}");
        assert_eq!(s.parse::<Cid>().expect("parse"), c);
        assert_eq!(Cid::from_bytes(&c.to_bytes()).expect("bytes"), c);
        assert_eq!(c.to_bytes().len(), 36);
    }

    #[test]
    fn foreign_cids_are_refused_with_a_reason() {
        // A sha2-256 CIDv0 as IPFS prints it.
        let err = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".parse::<Cid>().unwrap_err();
        assert!(err.to_string().contains("CIDv1"), "{err}");
        let err = "not a cid".parse::<Cid>().unwrap_err();
        assert!(err.to_string().contains("malformed CID"), "{err}");
    }
}
