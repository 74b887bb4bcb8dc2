//! OTA end to end with real libp2p nodes on 127.0.0.1, as tasks of this test:
//! a bootstrap, 8 peers with redb stores, an SPN, and a device fetcher.

use std::path::Path;
use std::time::{Duration, Instant};

use net::{Client, Config, Keypair, Role};
use ota::meta::{self, KeyWrap, Release, Root, VendorKey};
use ota::{Bundle, FetchOptions};

struct Node {
    client: Client,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct Net {
    bootstrap: Node,
    peers: Vec<Node>,
    spn: spn::Spn,
    spn_node: Node,
    server: tokio::task::JoinHandle<()>,
}

async fn start(
    role: Role,
    listen: bool,
    bootstrap: Vec<net::Multiaddr>,
    trust: Vec<net::PeerId>,
    kind: Kind,
    key: Keypair,
) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = (role == Role::Peer).then(|| {
        store::Store::open(dir.path().join("store"), store::Config::default().with_capacity(1 << 30)).expect("store").0
    });
    let config = Config {
        role,
        listen: if listen { vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")] } else { vec![] },
        bootstrap,
        trust,
        tamper_answers: kind == Kind::Liar,
        delay_answers: (kind == Kind::Slow).then_some(Duration::from_secs(12)),
        ..Config::default()
    };
    let (client, handle) = net::start(config, key, store).await.expect("node starts");
    Node { client, handle, _dir: dir }
}

/// A device: a client node joined through the test network's bootstrap.
async fn device(net: &Net) -> Node {
    start(Role::Client, false, vec![addr_of(&net.bootstrap).await], vec![], Kind::Honest, Keypair::generate_ed25519())
        .await
}

async fn addr_of(n: &Node) -> net::Multiaddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = n.client.listen_addrs().await.expect("addrs").first() {
            return format!("{a}/p2p/{}", n.client.peer_id()).parse().expect("addr");
        }
        assert!(Instant::now() < deadline, "no listen address");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How one peer of a test network behaves.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Honest,
    /// Flips a byte in every answer.
    Liar,
    /// No listen address: reached only through the bootstrap's relay.
    Relayed,
    /// Does not trust the SPN: refuses its puts.
    Untrusting,
    /// Answers ranges only after 12 s.
    Slow,
}

async fn network(peers: usize, liar: Option<usize>) -> Net {
    network_of(&(0..peers).map(|i| if liar == Some(i) { Kind::Liar } else { Kind::Honest }).collect::<Vec<_>>()).await
}

async fn network_of(kinds: &[Kind]) -> Net {
    let peers = kinds.len();
    let bootstrap = start(Role::Bootstrap, true, vec![], vec![], Kind::Honest, Keypair::generate_ed25519()).await;
    let b = addr_of(&bootstrap).await;
    let spn_key = Keypair::generate_ed25519();
    let spn_id = spn_key.public().to_peer_id();
    let mut ps = Vec::new();
    for k in kinds {
        let trust = if *k == Kind::Untrusting { vec![] } else { vec![spn_id] };
        let p = start(Role::Peer, *k != Kind::Relayed, vec![b.clone()], trust, *k, Keypair::generate_ed25519());
        ps.push(p.await);
    }
    let spn_node = start(Role::Client, false, vec![b.clone()], vec![], Kind::Honest, spn_key).await;
    let dir = spn_node._dir.path().join("spn");
    let cfg = spn::Config {
        dir,
        http: "127.0.0.1:0".parse().expect("addr"),
        token: "t".into(),
        bootstrap: vec![b.to_string()],
        max_upload: 1 << 30,
    };
    let (spn, _addr, server) = spn::Spn::start(cfg, spn_node.client.clone()).await.expect("spn starts");
    // Every peer found and asked for its free space, within 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        spn.refresh_peers().await;
        let live = spn.peers().expect("peers").len();
        if live >= peers {
            break;
        }
        assert!(Instant::now() < deadline, "SPN sees {live} of {peers} peers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Net { bootstrap, peers: ps, spn, spn_node, server }
}

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Publish `bytes` as acme/router VERSION; returns the bundle and the root.
async fn publish(net: &Net, dir: &Path, bytes: &[u8], version: &str, key: &VendorKey) -> (Bundle, Root) {
    let path = dir.join(format!("image-{version}"));
    std::fs::write(&path, bytes).expect("write image");
    let res = net.spn.publish_file(&path, "acme", "router", 6, 2).await.expect("publish");
    let root = Root {
        vendor: "acme".into(),
        version: 1,
        expires: now() + 3600,
        threshold: 1,
        keys: [(key.id(), key.public_hex())].into_iter().collect(),
    };
    let release = Release {
        vendor: "acme".into(),
        product: "router".into(),
        hardware: vec!["r1".into()],
        version: version.into(),
        length: res.length,
        blake3: res.blake3.clone(),
        manifest: res.manifest.clone(),
        read_key: KeyWrap::Clear(res.read_key.clone()),
        issued: now(),
        expires: now() + 3600,
    };
    let signed = meta::to_json(&meta::sign_release(release, &[key]));
    (net.spn.add_release(signed, vec![]).expect("release kept"), root)
}

async fn fetch(client: &Client, bundle: &Bundle, root: &Root, out: &Path) -> ota::Result<ota::FetchReport> {
    let policy = meta::Policy { product: Some("router"), hardware: Some("r1"), installed: None, now: now() };
    let release = meta::verify_release(root, bundle.release.as_bytes(), &policy)?;
    let key = meta::read_key(&release, None)?;
    let mut opts = FetchOptions::new(out.to_path_buf());
    opts.min_late = Duration::from_secs(2);
    ota::fetch(client, &bundle.manifest_bytes()?[..], bundle.placement.clone(), &release, key, &opts, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_two_lost_peers_and_names_chunks_when_three_are_lost() {
    let net = network(8, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = VendorKey::generate();
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
    let key = VendorKey::generate();
    let img = image(20 << 20, 9);
    let (bundle, root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let device = device(&net).await;
    let out = dir.path().join("a.img");
    let r = fetch(&device.client, &bundle, &root, &out).await.expect("fetch succeeds from the others");
    assert_eq!(std::fs::read(&out).expect("image"), img);
    let d = r.dropped.iter().find(|d| d.peer == liar).expect("liar named");
    assert!(d.lied && d.reason.contains("fail verification"), "{d:?}");
    let used = r.peers_used.iter().find(|u| u.peer == liar).expect("liar answered once");
    assert_eq!(used.answers, 1, "asked again after lying");
    assert!(r.rebuilt_ranges > 0);
    for p in &net.peers {
        p.handle.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_puts_are_retried_elsewhere_or_named() {
    use Kind::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = VendorKey::generate();
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
    let key = VendorKey::generate();
    let img = image(3 << 20, 21);
    let (bundle, _root) = publish(&net, dir.path(), &img, "1.0", &key).await;
    let peers_before = net.spn.peers().expect("peers").len();
    let spn_dir = net.spn_node._dir.path().join("spn");
    // Stop it: the server and the last handle go, the database closes.
    let Net { spn, spn_node, bootstrap: _b, peers: _p, server } = net;
    let client = spn_node.client.clone();
    server.abort();
    drop(spn);
    let cfg = |http: &str| spn::Config {
        dir: spn_dir.clone(),
        http: http.parse().expect("addr"),
        token: "t".into(),
        bootstrap: vec![],
        max_upload: 1 << 30,
    };
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
    assert_eq!(job.state, "done");
    // The object is still known: a release naming it is accepted, with its placement.
    let again = spn.add_release(bundle.release.clone(), vec![]).expect("object known after restart");
    assert_eq!(again.placement, bundle.placement);
    drop(spn_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_is_cut_off_and_its_ranges_rebuilt_from_others() {
    use Kind::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = VendorKey::generate();
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
