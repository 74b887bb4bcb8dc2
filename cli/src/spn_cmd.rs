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
    /// Print the peer id and API address as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The API token in `DIR/api.token`, created (mode 0600) on first start.
fn token(dir: &std::path::Path) -> Result<(String, PathBuf)> {
    let path = dir.join("api.token");
    if let Ok(t) = std::env::var("IONSHARD_SPN_TOKEN") {
        let t = t.trim().to_string();
        if t.len() < 16 {
            anyhow::bail!(
                "IONSHARD_SPN_TOKEN is set but shorter than 16 characters; use a long random token or unset it"
            );
        }
        return Ok((t, path));
    }
    let (bytes, _) = crate::files::load_or_create_secret(&dir.join("api.secret"))?;
    let t = data_encoding::HEXLOWER.encode(&bytes);
    if !path.exists() {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&path)?, t.as_bytes())?;
    }
    Ok((t, path))
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
    let rt = node_cmd::runtime()?;
    rt.block_on(async move {
        let (client, handle) = net::start(node_cmd::client_config(&o.bootstrap)?, key, None).await?;
        let mut cfg = spn::Config::new(dir.clone(), o.http, token);
        cfg.bootstrap = o.bootstrap.clone();
        cfg.max_upload = o.max_object;
        cfg.http_limits.per_ip = o.max_connections_per_ip.max(1);
        let (_spn, addr, server) = spn::Spn::start(cfg, client.clone()).await?;
        if o.json {
            println!(
                "{}",
                json!({ "peer_id": peer_id.to_string(), "http": format!("http://{addr}"),
                        "token_file": token_file.display().to_string(), "dir": dir.display().to_string() })
            );
        } else {
            println!("SPN peer id {peer_id} (peers must --trust it)");
            println!("API on http://{addr}, token in {}", token_file.display());
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
    let body = spn::types::NewToken { tenant: tenant.to_string(), label: label.to_string() };
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
            println!("{}  tenant {}  {}  created {}  {}", t.id, t.tenant, state, t.created, t.label);
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

/// Run `ionshard spn token …`.
pub(crate) fn run(command: SpnCommand) -> Result<()> {
    let SpnCommand::Token { command } = command;
    match command {
        TokenCommand::Issue { tenant, label, at } => token_issue(&at.spn, at.token, &tenant, &label, at.json),
        TokenCommand::List { at } => token_list(&at.spn, at.token, at.json),
        TokenCommand::Revoke { id, at } => token_revoke(&at.spn, at.token, &id, at.json),
    }
}
