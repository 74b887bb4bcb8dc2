//! A node dials TCP from the port it listens on (libp2p's port reuse, for
//! hole punching), bound on every address (`0.0.0.0:PORT`). Another
//! program listening on that port number at another address makes that
//! bind fail (`EADDRINUSE`): the node must still reach its bootstrap node.
//! On a test machine, where every network shares the loopback addresses,
//! this left a peer that no SPN ever found.

use std::time::Duration;

use net::{Config, Keypair, Multiaddr, Role};

/// A bootstrap node on 127.0.0.1 (its handle, kept while the test runs),
/// its peer id and the address to dial it at.
async fn bootstrap() -> (net::Client, net::PeerId, Multiaddr) {
    let bk = Keypair::generate_ed25519();
    let bid = bk.public().to_peer_id();
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("addr");
    let (boot, _) =
        net::start(Config { role: Role::Bootstrap, listen: vec![listen.clone()], ..Config::default() }, bk, None)
            .await
            .expect("bootstrap");
    let baddr = boot.dial_addrs(&[listen], Duration::from_secs(5)).await;
    let baddr = baddr.first().cloned().expect("the bootstrap node listens within 5 s");
    (boot, bid, baddr)
}

/// Whether a peer listening on `listen` reaches the bootstrap node `bid`
/// at `baddr` within 10 s.
async fn peer_reaches(listen: String, baddr: Multiaddr, bid: net::PeerId) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = store::Store::open(dir.path(), store::Config::default()).expect("store");
    let listen: Multiaddr = listen.parse().expect("addr");
    let cfg = Config { role: Role::Peer, listen: vec![listen], bootstrap: vec![baddr], ..Config::default() };
    let (peer, _) = net::start(cfg, Keypair::generate_ed25519(), Some(s)).await.expect("peer");
    for _ in 0..100 {
        if peer.connection(bid).await.expect("connection").is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_port_number_taken_at_another_address_does_not_cut_a_node_off() {
    let (_boot, bid, baddr) = bootstrap().await;

    // Someone else's server on port P of another loopback address (the
    // standard library sets SO_REUSEADDR, not SO_REUSEPORT).
    let blocker = std::net::TcpListener::bind("127.0.0.61:0").expect("a listener on 127.0.0.61");
    let port = blocker.local_addr().expect("its address").port();
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    probe.set_reuse_address(true).expect("reuse address");
    probe.set_reuse_port(true).expect("reuse port");
    let wildcard: std::net::SocketAddr = format!("0.0.0.0:{port}").parse().expect("addr");
    assert!(
        probe.bind(&wildcard.into()).is_err(),
        "the kernel lets a dial take 0.0.0.0:{port}: this test shows nothing"
    );
    drop(probe);

    // A peer listening on that port number at its own address.
    let connected = peer_reaches(format!("/ip4/127.0.0.62/tcp/{port}"), baddr, bid).await;
    assert!(connected, "the peer on 127.0.0.62:{port} did not reach the bootstrap node within 10 s");
    drop(blocker);
}

/// The dial from `0.0.0.0:P` to another node's `127.0.0.1:P` leaves from
/// `127.0.0.1:P`: the kernel connects the socket to itself, and every
/// handshake failed ("input error"). CI saw a peer cut off that way.
#[tokio::test]
async fn a_peer_whose_port_number_is_its_bootstrap_nodes_does_not_dial_itself() {
    let (_boot, bid, baddr) = bootstrap().await;
    let port = baddr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port");

    let connected = peer_reaches(format!("/ip4/127.0.0.63/tcp/{port}"), baddr, bid).await;
    assert!(
        connected,
        "the peer on 127.0.0.63:{port} did not reach the bootstrap node on 127.0.0.1:{port} within 10 s"
    );
}
