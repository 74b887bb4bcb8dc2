//! `ionshard spn`: run a specific peer node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use crate::node_cmd;

/// Options of `ionshard spn`.
#[derive(clap::Args)]
pub(crate) struct SpnOpts {
    /// State directory (identity, token, redb state) [default: ~/.ionshard/spn].
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// HTTP API address (loopback by default; put TLS in front to offer it elsewhere, see the README).
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub(crate) http: SocketAddr,
    /// A bootstrap node (repeatable); also handed to devices in release bundles.
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Vec<String>,
    /// Largest object accepted, e.g. 16GiB.
    #[arg(long, value_parser = crate::size::size_arg, default_value = "64GiB")]
    pub(crate) max_object: u64,
    /// HTTP connections one source address may hold.
    #[arg(long, default_value_t = 32)]
    pub(crate) max_connections_per_ip: usize,
    /// How long peers keep backup data unless a backup run renews it (like 90d).
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "90d")]
    pub(crate) backup_window: std::time::Duration,
    /// Anchor the storage receipts peers sign on the chain of this genesis
    /// (`ionshard ledger init`), signed with the SPN's key.
    #[arg(long)]
    pub(crate) ledger: Option<PathBuf>,
    /// How often receipts are batched and their root anchored.
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "60s", requires = "ledger")]
    pub(crate) anchor_every: std::time::Duration,
    /// How often the peers of the batches made final since are credited
    /// with contribution points (one points transaction per 24 peers).
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "24h", requires = "ledger")]
    pub(crate) points_every: std::time::Duration,
    /// Print the peer id and API address as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) durability: DurabilityOpts,
}

/// How the SPN watches what it placed (see `ionshard spn health`).
#[derive(clap::Args, Clone)]
pub(crate) struct DurabilityOpts {
    /// How often each peer is asked for its usage (its heartbeat).
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "30s")]
    pub(crate) heartbeat: std::time::Duration,
    /// A peer unseen this long is lost: its shards are rebuilt elsewhere.
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "4h")]
    pub(crate) grace: std::time::Duration,
    /// Mean time between two audits of one peer (random, from half to one and a half times this).
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "6h")]
    pub(crate) audit_every: std::time::Duration,
    /// 4 KiB blocks per audit, at most (fewer for peers holding little: audits stay under 0.5% a day).
    #[arg(long, default_value_t = 100)]
    pub(crate) audit_blocks: u32,
    /// 4 KiB blocks per audit, at least, whatever the 0.5% budget allows (raise it on a small test network that audits every few seconds).
    #[arg(long, default_value_t = 1)]
    pub(crate) audit_min_blocks: u32,
    /// Failed audits among a peer's last 16 (or shards failing in one audit) that disqualify it.
    #[arg(long, default_value_t = 3)]
    pub(crate) disqualify_after: u32,
    /// How often segments are checked for repair.
    #[arg(long, value_parser = crate::size::duration_arg, default_value = "60s")]
    pub(crate) repair_every: std::time::Duration,
    /// Repair bandwidth cap per second (read plus written), e.g. 16MiB.
    #[arg(long, value_parser = crate::size::size_arg, default_value = "16MiB")]
    pub(crate) repair_rate: u64,
    /// Repair when a segment has this many healthy shards more than k [default: half of m, rounded up].
    #[arg(long)]
    pub(crate) repair_margin: Option<u8>,
    /// Allow more than m shards of a segment in one household or network when there are too few (a small test network).
    #[arg(long)]
    pub(crate) relax_domains: bool,
}

impl DurabilityOpts {
    pub(crate) fn settings(&self) -> spn::Settings {
        spn::Settings {
            heartbeat: self.heartbeat,
            grace: self.grace,
            audit_every: self.audit_every,
            audit_blocks: self.audit_blocks.max(1),
            audit_min_blocks: self.audit_min_blocks.max(1),
            disqualify_after: self.disqualify_after.max(1),
            repair_every: self.repair_every,
            repair_rate: self.repair_rate.max(1),
            repair_margin: self.repair_margin,
            relax_domains: self.relax_domains,
            ..spn::Settings::default()
        }
    }
}

/// The API token in `DIR/api.token`, created (mode 0600) on first start.
/// The operator's token, and the file it is in: none when it came from
/// IONSHARD_SPN_TOKEN (nothing is written then).
fn token(dir: &std::path::Path) -> Result<(String, Option<PathBuf>)> {
    let path = dir.join("api.token");
    if let Ok(t) = std::env::var("IONSHARD_SPN_TOKEN") {
        let t = t.trim().to_string();
        if t.len() < 16 {
            anyhow::bail!(
                "IONSHARD_SPN_TOKEN is set but shorter than 16 characters; use a long random token or unset it"
            );
        }
        return Ok((t, None));
    }
    let (bytes, _) = crate::files::load_or_create_secret(&dir.join("api.secret"))?;
    let t = data_encoding::HEXLOWER.encode(&bytes);
    if !path.exists() {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&path)?, t.as_bytes())?;
    }
    Ok((t, Some(path)))
}

pub(crate) fn spn(mut o: SpnOpts) -> Result<()> {
    let dir = o.dir.take().unwrap_or_else(|| crate::files::home().join("spn"));
    if o.bootstrap.is_empty() {
        anyhow::bail!(
            "give --bootstrap ADDR (a bootstrap node, /ip4/…/tcp/…/p2p/PEER_ID): the SPN joins the network through it"
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Its key, its token and its state are the operator's alone.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    let (key, _) = net::load_or_create_key(&dir.join("identity.key"))?;
    let peer_id = key.public().to_peer_id();
    let (token, token_file) = token(&dir)?;
    let genesis = o.ledger.as_deref().map(ledger::Genesis::load).transpose()?;
    let anchoring = genesis.map(|g| {
        let mut a = spn::Anchoring::new(g, key.clone());
        a.every = o.anchor_every;
        a.points_every = o.points_every;
        a
    });
    let rt = node_cmd::runtime()?;
    rt.block_on(async move {
        let mut ncfg = node_cmd::client_config(&o.bootstrap)?;
        if let Some(a) = &anchoring {
            // Reach the producers directly: they take the anchors and answer for the chain.
            for p in &a.genesis.producers {
                ncfg.bootstrap
                    .extend(node_cmd::addrs(std::slice::from_ref(&p.addr), "a producer's address in the genesis")?);
            }
        }
        let (client, handle) = net::start(ncfg, key, None).await?;
        let mut cfg = spn::Config::new(dir.clone(), o.http, token);
        cfg.bootstrap = o.bootstrap.clone();
        cfg.max_upload = o.max_object;
        cfg.http_limits.per_ip = o.max_connections_per_ip.max(1);
        cfg.durability = o.durability.settings();
        cfg.backup_window = o.backup_window;
        cfg.anchoring = anchoring;
        let (_spn, addr, server) = spn::Spn::start(cfg, client.clone()).await?;
        if o.json {
            println!(
                "{}",
                json!({ "peer_id": peer_id.to_string(), "http": format!("http://{addr}"),
                        "token_file": token_file.as_ref().map(|f| f.display().to_string()),
                        "dir": dir.display().to_string() })
            );
        } else {
            println!("SPN peer id {peer_id} (peers must --trust it)");
            match &token_file {
                Some(f) => println!("API on http://{addr}, token in {}", f.display()),
                None => println!("API on http://{addr}, token from IONSHARD_SPN_TOKEN"),
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        server.abort();
        client.shutdown().await;
        let _ = handle.await;
        anyhow::Ok(())
    })
}

fn operator(url: &str, token: Option<String>) -> Result<crate::http::Spn> {
    let t = crate::http::token(token, None)?
        .context("give the operator's token (--token, or IONSHARD_SPN_TOKEN; it is in the SPN's api.token)")?;
    crate::http::spn(url, Some(t))
}

/// `ionshard spn token issue`.
pub(crate) fn token_issue(url: &str, token: Option<String>, tenant: &str, label: &str, json_out: bool) -> Result<()> {
    let api = operator(url, token)?;
    let body = spn::types::NewToken { tenant: tenant.to_string(), label: label.to_string(), scope: Default::default() };
    let t = api.issue_token(&body)?;
    if json_out {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!("token {} for tenant {} (shown once; give it to the vendor as IONSHARD_SPN_TOKEN):", t.id, t.tenant);
        println!("{}", t.token);
    }
    Ok(())
}

/// `ionshard spn token list`.
pub(crate) fn token_list(url: &str, token: Option<String>, json_out: bool) -> Result<()> {
    let l = operator(url, token)?.tokens()?;
    if json_out {
        println!("{}", serde_json::to_string(&l)?);
    } else {
        for t in &l.tokens {
            let state = t.revoked.map_or("live".to_string(), |r| format!("revoked at {r}"));
            println!("{}  tenant {}  {}  {}  created {}  {}", t.id, t.tenant, t.scope, state, t.created, t.label);
        }
        if l.tokens.is_empty() {
            println!("no tokens issued (the operator's token is in the SPN's api.token)");
        }
    }
    Ok(())
}

/// `ionshard spn token revoke`.
pub(crate) fn token_revoke(url: &str, token: Option<String>, id: &str, json_out: bool) -> Result<()> {
    operator(url, token)?.revoke_token(id)?;
    if json_out {
        println!("{}", json!({ "revoked": id }));
    } else {
        println!("revoked token {id}: it no longer works");
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub(crate) enum SpnCommand {
    /// API tokens: one per tenant (vendor), which can publish and read only its own objects.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Durability: per object the lowest healthy shard count of any segment, segments at risk,
    /// the repair queue and bytes moved, peers lost and disqualified, audits and their cost.
    Health {
        /// One object (manifest CID) [default: all].
        object: Option<String>,
        #[command(flatten)]
        at: SpnAt,
    },
    /// The peers the SPN has seen: status (and why, if disqualified), uptime, audits, where it was seen.
    Peers {
        #[command(flatten)]
        at: SpnAt,
    },
    /// Set a peer's failure-domain labels (the SPN infers household and network itself).
    Label {
        /// The peer id.
        peer: String,
        /// Its region (empty clears it).
        #[arg(long)]
        region: Option<String>,
        /// Who runs it (empty clears it); no segment puts more than m shards with one operator.
        #[arg(long)]
        operator: Option<String>,
        #[command(flatten)]
        at: SpnAt,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a token for a tenant; it is printed once (keep it).
    Issue {
        /// The tenant (vendor name) it acts for.
        #[arg(long)]
        tenant: String,
        /// A name for it, e.g. who holds it.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        at: SpnAt,
    },
    /// List the tokens issued (never the tokens themselves).
    List {
        #[command(flatten)]
        at: SpnAt,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Its id, as `issue` and `list` print it.
        id: String,
        #[command(flatten)]
        at: SpnAt,
    },
}

/// Which SPN, with the operator's token.
#[derive(clap::Args)]
pub(crate) struct SpnAt {
    /// The SPN's API, e.g. http://127.0.0.1:7800.
    #[arg(long, env = "IONSHARD_SPN")]
    spn: String,
    /// The operator's token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run `ionshard spn token|health|peers|label …`.
pub(crate) fn run(command: SpnCommand) -> Result<()> {
    match command {
        SpnCommand::Token { command } => match command {
            TokenCommand::Issue { tenant, label, at } => token_issue(&at.spn, at.token, &tenant, &label, at.json),
            TokenCommand::List { at } => token_list(&at.spn, at.token, at.json),
            TokenCommand::Revoke { id, at } => token_revoke(&at.spn, at.token, &id, at.json),
        },
        SpnCommand::Health { object, at } => health(&at, object.as_deref()),
        SpnCommand::Peers { at } => peers(&at),
        SpnCommand::Label { peer, region, operator: op, at } => {
            let p = operator(&at.spn, at.token.clone())?
                .label_peer(&peer, &spn::types::PeerLabels { region, operator: op })?;
            if at.json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!("{}: region {:?}, operator {:?}", p.peer, p.region, p.operator);
            }
            Ok(())
        }
    }
}

/// `ionshard spn health`.
fn health(at: &SpnAt, object: Option<&str>) -> Result<()> {
    use crate::size::human;
    let d = operator(&at.spn, at.token.clone())?.durability(object)?;
    if at.json {
        println!("{}", serde_json::to_string(&d)?);
        return Ok(());
    }
    for o in &d.objects {
        let mark = if o.unreadable > 0 {
            "UNREADABLE"
        } else if o.at_risk > 0 {
            "at risk"
        } else {
            "healthy"
        };
        println!(
            "{}  {}/{}  {mark}: lowest {} of {} healthy (k {}, repair at {}), {} of {} segment(s) at risk, {} unreadable, placement v{}",
            o.manifest,
            o.tenant,
            o.product,
            o.lowest_healthy,
            o.total,
            o.needed,
            o.repair_threshold,
            o.at_risk,
            o.segments,
            o.unreadable,
            o.placement_version
        );
    }
    if d.objects.is_empty() {
        println!("no objects stored");
    }
    println!(
        "peers: {} live, {} lost, {} disqualified; repair queue {} segment(s); {} shard(s) repaired, {} moved, {} lost",
        d.peers_live,
        d.peers_lost,
        d.peers_disqualified,
        d.repair_queue,
        d.shards_repaired,
        human(d.repair_bytes),
        human(d.bytes_lost)
    );
    let audits = d.audits_passed + d.audits_failed;
    let rate = if audits == 0 { 100.0 } else { 100.0 * d.audits_passed as f64 / audits as f64 };
    println!(
        "audits: {} passed, {} failed ({rate:.1}% pass); at these settings (up to {} blocks every {} s per peer) {} a day for {} stored: {:.3}% a day ({:.3}% at the defaults)",
        d.audits_passed,
        d.audits_failed,
        d.settings.audit_blocks,
        d.settings.audit_every_secs,
        human(d.audit_bytes_per_day),
        human(d.stored_bytes),
        100.0 * d.audit_share_per_day,
        100.0 * d.audit_share_at_defaults
    );
    Ok(())
}

/// `ionshard spn peers`.
fn peers(at: &SpnAt) -> Result<()> {
    let l = operator(&at.spn, at.token.clone())?.peers()?;
    if at.json {
        println!("{}", serde_json::to_string(&l)?);
        return Ok(());
    }
    for p in &l.peers {
        let seen = if p.address.is_empty() { "relayed".to_string() } else { p.address.clone() };
        print!(
            "{}  {:<12} up {:>5.1}%  audits {}/{}  {} shard(s) {}  at {seen}",
            p.peer,
            p.status,
            100.0 * p.uptime(),
            p.audits_passed,
            p.audits_passed + p.audits_failed,
            p.shards,
            crate::size::human(p.used)
        );
        if let Some(why) = &p.disqualified {
            print!("  disqualified: {why}");
        }
        println!();
    }
    if l.peers.is_empty() {
        println!("no peers seen yet");
    }
    Ok(())
}
