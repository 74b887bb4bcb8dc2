//! A running node: one event loop owns the swarm; a cloneable [`Client`]
//! sends it commands over a bounded channel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, autonat, dcutr, identify, kad, noise, tcp, yamux};
use store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::error::{Error, Result};
use crate::gate::{Bounds, Gate, Ticket};
use crate::stream::{GET_PROTOCOL, PUT_PROTOCOL, Serving};
use crate::wire::{Code, Limits, Malformed, Request, Response};

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// DHT entry point and relay; stores nothing.
    Bootstrap,
    /// Stores and serves shards.
    Peer,
    /// Only asks (devices, SPNs, tools).
    Client,
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The role.
    pub role: Role,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0`, `/ip4/127.0.0.1/udp/0/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap nodes, each address ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses the operator knows this node is reachable at from outside (a
    /// public address, a port forward), announced as they are. Without them a
    /// peer announces an address as external only once AutoNAT has confirmed
    /// it (another node dialled it back); a bootstrap node, which must be
    /// reachable, announces its listen addresses.
    pub external: Vec<Multiaddr>,
    /// SPN ids allowed to put shards here.
    pub trust: Vec<PeerId>,
    /// Who may use this node's private shards (a device's drive): peers
    /// it admits may put shards, kept private, and read them; nobody else
    /// may read those. `None`: this node keeps no drive.
    pub private: Option<Arc<dyn crate::Private>>,
    /// Message size limits.
    pub limits: Limits,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Requests served at once for one peer; more are answered `Busy`.
    pub max_inflight_per_peer: usize,
    /// Requests served at once in all; more are answered `Busy`.
    pub max_inflight: usize,
    /// Bytes of bodies and answers held in memory at once, in all (a
    /// trusted SPN's put of a whole shard must fit: at least the largest shard).
    pub max_held_bytes: u64,
    /// Bytes held at once for one peer that is not a trusted SPN.
    pub max_held_bytes_per_peer: u64,
    /// Shard expiry given to puts that name none (seconds), `None` to keep until deleted.
    pub default_expiry: Option<u64>,
    /// A file whose presence means this node's owner is retiring it
    /// (`ionshard node retire` writes it): `Status` answers say so, and the
    /// SPNs move its shards away.
    pub retire_marker: Option<std::path::PathBuf>,
    /// The ledger's gossip, for nodes that follow or produce a chain.
    pub ledger: Option<crate::ledger::Gossip>,
    /// Range requests and answers on the direct channel (see
    /// [`proto::direct`]): a peer with a store serves it on a TCP port of
    /// its own beside libp2p's, a client uses it where a peer offers it.
    /// Off: everything on libp2p, as before.
    pub direct: bool,
    /// The direct channel's TCP port, the same on each TCP listen address's
    /// IP (open it in a firewall beside libp2p's); 0: any free port.
    pub direct_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::Peer,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            external: Vec::new(),
            trust: Vec::new(),
            private: None,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(30),
            max_inflight_per_peer: 8,
            max_inflight: 64,
            max_held_bytes: 64 << 20,
            max_held_bytes_per_peer: 8 << 20,
            default_expiry: None,
            retire_marker: None,
            ledger: None,
            direct: true,
            direct_port: 0,
        }
    }
}

/// Whether this node can be dialled from outside, as AutoNAT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Not probed yet (or no node to ask).
    Unknown,
    /// Another node dialled one of our addresses back.
    Public,
    /// Nobody could dial us back: we are behind NAT or a firewall, and a
    /// peer is reached through its bootstrap's relay.
    Private,
}

/// How this node is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// AutoNAT's verdict.
    pub nat: Nat,
    /// Addresses confirmed as reachable from outside (by AutoNAT or the operator).
    pub external: Vec<Multiaddr>,
    /// Relay addresses (`…/p2p-circuit`) we can be dialled through.
    pub relayed: Vec<Multiaddr>,
}

/// The connection to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Only through a relay circuit.
    pub relayed: bool,
    /// A direct connection was made while a relayed one was open: a hole
    /// punch (DCUtR) upgraded the relayed connection.
    pub hole_punched: bool,
    /// The remote address of the newest direct connection: where the peer
    /// really is (a noise handshake there proved its key), not what it
    /// claims. `None` while only relayed.
    pub remote: Option<Multiaddr>,
}

/// A peer known to the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub peer: PeerId,
    /// Addresses it is known by.
    pub addrs: Vec<Multiaddr>,
    /// Connected now, and how: `Some(true)` relayed, `Some(false)` direct.
    pub relayed: Option<bool>,
}

pub(crate) enum Command {
    Publish(Vec<u8>),
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response>>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Connection {
        peer: PeerId,
        reply: oneshot::Sender<Option<bool>>,
    },
    Link {
        peer: PeerId,
        reply: oneshot::Sender<Option<Link>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Forget {
        peer: PeerId,
    },
    /// Answer the DHT's questions, so that others find this node by its id
    /// (a client that receives: friends' letters come to it).
    Findable,
    Shutdown,
}

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    /// Counters of the bytes on this node's connections.
    metrics: Arc<libp2p::metrics::Registry>,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    /// The direct channel's client side (`None`: off).
    pub(crate) direct: Option<Arc<crate::direct::Dialer>>,
    /// Where this node serves the direct channel, if it does.
    direct_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Bytes that crossed a node's connections since it started: on its
/// libp2p connections' streams (our protocols with their framing,
/// identify, DHT lookups, multistream negotiation, pings; Noise's handshake
/// and framing and Yamux's frame headers are below the streams and not in
/// it), and on the direct channel's connections it opened to fetch
/// (frames whole; what a peer serves there is not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Received.
    pub inbound: u64,
    /// Sent.
    pub outbound: u64,
    /// Of `inbound`, what came on the direct channel.
    pub direct_inbound: u64,
}

impl Client {
    /// What crossed this node's connections so far (see [`Traffic`]).
    pub fn traffic(&self) -> Traffic {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.metrics).is_err() {
            return Traffic::default();
        }
        let mut t = match &self.direct {
            Some(d) => {
                let inbound = d.inbound.load(std::sync::atomic::Ordering::Relaxed);
                let outbound = d.outbound.load(std::sync::atomic::Ordering::Relaxed);
                Traffic { inbound, outbound, direct_inbound: inbound }
            }
            None => Traffic::default(),
        };
        // Lines like `libp2p_bandwidth_bytes_total{protocols="/ip4/tcp",direction="Inbound"} 1234`.
        for line in text.lines().filter(|l| l.starts_with("libp2p_bandwidth_bytes_total{")) {
            let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if line.contains("direction=\"Inbound\"") {
                t.inbound += n;
            } else if line.contains("direction=\"Outbound\"") {
                t.outbound += n;
            }
        }
        t
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where this node serves the direct channel (a peer with a store),
    /// if it does.
    pub fn direct_addr(&self) -> Option<std::net::SocketAddr> {
        self.direct_addr
    }

    pub(crate) async fn command(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| Error::Shutdown)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Send one request to `peer` (found through the DHT if need be) and wait for its answer.
    /// Peers move (home devices get new addresses): if the addresses this node
    /// knew fail, it forgets them, looks the peer up again and retries once.
    /// Range requests go on the direct channel where the peer offers it.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response> {
        if let (Some(d), Request::Ranges { .. }) = (&self.direct, &request)
            && let crate::direct::Outcome::Answered(r) = d.request(self, peer, &request).await
        {
            return Ok(r);
        }
        self.request_p2p(peer, request).await
    }

    /// [`Client::request`] on libp2p.
    pub(crate) async fn request_p2p(&self, peer: PeerId, request: Request) -> Result<Response> {
        let retry = request.clone();
        match self.ask(|reply| Command::Request { peer, request, reply }).await? {
            Err(Error::Unreachable { .. }) => {
                self.tx.send(Command::Forget { peer }).await.map_err(|_| Error::Shutdown)?;
                self.ask(|reply| Command::Request { peer, request: retry, reply }).await?
            }
            other => other,
        }
    }

    /// Make sure this node is connected to `peer` (found through the DHT if
    /// need be), for protocols that open their own streams.
    pub(crate) async fn connect(&self, peer: PeerId) -> Result<()> {
        if self.connection(peer).await?.is_some() {
            return Ok(());
        }
        // Any answer, even a refusal, means a connection stands: the request
        // path knows how to find, dial and retry a peer that moved. A peer
        // not found may be one the DHT has not heard of yet (a node just
        // started, or this one's table still filling on a busy machine):
        // looked up twice more, after half a second and a second.
        let mut wait = Duration::from_millis(500);
        for left in (0..3).rev() {
            match self.request(peer, Request::Usage).await {
                Err(Error::Unreachable { .. }) if left > 0 => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other.map(|_| ()),
            }
        }
        Err(Error::Shutdown)
    }

    /// Find a peer's addresses by its id alone.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>> {
        self.ask(|reply| Command::FindPeer { peer, reply }).await?
    }

    /// The peers this node's DHT knows.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Addresses this node listens on (relayed ones included).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// The addresses it listens on once each of `listen` (what it was told
    /// to listen on) has one of its kind, or what it has after `within`:
    /// the transports report theirs one by one, in no set order (TCP's may
    /// come after QUIC's).
    pub async fn listening(&self, listen: &[Multiaddr], within: Duration) -> Vec<Multiaddr> {
        let kind = |a: &Multiaddr| a.iter().map(|p| p.tag()).collect::<Vec<_>>();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let a = self.listen_addrs().await.unwrap_or_default();
            let all = listen.iter().all(|l| a.iter().any(|x| kind(x) == kind(l)));
            if all || tokio::time::Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Client::listening`], each address ending in this node's `/p2p/ID`:
    /// what another node dials to reach it.
    pub async fn dial_addrs(&self, listen: &[Multiaddr], within: Duration) -> Vec<Multiaddr> {
        let id = self.peer_id;
        self.listening(listen, within).await.into_iter().map(|a| a.with(libp2p::multiaddr::Protocol::P2p(id))).collect()
    }

    /// Whether this node is connected to `peer`, and whether through a relay.
    pub async fn connection(&self, peer: PeerId) -> Result<Option<bool>> {
        self.ask(|reply| Command::Connection { peer, reply }).await
    }

    /// The connection to `peer`, if any: relayed or direct, and whether hole punched.
    pub async fn link(&self, peer: PeerId) -> Result<Option<Link>> {
        self.ask(|reply| Command::Link { peer, reply }).await
    }

    /// How this node is reachable: AutoNAT's verdict, external and relay addresses.
    pub async fn status(&self) -> Result<Status> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Let others find this node by its peer id through the DHT (a client
    /// is not found otherwise: it only asks).
    pub(crate) fn findable(&self) {
        let _ = self.tx.try_send(Command::Findable);
    }

    /// Stop the node: in-flight requests finish (or their puts roll back), then the loop ends.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

pub(crate) use proto::now;

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1)) && !is_circuit(addr)
}

/// Whether an address is on the loopback network (127.0.0.0/8, ::1).
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().filter_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None }).last()
}

/// Start a node on the current tokio runtime.
pub async fn start(
    config: Config,
    key: Keypair,
    store: Option<Store>,
) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    start_with(config, key, store, Arc::new(crate::Honest)).await
}

/// Start a node whose answers pass through `answers` on their way out (a
/// test's lying or slow peer; [`start`] sends them as they are).
pub async fn start_with(
    config: Config,
    key: Keypair,
    store: Option<Store>,
    answers: Arc<dyn crate::Answers>,
) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    let peer_id = key.public().to_peer_id();
    let relay_server = config.role == Role::Bootstrap;
    let kad_server = config.role != Role::Client;
    let (limits, timeout) = (config.limits, config.request_timeout);
    let gossip = match &config.ledger {
        Some(g) => Some(crate::ledger::behaviour(&key, g.max_bytes)?),
        None => None,
    };
    let mut registry = libp2p::metrics::Registry::default();
    // One room for the long requests arriving on libp2p, every connection's.
    let room = crate::codec::RequestRoom::default();
    let mut swarm = build_swarm(&key, relay_server, kad_server, (limits, room), timeout, gossip, &mut registry)?;
    if let (Some(g), Some(gs)) = (&config.ledger, swarm.behaviour_mut().gossip.as_mut()) {
        gs.subscribe(&libp2p::gossipsub::IdentTopic::new(g.topic.clone()))
            .map_err(|e| Error::Config(format!("subscribing to {}: {e}", g.topic)))?;
    }
    let mut control = swarm.behaviour().stream.new_control();
    let gate = Gate::new(Bounds {
        per_peer: config.max_inflight_per_peer,
        total: config.max_inflight,
        bytes_per_peer: config.max_held_bytes_per_peer,
        bytes_total: config.max_held_bytes,
    });
    let serving = Arc::new(Serving {
        store: store.clone(),
        key: key.clone(),
        trust: config.trust.iter().copied().collect(),
        private: config.private.clone(),
        gate: gate.clone(),
        limits,
        request_timeout: timeout,
        default_expiry: config.default_expiry,
        answers: answers.clone(),
    });
    let mut stream_tasks = accept_streams(&mut control, &serving)?;
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    }
    let mut bootstrap_ids = HashSet::new();
    for addr in &config.bootstrap {
        let id = peer_of(addr)
            .ok_or_else(|| Error::Config(format!("bootstrap address {addr} must end in /p2p/<peer id>")))?;
        bootstrap_ids.insert(id);
        swarm.behaviour_mut().kad.add_address(&id, addr.clone());
        swarm.behaviour_mut().autonat.add_server(id, Some(addr.clone()));
        swarm.dial(addr.clone()).map_err(|e| Error::Config(format!("cannot dial {addr}: {e}")))?;
    }
    // Last of what may fail: nothing is left listening if start fails.
    let ips = crate::direct::listen_ips(&config.listen);
    let office = match ips.first() {
        Some(ip) if config.direct && store.is_some() && config.role == Role::Peer => {
            let at = std::net::SocketAddr::new(*ip, config.direct_port);
            let opened = crate::direct::open_office(&ips, config.direct_port, serving.clone()).await;
            let (office, task) = opened.map_err(|e| {
                for t in &stream_tasks {
                    t.abort();
                }
                Error::Config(format!("listening for the direct channel on {at}: {e} (another --direct-port?)"))
            })?;
            stream_tasks.push(task);
            Some(office)
        }
        _ => None,
    };
    let direct = config.direct.then(|| Arc::new(crate::direct::Dialer::default()));
    let direct_addr = office.as_ref().map(|o| o.addr());
    let (tx, rx) = mpsc::channel(64);
    let (done_tx, done_rx) = mpsc::channel(256);
    let node = EventLoop {
        swarm,
        key,
        store,
        trust: config.trust.iter().copied().collect(),
        gate,
        stream_tasks,
        office,
        answers,
        rx,
        done_tx,
        done_rx,
        bootstrap_ids,
        reserved: HashSet::new(),
        pending: HashMap::new(),
        finds: HashMap::new(),
        waiting: HashMap::new(),
        answering: HashMap::new(),
        serving: 0,
        links: HashMap::new(),
        remotes: HashMap::new(),
        nat: Nat::Unknown,
        relayed_out: HashMap::new(),
        punched: HashMap::new(),
        relay_listeners: HashMap::new(),
        quic_observed: HashSet::new(),
        join_retry: None,
        join_backoff: JOIN_BACKOFF_MIN,
        config,
    };
    let handle = tokio::spawn(node.run());
    let metrics = Arc::new(registry);
    let client = Client { tx, peer_id, metrics, control, limits, request_timeout: timeout, direct, direct_addr };
    Ok((client, handle))
}

/// The swarm: TCP and QUIC, a relay client, and our behaviours.
fn build_swarm(
    key: &Keypair,
    relay_server: bool,
    kad_server: bool,
    limits: (Limits, crate::codec::RequestRoom),
    timeout: Duration,
    gossip: Option<libp2p::gossipsub::Behaviour>,
    registry: &mut libp2p::metrics::Registry,
) -> Result<libp2p::Swarm<Behaviour>> {
    Ok(SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_quic()
        // TCP as `with_tcp` builds it, its dials falling back to a port of their own.
        .with_other_transport(|key| -> std::result::Result<_, Box<dyn std::error::Error + Send + Sync>> {
            use libp2p::Transport as _;
            let tcp =
                crate::own_port::OwnPortFallback(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)));
            Ok(tcp
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux_config()))
        })
        .map_err(|e| Error::Config(format!("tcp transport: {e}")))?
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(|e| Error::Config(format!("relay transport: {e}")))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, relay_server, kad_server, limits, timeout, gossip)
        })
        .map_err(|e| Error::Config(format!("behaviour: {e}")))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(120))
                // Streams being negotiated at once on one connection: what a
                // peer may have on its way to us before any protocol sees it.
                .with_max_negotiating_inbound_streams(32)
        })
        .build())
}

/// Serve the put and get stream protocols: a task per protocol that hands
/// each inbound stream to its own task.
fn accept_streams(
    control: &mut libp2p_stream::Control,
    serving: &Arc<Serving>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut stream_tasks = Vec::new();
    for (proto, put) in [(PUT_PROTOCOL, true), (GET_PROTOCOL, false)] {
        let mut incoming =
            control.accept(proto).map_err(|e| Error::Config(format!("registering a stream protocol: {e}")))?;
        let ctx = Arc::clone(serving);
        stream_tasks.push(tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let ctx = ctx.clone();
                if put {
                    tokio::spawn(crate::stream::serve_put(ctx, peer, stream));
                } else {
                    tokio::spawn(crate::stream::serve_get(ctx, peer, stream));
                }
            }
        }));
    }
    Ok(stream_tasks)
}

/// yamux with as many streams per connection as the protocols need (8
/// requests per peer at once, plus identify, kad, ping, relay and slack),
/// not the default hundreds.
fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(64);
    c
}

type Done = (InboundRequestId, ResponseChannel<Response>, Response, Ticket);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    store: Option<Store>,
    trust: HashSet<PeerId>,
    /// Requests in service and bytes held, shared with the stream protocols.
    gate: Arc<Gate>,
    /// The put and get protocols' accept loops, stopped with the node.
    stream_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The direct channel's tickets (a peer with a store).
    office: Option<Arc<crate::direct::Office>>,
    /// The answer path's hook.
    answers: Arc<dyn crate::Answers>,
    config: Config,
    rx: mpsc::Receiver<Command>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    bootstrap_ids: HashSet<PeerId>,
    /// Bootstrap relays we hold a reservation on (peers without a listen address).
    reserved: HashSet<PeerId>,
    /// Requests on their way: to whom, who waits, and a copy to send again
    /// once if the connection closes under it (not kept for puts, which are
    /// large and which the SPN retries itself).
    pending: HashMap<OutboundRequestId, Pending>,
    /// DHT lookups in flight: the peer sought, who wants its addresses.
    finds: HashMap<kad::QueryId, PeerId>,
    /// Per sought peer: finds and requests waiting on the lookup.
    waiting: HashMap<PeerId, Vec<Waiter>>,
    /// Requests from acceptance until their answer is sent (or fails), each
    /// with its ticket: what bounds the memory a peer can tie up, not just
    /// the threads.
    answering: HashMap<InboundRequestId, Ticket>,
    /// Requests being served on blocking threads (drained at shutdown).
    serving: usize,
    /// Open connections per peer: (direct, relayed).
    links: HashMap<PeerId, (u32, u32)>,
    /// The remote address of each connected peer's newest direct connection.
    remotes: HashMap<PeerId, Multiaddr>,
    nat: Nat,
    /// Relayed connections this node dialled, per peer: closed once a hole
    /// punch gave a direct one and none of our requests is on its way.
    relayed_out: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Peers a hole punch connected us to directly, and when.
    punched: HashMap<PeerId, tokio::time::Instant>,
    /// Our relay listeners (reservations), by the bootstrap they are on.
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, PeerId>,
    /// Bootstrap nodes we dialled over QUIC to learn our outside UDP address.
    quic_observed: HashSet<PeerId>,
    /// When to try joining again after a bootstrap node could not be
    /// reached or the DHT walk failed (sooner than the 30 s tick: a node
    /// that starts under load, or before the bootstrap node, must not stay
    /// unknown for a minute), and the next wait after that.
    join_retry: Option<tokio::time::Instant>,
    join_backoff: Duration,
}

/// The first and the longest wait before joining again after a failure.
const JOIN_BACKOFF_MIN: Duration = Duration::from_secs(1);
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Sleep until `t` (never, if `None`: the caller guards on it).
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A request on its way: to whom, who waits, and what to send again.
type Pending = (PeerId, oneshot::Sender<Result<Response>>, Option<Request>);

enum Waiter {
    Find(oneshot::Sender<Result<Vec<Multiaddr>>>),
    Request(Request, oneshot::Sender<Result<Response>>),
}

impl EventLoop {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            let retry = self.join_retry;
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.command(cmd),
                },
                Some((id, channel, response, ticket)) = self.done_rx.recv() => self.finished(id, channel, response, ticket),
                event = self.swarm.select_next_some() => self.event(event),
                () = sleep_until(retry), if retry.is_some() => {
                    self.join_retry = None;
                    self.join();
                }
                _ = tick.tick() => {
                    self.join();
                    // A relay reservation that ended is taken again.
                    self.reserve_all();
                }
            }
        }
        // Let requests being served finish (puts commit or roll back) and their
        // answers go out before the loop ends: the swarm is still driven.
        // No new streams; those being served (puts writing a shard) finish.
        for t in &self.stream_tasks {
            t.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while (self.serving > 0 || !self.answering.is_empty() || self.gate.in_service() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                Some((id, channel, response, ticket)) = self.done_rx.recv() => self.finished(id, channel, response, ticket),
                event = self.swarm.select_next_some() => self.event(event),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    fn known_addrs(&mut self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                if entry.node.key.preimage() == peer {
                    out.extend(entry.node.value.iter().cloned());
                }
            }
        }
        out
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(bytes) => {
                if let (Some(g), Some(gs)) = (&self.config.ledger, self.swarm.behaviour_mut().gossip.as_mut()) {
                    let topic = libp2p::gossipsub::IdentTopic::new(g.topic.clone());
                    if let Err(e) = gs.publish(topic, bytes) {
                        tracing::debug!("ledger gossip not sent: {e}");
                    }
                }
            }
            Command::Request { peer, request, reply } => {
                if self.swarm.is_connected(&peer) || !self.known_addrs(&peer).is_empty() {
                    self.send(peer, request, reply, Vec::new());
                } else {
                    self.lookup(peer, Waiter::Request(request, reply));
                }
            }
            Command::FindPeer { peer, reply } => {
                let addrs = self.known_addrs(&peer);
                if addrs.is_empty() {
                    self.lookup(peer, Waiter::Find(reply));
                } else {
                    let _ = reply.send(Ok(addrs));
                }
            }
            Command::Peers { reply } => {
                let mut out = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        out.push(PeerInfo {
                            peer: *entry.node.key.preimage(),
                            addrs: entry.node.value.iter().cloned().collect(),
                            relayed: None,
                        });
                    }
                }
                for p in &mut out {
                    p.relayed = self.links.get(&p.peer).map(|(direct, relayed)| *direct == 0 && *relayed > 0);
                }
                let _ = reply.send(out);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Connection { peer, reply } => {
                let _ = reply.send(self.links.get(&peer).map(|(direct, relayed)| *direct == 0 && *relayed > 0));
            }
            Command::Link { peer, reply } => {
                let link = self.links.get(&peer).map(|(direct, relayed)| Link {
                    relayed: *direct == 0 && *relayed > 0,
                    hole_punched: *direct > 0 && self.punched.contains_key(&peer),
                    remote: if *direct > 0 { self.remotes.get(&peer).cloned() } else { None },
                });
                let _ = reply.send(link);
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    nat: self.nat,
                    external: self.swarm.external_addresses().cloned().collect(),
                    relayed: self.swarm.listeners().filter(|a| is_circuit(a)).cloned().collect(),
                });
            }
            Command::Forget { peer } => {
                if !self.swarm.is_connected(&peer) {
                    self.swarm.behaviour_mut().kad.remove_peer(&peer);
                }
            }
            Command::Findable => self.swarm.behaviour_mut().kad.set_mode(Some(libp2p::kad::Mode::Server)),
            Command::Shutdown => {}
        }
    }

    fn lookup(&mut self, peer: PeerId, waiter: Waiter) {
        let first = !self.waiting.contains_key(&peer);
        self.waiting.entry(peer).or_default().push(waiter);
        if first {
            let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            self.finds.insert(id, peer);
        }
    }

    fn send(
        &mut self,
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response>>,
        addrs: Vec<Multiaddr>,
    ) {
        let again = (!matches!(request, Request::Put { .. })).then(|| request.clone());
        let id = self.swarm.behaviour_mut().shard.send_request_with_addresses(&peer, Ok(request), addrs);
        self.pending.insert(id, (peer, reply, again));
    }

    fn found(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        for w in self.waiting.remove(&peer).unwrap_or_default() {
            match w {
                Waiter::Find(reply) => {
                    let r = if addrs.is_empty() {
                        Err(Error::Unreachable { peer: peer.to_string(), reason: "not found in the DHT".to_string() })
                    } else {
                        Ok(addrs.clone())
                    };
                    let _ = reply.send(r);
                }
                Waiter::Request(request, reply) => {
                    if addrs.is_empty() && !self.swarm.is_connected(&peer) {
                        let _ = reply.send(Err(Error::Unreachable {
                            peer: peer.to_string(),
                            reason: "not found in the DHT".to_string(),
                        }));
                    } else {
                        self.send(peer, request, reply, addrs.clone());
                    }
                }
            }
        }
    }

    fn finished(
        &mut self,
        id: InboundRequestId,
        channel: ResponseChannel<Response>,
        response: Response,
        ticket: Ticket,
    ) {
        self.serving = self.serving.saturating_sub(1);
        // The answer's bytes stay held until it is sent (or fails).
        if self.swarm.behaviour_mut().shard.send_response(channel, response).is_ok() {
            self.answering.insert(id, ticket);
        }
    }

    /// The answer to `id` was sent, or will never be: the peer may ask again.
    fn answered(&mut self, id: InboundRequestId) {
        self.answering.remove(&id);
    }

    /// Whether this node still owes `peer` answers.
    fn owes(&self, peer: &PeerId) -> bool {
        self.answering.values().any(|t| t.peer() == *peer)
    }

    fn inbound(&mut self, peer: PeerId, id: InboundRequestId, request: Request, channel: ResponseChannel<Response>) {
        if let Request::Direct { connections } = request {
            let r = match &self.office {
                Some(o) => o.issue(peer, connections),
                None => Response::Error {
                    code: Code::BadRequest,
                    message: "this node has no direct channel; ask on /ionshard/shard/1".to_string(),
                },
            };
            let _ = self.swarm.behaviour_mut().shard.send_response(channel, r);
            return;
        }
        let Some(mut ticket) = self.gate.enter(peer, self.trust.contains(&peer)) else {
            let busy = Response::Error { code: Code::Busy, message: "too many requests at once; retry".to_string() };
            let _ = self.swarm.behaviour_mut().shard.send_response(channel, busy);
            return;
        };
        self.serving += 1;
        let (store, key, trusted) = (self.store.clone(), self.key.clone(), self.trust.contains(&peer));
        let (default_expiry, answers, private) =
            (self.config.default_expiry, self.answers.clone(), self.config.private.clone());
        let marker = self.config.retire_marker.clone().filter(|_| matches!(request, Request::Status));
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let retiring = marker.is_some_and(|m| m.exists());
            let state = crate::serve::NodeState { retiring };
            let caller = crate::private::Caller { peer, trusted, private: private.as_deref() };
            let served = (store.as_ref(), &key, default_expiry, answers.as_ref());
            let response = crate::serve::answer(served, &caller, request, Some(&mut ticket), state);
            let _ = done.blocking_send((id, channel, response, ticket));
        });
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(libp2p::gossipsub::Event::Message { message, .. })) => {
                if let (Some(g), Some(from)) = (&self.config.ledger, message.source)
                    && g.inbound.try_send((from, message.data)).is_err()
                {
                    tracing::debug!("ledger inbound queue full: a gossip message dropped");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // A bootstrap node must be reachable where it listens (unless its
                // operator said where else); a peer's addresses are confirmed by
                // AutoNAT first, so a peer behind NAT does not announce
                // addresses nobody can dial.
                if self.config.role == Role::Bootstrap && self.config.external.is_empty() && !is_circuit(&address) {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                // A relay reservation ended (refused, not renewed, its
                // connection gone): take a new one at the next tick.
                if let Some(id) = self.relay_listeners.remove(&listener_id) {
                    tracing::info!(relay = %id, "relay reservation ended: {reason:?}");
                    self.reserved.remove(&id);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                self.connected(peer_id, &endpoint, connection_id)
            }
            SwarmEvent::ConnectionClosed { peer_id, endpoint, connection_id, cause, .. } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                self.disconnected(peer_id, &endpoint, connection_id)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                // A node that sees us at an address other than loopback is on
                // another host: its loopback addresses would reach ourselves.
                let remote = !is_loopback(&info.observed_addr);
                if self.bootstrap_ids.contains(&peer_id) {
                    self.observe_over_quic(peer_id, &info.listen_addrs);
                }
                for a in info.listen_addrs {
                    if !(remote && is_loopback(&a)) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(r),
                step,
                ..
            })) => self.closest_peers(id, r, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(r),
                step,
                ..
            })) => {
                if let Err(e) = r
                    && step.last
                    && !self.config.bootstrap.is_empty()
                {
                    self.join_failed(&format!("the DHT walk failed: {e:?}"));
                }
            }
            // A dial over another transport (QUIC, to learn our UDP address)
            // may fail while we are connected: that is no failure to join.
            SwarmEvent::OutgoingConnectionError { peer_id: Some(id), error, .. }
                if self.bootstrap_ids.contains(&id) && !self.swarm.is_connected(&id) =>
            {
                self.join_failed(&format!("bootstrap node {id} unreachable: {error}"));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                self.nat = match new {
                    autonat::NatStatus::Public(addr) => {
                        tracing::info!(%addr, "reachable from outside (confirmed by AutoNAT)");
                        Nat::Public
                    }
                    autonat::NatStatus::Private => {
                        tracing::info!("behind NAT or a firewall: reachable through a relay");
                        Nat::Private
                    }
                    autonat::NatStatus::Unknown => Nat::Unknown,
                };
                self.reserve_all();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "hole punched: direct connection");
                    self.punched.insert(remote_peer_id, tokio::time::Instant::now());
                }
                Err(e) => tracing::debug!(peer = %remote_peer_id, "hole punch failed: {e}"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Shard(ev)) => self.shard_event(ev),
            _ => {}
        }
    }

    /// A connection to `peer_id` opened: count it (relayed or direct), note
    /// a hole punch, and take a relay slot from a bootstrap node if need be.
    fn connected(
        &mut self,
        peer_id: PeerId,
        endpoint: &libp2p::core::ConnectedPoint,
        connection_id: libp2p::swarm::ConnectionId,
    ) {
        if self.bootstrap_ids.contains(&peer_id) {
            self.join_backoff = JOIN_BACKOFF_MIN;
        }
        let link = self.links.entry(peer_id).or_default();
        // A new session, relayed or direct: not upgraded by a punch
        // (unless one just happened: a punched TCP connection can be
        // reset and another punched one take its place).
        if *link == (0, 0) && self.punched.get(&peer_id).is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            self.punched.remove(&peer_id);
        }
        if endpoint.is_relayed() {
            link.1 += 1;
            if endpoint.is_dialer() {
                self.relayed_out.entry(peer_id).or_default().insert(connection_id);
            }
        } else {
            link.0 += 1;
            self.remotes.insert(peer_id, endpoint.get_remote_address().clone());
        }
        // A direct connection next to a relayed one: a hole punch
        // (whichever side's dial won it). The relay is dropped later,
        // once the direct connection has carried an answer: a punched
        // TCP connection may still be reset in its first moments.
        if !endpoint.is_relayed() && link.1 > 0 {
            self.punched.insert(peer_id, tokio::time::Instant::now());
        }
        // A peer with nowhere to listen, or behind NAT, is reached
        // through its bootstrap's relay.
        if self.bootstrap_ids.contains(&peer_id) && self.needs_relay() {
            self.reserve(peer_id);
        }
    }

    /// A connection to `peer_id` closed: forget what went with the last one.
    fn disconnected(
        &mut self,
        peer_id: PeerId,
        endpoint: &libp2p::core::ConnectedPoint,
        connection_id: libp2p::swarm::ConnectionId,
    ) {
        if let Some(set) = self.relayed_out.get_mut(&peer_id) {
            set.remove(&connection_id);
        }
        if let Some(link) = self.links.get_mut(&peer_id) {
            if endpoint.is_relayed() {
                link.1 = link.1.saturating_sub(1)
            } else {
                link.0 = link.0.saturating_sub(1)
            }
            if *link == (0, 0) {
                self.links.remove(&peer_id);
                self.remotes.remove(&peer_id);
                self.relayed_out.remove(&peer_id);
                // The punch is remembered a little while (see ConnectionEstablished).
                if self.punched.get(&peer_id).is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                    self.punched.remove(&peer_id);
                }
                // The relay reservation went with the connection: renew it on
                // reconnect; and learn our outside UDP port again (the NAT's
                // mapping may have expired meanwhile).
                self.reserved.remove(&peer_id);
                self.quic_observed.remove(&peer_id);
            }
        }
    }

    /// A step of a lookup: answer its waiters once the peer's addresses are
    /// known, or when the lookup ends (`last`) without them.
    fn closest_peers(&mut self, id: kad::QueryId, r: kad::GetClosestPeersResult, last: bool) {
        let Some(sought) = self.finds.get(&id).copied() else { return };
        let peers = match r {
            Ok(ok) => ok.peers,
            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
        };
        let mut addrs: Vec<Multiaddr> =
            peers.into_iter().filter(|p| p.peer_id == sought).flat_map(|p| p.addrs).collect();
        if addrs.is_empty() {
            addrs = self.known_addrs(&sought);
        }
        if !addrs.is_empty() || last {
            self.finds.remove(&id);
            self.found(sought, addrs);
        }
    }

    /// Open one QUIC connection to bootstrap `id` besides the TCP one we were
    /// given, so it tells us (identify) how our UDP port looks from outside:
    /// a hole punch over QUIC needs that address, and QUIC punches through
    /// NATs that TCP's simultaneous open does not.
    fn observe_over_quic(&mut self, id: PeerId, addrs: &[Multiaddr]) {
        let listens_quic = self.swarm.listeners().any(is_quic);
        // Joined over QUIC already: identify on that connection told us.
        let joined_over_quic = self.config.bootstrap.iter().any(|a| peer_of(a) == Some(id) && is_quic(a));
        if !listens_quic || joined_over_quic || !self.quic_observed.insert(id) {
            return;
        }
        let quic: Vec<Multiaddr> = addrs.iter().filter(|a| is_quic(a) && !is_loopback(a)).cloned().collect();
        let quic = if quic.is_empty() { addrs.iter().filter(|a| is_quic(a)).cloned().collect() } else { quic };
        if quic.is_empty() {
            return;
        }
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(id)
            .addresses(quic)
            .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %id, "quic dial to bootstrap: {e}");
        }
    }

    /// A peer listens on a relay when it has no address of its own, or when
    /// AutoNAT found that nobody can dial the ones it has.
    fn needs_relay(&self) -> bool {
        self.config.role == Role::Peer && (self.config.listen.is_empty() || self.nat == Nat::Private)
    }

    /// Walk the DHT from what we know, and dial the bootstrap nodes we are
    /// not connected to (they restart too).
    fn join(&mut self) {
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
        for addr in self.config.bootstrap.clone() {
            if peer_of(&addr).is_some_and(|id| !self.swarm.is_connected(&id)) {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    /// Joining failed (a bootstrap node unreachable, the DHT walk failed):
    /// try again soon, each wait twice the last, up to the 30 s tick. The
    /// wait starts short again only once a bootstrap node connects, so a
    /// bootstrap node that stays down costs a walk and a dial every 30 s,
    /// not every second.
    fn join_failed(&mut self, why: &str) {
        if self.join_retry.is_none() {
            tracing::info!("joining: {why}; trying again in {:?}", self.join_backoff);
            self.join_retry = Some(tokio::time::Instant::now() + self.join_backoff);
            self.join_backoff = (self.join_backoff * 2).min(JOIN_BACKOFF_MAX);
        }
    }

    /// Reserve a slot on every connected bootstrap node's relay, if this node needs one.
    fn reserve_all(&mut self) {
        if self.needs_relay() {
            for id in self.bootstrap_ids.clone() {
                if self.swarm.is_connected(&id) {
                    self.reserve(id);
                }
            }
        }
    }

    /// Reserve a slot on bootstrap `id`'s relay (once per connection to it).
    fn reserve(&mut self, id: PeerId) {
        if !self.reserved.insert(id) {
            return;
        }
        if let Some(addr) = self.config.bootstrap.iter().find(|a| peer_of(a) == Some(id)) {
            match self.swarm.listen_on(addr.clone().with(Protocol::P2pCircuit)) {
                Ok(listener) => {
                    self.relay_listeners.insert(listener, id);
                }
                Err(e) => {
                    self.reserved.remove(&id);
                    tracing::warn!(%addr, "relay reservation failed: {e}");
                }
            }
        }
    }

    /// After a hole punch, close the relayed connections we dialled to `peer`
    /// once the direct one has carried an answer: request-response spreads
    /// requests over all connections, and the relay should carry none of
    /// them. Our requests on their way over the relay fail with the closed
    /// connection and are sent again (see `shard_event`).
    fn drop_idle_relay(&mut self, peer: PeerId) {
        if !self.punched.contains_key(&peer) || self.links.get(&peer).is_none_or(|l| l.0 == 0) {
            return;
        }
        // Answers we still owe the peer would be cut off with the connection.
        if self.owes(&peer) {
            return;
        }
        for id in self.relayed_out.remove(&peer).unwrap_or_default() {
            self.swarm.close_connection(id);
        }
    }

    fn shard_event(&mut self, ev: request_response::Event<std::result::Result<Request, Malformed>, Response>) {
        match ev {
            request_response::Event::Message { peer, message, connection_id } => match message {
                request_response::Message::Request { request_id, request: Ok(request), channel } => {
                    self.inbound(peer, request_id, request, channel)
                }
                request_response::Message::Request { request: Err(why), channel, .. } => {
                    tracing::debug!(%peer, "malformed request: {why}");
                    let answer = Response::Error { code: Code::BadRequest, message: why.to_string() };
                    let _ = self.swarm.behaviour_mut().shard.send_response(channel, answer);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply, _)) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                    // An answer over the punched connection: it works, the relay can go.
                    if !self.relayed_out.get(&peer).is_some_and(|s| s.contains(&connection_id)) {
                        self.drop_idle_relay(peer);
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some((_, reply, again)) = self.pending.remove(&request_id) {
                    // A connection closed under the request (a relay dropped
                    // after a hole punch, say) while another is still open:
                    // send it again, once, over what is left.
                    if matches!(error, request_response::OutboundFailure::ConnectionClosed)
                        && self.swarm.is_connected(&peer)
                        && let Some(request) = again
                    {
                        let id = self.swarm.behaviour_mut().shard.send_request(&peer, Ok(request));
                        self.pending.insert(id, (peer, reply, None));
                        return;
                    }
                    let e = match error {
                        request_response::OutboundFailure::Timeout => Error::Timeout { peer: peer.to_string() },
                        request_response::OutboundFailure::DialFailure => {
                            Error::Unreachable { peer: peer.to_string(), reason: "dial failed".to_string() }
                        }
                        other => Error::Protocol(format!("request to {peer}: {other}")),
                    };
                    let _ = reply.send(Err(e));
                }
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                tracing::debug!(%peer, "inbound request failed: {error}");
                self.answered(request_id);
            }
            request_response::Event::ResponseSent { request_id, .. } => self.answered(request_id),
        }
    }
}
