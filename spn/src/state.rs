//! The SPN's state in redb: tenants' secrets, objects and their manifests,
//! where each shard is, receipts, jobs and what each job placed, shards to
//! delete, peers, vendors and their roots, products, releases, timestamps and
//! API tokens. Every change is one redb transaction, so a kill leaves the
//! state before or after it.
//!
//! Layout format 10 (this release; `meta` table, key `format`). Format 10
//! keeps each release's patch table (`patches`: the patches of its changed
//! chunks against its predecessor's, issue 17); a format 9 state is opened
//! as it is and gains the table. An earlier build must refuse a format 10
//! state: it would delete objects and leave their patch tables behind.
//! Format 9
//! keeps deleted objects and their peers' signed delete acknowledgements
//! (`deletions`, `deletion_acks`, a queued delete's `object`, and
//! `anchor_deletion_queue` with batches of kind `deletions`, see
//! `state/deletions.rs`); a format 8 state is opened as it is and gains the
//! tables. An earlier build must refuse a format 9 state: it would finish
//! an object's deletes without keeping their acknowledgements. Format 8
//! adds contribution points: `anchor_credited` (per peer and shard, the end
//! of the term credited) and, in each batch's record, its points
//! transactions; and batches of audit results (`anchor_audit_queue`, a
//! batch's `kind`); a format 7 state is opened as it is and gains the table
//! (its final batches are credited then). An earlier build refuses a
//! format 8 state: it would make batches it never credits. Format 7
//! adds receipt batches for the ledger (`anchor_queue`, `anchor_batches`,
//! `anchor_items`, `anchor_index`, see `state/anchors.rs`); a format 6
//! state is opened as it is and gains the tables. An earlier build must
//! refuse a format 7 state: it would sign receipts it never queues for
//! anchoring, and the chain would miss them. Format 6
//! adds the fleet (`fleet_hosts`, `fleet_runs`: backup hosts' reports and
//! the runs asked of them, see `state/fleet.rs`); a format 5 state is opened
//! as it is and gains the tables. An earlier build must refuse a format 6
//! state (it would drop a fleet it cannot see), hence the bump. Format 5
//! gives tokens a scope (`full`, or `append` for backup hosts' put-only
//! keys), jobs the append token that opened them, and records who wrote
//! them (`record_meta`); a format 4 token reads as full, so a format 4 state is opened as
//! it is. The bump matters: an earlier build would take an append token
//! for a full one, so it must refuse a format 5 state. Format 4
//! adds the `records` table (tenants' opaque records) and objects a client
//! encoded (no read key: `read_key` empty, `product` empty); a format 3
//! state is opened as it is and gains the table. Format 3
//! adds the repair journal and counters, and fields of peers (heartbeats,
//! audits, where they were seen) and objects (placement version) that read
//! as empty from a format 2 state, so a format 2 state is opened as it is.
//! Format 1 (no `meta` table) is migrated on open: the new tables are
//! made, and releases kept by a format 1 SPN, whose signatures nobody
//! checked, are marked unverified until their vendor registers its root. The file is mode 0600
//! in a 0700 directory: it holds tenants' secrets and every read key.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const PLACEMENT: TableDefinition<&str, &[u8]> = TableDefinition::new("placement");
const RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("receipts");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `JOB(20 digits)/CID/PEER` → empty: shards a job is putting or has put, written
/// before each put is sent (a peer may store a shard whose receipt never comes
/// back), until the job's object is saved.
const JOB_SHARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_shards");
/// `CID/PEER` → a [`DeleteRecord`]: shards to delete from peers (owner delete), retried until done.
const DELETES: TableDefinition<&str, &[u8]> = TableDefinition::new("deletes");
/// `CID/PEER` → empty: shards a repair is putting, written before each put
/// is sent, removed with the placement its receipt records (format 3).
const REPAIRS: TableDefinition<&str, &[u8]> = TableDefinition::new("repairs");
/// Counters: `shards_repaired`, `repair_bytes` (read and written),
/// `bytes_lost` (shard bytes that had to be rebuilt), `audit_bytes` (format 3).
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
/// Manifest CID → the release's patch table, sealed with its read key
/// (format 10): patches of its changed chunks against its predecessor's.
const PATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("patches");

/// The state's layout version (see the module docs).
pub(crate) const STATE_FORMAT: u64 = 10;

mod anchors;
mod deletions;
mod encoded;
mod fleet;
mod registry;
pub(crate) use anchors::{AUDITS, AuditResult};
pub(crate) use deletions::{DELETIONS, Outcome};
pub(crate) use encoded::RecordMeta;
pub(crate) use fleet::Reported;
pub use proto::api::{JobRecord, JobResult, JobState, ObjectRecord, PeerRecord};
pub(crate) use registry::{RootRecord, TokenRecord, VendorRecord};

/// A published release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// `product@version`.
    pub id: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Signed release JSON.
    pub release: String,
    /// Signed roots after version 1.
    pub roots: Vec<String>,
    /// Manifest CID.
    pub manifest: String,
    /// Seconds since the epoch.
    pub published: u64,
    /// The vendor (empty in records of a format 1 SPN until migrated).
    #[serde(default)]
    pub vendor: String,
    /// Hardware revisions it fits.
    #[serde(default)]
    pub hardware: Vec<String>,
    /// Image BLAKE3, hex.
    #[serde(default)]
    pub blake3: String,
    /// Checked against the vendor's registered root (false for releases a
    /// format 1 SPN kept unchecked, until the vendor registers).
    #[serde(default)]
    pub verified: bool,
    /// Withdrawn by the vendor (or found not to verify), and why; never served.
    #[serde(default)]
    pub withdrawn: Option<String>,
}

/// A shard to delete from a peer (its job failed), retried until the peer says so.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DeleteRecord {
    /// Seconds since the epoch when it was queued.
    pub(crate) since: u64,
    /// Attempts so far.
    pub(crate) attempts: u64,
    /// The last failure.
    pub(crate) last_error: Option<String>,
    /// The deleted object it is for (format 9), whose outcome is kept as
    /// one of the object's acknowledgements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) object: Option<String>,
}

impl DeleteRecord {
    /// Queued now, for `object`'s deletion or none.
    pub(crate) fn new(now: u64, object: Option<&str>) -> DeleteRecord {
        DeleteRecord { since: now, attempts: 0, last_error: None, object: object.map(str::to_string) }
    }
}

/// The database.
pub(crate) struct State {
    db: Database,
    /// Queue every receipt recorded for the ledger's batches (an SPN that anchors).
    anchoring: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

/// The journal keys of `job`.
fn job_keys(t: &impl ReadableTable<&'static str, &'static [u8]>, job: u64) -> Result<Vec<String>> {
    let lo = format!("{job:020}/");
    let hi = format!("{job:020}0"); // '0' follows '/'
    let mut keys = Vec::new();
    for e in t.range(lo.as_str()..hi.as_str())? {
        keys.push(e?.0.value().to_string());
    }
    Ok(keys)
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Db(format!("damaged {what} record: {e}")))
}

impl State {
    /// Open or create `DIR/spn.redb` (mode 0600, `DIR` 0700), migrating a
    /// format 1 state.
    pub(crate) fn open(dir: &Path) -> Result<State> {
        crate::private_dir(dir)?;
        let path = dir.join("spn.redb");
        crate::private_file(&path)?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(dir.display().to_string()),
            e => Error::Database(e.into()),
        })?;
        let txn = db.begin_write()?;
        let format = {
            let mut meta = txn.open_table(META)?;
            let format = meta.get("format")?.map(|v| v.value());
            if format.is_some_and(|f| f > STATE_FORMAT) {
                return Err(Error::Db(format!(
                    "{} is state format {}, newer than this build reads ({STATE_FORMAT}); run the newer ionshard",
                    path.display(),
                    format.unwrap_or_default()
                )));
            }
            meta.insert("format", STATE_FORMAT)?;
            format
        };
        txn.open_table(TENANTS)?;
        txn.open_table(OBJECTS)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(PLACEMENT)?;
        txn.open_table(RECEIPTS)?;
        txn.open_table(JOBS)?;
        txn.open_table(PEERS)?;
        txn.open_table(JOB_SHARDS)?;
        txn.open_table(DELETES)?;
        txn.open_table(REPAIRS)?;
        txn.open_table(STATS)?;
        txn.open_table(PATCHES)?;
        registry::create_tables(&txn)?;
        encoded::create_tables(&txn)?;
        fleet::create_tables(&txn)?;
        anchors::create_tables(&txn)?;
        deletions::create_tables(&txn)?;
        if format.is_none() {
            registry::migrate_releases(&txn)?;
        }
        txn.commit()?;
        Ok(State { db, anchoring: Default::default() })
    }

    /// Queue receipts for the ledger from now on.
    pub(crate) fn set_anchoring(&self, on: bool) {
        self.anchoring.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn anchors(&self) -> bool {
        self.anchoring.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The tenant's secret, created on first use.
    pub(crate) fn tenant_secret(&self, tenant: &str) -> Result<[u8; 32]> {
        let txn = self.db.begin_write()?;
        let secret = {
            let mut t = txn.open_table(TENANTS)?;
            let existing = t.get(tenant)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v.try_into().map_err(|_| Error::Db("damaged tenant secret".to_string()))?,
                None => {
                    let s: [u8; 32] = rand::random();
                    t.insert(tenant, s.as_slice())?;
                    s
                }
            }
        };
        txn.commit()?;
        Ok(secret)
    }

    /// Save a finished object of `job`: its record and manifest, and the
    /// end of the job's journal, in one transaction. Puts the journal names
    /// that did not end with a receipt (a peer that stored the shard but
    /// timed out, say) go to the delete queue.
    pub(crate) fn put_object(
        &self,
        job: u64,
        rec: &ObjectRecord,
        manifest: &[u8],
        patches: Option<&[u8]>,
        now: u64,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(OBJECTS)?.insert(rec.manifest.as_str(), json(rec).as_slice())?;
        txn.open_table(MANIFESTS)?.insert(rec.manifest.as_str(), manifest)?;
        if let Some(p) = patches {
            txn.open_table(PATCHES)?.insert(rec.manifest.as_str(), p)?;
        }
        {
            let mut j = txn.open_table(JOB_SHARDS)?;
            let placement = txn.open_table(PLACEMENT)?;
            let mut deletes = txn.open_table(DELETES)?;
            let keys = job_keys(&j, job)?;
            for k in keys {
                j.remove(k.as_str())?;
                let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else {
                    continue;
                };
                let holders: Vec<String> = match placement.get(shard)? {
                    Some(v) => parse(v.value(), "placement")?,
                    None => Vec::new(),
                };
                if !holders.iter().any(|h| h == peer) {
                    deletions::queue(&mut deletes, &format!("{shard}/{peer}"), now, None)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A job failed (now, or before a restart): every shard it placed moves
    /// from its journal to the delete queue, and out of the placement table,
    /// in one transaction. Returns how many.
    pub(crate) fn abandon_job(&self, job: u64, now: u64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let keys = job_keys(&txn.open_table(JOB_SHARDS)?, job)?;
        let in_use = if keys.is_empty() { Default::default() } else { encoded::shards_in_use(&txn)? };
        for k in &keys {
            txn.open_table(JOB_SHARDS)?.remove(k.as_str())?;
            let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else {
                continue;
            };
            encoded::drop_and_delete(&txn, &in_use, shard, peer, now, None)?;
        }
        txn.commit()?;
        Ok(keys.len())
    }

    /// Jobs with journaled shards (a job that ended without saving its
    /// object, or was running when the SPN stopped).
    pub(crate) fn journaled_jobs(&self) -> Result<Vec<u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(JOB_SHARDS)?;
        let mut out: Vec<u64> = Vec::new();
        for e in t.iter()? {
            let (k, _) = e?;
            if let Some(job) = k.value().split('/').next().and_then(|j| j.parse().ok())
                && out.last() != Some(&job)
            {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Shards waiting to be deleted from peers: (shard, peer, record).
    pub(crate) fn pending_deletes(&self) -> Result<Vec<(String, String, DeleteRecord)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DELETES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            if let Some((shard, peer)) = k.value().split_once('/') {
                out.push((shard.to_string(), peer.to_string(), parse(v.value(), "delete")?));
            }
        }
        Ok(out)
    }

    /// An object's record.
    pub(crate) fn object(&self, cid: &str) -> Result<Option<ObjectRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        t.get(cid)?.map(|v| parse(v.value(), "object")).transpose()
    }

    /// Every object of a tenant's product, oldest first.
    pub(crate) fn objects_of(&self, tenant: &str, product: &str) -> Result<Vec<ObjectRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (_, v) = e?;
            let r: ObjectRecord = parse(v.value(), "object")?;
            if r.tenant == tenant && r.product == product {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.created);
        Ok(out)
    }

    /// A release's sealed patch table, if it has one.
    pub(crate) fn patches(&self, cid: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PATCHES)?;
        Ok(t.get(cid)?.map(|v| v.value().to_vec()))
    }

    /// An object's manifest bytes.
    pub(crate) fn manifest(&self, cid: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(MANIFESTS)?;
        Ok(t.get(cid)?.map(|v| v.value().to_vec()))
    }

    /// Journal that `job` is about to put these shards on these peers, before
    /// the puts are sent: a job that fails, or an SPN killed during it,
    /// deletes everything its journal names, stored or not.
    pub(crate) fn intend_puts(&self, job: u64, puts: &[(String, String)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut j = txn.open_table(JOB_SHARDS)?;
            for (shard, peer) in puts {
                j.insert(format!("{job:020}/{shard}/{peer}").as_str(), [].as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Record several (shard, peer, receipt) placements in one transaction,
    /// and mark each peer as holding data.
    pub(crate) fn put_placements(&self, placed: &[(String, String, Vec<u8>)]) -> Result<()> {
        if placed.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PLACEMENT)?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            let mut deletes = txn.open_table(DELETES)?;
            let mut records = txn.open_table(PEERS)?;
            for (shard, peer, receipt) in placed {
                let mut peers: Vec<String> = match t.get(shard.as_str())? {
                    Some(v) => parse(v.value(), "placement")?,
                    None => Vec::new(),
                };
                if !peers.iter().any(|p| p == peer) {
                    peers.push(peer.to_string());
                }
                t.insert(shard.as_str(), json(&peers).as_slice())?;
                receipts.insert(format!("{shard}/{peer}").as_str(), receipt.as_slice())?;
                if self.anchors() {
                    anchors::enqueue(&txn, &[receipt.as_slice()])?;
                }
                // A delete queued when an earlier copy there went stale must
                // not remove the one just placed.
                deletes.remove(format!("{shard}/{peer}").as_str())?;
                let rec: Option<PeerRecord> =
                    records.get(peer.as_str())?.map(|v| parse(v.value(), "peer")).transpose()?;
                if let Some(mut p) = rec
                    && !p.held
                {
                    p.held = true;
                    records.insert(peer.as_str(), json(&p).as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Replace the receipts of copies a peer renewed, where the placement
    /// still lists that peer (a copy deleted meanwhile stays deleted: its
    /// queued delete is left alone).
    pub(crate) fn renewed(&self, renewed: &[(String, String, Vec<u8>)]) -> Result<()> {
        if renewed.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let t = txn.open_table(PLACEMENT)?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            for (shard, peer, receipt) in renewed {
                let peers: Vec<String> = match t.get(shard.as_str())? {
                    Some(v) => parse(v.value(), "placement")?,
                    None => continue,
                };
                if peers.iter().any(|p| p == peer) {
                    receipts.insert(format!("{shard}/{peer}").as_str(), receipt.as_slice())?;
                    if self.anchors() {
                        anchors::enqueue(&txn, &[receipt.as_slice()])?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Peers holding `shard`.
    pub(crate) fn placement(&self, shard: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PLACEMENT)?;
        Ok(match t.get(shard)? {
            Some(v) => parse(v.value(), "placement")?,
            None => Vec::new(),
        })
    }

    /// The receipt `peer` gave for `shard` (bytes, wire layout).
    pub(crate) fn receipt(&self, shard: &str, peer: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECEIPTS)?;
        Ok(t.get(format!("{shard}/{peer}").as_str())?.map(|v| v.value().to_vec()))
    }

    /// Receipts for `shard` (bytes, wire layout).
    pub(crate) fn receipts(&self, shard: &str) -> Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECEIPTS)?;
        let lo = format!("{shard}/");
        let hi = format!("{shard}0"); // '0' follows '/'
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..hi.as_str())? {
            out.push(e?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Save a job.
    pub(crate) fn put_job(&self, job: &JobRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(job.id, json(job).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// A job.
    pub(crate) fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(JOBS)?;
        t.get(id)?.map(|v| parse(v.value(), "job")).transpose()
    }

    /// The next job id.
    pub(crate) fn next_job_id(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(JOBS)?;
        Ok(t.last()?.map_or(1, |(k, _)| k.value() + 1))
    }

    /// Jobs that were running when the SPN stopped: marked failed.
    pub(crate) fn fail_interrupted(&self, now: u64) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut t = txn.open_table(JOBS)?;
            let mut stale = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                let j: JobRecord = parse(v.value(), "job")?;
                if !j.state.is_finished() {
                    stale.push((k.value(), j));
                }
            }
            for (k, mut j) in stale {
                j.state = JobState::Failed;
                j.error = Some("interrupted: the SPN stopped during the job; publish again".to_string());
                j.finished = Some(now);
                t.insert(k, json(&j).as_slice())?;
                n += 1;
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Forget peers that never held anything of ours and have not answered
    /// since `before` (nodes that came and went); returns how many.
    pub(crate) fn forget_idle_peers(&self, before: u64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let mut n = 0;
        {
            let mut t = txn.open_table(PEERS)?;
            let mut idle = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                let p: PeerRecord = parse(v.value(), "peer")?;
                if !p.held && p.shards == 0 && p.last_seen < before {
                    idle.push(k.value().to_string());
                }
            }
            for k in idle {
                t.remove(k.as_str())?;
                n += 1;
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Every peer seen.
    pub(crate) fn peers(&self) -> Result<Vec<PeerRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PEERS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(parse(e?.1.value(), "peer")?);
        }
        Ok(out)
    }

    /// Change a peer's record in one transaction: `f` gets the record (if
    /// any) and returns what to save (`None`: leave it as it was).
    pub(crate) fn update_peer(
        &self,
        peer: &str,
        f: impl FnOnce(Option<PeerRecord>) -> Option<PeerRecord>,
    ) -> Result<Option<PeerRecord>> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = txn.open_table(PEERS)?;
            let cur: Option<PeerRecord> = t.get(peer)?.map(|v| parse(v.value(), "peer")).transpose()?;
            let new = f(cur);
            if let Some(p) = &new {
                t.insert(peer, json(p).as_slice())?;
            }
            new
        };
        txn.commit()?;
        Ok(out)
    }

    /// Every object's record.
    pub(crate) fn objects(&self) -> Result<Vec<ObjectRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            out.push(parse(e?.1.value(), "object")?);
        }
        Ok(out)
    }

    /// Every shard's holders.
    pub(crate) fn placements(&self) -> Result<std::collections::HashMap<String, Vec<String>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PLACEMENT)?;
        let mut out = std::collections::HashMap::new();
        for e in t.iter()? {
            let (k, v) = e?;
            out.insert(k.value().to_string(), parse(v.value(), "placement")?);
        }
        Ok(out)
    }

    /// A counter.
    pub(crate) fn stat(&self, name: &str) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STATS)?;
        Ok(t.get(name)?.map_or(0, |v| v.value()))
    }

    /// `peer` no longer counts as holding `shard` (it failed an audit of
    /// it, or it is lost for good and the shard was rebuilt): out of the
    /// placement, its receipt no longer counts, and an owner delete is
    /// queued (sent when it answers).
    pub(crate) fn drop_holder(&self, shard: &str, peer: &str, now: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut placement = txn.open_table(PLACEMENT)?;
            let holders: Option<Vec<String>> =
                placement.get(shard)?.map(|v| parse(v.value(), "placement")).transpose()?;
            if let Some(mut holders) = holders {
                holders.retain(|p| p != peer);
                placement.insert(shard, json(&holders).as_slice())?;
            }
            txn.open_table(RECEIPTS)?.remove(format!("{shard}/{peer}").as_str())?;
            deletions::queue(&mut txn.open_table(DELETES)?, &format!("{shard}/{peer}"), now, None)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Forget copies that expired long ago: placement and receipt go, and
    /// no delete is queued (the peer swept them itself).
    pub(crate) fn forget_copies(&self, copies: &[(String, String)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut placement = txn.open_table(PLACEMENT)?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            for (shard, peer) in copies {
                let holders: Option<Vec<String>> =
                    placement.get(shard.as_str())?.map(|v| parse(v.value(), "placement")).transpose()?;
                if let Some(mut holders) = holders {
                    holders.retain(|p| p != peer);
                    placement.insert(shard.as_str(), json(&holders).as_slice())?;
                }
                receipts.remove(format!("{shard}/{peer}").as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Peers with a queued delete of `shard` (they lost it, failed an
    /// audit of it, or hold a stale copy): not given it again.
    pub(crate) fn deletes_of(&self, shard: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DELETES)?;
        let lo = format!("{shard}/");
        let hi = format!("{shard}0"); // '0' follows '/'
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..hi.as_str())? {
            if let Some((_, peer)) = e?.0.value().split_once('/') {
                out.push(peer.to_string());
            }
        }
        Ok(out)
    }

    /// Journal a repair's puts before they are sent.
    pub(crate) fn intend_repairs(&self, puts: &[(String, String)]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(REPAIRS)?;
            for (shard, peer) in puts {
                t.insert(format!("{shard}/{peer}").as_str(), [].as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A repair put that did not end with a receipt: its journal entry goes
    /// to the delete queue (the peer may have stored it anyway).
    pub(crate) fn repair_failed(&self, shard: &str, peer: &str, now: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(REPAIRS)?.remove(format!("{shard}/{peer}").as_str())?;
            deletions::queue(&mut txn.open_table(DELETES)?, &format!("{shard}/{peer}"), now, None)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Repair puts a stop cut short (journaled, no receipt recorded): to the
    /// delete queue. Returns how many.
    pub(crate) fn abandon_repairs(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let n;
        {
            let mut t = txn.open_table(REPAIRS)?;
            let mut keys = Vec::new();
            for e in t.iter()? {
                keys.push(e?.0.value().to_string());
            }
            n = keys.len();
            let mut deletes = txn.open_table(DELETES)?;
            for k in keys {
                t.remove(k.as_str())?;
                deletions::queue(&mut deletes, &k, now, None)?;
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// A rebuilt `shard` is on `peer`, with its receipt: in one transaction
    /// the placement gains it, the holders in `stale` (lost, disqualified,
    /// retiring) lose it with their receipts and get an owner delete
    /// queued, the journal entry goes, the counters grow by one shard and
    /// `bytes` moved, and `objects` get a new placement version. A kill
    /// before this leaves the segment as it was; after it, as repaired.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn repaired(
        &self,
        shard: &str,
        peer: &str,
        receipt: &[u8],
        stale: &[String],
        bytes: u64,
        objects: &[String],
        now: u64,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut placement = txn.open_table(PLACEMENT)?;
            let mut holders: Vec<String> = match placement.get(shard)? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            holders.retain(|h| !stale.contains(h));
            if !holders.iter().any(|h| h == peer) {
                holders.push(peer.to_string());
            }
            placement.insert(shard, json(&holders).as_slice())?;
            let mut receipts = txn.open_table(RECEIPTS)?;
            receipts.insert(format!("{shard}/{peer}").as_str(), receipt)?;
            if self.anchors() {
                anchors::enqueue(&txn, &[receipt])?;
            }
            let mut deletes = txn.open_table(DELETES)?;
            for s in stale {
                receipts.remove(format!("{shard}/{s}").as_str())?;
                deletions::queue(&mut deletes, &format!("{shard}/{s}"), now, None)?;
            }
            deletes.remove(format!("{shard}/{peer}").as_str())?;
            txn.open_table(REPAIRS)?.remove(format!("{shard}/{peer}").as_str())?;
            let mut stats = txn.open_table(STATS)?;
            add(&mut stats, "shards_repaired", 1)?;
            add(&mut stats, "repair_bytes", bytes)?;
            add(&mut stats, "bytes_lost", bytes)?;
            let mut objs = txn.open_table(OBJECTS)?;
            for o in objects {
                let rec: Option<ObjectRecord> =
                    objs.get(o.as_str())?.map(|v| parse(v.value(), "object")).transpose()?;
                if let Some(mut r) = rec {
                    r.placement_version += 1;
                    objs.insert(o.as_str(), json(&r).as_slice())?;
                }
            }
            let mut peers = txn.open_table(PEERS)?;
            let rec: Option<PeerRecord> = peers.get(peer)?.map(|v| parse(v.value(), "peer")).transpose()?;
            if let Some(mut p) = rec
                && !p.held
            {
                p.held = true;
                peers.insert(peer, json(&p).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Add to a counter.
    pub(crate) fn add_stat(&self, name: &str, by: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        add(&mut txn.open_table(STATS)?, name, by)?;
        txn.commit()?;
        Ok(())
    }

    /// Count bytes read for a repair that placed nothing (the rebuild failed).
    pub(crate) fn add_repair_bytes(&self, bytes: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        add(&mut txn.open_table(STATS)?, "repair_bytes", bytes)?;
        txn.commit()?;
        Ok(())
    }
}

fn add(t: &mut redb::Table<&str, u64>, name: &str, by: u64) -> Result<()> {
    let cur = t.get(name)?.map_or(0, |v| v.value());
    t.insert(name, cur.saturating_add(by))?;
    Ok(())
}
