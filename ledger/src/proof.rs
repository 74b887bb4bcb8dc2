//! Self-contained proofs that something is on the chain, checkable by
//! anyone who holds only the producer set: an item (a storage receipt) in
//! an anchored batch, the anchoring transaction in a block, and that
//! block's commit certificate.
//!
//! Bytes:
//!
//! ```text
//! "ionshard ledger proof v1" | has_item: u8 | [item: bytes(4096) | path]
//! | tx: bytes(MAX_TX_BYTES) | index: u32 | path | header: bytes(512) | certificate: bytes(64 KiB)
//! path = list(64) of (sibling: 32 | left: u8)
//! ```

use crate::block::{Hash, Header};
use crate::cert::{self, Certificate};
use crate::codec::{Reader, Writer};
use crate::ctx::ValidatorSet;
use crate::error::{Error, Result};
use crate::merkle;
use crate::tx::{Body, MAX_TX_BYTES, Tx};

const DOMAIN: &[u8] = b"ionshard ledger proof v1";
/// Bytes of a proven item, at most.
pub const MAX_ITEM_BYTES: usize = 4096;
const MAX_PATH: usize = 64;

/// Why a proof is refused; each way of forging one has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The item itself is not what it claims (a receipt whose peer did not sign it).
    #[error("the item is forged: {0}")]
    ForgedItem(String),
    /// The item's path does not lead to the root the transaction anchored.
    #[error("the item is not in the anchored batch")]
    NotInBatch,
    /// The transaction does not verify, or is not an anchor where one is needed.
    #[error("the transaction does not hold: {0}")]
    BadTx(String),
    /// The transaction's path does not lead to the block's transaction root.
    #[error("the transaction is not in the block")]
    NotInBlock,
    /// The block is of another chain.
    #[error("the block belongs to chain {0}, not this one")]
    OtherChain(String),
    /// The certificate speaks of another block than the one the proof shows.
    #[error("the proof's block {shown} is not the block the certificate finalizes ({certified}): an unknown block")]
    UnknownBlock {
        /// The block the proof shows.
        shown: String,
        /// The block the certificate names.
        certified: String,
    },
    /// The certificate lacks more than 2/3 of the producers' voting power.
    #[error("the certificate carries {signed} of {total} voting power; more than 2/3 is needed")]
    WeakCertificate {
        /// Power whose precommits verified.
        signed: u64,
        /// The set's total.
        total: u64,
    },
}

/// What a proof proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The block's height.
    pub height: u64,
    /// Its time (milliseconds since the epoch).
    pub time_ms: u64,
    /// Its hash.
    pub block: Hash,
    /// The transaction.
    pub tx: Tx,
}

/// A proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The item and its path in the anchored batch (none: the proof is of the transaction itself).
    pub item: Option<(Vec<u8>, merkle::Path)>,
    /// The transaction.
    pub tx: Tx,
    /// Its index in the block.
    pub index: u32,
    /// Its path to the block's transaction root.
    pub tx_path: merkle::Path,
    /// The block's header.
    pub header: Header,
    /// The block's commit certificate.
    pub certificate: Certificate,
}

fn path(w: &mut Writer, p: &[([u8; 32], bool)]) {
    w.count(p.len());
    for (s, left) in p {
        w.raw(s).u8(u8::from(*left));
    }
}

fn read_path(r: &mut Reader<'_>) -> Result<Vec<([u8; 32], bool)>> {
    let n = r.count(MAX_PATH)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.array()?;
        let left = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.malformed("path side")),
        };
        out.push((s, left));
    }
    Ok(out)
}

impl Proof {
    /// The proof's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(DOMAIN);
        match &self.item {
            None => {
                w.u8(0);
            }
            Some((item, p)) => {
                w.u8(1).bytes(item);
                path(&mut w, p);
            }
        }
        w.bytes(&self.tx.encode()).u32(self.index);
        path(&mut w, &self.tx_path);
        w.bytes(&self.header.bytes()).bytes(&cert::encode(&self.certificate));
        w.finish()
    }

    /// Parse a proof from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Proof> {
        let mut r = Reader::new(bytes, "proof");
        if r.raw(DOMAIN.len())? != DOMAIN {
            return Err(r.malformed("not an ionshard ledger proof"));
        }
        let item = match r.u8()? {
            0 => None,
            1 => {
                let item = r.bytes(MAX_ITEM_BYTES)?.to_vec();
                Some((item, read_path(&mut r)?))
            }
            _ => return Err(r.malformed("item flag")),
        };
        let tx = Tx::decode(r.bytes(MAX_TX_BYTES)?)?;
        let index = r.u32()?;
        let tx_path = read_path(&mut r)?;
        let hb = r.bytes(512)?;
        let mut hr = Reader::new(hb, "block header");
        let header = Header::decode_from(&mut hr)?;
        hr.end()?;
        let certificate = cert::decode(r.bytes(64 << 10)?)?;
        r.end()?;
        Ok(Proof { item, tx, index, tx_path, header, certificate })
    }

    /// Check the proof on chain `chain` against the producer set `set`.
    pub fn verify(&self, chain: Hash, set: &ValidatorSet) -> Result<Proven, ProofError> {
        if let Some((item, p)) = &self.item {
            let Body::Anchor { root, .. } = &self.tx.body else {
                return Err(ProofError::BadTx("an item is proven only under an anchor".into()));
            };
            let leaf = *blake3::hash(item).as_bytes();
            if merkle::climb(&leaf, p) != *root {
                return Err(ProofError::NotInBatch);
            }
        }
        self.tx.check(chain).map_err(|e| ProofError::BadTx(e.to_string()))?;
        if merkle::climb(&self.tx.id().0, &self.tx_path) != self.header.tx_root.0 {
            return Err(ProofError::NotInBlock);
        }
        if self.header.chain != chain {
            return Err(ProofError::OtherChain(self.header.chain.to_hex()));
        }
        let shown = self.header.hash();
        if self.certificate.value_id != shown || self.certificate.height.0 != self.header.height {
            return Err(ProofError::UnknownBlock {
                shown: shown.to_hex(),
                certified: self.certificate.value_id.to_hex(),
            });
        }
        match cert::verify(chain, &self.certificate, set) {
            Ok(_) => {}
            Err(Error::WeakCertificate { signed, total, .. }) => {
                return Err(ProofError::WeakCertificate { signed, total });
            }
            Err(_) => return Err(ProofError::WeakCertificate { signed: 0, total: 0 }),
        }
        Ok(Proven { height: self.header.height, time_ms: self.header.time_ms, block: shown, tx: self.tx.clone() })
    }

    /// Check a proof of a storage receipt: the proof, and that the receipt
    /// is signed by the peer it names. Returns the receipt too.
    pub fn verify_receipt(&self, chain: Hash, set: &ValidatorSet) -> Result<(Proven, proto::Receipt), ProofError> {
        let Some((item, _)) = &self.item else {
            return Err(ProofError::ForgedItem("the proof holds no receipt".into()));
        };
        let receipt =
            proto::Receipt::from_bytes(item).map_err(|e| ProofError::ForgedItem(format!("not a receipt: {e}")))?;
        receipt.verify().map_err(|e| ProofError::ForgedItem(e.to_string()))?;
        let proven = self.verify(chain, set)?;
        if !matches!(proven.tx.body, Body::Anchor { kind: crate::AnchorKind::Receipts, .. }) {
            return Err(ProofError::BadTx("the batch is not one of receipts".into()));
        }
        Ok((proven, receipt))
    }
}

/// Build the proof that `block`'s transaction `index` (and, for an anchor,
/// `items[item]` of its batch) is final under `certificate`.
pub fn prove(
    block: &crate::Block,
    certificate: &Certificate,
    index: usize,
    batch: Option<(&[Vec<u8>], usize)>,
) -> Result<Proof> {
    let tx = block
        .txs
        .get(index)
        .ok_or_else(|| Error::Proof(format!("block {} has no transaction {index}", block.height)))?;
    let ids: Vec<[u8; 32]> = block.txs.iter().map(|t| t.id().0).collect();
    let item = match batch {
        None => None,
        Some((items, i)) => {
            let item = items.get(i).ok_or_else(|| Error::Proof(format!("the batch has no item {i}")))?;
            let leaves: Vec<[u8; 32]> = items.iter().map(|x| *blake3::hash(x).as_bytes()).collect();
            Some((item.clone(), merkle::path(&leaves, i)))
        }
    };
    Ok(Proof {
        item,
        tx: tx.clone(),
        index: index as u32,
        tx_path: merkle::path(&ids, index),
        header: Header::from(block),
        certificate: certificate.clone(),
    })
}

/// The Merkle root of a batch of items (each hashed as its leaf).
pub fn batch_root(items: &[Vec<u8>]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = items.iter().map(|x| *blake3::hash(x).as_bytes()).collect();
    merkle::root(&leaves)
}

/// The root a deletion attestation names for the peers' delete
/// acknowledgements of an object's shards (each as its bytes, in any
/// order): each must parse and verify, and name a different shard or
/// peer; the root is [`batch_root`] over their bytes sorted, so anyone
/// holding the same acknowledgements gets the same root. The root and how
/// many.
pub fn deletion_root(acks: &[Vec<u8>]) -> Result<([u8; 32], u64)> {
    let mut sorted = acks.to_vec();
    sorted.sort();
    let mut seen = std::collections::HashSet::new();
    for b in &sorted {
        let a = proto::DeleteAck::from_bytes(b).map_err(|e| Error::Proof(format!("a delete acknowledgement: {e}")))?;
        a.verify().map_err(|e| Error::Proof(e.to_string()))?;
        if !seen.insert((a.cid, a.peer)) {
            return Err(Error::Proof(format!("{} acknowledges deleting {} twice", a.peer, a.cid)));
        }
    }
    Ok((batch_root(&sorted), sorted.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(key: &libp2p_identity::Keypair, n: u8) -> Vec<u8> {
        proto::DeleteAck::sign(key, chunker::Cid::of_raw(&[n]), true, 1_900_000_000).expect("sign").to_bytes()
    }

    /// An SPN (or anyone) handing an owner acknowledgements to attest
    /// cannot slip in a forged one, count one twice, or make the root
    /// depend on the order it sent them in.
    #[test]
    fn forged_or_repeated_delete_acks_make_no_deletion_root() {
        let (a, b) = (libp2p_identity::Keypair::generate_ed25519(), libp2p_identity::Keypair::generate_ed25519());
        let acks = vec![ack(&a, 1), ack(&a, 2), ack(&b, 1)];
        let (root, n) = deletion_root(&acks).expect("root");
        assert_eq!(n, 3);
        let reversed: Vec<Vec<u8>> = acks.iter().rev().cloned().collect();
        assert_eq!(deletion_root(&reversed).expect("root").0, root, "the order does not matter");
        let mut forged = acks.clone();
        let last = forged[1].len() - 1;
        forged[1][last] ^= 1;
        assert!(deletion_root(&forged).is_err(), "a forged acknowledgement");
        let repeated = vec![acks[0].clone(), acks[0].clone()];
        assert!(deletion_root(&repeated).is_err(), "one acknowledgement counted twice");
        assert!(deletion_root(&[vec![1, 2, 3]]).is_err(), "bytes that are no acknowledgement");
        assert_ne!(deletion_root(&acks[..2]).expect("root").0, root, "one fewer, another root");
    }
}
