//! `ionshard drive setup|login|logout|ls|put|get|mv|rm|versions|restore|trash`:
//! the drive itself, from a paired client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::progress::Bars;

/// The drive's commands on a client.
#[derive(clap::Subcommand)]
pub(crate) enum FilesCommand {
    /// Make a new drive on the paired devices: choose its password, and
    /// write down the recovery code it prints once.
    Setup {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        secret: Secret,
    },
    /// Open the drive on this client with its password (or, having lost
    /// it, with the recovery code, then choose a new password).
    Login {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        secret: Secret,
        /// Log in with the recovery code instead, and set a new password.
        #[arg(long)]
        recovery: Option<String>,
    },
    /// Close the drive on this client: its sessions on the devices end and
    /// the key kept here is forgotten.
    Logout {
        #[command(flatten)]
        on: On,
    },
    /// List a folder.
    Ls {
        /// The folder (or a file) [default: /].
        #[arg(default_value = "/")]
        path: String,
        /// Everything under it.
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        on: On,
    },
    /// Store files or folders (with everything in them) in a drive folder.
    Put {
        /// Local files or folders.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// The drive folder they go in.
        #[arg(long, default_value = "/")]
        to: String,
        #[command(flatten)]
        on: On,
    },
    /// Fetch a file or a folder from the drive.
    Get {
        /// The drive file or folder.
        path: String,
        /// Where it goes [default: its name, here].
        out: Option<PathBuf>,
        /// Replace local files that exist.
        #[arg(long)]
        force: bool,
        /// Fetch this version of a file (0 = the oldest; `drive versions` lists them).
        #[arg(long)]
        version: Option<usize>,
        #[command(flatten)]
        on: On,
    },
    /// Rename or move a file or folder (no content moves).
    Mv {
        /// From.
        from: String,
        /// To (into it, if it is a folder).
        to: String,
        #[command(flatten)]
        on: On,
    },
    /// Put a file or folder in the trash (kept 30 days).
    Rm {
        /// What.
        path: String,
        #[command(flatten)]
        on: On,
    },
    /// A file's versions, oldest first.
    Versions {
        /// The file.
        path: String,
        #[command(flatten)]
        on: On,
    },
    /// Make an old version a file's newest again, or bring it back from the trash.
    Restore {
        /// The file (or folder, with --trash).
        path: String,
        /// The version (0 = the oldest; `drive versions` lists them).
        #[arg(long, conflicts_with = "trash")]
        version: Option<usize>,
        /// From the trash.
        #[arg(long)]
        trash: bool,
        #[command(flatten)]
        on: On,
    },
    /// Serve the drive on this machine: a web page at / and WebDAV at
    /// /dav/ (a local drive node: it reaches the devices over the network,
    /// relayed or hole-punched).
    Serve {
        #[command(flatten)]
        on: On,
        #[command(flatten)]
        secret: Secret,
        /// Where to listen; a non-loopback address needs --lan.
        #[arg(long, default_value = "127.0.0.1:4918")]
        listen: std::net::SocketAddr,
        /// Serve on a non-loopback address (a home device serving its LAN),
        /// over TLS with the node's own certificate (its fingerprint printed).
        #[arg(long)]
        lan: bool,
        /// The largest file the web page takes in one upload.
        #[arg(long, default_value = "64GiB", value_parser = crate::size::size_arg)]
        max_upload: u64,
        /// Minutes without use after which a web page session ends.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=43_200))]
        session_idle_minutes: u64,
        /// Seconds instead of minutes (for tests).
        #[arg(long, hide = true)]
        session_idle_secs: Option<u64>,
    },
    /// Keep a folder here in sync with a folder of the drive, both ways:
    /// a daemon that runs a pass on every change here and every
    /// --interval (or one pass, --once). Conflicts keep both copies;
    /// removals in the drive go to its trash; only changed chunks move.
    Sync {
        /// The local folder.
        #[arg(value_name = "DIR")]
        folder: PathBuf,
        /// The drive's folder.
        #[arg(long, default_value = "/")]
        remote: String,
        /// One pass, then exit.
        #[arg(long)]
        once: bool,
        /// Seconds between passes without a change here (the drive's
        /// changes are seen then).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        interval: u64,
        /// This client's name in conflict copies [default: the host name].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        on: On,
    },
    /// Make the drive whole and even on the devices: copy manifests to
    /// devices that lack them, rebuild shards a lost device held, move
    /// shards onto a device added since (run `drive login` after pairing it).
    Balance {
        #[command(flatten)]
        on: On,
    },
    /// What is in the trash; `--empty` deletes it from the devices for good.
    Trash {
        /// Delete what is in the trash for good.
        #[arg(long)]
        empty: bool,
        #[command(flatten)]
        on: On,
    },
}

/// Where the client is.
#[derive(clap::Args)]
pub(crate) struct On {
    /// The client's directory: its identity, pairings and login [default: ~/.ionshard/drive].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A bootstrap node, to find the devices through.
    #[arg(long, env = "IONSHARD_BOOTSTRAP", value_delimiter = ',', required = true)]
    bootstrap: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where a password comes from.
#[derive(clap::Args)]
pub(crate) struct Secret {
    /// Read the password from this file's first line [default: $IONSHARD_DRIVE_PASSWORD, else asked on the terminal].
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// With --recovery: the new password's file [default: $IONSHARD_DRIVE_NEW_PASSWORD, else asked].
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

const MIN_PASSWORD: usize = 8;

fn read_secret(file: Option<&Path>, env: &str, prompt: &str, confirm: bool) -> Result<String> {
    let pw = if let Some(f) = file {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading the password from {}", f.display()))?;
        s.lines().next().unwrap_or_default().to_string()
    } else if let Ok(s) = std::env::var(env) {
        s
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let pw = rpassword::prompt_password(prompt)?;
        if confirm && rpassword::prompt_password("again: ")? != pw {
            bail!("the two passwords differ: nothing was changed");
        }
        pw
    } else {
        bail!("no password: give --password-file FILE or set {env} (stdin is not a terminal to ask on)");
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

/// The drive's password, from where `secret` says.
pub(crate) fn password(secret: &Secret) -> Result<String> {
    read_secret(secret.password_file.as_deref(), "IONSHARD_DRIVE_PASSWORD", "drive password: ", false)
}

fn new_password(file: Option<&Path>, env: &str) -> Result<String> {
    let pw = read_secret(file, env, "new drive password: ", true)?;
    if pw.chars().count() < MIN_PASSWORD {
        bail!("a drive password needs at least {MIN_PASSWORD} characters: it is the second lock after pairing");
    }
    Ok(pw)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl On {
    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| crate::files::home().join("drive"))
    }

    /// The devices this client is paired with.
    pub(crate) fn devices(&self) -> Result<Vec<net::PeerId>> {
        let dir = self.dir();
        let pairs = drive::Pairs::load(&dir.join("drive").join("pairs.json"))?;
        let devices: Vec<net::PeerId> =
            pairs.list().iter().filter(|p| p.role == drive::Role::Device).filter_map(|p| p.peer.parse().ok()).collect();
        if devices.is_empty() {
            bail!(
                "{} is paired with no device: on a device run `ionshard drive pair`, then here `ionshard drive join CODE`",
                dir.display()
            );
        }
        Ok(devices)
    }

    pub(crate) async fn net(&self) -> Result<(net::Client, tokio::task::JoinHandle<()>)> {
        crate::node_cmd::join(&self.bootstrap, Some(&self.dir().join("identity.key"))).await
    }

    /// The drive, logged in.
    pub(crate) async fn open(&self) -> Result<(drive::Drive, tokio::task::JoinHandle<()>)> {
        let devices = self.devices()?;
        let Some(login) = drive::Login::load(&self.dir())? else {
            bail!("not logged in to the drive on this client: run `ionshard drive login`");
        };
        let (net, h) = self.net().await?;
        Ok((drive::Drive::new(net, devices, &login)?, h))
    }
}

fn say(json_out: bool, text: String, value: serde_json::Value) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn reached_text(r: &drive::Reached) -> String {
    let mut s = format!("{} device(s)", r.ok.len());
    for (p, why) in &r.failed {
        s.push_str(&format!("; not {p}: {why}"));
    }
    s
}

pub(crate) fn run(c: FilesCommand) -> Result<()> {
    if let FilesCommand::Sync { folder, remote, once, interval, name, on } = c {
        let args = crate::drive_sync::SyncArgs {
            dir: folder,
            remote,
            once,
            interval: std::time::Duration::from_secs(interval),
            name,
        };
        return crate::drive_sync::run(args, on);
    }
    if let FilesCommand::Serve { on, secret, listen, lan, max_upload, session_idle_minutes, session_idle_secs } = c {
        let session_idle = std::time::Duration::from_secs(session_idle_secs.unwrap_or(session_idle_minutes * 60));
        let args = crate::drive_serve::ServeArgs { listen, lan, max_upload, session_idle };
        return crate::drive_serve::serve(on, secret, args);
    }
    let rt = crate::node_cmd::runtime()?;
    rt.block_on(run_async(c))
}

async fn run_async(c: FilesCommand) -> Result<()> {
    match c {
        FilesCommand::Serve { .. } | FilesCommand::Sync { .. } => unreachable!("run above"),
        FilesCommand::Setup { on, secret } => setup(on, secret).await,
        FilesCommand::Login { on, secret, recovery } => login(on, secret, recovery).await,
        FilesCommand::Logout { on } => {
            let devices = on.devices()?;
            let (net, _h) = on.net().await?;
            let r = drive::logout(&net, &devices).await;
            drive::Login::forget(&on.dir())?;
            say(on.json, format!("logged out: sessions ended on {}", reached_text(&r)), json!({ "logged_out": r }));
            Ok(())
        }
        FilesCommand::Ls { path, recursive, on } => ls(&path, recursive, on).await,
        FilesCommand::Put { sources, to, on } => put(&sources, &to, on).await,
        FilesCommand::Get { path, out, force, version, on } => get(&path, out, force, version, on).await,
        FilesCommand::Mv { from, to, on } => {
            let (from, to) = (drive::tree::normal(&from)?, drive::tree::normal(&to)?);
            let (d, _h) = on.open().await?;
            let at = d.update(|t| t.mv(&from, &to, now())).await?;
            say(on.json, format!("moved {from} to {at}"), json!({ "moved": from, "to": at }));
            Ok(())
        }
        FilesCommand::Rm { path, on } => {
            let path = drive::tree::normal(&path)?;
            let (d, _h) = on.open().await?;
            d.update(|t| t.remove(&path, now())).await?;
            let days = drive::tree::TRASH_SECS / 86_400;
            say(
                on.json,
                format!(
                    "{path} is in the trash for {days} days (`ionshard drive restore --trash {path}` brings it back)"
                ),
                json!({ "trashed": path, "days": days }),
            );
            Ok(())
        }
        FilesCommand::Versions { path, on } => {
            let path = drive::tree::normal(&path)?;
            let (d, _h) = on.open().await?;
            let tree = d.read().await?.tree;
            let Some(drive::tree::Entry::File { versions }) = tree.get(&path) else {
                bail!("{path} is not a file in the drive");
            };
            if on.json {
                println!("{}", json!({ "path": path, "versions": versions }));
            } else {
                for (i, v) in versions.iter().enumerate() {
                    println!(
                        "{i:>3}  {}  {:>12} bytes  {}",
                        backup::utc(v.at.saturating_mul(1_000_000_000)),
                        v.len,
                        v.blake3.get(..16).unwrap_or(&v.blake3)
                    );
                }
            }
            Ok(())
        }
        FilesCommand::Restore { path, version, trash, on } => {
            let path = drive::tree::normal(&path)?;
            let (d, _h) = on.open().await?;
            if trash {
                d.update(|t| t.untrash(&path, now())).await?;
                say(on.json, format!("{path} is back from the trash"), json!({ "untrashed": path }));
            } else {
                let Some(i) = version else {
                    bail!("say which: --version N (`ionshard drive versions {path}`), or --trash")
                };
                let gone = d
                    .update(|t| {
                        let dropped = t.restore_version(&path, i, now())?;
                        Ok(t.unreferenced(&dropped))
                    })
                    .await?;
                d.delete(&gone).await;
                say(
                    on.json,
                    format!("{path}: version {i} is its newest again"),
                    json!({ "restored": path, "version": i }),
                );
            }
            Ok(())
        }
        FilesCommand::Balance { on } => {
            let (d, _h) = on.open().await?;
            let tree = d.read().await?.tree;
            let b = d.balance(&tree, Bars::new(on.json)).await?;
            if on.json {
                println!("{}", json!({ "balanced": b }));
            } else {
                println!(
                    "{} segments: moved {} shards ({} bytes), rebuilt {} ({} bytes), copied {} manifests",
                    b.segments, b.moved_shards, b.moved_bytes, b.rebuilt_shards, b.rebuilt_bytes, b.manifests_copied
                );
                for (p, after) in &b.after {
                    println!("  {p}: {} -> {after} bytes", b.before.get(p).copied().unwrap_or(0));
                }
                for u in &b.unrecoverable {
                    println!("  lost: {u}");
                }
                if b.crowded > 0 {
                    println!(
                        "  {} segments have two or more shards on one device (fewer devices than their coding): \
                         losing that device costs more than one; pair another device and balance again",
                        b.crowded
                    );
                }
                println!("{}", drive::survives(d.devices().len()));
            }
            if !b.unrecoverable.is_empty() {
                bail!(
                    "{} parts of the drive could not be rebuilt: too few of their shards are left",
                    b.unrecoverable.len()
                );
            }
            Ok(())
        }
        FilesCommand::Trash { empty, on } => {
            let (d, _h) = on.open().await?;
            if empty {
                let (dropped, gone_shards) = purge(&d, 0).await?;
                say(
                    on.json,
                    format!(
                        "the trash is empty: {dropped} version(s) gone, {gone_shards} shard copies deleted from the devices"
                    ),
                    json!({ "emptied": dropped, "shard_copies_deleted": gone_shards }),
                );
            } else {
                let tree = d.read().await?.tree;
                if on.json {
                    let items: Vec<_> = tree
                        .trash
                        .iter()
                        .map(|t| json!({ "path": t.path, "at": t.at, "entries": t.entries.len() }))
                        .collect();
                    println!("{}", json!({ "trash": items }));
                } else if tree.trash.is_empty() {
                    println!("the trash is empty");
                } else {
                    for t in &tree.trash {
                        println!(
                            "{}  {}  ({} entries)",
                            backup::utc(t.at.saturating_mul(1_000_000_000)),
                            t.path,
                            t.entries.len()
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// Drop from the trash what was removed `older_than` seconds ago, and
/// delete the shards nothing names any more: (versions, shard copies).
async fn purge(d: &drive::Drive, older_than: u64) -> Result<(usize, u64)> {
    let (dropped, gone) = d
        .update(|t| {
            let dropped = t.purge(now(), older_than);
            let gone = t.unreferenced(&dropped);
            Ok((dropped.len(), gone))
        })
        .await?;
    Ok((dropped, d.delete(&gone).await))
}

async fn setup(on: On, secret: Secret) -> Result<()> {
    let devices = on.devices()?;
    let password = new_password(secret.password_file.as_deref(), "IONSHARD_DRIVE_PASSWORD")?;
    let recovery = drive::new_recovery_code();
    let (net, _h) = on.net().await?;
    let (login, r) = drive::setup(&net, &devices, &password, &recovery).await?;
    login.save(&on.dir())?;
    let survives = drive::survives(devices.len());
    if on.json {
        println!(
            "{}",
            json!({ "drive": login.drive_id, "recovery_code": recovery, "devices": r, "survives": survives })
        );
    } else {
        println!("a new drive is set up on {} and this client is logged in.", reached_text(&r));
        println!();
        println!("recovery code (shown this once; write it down, keep it apart from the devices):");
        println!("    {recovery}");
        println!("it opens the drive if the password is lost: `ionshard drive login --recovery CODE`.");
        println!();
        println!("the drive lives only on your paired devices: {survives}.");
        println!("losing every device loses the drive; nobody else keeps a copy.");
    }
    Ok(())
}

async fn login(on: On, secret: Secret, recovery: Option<String>) -> Result<()> {
    let devices = on.devices()?;
    let (net, _h) = on.net().await?;
    match recovery {
        Some(code) => {
            let new = new_password(secret.new_password_file.as_deref(), "IONSHARD_DRIVE_NEW_PASSWORD")?;
            let (login, _) = drive::login(&net, &devices, &code, true).await?;
            login.save(&on.dir())?;
            let r = drive::change_password(&net, &devices, &login, &new, &code).await?;
            say(
                on.json,
                format!(
                    "logged in with the recovery code; the new password is set on {} (every other session ended)",
                    reached_text(&r)
                ),
                json!({ "logged_in": true, "password_changed": r }),
            );
        }
        None => {
            let pw =
                read_secret(secret.password_file.as_deref(), "IONSHARD_DRIVE_PASSWORD", "drive password: ", false)?;
            let (login, r) = drive::login(&net, &devices, &pw, false).await?;
            login.save(&on.dir())?;
            say(
                on.json,
                format!("logged in on {}", reached_text(&r)),
                json!({ "logged_in": r, "drive": login.drive_id }),
            );
        }
    }
    Ok(())
}

async fn ls(path: &str, recursive: bool, on: On) -> Result<()> {
    let path = drive::tree::normal(path)?;
    let (d, _h) = on.open().await?;
    let tree = d.read().await?.tree;
    let mut lines = tree.list(&path)?;
    if recursive {
        let mut i = 0;
        while i < lines.len() {
            if lines[i].dir {
                let more = tree.list(&lines[i].path)?;
                lines.splice(i + 1..i + 1, more);
            }
            i += 1;
        }
    }
    if on.json {
        println!("{}", json!({ "path": path, "entries": lines }));
        return Ok(());
    }
    for l in &lines {
        let when = backup::utc(l.at.saturating_mul(1_000_000_000));
        if l.dir {
            println!("{:>12}  {when}  {}/", "-", l.path);
        } else {
            println!("{:>12}  {when}  {}", l.len, l.path);
        }
    }
    Ok(())
}

/// Every file under `source`, with its drive path under `to` (folders
/// first, so empty ones are made too).
fn plan(source: &Path, to: &str) -> Result<Vec<(PathBuf, String, bool)>> {
    let name = source.file_name().with_context(|| format!("{} has no name to keep it under", source.display()))?;
    // The drive's names are text: made lossy, two names that are not UTF-8
    // read the same, and one file would be stored as a version of the other.
    let name = name.to_str().with_context(|| {
        format!(
            "{} has a name that is not UTF-8: the drive keeps names as text; rename it first (nothing was sent)",
            source.display()
        )
    })?;
    let base = drive::tree::normal(&format!("{to}/{name}"))?;
    let meta = std::fs::symlink_metadata(source).with_context(|| format!("reading {}", source.display()))?;
    if meta.is_file() {
        return Ok(vec![(source.to_path_buf(), base, false)]);
    }
    if !meta.is_dir() {
        bail!("{} is neither a file nor a folder (links are not followed)", source.display());
    }
    let mut out = vec![(source.to_path_buf(), base.clone(), true)];
    let mut entries: Vec<_> = std::fs::read_dir(source)
        .with_context(|| format!("reading {}", source.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", source.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        if ft.is_symlink() {
            eprintln!("skipping the link {} (links are not followed)", e.path().display());
            continue;
        }
        out.extend(plan(&e.path(), &base)?);
    }
    Ok(out)
}

async fn put(sources: &[PathBuf], to: &str, on: On) -> Result<()> {
    let to = drive::tree::normal(to)?;
    // Every name is checked before anything is sent.
    let mut items = Vec::new();
    for s in sources {
        items.extend(plan(s, &to)?);
    }
    let (d, _h) = on.open().await?;
    // Where each goes must take it: found out before anything is sent.
    let tree = d.read().await?.tree;
    for (local, dest, dir) in &items {
        match tree.get(dest) {
            Some(drive::tree::Entry::Dir { .. }) if !dir => {
                bail!("{} would go to {dest}, which is a folder in the drive: choose another --to", local.display())
            }
            Some(drive::tree::Entry::File { .. }) if *dir => {
                bail!("{} would go to {dest}, which is a file in the drive: choose another --to", local.display())
            }
            _ => {}
        }
    }
    let bars = Bars::new(on.json);
    let dirs: Vec<String> = items.iter().filter(|i| i.2).map(|i| i.1.clone()).collect();
    let mut stored = Vec::new();
    let mut batch = Vec::new();
    let (mut bytes, mut shard_bytes, mut resumed, mut freed) = (0u64, 0u64, 0u64, 0u64);
    let started = std::time::Instant::now();
    let mut named_at = started;
    for (local, dest, dir) in &items {
        if *dir {
            continue;
        }
        // A new version of a file in the drive sends only what changed.
        let base = match tree.get(dest) {
            Some(drive::tree::Entry::File { versions }) => versions.last(),
            _ => None,
        };
        let s = d
            .store_from(local, now(), bars.clone(), base)
            .await
            .with_context(|| format!("storing {}", local.display()))?;
        bytes += s.version.len;
        shard_bytes += s.shard_bytes;
        resumed += s.resumed_bytes;
        batch.push((dest.clone(), s));
        // Named in the tree as it goes: a put cut off keeps what it named,
        // and one run again sends only what the devices lack.
        if batch.len() >= NAME_EVERY_FILES || named_at.elapsed() > NAME_EVERY {
            freed += name(&d, if stored.is_empty() { &dirs } else { &[] }, &batch).await?;
            stored.append(&mut batch);
            named_at = std::time::Instant::now();
        }
    }
    let took = started.elapsed().as_secs_f64();
    freed += name(&d, if stored.is_empty() { &dirs } else { &[] }, &batch).await?;
    stored.append(&mut batch);

    let coding = stored.first().map(|s| s.1.coding);
    let rate = bytes as f64 / took.max(1e-6) / 1e6;
    if on.json {
        println!(
            "{}",
            json!({ "files": stored.len(), "bytes": bytes, "shard_bytes": shard_bytes, "resumed_shard_bytes": resumed,
                    "seconds": took, "mb_per_s": rate,
                    "coding": coding, "old_shard_copies_deleted": freed,
                    "stored": stored.iter().map(|(p, s)| json!({ "path": p, "len": s.version.len, "blake3": s.version.blake3 })).collect::<Vec<_>>() })
        );
    } else {
        let coding = coding.map_or(String::new(), |(k, m)| format!(", {k}+{m} coded"));
        let again = if resumed > 0 {
            format!("; {resumed} bytes of shards the devices held already, not sent again")
        } else {
            String::new()
        };
        println!(
            "stored {} file(s), {bytes} bytes in {took:.1} s ({rate:.1} MB/s; {shard_bytes} bytes of shards sent to {} devices{coding}{again})",
            stored.len(),
            d.devices().len()
        );
    }
    Ok(())
}

/// Files stored before a put names them in the tree, at most; and how long.
const NAME_EVERY_FILES: usize = 500;
const NAME_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Name `batch` (stored files) and make `dirs` in the tree, emptying the
/// trash of what is past its time; the shard copies deleted that no
/// file names any more. On failure, what was stored and is not named goes
/// (unless the change is in doubt: the next may finish it, naming it).
async fn name(d: &drive::Drive, dirs: &[String], batch: &[(String, drive::Stored)]) -> Result<u64> {
    let named = d
        .update(|t| {
            for dest in dirs {
                t.mkdir(dest, now())?;
            }
            let mut dropped = Vec::new();
            for (dest, s) in batch {
                dropped.extend(t.add_version(dest, s.version.clone(), now())?);
            }
            dropped.extend(t.purge(now(), drive::tree::TRASH_SECS));
            Ok(t.unreferenced(&dropped))
        })
        .await;
    match named {
        Ok(gone) => Ok(d.delete(&gone).await),
        Err(e @ drive::Error::InDoubt(_)) => Err(e.into()),
        Err(e) => {
            let sent: Vec<String> =
                batch.iter().flat_map(|(_, s)| s.version.shards.iter().chain([&s.version.stored]).cloned()).collect();
            d.delete(&d.unnamed(&sent).await).await;
            Err(e.into())
        }
    }
}

async fn get(path: &str, out: Option<PathBuf>, force: bool, version: Option<usize>, on: On) -> Result<()> {
    let path = drive::tree::normal(path)?;
    let (d, _h) = on.open().await?;
    let tree = d.read().await?.tree;
    let name = path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("drive").to_string();
    let out = match out {
        Some(o) if o.is_dir() && !matches!(tree.get(&path), Some(drive::tree::Entry::Dir { .. }) | None) => {
            o.join(&name)
        }
        Some(o) => o,
        None => PathBuf::from(&name),
    };
    let jobs: Vec<(PathBuf, drive::tree::Version)> = match tree.get(&path) {
        Some(drive::tree::Entry::File { versions }) => {
            let v = match version {
                Some(i) => versions
                    .get(i)
                    .with_context(|| format!("{path} has {} versions; there is no {i}", versions.len()))?,
                None => versions.last().context("a file without versions")?,
            };
            vec![(out.clone(), v.clone())]
        }
        _ => tree
            .files_under(&path)
            .into_iter()
            .map(|(p, v)| {
                let rel = p.strip_prefix(&path).unwrap_or(&p).trim_start_matches('/').to_string();
                (out.join(rel), v)
            })
            .collect(),
    };
    if jobs.is_empty() && tree.get(&path).is_none() && path != "/" {
        bail!("{path} is not in the drive (`ionshard drive ls` lists it)");
    }
    if !force && let Some((p, _)) = jobs.iter().find(|(p, _)| p.exists()) {
        bail!("{} exists: give --force to replace it", p.display());
    }
    let bars = Bars::new(on.json);
    let started = std::time::Instant::now();
    let mut bytes = 0u64;
    for (o, v) in &jobs {
        d.fetch(v, o, bars.clone() as Arc<dyn client::Progress>)
            .await
            .with_context(|| format!("fetching to {}", o.display()))?;
        bytes += v.len;
    }
    let took = started.elapsed().as_secs_f64();
    let rate = bytes as f64 / took.max(1e-6) / 1e6;
    say(
        on.json,
        format!(
            "fetched {} file(s), {bytes} bytes, to {} in {took:.1} s ({rate:.1} MB/s), each checked against its hash",
            jobs.len(),
            out.display()
        ),
        json!({ "files": jobs.len(), "bytes": bytes, "out": out, "seconds": took, "mb_per_s": rate }),
    );
    Ok(())
}

/// The password the demo's drive is set up with (printed, so a person can
/// log in to it by hand with `--keep`).
pub(crate) const DEMO_PASSWORD: &str = "demo drive password";

/// The demo's drive act, once the laptop (in `laptop`) is paired with
/// `devices`: set up a drive, store a small tree, read it back byte for
/// byte, and show a stranger who knows the shards' CIDs refused.
pub(crate) fn demo_act(json_out: bool, boot: &str, laptop: &Path, scratch: &Path) -> Result<serde_json::Value> {
    crate::demo::say(json_out, "drive: the laptop sets up a drive on its devices, stores a folder, reads it back");
    let src = scratch.join("drive-src");
    std::fs::create_dir_all(src.join("photos")).context("making the demo's folder")?;
    let mut photo = vec![0u8; 3 << 20];
    blake3::Hasher::new().update(b"demo photo").finalize_xof().fill(&mut photo);
    std::fs::write(src.join("photos/beach.jpg"), &photo)?;
    std::fs::write(src.join("notes.txt"), b"kept on my own devices, and nowhere else\n")?;
    let on = On { dir: Some(laptop.to_path_buf()), bootstrap: vec![boot.to_string()], json: json_out };
    let devices = on.devices()?;
    let rt = crate::node_cmd::runtime()?;
    rt.block_on(async {
        let (net, _h) = on.net().await?;
        let (login, _) = drive::setup(&net, &devices, DEMO_PASSWORD, &drive::new_recovery_code()).await?;
        login.save(&on.dir())?;
        let d = drive::Drive::new(net.clone(), devices.clone(), &login)?;
        let mut stored = Vec::new();
        for (local, dest) in
            [(src.join("photos/beach.jpg"), "/photos/beach.jpg"), (src.join("notes.txt"), "/notes.txt")]
        {
            stored.push((dest, d.store(&local, now(), Bars::new(true)).await?));
        }
        d.update(|t| {
            for (dest, s) in &stored {
                t.add_version(dest, s.version.clone(), now())?;
            }
            Ok(())
        })
        .await?;
        let back = scratch.join("drive-back.jpg");
        let v = &stored[0].1.version;
        d.fetch(v, &back, Bars::new(true)).await?;
        if std::fs::read(&back)? != photo {
            bail!("the photo read back from the drive differs");
        }
        // A stranger on the network who learned a shard's CID: the drive
        // tells it it is not paired; the bytes are answered as absent.
        let (stranger, _sh) = crate::node_cmd::join(&[boot.to_string()], None).await?;
        let refusal = match drive::login(&stranger, &devices, DEMO_PASSWORD, false).await {
            Err(e) if e.to_string().contains("not paired") => e.to_string(),
            other => bail!("a stranger was not refused by the drive: {other:?}"),
        };
        let cid: chunker::Cid = v.shards[0].parse()?;
        for p in d.devices() {
            match stranger.get_shard(*p, cid).await {
                Err(e) if e.to_string().contains("not stored here") => {}
                other => bail!("device {p} answered a stranger's get of a drive shard with {other:?}"),
            }
        }
        let (k, m) = stored[0].1.coding;
        if !json_out {
            println!(
                "stored /photos/beach.jpg (3 MiB, {k}+{m} over {} devices) and /notes.txt; read back byte for byte",
                devices.len()
            );
            println!("a stranger: refused by the drive ({refusal}); its gets of the shards' CIDs: \"not stored here\"");
            println!("{}", drive::survives(devices.len()));
        }
        anyhow::Ok(json!({
            "drive_files": format!("2 files stored {k}+{m} on {} devices, read back byte for byte", devices.len()),
            "drive_stranger": format!("refused: {refusal}"),
        }))
    })
}

/// How a person uses the demo's drive by hand (`ionshard demo --keep`).
pub(crate) fn demo_hint(boot: &str, laptop: &Path) -> String {
    format!(
        "IONSHARD_DRIVE_PASSWORD='{DEMO_PASSWORD}' ionshard drive ls -r --dir {} --bootstrap {boot}",
        laptop.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `caf\xe9.txt` and `caf\xe8.txt` were both sent as `/caf\u{FFFD}.txt`:
    /// the second stored as a newer version of the first.
    #[test]
    fn names_that_are_not_utf8_are_refused_before_anything_is_sent() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tmp");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("fine.txt"), b"ok").expect("write");
        std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt")), b"one").expect("write");
        let err = plan(&src, "/docs").expect_err("refused");
        assert!(format!("{err:#}").contains("not UTF-8"), "{err:#}");
        assert_eq!(plan(&src.join("fine.txt"), "/docs").expect("a text name").len(), 1);
    }
}
