//! `ionshard spn`: run a specific peer node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use crate::node_cmd;

/// Options of `ionshard spn`.
pub(crate) struct SpnOpts {
    pub(crate) dir: PathBuf,
    pub(crate) http: SocketAddr,
    pub(crate) bootstrap: Vec<String>,
    pub(crate) max_object: u64,
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

pub(crate) fn spn(o: SpnOpts) -> Result<()> {
    std::fs::create_dir_all(&o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    let (key, _) = net::load_or_create_key(&o.dir.join("identity.key"))?;
    let peer_id = key.public().to_peer_id();
    let (token, token_file) = token(&o.dir)?;
    let rt = node_cmd::runtime()?;
    rt.block_on(async move {
        let (client, handle) = net::start(node_cmd::client_config(&o.bootstrap)?, key, None).await?;
        let cfg = spn::Config {
            dir: o.dir.clone(),
            http: o.http,
            token,
            bootstrap: o.bootstrap.clone(),
            max_upload: o.max_object,
        };
        let (_spn, addr, server) = spn::Spn::start(cfg, client.clone()).await?;
        if o.json {
            println!(
                "{}",
                json!({ "peer_id": peer_id.to_string(), "http": format!("http://{addr}"),
                        "token_file": token_file.display().to_string(), "dir": o.dir.display().to_string() })
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
