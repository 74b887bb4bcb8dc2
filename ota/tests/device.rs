//! A device's checks of what it is offered, without a network: bundles built
//! here, signed by keys made here, checked against a device state on disk.

use ota::meta::{self, Latest, Release, Role, Root, Timestamp, VendorKey};
use ota::{Bundle, Device, Installed, Want};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

struct Keys {
    root: Vec<VendorKey>,
    ts: VendorKey,
}

fn root_of(k: &Keys, version: u64, expires: u64) -> Root {
    Root {
        vendor: "acme".into(),
        version,
        expires,
        threshold: 1,
        keys: k.root.iter().map(|k| (k.id(), k.public_hex())).collect(),
        timestamp: Some(Role { threshold: 1, keys: [(k.ts.id(), k.ts.public_hex())].into_iter().collect() }),
    }
}

fn release(version: &str, hash: &str) -> Release {
    Release {
        vendor: "acme".into(),
        product: "router".into(),
        hardware: vec!["r1".into()],
        version: version.into(),
        length: 1,
        blake3: hash.into(),
        manifest: "bafy".into(),
        read_key: meta::KeyWrap::Clear("00".repeat(32)),
        issued: now(),
        expires: now() + 3600,
    }
}

fn timestamp(k: &Keys, seq: u64, version: &str, hash: &str) -> String {
    let t = Timestamp {
        vendor: "acme".into(),
        product: "router".into(),
        version: seq,
        issued: now(),
        expires: now() + 3600,
        latest: [("r1".to_string(), Latest { version: version.into(), blake3: hash.into() })].into_iter().collect(),
    };
    meta::to_json(&meta::sign_timestamp(t, &[&k.ts]))
}

fn bundle(release: String, roots: Vec<String>, timestamp: Option<String>) -> Bundle {
    Bundle {
        format: ota::BUNDLE_FORMAT,
        release,
        roots,
        timestamp,
        manifest: String::new(),
        placement: Default::default(),
        bootstrap: vec![],
        placement_from: None,
        patches: None,
        manifest_delta: None,
    }
}

fn want(newest: bool) -> Want<'static> {
    Want { product: "router", hardware: "r1", now: now(), newest, offline: false, skew: 300 }
}

#[test]
fn an_expired_root_given_to_provision_a_device_is_refused_and_not_kept() {
    let k = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let dir = tempfile::tempdir().expect("dir");
    let expired = dir.path().join("old-root.json");
    std::fs::write(&expired, meta::to_json(&meta::sign_root(root_of(&k, 1, now() - 60), &[&k.root[0]])))
        .expect("write");
    let device = Device::open(dir.path().join("state")).expect("device");
    let e = device.trusted_root(Some(&expired), now()).expect_err("expired root taken");
    assert!(matches!(e, ota::Error::Expired { .. }), "{e}");
    assert!(!dir.path().join("state/root.json").exists(), "an expired root was kept as the device's own");
}

#[test]
fn a_device_of_the_previous_release_takes_the_format_2_root_of_its_own_version() {
    // Provisioned with the format 1 projection (as devices before timestamps were).
    let k = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let r1 = root_of(&k, 1, now() + 3600);
    let legacy = meta::load_root(meta::to_json(&meta::sign_root(r1.legacy(), &[&k.root[0]])).as_bytes()).expect("v1");
    let v2_text = meta::to_json(&meta::sign_root(r1.clone(), &[&k.root[0]]));
    let dir = tempfile::tempdir().expect("dir");
    let device = Device::open(dir.path()).expect("device");
    let hash = "ab".repeat(32);
    let rel = meta::to_json(&meta::sign_release(release("1.0", &hash), &[&k.root[0]]));
    let b = bundle(rel, vec![v2_text.clone()], Some(timestamp(&k, 1, "1.0", &hash)));
    let c = device.check(legacy.clone(), &b, &want(true)).expect("checked");
    assert_eq!(c.root.format(), 2, "the timestamp role came with the format 2 root");
    assert_eq!(std::fs::read_to_string(dir.path().join("root.json")).expect("root"), v2_text);
    // A format 2 root of the same version with other keys is refused.
    let other = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let mut forged = root_of(&other, 1, now() + 3600);
    forged.vendor = "acme".into();
    let forged_text = meta::to_json(&meta::sign_root(forged, &[&other.root[0]]));
    let b2 = Bundle { roots: vec![forged_text], ..b };
    assert!(device.check(legacy, &b2, &want(true)).is_err(), "a same-version root with other keys was taken");
}

#[test]
fn new_timestamp_keys_reset_the_timestamp_floor_old_ones_do_not() {
    let k = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let r1 = root_of(&k, 1, now() + 3600);
    let dir = tempfile::tempdir().expect("dir");
    let device = Device::open(dir.path()).expect("device");
    let hash = "cd".repeat(32);
    let rel = meta::to_json(&meta::sign_release(release("1.0", &hash), &[&k.root[0]]));
    device
        .check(r1.clone(), &bundle(rel.clone(), vec![], Some(timestamp(&k, 500, "1.0", &hash))), &want(true))
        .expect("500");
    let e = device
        .check(r1.clone(), &bundle(rel.clone(), vec![], Some(timestamp(&k, 499, "1.0", &hash))), &want(true))
        .expect_err("an older timestamp");
    assert!(matches!(e, ota::Error::TimestampRollback { seen: 500, offered: 499, .. }), "{e}");
    // The vendor's online key was stolen and fast-forwarded: a new one in root v2 starts afresh.
    let k2 = Keys { root: vec![VendorKey::from_bytes(k.root[0].to_bytes())], ts: VendorKey::generate() };
    let r2 = root_of(&k2, 2, now() + 3600);
    let r2_text = meta::to_json(&meta::sign_root(r2, &[&k.root[0]]));
    let b = bundle(rel, vec![r2_text], Some(timestamp(&k2, 3, "1.0", &hash)));
    device.check(r1, &b, &want(true)).expect("a new timestamp key starts a new count");
}

#[test]
fn a_release_the_timestamp_does_not_announce_is_refused_to_a_device_asking_for_the_newest() {
    let k = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let r1 = root_of(&k, 1, now() + 3600);
    let dir = tempfile::tempdir().expect("dir");
    let device = Device::open(dir.path()).expect("device");
    // Signed by a root key (stolen, say), never announced by the online key.
    let rel = meta::to_json(&meta::sign_release(release("9999", &"ee".repeat(32)), &[&k.root[0]]));
    let b = bundle(rel, vec![], Some(timestamp(&k, 1, "2.0", &"ab".repeat(32))));
    let e = device.check(r1.clone(), &b, &want(true)).expect_err("unannounced");
    assert!(matches!(e, ota::Error::Unannounced { .. }), "{e}");
    // Asked for by its id, it is the device owner's choice (and the timestamp is still fresh).
    let c = device.check(r1, &b, &want(false)).expect("by id");
    assert_eq!(c.release.version, "9999");
    // The installed record of this release names it, for a later rotation to void it.
    let i = Installed::new(&c.release, &b.release, dir.path().join("img"), now());
    assert_eq!(i.format, 2);
    assert!(i.release.is_some());
}

#[test]
fn a_device_state_of_the_previous_release_reads_as_is() {
    // testdata/compat/device-format1: written by the release before timestamps.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/compat/device-format1");
    let dir = tempfile::tempdir().expect("dir");
    for f in ["root.json", "installed.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
    }
    let device = Device::open(dir.path()).expect("device");
    let i = device.installed().expect("installed.json reads").expect("a record");
    assert_eq!((i.format, i.version.as_str(), i.release.is_none()), (1, "1.0", true));
    // Its own root is kept, expired or not: newer ones come in bundles.
    let root = device.trusted_root(None, now()).expect("root.json reads");
    assert_eq!((root.format(), root.version), (1, 1));
}

/// Root v2's format 1 copy (signed by the vendor for devices from before
/// timestamps: public) has no timestamp role. Offered alone to a device
/// that checks freshness, it was taken, written as the device's root, and
/// every later check ran without a timestamp: an older signed release
/// passed as the newest.
#[test]
fn a_root_copy_without_the_timestamp_role_cannot_turn_freshness_off() {
    let k = Keys { root: vec![VendorKey::generate()], ts: VendorKey::generate() };
    let r1 = root_of(&k, 1, now() + 3600);
    let r2 = root_of(&k, 2, now() + 3600);
    let legacy_v2 = meta::to_json(&meta::sign_root(r2.legacy(), &[&k.root[0]]));
    let full_v2 = meta::to_json(&meta::sign_root(r2, &[&k.root[0]]));
    let dir = tempfile::tempdir().expect("dir");
    let device = Device::open(dir.path()).expect("device");
    let (old, new) = ("11".repeat(32), "22".repeat(32));
    let rel = meta::to_json(&meta::sign_release(release("1.0", &old), &[&k.root[0]]));
    // The older release, the legacy copy of v2, no timestamp: refused.
    let e = device.check(r1.clone(), &bundle(rel.clone(), vec![legacy_v2.clone()], None), &want(true));
    assert!(matches!(e, Err(ota::Error::NoTimestamp { .. })), "{e:?}");
    assert!(!dir.path().join("root.json").exists(), "the copy without a timestamp role was kept");
    // Beside the full copy, the full copy is the one taken.
    let b = bundle(rel, vec![legacy_v2, full_v2.clone()], Some(timestamp(&k, 1, "1.2", &new)));
    let c = device.check(r1, &b, &want(false)).expect("checked");
    assert!(c.root.timestamp.is_some() && c.root.version == 2);
    assert_eq!(c.newer.as_deref(), Some("1.2"), "the timestamp still says what is newest");
    assert_eq!(std::fs::read_to_string(dir.path().join("root.json")).expect("root"), full_v2);
}
