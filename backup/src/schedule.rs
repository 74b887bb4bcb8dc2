//! Scheduled backups: what runs when, and what happened.
//!
//! A schedule is a cron pattern (croner: POSIX/Vixie cron, in the host's
//! time zone like cron itself) with the paths, options and retention of a
//! run. The agent (`ionshard backup agent`) asks [`plan`] what to do with
//! the clock as an input, so the rules are tested without waiting:
//! - **Catch-up.** A slot (one occurrence of the pattern) that passed
//!   while the agent was down runs once at start: only the newest missed
//!   slot, never one run per missed slot (kopia #1649).
//! - **Retries.** A failed run is retried after 1, 2, 4 … minutes, at most
//!   an hour apart, up to [`MAX_ATTEMPTS`] attempts; the next slot
//!   supersedes a slot still failing.
//! - A slot is done once a run succeeds or gives up, recorded with the
//!   result ([`Status`]), so a restart never runs it twice.
//!
//! ```text
//! HOME/backup/schedules.json       = { "format": "ionshard-backup-schedules/1", "schedules": [Schedule] }
//! HOME/backup/schedules.state.json = { "format": "ionshard-backup-schedule-state/1", "status": { NAME: Status } }
//! ```
//! Both are written whole (temporary file, rename): a kill leaves the old
//! or the new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::Policy;

/// The schedules file format.
pub(crate) const SCHEDULES_FORMAT: &str = "ionshard-backup-schedules/1";
/// The schedule state file format.
pub(crate) const STATE_FORMAT: &str = "ionshard-backup-schedule-state/1";
/// Attempts at one slot before the agent gives up on it.
pub const MAX_ATTEMPTS: u32 = 6;
/// The longest wait between two attempts, seconds.
pub(crate) const MAX_BACKOFF: i64 = 3600;

/// Retention applied after each successful run (restic's `forget` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    /// `--keep-last`.
    #[serde(default)]
    pub last: u32,
    /// `--keep-hourly`.
    #[serde(default)]
    pub hourly: u32,
    /// `--keep-daily`.
    #[serde(default)]
    pub daily: u32,
    /// `--keep-weekly`.
    #[serde(default)]
    pub weekly: u32,
    /// `--keep-monthly`.
    #[serde(default)]
    pub monthly: u32,
    /// `--keep-yearly`.
    #[serde(default)]
    pub yearly: u32,
    /// `--keep-within`.
    #[serde(default)]
    pub within: Option<String>,
    /// `--keep-tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Prune after forgetting.
    #[serde(default)]
    pub prune: bool,
}

impl Keep {
    /// The policy (checked: a bad `within` is an error).
    pub fn policy(&self) -> Result<Policy> {
        Ok(Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within: self.within.as_deref().map(str::parse).transpose()?,
            tags: self.tags.clone(),
        })
    }
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The cron pattern.
    pub cron: String,
    /// The repository.
    pub repo: String,
    /// The key file (absolute), if not the repository's default.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// What to back up (absolute).
    pub paths: Vec<PathBuf>,
    /// `--exclude` patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// `--one-file-system`.
    #[serde(default)]
    pub one_file_system: bool,
    /// Tags of its snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The host name recorded, if not this machine's.
    #[serde(default)]
    pub host: Option<String>,
    /// `--coding` (`auto` or K+M).
    pub coding: String,
    /// Retention after each run.
    #[serde(default)]
    pub keep: Keep,
    /// When it was added, seconds since the epoch: slots before it never run.
    pub created: i64,
}

impl Schedule {
    /// Check the name, the pattern and the retention.
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > 64
            || self.name.starts_with('.')
            || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::Invalid(format!(
                "schedule name {:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
                self.name
            )));
        }
        let c = cron(&self.cron)?;
        // A pattern with no time at all (`0 0 30 2 *`) is refused here, not
        // found out by the agent.
        c.find_next_occurrence(&chrono::Utc::now(), false)
            .map_err(|e| Error::Invalid(format!("cron pattern {:?} names no time that comes: {e}", self.cron)))?;
        self.keep.policy()?;
        if self.paths.is_empty() {
            return Err(Error::Invalid("a schedule needs at least one path".to_string()));
        }
        Ok(())
    }
}

/// A cron pattern, parsed (five fields; `@daily` and the like too).
pub(crate) fn cron(pattern: &str) -> Result<Cron> {
    Cron::from_str(pattern).map_err(|e| {
        Error::Invalid(format!(
            "cron pattern {pattern:?}: {e} (five fields: minute hour day-of-month month day-of-week, like '0 2 * * *')"
        ))
    })
}

/// What happened to a schedule's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The newest slot that is done (succeeded, or given up), seconds.
    #[serde(default)]
    pub done_slot: Option<i64>,
    /// A slot still failing: its time, attempts so far, when to try again.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// The last attempt.
    #[serde(default)]
    pub last: Option<Attempt>,
    /// The last successful run.
    #[serde(default)]
    pub last_ok: Option<Attempt>,
}

/// A slot being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// The slot.
    pub slot: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before, seconds.
    pub at: i64,
}

/// One attempt at a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The slot it was for, seconds.
    pub slot: i64,
    /// When it started and ended, seconds.
    pub started: i64,
    /// When it ended.
    pub finished: i64,
    /// Its number at this slot (1 = the first).
    pub attempt: u32,
    /// It ran late: its slot passed while the agent was down.
    pub caught_up: bool,
    /// The snapshot it saved.
    pub snapshot: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// What went wrong after its snapshot was saved (retention, prune,
    /// renewal): reported, not retried.
    #[serde(default)]
    pub warning: Option<String>,
}

/// What the agent should do with a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Run for `slot` now.
    Run {
        /// The slot, seconds.
        slot: i64,
        /// Its attempt number.
        attempt: u32,
        /// The slot passed more than a minute ago (a catch-up or a retry).
        late: bool,
    },
    /// Nothing is due before `until` (seconds).
    Wait {
        /// Seconds since the epoch.
        until: i64,
    },
}

fn at<Tz: TimeZone>(tz: &Tz, secs: i64) -> Result<DateTime<Tz>> {
    tz.timestamp_opt(secs, 0).single().ok_or_else(|| Error::Invalid(format!("time {secs} is out of range")))
}

fn slot_error(pattern: &str, e: croner::errors::CronError) -> Error {
    Error::Invalid(format!("cron pattern {pattern:?} has no time to run: {e}"))
}

/// What to do with `s` at `now` (seconds), the pattern read in `tz`.
pub fn plan<Tz: TimeZone>(s: &Schedule, st: &Status, now: i64, tz: &Tz) -> Result<Plan> {
    let c = cron(&s.cron)?;
    let now_t = at(tz, now)?;
    // The newest slot at or before now that is not done and not before the schedule.
    let newest = c.find_previous_occurrence(&now_t, true).ok().map(|t| t.timestamp());
    let floor = st.done_slot.unwrap_or(i64::MIN).max(s.created - 1);
    let due = newest.filter(|&t| t > floor);
    // The next slot after now. Around a change of the clock (a DST fall
    // back) the crate may name an instant that is not after now: look again
    // from a minute on, a few times, rather than wake in a loop.
    let next = || -> Result<i64> {
        let mut from = now_t.clone();
        for _ in 0..4 {
            let t = c.find_next_occurrence(&from, false).map_err(|e| slot_error(&s.cron, e))?;
            if t.timestamp() > now {
                return Ok(t.timestamp());
            }
            from = at(tz, t.timestamp().max(now) + 60)?;
        }
        Ok(now + 60)
    };
    match (st.retry, due) {
        // A slot still failing, and no newer slot has come: retry when it is time.
        (Some(r), Some(d)) if d <= r.slot => {
            if now >= r.at {
                Ok(Plan::Run { slot: r.slot, attempt: r.attempts + 1, late: true })
            } else {
                Ok(Plan::Wait { until: r.at.min(next()?) })
            }
        }
        // A slot is due (a newer one supersedes one still failing).
        (_, Some(d)) => Ok(Plan::Run { slot: d, attempt: 1, late: now - d > 60 }),
        (_, None) => Ok(Plan::Wait { until: next()? }),
    }
}

/// The status after an attempt at `slot` that `ok` or failed with `error`.
pub fn record(st: &mut Status, a: Attempt) {
    let slot = a.slot;
    if a.error.is_none() {
        st.done_slot = Some(slot.max(st.done_slot.unwrap_or(i64::MIN)));
        st.retry = None;
        st.last_ok = Some(a.clone());
    } else if a.attempt >= MAX_ATTEMPTS {
        // Given up: the slot is done; the next one will try again.
        st.done_slot = Some(slot.max(st.done_slot.unwrap_or(i64::MIN)));
        st.retry = None;
    } else {
        let wait = (60i64 << (a.attempt.saturating_sub(1)).min(10)).min(MAX_BACKOFF);
        st.retry = Some(Retry { slot, attempts: a.attempt, at: a.finished + wait });
    }
    st.last = Some(a);
}

/// The status after a run someone asked for (the fleet API), not one of
/// the pattern's slots: it never starts or resets a slot's retries. A
/// success clears a failing slot's retries (a snapshot was taken since);
/// a failure is only reported.
pub fn record_requested(st: &mut Status, a: Attempt) {
    if a.error.is_none() {
        if let Some(r) = st.retry.take() {
            st.done_slot = Some(r.slot.max(st.done_slot.unwrap_or(i64::MIN)));
        }
        st.last_ok = Some(a.clone());
    }
    st.last = Some(a);
}

/// The next time `s` will run after `now` (for `status`), seconds.
pub fn next_run<Tz: TimeZone>(s: &Schedule, st: &Status, now: i64, tz: &Tz) -> Result<i64> {
    Ok(match plan(s, st, now, tz)? {
        Plan::Run { .. } => now,
        Plan::Wait { until } => until,
    })
}

#[derive(Serialize, Deserialize)]
struct SchedulesFile {
    format: String,
    schedules: Vec<Schedule>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    status: BTreeMap<String, Status>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::format(format!("{what} {}", path.display()), format!("{e}; move it away to start afresh"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::File { what: "reading", path: path.to_path_buf(), source: e }),
    }
}

/// The schedules in `path` (none if there is no file).
pub fn load_schedules(path: &Path) -> Result<Vec<Schedule>> {
    let Some(f) = read_json::<SchedulesFile>(path, "the schedules")? else { return Ok(Vec::new()) };
    if f.format != SCHEDULES_FORMAT {
        return Err(Error::format(
            "the schedules",
            format!("format {:?}; this build reads {SCHEDULES_FORMAT}", f.format),
        ));
    }
    Ok(f.schedules)
}

/// Write the schedules to `path`.
pub fn save_schedules(path: &Path, schedules: &[Schedule]) -> Result<()> {
    let f = SchedulesFile { format: SCHEDULES_FORMAT.to_string(), schedules: schedules.to_vec() };
    let bytes = serde_json::to_vec_pretty(&f).map_err(|e| Error::format("the schedules", e))?;
    client::write_atomic(path, &bytes).map_err(Error::file("saving the schedules", path))
}

/// The schedules' status in `path` (empty if there is no file).
pub fn load_status(path: &Path) -> Result<BTreeMap<String, Status>> {
    let Some(f) = read_json::<StateFile>(path, "the schedule state")? else { return Ok(BTreeMap::new()) };
    if f.format != STATE_FORMAT {
        return Err(Error::format(
            "the schedule state",
            format!("format {:?}; this build reads {STATE_FORMAT}", f.format),
        ));
    }
    Ok(f.status)
}

/// Write the status to `path`.
pub fn save_status(path: &Path, status: &BTreeMap<String, Status>) -> Result<()> {
    let f = StateFile { format: STATE_FORMAT.to_string(), status: status.clone() };
    let bytes = serde_json::to_vec_pretty(&f).map_err(|e| Error::format("the schedule state", e))?;
    client::write_atomic(path, &bytes).map_err(Error::file("saving the schedule state", path))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-12-01 00:00:00 UTC.
    const T0: i64 = 1_796_083_200;

    fn nightly() -> Schedule {
        Schedule {
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            repo: "office".into(),
            key: None,
            paths: vec!["/srv".into()],
            excludes: vec![],
            one_file_system: false,
            tags: vec![],
            host: None,
            coding: "auto".into(),
            keep: Keep::default(),
            created: T0 + 10 * 3600,
        }
    }

    fn attempt(slot: i64, at: i64, n: u32, error: Option<&str>) -> Attempt {
        Attempt {
            slot,
            started: at,
            finished: at + 30,
            attempt: n,
            caught_up: false,
            snapshot: None,
            error: error.map(String::from),
            warning: None,
        }
    }

    /// A run asked for through the fleet API is no slot: its failure must
    /// not restart a failing slot's retries (every request would give the
    /// slot six more attempts), its success ends them.
    #[test]
    fn a_requested_run_neither_resets_nor_starts_retries() {
        let mut st = Status::default();
        record(&mut st, attempt(7200, 7200, 3, Some("disk full")));
        let retry = st.retry.expect("retrying");
        record_requested(&mut st, attempt(9000, 9000, 1, Some("still full")));
        assert_eq!(st.retry, Some(retry), "the slot's retries go on as they were");
        assert_eq!(st.last.as_ref().map(|l| l.slot), Some(9000), "but it is the last attempt");
        let mut fresh = Status::default();
        record_requested(&mut fresh, attempt(9000, 9000, 1, Some("failed")));
        assert_eq!((fresh.retry, fresh.done_slot), (None, None), "no retry of a request");
        record_requested(&mut st, attempt(9100, 9100, 1, None));
        assert_eq!((st.retry, st.done_slot), (None, Some(7200)), "a success ends the slot's retries");
        assert!(st.last_ok.is_some());
    }

    #[test]
    fn the_first_slot_after_the_schedule_was_added_runs_and_none_before() {
        let s = nightly();
        let st = Status::default();
        // Added at 10:00; the 02:00 of that day is before it.
        assert_eq!(plan(&s, &st, T0 + 11 * 3600, &Utc).expect("plan"), Plan::Wait { until: T0 + DAY + 2 * 3600 });
        let slot = T0 + DAY + 2 * 3600;
        assert_eq!(plan(&s, &st, slot, &Utc).expect("plan"), Plan::Run { slot, attempt: 1, late: false });
    }

    #[test]
    fn a_slot_missed_while_the_agent_was_down_runs_once_at_start() {
        let s = nightly();
        let mut st = Status::default();
        // The agent was down for three nights; it starts at 09:00 on the fourth day.
        let now = T0 + 3 * DAY + 9 * 3600;
        let newest = T0 + 3 * DAY + 2 * 3600;
        assert_eq!(plan(&s, &st, now, &Utc).expect("plan"), Plan::Run { slot: newest, attempt: 1, late: true });
        record(&mut st, attempt(newest, now, 1, None));
        // Once, not once per missed night.
        assert_eq!(plan(&s, &st, now + 60, &Utc).expect("plan"), Plan::Wait { until: newest + DAY });
    }

    #[test]
    fn a_failed_run_is_retried_with_backoff_then_given_up_and_a_new_slot_supersedes_it() {
        let s = nightly();
        let mut st = Status::default();
        let slot = T0 + DAY + 2 * 3600;
        let mut now = slot;
        let mut waits = Vec::new();
        for n in 1..=MAX_ATTEMPTS {
            assert_eq!(plan(&s, &st, now, &Utc).expect("plan"), Plan::Run { slot, attempt: n, late: n > 1 });
            record(&mut st, attempt(slot, now, n, Some("peers unreachable")));
            match plan(&s, &st, now + 31, &Utc).expect("plan") {
                Plan::Wait { until } if n < MAX_ATTEMPTS => {
                    waits.push(until - (now + 30));
                    now = until;
                }
                Plan::Wait { until } => assert_eq!(until, slot + DAY, "given up: the next slot"),
                p => panic!("{p:?}"),
            }
        }
        assert_eq!(waits, vec![60, 120, 240, 480, 960]);
        assert_eq!(st.last.as_ref().and_then(|a| a.error.as_deref()), Some("peers unreachable"));
        assert!(st.last_ok.is_none());

        // A slot still failing is superseded by the next one.
        let mut st = Status::default();
        record(&mut st, attempt(slot, slot, 1, Some("down")));
        let next_slot = slot + DAY;
        assert_eq!(
            plan(&s, &st, next_slot + 5, &Utc).expect("plan"),
            Plan::Run { slot: next_slot, attempt: 1, late: false }
        );
    }

    #[test]
    fn backoff_never_passes_an_hour_and_bad_patterns_and_names_are_refused() {
        let mut st = Status::default();
        record(&mut st, attempt(0, 0, 5, Some("x")));
        assert_eq!(st.retry.map(|r| r.at), Some(30 + 960));
        let mut s = nightly();
        s.cron = "0 25 * * *".into();
        assert!(s.check().unwrap_err().to_string().contains("five fields"));
        let mut s = nightly();
        s.name = "../x".into();
        assert!(s.check().is_err());
        let mut s = nightly();
        s.keep.within = Some("3 weeks".into());
        assert!(s.check().is_err());
        assert!(nightly().check().is_ok());
        let mut s = nightly();
        s.cron = "@daily".into();
        assert!(s.check().is_ok(), "{:?}", s.check());
        let mut s = nightly();
        s.cron = "0 0 30 2 *".into();
        assert!(s.check().is_err(), "February 30th never comes");
    }

    #[test]
    fn schedules_and_status_round_trip_through_their_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("s.json"), dir.path().join("st.json"));
        assert!(load_schedules(&a).expect("none").is_empty());
        save_schedules(&a, &[nightly()]).expect("save");
        assert_eq!(load_schedules(&a).expect("load"), vec![nightly()]);
        let mut m = BTreeMap::new();
        let mut st = Status::default();
        record(&mut st, attempt(5, 5, 1, None));
        m.insert("nightly".to_string(), st);
        save_status(&b, &m).expect("save");
        assert_eq!(load_status(&b).expect("load"), m);
        std::fs::write(&a, b"{").expect("damage");
        assert!(load_schedules(&a).unwrap_err().to_string().contains("move it away"));
    }
}
