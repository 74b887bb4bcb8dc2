//! Transactions: each signed by the party it speaks for, and bound to one
//! chain and a short window of heights by TaPoS (it names a recent
//! finalized block and expires a bounded number of heights later).
//!
//! Bytes (the signature covers `"ionshard ledger tx v1" | chain: 32 |`
//! followed by everything before `signature`):
//!
//! ```text
//! signer: bytes(64) | ref_height: u64 | ref_hash: 8 | expiry: u64 | kind: u8 | body
//! | signature: bytes(128)
//! kind 1 anchor:  what: u8 (1 receipts, 2 deletions, 3 audits) | root: 32 | count: u64 | bytes: u64
//! kind 2 release: product: bytes(128) | version: bytes(128) | manifest: bytes(128) | image_hash: 32
//! kind 3 vote:    list(MAX_VOTES) of candidate: bytes(64)   (approval voting, weighted by the signer's stake)
//! kind 4 candidate: addr: bytes(256)                        (the signer stands for producer, reachable there)
//! kind 5 evidence: first: bytes(512) | second: bytes(512)   (two conflicting signed votes, as gossiped)
//! kind 6 admit:   manufacturer: bytes(64) | name: bytes(128) | admit: u8   (an admin's approval; applied at the threshold)
//! kind 7 register: device: bytes(64) | product: bytes(128) | hardware: bytes(128)   (by an admitted manufacturer, once per device)
//! kind 8 lifecycle: device: bytes(64) | change: u8 (1 transfer | 2 retire) | [owner: bytes(64), transfer only]
//! kind 9 authorize: object: bytes(128) | receiver: bytes(64) | grant: u8   (the owner's, revocable)
//! kind 10 deletion: object: bytes(128) | acks_root: 32 | acks: u64   (the owner's attestation; the peers' acks as a batch root)
//! kind 11 points: root: 32 | list(24) of (peer: bytes(64) | byte_hours: u64 | audits: u32)   (by whoever anchored `root`)
//! kind 12 checkpoint: height: u64 | state: 32 | size: u64   (a producer's: the state's digest after block `height`; see the `snapshot` module)
//! ```
//!
//! Kinds 6 to 12 came before the ledger's first release: the format is
//! still version 1.
//!
//! A transaction's id is the BLAKE3 of all its bytes, signature included;
//! one id is accepted once per chain.

use libp2p_identity::{Keypair, PeerId};

use crate::block::Hash;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result, TxError};

const DOMAIN: &[u8] = b"ionshard ledger tx v1";

/// Bytes of one encoded transaction, at most.
pub const MAX_TX_BYTES: usize = 2048;
/// Heights a transaction may stay valid after the block it names, at most.
pub const MAX_LIFETIME: u64 = 1200;
/// Bytes of a release record's text fields, each at most.
const MAX_TEXT: usize = 128;
/// Candidates one vote approves, at most.
pub(crate) const MAX_VOTES: usize = 30;
/// Bytes of a candidate's address, at most.
const MAX_ADDR: usize = 256;
/// Bytes of one signed vote inside evidence, at most.
const MAX_EVIDENCE_VOTE: usize = 512;
/// Peers one points transaction credits, at most.
pub const MAX_POINTS: usize = 24;

/// A device's change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// It has a new owner.
    Transfer(PeerId),
    /// It is out of service for good (no change after this).
    Retire,
}

/// What one peer earned from one anchored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credit {
    /// The peer.
    pub peer: PeerId,
    /// Bytes it stored times hours it held them, by the batch's receipts.
    pub byte_hours: u64,
    /// Audits it passed, by the batch.
    pub audits: u32,
}

/// What a batch anchored on the chain holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnchorKind {
    /// Peer-signed storage receipts.
    Receipts,
    /// Peers' signed delete acknowledgements.
    Deletions,
    /// Audit results.
    Audits,
}

impl AnchorKind {
    fn tag(self) -> u8 {
        match self {
            AnchorKind::Receipts => 1,
            AnchorKind::Deletions => 2,
            AnchorKind::Audits => 3,
        }
    }
    fn from_tag(t: u8) -> Option<Self> {
        Some(match t {
            1 => AnchorKind::Receipts,
            2 => AnchorKind::Deletions,
            3 => AnchorKind::Audits,
            _ => return None,
        })
    }
    /// Its name, as the CLI and JSON print it.
    pub fn name(self) -> &'static str {
        match self {
            AnchorKind::Receipts => "receipts",
            AnchorKind::Deletions => "deletions",
            AnchorKind::Audits => "audits",
        }
    }
}

/// What a transaction says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Body {
    /// The Merkle root of a batch the signer keeps and serves proofs from.
    Anchor {
        /// What the batch holds.
        kind: AnchorKind,
        /// Its Merkle root (see [`crate::merkle`]).
        root: [u8; 32],
        /// How many items it has.
        count: u64,
        /// Bytes the items speak for (stored shard bytes for receipts).
        bytes: u64,
    },
    /// A vendor's record of a published release.
    Release {
        /// The product.
        product: String,
        /// The version.
        version: String,
        /// The release manifest's CID.
        manifest: String,
        /// BLAKE3 of the image.
        image_hash: [u8; 32],
    },
    /// The signer's stake approves these candidates for producer (replaces
    /// its earlier vote; an empty list withdraws it).
    Vote {
        /// The candidates, at most 30.
        candidates: Vec<PeerId>,
    },
    /// The signer stands for producer, reachable at `addr`.
    Candidate {
        /// A multiaddr ending in `/p2p/<signer>`.
        addr: String,
    },
    /// Two conflicting votes one producer signed for the same height, round
    /// and step: anyone may submit it; the producer is jailed (out of the
    /// next election) and part of its stake burned.
    Evidence {
        /// The first vote, as gossiped (see [`crate::Message`]).
        first: Vec<u8>,
        /// The second.
        second: Vec<u8>,
    },
    /// A registry admin approves admitting (or removing) a manufacturer;
    /// it takes effect once the genesis's threshold of admins agree.
    Admit {
        /// The manufacturer's key.
        manufacturer: PeerId,
        /// Its name, for people.
        name: String,
        /// Admit (true) or remove (false).
        admit: bool,
    },
    /// An admitted manufacturer registers a device (once, for ever).
    Register {
        /// The device's peer id.
        device: PeerId,
        /// Its product.
        product: String,
        /// Its hardware revision.
        hardware: String,
    },
    /// A device's manufacturer or its owner changes its state.
    Lifecycle {
        /// The device.
        device: PeerId,
        /// The change.
        change: Change,
    },
    /// An object's owner (the signer) lets `receiver` have it, or no longer.
    Authorize {
        /// The object's CID.
        object: String,
        /// Who may receive it.
        receiver: PeerId,
        /// Grant (true) or revoke (false).
        grant: bool,
    },
    /// An object's owner (the signer) attests that its keys were destroyed
    /// and its shards deleted; the peers' signed delete acknowledgements
    /// are a batch with this root (proofs from the owner).
    Deletion {
        /// The object's CID.
        object: String,
        /// The Merkle root of the acknowledgements.
        acks_root: [u8; 32],
        /// How many there are.
        acks: u64,
    },
    /// Contribution points from a batch the signer anchored: per peer, the
    /// stored byte-hours and audit passes its items attest.
    Points {
        /// The anchored batch's root.
        root: [u8; 32],
        /// The credits, each peer once, at most [`MAX_POINTS`].
        credits: Vec<Credit>,
    },
    /// A producer's statement of the chain's state digest after block
    /// `height` (a snapshot height); every producer checks it against its
    /// own before it votes, so a certified block holding it vouches for a
    /// snapshot a new node can start from.
    Checkpoint {
        /// The snapshot's height.
        height: u64,
        /// BLAKE3 of the snapshot's bytes (see the `snapshot` module).
        state: [u8; 32],
        /// How many bytes it has.
        size: u64,
    },
}

impl Body {
    /// What it says, as JSON for people and scripts (`{"kind": {...}}`).
    pub fn summary(&self) -> serde_json::Value {
        use serde_json::json;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        match self {
            Body::Anchor { kind, root, count, bytes } => {
                json!({ "anchor": { "kind": kind.name(), "root": hex(root), "count": count, "bytes": bytes } })
            }
            Body::Release { product, version, manifest, image_hash } => json!({ "release": {
                "product": product, "version": version, "manifest": manifest, "image_hash": hex(image_hash) } }),
            Body::Vote { candidates } => {
                json!({ "vote": candidates.iter().map(ToString::to_string).collect::<Vec<_>>() })
            }
            Body::Candidate { addr } => json!({ "candidate": addr }),
            Body::Evidence { .. } => json!({ "evidence": "two conflicting votes of one producer" }),
            Body::Admit { manufacturer, name, admit } => json!({ "admit": {
                "manufacturer": manufacturer.to_string(), "name": name, "admit": admit } }),
            Body::Register { device, product, hardware } => json!({ "register": {
                "device": device.to_string(), "product": product, "hardware": hardware } }),
            Body::Lifecycle { device, change } => {
                json!({ "lifecycle": { "device": device.to_string(), "change": match change {
                Change::Transfer(to) => format!("transfer to {to}"),
                Change::Retire => "retire".to_string(),
            } } })
            }
            Body::Authorize { object, receiver, grant } => json!({ "authorize": {
                "object": object, "receiver": receiver.to_string(), "grant": grant } }),
            Body::Deletion { object, acks_root, acks } => json!({ "deletion": {
                "object": object, "acks_root": hex(acks_root), "acks": acks } }),
            Body::Points { root, credits } => {
                json!({ "points": { "root": hex(root), "credits": credits.iter().map(|c| json!({
                "peer": c.peer.to_string(), "byte_hours": c.byte_hours, "audits": c.audits })).collect::<Vec<_>>() } })
            }
            Body::Checkpoint { height, state, size } => {
                json!({ "checkpoint": { "height": height, "state": hex(state), "size": size } })
            }
        }
    }
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tx {
    /// Who speaks (an ed25519 peer id: its key is inline).
    pub signer: PeerId,
    /// TaPoS: the height of a finalized block it was made against.
    pub ref_height: u64,
    /// TaPoS: the first 8 bytes of that block's hash.
    pub ref_hash: [u8; 8],
    /// The last height at which it may be included.
    pub expiry: u64,
    /// What it says.
    pub body: Body,
    /// The signer's signature.
    pub signature: Vec<u8>,
}

/// A transaction's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub [u8; 32]);

impl Tx {
    /// Make and sign a transaction against block `(ref_height, ref_hash)`
    /// of chain `chain`, valid for `lifetime` heights after it.
    pub fn sign(key: &Keypair, chain: Hash, reference: (u64, Hash), lifetime: u64, body: Body) -> Result<Tx> {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&reference.1.0[..8]);
        let mut tx = Tx {
            signer: key.public().to_peer_id(),
            ref_height: reference.0,
            ref_hash: prefix,
            expiry: reference.0.saturating_add(lifetime),
            body,
            signature: Vec::new(),
        };
        tx.signature = key.sign(&tx.signed_bytes(chain)).map_err(|e| Error::Signing(e.to_string()))?;
        Ok(tx)
    }

    fn unsigned(&self) -> Writer {
        let mut w = Writer::new();
        w.bytes(&self.signer.to_bytes()).u64(self.ref_height).raw(&self.ref_hash).u64(self.expiry);
        match &self.body {
            Body::Anchor { kind, root, count, bytes } => {
                w.u8(1).u8(kind.tag()).raw(root).u64(*count).u64(*bytes);
            }
            Body::Release { product, version, manifest, image_hash } => {
                w.u8(2).bytes(product.as_bytes()).bytes(version.as_bytes()).bytes(manifest.as_bytes()).raw(image_hash);
            }
            Body::Vote { candidates } => {
                w.u8(3).count(candidates.len());
                for c in candidates {
                    w.bytes(&c.to_bytes());
                }
            }
            Body::Candidate { addr } => {
                w.u8(4).bytes(addr.as_bytes());
            }
            Body::Evidence { first, second } => {
                w.u8(5).bytes(first).bytes(second);
            }
            Body::Admit { manufacturer, name, admit } => {
                w.u8(6).bytes(&manufacturer.to_bytes()).bytes(name.as_bytes()).u8(u8::from(*admit));
            }
            Body::Register { device, product, hardware } => {
                w.u8(7).bytes(&device.to_bytes()).bytes(product.as_bytes()).bytes(hardware.as_bytes());
            }
            Body::Lifecycle { device, change } => {
                w.u8(8).bytes(&device.to_bytes());
                match change {
                    Change::Transfer(owner) => w.u8(1).bytes(&owner.to_bytes()),
                    Change::Retire => w.u8(2),
                };
            }
            Body::Authorize { object, receiver, grant } => {
                w.u8(9).bytes(object.as_bytes()).bytes(&receiver.to_bytes()).u8(u8::from(*grant));
            }
            Body::Deletion { object, acks_root, acks } => {
                w.u8(10).bytes(object.as_bytes()).raw(acks_root).u64(*acks);
            }
            Body::Points { root, credits } => {
                w.u8(11).raw(root).count(credits.len());
                for c in credits {
                    w.bytes(&c.peer.to_bytes()).u64(c.byte_hours).u32(c.audits);
                }
            }
            Body::Checkpoint { height, state, size } => {
                w.u8(12).u64(*height).raw(state).u64(*size);
            }
        }
        w
    }

    /// The bytes the signature covers on chain `chain`.
    pub fn signed_bytes(&self, chain: Hash) -> Vec<u8> {
        let mut v = DOMAIN.to_vec();
        v.extend_from_slice(&chain.0);
        v.extend_from_slice(&self.unsigned().finish());
        v
    }

    /// The transaction's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.unsigned();
        w.bytes(&self.signature);
        w.finish()
    }

    /// Its id.
    pub fn id(&self) -> TxId {
        TxId(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Parse a transaction from untrusted bytes (its signature is checked
    /// by [`Tx::check`], which needs the chain).
    pub fn decode(bytes: &[u8]) -> Result<Tx> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(Error::Malformed {
                what: "transaction",
                why: format!("{} bytes, at most {MAX_TX_BYTES}", bytes.len()),
            });
        }
        let mut r = Reader::new(bytes, "transaction");
        let signer = PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("signer: {e}")))?;
        let ref_height = r.u64()?;
        let ref_hash = r.array()?;
        let expiry = r.u64()?;
        let peer = |r: &mut Reader<'_>, what: &str| -> Result<PeerId> {
            PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("{what}: {e}")))
        };
        let text = |r: &mut Reader<'_>| -> Result<String> {
            let b = r.bytes(MAX_TEXT)?;
            String::from_utf8(b.to_vec()).map_err(|_| r.malformed("text that is not UTF-8"))
        };
        let flag = |r: &mut Reader<'_>| -> Result<bool> {
            match r.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                f => Err(r.malformed(format!("flag {f}: 0 or 1"))),
            }
        };
        let body = match r.u8()? {
            1 => {
                let kind = AnchorKind::from_tag(r.u8()?).ok_or_else(|| r.malformed("unknown anchor kind"))?;
                Body::Anchor { kind, root: r.array()?, count: r.u64()?, bytes: r.u64()? }
            }
            2 => {
                let product = text(&mut r)?;
                let version = text(&mut r)?;
                let manifest = text(&mut r)?;
                Body::Release { product, version, manifest, image_hash: r.array()? }
            }
            3 => {
                let n = r.count(MAX_VOTES)?;
                let mut candidates = Vec::with_capacity(n);
                for _ in 0..n {
                    candidates
                        .push(PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("candidate: {e}")))?);
                }
                Body::Vote { candidates }
            }
            4 => {
                let a = r.bytes(MAX_ADDR)?;
                Body::Candidate { addr: String::from_utf8(a.to_vec()).map_err(|_| r.malformed("address not UTF-8"))? }
            }
            5 => {
                let first = r.bytes(MAX_EVIDENCE_VOTE)?.to_vec();
                Body::Evidence { first, second: r.bytes(MAX_EVIDENCE_VOTE)?.to_vec() }
            }
            6 => Body::Admit { manufacturer: peer(&mut r, "manufacturer")?, name: text(&mut r)?, admit: flag(&mut r)? },
            7 => Body::Register { device: peer(&mut r, "device")?, product: text(&mut r)?, hardware: text(&mut r)? },
            8 => {
                let device = peer(&mut r, "device")?;
                let change = match r.u8()? {
                    1 => Change::Transfer(peer(&mut r, "owner")?),
                    2 => Change::Retire,
                    c => return Err(r.malformed(format!("unknown device change {c}"))),
                };
                Body::Lifecycle { device, change }
            }
            9 => Body::Authorize { object: text(&mut r)?, receiver: peer(&mut r, "receiver")?, grant: flag(&mut r)? },
            10 => Body::Deletion { object: text(&mut r)?, acks_root: r.array()?, acks: r.u64()? },
            11 => {
                let root = r.array()?;
                let n = r.count(MAX_POINTS)?;
                let mut credits = Vec::with_capacity(n);
                for _ in 0..n {
                    credits.push(Credit {
                        peer: peer(&mut r, "credited peer")?,
                        byte_hours: r.u64()?,
                        audits: r.u32()?,
                    });
                }
                Body::Points { root, credits }
            }
            12 => Body::Checkpoint { height: r.u64()?, state: r.array()?, size: r.u64()? },
            k => return Err(r.malformed(format!("unknown transaction kind {k}"))),
        };
        let signature = r.bytes(128)?.to_vec();
        r.end()?;
        Ok(Tx { signer, ref_height, ref_hash, expiry, body, signature })
    }

    /// Check what can be checked without the chain's state: the signature
    /// on chain `chain`, the lifetime, and the body's own rules.
    pub fn check(&self, chain: Hash) -> Result<(), TxError> {
        let lifetime = self.expiry.saturating_sub(self.ref_height);
        if self.expiry < self.ref_height || lifetime > MAX_LIFETIME {
            return Err(TxError::TooLong { lifetime, max: MAX_LIFETIME });
        }
        if let Body::Release { product, version, manifest, .. } = &self.body {
            if product.is_empty() || version.is_empty() || manifest.is_empty() {
                return Err(TxError::Invalid("a release record needs a product, a version and a manifest CID".into()));
            }
            let bad = |s: &str| s.chars().any(char::is_control) || s.len() > MAX_TEXT;
            if bad(product) || bad(version) || bad(manifest) {
                return Err(TxError::Invalid("a release record's text holds control characters or is too long".into()));
            }
        }
        let text_ok = |what: &str, s: &str| {
            if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) {
                Err(TxError::Invalid(format!("{what} must be 1 to {MAX_TEXT} bytes without control characters")))
            } else {
                Ok(())
            }
        };
        match &self.body {
            Body::Admit { name, .. } => text_ok("a manufacturer's name", name)?,
            Body::Register { product, hardware, .. } => {
                text_ok("a device's product", product)?;
                text_ok("a device's hardware", hardware)?;
            }
            Body::Authorize { object, receiver, .. } => {
                text_ok("an object's CID", object)?;
                if *receiver == self.signer {
                    return Err(TxError::Invalid("an owner needs no authorization of its own".into()));
                }
            }
            Body::Deletion { object, .. } => text_ok("an object's CID", object)?,
            Body::Points { credits, .. } => {
                let mut seen = std::collections::HashSet::new();
                if credits.is_empty() || !credits.iter().all(|c| seen.insert(c.peer)) {
                    return Err(TxError::Invalid("points credit at least one peer, each once".into()));
                }
                if credits.iter().any(|c| c.peer == self.signer) {
                    return Err(TxError::Invalid("points come from what someone else attests: not oneself".into()));
                }
            }
            _ => {}
        }
        if let Body::Vote { candidates } = &self.body {
            let mut seen = std::collections::HashSet::new();
            if !candidates.iter().all(|c| seen.insert(*c)) {
                return Err(TxError::Invalid("a vote names a candidate twice".into()));
            }
        }
        if let Body::Candidate { addr } = &self.body
            && (!candidate_addr_ok(addr) || addr.chars().any(char::is_control))
        {
            return Err(TxError::Invalid(
                "a candidate's address must end in /p2p/<its node's peer id> (the signer's, or the node's that \
                 runs with this key as --producer-key)"
                    .into(),
            ));
        }
        let key = proto::public_key_of(&self.signer).map_err(|_| TxError::BadSignature)?;
        if !key.verify(&self.signed_bytes(chain), &self.signature) {
            return Err(TxError::BadSignature);
        }
        Ok(())
    }
}

/// The peer id of an ed25519 public key (32 bytes).
pub fn ed25519_peer(public: &[u8]) -> Option<PeerId> {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(public).ok()?;
    Some(libp2p_identity::PublicKey::from(key).to_peer_id())
}

/// The ed25519 public key a peer id holds inline (signers are ed25519).
pub fn ed25519_key(peer: &PeerId) -> Option<[u8; 32]> {
    proto::public_key_of(peer).ok()?.try_into_ed25519().ok().map(|k| k.to_bytes())
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A candidate's address names its node: it ends in `/p2p/` and a peer id
/// (the candidate's own, or its node's when the producer key is apart).
fn candidate_addr_ok(addr: &str) -> bool {
    addr.rsplit_once("/p2p/").is_some_and(|(_, id)| id.parse::<PeerId>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() -> Body {
        Body::Anchor { kind: AnchorKind::Receipts, root: [7; 32], count: 3, bytes: 1 << 20 }
    }

    #[test]
    fn a_transaction_round_trips_and_verifies_on_its_own_chain_only() {
        let key = Keypair::generate_ed25519();
        let chain = Hash([1; 32]);
        let tx = Tx::sign(&key, chain, (5, Hash([2; 32])), 100, anchor()).expect("sign");
        let back = Tx::decode(&tx.encode()).expect("decode");
        assert_eq!(back, tx);
        assert_eq!(back.check(chain), Ok(()));
        assert_eq!(back.check(Hash([3; 32])), Err(TxError::BadSignature));
    }

    #[test]
    fn a_transaction_that_would_live_too_long_is_refused() {
        let key = Keypair::generate_ed25519();
        let chain = Hash([1; 32]);
        let tx = Tx::sign(&key, chain, (5, Hash([2; 32])), MAX_LIFETIME + 1, anchor()).expect("sign");
        assert!(matches!(tx.check(chain), Err(TxError::TooLong { .. })));
    }

    #[test]
    fn a_changed_byte_breaks_the_signature_or_the_parse() {
        let key = Keypair::generate_ed25519();
        let chain = Hash([1; 32]);
        let tx = Tx::sign(&key, chain, (5, Hash([2; 32])), 10, anchor()).expect("sign");
        let bytes = tx.encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            if let Ok(t) = Tx::decode(&b) {
                assert!(t.check(chain).is_err(), "byte {i}");
            }
        }
    }
}
