//! `ionshard store stats|scrub`: an operator's look at a peer's shard store.

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
    }
}
