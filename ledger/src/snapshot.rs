//! State snapshots: how a new node starts without replaying every block.
//!
//! Every `snapshot_every` heights (a genesis parameter) each node writes
//! the chain's state after that block to `DIR/snapshots/HEIGHT.snap` and
//! keeps its BLAKE3 (the state's digest). The next block's proposer puts a
//! checkpoint transaction holding that digest in its block; every producer
//! compares it with its own before it votes, so a block certified by more
//! than 2/3 of the producers vouches for the digest. A new node asks a peer
//! for its newest snapshot ([`Offer`]: the height, the size and the proof
//! of the checkpoint), checks the proof against the producer sets it
//! follows from the genesis, fetches the bytes in parts, compares their
//! BLAKE3 with the certified digest, imports them and syncs the blocks
//! after the snapshot. Blocks before it are not held there (their
//! transactions are still known by id: a replay is refused all the same).
//!
//! Bytes (format 1; the digest is the BLAKE3 of all of them):
//!
//! ```text
//! "ionshard ledger snapshot v1" | chain: 32 | height: u64
//! | per table, in tag order: tag: u8 | (1 | key: bytes | value: bytes)* | 0
//! | 0
//! ```
//!
//! Integers in keys and values are 8 big-endian bytes. The tables are the
//! state every node derives from the blocks alone (stake, votes, sets,
//! recoveries, the transaction and anchor indexes, the registry, the
//! recorded checkpoints) and the hashes of the last [`MAX_LIFETIME`] blocks
//! (TaPoS references); nothing a node keeps for itself (missed slots, the
//! write-ahead log) is in it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use libp2p_identity::PeerId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::block::{Block, Hash};
use crate::cert::Certificate;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::proof::Proof;
use crate::registry::{APPROVALS, AUTHS, CONFIG, CREDITED, DELETIONS, DEVICES, MAKERS, POINTS, RELEASES};
use crate::sets::SetChange;
use crate::state;
use crate::store::{ANCHORS, HASHES, Store, TXS};
use crate::tx::{Body, MAX_LIFETIME};

const DOMAIN: &[u8] = b"ionshard ledger snapshot v1";
/// Bytes of a snapshot, at most (what a node agrees to fetch).
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;
/// Bytes of one part of a snapshot on the wire, at most.
pub const PART_BYTES: usize = 1 << 20;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 1 << 20;
const MAX_PROOF: usize = 256 << 10;
/// Snapshot files a node keeps (the newest may wait for its checkpoint).
const KEEP: usize = 2;

/// Local: snapshot height → digest: 32 | size: u64 (what this node wrote).
pub(crate) const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
/// State: snapshot height → digest: 32 | block: u64 | index: u32 (the checkpoint on the chain).
pub(crate) const CHECKPOINTED: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpointed");
/// Local: the producer-set changes a node that started from a snapshot
/// holds no block for (from → [`SetChange`] bytes), to serve light clients.
pub(crate) const SETPROOFS: TableDefinition<u64, &[u8]> = TableDefinition::new("setproofs");

#[derive(Clone, Copy)]
enum Table {
    Blob(TableDefinition<'static, &'static [u8], &'static [u8]>),
    Num(TableDefinition<'static, &'static [u8], u64>),
    ByHeight(TableDefinition<'static, u64, &'static [u8]>),
    Config,
    /// Block hashes: only the last [`MAX_LIFETIME`] heights.
    Recent,
}

/// The tables a snapshot holds, by tag, in order.
const TABLES: &[(u8, Table)] = &[
    (1, Table::Num(state::ACCOUNTS)),
    (2, Table::Blob(state::CANDIDATES)),
    (3, Table::Blob(state::VOTES)),
    (4, Table::Num(state::JAILED)),
    (5, Table::Num(state::EVIDENCE)),
    (6, Table::ByHeight(state::SETS)),
    (7, Table::ByHeight(state::RECOVERIES)),
    (8, Table::Blob(TXS)),
    (9, Table::Blob(ANCHORS)),
    (10, Table::Config),
    (11, Table::Blob(MAKERS)),
    (12, Table::Num(APPROVALS)),
    (13, Table::Blob(DEVICES)),
    (14, Table::Num(AUTHS)),
    (15, Table::Blob(DELETIONS)),
    (16, Table::Blob(RELEASES)),
    (17, Table::Blob(POINTS)),
    (18, Table::Num(CREDITED)),
    (19, Table::ByHeight(CHECKPOINTED)),
    (20, Table::Recent),
];

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes the snapshot's bytes and hashes them on the way.
struct Sink<'a> {
    out: &'a mut dyn Write,
    hash: blake3::Hasher,
    size: u64,
    path: &'a Path,
}

impl Sink<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.size += b.len() as u64;
        self.out.write_all(b).map_err(io(self.path))
    }
    fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        self.put(&[1])?;
        self.put(&(k.len() as u32).to_be_bytes())?;
        self.put(k)?;
        self.put(&(v.len() as u32).to_be_bytes())?;
        self.put(v)
    }
}

/// Write the state as of `txn` (block `height` applied) to `out`; returns
/// its digest and size.
fn dump(txn: &WriteTransaction, chain: Hash, height: u64, out: &mut dyn Write, path: &Path) -> Result<(Hash, u64)> {
    let mut s = Sink { out, hash: blake3::Hasher::new(), size: 0, path };
    s.put(DOMAIN)?;
    s.put(&chain.0)?;
    s.put(&height.to_be_bytes())?;
    for (tag, table) in TABLES {
        s.put(&[*tag])?;
        match table {
            Table::Blob(def) => {
                for e in txn.open_table(*def)?.iter()? {
                    let (k, v) = e?;
                    s.entry(k.value(), v.value())?;
                }
            }
            Table::Num(def) => {
                for e in txn.open_table(*def)?.iter()? {
                    let (k, v) = e?;
                    s.entry(k.value(), &v.value().to_be_bytes())?;
                }
            }
            Table::ByHeight(def) => {
                for e in txn.open_table(*def)?.iter()? {
                    let (k, v) = e?;
                    s.entry(&k.value().to_be_bytes(), v.value())?;
                }
            }
            Table::Config => {
                for e in txn.open_table(CONFIG)?.iter()? {
                    let (k, v) = e?;
                    s.entry(k.value().as_bytes(), v.value())?;
                }
            }
            Table::Recent => {
                let from = height.saturating_sub(MAX_LIFETIME).max(1);
                for e in txn.open_table(HASHES)?.range(from..=height)? {
                    let (k, v) = e?;
                    s.entry(&k.value().to_be_bytes(), v.value())?;
                }
            }
        }
        s.put(&[0])?;
    }
    s.put(&[0])?;
    Ok((Hash(*s.hash.finalize().as_bytes()), s.size))
}

/// Reads a snapshot's bytes, each length bounded before it is allocated.
struct Source<'a> {
    input: &'a mut dyn Read,
    path: &'a Path,
}

impl Source<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.input.read_exact(&mut b).map_err(io(self.path))?;
        Ok(b)
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        if n > max {
            return Err(Error::Snapshot(format!("a field of {n} bytes, at most {max}")));
        }
        let mut v = vec![0u8; n];
        self.input.read_exact(&mut v).map_err(io(self.path))?;
        Ok(v)
    }
}

fn num(v: &[u8], what: &str) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| Error::Snapshot(format!("{what}: not 8 bytes")))?))
}

/// Put the snapshot read from `input` into `txn`'s tables (each emptied first).
fn load(txn: &WriteTransaction, chain: Hash, height: u64, input: &mut dyn Read, path: &Path) -> Result<()> {
    let mut s = Source { input, path };
    if s.array::<{ DOMAIN.len() }>()? != DOMAIN {
        return Err(Error::Snapshot("not an ionshard ledger snapshot".into()));
    }
    if Hash(s.array()?) != chain || u64::from_be_bytes(s.array()?) != height {
        return Err(Error::Snapshot("the snapshot is of another chain or height than offered".into()));
    }
    let mut last = 0u8;
    loop {
        let [tag] = s.array()?;
        if tag == 0 {
            break;
        }
        let Some((_, table)) = TABLES.iter().find(|(t, _)| *t == tag).filter(|_| tag > last) else {
            return Err(Error::Snapshot(format!("table {tag} is unknown or out of order")));
        };
        last = tag;
        let mut entries = Vec::new();
        loop {
            match s.array::<1>()? {
                [0] => break,
                [1] => entries.push((s.bytes(MAX_KEY)?, s.bytes(MAX_VALUE)?)),
                [m] => return Err(Error::Snapshot(format!("entry marker {m}"))),
            }
            if entries.len() >= 4096 {
                put(txn, *table, &std::mem::take(&mut entries), tag, height)?;
            }
        }
        put(txn, *table, &entries, tag, height)?;
    }
    let mut rest = [0u8; 1];
    if s.input.read(&mut rest).map_err(io(path))? != 0 {
        return Err(Error::Snapshot("bytes after the snapshot's end".into()));
    }
    Ok(())
}

fn put(txn: &WriteTransaction, table: Table, entries: &[(Vec<u8>, Vec<u8>)], tag: u8, height: u64) -> Result<()> {
    match table {
        Table::Blob(def) => {
            let mut t = txn.open_table(def)?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        Table::Num(def) => {
            let mut t = txn.open_table(def)?;
            for (k, v) in entries {
                t.insert(k.as_slice(), num(v, "a number")?)?;
            }
        }
        Table::ByHeight(def) => {
            let mut t = txn.open_table(def)?;
            for (k, v) in entries {
                t.insert(num(k, "a height")?, v.as_slice())?;
            }
        }
        Table::Config => {
            let mut t = txn.open_table(CONFIG)?;
            for (k, v) in entries {
                let k =
                    std::str::from_utf8(k).map_err(|_| Error::Snapshot(format!("table {tag}: a name not UTF-8")))?;
                t.insert(k, v.as_slice())?;
            }
        }
        Table::Recent => {
            let mut t = txn.open_table(HASHES)?;
            for (k, v) in entries {
                let h = num(k, "a height")?;
                if h > height || v.len() != 32 {
                    return Err(Error::Snapshot(format!("a block hash at {h}, past the snapshot or not 32 bytes")));
                }
                t.insert(h, v.as_slice())?;
            }
        }
    }
    Ok(())
}

/// Empty every table a snapshot fills (a store about to take one).
fn clear(txn: &WriteTransaction) -> Result<()> {
    for (_, table) in TABLES {
        match table {
            Table::Blob(def) => txn.open_table(*def)?.retain(|_, _| false)?,
            Table::Num(def) => txn.open_table(*def)?.retain(|_, _| false)?,
            Table::ByHeight(def) => txn.open_table(*def)?.retain(|_, _| false)?,
            Table::Config => txn.open_table(CONFIG)?.retain(|_, _| false)?,
            Table::Recent => txn.open_table(HASHES)?.retain(|_, _| false)?,
        }
    }
    Ok(())
}

fn file_of(dir: &Path, height: u64) -> PathBuf {
    dir.join(format!("{height:020}.snap"))
}

/// A snapshot written inside a block's transaction, to be put in place
/// once that transaction is committed.
pub(crate) struct Pending {
    tmp: PathBuf,
    dir: PathBuf,
    height: u64,
}

/// At a snapshot height, write the state as `txn` holds it (block `height`
/// applied) beside the store and record its digest. The file is put in
/// place by [`Pending::publish`] after `txn` commits: a crash between the
/// two leaves a temporary file that is never served.
pub(crate) fn write(txn: &WriteTransaction, store_dir: &Path, chain: Hash, height: u64) -> Result<Option<Pending>> {
    let dir = store_dir.join("snapshots");
    let tmp = dir.join(format!(".{height}.tmp"));
    let to_file = || -> Result<(Hash, u64)> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let out = dump(txn, chain, height, &mut w, &tmp)?;
        let file = w.into_inner().map_err(|e| Error::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        Ok(out)
    };
    // A file that cannot be written (a full disk) must not stop the block:
    // the digest is still computed, so this node checks checkpoints as the
    // others do; it only offers no snapshot of this height.
    let (digest, size, pending) = match to_file() {
        Ok((d, n)) => (d, n, Some(Pending { tmp, dir, height })),
        Err(Error::Io { path, source }) => {
            tracing::warn!("the snapshot after block {height} is not kept ({}: {source})", path.display());
            let _ = std::fs::remove_file(&tmp);
            let (d, n) = dump(txn, chain, height, &mut std::io::sink(), &tmp)?;
            (d, n, None)
        }
        Err(e) => return Err(e),
    };
    let mut v = digest.0.to_vec();
    v.extend_from_slice(&size.to_be_bytes());
    txn.open_table(CHECKPOINTS)?.insert(height, v.as_slice())?;
    Ok(pending)
}

impl Pending {
    /// Put the file in place and keep only the newest [`KEEP`].
    pub(crate) fn publish(self) -> Result<()> {
        let to = file_of(&self.dir, self.height);
        std::fs::rename(&self.tmp, &to).map_err(io(&to))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let mut held: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        held.sort();
        let drop = held.len().saturating_sub(KEEP);
        for old in &held[..drop] {
            let _ = std::fs::remove_file(old);
        }
        // Left by a crash between a block's commit and this rename: never offered, never needed.
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') && name.to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// What a node offers to start from: the snapshot's height and size, and
/// the proof of the block holding its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The block the snapshot follows.
    pub height: u64,
    /// Its bytes.
    pub size: u64,
    /// The checkpoint transaction, its block and that block's certificate.
    pub proof: Proof,
}

impl Offer {
    /// Its bytes (an answer to [`crate::Question::Snapshot`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.height).u64(self.size).bytes(&self.proof.encode());
        w.finish()
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Offer> {
        let height = r.u64()?;
        let size = r.u64()?;
        let proof = Proof::decode(r.bytes(MAX_PROOF)?)?;
        Ok(Offer { height, size, proof })
    }

    /// The digest the checkpoint names (it names the size too: the offer's must be the same).
    pub fn digest(&self) -> Result<Hash> {
        match &self.proof.tx.body {
            Body::Checkpoint { height, state, size } if *height == self.height && *size == self.size => {
                Ok(Hash(*state))
            }
            _ => Err(Error::Snapshot(format!(
                "the proof is not of a checkpoint of {} bytes at height {}",
                self.size, self.height
            ))),
        }
    }

    /// Check the offer against the producer sets `changes` show from
    /// `genesis`: the checkpoint is in a block certified by the producers
    /// of its height, and names this height. Returns the digest.
    pub fn check(&self, genesis: &Genesis, changes: &[SetChange]) -> Result<Hash> {
        if self.size > MAX_SNAPSHOT_BYTES || self.height == 0 {
            return Err(Error::Snapshot(format!(
                "a snapshot of {} bytes at height {}: at most {MAX_SNAPSHOT_BYTES}, past height 0",
                self.size, self.height
            )));
        }
        let digest = self.digest()?;
        if self.proof.header.height <= self.height {
            return Err(Error::Snapshot("the checkpoint is in a block before its snapshot".into()));
        }
        let history = crate::sets::follow(genesis, changes)?;
        let set = crate::sets::at(&history, self.proof.header.height);
        self.proof.verify(genesis.hash(), &set).map_err(|e| Error::Snapshot(format!("its checkpoint: {e}")))?;
        Ok(digest)
    }
}

/// Fetching a snapshot into a file: ask for each part in turn, hand each
/// answer over, then [`Download::finish`] checks the whole against the
/// certified digest.
#[derive(Debug)]
pub struct Download {
    offer: Offer,
    digest: Hash,
    path: PathBuf,
    file: BufWriter<File>,
    hash: blake3::Hasher,
    got: u64,
}

impl Download {
    /// Start fetching `offer` (checked: its certified `digest`) into `DIR/snapshots/incoming.tmp`.
    pub fn start(dir: &Path, offer: Offer, digest: Hash) -> Result<Download> {
        let d = dir.join("snapshots");
        std::fs::create_dir_all(&d).map_err(io(&d))?;
        let path = d.join("incoming.tmp");
        let file = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(io(&path))?);
        Ok(Download { offer, digest, path, file, hash: blake3::Hasher::new(), got: 0 })
    }
    /// The next question to ask, or `None`: all bytes are here.
    pub fn next(&self) -> Option<crate::Question> {
        (self.got < self.offer.size).then_some(crate::Question::Part { height: self.offer.height, offset: self.got })
    }
    /// Bytes fetched so far, and of how many.
    pub fn progress(&self) -> (u64, u64) {
        (self.got, self.offer.size)
    }
    /// Take the answer to [`Download::next`]'s question.
    pub fn take(&mut self, part: &[u8]) -> Result<()> {
        // Every part but the last is whole: a peer cannot drip a byte per answer.
        let left = self.offer.size - self.got;
        if part.len() as u64 != left.min(PART_BYTES as u64) {
            return Err(Error::Snapshot(format!(
                "a part of {} bytes at offset {} of {}: the peer no longer has it, or sent too little or too much",
                part.len(),
                self.got,
                self.offer.size
            )));
        }
        self.hash.update(part);
        self.file.write_all(part).map_err(io(&self.path))?;
        self.got += part.len() as u64;
        Ok(())
    }
    /// All bytes are here: check them against the digest; the file's path.
    pub fn finish(self) -> Result<(PathBuf, Offer)> {
        let file = self.file.into_inner().map_err(|e| Error::Io { path: self.path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&self.path))?;
        let got = Hash(*self.hash.finalize().as_bytes());
        if self.got != self.offer.size || got != self.digest {
            let _ = std::fs::remove_file(&self.path);
            return Err(Error::Snapshot(format!(
                "the bytes fetched hash to {}, the certified checkpoint names {}: a forged or damaged snapshot",
                got.to_hex(),
                self.digest.to_hex()
            )));
        }
        Ok((self.path, self.offer))
    }
}

/// Hash a file as a snapshot's digest.
fn digest_of(path: &Path) -> Result<(Hash, u64)> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path).map_err(io(path))?);
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok((Hash(*h.finalize().as_bytes()), n))
}

impl Store {
    fn snapshots(&self) -> PathBuf {
        self.dir().join("snapshots")
    }

    /// The snapshot height a checkpoint may name in block `height`, and
    /// whether the chain has it yet: `(cp, recorded)`; `None` before the first.
    fn due(&self, txn: &redb::ReadTransaction, height: u64) -> Result<Option<(u64, bool)>> {
        let every = txn
            .open_table(CONFIG)?
            .get("snapshot_every")?
            .map(|v| num(v.value(), "snapshot_every"))
            .transpose()?
            .unwrap_or(0);
        if every == 0 {
            return Ok(None);
        }
        let cp = height.saturating_sub(1) / every * every;
        if cp == 0 {
            return Ok(None);
        }
        Ok(Some((cp, txn.open_table(CHECKPOINTED)?.get(cp)?.is_some())))
    }

    /// The checkpoint block `height`'s proposer should include: the
    /// newest snapshot height, when not on the chain yet, with this node's digest.
    pub(crate) fn checkpoint_due(&self, height: u64) -> Result<Option<(u64, [u8; 32], u64)>> {
        let txn = self.begin_read()?;
        let Some((cp, false)) = self.due(&txn, height).map_err(|e| self.wrap(e))? else { return Ok(None) };
        Ok(self.mine(&txn, cp)?.map(|(d, size)| (cp, d, size)))
    }

    /// The digest and size this node computed for snapshot `cp`.
    fn mine(&self, txn: &redb::ReadTransaction, cp: u64) -> Result<Option<([u8; 32], u64)>> {
        let t = txn.open_table(CHECKPOINTS).map_err(|e| self.err(e))?;
        let v = t.get(cp).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| {
            let v = v.value();
            Some((v.get(..32)?.try_into().ok()?, u64::from_be_bytes(v.get(32..40)?.try_into().ok()?)))
        }))
    }

    /// Check a checkpoint `signer` offers for block `height`: a producer of
    /// that height names the newest snapshot height, not on the chain yet,
    /// with the digest this node computed itself.
    pub(crate) fn check_checkpoint(
        &self,
        height: u64,
        signer: &PeerId,
        cp: u64,
        digest: &[u8; 32],
        size: u64,
    ) -> Result<()> {
        use crate::error::TxError::Invalid;
        if !self.set_at(height)?.contains(signer) {
            return Err(
                Invalid(format!("{signer} is not a producer at height {height}: only producers checkpoint")).into()
            );
        }
        let txn = self.begin_read()?;
        match self.due(&txn, height).map_err(|e| self.wrap(e))? {
            None => return Err(Invalid("this chain makes no snapshot before this height".into()).into()),
            Some((due, _)) if due != cp => {
                return Err(Invalid(format!("a checkpoint in block {height} names snapshot {due}, not {cp}")).into());
            }
            Some((_, true)) => return Err(Invalid(format!("snapshot {cp} is checkpointed already")).into()),
            Some(_) => {}
        }
        match self.mine(&txn, cp)? {
            Some((d, n)) if d == *digest && n == size => Ok(()),
            Some((d, n)) => Err(Invalid(format!(
                "the state after block {cp} is {} ({n} bytes) here, not {} ({size} bytes)",
                Hash(d).to_hex(),
                Hash(*digest).to_hex()
            ))
            .into()),
            None => Err(Invalid(format!("this node holds no digest of the state after block {cp}")).into()),
        }
    }

    /// The newest snapshot this node can offer: its checkpoint is on the
    /// chain in a block held here, and its file is here.
    pub fn offer(&self) -> Result<Option<Offer>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(CHECKPOINTED).map_err(|e| self.err(e))?;
        for e in t.iter().map_err(|e| self.err(e))?.rev() {
            let (k, v) = e.map_err(|e| self.err(e))?;
            let (cp, v) = (k.value(), v.value());
            let (Some(block), Some(index)) = (v.get(32..40), v.get(40..44)) else { continue };
            let block = u64::from_be_bytes(block.try_into().unwrap_or_default());
            let index = u32::from_be_bytes(index.try_into().unwrap_or_default()) as usize;
            // Offer only what the chain certified: this node's own digest must be the recorded one.
            let Some((own, size)) = self.mine(&txn, cp)? else { continue };
            if v.get(..32) != Some(own.as_slice()) || !file_of(&self.snapshots(), cp).is_file() {
                continue;
            }
            let Some((b, c)) = self.block_at(block)? else { continue };
            return Ok(Some(Offer { height: cp, size, proof: crate::proof::prove(&b, &c, index, None)? }));
        }
        Ok(None)
    }

    /// Up to [`PART_BYTES`] of snapshot `height` from `offset` (empty: not held).
    pub fn part(&self, height: u64, offset: u64) -> Vec<u8> {
        let path = file_of(&self.snapshots(), height);
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::with_capacity(PART_BYTES);
            f.take(PART_BYTES as u64).read_to_end(&mut out)?;
            Ok(out)
        };
        read().unwrap_or_default()
    }

    /// The height this store started from, when it started from a snapshot.
    pub fn started_from(&self) -> Result<Option<u64>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(crate::store::META).map_err(|e| self.err(e))?;
        let v = t.get("snapshot").map_err(|e| self.err(e))?;
        v.map(|v| num(v.value(), "the snapshot height")).transpose()
    }

    /// Start this (empty) store from the snapshot at `path`: its digest
    /// must be the one `offer` certifies, `block` and `certificate` the
    /// block it follows (its hash is the snapshot's own), and `changes`
    /// the producer-set changes up to it (kept to serve light clients).
    /// One synced transaction: a crash leaves the store empty.
    pub fn import(
        &self,
        path: &Path,
        offer: &Offer,
        block: &Block,
        certificate: &Certificate,
        changes: &[SetChange],
    ) -> Result<()> {
        if self.height()? != 0 {
            return Err(Error::Snapshot(format!(
                "{} holds blocks already: a snapshot starts an empty store only",
                self.dir().display()
            )));
        }
        let (digest, size) = digest_of(path)?;
        if digest != offer.digest()? || size != offer.size {
            return Err(Error::Snapshot(format!("{} is not the snapshot the checkpoint certifies", path.display())));
        }
        let chain = self.chain()?;
        let txn = self.begin_write()?;
        let go = || -> Result<()> {
            clear(&txn)?;
            let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(io(path))?);
            load(&txn, chain, offer.height, &mut input, path)?;
            let held = txn.open_table(HASHES)?.get(offer.height)?.map(|v| v.value().to_vec());
            if block.height != offer.height || held.as_deref() != Some(block.hash().0.as_slice()) {
                return Err(Error::Snapshot(format!("block {} is not the block the snapshot follows", block.height)));
            }
            // The block's certificate is served on (sync answers, set changes): it must hold.
            let set_at = |h: u64| -> Result<Vec<PeerId>> {
                let t = txn.open_table(state::SETS)?;
                let last = t.range(..=h)?.next_back().transpose()?.map(|(_, v)| v.value().to_vec());
                last.map(|v| state::decode_peers(&v)).transpose().map(Option::unwrap_or_default)
            };
            let set = crate::ValidatorSet::new(
                set_at(block.height)?.into_iter().filter_map(|p| crate::ctx::validator(p, 1)).collect(),
                Hash::default(),
            );
            if certificate.height.0 != block.height || certificate.value_id != block.hash() {
                return Err(Error::Snapshot(format!("the certificate offered is not block {}'s", block.height)));
            }
            crate::cert::verify(chain, certificate, &set)
                .map_err(|e| Error::Snapshot(format!("block {}'s certificate: {e}", block.height)))?;
            // Every change of the producers up to here must be shown (by a
            // recovery in the state, or by a change the peer gave), so this
            // node can show light clients what it was shown.
            let sets: Vec<(u64, Vec<u8>)> = txn
                .open_table(state::SETS)?
                .range(2..=block.height)?
                .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())))
                .collect::<std::result::Result<_, _>>()?;
            let recovered = txn.open_table(state::RECOVERIES)?;
            for (from, peers) in sets {
                let peers = state::decode_peers(&peers)?;
                let shown = changes.iter().any(|c| c.from == from && c.producers == peers);
                if !shown && recovered.get(from)?.is_none() {
                    return Err(Error::Snapshot(format!("the producers' change at height {from} was not shown")));
                }
            }
            drop(recovered);
            txn.open_table(crate::store::BLOCKS)?.insert(block.height, block.encode().as_slice())?;
            txn.open_table(crate::store::CERTS)?.insert(block.height, crate::cert::encode(certificate).as_slice())?;
            // Nothing of another history: no log to replay, no missed slots counted.
            txn.open_table(crate::store::WAL)?.retain(|_, _| false)?;
            txn.open_table(crate::store::MISSED)?.retain(|_, _| false)?;
            let mut v = digest.0.to_vec();
            v.extend_from_slice(&size.to_be_bytes());
            txn.open_table(CHECKPOINTS)?.insert(offer.height, v.as_slice())?;
            let mut proofs = txn.open_table(SETPROOFS)?;
            for c in changes.iter().filter(|c| c.from <= offer.height) {
                proofs.insert(c.from, c.encode().as_slice())?;
            }
            txn.open_table(crate::store::META)?.insert("snapshot", offer.height.to_be_bytes().as_slice())?;
            Ok(())
        };
        go().map_err(|e| self.wrap(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        // Keep it to offer in turn.
        let to = file_of(&self.snapshots(), offer.height);
        std::fs::rename(path, &to).map_err(io(&to))?;
        let dir = self.snapshots();
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok(())
    }

    /// The set changes kept from a snapshot (from → change).
    pub(crate) fn set_proofs(&self) -> Result<Vec<SetChange>> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(SETPROOFS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for e in t.iter().map_err(|e| self.err(e))? {
            out.push(SetChange::decode(e.map_err(|e| self.err(e))?.1.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;
    use malachite_types::{CommitCertificate, CommitSignature, NilOrVal, Round, VoteType};

    use super::*;
    use crate::ctx::{Address, Height, Signature, Vote};
    use crate::error::TxError;
    use crate::genesis::{Params, Producer};
    use crate::tx::Tx;
    use crate::validate::check_tx;

    struct World {
        genesis: Genesis,
        keys: Vec<Keypair>,
    }

    fn world() -> World {
        let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate_ed25519()).collect();
        let genesis = Genesis {
            version: crate::GENESIS_VERSION,
            name: "snap".into(),
            time_ms: 0,
            producers: keys
                .iter()
                .map(|k| {
                    let id = k.public().to_peer_id();
                    Producer { peer: id.to_string(), addr: format!("/ip4/127.0.0.1/tcp/1/p2p/{id}"), stake: 1000 }
                })
                .collect(),
            params: Params { producers: 4, maintenance: 50, delay: 2, snapshot_every: 4, ..Params::default() },
            accounts: vec![],
            admins: vec![keys[0].public().to_peer_id().to_string()],
            admin_threshold: 1,
        };
        World { genesis, keys }
    }

    fn opened(w: &World) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), w.genesis.hash()).expect("store");
        store.seed(&w.genesis).expect("seed");
        (dir, store)
    }

    /// Precommits of `signers` for `block`.
    fn certify(w: &World, signers: usize, block: &Block) -> Certificate {
        let chain = w.genesis.hash();
        let epoch = w.genesis.validators(Hash::default()).hash();
        let sigs = w.keys[..signers]
            .iter()
            .map(|k| {
                let a = Address(k.public().to_peer_id());
                let v = Vote {
                    kind: VoteType::Precommit,
                    height: Height(block.height),
                    round: Round::new(0),
                    value: NilOrVal::Val(block.hash()),
                    validator: a,
                };
                CommitSignature::new(a, Signature(k.sign(&v.signed_bytes(chain, epoch)).expect("sign")))
            })
            .collect();
        CommitCertificate {
            height: Height(block.height),
            round: Round::new(0),
            value_id: block.hash(),
            commit_signatures: sigs,
        }
    }

    /// The next block on `store` holding `txs`, checked as a producer checks it.
    fn block(w: &World, store: &Store, txs: Vec<Tx>) -> Block {
        let h = store.height().expect("height") + 1;
        let b = Block {
            chain: w.genesis.hash(),
            height: h,
            parent: store.hash_at(h - 1).expect("read").unwrap_or(w.genesis.hash()),
            time_ms: h,
            proposer: w.keys[0].public().to_peer_id(),
            next_set: crate::state::set_hash(&store.set_at(h + 1).expect("set")),
            txs,
        };
        for t in &b.txs {
            check_tx(store, w.genesis.hash(), h, t).expect("the transaction checks");
        }
        b
    }

    fn tx(w: &World, store: &Store, key: &Keypair, body: Body) -> Tx {
        let h = store.height().expect("height");
        let at = store.hash_at(h).expect("read").unwrap_or(w.genesis.hash());
        Tx::sign(key, w.genesis.hash(), (h, at), 20, body).expect("sign")
    }

    /// A chain up to block 5: a registry record in block 2, snapshot 4,
    /// its checkpoint in block 5. Returns the blocks and certificates.
    fn chain(w: &World, store: &Store) -> Vec<(Block, Certificate)> {
        let mut out = Vec::new();
        for h in 1..=5u64 {
            let txs = match h {
                2 => {
                    let maker = Keypair::generate_ed25519().public().to_peer_id();
                    vec![tx(
                        w,
                        store,
                        &w.keys[0],
                        Body::Admit { manufacturer: maker, name: "Acme".into(), admit: true },
                    )]
                }
                5 => {
                    let (cp, state, size) = store.checkpoint_due(5).expect("due").expect("a checkpoint is due");
                    assert_eq!(cp, 4);
                    vec![tx(w, store, &w.keys[1], Body::Checkpoint { height: cp, state, size })]
                }
                _ => Vec::new(),
            };
            let b = block(w, store, txs);
            let c = certify(w, 3, &b);
            store.commit(&b, &c, &[], &w.genesis).expect("commit");
            out.push((b, c));
        }
        out
    }

    fn fetch(from: &Store, to: &Path, offer: &Offer, digest: Hash) -> Result<(PathBuf, Offer)> {
        let mut d = Download::start(to, offer.clone(), digest)?;
        let mut asked = 0;
        while let Some(crate::Question::Part { height, offset }) = d.next() {
            asked += 1;
            assert!(asked < 1000, "bounded");
            d.take(&from.part(height, offset))?;
        }
        d.finish()
    }

    #[test]
    fn a_new_node_starts_from_a_certified_snapshot_and_reaches_the_same_state() {
        let w = world();
        let (_a_dir, a) = opened(&w);
        let blocks = chain(&w, &a);
        let offer = a.offer().expect("offer").expect("an offer once the checkpoint is final");
        assert_eq!((offer.height, offer.proof.header.height), (4, 5));
        let offer = Offer::decode(&mut Reader::new(&offer.encode(), "offer")).expect("round trip");
        let digest = offer.check(&w.genesis, &[]).expect("the offer checks against the genesis producers");

        let b_dir = tempfile::tempdir().expect("tempdir");
        let b = Store::open(b_dir.path(), w.genesis.hash()).expect("store");
        let (path, offer) = fetch(&a, b_dir.path(), &offer, digest).expect("fetch");
        let (b4, c4) = &blocks[3];
        b.import(&path, &offer, b4, c4, &[]).expect("import");
        assert_eq!(b.height().expect("height"), 4);
        assert_eq!(b.started_from().expect("read"), Some(4));
        assert!(b.block_at(2).expect("read").is_none(), "no block before the snapshot is held");
        let admit = &blocks[1].0.txs[0];
        assert_eq!(b.tx_at(&admit.id()).expect("read"), a.tx_at(&admit.id()).expect("read"));
        assert_eq!(
            check_tx(&b, w.genesis.hash(), 5, admit).map_err(|e| e.to_string()),
            Err(crate::Error::Tx(TxError::Replayed).to_string()),
            "a replay is refused without the block that held it"
        );
        // The same blocks after it lead both to the same next snapshot.
        let (b5, c5) = &blocks[4];
        b.commit(b5, c5, &[], &w.genesis).expect("commit 5");
        for _ in 6..=8 {
            let next = block(&w, &a, Vec::new());
            let c = certify(&w, 3, &next);
            a.commit(&next, &c, &[], &w.genesis).expect("commit on a");
            b.commit(&next, &c, &[], &w.genesis).expect("commit on b");
        }
        let digest_at = |s: &Store| s.checkpoint_due(9).expect("due").map(|(_, d, n)| (d, n));
        assert!(digest_at(&a).is_some());
        assert_eq!(digest_at(&a), digest_at(&b), "the two nodes' states agree after block 8");
        // An offer from the new node is one an even newer node can take.
        assert_eq!(b.offer().expect("offer").map(|o| o.height), Some(4));
    }

    #[test]
    fn a_snapshot_with_one_byte_changed_is_refused() {
        let w = world();
        let (a_dir, a) = opened(&w);
        chain(&w, &a);
        let offer = a.offer().expect("offer").expect("offer");
        let digest = offer.check(&w.genesis, &[]).expect("check");
        let file = file_of(&a_dir.path().join("snapshots"), 4);
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).expect("write");
        let b_dir = tempfile::tempdir().expect("tempdir");
        let err = fetch(&a, b_dir.path(), &offer, digest).expect_err("a changed byte must not pass");
        assert!(err.to_string().contains("forged or damaged"), "{err}");
        assert!(!b_dir.path().join("snapshots/incoming.tmp").exists(), "nothing half-fetched is left");
    }

    #[test]
    fn a_peer_lying_about_the_size_dripping_parts_or_the_block_certificate_is_refused() {
        let w = world();
        let (_d, a) = opened(&w);
        let blocks = chain(&w, &a);
        let offer = a.offer().expect("offer").expect("offer");
        let mut bigger = offer.clone();
        bigger.size += 1 << 30;
        assert!(bigger.check(&w.genesis, &[]).is_err(), "the size is certified with the digest");
        let digest = offer.check(&w.genesis, &[]).expect("check");
        let b_dir = tempfile::tempdir().expect("tempdir");
        let mut d = Download::start(b_dir.path(), offer.clone(), digest).expect("start");
        assert!(d.take(&a.part(4, 0)[..1]).is_err(), "one byte of a whole part");
        let (path, offer) = fetch(&a, b_dir.path(), &offer, digest).expect("fetch");
        let b = Store::open(b_dir.path(), w.genesis.hash()).expect("store");
        let (b4, _) = &blocks[3];
        let weak = certify(&w, 2, b4);
        let err = b.import(&path, &offer, b4, &weak, &[]).expect_err("a certificate of 2 of 4");
        assert!(err.to_string().contains("certificate"), "{err}");
        assert_eq!(b.height().expect("height"), 0, "nothing was imported");
        let (b3, c3) = &blocks[2];
        assert!(b.import(&path, &offer, b3, c3, &[]).is_err(), "another block than the snapshot's");
    }

    #[test]
    fn an_offer_whose_checkpoint_block_lacks_two_thirds_is_refused() {
        let w = world();
        let (_d, a) = opened(&w);
        let blocks = chain(&w, &a);
        let mut offer = a.offer().expect("offer").expect("offer");
        offer.proof.certificate = certify(&w, 2, &blocks[4].0);
        let err = offer.check(&w.genesis, &[]).expect_err("2 of 4 is not enough");
        assert!(err.to_string().contains("voting power"), "{err}");
        // A checkpoint for another height than the one offered.
        let mut other = a.offer().expect("offer").expect("offer");
        other.height = 8;
        assert!(other.check(&w.genesis, &[]).is_err());
    }

    #[test]
    fn a_checkpoint_naming_another_state_or_from_a_stranger_is_refused_by_producers() {
        let w = world();
        let (_d, a) = opened(&w);
        for _ in 1..=4 {
            let b = block(&w, &a, Vec::new());
            a.commit(&b, &certify(&w, 3, &b), &[], &w.genesis).expect("commit");
        }
        let (cp, state, size) = a.checkpoint_due(5).expect("due").expect("due");
        let mut wrong = state;
        wrong[0] ^= 1;
        let lie = tx(&w, &a, &w.keys[1], Body::Checkpoint { height: cp, state: wrong, size });
        let err = check_tx(&a, w.genesis.hash(), 5, &lie).expect_err("another digest");
        assert!(err.to_string().contains("here, not"), "{err}");
        let stranger = Keypair::generate_ed25519();
        let odd = tx(&w, &a, &stranger, Body::Checkpoint { height: cp, state, size });
        assert!(
            check_tx(&a, w.genesis.hash(), 5, &odd).expect_err("a stranger").to_string().contains("not a producer")
        );
        let early = tx(&w, &a, &w.keys[1], Body::Checkpoint { height: 3, state, size });
        let bigger = tx(&w, &a, &w.keys[1], Body::Checkpoint { height: cp, state, size: size + 1 });
        assert!(check_tx(&a, w.genesis.hash(), 5, &bigger).is_err(), "another size");
        assert!(check_tx(&a, w.genesis.hash(), 5, &early).is_err());
        let fine = tx(&w, &a, &w.keys[1], Body::Checkpoint { height: cp, state, size });
        check_tx(&a, w.genesis.hash(), 5, &fine).expect("the true digest passes");
    }
}
