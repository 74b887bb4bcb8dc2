//! A node's copy of the chain in redb (`DIR/ledger.redb`): final blocks and
//! their certificates by height, an index of transactions and anchored
//! roots, missed slots per producer, and the write-ahead log of the height
//! being decided. A block, its certificate and its indexes are written in
//! one transaction, synced before it returns, and the log is emptied in the
//! same transaction: a crash leaves either the block or the log to replay.
//!
//! Layout (format 1): `meta` (`format`, `chain`, `height`), `blocks` and
//! `certs` (height → bytes), `hashes` (height → 32), `txs` (tx id → height:
//! u64 | index: u32), `anchors` (signer id bytes | root → tx id), `missed` (peer → count), `wal`
//! (sequence → entry), the chain's state (see [`crate::state`]) and the
//! snapshot tables (`checkpoints`, `checkpointed`, `setproofs`; see
//! [`crate::snapshot`]).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use libp2p_identity::PeerId;

use crate::block::{Block, Hash};
use crate::cert::{self, Certificate};
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::snapshot;
use crate::state;
use crate::tx::{Body, TxId};

/// The `anchors` key: the signer's id bytes, then the root.
fn anchor_key(signer: &PeerId, root: &[u8; 32]) -> Vec<u8> {
    let mut k = signer.to_bytes();
    k.extend_from_slice(root);
    k
}

/// The store layout's version.
pub const STORE_FORMAT: u64 = 1;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(crate) const CERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("certs");
pub(crate) const HASHES: TableDefinition<u64, &[u8]> = TableDefinition::new("hashes");
pub(crate) const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("txs");
pub(crate) const ANCHORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("anchors");
pub(crate) const MISSED: TableDefinition<&[u8], u64> = TableDefinition::new("missed");
pub(crate) const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");

/// The chain as this node holds it.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Open or create the store in `dir` for chain `chain`; refuses a store
    /// of another chain or a newer format.
    pub fn open(dir: &Path, chain: Hash) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join("ledger.redb");
        let db = Database::create(&path).map_err(|e| Error::db(&path, e))?;
        let s = Store { db, path };
        let txn = s.db.begin_write().map_err(|e| s.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| s.err(e))?;
            let format = meta.get("format").map_err(|e| s.err(e))?.map(|v| v.value().to_vec());
            if let Some(f) = format {
                let f = u64::from_be_bytes(f.try_into().unwrap_or_default());
                if f > STORE_FORMAT {
                    return Err(Error::Genesis(format!(
                        "{} is ledger store format {f}, newer than this build reads ({STORE_FORMAT})",
                        s.path.display()
                    )));
                }
            }
            let have = meta.get("chain").map_err(|e| s.err(e))?.map(|v| v.value().to_vec());
            match have {
                Some(h) if h != chain.0 => {
                    return Err(Error::Genesis(format!(
                        "{} holds another chain ({}); this genesis is {}: use another directory",
                        s.path.display(),
                        Hash(h.try_into().unwrap_or_default()).to_hex(),
                        chain.to_hex()
                    )));
                }
                Some(_) => {}
                None => {
                    meta.insert("chain", chain.0.as_slice()).map_err(|e| s.err(e))?;
                }
            }
            meta.insert("format", STORE_FORMAT.to_be_bytes().as_slice()).map_err(|e| s.err(e))?;
        }
        for t in [BLOCKS, CERTS, HASHES, WAL] {
            txn.open_table(t).map_err(|e| s.err(e))?;
        }
        for t in [TXS, ANCHORS] {
            txn.open_table(t).map_err(|e| s.err(e))?;
        }
        txn.open_table(MISSED).map_err(|e| s.err(e))?;
        for t in [state::ACCOUNTS, state::JAILED, state::EVIDENCE] {
            txn.open_table(t).map_err(|e| s.err(e))?;
        }
        for t in [state::CANDIDATES, state::VOTES] {
            txn.open_table(t).map_err(|e| s.err(e))?;
        }
        for t in [state::SETS, state::RECOVERIES, snapshot::CHECKPOINTS, snapshot::CHECKPOINTED, snapshot::SETPROOFS] {
            txn.open_table(t).map_err(|e| s.err(e))?;
        }
        txn.commit().map_err(|e| s.err(e))?;
        Ok(s)
    }

    pub(crate) fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error::db(&self.path, e)
    }

    /// The directory the store is in.
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(|e| self.err(e))
    }

    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.db.begin_write().map_err(|e| self.err(e))
    }

    /// The height of the newest final block (0: none yet).
    pub fn height(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
        Ok(t.last().map_err(|e| self.err(e))?.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// The hash of the block at `height` (0: the chain's genesis hash is the caller's).
    pub fn hash_at(&self, height: u64) -> Result<Option<Hash>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(HASHES).map_err(|e| self.err(e))?;
        let v = t.get(height).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.value().try_into().ok()).map(Hash))
    }

    /// The block at `height` with its certificate, as stored bytes.
    pub fn raw_at(&self, height: u64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let b = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
        let c = txn.open_table(CERTS).map_err(|e| self.err(e))?;
        let block = b.get(height).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
        let cert = c.get(height).map_err(|e| self.err(e))?.map(|v| v.value().to_vec());
        Ok(block.zip(cert))
    }

    /// The block at `height` with its certificate.
    pub fn block_at(&self, height: u64) -> Result<Option<(Block, Certificate)>> {
        match self.raw_at(height)? {
            None => Ok(None),
            Some((b, c)) => Ok(Some((Block::decode(&b)?, cert::decode(&c)?))),
        }
    }

    /// Where a transaction sits: its block's height and its index there.
    pub fn tx_at(&self, id: &TxId) -> Result<Option<(u64, u32)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(TXS).map_err(|e| self.err(e))?;
        let v = t.get(id.0.as_slice()).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| {
            let b = v.value();
            let h = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
            let i = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
            Some((h, i))
        }))
    }

    /// The transaction by which `signer` anchored `root`, if it did (a root
    /// is anchored once per signer: nobody can take another's root first).
    pub fn anchor(&self, signer: &PeerId, root: &[u8; 32]) -> Result<Option<TxId>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(ANCHORS).map_err(|e| self.err(e))?;
        let v = t.get(anchor_key(signer, root).as_slice()).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| v.value().try_into().ok()).map(TxId))
    }

    /// A registry record (see [`crate::Lookup`]).
    pub fn lookup(&self, what: &crate::Lookup) -> Result<crate::Record> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        crate::registry::lookup(&txn, what).map_err(|e| self.wrap(e))
    }

    /// Check a transaction's registry rules against the state now.
    pub(crate) fn check_registry(&self, tx: &crate::Tx) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        crate::registry::check(&txn, tx).map_err(|e| self.wrap(e))
    }

    /// Missed proposer slots, per producer (peer id bytes → count).
    pub fn missed(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(MISSED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for e in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = e.map_err(|e| self.err(e))?;
            out.push((k.value().to_vec(), v.value()));
        }
        Ok(out)
    }

    /// Give a new store the chain's state at genesis (stake, candidates,
    /// the first producer set); a store that has it is left as it is.
    pub fn seed(&self, genesis: &Genesis) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        state::seed(&txn, genesis).map_err(|e| self.wrap(e))?;
        // Also on a store seeded before snapshots existed: the rule's
        // parameter must be the same on every node (it is in the state).
        let every = genesis.params.snapshot_every.to_be_bytes();
        let mut config = txn.open_table(crate::registry::CONFIG).map_err(|e| self.err(e))?;
        config.insert("snapshot_every", every.as_slice()).map_err(|e| self.err(e))?;
        drop(config);
        txn.commit().map_err(|e| self.err(e))
    }

    pub(crate) fn wrap(&self, e: Error) -> Error {
        match e {
            Error::Database { source, .. } => Error::Database { path: self.path.clone(), source },
            other => other,
        }
    }

    /// The producers of `height` (the genesis's until an election changes them).
    pub fn set_at(&self, height: u64) -> Result<Vec<PeerId>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::SETS).map_err(|e| self.err(e))?;
        let last = t.range(..=height).map_err(|e| self.err(e))?.next_back();
        match last {
            Some(e) => state::decode_peers(e.map_err(|e| self.err(e))?.1.value()),
            None => Ok(Vec::new()),
        }
    }

    /// Every producer set and the height it starts at, oldest first.
    pub fn sets(&self) -> Result<Vec<(u64, Vec<PeerId>)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::SETS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for e in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = e.map_err(|e| self.err(e))?;
            out.push((k.value(), state::decode_peers(v.value())?));
        }
        Ok(out)
    }

    /// Apply a recovery (the node stopped): from its height on, its
    /// producers. Refused when this store holds the recovery's height
    /// already, holds another last block than it names, or when fewer
    /// than half of the producers this store knows at that height signed.
    pub fn recover(&self, r: &crate::Recovery) -> Result<()> {
        let held = self.height()?;
        if r.chain != self.chain()? {
            return Err(Error::Genesis("the recovery is for another chain".into()));
        }
        if held >= r.height {
            return Err(Error::Genesis(format!(
                "this store holds block {held}, at or past the recovery's height {}: the chain did not halt there",
                r.height
            )));
        }
        if held + 1 < r.height {
            return Err(Error::Genesis(format!(
                "this node holds blocks up to {held}; the chain halted at {}: start it to sync up to block {} first, \
                 then stop it and apply the recovery",
                r.height,
                r.height - 1
            )));
        }
        let last = if held == 0 { Some(r.chain) } else { self.hash_at(held)? };
        if last != Some(r.last) {
            return Err(Error::Genesis(format!(
                "the recovery names block {} as {}, this store holds another: it is not for this history",
                held,
                r.last.to_hex()
            )));
        }
        let before = self.set_at(r.height)?;
        r.verify(&before)?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut sets = txn.open_table(state::SETS).map_err(|e| self.err(e))?;
            // Elections scheduled past the halt came from the lost producers' era: the recovery replaces them.
            sets.retain(|from, _| from < r.height).map_err(|e| self.err(e))?;
            sets.insert(r.height, state::encode_peers(&r.producers).as_slice()).map_err(|e| self.err(e))?;
            let mut recs = txn.open_table(state::RECOVERIES).map_err(|e| self.err(e))?;
            recs.insert(r.height, r.encode().as_slice()).map_err(|e| self.err(e))?;
            // The next elections must not bring the lost producers back: the
            // producers it drops stand no more, the new ones stand, and each
            // signer's stake approves the set it signed.
            let mut candidates = txn.open_table(state::CANDIDATES).map_err(|e| self.err(e))?;
            for p in before.iter().filter(|p| !r.producers.contains(p)) {
                candidates.remove(p.to_bytes().as_slice()).map_err(|e| self.err(e))?;
            }
            for p in &r.producers {
                if candidates.get(p.to_bytes().as_slice()).map_err(|e| self.err(e))?.is_none() {
                    candidates.insert(p.to_bytes().as_slice(), [].as_slice()).map_err(|e| self.err(e))?;
                }
            }
            let mut votes = txn.open_table(state::VOTES).map_err(|e| self.err(e))?;
            let list = state::encode_peers(&r.producers);
            for (signer, _) in r.signatures.iter().filter(|(s, _)| before.contains(s)) {
                votes.insert(signer.to_bytes().as_slice(), list.as_slice()).map_err(|e| self.err(e))?;
            }
            // The votes of the halted height were signed under the old set: no longer wanted.
            txn.open_table(WAL).map_err(|e| self.err(e))?.retain(|_, _| false).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The recoveries applied here, by height.
    pub fn recoveries(&self) -> Result<Vec<crate::Recovery>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::RECOVERIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for e in t.iter().map_err(|e| self.err(e))? {
            out.push(crate::Recovery::decode(e.map_err(|e| self.err(e))?.1.value())?);
        }
        Ok(out)
    }

    /// The chain this store holds.
    pub fn chain(&self) -> Result<Hash> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(META).map_err(|e| self.err(e))?;
        let v = t.get("chain").map_err(|e| self.err(e))?.map(|v| v.value().to_vec()).unwrap_or_default();
        Ok(Hash(v.try_into().unwrap_or_default()))
    }

    /// An account's stake.
    pub fn stake(&self, peer: &PeerId) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::ACCOUNTS).map_err(|e| self.err(e))?;
        Ok(t.get(peer.to_bytes().as_slice()).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0))
    }

    /// The height a producer was jailed at for equivocating, if it was.
    pub fn jailed(&self, peer: &PeerId) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::JAILED).map_err(|e| self.err(e))?;
        Ok(t.get(peer.to_bytes().as_slice()).map_err(|e| self.err(e))?.map(|v| v.value()))
    }

    /// Whether an offence (its key) is on the chain already.
    pub(crate) fn offence_recorded(&self, key: &[u8; 32]) -> Result<bool> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::EVIDENCE).map_err(|e| self.err(e))?;
        Ok(t.get(key.as_slice()).map_err(|e| self.err(e))?.is_some())
    }

    /// Whether `peer` stands for producer.
    pub fn is_candidate(&self, peer: &PeerId) -> Result<bool> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(state::CANDIDATES).map_err(|e| self.err(e))?;
        Ok(t.get(peer.to_bytes().as_slice()).map_err(|e| self.err(e))?.is_some())
    }

    /// Record a final block with its certificate, the proposers that missed
    /// their rounds before it, and the state it leads to (`genesis` holds
    /// the rules), and empty the log, in one synced transaction.
    pub fn commit(
        &self,
        block: &Block,
        certificate: &Certificate,
        missed: &[Vec<u8>],
        genesis: &Genesis,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        state::apply(&txn, block, genesis).map_err(|e| self.wrap(e))?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
            if blocks.get(block.height).map_err(|e| self.err(e))?.is_some() {
                // Already final here (a sync answer raced consensus): nothing to do.
                return Ok(());
            }
            blocks.insert(block.height, block.encode().as_slice()).map_err(|e| self.err(e))?;
            let mut certs = txn.open_table(CERTS).map_err(|e| self.err(e))?;
            certs.insert(block.height, cert::encode(certificate).as_slice()).map_err(|e| self.err(e))?;
            let mut hashes = txn.open_table(HASHES).map_err(|e| self.err(e))?;
            hashes.insert(block.height, block.hash().0.as_slice()).map_err(|e| self.err(e))?;
            let mut txs = txn.open_table(TXS).map_err(|e| self.err(e))?;
            let mut anchors = txn.open_table(ANCHORS).map_err(|e| self.err(e))?;
            for (i, tx) in block.txs.iter().enumerate() {
                let id = tx.id();
                let mut at = block.height.to_be_bytes().to_vec();
                at.extend_from_slice(&(i as u32).to_be_bytes());
                txs.insert(id.0.as_slice(), at.as_slice()).map_err(|e| self.err(e))?;
                if let Body::Anchor { root, .. } = &tx.body {
                    anchors
                        .insert(anchor_key(&tx.signer, root).as_slice(), id.0.as_slice())
                        .map_err(|e| self.err(e))?;
                }
                if let Body::Checkpoint { height: cp, state, .. } = &tx.body {
                    let mut v = state.to_vec();
                    v.extend_from_slice(&at);
                    let mut t = txn.open_table(snapshot::CHECKPOINTED).map_err(|e| self.err(e))?;
                    t.insert(*cp, v.as_slice()).map_err(|e| self.err(e))?;
                }
            }
            let mut m = txn.open_table(MISSED).map_err(|e| self.err(e))?;
            for peer in missed {
                let n = m.get(peer.as_slice()).map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0);
                m.insert(peer.as_slice(), n + 1).map_err(|e| self.err(e))?;
            }
            let mut wal = txn.open_table(WAL).map_err(|e| self.err(e))?;
            wal.retain(|_, _| false).map_err(|e| self.err(e))?;
        }
        let every = genesis.params.snapshot_every;
        let pending = if every > 0 && block.height.is_multiple_of(every) {
            snapshot::write(&txn, self.dir(), block.chain, block.height).map_err(|e| self.wrap(e))?
        } else {
            None
        };
        txn.commit().map_err(|e| self.err(e))?;
        if let Some(p) = pending {
            // The block is final either way: a snapshot not put in place is only not offered.
            if let Err(e) = p.publish() {
                tracing::warn!("the snapshot after block {} was not kept: {e}", block.height);
            }
        }
        Ok(())
    }

    /// Append an entry to the write-ahead log, synced before it returns.
    pub(crate) fn wal_append(&self, entry: &[u8]) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut wal = txn.open_table(WAL).map_err(|e| self.err(e))?;
            let next = wal.last().map_err(|e| self.err(e))?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            wal.insert(next, entry).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The write-ahead log's entries, oldest first.
    pub(crate) fn wal(&self) -> Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(WAL).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(t.len().map_err(|e| self.err(e))? as usize);
        for e in t.iter().map_err(|e| self.err(e))? {
            out.push(e.map_err(|e| self.err(e))?.1.value().to_vec());
        }
        Ok(out)
    }
}
