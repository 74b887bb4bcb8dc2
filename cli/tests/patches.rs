//! Patch releases (issue 17): a release published after another of the same
//! product carries patches of its changed chunks against the previous
//! one's, and its manifest as a delta; a device with the previous release
//! installed downloads a small fraction of what whole chunks cost, and
//! every other device (two versions back, a damaged seed, no seed) still
//! gets the image byte for byte.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// A software tree's worth of text (it compresses, as real images do).
fn tree(len: usize, salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 200);
    let mut i = 0u64;
    while out.len() < len {
        let h = blake3::hash(&(i / 7).to_le_bytes());
        out.extend_from_slice(
            format!("    def handler_{i}(self, request): return self.render('{}', {salt})\n", &h.to_hex()[..24])
                .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// `base` with a version string changed in `n` places.
fn patched(base: &[u8], n: usize, tag: &[u8; 6]) -> Vec<u8> {
    let mut v = base.to_vec();
    for k in 0..n {
        let at = (k * 7_919 + 1) * (base.len() / (n * 7_919 + 2));
        v[at..at + 6].copy_from_slice(tag);
    }
    v
}

fn update_from_spn(n: &Network, vendor: &Path, state: &Path, extra: &[&str]) -> Value {
    let slot = state.join("slot.img");
    let install = format!("cp \"$1\" '{}'", slot.display());
    let args = ["--release", "router@latest", "--spn", &n.url, "--install-cmd", &install];
    json_out(&update(n, vendor, state, &[&args[..], extra].concat()), "update")
}

fn total(u: &Value) -> u64 {
    u["downloads"]["total_bytes"].as_u64().expect("total_bytes")
}

#[test]
fn patch_releases_travel_as_patches_and_every_device_still_gets_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = network(d, 8);
    let vendor = d.join("vendor");
    json_out(
        &bin().args(["vendor", "init", "--name", "acme", "--dir", &s(&vendor), "--json"]).output().expect("init"),
        "init",
    );
    register(&n, &vendor);
    let v1 = tree(8 << 20, 1);
    let v2 = patched(&v1, 12, b"v2.0.1");
    let v3 = patched(&v2, 12, b"v3.0.7");
    let paths: Vec<_> = ["v1", "v2", "v3"].iter().map(|v| d.join(format!("{v}.img"))).collect();
    for (p, v) in paths.iter().zip([&v1, &v2, &v3]) {
        std::fs::write(p, v).expect("image");
    }

    let r1 = publish(&n, &vendor, &paths[0], "1.0", &[]);
    assert_eq!(r1["patches"], 0, "{r1}");
    assert!(r1["no_patches"].as_str().is_some_and(|w| w.contains("no earlier release")), "{r1}");
    // Two devices on 1.0.
    let (a, b) = (d.join("device-a"), d.join("device-b"));
    for state in [&a, &b] {
        let u = update_from_spn(&n, &vendor, state, &[]);
        assert_eq!(u["release"], "router@1.0", "{u}");
    }

    let r2 = publish(&n, &vendor, &paths[1], "2.0", &[]);
    let patches = r2["patches"].as_u64().expect("patches");
    assert!(patches >= 6, "most of the 12 changed chunks get a patch: {r2}");
    assert!(
        r2["patch_bytes"].as_u64().expect("patch_bytes") * 10 < r2["patched_chunk_bytes"].as_u64().expect("bytes"),
        "patches far smaller than their chunks: {r2}"
    );

    // Device a takes 2.0 with patches and a manifest delta.
    let u = update_from_spn(&n, &vendor, &a, &[]);
    assert_eq!(u["release"], "router@2.0", "{u}");
    assert_eq!(std::fs::read(a.join("slot.img")).expect("slot"), v2);
    assert_eq!(u["downloads"]["manifest_delta"], true, "{u}");
    assert!(u["patched_chunks"].as_u64().expect("patched") >= patches.min(6), "{u}");
    assert!(u["patch_fallbacks"].as_array().is_some_and(Vec::is_empty), "{u}");
    let with_patches = total(&u);
    let dl = &u["downloads"];
    let (p2p, ranges) = (dl["p2p_in_bytes"].as_u64().expect("p2p"), dl["range_bytes"].as_u64().expect("ranges"));
    assert!(p2p > ranges && dl["p2p_overhead_bytes"].as_u64() == Some(p2p - ranges), "libp2p's bytes: {dl}");

    // The same update without a seed: every changed chunk and the manifest whole.
    let c = d.join("device-c");
    let whole = json_out(
        &update(&n, &vendor, &c, &["--release", "router@2.0", "--spn", &n.url, "--no-seed"]),
        "update without a seed",
    );
    assert_eq!(std::fs::read(whole["path"].as_str().expect("path")).expect("image"), v2);
    assert_eq!(whole["patched_chunks"], 0, "{whole}");
    assert!(with_patches * 10 < total(&whole), "patched {with_patches} vs whole {}", total(&whole));

    // 3.0 is patched against 2.0. Device b (on 1.0, two versions back) has
    // few of the bases: patches it cannot use cost it the chunks, no more.
    publish(&n, &vendor, &paths[2], "3.0", &[]);
    let u = update_from_spn(&n, &vendor, &b, &[]);
    assert_eq!(u["release"], "router@3.0", "{u}");
    assert_eq!(std::fs::read(b.join("slot.img")).expect("slot"), v3);

    // Device a's image of 2.0 is damaged on disk: patches against damaged
    // chunks do not apply (their bases no longer match), the chunks come whole.
    let img = a.join("images/router-2.0.img");
    let mut bad = std::fs::read(&img).expect("installed image");
    for k in 0..bad.len() / (256 << 10) {
        bad[k * (256 << 10) + 100] ^= 0xff;
    }
    std::fs::write(&img, &bad).expect("damage");
    let u = update_from_spn(&n, &vendor, &a, &[]);
    assert_eq!(u["release"], "router@3.0", "{u}");
    assert_eq!(std::fs::read(a.join("slot.img")).expect("slot"), v3);

    // A vendor may refuse patches.
    std::fs::write(&paths[0], patched(&v3, 3, b"v4.0.0")).expect("image");
    let r4 = publish(&n, &vendor, &paths[0], "4.0", &["--no-patches"]);
    assert_eq!(r4["patches"], 0, "{r4}");
    assert!(r4["no_patches"].as_str().is_some_and(|w| w.contains("asked for none")), "{r4}");
    let u = update_from_spn(&n, &vendor, &b, &[]);
    assert_eq!(u["release"], "router@4.0", "{u}");
    assert_eq!(u["patched_chunks"], 0, "{u}");
}
