//! `ionshard`: the one binary of ionshard (chunk/unchunk today; nodes, SPN,
//! publishing and fetching as they land).

mod chunk;
mod files;
mod node_cmd;
mod size;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc's allocator kept ~40 MB more resident on a 4 GiB encode (its arenas
// hold freed segment buffers); mimalloc returns them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ionshard",
    version,
    about = "Content-addressed, erasure-coded storage and OTA delivery on devices people own"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn size_arg(s: &str) -> Result<u64, String> {
    size::parse_size(s)
}

#[derive(Subcommand)]
enum Command {
    /// Chunk, compress, encrypt and erasure-code FILE into shard files named by CID, plus a manifest; print the read capability.
    Chunk {
        /// File to encode (`-` reads standard input).
        file: PathBuf,
        /// Directory for the shards and the manifest (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// k: data shards per segment.
        #[arg(long, short = 'k', default_value_t = 10)]
        data_shards: u8,
        /// m: parity shards per segment (any m shards of a segment may be lost).
        #[arg(long, short = 'm', default_value_t = 4)]
        parity_shards: u8,
        /// Average chunk size (min is a quarter, max four times), e.g. 32KiB.
        #[arg(long, value_parser = size_arg)]
        chunk_avg: Option<u64>,
        /// Segment size, e.g. 8MiB.
        #[arg(long, value_parser = size_arg)]
        segment_size: Option<u64>,
        /// zstd level tried on each chunk (0 = never compress).
        #[arg(long, default_value_t = 3)]
        zstd_level: i32,
        /// Tenant secret (32 bytes; created if missing) [default: ~/.ionshard/tenant.secret].
        #[arg(long)]
        secret: Option<PathBuf>,
        /// Capability of an earlier object in --out whose chunks need not be stored again (repeatable).
        #[arg(long)]
        known: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore the object a read capability names from the shard files in a directory.
    Unchunk {
        /// The read capability `ionshard chunk` printed.
        capability: String,
        /// Directory holding the manifest and (any k per segment of) the shards.
        #[arg(long)]
        shards: PathBuf,
        /// Where to write the object (written to a temporary file, renamed when verified).
        #[arg(long)]
        out: PathBuf,
        /// An older version of the object: chunks it holds are not read from the shards.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect a peer's shard store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run a node: a bootstrap node (DHT entry point and relay) or a peer (stores and serves shards).
    Node {
        /// bootstrap or peer [default: peer].
        #[arg(long)]
        role: Option<String>,
        /// A TOML file with role, listen, bootstrap, dir, capacity, trust, default_expiry_secs.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1 (repeatable).
        /// A peer with none is reached through its bootstrap nodes' relays.
        #[arg(long)]
        listen: Vec<String>,
        /// A bootstrap node, /ip4/…/tcp/…/p2p/PEER_ID (repeatable).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Directory for the identity key and the shard store [default: ~/.ionshard/node].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Space lent to the network, e.g. 20GiB.
        #[arg(long)]
        capacity: Option<String>,
        /// Peer id of an SPN allowed to store shards here (repeatable).
        #[arg(long)]
        trust: Vec<String>,
        /// Print the peer id and addresses as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Print the peer id of a key file, creating the key if it does not exist.
    Id {
        /// Key file [default: ~/.ionshard/identity.key].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put or get one shard on a peer, by hand.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// List the peers the DHT knows, with their addresses and how they are reached.
    Peers {
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true)]
        bootstrap: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Store FILE as a shard on a peer; prints its CID and the peer's signed receipt.
    Put {
        /// The shard's bytes.
        file: PathBuf,
        /// The peer to store it on.
        #[arg(long)]
        peer: String,
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true)]
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
        #[arg(long, required = true)]
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

#[derive(Subcommand)]
enum StoreCommand {
    /// Shards, bytes, quota and quarantined shards of a node's store.
    Stats(StoreArgs),
    /// Read every shard, check it against its CID, quarantine bad ones (exit status 3 if any).
    Scrub(StoreArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// The node's directory (as given to `ionshard node --dir`).
    #[arg(long)]
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Chunk {
            file,
            out,
            data_shards,
            parity_shards,
            chunk_avg,
            segment_size,
            zstd_level,
            secret,
            known,
            json,
        } => chunk::chunk(chunk::ChunkOpts {
            file,
            out,
            data_shards,
            parity_shards,
            chunk_avg,
            segment_size,
            zstd_level,
            secret: secret.unwrap_or_else(|| files::home().join("tenant.secret")),
            known,
            json,
        }),
        Command::Unchunk { capability, shards, out, seed, json } => {
            chunk::unchunk(chunk::UnchunkOpts { capability, shards, out, seed, json })
        }
        Command::Store { command: StoreCommand::Stats(a) } => store_cmd::stats(&a.dir, a.json),
        Command::Store { command: StoreCommand::Scrub(a) } => store_cmd::scrub(&a.dir, a.json),
        Command::Node { role, config, listen, bootstrap, dir, capacity, trust, json } => {
            node_cmd::node(node_cmd::NodeOpts { role, config, listen, bootstrap, dir, capacity, trust, json })
        }
        Command::Id { key, json } => node_cmd::id(key, json),
        Command::Shard { command: ShardCommand::Put { file, peer, bootstrap, key, json } } => {
            node_cmd::shard_put(file, node_cmd::ShardOpts { peer, bootstrap, key, json })
        }
        Command::Shard { command: ShardCommand::Get { cid, peer, bootstrap, out, key, json } } => {
            node_cmd::shard_get(cid, out, node_cmd::ShardOpts { peer, bootstrap, key, json })
        }
        Command::Peers { bootstrap, json } => node_cmd::peers(bootstrap, json),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs on stderr; RUST_LOG=info (or debug) to see more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
