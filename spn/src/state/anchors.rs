//! Receipt batches for the ledger (format 7): receipts wait in a queue as
//! peers sign them; a batch takes them in order, and its Merkle root is
//! anchored on the chain by a transaction the SPN signs. The SPN keeps
//! every batch's receipts, so it can prove any of them later.
//!
//! Tables: `anchor_queue` (sequence → receipt bytes), `anchor_batches`
//! (batch id → JSON [`BatchRecord`]), `anchor_items` (`BATCH (20 digits)/I
//! (8 digits)` → receipt bytes), `anchor_index` (the receipt's leaf hash in
//! hex → `BATCH/I`).

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{State, json, parse};
use crate::error::Result;

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_queue");
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_batches");
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("anchor_items");
const INDEX: TableDefinition<&str, &str> = TableDefinition::new("anchor_index");

pub(crate) use proto::api::AnchorBatch as BatchRecord;

/// A receipt found in a batch: the batch, its index there, the batch's receipts.
pub(crate) type Found = (BatchRecord, usize, Vec<Vec<u8>>);

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(QUEUE)?;
    txn.open_table(BATCHES)?;
    txn.open_table(ITEMS)?;
    txn.open_table(INDEX)?;
    Ok(())
}

/// Queue receipts for the next batch, inside the caller's transaction.
pub(super) fn enqueue(txn: &WriteTransaction, receipts: &[&[u8]]) -> Result<()> {
    let mut q = txn.open_table(QUEUE)?;
    let first = q.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
    for (seq, r) in (first..).zip(receipts) {
        q.insert(seq, *r)?;
    }
    Ok(())
}

fn leaf_hex(item: &[u8]) -> String {
    blake3::hash(item).to_hex().to_string()
}

impl State {
    /// Receipts waiting for a batch.
    pub(crate) fn anchor_queue_len(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(QUEUE)?.len()?)
    }

    /// Move up to `max` queued receipts into a new batch (one transaction);
    /// `root` computes its Merkle root. `None` when the queue is empty.
    pub(crate) fn make_batch(
        &self,
        max: usize,
        now: u64,
        root: impl Fn(&[Vec<u8>]) -> [u8; 32],
    ) -> Result<Option<BatchRecord>> {
        let txn = self.db.begin_write()?;
        let batch = {
            let mut q = txn.open_table(QUEUE)?;
            let mut taken = Vec::new();
            for e in q.iter()? {
                let (k, v) = e?;
                taken.push((k.value(), v.value().to_vec()));
                if taken.len() >= max {
                    break;
                }
            }
            if taken.is_empty() {
                return Ok(None);
            }
            let mut batches = txn.open_table(BATCHES)?;
            let id = batches.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let items: Vec<Vec<u8>> = taken.iter().map(|(_, v)| v.clone()).collect();
            let bytes = items.iter().filter_map(|r| proto::Receipt::from_bytes(r).ok()).map(|r| r.size).sum();
            let rec = BatchRecord {
                id,
                root: root(&items).iter().map(|b| format!("{b:02x}")).collect(),
                count: items.len() as u64,
                bytes,
                created: now,
                ..Default::default()
            };
            let mut it = txn.open_table(ITEMS)?;
            let mut ix = txn.open_table(INDEX)?;
            for (i, item) in items.iter().enumerate() {
                let key = format!("{id:020}/{i:08}");
                it.insert(key.as_str(), item.as_slice())?;
                ix.insert(leaf_hex(item).as_str(), key.as_str())?;
            }
            for (k, _) in &taken {
                q.remove(*k)?;
            }
            batches.insert(id, json(&rec).as_slice())?;
            rec
        };
        txn.commit()?;
        Ok(Some(batch))
    }

    /// Batches whose root is not final on the chain yet.
    pub(crate) fn unanchored(&self) -> Result<Vec<BatchRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BATCHES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let rec: BatchRecord = parse(e?.1.value(), "batch")?;
            if rec.height.is_none() {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Final batches whose peers are not all credited with points yet.
    pub(crate) fn uncredited(&self) -> Result<Vec<BatchRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BATCHES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let rec: BatchRecord = parse(e?.1.value(), "batch")?;
            if rec.height.is_some() && !rec.credited {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// A batch's receipts, in order.
    pub(crate) fn batch_items(&self, id: u64) -> Result<Vec<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let it = txn.open_table(ITEMS)?;
        let (lo, hi) = (format!("{id:020}/"), format!("{id:020}0"));
        let mut out = Vec::new();
        for e in it.range(lo.as_str()..hi.as_str())? {
            out.push(e?.1.value().to_vec());
        }
        Ok(out)
    }

    /// The newest `n` batches, newest first.
    pub(crate) fn batches(&self, n: usize) -> Result<Vec<BatchRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BATCHES)?;
        let mut out = Vec::new();
        for e in t.iter()?.rev().take(n) {
            out.push(parse(e?.1.value(), "batch")?);
        }
        Ok(out)
    }

    /// Save a batch's record (its transaction signed, or final).
    pub(crate) fn put_batch(&self, rec: &BatchRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(BATCHES)?.insert(rec.id, json(rec).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The batch holding `receipt` (its bytes), its index there, and the batch's receipts.
    pub(crate) fn batch_of(&self, receipt: &[u8]) -> Result<Option<Found>> {
        let txn = self.db.begin_read()?;
        let ix = txn.open_table(INDEX)?;
        let Some(key) = ix.get(leaf_hex(receipt).as_str())?.map(|v| v.value().to_string()) else {
            return Ok(None);
        };
        let Some((b, i)) = key.split_once('/') else { return Ok(None) };
        let (Ok(id), Ok(index)) = (b.parse::<u64>(), i.parse::<usize>()) else { return Ok(None) };
        let Some(rec) =
            txn.open_table(BATCHES)?.get(id)?.map(|v| parse::<BatchRecord>(v.value(), "batch")).transpose()?
        else {
            return Ok(None);
        };
        let it = txn.open_table(ITEMS)?;
        let lo = format!("{id:020}/");
        let hi = format!("{id:020}0");
        let mut items = Vec::with_capacity(rec.count as usize);
        for e in it.range(lo.as_str()..hi.as_str())? {
            items.push(e?.1.value().to_vec());
        }
        Ok(Some((rec, index, items)))
    }
}
