//! Objects a client encoded itself (backups): upload sessions that place
//! ciphertext segments and commit their manifests, object deletion, and
//! tenants' opaque records. The SPN checks what it can without a key: each
//! segment's shards against their length and the Reed-Solomon parity, each
//! manifest's public part, and that every shard a manifest names is held
//! for this tenant. It never receives a key or a plaintext byte.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use chunker::{Cid, Manifest, Segment, ShardBytes};
use proto::api::{
    Committed, Deleted, EncodedCommit, EncodedSession, Held, MAX_RENEW, ObjectRecord, RecordInfo, RecordList,
    RenewObjects, Renewed, SegmentPlaced, ShardCids,
};
use serde::Deserialize;

use super::objects::new_job_of;
use super::{Api, ApiError, Caller, bad, check_name};
use crate::error::Error;
use crate::publish::{Shared, candidates, place_segment};
use crate::state::{JobRecord, JobState};
use crate::{Inner, now};

/// The largest segment body accepted (what one request buffers): a 64 MiB
/// segment at 10+4 is 90 MiB of shards.
pub(crate) const MAX_SEGMENT_BODY: usize = 96 << 20;

/// How long a segment's body may take to arrive.
const SEGMENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The largest record a tenant may keep.
pub(crate) const MAX_RECORD: usize = 4 << 20;

#[derive(Debug, Deserialize)]
pub(super) struct SessionQuery {
    tenant: String,
}

/// `POST /v1/encoded?tenant=T`.
pub(super) async fn open(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Query(q): Query<SessionQuery>,
) -> Api<(StatusCode, Json<EncodedSession>)> {
    check_name("tenant", &q.tenant)?;
    who.may_add(&q.tenant)?;
    let job = new_job_of(&inner, "encoded", &q.tenant, 0, who.append_id())?;
    inner.progress(job, |j| j.state = JobState::Encoding);
    Ok((StatusCode::CREATED, Json(EncodedSession { job, parity_here: true })))
}

/// The session `job`, if `who` may use it and it is still open.
fn session(inner: &Inner, who: &Caller, job: u64) -> Api<JobRecord> {
    let j = inner.job(job)?.ok_or_else(|| ApiError::from(Error::NotFound(format!("job {job}"))))?;
    who.may_use(&j).map_err(|_| ApiError::from(Error::NotFound(format!("job {job}"))))?;
    if j.kind != "encoded" {
        return Err(bad(format!("job {job} is a {} job, not an upload session", j.kind)));
    }
    if j.state.is_finished() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("upload session {job} has ended ({}); open a new one", j.state),
        ));
    }
    Ok(j)
}

#[derive(Debug, Deserialize)]
pub(super) struct SegmentQuery {
    len: u64,
    k: u8,
    /// Shards in all, when the body is the k data shards alone and the
    /// parity is computed here.
    n: Option<u8>,
}

/// `PUT /v1/encoded/{job}/segments?len=L&k=K`: the body is the n shards;
/// with `&n=N`, the k data shards (the n − k parity shards made here).
pub(super) async fn put_segment(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(job): Path<u64>,
    Query(q): Query<SegmentQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Api<Json<SegmentPlaced>> {
    session(&inner, &who, job)?;
    if q.k == 0 || q.len == 0 || q.len > 1 << 30 {
        return Err(bad(format!("a segment of {} bytes with k = {} is impossible", q.len, q.k)));
    }
    let shard_len = q.len.div_ceil(u64::from(q.k));
    // With the data shards alone the segment grows to n shards here: the
    // whole of it is bounded and its room held before a byte is read.
    let (room, limit) = match q.n {
        Some(n) => {
            let whole = shard_len * u64::from(n);
            if n < q.k || whole > MAX_SEGMENT_BODY as u64 {
                return Err(bad(format!(
                    "a segment of {} bytes in {n} shards with k = {} is impossible here (n >= k, at most \
                     {MAX_SEGMENT_BODY} bytes of shards)",
                    q.len, q.k
                )));
            }
            // What the SPN makes and sends to peers for each byte it is
            // sent stays bounded: at most as much parity as data.
            if u32::from(n) > 2 * u32::from(q.k) {
                return Err(bad(format!(
                    "the SPN makes at most as many parity shards as data shards (n = {n} > 2k = {}): send all \
                     {n} shards of this coding",
                    2 * u32::from(q.k)
                )));
            }
            (super::room(whole as usize).await, (shard_len * u64::from(q.k)) as usize)
        }
        None => (super::body_room(&headers, MAX_SEGMENT_BODY).await, MAX_SEGMENT_BODY),
    };
    // Held while the segment's bytes are, to its placement's end.
    let _room = room;
    let read = axum::body::to_bytes(body, limit);
    let bytes = tokio::time::timeout(SEGMENT_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!("the segment did not arrive within {} s", SEGMENT_DEADLINE.as_secs()),
            )
        })?
        .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("segment over {limit} bytes, or broken off")))?;
    let total = bytes.len() as u64;
    let (len, k) = (q.len, q.k);
    let n = match q.n {
        Some(n) => {
            if total != shard_len * u64::from(k) {
                return Err(bad(format!(
                    "{total} bytes with n = {n} are not the {k} data shards of {shard_len} bytes of a segment of \
                     {len} bytes (k = {k}, n >= k)"
                )));
            }
            usize::from(n)
        }
        None => {
            if total == 0
                || !total.is_multiple_of(shard_len)
                || total / shard_len < u64::from(k)
                || total / shard_len > 255
            {
                return Err(bad(format!(
                    "{total} bytes are not k..=255 shards of {shard_len} bytes (a segment of {len} bytes, k = {k})"
                )));
            }
            (total / shard_len) as usize
        }
    };
    let buf = match q.n {
        // Room for the parity behind the data: one copy, no growing.
        Some(_) => {
            let mut v = Vec::with_capacity(shard_len as usize * n);
            v.extend_from_slice(&bytes);
            drop(bytes);
            v
        }
        None => Vec::from(bytes),
    };
    let (segment, shards) = tokio::task::spawn_blocking(move || match q.n {
        Some(n) => Segment::from_data(len, k, n - k, buf),
        None => {
            let views: Vec<&[u8]> = buf.chunks_exact(shard_len as usize).collect();
            let segment = Segment::from_shards(len, k, &views)?;
            Ok((segment, ShardBytes::from_vec(buf, shard_len as usize)))
        }
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("checking the segment: {e}")))?
    .map_err(|e| bad(e.to_string()))?;
    let cids: Vec<Cid> = segment.shards().to_vec();
    let held = inner.state.job_held(job)?;
    if cids.iter().all(|c| held.contains(&c.to_string())) {
        return Ok(Json(SegmentPlaced {
            segment: segment.cid().to_string(),
            shards: n as u64,
            receipts: 0,
            held_already: true,
        }));
    }
    let cands = candidates(&inner, n).await?;
    if cands.len() < n {
        return Err(Error::NotEnoughPeers { need: n, have: cands.len() }.into());
    }
    let parity = (n - usize::from(k)) as u8;
    let mut pool = client::placement::Pool::new(cands);
    if !inner.settings.relax_domains {
        pool.max_per_domain = usize::from(parity.max(1));
    }
    let until = now() + inner.backup_window.as_secs();
    let shared = Arc::new(std::sync::Mutex::new(Shared::new(pool, parity).expiring(until)));
    let index = inner.job(job)?.map_or(0, |j| j.shards_placed as usize);
    place_segment(inner.clone(), shared.clone(), job, index, shard_len, cids, shards).await?;
    let (unplaced, receipts) = {
        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut st.unplaced), st.receipts)
    };
    if !unplaced.is_empty() {
        return Err(Error::Unplaced(unplaced).into());
    }
    inner.progress(job, |j| j.bytes_done += q.len);
    Ok(Json(SegmentPlaced { segment: segment.cid().to_string(), shards: n as u64, receipts, held_already: false }))
}

/// `POST /v1/encoded/{job}/held`.
pub(super) async fn held(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(job): Path<u64>,
    body: Bytes,
) -> Api<Json<Held>> {
    session(&inner, &who, job)?;
    let q: ShardCids = serde_json::from_slice(&body).map_err(|e| bad(format!("shard list: {e}")))?;
    if q.shards.len() > 4096 {
        return Err(bad("at most 4096 shards per question"));
    }
    let have = inner.state.job_held(job)?;
    Ok(Json(Held { held: q.shards.iter().map(|c| have.contains(c)).collect() }))
}

/// `POST /v1/encoded/{job}/commit`.
pub(super) async fn commit(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(job): Path<u64>,
    body: Bytes,
) -> Api<Json<Committed>> {
    let j = session(&inner, &who, job)?;
    let q: EncodedCommit = serde_json::from_slice(&body).map_err(|e| bad(format!("commit: {e}")))?;
    if q.manifests.is_empty() || q.manifests.len() > 64 {
        return Err(bad("a commit names 1 to 64 manifests"));
    }
    let held = inner.state.job_held(job)?;
    let mut objects = Vec::new();
    for (i, b64) in q.manifests.iter().enumerate() {
        let bytes = data_encoding::BASE64
            .decode(b64.as_bytes())
            .map_err(|e| bad(format!("manifest {i} is not base64: {e}")))?;
        let m = Manifest::from_bytes(&bytes, &Default::default()).map_err(|e| bad(format!("manifest {i}: {e}")))?;
        let cid = m.cid().to_string();
        let mut new_segments = 0;
        let mut new_shard_bytes = 0;
        let mut shards = Vec::new();
        for seg in m.segments() {
            let names: Vec<String> = seg.shards().iter().map(|c| c.to_string()).collect();
            if names.iter().any(|c| held.contains(c)) {
                new_segments += 1;
                new_shard_bytes += seg.shard_len() * seg.shards().len() as u64;
            }
            shards.extend(names.into_iter().map(|c| (c, seg.shard_len())));
        }
        let coding = m.params().coding;
        let rec = ObjectRecord {
            manifest: cid,
            tenant: j.tenant.clone(),
            product: String::new(),
            read_key: String::new(),
            length: 0,
            blake3: String::new(),
            data_shards: coding.data,
            parity_shards: coding.parity,
            segments: m.segments().len() as u64,
            new_segments,
            new_shard_bytes,
            created: now(),
            placement_version: 0,
        };
        objects.push((rec, bytes, shards));
    }
    let inner2 = inner.clone();
    let tenant = j.tenant.clone();
    let uses = q.uses.clone();
    if uses.len() > 100_000 {
        return Err(bad("a commit names at most 100,000 objects it uses"));
    }
    let dropped = tokio::task::spawn_blocking(move || {
        let r = inner2.state.commit_encoded(job, &tenant, &objects, &uses, now());
        r.map(|d| (d, objects.into_iter().map(|(r, _, _)| r.manifest).collect::<Vec<_>>()))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the commit: {e}")))??;
    let (dropped, names) = dropped;
    let mut done = inner.job(job)?.unwrap_or(j);
    done.state = JobState::Done;
    done.finished = Some(now());
    inner.state.put_job(&done)?;
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
    if dropped > 0 {
        let inner = inner.clone();
        tokio::spawn(async move { crate::cleanup::drain(&inner).await });
    }
    Ok(Json(Committed { objects: names, shards_dropped: dropped }))
}

/// `DELETE /v1/encoded/{job}`: give up a session; what it placed is deleted.
pub(super) async fn abandon(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(job): Path<u64>,
) -> Api<StatusCode> {
    let mut j = session(&inner, &who, job)?;
    let n = inner.state.abandon_job(job, now())?;
    j.state = JobState::Failed;
    j.error = Some("abandoned by the client".to_string());
    j.finished = Some(now());
    inner.state.put_job(&j)?;
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
    if n > 0 {
        let inner = inner.clone();
        tokio::spawn(async move { crate::cleanup::drain(&inner).await });
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Copies one renewal may ask peers for.
const MAX_RENEW_COPIES: usize = 200_000;
/// How long one peer's renewal may take.
const RENEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /v1/objects/renew`: the peers keep these encoded objects' shards
/// another window. A copy renewed within the last third of a window is
/// left as it is, so a daily run renews each copy about once a month. An
/// append token may renew (it only makes data last longer).
pub(super) async fn renew(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(body): Json<RenewObjects>,
) -> Api<Json<Renewed>> {
    if body.objects.len() > MAX_RENEW {
        return Err(bad(format!("{} objects in one renewal; send at most {MAX_RENEW} at a time", body.objects.len())));
    }
    let window = inner.backup_window.as_secs();
    let until = now() + window;
    let fresh_after = until.saturating_sub(window / 3);
    let mut out = Renewed { until, ..Renewed::default() };
    // (shard, peer) copies to renew, once each: only holders the placement
    // still names (a copy dropped or moved is not renewed back).
    let mut todo: Vec<(Cid, net::PeerId)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for cid in &body.objects {
        // One object gone (a prune elsewhere) or not a backup's must not
        // stop the others' renewal.
        let rec = match inner.state.object(cid)? {
            Some(r) if who.may_add(&r.tenant).is_ok() => r,
            _ => {
                out.missing += 1;
                continue;
            }
        };
        if !rec.read_key.is_empty() {
            out.missing += 1;
            continue;
        }
        let (_, m) = super::objects::load_manifest(&inner, cid)?;
        for seg in m.segments() {
            for c in seg.shards() {
                if !seen.insert(*c) {
                    continue;
                }
                let key = c.to_string();
                let holders = inner.state.placement(&key)?;
                for bytes in inner.state.receipts(&key)? {
                    let Ok(r) = proto::Receipt::from_bytes(&bytes) else { continue };
                    if !holders.contains(&r.peer.to_string()) {
                        continue;
                    }
                    match r.expiry {
                        None => out.fresh += 1,
                        Some(e) if e >= fresh_after => out.fresh += 1,
                        Some(_) => todo.push((*c, r.peer)),
                    }
                }
            }
        }
        if todo.len() > MAX_RENEW_COPIES {
            return Err(bad(format!(
                "more than {MAX_RENEW_COPIES} copies to renew in one request: send fewer objects at a time"
            )));
        }
    }
    use futures::StreamExt;
    let client = inner.client.clone();
    let results: Vec<_> = futures::stream::iter(todo)
        .map(|(cid, peer)| {
            let client = client.clone();
            async move {
                // A peer that does not answer costs a few seconds, not the request.
                let r = match tokio::time::timeout(RENEW_TIMEOUT, client.renew_shard(peer, cid, until)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", RENEW_TIMEOUT.as_secs())),
                };
                (cid, peer, r)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut renewed = Vec::new();
    for (cid, peer, r) in results {
        match r {
            Ok(receipt) => renewed.push((cid.to_string(), peer.to_string(), receipt.to_bytes())),
            Err(e) => {
                out.failed += 1;
                if out.failures.len() < 8 {
                    out.failures.push(format!("{cid} on {peer}: {e}"));
                }
            }
        }
    }
    out.renewed = renewed.len() as u64;
    inner.state.renewed(&renewed)?;
    if who.append_only() {
        // Which peer holds what is placement: not for an append token.
        out.failures.clear();
    }
    Ok(Json(out))
}

/// `GET /v1/objects/{cid}/manifest`: the manifest's bytes (its sealed part
/// opens only with the object's read key, which the SPN does not hold for
/// encoded objects).
pub(super) async fn manifest(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
) -> Api<Vec<u8>> {
    super::objects::object_of(&inner, &who, &cid)?;
    let (bytes, _) = super::objects::load_manifest(&inner, &cid)?;
    Ok(bytes)
}

#[derive(Debug, Deserialize)]
pub(super) struct ObjectsQuery {
    tenant: String,
}

/// `GET /v1/objects?tenant=T`: a tenant's objects.
pub(super) async fn list_objects(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Query(q): Query<ObjectsQuery>,
) -> Api<Json<proto::api::ObjectList>> {
    who.may(&q.tenant)?;
    Ok(Json(proto::api::ObjectList { objects: inner.state.objects_of_tenant(&q.tenant)? }))
}

/// `GET /v1/objects/{cid}/placement`: where its shards are now (a fetch
/// asks again when repair moved them).
pub(super) async fn placement(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
) -> Api<Json<proto::api::Placement>> {
    super::objects::object_of(&inner, &who, &cid)?;
    let (_, m) = super::objects::load_manifest(&inner, &cid)?;
    Ok(Json(crate::api::placement_of(&inner, &m)?))
}

/// `DELETE /v1/objects/{cid}`: a tenant's encoded object (releases are
/// withdrawn, not deleted).
#[derive(Debug, Deserialize)]
pub(super) struct DeleteQuery {
    /// Delete only if the object was saved or last used by a commit no
    /// later than this (seconds since the epoch): a prune's grace, checked
    /// where a racing commit cannot slip between the check and the delete.
    older_than: Option<u64>,
}

pub(super) async fn delete_object(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Api<Json<Deleted>> {
    let rec = super::objects::object_of(&inner, &who, &cid)?;
    if !rec.read_key.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("object {cid} was published by the SPN (a release): withdraw the release instead"),
        ));
    }
    let inner2 = inner.clone();
    let c = cid.clone();
    let n = tokio::task::spawn_blocking(move || inner2.state.delete_object_if(&c, now(), q.older_than))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("deleting {cid}: {e}")))??
        .ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                format!(
                    "object {cid} was used again by a commit since the time given: not deleted (a later prune may)"
                ),
            )
        })?;
    if n > 0 {
        let inner = inner.clone();
        tokio::spawn(async move { crate::cleanup::drain(&inner).await });
    }
    Ok(Json(Deleted { object: cid, shards_deleted: n }))
}

/// `GET /v1/objects/{cid}/deletion`: a deleted object's delete
/// acknowledgements, for its tenant.
pub(super) async fn deletion(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(cid): Path<String>,
) -> Api<Json<proto::api::DeletionAcks>> {
    let gone = || Error::NotFound(format!("a deletion of object {cid} (the SPN deleted no object of that CID)"));
    // Another tenant's deletion is as good as absent: checked before any
    // of it is read.
    let tenant = inner.state.deletion_tenant(&cid)?.ok_or_else(gone)?;
    who.may(&tenant).map_err(|_| ApiError::from(gone()))?;
    let c = cid.clone();
    let d = tokio::task::spawn_blocking(move || inner.state.deletion(&c))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the deletion of {cid}: {e}")))??
        .ok_or_else(gone)?;
    Ok(Json(d))
}

fn check_record_name(name: &str) -> Api<()> {
    check_name("record", name)
}

/// `PUT /v1/records/{tenant}/{name}`.
pub(super) async fn put_record(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, name)): Path<(String, String)>,
    body: Bytes,
) -> Api<StatusCode> {
    check_name("tenant", &tenant)?;
    check_record_name(&name)?;
    who.may_add(&tenant)?;
    // An append token creates records, never replaces one (it could
    // otherwise overwrite a snapshot with garbage).
    let meta = crate::state::RecordMeta { created: now(), added_by: who.append_id().map(String::from) };
    if !inner.state.put_record(&tenant, &name, &body, !who.append_only(), &meta)? {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("record {name} of {tenant} exists, and this token can only add; use the tenant's full token"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/records/{tenant}/{name}`.
pub(super) async fn get_record(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, name)): Path<(String, String)>,
) -> Api<Vec<u8>> {
    // An append token reads `config` only: a repository's public settings.
    if name == "config" {
        who.may_add(&tenant)?
    } else {
        who.may(&tenant)?
    }
    inner.state.record(&tenant, &name)?.ok_or_else(|| Error::NotFound(format!("record {name} of {tenant}")).into())
}

/// `DELETE /v1/records/{tenant}/{name}`.
pub(super) async fn delete_record(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, name)): Path<(String, String)>,
) -> Api<StatusCode> {
    who.may(&tenant)?;
    if inner.state.delete_record(&tenant, &name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("record {name} of {tenant}")).into())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /v1/records/{tenant}?prefix=P`.
pub(super) async fn list_records(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(tenant): Path<String>,
    Query(q): Query<ListQuery>,
) -> Api<Json<RecordList>> {
    who.may(&tenant)?;
    let records = inner
        .state
        .records(&tenant, &q.prefix)?
        .into_iter()
        .map(|(name, len, m)| RecordInfo { name, len, created: m.created, added_by: m.added_by })
        .collect();
    Ok(Json(RecordList { records }))
}
