//! OTA end to end with real libp2p nodes on 127.0.0.1, as tasks of this test:
//! a bootstrap, 8 peers with redb stores, an SPN, and a device fetcher.

use std::path::Path;
use std::time::{Duration, Instant};

use net::Client;
use ota::meta::{self, Root};
use ota::{Bundle, FetchOptions};

use common::*;

/// Publish `bytes` as acme/router VERSION (registering the vendor first);
/// returns the bundle and the root.
async fn publish(net: &Net, dir: &Path, bytes: &[u8], version: &str, v: &Vendor) -> (Bundle, Root) {
    match net.spn.register_vendor(&v.name, &v.roots) {
        Ok(_) | Err(spn::Error::Conflict(_)) => {}
        Err(e) => panic!("register: {e}"),
    }
    let res = object(net, dir, "acme", "router", bytes).await;
    let signed = v.release(&res, "router", version, &["r1"], &v.signers(1));
    (net.spn.add_release(signed).expect("release kept"), v.root.clone())
}

async fn fetch(client: &Client, bundle: &Bundle, root: &Root, out: &Path) -> ota::Result<ota::FetchReport> {
    fetch_asking(client, bundle, root, out, None).await
}

/// The same, asking `from` for the current placement when a shard's holders fail.
async fn fetch_asking(
    client: &Client,
    bundle: &Bundle,
    root: &Root,
    out: &Path,
    from: Option<std::sync::Arc<dyn client::PlacementSource>>,
) -> ota::Result<ota::FetchReport> {
    let policy = meta::Policy { product: Some("router"), hardware: Some("r1"), installed: None, now: now() };
    let release = meta::verify_release(root, bundle.release.as_bytes(), &policy)?;
    let key = meta::read_key(&release, None)?;
    let mut opts = FetchOptions::new(out.to_path_buf());
    opts.min_late = Duration::from_secs(2);
    // At most two windows in flight, so what a peer is asked before its
    // first answer is checked stays small (the lying peer's test counts it).
    opts.ahead = 2;
    opts.placement_from = from;
    ota::fetch(
        client,
        &bundle.manifest_bytes()?[..],
        bundle.placement.clone(),
        &release,
        key,
        &opts,
        std::sync::Arc::new(client::Hidden),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_two_lost_peers_and_names_chunks_when_three_are_lost() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    let img = image(20 << 20, 7); // 3 segments of 8 MiB, 6+2
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    assert_eq!(bundle.placement.peers.len(), 8, "one object over the 8 peers");
    let device = device(&net).await;

    let out = dir.path().join("a.img");
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    assert_eq!(r.rebuilt_ranges, 0);
    assert!(r.downloaded_bytes < img.len() as u64 * 11 / 10, "{} bytes downloaded", r.downloaded_bytes);

    // Two peers gone: rebuilt from parity, byte-exact.
    for p in &net.peers[..2] {
        p.client.shutdown().await;
    }
    let out = dir.path().join("b.img");
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch with 2 peers down");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    assert!(r.rebuilt_ranges > 0);
    assert_eq!(r.dropped.len(), 2, "{:?}", r.dropped);

    // A third: no segment can be rebuilt; the error names the chunks; no image appears.
    net.peers[2].client.shutdown().await;
    let out = dir.path().join("c.img");
    let e = fetch(&device.client, &bundle, &root, &out).await.expect_err("3 of 8 lost with 6+2");
    let msg = e.to_string();
    assert!(msg.contains("cannot rebuild segment") && msg.contains("needed by chunks"), "{msg}");
    assert!(!out.exists());
    drop(net.spn_node.handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_peer_is_caught_named_and_not_asked_again() {
    // Peer 7 has no address of its own: puts and ranges go through the relay.
    use Kind::*;
    let net = network_of(&[Honest, Honest, Honest, Liar, Honest, Honest, Honest, Relayed]).await;
    let liar = net.peers[3].client.peer_id().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    let img = image(20 << 20, 9);
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let device = device(&net).await;
    let out = dir.path().join("a.img");
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch succeeds from the others");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    let d = r.dropped.iter().find(|d| d.peer == liar).expect("liar named");
    assert!(d.lied && d.reason.contains("fail verification"), "{d:?}");
    let used = r.peers_used.iter().find(|u| u.peer == liar).expect("liar answered");
    // The requests of the windows in flight are out together; a window can
    // span two segments with a shard of the liar in each: at most those are
    // answered before the first answer is found false, none after.
    let in_flight = 2 * r.most_ahead as u64;
    assert!(r.most_ahead >= 1 && used.answers <= in_flight, "asked again after lying: {} answers", used.answers);
    assert!(r.rebuilt_ranges > 0);
    for p in &net.peers {
        p.handle.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_puts_are_retried_elsewhere_or_named() {
    use Kind::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    let img = image(9 << 20, 11);
    // 9 peers, one refusing: every shard still lands on a peer that signs for it.
    let net = network_of(&[Honest, Honest, Untrusting, Honest, Honest, Honest, Honest, Honest, Honest]).await;
    let refuser = net.peers[2].client.peer_id().to_string();
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    assert!(!bundle.placement.peers.contains(&refuser), "shards placed on a peer that refused them");
    let device = device(&net).await;
    let out = dir.path().join("a.img");
    fetch(&device.client, &bundle, &root, &out).await.expect("fetch");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    // 8 peers, one refusing, 6+2 needs 8: the publish fails naming the shards and why.
    let net = network_of(&[Honest, Honest, Honest, Untrusting, Honest, Honest, Honest, Honest]).await;
    let path = dir.path().join("img");
    std::fs::write(&path, &img).expect("image");
    let e = net.spn.publish_file(&path, "acme", "router", 6, 2).await.expect_err("cannot place");
    let msg = e.to_string();
    assert!(msg.contains("could not be placed") && msg.contains("not a trusted SPN"), "{msg}");
    // What the failed job had stored is deleted again.
    for p in &net.peers {
        let (shards, bytes, _) = net.spn_node.client.usage(p.client.peer_id()).await.expect("usage");
        assert_eq!((shards, bytes), (0, 0), "a failed publish left shards on {}", p.client.peer_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spn_state_survives_a_restart() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    let img = image(3 << 20, 21);
    let (bundle, _root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let peers_before = net.spn.peers().expect("peers").len();
    let spn_dir = net.spn_node.dir.join("spn");
    // Stop it: the server and the last handle go, the database closes.
    let Net { spn, spn_node, bootstrap: _b, peers: _p, server, .. } = net;
    let client = spn_node.client.clone();
    server.abort();
    drop(spn);
    let cfg = |http: &str| spn::Config::new(spn_dir.clone(), http.parse().expect("addr"), "t".into());
    // The aborted server lets go of the state a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spn = loop {
        match spn::Spn::start(cfg("127.0.0.1:0"), client.clone()).await {
            Ok((s, _, _)) => break s,
            Err(spn::Error::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    assert_eq!(spn.peers().expect("peers").len(), peers_before, "peer table lost");
    // The job that published v1 is still there, done.
    let job = spn.job(1).expect("job").expect("job 1 kept");
    assert_eq!(job.state, spn::JobState::Done);
    // The object is still known: a release naming it is accepted, with its placement.
    let again = spn.add_release(bundle.release.clone()).expect("object known after restart");
    assert_eq!(again.placement, bundle.placement);
    drop(spn_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_is_cut_off_and_its_ranges_rebuilt_from_others() {
    use Kind::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    // 3 segments: with the assignment turning each segment, every peer holds a data shard somewhere.
    let img = image(20 << 20, 31);
    let net = network_of(&[Honest, Honest, Honest, Honest, Slow, Honest, Honest, Honest]).await;
    let slow = net.peers[4].client.peer_id().to_string();
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let device = device(&net).await;
    let out = dir.path().join("a.img");
    let t = Instant::now();
    // min_late is 2 s here: a peer 12 s late is given up on (at 8 s before any answer
    // time is known, then at a few times the median) and rebuilt around.
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch");
    assert!(t.elapsed() < Duration::from_secs(11), "waited {:?} for the slow peer", t.elapsed());
    assert_eq!(std::fs::read(&out).expect("image"), img);
    let d = r.dropped.iter().find(|d| d.peer == slow).expect("slow peer set aside");
    assert!(d.reason.contains("late") && !d.lied, "{d:?}");
    assert!(r.rebuilt_ranges > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_late_once_after_answering_is_asked_again_not_rebuilt_around() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    // One peer holds its second answer 12 s (a peer is a task of this
    // test, and a held answer holds one of its two threads: one at a
    // time). 5 segments, the assignment turning each, give every peer
    // more than one data shard to answer for.
    use Kind::*;
    let img = image(40 << 20, 32);
    let net = network_of(&[Honest, Honest, Honest, StallsOnce, Honest, Honest, Honest, Honest]).await;
    let stalls = net.peers[3].client.peer_id().to_string();
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let device = device(&net).await;
    let out = dir.path().join("a.img");
    let t = Instant::now();
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    // Each late answer was asked again and came at once: no peer set
    // aside, nothing rebuilt from other shards (ten times the bytes).
    assert!(r.dropped.is_empty(), "{:?}", r.dropped);
    assert_eq!(r.rebuilt_ranges, 0);
    let used = r.peers_used.iter().find(|u| u.peer == stalls).expect("it served");
    assert!(used.answers >= 2, "its second answer was the held one: {used:?}");
    assert!(t.elapsed() < Duration::from_secs(11), "waited {:?} for the held answer", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_an_old_bundle_finds_the_shards_repair_moved_by_asking_where_the_bundle_says() {
    // 12 peers, one segment of 6+2: 4 spares to repair onto.
    let net = network_with(&[Kind::Honest; 12], |c| {
        c.durability = spn::Settings::quick(Duration::from_secs(3));
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Vendor::new("acme", 1, 1);
    let img = image(4 << 20, 17);
    let (old, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    assert_eq!(old.format, ota::BUNDLE_FORMAT);
    assert_eq!(old.placement_from.as_deref(), Some("/v1/releases/router@1.0/placement"));
    let holders: Vec<String> = old.placement.peers.clone();
    assert_eq!(holders.len(), 8, "one segment on 8 peers");
    // Two holders leave for good, are repaired away, then two more: the
    // old bundle's placement now names 4 live holders, fewer than k = 6.
    let manifest = serde_json::from_str::<meta::Signed<meta::Release>>(&old.release).expect("release").signed.manifest;
    for round in 0..2 {
        for h in &holders[round * 2..round * 2 + 2] {
            let p = net.peers.iter().find(|p| p.peer_id().to_string() == *h).expect("a holder");
            p.client.shutdown().await;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let d = net.spn.durability(Some(&manifest)).expect("report");
            let (ok, lost) = (d.objects[0].lowest_healthy, d.peers_lost);
            if ok == 8 && lost == 2 * (round as u64 + 1) {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: not repaired in 90 s: {d:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let device = device(&net).await;
    // With its placement only, the old bundle cannot be fetched...
    let e = fetch(&device.client, &old, &root, &dir.path().join("stale.img")).await.expect_err("4 of 8 holders gone");
    println!("with the old placement only: {e}");
    // ... asking where it says, it is.
    let spn = client::Spn::new(&format!("http://{}", net.http), None).expect("url");
    let from = old.placement_from.clone().expect("placement_from");
    let source: std::sync::Arc<dyn client::PlacementSource> = std::sync::Arc::new(client::PlacementAt::new(spn, from));
    let out = dir.path().join("fresh.img");
    fetch_asking(&device.client, &old, &root, &out, Some(source)).await.expect("fetched with the current placement");
    assert!(std::fs::read(&out).expect("image") == img, "the image differs");
}
