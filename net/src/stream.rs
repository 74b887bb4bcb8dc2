//! The put and get protocols (`/ionshard/put/1`, `/ionshard/get/1`, grammar
//! in [`crate::wire`]): whole shards on streams of their own, so that a node
//! knows who sends before it reads a body, and never holds a whole shard in
//! memory to serve it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chunker::Cid;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::{PeerId, Stream, StreamProtocol};
use store::Store;

use crate::codec::{read_frame, write_frame};
use crate::error::{Error, Result};
use crate::gate::{Gate, Ticket};
use crate::wire::{Code, GetHead, Limits, MAX_HEAD, PutHead, Ready, Response};

/// Whole-shard puts, head first.
pub(crate) const PUT_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/put/1");
/// Whole-shard gets, streamed.
pub(crate) const GET_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/get/1");

/// Bytes of a streamed get read from disk and sent at a time (what a get holds).
const PIECE: usize = 256 << 10;

/// How long a peer has to send a head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The slowest a streamed get may be read (bytes a second) before it is cut
/// off: 1 Mbit/s, 64 MiB in about nine minutes.
const SLOWEST_READER: u64 = 125_000;

/// How long a body of `size` bytes may take: the request timeout, plus a
/// second per MiB (a slow home uplink still gets a 64 MiB shard across).
pub(crate) fn body_deadline(request_timeout: Duration, size: u64) -> Duration {
    request_timeout + Duration::from_secs(size >> 20)
}

/// What the stream servers need from the node.
pub(crate) struct Serving {
    pub(crate) store: Option<Store>,
    pub(crate) key: Keypair,
    pub(crate) trust: HashSet<PeerId>,
    /// Who may use private (drive) shards.
    pub(crate) private: Option<Arc<dyn crate::Private>>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    pub(crate) default_expiry: Option<u64>,
    /// The answer path's hook (see [`crate::Answers`]).
    pub(crate) answers: Arc<dyn crate::Answers>,
}

impl Serving {
    fn caller(&self, peer: PeerId) -> crate::private::Caller<'_> {
        crate::private::Caller { peer, trusted: self.trust.contains(&peer), private: self.private.as_deref() }
    }

    /// [`crate::serve::answer`] for `peer` (on a blocking thread).
    pub(crate) fn answer(&self, peer: PeerId, request: crate::wire::Request, ticket: Option<&mut Ticket>) -> Response {
        let served = (self.store.as_ref(), &self.key, self.default_expiry, self.answers.as_ref());
        crate::serve::answer(served, &self.caller(peer), request, ticket, crate::serve::NodeState::default())
    }
}

fn refused(code: Code, message: impl Into<String>) -> Ready {
    Ready::Refused { code, message: message.into() }
}

async fn send_ready(s: &mut Stream, r: &Ready) {
    let _ = write_frame(s, &r.encode()).await;
}

/// A slot for this request and its head, or `None` once the peer has been
/// told why not (too many at once, a head that does not parse) or went quiet.
async fn admit<H>(
    ctx: &Serving,
    peer: PeerId,
    s: &mut Stream,
    decode: fn(&[u8]) -> Result<H, crate::wire::Malformed>,
) -> Option<(crate::gate::Ticket, H)> {
    let Some(ticket) = ctx.gate.enter(peer, ctx.trust.contains(&peer)) else {
        send_ready(s, &refused(Code::Busy, "too many requests at once; retry")).await;
        return None;
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read_frame(s, MAX_HEAD)).await {
        Ok(Ok(b)) => match decode(&b) {
            Ok(h) => Some((ticket, h)),
            Err(e) => {
                send_ready(s, &refused(Code::BadRequest, e.to_string())).await;
                None
            }
        },
        _ => None,
    }
}

/// Serve one inbound put: head, checks, `Go`, body, store, receipt.
pub(crate) async fn serve_put(ctx: Arc<Serving>, peer: PeerId, mut s: Stream) {
    let Some((mut ticket, head)) = admit(&ctx, peer, &mut s, PutHead::decode).await else { return };
    // Every refusal comes before the body: a stranger costs this node a head.
    let Some(store) = ctx.store.as_ref() else {
        return send_ready(&mut s, &refused(Code::NotFound, "this node stores no shards")).await;
    };
    if let Some(why) = crate::serve::may_put(&ctx.caller(peer)) {
        return send_ready(&mut s, &refused(Code::Untrusted, why)).await;
    }
    if head.size > ctx.limits.max_shard {
        let why = format!("shard of {} bytes is over the limit of {}", head.size, ctx.limits.max_shard);
        return send_ready(&mut s, &refused(Code::TooLarge, why)).await;
    }
    if let Err(e) = store.check_room(head.size) {
        let Response::Error { code, message } = crate::serve::from_store(e) else { return };
        return send_ready(&mut s, &Ready::Refused { code, message }).await;
    }
    if !ticket.hold(head.size) {
        return send_ready(&mut s, &refused(Code::Busy, "this node is holding too much at once; retry")).await;
    }
    send_ready(&mut s, &Ready::Go { size: head.size }).await;
    // Exactly the size said (held on the ticket above), read in place into
    // a reused buffer: no second copy, no fresh pages per put.
    let size = head.size as usize;
    let mut body = crate::buffers::take();
    if body.len() < size {
        body.resize(size, 0);
    }
    body.truncate(size);
    let read = s.read_exact(&mut body);
    if !matches!(tokio::time::timeout(body_deadline(ctx.request_timeout, head.size), read).await, Ok(Ok(()))) {
        return;
    }
    let (store, key, expiry, work) = (store.clone(), ctx.key.clone(), ctx.default_expiry, ctx.clone());
    let stored = tokio::task::spawn_blocking(move || {
        let shard = crate::serve::Stored { cid: head.cid, expiry: head.expiry, pinned: head.pinned, bytes: &body };
        // Asked again: a pairing revoked while the body came is refused.
        let answer = crate::serve::put(&store, &key, &work.caller(peer), shard, crate::node::now(), expiry);
        (answer, body)
    })
    .await;
    let answer = match stored {
        Ok((answer, body)) => {
            crate::buffers::recycle(body);
            answer
        }
        Err(_) => Response::Error { code: Code::Internal, message: "the put failed on this node".into() },
    };
    let hold = ctx.answers.hold_receipt();
    if matches!(answer, Response::Stored(_)) && !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let _ = write_frame(&mut s, &answer.encode()).await;
    let _ = s.close().await;
    drop(ticket);
}

/// Serve one inbound get: the shard's bytes, a piece at a time.
pub(crate) async fn serve_get(ctx: Arc<Serving>, peer: PeerId, mut s: Stream) {
    let Some((mut ticket, head)) = admit(&ctx, peer, &mut s, GetHead::decode).await else { return };
    let Some(store) = ctx.store.clone() else {
        return send_ready(&mut s, &refused(Code::NotFound, "this node stores no shards")).await;
    };
    if !ticket.hold(PIECE as u64) {
        return send_ready(&mut s, &refused(Code::Busy, "this node is holding too much at once; retry")).await;
    }
    let cid = head.cid;
    let opened = {
        let (store, work) = (store.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || {
            // A private shard's owner is checked before it is opened.
            match store.meta(&cid) {
                Err(e) => return Ok(Err(e)),
                Ok(meta) => {
                    if let Some(r) = meta.and_then(|m| work.caller(peer).refuses(&cid, &m.owner)) {
                        return Err(r);
                    }
                }
            }
            Ok(store.open_shard(&cid))
        })
        .await
    };
    let file = match opened {
        Ok(Ok(Ok(f))) => Arc::new(f),
        Ok(Err((code, why))) => return send_ready(&mut s, &refused(code, why)).await,
        Ok(Ok(Err(e))) => {
            let Response::Error { code, message } = crate::serve::from_store(e) else { return };
            return send_ready(&mut s, &Ready::Refused { code, message }).await;
        }
        Err(_) => return,
    };
    let hold = ctx.answers.hold();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let size = file.len();
    send_ready(&mut s, &Ready::Go { size }).await;
    // One deadline for the whole shard, not only for each piece: a reader
    // taking a piece every 29 s would hold its slot for hours.
    let deadline = tokio::time::Instant::now() + ctx.request_timeout + Duration::from_secs(size / SLOWEST_READER);
    let mut hasher = blake3::Hasher::new();
    let mut at = 0u64;
    while at < size {
        let n = PIECE.min((size - at) as usize);
        let f = file.clone();
        let piece = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            chunker::Seed::read_at(f.as_ref(), at, &mut buf).map(|()| buf)
        })
        .await;
        let Ok(Ok(mut piece)) = piece else { return };
        hasher.update(&piece);
        ctx.answers.alter(at, &mut piece);
        let send = s.write_all(&piece);
        let by = deadline.min(tokio::time::Instant::now() + ctx.request_timeout);
        if !matches!(tokio::time::timeout_at(by, send).await, Ok(Ok(()))) {
            return;
        }
        at += n as u64;
    }
    let _ = s.close().await;
    if hasher.finalize().as_bytes() != cid.digest() {
        // Whoever asked will find out too; never serve it again.
        let _ = tokio::task::spawn_blocking(move || store.report_corrupt(&cid, "bytes do not match the CID")).await;
    }
    drop(ticket);
}

/// Why a stream could not be used: the peer is of an earlier release (no
/// such protocol), or anything else.
pub(crate) enum OpenError {
    Unsupported,
    Failed(Error),
}

async fn open(control: &mut libp2p_stream::Control, peer: PeerId, proto: StreamProtocol) -> Result<Stream, OpenError> {
    match control.open_stream(peer, proto).await {
        Ok(s) => Ok(s),
        Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => Err(OpenError::Unsupported),
        Err(e) => Err(OpenError::Failed(Error::Unreachable { peer: peer.to_string(), reason: e.to_string() })),
    }
}

fn protocol_error(peer: PeerId, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("{what} with {peer}: {e}"))
}

/// Times a request is begun before giving up on a peer that drops it
/// unanswered, and the first pause between tries (doubled each time).
const BEGIN_TRIES: u32 = 8;
const BEGIN_PAUSE: Duration = Duration::from_millis(1);

/// Open a stream, send the head and read the peer's answer to it. A peer
/// that is busy accepting drops new streams unread (libp2p-stream hands
/// them over one at a time and drops what finds its queue full), which the
/// client sees as a stream closed before any answer: that is tried again,
/// a few times with growing pauses. A head can be sent twice safely: nothing
/// happens on the peer before it answers, and a put is content-addressed.
async fn begin(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    proto: StreamProtocol,
    head: &[u8],
    what: &str,
) -> Result<(Stream, Ready), OpenError> {
    let mut pause = BEGIN_PAUSE;
    let mut tries = 0;
    loop {
        tries += 1;
        let mut s = open(control, peer, proto.clone()).await?;
        let sent = match write_frame(&mut s, head).await {
            Ok(()) => read_frame(&mut s, MAX_HEAD).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(b) => {
                let ready = Ready::decode(&b).map_err(|e| {
                    OpenError::Failed(Error::BadAnswer { peer: peer.to_string(), reason: e.to_string() })
                })?;
                return Ok((s, ready));
            }
            Err(e) if tries >= BEGIN_TRIES => {
                let e = format!("{e} (dropped unanswered {tries} times)");
                return Err(OpenError::Failed(protocol_error(peer, what, e)));
            }
            Err(_) => {
                tracing::debug!(%peer, tries, "request dropped before an answer; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// Put on `/ionshard/put/1`: the head, and the body only once the peer said go.
pub(crate) async fn put(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    head: PutHead,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Response, OpenError> {
    let (mut s, ready) = begin(control, peer, PUT_PROTOCOL, &head.encode(), "sending a put head").await?;
    let go = async {
        match ready {
            Ready::Refused { code, message } => return Ok(Response::Error { code, message }),
            Ready::Go { size } if size == head.size => {}
            Ready::Go { size } => {
                return Err(Error::BadAnswer { peer: peer.to_string(), reason: format!("said go for {size} bytes") });
            }
        }
        s.write_all(bytes).await.map_err(|e| protocol_error(peer, "sending a shard", e))?;
        s.flush().await.map_err(|e| protocol_error(peer, "sending a shard", e))?;
        let b =
            read_frame(&mut s, limits.max_request).await.map_err(|e| protocol_error(peer, "reading a receipt", e))?;
        Response::decode(&b, limits).map_err(|e| Error::BadAnswer { peer: peer.to_string(), reason: e.to_string() })
    };
    go.await.map_err(OpenError::Failed)
}

/// Get on `/ionshard/get/1`: the shard's bytes into `sink` as they come,
/// hashed on the way; fails, naming the peer, if they do not match `cid` or
/// the peer claims more than `max` bytes. Returns the length.
pub(crate) async fn get(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    cid: Cid,
    max: u64,
    sink: &mut (dyn std::io::Write + Send),
) -> Result<u64, OpenError> {
    let (mut s, ready) = begin(control, peer, GET_PROTOCOL, &GetHead { cid }.encode(), "sending a get").await?;
    let go = async {
        let size = match ready {
            Ready::Refused { code, message } => {
                return Err(Error::Refused { peer: peer.to_string(), code, message });
            }
            Ready::Go { size } if size <= max => size,
            Ready::Go { size } => {
                return Err(Error::BadAnswer {
                    peer: peer.to_string(),
                    reason: format!("claims {cid} is {size} bytes, over the limit of {max}"),
                });
            }
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; PIECE.min(size as usize)];
        let mut left = size;
        while left > 0 {
            let n = buf.len().min(left as usize);
            s.read_exact(&mut buf[..n]).await.map_err(|e| protocol_error(peer, "reading a shard", e))?;
            hasher.update(&buf[..n]);
            sink.write_all(&buf[..n]).map_err(|e| Error::Protocol(format!("writing {cid}: {e}")))?;
            left -= n as u64;
        }
        if !cid.is_raw() || hasher.finalize().as_bytes() != cid.digest() {
            return Err(Error::BadAnswer { peer: peer.to_string(), reason: format!("bytes do not match {cid}") });
        }
        Ok(size)
    };
    go.await.map_err(OpenError::Failed)
}
