//! Storage receipts: a peer's signed statement that it stores a shard.
//!
//! Signed bytes (all integers big-endian):
//!
//! ```text
//! "ionshard receipt v1" | peer_id_len: u8 | peer_id | cid: 36 bytes | size: u64
//! | stored_at: u64 | expiry: u64 (u64::MAX = none)
//! ```
//!
//! The signature is the peer's ed25519 signature over those bytes; anyone
//! holding the receipt can check it with the public key inside the peer id.

use chunker::Cid;
use libp2p_identity::{Keypair, PeerId, PublicKey};

use crate::error::{Error, Result};

const DOMAIN: &[u8] = b"ionshard receipt v1";

/// A peer's signed statement that it stores a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The storing peer.
    pub peer: PeerId,
    /// The shard.
    pub cid: Cid,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (seconds since the epoch).
    pub stored_at: u64,
    /// Until when the peer promises to keep it.
    pub expiry: Option<u64>,
    /// The peer's signature over [`Receipt::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Receipt {
    /// The receipt's fields as laid out both on the wire and under the
    /// signature (which prefixes them with a domain string).
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        let peer = self.peer.to_bytes();
        let mut v = Vec::with_capacity(1 + peer.len() + 36 + 24);
        v.push(peer.len() as u8);
        v.extend_from_slice(&peer);
        v.extend_from_slice(&self.cid.to_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.stored_at.to_be_bytes());
        v.extend_from_slice(&self.expiry.unwrap_or(u64::MAX).to_be_bytes());
        v
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = DOMAIN.to_vec();
        v.extend_from_slice(&self.body_bytes());
        v
    }

    /// Make and sign a receipt with the storing peer's key.
    pub fn sign(key: &Keypair, cid: Cid, size: u64, stored_at: u64, expiry: Option<u64>) -> Result<Receipt> {
        let mut r = Receipt { peer: key.public().to_peer_id(), cid, size, stored_at, expiry, signature: Vec::new() };
        r.signature = key.sign(&r.signed_bytes()).map_err(Error::Signing)?;
        Ok(r)
    }

    /// Check the signature against the public key in the peer id.
    pub fn verify(&self) -> Result<()> {
        let key = public_key_of(&self.peer)?;
        if key.verify(&self.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(Error::BadSignature { peer: self.peer, cid: self.cid })
        }
    }
}

/// The public key an ed25519 peer id carries inline.
pub fn public_key_of(peer: &PeerId) -> Result<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return Err(Error::NoInlineKey { peer: *peer });
    }
    PublicKey::try_decode_protobuf(mh.digest()).map_err(|source| Error::BadKey { peer: *peer, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_sign_and_verify() {
        let key = Keypair::generate_ed25519();
        let cid = Cid::of_raw(b"shard");
        let r = Receipt::sign(&key, cid, 5, 1_800_000_000, None).expect("sign");
        r.verify().expect("verify");
        let mut forged = r.clone();
        forged.size = 6;
        assert!(forged.verify().is_err());
        let other = Keypair::generate_ed25519();
        let mut stolen = r.clone();
        stolen.peer = other.public().to_peer_id();
        assert!(stolen.verify().is_err());
    }
}
