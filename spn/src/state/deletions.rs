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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AckRecord {
    /// The signed acknowledgement (hex of its bytes), if the peer signed one.
    #[serde(default)]
    ack: Option<String>,
    /// Given up without an answer, and the last error.
    #[serde(default)]
    gave_up: Option<String>,
    /// The peer refused the delete (not this SPN's shard there, or no
    /// store), and how.
    #[serde(default)]
    refused: Option<String>,
}

/// What a queued delete came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Not yet: try again later (the record counts the attempt).
    Again(DeleteRecord),
    /// Deleted (or not there), with the peer's acknowledgement if it signs them.
    Done(Option<proto::DeleteAck>),
    /// The peer refused (not this SPN's shard there, or it stores none):
    /// nothing more to ask, and no acknowledgement.
    Refused(String),
    /// No answer for too long: dropped from the queue.
    GaveUp(DeleteRecord),
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(DELETIONS_TABLE)?;
    txn.open_table(ACKS)?;
    Ok(())
}

/// Queue a delete of `key` (`SHARD/PEER`) inside the caller's
/// transaction. An entry already queued there for a deleted object stays
/// that object's (its outcome still counts for that deletion).
pub(super) fn queue(
    deletes: &mut redb::Table<'_, &str, &[u8]>,
    key: &str,
    now: u64,
    object: Option<&str>,
) -> Result<()> {
    let kept = match object {
        Some(o) => Some(o.to_string()),
        None => {
            deletes.get(key)?.map(|v| parse::<DeleteRecord>(v.value(), "delete")).transpose()?.and_then(|r| r.object)
        }
    };
    deletes.insert(key, json(&DeleteRecord::new(now, kept.as_deref())).as_slice())?;
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
    /// A queued delete is done, refused, given up, or failed again: one
    /// transaction updates the queue and, for an object's delete, keeps its
    /// outcome (a signed acknowledgement also waits for the next batch of
    /// kind [`DELETIONS`] while anchoring). Applied only if the queue still
    /// holds the entry as `started` (as the attempt read it): an entry queued
    /// again meanwhile is asked again, not settled by an older answer.
    pub(crate) fn delete_outcome(
        &self,
        shard: &str,
        peer: &str,
        started: &DeleteRecord,
        outcome: Outcome,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(DELETES)?;
            let key = format!("{shard}/{peer}");
            let queued = t.get(key.as_str())?.map(|v| parse::<DeleteRecord>(v.value(), "delete")).transpose()?;
            if queued.as_ref() != Some(started) {
                return Ok(());
            }
            let object = queued.and_then(|r| r.object);
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
                    Some(AckRecord { ack: bytes.as_deref().map(hex), ..AckRecord::default() })
                }
                Outcome::Refused(why) => {
                    t.remove(key.as_str())?;
                    Some(AckRecord { refused: Some(why), ..AckRecord::default() })
                }
                Outcome::GaveUp(r) => {
                    t.remove(key.as_str())?;
                    let why = r.last_error.unwrap_or_else(|| "no answer".into());
                    Some(AckRecord { gave_up: Some(why), ..AckRecord::default() })
                }
            };
            if let (Some(object), Some(rec)) = (object, kept) {
                let mut acks = txn.open_table(ACKS)?;
                let k = format!("{object}/{key}");
                // A signed acknowledgement, once kept, stays: a later,
                // lesser outcome for the same copy does not replace it.
                let signed = acks
                    .get(k.as_str())?
                    .map(|v| parse::<AckRecord>(v.value(), "delete acknowledgement"))
                    .transpose()?
                    .is_some_and(|a| a.ack.is_some());
                if !signed {
                    acks.insert(k.as_str(), json(&rec).as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The tenant that deleted `object` (`None`: no deletion of it is kept).
    pub(crate) fn deletion_tenant(&self, object: &str) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(DELETIONS_TABLE)?;
        Ok(t.get(object)?.map(|v| parse::<DeletionRecord>(v.value(), "deletion")).transpose()?.map(|r| r.tenant))
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
            match (a.ack, a.gave_up, a.refused) {
                (Some(ack), _, _) => out.acks.push(ack),
                (None, Some(why), _) => out.gave_up.push(format!("{what}: {why}")),
                (None, None, Some(why)) => out.refused.push(format!("{what}: {why}")),
                (None, None, None) => out.unsigned.push(what),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two answers for one queued copy: one for an entry since queued
    /// again is dropped, and a signed acknowledgement, once kept, is not
    /// replaced by a lesser outcome.
    #[test]
    fn a_stale_answer_settles_nothing_and_a_kept_signed_ack_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("state");
        let key = net::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id().to_string();
        let cid = chunker::Cid::raw([7; 32]);
        let shard = cid.to_string();
        let k = format!("{shard}/{peer}");
        let put = |object: Option<&str>, now: u64| {
            let txn = state.db.begin_write().expect("txn");
            queue(&mut txn.open_table(DELETES).expect("table"), &k, now, object).expect("queue");
            txn.commit().expect("commit");
        };
        let txn = state.db.begin_write().expect("txn");
        record(&txn, "obj", "t", 1, 1).expect("record");
        txn.commit().expect("commit");
        put(Some("obj"), 1);
        let first = state.pending_deletes().expect("pending")[0].2.clone();
        // Queued again meanwhile (a later pass, another object): the first
        // attempt's answer settles nothing, and the entry keeps its object.
        put(None, 2);
        let ack = proto::DeleteAck::sign(&key, cid, true, 3).expect("sign");
        state.delete_outcome(&shard, &peer, &first, Outcome::Done(Some(ack.clone()))).expect("outcome");
        let now = state.pending_deletes().expect("pending");
        assert_eq!(now.len(), 1, "still queued");
        assert_eq!(now[0].2.object.as_deref(), Some("obj"), "the deletion's entry stays the deletion's");
        let current = now[0].2.clone();
        state.delete_outcome(&shard, &peer, &current, Outcome::Done(Some(ack))).expect("outcome");
        let d = state.deletion("obj").expect("read").expect("a deletion");
        assert_eq!((d.acks.len(), d.pending), (1, 0));
        // The same copy queued and refused later: the signed ack stays.
        put(Some("obj"), 4);
        let again = state.pending_deletes().expect("pending")[0].2.clone();
        state.delete_outcome(&shard, &peer, &again, Outcome::Refused("NotFound: gone".into())).expect("outcome");
        let d = state.deletion("obj").expect("read").expect("a deletion");
        assert_eq!((d.acks.len(), d.refused.len()), (1, 0), "{d:?}");
    }
}
