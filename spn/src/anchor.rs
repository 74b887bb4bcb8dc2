//! Anchoring storage receipts on the ledger: every `every`, the receipts
//! peers signed since the last batch become a batch; its Merkle root goes
//! on the chain in an anchor transaction the SPN signs with its node key,
//! offered to the producers until a block holds it (signed again against a
//! recent block if it expired unheard). The SPN keeps each batch's
//! receipts and serves their inclusion proofs. The SPN's audit results go
//! in batches of their own. Every `points_every`, the SPN credits the peers
//! of the batches made final since with contribution points: the
//! byte-hours their receipts promise on the SPN's clock and the audits they
//! passed (see `State::credit_batches`), in points transactions that name
//! the newest batch's root.

use std::sync::{Arc, Weak};
use std::time::Duration;

use ledger::{AnchorKind, Body, Genesis, Hash, Question, Tx};
use net::{Keypair, PeerId};

use crate::error::{Error, Result};
use crate::{Inner, now};

/// Heights an anchor transaction stays valid for.
const LIFETIME: u64 = 100;

/// How an SPN anchors its receipts.
#[derive(Debug, Clone)]
pub struct Anchoring {
    /// The chain.
    pub genesis: Genesis,
    /// The key that signs anchor transactions (the SPN's node key).
    pub key: Keypair,
    /// How often a batch is made.
    pub every: Duration,
    /// How often the peers of the batches made final since are credited
    /// with points (each crediting costs a transaction per 24 peers, so
    /// not every batch: a day by default).
    pub points_every: Duration,
    /// Receipts in one batch, at most.
    pub max_batch: usize,
}

impl Anchoring {
    /// Anchoring on the chain of `genesis`, signing with `key`, a batch a minute.
    pub fn new(genesis: Genesis, key: Keypair) -> Anchoring {
        Anchoring {
            genesis,
            key,
            every: Duration::from_secs(60),
            points_every: Duration::from_secs(24 * 3600),
            max_batch: 1 << 16,
        }
    }

    /// The genesis producers' nodes (their network ids: a producer's key
    /// may be apart from its node's).
    fn producers(&self) -> Vec<PeerId> {
        self.genesis.producers.iter().filter_map(|p| p.node()).collect()
    }
}

/// Ask the first producer that answers.
pub(crate) async fn ask(inner: &Inner, q: &Question) -> Result<(PeerId, Vec<u8>)> {
    let a = inner.anchoring.as_ref().ok_or_else(|| Error::Ledger("this SPN follows no chain (--ledger)".into()))?;
    let mut last = String::from("no producers");
    for peer in a.producers() {
        match inner.client.ask_ledger(peer, &q.encode(), ledger::MAX_ANSWER_BYTES).await {
            Ok(bytes) if !bytes.is_empty() => return Ok((peer, bytes)),
            Ok(_) => last = format!("{peer} gave an empty answer"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::Ledger(format!("no producer answered: {last}")))
}

async fn ask_peer(inner: &Inner, peer: PeerId, q: &Question) -> Result<Vec<u8>> {
    inner.client.ask_ledger(peer, &q.encode(), ledger::MAX_ANSWER_BYTES).await.map_err(|e| Error::Ledger(e.to_string()))
}

/// The loop; ends when the SPN does.
pub(crate) async fn run(weak: Weak<Inner>) {
    loop {
        let every = match weak.upgrade() {
            Some(inner) => match &inner.anchoring {
                Some(a) => a.every,
                None => return,
            },
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = pass(&inner).await {
            tracing::warn!("anchoring receipts: {e}");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).ok()
}

/// One pass: batch what is queued, then move every batch not final yet along.
pub(crate) async fn pass(inner: &Arc<Inner>) -> Result<()> {
    let Some(a) = inner.anchoring.as_ref() else { return Ok(()) };
    let _one = inner.anchoring_pass.lock().await;
    if let Some(b) = inner.state.make_batch("", a.max_batch, now(), ledger::batch_root)? {
        tracing::info!(batch = b.id, receipts = b.count, "receipt batch made");
    }
    if let Some(b) = inner.state.make_batch(crate::state::AUDITS, a.max_batch, now(), ledger::batch_root)? {
        tracing::info!(batch = b.id, audits = b.count, "audit batch made");
    }
    if let Some(b) = inner.state.make_batch(crate::state::DELETIONS, a.max_batch, now(), ledger::batch_root)? {
        tracing::info!(batch = b.id, acks = b.count, "delete acknowledgement batch made");
    }
    let (producer, answer) = ask(inner, &Question::Status).await?;
    let status = ledger::rpc::status_answer(&answer).map_err(|e| Error::Ledger(e.to_string()))?;
    let chain = a.genesis.hash();
    if status.chain != chain.to_hex() {
        return Err(Error::Ledger(format!("producer {producer} runs chain {}, not {}", status.chain, chain.to_hex())));
    }
    let reference = Hash::from_hex(&status.hash).unwrap_or(chain);
    // The newest final hash seeds the audits from now on.
    *inner.final_block.lock().unwrap_or_else(|p| p.into_inner()) = Some((status.height, reference.0));
    let pending = inner.state.unanchored()?;
    for mut b in pending {
        let signed = b.tx.as_deref().and_then(unhex).and_then(|t| Tx::decode(&t).ok());
        let tx = match signed {
            Some(tx) => {
                if let Some((h, i)) = find(inner, producer, &tx).await? {
                    // One producer's word is not enough: the block and its
                    // certificate must show the transaction final.
                    if let Err(e) = confirm(inner, a, producer, h, i, &tx).await {
                        tracing::warn!(batch = b.id, "producer {producer} says block {h} holds the anchor, but: {e}");
                        continue;
                    }
                    b.height = Some(h);
                    b.index = Some(i);
                    inner.state.put_batch(&b)?;
                    tracing::info!(batch = b.id, height = h, "receipt batch anchored");
                    continue;
                }
                if status.height > tx.expiry {
                    // It expired unheard: sign it again against a recent block.
                    b.tx = None;
                    inner.state.put_batch(&b)?;
                    continue;
                }
                tx
            }
            None => {
                let root =
                    Hash::from_hex(&b.root).ok_or_else(|| Error::Db(format!("batch {} has a bad root", b.id)))?;
                let kind = match b.kind.as_str() {
                    crate::state::AUDITS => AnchorKind::Audits,
                    crate::state::DELETIONS => AnchorKind::Deletions,
                    _ => AnchorKind::Receipts,
                };
                let body = Body::Anchor { kind, root: root.0, count: b.count, bytes: b.bytes };
                let tx = Tx::sign(&a.key, chain, (status.height, reference), LIFETIME, body)
                    .map_err(|e| Error::Ledger(e.to_string()))?;
                b.tx = Some(hex(&tx.encode()));
                inner.state.put_batch(&b)?;
                tx
            }
        };
        // Offered again each pass until a block holds it: a producer's pool
        // takes a transaction once.
        if let Err(why) = offer(inner, producer, tx).await? {
            tracing::warn!(batch = b.id, "the producer refused the anchor: {why}");
        }
    }
    credit(inner, a, producer, status.height, reference).await
}

/// Credit the peers of final batches with points: once the oldest final
/// batch not credited is `points_every` old, sign the points transactions
/// for all of them at once (naming the newest one's root), then offer them
/// until the chain holds each (signed again if one expired unheard).
async fn credit(inner: &Inner, a: &Anchoring, producer: PeerId, height: u64, reference: Hash) -> Result<()> {
    let chain = a.genesis.hash();
    let waiting = inner.state.uncredited()?;
    let signed_already = waiting.iter().any(|b| !b.points.is_empty());
    let due = waiting.first().is_some_and(|b| now().saturating_sub(b.created) >= a.points_every.as_secs());
    if !signed_already && due {
        let spn = a.key.public().to_peer_id().to_string();
        let ids: Vec<u64> = waiting.iter().map(|b| b.id).collect();
        inner.state.credit_batches(&ids, &spn, |root, per| {
            let root = Hash::from_hex(root).ok_or_else(|| Error::Db("a batch with a bad root".into()))?;
            let credits: Vec<ledger::Credit> = per
                .into_iter()
                .filter_map(|(peer, byte_hours, audits)| {
                    Some(ledger::Credit { peer: peer.parse().ok()?, byte_hours, audits })
                })
                .collect();
            credits
                .chunks(ledger::MAX_POINTS)
                .map(|c| {
                    let body = Body::Points { root: root.0, credits: c.to_vec() };
                    Tx::sign(&a.key, chain, (height, reference), LIFETIME, body)
                        .map(|tx| hex(&tx.encode()))
                        .map_err(|e| Error::Ledger(e.to_string()))
                })
                .collect()
        })?;
    }
    for mut b in inner.state.uncredited()?.into_iter().filter(|b| !b.points.is_empty()) {
        // Slots still on their way; one that can never land is settled with
        // a warning, so it does not hold every later crediting back.
        let mut pending = 0;
        for slot in 0..b.points.len() {
            let Some(tx) = unhex(&b.points[slot]).and_then(|t| Tx::decode(&t).ok()) else {
                tracing::warn!(batch = b.id, slot, "a points transaction the SPN kept does not decode: dropped");
                continue;
            };
            if find(inner, producer, &tx).await?.is_some() {
                continue;
            }
            let tx = if height > tx.expiry {
                let again = Tx::sign(&a.key, chain, (height, reference), LIFETIME, tx.body)
                    .map_err(|e| Error::Ledger(e.to_string()))?;
                b.points[slot] = hex(&again.encode());
                inner.state.put_batch(&b)?;
                again
            } else {
                tx
            };
            match offer(inner, producer, tx).await? {
                Err(why) if why.contains(ledger::ALREADY_CREDITED) => {
                    tracing::warn!(batch = b.id, slot, "points refused for good ({why}): settled");
                }
                Err(why) => {
                    tracing::debug!(batch = b.id, slot, "the producer did not take points now: {why}");
                    pending += 1;
                }
                Ok(_) => pending += 1,
            }
        }
        if pending == 0 {
            b.credited = true;
            inner.state.put_batch(&b)?;
            tracing::info!(batch = b.id, "the peers of the batches up to this one are credited with points");
        }
    }
    Ok(())
}

/// Where the chain holds `tx` (height, index), as `producer` says.
async fn find(inner: &Inner, producer: PeerId, tx: &Tx) -> Result<Option<(u64, u32)>> {
    let answer = ask_peer(inner, producer, &Question::Find(tx.id())).await?;
    ledger::rpc::find_answer(&answer).map_err(|e| Error::Ledger(e.to_string()))
}

/// Offer `tx` to `producer`'s pool: its id, or why it was not taken.
async fn offer(inner: &Inner, producer: PeerId, tx: Tx) -> Result<std::result::Result<ledger::TxId, String>> {
    let answer = ask_peer(inner, producer, &Question::Submit(Box::new(tx))).await?;
    ledger::rpc::submit_answer(&answer).map_err(|e| Error::Ledger(e.to_string()))
}

/// Check that block `height`, certified by the producers of that height
/// (followed from the genesis), holds `tx` at `index`.
async fn confirm(inner: &Inner, a: &Anchoring, producer: PeerId, height: u64, index: u32, tx: &Tx) -> Result<()> {
    let bad = |why: String| Error::Ledger(why);
    let answer = ask_peer(inner, producer, &Question::Block(height)).await?;
    let (block, cert) = ledger::rpc::block_answer(&answer)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad(format!("it has no block {height}")))?;
    if block.txs.get(index as usize).map(Tx::id) != Some(tx.id()) || cert.value_id != block.hash() {
        return Err(bad(format!("block {height} does not hold the anchor at {index}")));
    }
    let changes =
        inner.client.ask_ledger(producer, &Question::Sets.encode(), 16 << 20).await.map_err(|e| bad(e.to_string()))?;
    let changes = ledger::rpc::sets_answer(&changes).map_err(|e| bad(e.to_string()))?;
    let sets = ledger::sets::follow(&a.genesis, &changes).map_err(|e| bad(e.to_string()))?;
    ledger::verify_certificate(a.genesis.hash(), &cert, &ledger::sets::at(&sets, height))
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// The proof that `receipt` (its bytes) is anchored.
pub(crate) async fn prove(inner: &Arc<Inner>, receipt: &[u8]) -> Result<proto::api::ReceiptProof> {
    let (batch, index, items) = inner.state.batch_of(receipt)?.ok_or_else(|| {
        Error::NotFound(
            "that receipt in a batch: receipts wait for the next batch (see `GET /v1/ledger/batches`)".into(),
        )
    })?;
    let (Some(height), Some(tx_index)) = (batch.height, batch.index) else {
        return Err(Error::NotFound(format!(
            "a final block holding batch {} yet: it is on its way to the chain",
            batch.id
        )));
    };
    let (_, answer) = ask(inner, &Question::Block(height)).await?;
    let (block, cert) = ledger::rpc::block_answer(&answer)
        .map_err(|e| Error::Ledger(e.to_string()))?
        .ok_or_else(|| Error::Ledger(format!("the producer has no block {height}")))?;
    let proof = ledger::prove(&block, &cert, tx_index as usize, Some((&items, index)))
        .map_err(|e| Error::Ledger(e.to_string()))?;
    Ok(proto::api::ReceiptProof { batch: batch.id, height, proof: hex(&proof.encode()) })
}
