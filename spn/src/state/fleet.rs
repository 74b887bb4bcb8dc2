//! The fleet: what each backup host's agent last reported, and the run
//! requests a business system left for it (format 6). Reports hold no
//! path, file name or error text in the clear (those are sealed to the
//! repository's key by the agent): schedule names, times, states and
//! snapshot ids.

use proto::api::{HostInfo, HostReport, RunRequest};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{META, State, json, parse};
use crate::error::Result;

/// `TENANT/HOST` → JSON [`HostRecord`].
const FLEET_HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_hosts");
/// `TENANT/HOST/ID (20 digits)` → JSON [`RunRequest`].
const FLEET_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("fleet_runs");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HostRecord {
    report: Option<HostReport>,
    received: u64,
    reported_by: Option<String>,
}

/// What saving a report came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reported {
    Saved,
    /// Another token reported for this host first.
    NotYours,
    /// The tenant has the most hosts it may.
    TooMany,
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(FLEET_HOSTS)?;
    txn.open_table(FLEET_RUNS)?;
    Ok(())
}

fn info(host: &str, r: HostRecord, pending: Vec<RunRequest>) -> HostInfo {
    HostInfo { host: host.to_string(), report: r.report, received: r.received, reported_by: r.reported_by, pending }
}

/// Whether the tenant may hold one more host.
fn room_for_one(t: &redb::Table<&str, &[u8]>, tenant: &str, max_hosts: usize) -> Result<bool> {
    let lo = format!("{tenant}/");
    let mut n = 0;
    for e in t.range(lo.as_str()..)? {
        if !e?.0.value().starts_with(&lo) {
            break;
        }
        n += 1;
        if n >= max_hosts {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether append token `tok` reports for a host of `tenant` other than `key`.
fn other_host_of(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: &str,
    key: &str,
    tok: &str,
) -> Result<bool> {
    let lo = format!("{tenant}/");
    for e in t.range(lo.as_str()..)? {
        let (k, v) = e?;
        if !k.value().starts_with(&lo) {
            break;
        }
        if k.value() != key {
            let r: HostRecord = parse(v.value(), "fleet host")?;
            if r.reported_by.as_deref() == Some(tok) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl State {
    /// Save `host`'s report, written by `writer` (an append token's id, or
    /// None for a full token), and drop the requests it says it handled.
    pub(crate) fn put_host_report(
        &self,
        tenant: &str,
        host: &str,
        report: &HostReport,
        writer: Option<&str>,
        now: u64,
        max_hosts: usize,
    ) -> Result<Reported> {
        let txn = self.db.begin_write()?;
        {
            let mut hosts = txn.open_table(FLEET_HOSTS)?;
            let key = format!("{tenant}/{host}");
            let old: Option<HostRecord> = match hosts.get(key.as_str())? {
                Some(v) => Some(parse(v.value(), "fleet host")?),
                None => None,
            };
            let claimed = old.as_ref().is_some_and(|o| o.report.is_some());
            if old.is_none() && !room_for_one(&hosts, tenant, max_hosts)? {
                return Ok(Reported::TooMany);
            }
            // An append token reports for one host only: the first it
            // reported for (a compromised host cannot take the names of
            // others, nor fill the fleet), and never over another's report.
            if let Some(tok) = writer
                && old.as_ref().and_then(|o| o.reported_by.as_deref()) != Some(tok)
            {
                if claimed {
                    return Ok(Reported::NotYours);
                }
                if other_host_of(&hosts, tenant, &key, tok)? {
                    return Ok(Reported::NotYours);
                }
            }
            // A full token's report takes the host over.
            let reported_by = writer.map(String::from);
            let rec = HostRecord { report: Some(report.clone()), received: now, reported_by };
            hosts.insert(key.as_str(), json(&rec).as_slice())?;
            let mut runs = txn.open_table(FLEET_RUNS)?;
            for id in &report.handled {
                runs.remove(format!("{tenant}/{host}/{id:020}").as_str())?;
            }
        }
        txn.commit()?;
        Ok(Reported::Saved)
    }

    /// Whether an append token `tok` may see and acknowledge `host`'s runs:
    /// the host is its own, or no one has reported for it yet and the token
    /// has no host of its own.
    pub(crate) fn may_serve(&self, tenant: &str, host: &str, tok: &str) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let hosts = txn.open_table(FLEET_HOSTS)?;
        let key = format!("{tenant}/{host}");
        let unclaimed = match hosts.get(key.as_str())? {
            None => true,
            Some(v) => {
                let r: HostRecord = parse(v.value(), "fleet host")?;
                if r.reported_by.as_deref() == Some(tok) {
                    return Ok(true);
                }
                r.report.is_none()
            }
        };
        // A host no one reported for: only a token that serves no other.
        Ok(unclaimed && !other_host_of(&hosts, tenant, &key, tok)?)
    }

    /// A run carried out: off the queue (whether it was there).
    pub(crate) fn ack_run(&self, tenant: &str, host: &str, id: u64) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let had = txn.open_table(FLEET_RUNS)?.remove(format!("{tenant}/{host}/{id:020}").as_str())?.is_some();
        txn.commit()?;
        Ok(had)
    }

    /// The runs waiting for `host`, oldest first.
    pub(crate) fn run_requests(&self, tenant: &str, host: &str) -> Result<Vec<RunRequest>> {
        let txn = self.db.begin_read()?;
        let runs = txn.open_table(FLEET_RUNS)?;
        let lo = format!("{tenant}/{host}/");
        let mut out = Vec::new();
        for e in runs.range(lo.as_str()..)? {
            let (k, v) = e?;
            if !k.value().starts_with(&lo) {
                break;
            }
            out.push(parse(v.value(), "run request")?);
        }
        Ok(out)
    }

    /// One host of `tenant`.
    pub(crate) fn host(&self, tenant: &str, host: &str) -> Result<Option<HostInfo>> {
        let rec: Option<HostRecord> = {
            let txn = self.db.begin_read()?;
            let hosts = txn.open_table(FLEET_HOSTS)?;
            match hosts.get(format!("{tenant}/{host}").as_str())? {
                Some(v) => Some(parse(v.value(), "fleet host")?),
                None => None,
            }
        };
        match rec {
            Some(r) => Ok(Some(info(host, r, self.run_requests(tenant, host)?))),
            None => Ok(None),
        }
    }

    /// Every host of `tenant`, by name.
    pub(crate) fn hosts(&self, tenant: &str) -> Result<Vec<HostInfo>> {
        let mut recs: Vec<(String, HostRecord)> = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let hosts = txn.open_table(FLEET_HOSTS)?;
            let lo = format!("{tenant}/");
            for e in hosts.range(lo.as_str()..)? {
                let (k, v) = e?;
                let Some(name) = k.value().strip_prefix(&lo) else { break };
                recs.push((name.to_string(), parse(v.value(), "fleet host")?));
            }
        }
        recs.into_iter().map(|(h, r)| Ok(info(&h, r, self.run_requests(tenant, &h)?))).collect()
    }

    /// Queue a run for `host` (None: it has `max` waiting already, or the
    /// tenant has the most hosts it may).
    pub(crate) fn add_run_request(
        &self,
        tenant: &str,
        host: &str,
        schedule: Option<String>,
        now: u64,
        max: usize,
        max_hosts: usize,
    ) -> Result<Option<RunRequest>> {
        let txn = self.db.begin_write()?;
        let req = {
            let mut hosts = txn.open_table(FLEET_HOSTS)?;
            let key = format!("{tenant}/{host}");
            if hosts.get(key.as_str())?.is_none() {
                if !room_for_one(&hosts, tenant, max_hosts)? {
                    return Ok(None);
                }
                hosts.insert(key.as_str(), json(&HostRecord::default()).as_slice())?;
            }
            let mut runs = txn.open_table(FLEET_RUNS)?;
            let lo = format!("{tenant}/{host}/");
            let waiting = runs
                .range(lo.as_str()..)?
                .take_while(|e| e.as_ref().is_ok_and(|(k, _)| k.value().starts_with(&lo)))
                .count();
            if waiting >= max {
                return Ok(None);
            }
            let mut meta = txn.open_table(META)?;
            let id = meta.get("fleet_next_run")?.map_or(1, |v| v.value());
            meta.insert("fleet_next_run", id + 1)?;
            let req = RunRequest { id, schedule, requested: now };
            runs.insert(format!("{lo}{id:020}").as_str(), json(&req).as_slice())?;
            req
        };
        txn.commit()?;
        Ok(Some(req))
    }

    /// Forget a host (a decommissioned one) and its waiting runs; whether there was one.
    pub(crate) fn delete_host(&self, tenant: &str, host: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let had = {
            let had = txn.open_table(FLEET_HOSTS)?.remove(format!("{tenant}/{host}").as_str())?.is_some();
            let mut runs = txn.open_table(FLEET_RUNS)?;
            let lo = format!("{tenant}/{host}/");
            let keys: Vec<String> = runs
                .range(lo.as_str()..)?
                .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()).filter(|k| k.starts_with(&lo)))
                .collect();
            for k in keys {
                runs.remove(k.as_str())?;
            }
            had
        };
        txn.commit()?;
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(handled: Vec<u64>) -> HostReport {
        HostReport { agent: "ionshard test".into(), reported_at: 1, schedules: vec![], handled }
    }

    #[test]
    fn a_host_is_reported_for_by_its_first_token_only_and_handled_runs_leave_the_queue() {
        let dir = tempfile::tempdir().expect("dir");
        let st = State::open(&dir.path().join("spn")).expect("open");
        // A run asked for before the host ever reported; its first reporter takes it.
        let r1 = st.add_run_request("acme", "db", Some("nightly".into()), 10, 2, 8).expect("add").expect("room");
        let r2 = st.add_run_request("acme", "db", None, 11, 2, 8).expect("add").expect("room");
        assert_eq!(st.add_run_request("acme", "db", None, 12, 2, 8).expect("add"), None, "two waiting at most");
        assert_eq!(
            st.put_host_report("acme", "db", &report(vec![]), Some("tok-a"), 20, 8).expect("put"),
            Reported::Saved
        );
        assert_eq!(
            st.put_host_report("acme", "db", &report(vec![]), Some("tok-b"), 21, 8).expect("put"),
            Reported::NotYours,
            "another append token cannot report over it"
        );
        assert_eq!(st.put_host_report("acme", "db", &report(vec![r1.id]), None, 22, 8).expect("put"), Reported::Saved);
        let h = st.host("acme", "db").expect("host").expect("there");
        assert_eq!(h.reported_by, None, "a full token's report takes the host over");
        assert_eq!(h.pending, vec![r2.clone()]);
        assert_eq!(h.received, 22);
        assert!(!st.may_serve("acme", "db", "tok-a").expect("may"), "then tok-a no longer serves it");
        assert!(st.ack_run("acme", "db", r2.id).expect("ack"));
        assert!(!st.ack_run("acme", "db", r2.id).expect("ack"), "acknowledged once");
        // An append token reports for one host only.
        assert_eq!(
            st.put_host_report("acme", "cache", &report(vec![]), Some("tok-c"), 22, 8).expect("put"),
            Reported::Saved
        );
        assert_eq!(
            st.put_host_report("acme", "cache2", &report(vec![]), Some("tok-c"), 22, 8).expect("put"),
            Reported::NotYours,
            "a second host name for the same token"
        );
        assert!(
            st.may_serve("acme", "cache", "tok-c").expect("may") && !st.may_serve("acme", "db", "tok-c").expect("may")
        );
        assert!(st.delete_host("acme", "cache").expect("delete"));
        // Tenants apart; the cap on hosts.
        assert!(st.hosts("other").expect("hosts").is_empty());
        assert_eq!(st.put_host_report("acme", "web", &report(vec![]), None, 23, 2).expect("put"), Reported::Saved);
        assert_eq!(st.put_host_report("acme", "mail", &report(vec![]), None, 24, 2).expect("put"), Reported::TooMany);
        let names: Vec<String> = st.hosts("acme").expect("hosts").into_iter().map(|h| h.host).collect();
        assert_eq!(names, ["db", "web"]);
        assert!(st.delete_host("acme", "db").expect("delete"));
        assert!(st.run_requests("acme", "db").expect("runs").is_empty(), "its waiting runs go with it");
        assert!(!st.delete_host("acme", "db").expect("delete"));
    }
}
