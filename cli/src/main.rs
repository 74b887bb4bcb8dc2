//! `ionshard`: the one binary of ionshard (chunk/unchunk today; nodes, SPN,
//! publishing and fetching as they land).

mod alloc;
mod chunk;
mod demo;
mod device_cmd;
mod files;
mod http;
mod node_cmd;
mod progress;
mod sandbox;
mod shard_cmd;
mod size;
mod spn_cmd;
mod store_cmd;
mod vendor;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use size::size_arg;

// mimalloc for encoding, the C library's allocator for the device fetcher:
// see alloc.rs for the measurements.
#[global_allocator]
static GLOBAL: alloc::Switch = alloc::Switch;

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
        command: store_cmd::StoreCommand,
    },
    /// Run a node: a bootstrap node (DHT entry point and relay) or a peer (stores and serves shards).
    Node {
        /// bootstrap or peer [default: peer].
        #[arg(long)]
        role: Option<String>,
        /// A TOML file with role, listen, bootstrap, external, dir, capacity, trust, default_expiry_secs.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1 (repeatable).
        /// A peer with none is reached through its bootstrap nodes' relays.
        #[arg(long)]
        listen: Vec<String>,
        /// A bootstrap node, /ip4/…/tcp/…/p2p/PEER_ID (repeatable).
        #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// An address this node is reachable at from outside, as you know it (a
        /// public IP, a port forward), e.g. /ip4/203.0.113.7/tcp/4001 (repeatable).
        /// Without one, a peer's addresses are announced once AutoNAT confirms them,
        /// and a peer behind NAT takes a slot on its bootstrap nodes' relays.
        #[arg(long)]
        external: Vec<String>,
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
        command: shard_cmd::ShardCommand,
    },
    /// Check that a peer can be reached from here, and how: directly, through a
    /// relay, or directly after a hole punch; with the round-trip time.
    Reach {
        /// The peer's id.
        peer: String,
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// Seconds to wait for a hole punch to replace a relayed connection.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the peers the DHT knows, with their addresses and how they are reached.
    Peers {
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Vendor keys and roots: init, key add|rotate, resign, show.
    Vendor {
        #[command(subcommand)]
        command: vendor::cmd::VendorCommand,
    },
    /// Publish a firmware image: upload to the SPN, which encodes and scatters it; sign the release.
    Publish {
        /// The image file.
        image: PathBuf,
        /// Product the image is for.
        #[arg(long)]
        product: String,
        /// Version (dotted numbers, e.g. 1.4.2); devices refuse versions older than theirs.
        #[arg(long)]
        version: String,
        /// Hardware revision it fits (repeatable).
        #[arg(long, required = true)]
        hardware: Vec<String>,
        /// k: data shards per segment.
        #[arg(long, default_value_t = 10)]
        data_shards: u8,
        /// m: parity shards per segment (any m peers may be lost).
        #[arg(long, default_value_t = 4)]
        parity_shards: u8,
        /// The SPN's API, e.g. http://127.0.0.1:7800.
        #[arg(long, env = "IONSHARD_SPN")]
        spn: String,
        /// API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// Vendor directory [default: ~/.ionshard/vendor].
        #[arg(long)]
        vendor_dir: Option<PathBuf>,
        /// Wrap the read key with the product key, so only the product's devices can read the image.
        #[arg(long)]
        confidential: bool,
        /// Days until devices refuse this release (re-sign to extend).
        #[arg(long, default_value_t = 90)]
        expires_days: u64,
        /// Where to write the release bundle (default: VENDOR_DIR/releases/PRODUCT@VERSION.bundle.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a specific peer node: HTTP API for vendors, encode, place and scatter
    /// with receipts; or manage its API tokens (`ionshard spn token …`).
    #[command(args_conflicts_with_subcommands = true)]
    Spn {
        #[command(subcommand)]
        command: Option<spn_cmd::SpnCommand>,
        /// State directory (identity, token, redb state) [default: ~/.ionshard/spn].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HTTP API address (loopback by default; put TLS in front to offer it elsewhere, see the README).
        #[arg(long, default_value = "127.0.0.1:7800")]
        http: std::net::SocketAddr,
        /// A bootstrap node (repeatable); also handed to devices in release bundles.
        #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
        /// Largest object accepted, e.g. 16GiB.
        #[arg(long, value_parser = size_arg, default_value = "64GiB")]
        max_object: u64,
        /// HTTP connections one source address may hold.
        #[arg(long, default_value_t = 32)]
        max_connections_per_ip: usize,
        /// Print the peer id and API address as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a release's image, verified, to a file (no install).
    Fetch(device_cmd::DeviceArgs),
    /// Fetch, verify and install a release; record the installed version.
    Update(device_cmd::DeviceArgs),
    /// Run the whole OTA path locally: bootstrap, 8 peers, SPN, publish, fetch, kill peers, delta update.
    Demo {
        /// First image [default: testdata/firmware-v1.img, else a generated one].
        #[arg(long)]
        v1: Option<PathBuf>,
        /// Second image [default: testdata/firmware-v2.img, else a generated one].
        #[arg(long)]
        v2: Option<PathBuf>,
        /// Keep the temporary directory (logs, stores) instead of removing it.
        #[arg(long)]
        keep: bool,
        /// Print one JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A local network to try things by hand: `eval "$(ionshard sandbox up)"`,
    /// then any command without --spn or --bootstrap; `ionshard sandbox down`.
    Sandbox {
        #[command(subcommand)]
        command: sandbox::SandboxCommand,
    },
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
        Command::Store { command } => store_cmd::run(command),
        Command::Node { role, config, listen, bootstrap, external, dir, capacity, trust, json } => {
            node_cmd::node(node_cmd::NodeOpts { role, config, listen, bootstrap, external, dir, capacity, trust, json })
        }
        Command::Id { key, json } => node_cmd::id(key, json),
        Command::Shard { command } => shard_cmd::run(command),
        Command::Peers { bootstrap, json } => node_cmd::peers(bootstrap, json),
        Command::Reach { peer, bootstrap, wait, json } => node_cmd::reach_cmd(peer, bootstrap, wait, json),
        Command::Vendor { command } => vendor::cmd::run(command),
        Command::Publish {
            image,
            product,
            version,
            hardware,
            data_shards,
            parity_shards,
            spn,
            token,
            vendor_dir,
            confidential,
            expires_days,
            out,
            json,
        } => vendor::publish(vendor::PublishOpts {
            image,
            product,
            version,
            hardware,
            data_shards,
            parity_shards,
            spn,
            token,
            vendor_dir: vendor_dir.unwrap_or_else(vendor::default_dir),
            confidential,
            expires_days,
            out,
            json,
        })
        .map(|_| ()),
        Command::Spn { command: Some(command), .. } => spn_cmd::run(command),
        Command::Spn { command: None, dir, http, bootstrap, max_object, max_connections_per_ip, json } => {
            spn_cmd::spn(spn_cmd::SpnOpts {
                dir: dir.unwrap_or_else(|| files::home().join("spn")),
                http,
                bootstrap,
                max_object,
                max_connections_per_ip,
                json,
            })
        }
        Command::Fetch(a) => device_cmd::run(a, false).map(|_| ()),
        Command::Update(a) => device_cmd::run(a, true).map(|_| ()),
        Command::Demo { v1, v2, keep, json } => demo::demo(demo::DemoOpts { v1, v2, keep, json }),
        Command::Sandbox { command } => sandbox::run(command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The fetcher's and a peer's buffers move between threads: the C
    // library's allocator returns them (see alloc.rs); a peer's peak under
    // strangers' 60 MiB puts and gets: 217 MiB under mimalloc.
    if matches!(cli.command, Command::Fetch(_) | Command::Update(_) | Command::Node { .. }) {
        alloc::use_system();
    }
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
