//! Vendors, releases, withdrawals and timestamps.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use ota::Bundle;
use ota::meta::Version;
use serde::Deserialize;

use super::objects::{load_manifest, placement_of};
use super::{Api, ApiError, Caller, bad};
use crate::error::Error;
use crate::state::ReleaseRecord;
use crate::types::{NewRelease, NewTimestamp, NewWithdrawal, ReleaseInfo, ReleaseList, Roots, VendorInfo};
use crate::{Inner, now, vendors};

pub(super) async fn register(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(body): Json<Roots>,
) -> Api<(StatusCode, Json<VendorInfo>)> {
    let first = body.roots.first().ok_or_else(|| bad("no roots sent"))?;
    let vendor = ota::meta::parse_root(first.root.as_bytes()).map_err(|e| bad(format!("root: {e}")))?.signed.vendor;
    who.may(&vendor)?;
    let info = vendors::register(&inner.state, &vendor, &body.roots, now())?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub(super) async fn rotate(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(vendor): Path<String>,
    Json(body): Json<Roots>,
) -> Api<Json<VendorInfo>> {
    who.may(&vendor)?;
    Ok(Json(vendors::rotate(&inner.state, &vendor, &body.roots, now())?))
}

pub(super) async fn vendor(State(inner): State<Arc<Inner>>, Path(vendor): Path<String>) -> Api<Json<VendorInfo>> {
    Ok(Json(vendors::info(&inner.state, &vendor)?))
}

/// The bundle of a release in `format`; from format 4, with its patch
/// table, and with the manifest as a delta against `base` (a manifest CID
/// the device has) where the SPN has that release of the product and the
/// delta is smaller.
fn bundle_of(inner: &Inner, r: &ReleaseRecord, format: u32, base: Option<&str>) -> Api<Bundle> {
    let (bytes, m) = load_manifest(inner, &r.manifest)?;
    let timestamp = if format >= ota::TIMESTAMP_BUNDLE_FORMAT { inner.state.timestamp(&r.product)? } else { None };
    let b64 = |b: &[u8]| data_encoding::BASE64.encode(b);
    let patches = if format >= 4 { inner.state.patches(&r.manifest)?.map(|p| b64(&p)) } else { None };
    let patches = patches.filter(|p| p.len() <= MAX_PATCH_TABLE);
    let delta = match base.filter(|b| format >= 4 && *b != r.manifest) {
        Some(b) => manifest_delta(inner, r, b, &bytes, &m)?,
        None => None,
    };
    Ok(Bundle {
        format,
        release: r.release.clone(),
        roots: vendors::bundle_roots(&inner.state, &r.vendor, format)?,
        timestamp,
        manifest: if delta.is_some() { String::new() } else { Bundle::encode_manifest(&bytes) },
        placement: placement_of(inner, &m)?,
        bootstrap: inner.bootstrap.clone(),
        // Repair moves shards: where a device asks for them as they are now.
        placement_from: (format >= 3).then(|| format!("/v1/releases/{}/placement", r.id)),
        patches,
        manifest_delta: delta
            .map(|d| ota::ManifestDelta { base: base.unwrap_or_default().to_string(), delta: b64(&d) }),
    })
}

/// The largest manifest sent as a delta: what devices rebuild in memory
/// (`ota::update`'s bound; one that has a larger one installed does not ask).
const MAX_DELTA_MANIFEST: usize = 4 << 20;

/// The largest patch table sent (base64): a bundle's parts outside the
/// manifest are bounded at 16 MiB in all, the placement among them.
const MAX_PATCH_TABLE: usize = 8 << 20;

/// Manifest deltas kept at most.
const DELTAS_KEPT: usize = 64;

/// The manifest of `r` (its `bytes`, decoded `m`) as a delta against the
/// manifest `base`, sealed with `r`'s read key, if `base` is a verified,
/// not withdrawn release of the same product and the delta is under half
/// the manifest. Outcomes are kept, misses too: every device of a fleet on
/// one release asks for the same one, and a stranger cycling bases costs
/// one computation per pair.
fn manifest_delta(
    inner: &Inner,
    r: &ReleaseRecord,
    base: &str,
    bytes: &[u8],
    m: &chunker::Manifest,
) -> Api<Option<Arc<Vec<u8>>>> {
    if bytes.len() > MAX_DELTA_MANIFEST {
        return Ok(None);
    }
    let key = (r.manifest.clone(), base.to_string());
    if let Some(d) = inner.deltas.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(d.clone());
    }
    let delta = make_delta(inner, r, base, bytes, m)?;
    let mut cache = inner.deltas.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= DELTAS_KEPT {
        cache.clear();
    }
    cache.insert(key, delta.clone());
    Ok(delta)
}

fn make_delta(
    inner: &Inner,
    r: &ReleaseRecord,
    base: &str,
    bytes: &[u8],
    m: &chunker::Manifest,
) -> Api<Option<Arc<Vec<u8>>>> {
    // Only against a release of the product that devices may hold.
    let is_base = inner
        .state
        .releases(Some(&r.product))?
        .iter()
        .any(|b| b.manifest == base && b.verified && b.withdrawn.is_none() && b.vendor == r.vendor);
    if !is_base {
        return Ok(None);
    }
    let (Some(old), Some(new)) = (inner.state.object(base)?, inner.state.object(&r.manifest)?) else { return Ok(None) };
    if old.tenant != new.tenant || old.product != new.product {
        return Ok(None);
    }
    let read_key = |hex: &str| -> Option<chunker::ReadKey> {
        let k: [u8; 32] = data_encoding::HEXLOWER.decode(hex.as_bytes()).ok()?.try_into().ok()?;
        Some(chunker::ReadKey::from_bytes(k))
    };
    let (Some(old_key), Some(new_key)) = (read_key(&old.read_key), read_key(&new.read_key)) else { return Ok(None) };
    let (_, old_m) = load_manifest(inner, base)?;
    let made = (|| -> chunker::Result<Vec<u8>> {
        let (oc, nc) = (old_m.open(&old_key)?, m.open(&new_key)?);
        // The smallest delta while manifests are small; faster as they grow.
        let level = if bytes.len() <= 1 << 20 { 19 } else { 9 };
        chunker::manifest_delta(&old_m, &oc, m, &nc, &new_key, level)
    })();
    match made {
        Ok(d) if d.len() * 2 < bytes.len() => Ok(Some(Arc::new(d))),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!("manifest delta of {} against {base}: {e}", r.manifest);
            Ok(None)
        }
    }
}

pub(super) async fn add_release(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(new): Json<NewRelease>,
) -> Api<(StatusCode, Json<Bundle>)> {
    Ok((StatusCode::CREATED, Json(release_added(&inner, &who, new.release)?)))
}

/// Check a signed release against its vendor's root and keep it; answer its bundle.
pub(crate) fn release_added(inner: &Inner, who: &Caller, release: String) -> Api<Bundle> {
    if release.len() > ota::meta::MAX_METADATA {
        return Err(bad(format!("release metadata over {} bytes", ota::meta::MAX_METADATA)));
    }
    let peek: ota::meta::Signed<ota::meta::Release> =
        serde_json::from_str(&release).map_err(|e| bad(format!("release metadata: {e}")))?;
    let vendor = peek.signed.vendor;
    who.may(&vendor)?;
    let r = vendors::check_release(&inner.state, &vendor, &release, now())?;
    if inner.state.product_owner(&r.product)?.is_some_and(|o| o != vendor) {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("product {} belongs to another vendor", r.product)));
    }
    let obj = inner
        .state
        .object(&r.manifest)?
        .ok_or_else(|| bad(format!("release names manifest {}, which this SPN does not store", r.manifest)))?;
    if obj.tenant != vendor || obj.length != r.length || obj.blake3 != r.blake3 || obj.product != r.product {
        return Err(bad(format!(
            "release says {} / {} bytes / {}, the stored object is {}'s {} / {} bytes / {}",
            r.product, r.length, r.blake3, obj.tenant, obj.product, obj.length, obj.blake3
        )));
    }
    let rec = ReleaseRecord {
        id: r.id(),
        product: r.product.clone(),
        version: r.version.clone(),
        release,
        roots: Vec::new(),
        manifest: r.manifest.clone(),
        published: now(),
        vendor,
        hardware: r.hardware.clone(),
        blake3: r.blake3.clone(),
        verified: true,
        withdrawn: None,
    };
    inner.state.put_release(&rec)?;
    bundle_of(inner, &rec, ota::BUNDLE_FORMAT, None)
}

pub(super) async fn withdraw(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<NewWithdrawal>,
) -> Api<Json<ReleaseInfo>> {
    let rec = inner.state.release(&id)?.ok_or_else(|| Error::NotFound(format!("release {id}")))?;
    who.may(&rec.vendor)?;
    Ok(Json(info(&vendors::withdraw(&inner.state, &rec.vendor, &id, &body.withdrawal)?)))
}

pub(super) async fn add_timestamp(
    State(inner): State<Arc<Inner>>,
    Extension(who): Extension<Caller>,
    Json(body): Json<NewTimestamp>,
) -> Api<StatusCode> {
    let peek: ota::meta::Signed<ota::meta::Timestamp> =
        serde_json::from_str(&body.timestamp).map_err(|e| bad(format!("timestamp: {e}")))?;
    who.may(&peek.signed.vendor)?;
    vendors::accept_timestamp(&inner.state, &peek.signed.vendor, &body.timestamp, now())?;
    Ok(StatusCode::CREATED)
}

pub(super) async fn timestamp(State(inner): State<Arc<Inner>>, Path(product): Path<String>) -> Api<String> {
    inner.state.timestamp(&product)?.ok_or_else(|| Error::NotFound(format!("timestamp of {product}")).into())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    product: Option<String>,
    hardware: Option<String>,
}

fn info(r: &ReleaseRecord) -> ReleaseInfo {
    ReleaseInfo {
        id: r.id.clone(),
        product: r.product.clone(),
        version: r.version.clone(),
        hardware: r.hardware.clone(),
        manifest: r.manifest.clone(),
        published: r.published,
        withdrawn: r.withdrawn.clone(),
    }
}

pub(super) async fn list(State(inner): State<Arc<Inner>>, Query(q): Query<ListQuery>) -> Api<Json<ReleaseList>> {
    let mut list: Vec<ReleaseRecord> = inner
        .state
        .releases(q.product.as_deref())?
        .into_iter()
        .filter(|r| r.verified && q.hardware.as_ref().is_none_or(|h| r.hardware.contains(h)))
        .collect();
    list.sort_by(|a, b| match (Version::parse(&a.version), Version::parse(&b.version)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.version.cmp(&b.version),
    });
    Ok(Json(ReleaseList { releases: list.iter().map(info).collect() }))
}

#[derive(Debug, Deserialize)]
pub(super) struct BundleQuery {
    /// Devices of this release ask for format 2; those before, for nothing (1).
    format: Option<u32>,
    /// The asking device's hardware: `@latest` is the newest for it.
    hardware: Option<String>,
    /// The manifest CID of the release the device has (format 4): the
    /// manifest may come as a delta against it.
    base: Option<String>,
}

pub(super) async fn bundle(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<BundleQuery>,
) -> Api<Json<Bundle>> {
    let format = q.format.unwrap_or(ota::LEGACY_BUNDLE_FORMAT);
    if !(ota::LEGACY_BUNDLE_FORMAT..=ota::BUNDLE_FORMAT).contains(&format) {
        return Err(bad(format!(
            "bundle format {format}: this SPN serves {} to {}",
            ota::LEGACY_BUNDLE_FORMAT,
            ota::BUNDLE_FORMAT
        )));
    }
    let rec = match id.strip_suffix("@latest") {
        Some(product) => vendors::newest(&inner.state, product, q.hardware.as_deref())?,
        None => inner.state.release(&id)?.filter(|r| r.verified),
    };
    let what = match &q.hardware {
        Some(h) => format!("release {id} for hardware {h}"),
        None => format!("release {id}"),
    };
    let rec = rec.ok_or(Error::NotFound(what))?;
    if let Some(why) = &rec.withdrawn {
        return Err(ApiError(StatusCode::GONE, format!("release {} was withdrawn: {why}", rec.id)));
    }
    // A manifest delta is CPU work: off the runtime's threads.
    let bundle = tokio::task::spawn_blocking(move || bundle_of(&inner, &rec, format, q.base.as_deref()))
        .await
        .map_err(|e| ApiError::from(Error::io("making the bundle", std::io::Error::other(e))))??;
    Ok(Json(bundle))
}

/// `GET /v1/releases/{id}/placement`: where a release's shards are now
/// (what a format 3 bundle's `placement_from` names). Public, as the
/// bundle is.
pub(super) async fn placement(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Api<Json<ota::Placement>> {
    let rec = inner.state.release(&id)?.filter(|r| r.verified).ok_or(Error::NotFound(format!("release {id}")))?;
    if let Some(why) = &rec.withdrawn {
        return Err(ApiError(StatusCode::GONE, format!("release {} was withdrawn: {why}", rec.id)));
    }
    let (_, m) = load_manifest(&inner, &rec.manifest)?;
    Ok(Json(placement_of(&inner, &m)?))
}
