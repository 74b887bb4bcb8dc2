//! Starting ionshard nodes as processes on loopback: what `ionshard demo` and
//! `ionshard sandbox` share. A node is this same binary run with `--json`;
//! its first stdout line says who it is and where it listens. Its stdout
//! goes to `LOGS/NAME.out` and its stderr to `LOGS/NAME.log`, so a node
//! started detached (the sandbox's) outlives the command that started it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long a node may take to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment a command reads its defaults from: a node started here
/// must not pick up the defaults of the shell that ran the sandbox.
pub(crate) const ENV_DEFAULTS: [&str; 3] = ["IONSHARD_BOOTSTRAP", "IONSHARD_SPN", "IONSHARD_SPN_TOKEN"];

/// Start `ionshard ARGS --json` as NAME, with logs in `logs`. `detached`:
/// in a process group of its own, so a Ctrl-C at the terminal that started
/// it does not reach it. Returns the child and its first line.
pub(crate) fn start(name: &str, logs: &Path, args: &[String], detached: bool) -> Result<(Child, Value)> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the ionshard binary")?;
    let out_path = logs.join(format!("{name}.out"));
    let out = std::fs::File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--json").stdin(Stdio::null()).stdout(out).stderr(log);
    for k in ENV_DEFAULTS {
        cmd.env_remove(k);
    }
    if detached {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(line) = text.split_inclusive('\n').next().filter(|l| l.ends_with('\n')) {
            let v = serde_json::from_str(line.trim())
                .with_context(|| format!("{name} printed {line:?} (see {}/{name}.log)", logs.display()));
            if v.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Ok((child, v?));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{name} exited ({status}) before it was ready (see {}/{name}.log)", logs.display());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not start within {} s (see {}/{name}.log)", START_TIMEOUT.as_secs(), logs.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Arguments of a bootstrap node keeping its state in `dir`, on `ip`.
pub(crate) fn bootstrap_args(ip: &str, dir: &Path) -> Vec<String> {
    let listen = format!("/ip4/{ip}/tcp/0");
    ["node", "--role", "bootstrap", "--listen", &listen, "--dir", &dir.display().to_string()].map(String::from).into()
}

/// Arguments of a storage peer trusting `spn_id`, joining through `bootstrap`.
pub(crate) fn peer_args(ip: &str, bootstrap: &str, spn_id: &str, capacity: &str, dir: &Path) -> Vec<String> {
    let listen = format!("/ip4/{ip}/tcp/0");
    let dir = dir.display().to_string();
    [
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
    ]
    .map(String::from)
    .into()
}

/// Arguments of an SPN with its API on `ip`, joining through `bootstrap`.
pub(crate) fn spn_args(ip: &str, bootstrap: &str, dir: &Path) -> Vec<String> {
    let http = format!("{ip}:0");
    ["spn", "--dir", &dir.display().to_string(), "--http", &http, "--bootstrap", bootstrap].map(String::from).into()
}

/// The peers an SPN counts as live (asking them anew).
pub(crate) fn live_peers(spn: &crate::http::Spn) -> u64 {
    spn.get_typed::<spn::types::Health>("/v1/health?refresh=true").map_or(0, |h| h.live_peers)
}

/// Wait until the SPN sees `want` live peers (at most 60 s).
pub(crate) fn wait_peers(spn: &crate::http::Spn, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = live_peers(spn);
        if n >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the SPN sees {n} live peers after 60 s, expected {want}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
