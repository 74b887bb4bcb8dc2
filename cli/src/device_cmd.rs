//! `ionshard fetch` and `ionshard update`: a device gets a release. The work
//! is `ota::update`; this module reads the flags and prints the outcome.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ota::{SeedChoice, Source, UpdateOptions, UpdateReport};
use serde_json::json;

use crate::node_cmd;
use crate::progress::Bars;

pub(crate) fn default_state() -> PathBuf {
    crate::files::home().join("device")
}

#[derive(clap::Args)]
pub(crate) struct DeviceArgs {
    /// A release bundle file (from `ionshard publish`).
    #[arg(long, conflicts_with = "release")]
    bundle: Option<PathBuf>,
    /// A release id at the SPN: PRODUCT@VERSION or PRODUCT@latest.
    #[arg(long)]
    release: Option<String>,
    /// The SPN to get --release from.
    #[arg(long, env = "IONSHARD_SPN")]
    spn: Option<String>,
    /// The vendor's root.json (needed once; the device keeps it in its state).
    #[arg(long)]
    root: Option<PathBuf>,
    /// This device's product (default: the installed one's).
    #[arg(long)]
    product: Option<String>,
    /// This device's hardware revision.
    #[arg(long)]
    hardware: Option<String>,
    /// Product key for confidential releases.
    #[arg(long)]
    product_key: Option<PathBuf>,
    /// Bootstrap node (repeatable) [default: those in the bundle].
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Device state directory [default: ~/.ionshard/device].
    #[arg(long)]
    state: Option<PathBuf>,
    /// An older image to take unchanged chunks from [default: the installed image].
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Download everything, even what the installed image has.
    #[arg(long, conflicts_with = "seed")]
    no_seed: bool,
    /// Where the image goes [update default: STATE/images/PRODUCT-VERSION.img].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run after verification with the image path as $1 (update only).
    #[arg(long)]
    install_cmd: Option<String>,
    /// Range requests in flight at once (all peers together): enough for
    /// the windows ahead (a 2 MiB window of 10+4 asks about ten).
    #[arg(long, default_value_t = 48)]
    parallel: usize,
    /// Image bytes decoded at a time; memory use is a few times this.
    #[arg(long, value_parser = crate::size::size_arg, default_value = "2MiB")]
    window: u64,
    /// The most windows fetched at once (1-8): one is decoded while the
    /// others arrive. Two while the next window is always ready; one more
    /// each time the fetch waits on the network (a long round trip, a slow
    /// peer), up to this. Each costs a window of memory.
    #[arg(long, default_value_t = 4)]
    ahead: usize,
    /// Install from a bundle without a fresh timestamp, on purpose (no network
    /// to the SPN): whether a newer release exists is then not checked.
    #[arg(long)]
    offline: bool,
    /// Install the release even if that version is installed already.
    #[arg(long)]
    reinstall: bool,
    /// Seconds a timestamp may be past its expiry, or ahead of this clock.
    #[arg(long, default_value_t = 300)]
    max_clock_skew: u64,
    /// Install only a release its vendor recorded on the ledger: the record's
    /// proof (block and certificate) is checked against this genesis or
    /// producers file (`ionshard ledger producers`), and its signer must be
    /// a key of the vendor's root; asked of --bootstrap, which must follow
    /// the chain. Checked before anything is downloaded.
    #[arg(long, value_name = "PRODUCERS")]
    require_ledger: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl DeviceArgs {
    /// The library's options (`install`: an update, not only a fetch).
    fn options(self, install: bool) -> Result<UpdateOptions> {
        let source = match (self.bundle, self.release) {
            (Some(path), None) => Source::File(path),
            (None, Some(id)) => {
                let url = self.spn.context("--release ID needs --spn URL (or give --bundle FILE)")?;
                Source::Spn { spn: client::Spn::new(&url, None).context("--spn")?, id }
            }
            _ => bail!("give either --bundle FILE or --release ID --spn URL"),
        };
        let Some(hardware) = self.hardware else {
            bail!("give --hardware (this device's hardware revision): releases are checked against it");
        };
        if !install && self.out.is_none() {
            bail!("give --out FILE for the image");
        }
        let mut o = UpdateOptions::new(source, self.state.unwrap_or_else(default_state), hardware);
        o.root = self.root;
        o.product = self.product;
        o.product_key = self.product_key.map(ota::ProductKey::File);
        o.bootstrap = node_cmd::addrs(&self.bootstrap, "--bootstrap")?;
        o.seed = match (self.no_seed, self.seed) {
            (true, _) => SeedChoice::None,
            (false, Some(p)) => SeedChoice::File(p),
            (false, None) => SeedChoice::Installed,
        };
        o.out = self.out;
        o.install = install;
        o.install_cmd = self.install_cmd;
        o.reinstall = self.reinstall;
        o.offline = self.offline;
        o.max_clock_skew = self.max_clock_skew;
        o.parallel = self.parallel;
        o.window = self.window;
        o.ahead = self.ahead;
        Ok(o)
    }
}

/// `ionshard fetch` (`install` false) or `ionshard update`.
pub(crate) fn run(a: DeviceArgs, install: bool) -> Result<UpdateReport> {
    let json = a.json;
    let ledger = a.require_ledger.clone().map(|p| (p, a.bootstrap.clone()));
    execute(a.options(install)?, json, ledger)
}

/// Run an update (or a fetch) and print what it did; an installer that
/// failed is an error here (the report says so for a library caller).
/// `ledger`: the producers file and the nodes to ask, when the release
/// must be on the ledger.
pub(crate) fn execute(
    o: UpdateOptions,
    json_out: bool,
    ledger: Option<(PathBuf, Vec<String>)>,
) -> Result<UpdateReport> {
    let from_file = matches!(o.source, Source::File(_));
    let hardware = o.hardware.clone();
    let rt = node_cmd::runtime()?;
    let update = rt.block_on(ota::Update::check(o)).map_err(|e| hint(e, from_file))?;
    if let Some((producers, bootstrap)) = ledger {
        let c = update.checked();
        let (height, signer) = crate::ledger_cmd::release_on_chain(&bootstrap, &producers, &c.release, &c.root)?;
        if !json_out {
            eprintln!(
                "ledger: {} is recorded in final block {height}, signed by vendor key {signer}",
                update.release()
            );
        }
    }
    let report = rt
        .block_on(async {
            if !json_out {
                // Said before the download, which may take a while.
                print_notes(update.notes(), &update.release(), &hardware);
            }
            update.run(Bars::new(json_out)).await
        })
        .map_err(|e| hint(e, from_file))?;
    if json_out {
        print_json(&report);
    } else {
        print_text(&report);
    }
    if let Some(s) = report.install_status
        && s != Some(0)
    {
        bail!(
            "the install command exited with {}; the device still records its previous version",
            s.map_or("a signal".to_string(), |c| format!("status {c}"))
        );
    }
    Ok(report)
}

fn print_json(r: &UpdateReport) {
    let Some(f) = &r.fetch else {
        println!(
            "{}",
            json!({ "release": r.release, "already_installed": true, "installed": false, "downloads": r.downloads })
        );
        return;
    };
    println!(
        "{}",
        json!({ "release": r.release, "path": f.path, "image_bytes": f.image_bytes,
                "downloaded_bytes": f.downloaded_bytes, "resumed_bytes": f.resumed_bytes,
                "seed_bytes": f.seed_bytes, "seed": r.seed, "requests": f.requests,
                "rebuilt_ranges": f.rebuilt_ranges, "peers_used": f.peers_used,
                "dropped": f.dropped, "problems": f.problems, "seconds": f.seconds,
                "setup_seconds": f.setup_seconds, "most_ahead": f.most_ahead,
                "patched_chunks": f.patched_chunks, "patched_bytes": f.patched_bytes,
                "patch_fallbacks": f.patch_fallbacks, "patches_unused": f.patches_unused,
                "manifest_delta_refused": r.notes.manifest_delta_refused,
                "installed": r.installed, "install_status": r.install_status.flatten(),
                "floor_reset": r.notes.floor_reset, "newer": r.notes.newer,
                "freshness_unchecked": r.notes.freshness_unchecked, "downloads": r.downloads })
    );
}

fn print_notes(n: &ota::Notes, release: &str, hardware: &str) {
    for note in [n.floor_reset.as_ref(), n.freshness_unchecked.as_ref()].into_iter().flatten() {
        eprintln!("note: {note}");
    }
    if let Some(newer) = &n.newer {
        let product = release.split('@').next().unwrap_or(release);
        eprintln!("note: the vendor's timestamp names {product}@{newer} as newer for {hardware}");
    }
}

fn print_text(r: &UpdateReport) {
    let Some(f) = &r.fetch else {
        println!("{} is installed already: nothing to do (--reinstall installs it again)", r.release);
        return;
    };
    println!("{} verified: {}", r.release, f.path.display());
    println!(
        "  downloaded {} bytes for a {}-byte image ({:.1}%), {} from an earlier partial fetch, {} from the seed{}",
        f.downloaded_bytes,
        f.image_bytes,
        100.0 * f.downloaded_bytes as f64 / f.image_bytes.max(1) as f64,
        f.resumed_bytes,
        f.seed_bytes,
        r.seed.as_ref().map(|s| format!(" {}", s.display())).unwrap_or_default()
    );
    let d = &r.downloads;
    println!(
        "  in all {} bytes: the bundle {} (its manifest {}), ranges {}, placements {}",
        d.total_bytes, d.bundle_bytes, d.manifest_bytes, d.range_bytes, d.placement_bytes
    );
    println!(
        "  the network: {} bytes received ({} on the direct channel; {} not ranges: DHT lookups, identify, \
         negotiation, framing), {} sent",
        d.p2p_in_bytes, d.direct_in_bytes, d.p2p_overhead_bytes, d.p2p_out_bytes
    );
    if d.manifest_delta {
        println!("  the manifest came as a delta against the installed release's ({} bytes)", d.manifest_bytes);
    }
    if f.patched_chunks > 0 {
        println!("  {} chunks ({} bytes) made from patches against the seed", f.patched_chunks, f.patched_bytes);
    }
    for why in f.patch_fallbacks.iter().chain(&f.patches_unused).chain(&r.notes.manifest_delta_refused) {
        println!("  note: {why}");
    }
    println!(
        "  {} peers answered, {} ranges rebuilt, {:.2} s ({:.1} MB/s of image; {:.2} s of it finding and connecting to peers; \
         up to {} windows in flight)",
        f.peers_used.len(),
        f.rebuilt_ranges,
        f.seconds,
        f.image_bytes as f64 / f.seconds / 1e6,
        f.setup_seconds,
        f.most_ahead
    );
    for d in &f.dropped {
        println!("  dropped peer {}: {}", d.peer, d.reason);
    }
    match (r.installed, r.install_status) {
        (true, None) => println!("  recorded as installed (no --install-cmd given)"),
        (true, Some(_)) => println!("  installed: the install command exited 0"),
        (false, Some(s)) => println!("  install command failed ({s:?}); installed version unchanged"),
        (false, None) => {}
    }
}

/// What a device user can do about a refusal the library reports.
fn hint(e: ota::Error, from_file: bool) -> anyhow::Error {
    let cause = e.cause();
    let hint = match cause {
        ota::Error::NoTimestamp { .. } | ota::Error::StaleTimestamp { .. } if from_file => {
            "a bundle file carries the timestamp of the day it was made: update through the SPN (--release ID --spn URL), or pass --offline to install it without knowing whether a newer release exists"
        }
        ota::Error::NoProduct => "give --product (this device's product)",
        ota::Error::NoRoot(_) => "pass --root FILE (the vendor's root.json)",
        ota::Error::NeedProductKey(_) => "pass --product-key FILE",
        ota::Error::Fetch(client::Error::Busy(_)) => "choose another --out, or wait for the other fetch",
        _ => return e.into(),
    };
    anyhow::Error::from(e).context(hint)
}
