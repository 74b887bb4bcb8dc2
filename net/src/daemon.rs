//! Long-running nodes as library calls: a client that joins the network for
//! one job ([`join`]), and a peer or bootstrap daemon ([`Daemon`]) with its
//! background work: the sweep of expired shards and a watch on
//! reachability. The CLI's `ionshard node`, the sandbox and the tests start
//! nodes through these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use store::Store;

use crate::error::{Error, Result};
use crate::node::{Client, Config, Nat, Role, Status, is_loopback, start_with};

/// A client node's config: it listens on an ephemeral port of the bootstrap
/// nodes' kind of address (loopback for a loopback network, every interface
/// otherwise), so that dials go out from that port and a hole punch (DCUtR)
/// can turn a relayed connection to a peer behind NAT into a direct one.
pub fn client_config(bootstrap: &[Multiaddr]) -> Config {
    let loopback = !bootstrap.is_empty() && bootstrap.iter().all(is_loopback);
    let host: std::net::Ipv4Addr = if loopback { [127, 0, 0, 1].into() } else { [0, 0, 0, 0].into() };
    let tcp = Multiaddr::empty().with(host.into()).with(libp2p::multiaddr::Protocol::Tcp(0));
    let quic = Multiaddr::empty()
        .with(host.into())
        .with(libp2p::multiaddr::Protocol::Udp(0))
        .with(libp2p::multiaddr::Protocol::QuicV1);
    Config { role: Role::Client, bootstrap: bootstrap.to_vec(), listen: vec![tcp, quic], ..Config::default() }
}

/// How long [`join`] waits for a first bootstrap connection.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// Join the network as a client (a fresh identity unless `key` is given),
/// for one job: fetch, put, ask. Returns once connected to a bootstrap node
/// (or after 10 s without one: requests then say what is unreachable), so
/// that the first lookups do not run on an empty routing table.
pub async fn join(bootstrap: &[Multiaddr], key: Option<Keypair>) -> Result<(Client, tokio::task::JoinHandle<()>)> {
    if bootstrap.is_empty() {
        return Err(Error::Config(
            "no bootstrap node to join through: name one (an address ending in /p2p/<peer id>)".into(),
        ));
    }
    let (client, handle) =
        crate::start(client_config(bootstrap), key.unwrap_or_else(Keypair::generate_ed25519), None).await?;
    let ids: Vec<PeerId> = bootstrap
        .iter()
        .filter_map(|a| {
            a.iter().find_map(|p| if let libp2p::multiaddr::Protocol::P2p(id) = p { Some(id) } else { None })
        })
        .collect();
    let deadline = Instant::now() + if ids.is_empty() { Duration::ZERO } else { JOIN_WAIT };
    'wait: while Instant::now() < deadline {
        for id in &ids {
            if client.connection(*id).await?.is_some() {
                break 'wait;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((client, handle))
}

/// How often expired shards are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long after its expiry a shard is swept: its owner sees it in
/// `ionshard store expired` meanwhile and may clear it at once
/// (`store clear-expired`); a late renewal still finds it.
pub(crate) const SWEEP_GRACE: u64 = 7 * 86_400;

/// A running peer or bootstrap node with its background work.
pub struct Daemon {
    /// The node.
    pub client: Client,
    /// Its peer id.
    pub peer_id: PeerId,
    node: tokio::task::JoinHandle<()>,
    chores: Vec<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// Start the node; a peer with a store sweeps every minute the shards
    /// whose expiry passed more than a week (`SWEEP_GRACE`) ago. `reachability` hears a line each time AutoNAT's verdict or the
    /// relay addresses change (whether the node is dialled directly or
    /// through a relay).
    pub async fn start(
        config: Config,
        key: Keypair,
        store: Option<Store>,
        reachability: impl Fn(String) + Send + 'static,
    ) -> Result<Daemon> {
        let peer_id = key.public().to_peer_id();
        let (client, node) = start_with(config, key, store.clone(), Arc::new(crate::Honest)).await?;
        let mut chores = vec![tokio::spawn(watch_reachability(client.clone(), reachability))];
        if let Some(s) = store {
            chores.push(tokio::spawn(sweep(s)));
        }
        Ok(Daemon { client, peer_id, node, chores })
    }

    /// The addresses it listens on, each ending in `/p2p/<peer id>`, once
    /// each of `listen` has one (at most 5 s: [`Client::listening`]).
    pub async fn listening(&self, listen: &[Multiaddr]) -> Vec<Multiaddr> {
        self.client.dial_addrs(listen, Duration::from_secs(5)).await
    }

    /// Stop: finish the requests in flight, then end.
    pub async fn stop(self) {
        for c in &self.chores {
            c.abort();
        }
        self.client.shutdown().await;
        let _ = self.node.await;
    }
}

async fn sweep(store: Store) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let s = store.clone();
        let before = proto::now().saturating_sub(SWEEP_GRACE);
        match tokio::task::spawn_blocking(move || s.sweep_expired(before)).await {
            Ok(Ok(gone)) if !gone.is_empty() => tracing::info!("swept {} expired shards", gone.len()),
            Ok(Err(e)) => tracing::warn!("sweeping expired shards: {e}"),
            _ => {}
        }
    }
}

/// The line to say when reachability is `s`, if there is one to say.
pub fn reachability_line(s: &Status) -> Option<String> {
    let list = |v: &[Multiaddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    Some(match s.nat {
        Nat::Public => format!("reachability: public at {}", list(&s.external)),
        Nat::Private if s.relayed.is_empty() => {
            "reachability: private (behind NAT or a firewall); waiting for a relay slot".to_string()
        }
        Nat::Private => format!("reachability: private (behind NAT or a firewall); relayed at {}", list(&s.relayed)),
        Nat::Unknown if !s.relayed.is_empty() => format!("reachability: relayed at {}", list(&s.relayed)),
        Nat::Unknown => return None,
    })
}

async fn watch_reachability(client: Client, say: impl Fn(String)) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Ok(s) = client.status().await else { return };
        let now = (s.nat, s.external.clone(), s.relayed.clone());
        if last.as_ref() == Some(&now) {
            continue;
        }
        if let Some(line) = reachability_line(&s) {
            say(line);
            last = Some(now);
        }
    }
}
