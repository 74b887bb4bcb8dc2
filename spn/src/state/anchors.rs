//! Receipt batches for the ledger (format 7): receipts wait in a queue as
//! peers sign them; a batch takes them in order, and its Merkle root is
//! anchored on the chain by a transaction the SPN signs. The SPN keeps
//! every batch's receipts, so it can prove any of them later.
//!
//! Tables: `anchor_queue` (sequence → receipt bytes), `anchor_batches`
//! (batch id → JSON [`BatchRecord`]), `anchor_items` (`BATCH (20 digits)/I
//! (8 digits)` → receipt bytes), `anchor_index` (the receipt's leaf hash in
//! hex → `BATCH/I`), and (format 8) `anchor_credited` (`PEER/CID` → the end
//! of the term credited with contribution points).

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{State, json, parse};
use crate::error::Result;

const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_queue");
/// Audit results waiting for a batch of their own (format 8).
const AUDIT_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_audit_queue");
/// The kind of a batch of audit results (a receipt batch's kind is empty).
pub(crate) const AUDITS: &str = "audits";
/// Peers' signed delete acknowledgements waiting for a batch of kind
/// [`super::DELETIONS`] (format 9).
const DELETION_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_deletion_queue");

/// The queue of batches of `kind`.
fn queue_of(kind: &str) -> TableDefinition<'static, u64, &'static [u8]> {
    match kind {
        AUDITS => AUDIT_QUEUE,
        super::DELETIONS => DELETION_QUEUE,
        _ => QUEUE,
    }
}
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_batches");
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("anchor_items");
const INDEX: TableDefinition<&str, &str> = TableDefinition::new("anchor_index");
/// Per peer and shard (`PEER/CID`), the end of the term (seconds since
/// the epoch) already credited with points (format 8).
const CREDITED: TableDefinition<&str, u64> = TableDefinition::new("anchor_credited");

/// The longest term one receipt earns points for (a peer sets its
/// receipt's expiry; the SPN bounds what it credits).
pub(crate) const MAX_CREDIT_TERM: u64 = 100 * 24 * 3600;
/// The term credited to a receipt without an expiry.
const NO_EXPIRY_TERM: u64 = 24 * 3600;

pub(crate) use proto::api::AnchorBatch as BatchRecord;

/// A receipt found in a batch: the batch, its index there, the batch's receipts.
pub(crate) type Found = (BatchRecord, usize, Vec<Vec<u8>>);

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(QUEUE)?;
    txn.open_table(BATCHES)?;
    txn.open_table(ITEMS)?;
    txn.open_table(INDEX)?;
    txn.open_table(CREDITED)?;
    txn.open_table(AUDIT_QUEUE)?;
    txn.open_table(DELETION_QUEUE)?;
    Ok(())
}

/// One audit's result, as the SPN attests it in a batch of kind
/// [`AUDITS`]: `1 | peer: u8 length + bytes | at: u64 | height: u64 | hash:
/// 32 (the final block that seeded the challenge; zeros without a chain) | blocks: u32
/// | bytes: u64 | passed: u8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditResult {
    pub(crate) peer: net::PeerId,
    pub(crate) at: u64,
    pub(crate) height: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) blocks: u32,
    pub(crate) bytes: u64,
    pub(crate) passed: bool,
}

impl AuditResult {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let peer = self.peer.to_bytes();
        let mut v = vec![1, peer.len() as u8];
        v.extend_from_slice(&peer);
        v.extend_from_slice(&self.at.to_be_bytes());
        v.extend_from_slice(&self.height.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.blocks.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v.push(u8::from(self.passed));
        v
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<AuditResult> {
        let (&[1, n], rest) = b.split_first_chunk::<2>()? else { return None };
        let (peer, rest) = rest.split_at_checked(usize::from(n))?;
        let (at, rest) = rest.split_first_chunk::<8>()?;
        let (height, rest) = rest.split_first_chunk::<8>()?;
        let (hash, rest) = rest.split_first_chunk::<32>()?;
        let (blocks, rest) = rest.split_first_chunk::<4>()?;
        let (bytes, rest) = rest.split_first_chunk::<8>()?;
        let passed = match rest {
            [0] => false,
            [1] => true,
            _ => return None,
        };
        Some(AuditResult {
            peer: net::PeerId::from_bytes(peer).ok()?,
            at: u64::from_be_bytes(*at),
            height: u64::from_be_bytes(*height),
            hash: *hash,
            blocks: u32::from_be_bytes(*blocks),
            bytes: u64::from_be_bytes(*bytes),
            passed,
        })
    }
}

/// Queue receipts for the next batch, inside the caller's transaction.
pub(super) fn enqueue(txn: &WriteTransaction, receipts: &[&[u8]]) -> Result<()> {
    enqueue_kind(txn, "", receipts)
}

/// Queue items for the next batch of `kind`, inside the caller's transaction.
pub(super) fn enqueue_kind(txn: &WriteTransaction, kind: &str, receipts: &[&[u8]]) -> Result<()> {
    let mut q = txn.open_table(queue_of(kind))?;
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

    /// Queue an audit's result for the next batch of audits (while
    /// anchoring).
    pub(crate) fn enqueue_audit(&self, result: &AuditResult) -> Result<()> {
        if !self.anchors() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut q = txn.open_table(AUDIT_QUEUE)?;
            let next = q.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            q.insert(next, result.to_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Move up to `max` queued receipts (or, `kind` [`AUDITS`], audit
    /// results) into a new batch (one transaction); `root` computes its
    /// Merkle root. `None` when the queue is empty.
    pub(crate) fn make_batch(
        &self,
        kind: &str,
        max: usize,
        now: u64,
        root: impl Fn(&[Vec<u8>]) -> [u8; 32],
    ) -> Result<Option<BatchRecord>> {
        let txn = self.db.begin_write()?;
        let batch = {
            let mut q = txn.open_table(queue_of(kind))?;
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
            let bytes = match kind {
                AUDITS => items.iter().filter_map(|r| AuditResult::from_bytes(r)).map(|r| r.bytes).sum(),
                // An acknowledgement names no size.
                super::DELETIONS => 0,
                _ => items.iter().filter_map(|r| proto::Receipt::from_bytes(r).ok()).map(|r| r.size).sum(),
            };
            let rec = BatchRecord {
                id,
                kind: kind.to_string(),
                root: root(&items).iter().map(|b| format!("{b:02x}")).collect(),
                count: items.len() as u64,
                bytes,
                created: now,
                // Deleting earns no points: nothing to credit, so a
                // points transaction never names this batch's root.
                credited: kind == super::DELETIONS,
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
        self.batches_where(|b| b.height.is_none())
    }

    /// Final batches whose peers are not all credited with points yet.
    pub(crate) fn uncredited(&self) -> Result<Vec<BatchRecord>> {
        self.batches_where(|b| b.height.is_some() && !b.credited)
    }

    /// Every batch that `keep` keeps, oldest first.
    fn batches_where(&self, keep: impl Fn(&BatchRecord) -> bool) -> Result<Vec<BatchRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BATCHES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let rec: BatchRecord = parse(e?.1.value(), "batch")?;
            if keep(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Credit the peers of final batches `ids` (in order), once: per peer,
    /// the byte-hours their receipts promise on the SPN's clock (from when
    /// its batch was made, or the end of what an earlier receipt of the same
    /// shard was credited for, to the receipt's expiry, at most
    /// [`MAX_CREDIT_TERM`]). `sign` (the newest batch's root, the credits)
    /// makes the points transactions, kept in the newest batch's record in
    /// the same write as the terms credited and the older batches marked
    /// credited, so a crash neither loses nor doubles them.
    pub(crate) fn credit_batches(
        &self,
        ids: &[u64],
        spn: &str,
        sign: impl FnOnce(&str, Vec<(String, u64, u32)>) -> Result<Vec<String>>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut batches = txn.open_table(BATCHES)?;
            let it = txn.open_table(ITEMS)?;
            let mut credited = txn.open_table(CREDITED)?;
            let mut per: std::collections::BTreeMap<String, (u64, u32)> = std::collections::BTreeMap::new();
            let mut recs = Vec::new();
            for &id in ids {
                let Some(rec) = batches.get(id)?.map(|v| parse::<BatchRecord>(v.value(), "batch")).transpose()? else {
                    continue;
                };
                if rec.credited || !rec.points.is_empty() || rec.height.is_none() {
                    continue;
                }
                let (lo, hi) = (format!("{id:020}/"), format!("{id:020}0"));
                if rec.kind == super::DELETIONS {
                    // Deleting earns no points (made credited; never the
                    // batch a points transaction names).
                    continue;
                }
                if rec.kind == AUDITS {
                    for e in it.range(lo.as_str()..hi.as_str())? {
                        if let Some(a) = AuditResult::from_bytes(e?.1.value())
                            && a.passed
                            && a.peer.to_string() != spn
                        {
                            let p = per.entry(a.peer.to_string()).or_default();
                            p.1 = p.1.saturating_add(1);
                        }
                    }
                    recs.push(rec);
                    continue;
                }
                for e in it.range(lo.as_str()..hi.as_str())? {
                    let Ok(r) = proto::Receipt::from_bytes(e?.1.value()) else { continue };
                    let peer = r.peer.to_string();
                    if peer == spn {
                        continue;
                    }
                    let key = format!("{peer}/{}", r.cid);
                    let from = credited.get(key.as_str())?.map_or(rec.created, |v| v.value().max(rec.created));
                    let end = r
                        .expiry
                        .unwrap_or(rec.created.saturating_add(NO_EXPIRY_TERM))
                        .min(rec.created.saturating_add(MAX_CREDIT_TERM));
                    if end <= from {
                        continue;
                    }
                    credited.insert(key.as_str(), end)?;
                    let e = per.entry(peer).or_default();
                    e.0 = e.0.saturating_add(r.size.saturating_mul((end - from).div_ceil(3600)));
                }
                recs.push(rec);
            }
            let Some(mut newest) = recs.pop() else { return Ok(()) };
            for mut older in recs {
                older.credited = true;
                batches.insert(older.id, json(&older).as_slice())?;
            }
            newest.points = sign(&newest.root, per.into_iter().map(|(p, (bh, au))| (p, bh, au)).collect())?;
            newest.credited = newest.points.is_empty();
            batches.insert(newest.id, json(&newest).as_slice())?;
        }
        txn.commit()?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer chooses its receipt's times: the SPN credits from its own
    /// clock, caps the term, and credits a renewal only its extension.
    #[test]
    fn points_run_on_the_spns_clock_cap_the_term_and_credit_a_renewal_only_its_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("state");
        let key = net::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id().to_string();
        let cid = chunker::Cid::raw([5; 32]);
        let now = 1_000_000;
        let batch = |receipt: proto::Receipt, at: u64| {
            let txn = state.db.begin_write().expect("txn");
            enqueue(&txn, &[receipt.to_bytes().as_slice()]).expect("enqueue");
            txn.commit().expect("commit");
            let mut b = state.make_batch("", 10, at, |_| [0; 32]).expect("batch").expect("a batch");
            b.height = Some(1);
            state.put_batch(&b).expect("final");
            let mut credited = Vec::new();
            state
                .credit_batches(&[b.id], "the-spn", |_, per| {
                    credited = per.into_iter().map(|(p, bh, _)| (p, bh)).collect();
                    Ok(vec!["signed".into()])
                })
                .expect("credit");
            credited
        };
        // Stored "at the epoch", kept "for ever": credited from the batch, at most 100 days.
        let greedy = proto::Receipt::sign(&key, cid, 1000, 0, Some(u64::MAX - 1)).expect("sign");
        let got = batch(greedy, now);
        assert_eq!(got, vec![(peer.clone(), 1000 * MAX_CREDIT_TERM.div_ceil(3600))]);
        // A ten-day receipt, then its renewal to twelve days: two more days only.
        let other = chunker::Cid::raw([6; 32]);
        let day = 24 * 3600;
        let ten = proto::Receipt::sign(&key, other, 1000, now, Some(now + 10 * day)).expect("sign");
        assert_eq!(batch(ten, now + 60), vec![(peer.clone(), 1000 * 240)]);
        let twelve = proto::Receipt::sign(&key, other, 1000, now + 90, Some(now + 12 * day)).expect("sign");
        assert_eq!(batch(twelve, now + 90), vec![(peer.clone(), 1000 * 48)]);
        // Renewing to no later than what was credited earns nothing.
        let short = proto::Receipt::sign(&key, other, 1000, now, Some(now + 3600)).expect("sign");
        assert!(batch(short, now + 120).is_empty());
    }

    #[test]
    fn audit_results_round_trip_go_in_batches_of_their_own_and_count_as_audits_passed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path()).expect("state");
        state.set_anchoring(true);
        let peer = net::Keypair::generate_ed25519().public().to_peer_id();
        let result = |passed| AuditResult { peer, at: 7, height: 3, hash: [4; 32], blocks: 32, bytes: 4096, passed };
        let bytes = result(true).to_bytes();
        assert_eq!(AuditResult::from_bytes(&bytes), Some(result(true)));
        for cut in 0..bytes.len() {
            assert_eq!(AuditResult::from_bytes(&bytes[..cut]), None, "cut at {cut}");
        }
        for passed in [true, true, false] {
            state.enqueue_audit(&result(passed)).expect("enqueue");
        }
        assert!(state.make_batch("", 10, 1000, |_| [0; 32]).expect("batch").is_none(), "no receipts queued");
        let mut b = state.make_batch(AUDITS, 10, 1000, |_| [1; 32]).expect("batch").expect("an audit batch");
        assert_eq!((b.kind.as_str(), b.count, b.bytes), (AUDITS, 3, 3 * 4096));
        b.height = Some(2);
        state.put_batch(&b).expect("final");
        let mut got = Vec::new();
        state
            .credit_batches(&[b.id], "the-spn", |_, per| {
                got = per;
                Ok(vec!["signed".into()])
            })
            .expect("credit");
        assert_eq!(got, vec![(peer.to_string(), 0, 2)], "two passes, no byte-hours");
    }
}
