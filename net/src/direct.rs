//! The direct channel (bytes in [`proto::direct`]): range requests and
//! their answers on TCP connections of their own, beside the libp2p
//! connection that handed out their keys. On the fetch path libp2p's noise
//! (ChaCha20-Poly1305, three copies each way) and yamux (two more) were the
//! largest cost left on both sides; here a proof is sealed in its own
//! buffer with AES-256-GCM (ring, several GB/s with AES-NI) and read
//! straight into a reused one.
//!
//! A peer with a store runs an [`Office`]: it listens on a TCP port of the
//! address it listens on for libp2p, hands out tickets to whoever asks on
//! libp2p (so it knows who each ticket is for), redeems each once, and
//! serves range requests on the connection under the same gate (slots and
//! bytes per peer) and the same checks (a private shard only for the peer
//! its drive admits) as on libp2p. Puts stay on libp2p (see
//! [`proto::direct`]). A client ([`Dialer`]) keeps a
//! few connections per peer and falls back to libp2p for whatever the
//! channel cannot carry: a peer of an earlier release, a peer reached only
//! through a relay or a hole punch, a port it cannot reach.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::futures::{AsyncRead, AsyncReadExt};
use proto::direct::{self, HEAD, HELLO_LEN, Kind, Opener, Sealer};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::stream::Serving;
use crate::wire::{Code, Request, Response};

/// How long a ticket may wait for its connection.
const TICKET_LIFE: Duration = Duration::from_secs(30);
/// Tickets not yet redeemed, per peer and in all.
const TICKETS_PER_PEER: usize = 2 * direct::MAX_TICKETS as usize;
const TICKETS_TOTAL: usize = 4096;
/// Connections served at once, per peer and in all.
const CONNS_PER_PEER: usize = direct::MAX_TICKETS as usize;
const CONNS_TOTAL: usize = 512;
/// Connections a client opens to one peer: fewer than the peer serves, so
/// that one the client gave up on (the peer still finishing its answer)
/// does not make the next one look like a refusal.
const CLIENT_CONNS_PER_PEER: usize = 6;
/// Connections that have not said hello yet, and how long they have.
const HELLOS_WAITING: usize = 64;
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection with no request for this long is closed (the client drops
/// its idle ones sooner: [`CLIENT_IDLE`]).
const IDLE: Duration = Duration::from_secs(60);
const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// How long a client gives a peer's port to accept.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a client leaves a peer's channel alone after it failed, and
/// after the peer said it has none (an earlier release, or no store).
const FAILED_PAUSE: Duration = Duration::from_secs(30);
const NONE_PAUSE: Duration = Duration::from_secs(600);
/// Tickets asked for at a time.
const ASK: u8 = 4;
/// The longest request frame a peer reads on the channel: a range request
/// of the most ranges (1,024) is 16.4 KiB, and nothing else is served
/// here. 512 connections waiting on a body hold 16 MiB at most.
const MAX_REQUEST: usize = 32 << 10;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Write `parts` as one, in as few system calls as the socket allows.
async fn write_parts(w: &mut OwnedWriteHalf, parts: &[&[u8]]) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < parts.len() {
        let slices: Vec<io::IoSlice<'_>> =
            parts[i..].iter().enumerate().map(|(j, p)| io::IoSlice::new(if j == 0 { &p[off..] } else { p })).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while i < parts.len() && n >= parts[i].len() - off {
            n -= parts[i].len() - off;
            (i, off) = (i + 1, 0);
        }
        off += n;
    }
    Ok(())
}

/// Seal `body` as the next frame of `kind` and send it; the body's buffer
/// back (its bytes now sealed) to be reused.
async fn send(w: &mut OwnedWriteHalf, sealer: &mut Sealer, kind: Kind, mut body: Vec<u8>) -> io::Result<Vec<u8>> {
    let (head, tag) = sealer.seal(kind, &mut body).map_err(invalid)?;
    write_parts(w, &[&head, &body, &tag]).await?;
    Ok(body)
}

/// The next frame, opened in a reused buffer: its kind and body. A body
/// over `max(kind)` is refused from the head; a long head's body grows
/// only as its bytes come.
async fn receive<R: AsyncRead + Unpin + Send>(
    r: &mut R,
    opener: &mut Opener,
    max: impl Fn(Kind) -> usize,
) -> io::Result<(Kind, Vec<u8>)> {
    let mut head = [0u8; HEAD];
    r.read_exact(&mut head).await?;
    let (_, kind) = direct::head(&head, usize::MAX - direct::TAG - 1).map_err(invalid)?;
    let (len, kind) = direct::head(&head, max(kind)).map_err(invalid)?;
    let mut buf = crate::buffers::take();
    crate::buffers::read_into(r, &mut buf, len).await?;
    let n = opener.open(&head, &mut buf).map_err(invalid)?;
    buf.truncate(n);
    Ok((kind, buf))
}

/// Send `response` on the channel: a proof from its own buffer.
async fn answer(w: &mut OwnedWriteHalf, sealer: &mut Sealer, response: Response) -> io::Result<()> {
    let (kind, body) = match response {
        Response::Proof(b) => (Kind::Proof, b),
        other => (Kind::Response, other.encode()),
    };
    let body = send(w, sealer, kind, body).await?;
    crate::buffers::recycle(body);
    Ok(())
}

struct Issued {
    peer: PeerId,
    secret: [u8; 32],
    until: Instant,
}

#[derive(Default)]
struct Books {
    issued: HashMap<[u8; 16], Issued>,
    conns: HashMap<PeerId, usize>,
    total: usize,
}

/// A peer's side: its port, the tickets it handed out and the connections
/// it serves.
pub(crate) struct Office {
    addr: SocketAddr,
    books: Mutex<Books>,
    hellos: tokio::sync::Semaphore,
}

impl Office {
    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer to `peer`'s [`Request::Direct`]: tickets, or `Busy` when
    /// it (or everyone) holds too many unused.
    pub(crate) fn issue(&self, peer: PeerId, connections: u8) -> Response {
        let now = Instant::now();
        let mut b = self.books();
        b.issued.retain(|_, t| t.until > now);
        let mine = b.issued.values().filter(|t| t.peer == peer).count();
        let n = usize::from(connections.clamp(1, direct::MAX_TICKETS));
        if mine + n > TICKETS_PER_PEER || b.issued.len() + n > TICKETS_TOTAL {
            return Response::Error {
                code: Code::Busy,
                message: "too many direct-channel tickets unused; use them or wait".to_string(),
            };
        }
        let secret: [u8; 32] = rand::random();
        let tickets: Vec<[u8; 16]> = (0..n).map(|_| rand::random()).collect();
        for t in &tickets {
            b.issued.insert(*t, Issued { peer, secret, until: now + TICKET_LIFE });
        }
        Response::Direct { port: self.addr.port(), secret, tickets }
    }

    /// Who `ticket` was issued to and its secret, once, while it is fresh
    /// and the peer is under its connection bound (counted until
    /// [`Office::closed`]).
    fn redeem(&self, ticket: &[u8; 16]) -> Option<(PeerId, [u8; 32])> {
        let mut b = self.books();
        let t = b.issued.remove(ticket)?;
        let mine = b.conns.get(&t.peer).copied().unwrap_or(0);
        if t.until <= Instant::now() || mine >= CONNS_PER_PEER || b.total >= CONNS_TOTAL {
            return None;
        }
        *b.conns.entry(t.peer).or_default() += 1;
        b.total += 1;
        Some((t.peer, t.secret))
    }

    fn closed(&self, peer: PeerId) {
        let mut b = self.books();
        if let Some(n) = b.conns.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                b.conns.remove(&peer);
            }
        }
        b.total = b.total.saturating_sub(1);
    }
}

/// A listening socket for the direct channel at `at`; an IPv6 one takes
/// IPv6 only (beside an IPv4 one on the same port, as libp2p's listeners).
fn listener(at: SocketAddr) -> io::Result<TcpListener> {
    let domain = if at.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if at.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&at.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Listen for the direct channel on each of `ips` (the node's TCP listen
/// addresses' IPs), on `port` (0: a free one, the same on every IP), and
/// serve it with `ctx` until the node stops. The first IP must open; one
/// of the others that will not (its port taken there) is left out, said in
/// the log: clients that reach the node there fall back to libp2p.
pub(crate) async fn open_office(
    ips: &[IpAddr],
    port: u16,
    ctx: Arc<Serving>,
) -> io::Result<(Arc<Office>, tokio::task::JoinHandle<()>)> {
    let Some(first) = ips.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no IP to listen on"));
    };
    let first = listener(SocketAddr::new(*first, port))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for ip in &ips[1..] {
        match listener(SocketAddr::new(*ip, addr.port())) {
            Ok(l) => listeners.push(l),
            Err(e) => tracing::warn!("no direct channel on {ip} port {}: {e} (clients there use libp2p)", addr.port()),
        }
    }
    let office = Arc::new(Office {
        addr,
        books: Mutex::new(Books::default()),
        hellos: tokio::sync::Semaphore::new(HELLOS_WAITING),
    });
    // The connections' tasks live in their accept loop's set: when the node
    // stops (the task is aborted), they stop with it and let go of the store.
    let loops: Vec<_> = listeners.into_iter().map(|l| accept(l, office.clone(), ctx.clone())).collect();
    let task = tokio::spawn(async move {
        futures::future::join_all(loops).await;
    });
    Ok((office, task))
}

/// Take the connections of one listener, each served on a task of its own.
async fn accept(listener: TcpListener, o: Arc<Office>, ctx: Arc<Serving>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((tcp, _)) = accepted else {
            // Out of descriptors, most likely: breathe, then go on.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Strangers who connect and say nothing hold a bounded number
        // of places, for a bounded time.
        let Ok(waiting) = o.hellos.try_acquire() else { continue };
        let (o, ctx) = (o.clone(), ctx.clone());
        waiting.forget();
        conns.spawn(async move {
            let mut seat = Seat { office: o.clone(), waiting: true, peer: None };
            let redeemed = hello(&o, tcp).await;
            seat.waiting = false;
            o.hellos.add_permits(1);
            if let Some((peer, conn)) = redeemed {
                seat.peer = Some(peer);
                serve(&ctx, peer, conn).await;
            }
        });
    }
}

/// A connection's place in the office: given back however its task ends
/// (a panic, the node stopping).
struct Seat {
    office: Arc<Office>,
    waiting: bool,
    peer: Option<PeerId>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if self.waiting {
            self.office.hellos.add_permits(1);
        }
        if let Some(p) = self.peer {
            self.office.closed(p);
        }
    }
}

/// One side's connection, keys and counts.
struct Conn {
    r: Compat<OwnedReadHalf>,
    w: OwnedWriteHalf,
    sealer: Sealer,
    opener: Opener,
}

fn split(tcp: TcpStream, secret: &[u8; 32], ticket: &[u8; 16], client: bool) -> Conn {
    let (sealer, opener) = direct::keys(secret, ticket, client);
    let (r, w) = tcp.into_split();
    Conn { r: r.compat(), w, sealer, opener }
}

/// Read a connection's hello and redeem its ticket.
async fn hello(office: &Office, mut tcp: TcpStream) -> Option<(PeerId, Conn)> {
    use tokio::io::AsyncReadExt as _;
    let mut h = [0u8; HELLO_LEN];
    tokio::time::timeout(HELLO_TIMEOUT, tcp.read_exact(&mut h)).await.ok()?.ok()?;
    let ticket = direct::hello_ticket(&h)?;
    let (peer, secret) = office.redeem(&ticket)?;
    let _ = tcp.set_nodelay(true);
    Some((peer, split(tcp, &secret, &ticket, false)))
}

/// Serve `peer`'s requests on `c`, one at a time, until it goes
/// quiet, says something that does not open or does not belong, or leaves.
async fn serve(ctx: &Arc<Serving>, peer: PeerId, mut c: Conn) {
    loop {
        let max = ctx.limits.max_request.min(MAX_REQUEST);
        let got = tokio::time::timeout(IDLE, receive(&mut c.r, &mut c.opener, |_| max)).await;
        let Ok(Ok((kind, body))) = got else { return };
        let served = match kind {
            Kind::Request => serve_request(ctx, peer, &mut c, body).await,
            _ => return,
        };
        if served.is_err() {
            return;
        }
    }
}

fn refusal(code: Code, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

async fn serve_request(ctx: &Arc<Serving>, peer: PeerId, c: &mut Conn, body: Vec<u8>) -> io::Result<()> {
    let request = Request::decode(&body, &ctx.limits);
    crate::buffers::recycle(body);
    let response = match request {
        Ok(r @ Request::Ranges { .. }) => match ctx.gate.enter(peer, ctx.trust.contains(&peer)) {
            Some(mut ticket) => {
                let work = ctx.clone();
                let served = tokio::task::spawn_blocking(move || {
                    let r = work.answer(peer, r, Some(&mut ticket));
                    (r, ticket)
                })
                .await;
                match served {
                    // The answer's bytes stay held until it is sent.
                    Ok((r, ticket)) => {
                        let sent = within(ctx, answer(&mut c.w, &mut c.sealer, r)).await;
                        drop(ticket);
                        return sent;
                    }
                    Err(_) => refusal(Code::Internal, "serving failed"),
                }
            }
            None => refusal(Code::Busy, "too many requests at once; retry"),
        },
        Ok(_) => refusal(
            Code::BadRequest,
            "only range requests travel on the direct channel; ask the rest on /ionshard/shard/1",
        ),
        Err(e) => {
            // Told why, then closed: a connection kept open by a malformed
            // request a minute would hold its place (and a descriptor) for ever.
            within(ctx, answer(&mut c.w, &mut c.sealer, refusal(Code::BadRequest, e.to_string()))).await?;
            return Err(invalid("a malformed request"));
        }
    };
    within(ctx, answer(&mut c.w, &mut c.sealer, response)).await
}

/// `send` within the request timeout: a client that stops reading does not
/// hold its slot and bytes on this node for longer.
async fn within(ctx: &Serving, send: impl std::future::Future<Output = io::Result<()>>) -> io::Result<()> {
    tokio::time::timeout(ctx.request_timeout, send)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))?
}

/// A peer's channel as a client sees it.
#[derive(Default)]
struct Peer {
    idle: Vec<(Box<Conn>, Instant)>,
    /// Connections open (idle or in use).
    open: usize,
    tickets: Vec<(SocketAddr, [u8; 32], [u8; 16], Instant)>,
    /// Not tried again before this.
    off_until: Option<Instant>,
    /// Failures in a row (each doubles the pause, up to [`NONE_PAUSE`]).
    failures: u32,
    /// Someone is asking it for tickets.
    asking: bool,
}

impl Peer {
    /// Nothing open or pending, and no pause to remember: a peer that
    /// failed is kept (for its backoff) until long after its pause ended.
    fn unused(&self, now: Instant) -> bool {
        let paused = match self.off_until {
            None => false,
            Some(t) if self.failures == 0 => t > now,
            Some(t) => t + NONE_PAUSE > now,
        };
        self.open == 0 && self.tickets.is_empty() && !self.asking && !paused
    }
}

/// Tickets a peer gave, and where to use them.
struct Offer {
    addr: SocketAddr,
    secret: [u8; 32],
    tickets: Vec<[u8; 16]>,
}

/// What a request may do next.
enum Take {
    Idle(Box<Conn>),
    Open(SocketAddr, [u8; 32], [u8; 16]),
    Ask,
    No,
}

/// A client's side: its connections to peers, opened on demand and kept
/// while they are used.
#[derive(Default)]
pub(crate) struct Dialer {
    peers: Mutex<HashMap<PeerId, Peer>>,
    /// Bytes received and sent on the channel (frames included).
    pub(crate) inbound: AtomicU64,
    pub(crate) outbound: AtomicU64,
}

/// How a request on the channel ended.
pub(crate) enum Outcome {
    /// Answered.
    Answered(Response),
    /// The channel cannot carry it now: send it on libp2p.
    Elsewhere,
}

impl Dialer {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Peer>> {
        self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, peer: PeerId) -> Take {
        let now = Instant::now();
        let mut peers = self.peers();
        // Connections idle too long (the peer closes them) are closed here,
        // every peer's, and peers with nothing left are forgotten.
        for p in peers.values_mut() {
            let before = p.idle.len();
            p.idle.retain(|(_, since)| now.duration_since(*since) < CLIENT_IDLE);
            p.open = p.open.saturating_sub(before - p.idle.len());
            p.tickets.retain(|t| now.duration_since(t.3) < TICKET_LIFE / 2);
        }
        peers.retain(|_, p| !p.unused(now));
        let p = peers.entry(peer).or_default();
        if p.off_until.is_some_and(|t| t > now) {
            return Take::No;
        }
        if let Some((c, _)) = p.idle.pop() {
            return Take::Idle(c);
        }
        if p.open >= CLIENT_CONNS_PER_PEER {
            return Take::No;
        }
        if let Some((addr, secret, ticket, _)) = p.tickets.pop() {
            p.open += 1;
            return Take::Open(addr, secret, ticket);
        }
        if p.asking {
            return Take::No;
        }
        p.asking = true;
        Take::Ask
    }

    /// A connection that served well; closed instead while the channel to
    /// `peer` is paused (another request on it failed meanwhile).
    fn give_back(&self, peer: PeerId, c: Box<Conn>) {
        let now = Instant::now();
        let mut peers = self.peers();
        let p = peers.entry(peer).or_default();
        if p.off_until.is_some_and(|t| t > now) {
            p.open = p.open.saturating_sub(1);
        } else {
            p.failures = 0;
            p.idle.push((c, now));
        }
    }

    /// A connection of `peer` is gone; `failed`: the channel failed, leave
    /// it alone a while (twice as long each time in a row, up to
    /// [`NONE_PAUSE`]), with its idle connections and tickets.
    fn lost(&self, peer: PeerId, failed: bool) {
        let mut peers = self.peers();
        let p = peers.entry(peer).or_default();
        p.open = p.open.saturating_sub(1);
        // Several requests failing at once (a port that is firewalled, a
        // peer that restarted) are one failure: the pause is set once.
        if failed && p.off_until.is_none_or(|t| t <= Instant::now()) {
            let pause = FAILED_PAUSE.saturating_mul(1 << p.failures.min(5)).min(NONE_PAUSE);
            p.failures += 1;
            p.off_until = Some(Instant::now() + pause);
            p.open = p.open.saturating_sub(p.idle.len());
            p.idle.clear();
            p.tickets.clear();
        }
    }

    /// What asking `peer` for tickets gave: tickets to use at an address,
    /// or how long to leave its channel alone.
    fn asked(&self, peer: PeerId, got: Result<Offer, Duration>) {
        let mut peers = self.peers();
        let p = peers.entry(peer).or_default();
        p.asking = false;
        match got {
            Ok(Offer { addr, secret, tickets }) => {
                let now = Instant::now();
                p.tickets.extend(tickets.into_iter().map(|t| (addr, secret, t, now)));
            }
            Err(pause) => p.off_until = Some(Instant::now() + pause),
        }
    }

    /// Ask `request` of `peer` on the channel.
    pub(crate) async fn request(self: &Arc<Self>, client: &crate::Client, peer: PeerId, request: &Request) -> Outcome {
        let limits = client.limits;
        let work = async |d: &Dialer, c: &mut Conn| d.exchange(c, request, &limits).await;
        self.on_conn(client, peer, client.request_timeout, work).await
    }

    /// Run `work` on a connection to `peer` within `deadline`: an idle one,
    /// or a new one from a ticket; kept for the next request if it went
    /// well, closed (and the channel left alone a while) if not. Without
    /// either, tickets are asked for on libp2p (through `client`, on a task
    /// of their own, so that this request goes on libp2p at once).
    async fn on_conn(
        self: &Arc<Self>,
        client: &crate::Client,
        peer: PeerId,
        deadline: Duration,
        work: impl AsyncFnOnce(&Dialer, &mut Conn) -> io::Result<Response>,
    ) -> Outcome {
        let taken = match self.take(peer) {
            Take::No => return Outcome::Elsewhere,
            Take::Ask => {
                let (d, client) = (self.clone(), client.clone());
                tokio::spawn(async move {
                    let got = d.ask(&client, peer).await;
                    d.asked(peer, got);
                });
                return Outcome::Elsewhere;
            }
            Take::Idle(c) => Ok(c),
            Take::Open(addr, secret, ticket) => Err((addr, secret, ticket)),
        };
        // Dropped midway (the caller gave up waiting): the connection goes
        // with it, and is counted out.
        let mut guard = Guard { dialer: self, peer, done: false };
        let mut conn = match taken {
            Ok(c) => c,
            Err((addr, secret, ticket)) => match self.dial(addr, &secret, &ticket).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%peer, %addr, "direct channel not reached: {e}; on libp2p");
                    guard.done = true;
                    self.lost(peer, true);
                    return Outcome::Elsewhere;
                }
            },
        };
        let done = match tokio::time::timeout(deadline, work(self, &mut conn)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
        };
        guard.done = true;
        match done {
            Ok(r) => {
                self.give_back(peer, conn);
                Outcome::Answered(r)
            }
            Err(e) => {
                tracing::debug!(%peer, "direct channel failed: {e}; on libp2p");
                self.lost(peer, true);
                Outcome::Elsewhere
            }
        }
    }

    /// Tickets from `peer` and the address to use them at: the one its
    /// libp2p connection reached (noise proved its key there), only when
    /// that connection is direct. Otherwise how long to leave it alone (not
    /// at all while it is not connected yet): a
    /// peer without the channel (an earlier release, no store), or reached
    /// only through a relay, for long; a busy or failing one for a while.
    async fn ask(&self, client: &crate::Client, peer: PeerId) -> Result<Offer, Duration> {
        // Asked once libp2p is connected (the request that found it not
        // connected goes on libp2p, which finds and dials the peer): never
        // a DHT lookup of its own. Only through a relay: no way in.
        match client.connection(peer).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => return Err(NONE_PAUSE),
            _ => return Err(Duration::ZERO),
        }
        let link = client.link(peer).await.map_err(|_| FAILED_PAUSE)?;
        // A hole punched for libp2p's port is no way in to another.
        let link = link.filter(|l| !l.hole_punched);
        let ip = link.and_then(|l| l.remote).as_ref().and_then(ip_of).ok_or(NONE_PAUSE)?;
        let (port, secret, tickets) = match client.request_p2p(peer, Request::Direct { connections: ASK }).await {
            Ok(Response::Direct { port, secret, tickets }) => (port, secret, tickets),
            Ok(Response::Error { code: Code::Busy, .. }) | Err(_) => return Err(FAILED_PAUSE),
            Ok(_) => return Err(NONE_PAUSE),
        };
        Ok(Offer { addr: SocketAddr::new(ip, port), secret, tickets })
    }

    async fn dial(&self, addr: SocketAddr, secret: &[u8; 32], ticket: &[u8; 16]) -> io::Result<Box<Conn>> {
        let mut tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
        tcp.set_nodelay(true)?;
        tcp.write_all(&direct::hello(ticket)).await?;
        self.outbound.fetch_add(HELLO_LEN as u64, Ordering::Relaxed);
        Ok(Box::new(split(tcp, secret, ticket, true)))
    }

    async fn exchange(&self, c: &mut Conn, request: &Request, limits: &crate::wire::Limits) -> io::Result<Response> {
        let body = request.encode();
        let sent = HEAD + body.len() + direct::TAG;
        send(&mut c.w, &mut c.sealer, Kind::Request, body).await?;
        self.outbound.fetch_add(sent as u64, Ordering::Relaxed);
        let most = crate::codec::answer_limit(request, limits);
        let (kind, body) = receive(&mut c.r, &mut c.opener, |_| most).await?;
        self.inbound.fetch_add((HEAD + body.len() + direct::TAG) as u64, Ordering::Relaxed);
        match kind {
            Kind::Proof => Ok(Response::Proof(body)),
            Kind::Response => {
                let r = Response::decode(&body, limits).map_err(invalid);
                crate::buffers::recycle(body);
                r
            }
            _ => Err(invalid("something other than an answer after a request")),
        }
    }
}

/// Counts a connection out if its request was dropped midway.
struct Guard<'a> {
    dialer: &'a Dialer,
    peer: PeerId,
    done: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dialer.lost(self.peer, false);
        }
    }
}

fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The IPs to listen on for the direct channel: those of the node's TCP
/// listen addresses, each once, in their order; an unspecified one
/// (0.0.0.0, ::) stands for the others of its family.
pub fn listen_ips(listen: &[libp2p::Multiaddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in
        listen.iter().filter(|a| a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))).filter_map(ip_of)
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let any: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_unspecified).collect();
    ips.retain(|ip| ip.is_unspecified() || !any.iter().any(|a| a.is_ipv4() == ip.is_ipv4()));
    ips
}

#[cfg(test)]
mod tests {
    use super::listen_ips;

    fn ips(listen: &[&str]) -> Vec<String> {
        let addrs: Vec<libp2p::Multiaddr> = listen.iter().map(|a| a.parse().expect("multiaddr")).collect();
        listen_ips(&addrs).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_channel_listens_on_each_tcp_ip_once_an_unspecified_one_standing_for_its_family() {
        let both = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1", "/ip6/::1/tcp/2", "/ip4/127.0.0.1/tcp/3"];
        assert_eq!(ips(&both), ["127.0.0.1", "::1"]);
        assert_eq!(ips(&["/ip4/10.0.0.1/tcp/1", "/ip4/0.0.0.0/tcp/2", "/ip6/::1/tcp/3"]), ["0.0.0.0", "::1"]);
        assert!(ips(&["/ip4/127.0.0.1/udp/1/quic-v1"]).is_empty());
    }
}
