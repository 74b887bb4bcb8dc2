//! The HTTP API (see the crate docs for the routes).
//!
//! Every authenticated route checks its token in a layer that runs before
//! the handler, so no body is read for a caller without a valid token.
//! JSON bodies are read whole only within a per-route size limit and a
//! deadline; uploads are streamed to disk with a deadline per piece.

mod encoded;
mod fleet;
mod ledger;
mod objects;
mod releases;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use proto::api::TokenScope;

use crate::Inner;
use crate::error::Error;
use crate::types::ErrorBody;

pub(crate) use objects::{new_job, placement_of, run_job};
pub(crate) use releases::release_added;

pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) | Error::Chunker(_) | Error::Refused(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) type Api<T> = Result<T, ApiError>;

/// Who is calling, from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The operator's token (`api.token`): everything.
    Operator,
    /// A tenant's token: that tenant's objects, vendor and releases only;
    /// an append token only adds (see [`TokenScope::Append`]). The last
    /// field is the token's id.
    Tenant(String, TokenScope, String),
}

impl Caller {
    /// May this caller act for `tenant`, with a full token?
    pub(crate) fn may(&self, tenant: &str) -> Api<()> {
        self.may_add(tenant)?;
        match self {
            Caller::Tenant(_, TokenScope::Append, _) => Err(ApiError(
                StatusCode::FORBIDDEN,
                "this token can only add (a put-only key's): reading, listing and deleting need the tenant's full \
                 token"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// May this caller add to `tenant` (a full or an append token)?
    pub(crate) fn may_add(&self, tenant: &str) -> Api<()> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant(t, ..) if t == tenant => Ok(()),
            Caller::Tenant(t, ..) => Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("this token is for tenant {t}; it cannot act for {tenant}"),
            )),
        }
    }

    /// Is this an append token?
    pub(crate) fn append_only(&self) -> bool {
        matches!(self, Caller::Tenant(_, TokenScope::Append, _))
    }

    /// An append token's id (None for the operator and full tokens).
    pub(crate) fn append_id(&self) -> Option<&str> {
        match self {
            Caller::Tenant(_, TokenScope::Append, id) => Some(id),
            _ => None,
        }
    }

    /// May this caller use or see `job`? An append token only the jobs it
    /// opened (job ids are sequential: another host's session must not be
    /// one guess away).
    pub(crate) fn may_use(&self, job: &crate::state::JobRecord) -> Api<()> {
        self.may_add(&job.tenant)?;
        match self.append_id() {
            Some(id) if job.opened_by.as_deref() != Some(id) => {
                Err(ApiError(StatusCode::NOT_FOUND, format!("no job {}", job.id)))
            }
            _ => Ok(()),
        }
    }

    /// The operator only.
    pub(crate) fn operator(&self) -> Api<()> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant(..) => Err(ApiError(StatusCode::FORBIDDEN, "only the operator's token may do this".into())),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "missing, wrong or revoked API token (send Authorization: Bearer TOKEN: the operator's token is in the \
         SPN's api.token; a tenant's comes from `ionshard spn token issue`)"
            .to_string(),
    )
}

/// The caller a header names, if its token is valid.
pub(crate) fn caller(inner: &Inner, headers: &HeaderMap) -> Api<Caller> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let hash = blake3::hash(given.trim().as_bytes());
    // Compared by hash: equal time whatever the guess.
    if hash == blake3::hash(inner.token.as_bytes()) {
        return Ok(Caller::Operator);
    }
    match inner.state.token_by_hash(&hash.to_hex())? {
        Some(t) => Ok(Caller::Tenant(t.tenant, t.scope, t.id)),
        None => Err(unauthorized()),
    }
}

/// The token layer: before any extractor reads the body.
async fn authenticate(State(inner): State<Arc<Inner>>, mut req: Request, next: Next) -> Response {
    match caller(&inner, req.headers()) {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// How long a client may take to send a JSON body.
const BODY_DEADLINE: Duration = Duration::from_secs(20);

/// MiB of request bodies held in memory at once, over all requests (each
/// buffered route and a segment upload take their body's size from it
/// before reading it): many large bodies at once wait instead of growing
/// the SPN's memory without bound (32 connections per address, each with
/// a 256 MiB commit, was 8 GiB from one address).
const BODY_BUDGET_MIB: usize = 512;

static BODY_BUDGET: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_MIB)));

/// Room for a body of `len` bytes (its Content-Length, or the route's limit
/// when it has none), waited for; held until the body is let go.
pub(crate) async fn body_room(headers: &HeaderMap, limit: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let len = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(limit, |n| n.min(limit));
    room(len).await
}

/// Room for `len` bytes held while a request is handled (waits for it).
pub(crate) async fn room(len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mib = len.div_ceil(1 << 20).clamp(1, BODY_BUDGET_MIB) as u32;
    BODY_BUDGET.clone().acquire_many_owned(mib).await.ok()
}

/// Read a JSON route's body whole, within `limit` bytes and [`BODY_DEADLINE`].
fn buffered(
    limit: usize,
) -> impl Clone + Fn(Request, Next) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> {
    move |req: Request, next: Next| {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let _room = body_room(&parts.headers, limit).await;
            let read = axum::body::to_bytes(body, limit);
            let bytes = match tokio::time::timeout(BODY_DEADLINE, read).await {
                Ok(Ok(b)) => b,
                Ok(Err(_)) => {
                    return ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {limit} bytes, or broken off"))
                        .into_response();
                }
                Err(_) => {
                    return ApiError(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time".into())
                        .into_response();
                }
            };
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        })
    }
}

pub(crate) fn check_name(what: &str, s: &str) -> Api<()> {
    if ota::meta::valid_name(s) {
        Ok(())
    } else {
        Err(bad(format!("{what} {s:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")))
    }
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let small = middleware::from_fn(buffered(256 << 10));
    let authed = Router::new()
        .route("/v1/objects", post(objects::upload).get(encoded::list_objects))
        .route("/v1/jobs/{id}", get(objects::job))
        .route("/v1/objects/{cid}", get(objects::object))
        .route("/v1/objects/{cid}/receipts", get(objects::receipts))
        .route("/v1/objects/{cid}", delete(encoded::delete_object))
        .route("/v1/objects/{cid}/manifest", get(encoded::manifest))
        .route("/v1/objects/renew", post(encoded::renew).layer(middleware::from_fn(buffered(1 << 20))))
        .route("/v1/objects/{cid}/placement", get(encoded::placement))
        .route("/v1/objects/{cid}/deletion", get(encoded::deletion))
        .route("/v1/encoded", post(encoded::open))
        .route("/v1/encoded/{job}", delete(encoded::abandon))
        .route("/v1/encoded/{job}/segments", axum::routing::put(encoded::put_segment))
        .route("/v1/encoded/{job}/held", post(encoded::held).layer(middleware::from_fn(buffered(1 << 20))))
        .route("/v1/encoded/{job}/commit", post(encoded::commit).layer(middleware::from_fn(buffered(256 << 20))))
        .route("/v1/records/{tenant}", get(encoded::list_records))
        .route("/v1/fleet/{tenant}/hosts", get(fleet::hosts))
        .route(
            "/v1/fleet/{tenant}/hosts/{host}",
            axum::routing::put(fleet::report).get(fleet::host).delete(fleet::forget).layer(small.clone()),
        )
        .route("/v1/fleet/{tenant}/hosts/{host}/runs", post(fleet::request_run).get(fleet::runs).layer(small.clone()))
        .route("/v1/fleet/{tenant}/hosts/{host}/runs/{id}", delete(fleet::ack))
        .route(
            "/v1/records/{tenant}/{name}",
            axum::routing::put(encoded::put_record)
                .layer(middleware::from_fn(buffered(encoded::MAX_RECORD)))
                .get(encoded::get_record)
                .delete(encoded::delete_record),
        )
        .route("/v1/vendors", post(releases::register).layer(middleware::from_fn(buffered(16 << 20))))
        .route("/v1/vendors/{vendor}/roots", post(releases::rotate).layer(middleware::from_fn(buffered(4 << 20))))
        .route("/v1/releases", post(releases::add_release).layer(small.clone()))
        .route("/v1/releases/{id}/withdraw", post(releases::withdraw).layer(small.clone()))
        .route("/v1/timestamps", post(releases::add_timestamp).layer(small.clone()))
        .route("/v1/peers", get(objects::peers))
        .route("/v1/ledger/batches", get(ledger::batches))
        .route("/v1/ledger/receipts/{shard}/{peer}", get(ledger::receipt_proof))
        .route("/v1/peers/{peer}/labels", post(objects::label_peer).layer(small.clone()))
        .route("/v1/durability", get(objects::durability))
        .route("/v1/tokens", post(tokens::issue).get(tokens::list).layer(small))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route_layer(middleware::from_fn_with_state(inner.clone(), authenticate));
    let public = Router::new()
        .route("/v1/health", get(objects::health))
        .route("/v1/vendors/{vendor}", get(releases::vendor))
        .route("/v1/releases", get(releases::list))
        .route("/v1/releases/{id}", get(releases::bundle))
        .route("/v1/releases/{id}/placement", get(releases::placement))
        .route("/v1/timestamps/{product}", get(releases::timestamp));
    // `POST /v1/objects` streams its body itself, a segment is read within
    // its own bound; every other body is small.
    authed.merge(public).layer(axum::extract::DefaultBodyLimit::disable()).with_state(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(len: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_LENGTH, len.to_string().parse().expect("header"));
        h
    }

    /// The memory attack: many connections each sending a large body to a
    /// buffered route (a 256 MiB commit, a 96 MiB segment) held all of it
    /// at once. Bodies now take room from one budget first: past it, the
    /// next one waits until one is let go.
    #[tokio::test]
    async fn large_bodies_at_once_wait_for_room_instead_of_growing_memory() {
        let wait = Duration::from_secs(10);
        let mut held = Vec::new();
        for _ in 0..BODY_BUDGET_MIB / 256 {
            held.push(tokio::time::timeout(wait, body_room(&sized(256 << 20), 256 << 20)).await.expect("room"));
        }
        let next = tokio::spawn(async { body_room(&sized(256 << 20), 256 << 20).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!next.is_finished(), "a third 256 MiB body was let in beside two");
        held.pop();
        let third = tokio::time::timeout(wait, next).await.expect("in once one is let go").expect("join");
        assert!(third.is_some());
        drop((held, third));
        // A small body without a length counts as the route's limit.
        let small = tokio::time::timeout(wait, body_room(&HeaderMap::new(), 1 << 20)).await.expect("room for 1 MiB");
        assert!(small.is_some());
    }
}
