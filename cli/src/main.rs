//! `ionshard`: the one binary of ionshard (chunk/unchunk today; nodes, SPN,
//! publishing and fetching as they land).

mod alloc;
mod backup_agent;
mod backup_cmd;
mod chunk;
mod demo;
mod device_cmd;
mod drive_cmd;
mod drive_files;
mod drive_msg;
mod drive_serve;
mod drive_share;
mod drive_sync;
mod drive_tls;
mod files;
mod http;
mod ledger_cmd;
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
    Chunk(chunk::ChunkOpts),
    /// Restore the object a read capability names from the shard files in a directory.
    Unchunk(chunk::UnchunkOpts),
    /// Inspect a peer's shard store.
    Store {
        #[command(subcommand)]
        command: store_cmd::StoreCommand,
    },
    /// Run a node: a bootstrap node (DHT entry point and relay) or a peer
    /// (stores and serves shards); or retire one (`ionshard node retire`).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        command: Option<node_cmd::NodeCommand>,
        #[command(flatten)]
        opts: node_cmd::NodeOpts,
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
    Publish(vendor::PublishOpts),
    /// Run a specific peer node: HTTP API for vendors, encode, place and scatter
    /// with receipts; or manage its API tokens (`ionshard spn token …`).
    #[command(args_conflicts_with_subcommands = true)]
    Spn {
        #[command(subcommand)]
        command: Option<spn_cmd::SpnCommand>,
        #[command(flatten)]
        opts: spn_cmd::SpnOpts,
    },
    /// Fetch a release's image, verified, to a file (no install).
    Fetch(device_cmd::DeviceArgs),
    /// Fetch, verify and install a release; record the installed version.
    Update(device_cmd::DeviceArgs),
    /// Business backups through the SPN: init, run, snapshots, ls, diff, restore, forget, prune, key, schedule, agent, status.
    Backup(backup_cmd::BackupArgs),
    /// The personal drive on your own devices: pair them by a one-time code (pair, join), list and revoke pairings.
    Drive(drive_cmd::DriveArgs),
    /// The ledger the bootstrap operators run: init a genesis, status, blocks, transactions.
    Ledger {
        #[command(subcommand)]
        command: ledger_cmd::LedgerCommand,
    },
    /// Run the whole OTA path locally: bootstrap, 8 peers, SPN, publish, fetch, kill peers, delta update.
    Demo(demo::DemoOpts),
    /// A local network to try things by hand: `eval "$(ionshard sandbox up)"`,
    /// then any command without --spn or --bootstrap; `ionshard sandbox down`.
    Sandbox {
        #[command(subcommand)]
        command: sandbox::SandboxCommand,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Chunk(o) => chunk::chunk(o),
        Command::Unchunk(o) => chunk::unchunk(o),
        Command::Store { command } => store_cmd::run(command),
        Command::Node { command: Some(command), .. } => node_cmd::run(command),
        Command::Node { command: None, opts } => node_cmd::node(opts),
        Command::Id { key, json } => node_cmd::id(key, json),
        Command::Shard { command } => shard_cmd::run(command),
        Command::Peers { bootstrap, json } => node_cmd::peers(bootstrap, json),
        Command::Reach { peer, bootstrap, wait, json } => node_cmd::reach_cmd(peer, bootstrap, wait, json),
        Command::Vendor { command } => vendor::cmd::run(command),
        Command::Publish(o) => vendor::publish(o).map(|_| ()),
        Command::Spn { command: Some(command), .. } => spn_cmd::run(command),
        Command::Spn { command: None, opts } => spn_cmd::spn(opts),
        Command::Fetch(a) => device_cmd::run(a, false).map(|_| ()),
        Command::Update(a) => device_cmd::run(a, true).map(|_| ()),
        Command::Backup(a) => backup_cmd::run(a),
        Command::Ledger { command } => ledger_cmd::run(command),
        Command::Drive(a) => drive_cmd::run(a),
        Command::Demo(o) => demo::demo(o),
        Command::Sandbox { command } => sandbox::run(command),
    }
}

/// A command that did its job but not all of it (a backup saved without
/// some unreadable files): exit status 3, as restic's, so a script or cron
/// sees it.
#[derive(Debug)]
pub(crate) struct Incomplete(pub(crate) String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incomplete {}

/// What is logged without `RUST_LOG`.
const DEFAULT_LOG: &str = "warn,libp2p_relay::priv_client::handler=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The fetcher's and a peer's buffers move between threads: the C
    // library's allocator returns them (see alloc.rs); a peer's peak under
    // strangers' 60 MiB puts and gets: 217 MiB under mimalloc.
    if matches!(cli.command, Command::Fetch(_) | Command::Update(_) | Command::Node { .. } | Command::Backup(_)) {
        alloc::tune_system();
    } else {
        alloc::use_mimalloc();
    }
    // Logs on stderr; RUST_LOG=info (or debug) to see more. The relay
    // client's "Dropping in-flight connect request because we are at
    // capacity" is not shown by default: a dial tries a peer's direct and
    // relayed addresses at once, and when many peers are dialled together
    // the relayed attempts beyond the relay client's limit are dropped
    // while the direct ones go on (a restore printed five of them).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Incomplete>().is_some() => {
            eprintln!("warning: {e:#}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
