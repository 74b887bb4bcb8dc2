//! Nodes as tasks of the caller: real libp2p nodes with real redb stores
//! and a real SPN with its HTTP API, in one process (the tests' and the
//! benches' network).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{Answers, Client, Config, Keypair, Multiaddr, PeerId, Role};

use crate::{Error, Result, household};

/// A running node.
pub struct Node {
    /// Its handle.
    pub client: Client,
    /// Its event loop.
    pub handle: tokio::task::JoinHandle<()>,
    /// Its directory (identity-free: keys are in memory; the store is here).
    pub dir: PathBuf,
}

impl Node {
    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id()
    }

    /// Stop it (requests in flight finish first).
    pub async fn stop(self) {
        self.client.shutdown().await;
        let _ = self.handle.await;
    }
}

/// One storage peer of a network.
#[derive(Clone)]
pub struct PeerSpec {
    /// Listens on an address of its own (else reached only through the
    /// bootstrap's relay, as behind a NAT).
    pub listen: bool,
    /// Trusts [`Spec::trusted`] (the SPN's identity; else refuses its puts).
    pub trust_spn: bool,
    /// Store capacity in bytes.
    pub capacity: u64,
    /// Its answer path: `net::Honest`, or a test's liar.
    pub answers: Arc<dyn Answers>,
    /// Its identity (a fresh one if none).
    pub key: Option<Keypair>,
    /// Its address, overriding the spec's households (peers given one
    /// address share a household, as behind one NAT).
    pub address: Option<Ipv4Addr>,
}

impl PeerSpec {
    /// An honest peer with 1 GiB that listens and trusts the SPN.
    pub fn honest() -> PeerSpec {
        PeerSpec {
            listen: true,
            trust_spn: true,
            capacity: 1 << 30,
            answers: Arc::new(net::Honest),
            key: None,
            address: None,
        }
    }
}

/// What network to start.
#[derive(Clone)]
pub struct Spec {
    /// The storage peers.
    pub peers: Vec<PeerSpec>,
    /// Each peer on its own 127.0.0.x (see [`household`]); else all on 127.0.0.1.
    pub households: bool,
    /// Start an SPN (with its HTTP API on 127.0.0.1).
    pub spn: bool,
    /// The identity peers trust to put shards: the SPN's, or (without an
    /// SPN) a client's the caller starts with [`Network::device_as`].
    pub trusted: Keypair,
}

impl Spec {
    /// `n` honest peers, each in a household of its own (its own 127.0.0.x),
    /// and an SPN.
    pub fn honest(n: usize) -> Spec {
        Spec { peers: vec![PeerSpec::honest(); n], households: true, spn: true, trusted: Keypair::generate_ed25519() }
    }
}

/// The SPN of a network.
pub struct SpnNode {
    /// The SPN.
    pub spn: spn::Spn,
    /// Its libp2p node (a client).
    pub node: Node,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// The HTTP server.
    pub server: tokio::task::JoinHandle<()>,
}

/// A running network.
pub struct Network {
    /// The bootstrap node (also the relay).
    pub bootstrap: Node,
    /// Its address, ending in `/p2p/<peer id>`.
    pub boot_addr: Multiaddr,
    /// The storage peers, in the order of the spec.
    pub peers: Vec<Node>,
    /// The SPN, if the spec asked for one.
    pub spn: Option<SpnNode>,
}

/// Start one node. `listen`: on that address (TCP, port chosen by the system).
pub async fn start_node(
    role: Role,
    listen: Option<Ipv4Addr>,
    bootstrap: Vec<Multiaddr>,
    trust: Vec<PeerId>,
    store: Option<(&Path, u64)>,
    answers: Arc<dyn Answers>,
    key: Keypair,
) -> Result<Node> {
    let (store, dir) = match store {
        Some((dir, capacity)) => {
            let s = store::Store::open(dir.join("store"), store::Config::default().with_capacity(capacity))?.0;
            (Some(s), dir.to_path_buf())
        }
        None => (None, PathBuf::new()),
    };
    let listen = listen.map(|ip| Multiaddr::empty().with(ip.into()).with(net::Protocol::Tcp(0))).into_iter().collect();
    // A peer is retired as the CLI does it: a `retiring` file in its directory.
    let retire_marker = store.is_some().then(|| dir.join("retiring"));
    let config = Config { role, listen, bootstrap, trust, retire_marker, ..Config::default() };
    let (client, handle) = net::start_with(config, key, store, answers).await?;
    Ok(Node { client, handle, dir })
}

/// A node's first listen address with its peer id (waits up to 10 s).
pub async fn addr_of(client: &Client) -> Result<Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = client.listen_addrs().await?.into_iter().next() {
            return Ok(a.with(net::Protocol::P2p(client.peer_id())));
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady(format!("node {} has no listen address after 10 s", client.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Network {
    /// Start the network `spec` with its files under `root`; `tune` may
    /// change the SPN's config first. Returns once the SPN (if any) sees
    /// every peer (at most 20 s).
    pub async fn start(root: &Path, spec: &Spec, tune: impl FnOnce(&mut spn::Config)) -> Result<Network> {
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let honest: Arc<dyn Answers> = Arc::new(net::Honest);
        let key = Keypair::generate_ed25519;
        let bootstrap =
            start_node(Role::Bootstrap, Some(household(0)), vec![], vec![], None, honest.clone(), key()).await?;
        let boot_addr = addr_of(&bootstrap.client).await?;
        let spn_key = spec.trusted.clone();
        let spn_id = spn_key.public().to_peer_id();
        let mut peers = Vec::new();
        for (i, p) in spec.peers.iter().enumerate() {
            let dir = root.join(format!("peer{i}"));
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let ip = p.address.unwrap_or(if spec.households { household(i + 1) } else { household(0) });
            let trust = if p.trust_spn { vec![spn_id] } else { vec![] };
            let k = p.key.clone().unwrap_or_else(key);
            let listen = p.listen.then_some(ip);
            let node = start_node(
                Role::Peer,
                listen,
                vec![boot_addr.clone()],
                trust,
                Some((&dir, p.capacity)),
                p.answers.clone(),
                k,
            );
            peers.push(node.await?);
        }
        let mut net = Network { bootstrap, boot_addr, peers, spn: None };
        if spec.spn {
            let mut node =
                start_node(Role::Client, None, vec![net.boot_addr.clone()], vec![], None, honest, spn_key).await?;
            node.dir = root.to_path_buf();
            let mut cfg = spn::Config::new(root.join("spn"), SocketAddr::from((household(0), 0)), "t".into());
            cfg.bootstrap = vec![net.boot_addr.to_string()];
            cfg.max_upload = 1 << 30;
            tune(&mut cfg);
            let (spn, http, server) = spn::Spn::start(cfg, node.client.clone()).await?;
            net.spn = Some(SpnNode { spn, node, http, server });
            net.wait_spn_peers(spec.peers.len(), Duration::from_secs(20)).await?;
        }
        Ok(net)
    }

    /// Wait until the SPN has found and asked `want` peers for their free space.
    pub async fn wait_spn_peers(&self, want: usize, within: Duration) -> Result<()> {
        let Some(s) = &self.spn else { return Ok(()) };
        let deadline = Instant::now() + within;
        loop {
            s.spn.refresh_peers().await;
            let have = s.spn.peers()?.len();
            if have >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady(format!(
                    "the SPN sees {have} of {want} peers after {} s",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A device: a client node joined through the bootstrap.
    pub async fn device(&self) -> Result<Node> {
        self.device_as(Keypair::generate_ed25519()).await
    }

    /// A client node with identity `key`, joined through the bootstrap.
    pub async fn device_as(&self, key: Keypair) -> Result<Node> {
        let honest: Arc<dyn Answers> = Arc::new(net::Honest);
        start_node(Role::Client, None, vec![self.boot_addr.clone()], vec![], None, honest, key).await
    }
}
