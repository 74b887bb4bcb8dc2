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
}

/// Options of `ionshard node`.
#[derive(clap::Args)]
pub(crate) struct NodeOpts {
    /// bootstrap or peer [default: peer].
    #[arg(long)]
    pub(crate) role: Option<String>,
    /// A TOML file with role, listen, bootstrap, external, dir, capacity, trust, default_expiry_secs.
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
    let config = Config {
        role,
        listen: addrs(&listen, "--listen")?,
        bootstrap: addrs(&bootstrap, "--bootstrap")?,
        external: addrs(&external, "--external")?,
        trust: peer_ids(&trust)?,
        default_expiry: file.default_expiry_secs,
        ..Config::default()
    };
    if role == Role::Bootstrap && config.listen.is_empty() {
        bail!("a bootstrap node needs a fixed address: give --listen (e.g. /ip4/0.0.0.0/tcp/4001)");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key, created) = net::load_or_create_key(&dir.join("identity.key"))?;
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
    let rt = runtime()?;
    rt.block_on(async move {
        // stderr may be closed by whoever started us: that must not stop the node.
        let say = |line: String| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{line}");
        };
        let daemon = net::Daemon::start(config, key, store.clone(), say).await?;
        let peer_id = daemon.peer_id;
        let full: Vec<String> = daemon.listening(!listen.is_empty()).await.iter().map(ToString::to_string).collect();
        if o.json {
            println!("{}", json!({ "peer_id": peer_id.to_string(), "role": format!("{role:?}").to_lowercase(), "listen": full, "dir": dir.display().to_string() }));
        } else {
            println!("peer id {peer_id}{}", if created { " (new identity)" } else { "" });
            for a in &full {
                println!("listening on {a}");
            }
            if let Some(s) = &store {
                let u = s.usage();
                println!("store {} shards, {} of {}", u.shards, human(u.bytes), human(u.capacity));
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("shutting down: finishing requests in flight");
        daemon.stop().await;
        anyhow::Ok(())
    })
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
        let last = round_trip().await.with_context(|| format!("peer {peer} answered once, then not again"))?;
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
