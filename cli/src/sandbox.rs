//! `ionshard sandbox up|status|down`: a local network to try things by hand.
//!
//! `up` starts, in the background and on loopback, a bootstrap node, N
//! storage peers and an SPN (the same processes as `ionshard demo`, through
//! the `harness` crate), waits until the SPN sees every peer, and prints the
//! environment to `eval`: `IONSHARD_BOOTSTRAP`, `IONSHARD_SPN` and
//! `IONSHARD_SPN_TOKEN` (the SPN operator's token), which every command takes
//! as the default of its `--bootstrap`, `--spn` and `--token`.
//!
//! The directory holds each node's state and logs and `sandbox.json`, the
//! record of what runs: `status` reads it, `down` stops exactly those
//! processes (a pid counts as ours only while its command line still names
//! the directory) and removes the directory. `up` refuses a directory that
//! is not empty and holds no sandbox record, so it never removes files it
//! did not make.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::procs;
use serde::{Deserialize, Serialize};

use crate::http;

/// The record's layout version.
const FORMAT: u32 = 1;
const RECORD: &str = "sandbox.json";

/// What runs in a sandbox directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    format: u32,
    /// The bootstrap node's address (with its peer id).
    bootstrap: String,
    /// The SPN's API.
    spn: String,
    /// The file holding the operator's token.
    token_file: String,
    /// The ledger's genesis (empty: no ledger).
    #[serde(default)]
    genesis: String,
    nodes: Vec<NodeRecord>,
}

/// One process of the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    name: String,
    role: String,
    pid: u32,
    peer_id: String,
    address: String,
    dir: String,
}

/// The default directory: `$TMPDIR/ionshard-sandbox`.
fn default_dir() -> PathBuf {
    std::env::temp_dir().join("ionshard-sandbox")
}

fn load(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let r: Record =
        serde_json::from_str(&text).with_context(|| format!("{} is not a sandbox record", path.display()))?;
    if r.format != FORMAT {
        bail!("{} is of format {} (this build reads {FORMAT})", path.display(), r.format);
    }
    Ok(Some(r))
}

fn save(dir: &Path, r: &Record) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(r)?;
    crate::files::write_atomic(&dir.join(RECORD), &bytes)
}

/// Whether `pid` is a process of the sandbox in `dir` (and not a later one
/// that reuses its pid): its command line must name the directory.
fn alive(pid: u32, dir: &str) -> bool {
    // A path below the directory, not one that merely shares its prefix
    // (the nodes of /tmp/sb2 are not those of /tmp/sb).
    let below = format!("{}/", dir.trim_end_matches('/'));
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) => c.split(|b| *b == 0).any(|arg| arg.starts_with(below.as_bytes())),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// `ionshard sandbox …`.
#[derive(clap::Subcommand)]
pub(crate) enum SandboxCommand {
    /// Start a bootstrap node, N peers and an SPN on 127.0.0.1 in the
    /// background; print the environment to `eval` (IONSHARD_BOOTSTRAP,
    /// IONSHARD_SPN, IONSHARD_SPN_TOKEN).
    Up(UpArgs),
    /// List what runs: role, peer id, pid, address and directory of each node.
    Status(AtArgs),
    /// Print a running sandbox's environment again, to `eval` in another
    /// terminal: `eval "$(ionshard sandbox env --dir DIR)"`.
    Env(AtArgs),
    /// Stop exactly what `up` started, and remove its directory.
    Down {
        #[command(flatten)]
        at: AtArgs,
        /// Keep the directory (stores, logs).
        #[arg(long)]
        keep: bool,
    },
}

/// Options of `ionshard sandbox up`.
#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// Storage peers to start.
    #[arg(long, default_value_t = 8)]
    peers: usize,
    /// Ledger producers to start (0: no ledger). The bootstrap follows the
    /// chain and the SPN anchors its receipts on it.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Directory for the nodes' state and logs [default: $TMPDIR/ionshard-sandbox].
    #[arg(long, env = "IONSHARD_SANDBOX")]
    dir: Option<PathBuf>,
    /// Put every peer on 127.0.0.1, one household (the SPN then relaxes its
    /// rule of at most m shards of a segment per household). By default each
    /// peer has a loopback address of its own (127.0.0.2, 127.0.0.3, …), as
    /// if each were in another home.
    #[arg(long)]
    shared_address: bool,
    /// Seconds unseen before the sandbox's SPN counts a peer as lost and
    /// repairs its shards elsewhere.
    #[arg(long, default_value_t = 20)]
    grace: u64,
    /// Print one JSON object (the environment and the nodes) instead of shell lines.
    #[arg(long)]
    json: bool,
}

/// Which sandbox.
#[derive(clap::Args)]
pub(crate) struct AtArgs {
    /// The sandbox's directory [default: $IONSHARD_SANDBOX, which `up` exports, else $TMPDIR/ionshard-sandbox].
    #[arg(long, env = "IONSHARD_SANDBOX")]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Run a sandbox command.
pub(crate) fn run(cmd: SandboxCommand) -> Result<()> {
    match cmd {
        SandboxCommand::Up(a) => {
            up(a.peers, a.producers, !a.shared_address, a.grace, &a.dir.unwrap_or_else(default_dir), a.json)
        }
        SandboxCommand::Status(a) => status(&a.dir.unwrap_or_else(default_dir), a.json),
        SandboxCommand::Env(a) => env(&a.dir.unwrap_or_else(default_dir), a.json),
        SandboxCommand::Down { at, keep } => down(&at.dir.unwrap_or_else(default_dir), keep, at.json),
    }
}

fn up(peers: usize, producers: usize, households: bool, grace: u64, dir: &Path, json: bool) -> Result<()> {
    if peers == 0 || peers > 64 {
        bail!("a sandbox has 1 to 64 peers, not {peers}");
    }
    if producers > 21 {
        bail!("a sandbox has 0 to 21 ledger producers, not {producers}");
    }
    let dir = prepare(dir)?;
    match start_all(&dir, peers, producers, households, grace, json) {
        Ok(r) => {
            let token = std::fs::read_to_string(&r.token_file)
                .with_context(|| format!("reading the operator's token in {}", r.token_file))?;
            print_env(&r, token.trim(), &dir, json);
            Ok(())
        }
        Err(e) => {
            // Stop what did start; keep the directory for its logs.
            if let Ok(Some(r)) = load(&dir) {
                stop(&r, &dir.display().to_string());
            }
            Err(e.context(format!(
                "the sandbox did not come up; its logs are in {}/logs (`ionshard sandbox down --dir {}` removes it)",
                dir.display(),
                dir.display()
            )))
        }
    }
}

/// The sandbox directory, absolute, empty and ready; refuses one that holds
/// anything but a sandbox that has stopped.
fn prepare(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let d = dir.display().to_string();
    match load(&dir)? {
        Some(r) if r.nodes.iter().any(|n| alive(n.pid, &d)) => {
            bail!(
                "a sandbox already runs in {d}: `ionshard sandbox status --dir {d}` shows it, `ionshard sandbox down --dir {d}` stops it"
            )
        }
        Some(_) => {
            // A sandbox that stopped (a reboot, a kill): start afresh.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing the stopped sandbox in {d}"))?;
            std::fs::create_dir_all(&dir)?;
        }
        None => {
            if std::fs::read_dir(&dir)?.next().is_some() {
                bail!("{d} is not empty and holds no sandbox; give an empty or new --dir");
            }
        }
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(dir)
}

impl NodeRecord {
    fn new(name: &str, role: &str, first: &serde_json::Value, pid: u32, address: String, dir: &Path) -> NodeRecord {
        NodeRecord {
            name: name.to_string(),
            role: role.to_string(),
            pid,
            peer_id: first["peer_id"].as_str().unwrap_or_default().to_string(),
            address,
            dir: dir.display().to_string(),
        }
    }
}

/// Add a started node to the record, and save it at once: a failure later
/// on (or `down`) must know every process that runs.
fn add(dir: &Path, r: &mut Record, node: NodeRecord) -> Result<()> {
    r.nodes.push(node);
    save(dir, r)
}

fn start_all(dir: &Path, peers: usize, producers: usize, households: bool, grace: u64, json: bool) -> Result<Record> {
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    let lo = harness::household(0);
    let logs = dir.join("logs");
    let mut r = Record {
        format: FORMAT,
        bootstrap: String::new(),
        spn: String::new(),
        token_file: String::new(),
        genesis: String::new(),
        nodes: Vec::new(),
    };
    let note = |s: String| {
        if !json {
            eprintln!("{s}");
        }
    };
    let mut ledger_args = Vec::new();
    if producers > 0 {
        // The manufacturer registry's admin: a key of the sandbox's own.
        let admin_key = dir.join("ledger").join("admin.key");
        std::fs::create_dir_all(dir.join("ledger"))?;
        let admin = net::load_or_create_key(&admin_key)?.0.public().to_peer_id().to_string();
        // A state snapshot each 60 blocks (a minute to five): a node joining later starts from one.
        let flags = ["--admin".to_string(), admin, "--snapshot-every".to_string(), "60".to_string()];
        // Producer 0 signs with a key file apart from its node key.
        let (genesis, list, keys) =
            procs::ledger_genesis_apart(&exe, &dir.join("ledger"), producers, 1000, 5000, &flags, &[0])?;
        r.genesis = genesis.display().to_string();
        for (i, (pdir, addr)) in list.iter().enumerate() {
            let name = format!("producer{i}");
            let key = keys.iter().find(|(k, _)| *k == i).map(|(_, f)| f.as_path());
            let args = procs::producer_args_keyed(addr, pdir, &genesis, key);
            let (child, first) = procs::start(&exe, &name, &logs, &args, true)?;
            add(dir, &mut r, NodeRecord::new(&name, "producer", &first, child.id(), addr.clone(), pdir))?;
        }
        note(format!(
            "ledger: {producers} producers, a block a second while there is something to record, else every 5 s (genesis {})",
            genesis.display()
        ));
        if let Some((_, k)) = keys.first() {
            note(format!(
                "ledger: producer0 signs with {}, a key apart from its node key (--producer-key)",
                k.display()
            ));
        }
        note(format!(
            "ledger: the registry admin's key is {} (`ionshard ledger tx --key {} admit MANUFACTURER --name NAME`)",
            admin_key.display(),
            admin_key.display()
        ));
        ledger_args = vec!["--genesis".to_string(), r.genesis.clone()];
    }
    let bdir = dir.join("bootstrap");
    let mut boot_args = procs::bootstrap_args(lo, &bdir);
    boot_args.extend(ledger_args.iter().cloned());
    let (child, first) = procs::start(&exe, "bootstrap", &logs, &boot_args, true)?;
    let boot = first["listen"][0].as_str().context("the bootstrap node printed no address")?.to_string();
    r.bootstrap = boot.clone();
    add(dir, &mut r, NodeRecord::new("bootstrap", "bootstrap", &first, child.id(), boot.clone(), &bdir))?;
    note(format!("bootstrap {boot}"));
    let spn_dir = dir.join("spn");
    std::fs::create_dir_all(&spn_dir)?;
    let (spn_key, _) = net::load_or_create_key(&spn_dir.join("identity.key"))?;
    let spn_id = spn_key.public().to_peer_id().to_string();
    for i in 0..peers {
        let name = format!("peer{i}");
        let pdir = dir.join(&name);
        let ip = if households { harness::household(i + 1) } else { lo };
        let (child, first) =
            procs::start(&exe, &name, &logs, &procs::peer_args(ip, &boot, &spn_id, "1GiB", &pdir), true)?;
        let address = first["listen"][0].as_str().unwrap_or_default().to_string();
        add(dir, &mut r, NodeRecord::new(&name, "peer", &first, child.id(), address, &pdir))?;
    }
    note(format!("{peers} peers started"));
    let mut spn_args = procs::spn_args(lo, &boot, &spn_dir);
    spn_args.extend(procs::quick_durability(grace));
    if !households {
        spn_args.push("--relax-domains".into());
    }
    if producers > 0 {
        spn_args.extend(["--ledger".to_string(), r.genesis.clone(), "--anchor-every".into(), "5s".into()]);
        spn_args.extend(["--points-every".to_string(), "30s".into()]);
    }
    let (child, first) = procs::start(&exe, "spn", &logs, &spn_args, true)?;
    let url = first["http"].as_str().context("the SPN printed no API address")?.to_string();
    r.spn = url.clone();
    r.token_file = first["token_file"].as_str().context("the SPN printed no token file")?.to_string();
    add(dir, &mut r, NodeRecord::new("spn", "spn", &first, child.id(), url.clone(), &spn_dir))?;
    let token = std::fs::read_to_string(&r.token_file)?;
    let api = http::spn(&url, Some(token.trim().to_string()))?;
    procs::wait_peers(&api, peers as u64, Duration::from_secs(60))?;
    note(format!("SPN {spn_id}, API {url}; it sees all {peers} peers"));
    note(format!(
        "durability (short periods for trying it): heartbeat 1 s, a peer unseen {grace} s is lost and its shards \
         rebuilt elsewhere, audits every ~4 s, repair checks every 1 s; `ionshard spn health` and `ionshard spn peers` show them"
    ));
    Ok(r)
}

/// Single-quote `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn print_env(r: &Record, token: &str, dir: &Path, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "dir": dir.display().to_string(),
                "env": { "IONSHARD_BOOTSTRAP": r.bootstrap, "IONSHARD_SPN": r.spn, "IONSHARD_SPN_TOKEN": token,
                         "IONSHARD_SANDBOX": dir.display().to_string(), "IONSHARD_GENESIS": r.genesis },
                "nodes": r.nodes,
            })
        );
        return;
    }
    println!("export IONSHARD_BOOTSTRAP={}", quote(&r.bootstrap));
    println!("export IONSHARD_SPN={}", quote(&r.spn));
    println!("export IONSHARD_SPN_TOKEN={}", quote(token));
    println!("export IONSHARD_SANDBOX={}", quote(&dir.display().to_string()));
    if !r.genesis.is_empty() {
        println!("export IONSHARD_GENESIS={}", quote(&r.genesis));
    }
    println!("# sandbox in {}: `ionshard sandbox status` lists it, `ionshard sandbox down` stops it", dir.display());
}

/// `ionshard sandbox env`: what `up` printed, for another shell.
fn env(dir: &Path, json: bool) -> Result<()> {
    let d = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let ds = d.display().to_string();
    let Some(r) = load(&d)? else {
        bail!("no sandbox in {ds} (start one with `ionshard sandbox up --dir {ds}`)");
    };
    let stopped: Vec<&str> = r.nodes.iter().filter(|n| !alive(n.pid, &ds)).map(|n| n.name.as_str()).collect();
    if r.nodes.iter().any(|n| matches!(n.role.as_str(), "spn" | "bootstrap") && !alive(n.pid, &ds)) {
        bail!(
            "the sandbox in {ds} is not running (stopped: {}): `ionshard sandbox down --dir {ds}`, then up",
            stopped.join(", ")
        );
    }
    if !stopped.is_empty() {
        // To stderr: stdout is for `eval`.
        eprintln!(
            "warning: stopped in the sandbox in {ds}: {} (`ionshard sandbox status` shows them)",
            stopped.join(", ")
        );
    }
    let token = std::fs::read_to_string(&r.token_file).with_context(|| format!("reading {}", r.token_file))?;
    print_env(&r, token.trim(), &d, json);
    Ok(())
}

fn status(dir: &Path, json: bool) -> Result<()> {
    let d = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let ds = d.display().to_string();
    let Some(r) = load(&d)? else {
        bail!("no sandbox in {ds} (start one with `ionshard sandbox up --dir {ds}`)");
    };
    let rows: Vec<_> = r.nodes.iter().map(|n| (n, alive(n.pid, &ds))).collect();
    if json {
        let nodes: Vec<_> = rows
            .iter()
            .map(|(n, up)| {
                serde_json::json!({ "name": n.name, "role": n.role, "pid": n.pid, "peer_id": n.peer_id,
                "address": n.address, "dir": n.dir, "running": up })
            })
            .collect();
        println!("{}", serde_json::json!({ "dir": ds, "spn": r.spn, "bootstrap": r.bootstrap, "nodes": nodes }));
        return Ok(());
    }
    let running = rows.iter().filter(|(_, up)| *up).count();
    println!("sandbox in {ds}: {running} of {} nodes running; SPN API {}", rows.len(), r.spn);
    println!("{:<10} {:<9} {:>7}  {:<8} {:<52} {:<44} dir", "name", "role", "pid", "state", "peer id", "address");
    for (n, up) in rows {
        let state = if up { "running" } else { "stopped" };
        println!(
            "{:<10} {:<9} {:>7}  {:<8} {:<52} {:<44} {}",
            n.name, n.role, n.pid, state, n.peer_id, n.address, n.dir
        );
    }
    Ok(())
}

/// Stop the sandbox's processes: SIGTERM, then SIGKILL for any still there after 10 s.
fn stop(r: &Record, dir: &str) -> usize {
    let ours: Vec<u32> = r.nodes.iter().filter(|n| alive(n.pid, dir)).map(|n| n.pid).collect();
    for pid in &ours {
        signal(*pid, "-TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours.iter().any(|p| alive(*p, dir)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in ours.iter().filter(|p| alive(**p, dir)) {
        signal(*pid, "-KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ours.iter().any(|p| alive(*p, dir)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    ours.len()
}

fn down(dir: &Path, keep: bool, json: bool) -> Result<()> {
    let d = dir.canonicalize().with_context(|| format!("no sandbox in {} (no such directory)", dir.display()))?;
    let ds = d.display().to_string();
    let Some(r) = load(&d)? else {
        bail!("no sandbox in {ds}: it holds no {RECORD}, so nothing there was started by `ionshard sandbox up`");
    };
    let stopped = stop(&r, &ds);
    let left: Vec<u32> = r.nodes.iter().filter(|n| alive(n.pid, &ds)).map(|n| n.pid).collect();
    if !left.is_empty() {
        bail!("processes {left:?} of the sandbox in {ds} would not stop; the directory is kept");
    }
    if !keep {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {ds}"))?;
    }
    if json {
        println!("{}", serde_json::json!({ "dir": ds, "stopped": stopped, "removed": !keep }));
    } else {
        let what = if keep { "kept" } else { "removed" };
        println!("stopped {stopped} processes; {what} {ds}");
    }
    Ok(())
}
