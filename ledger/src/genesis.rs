//! The genesis: the chain's first producers, stake and parameters. Every
//! node checks it by hash; the hash names the chain and is bound into every
//! signature on it.
//!
//! A genesis is a JSON file (`ionshard ledger init` writes one). Its hash
//! is the BLAKE3 of its canonical form: the same fields re-serialized
//! compactly in their declared order, so spacing and key order in the file
//! do not change the chain.

use std::path::Path;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::block::Hash;
use crate::ctx::{ValidatorSet, validator};
use crate::error::{Error, Result};

/// Producers in one set, at most (a certificate holds at most this many signatures).
pub const MAX_PRODUCERS: u32 = 256;

/// The format version of a genesis file.
pub const GENESIS_VERSION: u32 = 1;

/// One of the first producers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// Its producer key's id (ed25519): the key that signs its votes,
    /// proposals and checkpoints. The node's own key, or a separate key
    /// file (`ionshard node --producer-key`).
    pub peer: String,
    /// Where its node listens (a multiaddr ending in `/p2p/<node id>`), so
    /// the others can reach it; the node id is `peer` unless the producer
    /// key is apart from the node key.
    pub addr: String,
    /// Its stake.
    pub stake: u64,
}

impl Producer {
    /// The network id of its node: the last `/p2p/` part of its address.
    pub fn node(&self) -> Option<PeerId> {
        self.addr.rsplit_once("/p2p/").and_then(|(_, id)| id.parse().ok())
    }
}

/// The chain's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Target time between blocks, in milliseconds.
    pub block_ms: u64,
    /// How long a proposer has to propose before the round moves on, in
    /// milliseconds (grows by half of it per round).
    pub propose_ms: u64,
    /// With no transaction waiting, the next block comes this long after
    /// the last (milliseconds): an idle chain makes a small empty block
    /// now and then (fresh TaPoS references, proof of life), not one per
    /// `block_ms`.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// Producers elected, at most (DPoS: 21 by default).
    #[serde(default = "default_producers")]
    pub producers: u32,
    /// Heights between elections (maintenance boundaries).
    #[serde(default = "default_maintenance")]
    pub maintenance: u64,
    /// Heights after a boundary before its elected set produces (at least 2,
    /// so the set of the next block is known before any block is decided).
    #[serde(default = "default_delay")]
    pub delay: u64,
    /// Share of its stake an equivocating producer loses, in percent.
    #[serde(default = "default_slash")]
    pub slash_pct: u8,
    /// Heights between state snapshots (a new node starts from the newest
    /// one a block vouches for, then syncs the blocks after it); 0: none.
    #[serde(default = "default_snapshot_every", skip_serializing_if = "is_default_snapshot_every")]
    pub snapshot_every: u64,
}

fn default_snapshot_every() -> u64 {
    1000
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_snapshot_every(n: &u64) -> bool {
    *n == default_snapshot_every()
}

fn default_idle_ms() -> u64 {
    30_000
}
fn default_producers() -> u32 {
    21
}
fn default_maintenance() -> u64 {
    600
}
fn default_delay() -> u64 {
    2
}
fn default_slash() -> u8 {
    10
}

impl Default for Params {
    fn default() -> Self {
        Params {
            block_ms: 1000,
            propose_ms: 2000,
            idle_ms: default_idle_ms(),
            producers: default_producers(),
            maintenance: default_maintenance(),
            delay: default_delay(),
            slash_pct: default_slash(),
            snapshot_every: default_snapshot_every(),
        }
    }
}

/// An account's stake at genesis (no token sale: the genesis allocates it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its peer id (ed25519).
    pub peer: String,
    /// Its stake.
    pub stake: u64,
}

/// A genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// [`GENESIS_VERSION`].
    pub version: u32,
    /// A name for people (the hash is what counts).
    pub name: String,
    /// When the chain starts (milliseconds since the epoch); block 1 is later.
    pub time_ms: u64,
    /// The first producers, in any order.
    pub producers: Vec<Producer>,
    /// The chain's parameters.
    pub params: Params,
    /// Stake held by others than the producers (voters).
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// The manufacturer registry's admins (peer ids): a manufacturer is
    /// admitted, or removed, once `admin_threshold` of them signed that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// How many admins must agree (at least 1, at most how many there are).
    #[serde(default = "default_threshold", skip_serializing_if = "is_one")]
    pub admin_threshold: u32,
}

fn default_threshold() -> u32 {
    1
}
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Genesis {
    /// Read and check a genesis file.
    pub fn load(path: &Path) -> Result<Genesis> {
        let text = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if text.len() > 1 << 20 {
            return Err(Error::Genesis(format!("{} is larger than 1 MiB", path.display())));
        }
        let g: Genesis = serde_json::from_slice(&text)
            .map_err(|e| Error::Genesis(format!("{} is not a genesis file: {e}", path.display())))?;
        g.check()?;
        Ok(g)
    }

    /// Check the rules a genesis must keep.
    pub fn check(&self) -> Result<()> {
        if self.version != GENESIS_VERSION {
            return Err(Error::Genesis(format!(
                "format version {} is not {GENESIS_VERSION}: this build cannot run that chain",
                self.version
            )));
        }
        if self.producers.is_empty() {
            return Err(Error::Genesis("no producers: a chain needs at least one".into()));
        }
        if self.params.block_ms == 0 || self.params.propose_ms < 100 || self.params.idle_ms < self.params.block_ms {
            return Err(Error::Genesis(
                "block_ms must be positive, propose_ms at least 100 and idle_ms at least block_ms".into(),
            ));
        }
        let p = &self.params;
        if self.producers.len() > MAX_PRODUCERS as usize {
            return Err(Error::Genesis(format!("more than {MAX_PRODUCERS} producers")));
        }
        if p.producers == 0
            || p.producers > MAX_PRODUCERS
            || p.maintenance == 0
            || p.delay < 2
            || p.delay >= p.maintenance.max(3)
            || p.slash_pct > 100
            || (p.snapshot_every != 0 && p.snapshot_every < 2)
        {
            return Err(Error::Genesis(
                "producers from 1 to 256, maintenance positive, delay at least 2 and below maintenance, slash_pct at most 100, \
                 snapshot_every 0 (none) or at least 2"
                    .into(),
            ));
        }
        for a in &self.accounts {
            let id: PeerId =
                a.peer.parse().map_err(|e| Error::Genesis(format!("account {}: not a peer id: {e}", a.peer)))?;
            if validator(id, 1).is_none() {
                return Err(Error::Genesis(format!("account {id}: not an ed25519 peer id")));
            }
        }
        let admins = self.admin_ids()?;
        if self.admin_threshold == 0 || (!admins.is_empty() && self.admin_threshold as usize > admins.len()) {
            return Err(Error::Genesis(format!(
                "admin_threshold {} must be from 1 to the number of admins ({})",
                self.admin_threshold,
                admins.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.producers {
            let id: PeerId =
                p.peer.parse().map_err(|e| Error::Genesis(format!("producer {}: not a peer id: {e}", p.peer)))?;
            if validator(id, 1).is_none() {
                return Err(Error::Genesis(format!("producer {id}: not an ed25519 peer id")));
            }
            if p.stake == 0 {
                return Err(Error::Genesis(format!("producer {id}: stake 0")));
            }
            if !seen.insert(id) {
                return Err(Error::Genesis(format!("producer {id} is listed twice")));
            }
            if p.node().is_none() {
                return Err(Error::Genesis(format!(
                    "producer {id}: its address {} must end in /p2p/<its node's peer id>",
                    p.addr
                )));
            }
        }
        Ok(())
    }

    /// The registry's admins, checked: ed25519 peer ids, each once.
    pub fn admin_ids(&self) -> Result<Vec<PeerId>> {
        let mut out = Vec::new();
        for a in &self.admins {
            let id: PeerId = a.parse().map_err(|e| Error::Genesis(format!("admin {a}: not a peer id: {e}")))?;
            if validator(id, 1).is_none() {
                return Err(Error::Genesis(format!("admin {id}: not an ed25519 peer id")));
            }
            if out.contains(&id) {
                return Err(Error::Genesis(format!("admin {id} is listed twice")));
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The chain's id: the hash of the canonical form.
    pub fn hash(&self) -> Hash {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(b"ionshard ledger genesis v1");
        h.update(&canonical);
        Hash(*h.finalize().as_bytes())
    }

    /// The producer set the chain starts with: equal voting power each, as
    /// in DPoS (stake elects producers; it does not weigh their votes).
    pub fn validators(&self, seed: Hash) -> ValidatorSet {
        let vs = self.producers.iter().filter_map(|p| validator(p.peer.parse().ok()?, 1)).collect();
        ValidatorSet::new(vs, seed)
    }

    /// Stake at genesis: the producers' and the accounts'.
    pub fn stakes(&self) -> Vec<(PeerId, u64)> {
        let producers = self.producers.iter().filter_map(|p| Some((p.peer.parse().ok()?, p.stake)));
        let accounts = self.accounts.iter().filter_map(|a| Some((a.peer.parse().ok()?, a.stake)));
        producers.chain(accounts).collect()
    }

    /// Write it to `path` (a new file; refuses to overwrite).
    pub fn write_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        f.write_all(&text)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}
