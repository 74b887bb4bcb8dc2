//! The direct channel (`proto::direct`) between real nodes on loopback:
//! ranges come over it and are verified; a ticket opens one connection,
//! once, for the peer it was given to; a stranger, a forged ticket, a
//! changed frame or a huge one gets a closed connection and nothing else;
//! and a client falls back to libp2p where a peer has no channel.

use std::time::Duration;

use chunker::Cid;
use net::wire::{Code, Request, Response};
use net::{Client, Config, Keypair, Multiaddr, PeerId, Role};
use proto::direct::{self, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEN: usize = 1 << 20;

/// A bootstrap node, a peer with a store (the direct channel on or off),
/// and a client it trusts that has stored `n` shards of 1 MiB on it.
struct Net {
    peer: PeerId,
    client: Client,
    shards: Vec<(Cid, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

async fn net(direct: bool, n: usize) -> Net {
    net_on(direct, n, &["/ip4/127.0.0.1/tcp/0"]).await
}

/// The same, the peer listening on `listens`.
async fn net_on(direct: bool, n: usize, listens: &[&str]) -> Net {
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("addr");
    let bk = Keypair::generate_ed25519();
    let (boot, _) =
        net::start(Config { role: Role::Bootstrap, listen: vec![listen.clone()], ..Config::default() }, bk, None)
            .await
            .expect("bootstrap");
    let baddr = boot
        .dial_addrs(std::slice::from_ref(&listen), Duration::from_secs(5))
        .await
        .first()
        .cloned()
        .expect("the bootstrap node listens within 5 s");
    std::mem::forget(boot);
    let ck = Keypair::generate_ed25519();
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = store::Store::open(dir.path(), store::Config::default()).expect("store");
    let cfg = Config {
        role: Role::Peer,
        listen: listens.iter().map(|a| a.parse().expect("addr")).collect(),
        bootstrap: vec![baddr.clone()],
        trust: vec![ck.public().to_peer_id()],
        direct,
        ..Config::default()
    };
    let (peer, _) = net::start(cfg, Keypair::generate_ed25519(), Some(s)).await.expect("peer");
    let pid = peer.peer_id();
    std::mem::forget(peer);
    let (client, _) = net::start(Config { role: Role::Client, bootstrap: vec![baddr], ..Config::default() }, ck, None)
        .await
        .expect("client");
    let mut shards = Vec::new();
    for i in 0..n {
        let mut v = vec![0u8; LEN];
        blake3::Hasher::new().update(&(i as u64).to_le_bytes()).finalize_xof().fill(&mut v);
        let cid = Cid::of_raw(&v);
        // The first put also finds the peer through the DHT (bounded retries inside).
        client.put_shard(pid, cid, v.clone(), None).await.expect("put");
        shards.push((cid, v));
    }
    Net { peer: pid, client, shards, _dir: dir }
}

/// Tickets for `n` connections, asked on libp2p as a client does.
async fn tickets(c: &Client, peer: PeerId, n: u8) -> (u16, [u8; 32], Vec<[u8; 16]>) {
    match c.request(peer, Request::Direct { connections: n }).await.expect("ask") {
        Response::Direct { port, secret, tickets } => (port, secret, tickets),
        other => panic!("{other:?}"),
    }
}

/// Whether the peer closes `tcp` without a byte within five seconds.
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut b)).await, Ok(Ok(0) | Err(_)))
}

async fn send_frame(tcp: &mut TcpStream, sealer: &mut direct::Sealer, kind: Kind, body: &[u8]) {
    let mut b = body.to_vec();
    let (h, t) = sealer.seal(kind, &mut b).expect("seal");
    tcp.write_all(&[h.as_slice(), &b, &t].concat()).await.expect("send");
}

async fn read_frame(tcp: &mut TcpStream, opener: &mut direct::Opener) -> (Kind, Vec<u8>) {
    let mut h = [0u8; direct::HEAD];
    tcp.read_exact(&mut h).await.expect("head");
    let (len, kind) = direct::head(&h, 64 << 20).expect("head parses");
    let mut b = vec![0u8; len];
    tcp.read_exact(&mut b).await.expect("body");
    let n = opener.open(&h, &mut b).expect("opens");
    b.truncate(n);
    (kind, b)
}

async fn connect(port: u16, ticket: &[u8; 16]) -> TcpStream {
    connect_at("127.0.0.1", port, ticket).await
}

async fn connect_at(ip: &str, port: u16, ticket: &[u8; 16]) -> TcpStream {
    let mut tcp = TcpStream::connect((ip, port)).await.expect("connect");
    tcp.write_all(&direct::hello(ticket)).await.expect("hello");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_travel_on_the_direct_channel_verified_and_on_libp2p_where_a_peer_has_none() {
    for direct in [true, false] {
        let n = net(direct, 4).await;
        // The first request asks for tickets (and goes on libp2p); the
        // rest find connections waiting.
        for round in 0..3 {
            for (cid, bytes) in &n.shards {
                let r = (round * 4096) as u64..(LEN / 2 + round * 1000) as u64;
                let got = n.client.get_ranges(n.peer, *cid, LEN as u64, vec![r.clone()]).await.expect("ranges");
                assert_eq!(got, vec![bytes[r.start as usize..r.end as usize].to_vec()], "direct {direct}");
            }
        }
        let t = n.client.traffic();
        if direct {
            // The first range went on libp2p while tickets were asked for
            // beside it; the other eleven came here.
            assert!(t.direct_inbound > 4 * (LEN as u64 / 2), "ranges came on the direct channel: {t:?}");
        } else {
            assert_eq!(t.direct_inbound, 0, "a peer without the channel is asked on libp2p: {t:?}");
        }
    }
}

/// A peer listening on IPv4 and IPv6 serves the channel on both, on one
/// port: a device that reaches it over IPv6 is not sent back to libp2p.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_channel_opens_on_every_ip_the_peer_listens_on() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback (::1)");
        return;
    }
    let n = net_on(true, 1, &["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/0"]).await;
    let (cid, bytes) = n.shards[0].clone();
    let (port, secret, t) = tickets(&n.client, n.peer, 2).await;
    let ask = Request::Ranges { cid, ranges: vec![0..1024] }.encode();
    for (ip, ticket) in ["127.0.0.1", "::1"].into_iter().zip(&t) {
        let mut tcp = connect_at(ip, port, ticket).await;
        let (mut s, mut o) = direct::keys(&secret, ticket, true);
        send_frame(&mut tcp, &mut s, Kind::Request, &ask).await;
        let (kind, proof) = read_frame(&mut tcp, &mut o).await;
        assert_eq!(kind, Kind::Proof, "on {ip}");
        let got = chunker::proof::verify(&cid, LEN as u64, &[0..1024], &proof).expect("the proof verifies");
        assert_eq!(got[0], bytes[..1024], "on {ip}");
    }
}

/// Someone who saw a ticket go by in a hello (it travels in the clear)
/// uses it again: it opened one connection and opens no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_ticket_replayed_on_a_second_connection_is_refused() {
    let n = net(true, 1).await;
    let (cid, bytes) = n.shards[0].clone();
    let (port, secret, t) = tickets(&n.client, n.peer, 1).await;
    let ask = Request::Ranges { cid, ranges: vec![0..1024] }.encode();
    let mut first = connect(port, &t[0]).await;
    let (mut s, mut o) = direct::keys(&secret, &t[0], true);
    send_frame(&mut first, &mut s, Kind::Request, &ask).await;
    let (kind, proof) = read_frame(&mut first, &mut o).await;
    assert_eq!(kind, Kind::Proof);
    let got = chunker::proof::verify(&cid, LEN as u64, &[0..1024], &proof).expect("the proof verifies");
    assert_eq!(got[0], bytes[..1024]);
    // Anything but ranges (a put, even from the trusted client) is refused
    // with a reason, on the same connection.
    let put = Request::Put { cid, expiry: None, pinned: true, bytes: bytes[..1024].to_vec() };
    send_frame(&mut first, &mut s, Kind::Request, &put.encode()).await;
    let (kind, body) = read_frame(&mut first, &mut o).await;
    assert_eq!(kind, Kind::Response);
    let refused = Response::decode(&body, &Default::default()).expect("response");
    assert!(matches!(refused, Response::Error { code: Code::BadRequest, .. }), "{refused:?}");
    // The same ticket again, with the right keys even: closed, unanswered.
    let mut second = connect(port, &t[0]).await;
    let (mut s2, _) = direct::keys(&secret, &t[0], true);
    send_frame(&mut second, &mut s2, Kind::Request, &ask).await;
    assert!(closed(&mut second).await, "a replayed ticket opened a second connection");
}

/// A stranger who connects with no ticket, a forged one, or a real one
/// and frames it cannot seal (it never saw the secret) learns nothing
/// and holds nothing: the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_no_ticket_a_forged_one_or_no_secret_is_dropped() {
    let n = net(true, 1).await;
    let cid = n.shards[0].0;
    let (port, _, t) = tickets(&n.client, n.peer, 2).await;
    let ask = Request::Ranges { cid, ranges: vec![0..1024] }.encode();
    // Not a hello.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.write_all(&[b'G'; direct::HELLO_LEN]).await.expect("send");
    assert!(closed(&mut tcp).await, "garbage hello");
    // A ticket never issued.
    let mut tcp = connect(port, &[7u8; 16]).await;
    send_frame(&mut tcp, &mut direct::keys(&[0; 32], &[7; 16], true).0, Kind::Request, &ask).await;
    assert!(closed(&mut tcp).await, "forged ticket");
    // A real ticket (seen on the wire), without its secret.
    let mut tcp = connect(port, &t[0]).await;
    send_frame(&mut tcp, &mut direct::keys(&[0; 32], &t[0], true).0, Kind::Request, &ask).await;
    assert!(closed(&mut tcp).await, "no secret");
}

/// A man in the middle changes a byte of a frame, or claims a frame far
/// over the limit: the peer ends the connection (before reading a huge
/// body) and answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_oversized_direct_frame_ends_the_connection() {
    let n = net(true, 1).await;
    let (cid, _) = n.shards[0].clone();
    let (port, secret, t) = tickets(&n.client, n.peer, 2).await;
    let mut b = Request::Ranges { cid, ranges: vec![0..1024] }.encode();
    let (h, tag) = direct::keys(&secret, &t[0], true).0.seal(Kind::Request, &mut b).expect("seal");
    b[3] ^= 1;
    let mut tcp = connect(port, &t[0]).await;
    tcp.write_all(&[h.as_slice(), &b, &tag].concat()).await.expect("send");
    assert!(closed(&mut tcp).await, "a changed frame was answered");
    let mut tcp = connect(port, &t[1]).await;
    let mut huge = [0u8; direct::HEAD];
    huge[..4].copy_from_slice(&(1u32 << 30).to_be_bytes());
    tcp.write_all(&huge).await.expect("send");
    assert!(closed(&mut tcp).await, "a 1 GiB request head was not refused at once");
}
