//! Restarting a halted chain. With more than a third of the producers'
//! power gone for good, no block can be final, safely; the operators of
//! the producers that remain sign a recovery: from height `H` (the height
//! that could not be decided) the producers are this new list. It takes the
//! signatures of at least half of the set in force at `H` — never a single
//! override key — and names the last final block, so it cannot be applied
//! to another history. Every node applies the same file while stopped
//! (`ionshard ledger recover apply`), then restarts.
//!
//! An honest operator signs one recovery per halted height (the CLI
//! refuses to sign a second): two different recoveries would each need
//! half of the set, so they could both exist only if some signer signed
//! both.
//!
//! Bytes (signed: everything before `signatures`, behind
//! `"ionshard ledger recovery v1"`):
//!
//! ```text
//! chain: 32 | height: u64 | last: 32 | producers: list(1024) of bytes(64)
//! | signatures: list(256) of (signer: bytes(64) | signature: bytes(64))
//! ```

use libp2p_identity::{Keypair, PeerId};

use crate::block::Hash;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::state::{decode_peers, encode_peers};

const DOMAIN: &[u8] = b"ionshard ledger recovery v1";

/// A signed change of the producer set that restarts a halted chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The chain.
    pub chain: Hash,
    /// The first height the new producers decide.
    pub height: u64,
    /// The hash of the last final block (`height - 1`; the chain's hash for 1).
    pub last: Hash,
    /// The new producers.
    pub producers: Vec<PeerId>,
    /// Signatures of producers of the set in force at `height`.
    pub signatures: Vec<(PeerId, Vec<u8>)>,
}

impl Recovery {
    fn body(&self) -> Writer {
        let mut w = Writer::new();
        w.raw(&self.chain.0).u64(self.height).raw(&self.last.0).bytes(&encode_peers(&self.producers));
        w
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = DOMAIN.to_vec();
        v.extend_from_slice(&self.body().finish());
        v
    }

    /// Add `key`'s signature (a producer of the set at `height`).
    pub fn sign(&mut self, key: &Keypair) -> Result<()> {
        let me = key.public().to_peer_id();
        let sig = key.sign(&self.signed_bytes()).map_err(|e| Error::Signing(e.to_string()))?;
        self.signatures.retain(|(p, _)| *p != me);
        self.signatures.push((me, sig));
        Ok(())
    }

    /// Check it against `set`, the producers in force at its height: at
    /// least half of them signed, each once, and the new list is not empty.
    pub fn verify(&self, set: &[PeerId]) -> Result<()> {
        if self.producers.is_empty() || self.producers.len() > crate::genesis::MAX_PRODUCERS as usize {
            return Err(Error::Proof(format!("a recovery must name 1 to {} producers", crate::genesis::MAX_PRODUCERS)));
        }
        let mut seen = std::collections::HashSet::new();
        if !self.producers.iter().all(|p| seen.insert(*p) && crate::ctx::validator(*p, 1).is_some()) {
            return Err(Error::Proof("a recovery's producers must be distinct ed25519 peer ids".into()));
        }
        let bytes = self.signed_bytes();
        let mut signed = std::collections::HashSet::new();
        for (peer, sig) in &self.signatures {
            if !set.contains(peer) {
                continue;
            }
            let key = proto::public_key_of(peer).map_err(|e| Error::Proof(e.to_string()))?;
            if key.verify(&bytes, sig) {
                signed.insert(*peer);
            }
        }
        let need = set.len().div_ceil(2);
        if signed.len() < need {
            return Err(Error::Proof(format!(
                "the recovery carries {} valid signature(s) of the {} producers at height {}; at least {need} are needed",
                signed.len(),
                set.len(),
                self.height
            )));
        }
        Ok(())
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.count(self.signatures.len());
        for (p, s) in &self.signatures {
            w.bytes(&p.to_bytes()).bytes(s);
        }
        w.finish()
    }

    /// Parse one from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Recovery> {
        let mut r = Reader::new(bytes, "recovery");
        let chain = Hash(r.array()?);
        let height = r.u64()?;
        let last = Hash(r.array()?);
        let producers = decode_peers(r.bytes(1024 * 70)?)?;
        let n = r.count(256)?;
        let mut signatures = Vec::with_capacity(n);
        for _ in 0..n {
            let p = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("signer: {e}")))?;
            signatures.push((p, r.bytes(64)?.to_vec()));
        }
        r.end()?;
        Ok(Recovery { chain, height, last, producers, signatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_needs_half_of_the_set_and_binds_its_history() {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
        let set: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        let newcomer = Keypair::generate_ed25519().public().to_peer_id();
        let mut r = Recovery {
            chain: Hash([1; 32]),
            height: 9,
            last: Hash([2; 32]),
            producers: vec![set[0], set[1], newcomer],
            signatures: vec![],
        };
        r.sign(&keys[0]).expect("sign");
        assert!(r.verify(&set).is_err(), "one of four is not enough");
        r.sign(&keys[0]).expect("sign again");
        assert!(r.verify(&set).is_err(), "one signer counts once");
        let outsider = Keypair::generate_ed25519();
        r.sign(&outsider).expect("sign");
        assert!(r.verify(&set).is_err(), "a stranger's signature counts for nothing");
        r.sign(&keys[1]).expect("sign");
        let back = Recovery::decode(&r.encode()).expect("decode");
        assert_eq!(back, r);
        back.verify(&set).expect("two of four");
        let mut other = back.clone();
        other.last = Hash([3; 32]);
        assert!(other.verify(&set).is_err(), "the signatures bind the last final block");
    }
}
