//! The process test network of the CLI's tests: every node a real
//! `ionshard` process on 127.0.0.1, killed when the test ends however it ends.

#![allow(dead_code, unreachable_pub)]

pub mod drive;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;

/// The binary, without the defaults a shell may hold (`eval "$(ionshard
/// sandbox up)"`): every test names its own network.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ionshard"));
    for k in harness::procs::ENV_DEFAULTS {
        c.env_remove(k);
    }
    c
}

/// The binary's path.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ionshard"))
}

/// Children killed when the test ends, however it ends; started through
/// the harness (`harness::procs`), logs in `LOGS/NAME.{out,log}`.
pub struct Procs {
    pub children: Vec<(String, Child)>,
    logs: std::path::PathBuf,
}

impl Procs {
    pub fn new(logs: &Path) -> Procs {
        std::fs::create_dir_all(logs).expect("logs dir");
        Procs { children: Vec::new(), logs: logs.to_path_buf() }
    }
    pub fn start(&mut self, name: &str, args: &[String]) -> Value {
        let (child, first) = harness::procs::start(exe(), name, &self.logs, args, false)
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.children.push((name.to_string(), child));
        first
    }
    pub fn kill(&mut self, name: &str) {
        let i = self.children.iter().position(|(n, _)| n == name).expect("known process");
        let (_, mut c) = self.children.remove(i);
        c.kill().expect("kill -9");
        c.wait().expect("reap");
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn json_out(o: &Output, what: &str) -> Value {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("{what} printed {text}"))
}

pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut v);
    v
}

pub fn health_peers(url: &str, token: &str) -> u64 {
    client::Spn::new(url, Some(token.trim().to_string())).map_or(0, |spn| harness::procs::live_peers(&spn))
}

pub struct Network {
    pub procs: Procs,
    pub url: String,
    pub token: String,
    pub bootstrap: String,
    /// The SPN's peer id, which peers trust.
    pub spn_id: String,
    /// The peers' ids.
    pub peers: Vec<String>,
}

/// Start a bootstrap node in `dir/boot`; its address.
pub fn bootstrap(procs: &mut Procs, dir: &Path) -> String {
    let boot = procs.start("bootstrap", &harness::procs::bootstrap_args(harness::household(0), &dir.join("boot")));
    boot["listen"][0].as_str().expect("bootstrap address").to_string()
}

/// Start a peer `name` (2 GiB, trusting `spn_id`) in `dir/NAME`, on a
/// loopback address of its own (a household of its own); its peer id.
pub fn peer(procs: &mut Procs, name: &str, dir: &Path, bootstrap: &str, spn_id: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let home = harness::household(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let args = harness::procs::peer_args(home, bootstrap, spn_id, "2GiB", &dir.join(name));
    procs.start(name, &args)["peer_id"].as_str().expect("peer id").to_string()
}

/// A bootstrap, `peers` peers and an SPN as processes (the harness's), once
/// the SPN sees every peer.
pub fn network(dir: &Path, peers: usize) -> Network {
    network_with(dir, peers, &[])
}

/// The same, the SPN started with `spn_flags` too.
pub fn network_with(dir: &Path, peers: usize, spn_flags: &[String]) -> Network {
    let mut procs = Procs::new(&dir.join("logs"));
    let b = bootstrap(&mut procs, dir);
    let spn_dir = dir.join("spn");
    let id =
        json_out(&bin().args(["id", "--key", &s(&spn_dir.join("identity.key")), "--json"]).output().expect("id"), "id");
    let spn_id = id["peer_id"].as_str().expect("peer id").to_string();
    let peer_ids: Vec<String> = (0..peers).map(|i| peer(&mut procs, &format!("peer{i}"), dir, &b, &spn_id)).collect();
    let mut args = harness::procs::spn_args(harness::household(0), &b, &spn_dir);
    args.extend_from_slice(spn_flags);
    let spn = procs.start("spn", &args);
    let url = spn["http"].as_str().expect("http").to_string();
    let token = std::fs::read_to_string(spn["token_file"].as_str().expect("token file")).expect("token");
    // Generous: other tests' networks share the 2 cores, and a peer that
    // joined the DHT after the SPN's first walk is found at its next walk
    // (every 30 s), which a loaded machine may not finish in time.
    let api = client::Spn::new(&url, Some(token.trim().to_string())).expect("the SPN's URL");
    if let Err(e) = harness::procs::wait_peers(&api, peers as u64, Duration::from_secs(120)) {
        panic!("the SPN does not see every peer: {e}{}", missing(&api, &peer_ids, &dir.join("logs")));
    }
    Network { procs, url, token, bootstrap: b, spn_id, peers: peer_ids }
}

/// Of `expected`, the peers the SPN has no record of, each with the end of
/// its log (a slow start's diagnosis; the test's directory goes with it).
pub fn missing(api: &client::Spn, expected: &[String], logs: &Path) -> String {
    let known: Vec<String> = api.peers().map(|l| l.peers.into_iter().map(|p| p.peer).collect()).unwrap_or_default();
    let mut out = String::new();
    for (i, id) in expected.iter().enumerate().filter(|(_, id)| !known.contains(id)) {
        let log = std::fs::read_to_string(logs.join(format!("peer{i}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        out += &format!("\nno record of peer{i} ({id}); the end of its log:\n{}", tail.join("\n"));
    }
    let spn = std::fs::read_to_string(logs.join("spn.log")).unwrap_or_default();
    let tail: Vec<&str> = spn.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
    out + &format!("\nthe end of the SPN's log:\n{}", tail.join("\n"))
}

pub fn publish(n: &Network, vendor: &Path, image: &Path, version: &str, extra: &[&str]) -> Value {
    let o = bin()
        .args(["publish", &s(image), "--product", "router", "--version", version, "--hardware", "r1"])
        .args(extra)
        .args(["--data-shards", "6", "--parity-shards", "2", "--spn", &n.url, "--vendor-dir", &s(vendor), "--json"])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .output()
        .expect("publish");
    json_out(&o, "publish")
}

/// The vendor registers its roots with the SPN (the operator's token here).
pub fn register(n: &Network, vendor: &Path) -> Value {
    let o = bin()
        .args(["vendor", "register", "--spn", &n.url, "--dir", &s(vendor), "--json"])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .output()
        .expect("register");
    json_out(&o, "register")
}

impl Procs {
    /// The pid of a running process.
    pub fn pid(&self, name: &str) -> u32 {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c.id()).expect("known process")
    }
}

/// One HTTP/1.1 request to the SPN at `url` (`http://host:port`); the status and the body.
pub fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let Ok(mut c) = std::net::TcpStream::connect(host) else { return (0, "cannot connect".into()) };
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let auth = token.map(|t| format!("Authorization: Bearer {}\r\n", t.trim())).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if c.write_all(head.as_bytes()).and_then(|()| c.write_all(body)).is_err() {
        return (0, "cannot send".into());
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// A vendor directory (2 of 3 keys, a timestamp key), registered with the network's SPN.
pub fn vendor(n: &Network, dir: &Path) -> std::path::PathBuf {
    let vendor = dir.join("vendor");
    json_out(
        &bin().args(["vendor", "init", "--name", "acme", "--dir", &s(&vendor), "--json"]).output().expect("init"),
        "init",
    );
    register(n, &vendor);
    vendor
}

/// `ionshard update` of this test network's device, with `extra` flags.
pub fn update(n: &Network, vendor: &Path, state: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["update", "--root", &s(&vendor.join("root.json")), "--product", "router", "--hardware", "r1"])
        .args(["--state", &s(state), "--bootstrap", &n.bootstrap, "--json"])
        .args(extra)
        .output()
        .expect("update")
}

/// The first line a node started with piped stdout prints, as JSON.
pub fn first_line(child: &mut Child) -> Value {
    let mut line = String::new();
    let mut r = std::io::BufReader::new(child.stdout.take().expect("stdout piped"));
    std::io::BufRead::read_line(&mut r, &mut line).expect("first line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}
