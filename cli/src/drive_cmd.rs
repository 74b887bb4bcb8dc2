//! `ionshard drive …`: pair a person's own devices and clients by a
//! one-time code, list and revoke the pairings; the drive's own commands
//! are in [`crate::drive_files`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use drive::mailbox::{Answer, Request};

/// `ionshard drive …`.
#[derive(clap::Args)]
pub(crate) struct DriveArgs {
    #[command(subcommand)]
    command: DriveCommand,
}

#[derive(clap::Subcommand)]
enum DriveCommand {
    /// On a device (router, NAS, set-top box): print a one-time code and
    /// wait until a client joins with it; both then record each other as
    /// the owner's own devices.
    Pair {
        #[command(flatten)]
        at: At,
        /// How long the code waits for its client (at most 30m).
        #[arg(long, value_parser = crate::size::duration_arg, default_value = "10m")]
        lifetime: Duration,
    },
    /// On a client (laptop, phone): pair with the device that printed CODE.
    Join {
        /// The code the device printed, like 472-apple-river-stone.
        code: String,
        #[command(flatten)]
        at: At,
    },
    /// This node's pairings (and those revoked).
    Pairs(Listed),
    /// Take a pairing back, by peer id or name: removed from this node's
    /// pairings (a device refuses that client from its next request on).
    Revoke {
        /// The paired node's peer id or name.
        who: String,
        #[command(flatten)]
        at: Listed,
    },
    /// Letters between friends: texts and files, end-to-end encrypted,
    /// held by this person's own devices while the friend is offline.
    Msg {
        #[command(subcommand)]
        command: crate::drive_msg::MsgCommand,
    },
    #[command(flatten)]
    Share(crate::drive_share::ShareCommand),
    #[command(flatten)]
    Files(crate::drive_files::FilesCommand),
}

/// Whose pairings `pairs` and `revoke` read.
#[derive(clap::Args)]
struct Listed {
    /// The node's directory [default: ~/.ionshard/node for a device, ~/.ionshard/drive for a client].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// This is a client's directory (~/.ionshard/drive by default).
    #[arg(long)]
    client: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where a pairing runs: the node it is for, its name, the mailbox.
#[derive(clap::Args)]
struct At {
    /// The node's directory (its identity key pairs; its pairings are kept
    /// in DIR/drive/pairs.json) [default: ~/.ionshard/node on a device,
    /// ~/.ionshard/drive on a client].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The name the other side lists this node by [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// A bootstrap node: its pairing mailbox carries the exchange (both
    /// sides must give the same first one).
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',', required = true)]
    bootstrap: Vec<String>,
    /// Print JSON (for `pair`: a line with the code first, then the result).
    #[arg(long)]
    json: bool,
    /// Pair with another person's node as a friend (both sides give it):
    /// a friend may later receive shares and messages, never the drive.
    #[arg(long)]
    friend: bool,
}

fn dir_of(dir: Option<PathBuf>, client: bool) -> PathBuf {
    dir.unwrap_or_else(|| crate::files::home().join(if client { "drive" } else { "node" }))
}

/// Where `pairs` and `revoke` look: as given; else the device's directory
/// if it has pairings, else the client's if it has, else the device's.
fn listed_dir(dir: Option<PathBuf>, client: bool) -> PathBuf {
    if dir.is_some() || client {
        return dir_of(dir, client);
    }
    let (node, laptop) = (dir_of(None, false), dir_of(None, true));
    if !pairs_path(&node).exists() && pairs_path(&laptop).exists() { laptop } else { node }
}

fn pairs_path(dir: &Path) -> PathBuf {
    dir.join("drive").join("pairs.json")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ionshard".into())
}

/// The mailbox on the first bootstrap node, asked through `client`.
struct Mailbox {
    client: net::Client,
    peer: net::PeerId,
}

impl drive::Transport for Mailbox {
    /// Asked up to four times: a connection that drops loses an answer, and
    /// the mailbox answers a repeated request as it did the first time.
    async fn ask(&self, request: Request) -> drive::Result<Answer> {
        let q = request.encode();
        let mut wait = Duration::from_millis(200);
        let mut tries = 0;
        let bytes = loop {
            tries += 1;
            match self.client.ask_mailbox(self.peer, &q, drive::mailbox::MAX_MESSAGE).await {
                Ok(b) => break b,
                Err(e) if tries >= 4 => {
                    return Err(drive::Error::Mailbox(format!(
                        "{} ({e}; is it a bootstrap node of this release?)",
                        self.peer
                    )));
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        };
        Answer::decode(&bytes).map_err(|e| drive::Error::Mailbox(format!("{}: {e}", self.peer)))
    }
}

pub(crate) fn run(a: DriveArgs) -> Result<()> {
    match a.command {
        DriveCommand::Pair { at, lifetime } => pair(at, lifetime),
        DriveCommand::Join { code, at } => join(&code, at),
        DriveCommand::Pairs(l) => list(&listed_dir(l.dir, l.client), l.json),
        DriveCommand::Revoke { who, at } => revoke(&who, &listed_dir(at.dir, at.client), at.json),
        DriveCommand::Msg { command } => crate::drive_msg::run(command),
        DriveCommand::Share(c) => crate::drive_share::run(c),
        DriveCommand::Files(c) => crate::drive_files::run(c),
    }
}

/// The node's identity, and the mailbox reached through a client of the network.
async fn connect(
    at: &At,
    dir: &Path,
    role: drive::Role,
) -> Result<(net::Keypair, Mailbox, tokio::task::JoinHandle<()>)> {
    let file = dir.join("identity.key");
    if role == drive::Role::Device && !file.exists() {
        // Pairing a key no node runs with would pair nothing.
        bail!(
            "no node identity in {}: give the directory the device's node runs with (`ionshard node --dir DIR`), \
             or start that node once first",
            dir.display()
        );
    }
    let (key, _) =
        net::load_or_create_key(&file).with_context(|| format!("the node's identity in {}", dir.display()))?;
    let first = at.bootstrap.first().ok_or_else(|| anyhow!("give --bootstrap ADDR"))?;
    let addr: net::Multiaddr = first.parse().with_context(|| format!("--bootstrap {first:?} is not a multiaddr"))?;
    let peer = crate::ledger_cmd::peer_in(&addr)
        .ok_or_else(|| anyhow!("--bootstrap {first}: the address must end in /p2p/<peer id>"))?;
    // A key of its own for the exchange: the node's key only signs.
    let (client, handle) = crate::node_cmd::join(std::slice::from_ref(first), None).await?;
    Ok((key, Mailbox { client, peer }, handle))
}

fn pair(at: At, lifetime: Duration) -> Result<()> {
    if lifetime.is_zero() || lifetime > Duration::from_secs(u64::from(drive::mailbox::MAX_LIFETIME_SECS)) {
        bail!("--lifetime {}s: a code waits 1 s to 30 minutes", lifetime.as_secs());
    }
    // A friend pairing is a person's own client's, usually.
    let dir = dir_of(at.dir.clone(), at.friend);
    // Read now to fail early on a file it cannot read; read again before
    // adding, as a revoke may have run while this waited.
    drive::Pairs::load(&pairs_path(&dir))?;
    let rt = crate::node_cmd::runtime()?;
    let json_out = at.json;
    let first = at.bootstrap.first().cloned().unwrap_or_default();
    let paired = rt.block_on(async {
        let role = if at.friend { drive::Role::Friend } else { drive::Role::Device };
        let (key, mailbox, _h) = connect(&at, &dir, role).await?;
        let me = drive::Me { key, name: at.name.clone().unwrap_or_else(host_name), role };
        let pb = indicatif::ProgressBar::new_spinner();
        if json_out {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let show = |code: &drive::Code, expires: u64| {
            let code = code.reveal();
            if json_out {
                println!("{}", json!({ "code": code, "expires": expires }));
            } else {
                // On stdout, terminal or not: the code is the point.
                println!("pairing code: {code}");
                println!(
                    "on the client, within {} min: ionshard drive join {code} --bootstrap {first}",
                    lifetime.as_secs().div_ceil(60)
                );
                pb.enable_steady_tick(Duration::from_millis(120));
                pb.set_message("waiting for the client");
            }
        };
        let r = drive::offer(&mailbox, &me, lifetime, Duration::from_millis(500), show).await;
        pb.finish_and_clear();
        anyhow::Ok(r?)
    })?;
    drive::Pairs::load(&pairs_path(&dir))?.add(&paired, now())?;
    report(&paired, &pairs_path(&dir), json_out)
}

fn join(code: &str, at: At) -> Result<()> {
    let code = drive::Code::parse(code)?;
    let dir = dir_of(at.dir.clone(), true);
    drive::Pairs::load(&pairs_path(&dir))?;
    let rt = crate::node_cmd::runtime()?;
    let paired = rt.block_on(async {
        let (key, mailbox, _h) = connect(&at, &dir, drive::Role::Client).await?;
        let role = if at.friend { drive::Role::Friend } else { drive::Role::Client };
        let me = drive::Me { key, name: at.name.clone().unwrap_or_else(host_name), role };
        let r = drive::accept(&mailbox, &me, &code, Duration::from_millis(300), Duration::from_secs(60)).await;
        anyhow::Ok(r?)
    })?;
    drive::Pairs::load(&pairs_path(&dir))?.add(&paired, now())?;
    report(&paired, &pairs_path(&dir), at.json)
}

fn report(p: &drive::Paired, file: &Path, json_out: bool) -> Result<()> {
    let role = match p.role {
        drive::Role::Device => "device",
        drive::Role::Client => "client",
        _ => "friend",
    };
    if json_out {
        println!(
            "{}",
            json!({ "paired": { "peer": p.peer.to_string(), "name": p.name, "role": role }, "pairs": file.display().to_string() })
        );
    } else {
        println!("paired with {role} {:?} ({}); recorded in {}", p.name, p.peer, file.display());
    }
    Ok(())
}

fn list(dir: &Path, json_out: bool) -> Result<()> {
    let pairs = drive::Pairs::load(&pairs_path(dir))?;
    if json_out {
        println!("{}", json!({ "pairs": pairs.list(), "revoked": pairs.revoked() }));
        return Ok(());
    }
    if pairs.list().is_empty() {
        println!("no pairings in {} (`ionshard drive pair` on a device, `drive join CODE` on a client)", dir.display());
    }
    for p in pairs.list() {
        println!(
            "{:<8} {:<24} {} (paired {})",
            format!("{:?}", p.role).to_lowercase(),
            p.name,
            p.peer,
            backup::utc(p.paired_at.saturating_mul(1_000_000_000))
        );
    }
    for r in pairs.revoked() {
        println!("revoked  {:<24} {} ({})", r.name, r.peer, backup::utc(r.at.saturating_mul(1_000_000_000)));
    }
    Ok(())
}

fn revoke(who: &str, dir: &Path, json_out: bool) -> Result<()> {
    let mut pairs = drive::Pairs::load(&pairs_path(dir))?;
    let p = pairs.revoke(who, now())?;
    if json_out {
        println!("{}", json!({ "revoked": p }));
    } else {
        println!("revoked {:?} ({}): removed from this node's pairings", p.name, p.peer);
    }
    Ok(())
}

/// The node whose identity is in `dir`, as it pairs.
fn me_in(dir: &Path, name: &str, role: drive::Role) -> Result<drive::Me> {
    Ok(drive::Me { key: net::load_or_create_key(&dir.join("identity.key"))?.0, name: name.to_string(), role })
}

/// The demo's drive act: a client ("laptop", in `client`) pairs with each
/// of `devices` (name, node directory) by a code through the bootstrap's
/// mailbox, as `drive pair` and `drive join` do; then a guessed code
/// pairs nothing and burns the code.
pub(crate) fn demo_act(
    json_out: bool,
    boot: &str,
    client: &Path,
    devices: &[(String, PathBuf)],
) -> Result<serde_json::Value> {
    crate::demo::say(
        json_out,
        format!(
            "drive: a laptop pairs with {} home devices by one-time codes (SPAKE2 through the bootstrap's mailbox)",
            devices.len()
        ),
    );
    let addr: net::Multiaddr = boot.parse().context("the bootstrap's address")?;
    let peer = crate::ledger_cmd::peer_in(&addr).context("the bootstrap's peer id")?;
    let rt = crate::node_cmd::runtime()?;
    let every = Duration::from_millis(100);
    let (codes, refused) = rt.block_on(async {
        // Each side with a network client of its own, as two machines would.
        let (dc, _dh) = crate::node_cmd::join(&[boot.to_string()], None).await?;
        let (cc, _ch) = crate::node_cmd::join(&[boot.to_string()], None).await?;
        let (device_box, client_box) = (Mailbox { client: dc, peer }, Mailbox { client: cc, peer });
        let laptop = me_in(client, "laptop", drive::Role::Client)?;
        let mut client_pairs = drive::Pairs::load(&pairs_path(client))?;
        let mut codes = Vec::new();
        for (name, dir) in devices {
            let me = me_in(dir, name, drive::Role::Device)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let offer = drive::offer(&device_box, &me, Duration::from_secs(60), every, |c, _| {
                let _ = tx.send(c.clone());
            });
            let accept = async {
                let code = rx.await.map_err(|_| anyhow!("no code was shown"))?;
                let paired = drive::accept(&client_box, &laptop, &code, every, Duration::from_secs(30)).await?;
                anyhow::Ok((code, paired))
            };
            let (client_seen, accepted) = tokio::join!(offer, accept);
            let (code, device_seen) = match (accepted, &client_seen) {
                (Ok(a), _) => a,
                (Err(e), Err(d)) => bail!("pairing {name}: the laptop: {e:#}; the device: {d}"),
                (Err(e), Ok(_)) => return Err(e),
            };
            drive::Pairs::load(&pairs_path(dir))?.add(&client_seen?, now())?;
            client_pairs.add(&device_seen, now())?;
            if !json_out {
                println!("{name} printed code {}; the laptop joined: paired ({})", code.reveal(), device_seen.peer);
            }
            codes.push(code.reveal());
        }
        // A guess: the right number, other words.
        let (name, dir) = devices.first().context("no devices")?;
        let me = me_in(dir, name, drive::Role::Device)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let offer = drive::offer(&device_box, &me, Duration::from_secs(60), every, |c, _| {
            let _ = tx.send(c.nameplate);
        });
        let guess = async {
            let n = rx.await.map_err(|_| anyhow!("no code was shown"))?;
            let wrong = drive::Code::parse(&format!("{n}-acorn-acorn-acorn"))?;
            anyhow::Ok(drive::accept(&client_box, &laptop, &wrong, every, Duration::from_secs(30)).await)
        };
        let (device_side, guessed) = tokio::join!(offer, guess);
        let refused = match (device_side, guessed?) {
            (Err(e), Err(_)) => e.to_string(),
            _ => bail!("a guessed code paired"),
        };
        anyhow::Ok((codes, refused))
    })?;
    let listed = drive::Pairs::load(&pairs_path(client))?.list().len();
    if !json_out {
        println!("a guessed code: refused on both sides ({refused})");
        println!(
            "by hand: on a device `ionshard drive pair --dir DIR`, on the client `ionshard drive join CODE`; `ionshard drive pairs`"
        );
    }
    let scratch = client.parent().unwrap_or(client);
    let mut files = crate::drive_files::demo_act(json_out, boot, client, scratch)?;
    if !json_out {
        println!("by hand (with --keep): {}", crate::drive_files::demo_hint(boot, client));
    }
    if let Some(m) = files.as_object_mut() {
        m.insert(
            "drive_pairings".into(),
            json!(format!("laptop paired with {listed} devices by codes {}", codes.join(", "))),
        );
        m.insert("drive_guessed_code".into(), json!(format!("refused: {refused}")));
    }
    Ok(files)
}
