//! The fleet API: a business system watches its backup hosts and asks
//! them to run, through the SPN, with the tenant's token.
//!
//! - `PUT /v1/fleet/{tenant}/hosts/{host}`: a host's agent reports (an
//!   append token may: put-only hosts report too; it may report again only
//!   for a host it reported for first).
//! - `GET /v1/fleet/{tenant}/hosts[/{host}]`: the hosts, their schedules'
//!   last and next runs and their waiting requests (the full token).
//! - `POST /v1/fleet/{tenant}/hosts/{host}/runs`: ask a host to run a
//!   schedule, or all of them, at its agent's next pass (the full token).
//! - `GET /v1/fleet/{tenant}/hosts/{host}/runs`: what the agent should run,
//!   and `DELETE …/runs/{id}` once it has (its own host only, for an append token).
//! - `DELETE /v1/fleet/{tenant}/hosts/{host}`: forget a decommissioned host.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use proto::api::{
    HostInfo, HostList, HostReport, MAX_FLEET_HOSTS, MAX_FLEET_SCHEDULES, MAX_RUN_REQUESTS, NewRunRequest, RunRequest,
    RunRequests,
};

use super::{Api, ApiError, Caller, bad, check_name};
use crate::error::Error;
use crate::state::Reported;
use crate::{Inner, now};

fn check(tenant: &str, host: &str) -> Api<()> {
    check_name("tenant", tenant)?;
    check_name("host", host)
}

/// Printable, bounded text (a report is shown to an operator as it is).
fn check_text(what: &str, s: &str, max: usize) -> Api<()> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(bad(format!("{what}: at most {max} bytes, no control characters")));
    }
    Ok(())
}

fn check_snapshot(s: &str) -> Api<()> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("snapshot id {s:?}: 16 hex digits")));
    }
    Ok(())
}

/// The states a schedule report may say.
const STATES: [&str; 5] = ["ok", "retrying", "failed", "never-run", "error"];

fn check_report(r: &HostReport) -> Api<()> {
    check_text("agent", &r.agent, 64)?;
    if r.schedules.len() > MAX_FLEET_SCHEDULES {
        return Err(bad(format!("{} schedules in one report; at most {MAX_FLEET_SCHEDULES}", r.schedules.len())));
    }
    if r.handled.len() > MAX_RUN_REQUESTS {
        return Err(bad(format!("{} handled requests in one report; at most {MAX_RUN_REQUESTS}", r.handled.len())));
    }
    for s in &r.schedules {
        check_name("schedule", &s.name)?;
        check_text("cron pattern", &s.cron, 128)?;
        if !STATES.contains(&s.state.as_str()) {
            return Err(bad(format!("schedule {}: state {:?} is not one of {STATES:?}", s.name, s.state)));
        }
        if let Some(id) = s.last.as_ref().and_then(|l| l.snapshot.as_ref()) {
            check_snapshot(id)?;
        }
        if let Some((id, _)) = &s.last_ok {
            check_snapshot(id)?;
        }
        if s.sealed.as_ref().is_some_and(|x| x.len() > 16 << 10) {
            return Err(bad(format!("schedule {}: a sealed part of at most 16 KiB", s.name)));
        }
    }
    Ok(())
}

/// `PUT /v1/fleet/{tenant}/hosts/{host}`.
pub(super) async fn report(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host)): Path<(String, String)>,
    Json(r): Json<HostReport>,
) -> Api<StatusCode> {
    check(&tenant, &host)?;
    who.may_add(&tenant)?;
    check_report(&r)?;
    match inner.state.put_host_report(&tenant, &host, &r, who.append_id(), now(), MAX_FLEET_HOSTS)? {
        Reported::Saved => Ok(StatusCode::NO_CONTENT),
        Reported::NotYours => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "host {host} of {tenant} reports with another token, or this append token reports for another \
                 host already (an append token reports for one host; the tenant's full token may forget a host: \
                 DELETE it)"
            ),
        )),
        Reported::TooMany => Err(ApiError(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("tenant {tenant} has {MAX_FLEET_HOSTS} hosts, the most it may; forget decommissioned ones"),
        )),
    }
}

/// `GET /v1/fleet/{tenant}/hosts`.
pub(super) async fn hosts(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Api<Json<HostList>> {
    check_name("tenant", &tenant)?;
    who.may(&tenant)?;
    Ok(Json(HostList { hosts: inner.state.hosts(&tenant)? }))
}

/// `GET /v1/fleet/{tenant}/hosts/{host}`.
pub(super) async fn host(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host)): Path<(String, String)>,
) -> Api<Json<HostInfo>> {
    check(&tenant, &host)?;
    who.may(&tenant)?;
    inner
        .state
        .host(&tenant, &host)?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("host {host} of {tenant}")).into())
}

/// `DELETE /v1/fleet/{tenant}/hosts/{host}`.
pub(super) async fn forget(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host)): Path<(String, String)>,
) -> Api<StatusCode> {
    check(&tenant, &host)?;
    who.may(&tenant)?;
    if inner.state.delete_host(&tenant, &host)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("host {host} of {tenant}")).into())
    }
}

/// `POST /v1/fleet/{tenant}/hosts/{host}/runs`.
pub(super) async fn request_run(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host)): Path<(String, String)>,
    Json(r): Json<NewRunRequest>,
) -> Api<Json<RunRequest>> {
    check(&tenant, &host)?;
    who.may(&tenant)?;
    if let Some(s) = &r.schedule {
        check_name("schedule", s)?;
    }
    inner
        .state
        .add_run_request(&tenant, &host, r.schedule, now(), MAX_RUN_REQUESTS, MAX_FLEET_HOSTS)?
        .map(Json)
        .ok_or_else(|| {
            ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "host {host} has {MAX_RUN_REQUESTS} runs waiting already (or {tenant} has {MAX_FLEET_HOSTS} \
                     hosts): is its agent running?"
                ),
            )
        })
}

/// `GET /v1/fleet/{tenant}/hosts/{host}/runs`.
pub(super) async fn runs(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host)): Path<(String, String)>,
) -> Api<Json<RunRequests>> {
    check(&tenant, &host)?;
    may_serve(&inner, &who, &tenant, &host)?;
    Ok(Json(RunRequests { requests: inner.state.run_requests(&tenant, &host)? }))
}

/// An append token serves only its own host (or one no one reported for).
fn may_serve(inner: &Inner, who: &Caller, tenant: &str, host: &str) -> Api<()> {
    who.may_add(tenant)?;
    match who.append_id() {
        Some(tok) if !inner.state.may_serve(tenant, host, tok)? => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("host {host} of {tenant} reports with another token: this one serves only its own host"),
        )),
        _ => Ok(()),
    }
}

/// `DELETE /v1/fleet/{tenant}/hosts/{host}/runs/{id}`: the agent carried it out.
pub(super) async fn ack(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path((tenant, host, id)): Path<(String, String, u64)>,
) -> Api<StatusCode> {
    check(&tenant, &host)?;
    may_serve(&inner, &who, &tenant, &host)?;
    inner.state.ack_run(&tenant, &host, id)?;
    Ok(StatusCode::NO_CONTENT)
}
