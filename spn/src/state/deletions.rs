//! Deleted objects and what their peers acknowledged (format 9): when a
//! tenant deletes an object, the SPN records it (`deletions`: object →
//! JSON [`DeletionRecord`]) and tags each of its queued shard deletes with
//! the object; as peers answer, each outcome is kept
//! (`deletion_acks`: `OBJECT/SHARD/PEER` → JSON [`AckRecord`]), signed
//! acknowledgements also go to the anchor queue of kind [`DELETIONS`].

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{DELETES, DeleteRecord, State, json, parse};
use crate::error::Result;

const DELETIONS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("deletions");
const ACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("deletion_acks");

/// The kind of a batch of delete acknowledgements.
pub(crate) const DELETIONS: &str = "deletions";

/// A deleted object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeletionRecord {
    tenant: String,
    at: u64,
    queued: u64,
}

/// How one queued shard delete ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AckRecord {
    /// The signed acknowledgement (hex of its bytes), if the peer signed one.
    #[serde(default)]
    ack: Option<String>,
    /// Given up without an answer, and the last error.
    #[serde(default)]
    gave_up: Option<String>,
}

/// What a queued delete came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Not yet: try again later (the record counts the attempt).
    Again(DeleteRecord),
    /// Deleted (or not there), with the peer's acknowledgement if it signs them.
    Done(Option<proto::DeleteAck>),
    /// No answer for too long: dropped from the queue.
    GaveUp(DeleteRecord),
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(DELETIONS_TABLE)?;
    txn.open_table(ACKS)?;
    Ok(())
}

/// Record a deleted object, inside the transaction that queues its deletes.
pub(super) fn record(txn: &WriteTransaction, object: &str, tenant: &str, at: u64, queued: u64) -> Result<()> {
    let rec = DeletionRecord { tenant: tenant.to_string(), at, queued };
    txn.open_table(DELETIONS_TABLE)?.insert(object, json(&rec).as_slice())?;
    // A CID deleted before (uploaded again since): its old outcomes go.
    let mut acks = txn.open_table(ACKS)?;
    let (lo, hi) = (format!("{object}/"), format!("{object}0"));
    let old: Vec<String> = acks
        .range(lo.as_str()..hi.as_str())?
        .map(|e| e.map(|(k, _)| k.value().to_string()))
        .collect::<std::result::Result<_, _>>()?;
    for k in old {
        acks.remove(k.as_str())?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl State {
    /// A queued delete is done, given up, or failed again: one transaction
    /// updates the queue and, for an object's delete, keeps its outcome
    /// (a signed acknowledgement also waits for the next batch of kind
    /// [`DELETIONS`] while anchoring).
    pub(crate) fn delete_outcome(&self, shard: &str, peer: &str, outcome: Outcome) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(DELETES)?;
            let key = format!("{shard}/{peer}");
            let object = t
                .get(key.as_str())?
                .map(|v| parse::<DeleteRecord>(v.value(), "delete"))
                .transpose()?
                .and_then(|r| r.object);
            let kept = match outcome {
                Outcome::Again(r) => {
                    t.insert(key.as_str(), json(&r).as_slice())?;
                    None
                }
                Outcome::Done(ack) => {
                    t.remove(key.as_str())?;
                    let bytes = ack.map(|a| a.to_bytes());
                    if let Some(b) = &bytes
                        && self.anchors()
                    {
                        super::anchors::enqueue_kind(&txn, DELETIONS, &[b.as_slice()])?;
                    }
                    Some(AckRecord { ack: bytes.as_deref().map(hex), gave_up: None })
                }
                Outcome::GaveUp(r) => {
                    t.remove(key.as_str())?;
                    Some(AckRecord { ack: None, gave_up: Some(r.last_error.unwrap_or_else(|| "no answer".into())) })
                }
            };
            if let (Some(object), Some(rec)) = (object, kept) {
                txn.open_table(ACKS)?.insert(format!("{object}/{key}").as_str(), json(&rec).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A deleted object's acknowledgements (`None`: the SPN deleted no
    /// object of that CID since it keeps them).
    pub(crate) fn deletion(&self, object: &str) -> Result<Option<proto::api::DeletionAcks>> {
        let txn = self.db.begin_read()?;
        let Some(rec) = txn
            .open_table(DELETIONS_TABLE)?
            .get(object)?
            .map(|v| parse::<DeletionRecord>(v.value(), "deletion"))
            .transpose()?
        else {
            return Ok(None);
        };
        let mut out = proto::api::DeletionAcks {
            object: object.to_string(),
            tenant: rec.tenant,
            deleted_at: rec.at,
            queued: rec.queued,
            ..Default::default()
        };
        let (lo, hi) = (format!("{object}/"), format!("{object}0"));
        for e in txn.open_table(ACKS)?.range(lo.as_str()..hi.as_str())? {
            let (k, v) = e?;
            let what = k.value().strip_prefix(lo.as_str()).unwrap_or_default().to_string();
            let a: AckRecord = parse(v.value(), "delete acknowledgement")?;
            match (a.ack, a.gave_up) {
                (Some(ack), _) => out.acks.push(ack),
                (None, Some(why)) => out.gave_up.push(format!("{what}: {why}")),
                (None, None) => out.unsigned.push(what),
            }
        }
        out.acks.sort();
        for e in txn.open_table(DELETES)?.iter()? {
            let (_, v) = e?;
            if parse::<DeleteRecord>(v.value(), "delete")?.object.as_deref() == Some(object) {
                out.pending += 1;
            }
        }
        Ok(Some(out))
    }
}
