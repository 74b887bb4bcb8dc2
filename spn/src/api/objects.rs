//! Objects: upload (a publish job), jobs, objects, receipts; health and peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chunker::{Cid, Manifest};
use futures::StreamExt;
use proto::api::{Accepted, Health, ObjectInfo, PeerList, Placement, ReceiptList};
use serde::Deserialize;

use super::{Api, ApiError, Caller, bad, caller, check_name};
use crate::error::Error;
use crate::publish::{PublishParams, publish};
use crate::state::{JobRecord, JobState};
use crate::{Inner, now};

/// How long an upload may pause between two pieces of its body.
const UPLOAD_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub(super) struct HealthQuery {
    #[serde(default)]
    refresh: bool,
}

pub(super) async fn health(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HealthQuery>,
) -> Api<Json<Health>> {
    // Asking every peer costs the network: only for holders of a token.
    if q.refresh {
        caller(&inner, &headers)?;
        inner.refresh_peers().await;
    }
    let live = inner
        .state
        .peers()
        .map(|p| p.iter().filter(|p| crate::heartbeat::is_live(p, crate::now(), &inner.settings)).count())
        .unwrap_or(0);
    Ok(Json(Health { ok: true, peer_id: inner.client.peer_id().to_string(), live_peers: live as u64 }))
}

#[derive(Debug, Deserialize)]
pub(super) struct UploadQuery {
    tenant: String,
    product: String,
    data: Option<u8>,
    parity: Option<u8>,
    /// `false`: no patches against the product's previous release.
    patches: Option<bool>,
}

pub(super) async fn upload(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Api<(StatusCode, Json<Accepted>)> {
    check_name("tenant", &q.tenant)?;
    check_name("product", &q.product)?;
    who.may(&q.tenant)?;
    let (data, parity) = (q.data.unwrap_or(10), q.parity.unwrap_or(4));
    chunker::Params::default().with_coding(data, parity).validate().map_err(|e| bad(e.to_string()))?;
    let owner = inner.state.claim_product(&q.product, &q.tenant)?;
    if owner != q.tenant {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("product {} belongs to vendor {owner}", q.product)));
    }
    let path = inner.dir.join("uploads").join(format!("{:016x}.upload", rand::random::<u64>()));
    // Plaintext firmware while its job runs: for the SPN's eyes only.
    let mut file = crate::create_private(&path).map_err(|e| ApiError::from(Error::io("creating the upload", e)))?;
    let mut stream = body.into_data_stream();
    let mut len = 0u64;
    let failed = |e: ApiError| {
        let _ = std::fs::remove_file(&path);
        e
    };
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_IDLE, stream.next()).await {
            Ok(Some(c)) => c.map_err(|e| failed(bad(format!("upload broke off: {e}"))))?,
            Ok(None) => break,
            Err(_) => {
                return Err(failed(ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the upload stalled for {} s; send it again", UPLOAD_IDLE.as_secs()),
                )));
            }
        };
        len += chunk.len() as u64;
        if len > inner.max_upload {
            return Err(failed(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("object over the limit of {} bytes (the SPN's largest upload)", inner.max_upload),
            )));
        }
        std::io::Write::write_all(&mut file, &chunk).map_err(|e| failed(Error::io("writing the upload", e).into()))?;
    }
    drop(file);
    if len == 0 {
        return Err(failed(bad("the object is empty: nothing to publish")));
    }
    let id = new_job(&inner, &q.tenant, len)?;
    let params =
        PublishParams { tenant: q.tenant, product: q.product, data, parity, patches: q.patches.unwrap_or(true) };
    let inner2 = inner.clone();
    tokio::spawn(async move {
        let _ = run_job(inner2, id, path, params).await;
    });
    Ok((StatusCode::ACCEPTED, Json(Accepted { job: id, bytes: len })))
}

/// Run a publish job to its end, saving its outcome; the upload is removed
/// after. A failed job's shards go to the delete queue.
pub(crate) async fn run_job(
    inner: Arc<Inner>,
    id: u64,
    path: std::path::PathBuf,
    params: PublishParams,
) -> crate::Result<crate::JobResult> {
    let _one = inner.encode_lock.lock().await;
    let r = publish(inner.clone(), id, &path, params).await;
    let _ = std::fs::remove_file(&path);
    let mut j = inner.job(id).ok().flatten().unwrap_or_else(|| blank_job(id, ""));
    match &r {
        Ok(res) => {
            j.state = JobState::Done;
            j.result = Some(res.clone());
            // Copies a hedged put stored anyway (no receipt kept) go now, not at the next sweep.
            if inner.state.pending_deletes().is_ok_and(|q| !q.is_empty()) {
                let inner = inner.clone();
                tokio::spawn(async move { crate::cleanup::drain(&inner).await });
            }
        }
        Err(e) => {
            tracing::warn!("job {id} failed: {e}");
            j.state = JobState::Failed;
            j.error = Some(e.to_string());
            match inner.state.abandon_job(id, now()) {
                Ok(n) if n > 0 => {
                    // Deleted now where the peers answer; the rest stays queued.
                    tracing::info!("job {id}: deleting the {n} shard(s) it stored");
                    crate::cleanup::drain(&inner).await;
                }
                Ok(_) => {}
                Err(e) => tracing::error!("queueing the shards of job {id} for deletion: {e}"),
            }
        }
    }
    j.finished = Some(now());
    if let Err(e) = inner.state.put_job(&j) {
        tracing::error!("saving job {id}: {e}");
    }
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    r
}

/// A new job record, saved and tracked.
pub(crate) fn new_job(inner: &Inner, tenant: &str, bytes: u64) -> crate::Result<u64> {
    new_job_of(inner, "publish", tenant, bytes, None)
}

/// A new job of `kind` (`publish`, `encoded`), saved and tracked.
pub(crate) fn new_job_of(
    inner: &Inner,
    kind: &str,
    tenant: &str,
    bytes: u64,
    opened_by: Option<&str>,
) -> crate::Result<u64> {
    let id = {
        let mut n = inner.next_job.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n - 1
    };
    let mut job = blank_job(id, tenant);
    job.kind = kind.to_string();
    job.state = JobState::Queued;
    job.bytes_total = bytes;
    job.opened_by = opened_by.map(String::from);
    inner.state.put_job(&job)?;
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(id, job);
    Ok(id)
}

fn blank_job(id: u64, tenant: &str) -> JobRecord {
    JobRecord {
        id,
        kind: "publish".into(),
        tenant: tenant.to_string(),
        state: JobState::Failed,
        bytes_done: 0,
        bytes_total: 0,
        shards_placed: 0,
        retries: 0,
        result: None,
        opened_by: None,
        error: None,
        started: now(),
        finished: None,
    }
}

pub(super) async fn job(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(id): Path<u64>,
) -> Api<Json<JobRecord>> {
    let mut j = inner.job(id)?.ok_or_else(|| ApiError::from(Error::NotFound(format!("job {id}"))))?;
    who.may_use(&j).map_err(|_| ApiError::from(Error::NotFound(format!("job {id}"))))?;
    if who.append_only() {
        // A result may hold a read key (a publish): never for an append token.
        j.result = None;
    }
    Ok(Json(j))
}

/// Which peers hold each shard of a manifest.
pub(crate) fn placement_of(inner: &Inner, manifest: &Manifest) -> crate::error::Result<Placement> {
    let mut peers: Vec<String> = Vec::new();
    let mut shards = BTreeMap::new();
    for s in manifest.segments() {
        for c in s.shards() {
            let holders = inner.state.placement(&c.to_string())?;
            let idx = holders
                .into_iter()
                .map(|h| match peers.iter().position(|p| *p == h) {
                    Some(i) => i as u32,
                    None => {
                        peers.push(h);
                        (peers.len() - 1) as u32
                    }
                })
                .collect();
            shards.insert(c.to_string(), idx);
        }
    }
    Ok(Placement { peers, shards })
}

pub(super) fn load_manifest(inner: &Inner, cid: &str) -> Api<(Vec<u8>, Manifest)> {
    let bytes = inner.state.manifest(cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
    let c: Cid = cid.parse().map_err(|e: chunker::Error| bad(e.to_string()))?;
    let m = Manifest::from_bytes_with_cid(&bytes, &c, &Default::default()).map_err(|e| bad(e.to_string()))?;
    Ok((bytes, m))
}

pub(super) fn object_of(inner: &Inner, who: &Caller, cid: &str) -> Api<crate::ObjectRecord> {
    let rec = inner.state.object(cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
    // Another tenant's object is as good as absent.
    who.may(&rec.tenant).map_err(|_| ApiError::from(Error::NotFound(format!("object {cid}"))))?;
    Ok(rec)
}

pub(super) async fn object(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
) -> Api<Json<ObjectInfo>> {
    let rec = object_of(&inner, &who, &cid)?;
    let (_, m) = load_manifest(&inner, &cid)?;
    let placement = placement_of(&inner, &m)?;
    Ok(Json(ObjectInfo { object: rec, placement }))
}

pub(super) async fn receipts(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
) -> Api<Json<ReceiptList>> {
    object_of(&inner, &who, &cid)?;
    let (_, m) = load_manifest(&inner, &cid)?;
    let mut out = Vec::new();
    for s in m.segments() {
        for c in s.shards() {
            for r in inner.state.receipts(&c.to_string())? {
                out.push(data_encoding::HEXLOWER.encode(&r));
            }
        }
    }
    Ok(Json(ReceiptList { object: cid, receipts: out }))
}

pub(super) async fn peers(State(inner): State<Arc<Inner>>, Extension(who): Extension<Caller>) -> Api<Json<PeerList>> {
    who.operator()?;
    let t = crate::now();
    let mut peers = inner.state.peers()?;
    for p in &mut peers {
        p.status = crate::durability::status(p, t, &inner.settings).to_string();
    }
    Ok(Json(PeerList { peers }))
}

/// `POST /v1/peers/{peer}/labels`: the operator sets a peer's region or operator.
pub(super) async fn label_peer(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(peer): Path<String>,
    body: axum::body::Bytes,
) -> Api<Json<crate::types::PeerRecord>> {
    who.operator()?;
    let labels: crate::types::PeerLabels = serde_json::from_slice(&body).map_err(|e| bad(format!("labels: {e}")))?;
    for v in [&labels.region, &labels.operator].into_iter().flatten() {
        if !v.is_empty() && !crate::valid_name(v) {
            return Err(bad(format!("label {v:?}: use 1 to 64 letters, digits, '-', '_' or '.'")));
        }
    }
    let saved = inner.state.update_peer(&peer, |cur| {
        let mut p = cur?;
        if let Some(r) = &labels.region {
            p.region = r.clone();
        }
        if let Some(o) = &labels.operator {
            p.operator = o.clone();
        }
        Some(p)
    })?;
    saved.map(Json).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no peer {peer} known here")))
}

#[derive(Debug, Deserialize)]
pub(super) struct DurabilityQuery {
    object: Option<String>,
}

/// `GET /v1/durability[?object=CID]`.
pub(super) async fn durability(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Query(q): Query<DurabilityQuery>,
) -> Api<Json<crate::types::Durability>> {
    who.operator()?;
    let r = tokio::task::spawn_blocking(move || crate::health::report(&inner, q.object.as_deref()))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("durability report: {e}")))??;
    Ok(Json(r))
}
