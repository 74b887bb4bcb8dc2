//! API tokens per tenant. The operator issues, lists and revokes any; a
//! tenant's full token issues append tokens for its own tenant (a backup
//! host's put-only key) and lists and revokes its own tenant's tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use super::{Api, ApiError, Caller, check_name};
use crate::state::TokenRecord;
use crate::types::{IssuedToken, NewToken, TokenInfo, TokenList};
use crate::{Inner, now};
use proto::api::TokenScope;

/// Live tokens a tenant may hold before it must revoke some (every request
/// checks a token against the list: it must stay short).
const MAX_TENANT_TOKENS: usize = 256;

pub(super) async fn issue(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(body): Json<NewToken>,
) -> Api<(StatusCode, Json<IssuedToken>)> {
    check_name("tenant", &body.tenant)?;
    if who.operator().is_err() {
        who.may(&body.tenant)?;
        let live = inner.state.tokens()?.iter().filter(|t| t.tenant == body.tenant && t.revoked.is_none()).count();
        if live >= MAX_TENANT_TOKENS {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "tenant {} has {live} live tokens; revoke some first (`ionshard backup key remove`)",
                    body.tenant
                ),
            ));
        }
        if body.scope != TokenScope::Append {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "a tenant's token may issue append tokens only (\"scope\": \"append\"); full tokens come from the \
                 operator"
                    .into(),
            ));
        }
    }
    let id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 8]>());
    let token = format!("ist_{}", data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>()));
    let rec = TokenRecord {
        id: id.clone(),
        tenant: body.tenant.clone(),
        label: body.label.chars().take(200).collect(),
        hash: blake3::hash(token.as_bytes()).to_hex().to_string(),
        created: now(),
        revoked: None,
        scope: body.scope,
    };
    inner.state.put_token(&rec)?;
    Ok((StatusCode::CREATED, Json(IssuedToken { id, token, tenant: body.tenant, scope: body.scope })))
}

pub(super) async fn list(State(inner): State<Arc<Inner>>, Extension(who): Extension<Caller>) -> Api<Json<TokenList>> {
    let tokens = inner
        .state
        .tokens()?
        .into_iter()
        .filter(|t| who.may(&t.tenant).is_ok())
        .map(|t| TokenInfo {
            id: t.id,
            tenant: t.tenant,
            label: t.label,
            created: t.created,
            revoked: t.revoked,
            scope: t.scope,
        })
        .collect();
    Ok(Json(TokenList { tokens }))
}

pub(super) async fn revoke(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Api<StatusCode> {
    // Another tenant's token is as good as absent; a tenant revokes its
    // append tokens only (a slip of `key remove` must not lock it out).
    let own =
        inner.state.tokens()?.into_iter().any(|t| {
            t.id == id && who.may(&t.tenant).is_ok() && (who.operator().is_ok() || t.scope == TokenScope::Append)
        });
    if own && inner.state.revoke_token(&id, now())? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no token {id}")))
    }
}
