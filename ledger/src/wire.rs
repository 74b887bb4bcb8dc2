//! What producers and followers send each other over gossipsub (one topic
//! per chain), what the sync protocol asks and answers, and the entries of
//! the write-ahead log. Every decoder takes untrusted bytes and bounds
//! each field before allocating (see [`crate::codec`]).
//!
//! ```text
//! message  = 1 proposal | 2 vote | 3 tx: bytes(MAX_TX_BYTES) | 4 status: height: u64 | hash: 32
//! proposal = height: u64 | round: i64 | pol_round: i64 | proposer: bytes(64)
//!            | block: bytes(MAX_BLOCK_BYTES) | signature: bytes(64)
//! vote     = type: u8 | height: u64 | round: i64 | nil: u8 | hash: 32 | validator: bytes(64)
//!            | signature: bytes(64)
//! sync ask = height: u64;  answer = 0 (none) | 1 block: bytes(MAX_BLOCK_BYTES) | cert: bytes(64 KiB)
//! wal      = 1 vote | 2 proposal | 3 value: height | round | valid_round | proposer
//!            | block | valid: u8 | sync: u8 | 4 timeout: kind: u8 | round: i64 | ms: u64
//! ```

use libp2p_identity::PeerId;
use malachite::{Input, ProposedValue};
use malachite_types::{NilOrVal, SignedProposal, SignedVote, Timeout, TimeoutKind, Validity, ValueOrigin, VoteType};

use crate::block::{Block, Hash, MAX_BLOCK_BYTES};
use crate::cert::{self, Certificate, round_of};
use crate::codec::{Reader, Writer};
use crate::ctx::{Address, Ctx, Height, Proposal, Signature, Vote};
use crate::error::{Error, Result};
use crate::tx::{MAX_TX_BYTES, Tx};

/// Bytes of one gossip message, at most (a block and its envelope).
pub const MAX_MESSAGE_BYTES: usize = MAX_BLOCK_BYTES + 1024;
/// Bytes of an encoded certificate, at most.
const MAX_CERT_BYTES: usize = 64 << 10;

/// A gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A signed proposal with its block.
    Proposal(SignedProposal<Ctx>),
    /// A signed vote.
    Vote(SignedVote<Ctx>),
    /// A transaction for the producers' pools.
    Tx(Tx),
    /// A node's newest final block, so a node behind knows whom to ask.
    Status {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
    },
}

impl Message {
    /// A prevote by `key` for block `value` at `height` and `round` on chain
    /// `chain` under the producer set `set` (its hash), signed as a producer signs it.
    pub fn prevote(
        key: &libp2p_identity::Keypair,
        chain: Hash,
        set: Hash,
        height: u64,
        round: u32,
        value: Hash,
    ) -> Result<Message> {
        let v = Vote {
            kind: VoteType::Prevote,
            height: Height(height),
            round: malachite_types::Round::new(round),
            value: NilOrVal::Val(value),
            validator: Address(key.public().to_peer_id()),
        };
        let sig = key.sign(&v.signed_bytes(chain, set)).map_err(|e| Error::Signing(e.to_string()))?;
        Ok(Message::Vote(SignedVote::new(v, Signature(sig))))
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Message::Proposal(p) => {
                w.u8(1);
                proposal(&mut w, p);
            }
            Message::Vote(v) => {
                w.u8(2);
                vote(&mut w, v);
            }
            Message::Tx(t) => {
                w.u8(3).bytes(&t.encode());
            }
            Message::Status { height, hash } => {
                w.u8(4).u64(*height).raw(&hash.0);
            }
        }
        w.finish()
    }

    /// Parse a message from untrusted bytes (signatures are checked later).
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Error::Malformed { what: "ledger message", why: format!("{} bytes", bytes.len()) });
        }
        let mut r = Reader::new(bytes, "ledger message");
        let m = match r.u8()? {
            1 => Message::Proposal(read_proposal(&mut r)?),
            2 => Message::Vote(read_vote(&mut r)?),
            3 => Message::Tx(Tx::decode(r.bytes(MAX_TX_BYTES)?)?),
            4 => Message::Status { height: r.u64()?, hash: Hash(r.array()?) },
            k => return Err(r.malformed(format!("unknown message kind {k}"))),
        };
        r.end()?;
        Ok(m)
    }
}

fn proposal(w: &mut Writer, p: &SignedProposal<Ctx>) {
    let m = &p.message;
    w.u64(m.height.0).i64(m.round.as_i64()).i64(m.pol_round.as_i64()).bytes(&m.proposer.0.to_bytes());
    w.bytes(&m.block.encode()).bytes(&p.signature.0);
}

fn read_peer(r: &mut Reader<'_>) -> Result<PeerId> {
    PeerId::from_bytes(r.bytes(64)?).map_err(|e| r.malformed(format!("peer id: {e}")))
}

fn read_round(r: &mut Reader<'_>) -> Result<malachite_types::Round> {
    let v = r.i64()?;
    round_of(v).ok_or_else(|| r.malformed(format!("round {v}")))
}

fn read_proposal(r: &mut Reader<'_>) -> Result<SignedProposal<Ctx>> {
    let height = Height(r.u64()?);
    let round = read_round(r)?;
    let pol_round = read_round(r)?;
    let proposer = Address(read_peer(r)?);
    let block = Block::decode(r.bytes(MAX_BLOCK_BYTES)?)?;
    let sig = Signature(r.bytes(64)?.to_vec());
    Ok(SignedProposal::new(Proposal { height, round, block, pol_round, proposer }, sig))
}

fn vote(w: &mut Writer, v: &SignedVote<Ctx>) {
    let m = &v.message;
    w.u8(match m.kind {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
    w.u64(m.height.0).i64(m.round.as_i64());
    crate::ctx::put_value(w, &m.value);
    w.bytes(&m.validator.0.to_bytes()).bytes(&v.signature.0);
}

fn read_vote(r: &mut Reader<'_>) -> Result<SignedVote<Ctx>> {
    let kind = match r.u8()? {
        1 => VoteType::Prevote,
        2 => VoteType::Precommit,
        k => return Err(r.malformed(format!("vote type {k}"))),
    };
    let height = Height(r.u64()?);
    let round = read_round(r)?;
    let nil = r.u8()?;
    let hash = Hash(r.array()?);
    let value = match nil {
        // Nil carries zeros only: one encoding per vote.
        1 if hash == Hash::default() => NilOrVal::Nil,
        0 => NilOrVal::Val(hash),
        _ => return Err(r.malformed("nil flag, or a nil vote with a hash")),
    };
    let validator = Address(read_peer(r)?);
    let sig = Signature(r.bytes(64)?.to_vec());
    Ok(SignedVote::new(Vote { kind, height, round, value, validator }, sig))
}

/// A sync answer: the block at the height asked and its certificate.
pub(crate) fn encode_answer(found: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let mut w = Writer::new();
    match found {
        None => {
            w.u8(0);
        }
        Some((block, cert)) => {
            w.u8(1).bytes(block).bytes(cert);
        }
    }
    w.finish()
}

/// Parse a sync answer from untrusted bytes.
pub(crate) fn decode_answer(bytes: &[u8]) -> Result<Option<(Block, Certificate)>> {
    let mut r = Reader::new(bytes, "sync answer");
    let out = match r.u8()? {
        0 => None,
        1 => {
            let block = Block::decode(r.bytes(MAX_BLOCK_BYTES)?)?;
            let c = cert::decode(r.bytes(MAX_CERT_BYTES)?)?;
            Some((block, c))
        }
        k => return Err(r.malformed(format!("answer kind {k}"))),
    };
    r.end()?;
    Ok(out)
}

/// Bytes of a sync answer, at most.
pub const MAX_ANSWER_BYTES: usize = MAX_BLOCK_BYTES + MAX_CERT_BYTES + 16;

/// A write-ahead log entry's bytes, or `None` for inputs the log does not keep.
pub(crate) fn encode_wal(input: &Input<Ctx>) -> Option<Vec<u8>> {
    let mut w = Writer::new();
    match input {
        Input::Vote(v) => {
            w.u8(1);
            vote(&mut w, v);
        }
        Input::Proposal(p) => {
            w.u8(2);
            proposal(&mut w, p);
        }
        Input::ProposedValue(v, origin) => {
            w.u8(3).u64(v.height.0).i64(v.round.as_i64()).i64(v.valid_round.as_i64());
            w.bytes(&v.proposer.0.to_bytes()).bytes(&v.value.encode());
            w.u8(u8::from(v.validity.is_valid())).u8(u8::from(origin.is_sync()));
        }
        Input::TimeoutElapsed(t) => {
            let (kind, ms) = match t.kind {
                TimeoutKind::Propose => (1, 0),
                TimeoutKind::Prevote => (2, 0),
                TimeoutKind::Precommit => (3, 0),
                TimeoutKind::Rebroadcast => (4, 0),
                TimeoutKind::FinalizeHeight(d) => (5, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            };
            w.u8(4).u8(kind).i64(t.round.as_i64()).u64(ms);
        }
        _ => return None,
    }
    Some(w.finish())
}

/// Parse a write-ahead log entry.
pub(crate) fn decode_wal(bytes: &[u8]) -> Result<Input<Ctx>> {
    let mut r = Reader::new(bytes, "write-ahead log entry");
    let input = match r.u8()? {
        1 => Input::Vote(read_vote(&mut r)?),
        2 => Input::Proposal(read_proposal(&mut r)?),
        3 => {
            let height = Height(r.u64()?);
            let round = read_round(&mut r)?;
            let valid_round = read_round(&mut r)?;
            let proposer = Address(read_peer(&mut r)?);
            let value = Block::decode(r.bytes(MAX_BLOCK_BYTES)?)?;
            let validity = Validity::from_bool(r.u8()? == 1);
            let origin = if r.u8()? == 1 { ValueOrigin::Sync } else { ValueOrigin::Consensus };
            Input::ProposedValue(ProposedValue { height, round, valid_round, proposer, value, validity }, origin)
        }
        4 => {
            let kind = r.u8()?;
            let round = read_round(&mut r)?;
            let ms = r.u64()?;
            let kind = match kind {
                1 => TimeoutKind::Propose,
                2 => TimeoutKind::Prevote,
                3 => TimeoutKind::Precommit,
                4 => TimeoutKind::Rebroadcast,
                5 => TimeoutKind::FinalizeHeight(std::time::Duration::from_millis(ms)),
                k => return Err(r.malformed(format!("timeout kind {k}"))),
            };
            Input::TimeoutElapsed(Timeout { kind, round })
        }
        k => return Err(r.malformed(format!("entry kind {k}"))),
    };
    r.end()?;
    Ok(input)
}
