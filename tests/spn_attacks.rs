//! Attacks on the OTA path through the SPN, each against a real network on
//! 127.0.0.1 (nodes as tasks, the SPN's real HTTP server), named after the
//! attack. Each failed before the fix it names.

use std::time::Duration;

use common::*;
use ota::meta::{self, Role, Root, Signed, VendorKey, Withdrawal};
use ota::{Device, Installed, Want};

fn want<'a>(hardware: &'a str, newest: bool) -> Want<'a> {
    Want { product: "router", hardware, now: now(), newest, offline: false, skew: 300 }
}

fn image_hash(res: &spn::JobResult) -> String {
    res.blake3.clone()
}

/// Defect 1: `@latest` ignored hardware: a 3.0 for rev-c only locked rev-b
/// devices out of their own newest release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_for_other_hardware_does_not_lock_a_device_out_of_latest() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Vendor::new("acme", 1, 1);
    v.register(&net);
    let a = object(&net, dir.path(), "acme", "router", &image(300_000, 1)).await;
    net.spn.add_release(v.release(&a, "router", "2.0", &["rev-b", "rev-c"], &v.signers(1))).expect("2.0");
    let b = object(&net, dir.path(), "acme", "router", &image(300_000, 2)).await;
    net.spn.add_release(v.release(&b, "router", "3.0", &["rev-c"], &v.signers(1))).expect("3.0");
    let ts = v.timestamp("router", &[("rev-b", "2.0", &image_hash(&a)), ("rev-c", "3.0", &image_hash(&b))], 3600);
    net.spn.add_timestamp(&ts).expect("timestamp");

    let for_b = bundle(&net, "router@latest", Some("rev-b")).await.expect("latest for rev-b");
    assert_eq!(version_of(&for_b), "2.0", "rev-b's newest is 2.0");
    let for_c = bundle(&net, "router@latest", Some("rev-c")).await.expect("latest for rev-c");
    assert_eq!(version_of(&for_c), "3.0");
    // The device still checks, and takes it.
    let state = tempfile::tempdir().expect("state");
    let device = Device::open(state.path()).expect("device");
    let root = meta::load_root(v.root_text().as_bytes()).expect("root");
    let checked = device.check(root, &for_b, &want("rev-b", true)).expect("rev-b device takes 2.0");
    assert_eq!(checked.release.version, "2.0");
    // Hardware nobody released for: not found, not another device's image.
    let (status, _) = bundle(&net, "router@latest", Some("rev-z")).await.expect_err("nothing for rev-z");
    assert_eq!(status, 404);
}

/// Defect 2: the SPN stored releases without checking their signatures: a
/// 2.0 edited to 99.0 with its old signatures froze `@latest` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_edited_to_a_higher_version_with_its_old_signatures_is_refused() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Vendor::new("acme", 3, 2);
    let a = object(&net, dir.path(), "acme", "router", &image(300_000, 3)).await;
    let good = v.release(&a, "router", "2.0", &["r1"], &v.signers(2));
    // Before registration the SPN trusts no root: nothing is kept.
    let (status, body) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&good)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("register"), "{body}");
    v.register(&net);
    let (status, body) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&good)).await;
    assert_eq!(status, 201, "{body}");

    let mut edited: Signed<meta::Release> = serde_json::from_str(&good).expect("release");
    edited.signed.version = "99.0".into();
    let forged = meta::to_json(&edited);
    let (status, body) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&forged)).await;
    assert_eq!(status, 400, "the forged 99.0 was accepted: {body}");
    assert!(body.contains("valid signature"), "{body}");
    // One signature of the two required: refused too.
    let short = v.release(&a, "router", "98.0", &["r1"], &v.signers(1));
    let (status, body) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&short)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(version_of(&bundle(&net, "router@latest", Some("r1")).await.expect("latest")), "2.0");

    // The genuine 99.0 still goes through, and the vendor can take it back.
    let b = object(&net, dir.path(), "acme", "router", &image(300_000, 4)).await;
    let real = v.release(&b, "router", "99.0", &["r1"], &v.signers(2));
    let (status, body) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&real)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(version_of(&bundle(&net, "router@latest", Some("r1")).await.expect("latest")), "99.0");
    let w = Withdrawal {
        vendor: "acme".into(),
        product: "router".into(),
        version: "99.0".into(),
        blake3: b.blake3.clone(),
        issued: now(),
        reason: "bad build".into(),
    };
    // A withdrawal by one key of two is refused; by two, done.
    let one = meta::to_json(&meta::sign_withdrawal(w.clone(), &v.signers(1)));
    let body = serde_json::to_vec(&spn::types::NewWithdrawal { withdrawal: one }).expect("json");
    let (status, _) = http_async(net.http, "POST", "/v1/releases/router@99.0/withdraw", Some("t"), body).await;
    assert_eq!(status, 400);
    let two = meta::to_json(&meta::sign_withdrawal(w, &v.signers(2)));
    let body = serde_json::to_vec(&spn::types::NewWithdrawal { withdrawal: two }).expect("json");
    let (status, text) = http_async(net.http, "POST", "/v1/releases/router@99.0/withdraw", Some("t"), body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(version_of(&bundle(&net, "router@latest", Some("r1")).await.expect("latest")), "2.0");
    let (status, _) = bundle(&net, "router@99.0", None).await.expect_err("withdrawn");
    assert_eq!(status, 410);
    let (status, _) = http_async(net.http, "POST", "/v1/releases", Some("t"), release_body(&real)).await;
    assert_eq!(status, 409, "a withdrawn id cannot come back");
}

fn release_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&spn::types::NewRelease { release: text.to_string() }).expect("json")
}

/// Roots that do not chain to the registered one are refused, and a
/// registered vendor cannot be registered again by someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_does_not_chain_to_the_registered_one_is_refused() {
    let net = network(8, None).await;
    let v = Vendor::new("acme", 3, 2);
    v.register(&net);
    // A thief with new keys of its own: v2 signed only by itself.
    let thief = Vendor::new("acme", 1, 1);
    let mut r2 = thief.root.clone();
    r2.version = 2;
    let forged = spn::types::NewRoot {
        root: meta::to_json(&meta::sign_root(r2.clone(), &thief.signers(1))),
        legacy: Some(meta::to_json(&meta::sign_root(r2.legacy(), &thief.signers(1)))),
    };
    let body = serde_json::to_vec(&spn::types::Roots { roots: vec![forged] }).expect("json");
    let (status, text) = http_async(net.http, "POST", "/v1/vendors/acme/roots", Some("t"), body).await;
    assert_eq!(status, 400, "{text}");
    let body = serde_json::to_vec(&spn::types::Roots { roots: thief.roots.clone() }).expect("json");
    let (status, text) = http_async(net.http, "POST", "/v1/vendors", Some("t"), body).await;
    assert_eq!(status, 409, "registered twice: {text}");
    let (status, text) = http_async(net.http, "GET", "/v1/vendors/acme", None, vec![]).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"root_version\":1"), "{text}");
}

/// Defect 3: an SPN (or anyone in the path) could serve an older release as
/// the newest until it expired. The vendor's timestamp names the newest; a
/// device asking for the newest refuses anything else, a stale timestamp,
/// and an older one than it has seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_spn_withholding_the_newest_release_is_caught_by_the_timestamp() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let v = Vendor::new("acme", 1, 1);
    v.register(&net);
    let a = object(&net, dir.path(), "acme", "router", &image(300_000, 5)).await;
    net.spn.add_release(v.release(&a, "router", "1.0", &["r1"], &v.signers(1))).expect("1.0");
    // A timestamp that lives 2 s, naming 1.0: what a replayer keeps.
    net.spn.add_timestamp(&v.timestamp("router", &[("r1", "1.0", &a.blake3)], 2)).expect("timestamp");
    let old = bundle(&net, "router@1.0", None).await.expect("1.0 bundle");
    let b = object(&net, dir.path(), "acme", "router", &image(300_000, 6)).await;
    net.spn.add_release(v.release(&b, "router", "1.1", &["r1"], &v.signers(1))).expect("1.1");
    net.spn.add_timestamp(&v.timestamp("router", &[("r1", "1.1", &b.blake3)], 3600)).expect("timestamp");

    let root = || meta::load_root(v.root_text().as_bytes()).expect("root");
    let state = tempfile::tempdir().expect("state");
    let device = Device::open(state.path()).expect("device");
    // The withholding SPN answers `router@latest` with 1.0 (and the current timestamp).
    let withheld = bundle(&net, "router@1.0", None).await.expect("1.0 again");
    let e = device.check(root(), &withheld, &want("r1", true)).expect_err("frozen on 1.0");
    assert!(matches!(e, ota::Error::Frozen { .. }), "{e}");
    // ... or strips the timestamp.
    let mut stripped = withheld.clone();
    stripped.timestamp = None;
    let e = device.check(root(), &stripped, &want("r1", true)).expect_err("no timestamp");
    assert!(matches!(e, ota::Error::NoTimestamp { .. }), "{e}");
    // ... or replays the old bundle with its old timestamp, once it has expired.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let strict = Want { skew: 0, ..want("r1", true) };
    let e = device.check(root(), &old, &strict).expect_err("stale");
    assert!(matches!(e, ota::Error::StaleTimestamp { .. }), "{e}");
    // The honest answer goes through and its timestamp is kept; an older one is then a replay.
    let latest = bundle(&net, "router@latest", Some("r1")).await.expect("latest");
    device.check(root(), &latest, &want("r1", true)).expect("1.1 taken");
    let mut replay = latest.clone();
    replay.timestamp = old.timestamp.clone();
    let lenient = Want { skew: 3600, ..want("r1", false) };
    let e = device.check(root(), &replay, &lenient).expect_err("older timestamp");
    assert!(matches!(e, ota::Error::TimestampRollback { .. }), "{e}");
    // Offline on purpose: no freshness check, and the device says so.
    let off = Want { offline: true, ..want("r1", false) };
    let c = device.check(root(), &stripped, &off).expect("offline");
    assert!(c.unchecked.is_some());
}

/// Defect 4: keys stolen, a bogus 9999 signed and installed, and the device
/// was pinned to it for good. A rotated root that no longer vouches for the
/// installed release resets the rollback floor; the SPN stops serving 9999.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_by_stolen_keys_is_undone_by_rotating_the_root() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = Vendor::new("acme", 3, 2);
    v.register(&net);
    let a = object(&net, dir.path(), "acme", "router", &image(300_000, 7)).await;
    net.spn.add_release(v.release(&a, "router", "2.0", &["r1"], &v.signers(2))).expect("2.0");
    net.spn.add_timestamp(&v.timestamp("router", &[("r1", "2.0", &a.blake3)], 3600)).expect("timestamp");
    // The thief holds keys 0 and 1 (and the vendor's API token).
    let bogus_obj = object(&net, dir.path(), "acme", "router", &image(300_000, 8)).await;
    let stolen = [&v.keys[0], &v.keys[1]];
    net.spn.add_release(v.release(&bogus_obj, "router", "9999", &["r1"], &stolen)).expect("9999 (validly signed)");

    let state = tempfile::tempdir().expect("state");
    let device = Device::open(state.path()).expect("device");
    let root1 = meta::load_root(v.root_text().as_bytes()).expect("root");
    // A device told to install 9999 by id does so.
    let b9999 = bundle(&net, "router@9999", None).await.expect("9999");
    let c = device.check(root1.clone(), &b9999, &want("r1", false)).expect("9999 verifies");
    device
        .record_installed(&Installed::new(&c.release, &b9999.release, state.path().join("img"), now()))
        .expect("record");
    // The vendor's real next release: refused while root v1 stands (rollback).
    let real_obj = object(&net, dir.path(), "acme", "router", &image(300_000, 9)).await;
    let signed_v1 = v.release(&real_obj, "router", "2.1", &["r1"], &v.signers(2));
    let lone = ota::Bundle { release: signed_v1, ..b9999.clone() };
    let e = device.check(root1.clone(), &lone, &want("r1", false)).expect_err("pinned");
    assert!(matches!(e, ota::Error::Rollback { .. }), "{e}");

    // Rotation: keys 0 and 1 out, two new in; signed by the old threshold and the new.
    let (d, e2) = (VendorKey::generate(), VendorKey::generate());
    let mut r2: Root = v.root.clone();
    r2.version = 2;
    r2.keys = [&v.keys[2], &d, &e2].iter().map(|k| (k.id(), k.public_hex())).collect();
    r2.timestamp = Some(Role { threshold: 1, keys: v.root.timestamp.clone().expect("role").keys });
    let signers = [&v.keys[1], &v.keys[2], &d, &e2];
    let new = spn::types::NewRoot {
        root: meta::to_json(&meta::sign_root(r2.clone(), &signers)),
        legacy: Some(meta::to_json(&meta::sign_root(r2.legacy(), &signers))),
    };
    let body = serde_json::to_vec(&spn::types::Roots { roots: vec![new.clone()] }).expect("json");
    let (status, text) = http_async(net.http, "POST", "/v1/vendors/acme/roots", Some("t"), body).await;
    assert_eq!(status, 200, "{text}");
    v.roots.push(new);
    v.root = r2;
    v.keys = vec![VendorKey::from_bytes(d.to_bytes()), VendorKey::from_bytes(e2.to_bytes())];
    // 9999 is no longer served; the real 2.1, signed by the new keys, is.
    assert!(bundle(&net, "router@9999", None).await.is_err(), "the SPN still serves 9999");
    net.spn.add_release(v.release(&real_obj, "router", "2.1", &["r1"], &v.signers(2))).expect("2.1");
    net.spn.add_timestamp(&v.timestamp("router", &[("r1", "2.1", &real_obj.blake3)], 3600)).expect("timestamp");
    let latest = bundle(&net, "router@latest", Some("r1")).await.expect("latest");
    assert_eq!(version_of(&latest), "2.1");
    // The device, still on root v1 and 9999, follows the rotation in the bundle and takes 2.1.
    let c = device.check(root1, &latest, &want("r1", true)).expect("2.1 after the rotation");
    assert_eq!(c.release.version, "2.1");
    assert!(c.floor_reset.as_deref().is_some_and(|r| r.contains("9999")), "{:?}", c.floor_reset);
}

/// Defect 8: the SPN's state (tenant secrets, read keys) and uploads were
/// world-readable; and one API token could do anything for any tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spn_secrets_are_not_world_readable_and_tokens_reach_only_their_tenant() {
    use std::os::unix::fs::PermissionsExt;
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spn_dir = net.spn_node.dir.join("spn");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&spn_dir), 0o700);
    assert_eq!(mode(&spn_dir.join("spn.redb")), 0o600);
    assert_eq!(mode(&spn_dir.join("uploads")), 0o700);

    let v = Vendor::new("acme", 1, 1);
    v.register(&net);
    let obj = object(&net, dir.path(), "acme", "router", &image(200_000, 10)).await;
    let issue = |tenant: &str| {
        let body = serde_json::to_vec(&spn::types::NewToken {
            tenant: tenant.into(),
            label: "test".into(),
            scope: Default::default(),
        });
        (tenant.to_string(), body.expect("json"))
    };
    let mut tokens = std::collections::HashMap::new();
    for (tenant, body) in [issue("acme"), issue("other")] {
        let (status, text) = http_async(net.http, "POST", "/v1/tokens", Some("t"), body).await;
        assert_eq!(status, 201, "{text}");
        let t: spn::types::IssuedToken = serde_json::from_str(&text).expect("token");
        tokens.insert(tenant, t);
    }
    let (acme, other) = (&tokens["acme"], &tokens["other"]);
    // A tenant sees only its own tokens, issues no full token and none for
    // another tenant, cannot read peers, or touch another tenant's objects.
    let (status, text) = http_async(net.http, "GET", "/v1/tokens", Some(&acme.token), vec![]).await;
    assert_eq!(status, 200);
    let listed: spn::types::TokenList = serde_json::from_str(&text).expect("list");
    assert!(listed.tokens.iter().all(|t| t.tenant == "acme") && !listed.tokens.is_empty(), "{text}");
    for (tenant, scope) in [("acme", "full"), ("other", "append")] {
        let body = format!(r#"{{"tenant":"{tenant}","label":"x","scope":"{scope}"}}"#).into_bytes();
        let (status, text) = http_async(net.http, "POST", "/v1/tokens", Some(&acme.token), body).await;
        assert_eq!(status, 403, "{tenant} {scope}: {text}");
    }
    let (status, _) = http_async(net.http, "GET", "/v1/peers", Some(&acme.token), vec![]).await;
    assert_eq!(status, 403);
    let path = format!("/v1/objects/{}", obj.manifest);
    assert_eq!(http_async(net.http, "GET", &path, Some(&acme.token), vec![]).await.0, 200);
    assert_eq!(http_async(net.http, "GET", &path, Some(&other.token), vec![]).await.0, 404);
    let up = "/v1/objects?tenant=acme&product=router2";
    assert_eq!(http_async(net.http, "POST", up, Some(&other.token), b"xyz".to_vec()).await.0, 403);
    let rel = v.release(&obj, "router", "1.0", &["r1"], &v.signers(1));
    assert_eq!(http_async(net.http, "POST", "/v1/releases", Some(&other.token), release_body(&rel)).await.0, 403);
    assert_eq!(http_async(net.http, "POST", "/v1/releases", Some(&acme.token), release_body(&rel)).await.0, 201);
    // Another tenant cannot take over acme's product either.
    let taken = "/v1/objects?tenant=other&product=router";
    let (status, text) = http_async(net.http, "POST", taken, Some(&other.token), b"xyz".to_vec()).await;
    assert_eq!(status, 403, "{text}");
    // Revoked: refused at once.
    let (status, _) = http_async(net.http, "DELETE", &format!("/v1/tokens/{}", acme.id), Some("t"), vec![]).await;
    assert_eq!(status, 204);
    assert_eq!(http_async(net.http, "GET", &path, Some(&acme.token), vec![]).await.0, 401);
}

/// Defect 10: an empty body published a 0-byte object; names `..` were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_upload_and_dot_dot_names_are_refused() {
    let net = network(8, None).await;
    for (path, body, want_text) in [
        ("/v1/objects?tenant=acme&product=router", vec![], "empty"),
        ("/v1/objects?tenant=..&product=router", b"x".to_vec(), "tenant"),
        ("/v1/objects?tenant=acme&product=..", b"x".to_vec(), "product"),
        ("/v1/objects?tenant=acme&product=.hidden", b"x".to_vec(), "product"),
    ] {
        let (status, text) = http_async(net.http, "POST", path, Some("t"), body).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(want_text), "{path}: {text}");
    }
    assert!(net.spn.job(1).expect("job").is_none(), "a job was started");
}

/// Defect 9 (the SPN's side): a peer table that only grows. Peers that never
/// held anything of ours are forgotten after a while; lost holders are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_held_anything_are_forgotten_but_lost_holders_are_kept() {
    let kinds = vec![Kind::Honest; 9];
    let net = network_with(&kinds, |c| c.forget_idle_after = Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 6+2 over 9 peers: one peer holds nothing of a small object.
    object(&net, dir.path(), "acme", "router", &image(100_000, 11)).await;
    let peers = net.spn.peers().expect("peers");
    let idle = peers.iter().find(|p| !p.held).expect("a peer without shards").peer.clone();
    let holder = peers.iter().find(|p| p.held).expect("a holder").peer.clone();
    for p in &net.peers {
        let id = p.client.peer_id().to_string();
        if id == idle || id == holder {
            p.client.shutdown().await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.spn.refresh_peers().await;
    let left: Vec<String> = net.spn.peers().expect("peers").into_iter().map(|p| p.peer).collect();
    assert!(!left.contains(&idle), "a peer that never held anything is still listed");
    assert!(left.contains(&holder), "a lost holder was forgotten");
}
