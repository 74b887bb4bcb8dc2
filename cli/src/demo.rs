//! `ionshard demo`: the whole OTA path on this machine, with real processes
//! on loopback (each peer at an address of its own, another home): a
//! bootstrap node, 8 peers and an SPN; a vendor (2 of 3
//! keys, an online timestamp key, its own scoped API token) registers with
//! the SPN and publishes v1 (6+2), a device installs it, a replay of the same
//! bundle is a no-op, 2 peers are killed and the image fetched again, the
//! peers come back, v2 is published (only new chunks stored) and the device
//! asks for the newest release (checked against the vendor's timestamp) and
//! updates with its v1 as the seed. Then durability: a peer leaves for good
//! and its shards are rebuilt on a new one, and a peer that silently loses
//! a shard is caught by an audit and the shard rebuilt, and a peer its owner
//! retires hands its shards over before it stops. Last, a business backs
//! up a folder (encoded on its own host), edits it, backs up again and
//! restores it byte-exact.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use harness::procs;
use serde_json::{Value, json};

use crate::device_cmd;
use crate::http;
use crate::vendor::{self, PublishOpts};

/// Options of `ionshard demo`.
#[derive(clap::Args)]
pub(crate) struct DemoOpts {
    /// First image [default: testdata/firmware-v1.img, else a generated one].
    #[arg(long)]
    pub(crate) v1: Option<PathBuf>,
    /// Second image [default: testdata/firmware-v2.img, else a generated one].
    #[arg(long)]
    pub(crate) v2: Option<PathBuf>,
    /// Keep the temporary directory (logs, stores) instead of removing it,
    /// and the network running with the drive served (its web page and
    /// WebDAV; the addresses and login printed) until Ctrl-C.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print one JSON summary instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Child processes, killed when dropped (and on Ctrl-C).
#[derive(Clone, Default)]
struct Procs(Arc<Mutex<Vec<(String, Child)>>>);

impl Procs {
    fn kill_all(&self) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (_, c) in v.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        v.clear();
    }

    fn kill(&self, name: &str) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = v.iter().position(|(n, _)| n == name) {
            let (_, mut c) = v.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start `ionshard ARGS --json`, logs in `logs`; returns its first stdout line.
    fn start(&self, name: &str, logs: &Path, args: &[String]) -> Result<Value> {
        let (child, first) =
            procs::start(&std::env::current_exe().context("finding the ionshard binary")?, name, logs, args, false)?;
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), child));
        Ok(first)
    }
}

impl Drop for Procs {
    /// Any handle going away (the demo ending, by error or panic) stops the
    /// nodes; the Ctrl-C handler's copy never drops before the process ends.
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub(crate) fn say(json: bool, s: impl AsRef<str>) {
    if !json {
        println!("\n== {}", s.as_ref());
    }
}

/// Deterministic sample images when testdata/ is not at hand: 24 MiB shaped
/// like firmware; v2 changes 3 places.
fn generate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut v1 = Vec::with_capacity(24 << 20);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while v1.len() < 16 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v1.extend_from_slice(&x.to_le_bytes());
    }
    for i in 0..(8 << 20) / 64 {
        v1.extend_from_slice(
            format!("{i:08} option_{}={} # sample config line.....\n", i % 97, i * 31 % 1000).as_bytes(),
        );
    }
    let mut v2 = v1.clone();
    for (at, len) in [(4096usize, 64usize), (5 << 20, 300_000), (20 << 20, 4096)] {
        for b in &mut v2[at..at + len] {
            *b = b.wrapping_add(1);
        }
    }
    let (p1, p2) = (dir.join("firmware-v1.img"), dir.join("firmware-v2.img"));
    std::fs::write(&p1, &v1)?;
    std::fs::write(&p2, &v2)?;
    Ok((p1, p2))
}

fn same(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

pub(crate) fn demo(o: DemoOpts) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("ionshard-demo-").tempdir().context("creating a temporary directory")?;
    let root = tmp.path().to_path_buf();
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs)?;
    let procs = Procs::default();
    {
        // Ctrl-C: stop the children and remove the directory, then exit.
        let (procs, dir, keep) = (procs.clone(), root.clone(), o.keep);
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("\ninterrupted: stopping the demo's nodes");
                procs.kill_all();
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                std::process::exit(130);
            }
        });
    }
    let result = run(&o, &root, &logs, &procs);
    if result.is_err() || !o.keep {
        procs.kill_all();
    }
    if o.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    let (summary, boot) = result?;
    if o.json {
        println!("{summary}");
    } else {
        println!("\n== summary ({:.1} s in all)", started.elapsed().as_secs_f64());
        for (k, v) in summary.as_object().into_iter().flatten() {
            println!("  {k:<28} {v}");
        }
    }
    if o.keep {
        // The network stays up, and the drive is served for a person to mount.
        serve_kept(&procs, &root, &logs, &boot, o.json)?;
    }
    Ok(())
}

/// `drive serve` for the demo's laptop (the password in a file of its
/// own): the laptop's directory, and the arguments.
fn serve_args(root: &Path, boot: &str) -> Result<(PathBuf, Vec<String>)> {
    let laptop = root.join("laptop");
    let pw = laptop.join("drive-password");
    client::write_atomic(&pw, crate::drive_files::DEMO_PASSWORD.as_bytes())?;
    let args: Vec<String> = ["drive", "serve", "--listen", "127.0.0.1:0", "--bootstrap", boot]
        .into_iter()
        .map(String::from)
        .chain(["--dir".into(), laptop.display().to_string(), "--password-file".into(), pw.display().to_string()])
        .collect();
    Ok((laptop, args))
}

/// The laptop's drive node serves the drive's web page: a login with the
/// password, the folder listed, a file read back through the page.
fn web_act(json: bool, procs: &Procs, root: &Path, logs: &Path, boot: &str) -> Result<Value> {
    say(json, "drive: the laptop serves the drive's web page; a login, the listing, a file read through it");
    let (_, args) = serve_args(root, boot)?;
    let first = procs.start("drive-web", logs, &args)?;
    let result = (|| {
        let url = first["url"].as_str().context("the drive server printed no URL")?;
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let form = format!("password={}", crate::drive_files::DEMO_PASSWORD.replace(' ', "+"));
        let (status, head, _) = http1(addr, "POST /login", "Content-Type: application/x-www-form-urlencoded", &form)?;
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
            .and_then(|c| c.split(';').next())
            .filter(|_| status == 303)
            .context("the page's login took no password")?
            .to_string();
        let (status, _, page) = http1(addr, "GET /files/", &format!("Cookie: {cookie}"), "")?;
        if status != 200 || !page.contains("notes.txt") || !page.contains("photos") {
            bail!("the drive's page did not list the drive ({status})");
        }
        let (status, _, notes) = http1(addr, "GET /raw/notes.txt", &format!("Cookie: {cookie}"), "")?;
        if status != 200 || notes != "kept on my own devices, and nowhere else\n" {
            bail!("the page did not give notes.txt back ({status})");
        }
        if !json {
            println!("web page at {url}: logged in, / listed, /notes.txt read back through it");
        }
        Ok(json!({ "drive_web": "page served by the laptop: login, listing and a file read back" }))
    })();
    procs.kill("drive-web");
    result
}

/// The laptop keeps a folder in sync with the drive: a first pass sends
/// it, an edit in a large file sends only what changed, and a second
/// folder synced from the drive comes out equal.
fn sync_act(json: bool, root: &Path, boot: &str) -> Result<Value> {
    say(json, "drive: a folder kept in sync with the drive; an edit sends only what changed");
    let laptop = root.join("laptop");
    let here = root.join("sync-here");
    let there = root.join("sync-there");
    std::fs::create_dir_all(here.join("docs"))?;
    std::fs::create_dir_all(&there)?;
    let mut big = vec![0u8; 6 << 20];
    blake3::Hasher::new().update(b"demo sync").finalize_xof().fill(&mut big);
    std::fs::write(here.join("video.bin"), &big)?;
    std::fs::write(here.join("docs/plan.txt"), b"kept in sync\n")?;
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    let pass = |folder: &Path| -> Result<Value> {
        let o = std::process::Command::new(&exe)
            .args(["drive", "sync", &folder.display().to_string(), "--remote", "/synced", "--once", "--json"])
            .args(["--dir", &laptop.display().to_string(), "--bootstrap", boot])
            .output()
            .context("running drive sync")?;
        if !o.status.success() {
            bail!("drive sync failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let text = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("")).context("drive sync printed no JSON")
    };
    let first = pass(&here)?;
    big[3 << 20..(3 << 20) + 32].copy_from_slice(&[7u8; 32]);
    std::fs::write(here.join("video.bin"), &big)?;
    let edit = pass(&here)?;
    pass(&there)?;
    if std::fs::read(there.join("video.bin"))? != big
        || std::fs::read(there.join("docs/plan.txt"))? != b"kept in sync\n"
    {
        bail!("the folder synced from the drive differs");
    }
    let (a, b) =
        (first["pass"]["shard_bytes"].as_u64().unwrap_or(0), edit["pass"]["shard_bytes"].as_u64().unwrap_or(0));
    let line = format!(
        "2 files up ({a} bytes of shards); an edit of 32 bytes in 6 MiB sent {b}; a second folder synced equal"
    );
    if !json {
        println!("{line}");
    }
    Ok(json!({ "drive_sync": line }))
}

/// Two friends: the laptop (Alice) and a friend's laptop (Bob) pair as
/// friends by a code; Alice writes Bob while he is offline (her devices
/// hold the sealed letter), Bob comes online and gets it; Bob opens a
/// share link Alice made, from his node, through Alice's drive node.
fn friends_act(json: bool, procs: &Procs, root: &Path, logs: &Path, boot: &str) -> Result<Value> {
    say(json, "drive: two friends pair by a code; a letter held by Alice's devices while Bob is offline; a share link");
    let (alice, serve) = serve_args(root, boot)?;
    let bob = root.join("friend");
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    let run = |args: &[&str], dir: &Path| -> Result<Value> {
        let o = std::process::Command::new(&exe)
            .args(args)
            .args(["--json", "--dir", &dir.display().to_string(), "--bootstrap", boot])
            .env("IONSHARD_DRIVE_PASSWORD", crate::drive_files::DEMO_PASSWORD)
            .output()
            .with_context(|| format!("running ionshard {}", args.join(" ")))?;
        if !o.status.success() {
            bail!("ionshard {} failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
        }
        let text = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("")).context("no JSON printed")
    };
    let mut offer = std::process::Command::new(&exe)
        .args(["drive", "pair", "--friend", "--name", "alice", "--json", "--bootstrap", boot])
        .args(["--dir", &alice.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting drive pair --friend")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(offer.stdout.take().context("no stdout")?), &mut line)?;
    let code: Value = serde_json::from_str(&line).context("drive pair --friend printed no code")?;
    let code = code["code"].as_str().context("no code")?.to_string();
    let joined = run(&["drive", "join", &code, "--friend", "--name", "bob"], &bob);
    let _ = offer.wait();
    joined?;
    let sent = run(&["drive", "msg", "send", "bob", "hello Bob, from my drive"], &alice)?;
    let state = sent["state"].as_str().unwrap_or("").to_string();
    let got = run(&["drive", "msg", "list", "--wait", "60s", "--until", "1"], &bob)?;
    let letter = got["letters"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["incoming"] == true))
        .context("Bob received no letter within 60 s")?;
    let first = procs.start("drive-friends", logs, &serve)?;
    let result = (|| {
        first["url"].as_str().context("the drive server printed no URL")?;
        let link = run(&["drive", "share", "/notes.txt", "--for", "1h"], &alice)?;
        let friend_link = link["friend_link"].as_str().context("no friend link")?;
        let out = root.join("friend-notes.txt");
        run(&["drive", "open", friend_link, "--force", "--out", &out.display().to_string()], &bob)?;
        if std::fs::read(&out)? != b"kept on my own devices, and nowhere else\n" {
            bail!("the shared file Bob read differs");
        }
        let line = format!(
            "Bob offline: Alice's letter {state}; Bob online: received {:?}; Bob's node opened Alice's share link",
            letter["text"].as_str().unwrap_or("")
        );
        if !json {
            println!("{line}");
            println!("  a share link for a friend's node: {friend_link}");
        }
        Ok(json!({ "drive_friends": line }))
    })();
    procs.kill("drive-friends");
    result
}

/// One HTTP/1.1 request to `addr` (`METHOD PATH`, one extra header line);
/// (status, head, body). For the demo's own page on loopback.
fn http1(addr: &str, line: &str, header: &str, body: &str) -> Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let req = format!(
        "{line} HTTP/1.1\r\nHost: {addr}\r\n{header}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, rest) = raw.split_once("\r\n\r\n").context("no answer")?;
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no status")?;
    Ok((status, head.to_string(), rest.to_string()))
}

/// `--keep`: serve the demo's drive (its web page and WebDAV) and keep the
/// network running until Ctrl-C.
fn serve_kept(procs: &Procs, root: &Path, logs: &Path, boot: &str, json: bool) -> Result<()> {
    let (laptop, args) = serve_args(root, boot)?;
    let first = procs.start("drive-serve", logs, &args)?;
    let url = first["url"].as_str().context("the drive server printed no URL")?.to_string();
    let dav = first["dav"].as_str().context("the drive server printed no WebDAV URL")?.to_string();
    let password = crate::drive_files::DEMO_PASSWORD;
    if json {
        println!("{}", json!({ "web": url, "webdav": dav, "user": "any", "password": password, "bootstrap": boot }));
    } else {
        println!("\n== the drive, served until Ctrl-C (the network keeps running)");
        println!("  web page  {url}    (open it in a browser; password {password:?})");
        println!("  WebDAV    {dav}    (any user name, the same password)");
        println!(
            "  rclone    rclone lsf -R :webdav: --webdav-url {dav} --webdav-user me --webdav-pass \"$(rclone obscure '{password}')\""
        );
        println!("  cadaver   cadaver {dav}");
        println!("  the CLI   {}", crate::drive_files::demo_hint(boot, &laptop));
        let friend = root.join("friend");
        println!("  a friend  ionshard drive msg send bob 'hi Bob' --dir {} --bootstrap {boot}", laptop.display());
        println!(
            "            ionshard drive msg list --wait 1m --until 1 --dir {} --bootstrap {boot}   (Bob receives)",
            friend.display()
        );
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The demo's acts; the summary, and the bootstrap's address.
fn run(o: &DemoOpts, root: &Path, logs: &Path, procs: &Procs) -> Result<(Value, String)> {
    let (v1, v2) = match (&o.v1, &o.v2) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        _ if Path::new("testdata/firmware-v1.img").exists() && Path::new("testdata/firmware-v2.img").exists() => {
            (PathBuf::from("testdata/firmware-v1.img"), PathBuf::from("testdata/firmware-v2.img"))
        }
        _ => generate(root)?,
    };
    let DemoNet { boot: b, url, api, spn_id, genesis } = start_network(o, root, logs, procs)?;
    let peer_args = |i: usize, dir: &Path| procs::peer_args(harness::household(i + 1), &b, &spn_id, "1GiB", dir);
    say(o.json, "vendor: 3 keys (2 must sign), a timestamp key, a token of its own, registered with the SPN");
    let vdir = root.join("vendor");
    vendor::init(&vdir, "demo-vendor", 3, 2, 365, o.json)?;
    let issued: spn::types::IssuedToken = api.issue_token(&spn::types::NewToken {
        tenant: "demo-vendor".into(),
        label: "demo".into(),
        scope: Default::default(),
    })?;
    let vendor_token = issued.token;
    vendor::register(&vdir, &url, Some(vendor_token.clone()), o.json)?;
    let publish = |image: &Path, version: &str| {
        vendor::publish(PublishOpts {
            image: image.to_path_buf(),
            product: "demo-router".into(),
            version: version.into(),
            hardware: vec!["board-a".into()],
            data_shards: 6,
            parity_shards: 2,
            spn: url.clone(),
            token: Some(vendor_token.clone()),
            vendor_dir: Some(vdir.clone()),
            confidential: false,
            no_patches: false,
            expires_days: 30,
            out: None,
            json: o.json,
        })
    };
    say(o.json, format!("publish v1.0.0 ({}, 6+2)", v1.display()));
    let p1 = publish(&v1, "1.0.0")?;

    let device = root.join("device");
    let slot = device.join("slot.img");
    let boot_addr: net::Multiaddr = b.parse().context("the bootstrap's address")?;
    let device_opts = |bundle: &Path, out: Option<PathBuf>, no_seed: bool, install: bool| {
        let source = ota::Source::File(bundle.to_path_buf());
        let mut d = ota::UpdateOptions::new(source, device.join("state"), "board-a".into());
        d.root = Some(vdir.join("root.json"));
        d.product = Some("demo-router".into());
        d.bootstrap = vec![boot_addr.clone()];
        d.seed = if no_seed { ota::SeedChoice::None } else { ota::SeedChoice::Installed };
        d.out = out;
        d.install = install;
        d.install_cmd = install.then(|| format!("cp \"$1\" '{}'", slot.display()));
        d
    };
    say(o.json, "device: update to v1.0.0 (install command copies the image into a slot file)");
    let f1 = device_cmd::execute(device_opts(&p1.bundle, None, false, true), o.json, None)?;
    if !same(&slot, &v1)? {
        bail!("the slot does not hold v1 byte for byte");
    }
    let f1r = f1.fetch.context("v1 was not fetched")?;

    say(o.json, "a replay of the same bundle: already installed, nothing fetched, the installer not run");
    let replay = device_cmd::execute(device_opts(&p1.bundle, None, false, true), o.json, None)?;
    if replay.fetch.is_some() {
        bail!("the replayed bundle was fetched again");
    }

    say(o.json, "kill 2 of 8 peers (6+2 tolerates 2) and fetch v1 again");
    procs.kill("peer0");
    procs.kill("peer5");
    let again = root.join("refetch-v1.img");
    let f2 = device_cmd::execute(device_opts(&p1.bundle, Some(again.clone()), true, false), o.json, None)?;
    if !same(&again, &v1)? {
        bail!("the image fetched with 2 peers down differs from v1");
    }
    let f2r = f2.fetch.context("v1 was not fetched again")?;

    say(o.json, "the 2 peers restart (same identity and store); publish v1.1.0");
    procs.start("peer0", logs, &peer_args(0, &root.join("peer0")))?;
    procs.start("peer5", logs, &peer_args(5, &root.join("peer5")))?;
    procs::wait_peers(&api, 8, std::time::Duration::from_secs(120))?;
    let p2 = publish(&v2, "1.1.0")?;

    say(
        o.json,
        "device: update to demo-router@latest from the SPN (the vendor's timestamp must name it), seeded with v1.0.0 \
         (delta: unchanged chunks from the seed, changed ones from patches against it, the manifest as a delta)",
    );
    let mut latest = device_opts(&p2.bundle, None, false, true);
    latest.source = ota::Source::Spn { spn: client::Spn::new(&url, None)?, id: "demo-router@latest".into() };
    let f3 = device_cmd::execute(latest, o.json, None)?;
    if !same(&slot, &v2)? {
        bail!("the slot does not hold v2 byte for byte");
    }
    let f3r = f3.fetch.clone().context("v2 was not fetched")?;
    let f = [f1r, f2r, f3r];
    let durable = durability(o.json, root, logs, procs, &api, &peer_args, &[&p1.id, &p2.id])?;
    let (backups, deleted) = backup_act(o.json, root, &url, &api, &b)?;
    let devices: Vec<(String, PathBuf)> = (0..3).map(|i| (format!("peer{i}"), root.join(format!("peer{i}")))).collect();
    let drive = crate::drive_cmd::demo_act(o.json, &b, &root.join("laptop"), &devices)?;
    let page = web_act(o.json, procs, root, logs, &b)?;
    let synced = sync_act(o.json, root, &b)?;
    let friends = friends_act(o.json, procs, root, logs, &b)?;
    let chain = crate::ledger_cmd::demo_act(
        o.json,
        &api,
        &b,
        &genesis,
        (&p1.result.manifest, deleted.as_deref()),
        (&vdir, &p2.id, &p1.id),
        crate::ledger_cmd::Nodes { kill: &|name| procs.kill(name), start: &|name, args| procs.start(name, logs, args) },
    )?;
    let mut out = summary(&v1, &v2, [&p1, &p2], &f, [f1.install_status.flatten(), f3.install_status.flatten()])?;
    if let Some(m) = out.as_object_mut() {
        m.insert("update_v2_downloads".into(), serde_json::to_value(&f3.downloads)?);
    }
    for extra in [durable, backups, drive, page, synced, friends, chain] {
        if let (Some(m), Value::Object(d)) = (out.as_object_mut(), extra) {
            m.extend(d);
        }
    }
    Ok((out, b))
}

/// Wait (at most `secs`) until `done` holds for the SPN's durability report.
fn wait_report(
    api: &http::Spn,
    secs: u64,
    what: &str,
    done: impl Fn(&spn::types::Durability) -> bool,
) -> Result<spn::types::Durability> {
    let deadline = Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let d = api.durability(None)?;
        if done(&d) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {secs} s (see the SPN's log)");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The durability act: a peer lost for good and its shards rebuilt on a
/// new one, then a peer that silently drops a shard caught by an audit.
fn durability(
    json: bool,
    root: &Path,
    logs: &Path,
    procs: &Procs,
    api: &http::Spn,
    peer_args: &dyn Fn(usize, &Path) -> Vec<String>,
    releases: &[&str],
) -> Result<Value> {
    let total = |d: &spn::types::Durability| d.objects.iter().map(|o| o.lowest_healthy).min().unwrap_or(0);
    say(json, "durability: peer3 leaves for good; a new peer (peer8, another home) joins");
    procs.kill("peer3");
    procs.start("peer8", logs, &peer_args(8, &root.join("peer8")))?;
    let risk = wait_report(api, 60, "the SPN noticing peer3 is lost", |d| d.peers_lost > 0)?;
    say(json, format!("  the SPN counts peer3 lost: the lowest segment has {} of 8 healthy shards", total(&risk)));
    let fixed = wait_report(api, 90, "repairing peer3's shards", |d| d.repair_queue == 0 && total(d) == 8)?;
    say(
        json,
        format!(
            "  repaired: {} shard(s) rebuilt from 6 others and placed on new peers, {} moved; every segment has 8 again",
            fixed.shards_repaired,
            crate::size::human(fixed.repair_bytes)
        ),
    );
    say(json, "durability: peer1 silently loses a shard file; audits (every ~4 s here) catch it");
    // A shard the SPN counts as peer1's (not a surplus copy a hedged put
    // left, which is being deleted anyway).
    let peer1 = crate::node_cmd::node_id(&root.join("peer1"))?.to_string();
    let mut held = std::collections::HashSet::new();
    for id in releases {
        let p = api.placement(&format!("/v1/releases/{id}/placement"))?;
        let me = p.peers.iter().position(|x| *x == peer1).map(|i| i as u32);
        held.extend(p.shards.into_iter().filter(|(_, h)| me.is_some_and(|m| h.contains(&m))).map(|(c, _)| c));
    }
    let shards = root.join("peer1/store/shards");
    let victim = std::fs::read_dir(&shards)?
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .find(|f| held.contains(f.file_name().to_string_lossy().as_ref()))
        .context("peer1 holds no shard to lose")?;
    std::fs::remove_file(victim.path())?;
    let before = fixed.shards_repaired;
    let caught = wait_report(api, 90, "an audit catching peer1's lost shard", |d| d.audits_failed > 0)?;
    say(
        json,
        format!(
            "  an audit failed ({} passed, {} failed in all); the shard is rebuilt elsewhere",
            caught.audits_passed, caught.audits_failed
        ),
    );
    let healed =
        wait_report(api, 90, "rebuilding peer1's lost shard", |d| d.shards_repaired > before && total(d) == 8)?;
    say(
        json,
        format!(
            "  rebuilt; audits here run every few seconds; at the defaults (every 6 h) they would cost {:.2}% a day of the {} stored",
            100.0 * healed.audit_share_at_defaults,
            crate::size::human(healed.stored_bytes)
        ),
    );
    say(
        json,
        "durability: peer9 joins; peer5's owner retires it (`ionshard node retire`): its shards move before it leaves",
    );
    procs.start("peer9", logs, &peer_args(9, &root.join("peer9")))?;
    let retiring = crate::node_cmd::mark_retiring(&root.join("peer5"))?.to_string();
    let before = healed.shards_repaired;
    let status = || api.peers().ok()?.peers.into_iter().find(|p| p.peer == retiring).map(|p| p.status);
    let moved = wait_report(api, 120, "moving peer5's shards away", |d| {
        total(d) == 8 && status().as_deref() == Some("retired")
    })?;
    procs.kill("peer5");
    say(
        json,
        format!(
            "  retired: {} shard(s) rebuilt on other peers and deleted from peer5, which then stopped; every segment has 8",
            moved.shards_repaired - before
        ),
    );
    Ok(json!({
        "peer_retired": format!("peer5: {} shard(s) moved before it left", moved.shards_repaired - before),
        "peer_lost_for_good": format!("peer3: {} shard(s) rebuilt on other peers, {} moved", fixed.shards_repaired, crate::size::human(fixed.repair_bytes)),
        "audit_caught_lost_shard": format!("peer1 failed an audit; {} shard(s) repaired in all", healed.shards_repaired),
        "audits": format!("{} passed, {} failed", healed.audits_passed, healed.audits_failed),
    }))
}

/// The backup act: a business backs up a folder (encoded on its own host,
/// the SPN sees only ciphertext), edits it, backs up again (only what
/// changed is read and stored), and restores byte-exact. Its summary, and
/// an object its prune deleted.
fn backup_act(json_out: bool, root: &Path, url: &str, api: &http::Spn, boot: &str) -> Result<(Value, Option<String>)> {
    say(json_out, "backups: a business backs up a folder, encoded and encrypted on its own host (4+2)");
    let office = root.join("office");
    for i in 0..30 {
        let text = format!("minutes of meeting {i}: nothing of note was decided\n").repeat(50 + i * 7);
        write_file(&office.join(format!("minutes/{i:02}.txt")), text.as_bytes())?;
    }
    let mut blob = vec![0u8; 2 << 20];
    blake3::Hasher::new().update(b"demo ledger").finalize_xof().fill(&mut blob);
    write_file(&office.join("accounts/ledger.db"), &blob)?;
    let issued: spn::types::IssuedToken = api.issue_token(&spn::types::NewToken {
        tenant: "demo-office".into(),
        label: "backups".into(),
        scope: Default::default(),
    })?;
    let key = backup::RepoKey::generate("demo-office");
    let key_file = root.join("backup-home/demo-office.key");
    key.save_new(&key_file)?;
    let repo = backup::Repo::new(http::spn(url, Some(issued.token))?, key, root.join("backup-home/cache"));
    repo.init()?;
    let o = backup::RunOptions {
        scan: backup::ScanOptions {
            paths: vec![office.clone()],
            excludes: vec!["*.tmp".into()],
            one_file_system: false,
        },
        tags: vec!["nightly".into()],
        host: "demo-office".into(),
        coding: (4, 2),
        parent: None,
        force: false,
    };
    let rt = crate::node_cmd::runtime()?;
    let progress = crate::progress::Bars::new(json_out);
    let first = rt.block_on(backup::run(&repo, None, &o, progress.clone()))?.snapshot;
    if !json_out {
        println!(
            "snapshot {}: {} files, {} read, {} stored after dedup and compression",
            first.id,
            first.stats.files,
            crate::size::human(first.stats.bytes_read),
            crate::size::human(first.stats.new_segment_bytes)
        );
    }
    say(json_out, "edit one file, add one, delete one, and back up again: only the changes are read and stored");
    let mut edited = std::fs::read(office.join("minutes/03.txt"))?;
    edited.extend_from_slice(b"addendum: the budget was approved\n");
    write_file(&office.join("minutes/03.txt"), &edited)?;
    write_file(&office.join("minutes/new.txt"), b"a new file\n")?;
    write_file(&office.join("scratch.tmp"), b"excluded by --exclude '*.tmp'\n")?;
    std::fs::remove_file(office.join("minutes/07.txt"))?;
    let second = rt.block_on(backup::run(&repo, None, &o, progress.clone()))?.snapshot;
    if !json_out {
        println!(
            "snapshot {}: read {} of {} files ({}), stored {} new",
            second.id,
            second.stats.files_read,
            second.stats.files,
            crate::size::human(second.stats.bytes_read),
            crate::size::human(second.stats.new_segment_bytes)
        );
    }
    say(json_out, "restore the second snapshot from the peers into a new folder");
    let target = root.join("restored");
    let ro = backup::RestoreOptions::new(second.id.clone(), target.clone());
    let (report, checked) = rt.block_on(async {
        let (net, _h) = crate::node_cmd::join(&[boot.to_string()], None).await?;
        let restored = backup::restore(&repo, &net, &ro, progress.clone()).await?;
        // And `check`: every receipt, every placement, all of the data read back.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let checked = backup::check(&repo, &net, 1.0, now, progress.clone()).await?;
        anyhow::Ok((restored, checked))
    })?;
    if !checked.errors.is_empty() {
        bail!("backup check found errors: {:?}", checked.errors);
    }
    let restored = target.join(office.strip_prefix("/").unwrap_or(&office));
    std::fs::remove_file(office.join("scratch.tmp"))?;
    if !same_tree(&office, &restored)? {
        bail!("the restored folder differs from the original");
    }
    if !json_out {
        println!("restored {} files byte-exact into {}", report.files, restored.display());
        println!(
            "check: {} receipts verified, {} objects read back, kept on the peers until {} UTC unless renewed",
            checked.receipts_ok,
            checked.objects_read,
            backup::utc(checked.earliest_expiry * 1_000_000_000)
        );
    }
    say(json_out, "a put-only key for a second host: it adds a snapshot, and can neither read nor delete one");
    let append = api.issue_token(&spn::types::NewToken {
        tenant: "demo-office".into(),
        label: "front-desk host".into(),
        scope: spn::types::TokenScope::Append,
    })?;
    let put_key = repo.key().put_only(Some(append.token.clone()))?;
    let put = backup::Repo::new(http::spn(url, Some(append.token))?, put_key, root.join("backup-home/put-only"));
    let mut po = o.clone();
    po.host = "front-desk".into();
    let added = rt.block_on(backup::run(&put, None, &po, progress.clone()))?.snapshot;
    let refused = match put.snapshots() {
        Ok(_) => bail!("a put-only key listed the snapshots"),
        Err(e) => e.to_string(),
    };
    let forget_refused = put.spn().delete_record("demo-office", &format!("snap-{}", first.id)).is_err();
    if !forget_refused || repo.snapshots()?.len() != 3 {
        bail!("the SPN let a put-only key's token delete a snapshot");
    }
    if !json_out {
        println!("snapshot {} added by the put-only key; listing: {refused}", added.id);
        println!("its token deleting a snapshot on the SPN: refused; the full key sees 3 snapshots");
    }
    say(json_out, "a schedule at 02:00 whose run the agent missed (it was down) is caught up once at start");
    let nightly = backup::Schedule {
        name: "nightly".into(),
        cron: "0 2 * * *".into(),
        repo: "demo-office".into(),
        key: None,
        paths: vec![office.clone()],
        excludes: vec![],
        one_file_system: false,
        tags: vec![],
        host: None,
        coding: "4+2".into(),
        keep: backup::Keep::default(),
        created: 0,
    };
    // The clock is an input: the agent starts at 09:00 on day 3, having
    // been down since day 0.
    let day = 86_400;
    let mut status = backup::Status::default();
    let caught = backup::plan(&nightly, &status, 3 * day + 9 * 3600, &chrono::Utc)?;
    let backup::Plan::Run { slot, late: true, .. } = caught else { bail!("the missed run was not due: {caught:?}") };
    // What the agent then does: the run, recorded with its result.
    let ran = rt.block_on(backup::run(&repo, None, &o, progress.clone()))?.snapshot;
    backup::record(
        &mut status,
        backup::Attempt {
            slot,
            started: slot,
            finished: slot,
            attempt: 1,
            caught_up: true,
            snapshot: Some(ran.id.clone()),
            error: None,
            warning: None,
        },
    );
    let after = match backup::plan(&nightly, &status, 3 * day + 9 * 3600 + 60, &chrono::Utc)? {
        backup::Plan::Wait { until } => format!("the next run at day {}, {:02}:00", until / day, until % day / 3600),
        p => bail!("the caught-up slot was due again: {p:?}"),
    };
    if !json_out {
        println!(
            "agent started at 09:00 on day 3: ran the 02:00 slot of day 3 once (snapshot {}, {} files read), not \
             once per missed night; {after}",
            ran.id, ran.stats.files_read
        );
        println!(
            "by hand: `ionshard backup schedule add nightly --cron '0 2 * * *' PATH --keep-daily 7 --prune`, \
             `ionshard backup agent`, `ionshard backup status`"
        );
    }
    say(json_out, "the fleet: the agent reports to the SPN; the business system watches it and asks for a run");
    let status_map: std::collections::BTreeMap<String, backup::Status> =
        [("nightly".to_string(), status.clone())].into_iter().collect();
    let host_report = backup::host_report(
        &[&nightly],
        &status_map,
        &repo.key().public(),
        3 * day + 9 * 3600 + 60,
        &chrono::Utc,
        vec![],
    );
    repo.spn().report_host("demo-office", "office-1", &host_report)?;
    let asked = repo.spn().request_run("demo-office", "office-1", Some("nightly"))?;
    let seen = repo.spn().host("demo-office", "office-1")?;
    let Some(s) = seen.report.as_ref().and_then(|r| r.schedules.first()) else { bail!("the SPN kept no report") };
    let detail = backup::open_detail(repo.key(), s)?.unwrap_or_default();
    let fleet = format!(
        "host office-1: schedule {} {} (snapshot {}), {} run(s) asked for and waiting; paths {} sealed to the key",
        s.name,
        s.state,
        s.last.as_ref().and_then(|l| l.snapshot.clone()).unwrap_or_default(),
        seen.pending.len(),
        detail.paths.len()
    );
    if seen.pending.first().map(|p| p.id) != Some(asked.id) {
        bail!("the requested run is not waiting for the host: {seen:?}");
    }
    if !json_out {
        println!("{fleet}");
        println!(
            "by hand: `ionshard backup fleet` (every host), `ionshard backup fleet run HOST --schedule nightly`; \
             the HTTP API is GET/PUT /v1/fleet/TENANT/hosts/HOST and POST …/runs"
        );
    }
    say(
        json_out,
        "forget the first snapshot and prune: the first run's data, still used in part, is repacked under new keys",
    );
    backup::forget_ids(&repo, std::slice::from_ref(&first.id))?;
    // Grace 0: nothing else is backing up into this repository now.
    let how = backup::PruneOptions { grace_secs: 0, max_unused_pct: 0 };
    let again = root.join("restored-after-prune");
    let ro = backup::RestoreOptions::new(second.id.clone(), again.clone());
    let pruned = rt.block_on(async {
        let (net, _h) = crate::node_cmd::join(&[boot.to_string()], None).await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let pruned = backup::prune_with(&repo, &net, &how, now, progress.clone()).await?;
        backup::restore(&repo, &net, &ro, progress.clone()).await?;
        anyhow::Ok(pruned)
    })?;
    let rp = &pruned.repack;
    if rp.repacked.is_empty() || !same_tree(&restored, &again.join(office.strip_prefix("/").unwrap_or(&office)))? {
        bail!("prune repacked nothing, or the rewritten snapshot no longer restores: {pruned:?}");
    }
    let (len, live) = rp.repacked.iter().fold((0, 0), |(l, v), x| (l + x.length, v + x.live));
    let repacked = format!(
        "{} object(s) of {} repacked to the {} still used, {} snapshot(s) rewritten, {} object(s) deleted with their keys",
        rp.repacked.len(),
        crate::size::human(len),
        crate::size::human(live),
        rp.snapshots_rewritten.len(),
        pruned.objects_deleted.len()
    );
    if !json_out {
        println!("{repacked}; the second snapshot (same id) still restores byte-exact");
        println!("by hand: `ionshard backup forget --keep-last 3 --prune --max-unused 0%`");
    }
    let deleted = pruned.objects_deleted.first().cloned();
    Ok((
        json!({
            "backup_prune": repacked,
            "backup_fleet": fleet,
            "backup_check": format!("{} receipts verified, {} objects read back, no errors", checked.receipts_ok, checked.objects_read),
            "backup_put_only": format!("snapshot {} added; listing and deleting refused", added.id),
            "backup_schedule_catch_up": format!("missed 02:00 slot run once at start (snapshot {}); {after}", ran.id),
            "backup_first": format!("{} files, {} read, {} stored, {:.2} s", first.stats.files, first.stats.bytes_read, first.stats.new_segment_bytes, first.stats.seconds),
            "backup_second": format!("{} of {} files read ({} bytes), {} bytes stored, {:.2} s", second.stats.files_read, second.stats.files, second.stats.bytes_read, second.stats.new_segment_bytes, second.stats.seconds),
            "backup_restore": format!("{} files, byte-exact", report.files),
        }),
        deleted,
    ))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Whether two folders hold the same files with the same bytes (names and contents).
fn same_tree(a: &Path, b: &Path) -> Result<bool> {
    let list = |root: &Path| -> Result<Vec<(PathBuf, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(root)?.to_path_buf(), std::fs::read(&p)?));
                }
            }
        }
        out.sort();
        Ok(out)
    };
    Ok(list(a)? == list(b)?)
}

/// What the demo showed, as one JSON object.
fn summary(
    v1: &Path,
    v2: &Path,
    [p1, p2]: [&vendor::Published; 2],
    f: &[client::FetchReport; 3],
    install_status: [Option<i32>; 2],
) -> Result<Value> {
    let receipts = |p: &vendor::Published| p.result.receipts;
    let mbps = |bytes: u64, s: f64| format!("{:.1} MB/s", bytes as f64 / s.max(1e-9) / 1e6);
    let len1 = std::fs::metadata(v1)?.len();
    let len2 = std::fs::metadata(v2)?.len();
    Ok(json!({
        "image_v1_bytes": len1,
        "image_v2_bytes": len2,
        "coding": "6+2 on 8 peers",
        "publish_v1": format!("{:.2} s, {}", p1.seconds, mbps(len1, p1.seconds)),
        "publish_v2_new_shard_bytes": p2.result.new_shard_bytes,
        "receipts_collected": receipts(p1) + receipts(p2),
        "fetch_v1": format!("{:.2} s, {}, {} peers", f[0].seconds, mbps(len1, f[0].seconds), f[0].peers_used.len()),
        "replay_of_v1": "already installed: nothing fetched, installer not run",
        "fetch_v1_2_peers_down": format!("{:.2} s, {} ranges rebuilt, {} peers used, byte-exact", f[1].seconds, f[1].rebuilt_ranges, f[1].peers_used.len()),
        "update_latest": "demo-router@1.1.0, as the vendor's timestamp names it",
        "update_v2_downloaded_bytes": f[2].downloaded_bytes,
        "update_v2_from_seed_bytes": f[2].seed_bytes,
        "update_v2_delta": format!("{:.1}% of the image downloaded", 100.0 * f[2].downloaded_bytes as f64 / len2 as f64),
        "publish_v2_patches": match &p2.result.no_patches {
            None => format!(
                "{} changed chunks ({} bytes) as {} bytes of patches against v1",
                p2.result.patches, p2.result.patched_chunk_bytes, p2.result.patch_bytes
            ),
            Some(why) => format!("none: {why}"),
        },
        "update_v2_patched_chunks": f[2].patched_chunks,
        "releases": [p1.id, p2.id],
        "install_status": install_status,
    }))
}

/// The demo's network, running.
struct DemoNet {
    boot: String,
    url: String,
    api: http::Spn,
    /// The SPN's peer id (peers trust it).
    spn_id: String,
    /// The ledger's genesis (4 producers).
    genesis: PathBuf,
}

/// Start a bootstrap, 8 peers and an SPN on 127.0.0.1, and wait for the SPN to see the peers.
fn start_network(o: &DemoOpts, root: &Path, logs: &Path, procs: &Procs) -> Result<DemoNet> {
    say(
        o.json,
        format!(
            "network: 4 ledger producers (producer0 signs with a key apart from its node key), 1 bootstrap, 8 peers, \
             1 SPN on 127.0.0.1 (in {})",
            root.display()
        ),
    );
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    // A snapshot each 20 blocks (10 s): the ledger act shows a new node starting from one.
    let every = ["--snapshot-every".to_string(), "20".to_string()];
    // Producer 0 signs with a key file apart from its node key, as an
    // operator who keeps the two apart would run it.
    let (genesis, producers, keys) =
        procs::ledger_genesis_apart(&exe, &root.join("ledger"), 4, 500, 500, &every, &[0])?;
    for (i, (dir, addr)) in producers.iter().enumerate() {
        let key = keys.iter().find(|(k, _)| *k == i).map(|(_, f)| f.as_path());
        procs.start(&format!("producer{i}"), logs, &procs::producer_args_keyed(addr, dir, &genesis, key))?;
    }
    // The bootstrap follows the chain: `ionshard ledger status` asks it.
    let mut boot_args = procs::bootstrap_args(harness::household(0), &root.join("bootstrap"));
    boot_args.extend(["--genesis".to_string(), genesis.display().to_string()]);
    let boot = procs.start("bootstrap", logs, &boot_args)?;
    let b = boot["listen"][0].as_str().context("bootstrap printed no address")?.to_string();
    let spn_dir = root.join("spn");
    std::fs::create_dir_all(&spn_dir)?;
    let (spn_key, _) = net::load_or_create_key(&spn_dir.join("identity.key"))?;
    let spn_id = spn_key.public().to_peer_id().to_string();
    let peer_args = |i: usize, dir: &Path| procs::peer_args(harness::household(i + 1), &b, &spn_id, "1GiB", dir);
    for i in 0..8 {
        procs.start(&format!("peer{i}"), logs, &peer_args(i, &root.join(format!("peer{i}"))))?;
    }
    // Short durability periods, so the demo can show a loss and its repair.
    let mut spn_args = procs::spn_args(harness::household(0), &b, &spn_dir);
    spn_args.extend(procs::quick_durability(6));
    spn_args.extend(["--ledger".into(), genesis.display().to_string(), "--anchor-every".into(), "2s".into()]);
    spn_args.extend(["--points-every".into(), "2s".into()]);
    let spn_info = procs.start("spn", logs, &spn_args)?;
    let url = spn_info["http"].as_str().context("SPN printed no address")?.to_string();
    let token = std::fs::read_to_string(spn_info["token_file"].as_str().context("SPN printed no token file")?)?;
    let api = http::spn(&url, Some(token.clone()))?;
    procs::wait_peers(&api, 8, std::time::Duration::from_secs(120))?;
    if !o.json {
        println!("ledger: 4 producers, genesis {}", genesis.display());
        println!("bootstrap {b}\nSPN {spn_id}, API {url}\n8 peers joined");
    }

    Ok(DemoNet { boot: b, url, api, spn_id, genesis })
}
