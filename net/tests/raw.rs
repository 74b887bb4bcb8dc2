//! Malformed and truncated messages from a raw client: a clear refusal where
//! the frame allows one, a closed stream where it does not, and the node
//! keeps serving.

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, SwarmBuilder, noise, request_response, tcp, yamux};
use net::wire::{Code, Limits, Request, Response};
use net::{Config, Keypair, Role};

/// Sends whatever bytes it is given, frame header included; reads one frame back.
#[derive(Debug, Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let mut v = Vec::new();
        io.take(u64::from(u32::from_be_bytes(len))).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&r).await?;
        io.flush().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&r).await
    }
}

/// A libp2p node speaking the shard protocol with raw bytes (`support`:
/// asking, answering or both), each request given up after `timeout`.
fn raw_swarm(support: request_response::ProtocolSupport, timeout: Duration) -> Swarm<request_response::Behaviour<Raw>> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                Raw,
                [(StreamProtocol::new("/ionshard/shard/1"), support)],
                request_response::Config::default().with_request_timeout(timeout),
            )
        })
        .expect("behaviour")
        .build()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_oversized_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = store::Store::open(dir.path(), store::Config::default()).expect("store");
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let cfg =
        Config { role: Role::Peer, listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")], ..Config::default() };
    let (node, _) = net::start(cfg, key, Some(s)).await.expect("node");
    let mut addr: Option<Multiaddr> = None;
    for _ in 0..100 {
        addr = node.listen_addrs().await.expect("addrs").into_iter().next();
        if addr.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr = addr.expect("listening");

    let mut swarm = raw_swarm(request_response::ProtocolSupport::Outbound, Duration::from_secs(10));

    let mut ask = async |bytes: Vec<u8>| -> Option<Response> {
        let id = swarm.behaviour_mut().send_request_with_addresses(&peer, bytes, vec![addr.clone()]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ev = tokio::time::timeout_at(deadline, swarm.select_next_some()).await.expect("an answer in time");
            match ev {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) if request_id == id => {
                    return Some(Response::decode(&response, &Limits::default()).expect("a well-formed answer"));
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. })
                    if request_id == id =>
                {
                    return None;
                }
                _ => {}
            }
        }
    };

    // An unknown message type: refused, with the reason.
    match ask(frame(&[42])).await {
        Some(Response::Error { code: Code::BadRequest, message }) => {
            assert!(message.contains("unknown request type 42"))
        }
        other => panic!("unexpected {other:?}"),
    }
    // A put cut off in its CID: refused as truncated.
    match ask(frame(&[1, 0x01, 0x55, 0x1e])).await {
        Some(Response::Error { code: Code::BadRequest, message }) => {
            assert!(message.contains("truncated"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // A frame claiming 100 MiB: refused from its length alone, stream closed.
    let mut huge = (100u32 << 20).to_be_bytes().to_vec();
    huge.extend_from_slice(&[1; 64]);
    assert!(ask(huge).await.is_none());
    // A frame shorter than it says: stream closed.
    let mut short = 1000u32.to_be_bytes().to_vec();
    short.extend_from_slice(&[2; 10]);
    assert!(ask(short).await.is_none());
    // And it still answers a good request.
    let get = Request::Get { cid: chunker::Cid::of_raw(b"nothing") }.encode();
    match ask(frame(&get)).await {
        Some(Response::Error { code: Code::NotFound, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// A peer answering a range request of 4 KiB with a proof of 8 MiB: the
/// fetcher stops at the answer's length, before it holds any of it (with
/// 48 requests in flight, 64 MiB each was 3 GiB on a device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_a_small_range_with_a_huge_proof_is_not_read() {
    let mut server = raw_swarm(request_response::ProtocolSupport::Inbound, Duration::from_secs(30));
    let server_id = *server.local_peer_id();
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let addr = loop {
        match tokio::time::timeout(Duration::from_secs(10), server.select_next_some()).await.expect("listening") {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            _ => continue,
        }
    };
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = sent.clone();
    let serving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }) = server.select_next_some().await
            {
                // The frame's head (4 bytes of length), then the request's type.
                let answer = if request.get(4) == Some(&3) {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    let mut huge = vec![3u8];
                    huge.resize(8 << 20, 7);
                    frame(&huge)
                } else {
                    frame(&Response::Error { code: Code::BadRequest, message: "no".into() }.encode())
                };
                let _ = server.behaviour_mut().send_response(channel, answer);
            }
        }
    });

    let boot = addr.with(libp2p::multiaddr::Protocol::P2p(server_id));
    let cfg = Config { role: Role::Client, bootstrap: vec![boot], ..Config::default() };
    let (client, _) = net::start(cfg, Keypair::generate_ed25519(), None).await.expect("client");
    let mut connected = false;
    for _ in 0..100 {
        if client.connection(server_id).await.expect("connection").is_some() {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected, "the client did not reach the raw peer within 10 s");
    let cid = chunker::Cid::of_raw(b"some shard");
    let answer = client.request(server_id, Request::Ranges { cid, ranges: vec![0..4096] }).await;
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst), "the raw peer never saw the range request");
    match answer {
        Err(e) => assert!(e.to_string().contains("over the limit"), "{e}"),
        Ok(r) => panic!(
            "an 8 MiB answer to a 4 KiB range was read whole: {}",
            match r {
                Response::Proof(p) => format!("a proof of {} bytes", p.len()),
                other => format!("{other:?}"),
            }
        ),
    }
    serving.abort();
}
