//! What the index keeps about each shard, and its byte layout in redb.
//!
//! ```text
//! version: u8 = 1 | size: u64 | stored_at: u64 | expiry: u64 (u64::MAX = never)
//! | pinned: u8 | quarantined: u8 | owner_len: u8 | owner: [u8; owner_len]
//! ```
//! Integers little-endian. Times are seconds since the Unix epoch.

use crate::error::{Error, Result};

/// Largest owner id kept (a libp2p peer id is 38 bytes).
pub const MAX_OWNER: usize = 64;
const VERSION: u8 = 1;
const FIXED: usize = 1 + 8 + 8 + 8 + 1 + 1 + 1;

/// Index entry of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    /// Bytes.
    pub size: u64,
    /// Who stored it (the SPN's peer id bytes); only the owner may delete.
    pub owner: Vec<u8>,
    /// When it was stored.
    pub stored_at: u64,
    /// When it may be removed, unless pinned.
    pub expiry: Option<u64>,
    /// Never expires.
    pub pinned: bool,
    /// Found corrupt: kept aside, reported, never served.
    pub quarantined: bool,
}

impl ShardMeta {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED + self.owner.len());
        v.push(VERSION);
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&self.stored_at.to_le_bytes());
        v.extend_from_slice(&self.expiry.unwrap_or(u64::MAX).to_le_bytes());
        v.push(u8::from(self.pinned));
        v.push(u8::from(self.quarantined));
        v.push(self.owner.len() as u8);
        v.extend_from_slice(&self.owner);
        v
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = || Error::Index(format!("unreadable shard entry ({} bytes)", b.len()));
        if b.len() < FIXED || b[0] != VERSION {
            return Err(bad());
        }
        let u64_at = |i: usize| -> Result<u64> { Ok(u64::from_le_bytes(b[i..i + 8].try_into().map_err(|_| bad())?)) };
        let owner_len = usize::from(b[27]);
        if b.len() != FIXED + owner_len {
            return Err(bad());
        }
        let expiry = u64_at(17)?;
        Ok(ShardMeta {
            size: u64_at(1)?,
            stored_at: u64_at(9)?,
            expiry: (expiry != u64::MAX).then_some(expiry),
            pinned: b[25] != 0,
            quarantined: b[26] != 0,
            owner: b[FIXED..].to_vec(),
        })
    }

    /// True if it may be swept at `now`.
    pub fn expired(&self, now: u64) -> bool {
        !self.pinned && self.expiry.is_some_and(|e| e <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = ShardMeta {
            size: 123,
            owner: b"spn-1".to_vec(),
            stored_at: 1_800_000_000,
            expiry: Some(1_900_000_000),
            pinned: false,
            quarantined: true,
        };
        assert_eq!(ShardMeta::from_bytes(&m.to_bytes()).expect("decode"), m);
        let never = ShardMeta { expiry: None, pinned: true, ..m };
        assert_eq!(ShardMeta::from_bytes(&never.to_bytes()).expect("decode"), never);
        assert!(ShardMeta::from_bytes(&[1, 2, 3]).is_err());
    }
}
