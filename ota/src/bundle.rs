//! A release bundle: everything a device needs to fetch one release, in one
//! JSON file or HTTP answer.
//!
//! Only the signed release (and roots) are trusted, and only after checking;
//! the manifest is checked against the CID the release names; the placement
//! and bootstrap addresses are hints (a wrong hint costs time, never
//! correctness: every byte is verified against a CID).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest bundle read, in bytes (the manifest of an image of tens of GiB).
pub const MAX_BUNDLE: usize = 128 << 20;

/// Which peers hold which shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Peer ids.
    pub peers: Vec<String>,
    /// Shard CID → indices into `peers`.
    pub shards: BTreeMap<String, Vec<u32>>,
}

/// One release, ready for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version (1).
    pub format: u32,
    /// The signed release, exactly as signed (JSON text).
    pub release: String,
    /// Signed roots newer than version 1, oldest first (JSON texts), so a
    /// device with an older root can follow rotations.
    pub roots: Vec<String>,
    /// The manifest (CBOR), base64.
    pub manifest: String,
    /// Where the shards are.
    pub placement: Placement,
    /// Bootstrap addresses to join the network through.
    pub bootstrap: Vec<String>,
}

impl Bundle {
    /// Parse a bundle of at most [`MAX_BUNDLE`] bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Bundle> {
        if bytes.len() > MAX_BUNDLE {
            return Err(Error::TooLarge {
                what: "release bundle".to_string(),
                len: bytes.len() as u64,
                limit: MAX_BUNDLE as u64,
            });
        }
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| Error::Malformed(format!("release bundle: {e}")))?;
        if b.format != 1 {
            return Err(Error::Malformed(format!("release bundle format {} (this build reads 1)", b.format)));
        }
        Ok(b)
    }

    /// Read a bundle file of at most [`MAX_BUNDLE`] bytes, parsing as it
    /// reads (a device never holds the file and the bundle at once).
    pub fn from_file(path: &std::path::Path) -> Result<Bundle> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = f.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
        if len > MAX_BUNDLE as u64 {
            return Err(Error::TooLarge { what: path.display().to_string(), len, limit: MAX_BUNDLE as u64 });
        }
        use std::io::Read;
        let reader = std::io::BufReader::new(f.take(MAX_BUNDLE as u64));
        let b: Bundle = serde_json::from_reader(reader)
            .map_err(|e| Error::Malformed(format!("release bundle {}: {e}", path.display())))?;
        if b.format != 1 {
            return Err(Error::Malformed(format!("release bundle format {} (this build reads 1)", b.format)));
        }
        Ok(b)
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The manifest bytes.
    pub fn manifest_bytes(&self) -> Result<Vec<u8>> {
        data_encoding::BASE64
            .decode(self.manifest.as_bytes())
            .map_err(|e| Error::Malformed(format!("bundle manifest is not base64: {e}")))
    }

    /// Base64 of manifest bytes, for building a bundle.
    pub fn encode_manifest(bytes: &[u8]) -> String {
        data_encoding::BASE64.encode(bytes)
    }
}
