//! The OTA path through the `ionshard` binary, every node a real process on
//! 127.0.0.1: publish, fetch, kill -9 of the fetcher and resume, delta
//! publish and update, lost peers; and the device's refusals.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota::meta::{self, KeyWrap, Release, VendorKey};
use serde_json::Value;

mod common;
use common::*;

fn fetch_cmd(n: &Network, vendor: &Path, bundle: &str, state: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["fetch", "--bundle", bundle, "--root", &s(&vendor.join("root.json")), "--hardware", "r1"])
        .args(["--product", "router"])
        .args(["--state", &s(state), "--out", &s(out), "--bootstrap", &n.bootstrap, "--json"])
        .args(extra);
    c
}

#[test]
fn publish_fetch_resume_delta_and_lost_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut n = network(d, 8);
    let vendor = d.join("vendor");
    json_out(
        &bin().args(["vendor", "init", "--name", "acme", "--dir", &s(&vendor), "--json"]).output().expect("init"),
        "init",
    );
    register(&n, &vendor);

    // v1: 64 MiB; v2 differs in 2 MiB (four 512 KiB stretches).
    let v1 = image(64 << 20, 1);
    let mut v2 = v1.clone();
    for (i, at) in [3usize << 20, 17 << 20, 40 << 20, 61 << 20].into_iter().enumerate() {
        v2[at..at + (512 << 10)].copy_from_slice(&image(512 << 10, 100 + i as u64));
    }
    let (p1, p2) = (d.join("v1.img"), d.join("v2.img"));
    std::fs::write(&p1, &v1).expect("v1");
    std::fs::write(&p2, &v2).expect("v2");

    let r1 = publish(&n, &vendor, &p1, "1.0", &[]);
    assert_eq!(r1["receipts"], 72, "9 segments x 8 shards, each with a receipt: {r1}");
    let b1 = r1["bundle"].as_str().expect("bundle").to_string();

    // Re-signing extends the expiry of the same image; the SPN serves the new one.
    let before: Value = serde_json::from_slice(&std::fs::read(&b1).expect("bundle")).expect("json");
    let o = bin()
        .args(["vendor", "resign", &b1, "--spn", &n.url, "--expires-days", "400", "--dir", &s(&vendor), "--json"])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .output()
        .expect("resign");
    let re = json_out(&o, "resign");
    let after: Value = serde_json::from_slice(&std::fs::read(&b1).expect("bundle")).expect("json");
    assert_ne!(before["release"], after["release"]);
    assert!(re["expires"].as_u64().expect("expires") > 399 * 86400, "{re}");

    // A plain fetch, byte-exact.
    let state = d.join("device");
    let a = d.join("a.img");
    let f = json_out(&fetch_cmd(&n, &vendor, &b1, &state, &a, &[]).output().expect("fetch"), "fetch");
    assert_eq!(std::fs::read(&a).expect("a"), v1);
    assert_eq!(f["image_bytes"], 64 << 20);

    // kill -9 of the fetcher once a third of the image is on disk, then rerun.
    let b = d.join("b.img");
    let part = ota::part_path(&b);
    let mut child = fetch_cmd(&n, &vendor, &b1, &state, &b, &["--no-seed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fetch");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have >= 20 << 20 {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "fetch ended before it could be killed");
        assert!(Instant::now() < deadline, "fetch made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    assert!(!b.exists(), "no image under the final name after a kill");
    let kept = std::fs::metadata(&part).expect("partial file").len();
    let f = json_out(&fetch_cmd(&n, &vendor, &b1, &state, &b, &["--no-seed"]).output().expect("rerun"), "rerun");
    assert_eq!(std::fs::read(&b).expect("b"), v1);
    let downloaded = f["downloaded_bytes"].as_u64().expect("downloaded");
    let window = 8u64 << 20;
    // At most what was not yet on disk, plus one window in flight, plus proofs.
    let bound = ((64u64 << 20) - kept.min(64 << 20) + window) * 102 / 100;
    eprintln!("resume: {kept} bytes on disk at the kill, {downloaded} downloaded after (bound {bound})");
    assert!(downloaded <= bound, "downloaded {downloaded} after resuming with {kept} bytes on disk (bound {bound})");
    assert!(f["resumed_bytes"].as_u64().expect("resumed") + window >= kept.min(64 << 20), "{f}");
    assert!(!part.exists());

    // v2, confidential: only the new chunks stored, only they downloaded with
    // v1 as seed; without the product key the device cannot read it.
    let r2 = publish(&n, &vendor, &p2, "1.1", &["--confidential"]);
    let product_key = vendor.join("products").join("router.key");
    let stored = r2["new_shard_bytes"].as_u64().expect("new shard bytes");
    assert!(stored < (4 << 20) * 8 / 6, "v2 stored {stored} shard bytes");
    let b2 = r2["bundle"].as_str().expect("bundle").to_string();
    let c = d.join("c.img");
    let o = fetch_cmd(&n, &vendor, &b2, &state, &c, &["--seed", &s(&p1)]).output().expect("no key");
    assert!(String::from_utf8_lossy(&o.stderr).contains("confidential"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!c.exists());
    let key = ["--seed", &s(&p1), "--product-key", &s(&product_key)];
    let f = json_out(&fetch_cmd(&n, &vendor, &b2, &state, &c, &key).output().expect("delta"), "delta");
    assert_eq!(std::fs::read(&c).expect("c"), v2);
    let downloaded = f["downloaded_bytes"].as_u64().expect("downloaded");
    assert!(downloaded < 4 << 20, "delta downloaded {downloaded} bytes");

    // A partial file left by another fetch (here: garbage, no record of its
    // release) is moved aside and read only as a seed; the image is exact.
    let h = d.join("h.img");
    std::fs::write(ota::part_path(&h), image(1 << 20, 77)).expect("stale part");
    let key = ["--no-seed", "--product-key", &s(&product_key)];
    json_out(&fetch_cmd(&n, &vendor, &b2, &state, &h, &key).output().expect("fetch"), "stale part");
    assert_eq!(std::fs::read(&h).expect("h"), v2);
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("h.img."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A device updating by release id from the SPN (the README's way) gets the
    // latest, installs it and records it.
    let dev = d.join("device2");
    let o = bin()
        .args(["update", "--release", "router@latest", "--spn", &n.url, "--root", &s(&vendor.join("root.json"))])
        .args(["--product", "router", "--hardware", "r1", "--state", &s(&dev), "--product-key", &s(&product_key)])
        .args(["--seed", &s(&p1), "--json"])
        .output()
        .expect("update");
    let u = json_out(&o, "update by id");
    assert_eq!(u["release"], "router@1.1", "{u}");
    assert_eq!(u["installed"], true);
    // Every byte downloaded is counted, by what it was: the bundle (its
    // manifest in base64 inside), the ranges, the placements.
    let dl = &u["downloads"];
    let n_of = |k: &str| dl[k].as_u64().unwrap_or_else(|| panic!("{k} in {u}"));
    assert_eq!(n_of("range_bytes"), u["downloaded_bytes"].as_u64().expect("downloaded"), "{u}");
    assert!(n_of("bundle_bytes") > n_of("manifest_bytes") * 4 / 3 && n_of("manifest_bytes") > 0, "{u}");
    assert_eq!(n_of("total_bytes"), n_of("bundle_bytes") + n_of("range_bytes") + n_of("placement_bytes"), "{u}");
    let rec: Value = serde_json::from_slice(&std::fs::read(dev.join("installed.json")).expect("record")).expect("json");
    assert_eq!(rec["version"], "1.1");

    // Two peers killed: still byte-exact. A third: a clear error naming chunks, no image.
    n.procs.kill("peer1");
    n.procs.kill("peer6");
    let e = d.join("e.img");
    let key = ["--no-seed", "--product-key", &s(&product_key)];
    let f = json_out(&fetch_cmd(&n, &vendor, &b2, &state, &e, &key).output().expect("fetch"), "2 down");
    assert_eq!(std::fs::read(&e).expect("e"), v2);
    assert!(f["rebuilt_ranges"].as_u64().expect("rebuilt") > 0);
    n.procs.kill("peer3");
    let g = d.join("g.img");
    let o = fetch_cmd(&n, &vendor, &b2, &state, &g, &key).output().expect("fetch");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot rebuild segment") && err.contains("needed by chunks"), "{err}");
    assert!(!g.exists());
}

/// Sign `release` with the vendor's keys in `vendor/keys` (the first `take`).
fn sign(vendor: &Path, release: &Release, take: usize) -> String {
    let mut keys = Vec::new();
    for e in std::fs::read_dir(vendor.join("keys")).expect("keys") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "key") {
            let b: [u8; 32] = std::fs::read(&p).expect("key").try_into().expect("32 bytes");
            keys.push(VendorKey::from_bytes(b));
        }
    }
    keys.sort_by_key(VendorKey::id);
    meta::to_json(&meta::sign_release(release.clone(), &keys.iter().take(take).collect::<Vec<_>>()))
}

#[test]
fn device_refuses_bad_releases_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let vendor = d.join("vendor");
    json_out(
        &bin()
            .args([
                "vendor",
                "init",
                "--name",
                "acme",
                "--keys",
                "2",
                "--threshold",
                "2",
                "--dir",
                &s(&vendor),
                "--json",
            ])
            .output()
            .expect("init"),
        "init",
    );
    // A real manifest for a small image (no network needed to refuse).
    let img = image(300_000, 5);
    let secret = chunker::TenantSecret::from_bytes([3; 32]);
    let mut sink = chunker::MemorySink::default();
    let enc = chunker::Encoder::new(chunker::Params::default().with_coding(6, 2), &secret)
        .expect("encoder")
        .encode(&img[..], &mut sink, &mut |_| {})
        .expect("encode");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let good = Release {
        vendor: "acme".into(),
        product: "router".into(),
        hardware: vec!["r1".into()],
        version: "3.0".into(),
        length: img.len() as u64,
        blake3: blake3::hash(&img).to_hex().to_string(),
        manifest: enc.manifest.cid().to_string(),
        read_key: KeyWrap::Clear(data_encoding::HEXLOWER.encode(&enc.read_key.to_bytes())),
        issued: now,
        expires: now + 3600,
    };
    let stranger = VendorKey::generate();
    // Written as a writer writes it: the signed parts before the manifest.
    let bundle_with = |release: String, roots: Vec<String>| {
        ota::Bundle {
            format: 1,
            release,
            roots,
            timestamp: None,
            manifest: ota::Bundle::encode_manifest(&enc.manifest.to_bytes()),
            placement: Default::default(),
            bootstrap: vec![],
            placement_from: None,
            patches: None,
            manifest_delta: None,
        }
        .to_json()
    };
    let bundle = |release: String| bundle_with(release, vec![]);
    let with = |f: &dyn Fn(&mut Release)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", meta::to_json(&meta::sign_release(good.clone(), &[&stranger])), "unknown key"),
        ("below threshold", sign(&vendor, &good, 1), "1 valid signature(s) of the 2"),
        ("expired", sign(&vendor, &with(&|r| r.expires = now - 10), 2), "expired"),
        ("older version", sign(&vendor, &with(&|r| r.version = "1.9".into()), 2), "older than the installed 2.0"),
        ("wrong hardware", sign(&vendor, &with(&|r| r.hardware = vec!["r9".into()]), 2), "hardware"),
        (
            "hash mismatch",
            sign(&vendor, &with(&|r| r.blake3 = blake3::hash(b"other").to_hex().to_string()), 2),
            "does not match the release",
        ),
        ("too large", sign(&vendor, &with(&|r| r.hardware.push("x".repeat(70_000))), 2), "over the limit"),
    ];
    for (name, release, expect) in cases {
        let state = d.join(format!("state-{}", name.replace(' ', "-")));
        // The device has 2.0 installed.
        let installed = state.join("installed.img");
        std::fs::create_dir_all(&state).expect("state");
        std::fs::write(&installed, b"version 2.0").expect("installed image");
        // A record as devices of the release before timestamps wrote it (format 1).
        let record = ota::Installed {
            format: 1,
            product: "router".into(),
            version: "2.0".into(),
            path: installed.clone(),
            blake3: String::new(),
            length: 11,
            installed_at: 1,
            release: None,
        };
        ota::Device::open(&state).expect("device").record_installed(&record).expect("record");
        let before = std::fs::read(state.join("installed.json")).expect("record");
        let bfile = d.join(format!("{name}.bundle.json"));
        std::fs::write(&bfile, bundle(release)).expect("bundle");
        let marker = state.join("INSTALLED");
        let o = bin()
            .args(["update", "--bundle", &s(&bfile), "--root", &s(&vendor.join("root.json")), "--hardware", "r1"])
            .args([
                "--state",
                &s(&state),
                "--bootstrap",
                "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEvUtpVhjuaBPrNY4rTodNjwHSbbh38bbHiZ4REY7d8Tb",
            ])
            .args(["--install-cmd", &format!("touch '{}'", marker.display()), "--offline"])
            .output()
            .expect("update");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!marker.exists(), "{name}: installer ran");
        assert_eq!(std::fs::read(state.join("installed.json")).expect("record"), before, "{name}: record changed");
        assert_eq!(std::fs::read(&installed).expect("image"), b"version 2.0", "{name}: installed image harmed");
        let images = state.join("images");
        let leftovers = std::fs::read_dir(&images).map(|r| r.count()).unwrap_or(0);
        assert!(leftovers <= 1, "{name}: files left in {}", images.display());
        assert!(!images.join("router-3.0.img").exists(), "{name}: an image appeared");
    }

    // Key rotation reaches a device through the bundle: a device provisioned
    // with root v1 accepts a release signed by the rotated keys only when the
    // bundle carries root v2 (signed by the old and the new keys).
    let v1_root = d.join("root-v1.json");
    std::fs::copy(vendor.join("root.json"), &v1_root).expect("copy root");
    let old_key = {
        let shown =
            json_out(&bin().args(["vendor", "show", "--dir", &s(&vendor), "--json"]).output().expect("show"), "show");
        shown["keys"][0].as_str().expect("key id").to_string()
    };
    json_out(
        &bin().args(["vendor", "key", "rotate", &old_key, "--dir", &s(&vendor), "--json"]).output().expect("rotate"),
        "rotate",
    );
    // A release the device can verify but whose image will not match: the
    // error then shows how far the checks got, without a network.
    let mut r = good.clone();
    r.blake3 = blake3::hash(b"not the image").to_hex().to_string();
    let signed = sign(&vendor, &r, 2);
    let v2_root = std::fs::read_to_string(vendor.join("roots").join("2.root.json")).expect("root v2");
    let update = |state: &Path, roots: Vec<String>| {
        let f = state.with_extension("bundle.json");
        std::fs::write(&f, bundle_with(signed.clone(), roots)).expect("bundle");
        let o = bin()
            .args(["update", "--bundle", &s(&f), "--root", &s(&v1_root), "--product", "router", "--hardware", "r1"])
            .arg("--offline")
            .args([
                "--state",
                &s(state),
                "--bootstrap",
                "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEvUtpVhjuaBPrNY4rTodNjwHSbbh38bbHiZ4REY7d8Tb",
            ])
            .output()
            .expect("update");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let without = update(&d.join("state-no-roots"), vec![]);
    assert!(without.contains("1 valid signature(s) of the 2 root v1 requires"), "{without}");
    let state = d.join("state-rotated");
    let with_roots = update(&state, vec![v2_root.clone()]);
    assert!(with_roots.contains("does not match the release"), "{with_roots}");
    assert_eq!(std::fs::read_to_string(state.join("root.json")).expect("kept root"), v2_root, "device keeps root v2");
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    // From the crate directory testdata/ is not at hand: the demo generates its images.
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = bin().args(["demo", "--json"]).env("TMPDIR", tmp.path()).output().expect("demo");
    let v = json_out(&o, "demo");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert!(left.is_empty(), "the demo left {left:?}");
    assert_eq!(v["install_status"], serde_json::json!([0, 0]), "{v}");
    assert_eq!(v["receipts_collected"].as_u64().map(|r| r >= 16), Some(true), "{v}");
    let image = v["image_v2_bytes"].as_u64().expect("size");
    let downloaded = v["update_v2_downloaded_bytes"].as_u64().expect("downloaded");
    assert!(downloaded * 4 < image, "delta update downloaded {downloaded} of {image}");
    assert!(v["update_v2_patched_chunks"].as_u64().is_some_and(|n| n >= 1), "v2's patches were not used: {v}");
    assert_eq!(v["update_v2_downloads"]["manifest_delta"], true, "{v}");
    assert!(v["fetch_v1_2_peers_down"].as_str().is_some_and(|s| s.contains("byte-exact")), "{v}");
}

/// An SPN whose operator gives the token in IONSHARD_SPN_TOKEN writes no
/// token file, and says so (no path to a file that is not there); the API
/// takes that token.
#[test]
fn an_spn_given_its_token_in_the_environment_names_no_token_file() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&d.path().join("logs"));
    let boot = bootstrap(&mut procs, d.path());
    let spn_dir = d.path().join("spn");
    let token = "an-operator-token-of-32-characters";
    let mut child = bin()
        .args(["spn", "--dir", &s(&spn_dir), "--http", "127.0.0.1:0", "--bootstrap", &boot, "--json"])
        .env("IONSHARD_SPN_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spn");
    let v = first_line(&mut child);
    procs.children.push(("spn".into(), child));
    assert!(v["token_file"].is_null(), "{v}");
    assert!(!spn_dir.join("api.token").exists());
    let url = v["http"].as_str().expect("http");
    // The operator's list of tokens: refused with another token, given with this one.
    let other = client::Spn::new(url, Some("another-token-of-32-characters!!".to_string())).expect("client");
    assert!(other.tokens().is_err(), "another token was taken");
    let spn = client::Spn::new(url, Some(token.to_string())).expect("client");
    spn.tokens().expect("the API takes the token from the environment");
}
