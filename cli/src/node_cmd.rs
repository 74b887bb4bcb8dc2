//! `ionshard node`, `ionshard id`, `ionshard shard put|get`, `ionshard peers`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use net::{Config, Multiaddr, PeerId, Role};
use serde::Deserialize;
use serde_json::json;
use store::Store;

use crate::size::{human, parse_size};

/// The TOML config file of `ionshard node --config` (flags add to it or override it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    role: Option<String>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    external: Vec<String>,
    dir: Option<PathBuf>,
    capacity: Option<String>,
    #[serde(default)]
    trust: Vec<String>,
    /// Seconds a shard is kept when its put names no expiry.
    default_expiry_secs: Option<u64>,
    /// The direct channel's port (0: any free one).
    direct_port: Option<u16>,
    /// Serve the direct channel (true unless said).
    direct: Option<bool>,
}

/// Options of `ionshard node`.
#[derive(clap::Args)]
pub(crate) struct NodeOpts {
    /// bootstrap or peer [default: peer].
    #[arg(long)]
    pub(crate) role: Option<String>,
    /// A TOML file with role, listen, bootstrap, external, dir, capacity, trust, default_expiry_secs,
    /// direct, direct_port.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1 (repeatable).
    /// A peer with none is reached through its bootstrap nodes' relays.
    #[arg(long)]
    pub(crate) listen: Vec<String>,
    /// A bootstrap node, /ip4/…/tcp/…/p2p/PEER_ID (repeatable).
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Vec<String>,
    /// An address this node is reachable at from outside, as you know it (a
    /// public IP, a port forward), e.g. /ip4/203.0.113.7/tcp/4001 (repeatable).
    /// Without one, a peer's addresses are announced once AutoNAT confirms them,
    /// and a peer behind NAT takes a slot on its bootstrap nodes' relays.
    #[arg(long)]
    pub(crate) external: Vec<String>,
    /// Directory for the identity key and the shard store [default: ~/.ionshard/node].
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Space lent to the network, e.g. 20GiB.
    #[arg(long)]
    pub(crate) capacity: Option<String>,
    /// Peer id of an SPN allowed to store shards here (repeatable).
    #[arg(long)]
    pub(crate) trust: Vec<String>,
    /// Follow the chain this genesis names (`ionshard ledger init` writes
    /// one): keep its blocks in DIR/ledger, answer questions about it.
    #[arg(long)]
    pub(crate) genesis: Option<PathBuf>,
    /// Produce blocks: this node's peer id (or its --producer-key's) must
    /// be one of the genesis's producers.
    #[arg(long, requires = "genesis")]
    pub(crate) produce: bool,
    /// Sign votes, proposals and checkpoints with this key file instead of
    /// the node key (created at mode 0600 if missing; refused if others may
    /// read it). The genesis or candidate names its id: `ionshard id --key
    /// FILE`, then `ledger init --producer ADDR=ID`.
    #[arg(long, requires = "produce")]
    pub(crate) producer_key: Option<PathBuf>,
    /// Sync every block from the first instead of starting a new chain
    /// store from a peer's state snapshot (whose checkpoint is checked
    /// against the producers; blocks before it are then not held here).
    #[arg(long, requires = "genesis")]
    pub(crate) no_snapshot: bool,
    /// TCP port of the direct channel, on the IP of each TCP --listen
    /// address: devices fetch ranges there outside libp2p, which costs them
    /// and this node less CPU per byte (open it in a firewall beside
    /// libp2p's port) [default: any free port].
    #[arg(long)]
    pub(crate) direct_port: Option<u16>,
    /// Serve no direct channel: every request on libp2p (devices fall back
    /// by themselves).
    #[arg(long, env = "IONSHARD_NO_DIRECT", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) no_direct: bool,
    /// Print the peer id and addresses as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("{what} {a:?} is not a multiaddr (like /ip4/1.2.3.4/tcp/4001)"))
        })
        .collect()
}

fn peer_ids(list: &[String]) -> Result<Vec<PeerId>> {
    list.iter()
        .map(|p| {
            p.parse::<PeerId>().with_context(|| format!("--trust {p:?} is not a peer id (`ionshard id` prints one)"))
        })
        .collect()
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub(crate) fn node(o: NodeOpts) -> Result<()> {
    let file: FileConfig = match &o.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not a valid node config", p.display()))?
        }
        None => FileConfig::default(),
    };
    let role = match o.role.or(file.role).as_deref() {
        Some("bootstrap") => Role::Bootstrap,
        Some("peer") | None => Role::Peer,
        Some(other) => bail!("--role {other:?}: use bootstrap or peer"),
    };
    let dir = o.dir.or(file.dir).unwrap_or_else(|| crate::files::home().join("node"));
    let capacity =
        o.capacity.or(file.capacity).map(|c| parse_size(&c).map_err(|e| anyhow!("--capacity: {e}"))).transpose()?;
    let mut listen = file.listen;
    listen.extend(o.listen);
    let mut bootstrap = file.bootstrap;
    bootstrap.extend(o.bootstrap);
    let mut trust = file.trust;
    trust.extend(o.trust);
    let mut external = file.external;
    external.extend(o.external);
    let genesis = o.genesis.as_deref().map(ledger::Genesis::load).transpose()?;
    let mut config = Config {
        role,
        listen: addrs(&listen, "--listen")?,
        bootstrap: addrs(&bootstrap, "--bootstrap")?,
        external: addrs(&external, "--external")?,
        trust: peer_ids(&trust)?,
        default_expiry: file.default_expiry_secs,
        retire_marker: Some(retire_marker(&dir)),
        direct: !o.no_direct && file.direct.unwrap_or(true),
        direct_port: o.direct_port.or(file.direct_port).unwrap_or(0),
        ..Config::default()
    };
    if let Some(port) = o.direct_port.or(file.direct_port) {
        // The channel opens only on a peer that serves it, on the IP of a TCP listen address.
        let why = if role == Role::Bootstrap {
            Some("a bootstrap node stores nothing and serves no direct channel")
        } else if !config.direct {
            Some("the direct channel is turned off (--no-direct, IONSHARD_NO_DIRECT or the config's `direct = false`)")
        } else if net::direct_ips(&config.listen).is_empty() {
            Some("the channel listens on the IP of a TCP --listen address, and there is none")
        } else {
            None
        };
        if let Some(why) = why {
            bail!("direct port {port} would not be used: {why}; drop --direct-port (or `direct_port` in the config)");
        }
    }
    if role == Role::Bootstrap && config.listen.is_empty() {
        bail!("a bootstrap node needs a fixed address: give --listen (e.g. /ip4/0.0.0.0/tcp/4001)");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key, created) = net::load_or_create_key(&dir.join("identity.key"))?;
    let mut inbound = None;
    let producer_key = match &o.producer_key {
        Some(f) => Some(crate::ledger_cmd::producer_key(f)?),
        None => None,
    };
    if let Some(g) = &genesis {
        let node = key.public().to_peer_id();
        let me = producer_key.as_ref().unwrap_or(&key).public().to_peer_id().to_string();
        let producer = g.producers.iter().any(|p| p.peer == me);
        if o.produce && !producer {
            eprintln!(
                "note: this node ({me}) is not one of the genesis's producers: it follows the chain and produces once \
                 elected (`ionshard ledger tx candidate`, then votes)"
            );
        }
        if o.produce && role != Role::Bootstrap {
            bail!("--produce: producers are bootstrap nodes (give --role bootstrap and a fixed --listen)");
        }
        // Stay connected to the producers: their votes travel between them.
        for p in g.producers.iter().filter(|p| p.node() != Some(node)) {
            config.bootstrap.extend(addrs(std::slice::from_ref(&p.addr), "a producer's address in the genesis")?);
        }
        let (gossip, rx) = crate::ledger_cmd::gossip(g);
        config.ledger = Some(gossip);
        inbound = Some(rx);
    }
    let store = if role == Role::Peer {
        let sdir = crate::store_cmd::store_dir(&dir);
        // Without --capacity, the quota the owner set last time stays.
        let (s, report) = match capacity {
            Some(cap) => Store::open(&sdir, store::Config::default().with_capacity(cap))?,
            None if sdir.join("index.redb").exists() => Store::open_as_saved(&sdir)?,
            None => Store::open(&sdir, store::Config::default())?,
        };
        if report.removed_partial > 0 || !report.missing.is_empty() {
            eprintln!("store mended after an unclean stop: {report:?}");
        }
        Some(s)
    } else {
        None
    };
    // A peer may keep its owner's drive: clients paired with it (in
    // DIR/drive/pairs.json) and logged in put and read private shards.
    let device = if role == Role::Peer { Some(std::sync::Arc::new(drive::Device::open(&dir)?)) } else { None };
    if let Some(d) = &device {
        config.private = Some(d.clone());
    }
    let config_bootstrap = config.bootstrap.clone();
    let rt = runtime()?;
    rt.block_on(async move {
        // stderr may be closed by whoever started us: that must not stop the node.
        let say = |line: String| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{line}");
        };
        let daemon = net::Daemon::start(config, key.clone(), store.clone(), say).await?;
        // A bootstrap node keeps the pairing mailbox: devices and clients
        // pair through it (`ionshard drive pair` / `join`). Served before
        // the node says it is up, so a pairing right after finds it.
        let _mailbox = if role == Role::Bootstrap { Some(serve_mailbox(&daemon.client)?) } else { None };
        let _drive = match &device {
            Some(d) => Some(serve_drive(&daemon.client, d.clone())?),
            None => None,
        };
        // It holds its owner's letters to friends while they are offline.
        let _letters = match &device {
            Some(d) => Some(crate::drive_msg::serve_device(&daemon.client, d.clone())?),
            None => None,
        };
        let peer_id = daemon.peer_id;
        let full: Vec<String> = daemon.listening(&addrs(&listen, "--listen")?).await.iter().map(ToString::to_string).collect();
        if o.json {
            let direct = daemon.client.direct_addr().map(|a| a.to_string());
            println!("{}", json!({ "peer_id": peer_id.to_string(), "role": format!("{role:?}").to_lowercase(), "listen": full, "direct": direct, "dir": dir.display().to_string() }));
        } else {
            println!("peer id {peer_id}{}", if created { " (new identity)" } else { "" });
            for a in &full {
                println!("listening on {a}");
            }
            if let Some(a) = daemon.client.direct_addr() {
                println!("direct channel on {a} (TCP: range answers outside libp2p)");
            }
            if let Some(s) = &store {
                let u = s.usage();
                println!("store {} shards, {} of {}", u.shards, human(u.bytes), human(u.capacity));
            }
        }
        let chain = match (&genesis, inbound) {
            (Some(g), Some(rx)) => {
                let ldir = dir.join("ledger");
                if !o.no_snapshot {
                    let mut peers: Vec<PeerId> = g.producers.iter().filter_map(|p| p.node()).collect();
                    peers.extend(config_bootstrap.iter().filter_map(crate::ledger_cmd::peer_in));
                    peers.retain(|p| *p != peer_id);
                    peers.sort();
                    peers.dedup();
                    crate::ledger_cmd::from_snapshot(g, &ldir, &daemon.client, &peers, Duration::from_secs(20))
                        .await?;
                }
                Some(crate::ledger_cmd::start(g, &ldir, producer_key.unwrap_or(key), &daemon.client, rx)?)
            }
            _ => None,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("shutting down: finishing requests in flight");
        if let Some(c) = chain {
            c.stop().await;
        }
        daemon.stop().await;
        anyhow::Ok(())
    })
}

/// Answer the drive protocol for the owner's paired clients.
fn serve_drive(client: &net::Client, device: std::sync::Arc<drive::Device>) -> Result<tokio::task::JoinHandle<()>> {
    let paired = device.clone();
    let long_from = move |p: &PeerId| paired.is_paired(p);
    Ok(client.serve_drive(drive::protocol::MAX_MESSAGE, long_from, move |peer, q| {
        let device = device.clone();
        async move {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            // The device writes files: off the async threads.
            tokio::task::spawn_blocking(move || device.answer(&peer, &q, now)).await.unwrap_or_default()
        }
    })?)
}

/// Serve the pairing mailbox (in memory: a restart forgets waiting codes,
/// whose devices then claim new ones).
fn serve_mailbox(client: &net::Client) -> Result<tokio::task::JoinHandle<()>> {
    let mailbox = std::sync::Arc::new(std::sync::Mutex::new(drive::mailbox::Mailbox::new()));
    Ok(client.serve_mailbox(move |peer, q| {
        let answer = match drive::mailbox::Request::decode(&q) {
            Ok(r) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                mailbox.lock().unwrap_or_else(|p| p.into_inner()).handle(peer, r, now, &mut rand::rng())
            }
            Err(e) => {
                drive::mailbox::Answer::Refused { reason: drive::mailbox::Refusal::BadRequest, message: e.to_string() }
            }
        };
        std::future::ready(answer.encode())
    })?)
}

/// `ionshard node …` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum NodeCommand {
    /// Retire this peer before it leaves for good: the SPNs that trust it
    /// rebuild its shards on other peers and delete them here. Waits, with
    /// progress, until it holds none, then says it can be switched off. The
    /// node must be running meanwhile.
    Retire(RetireOpts),
}

/// Options of `ionshard node retire`.
#[derive(clap::Args)]
pub(crate) struct RetireOpts {
    /// The node's directory [default: ~/.ionshard/node].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A bootstrap node, to reach the running node (repeatable).
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Give up waiting after this long (the node stays marked retiring; run
    /// again to go on waiting), e.g. 30m or 2h.
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "24h")]
    wait: Duration,
    /// Only mark the node retiring; do not wait.
    #[arg(long)]
    no_wait: bool,
    /// Take the retirement back: the node keeps the shards it still holds
    /// and may be given new ones.
    #[arg(long, conflicts_with = "no_wait")]
    cancel: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The file whose presence says a node in `dir` is being retired.
pub(crate) fn retire_marker(dir: &Path) -> PathBuf {
    dir.join("retiring")
}

pub(crate) fn run(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Retire(o) => retire(o),
    }
}

/// The peer id of the node in `dir` (which must have one).
pub(crate) fn node_id(dir: &Path) -> Result<PeerId> {
    let key_file = dir.join("identity.key");
    if !key_file.exists() {
        bail!("no node in {}: it has no identity.key (give --dir, the directory the node runs with)", dir.display());
    }
    Ok(net::load_or_create_key(&key_file)?.0.public().to_peer_id())
}

/// Mark the node in `dir` retiring (what its `Status` answers then say).
pub(crate) fn mark_retiring(dir: &Path) -> Result<PeerId> {
    let peer = node_id(dir)?;
    let marker = retire_marker(dir);
    // Written whole or not at all: a kill leaves no half-made marker.
    let tmp = dir.join("retiring.tmp");
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    std::fs::write(&tmp, format!("{{\"since\":{since}}}\n"))
        .and_then(|()| std::fs::rename(&tmp, &marker))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(peer)
}

fn retire(o: RetireOpts) -> Result<()> {
    let dir = o.dir.unwrap_or_else(|| crate::files::home().join("node"));
    if o.cancel {
        let peer = node_id(&dir)?;
        let marker = retire_marker(&dir);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", marker.display())),
        }
        if o.json {
            println!("{}", json!({ "peer_id": peer.to_string(), "retiring": false }));
        } else {
            println!("{peer} is no longer retiring: it keeps what it holds and may be given new shards");
        }
        return Ok(());
    }
    let peer = mark_retiring(&dir)?;
    if o.no_wait {
        if o.json {
            println!("{}", json!({ "peer_id": peer.to_string(), "retiring": true }));
        } else {
            println!("{peer} is marked retiring: its SPNs move its shards away while it runs");
        }
        return Ok(());
    }
    let started = Instant::now();
    let rt = runtime()?;
    let (first, last) = rt.block_on(async {
        let (client, _handle) = join(&o.bootstrap, None).await?;
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow!(
                "cannot reach node {peer} ({e}): is it running? Start it (`ionshard node --dir {}`) so it can \
                 hand its shards over; it stays marked retiring",
                dir.display()
            )
        };
        let ask = |client: net::Client| async move {
            tokio::time::timeout(Duration::from_secs(15), client.peer_status(peer))
                .await
                .map_err(|_| "no answer in 15 s".to_string())?
                .map_err(|e| e.to_string())
        };
        let first = ask(client.clone()).await.map_err(|e| unreachable(&e))?;
        if !first.retiring {
            bail!(
                "node {peer} does not say it is retiring: is it running from {} with this release of ionshard? \
                 (restart it from there)",
                dir.display()
            );
        }
        let pb = crate::progress::bar(Some(first.bytes.max(1)), "handing over", o.json);
        let deadline = started + o.wait;
        let mut last = first;
        let mut failing_since: Option<Instant> = None;
        while last.shards > 0 {
            if Instant::now() > deadline {
                pb.finish_and_clear();
                bail!(
                    "node {peer} still holds {} shard(s) ({}) after {:?}; it stays marked retiring: run this again \
                     to go on waiting (`ionshard spn peers` on its SPN shows the repair)",
                    last.shards,
                    human(last.bytes),
                    o.wait
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            match ask(client.clone()).await {
                Ok(st) => {
                    failing_since = None;
                    last = st;
                    pb.set_position(first.bytes.saturating_sub(st.bytes));
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(60) {
                        pb.finish_and_clear();
                        return Err(unreachable(&e));
                    }
                }
            }
        }
        pb.finish_and_clear();
        client.shutdown().await;
        anyhow::Ok((first, last))
    })?;
    let secs = started.elapsed().as_secs_f64();
    if o.json {
        println!(
            "{}",
            json!({ "peer_id": peer.to_string(), "retired": true, "handed_over_shards": first.shards,
                    "handed_over_bytes": first.bytes, "shards_left": last.shards, "seconds": secs })
        );
    } else {
        println!(
            "retired: {peer} handed over {} shard(s) ({}) in {secs:.0} s and holds none; it can be switched off",
            first.shards,
            human(first.bytes)
        );
    }
    Ok(())
}

/// A client node's config for `--bootstrap` addresses (see `net::client_config`).
pub(crate) fn client_config(bootstrap: &[String]) -> Result<Config> {
    Ok(net::client_config(&addrs(bootstrap, "--bootstrap")?))
}

pub(crate) fn id(key: Option<PathBuf>, json_out: bool) -> Result<()> {
    let path = key.unwrap_or_else(|| crate::files::home().join("identity.key"));
    let (key, created) = net::load_or_create_key(&path)?;
    let peer = key.public().to_peer_id();
    if json_out {
        println!("{}", json!({ "peer_id": peer.to_string(), "key": path.display().to_string(), "created": created }));
    } else {
        if created {
            eprintln!("created {}", path.display());
        }
        println!("{peer}");
    }
    Ok(())
}

/// Join the network as a client through `--bootstrap` (with the identity in `key` if given).
pub(crate) async fn join(
    bootstrap: &[String],
    key: Option<&Path>,
) -> Result<(net::Client, tokio::task::JoinHandle<()>)> {
    if bootstrap.is_empty() {
        bail!("give --bootstrap ADDR (a bootstrap node's address ending in /p2p/<peer id>)");
    }
    let key = key.map(|p| net::load_or_create_key(p).map(|k| k.0)).transpose()?;
    Ok(net::join(&addrs(bootstrap, "--bootstrap")?, key).await?)
}

fn find_timeout() -> Duration {
    Duration::from_secs(20)
}

pub(crate) async fn reach(client: &net::Client, peer: PeerId) -> Result<()> {
    let deadline = Instant::now() + find_timeout();
    loop {
        match client.find_peer(peer).await {
            Ok(a) if !a.is_empty() => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => bail!("peer {peer} was not found through the bootstrap nodes"),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `ionshard reach PEER`: can this machine reach a peer, and how (directly,
/// through a relay, or directly after a hole punch), and how fast.
pub(crate) fn reach_cmd(peer: String, bootstrap: Vec<String>, wait: u64, json_out: bool) -> Result<()> {
    let peer: PeerId = peer.parse().with_context(|| format!("{peer:?} is not a peer id"))?;
    runtime()?.block_on(async {
        let (client, _h) = join(&bootstrap, None).await?;
        reach(&client, peer).await?;
        let addrs = client.find_peer(peer).await.unwrap_or_default();
        let round_trip = || async {
            let t = Instant::now();
            // Any answer will do (a bootstrap node answers an error): it came back.
            client.request(peer, net::wire::Request::Usage).await.map(|_| t.elapsed())
        };
        let first = round_trip().await.with_context(|| format!("peer {peer} was found but did not answer"))?;
        // A relayed connection is upgraded by a hole punch in the background:
        // give it `wait` seconds.
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut link = client.link(peer).await?;
        while link.is_some_and(|l| l.relayed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            link = client.link(peer).await?;
        }
        // The request may have gone on the relayed connection just as the
        // hole punch replaced it (it is closed then): asked again, a few
        // times, before saying the peer stopped answering.
        let mut last = round_trip().await;
        for _ in 0..3 {
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            last = round_trip().await;
        }
        let last = last.with_context(|| format!("peer {peer} answered once, then not again"))?;
        let link = client.link(peer).await?;
        let path = match &link {
            Some(l) if l.relayed => "relayed",
            Some(_) => "direct",
            None => "gone",
        };
        let punched = link.as_ref().is_some_and(|l| l.hole_punched);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if json_out {
            println!(
                "{}",
                json!({ "peer": peer.to_string(), "path": path, "hole_punched": punched,
                        "first_rtt_ms": ms(first), "rtt_ms": ms(last),
                        "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>() })
            );
        } else {
            println!(
                "{peer}: {path}{}, round trip {:.1} ms (first {:.1} ms)",
                if punched { " (hole punched)" } else { "" },
                ms(last),
                ms(first)
            );
        }
        client.shutdown().await;
        anyhow::Ok(())
    })
}

pub(crate) fn peers(bootstrap: Vec<String>, json_out: bool) -> Result<()> {
    runtime()?.block_on(async {
        let (client, _h) = join(&bootstrap, None).await?;
        // Let the DHT fill: look ourselves up through the bootstrap nodes.
        let me = client.peer_id();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.find_peer(me)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let list = client.peers().await?;
        if json_out {
            let v: Vec<_> = list
                .iter()
                .map(|p| {
                    let relayed = p.addrs.iter().all(|a| a.to_string().contains("/p2p-circuit"));
                    json!({ "peer": p.peer.to_string(), "addrs": p.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "reach": if relayed { "relayed" } else { "direct" } })
                })
                .collect();
            println!("{}", json!({ "peers": v }));
        } else {
            for p in &list {
                let relayed = p.addrs.iter().all(|a| a.to_string().contains("/p2p-circuit"));
                println!("{} {}", p.peer, if relayed { "relayed" } else { "direct" });
                for a in &p.addrs {
                    println!("    {a}");
                }
            }
            eprintln!("{} peer(s) known to the DHT", list.len());
        }
        client.shutdown().await;
        anyhow::Ok(())
    })
}
