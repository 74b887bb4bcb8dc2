//! Nodes as `ionshard` processes: what `ionshard demo` and `ionshard
//! sandbox` run. A node is the binary run with `--json`; its first stdout
//! line says who it is and where it listens. Its stdout goes to
//! `LOGS/NAME.out` and its stderr to `LOGS/NAME.log`, so a node started
//! detached (the sandbox's) outlives the command that started it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Error, Result};

/// How long a node may take to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment a command reads its defaults from: a node started here
/// must not pick up the defaults of the shell that ran the sandbox.
pub const ENV_DEFAULTS: [&str; 5] =
    ["IONSHARD_BOOTSTRAP", "IONSHARD_SPN", "IONSHARD_SPN_TOKEN", "IONSHARD_SANDBOX", "IONSHARD_GENESIS"];

/// Start `EXE ARGS --json` as NAME, with logs in `logs`. `detached`: in a
/// process group of its own, so a Ctrl-C at the terminal that started it
/// does not reach it. Returns the child and its first line.
pub fn start(exe: &Path, name: &str, logs: &Path, args: &[String], detached: bool) -> Result<(Child, Value)> {
    use std::os::unix::process::CommandExt;
    let fail = |why: String| Error::Start { node: name.to_string(), why };
    let io = |what: String| move |source| Error::Io { what, source };
    let out_path = logs.join(format!("{name}.out"));
    let out = std::fs::File::create(&out_path).map_err(io(format!("creating {}", out_path.display())))?;
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--json").stdin(Stdio::null()).stdout(out).stderr(log);
    for k in ENV_DEFAULTS {
        cmd.env_remove(k);
    }
    // The log is a file for whoever looks into a slow start or a failure:
    // what a node does (joining, listening, reachability), not only its
    // warnings (a line per ledger block is left out). RUST_LOG, if set,
    // says otherwise.
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,ledger::engine=warn");
    }
    if detached {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(io(format!("starting {name} ({})", exe.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(line) = text.split_inclusive('\n').next().filter(|l| l.ends_with('\n')) {
            return match serde_json::from_str(line.trim()) {
                Ok(v) => Ok((child, v)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(fail(format!("printed {line:?}: {e} (see {})", log_path.display())))
                }
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("exited ({status}) before it was ready (see {})", log_path.display())));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let why = format!("did not start within {} s (see {})", START_TIMEOUT.as_secs(), log_path.display());
            return Err(fail(why));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn strings<const N: usize>(a: [&str; N]) -> Vec<String> {
    a.map(String::from).into()
}

/// Arguments of a bootstrap node keeping its state in `dir`, on `ip`.
pub fn bootstrap_args(ip: Ipv4Addr, dir: &Path) -> Vec<String> {
    let listen = format!("/ip4/{ip}/tcp/0");
    strings(["node", "--role", "bootstrap", "--listen", &listen, "--dir", &dir.display().to_string()])
}

/// Arguments of a storage peer on `ip` trusting `spn_id`, joining through `bootstrap`.
pub fn peer_args(ip: Ipv4Addr, bootstrap: &str, spn_id: &str, capacity: &str, dir: &Path) -> Vec<String> {
    let listen = format!("/ip4/{ip}/tcp/0");
    let dir = dir.display().to_string();
    strings([
        "node",
        "--role",
        "peer",
        "--listen",
        &listen,
        "--bootstrap",
        bootstrap,
        "--capacity",
        capacity,
        "--trust",
        spn_id,
        "--dir",
        &dir,
    ])
}

/// Arguments of an SPN with its API on `ip`, joining through `bootstrap`.
pub fn spn_args(ip: Ipv4Addr, bootstrap: &str, dir: &Path) -> Vec<String> {
    let http = format!("{ip}:0");
    strings(["spn", "--dir", &dir.display().to_string(), "--http", &http, "--bootstrap", bootstrap])
}

/// SPN flags for a test network: heartbeats every second, peers lost after
/// `grace_secs`, audits every few seconds, repair every second.
pub fn quick_durability(grace_secs: u64) -> Vec<String> {
    let grace = format!("{grace_secs}s");
    strings([
        "--heartbeat",
        "1s",
        "--grace",
        &grace,
        "--audit-every",
        "4s",
        "--audit-min-blocks",
        "32",
        "--repair-every",
        "1s",
        "--repair-rate",
        "256MiB",
    ])
}

/// The peers an SPN counts as live (asking them anew); 0 if it does not answer.
pub fn live_peers(spn: &client::Spn) -> u64 {
    spn.health(true).map_or(0, |h| h.live_peers)
}

/// What the SPN's records say of the peers it does not count as live (a
/// slow start's diagnosis): ", not live: ID (status, failures, seen Ns
/// ago), …", or nothing.
fn not_live(spn: &client::Spn) -> String {
    let Ok(list) = spn.peers() else { return String::new() };
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let out: Vec<String> = list
        .peers
        .iter()
        .filter(|p| p.failures > 0 || p.retiring || p.disqualified.is_some() || p.last_seen + 4 < t)
        .map(|p| {
            format!(
                "{} ({}, {} failure(s), seen {} s ago)",
                p.peer,
                p.status,
                p.failures,
                t.saturating_sub(p.last_seen)
            )
        })
        .collect();
    format!(
        "; it has {} peer record(s){}",
        list.peers.len(),
        if out.is_empty() { String::new() } else { format!(", not live: {}", out.join(", ")) }
    )
}

/// Wait until the SPN sees `want` live peers (at most `within`).
pub fn wait_peers(spn: &client::Spn, want: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let n = live_peers(spn);
        if n >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady(format!(
                "the SPN sees {n} live peers after {} s, expected {want}{}",
                within.as_secs(),
                not_live(spn)
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A ledger node's key in `dir/nodeI` (made by `EXE id`) and an address on
/// a loopback address of its own with a TCP port free when chosen (a
/// process may take it before the node starts: the caller then sees the
/// node fail to start, and says so). Returns its directory and address.
pub fn ledger_node(exe: &Path, dir: &Path, name: &str, i: usize) -> Result<(std::path::PathBuf, String)> {
    let io = |what: String| move |source| Error::Io { what, source };
    let pdir = dir.join(name);
    std::fs::create_dir_all(&pdir).map_err(io(format!("creating {}", pdir.display())))?;
    let id = id_of(exe, &pdir.join("identity.key"))?;
    let ip = crate::household(200 + i);
    let port = std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map_err(io(format!("finding a free port on {ip}")))?
        .port();
    Ok((pdir, format!("/ip4/{ip}/tcp/{port}/p2p/{id}")))
}

/// Write `dir/genesis.json` for `producers` (their addresses) through `EXE
/// ledger init`: a block each `block_ms`, and with nothing to record one
/// each `idle_ms`; `extra` flags go to `ledger init` as they are.
pub fn ledger_init(
    exe: &Path,
    dir: &Path,
    producers: &[String],
    block_ms: u64,
    idle_ms: u64,
    extra: &[String],
) -> Result<std::path::PathBuf> {
    let mut init = strings(["ledger", "init", "--json", "--block-ms", &block_ms.to_string()]);
    init.extend(strings(["--propose-ms", &(block_ms * 3).max(600).to_string(), "--idle-ms", &idle_ms.to_string()]));
    for addr in producers {
        init.extend(strings(["--producer", addr]));
    }
    init.extend_from_slice(extra);
    let genesis = dir.join("genesis.json");
    init.extend(strings(["--out", &genesis.display().to_string()]));
    let out = Command::new(exe)
        .args(&init)
        .output()
        .map_err(|source| Error::Io { what: "running ionshard ledger init".into(), source })?;
    if !out.status.success() {
        return Err(Error::NotReady(format!("ledger init: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(genesis)
}

/// A chain of `n` producers under `dir` (`producerI`, see [`ledger_node`])
/// and its genesis (see [`ledger_init`]). Returns the genesis and, per
/// producer, its directory and address.
pub fn ledger_genesis(
    exe: &Path,
    dir: &Path,
    n: usize,
    block_ms: u64,
    idle_ms: u64,
) -> Result<(std::path::PathBuf, Vec<(std::path::PathBuf, String)>)> {
    ledger_genesis_with(exe, dir, n, block_ms, idle_ms, &[])
}

/// The same, with more `ledger init` flags (`--admin PEER`, …).
pub fn ledger_genesis_with(
    exe: &Path,
    dir: &Path,
    n: usize,
    block_ms: u64,
    idle_ms: u64,
    extra: &[String],
) -> Result<(std::path::PathBuf, Vec<(std::path::PathBuf, String)>)> {
    ledger_genesis_apart(exe, dir, n, block_ms, idle_ms, extra, &[]).map(|(g, p, _)| (g, p))
}

/// Producers apart from their node key: (index, key file).
pub type ProducerKeys = Vec<(usize, std::path::PathBuf)>;

/// A chain made here: its genesis, per producer its directory and
/// address, and the producers' keys apart from their node keys.
pub type MadeChain = (std::path::PathBuf, Vec<(std::path::PathBuf, String)>, ProducerKeys);

/// The same, and the producers `apart` sign with a producer key apart
/// from their node key: `producerI/producer.key`, made by `EXE id`, named
/// in the genesis as `ADDR=ID`. Returns the key files too (start those
/// producers with [`producer_args_keyed`]).
pub fn ledger_genesis_apart(
    exe: &Path,
    dir: &Path,
    n: usize,
    block_ms: u64,
    idle_ms: u64,
    extra: &[String],
    apart: &[usize],
) -> Result<MadeChain> {
    let producers = (0..n).map(|i| ledger_node(exe, dir, &format!("producer{i}"), i)).collect::<Result<Vec<_>>>()?;
    let mut keys = Vec::new();
    let mut addrs = Vec::new();
    for (i, (pdir, addr)) in producers.iter().enumerate() {
        if apart.contains(&i) {
            let file = pdir.join("producer.key");
            addrs.push(format!("{addr}={}", id_of(exe, &file)?));
            keys.push((i, file));
        } else {
            addrs.push(addr.clone());
        }
    }
    let genesis = ledger_init(exe, dir, &addrs, block_ms, idle_ms, extra)?;
    Ok((genesis, producers, keys))
}

/// The peer id of the key in `file` (made if missing), through `EXE id`.
pub fn id_of(exe: &Path, file: &Path) -> Result<String> {
    let out = Command::new(exe)
        .args(["id", "--json", "--key", &file.display().to_string()])
        .output()
        .map_err(|source| Error::Io { what: "running ionshard id".into(), source })?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| Error::NotReady(format!("ionshard id: {e}")))?;
    Ok(v["peer_id"].as_str().unwrap_or_default().to_string())
}

/// Arguments of a producer of the chain in `genesis`, listening at `addr`
/// (its address in the genesis), keeping its state in `dir`.
pub fn producer_args(addr: &str, dir: &Path, genesis: &Path) -> Vec<String> {
    let listen = addr.split("/p2p/").next().unwrap_or(addr);
    strings([
        "node",
        "--role",
        "bootstrap",
        "--listen",
        listen,
        "--dir",
        &dir.display().to_string(),
        "--genesis",
        &genesis.display().to_string(),
        "--produce",
    ])
}

/// [`producer_args`], signing with `key` (a key file apart from the node key) if given.
pub fn producer_args_keyed(addr: &str, dir: &Path, genesis: &Path, key: Option<&Path>) -> Vec<String> {
    let mut args = producer_args(addr, dir, genesis);
    if let Some(k) = key {
        args.extend(strings(["--producer-key", &k.display().to_string()]));
    }
    args
}
