//! `ionshard publish`, `vendor resign`, `vendor timestamp`, `vendor withdraw`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ota::meta::{self, Latest, Release, Signed, Timestamp, VendorKey, Version};
use serde_json::json;
use spn::types::JobResult;

use super::{Vendor, load, now, sync_roots};
use crate::files::{load_or_create_secret, write_atomic};
use crate::http;
use crate::progress::Bars;

/// Options of `ionshard publish`.
#[derive(clap::Args)]
pub(crate) struct PublishOpts {
    /// The image file.
    pub(crate) image: PathBuf,
    /// Product the image is for.
    #[arg(long)]
    pub(crate) product: String,
    /// Version (dotted numbers, e.g. 1.4.2); devices refuse versions older than theirs.
    #[arg(long)]
    pub(crate) version: String,
    /// Hardware revision it fits (repeatable).
    #[arg(long, required = true)]
    pub(crate) hardware: Vec<String>,
    /// k: data shards per segment.
    #[arg(long, default_value_t = 10)]
    pub(crate) data_shards: u8,
    /// m: parity shards per segment (any m peers may be lost).
    #[arg(long, default_value_t = 4)]
    pub(crate) parity_shards: u8,
    /// The SPN's API, e.g. http://127.0.0.1:7800.
    #[arg(long, env = "IONSHARD_SPN")]
    pub(crate) spn: String,
    /// API token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// Vendor directory [default: ~/.ionshard/vendor].
    #[arg(long)]
    pub(crate) vendor_dir: Option<PathBuf>,
    /// Wrap the read key with the product key, so only the product's devices can read the image.
    #[arg(long)]
    pub(crate) confidential: bool,
    /// Make no patches of changed chunks against the product's previous
    /// release (devices then download each changed chunk whole), and tag
    /// chunks under a fresh key (for a release whose readers differ from
    /// the previous one's).
    #[arg(long)]
    pub(crate) no_patches: bool,
    /// Days until devices refuse this release (re-sign to extend).
    #[arg(long, default_value_t = 90)]
    pub(crate) expires_days: u64,
    /// Where to write the release bundle (default: VENDOR_DIR/releases/PRODUCT@VERSION.bundle.json).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What a publish produced (for the demo's summary).
pub(crate) struct Published {
    pub(crate) id: String,
    pub(crate) bundle: PathBuf,
    pub(crate) result: JobResult,
    pub(crate) seconds: f64,
}

pub(crate) fn publish(o: PublishOpts) -> Result<Published> {
    let started = Instant::now();
    let vendor_dir = o.vendor_dir.clone().unwrap_or_else(super::default_dir);
    let v = load(&vendor_dir)?;
    let mut opts = ota::PublishOptions {
        image: o.image.clone(),
        product: o.product.clone(),
        version: o.version.clone(),
        hardware: o.hardware.clone(),
        data_shards: o.data_shards,
        parity_shards: o.parity_shards,
        expires_days: o.expires_days,
        product_key: None,
        patience: Duration::from_secs(6 * 3600),
        patches: !o.no_patches,
    };
    // Names are checked before anything is sent or written (the product
    // names a key file).
    opts.check(&v.root, now()).map_err(publish_hint)?;
    let spn = http::spn(&o.spn, http::token(o.token.clone(), None)?)?;
    sync_roots(&spn, &v, false)?;
    opts.product_key = if o.confidential {
        let pk_path = vendor_dir.join("products").join(format!("{}.key", o.product));
        let (pk, created) = load_or_create_secret(&pk_path)?;
        if created && !o.json {
            eprintln!("created product key {} (give it to {} devices)", pk_path.display(), o.product);
        }
        Some(pk)
    } else {
        None
    };
    let present: Vec<&VendorKey> = v.keys.iter().take(v.root.threshold as usize).collect();
    let ota::Prepared { signed, result, missing } =
        ota::publish(&spn, &v.root, &present, &opts, Bars::new(o.json)).map_err(publish_hint)?;
    let release = &signed.signed;
    let (id, len) = (release.id(), release.length);
    if missing > 0 {
        let pending = super::sign::write_pending_release(&v.dir, &signed)?;
        if o.json {
            println!(
                "{}",
                json!({ "release": id, "pending": pending.display().to_string(), "signatures_missing": missing })
            );
        } else {
            println!("encoded and scattered {id}; the release needs {missing} more signature(s):");
            println!("  each other key holder: ionshard vendor sign {}", pending.display());
            println!("  then:                  ionshard vendor submit {} --spn {}", pending.display(), o.spn);
        }
        let bundle = pending;
        return Ok(Published { id, bundle, result, seconds: started.elapsed().as_secs_f64() });
    }
    let out = submit_release(&v, &spn, &signed, o.out.clone())?;
    let seconds = started.elapsed().as_secs_f64();
    if o.json {
        println!(
            "{}",
            json!({ "release": id, "manifest": release.manifest, "bundle": out.display().to_string(), "bytes": len,
                    "segments": result.segments, "new_segments": result.new_segments,
                    "new_shard_bytes": result.new_shard_bytes, "receipts": result.receipts, "peers": result.peers,
                    "patches": result.patches, "patch_bytes": result.patch_bytes,
                    "patched_chunk_bytes": result.patched_chunk_bytes, "patch_seconds": result.patch_millis as f64 / 1e3,
                    "no_patches": result.no_patches, "confidential": o.confidential, "seconds": seconds })
        );
    } else {
        println!("published {id}");
        println!("  manifest  {}", release.manifest);
        println!(
            "  stored    {} new shard bytes for {} image bytes ({} of {} segments new), {} receipts from {} peers",
            result.new_shard_bytes, len, result.new_segments, result.segments, result.receipts, result.peers
        );
        match &result.no_patches {
            None => println!(
                "  patches   {} changed chunks ({} bytes stored) travel as {} bytes of patches against the previous \
                 release ({:.2} s)",
                result.patches,
                result.patched_chunk_bytes,
                result.patch_bytes,
                result.patch_millis as f64 / 1e3
            ),
            Some(why) => println!("  patches   none: {why}"),
        }
        println!("  bundle    {}", out.display());
        println!("  took      {seconds:.2} s ({:.1} MB/s)", len as f64 / seconds / 1e6);
    }
    Ok(Published { id, bundle: out, result, seconds })
}

/// The flag to fix, for a refusal of the publish's options.
fn publish_hint(e: ota::Error) -> anyhow::Error {
    let hint = match &e {
        ota::Error::Malformed(m) if m.starts_with("product ") => "check --product",
        ota::Error::Malformed(m) if m.starts_with("hardware ") || m.contains("hardware revision") => {
            "give each --hardware the image fits"
        }
        ota::Error::Malformed(m) if m.contains("version") => "check --version",
        ota::Error::Expired { .. } => "rotate the root first (`ionshard vendor key add`)",
        ota::Error::Fetch(client::Error::Job { why, .. }) if why.contains("distinct live peers") => {
            "each segment needs --data-shards + --parity-shards distinct live peers: lower them, or start more peers"
        }
        _ => return e.into(),
    };
    anyhow::Error::from(e).context(hint)
}

/// Send a release that meets its threshold, then a fresh timestamp naming
/// it (if this directory holds the timestamp key), and write its bundle.
pub(crate) fn submit_release(
    v: &Vendor,
    spn: &http::Spn,
    signed: &Signed<Release>,
    out: Option<PathBuf>,
) -> Result<PathBuf> {
    let release = &signed.signed;
    let id = release.id();
    let text = meta::to_json(signed);
    ota::submit(spn, signed)?;
    let rel_dir = v.dir.join("releases");
    std::fs::create_dir_all(&rel_dir)?;
    write_atomic(&rel_dir.join(format!("{id}.release.json")), text.as_bytes())?;
    if v.timestamp_key.is_some() {
        sign_timestamp(v, spn, &release.product, 24)?;
    } else {
        eprintln!(
            "note: no timestamp key in {}: devices will see {id} once `ionshard vendor timestamp` runs where the key is",
            v.dir.display()
        );
    }
    let bundle = ota::served_bundle(spn, release)?;
    let out = out.unwrap_or_else(|| rel_dir.join(format!("{id}.bundle.json")));
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    write_atomic(&out, &bundle)?;
    Ok(out)
}

/// The releases this vendor published of `product` and did not withdraw.
fn published(dir: &Path, product: &str) -> Result<Vec<Release>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join("releases")) else { return Ok(out) };
    for e in entries {
        let path = e?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(id) = name.strip_suffix(".release.json") else { continue };
        if !id.starts_with(&format!("{product}@")) || dir.join("withdrawn").join(format!("{id}.json")).exists() {
            continue;
        }
        let doc: Signed<Release> =
            serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("reading {}", path.display()))?;
        out.push(doc.signed);
    }
    Ok(out)
}

/// Sign and send a timestamp of `product`: per hardware, the newest release
/// this vendor published and did not withdraw.
pub(super) fn sign_timestamp(v: &Vendor, spn: &http::Spn, product: &str, hours: u64) -> Result<Timestamp> {
    let key = v.timestamp_key.as_ref().with_context(|| {
        format!(
            "{} holds no timestamp key of root v{}: run this where the key is, or make one with `ionshard vendor key timestamp`",
            v.dir.display(),
            v.root.version
        )
    })?;
    let mut latest: BTreeMap<String, (Version, Latest)> = BTreeMap::new();
    for r in published(&v.dir, product)? {
        let ver = Version::parse(&r.version)?;
        for h in &r.hardware {
            if latest.get(h).is_none_or(|(best, _)| ver > *best) {
                latest
                    .insert(h.clone(), (ver.clone(), Latest { version: r.version.clone(), blake3: r.blake3.clone() }));
            }
        }
    }
    let last = v.dir.join("timestamps").join(format!("{product}.json"));
    let seen = std::fs::read(&last)
        .ok()
        .and_then(|b| serde_json::from_slice::<Signed<Timestamp>>(&b).ok())
        .map_or(0, |d| d.signed.version);
    let t = Timestamp {
        vendor: v.root.vendor.clone(),
        product: product.to_string(),
        // Grows even when this file is lost, as long as the clock does.
        version: (seen + 1).max(now()),
        issued: now(),
        expires: now() + hours * 3600,
        latest: latest.into_iter().map(|(h, (_, l))| (h, l)).collect(),
    };
    let doc = meta::sign_timestamp(t.clone(), &[key]);
    let text = meta::to_json(&doc);
    spn.add_timestamp(&spn::types::NewTimestamp { timestamp: text.clone() })?;
    std::fs::create_dir_all(v.dir.join("timestamps"))?;
    write_atomic(&last, text.as_bytes())?;
    Ok(t)
}

/// `ionshard vendor timestamp`: re-sign the newest-release statement of
/// each product given (or of every product published from here).
pub(crate) fn timestamp(
    dir: &Path,
    products: &[String],
    spn_url: &str,
    token: Option<String>,
    hours: u64,
    json_out: bool,
) -> Result<()> {
    if hours == 0 || hours > 7 * 24 {
        bail!("--expires-hours {hours}: give 1 to 168 (hours to a day is usual; re-sign well before)");
    }
    let v = load(dir)?;
    let spn = http::spn(spn_url, http::token(token, None)?)?;
    sync_roots(&spn, &v, false)?;
    let mut products = products.to_vec();
    if products.is_empty() {
        let mut all: Vec<String> = std::fs::read_dir(dir.join("releases"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".release.json").and_then(|id| id.split_once('@')).map(|(p, _)| p.to_string())
            })
            .collect();
        all.sort();
        all.dedup();
        products = all;
    }
    if products.is_empty() {
        bail!("no releases published from {} yet: nothing to timestamp", dir.display());
    }
    let mut out = Vec::new();
    for p in &products {
        let t = sign_timestamp(&v, &spn, p, hours)?;
        if !json_out {
            let list: Vec<String> = t.latest.iter().map(|(h, l)| format!("{h}: {}", l.version)).collect();
            println!("timestamp {} of {p} until {}: {}", t.version, t.expires, list.join(", "));
        }
        out.push(t);
    }
    if json_out {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}

/// Re-sign a published release with a later expiry (devices refuse expired
/// metadata: a vendor re-signs releases that should stay installable).
pub(crate) fn resign(
    bundle_path: &Path,
    spn_url: &str,
    token: Option<String>,
    vendor_dir: &Path,
    expires_days: u64,
    json_out: bool,
) -> Result<()> {
    let v = load(vendor_dir)?;
    let file = std::fs::File::open(bundle_path).with_context(|| format!("opening {}", bundle_path.display()))?;
    // Only the signed release matters here: the manifest is not kept.
    let (bundle, _) = ota::Bundle::read_streaming(std::io::BufReader::new(file), &mut std::io::sink(), &mut |_| Ok(()))
        .with_context(|| format!("reading bundle {}", bundle_path.display()))?;
    let signed: Signed<Release> = serde_json::from_str(&bundle.release).context("the bundle's release")?;
    let mut release = signed.signed;
    if release.vendor != v.root.vendor {
        bail!(
            "{} is a release of vendor {:?}, this vendor is {:?}",
            bundle_path.display(),
            release.vendor,
            v.root.vendor
        );
    }
    // Issued strictly later than before, even twice within one second.
    release.issued = now().max(release.issued + 1);
    release.expires = now() + expires_days * 86400;
    let signed = meta::sign_release(release.clone(), &v.signers()?);
    let api = http::spn(spn_url, http::token(token, None)?)?;
    sync_roots(&api, &v, false)?;
    submit_release(&v, &api, &signed, Some(bundle_path.to_path_buf()))?;
    if json_out {
        println!(
            "{}",
            json!({ "release": release.id(), "expires": release.expires, "bundle": bundle_path.display().to_string() })
        );
    } else {
        println!("re-signed {}: devices accept it until {} (seconds since the epoch)", release.id(), release.expires);
    }
    Ok(())
}
