//! The process test network of the CLI's tests: every node a real
//! `ionshard` process on 127.0.0.1, killed when the test ends however it ends.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary, without the defaults a shell may hold (`eval "$(ionshard
/// sandbox up)"`): every test names its own network.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ionshard"));
    for k in ["IONSHARD_BOOTSTRAP", "IONSHARD_SPN", "IONSHARD_SPN_TOKEN"] {
        c.env_remove(k);
    }
    c
}

/// Children killed when the test ends, however it ends.
#[derive(Default)]
pub struct Procs(pub Vec<(String, Child)>);

impl Procs {
    pub fn start(&mut self, name: &str, args: &[String]) -> Value {
        let mut child =
            bin().args(args).arg("--json").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let mut r = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        r.read_line(&mut line).expect("first line");
        std::thread::spawn(move || {
            let mut l = String::new();
            while r.read_line(&mut l).is_ok_and(|n| n > 0) {
                l.clear();
            }
        });
        self.0.push((name.to_string(), child));
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{name} printed {line:?}"))
    }
    pub fn kill(&mut self, name: &str) {
        let i = self.0.iter().position(|(n, _)| n == name).expect("known process");
        let (_, mut c) = self.0.remove(i);
        c.kill().expect("kill -9");
        c.wait().expect("reap");
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
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
    // A tiny HTTP GET without a client library: the SPN answers HTTP/1.1.
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let Ok(mut c) = std::net::TcpStream::connect(host) else { return 0 };
    let _ = write!(
        c,
        "GET /v1/health?refresh=true HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<Value>(json).ok().and_then(|v| v["live_peers"].as_u64()).unwrap_or(0)
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
    let boot = procs.start(
        "bootstrap",
        &["node", "--role", "bootstrap", "--listen", "/ip4/127.0.0.1/tcp/0", "--dir", &s(&dir.join("boot"))]
            .map(String::from),
    );
    boot["listen"][0].as_str().expect("bootstrap address").to_string()
}

/// Start a peer `name` (2 GiB, trusting `spn_id`) in `dir/NAME`; its peer id.
pub fn peer(procs: &mut Procs, name: &str, dir: &Path, bootstrap: &str, spn_id: &str) -> String {
    let dir = s(&dir.join(name));
    let args = ["node", "--role", "peer", "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap]
        .into_iter()
        .chain(["--capacity", "2GiB", "--trust", spn_id, "--dir", &dir])
        .map(String::from)
        .collect::<Vec<_>>();
    procs.start(name, &args)["peer_id"].as_str().expect("peer id").to_string()
}

pub fn network(dir: &Path, peers: usize) -> Network {
    let mut procs = Procs::default();
    let b = bootstrap(&mut procs, dir);
    let spn_dir = dir.join("spn");
    let id =
        json_out(&bin().args(["id", "--key", &s(&spn_dir.join("identity.key")), "--json"]).output().expect("id"), "id");
    let spn_id = id["peer_id"].as_str().expect("peer id").to_string();
    let peer_ids: Vec<String> = (0..peers).map(|i| peer(&mut procs, &format!("peer{i}"), dir, &b, &spn_id)).collect();
    let spn = procs
        .start("spn", &["spn", "--dir", &s(&spn_dir), "--http", "127.0.0.1:0", "--bootstrap", &b].map(String::from));
    let url = spn["http"].as_str().expect("http").to_string();
    let token = std::fs::read_to_string(spn["token_file"].as_str().expect("token file")).expect("token");
    // Generous: other tests' networks share the 2 cores.
    let deadline = Instant::now() + Duration::from_secs(60);
    while health_peers(&url, &token) < peers as u64 {
        assert!(Instant::now() < deadline, "SPN did not see {peers} peers within 60 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    Network { procs, url, token, bootstrap: b, spn_id, peers: peer_ids }
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
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c.id()).expect("known process")
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
