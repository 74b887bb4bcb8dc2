//! Put and get throughput between two nodes over loopback, TCP and QUIC:
//! `cargo run --release -p ionshard-benches --example net`.
//!
//! A bootstrap, one peer with a real store (in a temporary directory) and a
//! client, all in this process; 8 requests in flight; median of 3 rounds.

use std::time::{Duration, Instant};

use chunker::Cid;
use futures::StreamExt;
use net::{Client, Config, Keypair, Multiaddr, PeerId, Role};

const IN_FLIGHT: usize = 8;

fn shards(n: usize, len: usize, seed: u64) -> Vec<(Cid, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut v = vec![0u8; len];
            blake3::Hasher::new().update(&(seed + i as u64).to_le_bytes()).finalize_xof().fill(&mut v);
            (Cid::of_raw(&v), v)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn setup(listen: &str) -> (Client, PeerId, tempfile::TempDir) {
    let bk = Keypair::generate_ed25519();
    let listen: Multiaddr = listen.parse().expect("addr");
    let (boot, _) =
        net::start(Config { role: Role::Bootstrap, listen: vec![listen.clone()], ..Config::default() }, bk, None)
            .await
            .expect("boot");
    let baddr = boot
        .dial_addrs(std::slice::from_ref(&listen), Duration::from_secs(5))
        .await
        .first()
        .cloned()
        .expect("the bootstrap node listens within 5 s");
    std::mem::forget(boot);
    let ck = Keypair::generate_ed25519();
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = store::Store::open(dir.path(), store::Config::default().with_capacity(64 << 30)).expect("store");
    let cfg = Config {
        role: Role::Peer,
        listen: vec![listen],
        bootstrap: vec![baddr.clone()],
        trust: vec![ck.public().to_peer_id()],
        ..Config::default()
    };
    let (peer, _) = net::start(cfg, Keypair::generate_ed25519(), Some(s)).await.expect("peer");
    let pid = peer.peer_id();
    std::mem::forget(peer);
    let (client, _) = net::start(Config { role: Role::Client, bootstrap: vec![baddr], ..Config::default() }, ck, None)
        .await
        .expect("client");
    for _ in 0..200 {
        if client.find_peer(pid).await.is_ok_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (client, pid, dir)
}

async fn round(client: &Client, peer: PeerId, len: usize, total: usize, seed: u64) -> (f64, f64, f64) {
    let n = (total / len).max(8);
    let set = shards(n, len, seed);
    let bytes = (n * len) as f64;
    let t = Instant::now();
    futures::stream::iter(set.iter().cloned())
        .map(|(cid, b)| async move { client.put_shard(peer, cid, b, None).await.expect("put") })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let put = bytes / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    futures::stream::iter(set.iter())
        .map(|(cid, _)| async move { client.get_shard(peer, *cid).await.expect("get").len() })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let get = bytes / t.elapsed().as_secs_f64() / 1e6;
    // 64 KiB verified ranges from the middle of each shard.
    let r = (len as u64 / 2).saturating_sub(32 * 1024)..(len as u64 / 2 + 32 * 1024).min(len as u64);
    let rlen = (r.end - r.start) as f64;
    let t = Instant::now();
    futures::stream::iter(set.iter())
        .map(|(cid, _)| {
            let r = r.clone();
            async move { client.get_ranges(peer, *cid, len as u64, vec![r]).await.expect("ranges").len() }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let ranges = rlen * n as f64 / t.elapsed().as_secs_f64() / 1e6;
    (put, get, ranges)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    println!("transport  shard    put MB/s  get MB/s  64KiB-range MB/s   (median of 3, {IN_FLIGHT} in flight)");
    for (name, listen) in [("tcp", "/ip4/127.0.0.1/tcp/0"), ("quic", "/ip4/127.0.0.1/udp/0/quic-v1")] {
        let (client, peer, _dir) = setup(listen).await;
        for (label, len) in [("100KiB", 100 * 1024), ("1MiB", 1 << 20)] {
            let mut puts = Vec::new();
            let mut gets = Vec::new();
            let mut rs = Vec::new();
            for i in 0..3u64 {
                let (p, g, r) = round(&client, peer, len, 128 << 20, i * 1_000_000 + len as u64).await;
                puts.push(p);
                gets.push(g);
                rs.push(r);
            }
            println!("{name:9}  {label:7}  {:8.0}  {:8.0}  {:16.0}", median(puts), median(gets), median(rs));
        }
    }
}
