//! `ionshard shard put|get`: one shard to or from one peer, by hand.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chunker::Cid;
use net::PeerId;
use serde_json::json;

use crate::node_cmd::{join, reach, runtime};

#[derive(clap::Subcommand)]
pub(crate) enum ShardCommand {
    /// Store FILE as a shard on a peer; prints its CID and the peer's signed receipt.
    Put {
        /// The shard's bytes.
        file: PathBuf,
        /// The peer to store it on.
        #[arg(long)]
        peer: String,
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// This client's key (the peer must trust its id).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a shard from a peer, verified against its CID.
    Get {
        /// The shard's CID.
        cid: String,
        /// The peer holding it.
        #[arg(long)]
        peer: String,
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// This client's key (optional for gets).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run `ionshard shard …`.
pub(crate) fn run(command: ShardCommand) -> Result<()> {
    match command {
        ShardCommand::Put { file, peer, bootstrap, key, json } => {
            shard_put(file, ShardOpts { peer, bootstrap, key, json })
        }
        ShardCommand::Get { cid, peer, bootstrap, out, key, json } => {
            shard_get(cid, out, ShardOpts { peer, bootstrap, key, json })
        }
    }
}

/// Options of `ionshard shard put|get`.
struct ShardOpts {
    peer: String,
    bootstrap: Vec<String>,
    key: Option<PathBuf>,
    json: bool,
}

fn shard_put(file: PathBuf, o: ShardOpts) -> Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let cid = Cid::of_raw(&bytes);
    let peer: PeerId = o.peer.parse().with_context(|| format!("--peer {:?} is not a peer id", o.peer))?;
    runtime()?.block_on(async {
        let (client, _h) = join(&o.bootstrap, o.key.as_deref()).await?;
        reach(&client, peer).await?;
        let r = client.put_shard(peer, cid, bytes, None).await?;
        let relayed = client.connection(peer).await.ok().flatten() == Some(true);
        if o.json {
            println!(
                "{}",
                json!({ "cid": cid.to_string(), "peer": r.peer.to_string(), "size": r.size, "stored_at": r.stored_at,
                        "expiry": r.expiry, "signature": r.signature.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        "relayed": relayed })
            );
        } else {
            println!("{cid}");
            eprintln!(
                "receipt: {} stores {} ({} bytes) since {}{}; signature verified{}",
                r.peer,
                r.cid,
                r.size,
                r.stored_at,
                r.expiry.map(|e| format!(" until {e}")).unwrap_or_default(),
                if relayed { " (through a relay)" } else { "" }
            );
        }
        client.shutdown().await;
        anyhow::Ok(())
    })
}

fn shard_get(cid: String, out: PathBuf, o: ShardOpts) -> Result<()> {
    let cid: Cid = cid.parse()?;
    let peer: PeerId = o.peer.parse().with_context(|| format!("--peer {:?} is not a peer id", o.peer))?;
    runtime()?.block_on(async {
        let (client, _h) = join(&o.bootstrap, o.key.as_deref()).await?;
        reach(&client, peer).await?;
        // Streamed into a temporary file beside OUT, renamed only once its
        // bytes matched the CID.
        let tmp = crate::files::temp_beside(&out);
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let got = client.get_shard_to(peer, cid, u64::MAX, &mut file).await;
        let n = match got.and_then(|n| file.sync_all().map(|()| n).map_err(|e| net::Error::Protocol(e.to_string()))) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        std::fs::rename(&tmp, &out).with_context(|| format!("renaming into {}", out.display()))?;
        let relayed = client.connection(peer).await.ok().flatten() == Some(true);
        if o.json {
            println!(
                "{}",
                json!({ "cid": cid.to_string(), "bytes": n, "out": out.display().to_string(), "relayed": relayed })
            );
        } else {
            eprintln!("{cid} ({n} bytes, verified) written to {}", out.display());
        }
        client.shutdown().await;
        anyhow::Ok(())
    })
}
