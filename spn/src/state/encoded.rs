//! What the SPN keeps for objects a client encoded itself (backups): the
//! end of an upload session, object deletion, and tenants' small opaque
//! records (a repository's encrypted snapshot records and key envelopes).
//! None of it is a key or plaintext: the records are ciphertext the SPN
//! cannot open, and encoded objects carry no read key.

use std::collections::HashSet;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{
    DELETES, DeleteRecord, JOB_SHARDS, MANIFESTS, OBJECTS, ObjectRecord, PLACEMENT, RECEIPTS, State, job_keys, json,
    parse,
};
use crate::error::Result;

/// `TENANT/NAME` → bytes: tenants' opaque records (format 4).
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(RECORDS)?;
    Ok(())
}

/// Drop `peer` as a holder of `shard` and queue the shard's delete there.
fn drop_and_delete(txn: &WriteTransaction, shard: &str, peer: &str, now: u64) -> Result<()> {
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
    let rec = DeleteRecord { since: now, attempts: 0, last_error: None };
    txn.open_table(DELETES)?.insert(format!("{shard}/{peer}").as_str(), json(&rec).as_slice())?;
    Ok(())
}

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

    /// Shards of every object of `tenant` (what its new manifests may reuse).
    pub(crate) fn tenant_shards(&self, tenant: &str) -> Result<HashSet<String>> {
        let txn = self.db.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let manifests = txn.open_table(MANIFESTS)?;
        let mut out = HashSet::new();
        for e in objects.iter()? {
            let (k, v) = e?;
            let rec: ObjectRecord = parse(v.value(), "object")?;
            if rec.tenant != tenant {
                continue;
            }
            if let Some(m) = manifests.get(k.value())? {
                let m = chunker::Manifest::from_bytes(m.value(), &Default::default())?;
                out.extend(m.segments().iter().flat_map(|s| s.shards()).map(|c| c.to_string()));
            }
        }
        Ok(out)
    }

    /// End an upload session: its objects saved, its journal ended, and
    /// every shard it placed that `used` does not name dropped and queued
    /// for deletion, all in one transaction. Returns how many were dropped.
    pub(crate) fn commit_encoded(
        &self,
        job: u64,
        objects: &[(ObjectRecord, Vec<u8>)],
        used: &HashSet<String>,
        now: u64,
    ) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let mut dropped = 0;
        {
            let mut o = txn.open_table(OBJECTS)?;
            let mut m = txn.open_table(MANIFESTS)?;
            for (rec, manifest) in objects {
                o.insert(rec.manifest.as_str(), json(rec).as_slice())?;
                m.insert(rec.manifest.as_str(), manifest.as_slice())?;
            }
        }
        let keys = job_keys(&txn.open_table(JOB_SHARDS)?, job)?;
        for k in keys {
            txn.open_table(JOB_SHARDS)?.remove(k.as_str())?;
            let Some((shard, peer)) = k.split_once('/').and_then(|(_, rest)| rest.split_once('/')) else { continue };
            let holders: Vec<String> = match txn.open_table(PLACEMENT)?.get(shard)? {
                Some(v) => parse(v.value(), "placement")?,
                None => Vec::new(),
            };
            if !used.contains(shard) || !holders.iter().any(|h| h == peer) {
                drop_and_delete(&txn, shard, peer, now)?;
                dropped += 1;
            }
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// Delete an object: its record and manifest go, and each of its shards
    /// that no other object uses is dropped from the placement and queued
    /// for deletion on every holder, in one transaction. Returns how many
    /// (shard, holder) deletes were queued.
    pub(crate) fn delete_object(&self, cid: &str, now: u64) -> Result<u64> {
        let txn = self.db.begin_write()?;
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
            for peer in holders {
                drop_and_delete(&txn, shard, &peer, now)?;
                queued += 1;
            }
        }
        txn.commit()?;
        Ok(queued)
    }

    /// Save a tenant's record (replacing one of the same name).
    pub(crate) fn put_record(&self, tenant: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RECORDS)?.insert(format!("{tenant}/{name}").as_str(), bytes)?;
        txn.commit()?;
        Ok(())
    }

    /// A tenant's record.
    pub(crate) fn record(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        Ok(t.get(format!("{tenant}/{name}").as_str())?.map(|v| v.value().to_vec()))
    }

    /// A tenant's records whose names start with `prefix`: (name, length).
    pub(crate) fn records(&self, tenant: &str, prefix: &str) -> Result<Vec<(String, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let lo = format!("{tenant}/{prefix}");
        let mut out = Vec::new();
        for e in t.range(lo.as_str()..)? {
            let (k, v) = e?;
            let Some(name) = k.value().strip_prefix(&lo).map(|rest| format!("{prefix}{rest}")) else { break };
            out.push((name, v.value().len() as u64));
        }
        Ok(out)
    }

    /// Remove a tenant's record; whether there was one.
    pub(crate) fn delete_record(&self, tenant: &str, name: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let had = txn.open_table(RECORDS)?.remove(format!("{tenant}/{name}").as_str())?.is_some();
        txn.commit()?;
        Ok(had)
    }
}
