//! Node processes on loopback: kill -9 of a peer in the middle of a stream
//! of puts, then a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chunker::Cid;
use net::{Config, Keypair, Multiaddr, PeerId, Role};
use serde_json::Value;

fn spawn_node(args: &[&str], dir: &Path) -> (Child, Value) {
    let mut node = Command::new(env!("CARGO_BIN_EXE_ionshard"));
    for k in harness::procs::ENV_DEFAULTS {
        node.env_remove(k);
    }
    let mut child = node
        .arg("node")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("first line");
    let v: Value = serde_json::from_str(&line).expect("node prints one JSON line");
    (child, v)
}

fn shard(i: u64) -> (Cid, Vec<u8>) {
    let mut v = vec![0u8; 100_000 + (i as usize * 7919) % 300_000];
    blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut v);
    (Cid::of_raw(&v), v)
}

async fn reach(client: &net::Client, peer: PeerId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.find_peer(peer).await.map(|a| a.is_empty()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "peer {peer} not found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_peer_during_puts_then_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut boot, bv) =
        spawn_node(&["--role", "bootstrap", "--listen", "/ip4/127.0.0.1/tcp/0"], &tmp.path().join("boot"));
    let boot_addr = bv["listen"][0].as_str().expect("addr").to_string();
    let client_key = Keypair::generate_ed25519();
    let client_id = client_key.public().to_peer_id().to_string();
    let peer_dir = tmp.path().join("peer");
    let peer_args =
        ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", &boot_addr, "--trust", &client_id, "--capacity", "1GiB"];
    let (mut peer, pv) = spawn_node(&peer_args, &peer_dir);
    let peer_id: PeerId = pv["peer_id"].as_str().expect("id").parse().expect("peer id");

    let cfg = Config {
        role: Role::Client,
        bootstrap: vec![boot_addr.parse::<Multiaddr>().expect("addr")],
        ..Config::default()
    };
    let (client, _h) = net::start(cfg, client_key, None).await.expect("client");
    reach(&client, peer_id).await;
    let mut receipts = Vec::new();
    let mut attempted = Vec::new();
    for i in 0..400u64 {
        let (cid, bytes) = shard(i);
        attempted.push(cid);
        if i == 25 {
            // kill -9 while this put is on its way: it may land or not, never half.
            let c = client.clone();
            let inflight = tokio::spawn(async move { c.put_shard(peer_id, cid, bytes, None).await });
            tokio::time::sleep(Duration::from_millis(3)).await;
            peer.kill().expect("kill -9");
            peer.wait().expect("reaped");
            let _ = inflight.await;
            break;
        }
        let r = client.put_shard(peer_id, cid, bytes, None).await.expect("put");
        receipts.push(r);
    }
    assert_eq!(receipts.len(), 25);

    // Restart on the same directory: every receipted shard is there and verified.
    let (mut peer, pv2) = spawn_node(&peer_args, &peer_dir);
    assert_eq!(pv2["peer_id"], pv["peer_id"], "identity kept across restarts");
    let cids: Vec<Cid> = receipts.iter().map(|r| r.cid).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let have = loop {
        match client.has_many(peer_id, cids.clone()).await {
            Ok(h) => break h,
            Err(e) => {
                assert!(Instant::now() < deadline, "restarted peer unreachable: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(have.iter().all(|h| *h), "a receipted shard is missing after the restart");
    for r in &receipts {
        r.verify().expect("receipt");
        let got = client.get_shard(peer_id, r.cid).await.expect("get after restart");
        assert_eq!(got.len() as u64, r.size);
    }
    // Stop it cleanly (SIGTERM) and look inside: nothing partial, nothing unknown.
    Command::new("kill").arg("-TERM").arg(peer.id().to_string()).status().expect("kill -TERM");
    peer.wait().expect("stopped");
    let (s, _) = store::Store::open(peer_dir.join("store"), store::Config::default()).expect("store");
    let listed = s.list().expect("list");
    for (cid, _) in &listed {
        assert!(attempted.contains(cid), "a shard nobody put is listed");
        s.get(cid).expect("listed shard verifies");
    }
    for c in &cids {
        assert!(listed.iter().any(|(l, _)| l == c));
    }
    assert_eq!(std::fs::read_dir(peer_dir.join("store/tmp")).expect("tmp").count(), 0);
    boot.kill().expect("kill boot");
    let _ = boot.wait();
}
