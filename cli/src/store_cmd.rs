//! `ionshard store stats|scrub|expired|clear-expired`: an operator's look at a peer's shard store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use store::Store;

use crate::size::human;

/// Where a node keeps its shards under its `--dir`.
pub(crate) fn store_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("store")
}

fn open(node_dir: &Path) -> Result<Store> {
    let dir = store_dir(node_dir);
    let (store, report) = Store::open_as_saved(&dir)
        .with_context(|| format!("opening the shard store of {} (is it a node's --dir?)", node_dir.display()))?;
    if report.removed_partial > 0 || !report.missing.is_empty() || !report.quarantined.is_empty() {
        eprintln!(
            "mended on open: removed {} partial file(s), dropped {} entr(y/ies) whose file was gone, quarantined {}",
            report.removed_partial,
            report.missing.len(),
            report.quarantined.len()
        );
    }
    Ok(store)
}

pub(crate) fn stats(node_dir: &Path, json_out: bool) -> Result<()> {
    let store = open(node_dir)?;
    let u = store.usage();
    if json_out {
        println!(
            "{}",
            json!({
                "dir": store_dir(node_dir).display().to_string(),
                "shards": u.shards,
                "bytes": u.bytes,
                "capacity": u.capacity,
                "free": u.capacity.saturating_sub(u.bytes),
                "quarantined": u.quarantined,
            })
        );
    } else {
        println!("store      {}", store_dir(node_dir).display());
        println!("shards     {}", u.shards);
        println!(
            "used       {} of {} ({:.1}%)",
            human(u.bytes),
            human(u.capacity),
            100.0 * u.bytes as f64 / u.capacity.max(1) as f64
        );
        println!("free       {}", human(u.capacity.saturating_sub(u.bytes)));
        println!("quarantined {}", u.quarantined);
    }
    Ok(())
}

pub(crate) fn scrub(node_dir: &Path, json_out: bool) -> Result<()> {
    let store = open(node_dir)?;
    let pb = if json_out { ProgressBar::hidden() } else { ProgressBar::new(store.usage().shards) };
    if let Ok(style) = ProgressStyle::with_template("scrubbing [{bar:30}] {pos}/{len} shards eta {eta}") {
        pb.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    let report = store.scrub(&mut |done, _| pb.set_position(done))?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if json_out {
        let bad: Vec<_> = report.bad.iter().map(|(c, r)| json!({ "cid": c.to_string(), "reason": r })).collect();
        println!("{}", json!({ "checked": report.checked, "bytes": report.bytes, "bad": bad, "seconds": secs }));
    } else {
        for (c, r) in &report.bad {
            println!("quarantined {c}: {r}");
        }
        println!(
            "checked {} shards ({}) in {:.1}s: {} bad{}",
            report.checked,
            human(report.bytes),
            secs,
            report.bad.len(),
            if report.bad.is_empty() { "" } else { " (quarantined; the SPN will repair them elsewhere)" }
        );
    }
    if !report.bad.is_empty() {
        // Scripts and monitoring see a non-zero status when anything was bad.
        std::process::exit(3);
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub(crate) enum StoreCommand {
    /// Shards, bytes, quota and quarantined shards of a node's store.
    Stats(StoreArgs),
    /// Read every shard, check it against its CID, quarantine bad ones (exit status 3 if any).
    Scrub(StoreArgs),
    /// Shards whose expiry has passed (backup data nobody renewed): the
    /// node sweeps them a week after their expiry; `clear-expired` frees them now.
    Expired(StoreArgs),
    /// Free the space of every shard whose expiry has passed.
    ClearExpired(StoreArgs),
}

#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// The node's directory (as given to `ionshard node --dir`).
    #[arg(long)]
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `ionshard store …`.
pub(crate) fn run(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Stats(a) => stats(&a.dir, a.json),
        StoreCommand::Scrub(a) => scrub(&a.dir, a.json),
        StoreCommand::Expired(a) => expired(&a.dir, a.json, false),
        StoreCommand::ClearExpired(a) => expired(&a.dir, a.json, true),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `store expired` (list) and `store clear-expired` (free).
fn expired(node_dir: &Path, json_out: bool, clear: bool) -> Result<()> {
    let store = open(node_dir)?;
    let now = now();
    let list = store.expired(now)?;
    let bytes: u64 = list.iter().map(|(_, m)| m.size).sum();
    let cleared = if clear { store.sweep_expired(now)? } else { Vec::new() };
    if json_out {
        let shards: Vec<_> = list
            .iter()
            .map(
                |(c, m)| json!({ "cid": c.to_string(), "size": m.size, "expired": m.expiry, "stored_at": m.stored_at }),
            )
            .collect();
        println!("{}", json!({ "expired": shards, "bytes": bytes, "cleared": cleared.len() }));
        return Ok(());
    }
    for (c, m) in &list {
        let ago = now.saturating_sub(m.expiry.unwrap_or(now)) / 86_400;
        println!("{c}  {:>10}  expired {ago} day(s) ago", human(m.size));
    }
    if clear {
        println!("cleared {} expired shard(s), {} freed", cleared.len(), human(bytes));
    } else if list.is_empty() {
        println!("no expired shards");
    } else {
        println!(
            "{} expired shard(s), {}: the node sweeps them a week after their expiry; `ionshard store clear-expired` frees them now",
            list.len(),
            human(bytes)
        );
    }
    Ok(())
}
