//! API tokens per tenant, issued, listed and revoked by the operator.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use super::{Api, ApiError, Caller, check_name};
use crate::state::TokenRecord;
use crate::types::{IssuedToken, NewToken, TokenInfo, TokenList};
use crate::{Inner, now};

pub(super) async fn issue(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(body): Json<NewToken>,
) -> Api<(StatusCode, Json<IssuedToken>)> {
    who.operator()?;
    check_name("tenant", &body.tenant)?;
    let id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 8]>());
    let token = format!("ist_{}", data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>()));
    let rec = TokenRecord {
        id: id.clone(),
        tenant: body.tenant.clone(),
        label: body.label.chars().take(200).collect(),
        hash: blake3::hash(token.as_bytes()).to_hex().to_string(),
        created: now(),
        revoked: None,
    };
    inner.state.put_token(&rec)?;
    Ok((StatusCode::CREATED, Json(IssuedToken { id, token, tenant: body.tenant })))
}

pub(super) async fn list(State(inner): State<Arc<Inner>>, Extension(who): Extension<Caller>) -> Api<Json<TokenList>> {
    who.operator()?;
    let tokens = inner
        .state
        .tokens()?
        .into_iter()
        .map(|t| TokenInfo { id: t.id, tenant: t.tenant, label: t.label, created: t.created, revoked: t.revoked })
        .collect();
    Ok(Json(TokenList { tokens }))
}

pub(super) async fn revoke(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Api<StatusCode> {
    who.operator()?;
    if inner.state.revoke_token(&id, now())? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no token {id}")))
    }
}
