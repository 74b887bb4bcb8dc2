//! `ionshard fetch` and `ionshard update`: a device gets a release.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ota::meta::{self, Policy};
use ota::{Bundle, Device, FetchOptions, FetchReport, Installed};
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
    pub(crate) json: bool,
}

pub(crate) fn default_state() -> PathBuf {
    crate::files::home().join("device")
}

/// The bundle, read as it streams in; its manifest (the part that grows with
/// the image) goes to an unnamed temporary file, not to memory.
fn load_bundle(o: &DeviceOpts) -> Result<(Bundle, std::fs::File)> {
    use std::io::Seek;
    let mut manifest = tempfile::tempfile().context("creating a temporary file for the manifest")?;
    let (bundle, _) = match (&o.bundle, &o.release) {
        (Some(path), None) => {
            let f = std::fs::File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
            Bundle::read_streaming(std::io::BufReader::new(f), &mut manifest)
                .with_context(|| format!("reading bundle {}", path.display()))?
        }
        (None, Some(id)) => {
            let url = o.spn.as_deref().context("--release ID needs --spn URL (or give --bundle FILE)")?;
            let spn = http::Spn::new(url, None)?;
            let body = spn.get_reader(&format!("/v1/releases/{id}"), ota::MAX_BUNDLE as u64)?;
            Bundle::read_streaming(std::io::BufReader::new(body), &mut manifest)
                .with_context(|| format!("reading release {id} from the SPN"))?
        }
        _ => bail!("give either --bundle FILE or --release ID --spn URL"),
    };
    manifest.rewind().context("rewinding the manifest")?;
    Ok((bundle, manifest))
}

/// What a fetch or update did, for the demo.
pub(crate) struct Outcome {
    pub(crate) report: FetchReport,
    pub(crate) install_status: Option<i32>,
}

/// Fetch (and with `install`, install and record) a release.
pub(crate) fn run(o: DeviceOpts, install: bool) -> Result<Outcome> {
    let (bundle, manifest) = load_bundle(&o)?;
    let device = Device::open(&o.state)?;
    let root = device.trusted_root(o.root.as_deref())?;
    let installed = device.installed()?;
    let policy = Policy {
        product: o.product.as_deref().or(installed.as_ref().map(|i| i.product.as_str())),
        hardware: o.hardware.as_deref(),
        installed: device.installed_version()?,
        now: now(),
    };
    if policy.hardware.is_none() {
        bail!("give --hardware (this device's hardware revision): releases are checked against it");
    }
    if policy.product.is_none() {
        bail!("give --product (this device's product): releases for other products are refused");
    }
    let (release, _root) = device.check(root, &bundle, &policy)?;
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
            None | Some(Some(0)) => device.record_installed(&Installed {
                product: release.product.clone(),
                version: release.version.clone(),
                path: out.clone(),
                blake3: release.blake3.clone(),
                length: release.length,
                installed_at: now(),
            })?,
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
                    "install_status": status })
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
    Ok(Outcome { report, install_status: status })
}
