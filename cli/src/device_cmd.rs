//! `ionshard fetch` and `ionshard update`: a device gets a release.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ota::meta::{self, Version};
use ota::{Bundle, Checked, Device, FetchOptions, FetchReport, Installed, Want};
use serde_json::json;

use crate::http;
use crate::node_cmd;
use crate::vendor::{bar, now};

/// Options shared by fetch and update.
pub(crate) struct DeviceOpts {
    /// A bundle file.
    pub(crate) bundle: Option<PathBuf>,
    /// Or a release id at an SPN.
    pub(crate) release: Option<String>,
    pub(crate) spn: Option<String>,
    pub(crate) root: Option<PathBuf>,
    pub(crate) product: Option<String>,
    pub(crate) hardware: Option<String>,
    pub(crate) product_key: Option<PathBuf>,
    pub(crate) bootstrap: Vec<String>,
    pub(crate) state: PathBuf,
    pub(crate) seed: Option<PathBuf>,
    pub(crate) no_seed: bool,
    pub(crate) out: Option<PathBuf>,
    pub(crate) install_cmd: Option<String>,
    pub(crate) parallel: usize,
    pub(crate) window: u64,
    /// Update from a bundle without a fresh timestamp, on purpose.
    pub(crate) offline: bool,
    /// Install again a version that is installed already.
    pub(crate) reinstall: bool,
    /// Seconds a timestamp may be past its expiry or ahead of this clock.
    pub(crate) max_clock_skew: u64,
    pub(crate) json: bool,
}

pub(crate) fn default_state() -> PathBuf {
    crate::files::home().join("device")
}

/// The bundle, read as it streams in and checked (roots, release, timestamp)
/// before its manifest is read; the manifest (the part that grows with the
/// image) goes to an unnamed temporary file, not to memory.
fn load_bundle(o: &DeviceOpts, check: &mut dyn FnMut(&Bundle) -> ota::Result<()>) -> Result<(Bundle, std::fs::File)> {
    use std::io::Seek;
    let mut manifest = tempfile::tempfile().context("creating a temporary file for the manifest")?;
    let (bundle, _) = match (&o.bundle, &o.release) {
        (Some(path), None) => {
            let f = std::fs::File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
            Bundle::read_streaming(std::io::BufReader::new(f), &mut manifest, check)
                .with_context(|| format!("bundle {}", path.display()))?
        }
        (None, Some(id)) => {
            let url = o.spn.as_deref().context("--release ID needs --spn URL (or give --bundle FILE)")?;
            let spn = http::Spn::new(url, None)?;
            let hw = o.hardware.as_deref().unwrap_or_default();
            let path = format!("/v1/releases/{id}?format={}&hardware={hw}", ota::BUNDLE_FORMAT);
            let body = spn.get_reader(&path, ota::MAX_BUNDLE as u64)?;
            Bundle::read_streaming(std::io::BufReader::new(body), &mut manifest, check)
                .with_context(|| format!("release {id} from the SPN"))?
        }
        _ => bail!("give either --bundle FILE or --release ID --spn URL"),
    };
    manifest.rewind().context("rewinding the manifest")?;
    Ok((bundle, manifest))
}

/// What a fetch or update did, for the demo.
pub(crate) struct Outcome {
    /// The fetch (none when the release was installed already).
    pub(crate) report: Option<FetchReport>,
    pub(crate) install_status: Option<i32>,
}

/// Fetch (and with `install`, install and record) a release.
pub(crate) fn run(o: DeviceOpts, install: bool) -> Result<Outcome> {
    let device = Device::open(&o.state)?;
    let installed = device.installed()?;
    let product = o.product.clone().or(installed.as_ref().map(|i| i.product.clone()));
    let Some(product) = product else {
        bail!("give --product (this device's product): releases for other products are refused");
    };
    let Some(hardware) = o.hardware.clone() else {
        bail!("give --hardware (this device's hardware revision): releases are checked against it");
    };
    let root = device.trusted_root(o.root.as_deref(), now())?;
    let want = Want {
        product: &product,
        hardware: &hardware,
        now: now(),
        newest: o.release.as_deref().is_some_and(|r| r.ends_with("@latest")),
        offline: o.offline,
        skew: o.max_clock_skew,
    };
    let mut checked: Option<Checked> = None;
    let (bundle, manifest) = load_bundle(&o, &mut |b| {
        checked = Some(device.check(root.clone(), b, &want)?);
        Ok(())
    })
    .map_err(|e| hint(e, o.bundle.is_some()))?;
    let Checked { release, floor_reset, newer, unchecked, .. } = checked.context("the bundle was not checked")?;
    if !o.json {
        for note in [floor_reset.as_ref(), unchecked.as_ref()].into_iter().flatten() {
            eprintln!("note: {note}");
        }
        if let Some(n) = &newer {
            eprintln!("note: the vendor's timestamp names {product}@{n} as newer for {hardware}");
        }
    }
    let same_installed = installed.as_ref().is_some_and(|i| {
        i.product == release.product
            && Version::parse(&i.version).is_ok_and(|v| Version::parse(&release.version).is_ok_and(|r| r == v))
    });
    if install && same_installed && !o.reinstall {
        if o.json {
            println!("{}", json!({ "release": release.id(), "already_installed": true, "installed": false }));
        } else {
            println!("{} is installed already: nothing to do (--reinstall installs it again)", release.id());
        }
        return Ok(Outcome { report: None, install_status: None });
    }
    let product_key = match &o.product_key {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading product key {}", p.display()))?;
            Some(<[u8; 32]>::try_from(b.as_slice()).ok().context("a product key file holds 32 bytes")?)
        }
        None => None,
    };
    let read_key = meta::read_key(&release, product_key.as_ref())?;
    let out = match (&o.out, install) {
        (Some(p), _) => p.clone(),
        (None, true) => o.state.join("images").join(format!("{}-{}.img", release.product, release.version)),
        (None, false) => bail!("give --out FILE for the image"),
    };
    // Delta: by default, the installed image (if it is still there and is not the target).
    let seed = if o.no_seed {
        None
    } else {
        o.seed.clone().or_else(|| installed.as_ref().map(|i| i.path.clone()).filter(|p| p.exists() && *p != out))
    };
    let mut bootstrap = o.bootstrap.clone();
    if bootstrap.is_empty() {
        bootstrap = bundle.bootstrap.clone();
    }
    let release_text = bundle.release.clone();
    let placement = bundle.placement;
    let mut opts = FetchOptions::new(out.clone());
    opts.seed = seed.clone();
    opts.parallel = o.parallel;
    opts.window = o.window;
    let rt = node_cmd::runtime()?;
    let pb = bar(release.length, o.json, "fetch");
    let pb2 = pb.clone();
    let report = rt.block_on(async {
        let (client, handle) = node_cmd::join(&bootstrap, None).await?;
        let r = ota::fetch(&client, manifest, placement, &release, read_key, &opts, move |n| pb2.set_position(n)).await;
        client.shutdown().await;
        let _ = handle.await;
        anyhow::Ok(r?)
    })?;
    pb.finish_and_clear();
    let mut install_status = None;
    if install {
        if let Some(cmd) = &o.install_cmd {
            install_status = Some(ota::run_installer(cmd, &out, &release)?);
        }
        match install_status {
            None | Some(Some(0)) => {
                device.record_installed(&Installed::new(&release, &release_text, out.clone(), now()))?
            }
            Some(_) => {}
        }
    }
    let status = install_status.flatten();
    if o.json {
        println!(
            "{}",
            json!({ "release": report.release, "path": report.path, "image_bytes": report.image_bytes,
                    "downloaded_bytes": report.downloaded_bytes, "resumed_bytes": report.resumed_bytes,
                    "seed_bytes": report.seed_bytes, "seed": seed, "requests": report.requests,
                    "rebuilt_ranges": report.rebuilt_ranges, "peers_used": report.peers_used,
                    "dropped": report.dropped, "problems": report.problems, "seconds": report.seconds,
                    "installed": install && matches!(install_status, None | Some(Some(0))),
                    "install_status": status, "floor_reset": floor_reset, "newer": newer,
                    "freshness_unchecked": unchecked })
        );
    } else {
        let r = &report;
        println!("{} verified: {}", r.release, r.path.display());
        println!(
            "  downloaded {} bytes for a {}-byte image ({:.1}%), {} from an earlier partial fetch, {} from the seed{}",
            r.downloaded_bytes,
            r.image_bytes,
            100.0 * r.downloaded_bytes as f64 / r.image_bytes.max(1) as f64,
            r.resumed_bytes,
            r.seed_bytes,
            seed.as_ref().map(|s| format!(" {}", s.display())).unwrap_or_default()
        );
        println!(
            "  {} peers answered, {} ranges rebuilt, {:.2} s ({:.1} MB/s of image)",
            r.peers_used.len(),
            r.rebuilt_ranges,
            r.seconds,
            r.image_bytes as f64 / r.seconds / 1e6
        );
        for d in &r.dropped {
            println!("  dropped peer {}: {}", d.peer, d.reason);
        }
        if install {
            match install_status {
                None => println!("  recorded as installed (no --install-cmd given)"),
                Some(Some(0)) => println!("  installed: the install command exited 0"),
                Some(s) => println!("  install command failed ({s:?}); installed version unchanged"),
            }
        }
    }
    if let Some(s) = install_status
        && s != Some(0)
    {
        bail!(
            "the install command exited with {}; the device still records its previous version",
            s.map_or("a signal".to_string(), |c| format!("status {c}"))
        );
    }
    Ok(Outcome { report: Some(report), install_status: status })
}

/// What a device user can do about a refusal the library reports.
fn hint(e: anyhow::Error, from_file: bool) -> anyhow::Error {
    let stale = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<ota::Error>(),
            Some(ota::Error::NoTimestamp { .. } | ota::Error::StaleTimestamp { .. })
        )
    });
    if stale && from_file {
        e.context("a bundle file carries the timestamp of the day it was made: update through the SPN (--release ID --spn URL), or pass --offline to install it without knowing whether a newer release exists")
    } else {
        e
    }
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
    /// Range requests in flight at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Image bytes decoded at a time; memory use is a few times this.
    #[arg(long, value_parser = crate::size::size_arg, default_value = "4MiB")]
    window: u64,
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
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl DeviceArgs {
    pub(crate) fn into_opts(self) -> DeviceOpts {
        DeviceOpts {
            bundle: self.bundle,
            release: self.release,
            spn: self.spn,
            root: self.root,
            product: self.product,
            hardware: self.hardware,
            product_key: self.product_key,
            bootstrap: self.bootstrap,
            state: self.state.unwrap_or_else(default_state),
            seed: self.seed,
            no_seed: self.no_seed,
            out: self.out,
            install_cmd: self.install_cmd,
            parallel: self.parallel,
            window: self.window,
            offline: self.offline,
            reinstall: self.reinstall,
            max_clock_skew: self.max_clock_skew,
            json: self.json,
        }
    }
}
