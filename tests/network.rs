//! Real nodes on loopback: a bootstrap, peers with stores, a client.

use std::time::{Duration, Instant};

use chunker::Cid;
use net::{Client, Config, Keypair, Multiaddr, PeerId, Role};
use store::Store;

struct Net {
    _net: harness::tasks::Network,
    _root: tempfile::TempDir,
    _client_node: harness::tasks::Node,
    boot_addr: Multiaddr,
    peers: Vec<Client>,
    client: Client,
}

async fn wait_addrs(c: &Client) -> Vec<Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = c.listen_addrs().await.expect("addrs");
        if !a.is_empty() || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tcp0() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")]
}

/// A bootstrap, `direct_peers` peers that listen and `relayed_peers` that
/// do not (reached through the bootstrap's relay), each with `capacity`
/// bytes, trusting the client this returns (the harness, nodes as tasks).
async fn network(direct_peers: usize, relayed_peers: usize, capacity: u64) -> Net {
    let root = tempfile::tempdir().expect("tempdir");
    let client_key = Keypair::generate_ed25519();
    let peer = |listen| harness::tasks::PeerSpec { listen, capacity, ..harness::tasks::PeerSpec::honest() };
    let spec = harness::tasks::Spec {
        peers: (0..direct_peers + relayed_peers).map(|i| peer(i < direct_peers)).collect(),
        households: true,
        spn: false,
        trusted: client_key.clone(),
    };
    let net = harness::tasks::Network::start(root.path(), &spec, |_| {}).await.expect("network");
    let client_node = net.device_as(client_key).await.expect("client");
    let (boot_addr, peers) = (net.boot_addr.clone(), net.peers.iter().map(|p| p.client.clone()).collect());
    let client = client_node.client.clone();
    Net { _net: net, _root: root, _client_node: client_node, boot_addr, peers, client }
}

async fn find_all(client: &Client, peers: &[PeerId], within: Duration) -> Duration {
    let started = Instant::now();
    for p in peers {
        loop {
            match client.find_peer(*p).await {
                Ok(a) if !a.is_empty() => break,
                _ if started.elapsed() > within => panic!("peer {p} not found within {within:?}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    started.elapsed()
}

fn shard(i: u64, len: usize) -> (Cid, Vec<u8>) {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut v);
    (Cid::of_raw(&v), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_peers_found_by_id_store_and_serve_100_shards() {
    let net = network(6, 0, 1 << 30).await;
    let ids: Vec<PeerId> = net.peers.iter().map(Client::peer_id).collect();
    let took = find_all(&net.client, &ids, Duration::from_secs(10)).await;
    println!("all 6 peers found by id in {took:?} (bootstrap {})", net.boot_addr);
    let mut stored = Vec::new();
    for i in 0..100u64 {
        let (cid, bytes) = shard(i, 10_000 + (i as usize * 997) % 200_000);
        let peer = ids[i as usize % ids.len()];
        let receipt = net.client.put_shard(peer, cid, bytes.clone(), None).await.expect("put");
        receipt.verify().expect("receipt verifies against the storing peer's key");
        assert_eq!(receipt.peer, peer);
        stored.push((peer, cid, bytes));
    }
    for (peer, cid, bytes) in &stored {
        let got = net.client.get_shard(*peer, *cid).await.expect("get");
        assert!(got == *bytes);
    }
    // Ranged gets verify against the CID.
    let (peer, cid, bytes) = &stored[7];
    let ranges = vec![100..200, 5_000..9_000];
    let got = net.client.get_ranges(*peer, *cid, bytes.len() as u64, ranges).await.expect("ranges");
    assert_eq!(got[1], bytes[5_000..9_000]);
    net.client.audit(*peer, *cid, bytes.len() as u64, vec![0..1, 8_000..8_100]).await.expect("audit");
    let have = net.client.has_many(*peer, vec![*cid, stored[8].1]).await.expect("has");
    assert_eq!(have, vec![true, stored[8].0 == *peer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_the_peer_keeps_serving() {
    let net = network(1, 0, 300_000).await;
    let peer = net.peers[0].peer_id();
    find_all(&net.client, &[peer], Duration::from_secs(10)).await;
    let (cid, bytes) = shard(1, 200_000);
    net.client.put_shard(peer, cid, bytes.clone(), None).await.expect("put");
    // Over quota.
    let (c2, b2) = shard(2, 200_000);
    let err = net.client.put_shard(peer, c2, b2, None).await.unwrap_err().to_string();
    assert!(err.contains("QuotaExceeded") && err.contains("capacity"), "{err}");
    // Bytes that do not match their CID.
    let (c3, _) = shard(3, 1000);
    let err = net.client.put_shard(peer, c3, vec![0; 1000], None).await.unwrap_err().to_string();
    assert!(err.contains("HashMismatch"), "{err}");
    // A put from an untrusted id.
    let cfg = Config { role: Role::Client, bootstrap: vec![net.boot_addr.clone()], ..Config::default() };
    let (stranger, _) = net::start(cfg, Keypair::generate_ed25519(), None).await.expect("stranger");
    find_all(&stranger, &[peer], Duration::from_secs(10)).await;
    let (c4, b4) = shard(4, 1000);
    let err = stranger.put_shard(peer, c4, b4, None).await.unwrap_err().to_string();
    assert!(err.contains("Untrusted") && err.contains("not a trusted SPN"), "{err}");
    // A shard over the message limit never reaches the store.
    let big = vec![7u8; (64 << 20) + 8192];
    let err = net.client.put_shard(peer, Cid::of_raw(&big), big, None).await.unwrap_err().to_string();
    assert!(err.contains("over the protocol limit"), "{err}");
    // Meanwhile it still serves.
    assert!(net.client.get_shard(peer, cid).await.expect("still serving") == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_listen_address_serves_through_the_relay() {
    let net = network(1, 1, 1 << 30).await;
    let relayed = net.peers[1].peer_id();
    let deadline = Instant::now() + Duration::from_secs(15);
    // Wait until the peer holds a reservation (a circuit listen address).
    loop {
        let addrs = net.peers[1].listen_addrs().await.expect("addrs");
        if addrs.iter().any(|a| a.to_string().contains("p2p-circuit")) {
            break;
        }
        assert!(Instant::now() < deadline, "no relay reservation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    find_all(&net.client, &[relayed], Duration::from_secs(10)).await;
    let (cid, bytes) = shard(9, 300_000);
    let r = net.client.put_shard(relayed, cid, bytes.clone(), None).await.expect("put through relay");
    r.verify().expect("receipt");
    assert!(net.client.get_shard(relayed, cid).await.expect("get through relay") == bytes);
    // The data went through the relay circuit: the connection is relayed.
    assert_eq!(net.client.connection(relayed).await.expect("conn"), Some(true), "not a relayed connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_alters_bytes_is_caught_and_named() {
    let net = network(0, 0, 1 << 30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = Store::open(dir.path(), store::Config::default()).expect("store");
    let cfg = Config {
        role: Role::Peer,
        listen: tcp0(),
        bootstrap: vec![net.boot_addr.clone()],
        trust: vec![net.client.peer_id()],
        ..Config::default()
    };
    let (liar, _) = net::start_with(cfg, Keypair::generate_ed25519(), Some(s), std::sync::Arc::new(common::Liar))
        .await
        .expect("liar");
    let id = liar.peer_id();
    find_all(&net.client, &[id], Duration::from_secs(10)).await;
    let (cid, bytes) = shard(42, 200_000);
    net.client.put_shard(id, cid, bytes.clone(), None).await.expect("put");
    for err in [
        net.client.get_ranges(id, cid, 200_000, vec![10_000..20_000]).await.unwrap_err(),
        net.client.get_shard(id, cid).await.unwrap_err(),
        net.client.audit(id, cid, 200_000, vec![0..100, 150_000..150_100]).await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, net::Error::BadAnswer { .. }), "{text}");
        assert!(text.contains(&id.to_string()), "the liar is named: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_peers_and_two_bootstraps_that_stay_connected() {
    // Two bootstrap nodes, the second told of the first.
    let k1 = Keypair::generate_ed25519();
    let id1 = k1.public().to_peer_id();
    let (b1, _) =
        net::start(Config { role: Role::Bootstrap, listen: tcp0(), ..Config::default() }, k1, None).await.expect("b1");
    let a1 = wait_addrs(&b1).await[0].clone().with_p2p(id1).expect("p2p");
    let k2 = Keypair::generate_ed25519();
    let id2 = k2.public().to_peer_id();
    let cfg = Config { role: Role::Bootstrap, listen: tcp0(), bootstrap: vec![a1.clone()], ..Config::default() };
    let (b2, _) = net::start(cfg, k2, None).await.expect("b2");
    let a2 = wait_addrs(&b2).await[0].clone().with_p2p(id2).expect("p2p");
    // A peer on QUIC only, joining through the second bootstrap; a client through the first.
    let client_key = Keypair::generate_ed25519();
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = Store::open(dir.path(), store::Config::default()).expect("store");
    let cfg = Config {
        role: Role::Peer,
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("quic")],
        bootstrap: vec![a2],
        trust: vec![client_key.public().to_peer_id()],
        ..Config::default()
    };
    let (p, _) = net::start(cfg, Keypair::generate_ed25519(), Some(s)).await.expect("quic peer");
    assert!(wait_addrs(&p).await.iter().any(|a| a.to_string().contains("quic-v1")));
    let cfg = Config { role: Role::Client, bootstrap: vec![a1], ..Config::default() };
    let (client, _) = net::start(cfg, client_key, None).await.expect("client");
    find_all(&client, &[p.peer_id()], Duration::from_secs(10)).await;
    let (cid, bytes) = shard(7, 500_000);
    client.put_shard(p.peer_id(), cid, bytes.clone(), None).await.expect("put over quic");
    assert!(client.get_shard(p.peer_id(), cid).await.expect("get over quic") == bytes);
    // The bootstraps are connected, and still are a while later.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(b1.connection(id2).await.expect("conn"), Some(false), "bootstraps not connected");
    }
}
