//! The device's update, as a library function: get a bundle (a file, or an
//! SPN), check it against the device's state, fetch the image over the
//! network (a delta against the installed image by default), run the
//! installer and record what is installed. The CLI's `fetch` and `update`,
//! the demo and the tests call [`update`]; so could a device agent or a web
//! page.

use std::io::Seek;
use std::path::PathBuf;
use std::sync::Arc;

use client::{FetchOptions, FetchReport, Progress, Spn};
use net::Multiaddr;
use serde::Serialize;

use crate::bundle::{Bundle, FORMAT as BUNDLE_FORMAT, MAX_BUNDLE};
use crate::device::{Checked, Device, Installed, Want, run_installer};
use crate::error::{Error, Result};
use crate::meta::{self, Version};

/// Where the bundle comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A bundle file (from `ionshard publish`).
    File(PathBuf),
    /// A release id (`PRODUCT@VERSION` or `PRODUCT@latest`) at an SPN.
    Spn {
        /// The SPN (no token needed).
        spn: Spn,
        /// The release.
        id: String,
    },
}

/// A product key: its bytes, or the file that holds them (read only if the
/// release is fetched).
#[derive(Debug, Clone)]
pub enum ProductKey {
    /// The 32 bytes.
    Bytes([u8; 32]),
    /// A file of 32 bytes.
    File(PathBuf),
}

impl ProductKey {
    fn bytes(&self) -> Result<[u8; 32]> {
        match self {
            ProductKey::Bytes(b) => Ok(*b),
            ProductKey::File(p) => {
                let b = std::fs::read(p).map_err(|e| Error::io(format!("reading product key {}", p.display()), e))?;
                <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                    Error::Malformed(format!("{} holds {} bytes; a product key file holds 32", p.display(), b.len()))
                })
            }
        }
    }
}

/// Which older image to take unchanged chunks from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedChoice {
    /// The installed image, if it is still there and is not the target.
    Installed,
    /// This file.
    File(PathBuf),
    /// None: download everything.
    None,
}

/// What to update from, and how.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// The bundle.
    pub source: Source,
    /// The device's state directory.
    pub state: PathBuf,
    /// The vendor's root to trust, needed once (the device then keeps its own).
    pub root: Option<PathBuf>,
    /// The device's product (default: the installed one's).
    pub product: Option<String>,
    /// The device's hardware revision.
    pub hardware: String,
    /// The product key of confidential releases (read only when needed).
    pub product_key: Option<ProductKey>,
    /// Bootstrap nodes (default: those the bundle names).
    pub bootstrap: Vec<Multiaddr>,
    /// The delta seed.
    pub seed: SeedChoice,
    /// Where the image goes (default: `STATE/images/PRODUCT-VERSION.img`).
    pub out: Option<PathBuf>,
    /// Install and record it (an update); otherwise only fetch it.
    pub install: bool,
    /// Run after verification with the image path as `$1`.
    pub install_cmd: Option<String>,
    /// Install again a version that is installed already.
    pub reinstall: bool,
    /// Update from a bundle without a fresh timestamp, on purpose.
    pub offline: bool,
    /// Seconds a timestamp may be past its expiry or ahead of the clock.
    pub max_clock_skew: u64,
    /// Range requests in flight at once.
    pub parallel: usize,
    /// Image bytes decoded at a time.
    pub window: u64,
    /// The most windows fetched at once (see `client::FetchOptions::ahead`).
    pub ahead: usize,
}

impl UpdateOptions {
    /// Defaults: fetch from `source` into the state `state`, for `hardware`.
    pub fn new(source: Source, state: PathBuf, hardware: String) -> UpdateOptions {
        UpdateOptions {
            source,
            state,
            root: None,
            product: None,
            hardware,
            product_key: None,
            bootstrap: Vec::new(),
            seed: SeedChoice::Installed,
            out: None,
            install: false,
            install_cmd: None,
            reinstall: false,
            offline: false,
            max_clock_skew: 300,
            parallel: 48,
            window: 2 << 20,
            ahead: 4,
        }
    }
}

/// What the checks said besides yes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Notes {
    /// The installed version no longer bounds what may be installed, and why.
    pub floor_reset: Option<String>,
    /// A newer release for this hardware, as the vendor's timestamp names it.
    pub newer: Option<String>,
    /// Why freshness was not checked, when it was not.
    pub freshness_unchecked: Option<String>,
    /// Why the manifest delta the SPN sent was not used (the whole
    /// manifest was fetched instead), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_delta_refused: Option<String>,
}

/// What an update did.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateReport {
    /// `product@version`.
    pub release: String,
    /// The product.
    pub product: String,
    /// The notes of the checks.
    pub notes: Notes,
    /// That version was installed already, and nothing was done.
    pub already_installed: bool,
    /// The seed used.
    pub seed: Option<PathBuf>,
    /// The fetch (none when nothing was done).
    pub fetch: Option<FetchReport>,
    /// Every byte of content downloaded, by what it was.
    pub downloads: Downloads,
    /// The installer ran: its exit status (`None` inside: a signal).
    pub install_status: Option<Option<i32>>,
    /// The device now records this release as installed.
    pub installed: bool,
}

/// Every byte of content an update downloaded, by what it was (bodies:
/// not HTTP headers, libp2p's handshakes, DHT lookups or requests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Downloads {
    /// The bundle, from the SPN (0 when it was a file on the device).
    pub bundle_bytes: u64,
    /// Of the bundle (or the bundle file), the manifest, decoded (the
    /// bundle carries it in base64, a third more); or, when
    /// `manifest_delta`, the delta it was rebuilt from.
    pub manifest_bytes: u64,
    /// The manifest came as a delta against the installed release's
    /// (bundle format 4), rebuilt and checked against the signed CID.
    pub manifest_delta: bool,
    /// Ranges of shards and their proofs, from peers.
    pub range_bytes: u64,
    /// Current placements asked of the SPN while fetching.
    pub placement_bytes: u64,
    /// All of it: bundle, ranges and placements.
    pub total_bytes: u64,
    /// Every byte received on the device's libp2p connections' streams
    /// (ranges with their framing, identify, DHT lookups, multistream
    /// negotiation, pings; not Noise's handshake and framing or Yamux's
    /// headers, which lie below the streams).
    pub p2p_in_bytes: u64,
    /// Every byte sent on them (requests, DHT questions, identify).
    pub p2p_out_bytes: u64,
    /// Of `p2p_in_bytes`, what was not ranges: handshakes above Noise, DHT
    /// lookups, identify, pings, framing.
    pub p2p_overhead_bytes: u64,
    /// Of `p2p_in_bytes`, what came on the direct channel (ranges and their
    /// frames; the rest came on libp2p).
    pub direct_in_bytes: u64,
}

impl UpdateReport {
    /// The installer ran and failed.
    pub fn install_failed(&self) -> bool {
        self.install_status.is_some_and(|s| s != Some(0))
    }
}

/// A checked bundle, its manifest in an unnamed temporary file.
struct Loaded {
    bundle: Bundle,
    /// Bytes of the bundle downloaded (0: a file).
    bundle_bytes: u64,
    /// Bytes of its manifest.
    manifest_bytes: u64,
    manifest: std::fs::File,
    checked: Checked,
    installed: Option<Installed>,
    product: String,
}

/// Read the bundle as it streams in and check it (roots, release,
/// timestamp) before its manifest is read; the manifest (the part that grows
/// with the image) goes to a temporary file, not to memory. Blocking.
fn load(o: &UpdateOptions, device: &Device, base: Option<&str>) -> Result<Loaded> {
    let installed = device.installed()?;
    let product = o.product.clone().or(installed.as_ref().map(|i| i.product.clone())).ok_or(Error::NoProduct)?;
    let now = client::files::now();
    let root = device.trusted_root(o.root.as_deref(), now)?;
    let newest = matches!(&o.source, Source::Spn { id, .. } if id.ends_with("@latest"));
    let want =
        Want { product: &product, hardware: &o.hardware, now, newest, offline: o.offline, skew: o.max_clock_skew };
    let mut checked = None;
    let mut check = |b: &Bundle| {
        checked = Some(device.check(root.clone(), b, &want)?);
        Ok(())
    };
    let mut manifest = tempfile_for_manifest(&o.state)?;
    let mut bundle_bytes = 0;
    let (bundle, manifest_bytes) = match &o.source {
        Source::File(path) => {
            let f =
                std::fs::File::open(path).map_err(|e| Error::io(format!("opening bundle {}", path.display()), e))?;
            Bundle::read_streaming(std::io::BufReader::new(f), &mut manifest, &mut check)
                .map_err(|e| Error::from_bundle(format!("bundle {}", path.display()), e))?
        }
        Source::Spn { spn, id } => {
            let body = bundle_or_older(spn, id, Some(&o.hardware), base)?;
            let mut counted = Counted { inner: body, bytes: 0 };
            let read = Bundle::read_streaming(std::io::BufReader::new(&mut counted), &mut manifest, &mut check)
                .map_err(|e| Error::from_bundle(format!("release {id} from the SPN"), e))?;
            bundle_bytes = counted.bytes;
            read
        }
    };
    manifest.rewind().map_err(|e| Error::io("rewinding the manifest", e))?;
    let checked = checked.ok_or_else(|| Error::Malformed("the bundle was not checked".into()))?;
    Ok(Loaded { bundle, bundle_bytes, manifest_bytes, manifest, checked, installed, product })
}

/// The bundle of release `id` in this build's format, or in format 3 from
/// an SPN of the previous release (which refuses 4); `base`: the manifest
/// CID of the release installed, for a manifest delta.
pub fn bundle_or_older(
    spn: &client::Spn,
    id: &str,
    hardware: Option<&str>,
    base: Option<&str>,
) -> client::Result<impl std::io::Read + use<>> {
    match spn.bundle_from(id, BUNDLE_FORMAT, hardware, base, MAX_BUNDLE as u64) {
        Err(client::Error::Refused { status: 400, message, .. }) if message.contains("bundle format") => {
            spn.bundle_from(id, crate::bundle::PLACEMENT_FROM_FORMAT, hardware, None, MAX_BUNDLE as u64)
        }
        r => r,
    }
}

/// A reader that counts what it read.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Where the fetch asks for the current placement: the bundle's
/// `placement_from` (format 3), a path resolved against the SPN the bundle
/// came from. A path in a bundle file has no SPN to resolve against.
fn placement_source(source: &Source, from: Option<&str>) -> Option<client::PlacementAt> {
    let from = from?;
    let at = match source {
        Source::Spn { spn, .. } => client::PlacementAt::new(spn.clone(), from.to_string()),
        Source::File(_) if !from.starts_with('/') => client::PlacementAt::url(from).ok()?,
        Source::File(path) => {
            tracing::info!(
                "bundle {} names placement_from {from} without an SPN; the fetch uses its placement only",
                path.display()
            );
            return None;
        }
    };
    Some(at)
}

/// An unnamed file in the state directory (gone when closed, whatever happens).
fn tempfile_for_manifest(state: &std::path::Path) -> Result<std::fs::File> {
    tempfile::tempfile_in(state)
        .map_err(|e| Error::io(format!("creating a temporary file for the manifest in {}", state.display()), e))
}

/// A checked bundle, ready to fetch: what [`Update::check`] found. Its
/// notes can be shown before the download starts.
pub struct Update {
    o: UpdateOptions,
    device: Device,
    loaded: Loaded,
    notes: Notes,
}

impl Update {
    /// Get the bundle and check it against the device's state (nothing is
    /// fetched yet, and nothing the device keeps changes unless it passes).
    pub async fn check(o: UpdateOptions) -> Result<Update> {
        let device = Device::open(&o.state)?;
        let (o, device, loaded) = tokio::task::spawn_blocking(move || {
            // The manifest may come as a delta against the installed one's
            // (kept only when small enough to rebuild in memory).
            let base = device.installed_manifest().map(|(r, _)| r.manifest);
            let loaded = match load(&o, &device, base.as_deref()) {
                // A bundle that came with a delta and could not be read (over
                // a bound, say) is asked for again without one.
                Err(e @ Error::Malformed(_)) if base.is_some() => {
                    tracing::info!("the bundle with a manifest delta was refused ({e}); asking for it whole");
                    load(&o, &device, None)
                }
                r => r,
            };
            (o, device, loaded)
        })
        .await
        .map_err(|e| Error::io("reading the bundle", std::io::Error::other(e)))?;
        let loaded = loaded?;
        let c = &loaded.checked;
        let notes = Notes {
            floor_reset: c.floor_reset.clone(),
            newer: c.newer.clone(),
            freshness_unchecked: c.unchecked.clone(),
            manifest_delta_refused: None,
        };
        Ok(Update { o, device, loaded, notes })
    }

    /// What the checks said besides yes.
    pub fn notes(&self) -> &Notes {
        &self.notes
    }

    /// The release, `product@version`.
    pub fn release(&self) -> String {
        self.loaded.checked.release.id()
    }

    /// The release and the root it was checked against.
    pub fn checked(&self) -> &Checked {
        &self.loaded.checked
    }

    /// Fetch it and, with `install`, install and record it. Progress is
    /// the fetch's. A failing installer is reported in
    /// [`UpdateReport::install_status`], not as an error: the device keeps
    /// recording its previous version.
    pub async fn run(self, progress: Arc<dyn Progress>) -> Result<UpdateReport> {
        run(self, progress).await
    }
}

/// [`Update::check`], then [`Update::run`].
pub async fn update(o: UpdateOptions, progress: Arc<dyn Progress>) -> Result<UpdateReport> {
    Update::check(o).await?.run(progress).await
}

async fn run(u: Update, progress: Arc<dyn Progress>) -> Result<UpdateReport> {
    let Update { o, device, mut loaded, mut notes } = u;
    let release = &loaded.checked.release;
    let same_installed = loaded.installed.as_ref().is_some_and(|i| {
        i.product == release.product
            && Version::parse(&i.version).is_ok_and(|v| Version::parse(&release.version).is_ok_and(|r| r == v))
    });
    if o.install && same_installed && !o.reinstall {
        let l = &loaded;
        return Ok(UpdateReport {
            release: release.id(),
            product: l.product.clone(),
            notes,
            already_installed: true,
            seed: None,
            fetch: None,
            downloads: Downloads {
                bundle_bytes: l.bundle_bytes,
                manifest_bytes: l.manifest_bytes,
                total_bytes: l.bundle_bytes,
                ..Downloads::default()
            },
            install_status: None,
            installed: false,
        });
    }
    // The product key is read only now, when the release is fetched.
    let product_key = o.product_key.as_ref().map(ProductKey::bytes).transpose()?;
    let mut manifest_delta = false;
    if let Some(d) = loaded.bundle.manifest_delta.clone() {
        let read_key = meta::read_key(&loaded.checked.release, product_key.as_ref())?;
        let rebuilt = rebuild_manifest(&device, &d, &loaded.checked.release, read_key, product_key.as_ref());
        match rebuilt.and_then(|(bytes, delta_len)| {
            let mut f = tempfile_for_manifest(&o.state)?;
            std::io::Write::write_all(&mut f, &bytes).map_err(|e| Error::io("writing the manifest", e))?;
            f.rewind().map_err(|e| Error::io("rewinding the manifest", e))?;
            Ok((f, delta_len))
        }) {
            Ok((f, delta_len)) => {
                loaded.manifest = f;
                loaded.manifest_bytes = delta_len;
                manifest_delta = true;
            }
            Err(why) => {
                // The whole manifest instead: the bundle again, without the delta.
                notes.manifest_delta_refused = Some(why.to_string());
                let (o2, device2) = (o.clone(), device.clone());
                let again = tokio::task::spawn_blocking(move || load(&o2, &device2, None))
                    .await
                    .map_err(|e| Error::io("reading the bundle", std::io::Error::other(e)))??;
                let spent = loaded.bundle_bytes;
                loaded = again;
                loaded.bundle_bytes += spent;
            }
        }
    }
    let Loaded { bundle, bundle_bytes, manifest_bytes, manifest, checked, installed, product } = loaded;
    let release = checked.release;
    let mut report = UpdateReport {
        release: release.id(),
        product,
        notes,
        already_installed: false,
        seed: None,
        fetch: None,
        downloads: Downloads {
            bundle_bytes,
            manifest_bytes,
            manifest_delta,
            total_bytes: bundle_bytes,
            ..Downloads::default()
        },
        install_status: None,
        installed: false,
    };
    let read_key = meta::read_key(&release, product_key.as_ref())?;
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| o.state.join("images").join(format!("{}-{}.img", release.product, release.version)));
    report.seed = match &o.seed {
        SeedChoice::None => None,
        SeedChoice::File(p) => Some(p.clone()),
        SeedChoice::Installed => installed.as_ref().map(|i| i.path.clone()).filter(|p| p.exists() && *p != out),
    };
    let bootstrap = if o.bootstrap.is_empty() { bootstrap_of(&bundle)? } else { o.bootstrap.clone() };
    let mut opts = FetchOptions::new(out.clone());
    opts.seed = report.seed.clone();
    opts.parallel = o.parallel;
    opts.window = o.window;
    opts.ahead = o.ahead;
    let placements = placement_source(&o.source, bundle.placement_from.as_deref());
    opts.patches = match &bundle.patches {
        Some(p) => Some(
            data_encoding::BASE64
                .decode(p.as_bytes())
                .map_err(|e| Error::Malformed(format!("bundle patches are not base64: {e}")))?,
        ),
        None => None,
    };
    // The manifest is kept with the installed release (for the next delta).
    let kept = manifest.try_clone().map_err(|e| Error::io("reopening the manifest", e))?;
    opts.placement_from = placements.clone().map(|p| Arc::new(p) as Arc<dyn client::PlacementSource>);
    let (client, handle) = net::join(&bootstrap, None).await?;
    let fetched = crate::fetch(&client, manifest, bundle.placement, &release, read_key, &opts, progress).await;
    let traffic = client.traffic();
    client.shutdown().await;
    let _ = handle.await;
    let fetched = fetched?;
    let d = &mut report.downloads;
    d.range_bytes = fetched.downloaded_bytes;
    d.placement_bytes = placements.as_ref().map_or(0, client::PlacementAt::bytes);
    d.total_bytes = d.bundle_bytes + d.range_bytes + d.placement_bytes;
    d.p2p_in_bytes = traffic.inbound;
    d.p2p_out_bytes = traffic.outbound;
    d.direct_in_bytes = traffic.direct_inbound;
    d.p2p_overhead_bytes = traffic.inbound.saturating_sub(d.range_bytes);
    report.fetch = Some(fetched);
    if o.install {
        if let Some(cmd) = o.install_cmd.clone() {
            let (image, r) = (out.clone(), release.clone());
            let status = tokio::task::spawn_blocking(move || run_installer(&cmd, &image, &r))
                .await
                .map_err(|e| Error::io("running the install command", std::io::Error::other(e)))??;
            report.install_status = Some(status);
        }
        if !report.install_failed() {
            device.record_installed(&Installed::new(&release, &bundle.release, out, client::files::now()))?;
            report.installed = true;
            // For the next update's manifest delta: best effort (without it
            // the next manifest comes whole), and only what a delta can rebuild.
            if let Err(e) = keep_manifest(&device, kept) {
                tracing::warn!("the installed release's manifest was not kept: {e}");
            }
        }
    }
    Ok(report)
}

/// The manifest of `release` rebuilt from a delta against the installed
/// release's manifest, and checked against the CID `release` signs; with
/// the delta's length.
fn rebuild_manifest(
    device: &Device,
    d: &crate::bundle::ManifestDelta,
    release: &meta::Release,
    read_key: [u8; 32],
    product_key: Option<&[u8; 32]>,
) -> Result<(Vec<u8>, u64)> {
    let (old_release, old) =
        device.installed_manifest().ok_or_else(|| Error::Malformed("the installed manifest is gone".into()))?;
    if old_release.manifest != d.base {
        return Err(Error::Malformed(format!(
            "a delta against {}, the installed manifest is {}",
            d.base, old_release.manifest
        )));
    }
    let delta = data_encoding::BASE64
        .decode(d.delta.as_bytes())
        .map_err(|e| Error::Malformed(format!("the manifest delta is not base64: {e}")))?;
    let old_key = chunker::ReadKey::from_bytes(meta::read_key(&old_release, product_key)?);
    let bad = |e: chunker::Error| Error::Malformed(format!("the manifest delta: {e}"));
    let contents = old.open(&old_key).map_err(bad)?;
    let m = chunker::apply_manifest_delta(
        &old,
        &contents,
        &delta,
        &chunker::ReadKey::from_bytes(read_key),
        MAX_DELTA_MANIFEST,
    )
    .map_err(bad)?;
    if m.cid().to_string() != release.manifest {
        return Err(Error::Malformed(format!("the manifest rebuilt from the delta is not {}", release.manifest)));
    }
    Ok((m.to_bytes(), delta.len() as u64))
}

/// Keep the installed release's manifest (the file the fetch read) if a
/// delta against it can be rebuilt in memory.
fn keep_manifest(device: &Device, mut file: std::fs::File) -> Result<()> {
    let len = file.metadata().map_err(|e| Error::io("reading the manifest's length", e))?.len();
    if len > MAX_DELTA_MANIFEST as u64 {
        return device.forget_manifest();
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.rewind()
        .and_then(|_| std::io::Read::read_to_end(&mut file, &mut bytes))
        .map_err(|e| Error::io("reading the manifest back", e))?;
    device.keep_manifest(&bytes)
}

/// The largest manifest rebuilt from a delta: a device holds it, the old
/// one and both opened (about five times this) in memory meanwhile, which
/// must stay within what the fetch itself holds. 4 MiB is the manifest of
/// an image of about 1.3 GiB; a device with a larger one installed does not
/// ask for a delta, and the manifest comes whole, to a file.
const MAX_DELTA_MANIFEST: usize = 4 << 20;

/// The bootstrap addresses a bundle names.
fn bootstrap_of(bundle: &Bundle) -> Result<Vec<Multiaddr>> {
    bundle
        .bootstrap
        .iter()
        .map(|a| a.parse().map_err(|e| Error::Malformed(format!("bundle bootstrap address {a:?}: {e}"))))
        .collect()
}
