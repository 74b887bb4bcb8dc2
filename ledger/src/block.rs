//! Blocks: a header that names its parent, its transactions' Merkle root
//! and its proposer, and the transactions themselves.
//!
//! Header bytes (what the block hash is the BLAKE3 of):
//!
//! ```text
//! "ionshard ledger block v1" | chain: 32 | height: u64 | parent: 32
//! | time_ms: u64 | proposer: bytes(64) | next_set: 32 | tx_root: 32 | tx_count: u32
//! ```
//!
//! `next_set` names the producers of the next height ([`crate::set_hash`]):
//! a light client holding this block's producers learns, from a certified
//! header, who certifies the next one.
//!
//! A block on the wire is its header fields followed by `list(MAX_TXS)` of
//! transactions (each `bytes(MAX_TX_BYTES)`); the decoder recomputes the
//! root, so a header cannot be paired with other transactions.

use libp2p_identity::PeerId;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::merkle;
use crate::tx::{MAX_TX_BYTES, Tx};

const DOMAIN: &[u8] = b"ionshard ledger block v1";

/// Transactions in one block, at most.
pub const MAX_TXS: usize = 4096;
/// Bytes of one encoded block, at most (what a decoder accepts from the network).
pub const MAX_BLOCK_BYTES: usize = 4 << 20;

/// A 32-byte BLAKE3 hash naming a block (or a chain: its genesis's hash).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash as lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// A block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    /// The chain: its genesis's hash.
    pub chain: Hash,
    /// Its height (the first block after genesis is 1).
    pub height: u64,
    /// The hash of the block before it (for height 1: the genesis hash).
    pub parent: Hash,
    /// When its proposer made it (milliseconds since the epoch).
    pub time_ms: u64,
    /// Who proposed it.
    pub proposer: PeerId,
    /// The hash of the next height's producer set.
    pub next_set: Hash,
    /// Its transactions, in order.
    pub txs: Vec<Tx>,
}

impl Block {
    /// The Merkle root of its transactions' ids.
    pub fn tx_root(&self) -> Hash {
        let ids: Vec<[u8; 32]> = self.txs.iter().map(|t| t.id().0).collect();
        Hash(merkle::root(&ids))
    }

    /// The header's bytes.
    pub fn header_bytes(&self) -> Vec<u8> {
        header_bytes(&Header::from(self))
    }

    /// Its hash: what votes name.
    pub fn hash(&self) -> Hash {
        Hash(*blake3::hash(&self.header_bytes()).as_bytes())
    }

    /// The block's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        Lead::from(&Header::from(self)).write(&mut w);
        w.count(self.txs.len());
        for t in &self.txs {
            w.bytes(&t.encode());
        }
        w.finish()
    }

    /// Parse a block from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Block> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(Error::Malformed {
                what: "block",
                why: format!("{} bytes, at most {MAX_BLOCK_BYTES}", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes, "block");
        let Lead { chain, height, parent, time_ms, proposer, next_set } = Lead::read(&mut r)?;
        let n = r.count(MAX_TXS)?;
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            txs.push(Tx::decode(r.bytes(MAX_TX_BYTES)?)?);
        }
        r.end()?;
        Ok(Block { chain, height, parent, time_ms, proposer, next_set, txs })
    }
}

/// A block's header alone: what a light proof carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The chain.
    pub chain: Hash,
    /// Its height.
    pub height: u64,
    /// Its parent.
    pub parent: Hash,
    /// Its time.
    pub time_ms: u64,
    /// Its proposer.
    pub proposer: PeerId,
    /// The hash of the next height's producer set.
    pub next_set: Hash,
    /// The Merkle root of its transactions' ids.
    pub tx_root: Hash,
    /// How many transactions it has.
    pub tx_count: usize,
}

impl Header {
    /// Its hash, the same as the whole block's.
    pub fn hash(&self) -> Hash {
        Hash(*blake3::hash(&self.bytes()).as_bytes())
    }
    /// The header's bytes (see the module docs).
    pub fn bytes(&self) -> Vec<u8> {
        header_bytes(self)
    }
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Header> {
        let domain = r.raw(DOMAIN.len())?;
        if domain != DOMAIN {
            return Err(r.malformed("not a block header"));
        }
        let Lead { chain, height, parent, time_ms, proposer, next_set } = Lead::read(r)?;
        let tx_root = Hash(r.array()?);
        let tx_count = r.u32()? as usize;
        Ok(Header { chain, height, parent, time_ms, proposer, next_set, tx_root, tx_count })
    }
}

impl From<&Block> for Header {
    fn from(b: &Block) -> Header {
        Header {
            chain: b.chain,
            height: b.height,
            parent: b.parent,
            time_ms: b.time_ms,
            proposer: b.proposer,
            next_set: b.next_set,
            tx_root: b.tx_root(),
            tx_count: b.txs.len(),
        }
    }
}

/// The fields a block and its header both begin with, in their order.
struct Lead {
    chain: Hash,
    height: u64,
    parent: Hash,
    time_ms: u64,
    proposer: PeerId,
    next_set: Hash,
}

impl Lead {
    fn write(&self, w: &mut Writer) {
        w.raw(&self.chain.0).u64(self.height).raw(&self.parent.0).u64(self.time_ms).bytes(&self.proposer.to_bytes());
        w.raw(&self.next_set.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Lead> {
        let chain = Hash(r.array()?);
        let height = r.u64()?;
        let parent = Hash(r.array()?);
        let time_ms = r.u64()?;
        let proposer = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("proposer: {e}")))?;
        Ok(Lead { chain, height, parent, time_ms, proposer, next_set: Hash(r.array()?) })
    }
}

impl From<&Header> for Lead {
    fn from(h: &Header) -> Lead {
        Lead {
            chain: h.chain,
            height: h.height,
            parent: h.parent,
            time_ms: h.time_ms,
            proposer: h.proposer,
            next_set: h.next_set,
        }
    }
}

fn header_bytes(h: &Header) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(DOMAIN);
    Lead::from(h).write(&mut w);
    w.raw(&h.tx_root.0).count(h.tx_count);
    w.finish()
}
