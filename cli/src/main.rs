//! `ionshard`: the one binary of ionshard (chunk/unchunk today; nodes, SPN,
//! publishing and fetching as they land).

mod alloc;
mod chunk;
mod demo;
mod device_cmd;
mod files;
mod http;
mod node_cmd;
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
        /// A TOML file with role, listen, bootstrap, external, dir, capacity, trust, default_expiry_secs.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1 (repeatable).
        /// A peer with none is reached through its bootstrap nodes' relays.
        #[arg(long)]
        listen: Vec<String>,
        /// A bootstrap node, /ip4/…/tcp/…/p2p/PEER_ID (repeatable).
        #[arg(long)]
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
        command: ShardCommand,
    },
    /// Check that a peer can be reached from here, and how: directly, through a
    /// relay, or directly after a hole punch; with the round-trip time.
    Reach {
        /// The peer's id.
        peer: String,
        /// A bootstrap node to join through (repeatable).
        #[arg(long, required = true)]
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
        #[arg(long, required = true)]
        bootstrap: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Vendor keys and roots: init, key add|rotate, resign, show.
    Vendor {
        #[command(subcommand)]
        command: VendorCommand,
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
        #[arg(long)]
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
        command: Option<SpnCommand>,
        /// State directory (identity, token, redb state) [default: ~/.ionshard/spn].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HTTP API address (loopback by default; put TLS in front to offer it elsewhere, see the README).
        #[arg(long, default_value = "127.0.0.1:7800")]
        http: std::net::SocketAddr,
        /// A bootstrap node (repeatable); also handed to devices in release bundles.
        #[arg(long)]
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
    Fetch(DeviceArgs),
    /// Fetch, verify and install a release; record the installed version.
    Update(DeviceArgs),
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
}

#[derive(Subcommand)]
enum SpnCommand {
    /// API tokens: one per tenant (vendor), which can publish and read only its own objects.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
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
struct SpnAt {
    /// The SPN's API, e.g. http://127.0.0.1:7800.
    #[arg(long)]
    spn: String,
    /// The operator's token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct DeviceArgs {
    /// A release bundle file (from `ionshard publish`).
    #[arg(long, conflicts_with = "release")]
    bundle: Option<PathBuf>,
    /// A release id at the SPN: PRODUCT@VERSION or PRODUCT@latest.
    #[arg(long)]
    release: Option<String>,
    /// The SPN to get --release from.
    #[arg(long)]
    spn: Option<String>,
    /// The vendor's root.json (needed once; the device keeps it in its state).
    #[arg(long)]
    root: Option<PathBuf>,
    /// This device's product (default: the installed one's).
    #[arg(long)]
    product: Option<String>,
    /// This device's hardware revision.
    #[arg(long)]
    hardware: Option<String>,
    /// Product key for confidential releases.
    #[arg(long)]
    product_key: Option<PathBuf>,
    /// Bootstrap node (repeatable) [default: those in the bundle].
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Device state directory [default: ~/.ionshard/device].
    #[arg(long)]
    state: Option<PathBuf>,
    /// An older image to take unchanged chunks from [default: the installed image].
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Download everything, even what the installed image has.
    #[arg(long, conflicts_with = "seed")]
    no_seed: bool,
    /// Where the image goes [update default: STATE/images/PRODUCT-VERSION.img].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run after verification with the image path as $1 (update only).
    #[arg(long)]
    install_cmd: Option<String>,
    /// Range requests in flight at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Image bytes decoded at a time; memory use is a few times this.
    #[arg(long, value_parser = size_arg, default_value = "4MiB")]
    window: u64,
    /// Install from a bundle without a fresh timestamp, on purpose (no network
    /// to the SPN): whether a newer release exists is then not checked.
    #[arg(long)]
    offline: bool,
    /// Install the release even if that version is installed already.
    #[arg(long)]
    reinstall: bool,
    /// Seconds a timestamp may be past its expiry, or ahead of this clock.
    #[arg(long, default_value_t = 300)]
    max_clock_skew: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Create vendor keys and the first root.
    Init {
        /// The vendor's name (in every root and release).
        #[arg(long)]
        name: String,
        /// Keys to create (give them to different people: `vendor key export`).
        #[arg(long, default_value_t = 3)]
        keys: u32,
        /// Signatures required on releases and root changes.
        #[arg(long, default_value_t = 2)]
        threshold: u32,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Change the root's keys (a new root version, signed by the old and new keys).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Re-sign a published release with a later expiry (same image); updates the bundle file.
    Resign {
        /// The release bundle `ionshard publish` wrote.
        bundle: PathBuf,
        /// The SPN that serves it.
        #[arg(long)]
        spn: String,
        /// API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// Days from now until devices refuse it.
        #[arg(long, default_value_t = 90)]
        expires_days: u64,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Print the current root.
    Show {
        #[command(flatten)]
        at: VendorAt,
    },
    /// Register the vendor's roots with an SPN (once; later it sends new roots).
    Register {
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Re-sign the short-lived statement of the newest release per hardware
    /// (run it from cron or a systemd timer, every few hours).
    Timestamp {
        /// Product (repeatable) [default: every product published from this directory].
        #[arg(long)]
        product: Vec<String>,
        /// Hours until devices refuse the statement.
        #[arg(long, default_value_t = 24)]
        expires_hours: u64,
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Withdraw a release (PRODUCT@VERSION): the SPN stops serving it.
    Withdraw {
        /// The release.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        spn: VendorSpn,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Add your signature to a pending release, root or withdrawal.
    Sign {
        /// The pending file.
        file: PathBuf,
        /// Key file to sign with (repeatable) [default: the keys in --dir].
        #[arg(long)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Send a pending release, root or withdrawal once enough keys signed it.
    Submit {
        /// The pending file.
        file: PathBuf,
        /// The SPN to send it to (a root is kept locally either way).
        #[arg(long)]
        spn: Option<String>,
        /// API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        at: VendorAt,
    },
}

/// The SPN a vendor command talks to.
#[derive(clap::Args)]
struct VendorSpn {
    /// The SPN's API, e.g. http://127.0.0.1:7800.
    #[arg(long)]
    spn: String,
    /// API token [default: $IONSHARD_SPN_TOKEN].
    #[arg(long)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a new key.
    Add(KeyArgs),
    /// Replace key KEYID with a new one (the old key is retired).
    Rotate {
        /// The key to retire.
        keyid: String,
        #[command(flatten)]
        args: KeyArgs,
    },
    /// Make a new online timestamp key (the first, or replacing the old one).
    Timestamp(KeyArgs),
    /// Move a key out of the vendor directory, to give it to its holder.
    Export {
        /// The key.
        keyid: String,
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Copy, do not remove it from the vendor directory.
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        at: VendorAt,
    },
    /// Bring a key of the current root into the vendor directory.
    Import {
        /// The key file.
        file: PathBuf,
        #[command(flatten)]
        at: VendorAt,
    },
}

#[derive(clap::Args)]
struct KeyArgs {
    /// New threshold [default: unchanged].
    #[arg(long)]
    threshold: Option<u32>,
    /// Days until the new root expires.
    #[arg(long, default_value_t = 365)]
    expires_days: u64,
    #[command(flatten)]
    at: VendorAt,
}

/// Where the vendor's keys and roots are, and the output form.
#[derive(clap::Args)]
struct VendorAt {
    /// Vendor directory [default: ~/.ionshard/vendor].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl VendorAt {
    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(vendor::default_dir)
    }
}

impl DeviceArgs {
    fn into_opts(self) -> device_cmd::DeviceOpts {
        device_cmd::DeviceOpts {
            bundle: self.bundle,
            release: self.release,
            spn: self.spn,
            root: self.root,
            product: self.product,
            hardware: self.hardware,
            product_key: self.product_key,
            bootstrap: self.bootstrap,
            state: self.state.unwrap_or_else(device_cmd::default_state),
            seed: self.seed,
            no_seed: self.no_seed,
            out: self.out,
            install_cmd: self.install_cmd,
            parallel: self.parallel,
            window: self.window,
            offline: self.offline,
            reinstall: self.reinstall,
            max_clock_skew: self.max_clock_skew,
            json: self.json,
        }
    }
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
        Command::Node { role, config, listen, bootstrap, external, dir, capacity, trust, json } => {
            node_cmd::node(node_cmd::NodeOpts { role, config, listen, bootstrap, external, dir, capacity, trust, json })
        }
        Command::Id { key, json } => node_cmd::id(key, json),
        Command::Shard { command: ShardCommand::Put { file, peer, bootstrap, key, json } } => {
            node_cmd::shard_put(file, node_cmd::ShardOpts { peer, bootstrap, key, json })
        }
        Command::Shard { command: ShardCommand::Get { cid, peer, bootstrap, out, key, json } } => {
            node_cmd::shard_get(cid, out, node_cmd::ShardOpts { peer, bootstrap, key, json })
        }
        Command::Peers { bootstrap, json } => node_cmd::peers(bootstrap, json),
        Command::Reach { peer, bootstrap, wait, json } => node_cmd::reach_cmd(peer, bootstrap, wait, json),
        Command::Vendor { command: VendorCommand::Init { name, keys, threshold, expires_days, at } } => {
            vendor::init(&at.dir(), &name, keys, threshold, expires_days, at.json)
        }
        Command::Vendor { command: VendorCommand::Key { command: KeyCommand::Add(a) } } => {
            vendor::change_keys(&a.at.dir(), vendor::KeyChange::Add, a.threshold, a.expires_days, a.at.json)
        }
        Command::Vendor { command: VendorCommand::Key { command: KeyCommand::Rotate { keyid, args: a } } } => {
            vendor::change_keys(&a.at.dir(), vendor::KeyChange::Rotate(&keyid), a.threshold, a.expires_days, a.at.json)
        }
        Command::Vendor { command: VendorCommand::Key { command: KeyCommand::Timestamp(a) } } => {
            vendor::change_keys(&a.at.dir(), vendor::KeyChange::Timestamp, a.threshold, a.expires_days, a.at.json)
        }
        Command::Vendor { command: VendorCommand::Key { command: KeyCommand::Export { keyid, out, keep, at } } } => {
            vendor::export_key(&at.dir(), &keyid, &out, keep, at.json)
        }
        Command::Vendor { command: VendorCommand::Key { command: KeyCommand::Import { file, at } } } => {
            vendor::import_key(&at.dir(), &file, at.json)
        }
        Command::Vendor { command: VendorCommand::Register { spn, at } } => {
            vendor::register(&at.dir(), &spn.spn, spn.token, at.json)
        }
        Command::Vendor { command: VendorCommand::Timestamp { product, expires_hours, spn, at } } => {
            vendor::timestamp(&at.dir(), &product, &spn.spn, spn.token, expires_hours, at.json)
        }
        Command::Vendor { command: VendorCommand::Withdraw { id, reason, spn, at } } => {
            vendor::withdraw(&at.dir(), &id, &reason, &spn.spn, spn.token, at.json)
        }
        Command::Vendor { command: VendorCommand::Sign { file, key, at } } => {
            vendor::sign(&file, &key, &at.dir(), at.json)
        }
        Command::Vendor { command: VendorCommand::Submit { file, spn, token, at } } => {
            vendor::submit(&file, &at.dir(), spn.as_deref(), token, at.json)
        }
        Command::Vendor { command: VendorCommand::Show { at } } => vendor::show(&at.dir(), at.json),
        Command::Vendor { command: VendorCommand::Resign { bundle, spn, token, expires_days, at } } => {
            vendor::resign(&bundle, &spn, token, &at.dir(), expires_days, at.json)
        }
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
        Command::Spn { command: Some(SpnCommand::Token { command }), .. } => match command {
            TokenCommand::Issue { tenant, label, at } => {
                spn_cmd::token_issue(&at.spn, at.token, &tenant, &label, at.json)
            }
            TokenCommand::List { at } => spn_cmd::token_list(&at.spn, at.token, at.json),
            TokenCommand::Revoke { id, at } => spn_cmd::token_revoke(&at.spn, at.token, &id, at.json),
        },
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
        Command::Fetch(a) => device_cmd::run(a.into_opts(), false).map(|_| ()),
        Command::Update(a) => device_cmd::run(a.into_opts(), true).map(|_| ()),
        Command::Demo { v1, v2, keep, json } => demo::demo(demo::DemoOpts { v1, v2, keep, json }),
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
