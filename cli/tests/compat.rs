//! An updater has to be able to update itself: a device running the previous
//! release's `ionshard` (built from testdata/compat/PREVIOUS by
//! scripts/previous-release.sh) fetches and installs, from this release's
//! SPN and peers, the release that brings the new formats; then this
//! release's binary, on the state the old one left, takes the next release
//! with timestamps checked. The vendor's directory is one the previous
//! release made, upgraded by this one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The previous release's binary, if it has been built.
fn previous() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IONSHARD_PREV_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let rev = std::fs::read_to_string(root.join("testdata/compat/PREVIOUS")).ok()?;
    let built = target.join("prev/release/ionshard");
    let stamp = std::fs::read_to_string(target.join("prev/REV")).unwrap_or_default();
    (built.exists() && stamp.trim() == rev.trim()).then_some(built)
}

fn old(bin: &Path) -> Command {
    Command::new(bin)
}

#[test]
fn a_device_of_the_previous_release_updates_to_this_one_and_on() {
    let Some(prev) = previous() else {
        let msg = "the previous release's binary is not built: run scripts/previous-release.sh (7 minutes) to test \
                   that its devices can update to this release";
        assert!(std::env::var_os("IONSHARD_REQUIRE_PREV").is_none(), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = network(d, 8);
    let vendor = d.join("vendor");
    // A vendor directory as the previous release made it (format 1 root, its defaults).
    let o = old(&prev).args(["vendor", "init", "--name", "acme", "--dir", &s(&vendor), "--json"]).output();
    json_out(&o.expect("old vendor init"), "old vendor init");
    // A device provisioned then, with that root.
    let state = d.join("device");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::copy(vendor.join("root.json"), state.join("root.json")).expect("provision");
    // This release: the vendor adds a timestamp key (root v2, with its format 1 projection) and registers.
    let o = bin().args(["vendor", "key", "timestamp", "--dir", &s(&vendor), "--json"]).output();
    json_out(&o.expect("vendor key timestamp"), "vendor key timestamp");
    register(&n, &vendor);
    let (v2, v21) = (d.join("fw-2.0.img"), d.join("fw-2.1.img"));
    std::fs::write(&v2, image(6 << 20, 51)).expect("image");
    publish(&n, &vendor, &v2, "2.0", &[]);

    // The old device asks the way it always did (no format, no hardware in the request).
    let slot = d.join("slot.img");
    let install = format!("cp \"$1\" '{}'", slot.display());
    let o = old(&prev)
        .args(["update", "--release", "router@latest", "--spn", &n.url, "--product", "router", "--hardware", "r1"])
        .args(["--state", &s(&state), "--bootstrap", &n.bootstrap, "--install-cmd", &install, "--json"])
        .output()
        .expect("old update");
    let u = json_out(&o, "the previous release's update");
    assert_eq!(u["release"], "router@2.0", "{u}");
    assert_eq!(
        std::fs::read(&slot).expect("slot"),
        std::fs::read(&v2).expect("image"),
        "the old device's image differs"
    );
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("root.json")).expect("root")).expect("json");
    assert_eq!(root["signed"]["version"], 2, "the old device followed the rotation through the projection");
    assert!(root["signed"].get("timestamp").is_none(), "the old device kept a format 1 root");

    // A release that brings patches (patch segments in its manifest, a
    // patch table in format 4 bundles): the old device still takes it,
    // whole chunks from the network and the rest from its seed.
    let v201 = d.join("fw-2.0.1.img");
    let mut mid = image(6 << 20, 51);
    mid[3 << 20..(3 << 20) + 2048].copy_from_slice(&image(2048, 53));
    std::fs::write(&v201, &mid).expect("image");
    let r = publish(&n, &vendor, &v201, "2.0.1", &[]);
    assert!(r["patches"].as_u64().unwrap_or(0) >= 1, "2.0.1 has no patches to test with: {r}");
    let o = old(&prev)
        .args(["update", "--release", "router@latest", "--spn", &n.url, "--product", "router", "--hardware", "r1"])
        .args(["--state", &s(&state), "--bootstrap", &n.bootstrap, "--install-cmd", &install, "--json"])
        .output()
        .expect("old update");
    let u = json_out(&o, "the previous release's update to a release with patches");
    assert_eq!(u["release"], "router@2.0.1", "{u}");
    assert_eq!(std::fs::read(&slot).expect("slot"), mid, "the old device's image of 2.0.1 differs");

    // The device now runs this release (what it just installed), on the state the old one left.
    let mut next = mid.clone();
    next[1 << 20..(1 << 20) + 4096].copy_from_slice(&image(4096, 52));
    std::fs::write(&v21, &next).expect("image");
    publish(&n, &vendor, &v21, "2.1", &[]);
    let o = bin()
        .args(["update", "--release", "router@latest", "--spn", &n.url, "--product", "router", "--hardware", "r1"])
        .args(["--state", &s(&state), "--bootstrap", &n.bootstrap, "--install-cmd", &install, "--json"])
        .output()
        .expect("new update");
    let u = json_out(&o, "this release's update");
    assert_eq!(u["release"], "router@2.1", "{u}");
    assert!(u["freshness_unchecked"].is_null(), "the timestamp was not checked: {u}");
    assert!(u["seed_bytes"].as_u64().unwrap_or(0) > 5 << 20, "the old release's image was not used as the seed: {u}");
    assert!(u["patched_chunks"].as_u64().unwrap_or(0) >= 1, "the patches of 2.1 were not used: {u}");
    assert_eq!(std::fs::read(&slot).expect("slot"), next);
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("root.json")).expect("root")).expect("json");
    assert!(root["signed"].get("timestamp").is_some(), "the device took the format 2 root of its version");
}
