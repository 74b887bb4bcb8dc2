//! Which snapshots `forget` keeps: restic's policy and semantics.
//!
//! Snapshots are grouped by host and paths; within a group, newest first,
//! a snapshot is kept when any rule keeps it:
//! - `last N`: the N newest;
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of
//!   the N most recent hours (days, ISO weeks, months, years) that have one;
//! - `within D`: every snapshot taken within D (`1y2m3d4h`, calendar
//!   arithmetic) of the group's newest;
//! - `tags`: every snapshot with one of the tags.
//!
//! Times are UTC (restic uses the local zone; a host in UTC sees the same).
//! A policy that keeps nothing is refused by the caller, as restic does.

use proto::civil;
use serde::Serialize;

use crate::error::{Error, Result};

/// How many of each to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The N newest.
    pub last: u32,
    /// One per hour.
    pub hourly: u32,
    /// One per day.
    pub daily: u32,
    /// One per ISO week.
    pub weekly: u32,
    /// One per month.
    pub monthly: u32,
    /// One per year.
    pub yearly: u32,
    /// Everything within this of the newest.
    pub within: Option<Within>,
    /// Everything with one of these tags.
    pub tags: Vec<String>,
}

/// A `--keep-within` span: years, months, days, hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Within {
    years: i64,
    months: i64,
    days: i64,
    hours: i64,
}

impl std::str::FromStr for Within {
    type Err = Error;
    fn from_str(s: &str) -> Result<Within> {
        let bad = || Error::Invalid(format!("{s:?} is not a span like 1y2m3d4h (years, months, days, hours)"));
        let mut w = Within::default();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => w.years += n,
                'm' => w.months += n,
                'd' => w.days += n,
                'h' => w.hours += n,
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() || s.is_empty() {
            return Err(bad());
        }
        Ok(w)
    }
}

impl Policy {
    /// Whether the policy keeps anything at all.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its id.
    pub id: String,
    /// Nanoseconds since the epoch.
    pub time_ns: u64,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A decision and the rules behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: String,
    /// Kept?
    pub keep: bool,
    /// Why (the rules that keep it: `last`, `daily`, ...).
    pub reasons: Vec<String>,
}

/// A time (nanoseconds since the epoch) as `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn utc(time_ns: u64) -> String {
    let secs = time_ns / 1_000_000_000;
    let (y, m, d) = civil((secs / 86_400) as i64);
    let r = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", r / 3600, r / 60 % 60, r % 60)
}

/// The day number of a civil date (months may be out of range: they carry).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = (y + (m - 1).div_euclid(12), (m - 1).rem_euclid(12) + 1);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// ISO 8601 (year, week) of a day number.
fn iso_week(days: i64) -> (i64, i64) {
    let weekday = (days + 3).rem_euclid(7); // Monday = 0 (1970-01-01 was a Thursday)
    let thursday = days - weekday + 3;
    let (y, _, _) = civil(thursday);
    let jan1 = days_from_civil(y, 1, 1);
    (y, (thursday - jan1) / 7 + 1)
}

/// Decide for one group (any order in; newest first out).
pub fn apply(policy: &Policy, group: &[Candidate]) -> Vec<Decision> {
    let mut snaps: Vec<&Candidate> = group.iter().collect();
    snaps.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(b.id.cmp(&a.id)));
    let newest = snaps.first().map_or(0, |s| s.time_ns);
    let within_from = policy.within.map(|w| {
        let secs = (newest / 1_000_000_000) as i64;
        let (day, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil(day);
        let back = days_from_civil(y - w.years, i64::from(m) - w.months, i64::from(d) - w.days);
        (back * 86_400 + rem - w.hours * 3600) as i128 * 1_000_000_000
    });
    let bucket = |rule: &str, t: u64| -> i64 {
        let secs = (t / 1_000_000_000) as i64;
        let day = secs.div_euclid(86_400);
        let (y, m, _) = civil(day);
        match rule {
            "hourly" => secs.div_euclid(3600),
            "daily" => day,
            "weekly" => {
                let (wy, w) = iso_week(day);
                wy * 100 + w
            }
            "monthly" => y * 100 + i64::from(m),
            _ => y,
        }
    };
    let mut counts = [
        ("last", policy.last),
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
        ("yearly", policy.yearly),
    ];
    let mut last_bucket: [Option<i64>; 6] = [None; 6];
    let mut out = Vec::new();
    for s in snaps {
        let mut reasons = Vec::new();
        for (i, (rule, left)) in counts.iter_mut().enumerate() {
            if *left == 0 {
                continue;
            }
            if *rule == "last" {
                reasons.push(rule.to_string());
                *left -= 1;
                continue;
            }
            let b = bucket(rule, s.time_ns);
            if last_bucket[i] != Some(b) {
                last_bucket[i] = Some(b);
                reasons.push(rule.to_string());
                *left -= 1;
            }
        }
        if within_from.is_some_and(|from| i128::from(s.time_ns) >= from) {
            reasons.push("within".to_string());
        }
        if s.tags.iter().any(|t| policy.tags.contains(t)) {
            reasons.push("tag".to_string());
        }
        out.push(Decision { id: s.id.clone(), keep: !reasons.is_empty(), reasons });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600 * 1_000_000_000;
    const D: u64 = 24 * H;

    fn at(days_since_epoch: i64, hour: u64, id: &str) -> Candidate {
        Candidate { id: id.into(), time_ns: days_since_epoch as u64 * D + hour * H, tags: vec![] }
    }

    fn kept(p: &Policy, c: &[Candidate]) -> Vec<String> {
        apply(p, c).into_iter().filter(|d| d.keep).map(|d| d.id).collect()
    }

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(utc(1_764_892_800_000_000_000 + 3_723_000_000_000), "2025-12-05 01:02:03");
        assert_eq!(civil(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(days_from_civil(2026, 13, 1), days_from_civil(2027, 1, 1));
        assert_eq!(days_from_civil(2026, 0, 1), days_from_civil(2025, 12, 1));
        // 2026-12-05 is a Saturday of ISO week 49; 2027-01-01 is in 2026's week 53.
        assert_eq!(iso_week(days_from_civil(2026, 12, 5)), (2026, 49));
        assert_eq!(iso_week(days_from_civil(2027, 1, 1)), (2026, 53));
        assert_eq!(iso_week(days_from_civil(2024, 12, 30)), (2025, 1));
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day_that_has_one() {
        let base = days_from_civil(2026, 12, 1);
        // Two a day for five days, with a gap on day 3.
        let mut c = Vec::new();
        for d in [0, 1, 2, 4, 5] {
            c.push(at(base + d, 1, &format!("d{d}-early")));
            c.push(at(base + d, 20, &format!("d{d}-late")));
        }
        let p = Policy { daily: 3, ..Policy::default() };
        assert_eq!(kept(&p, &c), vec!["d5-late", "d4-late", "d2-late"], "days with snapshots, not calendar days");
        let p = Policy { last: 2, daily: 1, ..Policy::default() };
        assert_eq!(kept(&p, &c), vec!["d5-late", "d5-early"]);
    }

    #[test]
    fn weekly_monthly_yearly_and_within_follow_the_calendar() {
        let c: Vec<Candidate> =
            (0..400).map(|i| at(days_from_civil(2025, 1, 1) + i, 12, &format!("s{i:03}"))).collect();
        let p = Policy { monthly: 3, ..Policy::default() };
        // The newest is 2026-02-04: kept are it, the last of January, the last of December.
        assert_eq!(kept(&p, &c), vec!["s399", "s395", "s364"]);
        let p = Policy { yearly: 5, ..Policy::default() };
        assert_eq!(kept(&p, &c), vec!["s399", "s364"]);
        let p = Policy { weekly: 2, ..Policy::default() };
        // 2026-02-04 is a Wednesday: the week's newest, and the Sunday before.
        assert_eq!(kept(&p, &c), vec!["s399", "s396"]);
        let p = Policy { within: Some("1m".parse().expect("span")), ..Policy::default() };
        // 2026-01-04 12:00 to 2026-02-04 12:00: 32 snapshots.
        assert_eq!(kept(&p, &c).len(), 32);
    }

    #[test]
    fn tags_keep_and_an_empty_policy_keeps_nothing() {
        let mut c = vec![at(10, 1, "a"), at(11, 1, "b"), at(12, 1, "c")];
        c[0].tags = vec!["keep".into()];
        assert_eq!(kept(&Policy { tags: vec!["keep".into()], ..Policy::default() }, &c), vec!["a"]);
        assert!(Policy::default().is_empty());
        assert!(kept(&Policy::default(), &c).is_empty());
        assert!("3x".parse::<Within>().is_err());
        assert!("".parse::<Within>().is_err());
        assert!("12".parse::<Within>().is_err());
    }
}
