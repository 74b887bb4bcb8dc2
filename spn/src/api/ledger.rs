//! The ledger's side of the API: the receipt batches the SPN anchors, and
//! the proof that a receipt is on the chain.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use proto::api::{AnchorBatches, ReceiptProof};

use super::{Api, Caller};
use crate::Inner;
use crate::error::Error;

/// `GET /v1/ledger/batches`: the operator's view of what is anchored.
pub(super) async fn batches(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
) -> Api<Json<AnchorBatches>> {
    who.operator()?;
    Ok(Json(AnchorBatches { queued: inner.state.anchor_queue_len()?, batches: inner.state.batches(100)? }))
}

/// `GET /v1/ledger/receipts/{shard}/{peer}`: the proof that the receipt
/// `peer` signed for `shard` is anchored (any caller: receipts name shards
/// and peers, nothing of their content).
pub(super) async fn receipt_proof(
    State(inner): State<Arc<Inner>>,
    Path((shard, peer)): Path<(String, String)>,
) -> Api<Json<ReceiptProof>> {
    if inner.anchoring.is_none() {
        return Err(
            Error::NotFound("a chain here: this SPN anchors no receipts (start it with --ledger)".into()).into()
        );
    }
    let receipt = inner
        .state
        .receipt(&shard, &peer)?
        .ok_or_else(|| Error::NotFound(format!("a receipt of peer {peer} for shard {shard}")))?;
    Ok(Json(crate::anchor::prove(&inner, &receipt).await?))
}
