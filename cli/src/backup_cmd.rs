//! `ionshard backup …`: business backups (the work is the `backup` crate;
//! this module reads flags and prints). Every command has `--json`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::backup_agent::printable;
use crate::node_cmd;
use crate::progress::Bars;

#[derive(clap::Args)]
pub(crate) struct BackupArgs {
    /// The repository (a tenant of the SPN).
    #[arg(long, env = "IONSHARD_BACKUP_REPO", default_value = "backup", global = true)]
    pub(crate) repo: String,
    /// The repository's key file [default: ~/.ionshard/backup/REPO.key].
    #[arg(long, env = "IONSHARD_BACKUP_KEY", global = true)]
    pub(crate) key: Option<PathBuf>,
    /// The SPN's API.
    #[arg(long, env = "IONSHARD_SPN", global = true)]
    pub(crate) spn: Option<String>,
    /// API token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long, global = true)]
    token: Option<String>,
    /// Bootstrap nodes (restores read from the peers).
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',', global = true)]
    pub(crate) bootstrap: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(clap::Subcommand)]
pub(crate) enum BackupCommand {
    /// Make a repository: a new key (keep it: losing it loses the backups) and the SPN's record.
    Init,
    /// Back up paths: only files changed since the last snapshot of this host and paths are read.
    /// Exit status 3 when the snapshot was saved without some files that could not be read (as restic).
    Run {
        #[command(flatten)]
        what: WhatArgs,
        /// Compare with this snapshot instead of the newest of this host and paths.
        #[arg(long)]
        parent: Option<String>,
        /// Read every file (compare with no parent).
        #[arg(long)]
        force: bool,
    },
    /// List snapshots.
    Snapshots {
        /// Only those with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only those of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// List what a snapshot holds (under PATH).
    Ls {
        /// A snapshot id (a unique prefix), or `latest`.
        snapshot: String,
        /// Only under this path.
        path: Option<String>,
    },
    /// What changed between two snapshots.
    Diff {
        /// The older.
        a: String,
        /// The newer.
        b: String,
    },
    /// Restore a snapshot (or part of it) into a directory.
    Restore {
        /// A snapshot id (a unique prefix), or `latest`.
        snapshot: String,
        /// Where to (files land at TARGET/their/absolute/path).
        #[arg(long)]
        target: PathBuf,
        /// Only this path and what is under it (repeatable).
        #[arg(long)]
        include: Vec<String>,
        /// Also restore setuid/setgid bits, device nodes and security.* and
        /// trusted.* attributes from a snapshot the full key did not mark (a
        /// put-only host's): by default they are left out, since whoever
        /// took over that host chose them.
        #[arg(long)]
        trust_put_only: bool,
    },
    /// Remove snapshots: those named, or those a policy does not keep (restic's flags).
    Forget {
        /// Snapshot ids to remove.
        ids: Vec<String>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only this host's snapshots.
        #[arg(long)]
        host: Option<String>,
        /// Say what would be removed; remove nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Prune afterwards.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        how: PruneArgs,
    },
    /// Delete from the peers every object no snapshot uses (and so destroy its keys),
    /// after repacking objects kept snapshots use only in part.
    Prune {
        #[command(flatten)]
        how: PruneArgs,
    },
    /// The repository's key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Scheduled backups on this host: add, list, remove (the agent runs them).
    Schedule {
        #[command(subcommand)]
        command: crate::backup_agent::ScheduleCommand,
    },
    /// Run the schedules: catches up a run missed while it was down, retries failures with backoff.
    Agent {
        /// Run what is due now, then exit (for a systemd timer or cron).
        #[arg(long)]
        once: bool,
        /// Print a systemd service and timer that run it, and exit.
        #[arg(long)]
        print_systemd: bool,
        /// The clock, seconds since the epoch (tests).
        #[arg(long, hide = true)]
        now: Option<i64>,
        /// The name this host reports to the SPN's fleet API as [default: the system's host name].
        #[arg(long)]
        host: Option<String>,
    },
    /// The schedules' last and next runs, and their results.
    Status,
    /// The fleet: every host's agent reports its schedules to the SPN; see them, ask a host to run.
    Fleet {
        #[command(subcommand)]
        command: Option<FleetCommand>,
    },
    /// Keep every snapshot's data on the peers another three months (each run does it too).
    Renew,
    /// Check receipts, placement and trees; read a share of the data from the peers (exit status 3 if anything is wrong).
    Check {
        /// Read this share of the data (like 10% or 0.1) from the peers and check its hashes.
        #[arg(long, default_value = "0%")]
        read_data_subset: String,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Print the key file (store it somewhere safe: without it the backups cannot be read).
    Export,
    /// Make a put-only key for a host: it adds snapshots, and can neither
    /// list, read, restore, forget nor prune (its SPN token refuses it too).
    Add {
        /// The kind: put-only is the one there is (the full key is the one
        /// `init` made; `key export` copies it).
        #[arg(long, required = true)]
        put_only: bool,
        /// Where to write it (never over an existing file).
        #[arg(long)]
        out: PathBuf,
        /// A name for people (the host it is for).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the repository's SPN tokens (put-only keys' and full ones).
    List,
    /// Revoke a put-only key's token: the SPN refuses it from now on.
    Remove {
        /// The token id (`key list`).
        id: String,
    },
}

/// What a run backs up and how (`run`, and a schedule's runs).
#[derive(clap::Args, Clone)]
pub(crate) struct WhatArgs {
    /// Files and directories.
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Leave out what matches (gitignore-style; repeatable).
    #[arg(long)]
    pub(crate) exclude: Vec<String>,
    /// Leave out the patterns listed in a file (one per line; repeatable).
    #[arg(long)]
    pub(crate) exclude_file: Vec<PathBuf>,
    /// Do not cross into other file systems.
    #[arg(long, short = 'x')]
    pub(crate) one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub(crate) tag: Vec<String>,
    /// The host name recorded [default: this machine's].
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Data+parity shards per segment [default `auto`: 10+10, the
    /// durability model's choice for backups, when the SPN sees 20
    /// live peers; else k+k with k = half of them (at least 1+1)].
    #[arg(long, default_value = "auto")]
    pub(crate) coding: String,
}

/// restic's retention flags (`forget`, and a schedule's retention).
#[derive(clap::Args, Clone)]
pub(crate) struct KeepArgs {
    /// Keep the N newest.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest of each of the N newest hours with a snapshot.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// … days.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// … ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// … months.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// … years.
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Keep everything within this span of the newest (like 1y2m3d4h).
    #[arg(long)]
    keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long)]
    keep_tag: Vec<String>,
}

/// How `prune` works (also `forget --prune`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PruneArgs {
    /// Leave objects younger than this many seconds (a backup may be saving them).
    #[arg(long, default_value_t = 3600)]
    grace: u64,
    /// Repack a data object kept snapshots use only in part once more than this
    /// share of it is unused (restic's flag): 0% shreds every unused byte, 100% never repacks.
    #[arg(long, default_value = "10%", value_parser = percent)]
    max_unused: u8,
}

impl PruneArgs {
    pub(crate) fn options(&self) -> backup::PruneOptions {
        backup::PruneOptions { grace_secs: self.grace, max_unused_pct: self.max_unused }
    }
}

/// A share in percent, `10%` or `10` (0 to 100).
fn percent(s: &str) -> std::result::Result<u8, String> {
    let t = s.trim();
    t.strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| format!("{s:?} is not a share in whole percent: give one like 10% (0% to 100%)"))
}

/// Prune with repacking: joins the network to read what it repacks.
pub(crate) fn prune_now(
    a: &BackupArgs,
    r: &backup::Repo,
    o: &backup::PruneOptions,
    json_out: bool,
) -> Result<backup::PruneReport> {
    // Repacking reads objects from the peers; without a way to them, the
    // deletion still runs (it needs only the SPN).
    if o.max_unused_pct >= 100 || a.bootstrap.is_empty() {
        let mut p = backup::prune(r, o.grace_secs, now())?;
        if o.max_unused_pct < 100 {
            p.repack_skipped = Some(
                "no --bootstrap (or IONSHARD_BOOTSTRAP) to reach the peers: nothing was repacked, only unused \
                 objects deleted"
                    .to_string(),
            );
        }
        return Ok(p);
    }
    let rt = node_cmd::runtime()?;
    rt.block_on(async {
        let (net, _h) = node_cmd::join(&a.bootstrap, None).await?;
        anyhow::Ok(backup::prune_with(r, &net, o, now(), Bars::new(json_out)).await?)
    })
}

impl KeepArgs {
    /// The retention these flags name, pruning after it if `prune`.
    pub(crate) fn keep(&self, prune: bool) -> backup::Keep {
        backup::Keep {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within.clone(),
            tags: self.keep_tag.clone(),
            prune,
        }
    }
}

/// `--exclude` patterns and those listed in `--exclude-file`s (one a line; `#` comments).
pub(crate) fn excludes_with_files(excludes: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = excludes.to_vec();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading --exclude-file {}", f.display()))?;
        out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    Ok(out)
}

fn key_path(a: &BackupArgs) -> PathBuf {
    a.key.clone().unwrap_or_else(|| default_key_path(&a.repo))
}

/// `backup fleet …`: the business system's view of its hosts, through the SPN.
#[derive(clap::Subcommand)]
pub(crate) enum FleetCommand {
    /// Every host of the repository, its schedules' states, last and next runs (the default).
    Hosts,
    /// Ask a host's agent to run a schedule (all of its schedules of this repository if none is named) at its next pass.
    Run {
        /// The host, as it reports itself.
        host: String,
        /// The schedule.
        #[arg(long)]
        schedule: Option<String>,
    },
    /// Forget a decommissioned host (its snapshots stay).
    Forget {
        /// The host.
        host: String,
    },
}

/// Where `init` keeps repository `repo`'s key.
pub(crate) fn default_key_path(repo: &str) -> PathBuf {
    crate::files::home().join("backup").join(format!("{repo}.key"))
}

/// The repository the flags name.
pub(crate) fn repo(a: &BackupArgs) -> Result<backup::Repo> {
    repo_at(a, &a.repo, &key_path(a))
}

/// Repository `name` with the key at `path`, at the SPN the flags name.
pub(crate) fn repo_at(a: &BackupArgs, name: &str, path: &std::path::Path) -> Result<backup::Repo> {
    let url = a.spn.as_deref().context("give --spn URL (or set IONSHARD_SPN; `ionshard sandbox up` does)")?;
    let key = backup::RepoKey::load(path).with_context(|| {
        format!("the key of repository {name} (make one with `ionshard backup init`, or give --key)")
    })?;
    if key.repository() != name {
        bail!("{} is the key of repository {}, not {name}", path.display(), key.repository());
    }
    // A put-only key's own token comes before the environment's (which on
    // a shared shell may be a full one): --token still overrides both.
    let token = match (&a.token, key.token()) {
        (None, Some(t)) => Some(t.to_string()),
        _ => crate::http::token(a.token.clone(), None)?,
    };
    let spn = crate::http::spn(url, token)?;
    // A put-only host keeps its cache apart: it holds no full key's trees.
    let cache = crate::files::home().join("backup").join(if key.is_put_only() {
        format!("{name}.put-only")
    } else {
        name.to_string()
    });
    Ok(backup::Repo::new(spn, key, cache))
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// 10+10 (docs/durability.md: backups are read rarely and must last), or
/// as much of it as the live peers allow, parity equal to data.
fn auto_coding(r: &backup::Repo) -> Result<(u8, u8)> {
    let live = r.spn().health(false)?.live_peers;
    if live < 2 {
        bail!("the SPN sees {live} live peer(s): a backup needs at least 2 (1+1); start more peers");
    }
    let k = (live / 2).min(10) as u8;
    Ok((k, k))
}

fn coding(s: &str) -> Result<(u8, u8)> {
    let (k, m) = s.split_once('+').context("--coding K+M, like 10+4")?;
    Ok((k.parse().context("--coding: K")?, m.parse().context("--coding: M")?))
}

fn size(b: u64) -> String {
    crate::size::human(b)
}

pub(crate) fn run(a: BackupArgs) -> Result<()> {
    let json_out = a.json;
    match &a.command {
        BackupCommand::Init => init(&a),
        BackupCommand::Key { command: KeyCommand::Export } => {
            let key = backup::RepoKey::load(&key_path(&a))?;
            if json_out {
                println!("{}", json!({ "repository": key.repository(), "key_file": key.to_file_text() }));
            } else {
                print!("{}", key.to_file_text());
            }
            Ok(())
        }
        BackupCommand::Key { command: KeyCommand::Add { put_only: _, out, label } } => key_add(&a, out, label),
        BackupCommand::Key { command: KeyCommand::List } => {
            let r = repo(&a)?;
            let mut l = r.spn().tokens()?;
            l.tokens.retain(|t| t.tenant == r.name());
            if json_out {
                println!("{}", serde_json::to_string(&l)?);
            } else {
                println!("full key: {} (this host; never on the SPN)", key_path(&a).display());
                for t in &l.tokens {
                    let state =
                        t.revoked.map_or("live".to_string(), |r| format!("revoked {}", backup::utc(r * 1_000_000_000)));
                    let kind = if t.scope == spn::types::TokenScope::Append { "put-only" } else { "full" };
                    println!(
                        "{}  {:<8}  {:<24}  created {}  {}",
                        t.id,
                        kind,
                        state,
                        backup::utc(t.created * 1_000_000_000),
                        t.label
                    );
                }
            }
            Ok(())
        }
        BackupCommand::Key { command: KeyCommand::Remove { id } } => {
            let r = repo(&a)?;
            r.spn().revoke_token(id)?;
            if json_out {
                println!("{}", json!({ "revoked": id }));
            } else {
                println!("token {id} revoked: the put-only key that carries it can add nothing more");
            }
            Ok(())
        }
        BackupCommand::Schedule { command } => crate::backup_agent::schedule(&a, command),
        BackupCommand::Agent { print_systemd: true, .. } => crate::backup_agent::print_systemd(&a),
        BackupCommand::Agent { once, now, host, .. } => crate::backup_agent::agent(&a, *once, *now, host.as_deref()),
        BackupCommand::Status => crate::backup_agent::status(&a),
        BackupCommand::Fleet { command } => crate::backup_agent::fleet(&a, command.as_ref()),
        BackupCommand::Check { read_data_subset } => check(&a, read_data_subset),
        BackupCommand::Renew => {
            let r = backup::renew(&repo(&a)?)?;
            if json_out {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print_renewed(&r);
                for f in &r.failures {
                    println!("  not renewed: {f}");
                }
            }
            Ok(())
        }
        BackupCommand::Run { .. } => backup_run(&a),
        BackupCommand::Snapshots { tag, host } => {
            let r = repo(&a)?;
            let (all, bad) = r.snapshots_checked()?;
            for b in &bad {
                eprintln!("warning: record {} is not a snapshot of this repository, left out: {}", b.name, b.why);
            }
            let snaps: Vec<_> = all
                .into_iter()
                .filter(|s| tag.as_ref().is_none_or(|t| s.tags.contains(t)))
                .filter(|s| host.as_ref().is_none_or(|h| &s.host == h))
                .collect();
            if json_out {
                println!("{}", without_keys(json!({ "repository": r.name(), "snapshots": snaps, "bad_records": bad })));
            } else {
                println!("{:<16}  {:<19}  {:<12}  {:>9}  {:<12}  paths", "id", "time (UTC)", "host", "size", "tags");
                for s in &snaps {
                    println!(
                        "{:<16}  {:<19}  {:<12}  {:>9}  {:<12}  {}{}",
                        s.id,
                        backup::utc(s.time_ns),
                        printable(&s.host),
                        size(s.stats.bytes),
                        printable(&s.tags.join(",")),
                        printable(&s.paths.join(" ")),
                        s.added_by.as_deref().map(|t| format!("  ({})", backup::added_by_label(t))).unwrap_or_default()
                    );
                }
                println!("{} snapshot(s)", snaps.len());
            }
            Ok(())
        }
        BackupCommand::Ls { snapshot, path } => {
            let r = repo(&a)?;
            let s = r.snapshot(snapshot)?;
            let rt = node_cmd::runtime()?;
            let tree = rt.block_on(tree_of(&a, &r, &s))?;
            let under = path.as_deref().map(|p| p.trim_matches('/').to_string());
            let entries: Vec<_> = tree
                .entries
                .iter()
                .filter(|e| {
                    under.as_ref().is_none_or(|u| {
                        let p = e.display_path();
                        p == *u || p.starts_with(&format!("{u}/"))
                    })
                })
                .collect();
            if json_out {
                println!("{}", json!({ "snapshot": s.id, "entries": entries }));
            } else {
                for e in entries {
                    let kind = match e.kind {
                        backup::Kind::Dir => 'd',
                        backup::Kind::Symlink => 'l',
                        backup::Kind::File => '-',
                        backup::Kind::Other => '?',
                    };
                    let link = e
                        .target_bytes()
                        .map(|t| format!(" -> {}", printable(&String::from_utf8_lossy(&t))))
                        .unwrap_or_default();
                    println!(
                        "{kind}{:04o} {:>5} {:>5} {:>10}  {}  /{}{link}",
                        e.mode & 0o7777,
                        e.uid,
                        e.gid,
                        e.size,
                        backup::utc(e.mtime.max(0) as u64 * 1_000_000_000),
                        printable(&e.display_path())
                    );
                }
            }
            Ok(())
        }
        BackupCommand::Diff { a: x, b: y } => {
            let r = repo(&a)?;
            let (sa, sb) = (r.snapshot(x)?, r.snapshot(y)?);
            let rt = node_cmd::runtime()?;
            let (ta, tb) = rt.block_on(async {
                let ta = tree_of(&a, &r, &sa).await?;
                let tb = tree_of(&a, &r, &sb).await?;
                anyhow::Ok((ta, tb))
            })?;
            let changes = backup::diff(&ta, &tb);
            if json_out {
                println!("{}", json!({ "a": sa.id, "b": sb.id, "changes": changes }));
            } else {
                for c in &changes {
                    println!("{}    {}", c.what, printable(&c.path));
                }
                let count = |w: char| changes.iter().filter(|c| c.what == w).count();
                println!(
                    "{} added, {} removed, {} changed, {} with new metadata",
                    count('+'),
                    count('-'),
                    count('M') + count('T'),
                    count('U')
                );
            }
            Ok(())
        }
        BackupCommand::Restore { snapshot, target, include, trust_put_only } => {
            let r = repo(&a)?;
            let o = backup::RestoreOptions {
                snapshot: snapshot.clone(),
                target: target.clone(),
                include: include.clone(),
                trust_added: *trust_put_only,
            };
            let rt = node_cmd::runtime()?;
            let report = rt.block_on(async {
                let (net, _h) = node_cmd::join(&a.bootstrap, None).await?;
                anyhow::Ok(backup::restore(&r, &net, &o, Bars::new(json_out)).await?)
            })?;
            if json_out {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "restored snapshot {} into {}: {} files ({}), {} directories, {} symlinks; {} downloaded",
                    report.snapshot,
                    target.display(),
                    report.files,
                    size(report.bytes),
                    report.dirs,
                    report.symlinks,
                    size(report.downloaded_bytes)
                );
                if let Some(by) = report.added_by.as_ref().filter(|_| *trust_put_only) {
                    println!(
                        "  the snapshot was not written by the full key ({}): restored as it was (--trust-put-only)",
                        backup::added_by_label(by)
                    );
                } else if let Some(by) = &report.added_by {
                    println!(
                        "  the snapshot was not written by the full key ({}): {} setuid/setgid bit(s) and \
                         security/trusted attribute(s) left out, device nodes not made (--trust-put-only restores them)",
                        backup::added_by_label(by),
                        report.privileges_dropped
                    );
                }
                if report.specials > 0 {
                    println!("  {} device node(s) and FIFO(s) made again", report.specials);
                }
                if report.hole_bytes > 0 {
                    println!("  {} of zeros left as holes (sparse files)", size(report.hole_bytes));
                }
                if report.xattrs_not_set > 0 {
                    println!(
                        "  {} extended attribute(s) not set (the target's file system has none, or they need root)",
                        report.xattrs_not_set
                    );
                }
                for s in &report.skipped {
                    println!("  not restored: {}: {}", printable(&s.path), printable(&s.why));
                }
            }
            Ok(())
        }
        BackupCommand::Forget { ids, keep, host, dry_run, prune, how } => {
            let r = repo(&a)?;
            let policy = keep.keep(false).policy()?;
            let (removed, report) = if ids.is_empty() {
                let rep = backup::forget(&r, &policy, host.as_deref(), *dry_run)?;
                (rep.removed.clone(), Some(rep))
            } else {
                if !policy.is_empty() {
                    bail!("give snapshot ids or --keep-* options, not both");
                }
                if *dry_run {
                    bail!("--dry-run goes with --keep-* options");
                }
                (backup::forget_ids(&r, ids)?, None)
            };
            // The same grace as `prune`'s default: a run on another host
            // may have committed objects whose record it has not saved yet.
            let pruned = if *prune && !*dry_run { Some(prune_now(&a, &r, &how.options(), json_out)?) } else { None };
            if json_out {
                println!("{}", json!({ "removed": removed, "policy": report, "prune": pruned }));
            } else {
                if let Some(rep) = &report {
                    for (group, ds) in &rep.groups {
                        println!("{group}:");
                        for d in ds {
                            let why = if d.keep { format!("keep ({})", d.reasons.join(", ")) } else { "remove".into() };
                            println!("  {}  {why}", d.id);
                        }
                    }
                }
                let verb = if *dry_run { "would remove" } else { "removed" };
                println!("{verb} {} snapshot(s)", removed.len());
                if let Some(p) = &pruned {
                    print_prune(p);
                } else if !*dry_run && !removed.is_empty() {
                    println!("their data stays on the peers until `ionshard backup prune`");
                }
            }
            Ok(())
        }
        BackupCommand::Prune { how } => {
            let r = repo(&a)?;
            let p = prune_now(&a, &r, &how.options(), json_out)?;
            if json_out {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                print_prune(&p);
            }
            Ok(())
        }
    }
}

fn print_renewed(r: &spn::types::Renewed) {
    println!(
        "  kept on the peers until {} UTC: {} copies renewed, {} fresh{}",
        backup::utc(r.until * 1_000_000_000),
        r.renewed,
        r.fresh,
        if r.failed > 0 { format!(", {} not renewed (repair places them again)", r.failed) } else { String::new() }
    );
}

fn print_prune(p: &backup::PruneReport) {
    let rp = &p.repack;
    if !rp.repacked.is_empty() {
        let (len, live) = rp.repacked.iter().fold((0, 0), |(l, v), x| (l + x.length, v + x.live));
        println!(
            "repacked: {} partly used object(s) of {} encoded again with the {} still used, under new keys; {} snapshot(s) rewritten",
            rp.repacked.len(),
            size(len),
            size(live),
            rp.snapshots_rewritten.len()
        );
    }
    for o in &rp.left_alone {
        println!("  not repacked: object {o} (run `ionshard backup check`)");
    }
    for problem in &rp.problems {
        println!("  {problem}");
    }
    if let Some(why) = &p.repack_skipped {
        println!("  {why}");
    }
    println!(
        "pruned: {} object(s) deleted ({} shard copies queued for deletion on peers, their keys destroyed), {} kept{}",
        p.objects_deleted.len(),
        p.shards_deleted,
        p.objects_kept,
        if p.objects_too_young > 0 {
            format!(", {} unused but younger than the grace period (next prune)", p.objects_too_young)
        } else {
            String::new()
        }
    );
}

/// A snapshot as scripts see it: the objects' read keys stay in the sealed
/// record (printed, they would end up in logs and CI output).
fn without_keys(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("read_key");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A snapshot's tree: from the cache, or (joining the network) from the peers.
async fn tree_of(a: &BackupArgs, r: &backup::Repo, s: &backup::Snapshot) -> Result<backup::Tree> {
    match r.tree(None, s).await {
        Err(backup::Error::NeedsNetwork(_)) => {
            let (net, _h) = node_cmd::join(&a.bootstrap, None).await?;
            Ok(r.tree(Some(&net), s).await?)
        }
        other => Ok(other?),
    }
}

fn init(a: &BackupArgs) -> Result<()> {
    let path = key_path(a);
    let url = a.spn.as_deref().context("give --spn URL (or set IONSHARD_SPN; `ionshard sandbox up` does)")?;
    let spn = crate::http::spn(url, crate::http::token(a.token.clone(), None)?)?;
    let (key, created) = match backup::RepoKey::load(&path) {
        Ok(k) if k.repository() == a.repo => (k, false),
        Ok(k) => bail!("{} holds the key of repository {}, not {}", path.display(), k.repository(), a.repo),
        Err(_) if path.exists() => bail!("{} exists but is not a key file: move it away first", path.display()),
        Err(_) => {
            let k = backup::RepoKey::generate(&a.repo);
            k.save_new(&path)?;
            (k, true)
        }
    };
    let cache = crate::files::home().join("backup").join(&a.repo);
    backup::Repo::new(spn, key, cache).init()?;
    if a.json {
        println!("{}", json!({ "repository": a.repo, "key_file": path.display().to_string(), "created": created }));
    } else {
        println!("repository {} is ready at {url}", a.repo);
        println!("key: {}", path.display());
        if created {
            println!(
                "KEEP THIS KEY SAFE: it is the only way to read these backups. Whoever loses it loses them; \
                 `ionshard backup key export` prints it for safekeeping."
            );
        }
    }
    Ok(())
}

/// `check`.
fn check(a: &BackupArgs, subset: &str) -> Result<()> {
    let share = match subset.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => subset.trim().parse::<f64>(),
    }
    .ok()
    .filter(|f| (0.0..=1.0).contains(f))
    .with_context(|| format!("--read-data-subset {subset:?}: give a share like 10% or 0.1 (0% to 100%)"))?;
    let r = repo(a)?;
    let rt = node_cmd::runtime()?;
    let report = rt.block_on(async {
        let (net, _h) = node_cmd::join(&a.bootstrap, None).await?;
        anyhow::Ok(backup::check(&r, &net, share, now(), Bars::new(a.json)).await?)
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} snapshots, {} objects, {} segments, {} copies: {} receipts verified; {} degraded, {} unreadable",
            report.snapshots,
            report.objects,
            report.segments,
            report.copies,
            report.receipts_ok,
            report.segments_degraded,
            report.segments_unreadable
        );
        if report.earliest_expiry > 0 {
            println!("kept on the peers at least until {} UTC", backup::utc(report.earliest_expiry * 1_000_000_000));
        }
        if report.objects_read > 0 {
            println!("read {} objects ({}) from the peers: hashes match", report.objects_read, size(report.bytes_read));
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for e in &report.errors {
            println!("error: {e}");
        }
        println!("{}", if report.errors.is_empty() { "no errors" } else { "ERRORS FOUND" });
    }
    if !report.errors.is_empty() {
        std::process::exit(3);
    }
    Ok(())
}

/// `key add --put-only`: an append token from the SPN and a key file that carries it.
fn key_add(a: &BackupArgs, out: &std::path::Path, label: &str) -> Result<()> {
    let r = repo(a)?;
    if r.key().is_put_only() {
        bail!("{} is a put-only key: make put-only keys with the repository's full key", key_path(a).display());
    }
    if out.exists() {
        bail!("{} exists already: choose another --out (a key file is never replaced)", out.display());
    }
    let issued = r.spn().issue_token(&spn::types::NewToken {
        tenant: r.name().to_string(),
        label: if label.is_empty() { "put-only key".to_string() } else { label.to_string() },
        scope: spn::types::TokenScope::Append,
    })?;
    let key = r.key().put_only(Some(issued.token))?;
    if let Err(e) = key.save_new(out) {
        let _ = r.spn().revoke_token(&issued.id);
        return Err(e.into());
    }
    if a.json {
        println!("{}", json!({ "repository": r.name(), "key_file": out.display().to_string(), "token_id": issued.id }));
    } else {
        println!("put-only key for repository {} written to {} (token {})", r.name(), out.display(), issued.id);
        println!(
            "copy it to the host (IONSHARD_BACKUP_KEY or --key): it adds snapshots and can neither read nor delete \
             any; `ionshard backup key remove {}` revokes it",
            issued.id
        );
    }
    Ok(())
}

/// What one run backs up: from `run`'s flags or from a schedule.
pub(crate) struct RunSpec {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) excludes: Vec<String>,
    pub(crate) exclude_files: Vec<PathBuf>,
    pub(crate) one_file_system: bool,
    pub(crate) tags: Vec<String>,
    pub(crate) host: Option<String>,
    pub(crate) coding: String,
    pub(crate) parent: Option<String>,
    pub(crate) force: bool,
}

/// Absolute paths that exist, or an error naming the first that does not.
pub(crate) fn existing_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut abs = Vec::new();
    for p in paths {
        let p = backup::absolute(p)?;
        if std::fs::symlink_metadata(&p).is_err() {
            bail!("{} does not exist", p.display());
        }
        abs.push(p);
    }
    Ok(abs)
}

/// Run one backup of `spec` into `r`.
pub(crate) fn run_spec(
    a: &BackupArgs,
    r: &backup::Repo,
    spec: &RunSpec,
    progress: std::sync::Arc<dyn client::Progress>,
) -> Result<(backup::RunReport, (u8, u8))> {
    let excludes = excludes_with_files(&spec.excludes, &spec.exclude_files)?;
    let o = backup::RunOptions {
        scan: backup::ScanOptions {
            paths: existing_paths(&spec.paths)?,
            excludes,
            one_file_system: spec.one_file_system,
        },
        tags: spec.tags.clone(),
        host: spec.host.clone().unwrap_or_else(host_name),
        coding: if spec.coding == "auto" { auto_coding(r)? } else { coding(&spec.coding)? },
        parent: spec.parent.clone(),
        force: spec.force,
    };
    let rt = node_cmd::runtime()?;
    let report = rt.block_on(async {
        match backup::run(r, None, &o, progress.clone()).await {
            Err(backup::Error::NeedsNetwork(_)) => {
                let (net, _h) = node_cmd::join(&a.bootstrap, None).await?;
                anyhow::Ok(backup::run(r, Some(&net), &o, progress).await?)
            }
            other => anyhow::Ok(other?),
        }
    })?;
    Ok((report, o.coding))
}

fn backup_run(a: &BackupArgs) -> Result<()> {
    let BackupCommand::Run { what, parent, force } = &a.command else { unreachable!("called for run only") };
    let r = repo(a)?;
    let spec = RunSpec {
        paths: what.paths.clone(),
        excludes: what.exclude.clone(),
        exclude_files: what.exclude_file.clone(),
        one_file_system: what.one_file_system,
        tags: what.tag.clone(),
        host: what.host.clone(),
        coding: what.coding.clone(),
        parent: parent.clone(),
        force: *force,
    };
    let (report, coding) = run_spec(a, &r, &spec, Bars::new(a.json))?;
    let s = &report.snapshot;
    if a.json {
        println!("{}", without_keys(serde_json::to_value(&report)?));
    } else {
        let st = &s.stats;
        println!(
            "snapshot {} saved ({}+{} on the peers){}",
            s.id,
            coding.0,
            coding.1,
            if report.resumed { " (resumed an interrupted run)" } else { "" }
        );
        println!(
            "  {} files, {} directories, {}; read {} files ({}); stored {} new ({} of segments), uploaded {} of shards; {:.1} s",
            st.files,
            st.dirs,
            size(st.bytes),
            st.files_read,
            size(st.bytes_read),
            size(st.new_plain_bytes),
            size(st.new_segment_bytes),
            size(st.uploaded_shard_bytes),
            st.seconds
        );
        if let Some(p) = &s.parent {
            println!("  compared with snapshot {p}");
        }
        if let Some(r) = &report.renewed {
            print_renewed(r);
        }
        if let Some(e) = &report.renew_error {
            println!("  warning: the renewal failed ({e}); backup data expires on the peers unless renewed");
        }
        for k in &s.skipped {
            println!("  skipped {}: {}", printable(&k.path), printable(&k.why));
        }
    }
    if !s.skipped.is_empty() {
        // As restic's exit code 3: saved, but some source data could not be read.
        return Err(crate::Incomplete(format!(
            "snapshot {} was saved without {} path(s) that could not be read (listed above); exit status 3",
            s.id,
            s.skipped.len()
        ))
        .into());
    }
    Ok(())
}
