//! What a host's agent tells the SPN's fleet API about its schedules, and
//! how the full key's holder reads the sealed part.
//!
//! In the clear: schedule names, cron patterns, states, times, attempt
//! numbers and snapshot ids (a business system watches a fleet with the
//! tenant's token alone). Sealed to the repository's public key: the paths
//! backed up and the text of errors and warnings, which may name local
//! paths (the SPN must hold no plaintext of a backup).

use std::collections::BTreeMap;

use chrono::TimeZone;
use proto::api::{HostReport, RunSummary, ScheduleReport};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::{RepoKey, seal};
use crate::schedule::{Schedule, Status, next_run};

/// The sealed part of a schedule's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The paths it backs up.
    pub paths: Vec<String>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last attempt's warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The most paths a report names per schedule, and bytes of each text.
const MAX_PATHS: usize = 16;
const MAX_TEXT: usize = 512;

fn cut(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn sealed_as(name: &str) -> String {
    format!("fleet schedule {name}")
}

/// A schedule's state word (see [`ScheduleReport::state`]).
pub fn state_of(st: &Status) -> &'static str {
    match (&st.last, &st.retry) {
        (None, _) => "never-run",
        (Some(l), _) if l.error.is_none() => "ok",
        (Some(_), Some(_)) => "retrying",
        (Some(_), None) => "failed",
    }
}

/// The report of `schedules` (one repository's, whose public key is
/// `public`) with their `status`, at `now` in zone `tz`; `handled` names
/// the run requests carried out since the last report.
pub fn host_report<Tz: TimeZone>(
    schedules: &[&Schedule],
    status: &BTreeMap<String, Status>,
    public: &[u8; 32],
    now: i64,
    tz: &Tz,
    handled: Vec<u64>,
) -> HostReport {
    let schedules = schedules
        .iter()
        .take(proto::api::MAX_FLEET_SCHEDULES)
        .map(|s| {
            let st = status.get(&s.name).cloned().unwrap_or_default();
            let next = next_run(s, &st, now, tz);
            // Bounded, so a report always fits the SPN's limit.
            let detail = Detail {
                paths: s.paths.iter().take(MAX_PATHS).map(|p| cut(&p.display().to_string())).collect(),
                error: st
                    .last
                    .as_ref()
                    .and_then(|l| l.error.as_deref().map(cut))
                    .or_else(|| next.as_ref().err().map(|e| cut(&e.to_string()))),
                warning: st.last.as_ref().and_then(|l| l.warning.as_deref().map(cut)),
            };
            let body = serde_json::to_vec(&detail).unwrap_or_default();
            ScheduleReport {
                name: s.name.clone(),
                // As the SPN takes it: one space between fields, 128 bytes.
                cron: s.cron.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(128).collect(),
                state: if next.is_err() { "error" } else { state_of(&st) }.to_string(),
                next_run: next.ok(),
                last: st.last.as_ref().map(|l| RunSummary {
                    slot: l.slot,
                    started: l.started,
                    finished: l.finished,
                    attempt: l.attempt,
                    ok: l.error.is_none(),
                    snapshot: l.snapshot.clone(),
                    warning: l.warning.is_some(),
                }),
                last_ok: st.last_ok.as_ref().and_then(|l| Some((l.snapshot.clone()?, l.finished))),
                sealed: Some(data_encoding::BASE64.encode(&seal(public, &sealed_as(&s.name), &body))),
            }
        })
        .collect();
    HostReport { agent: format!("ionshard {}", env!("CARGO_PKG_VERSION")), reported_at: now, schedules, handled }
}

/// Open a schedule report's sealed part (the full key only).
pub fn open_detail(key: &RepoKey, s: &ScheduleReport) -> Result<Option<Detail>> {
    key.need_full("read a host's sealed report")?;
    let Some(b64) = &s.sealed else { return Ok(None) };
    let what = sealed_as(&s.name);
    let sealed = data_encoding::BASE64.decode(b64.as_bytes()).map_err(|e| Error::format(&what, e))?;
    let body = key.open(&what, &sealed)?;
    Ok(Some(serde_json::from_slice(&body).map_err(|e| Error::format(&what, e))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Attempt, Keep, Retry};

    fn schedule(name: &str, cron: &str) -> Schedule {
        Schedule {
            name: name.into(),
            cron: cron.into(),
            repo: "acme".into(),
            key: None,
            paths: vec!["/srv/clients/secret-case".into()],
            excludes: vec![],
            one_file_system: false,
            tags: vec![],
            host: None,
            coding: "4+2".into(),
            keep: Keep::default(),
            created: 0,
        }
    }

    /// testdata/backup-vectors.json: the report's wire form is a promise
    /// to the SPN and to business systems that parse it.
    #[test]
    fn the_fleet_report_matches_its_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/backup-vectors.json")).expect("vectors");
        let text = v["fleet_report"]["json"].as_str().expect("json");
        let r: HostReport = serde_json::from_str(text).expect("parses");
        assert_eq!(r.schedules[1].last.as_ref().map(|l| (l.ok, l.attempt)), Some((false, 2)));
        assert_eq!(serde_json::to_string(&r).expect("json"), text, "written back the same");
    }

    #[test]
    fn a_report_says_states_in_the_clear_and_seals_paths_and_errors() {
        let key = RepoKey::generate("acme");
        let (ok, bad, broken) =
            (schedule("nightly", "0 2 * * *"), schedule("hourly", "0 * * * *"), schedule("x", "nope"));
        let failed = Attempt {
            slot: 3600,
            started: 3600,
            finished: 3660,
            attempt: 2,
            caught_up: false,
            snapshot: None,
            error: Some("reading /srv/clients/secret-case: permission denied".into()),
            warning: None,
        };
        let mut status = BTreeMap::new();
        let saved = Attempt { snapshot: Some("00aa".into()), error: None, ..failed.clone() };
        status.insert(
            "nightly".to_string(),
            Status { last: Some(saved.clone()), last_ok: Some(saved), ..Default::default() },
        );
        status.insert(
            "hourly".to_string(),
            Status {
                last: Some(failed),
                retry: Some(Retry { slot: 3600, attempts: 2, at: 3900 }),
                ..Default::default()
            },
        );
        let r = host_report(&[&ok, &bad, &broken], &status, &key.public(), 3800, &chrono::Utc, vec![7]);
        let states: Vec<&str> = r.schedules.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(states, ["ok", "retrying", "error"]);
        assert_eq!(r.schedules[0].last_ok, Some(("00aa".to_string(), 3660)));
        assert_eq!(r.schedules[1].next_run, Some(3900), "the retry's time");
        assert_eq!(r.handled, [7]);
        let clear = serde_json::to_string(&r).expect("json");
        assert!(!clear.contains("secret-case") && !clear.contains("permission"), "{clear}");
        let d = open_detail(&key, &r.schedules[1]).expect("open").expect("sealed");
        assert_eq!(d.paths, ["/srv/clients/secret-case"]);
        assert!(d.error.expect("error").contains("permission denied"));
        // Sealed under one schedule's name, it does not open as another's.
        let mut moved = r.schedules[1].clone();
        moved.name = "nightly".into();
        assert!(open_detail(&key, &moved).is_err());
        let put = key.put_only(None).expect("put-only");
        assert!(open_detail(&put, &r.schedules[0]).is_err(), "a put-only key reads no report");
    }
}
