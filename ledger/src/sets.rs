//! The producer sets of a chain's history, checkable from the genesis
//! alone: each change is shown either by the certified header of the block
//! before it (whose `next_set` names the new producers; an election) or by
//! a recovery signed by at least half of the producers before it. A light
//! client that holds the genesis follows the changes, then checks a proof
//! against the set of the proof's height.
//!
//! Bytes of one change:
//!
//! ```text
//! from: u64 | producers: bytes(72 KiB) | 1 header: bytes(512) | certificate: bytes(64 KiB)
//!                                      | 2 recovery: bytes(160 KiB)
//! ```

use libp2p_identity::PeerId;

use crate::block::{Hash, Header};
use crate::cert::{self, Certificate};
use crate::codec::{Reader, Writer};
use crate::ctx::{ValidatorSet, validator};
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::recovery::Recovery;
use crate::state::{decode_peers, encode_peers, set_hash};
use crate::store::Store;

/// Producer sets and the height each starts at, oldest first.
pub type History = Vec<(u64, Vec<PeerId>)>;

/// How a change of the producers is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// The block before it, certified by the producers before it, names the new ones.
    Header(Header, Certificate),
    /// A recovery signed by at least half of the producers before it.
    Recovery(Recovery),
}

/// One change of the producer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// The first height the new producers decide.
    pub from: u64,
    /// The new producers.
    pub producers: Vec<PeerId>,
    /// What shows it.
    pub shown: Shown,
}

impl SetChange {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.from).bytes(&encode_peers(&self.producers));
        match &self.shown {
            Shown::Header(h, c) => w.u8(1).bytes(&h.bytes()).bytes(&cert::encode(c)),
            Shown::Recovery(r) => w.u8(2).bytes(&r.encode()),
        };
        w.finish()
    }

    /// Parse one from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<SetChange> {
        let mut r = Reader::new(bytes, "producer set change");
        let from = r.u64()?;
        let producers = decode_peers(r.bytes(72 << 10)?)?;
        let shown = match r.u8()? {
            1 => {
                let hb = r.bytes(512)?;
                let mut hr = Reader::new(hb, "block header");
                let h = Header::decode_from(&mut hr)?;
                hr.end()?;
                Shown::Header(h, cert::decode(r.bytes(64 << 10)?)?)
            }
            2 => Shown::Recovery(Recovery::decode(r.bytes(160 << 10)?)?),
            k => return Err(r.malformed(format!("kind {k}"))),
        };
        r.end()?;
        Ok(SetChange { from, producers, shown })
    }
}

fn set_of(peers: &[PeerId]) -> ValidatorSet {
    ValidatorSet::new(peers.iter().filter_map(|p| validator(*p, 1)).collect(), Hash::default())
}

/// Follow `changes` from `genesis`, checking each against the set before
/// it. Returns every set and the height it starts at, oldest first.
pub fn follow(genesis: &Genesis, changes: &[SetChange]) -> Result<History> {
    let chain = genesis.hash();
    let first: Vec<PeerId> = genesis.producers.iter().filter_map(|p| p.peer.parse().ok()).collect();
    let mut sets = vec![(1u64, first)];
    for c in changes {
        let (since, current) = sets.last().cloned().unwrap_or_default();
        if c.from <= since {
            return Err(Error::Proof(format!("the set changes are out of order at height {}", c.from)));
        }
        match &c.shown {
            Shown::Header(h, cert) => {
                if h.chain != chain || h.height + 1 != c.from || cert.value_id != h.hash() || cert.height.0 != h.height
                {
                    return Err(Error::Proof(format!(
                        "the header shown for the change at {} is not its block",
                        c.from
                    )));
                }
                cert::verify(chain, cert, &set_of(&current))
                    .map_err(|e| Error::Proof(format!("the change at {}: {e}", c.from)))?;
                if h.next_set != set_hash(&c.producers) {
                    return Err(Error::Proof(format!(
                        "block {} names other producers than the change at {}",
                        h.height, c.from
                    )));
                }
            }
            Shown::Recovery(r) => {
                if r.chain != chain || r.height != c.from || r.producers != c.producers {
                    return Err(Error::Proof(format!("the recovery shown for the change at {} is another", c.from)));
                }
                r.verify(&current)?;
            }
        }
        sets.push((c.from, c.producers.clone()));
    }
    Ok(sets)
}

/// The producers in force at `height`, from what [`follow`] returned.
pub fn at(sets: &[(u64, Vec<PeerId>)], height: u64) -> ValidatorSet {
    let peers = sets.iter().rev().find(|(from, _)| *from <= height).map(|(_, p)| p.clone()).unwrap_or_default();
    set_of(&peers)
}

/// Every change of the producers this store knows, each with what shows it.
pub fn changes(store: &Store) -> Result<Vec<SetChange>> {
    let recoveries = store.recoveries()?;
    // A node that started from a snapshot holds no block before it: it kept the changes it was shown.
    let kept = store.set_proofs()?;
    let mut out = Vec::new();
    let held = store.height()?;
    for (from, producers) in store.sets()? {
        if from <= 1 || from > held + 1 {
            continue;
        }
        let shown = match recoveries.iter().find(|r| r.height == from) {
            Some(r) => Shown::Recovery(r.clone()),
            None => match store.block_at(from - 1)? {
                Some((b, c)) => Shown::Header(Header::from(&b), c),
                None => match kept.iter().find(|c| c.from == from) {
                    Some(c) => c.shown.clone(),
                    None => continue,
                },
            },
        };
        out.push(SetChange { from, producers, shown });
    }
    Ok(out)
}
