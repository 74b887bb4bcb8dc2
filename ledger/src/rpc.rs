//! The questions a node answers about its chain over the ledger's stream
//! protocol: a final block with its certificate (how a node behind syncs),
//! the chain's status, a transaction offered for a block, and where a
//! transaction landed. One question, one answer; both bounded.
//!
//! ```text
//! question = 1 block: height: u64 | 2 status | 3 submit: bytes(MAX_TX_BYTES) | 4 find: tx id: 32 | 5 sets
//!          | 6 lookup: see [`crate::Lookup`] | 7 snapshot | 8 part: height: u64 | offset: u64
//! answer   = block: see [`crate::wire`] | status: bytes(64 KiB) of JSON
//!          | submit: 0 id: 32 | 1 error: bytes(1024) | find: 0 (not yet) | 1 height: u64 | index: u32
//!          | sets: list(4096) of change: bytes(256 KiB) (see [`crate::sets`])
//!          | lookup: bytes(64 KiB) of JSON (a [`crate::Record`]; empty: the node failed)
//!          | snapshot: 0 (none) | 1 offer (see [`crate::Offer`])
//!          | part: bytes(PART_BYTES) (empty: not held)
//! ```

use crate::codec::{Reader, Writer};
use crate::engine::{Ledger, Status};
use crate::error::{Error, Result};
use crate::tx::{MAX_TX_BYTES, Tx, TxId};
use crate::wire;

/// Bytes of a question, at most.
pub const MAX_QUESTION_BYTES: usize = MAX_TX_BYTES + 16;
const MAX_STATUS_BYTES: usize = 64 << 10;

/// A question about the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// The final block at this height, with its certificate.
    Block(u64),
    /// The chain's status.
    Status,
    /// Take this transaction into the pool.
    Submit(Box<Tx>),
    /// Where this transaction is on the chain.
    Find(TxId),
    /// Every change of the producer set, with what shows it.
    Sets,
    /// A registry record.
    Lookup(crate::Lookup),
    /// The newest state snapshot the node offers.
    Snapshot,
    /// Bytes of snapshot `height` from `offset`.
    Part {
        /// The snapshot's height.
        height: u64,
        /// Where the part starts.
        offset: u64,
    },
}

impl Question {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Question::Block(h) => w.u8(1).u64(*h),
            Question::Status => w.u8(2),
            Question::Submit(tx) => w.u8(3).bytes(&tx.encode()),
            Question::Find(id) => w.u8(4).raw(&id.0),
            Question::Sets => w.u8(5),
            Question::Lookup(l) => {
                l.encode(w.u8(6));
                &mut w
            }
            Question::Snapshot => w.u8(7),
            Question::Part { height, offset } => w.u8(8).u64(*height).u64(*offset),
        };
        w.finish()
    }

    /// Parse a question from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Question> {
        let mut r = Reader::new(bytes, "ledger question");
        let q = match r.u8()? {
            1 => Question::Block(r.u64()?),
            2 => Question::Status,
            3 => Question::Submit(Box::new(Tx::decode(r.bytes(MAX_TX_BYTES)?)?)),
            4 => Question::Find(TxId(r.array()?)),
            5 => Question::Sets,
            6 => Question::Lookup(crate::registry::Lookup::decode(&mut r)?),
            7 => Question::Snapshot,
            8 => Question::Part { height: r.u64()?, offset: r.u64()? },
            k => return Err(r.malformed(format!("question kind {k}"))),
        };
        r.end()?;
        Ok(q)
    }
}

/// Answer `question` (untrusted bytes) from the running ledger.
pub async fn serve(ledger: &Ledger, question: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    match Question::decode(question) {
        Ok(Question::Block(h)) => return crate::engine::answer(ledger.store(), &h.to_be_bytes()),
        Ok(Question::Status) => {
            let json = match ledger.status().await {
                Ok(s) => serde_json::to_vec(&s).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            w.bytes(&json);
        }
        Ok(Question::Submit(tx)) => match ledger.submit(*tx).await {
            Ok(id) => {
                w.u8(0).raw(&id.0);
            }
            Err(e) => {
                let mut m = e.to_string();
                m.truncate(1000);
                w.u8(1).bytes(m.as_bytes());
            }
        },
        Ok(Question::Find(id)) => match ledger.store().tx_at(&id) {
            Ok(Some((h, i))) => {
                w.u8(1).u64(h).u32(i);
            }
            _ => {
                w.u8(0);
            }
        },
        Ok(Question::Sets) => {
            let changes = crate::sets::changes(ledger.store()).unwrap_or_default();
            w.count(changes.len());
            for c in changes {
                w.bytes(&c.encode());
            }
        }
        Ok(Question::Lookup(what)) => {
            let json = ledger.store().lookup(&what).ok().and_then(|r| serde_json::to_vec(&r).ok());
            w.bytes(&json.unwrap_or_default());
        }
        Ok(Question::Snapshot) => match ledger.store().offer() {
            Ok(Some(offer)) => {
                w.u8(1).raw(&offer.encode());
            }
            _ => {
                w.u8(0);
            }
        },
        Ok(Question::Part { height, offset }) => {
            let store = ledger.store().clone();
            let part = tokio::task::spawn_blocking(move || store.part(height, offset)).await.unwrap_or_default();
            w.bytes(&part);
        }
        Err(_) => {}
    }
    w.finish()
}

/// Parse the answer to [`Question::Lookup`].
pub fn lookup_answer(bytes: &[u8]) -> Result<crate::Record> {
    let mut r = Reader::new(bytes, "lookup answer");
    let json = r.bytes(MAX_STATUS_BYTES)?;
    r.end()?;
    if json.is_empty() {
        return Err(Error::Malformed { what: "lookup answer", why: "the node could not read its state".into() });
    }
    serde_json::from_slice(json).map_err(|e| Error::Malformed { what: "lookup answer", why: e.to_string() })
}

/// Parse the answer to [`Question::Sets`].
pub fn sets_answer(bytes: &[u8]) -> Result<Vec<crate::sets::SetChange>> {
    let mut r = Reader::new(bytes, "sets answer");
    let n = r.count(4096)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(crate::sets::SetChange::decode(r.bytes(256 << 10)?)?);
    }
    r.end()?;
    Ok(out)
}

/// Parse the answer to [`Question::Status`].
pub fn status_answer(bytes: &[u8]) -> Result<Status> {
    let mut r = Reader::new(bytes, "status answer");
    let json = r.bytes(MAX_STATUS_BYTES)?;
    r.end()?;
    serde_json::from_slice(json).map_err(|e| Error::Malformed { what: "status answer", why: e.to_string() })
}

/// Parse the answer to [`Question::Submit`]: the id, or why it was refused.
pub fn submit_answer(bytes: &[u8]) -> Result<std::result::Result<TxId, String>> {
    let mut r = Reader::new(bytes, "submit answer");
    let out = match r.u8()? {
        0 => Ok(TxId(r.array()?)),
        1 => Err(String::from_utf8_lossy(r.bytes(1024)?).into_owned()),
        k => return Err(r.malformed(format!("answer kind {k}"))),
    };
    r.end()?;
    Ok(out)
}

/// Parse the answer to [`Question::Find`]: the block height and index, if on the chain.
pub fn find_answer(bytes: &[u8]) -> Result<Option<(u64, u32)>> {
    let mut r = Reader::new(bytes, "find answer");
    let out = match r.u8()? {
        0 => None,
        1 => Some((r.u64()?, r.u32()?)),
        k => return Err(r.malformed(format!("answer kind {k}"))),
    };
    r.end()?;
    Ok(out)
}

/// Parse the answer to [`Question::Block`].
pub fn block_answer(bytes: &[u8]) -> Result<Option<(crate::Block, crate::Certificate)>> {
    wire::decode_answer(bytes)
}

/// Parse the answer to [`Question::Snapshot`]: the offer, if the node has one.
pub fn snapshot_answer(bytes: &[u8]) -> Result<Option<crate::Offer>> {
    let mut r = Reader::new(bytes, "snapshot answer");
    let out = match r.u8()? {
        0 => None,
        1 => Some(crate::snapshot::Offer::decode(&mut r)?),
        k => return Err(r.malformed(format!("answer kind {k}"))),
    };
    r.end()?;
    Ok(out)
}

/// Parse the answer to [`Question::Part`].
pub fn part_answer(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut r = Reader::new(bytes, "snapshot part");
    let part = r.bytes(crate::PART_BYTES)?.to_vec();
    r.end()?;
    Ok(part)
}
