//! The HTTP API (see the crate docs for the routes).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chunker::{Cid, Manifest};
use futures::StreamExt;
use ota::meta::{Release, Signed, Version};
use ota::{Bundle, Placement};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::publish::{PublishParams, publish};
use crate::state::{JobRecord, ReleaseRecord};
use crate::{Inner, now};

pub(crate) struct ApiError(StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) | Error::Chunker(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

type Api<T> = Result<T, ApiError>;

fn auth(inner: &Inner, headers: &HeaderMap) -> Api<()> {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compared by hash: equal time whatever the guess.
    let ok = given.is_some_and(|g| blake3::hash(g.as_bytes()) == blake3::hash(inner.token.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (send Authorization: Bearer TOKEN; the SPN printed its token file at start)"
                .to_string(),
        ))
    }
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/objects", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/objects/{cid}", get(object))
        .route("/v1/objects/{cid}/receipts", get(receipts))
        .route("/v1/releases", post(add_release).get(list_releases))
        .route("/v1/releases/{id}", get(release))
        .route("/v1/peers", get(peers))
        .with_state(inner)
}

#[derive(Debug, Deserialize)]
struct HealthQuery {
    #[serde(default)]
    refresh: bool,
}

async fn health(State(inner): State<Arc<Inner>>, headers: HeaderMap, Query(q): Query<HealthQuery>) -> Api<Json<Value>> {
    // Asking every peer costs the network: only for holders of the token.
    if q.refresh {
        auth(&inner, &headers)?;
        inner.refresh_peers().await;
    }
    let live = inner.state.peers().map(|p| p.iter().filter(|p| crate::is_live(p)).count()).unwrap_or(0);
    Ok(Json(json!({ "ok": true, "peer_id": inner.client.peer_id().to_string(), "live_peers": live })))
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    tenant: String,
    product: String,
    data: Option<u8>,
    parity: Option<u8>,
}

fn check_name(what: &str, s: &str) -> Api<()> {
    if crate::valid_name(s) {
        Ok(())
    } else {
        Err(bad(format!("{what} {s:?}: use 1 to 64 letters, digits, '-', '_' or '.'")))
    }
}

async fn upload(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Api<(StatusCode, Json<Value>)> {
    auth(&inner, &headers)?;
    check_name("tenant", &q.tenant)?;
    check_name("product", &q.product)?;
    let (data, parity) = (q.data.unwrap_or(10), q.parity.unwrap_or(4));
    chunker::Params::default().with_coding(data, parity).validate().map_err(|e| bad(e.to_string()))?;
    let path = inner.dir.join("uploads").join(format!("{:016x}.upload", rand::random::<u64>()));
    let mut file = std::fs::File::create(&path).map_err(|e| ApiError::from(Error::io("creating the upload", e)))?;
    let mut stream = body.into_data_stream();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let failed = |e: ApiError| {
            let _ = std::fs::remove_file(&path);
            e
        };
        let chunk = chunk.map_err(|e| failed(bad(format!("upload broke off: {e}"))))?;
        len += chunk.len() as u64;
        if len > inner.max_upload {
            return Err(failed(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("object over the limit of {} bytes (SPN --max-object)", inner.max_upload),
            )));
        }
        file.write_all(&chunk).map_err(|e| failed(Error::io("writing the upload", e).into()))?;
    }
    drop(file);
    let id = new_job(&inner, len)?;
    let params = PublishParams { tenant: q.tenant, product: q.product, data, parity };
    let inner2 = inner.clone();
    tokio::spawn(async move {
        let _ = run_job(inner2, id, path, params).await;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": id, "bytes": len }))))
}

/// Run a publish job to its end, saving its outcome; the upload is removed after.
pub(crate) async fn run_job(
    inner: Arc<Inner>,
    id: u64,
    path: std::path::PathBuf,
    params: PublishParams,
) -> crate::Result<crate::JobResult> {
    let _one = inner.encode_lock.lock().await;
    let r = publish(inner.clone(), id, &path, params).await;
    let _ = std::fs::remove_file(&path);
    let mut j = inner.job(id).ok().flatten().unwrap_or_else(|| blank_job(id));
    match &r {
        Ok(res) => {
            j.state = "done".to_string();
            j.result = Some(res.clone());
        }
        Err(e) => {
            tracing::warn!("job {id} failed: {e}");
            j.state = "failed".to_string();
            j.error = Some(e.to_string());
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
pub(crate) fn new_job(inner: &Inner, bytes: u64) -> crate::Result<u64> {
    let id = {
        let mut n = inner.next_job.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n - 1
    };
    let mut job = blank_job(id);
    job.state = "queued".to_string();
    job.bytes_total = bytes;
    inner.state.put_job(&job)?;
    inner.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(id, job);
    Ok(id)
}

fn blank_job(id: u64) -> JobRecord {
    JobRecord {
        id,
        kind: "publish".into(),
        state: "failed".into(),
        bytes_done: 0,
        bytes_total: 0,
        shards_placed: 0,
        retries: 0,
        result: None,
        error: None,
        started: now(),
        finished: None,
    }
}

async fn job(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<u64>) -> Api<Json<JobRecord>> {
    auth(&inner, &headers)?;
    inner.job(id)?.map(Json).ok_or_else(|| Error::NotFound(format!("job {id}")).into())
}

/// Which peers hold each shard of a manifest.
fn placement_of(inner: &Inner, manifest: &Manifest) -> Api<Placement> {
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

fn load_manifest(inner: &Inner, cid: &str) -> Api<(Vec<u8>, Manifest)> {
    let bytes = inner.state.manifest(cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
    let c: Cid = cid.parse().map_err(|e: chunker::Error| bad(e.to_string()))?;
    let m = Manifest::from_bytes_with_cid(&bytes, &c, &Default::default()).map_err(|e| bad(e.to_string()))?;
    Ok((bytes, m))
}

async fn object(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(cid): Path<String>) -> Api<Json<Value>> {
    auth(&inner, &headers)?;
    let rec = inner.state.object(&cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
    let (_, m) = load_manifest(&inner, &cid)?;
    let placement = placement_of(&inner, &m)?;
    Ok(Json(json!({ "object": rec, "placement": placement })))
}

async fn receipts(State(inner): State<Arc<Inner>>, headers: HeaderMap, Path(cid): Path<String>) -> Api<Json<Value>> {
    auth(&inner, &headers)?;
    let (_, m) = load_manifest(&inner, &cid)?;
    let mut out = Vec::new();
    for s in m.segments() {
        for c in s.shards() {
            for r in inner.state.receipts(&c.to_string())? {
                out.push(data_encoding::HEXLOWER.encode(&r));
            }
        }
    }
    Ok(Json(json!({ "object": cid, "receipts": out })))
}

#[derive(Debug, Deserialize)]
struct NewRelease {
    release: String,
    #[serde(default)]
    roots: Vec<String>,
}

fn bundle_of(inner: &Inner, r: &ReleaseRecord) -> Api<Bundle> {
    let (bytes, m) = load_manifest(inner, &r.manifest)?;
    Ok(Bundle {
        format: 1,
        release: r.release.clone(),
        roots: r.roots.clone(),
        manifest: Bundle::encode_manifest(&bytes),
        placement: placement_of(inner, &m)?,
        bootstrap: inner.bootstrap.clone(),
    })
}

async fn add_release(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(new): Json<NewRelease>,
) -> Api<(StatusCode, Json<Bundle>)> {
    auth(&inner, &headers)?;
    Ok((StatusCode::CREATED, Json(release_added(&inner, new.release, new.roots)?)))
}

/// Keep a signed release and answer its bundle.
pub(crate) fn release_added(inner: &Inner, release: String, roots: Vec<String>) -> Api<Bundle> {
    if release.len() > ota::meta::MAX_METADATA {
        return Err(bad(format!("release metadata over {} bytes", ota::meta::MAX_METADATA)));
    }
    // The SPN does not hold vendor roots; devices check signatures. It checks
    // that the release names an object it stores, of the same length and hash.
    let signed: Signed<Release> = serde_json::from_str(&release).map_err(|e| bad(format!("release metadata: {e}")))?;
    let r = signed.signed;
    Version::parse(&r.version).map_err(|e| bad(e.to_string()))?;
    let obj = inner
        .state
        .object(&r.manifest)?
        .ok_or_else(|| bad(format!("release names manifest {}, which this SPN does not store", r.manifest)))?;
    if obj.length != r.length || obj.blake3 != r.blake3 || obj.product != r.product {
        return Err(bad(format!(
            "release says {} / {} bytes / {}, the stored object is {} / {} bytes / {}",
            r.product, r.length, r.blake3, obj.product, obj.length, obj.blake3
        )));
    }
    let rec = ReleaseRecord {
        id: r.id(),
        product: r.product.clone(),
        version: r.version.clone(),
        release,
        roots,
        manifest: r.manifest.clone(),
        published: now(),
    };
    inner.state.put_release(&rec)?;
    bundle_of(inner, &rec)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    product: Option<String>,
}

fn sorted(mut v: Vec<ReleaseRecord>) -> Vec<ReleaseRecord> {
    v.sort_by(|a, b| match (Version::parse(&a.version), Version::parse(&b.version)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.version.cmp(&b.version),
    });
    v
}

async fn list_releases(State(inner): State<Arc<Inner>>, Query(q): Query<ListQuery>) -> Api<Json<Value>> {
    let list = sorted(inner.state.releases(q.product.as_deref())?);
    let items: Vec<Value> = list
        .iter()
        .map(|r| json!({ "id": r.id, "product": r.product, "version": r.version, "manifest": r.manifest, "published": r.published }))
        .collect();
    Ok(Json(json!({ "releases": items })))
}

async fn release(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Api<Json<Bundle>> {
    let rec = match id.strip_suffix("@latest") {
        Some(product) => sorted(inner.state.releases(Some(product))?).pop(),
        None => inner.state.release(&id)?,
    };
    let rec = rec.ok_or_else(|| Error::NotFound(format!("release {id}")))?;
    Ok(Json(bundle_of(&inner, &rec)?))
}

async fn peers(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Api<Json<Value>> {
    auth(&inner, &headers)?;
    Ok(Json(json!({ "peers": inner.state.peers()? })))
}
