//! `ionshard backup schedule|agent|status`: scheduled backups on a host.
//! The rules (catch-up, retries, what is due) are `backup::plan`'s, with
//! the clock as an input; this module runs what it says and keeps the
//! files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::backup_cmd::{
    BackupArgs, FleetCommand, KeepArgs, RunSpec, WhatArgs, default_key_path, excludes_with_files, existing_paths,
    host_name, repo_at, run_spec,
};

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Add a schedule: back up PATHs at the times a cron pattern names, then apply its retention.
    Add {
        /// Its name.
        name: String,
        /// When, as cron (minute hour day-of-month month day-of-week, in this host's time zone), like '0 2 * * *'.
        #[arg(long)]
        cron: String,
        #[command(flatten)]
        what: WhatArgs,
        /// After each run, this retention for this host's snapshots of these paths.
        #[command(flatten)]
        keep: KeepArgs,
        /// Prune after forgetting (deletes from the peers what no snapshot uses).
        #[arg(long)]
        prune: bool,
    },
    /// List the schedules.
    List,
    /// Remove a schedule (its snapshots stay).
    Remove {
        /// Its name.
        name: String,
    },
}

fn schedules_path() -> PathBuf {
    crate::files::home().join("backup").join("schedules.json")
}

fn status_path() -> PathBuf {
    crate::files::home().join("backup").join("schedules.state.json")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn when(secs: i64) -> String {
    backup::utc(secs.max(0) as u64 * 1_000_000_000)
}

/// `schedule add|list|remove`.
pub(crate) fn schedule(a: &BackupArgs, c: &ScheduleCommand) -> Result<()> {
    let path = schedules_path();
    let mut all = backup::load_schedules(&path)?;
    match c {
        ScheduleCommand::Add { name, cron, what, keep, prune } => {
            let WhatArgs { paths, exclude, exclude_file, one_file_system, tag, host, coding } = what;
            if all.iter().any(|s| &s.name == name) {
                bail!("a schedule named {name} exists: remove it first (`ionshard backup schedule remove {name}`)");
            }
            let key = a.key.clone().map(|k| backup::absolute(&k)).transpose()?;
            let key_file = key.clone().unwrap_or_else(|| default_key_path(&a.repo));
            let loaded = backup::RepoKey::load(&key_file).with_context(|| {
                format!("the key of repository {} (make one with `ionshard backup init`, or give --key)", a.repo)
            })?;
            let excludes = excludes_with_files(exclude, exclude_file)?;
            let keep = keep.keep(*prune);
            if *prune && keep.policy()?.is_empty() {
                bail!("--prune goes with --keep-* options (a schedule prunes after applying its retention)");
            }
            if loaded.is_put_only() && !keep.policy()?.is_empty() {
                bail!(
                    "{} is a put-only key: it cannot forget or prune, so its schedule cannot keep a policy; apply \
                     retention from a host with the full key",
                    key_file.display()
                );
            }
            if coding != "auto" && coding.split_once('+').is_none() {
                bail!("--coding is `auto` or K+M, like 10+10");
            }
            let s = backup::Schedule {
                name: name.clone(),
                cron: cron.clone(),
                repo: a.repo.clone(),
                key,
                paths: existing_paths(paths)?,
                excludes,
                one_file_system: *one_file_system,
                tags: tag.clone(),
                host: host.clone(),
                coding: coding.clone(),
                keep,
                created: now_secs(),
            };
            s.check()?;
            all.push(s.clone());
            backup::save_schedules(&path, &all)?;
            let st = backup::Status::default();
            let next = backup::next_run(&s, &st, now_secs(), &chrono::Local)?;
            if a.json {
                println!("{}", json!({ "added": s, "next": next }));
            } else {
                println!("schedule {name} added: {cron} (this host's time), next run {} UTC", when(next));
                println!(
                    "run `ionshard backup agent` (or install its systemd units: `ionshard backup agent --print-systemd`)"
                );
            }
        }
        ScheduleCommand::List => {
            if a.json {
                println!("{}", json!({ "schedules": all }));
            } else {
                for s in &all {
                    let paths: Vec<String> = s.paths.iter().map(|p| p.display().to_string()).collect();
                    println!("{:<16}  {:<14}  repo {:<12}  {}", s.name, s.cron, s.repo, paths.join(" "));
                }
                if all.is_empty() {
                    println!("no schedules (add one: `ionshard backup schedule add NAME --cron '0 2 * * *' PATH…`)");
                }
            }
        }
        ScheduleCommand::Remove { name } => {
            let before = all.len();
            all.retain(|s| &s.name != name);
            if all.len() == before {
                bail!("no schedule named {name} (see `ionshard backup schedule list`)");
            }
            backup::save_schedules(&path, &all)?;
            let mut status = backup::load_status(&status_path())?;
            status.remove(name);
            backup::save_status(&status_path(), &status)?;
            if a.json {
                println!("{}", json!({ "removed": name }));
            } else {
                println!("schedule {name} removed (its snapshots stay)");
            }
        }
    }
    Ok(())
}

/// One attempt at a schedule's slot: the run, then its retention; the
/// snapshot and what went wrong after it was saved.
fn attempt(a: &BackupArgs, s: &backup::Schedule) -> Result<(String, Option<String>)> {
    let key = s.key.clone().unwrap_or_else(|| default_key_path(&s.repo));
    let r = repo_at(a, &s.repo, &key)?;
    let spec = RunSpec {
        paths: s.paths.clone(),
        excludes: s.excludes.clone(),
        exclude_files: vec![],
        one_file_system: s.one_file_system,
        tags: s.tags.clone(),
        host: s.host.clone(),
        coding: s.coding.clone(),
        parent: None,
        force: false,
    };
    let (report, _) = run_spec(a, &r, &spec, Arc::new(client::Hidden))?;
    // The backup is saved: what follows fails as a warning, never as a
    // failed attempt (a retry would take another snapshot).
    let id = report.snapshot.id.clone();
    let mut warnings: Vec<String> = report.renew_error.iter().map(|e| format!("renewal failed: {e}")).collect();
    let policy = s.keep.policy()?;
    if !policy.is_empty() {
        let host = s.host.clone().unwrap_or_else(host_name);
        // This schedule's own group only (its host and paths).
        match backup::forget_in(&r, &policy, Some(&host), Some(&report.snapshot.paths), false) {
            Err(e) => warnings.push(format!("retention failed: {e}")),
            Ok(_) if s.keep.prune => {
                if let Err(e) = crate::backup_cmd::prune_now(a, &r, &backup::PruneOptions::default(), true) {
                    warnings.push(format!("prune failed: {e}"));
                }
            }
            Ok(_) => {}
        }
    }
    Ok((id, (!warnings.is_empty()).then(|| warnings.join("; "))))
}

/// `agent`: run the schedules (once, with `--once`), with the clock at
/// `now` when given (tests and dry checks).
pub(crate) fn agent(a: &BackupArgs, once: bool, now: Option<i64>, host: Option<&str>) -> Result<()> {
    let lock_path = crate::files::home().join("backup").join("agent.lock");
    std::fs::create_dir_all(lock_path.parent().unwrap_or(&lock_path)).context("making the backup folder")?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        anyhow::anyhow!("another backup agent runs with this IONSHARD_HOME (it holds {})", lock_path.display())
    })?;
    if !once && !a.json {
        eprintln!("backup agent: {} schedule(s); Ctrl-C stops it", backup::load_schedules(&schedules_path())?.len());
    }
    let mut failed = 0;
    let me = fleet_host(host);
    loop {
        let schedules = backup::load_schedules(&schedules_path())?;
        let mut status = backup::load_status(&status_path())?;
        let mut earliest = i64::MAX;
        // Runs a business system asked for through the SPN, first.
        let groups = fleet_groups(a, &schedules);
        let mut acks = load_acks();
        let mut handled: Vec<Vec<u64>> = vec![Vec::new(); groups.len()];
        for (g, (repo, members)) in groups.iter().enumerate() {
            let asked = match repo.spn().run_requests(repo.name(), &me) {
                Ok(r) => r.requests,
                Err(e) => {
                    eprintln!("fleet: asking the SPN for requested runs of repository {}: {e}", repo.name());
                    continue;
                }
            };
            // Requests carried out whose acknowledgement did not reach the
            // SPN are not run again.
            let key = |id: u64| format!("{}/{me}/{id:020}", repo.name());
            // Entries of requests the SPN no longer has are done with (an
            // SPN whose ids start again must not find them).
            let prefix = format!("{}/{me}/", repo.name());
            let live: std::collections::HashSet<String> = asked.iter().map(|r| key(r.id)).collect();
            acks.retain(|k| !k.starts_with(&prefix) || live.contains(k));
            for req in asked {
                if acks.contains(&key(req.id)) {
                    handled[g].push(req.id);
                    continue;
                }
                let chosen: Vec<&backup::Schedule> = members
                    .iter()
                    .map(|&i| &schedules[i])
                    .filter(|s| req.schedule.as_ref().is_none_or(|n| *n == s.name))
                    .collect();
                if chosen.is_empty() {
                    eprintln!(
                        "fleet: request {} names schedule {:?}, which this host does not have",
                        req.id, req.schedule
                    );
                }
                // Taken as carried out before it runs: a kill during the run
                // must not make every later pass run it again.
                acks.insert(key(req.id));
                save_acks(&acks);
                for s in chosen {
                    let t = now.unwrap_or_else(now_secs);
                    failed += usize::from(run_slot(a, s, &mut status, t, 1, false, now, Some(req.id))?);
                }
                handled[g].push(req.id);
            }
            for id in &handled[g] {
                if repo.spn().ack_run(repo.name(), &me, *id).is_ok() {
                    acks.remove(&key(*id));
                }
            }
            save_acks(&acks);
        }
        for s in &schedules {
            let t = now.unwrap_or_else(now_secs);
            let st = status.get(&s.name).cloned().unwrap_or_default();
            let plan = match backup::plan(s, &st, t, &chrono::Local) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("schedule {}: {e}", s.name);
                    continue;
                }
            };
            let backup::Plan::Run { slot, attempt: n, late } = plan else {
                if let backup::Plan::Wait { until } = plan {
                    earliest = earliest.min(until);
                }
                continue;
            };
            failed += usize::from(run_slot(a, s, &mut status, slot, n, late, now, None)?);
        }
        // What the business system sees: each repository's schedules here.
        for ((repo, members), done) in groups.iter().zip(handled) {
            let mine: Vec<&backup::Schedule> = members.iter().map(|&i| &schedules[i]).collect();
            let t = now.unwrap_or_else(now_secs);
            let report = backup::host_report(&mine, &status, &repo.key().public(), t, &chrono::Local, done);
            if let Err(e) = repo.spn().report_host(repo.name(), &me, &report) {
                eprintln!("fleet: reporting to the SPN for repository {}: {e}", repo.name());
            }
        }
        if once {
            break;
        }
        // Re-read the schedules at least every minute (one may have been added).
        let wait = (earliest - now_secs()).clamp(1, 60) as u64;
        std::thread::sleep(std::time::Duration::from_secs(wait));
    }
    drop(lock);
    if failed > 0 {
        bail!("{failed} scheduled run(s) failed (see `ionshard backup status`); they are retried");
    }
    Ok(())
}

/// One attempt at `s`'s `slot` (attempt `n`; `late`: caught up), recorded
/// in `status` before it runs (a kill counts as an attempt) and after;
/// whether it failed. `request`: the fleet request that asked for it.
#[allow(clippy::too_many_arguments)]
fn run_slot(
    a: &BackupArgs,
    s: &backup::Schedule,
    status: &mut std::collections::BTreeMap<String, backup::Status>,
    slot: i64,
    n: u32,
    late: bool,
    now: Option<i64>,
    request: Option<u64>,
) -> Result<bool> {
    let st = status.get(&s.name).cloned().unwrap_or_default();
    let started = now.unwrap_or_else(now_secs);
    // Recorded as failed before it runs: a crash or a kill in the run
    // counts as an attempt (backoff, then give up), not a fresh start.
    let mut pending = st.clone();
    let record_as: fn(&mut backup::Status, backup::Attempt) =
        if request.is_some() { backup::record_requested } else { backup::record };
    record_as(
        &mut pending,
        backup::Attempt {
            slot,
            started,
            finished: started,
            attempt: n,
            caught_up: late && n == 1,
            snapshot: None,
            error: Some("interrupted: the agent stopped during the run".to_string()),
            warning: None,
        },
    );
    status.insert(s.name.clone(), pending);
    backup::save_status(&status_path(), status)?;
    let result = attempt(a, s);
    let finished = now.unwrap_or_else(now_secs);
    let (snapshot, error, warning) = match result {
        Ok((id, warning)) => (Some(id), None, warning),
        Err(e) => (None, Some(format!("{e:#}")), None),
    };
    let record = backup::Attempt {
        slot,
        started,
        finished,
        attempt: n,
        caught_up: late && n == 1,
        snapshot: snapshot.clone(),
        error: error.clone(),
        warning: warning.clone(),
    };
    if a.json {
        println!("{}", json!({ "schedule": s.name, "attempt": record, "request": request }));
    } else {
        let why = match request {
            Some(id) => format!(" (asked for through the SPN: request {id})"),
            None if late && n == 1 => " (caught up: its time passed while the agent was down)".to_string(),
            None => String::new(),
        };
        match (&snapshot, &error) {
            (Some(id), _) => {
                println!("{} {}: snapshot {id} saved{why}", when(finished), s.name);
                if let Some(w) = &warning {
                    eprintln!("{} {}: warning: {w}", when(finished), s.name);
                }
            }
            (_, Some(e)) => eprintln!("{} {}: attempt {n} failed{why}: {e}", when(finished), s.name),
            _ => {}
        }
    }
    let mut entry = st;
    record_as(&mut entry, record);
    status.insert(s.name.clone(), entry);
    backup::save_status(&status_path(), status)?;
    Ok(error.is_some())
}

/// The schedules by repository, each with the repository opened
/// (one whose key cannot be loaded is left out with a warning).
fn fleet_groups(a: &BackupArgs, schedules: &[backup::Schedule]) -> Vec<(backup::Repo, Vec<usize>)> {
    // One report per repository (two would overwrite each other).
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, s) in schedules.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == s.repo) {
            Some(g) => g.1.push(i),
            None => groups.push((s.repo.clone(), vec![i])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(name, members)| {
            // Any of its schedules' keys that loads, a full one first (it
            // may do all a put-only one may, and serves a host a full token
            // took over).
            let mut keys: Vec<PathBuf> = Vec::new();
            for &i in &members {
                let k = schedules[i].key.clone().unwrap_or_else(|| default_key_path(&name));
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let mut opened: Vec<backup::Repo> = Vec::new();
            let mut last_error = None;
            for k in &keys {
                match repo_at(a, &name, k) {
                    Ok(r) => opened.push(r),
                    Err(e) => last_error = Some(e),
                }
            }
            opened.sort_by_key(|r| r.key().is_put_only());
            match opened.into_iter().next() {
                Some(r) => Some((r, members)),
                None => {
                    if let Some(e) = last_error {
                        eprintln!("fleet: repository {name}: {e:#}");
                    }
                    None
                }
            }
        })
        .collect()
}

fn acks_path() -> PathBuf {
    crate::files::home().join("backup").join("fleet.acks.json")
}

/// Requests carried out and not yet acknowledged to the SPN (`REPO/HOST/ID`).
fn load_acks() -> std::collections::BTreeSet<String> {
    std::fs::read(acks_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Saved whole or not at all; a failure is reported, not fatal (the
/// schedules must go on running).
fn save_acks(acks: &std::collections::BTreeSet<String>) {
    // Bounded: past a thousand the lowest ids go (the SPN keeps 64 per host).
    let keep: Vec<&String> = acks.iter().rev().take(1000).collect();
    let saved = serde_json::to_vec(&keep)
        .map_err(anyhow::Error::from)
        .and_then(|b| client::write_atomic(&acks_path(), &b).map_err(anyhow::Error::from));
    if let Err(e) = saved {
        eprintln!("fleet: saving {}: {e:#}", acks_path().display());
    }
}

/// The name this host reports to the fleet as: `--host`, else the
/// system's, as the SPN takes names (letters, digits, '-', '_', '.').
fn fleet_host(host: Option<&str>) -> String {
    let raw = host.map(String::from).unwrap_or_else(host_name);
    let mut out: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(64)
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    if out.is_empty() { "localhost".to_string() } else { out }
}

/// `status`: each schedule's last and next runs.
pub(crate) fn status(a: &BackupArgs) -> Result<()> {
    let schedules = backup::load_schedules(&schedules_path())?;
    let status = backup::load_status(&status_path())?;
    let now = now_secs();
    let mut out = Vec::new();
    for s in &schedules {
        let st = status.get(&s.name).cloned().unwrap_or_default();
        // One bad schedule must not hide the others' status.
        let next = backup::next_run(s, &st, now, &chrono::Local).map_err(|e| e.to_string());
        out.push((s, st, next));
    }
    if a.json {
        let v: Vec<_> = out
            .iter()
            .map(|(s, st, next)| {
                json!({ "name": s.name, "cron": s.cron, "repo": s.repo, "next": next.as_ref().ok(),
                        "error": next.as_ref().err(), "last": st.last, "last_ok": st.last_ok, "retry": st.retry })
            })
            .collect();
        println!("{}", json!({ "schedules": v }));
        return Ok(());
    }
    for (s, st, next) in &out {
        println!("{} ({}, repository {})", s.name, s.cron, s.repo);
        match &st.last {
            Some(l) => {
                let result = match (&l.snapshot, &l.error) {
                    (Some(id), _) => {
                        format!(
                            "ok, snapshot {id}{}",
                            l.warning.as_ref().map(|w| format!(" (warning: {w})")).unwrap_or_default()
                        )
                    }
                    (_, Some(e)) => format!("FAILED (attempt {}): {e}", l.attempt),
                    _ => "?".to_string(),
                };
                let late = if l.caught_up { ", caught up" } else { "" };
                println!("  last run  {} UTC{late}: {result}", when(l.finished));
            }
            None => println!("  last run  never"),
        }
        if let (Some(ok), Some(l)) = (&st.last_ok, &st.last)
            && l.error.is_some()
        {
            println!("  last ok   {} UTC, snapshot {}", when(ok.finished), ok.snapshot.as_deref().unwrap_or("?"));
        }
        let retry = st.retry.map(|r| format!(" (a retry, attempt {})", r.attempts + 1)).unwrap_or_default();
        let next = match next {
            Ok(t) if *t <= now => "now (due)".to_string(),
            Ok(t) => format!("{} UTC", when(*t)),
            Err(e) => format!("never: {e}"),
        };
        println!("  next run  {next}{retry}");
    }
    if out.is_empty() {
        println!("no schedules (add one: `ionshard backup schedule add NAME --cron '0 2 * * *' PATH…`)");
    }
    Ok(())
}

/// `agent --print-systemd`: a oneshot service and a timer that starts it
/// every minute; the agent's own state decides what is due, so catch-up
/// and retries work the same as with the long-running agent.
pub(crate) fn print_systemd(a: &BackupArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let home = crate::files::home();
    let mut env = vec![format!("IONSHARD_HOME={}", home.display())];
    if let Some(s) = &a.spn {
        env.push(format!("IONSHARD_SPN={s}"));
    }
    if !a.bootstrap.is_empty() {
        env.push(format!("IONSHARD_BOOTSTRAP={}", a.bootstrap.join(",")));
    }
    let env: String = env.iter().map(|e| format!("Environment={e}\n")).collect();
    let service = format!(
        "# /etc/systemd/system/ionshard-backup.service\n\
         [Unit]\n\
         Description=ionshard scheduled backups (runs what is due, then exits)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n\
         Type=oneshot\n\
         {env}\
         # The API token: IONSHARD_SPN_TOKEN=… in this file (mode 0600), not in the unit.\n\
         EnvironmentFile=-/etc/ionshard/backup.env\n\
         ExecStart={} backup agent --once\n\
         Nice=10\n\
         IOSchedulingClass=idle\n",
        exe.display()
    );
    let timer = "# /etc/systemd/system/ionshard-backup.timer\n\
         [Unit]\n\
         Description=ionshard scheduled backups: check every minute what is due\n\n\
         [Timer]\n\
         OnCalendar=*-*-* *:*:00\n\
         Persistent=true\n\n\
         [Install]\n\
         WantedBy=timers.target\n";
    if a.json {
        println!("{}", json!({ "service": service, "timer": timer }));
    } else {
        println!("{service}\n{timer}");
        println!("# then: systemctl daemon-reload && systemctl enable --now ionshard-backup.timer");
    }
    Ok(())
}

/// `fleet`: the hosts' reports as the SPN keeps them; the full key opens
/// their sealed part (paths, errors).
pub(crate) fn fleet(a: &BackupArgs, command: Option<&FleetCommand>) -> Result<()> {
    let r = crate::backup_cmd::repo(a)?;
    let spn = r.spn();
    match command {
        Some(FleetCommand::Run { host, schedule }) => {
            let req = spn.request_run(r.name(), host, schedule.as_deref())?;
            if a.json {
                println!("{}", serde_json::to_string(&req)?);
            } else {
                println!(
                    "asked {host} to run {} (request {}): its agent runs it at its next pass (within a minute when it runs)",
                    schedule.as_deref().map_or("all its schedules".to_string(), |s| format!("schedule {s}")),
                    req.id
                );
            }
        }
        Some(FleetCommand::Forget { host }) => {
            spn.forget_host(r.name(), host)?;
            if a.json {
                println!("{}", json!({ "forgotten": host }));
            } else {
                println!("forgot host {host} (its snapshots stay; a running agent reports again at its next pass)");
            }
        }
        Some(FleetCommand::Hosts) | None => {
            let list = spn.hosts(r.name())?;
            let full = !r.key().is_put_only();
            if a.json {
                let hosts: Vec<_> = list
                    .hosts
                    .iter()
                    .map(|h| {
                        let details: Vec<_> = h
                            .report
                            .iter()
                            .flat_map(|rep| &rep.schedules)
                            .map(|s| {
                                let d = if full { backup::open_detail(r.key(), s).ok().flatten() } else { None };
                                json!({ "schedule": s.name, "detail": d })
                            })
                            .collect();
                        json!({ "host": h, "details": details })
                    })
                    .collect();
                println!("{}", json!({ "repository": r.name(), "hosts": hosts }));
                return Ok(());
            }
            if list.hosts.is_empty() {
                println!(
                    "no host has reported for repository {} yet (each host's `ionshard backup agent` reports after every pass)",
                    r.name()
                );
            }
            let now = now_secs();
            for h in &list.hosts {
                let seen = match &h.report {
                    Some(rep) => format!(
                        "reported {} ago ({}){}",
                        ago(now - h.received as i64),
                        printable(&rep.agent),
                        h.reported_by.as_ref().map(|t| format!(", put-only key {t}")).unwrap_or_default()
                    ),
                    None => "never reported".to_string(),
                };
                println!("{}  {seen}", h.host);
                for s in h.report.iter().flat_map(|rep| &rep.schedules) {
                    let last = match &s.last {
                        Some(l) if l.ok => format!(
                            "last {} snapshot {}{}",
                            when(l.finished),
                            l.snapshot.as_deref().unwrap_or("?"),
                            if l.warning { " (with a warning)" } else { "" }
                        ),
                        Some(l) => format!("last {} failed (attempt {})", when(l.finished), l.attempt),
                        None => "never run".to_string(),
                    };
                    let next = s.next_run.map(|t| format!(", next {}", when(t))).unwrap_or_default();
                    println!("  {:<16} {:<9} {last}{next}  ({})", s.name, s.state, printable(&s.cron));
                    if full && let Ok(Some(d)) = backup::open_detail(r.key(), s) {
                        // Anyone with the public key (a put-only host) could
                        // have sealed it: nothing a terminal would act on.
                        println!("    paths: {}", printable(&d.paths.join(" ")));
                        for (what, text) in [("error", &d.error), ("warning", &d.warning)] {
                            if let Some(t) = text {
                                println!("    {what}: {}", printable(t));
                            }
                        }
                    }
                }
                for p in &h.pending {
                    println!(
                        "  waiting: request {} to run {} (asked {} ago)",
                        p.id,
                        p.schedule.as_deref().unwrap_or("all schedules"),
                        ago(now - p.requested as i64)
                    );
                }
            }
        }
    }
    Ok(())
}

/// `s` with control characters (terminal escapes) shown as `?`.
pub(crate) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}
