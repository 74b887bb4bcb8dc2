//! Delete acknowledgements: a peer's signed statement that a shard is gone
//! from its store (new in this release).
//!
//! Signed bytes (all integers big-endian):
//!
//! ```text
//! "ionshard delete ack v1" | peer_id_len: u8 | peer_id | cid: 36 bytes
//! | existed: u8 (1: it was stored and is deleted, 0: it was not stored) | at: u64
//! ```
//!
//! On the wire (and kept by the SPN) the same fields follow each other
//! without the domain string, then `sig_len: u16 | sig`. An owner's
//! deletion attestation on the ledger names the Merkle root of the acks of
//! its object's shards (see `ledger::deletion_root`).

use chunker::Cid;
use libp2p_identity::{Keypair, PeerId};

use crate::error::{Error, Result};
use crate::receipt::public_key_of;
use crate::wire::Malformed;

const DOMAIN: &[u8] = b"ionshard delete ack v1";

/// A peer's signed statement that a shard is no longer stored there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteAck {
    /// The peer that deleted it.
    pub peer: PeerId,
    /// The shard.
    pub cid: Cid,
    /// It was stored until this delete (false: it was not stored here).
    pub existed: bool,
    /// When (seconds since the epoch, the peer's clock).
    pub at: u64,
    /// The peer's signature over [`DeleteAck::signed_bytes`].
    pub signature: Vec<u8>,
}

impl DeleteAck {
    fn body_bytes(&self) -> Vec<u8> {
        let peer = self.peer.to_bytes();
        let mut v = Vec::with_capacity(1 + peer.len() + 36 + 9);
        v.push(peer.len() as u8);
        v.extend_from_slice(&peer);
        v.extend_from_slice(&self.cid.to_bytes());
        v.push(u8::from(self.existed));
        v.extend_from_slice(&self.at.to_be_bytes());
        v
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        [DOMAIN, &self.body_bytes()].concat()
    }

    /// Make and sign an acknowledgement with the deleting peer's key.
    pub fn sign(key: &Keypair, cid: Cid, existed: bool, at: u64) -> Result<DeleteAck> {
        let mut a = DeleteAck { peer: key.public().to_peer_id(), cid, existed, at, signature: Vec::new() };
        a.signature = key.sign(&a.signed_bytes()).map_err(Error::Signing)?;
        Ok(a)
    }

    /// Check the signature against the public key in the peer id.
    pub fn verify(&self) -> Result<()> {
        let key = public_key_of(&self.peer)?;
        if key.verify(&self.signed_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(Error::BadAckSignature { peer: self.peer, cid: self.cid })
        }
    }

    /// The acknowledgement as bytes (the wire layout), to keep and to anchor.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.body_bytes();
        v.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.signature);
        v
    }

    /// Parse acknowledgement bytes (the signature is not checked here: call
    /// `verify`). At most 64 KiB + 300 bytes are read: the lengths are one
    /// and two bytes.
    pub fn from_bytes(b: &[u8]) -> std::result::Result<DeleteAck, Malformed> {
        let short = || Malformed("a truncated delete acknowledgement".to_string());
        let (&n, rest) = b.split_first().ok_or_else(short)?;
        let (peer, rest) = rest.split_at_checked(usize::from(n)).ok_or_else(short)?;
        let peer = PeerId::from_bytes(peer).map_err(|e| Malformed(format!("peer id: {e}")))?;
        let (cid, rest) = rest.split_at_checked(36).ok_or_else(short)?;
        let cid = Cid::from_bytes(cid).map_err(|e| Malformed(e.to_string()))?;
        let (&flag, rest) = rest.split_first().ok_or_else(short)?;
        let existed = match flag {
            0 => false,
            1 => true,
            x => return Err(Malformed(format!("existed flag byte {x} (0 or 1)"))),
        };
        let (at, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(short)?;
        let (signature, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len))).ok_or_else(short)?;
        if !rest.is_empty() {
            return Err(Malformed(format!("{} trailing bytes after a delete acknowledgement", rest.len())));
        }
        Ok(DeleteAck { peer, cid, existed, at: u64::from_be_bytes(*at), signature: signature.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_sign_and_verify_and_refuse_truncation() {
        let key = Keypair::generate_ed25519();
        let cid = Cid::of_raw(b"shard");
        let a = DeleteAck::sign(&key, cid, true, 1_800_000_000).expect("sign");
        a.verify().expect("verify");
        let b = a.to_bytes();
        assert_eq!(DeleteAck::from_bytes(&b).expect("parse"), a);
        for cut in 0..b.len() {
            assert!(DeleteAck::from_bytes(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(DeleteAck::from_bytes(&[b.clone(), vec![0]].concat()).is_err(), "trailing byte");
        let mut flipped = a.clone();
        flipped.existed = false;
        assert!(flipped.verify().is_err(), "an altered flag");
        let mut stolen = a.clone();
        stolen.peer = Keypair::generate_ed25519().public().to_peer_id();
        assert!(stolen.verify().is_err(), "another peer's name");
    }

    /// An ack is not a receipt: the domains differ, so a receipt's
    /// signature can never pass for an ack's or the other way round.
    #[test]
    fn a_receipt_signature_never_verifies_as_a_delete_ack() {
        let key = Keypair::generate_ed25519();
        let cid = Cid::of_raw(b"shard");
        let r = crate::Receipt::sign(&key, cid, 1, 5, None).expect("sign");
        let a = DeleteAck { peer: r.peer, cid, existed: true, at: 5, signature: r.signature };
        assert!(a.verify().is_err());
    }
}
