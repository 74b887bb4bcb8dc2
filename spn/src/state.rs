//! The SPN's state in redb: tenants' secrets, objects and their manifests,
//! where each shard is, receipts, jobs, peers and releases. Every change is
//! one redb transaction, so a kill leaves the state before or after it.

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
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");

/// One stored object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Manifest CID.
    pub manifest: String,
    /// Tenant (vendor) it belongs to.
    pub tenant: String,
    /// Product, for firmware (objects of one product share chunks).
    pub product: String,
    /// Read key, hex.
    pub read_key: String,
    /// Object length.
    pub length: u64,
    /// Object BLAKE3, hex.
    pub blake3: String,
    /// Coding.
    pub data_shards: u8,
    /// Coding.
    pub parity_shards: u8,
    /// Segments in the manifest.
    pub segments: u64,
    /// Segments stored for this object (the rest were shared with earlier ones).
    pub new_segments: u64,
    /// Shard bytes stored for this object.
    pub new_shard_bytes: u64,
    /// Seconds since the epoch.
    pub created: u64,
}

/// A job's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    /// Id.
    pub id: u64,
    /// `publish`.
    pub kind: String,
    /// `uploading`, `encoding`, `done`, `failed`.
    pub state: String,
    /// Bytes of the object read so far.
    pub bytes_done: u64,
    /// Object length, once known.
    pub bytes_total: u64,
    /// Shards stored with a valid receipt.
    pub shards_placed: u64,
    /// Retries of shards on other peers.
    pub retries: u64,
    /// The object, when done.
    pub result: Option<JobResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub started: u64,
    /// Seconds since the epoch.
    pub finished: Option<u64>,
}

/// What a finished publish produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobResult {
    /// Manifest CID.
    pub manifest: String,
    /// Read key, hex.
    pub read_key: String,
    /// Object length.
    pub length: u64,
    /// Object BLAKE3, hex.
    pub blake3: String,
    /// Segments in the manifest.
    pub segments: u64,
    /// Segments stored now (the others were already stored for an earlier release).
    pub new_segments: u64,
    /// Shard bytes stored now (n/k times the new segment bytes).
    pub new_shard_bytes: u64,
    /// Receipts collected now.
    pub receipts: u64,
    /// Distinct peers holding the object.
    pub peers: u64,
}

/// A peer the SPN has seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer.
    pub peer: String,
    /// Quota.
    pub capacity: u64,
    /// Bytes stored.
    pub used: u64,
    /// Shards stored.
    pub shards: u64,
    /// Seconds since the epoch when it last answered.
    pub last_seen: u64,
    /// Failed requests since it last answered.
    pub failures: u64,
}

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
}

/// A release re-signed to extend its expiry: the same image, product,
/// hardware and key, issued later.
fn is_resigning(old: &str, new: &str) -> bool {
    use ota::meta::{Release, Signed};
    let (Ok(o), Ok(n)) = (serde_json::from_str::<Signed<Release>>(old), serde_json::from_str::<Signed<Release>>(new))
    else {
        return false;
    };
    let (o, n) = (o.signed, n.signed);
    let same = |a: &Release, b: &Release| {
        (&a.vendor, &a.product, &a.hardware, &a.version, a.length, &a.blake3, &a.manifest, &a.read_key)
            == (&b.vendor, &b.product, &b.hardware, &b.version, b.length, &b.blake3, &b.manifest, &b.read_key)
    };
    same(&o, &n) && n.issued > o.issued && n.expires >= o.expires
}

/// The database.
pub(crate) struct State {
    db: Database,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Db(format!("damaged {what} record: {e}")))
}

impl State {
    /// Open or create `DIR/spn.redb`.
    pub(crate) fn open(dir: &Path) -> Result<State> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let db = Database::create(dir.join("spn.redb")).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Locked(dir.display().to_string()),
            e => Error::Db(e.to_string()),
        })?;
        let txn = db.begin_write()?;
        txn.open_table(TENANTS)?;
        txn.open_table(OBJECTS)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(PLACEMENT)?;
        txn.open_table(RECEIPTS)?;
        txn.open_table(JOBS)?;
        txn.open_table(PEERS)?;
        txn.open_table(RELEASES)?;
        txn.commit()?;
        Ok(State { db })
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

    /// Save a finished object: its record and manifest, in one transaction.
    pub(crate) fn put_object(&self, rec: &ObjectRecord, manifest: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(OBJECTS)?.insert(rec.manifest.as_str(), json(rec).as_slice())?;
        txn.open_table(MANIFESTS)?.insert(rec.manifest.as_str(), manifest)?;
        txn.commit()?;
        Ok(())
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

    /// An object's manifest bytes.
    pub(crate) fn manifest(&self, cid: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(MANIFESTS)?;
        Ok(t.get(cid)?.map(|v| v.value().to_vec()))
    }

    /// Record that `peer` holds `shard`, with its receipt.
    pub(crate) fn put_placement(&self, shard: &str, peer: &str, receipt: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PLACEMENT)?;
            let mut peers: Vec<String> = match t.get(shard)? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            if !peers.iter().any(|p| p == peer) {
                peers.push(peer.to_string());
            }
            t.insert(shard, json(&peers).as_slice())?;
            txn.open_table(RECEIPTS)?.insert(format!("{shard}/{peer}").as_str(), receipt)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// `peer` no longer holds `shard` (deleted); its receipt goes too.
    pub(crate) fn forget_placement(&self, shard: &str, peer: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PLACEMENT)?;
            let peers: Option<Vec<String>> = t.get(shard)?.map(|v| parse(v.value(), "placement")).transpose()?;
            if let Some(mut peers) = peers {
                peers.retain(|p| p != peer);
                if peers.is_empty() {
                    t.remove(shard)?;
                } else {
                    t.insert(shard, json(&peers).as_slice())?;
                }
            }
            txn.open_table(RECEIPTS)?.remove(format!("{shard}/{peer}").as_str())?;
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
                if j.state != "done" && j.state != "failed" {
                    stale.push((k.value(), j));
                }
            }
            for (k, mut j) in stale {
                j.state = "failed".to_string();
                j.error = Some("interrupted: the SPN stopped during the job; publish again".to_string());
                j.finished = Some(now);
                t.insert(k, json(&j).as_slice())?;
                n += 1;
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Save a peer.
    pub(crate) fn put_peer(&self, p: &PeerRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(PEERS)?.insert(p.peer.as_str(), json(p).as_slice())?;
        txn.commit()?;
        Ok(())
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

    /// Save a release; refuses a second, different release with the same id.
    pub(crate) fn put_release(&self, r: &ReleaseRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RELEASES)?;
            let existing: Option<ReleaseRecord> =
                t.get(r.id.as_str())?.map(|v| parse(v.value(), "release")).transpose()?;
            if let Some(e) = existing
                && e.release != r.release
                && !is_resigning(&e.release, &r.release)
            {
                return Err(Error::BadRequest(format!(
                    "release {} was already published with different metadata; publish a new version \
                     (re-signing the same image to extend its expiry is allowed: `ionshard vendor resign`)",
                    r.id
                )));
            }
            t.insert(r.id.as_str(), json(r).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A release.
    pub(crate) fn release(&self, id: &str) -> Result<Option<ReleaseRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASES)?;
        t.get(id)?.map(|v| parse(v.value(), "release")).transpose()
    }

    /// Every release (of `product`, if given).
    pub(crate) fn releases(&self, product: Option<&str>) -> Result<Vec<ReleaseRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let r: ReleaseRecord = parse(e?.1.value(), "release")?;
            if product.is_none_or(|p| p == r.product) {
                out.push(r);
            }
        }
        Ok(out)
    }
}
