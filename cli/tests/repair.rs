//! Repair survives its SPN: kill -9 of the SPN process in the middle of a
//! repair, then a restart on the same state, every node a real process on
//! its own loopback address.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Per peer (in `n.peers` order): (shards, bytes) it stores, asked of it directly.
fn usage(n: &Network, peers: &[String]) -> Vec<(u64, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cfg = net::Config {
            role: net::Role::Client,
            bootstrap: vec![n.bootstrap.parse().expect("addr")],
            ..net::Config::default()
        };
        let (c, _h) = net::start(cfg, net::Keypair::generate_ed25519(), None).await.expect("client");
        let mut out = Vec::new();
        for p in peers {
            let id: net::PeerId = p.parse().expect("peer id");
            let (shards, bytes, _) = c.usage(id).await.expect("usage");
            out.push((shards, bytes));
        }
        c.shutdown().await;
        out
    })
}

fn durability(url: &str, token: &str) -> Value {
    let (status, body) = http(url, "GET", "/v1/durability", Some(token), b"");
    if status != 200 {
        return Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Wait (at most 30 s) until the peers hold exactly what the SPN placed (a
/// hedged put's surplus copy is deleted at the job's end); the usages.
fn settled(n: &Network) -> Vec<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let u = usage(n, &n.peers);
        let placed = durability(&n.url, &n.token)["stored_bytes"].as_u64().unwrap_or(0);
        if u.iter().map(|x| x.1).sum::<u64>() == placed || Instant::now() > deadline {
            return u;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn lowest(d: &Value) -> u64 {
    d["objects"].as_array().into_iter().flatten().filter_map(|o| o["lowest_healthy"].as_u64()).min().unwrap_or(0)
}

#[test]
fn kill_9_of_the_spn_during_a_repair_then_restart_completes_it_with_nothing_lost_or_counted_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Peers are lost 5 s after their last heartbeat; repair is paced to
    // 3 MiB/s, so that rebuilding a peer's shards takes long enough to be
    // cut short.
    let mut flags = harness::procs::quick_durability(5);
    let rate = flags.iter().position(|f| f == "--repair-rate").expect("a repair rate") + 1;
    flags[rate] = "3MiB".into();
    let mut n = network_with(d, 12, &flags);
    let vendor = vendor(&n, d);
    let img = d.join("v1.img");
    let bytes = image(64 << 20, 71);
    std::fs::write(&img, &bytes).expect("image");
    publish(&n, &vendor, &img, "1.0", &[]);
    let before = settled(&n);
    let total: u64 = before.iter().map(|u| u.1).sum();
    // The peer holding the most leaves for good.
    let (victim, &(lost_shards, lost_bytes)) = before.iter().enumerate().max_by_key(|(_, u)| u.1).expect("peers");
    assert!(lost_shards > 1, "the victim holds {lost_shards} shard(s): too few to cut a repair short");
    n.procs.kill(&format!("peer{victim}"));
    let survivors: Vec<String> =
        n.peers.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, p)| p.clone()).collect();
    // Kill the SPN once some but not all of them are rebuilt.
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let h = durability(&n.url, &n.token);
        let done = h["shards_repaired"].as_u64().unwrap_or(0);
        assert!(done < lost_shards, "the repair finished before the SPN could be killed: {h}");
        if done >= 1 {
            break done;
        }
        assert!(Instant::now() < deadline, "no repair began in 120 s: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    n.procs.kill("spn");
    println!("SPN killed with {at_kill} of {lost_shards} shards rebuilt");
    let mut args = harness::procs::spn_args(harness::household(0), &n.bootstrap, &d.join("spn"));
    args.extend(flags);
    let spn = n.procs.start("spn2", &args);
    n.url = spn["http"].as_str().expect("http").to_string();
    // The repair resumes and completes.
    let deadline = Instant::now() + Duration::from_secs(180);
    let h = loop {
        let h = durability(&n.url, &n.token);
        if h["repair_queue"].as_u64() == Some(0) && lowest(&h) == 8 {
            break h;
        }
        assert!(Instant::now() < deadline, "the repair did not complete after the restart: {h}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Counted once: the lost shards, their bytes.
    assert_eq!(h["shards_repaired"].as_u64(), Some(lost_shards), "{h}");
    assert_eq!(h["bytes_lost"].as_u64(), Some(lost_bytes), "{h}");
    // Stored once: a put the kill cut short is deleted again, so the
    // survivors hold exactly what the network held before.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now: u64 = usage(&n, &survivors).iter().map(|u| u.1).sum();
        if now == total {
            break;
        }
        assert!(now > total.saturating_sub(lost_bytes), "the survivors lost shards: {now} of {total} bytes");
        assert!(Instant::now() < deadline, "the survivors hold {now} bytes, not {total}: a surplus copy stayed");
        std::thread::sleep(Duration::from_millis(500));
    }
    // And a device gets the release, byte-exact.
    let state = d.join("device");
    let out = d.join("fetched.img");
    let o = update(&n, &vendor, &state, &["--release", "router@1.0", "--spn", &n.url, "--out", &s(&out)]);
    json_out(&o, "update");
    assert!(std::fs::read(&out).expect("the image") == bytes, "the fetched image differs");
}

#[test]
fn node_retire_waits_until_its_spn_moved_every_shard_away_and_can_be_taken_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = network_with(d, 9, &harness::procs::quick_durability(3600));
    let vendor = vendor(&n, d);
    let img = d.join("v1.img");
    std::fs::write(&img, image(12 << 20, 72)).expect("image");
    publish(&n, &vendor, &img, "1.0", &[]);
    let before = settled(&n);
    let (victim, &(shards, bytes)) = before.iter().enumerate().max_by_key(|(_, u)| u.0).expect("peers");
    assert!(shards > 0, "no peer holds a shard");
    let node_dir = d.join(format!("peer{victim}"));
    let o = bin()
        .args(["node", "retire", "--dir", &s(&node_dir), "--bootstrap", &n.bootstrap, "--wait", "150s", "--json"])
        .output()
        .expect("retire");
    let v = json_out(&o, "node retire");
    assert_eq!(v["retired"], true, "{v}");
    assert_eq!(v["handed_over_shards"].as_u64(), Some(shards), "{v}");
    assert_eq!(v["handed_over_bytes"].as_u64(), Some(bytes), "{v}");
    assert_eq!(usage(&n, &n.peers[victim..=victim]), vec![(0, 0)], "it holds nothing");
    let h = durability(&n.url, &n.token);
    assert_eq!(lowest(&h), 8, "every segment whole without it: {h}");
    assert_eq!(h["shards_repaired"].as_u64(), Some(shards), "{h}");
    // Taken back: the mark goes.
    let o = bin().args(["node", "retire", "--cancel", "--dir", &s(&node_dir), "--json"]).output().expect("cancel");
    assert_eq!(json_out(&o, "cancel")["retiring"], false);
    assert!(!node_dir.join("retiring").exists());
    // A directory with no node is refused, clearly.
    let o = bin().args(["node", "retire", "--dir", &s(&d.join("nothing")), "--no-wait"]).output().expect("retire");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no identity.key"), "{}", String::from_utf8_lossy(&o.stderr));
}
