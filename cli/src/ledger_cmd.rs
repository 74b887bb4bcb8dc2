//! `ionshard ledger init|status|block|tx`, and the ledger task a node runs
//! with `ionshard node --genesis FILE [--produce]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ledger::{AnchorKind, Body, Genesis, Hash, Producer, Question, Tx};
use net::{Multiaddr, PeerId};
use serde_json::json;

use crate::node_cmd::{join, runtime};

/// `ionshard ledger …` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum LedgerCommand {
    /// Write a genesis for a set of producers (bootstrap nodes): every
    /// producer runs `ionshard node --role bootstrap --produce --genesis FILE`.
    Init(InitOpts),
    /// Where the chain stands: height, newest hash, producers, missed slots.
    Status(AskOpts),
    /// Print a final block and its certificate.
    Block {
        /// The height.
        height: u64,
        #[command(flatten)]
        ask: AskOpts,
    },
    /// Look up a record of the chain's state: a manufacturer, a device, an
    /// authorization, a deletion, a peer's points, a release.
    Show {
        #[command(subcommand)]
        what: ShowCommand,
        #[command(flatten)]
        ask: AskOpts,
    },
    /// Print a self-contained proof that a storage receipt or a transaction is on the chain.
    Prove {
        #[command(subcommand)]
        what: ProveCommand,
        /// Write the proof here (hex) instead of printing it.
        #[arg(long, global = true)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Check a proof holding only the producers: the genesis file, or a
    /// producers file (`ionshard ledger producers`) once elections changed them.
    Verify {
        /// The proof (a file of hex, as `prove` writes).
        proof: PathBuf,
        /// The genesis, or a producers file.
        #[arg(long, env = "IONSHARD_GENESIS")]
        producers: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a producers file: the genesis and every change of the producer
    /// set since, each checked against the set before it; what `verify` needs.
    Producers {
        /// The chain's genesis.
        #[arg(long, env = "IONSHARD_GENESIS")]
        genesis: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        ask: AskOpts,
    },
    /// Restart a chain halted for good (more than a third of the producers
    /// lost): sign a new producer set, or apply a signed one to a stopped node.
    Recover {
        #[command(subcommand)]
        what: RecoverCommand,
    },
    /// Sign a transaction and offer it to the producers; wait until a block holds it.
    Tx {
        #[command(subcommand)]
        body: TxCommand,
        #[command(flatten)]
        ask: AskOpts,
        /// Key that signs [default: ~/.ionshard/ledger.key, created if missing].
        #[arg(long, global = true)]
        key: Option<PathBuf>,
        /// Heights it stays valid for (TaPoS expiry).
        #[arg(long, default_value_t = 600, global = true)]
        lifetime: u64,
        /// Return once a producer took it, without waiting for a block.
        #[arg(long, global = true)]
        no_wait: bool,
    },
}

/// Recovery of a halted chain.
#[derive(clap::Subcommand)]
pub(crate) enum RecoverCommand {
    /// Sign, with a stopped producer's key, the recovery that makes these the
    /// producers from the height the chain halted at (adds to FILE if it exists).
    Sign {
        /// The producer's directory (its identity.key and ledger).
        #[arg(long)]
        dir: PathBuf,
        /// The producer's key apart from its node key, if it runs with
        /// `--producer-key` (else DIR/identity.key signs).
        #[arg(long)]
        producer_key: Option<PathBuf>,
        /// The chain's genesis.
        #[arg(long, env = "IONSHARD_GENESIS")]
        genesis: PathBuf,
        /// A producer of the new set (repeatable).
        #[arg(long = "producer", required = true)]
        producers: Vec<String>,
        /// The recovery file, passed from signer to signer.
        #[arg(long)]
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a recovery signed by at least half of the producers to a
    /// stopped node (every node of the chain: producers and followers).
    Apply {
        /// The recovery file.
        file: PathBuf,
        /// The node's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The chain's genesis.
        #[arg(long, env = "IONSHARD_GENESIS")]
        genesis: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What to prove.
#[derive(clap::Subcommand)]
pub(crate) enum ProveCommand {
    /// A storage receipt, through the SPN that anchored it.
    Receipt {
        /// The shard's CID.
        #[arg(long)]
        shard: String,
        /// The peer that signed the receipt.
        #[arg(long)]
        peer: String,
        /// The SPN's API.
        #[arg(long, env = "IONSHARD_SPN", default_value = "http://127.0.0.1:7800")]
        spn: String,
        /// An API token [default: $IONSHARD_SPN_TOKEN].
        #[arg(long)]
        token: Option<String>,
    },
    /// A transaction (a release record, an anchor), by its id.
    Tx {
        /// The transaction's id (hex).
        id: String,
        /// A node that follows the chain.
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
    },
    /// A device's record: its latest change (its registration if none).
    Device {
        /// The device's peer id.
        id: String,
        /// Prove the registration rather than the latest change.
        #[arg(long)]
        registration: bool,
        /// A node that follows the chain.
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
    },
    /// A release record, by product and version (and signer, if several recorded it).
    Release {
        /// The product.
        #[arg(long)]
        product: String,
        /// The version.
        #[arg(long)]
        version: String,
        /// The vendor key that signed it (needed only if several did).
        #[arg(long)]
        signer: Option<String>,
        /// A node that follows the chain.
        #[arg(long, required = true, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',')]
        bootstrap: Vec<String>,
    },
}

/// What to look up.
#[derive(clap::Subcommand)]
pub(crate) enum ShowCommand {
    /// A manufacturer: admitted, since when.
    Maker {
        /// Its peer id.
        id: String,
    },
    /// A device: manufacturer, product, status, owner.
    Device {
        /// Its peer id.
        id: String,
    },
    /// Whether OWNER authorizes RECEIVER for OBJECT (since which height).
    Authorized {
        /// The owner.
        #[arg(long)]
        owner: String,
        /// The object's CID.
        #[arg(long)]
        object: String,
        /// The receiver.
        #[arg(long)]
        receiver: String,
    },
    /// An owner's deletion attestation of an object.
    Deletion {
        /// The owner.
        #[arg(long)]
        owner: String,
        /// The object's CID.
        #[arg(long)]
        object: String,
        /// Check these acknowledgements (what `ledger tx delete --acks-out`
        /// wrote) against the attestation: each must verify, and their
        /// root and count must be the ones on the chain.
        #[arg(long)]
        acks: Option<PathBuf>,
    },
    /// A peer's contribution points, in all and by who attested them.
    Points {
        /// The peer.
        id: String,
    },
    /// A release's records.
    Release {
        /// The product.
        #[arg(long)]
        product: String,
        /// The version.
        #[arg(long)]
        version: String,
    },
}

/// What a transaction says.
#[derive(clap::Subcommand)]
pub(crate) enum TxCommand {
    /// Anchor the Merkle root of a batch (receipts, deletions, audits).
    Anchor {
        /// The root, 64 hex digits.
        #[arg(long)]
        root: String,
        /// receipts, deletions or audits.
        #[arg(long, default_value = "receipts")]
        kind: String,
        /// Items in the batch.
        #[arg(long)]
        count: u64,
        /// Bytes the items speak for.
        #[arg(long, default_value_t = 0)]
        bytes: u64,
    },
    /// Approve candidates for producer with this key's stake (replaces its
    /// earlier vote; none withdraws it). Counted at the next boundary.
    Vote {
        /// A candidate's peer id (repeatable).
        #[arg(long = "for")]
        candidates: Vec<String>,
    },
    /// Stand for producer: this key will sign its votes and proposals (the
    /// node's identity.key, or the file it will run with as --producer-key).
    Candidate {
        /// Where the node listens, ending in /p2p/NODE_ID (the node's id; not
        /// checked against the node: voters should).
        #[arg(long)]
        addr: String,
    },
    /// As a registry admin, approve admitting (or, with --remove, removing)
    /// a manufacturer; it takes effect once the genesis's threshold agree.
    Admit {
        /// The manufacturer's key (peer id).
        manufacturer: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// Approve its removal instead.
        #[arg(long)]
        remove: bool,
    },
    /// As an admitted manufacturer, register a device (once, for ever).
    Register {
        /// The device's peer id (`ionshard id` on the device).
        device: String,
        /// Its product.
        #[arg(long)]
        product: String,
        /// Its hardware revision.
        #[arg(long)]
        hardware: String,
    },
    /// As a device's manufacturer or owner, transfer it to a new owner.
    Transfer {
        /// The device.
        device: String,
        /// The new owner's peer id.
        #[arg(long)]
        to: String,
    },
    /// As a device's manufacturer or owner, retire it (for good).
    Retire {
        /// The device.
        device: String,
    },
    /// As an object's owner, let a receiver have it (or, with --revoke, no longer).
    Authorize {
        /// The object's CID.
        object: String,
        /// The receiver's peer id.
        #[arg(long)]
        receiver: String,
        /// Revoke instead.
        #[arg(long)]
        revoke: bool,
    },
    /// As an object's owner, attest it was deleted: its keys destroyed and
    /// its shards gone, with the root of the peers' signed delete
    /// acknowledgements. With --spn they come from the SPN that deleted it
    /// and are each checked here; or give --acks-root and --acks.
    Delete {
        /// The object's CID.
        object: String,
        /// The SPN that deleted the object: its acknowledgements are
        /// fetched, checked, and their root attested.
        #[arg(long, conflicts_with_all = ["acks_root", "acks"])]
        spn: Option<String>,
        /// The SPN API token of the object's tenant [default: $IONSHARD_SPN_TOKEN].
        #[arg(long, env = "IONSHARD_SPN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Attest even though some deletes still wait for their peer (they
        /// are not in the root).
        #[arg(long)]
        allow_pending: bool,
        /// Keep the acknowledgements attested here (JSON), for anyone who
        /// checks the attestation later (`ledger show deletion --acks`).
        #[arg(long)]
        acks_out: Option<PathBuf>,
        /// The acknowledgements' Merkle root, 64 hex digits.
        #[arg(long, requires = "acks", required_unless_present = "spn")]
        acks_root: Option<String>,
        /// How many acknowledgements.
        #[arg(long, requires = "acks_root")]
        acks: Option<u64>,
    },
    /// Credit peers with points from a batch this key anchored.
    Points {
        /// The anchored batch's root, 64 hex digits.
        #[arg(long)]
        root: String,
        /// PEER=BYTE_HOURS or PEER=BYTE_HOURS:AUDITS (repeatable, at most 24).
        #[arg(long = "credit", required = true)]
        credits: Vec<String>,
    },
    /// Record a published release. With --vendor-dir and --release, the
    /// fields come from that signed release and a root key of the vendor
    /// signs the record: what `update --require-ledger` checks on a device.
    Release {
        /// The vendor directory whose release to record (its root key signs).
        #[arg(long, requires = "release")]
        vendor_dir: Option<PathBuf>,
        /// The release, PRODUCT@VERSION (with --vendor-dir).
        #[arg(long, requires = "vendor_dir")]
        release: Option<String>,
        /// The product.
        #[arg(long, required_unless_present = "release")]
        product: Option<String>,
        /// The version.
        #[arg(long, required_unless_present = "release")]
        version: Option<String>,
        /// The release manifest's CID.
        #[arg(long, required_unless_present = "release")]
        manifest: Option<String>,
        /// The image's BLAKE3, 64 hex digits.
        #[arg(long, required_unless_present = "release")]
        image_hash: Option<String>,
    },
}

/// Options of `ionshard ledger init`.
#[derive(clap::Args)]
pub(crate) struct InitOpts {
    /// A producer's address ending in /p2p/PEER_ID (repeatable; `ionshard id --key DIR/identity.key` prints the id).
    /// A producer that signs with a key apart from its node key (`ionshard
    /// node --producer-key FILE`): ADDR=PRODUCER_ID (`ionshard id --key FILE` prints it).
    #[arg(long = "producer", required = true)]
    producers: Vec<String>,
    /// The genesis file to write (must not exist).
    #[arg(long, default_value = "genesis.json")]
    out: PathBuf,
    /// A name for people.
    #[arg(long, default_value = "ionshard")]
    name: String,
    /// Target time between blocks, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    block_ms: u64,
    /// Time a proposer has before its round moves on, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    propose_ms: u64,
    /// With nothing to record, a block this often at most (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    idle_ms: u64,
    /// Each producer's stake.
    #[arg(long, default_value_t = 1000)]
    stake: u64,
    /// Another account with stake, PEER_ID=STAKE (repeatable): it may vote for producers.
    #[arg(long = "account")]
    accounts: Vec<String>,
    /// Producers elected at each boundary, at most.
    #[arg(long, default_value_t = 21)]
    max_producers: u32,
    /// Heights between elections.
    #[arg(long, default_value_t = 600)]
    maintenance: u64,
    /// Heights between state snapshots a new node can start from (0: none).
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u64,
    /// A manufacturer-registry admin's peer id (repeatable).
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// How many admins must agree to admit or remove a manufacturer.
    #[arg(long, default_value_t = 1)]
    admin_threshold: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How to reach the chain: a producer (or any node following it).
#[derive(clap::Args)]
pub(crate) struct AskOpts {
    /// A bootstrap node that follows the chain (its address ends in /p2p/PEER_ID).
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',', global = true)]
    bootstrap: Vec<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

pub(crate) fn run(command: LedgerCommand) -> Result<()> {
    match command {
        LedgerCommand::Init(o) => init(o),
        LedgerCommand::Status(a) => status(&a),
        LedgerCommand::Block { height, ask } => block(height, &ask),
        LedgerCommand::Show { what, ask } => show(what, &ask),
        LedgerCommand::Tx { body, ask, key, lifetime, no_wait } => tx(body, &ask, key, lifetime, no_wait),
        LedgerCommand::Prove { what, out, json } => prove(what, out.as_deref(), json),
        LedgerCommand::Verify { proof, producers, json } => verify(&proof, &producers, json),
        LedgerCommand::Producers { genesis, out, ask } => producers_file(&genesis, &out, &ask),
        LedgerCommand::Recover { what } => recover(what),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn init(o: InitOpts) -> Result<()> {
    let mut producers = Vec::new();
    for arg in &o.producers {
        let (a, key) = match arg.split_once('=') {
            Some((a, key)) => (a, Some(peer_arg(key, "--producer ADDR=PRODUCER_ID")?)),
            None => (arg.as_str(), None),
        };
        let addr: Multiaddr = a.parse().with_context(|| format!("--producer {a:?} is not a multiaddr"))?;
        let node = peer_in(&addr).ok_or_else(|| anyhow!("--producer {a}: the address must end in /p2p/<peer id>"))?;
        let peer = key.unwrap_or(node);
        producers.push(Producer { peer: peer.to_string(), addr: a.to_string(), stake: o.stake });
    }
    let mut accounts = Vec::new();
    for a in &o.accounts {
        let (peer, stake) = a.split_once('=').ok_or_else(|| anyhow!("--account {a:?}: write PEER_ID=STAKE"))?;
        let stake = stake.parse().with_context(|| format!("--account {a:?}: the stake must be a whole number"))?;
        accounts.push(ledger::Account { peer: peer.to_string(), stake });
    }
    let g = Genesis {
        version: ledger::GENESIS_VERSION,
        name: o.name,
        time_ms: now_ms(),
        producers,
        params: ledger::Params {
            block_ms: o.block_ms,
            propose_ms: o.propose_ms,
            idle_ms: o.idle_ms.max(o.block_ms),
            producers: o.max_producers,
            maintenance: o.maintenance,
            snapshot_every: o.snapshot_every,
            ..ledger::Params::default()
        },
        accounts,
        admins: o.admins,
        admin_threshold: o.admin_threshold,
    };
    g.check()?;
    g.write_new(&o.out).with_context(|| format!("writing {} (it must not exist yet)", o.out.display()))?;
    let chain = g.hash().to_hex();
    if o.json {
        println!(
            "{}",
            json!({ "genesis": o.out.display().to_string(), "chain": chain, "producers": g.producers.len() })
        );
    } else {
        println!("wrote {} for chain {chain} with {} producer(s)", o.out.display(), g.producers.len());
        println!(
            "each producer runs: ionshard node --role bootstrap --listen ADDR --produce --genesis {}",
            o.out.display()
        );
    }
    Ok(())
}

/// The first bootstrap address given, and the peer id it names.
fn first(bootstrap: &[String]) -> Result<(&str, PeerId)> {
    let a = bootstrap.first().ok_or_else(|| {
        anyhow!(
            "give --bootstrap ADDR (a node that follows the chain: a producer, or a bootstrap started with --genesis)"
        )
    })?;
    Ok((a, peer_of(a)?))
}

/// The peer id a bootstrap address names.
fn peer_of(addr: &str) -> Result<PeerId> {
    let a: Multiaddr = addr.parse().with_context(|| format!("--bootstrap {addr:?} is not a multiaddr"))?;
    a.iter()
        .filter_map(|p| if let net::Protocol::P2p(id) = p { Some(id) } else { None })
        .last()
        .ok_or_else(|| anyhow!("--bootstrap {addr}: the address must end in /p2p/<peer id>"))
}

/// The peer id an address ends in, if it names one.
pub(crate) fn peer_in(a: &Multiaddr) -> Option<PeerId> {
    a.iter().filter_map(|p| if let net::Protocol::P2p(id) = p { Some(id) } else { None }).last()
}

async fn ask(client: &net::Client, peer: PeerId, q: &Question) -> Result<Vec<u8>> {
    client.ask_ledger(peer, &q.encode(), ledger::MAX_ANSWER_BYTES).await.map_err(|e| {
        anyhow!("asking {peer} about the ledger: {e} (is it running with --genesis, this release of ionshard?)")
    })
}

fn status(a: &AskOpts) -> Result<()> {
    let (_, peer) = first(&a.bootstrap)?;
    let st = runtime()?.block_on(async {
        let (client, _h) = join(&a.bootstrap, None).await?;
        let st = ledger::rpc::status_answer(&ask(&client, peer, &Question::Status).await?)
            .map_err(|e| anyhow!("{peer} does not follow a chain, or answered badly: {e}"))?;
        client.shutdown().await;
        anyhow::Ok(st)
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&st)?);
    } else {
        println!("chain    {}", st.chain);
        println!("height   {} ({}), round {}", st.height, short_hash(&st.hash), st.round);
        println!("pool     {} transaction(s)", st.pool);
        if let Some(from) = st.started_from {
            println!("started  from the state snapshot after block {from} (no block before it is held here)");
        }
        println!("producers ({}):", st.producers.len());
        for p in &st.producers {
            println!("  {p}  missed {}", st.missed.get(p).copied().unwrap_or(0));
        }
        for (from, next) in &st.next_producers {
            println!("elected, from height {from}: {} producer(s)", next.len());
            for p in next {
                println!("  {p}");
            }
        }
    }
    Ok(())
}

fn block(height: u64, a: &AskOpts) -> Result<()> {
    let (_, peer) = first(&a.bootstrap)?;
    let found = runtime()?.block_on(async {
        let (client, _h) = join(&a.bootstrap, None).await?;
        let b = ledger::rpc::block_answer(&ask(&client, peer, &Question::Block(height)).await?)?;
        client.shutdown().await;
        anyhow::Ok(b)
    })?;
    let Some((b, c)) = found else {
        bail!(
            "{peer} holds no final block at height {height} (not final yet, or before the state snapshot it started \
             from: `ionshard ledger status` says which)"
        )
    };
    let signers: Vec<String> = c.commit_signatures.iter().map(|s| s.address.0.to_string()).collect();
    let txs: Vec<String> = b.txs.iter().map(|t| t.id().to_string()).collect();
    if a.json {
        println!(
            "{}",
            json!({ "height": b.height, "hash": b.hash().to_hex(), "parent": b.parent.to_hex(), "time_ms": b.time_ms,
                    "proposer": b.proposer.to_string(), "round": c.round.as_i64(), "txs": txs, "signers": signers })
        );
    } else {
        println!("block {} {} (parent {})", b.height, b.hash().to_hex(), b.parent.to_hex());
        println!("proposed by {} in round {}, {} transaction(s)", b.proposer, c.round.as_i64(), txs.len());
        println!("certified by {} producer(s)", signers.len());
        for t in txs {
            println!("  tx {t}");
        }
    }
    Ok(())
}

/// Check the acknowledgements kept in `path` against an attested deletion.
fn check_acks_file(path: &std::path::Path, d: &ledger::Deletion) -> Result<()> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let kept: spn::types::DeletionAcks = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a file `ledger tx delete --acks-out` wrote", path.display()))?;
    if kept.object != d.object {
        bail!("{} holds the acknowledgements of {}, not of {}", path.display(), kept.object, d.object);
    }
    let bytes = ack_bytes(&kept.acks, &path.display().to_string())?;
    let (root, n) = ledger::deletion_root(&bytes).with_context(|| format!("checking {}", path.display()))?;
    if Hash(root).to_hex() != d.acks_root || n != d.acks {
        bail!(
            "{} does not match the attestation: its {n} acknowledgement(s) have root {}, the chain holds {} under {}",
            path.display(),
            Hash(root).to_hex(),
            d.acks,
            d.acks_root
        );
    }
    Ok(())
}

/// Acknowledgements as their bytes, from the hex `from` (a file, the SPN) gave.
fn ack_bytes(hex: &[String], from: &str) -> Result<Vec<Vec<u8>>> {
    hex.iter()
        .map(|h| {
            data_encoding::HEXLOWER
                .decode(h.as_bytes())
                .map_err(|e| anyhow!("{from}: an acknowledgement that is not hex: {e}"))
        })
        .collect()
}

/// An object's delete acknowledgements from the SPN that deleted it, each
/// checked: their root and count (kept in `out`, if given).
fn spn_acks(
    object: &str,
    api: &crate::http::Spn,
    allow_pending: bool,
    out: Option<&std::path::Path>,
) -> Result<([u8; 32], u64)> {
    let mut d = api
        .deletion(object)
        .with_context(|| format!("asking the SPN for the acknowledgements of deleting {object}"))?;
    if d.object != object {
        bail!("the SPN answered with the deletion of {}, not of {object}", d.object);
    }
    if d.pending > 0 && !allow_pending {
        bail!(
            "{} of the {} shard deletes of {object} still wait for their peer (offline?): the SPN retries every half \
             minute; try again later, or pass --allow-pending to attest what is acknowledged so far (an owner \
             attests an object's deletion once)",
            d.pending,
            d.queued
        );
    }
    let all = d.acks.len();
    // Only a peer's word that it held the shard and deleted it, after the
    // deletion: "it was not here" can be had from any peer for any shard,
    // and an older acknowledgement may be of an earlier copy.
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    // Parsed here to choose; `deletion_root` checks each signature of those kept.
    for b in ack_bytes(&d.acks, "the SPN")? {
        let a = net::DeleteAck::from_bytes(&b).map_err(|e| anyhow!("the SPN sent {e}"))?;
        if a.existed && a.at.saturating_add(3600) >= d.deleted_at {
            kept.push(b);
        } else {
            skipped.push(format!("{}/{}", a.cid, a.peer));
        }
    }
    let (root, n) = ledger::deletion_root(&kept).context("checking the acknowledgements the SPN sent")?;
    let settled = all + d.unsigned.len() + d.gave_up.len() + d.refused.len();
    let mut notes = Vec::new();
    if !skipped.is_empty() {
        notes.push(format!(
            "{} acknowledgement(s) of a shard the peer did not hold, or from before the deletion",
            skipped.len()
        ));
    }
    if !d.unsigned.is_empty() {
        notes.push(format!("{} delete(s) by peers of an earlier release (unsigned)", d.unsigned.len()));
    }
    if !d.refused.is_empty() {
        notes.push(format!("{} delete(s) the peer refused", d.refused.len()));
    }
    if !d.gave_up.is_empty() {
        notes.push(format!("{} given up", d.gave_up.len()));
    }
    if settled as u64 + d.pending < d.queued {
        notes.push(format!(
            "{} of the {} deletes queued are not accounted for",
            d.queued - settled as u64 - d.pending,
            d.queued
        ));
    }
    if !notes.is_empty() {
        eprintln!("note: not in the root: {}", notes.join("; "));
    }
    if let Some(path) = out {
        d.acks = kept.iter().map(|b| data_encoding::HEXLOWER.encode(b)).collect();
        crate::files::write_atomic(path, &serde_json::to_vec_pretty(&d)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((root, n))
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    Hash::from_hex(s).map(|h| h.0).ok_or_else(|| anyhow!("{what} {s:?} is not 64 hex digits"))
}

/// The transaction's body, and the key that must sign it if not the caller's.
fn body_of(c: TxCommand) -> Result<(Body, Option<net::Keypair>)> {
    let body = match c {
        TxCommand::Anchor { root, kind, count, bytes } => {
            let kind = match kind.as_str() {
                "receipts" => AnchorKind::Receipts,
                "deletions" => AnchorKind::Deletions,
                "audits" => AnchorKind::Audits,
                k => bail!("--kind {k:?}: use receipts, deletions or audits"),
            };
            Body::Anchor { kind, root: hex32(&root, "--root")?, count, bytes }
        }
        TxCommand::Release { vendor_dir: Some(dir), release: Some(id), .. } => {
            let v = crate::vendor::load(&dir)?;
            let path = dir.join("releases").join(format!("{id}.release.json"));
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading {} (is {id} published from this directory?)", path.display()))?;
            let r = ota::meta::release_signed_by(&v.root, &bytes)
                .with_context(|| format!("{} is not signed by this vendor's root", path.display()))?;
            let key = v.keys.first().ok_or_else(|| {
                anyhow!("{} holds none of its root's keys: the record is signed by one", dir.display())
            })?;
            let key = net::Keypair::ed25519_from_bytes(key.to_bytes()).map_err(|e| anyhow!("the vendor key: {e}"))?;
            let body = Body::Release {
                product: r.product,
                version: r.version,
                manifest: r.manifest,
                image_hash: hex32(&r.blake3, "the release's image hash")?,
            };
            return Ok((body, Some(key)));
        }
        TxCommand::Release {
            product: Some(product),
            version: Some(version),
            manifest: Some(manifest),
            image_hash: Some(h),
            ..
        } => Body::Release { product, version, manifest, image_hash: hex32(&h, "--image-hash")? },
        TxCommand::Release { .. } => bail!(
            "give --vendor-dir DIR --release PRODUCT@VERSION, or --product, --version, --manifest and --image-hash"
        ),
        TxCommand::Vote { candidates } => Body::Vote {
            candidates: candidates
                .iter()
                .map(|c| c.parse().with_context(|| format!("--for {c:?} is not a peer id")))
                .collect::<Result<_>>()?,
        },
        TxCommand::Candidate { addr } => Body::Candidate { addr },
        TxCommand::Admit { manufacturer, name, remove } => {
            Body::Admit { manufacturer: peer_arg(&manufacturer, "the manufacturer")?, name, admit: !remove }
        }
        TxCommand::Register { device, product, hardware } => {
            Body::Register { device: peer_arg(&device, "the device")?, product, hardware }
        }
        TxCommand::Transfer { device, to } => Body::Lifecycle {
            device: peer_arg(&device, "the device")?,
            change: ledger::Change::Transfer(peer_arg(&to, "--to")?),
        },
        TxCommand::Retire { device } => {
            Body::Lifecycle { device: peer_arg(&device, "the device")?, change: ledger::Change::Retire }
        }
        TxCommand::Authorize { object, receiver, revoke } => {
            Body::Authorize { object, receiver: peer_arg(&receiver, "--receiver")?, grant: !revoke }
        }
        TxCommand::Delete { object, spn: Some(url), token, allow_pending, acks_out, .. } => {
            let api = crate::http::spn(&url, token)?;
            let (acks_root, acks) = spn_acks(&object, &api, allow_pending, acks_out.as_deref())?;
            Body::Deletion { object, acks_root, acks }
        }
        TxCommand::Delete { object, acks_root, acks, .. } => {
            let root = acks_root.ok_or_else(|| anyhow!("give --spn, or --acks-root and --acks"))?;
            Body::Deletion { object, acks_root: hex32(&root, "--acks-root")?, acks: acks.unwrap_or(0) }
        }
        TxCommand::Points { root, credits } => {
            if credits.len() > ledger::MAX_POINTS {
                bail!("{} credits: at most {} per transaction; send several", credits.len(), ledger::MAX_POINTS);
            }
            let credits = credits
                .iter()
                .map(|c| {
                    let (peer, amount) =
                        c.split_once('=').ok_or_else(|| anyhow!("--credit {c:?}: write PEER=BYTE_HOURS[:AUDITS]"))?;
                    let (bh, audits) = amount.split_once(':').unwrap_or((amount, "0"));
                    Ok(ledger::Credit {
                        peer: peer_arg(peer, "--credit")?,
                        byte_hours: bh
                            .parse()
                            .with_context(|| format!("--credit {c:?}: byte-hours must be a number"))?,
                        audits: audits.parse().with_context(|| format!("--credit {c:?}: audits must be a number"))?,
                    })
                })
                .collect::<Result<_>>()?;
            Body::Points { root: hex32(&root, "--root")?, credits }
        }
    };
    Ok((body, None))
}

/// A peer id given on the command line.
fn peer_arg(s: &str, what: &str) -> Result<PeerId> {
    s.parse().with_context(|| format!("{what} {s:?} is not a peer id (`ionshard id` prints one)"))
}

/// Ask a node following the chain to look `what` up.
fn lookup(bootstrap: &[String], what: ledger::Lookup) -> Result<ledger::Record> {
    let (_, peer) = first(bootstrap)?;
    runtime()?.block_on(async {
        let (client, _h) = join(bootstrap, None).await?;
        let r = ledger::rpc::lookup_answer(&ask(&client, peer, &Question::Lookup(what)).await?)
            .map_err(|e| anyhow!("{peer} answered badly (an older release?): {e}"))?;
        client.shutdown().await;
        anyhow::Ok(r)
    })
}

fn show(what: ShowCommand, a: &AskOpts) -> Result<()> {
    use ledger::{Lookup, Record};
    let q = match &what {
        ShowCommand::Maker { id } => Lookup::Maker(peer_arg(id, "the manufacturer")?),
        ShowCommand::Device { id } => Lookup::Device(peer_arg(id, "the device")?),
        ShowCommand::Authorized { owner, object, receiver } => Lookup::Authorized {
            owner: peer_arg(owner, "--owner")?,
            object: object.clone(),
            receiver: peer_arg(receiver, "--receiver")?,
        },
        ShowCommand::Deletion { owner, object, .. } => {
            Lookup::Deletion { owner: peer_arg(owner, "--owner")?, object: object.clone() }
        }
        ShowCommand::Points { id } => Lookup::Points(peer_arg(id, "the peer")?),
        ShowCommand::Release { product, version } => {
            Lookup::Release { product: product.clone(), version: version.clone(), signer: None }
        }
    };
    let record = lookup(&a.bootstrap, q)?;
    if let (ShowCommand::Deletion { acks: Some(path), object, .. }, Record::Deletion(d)) = (&what, &record) {
        let d = d.as_ref().ok_or_else(|| anyhow!("no deletion of {object} is attested by that owner"))?;
        check_acks_file(path, d)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&record)?);
        return Ok(());
    }
    match record {
        Record::Maker(None) => println!("not an admitted manufacturer"),
        Record::Maker(Some(m)) => {
            println!("manufacturer {} ({}), admitted at height {}", m.manufacturer, m.name, m.admitted)
        }
        Record::Device(None) => println!("not a registered device"),
        Record::Device(Some(d)) => {
            println!("device {}: {} {} by {}", d.device, d.product, d.hardware, d.manufacturer);
            println!(
                "status {}{}",
                d.status,
                if d.owner.is_empty() { String::new() } else { format!(", owner {}", d.owner) }
            );
            println!(
                "registered at height {} (tx {}), last changed at {} (tx {})",
                d.registered, d.registration, d.changed, d.last_tx
            );
        }
        Record::Authorized(None) => println!("not authorized"),
        Record::Authorized(Some(h)) => println!("authorized since height {h}"),
        Record::Deletion(None) => println!("no deletion attested"),
        Record::Deletion(Some(d)) => {
            println!(
                "deleted: attested at height {} (tx {}), {} peer acknowledgement(s) under root {}",
                d.height, d.tx, d.acks, d.acks_root
            );
            if let ShowCommand::Deletion { acks: Some(path), .. } = &what {
                println!("{}: every acknowledgement verifies, and their root and count match", path.display());
            }
        }
        Record::Points(p) => {
            println!("peer {}: {} stored byte-hours, {} audit(s) passed", p.peer, p.byte_hours, p.audits);
            for (by, bh, au) in &p.by {
                println!("  attested by {by}: {bh} byte-hours, {au} audit(s)");
            }
        }
        Record::Releases(list) if list.is_empty() => println!("no record of that release"),
        Record::Releases(list) => {
            for r in list {
                println!("recorded by {} in tx {}", r.signer, r.tx);
            }
        }
    }
    Ok(())
}

fn tx(c: TxCommand, a: &AskOpts, key: Option<PathBuf>, lifetime: u64, no_wait: bool) -> Result<()> {
    let (body, own) = body_of(c)?;
    let key = match own {
        Some(k) => k,
        None => net::load_or_create_key(&key.unwrap_or_else(|| crate::files::home().join("ledger.key")))?.0,
    };
    let pb = indicatif::ProgressBar::new_spinner();
    if a.json {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb.set_message("waiting for a block");
    pb.enable_steady_tick(Duration::from_millis(120));
    let (id, at) = submit(&a.bootstrap, &key, body, lifetime, !no_wait)?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", json!({ "tx": id.to_string(), "height": at.map(|x| x.0), "index": at.map(|x| x.1) }));
    } else {
        match at {
            Some((h, i)) => println!("transaction {id} is final in block {h} (index {i})"),
            None => println!("transaction {id} was taken by a producer"),
        }
    }
    Ok(())
}

/// Sign `body` with `key` against the newest block a node of `bootstrap`
/// knows, offer it, and (`wait`) wait until a final block holds it.
fn submit(
    bootstrap: &[String],
    key: &net::Keypair,
    body: Body,
    lifetime: u64,
    wait: bool,
) -> Result<(ledger::TxId, Option<(u64, u32)>)> {
    let (_, peer) = first(bootstrap)?;
    runtime()?.block_on(async {
        let (client, _h) = join(bootstrap, None).await?;
        let st = ledger::rpc::status_answer(&ask(&client, peer, &Question::Status).await?)?;
        let chain = Hash::from_hex(&st.chain).ok_or_else(|| anyhow!("{peer} named no chain"))?;
        let reference = Hash::from_hex(&st.hash).ok_or_else(|| anyhow!("{peer} named no block"))?;
        let tx = Tx::sign(key, chain, (st.height, reference), lifetime, body)?;
        let id = match ledger::rpc::submit_answer(&ask(&client, peer, &Question::Submit(Box::new(tx))).await?)? {
            Ok(id) => id,
            Err(why) => bail!("the producer refused the transaction: {why}"),
        };
        let mut at = None;
        if wait {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while at.is_none() {
                if tokio::time::Instant::now() > deadline {
                    bail!("transaction {id} is not in a block after 60 s (is more than 2/3 of the producers up?)");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                at = ledger::rpc::find_answer(&ask(&client, peer, &Question::Find(id)).await?)?;
            }
        }
        client.shutdown().await;
        anyhow::Ok((id, at))
    })
}

/// A producers file as `ledger producers` writes it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ProducersFile {
    genesis: Genesis,
    /// Each change of the set, hex of its bytes.
    changes: Vec<String>,
}

/// The genesis and the producer sets a genesis or producers file shows, checked.
fn load_producers(path: &Path) -> Result<(Genesis, ledger::sets::History)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(f) = serde_json::from_slice::<ProducersFile>(&text) {
        f.genesis.check()?;
        let changes = f
            .changes
            .iter()
            .map(|h| {
                let b = data_encoding::HEXLOWER.decode(h.as_bytes()).context("a change that is not hex")?;
                Ok(ledger::sets::SetChange::decode(&b)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let sets = ledger::sets::follow(&f.genesis, &changes)
            .with_context(|| format!("{} does not hold together", path.display()))?;
        return Ok((f.genesis, sets));
    }
    let g = Genesis::load(path)?;
    let sets = ledger::sets::follow(&g, &[])?;
    Ok((g, sets))
}

fn producers_file(genesis: &Path, out: &Path, a: &AskOpts) -> Result<()> {
    let g = Genesis::load(genesis)?;
    let (_, peer) = first(&a.bootstrap)?;
    let changes = runtime()?.block_on(async {
        let (client, _h) = join(&a.bootstrap, None).await?;
        let bytes = client
            .ask_ledger(peer, &Question::Sets.encode(), 16 << 20)
            .await
            .map_err(|e| anyhow!("asking {peer} for the producer sets: {e}"))?;
        client.shutdown().await;
        anyhow::Ok(ledger::rpc::sets_answer(&bytes)?)
    })?;
    let sets = ledger::sets::follow(&g, &changes).context("the node's producer history does not check out")?;
    let f = ProducersFile {
        genesis: g,
        changes: changes.iter().map(|c| data_encoding::HEXLOWER.encode(&c.encode())).collect(),
    };
    crate::files::write_atomic(out, &serde_json::to_vec_pretty(&f)?)?;
    if a.json {
        println!("{}", json!({ "producers": out.display().to_string(), "changes": changes.len() }));
    } else {
        println!("wrote {} ({} change(s) of the producers, each checked)", out.display(), changes.len());
        for (from, p) in &sets {
            println!("  from height {from}: {} producer(s)", p.len());
        }
    }
    Ok(())
}

fn recover(what: RecoverCommand) -> Result<()> {
    match what {
        RecoverCommand::Sign { dir, producer_key: apart, genesis, producers, file, json } => {
            let g = Genesis::load(&genesis)?;
            let chain = g.hash();
            let store = ledger::Store::open(&dir.join("ledger"), chain).with_context(|| {
                format!("opening the ledger of the node in {} (stop the node first)", dir.display())
            })?;
            let key = match &apart {
                Some(f) => producer_key(f)?,
                None => net::load_or_create_key(&dir.join("identity.key"))?.0,
            };
            let list: Vec<PeerId> = producers
                .iter()
                .map(|p| p.parse().with_context(|| format!("--producer {p:?} is not a peer id")))
                .collect::<Result<_>>()?;
            let held = store.height()?;
            let last =
                if held == 0 { chain } else { store.hash_at(held)?.context("the store lost its newest block")? };
            let mut r = match std::fs::read(&file) {
                Ok(b) => {
                    ledger::Recovery::decode(&b).with_context(|| format!("{} is not a recovery", file.display()))?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ledger::Recovery { chain, height: held + 1, last, producers: list.clone(), signatures: Vec::new() }
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            if r.chain != chain || r.height != held + 1 || r.last != last || r.producers != list {
                bail!(
                    "{} restarts height {} after block {} with other producers; this node halted at height {} after {}:                      sign the same recovery as the others, or start a new file",
                    file.display(),
                    r.height,
                    r.last.to_hex(),
                    held + 1,
                    last.to_hex()
                );
            }
            // A signature the recovery would not count is no signature: say so.
            let me = key.public().to_peer_id();
            if !store.set_at(r.height)?.contains(&me) {
                bail!(
                    "{me} is not a producer at height {} (a producer that runs with --producer-key signs with that key: \
                     give it here)",
                    r.height
                );
            }
            // One recovery per halted height: refuse to sign a second, different one.
            let mark = dir.join("ledger").join(format!("recovery-signed-{}", r.height));
            let digest =
                blake3::hash(&ledger::Recovery { signatures: Vec::new(), ..r.clone() }.encode()).to_hex().to_string();
            match std::fs::read_to_string(&mark) {
                Ok(d) if d.trim() != digest => {
                    bail!("this producer signed another recovery for height {} already; it signs one only", r.height)
                }
                _ => {}
            }
            crate::files::write_atomic(&mark, digest.as_bytes())?;
            r.sign(&key)?;
            crate::files::write_atomic(&file, &r.encode())?;
            let set = store.set_at(r.height)?;
            let enough = r.verify(&set).is_ok();
            if json {
                println!(
                    "{}",
                    json!({ "file": file.display().to_string(), "height": r.height, "signatures": r.signatures.len(), "enough": enough })
                );
            } else {
                println!(
                    "signed the recovery of height {} ({} signature(s) of {} producer(s); {})",
                    r.height,
                    r.signatures.len(),
                    set.len(),
                    if enough {
                        "enough: apply it on every node with `ionshard ledger recover apply`"
                    } else {
                        "pass it to the next producer"
                    }
                );
            }
            Ok(())
        }
        RecoverCommand::Apply { file, dir, genesis, json } => {
            let g = Genesis::load(&genesis)?;
            let store = ledger::Store::open(&dir.join("ledger"), g.hash()).with_context(|| {
                format!("opening the ledger of the node in {} (stop the node first)", dir.display())
            })?;
            store.seed(&g)?;
            let b = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = ledger::Recovery::decode(&b).with_context(|| format!("{} is not a recovery", file.display()))?;
            store.recover(&r)?;
            if json {
                println!(
                    "{}",
                    json!({ "height": r.height, "producers": r.producers.iter().map(ToString::to_string).collect::<Vec<_>>() })
                );
            } else {
                println!(
                    "from height {} the producers are {} node(s); start the node again",
                    r.height,
                    r.producers.len()
                );
            }
            Ok(())
        }
    }
}

fn prove(what: ProveCommand, out: Option<&Path>, json_out: bool) -> Result<()> {
    let hex = match what {
        ProveCommand::Receipt { shard, peer, spn, token } => {
            let api = crate::http::spn(&spn, crate::http::token(token, None)?)?;
            api.receipt_proof(&shard, &peer)?.proof
        }
        ProveCommand::Tx { id, bootstrap } => prove_tx(ledger::TxId(hex32(&id, "the transaction id")?), &bootstrap)?,
        ProveCommand::Device { id, registration, bootstrap } => {
            let ledger::Record::Device(Some(d)) =
                lookup(&bootstrap, ledger::Lookup::Device(peer_arg(&id, "the device")?))?
            else {
                bail!("{id} is not a registered device on this chain");
            };
            let tx = if registration { &d.registration } else { &d.last_tx };
            prove_tx(ledger::TxId(hex32(tx, "the device's transaction")?), &bootstrap)?
        }
        ProveCommand::Release { product, version, signer, bootstrap } => {
            let ledger::Record::Releases(list) = lookup(
                &bootstrap,
                ledger::Lookup::Release {
                    product: product.clone(),
                    version: version.clone(),
                    signer: signer.as_deref().map(|s| peer_arg(s, "--signer")).transpose()?,
                },
            )?
            else {
                bail!("the node answered another kind of record");
            };
            let mine: Vec<_> = list.iter().filter(|r| signer.as_ref().is_none_or(|s| *s == r.signer)).collect();
            let r = match mine.as_slice() {
                [] => bail!(
                    "no record of {product} {version} on this chain{}",
                    if signer.is_some() { " by that signer" } else { "" }
                ),
                [r] => r,
                _ => bail!("{} keys recorded {product} {version}: name one with --signer", mine.len()),
            };
            prove_tx(ledger::TxId(hex32(&r.tx, "the release's transaction")?), &bootstrap)?
        }
    };
    match out {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{hex}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {}", path.display()))?;
            if json_out {
                println!("{}", json!({ "proof": path.display().to_string(), "bytes": hex.len() / 2 }));
            } else {
                println!(
                    "wrote {} ({} bytes); check it with `ionshard ledger verify {} --producers GENESIS`",
                    path.display(),
                    hex.len() / 2,
                    path.display()
                );
            }
        }
        None if json_out => println!("{}", json!({ "proof": hex })),
        None => println!("{hex}"),
    }
    Ok(())
}

/// Check that `release` is recorded on the chain by a key of `root`: the
/// record's proof, from a node of `bootstrap`, checked against the
/// producers file. The record's height and the vendor key id.
pub(crate) fn release_on_chain(
    bootstrap: &[String],
    producers: &Path,
    release: &ota::meta::Release,
    root: &ota::meta::Root,
) -> Result<(u64, String)> {
    let id = release.id();
    let (g, sets) = load_producers(producers)?;
    let mut why = format!(
        "{id} is not recorded on the ledger by a key of the vendor's root: the vendor records it with \
         `ionshard ledger tx release --vendor-dir DIR --release {id}`"
    );
    for (key_id, public) in &root.keys {
        let Some(signer) = root_key_peer(public) else { continue };
        // Whatever a node answers is only a pointer: the proof decides.
        let q = ledger::Lookup::Release {
            product: release.product.clone(),
            version: release.version.clone(),
            signer: Some(signer),
        };
        let mut answered = None;
        for addr in bootstrap {
            if let Ok(ledger::Record::Releases(list)) = lookup(std::slice::from_ref(addr), q.clone()) {
                answered = Some((list, addr.clone()));
                break;
            }
        }
        let Some((records, via)) = answered else {
            bail!("--require-ledger: no node of --bootstrap follows the chain (or none answered) about {id}");
        };
        for r in records {
            let Some(tx) = ledger::tx_id(&r.tx) else { continue };
            let p = match tx_proof(tx, std::slice::from_ref(&via)) {
                Ok(p) => p,
                Err(e) => {
                    why = format!("the record of {id} could not be proven: {e}");
                    continue;
                }
            };
            match p.verify(g.hash(), &ledger::sets::at(&sets, p.header.height)) {
                Ok(proven) => match release_record_holds(&proven, tx, signer, release) {
                    Ok(()) => return Ok((proven.height, key_id.clone())),
                    Err(e) => why = e,
                },
                Err(e) => why = format!("the proof of {id}'s record does not hold: {e}"),
            }
        }
    }
    bail!("--require-ledger: {why}; nothing was downloaded")
}

/// The peer id of a root key (ed25519 public key, hex).
fn root_key_peer(public_hex: &str) -> Option<PeerId> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(public_hex.as_bytes()).ok()?;
    ledger::ed25519_peer(&bytes)
}

/// What a proven transaction must be to stand for `release`: the
/// transaction asked for, signed by the root key asked for, naming the
/// release's product, version, manifest and image.
fn release_record_holds(
    proven: &ledger::Proven,
    id: ledger::TxId,
    signer: PeerId,
    release: &ota::meta::Release,
) -> std::result::Result<(), String> {
    let rid = release.id();
    if proven.tx.id() != id || proven.tx.signer != signer {
        return Err(format!("the node pointed at a record of {rid} that is not the one proven, or not the vendor's"));
    }
    match &proven.tx.body {
        Body::Release { product, version, manifest, image_hash }
            if *product == release.product
                && *version == release.version
                && *manifest == release.manifest
                && Hash(*image_hash).to_hex().eq_ignore_ascii_case(&release.blake3) =>
        {
            Ok(())
        }
        _ => Err(format!("the ledger's record of {rid} names another manifest or image than the release")),
    }
}

/// A proof (hex) that transaction `id` is in a final block.
fn prove_tx(id: ledger::TxId, bootstrap: &[String]) -> Result<String> {
    Ok(data_encoding::HEXLOWER.encode(&tx_proof(id, bootstrap)?.encode()))
}

/// The proof that transaction `id` is in a final block, from a node of `bootstrap`.
fn tx_proof(id: ledger::TxId, bootstrap: &[String]) -> Result<ledger::Proof> {
    let (_, peer) = first(bootstrap)?;
    let proof = runtime()?.block_on(async {
        let (client, _h) = join(bootstrap, None).await?;
        let Some((h, i)) = ledger::rpc::find_answer(&ask(&client, peer, &Question::Find(id)).await?)? else {
            bail!("transaction {id} is not on the chain (yet)");
        };
        let (b, c) = ledger::rpc::block_answer(&ask(&client, peer, &Question::Block(h)).await?)?
            .ok_or_else(|| anyhow!("{peer} has no block {h}"))?;
        client.shutdown().await;
        if b.txs.get(i as usize).map(Tx::id) != Some(id) {
            bail!("{peer} says block {h} holds transaction {id} at {i}, and it does not");
        }
        anyhow::Ok(ledger::prove(&b, &c, i as usize, None)?)
    })?;
    Ok(proof)
}

fn verify(proof: &Path, producers: &Path, json_out: bool) -> Result<()> {
    let text = std::fs::read(proof).with_context(|| format!("reading {}", proof.display()))?;
    if text.len() > 1 << 20 {
        bail!("{} is larger than any proof (1 MiB)", proof.display());
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(String::from_utf8_lossy(&text).trim().as_bytes())
        .map_err(|e| anyhow!("{} is not a proof in hex: {e}", proof.display()))?;
    let p = ledger::Proof::decode(&bytes)?;
    let (g, sets) = load_producers(producers)?;
    let chain = g.hash();
    let set = ledger::sets::at(&sets, p.header.height);
    let (proven, receipt) = if p.item.is_some() {
        let (proven, r) = p.verify_receipt(chain, &set).map_err(|e| anyhow!("the proof does not hold: {e}"))?;
        (proven, Some(r))
    } else {
        (p.verify(chain, &set).map_err(|e| anyhow!("the proof does not hold: {e}"))?, None)
    };
    let what = match &receipt {
        Some(r) => {
            json!({ "receipt": { "peer": r.peer.to_string(), "shard": r.cid.to_string(), "size": r.size, "stored_at": r.stored_at } })
        }
        None => proven.tx.body.summary(),
    };
    if json_out {
        println!(
            "{}",
            json!({ "valid": true, "chain": chain.to_hex(), "height": proven.height, "block": proven.block.to_hex(),
                    "time_ms": proven.time_ms, "signer": proven.tx.signer.to_string(), "tx": proven.tx.id().to_string(), "proves": what })
        );
    } else {
        println!("valid: final in block {} ({}) of chain {}", proven.height, proven.block, &chain.to_hex()[..16]);
        println!("signed by {}, transaction {}", proven.tx.signer, proven.tx.id());
        println!("{what}");
    }
    Ok(())
}

/// Start an empty ledger store in `dir` from a peer's state snapshot:
/// ask `peers` in turn for their newest, check its checkpoint against the
/// producer sets they show from the genesis, fetch it in parts, compare
/// its BLAKE3 with the certified digest, import it. `None`: the store
/// holds blocks already, or no peer offers a snapshot within `patience`
/// (the node then syncs every block from the first).
pub(crate) async fn from_snapshot(
    genesis: &Genesis,
    dir: &Path,
    client: &net::Client,
    peers: &[PeerId],
    patience: Duration,
) -> Result<Option<u64>> {
    let p = &genesis.params;
    // A chain younger than one snapshot interval has none to offer (its
    // producers start together and would wait on each other for nothing).
    let age = now_ms().saturating_sub(genesis.time_ms);
    if p.snapshot_every == 0 || age < p.snapshot_every.saturating_mul(p.block_ms) {
        return Ok(None);
    }
    let store = ledger::Store::open(dir, genesis.hash())?;
    if store.height()? > 0 {
        return Ok(None);
    }
    let deadline = std::time::Instant::now() + patience;
    let mut why = Vec::new();
    // Bounded: each round asks every peer once; the rounds end once a peer
    // answered it has none, or at the deadline (peers not reached yet).
    while std::time::Instant::now() < deadline {
        why.clear();
        let mut answered = false;
        for &peer in peers {
            match snapshot_from(genesis, dir, &store, client, peer).await {
                Ok(Some(h)) => return Ok(Some(h)),
                Ok(None) => {
                    answered = true;
                    why.push(format!("{peer} offers none"));
                }
                Err(e) => why.push(format!("{peer}: {e:#}")),
            }
        }
        if answered || peers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = std::fs::remove_file(dir.join("snapshots").join("incoming.tmp"));
    eprintln!("ledger: no state snapshot to start from ({}); syncing every block from the first", why.join("; "));
    Ok(None)
}

/// One try at [`from_snapshot`] with one peer.
async fn snapshot_from(
    genesis: &Genesis,
    dir: &Path,
    store: &ledger::Store,
    client: &net::Client,
    peer: PeerId,
) -> Result<Option<u64>> {
    let Some(offer) = ledger::rpc::snapshot_answer(&ask(client, peer, &Question::Snapshot).await?)? else {
        return Ok(None);
    };
    let changes = ledger::rpc::sets_answer(&client.ask_ledger(peer, &Question::Sets.encode(), 16 << 20).await?)?;
    let digest = offer.check(genesis, &changes)?;
    let height = offer.height;
    eprintln!(
        "ledger: starting from {peer}'s snapshot after block {height} ({}), certified in block {}",
        crate::size::human(offer.size),
        offer.proof.header.height
    );
    let mut d = ledger::Download::start(dir, offer, digest)?;
    let mut last = std::time::Instant::now();
    while let Some(q) = d.next() {
        let part = ledger::rpc::part_answer(&ask(client, peer, &q).await?)?;
        d.take(&part)?;
        if last.elapsed() > Duration::from_secs(2) {
            let (got, of) = d.progress();
            eprintln!("ledger: snapshot {} of {}", crate::size::human(got), crate::size::human(of));
            last = std::time::Instant::now();
        }
    }
    let (path, offer) = d.finish()?;
    let (block, cert) = ledger::rpc::block_answer(&ask(client, peer, &Question::Block(height)).await?)?
        .ok_or_else(|| anyhow!("{peer} offered snapshot {height} but not its block"))?;
    store.import(&path, &offer, &block, &cert, &changes)?;
    eprintln!("ledger: state after block {height} imported and checked; syncing the blocks after it");
    Ok(Some(height))
}

/// A node's ledger task, wired to its swarm: gossip in and out, sync
/// questions asked and answered.
pub(crate) struct Running {
    pub(crate) ledger: ledger::Ledger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.ledger.stop().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A producer's key apart from its node key (`node --producer-key`):
/// created at mode 0600 if missing; a file others may read is refused, as
/// whoever reads it can sign votes in the producer's name.
pub(crate) fn producer_key(path: &Path) -> Result<net::Keypair> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        bail!(
            "--producer-key {}: mode {:o} lets others read it (anyone who reads it signs votes as this producer); \
             run `chmod 600 {}`",
            path.display(),
            m.permissions().mode() & 0o777,
            path.display()
        );
    }
    let (key, created) = net::load_or_create_key(path)?;
    if created {
        eprintln!("created producer key {} ({})", path.display(), key.public().to_peer_id());
    }
    Ok(key)
}

/// The gossip settings for `genesis`, and where its messages arrive.
pub(crate) fn gossip(genesis: &Genesis) -> (net::Gossip, tokio::sync::mpsc::Receiver<(PeerId, Vec<u8>)>) {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let g = net::Gossip {
        topic: format!("/ionshard/ledger/{}", genesis.hash().to_hex()),
        inbound: tx,
        max_bytes: ledger::MAX_MESSAGE_BYTES,
    };
    (g, rx)
}

/// Start the ledger task beside a running node.
pub(crate) fn start(
    genesis: &Genesis,
    dir: &Path,
    key: net::Keypair,
    client: &net::Client,
    mut inbound: tokio::sync::mpsc::Receiver<(PeerId, Vec<u8>)>,
) -> Result<Running> {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(1024);
    let (ledger, engine) = ledger::start(genesis, dir, key, out_tx)?;
    let mut tasks = vec![engine];
    let l = ledger.clone();
    tasks.push(tokio::spawn(async move {
        while let Some((from, bytes)) = inbound.recv().await {
            l.gossip(from, bytes).await;
        }
    }));
    let (l, c) = (ledger.clone(), client.clone());
    tasks.push(tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            match out {
                ledger::Out::Publish(bytes) => {
                    let _ = c.publish_ledger(bytes).await;
                }
                ledger::Out::Ask { peer, height, bytes } => {
                    let (l, c) = (l.clone(), c.clone());
                    tokio::spawn(async move {
                        let a = c.ask_ledger(peer, &bytes, ledger::MAX_ANSWER_BYTES).await.ok();
                        l.sync_answer(peer, height, a).await;
                    });
                }
            }
        }
    }));
    let l = ledger.clone();
    tasks.push(client.serve_ledger(move |q| {
        let l = l.clone();
        async move { ledger::rpc::serve(&l, &q).await }
    })?);
    Ok(Running { ledger, tasks })
}

/// How the demo's ledger act stops and starts its nodes.
pub(crate) struct Nodes<'a> {
    /// Kill the node of this name.
    pub(crate) kill: &'a dyn Fn(&str),
    /// Start a node of this name with these arguments; its first line.
    pub(crate) start: &'a dyn Fn(&str, &[String]) -> Result<serde_json::Value>,
}

/// The demo's ledger act: the chain as a follower sees it, a receipt of the
/// first publish proven and checked against the producers, a forged one
/// refused, a deletion attested, and blocks going on with one producer
/// killed. `objects`: the first publish's, and one a backup prune deleted.
pub(crate) fn demo_act(
    json_out: bool,
    api: &crate::http::Spn,
    boot: &str,
    genesis: &Path,
    objects: (&str, Option<&str>),
    vendor: (&Path, &str, &str),
    nodes: Nodes<'_>,
) -> Result<serde_json::Value> {
    let (object, deleted) = objects;
    let Nodes { kill, start } = nodes;
    use crate::demo::say;
    say(json_out, "ledger: 4 producers finalize a block every 0.5 s (Tendermint BFT); the SPN anchors receipt batches");
    let g = Genesis::load(genesis)?;
    let (chain, set) = (g.hash(), g.validators(Hash::default()));
    let boot_peer = peer_of(boot)?;
    let rt = runtime()?;
    let bootstrap = vec![boot.to_string()];
    let status = || {
        rt.block_on(async {
            let (client, _h) = join(&bootstrap, None).await?;
            let st = ledger::rpc::status_answer(&ask(&client, boot_peer, &Question::Status).await?)?;
            client.shutdown().await;
            anyhow::Ok(st)
        })
    };
    let st = status()?;
    if !json_out {
        println!(
            "the bootstrap follows chain {}: height {}, {} producers",
            short_hash(&st.chain),
            st.height,
            st.producers.len()
        );
    }
    let receipts = api.receipts(object)?;
    let r = receipts.first().context("the first publish has no receipts")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let proof = loop {
        match api.receipt_proof(&r.cid.to_string(), &r.peer.to_string()) {
            Ok(p) => break p,
            Err(e) if std::time::Instant::now() > deadline => bail!("no receipt proof within 60 s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let bytes = data_encoding::HEXLOWER.decode(proof.proof.trim().as_bytes()).context("the proof's hex")?;
    let p = ledger::Proof::decode(&bytes)?;
    let t = std::time::Instant::now();
    let (proven, _) = p.verify_receipt(chain, &set).map_err(|e| anyhow!("the SPN's proof does not hold: {e}"))?;
    let took = t.elapsed();
    if !json_out {
        println!(
            "receipt of peer {} for shard {}: in batch {}, final in block {}; the proof ({} bytes) checks against the 4 producers in {:.2} ms",
            r.peer,
            r.cid,
            proof.batch,
            proven.height,
            bytes.len(),
            took.as_secs_f64() * 1e3
        );
    }
    let mut forged = p.clone();
    if let Some(last) = forged.item.as_mut().and_then(|(item, _)| item.last_mut()) {
        *last ^= 1;
    }
    let refused = match forged.verify_receipt(chain, &set) {
        Ok(_) => bail!("a forged receipt passed"),
        Err(e) => e.to_string(),
    };
    if !json_out {
        println!("a receipt with one bit changed: refused ({refused})");
    }
    // Points: the SPN credits the batch's peers once it is final.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let points = loop {
        if let ledger::Record::Points(p) = lookup(&bootstrap, ledger::Lookup::Points(r.peer))?
            && p.byte_hours > 0
        {
            break p;
        }
        if std::time::Instant::now() > deadline {
            bail!("peer {} has no points on the chain 60 s after its receipt was anchored", r.peer);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !json_out {
        println!(
            "peer {} holds {} byte-hours and {} audit pass(es) of contribution points on the chain, attested by the SPN",
            r.peer, points.byte_hours, points.audits
        );
    }
    // A release record, signed by a vendor root key, checked as a device does.
    let (vdir, recorded, unrecorded) = vendor;
    say(
        json_out,
        format!(
            "the vendor records {recorded} on the chain with a root key; a device that requires the ledger checks it"
        ),
    );
    let (body, key) = body_of(TxCommand::Release {
        vendor_dir: Some(vdir.to_path_buf()),
        release: Some(recorded.to_string()),
        product: None,
        version: None,
        manifest: None,
        image_hash: None,
    })?;
    let key = key.context("the vendor's key")?;
    submit(&bootstrap, &key, body, 600, true)?;
    let v = crate::vendor::load(vdir)?;
    let release = |id: &str| -> Result<ota::meta::Release> {
        let bytes = std::fs::read(vdir.join("releases").join(format!("{id}.release.json")))?;
        Ok(ota::meta::release_signed_by(&v.root, &bytes)?)
    };
    let (at, key_id) = release_on_chain(&bootstrap, genesis, &release(recorded)?, &v.root)?;
    let unrecorded_refused = match release_on_chain(&bootstrap, genesis, &release(unrecorded)?, &v.root) {
        Ok(_) => bail!("{unrecorded} passed the ledger check without a record"),
        Err(e) => e.to_string(),
    };
    if !json_out {
        println!(
            "{recorded}: recorded in final block {at} by vendor key {key_id}; the proof checks against the producers"
        );
        println!("{unrecorded} (never recorded): refused ({unrecorded_refused})");
    }
    let deletion = match deleted {
        Some(object) => demo_deletion(json_out, api, &bootstrap, genesis, object)?,
        None => "no object was deleted".to_string(),
    };
    say(
        json_out,
        "a new node joins: it starts from the newest state snapshot, checked against its certified checkpoint, \
         instead of replaying every block",
    );
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    let (ndir, addr) = harness::procs::ledger_node(&exe, genesis.parent().unwrap_or(Path::new(".")), "latecomer", 5)?;
    let mut args = harness::procs::producer_args(&addr, &ndir, genesis);
    args.retain(|a| a != "--produce");
    start("latecomer", &args)?;
    let late = peer_of(&addr)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (from, caught) = loop {
        let st = rt.block_on(async {
            let (client, _h) = join(std::slice::from_ref(&addr), None).await?;
            let st = ledger::rpc::status_answer(&ask(&client, late, &Question::Status).await?);
            client.shutdown().await;
            anyhow::Ok(st?)
        });
        let top = status()?.height;
        match st {
            Ok(st) if st.started_from.is_some() && st.height + 2 >= top => break (st.started_from, st.height),
            Ok(st) if std::time::Instant::now() > deadline => {
                bail!(
                    "the new node is at height {} of {top} (started from {:?}) after 90 s",
                    st.height,
                    st.started_from
                )
            }
            Err(e) if std::time::Instant::now() > deadline => bail!("the new node does not answer after 90 s: {e:#}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let from = from.unwrap_or_default();
    if !json_out {
        println!(
            "the new node started from the snapshot after block {from} (its digest certified by the producers) and \
             is at height {caught}: {from} blocks not replayed"
        );
    }
    say(json_out, "kill 1 of the 4 producers: more than 2/3 remain, blocks go on");
    kill("producer3");
    let before = status()?.height;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let h = status()?.height;
        if h >= before + 3 {
            break h;
        }
        if std::time::Instant::now() > deadline {
            bail!("the chain stayed at height {h} with 3 of 4 producers");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !json_out {
        println!("height {before} -> {after} with 3 producers");
    }
    Ok(json!({
        "ledger_producers": set.validators().len(),
        "ledger_receipt_proof": format!("{} bytes, block {}, checked in {:.2} ms", bytes.len(), proven.height, took.as_secs_f64() * 1e3),
        "ledger_forged_receipt": format!("refused: {refused}"),
        "ledger_points": format!("{} byte-hours, {} audit pass(es) for peer {}", points.byte_hours, points.audits, r.peer),
        "ledger_release_record": format!("{recorded} in block {at}"),
        "ledger_unrecorded_release": format!("refused: {unrecorded_refused}"),
        "ledger_one_producer_down": format!("height {before} -> {after}"),
        "ledger_new_node_from_snapshot": format!("started after block {from}, caught up to {caught}"),
        "ledger_deletion": deletion,
    }))
}

/// The demo's deletion attestation: the office attests that an object its
/// prune deleted is gone, under the root of the peers' signed delete
/// acknowledgements, and anyone holding them checks them against the chain.
fn demo_deletion(
    json_out: bool,
    api: &crate::http::Spn,
    bootstrap: &[String],
    genesis: &Path,
    object: &str,
) -> Result<String> {
    crate::demo::say(
        json_out,
        "the office attests on the chain that a pruned object is deleted, with its peers' signed delete acknowledgements",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = api.deletion(object)?;
        if d.pending == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("{} shard deletes of {object} still wait for their peer after 60 s", d.pending);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let file = genesis.parent().unwrap_or(Path::new(".")).join("deletion-acks.json");
    let (root, n) = spn_acks(object, api, false, Some(&file))?;
    let owner = net::Keypair::generate_ed25519();
    let (id, _) =
        submit(bootstrap, &owner, Body::Deletion { object: object.to_string(), acks_root: root, acks: n }, 600, true)?;
    let ledger::Record::Deletion(Some(d)) =
        lookup(bootstrap, ledger::Lookup::Deletion { owner: owner.public().to_peer_id(), object: object.to_string() })?
    else {
        bail!("the deletion of {object} is not on the chain after its transaction {id} was final");
    };
    check_acks_file(&file, &d)?;
    // One acknowledgement less no longer matches what the chain holds.
    let mut kept: spn::types::DeletionAcks = serde_json::from_slice(&std::fs::read(&file)?)?;
    kept.acks.pop();
    let short = file.with_extension("short.json");
    crate::files::write_atomic(&short, &serde_json::to_vec(&kept)?)?;
    let refused = match check_acks_file(&short, &d) {
        Ok(()) => bail!("an acknowledgement list missing one matched the attestation"),
        Err(e) => e.to_string(),
    };
    if !json_out {
        println!(
            "object {object}: {n} signed acknowledgement(s) from its peers, checked; attested in block {} under root {}",
            d.height,
            short_hash(&d.acks_root)
        );
        println!("the list with one acknowledgement missing: refused ({refused})");
        println!(
            "by hand: `ionshard ledger tx delete OBJECT --spn URL --acks-out acks.json`, then `ionshard ledger show \
             deletion --owner KEY --object OBJECT --acks acks.json`"
        );
    }
    Ok(format!(
        "{n} acknowledgements under root {} in block {}; one missing: refused",
        short_hash(&d.acks_root),
        d.height
    ))
}

/// The first 16 characters of a hash a node sent (it may be anything,
/// multibyte characters too: slicing 16 bytes of those panicked).
fn short_hash(hash: &str) -> &str {
    hash.char_indices().nth(16).map_or(hash, |(at, _)| &hash[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_status_survives_a_non_ascii_hash() {
        assert_eq!(short_hash("€€€€€€"), "€€€€€€");
        assert_eq!(short_hash(&"€".repeat(20)), "€".repeat(16));
        assert_eq!(short_hash("0123456789abcdef0123"), "0123456789abcdef");
    }

    fn release() -> ota::meta::Release {
        ota::meta::Release {
            vendor: "acme".into(),
            product: "router".into(),
            hardware: vec!["r1".into()],
            version: "1.0.0".into(),
            length: 3,
            blake3: "11".repeat(32),
            manifest: "bafymanifest".into(),
            read_key: ota::meta::KeyWrap::Clear("00".repeat(32)),
            issued: 1,
            expires: 2,
        }
    }

    fn proven(key: &net::Keypair, body: Body) -> ledger::Proven {
        let tx = Tx::sign(key, Hash([1; 32]), (1, Hash([2; 32])), 10, body).expect("sign");
        ledger::Proven { height: 5, time_ms: 5, block: Hash([3; 32]), tx }
    }

    fn record(r: &ota::meta::Release) -> Body {
        Body::Release {
            product: r.product.clone(),
            version: r.version.clone(),
            manifest: r.manifest.clone(),
            image_hash: [0x11; 32],
        }
    }

    /// A lying node points a device at a release record an attacker signed
    /// (the same product, version, manifest and image) and names the
    /// vendor's key as its signer: the proven transaction's own signer and
    /// id decide, not the node's word.
    #[test]
    fn a_lying_node_cannot_pass_another_signers_release_record_off_as_the_vendors() {
        let r = release();
        let vendor = net::Keypair::generate_ed25519();
        let attacker = net::Keypair::generate_ed25519();
        let forged = proven(&attacker, record(&r));
        let claimed = vendor.public().to_peer_id();
        assert!(release_record_holds(&forged, forged.tx.id(), claimed, &r).is_err(), "another signer's record passed");
        let real = proven(&vendor, record(&r));
        assert!(
            release_record_holds(&real, forged.tx.id(), claimed, &r).is_err(),
            "a proof of another transaction passed"
        );
        assert_eq!(release_record_holds(&real, real.tx.id(), claimed, &r), Ok(()));
        let mut other = r.clone();
        other.manifest = "bafyother".into();
        assert!(release_record_holds(&real, real.tx.id(), claimed, &other).is_err(), "another manifest passed");
    }

    #[test]
    fn a_root_key_maps_to_the_peer_id_of_the_same_ed25519_key() {
        let k = ota::meta::VendorKey::from_bytes([7; 32]);
        let peer = root_key_peer(&k.public_hex()).expect("a peer id");
        let same = net::Keypair::ed25519_from_bytes(k.to_bytes()).expect("key").public().to_peer_id();
        assert_eq!(peer, same);
    }
}
