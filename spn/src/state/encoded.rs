//! What the SPN keeps for objects a client encoded itself (backups): the
//! end of an upload session, object deletion, and tenants' small opaque
//! records (a repository's encrypted snapshot records and key envelopes).
//! None of it is a key or plaintext: the records are ciphertext the SPN
//! cannot open, and encoded objects carry no read key.

use std::collections::HashSet;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{
    DELETES, DeleteRecord, JOB_SHARDS, MANIFESTS, OBJECTS, ObjectRecord, PATCHES, PLACEMENT, RECEIPTS, State, job_keys,
    json, parse,
};
use crate::error::{Error, Result};

/// `TENANT/NAME` → bytes: tenants' opaque records (format 4).
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// `TENANT/NAME` → JSON [`RecordMeta`]: who wrote a record and when
/// (format 5; a format 4 record has none: written by a full token, time unknown).
const RECORD_META: TableDefinition<&str, &[u8]> = TableDefinition::new("record_meta");

/// Who wrote a record, and when.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    /// Seconds since the epoch.
    pub(crate) created: u64,
    /// The append token's id, if one wrote it.
    pub(crate) added_by: Option<String>,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(RECORDS)?;
    txn.open_table(RECORD_META)?;
    Ok(())
}

/// Every shard some saved object's manifest uses.
pub(super) fn shards_in_use(txn: &WriteTransaction) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for e in txn.open_table(MANIFESTS)?.iter()? {
        let (_, v) = e?;
        let m = chunker::Manifest::from_bytes(v.value(), &Default::default())?;
        out.extend(m.segments().iter().flat_map(|s| s.shards()).map(|c| c.to_string()));
    }
    Ok(out)
}

/// Drop `peer` as a holder of `shard` and queue the shard's delete there,
/// unless a saved object uses the shard (`in_use`): a job that put a shard
/// some peer already held for another object (a client can build a
/// segment around any shard it has the bytes of) must not take that
/// object's copy with it.
pub(super) fn drop_and_delete(
    txn: &WriteTransaction,
    in_use: &HashSet<String>,
    shard: &str,
    peer: &str,
    now: u64,
    object: Option<&str>,
) -> Result<()> {
    if in_use.contains(shard) {
        return Ok(());
    }
    let mut placement = txn.open_table(PLACEMENT)?;
    let holders: Option<Vec<String>> = placement.get(shard)?.map(|v| parse(v.value(), "placement")).transpose()?;
    if let Some(mut holders) = holders {
        holders.retain(|p| p != peer);
        if holders.is_empty() {
            placement.remove(shard)?;
        } else {
            placement.insert(shard, json(&holders).as_slice())?;
        }
    }
    txn.open_table(RECEIPTS)?.remove(format!("{shard}/{peer}").as_str())?;
    super::deletions::queue(&mut txn.open_table(DELETES)?, &format!("{shard}/{peer}"), now, object)?;
    Ok(())
}

/// An object to commit: its record, its manifest's bytes, and each shard
/// the manifest lists with the length the manifest gives it.
pub(crate) type CommittedObject = (ObjectRecord, Vec<u8>, Vec<(String, u64)>);

impl State {
    /// Shards `job` journaled that have a holder now (placed by it, or
    /// already held when it asked).
    pub(crate) fn job_held(&self, job: u64) -> Result<HashSet<String>> {
        let txn = self.db.begin_read()?;
        let j = txn.open_table(JOB_SHARDS)?;
        let placement = txn.open_table(PLACEMENT)?;
        let mut out = HashSet::new();
        for k in job_keys(&j, job)? {
            let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else { continue };
            let holders: Vec<String> = match placement.get(shard)? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            if holders.iter().any(|h| h == peer) {
                out.insert(shard.to_string());
            }
        }
        Ok(out)
    }

    /// End an upload session: its objects saved, its journal ended, and
    /// every shard it placed that no committed manifest uses dropped and
    /// queued for deletion, all in one transaction. Each object comes with
    /// its shards; every one must have been placed by the session or belong
    /// to an object of `tenant` at the moment of the commit (checked inside
    /// the transaction, so a concurrent delete cannot slip between). Returns
    /// how many were dropped.
    pub(crate) fn commit_encoded(
        &self,
        job: u64,
        tenant: &str,
        objects: &[CommittedObject],
        uses: &[String],
        now: u64,
    ) -> Result<u64> {
        let txn = self.db.begin_write()?;
        {
            let mut o = txn.open_table(OBJECTS)?;
            // A commit never replaces an object it does not own: another
            // tenant's, or a release the SPN published (whose manifest is
            // public), would otherwise become this tenant's to delete.
            for (rec, _, _) in objects {
                let existing: Option<ObjectRecord> =
                    o.get(rec.manifest.as_str())?.map(|v| parse(v.value(), "object")).transpose()?;
                if let Some(e) = existing
                    && (e.tenant != tenant || !e.read_key.is_empty())
                {
                    return Err(Error::Conflict(format!(
                        "object {} exists already and is not an encoded object of tenant {tenant}: it cannot be committed again",
                        rec.manifest
                    )));
                }
            }
            // Objects still in use: they must exist, and their grace starts again.
            for cid in uses {
                let existing: Option<ObjectRecord> =
                    o.get(cid.as_str())?.map(|v| parse(v.value(), "object")).transpose()?;
                match existing {
                    Some(mut e) if e.tenant == tenant && e.read_key.is_empty() => {
                        e.created = now;
                        o.insert(cid.as_str(), json(&e).as_slice())?;
                    }
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "object {cid}, which this commit goes on using, is not an object of tenant {tenant} \
                             (pruned meanwhile?): run the backup again"
                        )));
                    }
                }
            }
        }
        let keys = job_keys(&txn.open_table(JOB_SHARDS)?, job)?;
        let mut held = HashSet::new();
        {
            let placement = txn.open_table(PLACEMENT)?;
            for k in &keys {
                let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else {
                    continue;
                };
                let holders: Vec<String> = match placement.get(shard)? {
                    Some(v) => parse(v.value(), "placement")?,
                    None => Vec::new(),
                };
                if holders.iter().any(|h| h == peer) {
                    held.insert(shard.to_string());
                }
            }
        }
        let mut mine = HashSet::new();
        {
            let o = txn.open_table(OBJECTS)?;
            let m = txn.open_table(MANIFESTS)?;
            for e in o.iter()? {
                let (k, v) = e?;
                let rec: ObjectRecord = parse(v.value(), "object")?;
                if rec.tenant != tenant {
                    continue;
                }
                if let Some(bytes) = m.get(k.value())? {
                    let man = chunker::Manifest::from_bytes(bytes.value(), &Default::default())?;
                    mine.extend(man.segments().iter().flat_map(|s| s.shards()).map(|c| c.to_string()));
                }
            }
        }
        let mut used = HashSet::new();
        let receipts = txn.open_table(RECEIPTS)?;
        for (rec, _, shards) in objects {
            for (c, len) in shards {
                // The segment's length and k come from the client: a shard
                // listed with a length it does not have would fail every
                // audit of its holders, honest peers disqualified and other
                // objects' copies deleted. Its receipts (signed by the peers
                // that hold it) say its size.
                let (lo, hi) = (format!("{c}/"), format!("{c}0"));
                for r in receipts.range(lo.as_str()..hi.as_str())? {
                    let Ok(r) = proto::Receipt::from_bytes(r?.1.value()) else { continue };
                    if r.size != *len {
                        return Err(Error::BadRequest(format!(
                            "object {}: shard {c} is listed as {len} bytes, its holders signed for {}: the \
                             manifest's segment lengths do not match what was uploaded",
                            rec.manifest, r.size
                        )));
                    }
                }
                if !held.contains(c) && !mine.contains(c) {
                    return Err(Error::BadRequest(format!(
                        "object {}: shard {c} was not placed in this session and belongs to no object of tenant \
                         {tenant} (deleted since?); upload its segment, or run the backup again",
                        rec.manifest
                    )));
                }
                used.insert(c.clone());
            }
        }
        drop(receipts);
        {
            let mut o = txn.open_table(OBJECTS)?;
            let mut m = txn.open_table(MANIFESTS)?;
            for (rec, manifest, _) in objects {
                o.insert(rec.manifest.as_str(), json(rec).as_slice())?;
                m.insert(rec.manifest.as_str(), manifest.as_slice())?;
            }
        }
        let in_use = shards_in_use(&txn)?;
        let mut dropped = 0;
        for k in keys {
            txn.open_table(JOB_SHARDS)?.remove(k.as_str())?;
            let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else { continue };
            let holders: Vec<String> = match txn.open_table(PLACEMENT)?.get(shard)? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            if !used.contains(shard) || !holders.iter().any(|h| h == peer) {
                drop_and_delete(&txn, &in_use, shard, peer, now, None)?;
                dropped += 1;
            }
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// A tenant's objects (newest last).
    pub(crate) fn objects_of_tenant(&self, tenant: &str) -> Result<Vec<ObjectRecord>> {
        let mut out: Vec<ObjectRecord> = self.objects()?.into_iter().filter(|o| o.tenant == tenant).collect();
        out.sort_by_key(|o| o.created);
        Ok(out)
    }

    /// Delete an object: its record and manifest go, and each of its shards
    /// that no other object uses is dropped from the placement and queued
    /// for deletion on every holder, in one transaction. Returns how many
    /// (shard, holder) deletes were queued.
    pub(crate) fn delete_object(&self, cid: &str, now: u64) -> Result<u64> {
        Ok(self.delete_object_if(cid, now, None)?.unwrap_or(0))
    }

    /// [`State::delete_object`], only if the object was saved (or last
    /// used by a commit) no later than `older_than`: checked in the same
    /// transaction, so a backup that commits it again meanwhile keeps it
    /// (None: refused).
    pub(crate) fn delete_object_if(&self, cid: &str, now: u64, older_than: Option<u64>) -> Result<Option<u64>> {
        let txn = self.db.begin_write()?;
        let object =
            txn.open_table(OBJECTS)?.get(cid)?.map(|v| parse::<ObjectRecord>(v.value(), "object")).transpose()?;
        if let Some(t) = older_than
            && object.as_ref().is_some_and(|o| o.created > t)
        {
            return Ok(None);
        }
        let mine: HashSet<String> = match txn.open_table(MANIFESTS)?.get(cid)? {
            Some(m) => chunker::Manifest::from_bytes(m.value(), &Default::default())?
                .segments()
                .iter()
                .flat_map(|s| s.shards())
                .map(|c| c.to_string())
                .collect(),
            None => HashSet::new(),
        };
        txn.open_table(OBJECTS)?.remove(cid)?;
        txn.open_table(MANIFESTS)?.remove(cid)?;
        txn.open_table(PATCHES)?.remove(cid)?;
        // Shards another object still uses stay.
        let mut shared = HashSet::new();
        for e in txn.open_table(MANIFESTS)?.iter()? {
            let (_, v) = e?;
            let m = chunker::Manifest::from_bytes(v.value(), &Default::default())?;
            shared.extend(
                m.segments().iter().flat_map(|s| s.shards()).map(|c| c.to_string()).filter(|c| mine.contains(c)),
            );
        }
        let mut queued = 0;
        for shard in mine.difference(&shared) {
            let holders: Vec<String> = match txn.open_table(PLACEMENT)?.get(shard.as_str())? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            for peer in &holders {
                drop_and_delete(&txn, &HashSet::new(), shard, peer, now, Some(cid))?;
                queued += 1;
            }
            // Copies already queued for delete (stale or lost holders) are
            // this deletion's too: their outcomes count in its record.
            let mut deletes = txn.open_table(DELETES)?;
            let (lo, hi) = (format!("{shard}/"), format!("{shard}0"));
            let mut earlier = Vec::new();
            for e in deletes.range(lo.as_str()..hi.as_str())? {
                let (k, v) = e?;
                let rec: DeleteRecord = parse(v.value(), "delete")?;
                let peer = k.value().strip_prefix(lo.as_str()).unwrap_or_default().to_string();
                if rec.object.is_none() && !holders.contains(&peer) {
                    earlier.push((k.value().to_string(), rec));
                }
            }
            for (k, mut rec) in earlier {
                rec.object = Some(cid.to_string());
                deletes.insert(k.as_str(), json(&rec).as_slice())?;
                queued += 1;
            }
        }
        if let Some(o) = &object {
            super::deletions::record(&txn, cid, &o.tenant, now, queued)?;
        }
        txn.commit()?;
        Ok(Some(queued))
    }

    /// Save a tenant's record; one of the same name is replaced if `replace`
    /// (keeping its first writer and time), else left as it is (false).
    pub(crate) fn put_record(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
        replace: bool,
        meta: &RecordMeta,
    ) -> Result<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RECORDS)?;
            let key = format!("{tenant}/{name}");
            let existed = t.get(key.as_str())?.is_some();
            if !replace && existed {
                return Ok(false);
            }
            t.insert(key.as_str(), bytes)?;
            // A replaced record keeps who first wrote it and when: a full
            // token rewriting a put-only key's snapshot (a prune's repack)
            // must not make it pass for the full key's, nor newer.
            let mut metas = txn.open_table(RECORD_META)?;
            if !existed || metas.get(key.as_str())?.is_none() {
                metas.insert(key.as_str(), json(meta).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(true)
    }

    /// A tenant's record.
    pub(crate) fn record(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        Ok(t.get(format!("{tenant}/{name}").as_str())?.map(|v| v.value().to_vec()))
    }

    /// A tenant's records whose names start with `prefix`: (name, length, who wrote it).
    pub(crate) fn records(&self, tenant: &str, prefix: &str) -> Result<Vec<(String, u64, RecordMeta)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let metas = txn.open_table(RECORD_META)?;
        let lo = format!("{tenant}/{prefix}");
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..)? {
            let (k, v) = e?;
            let Some(name) = k.value().strip_prefix(&lo).map(|rest| format!("{prefix}{rest}")) else { break };
            let meta = match metas.get(k.value())? {
                Some(m) => parse(m.value(), "record meta")?,
                None => RecordMeta::default(),
            };
            out.push((name, v.value().len() as u64, meta));
        }
        Ok(out)
    }

    /// Remove a tenant's record; whether there was one.
    pub(crate) fn delete_record(&self, tenant: &str, name: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let had = txn.open_table(RECORDS)?.remove(format!("{tenant}/{name}").as_str())?.is_some();
        txn.open_table(RECORD_META)?.remove(format!("{tenant}/{name}").as_str())?;
        txn.commit()?;
        Ok(had)
    }
}
