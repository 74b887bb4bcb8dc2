//! Helpers the end-to-end benches share (see `benches/examples/`): a network
//! of `ionshard` processes whose CPU time can be read per role, an nginx to
//! measure beside, and medians.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The median of `v` (the upper one of an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/PID/stat`; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces): utime is the
    // 12th, stime the 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A bootstrap, peers and an SPN as processes of one `ionshard` binary on
/// loopback (each peer in a household of its own), with the production
/// durability settings (no audit runs during a bench). Stopped on drop.
pub struct Network {
    children: Vec<Child>,
    /// The bootstrap's address.
    pub boot: String,
    /// The SPN's HTTP API.
    pub url: String,
    /// The SPN operator's token.
    pub token: String,
    /// The peers' pids.
    pub peers: Vec<u32>,
    /// The SPN's pid.
    pub spn: u32,
}

impl Network {
    /// Start it under `dir` with `bin`.
    pub fn start(bin: &Path, dir: &Path, peers: usize) -> Network {
        use harness::procs;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let mut children = Vec::new();
        let mut start = |name: &str, args: &[String]| {
            let (child, info) = procs::start(bin, name, &logs, args, false).expect("a node starts");
            let pid = child.id();
            children.push(child);
            (pid, info)
        };
        let (_, boot) = start("bootstrap", &procs::bootstrap_args(harness::household(0), &dir.join("bootstrap")));
        let boot = boot["listen"][0].as_str().expect("bootstrap address").to_string();
        let spn_dir = dir.join("spn");
        std::fs::create_dir_all(&spn_dir).expect("spn dir");
        let (key, _) = net::load_or_create_key(&spn_dir.join("identity.key")).expect("SPN key");
        let spn_id = key.public().to_peer_id().to_string();
        let mut pids = Vec::new();
        for i in 0..peers {
            let args = procs::peer_args(harness::household(i + 1), &boot, &spn_id, "64GiB", &dir.join(format!("p{i}")));
            pids.push(start(&format!("peer{i}"), &args).0);
        }
        let (spn, info) = start("spn", &procs::spn_args(harness::household(0), &boot, &spn_dir));
        let url = info["http"].as_str().expect("SPN address").to_string();
        let token = std::fs::read_to_string(info["token_file"].as_str().expect("token file")).expect("token");
        let api = client::Spn::new(&url, Some(token.clone())).expect("SPN client");
        procs::wait_peers(&api, peers as u64, Duration::from_secs(90)).expect("peers join");
        Network { children, boot, url, token, peers: pids, spn }
    }

    /// CPU seconds used so far: (all peers, the SPN).
    pub fn cpu(&self) -> (f64, f64) {
        (self.peers.iter().map(|p| cpu_seconds(*p)).sum(), cpu_seconds(self.spn))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// An nginx serving one directory on 127.0.0.1, stopped on drop: the
/// central file server ionshard replaces.
pub struct Nginx {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Nginx {
    /// `None` when nginx is not installed.
    pub fn start(dir: &Path, root: &Path) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        std::fs::create_dir_all(dir.join("logs")).ok()?;
        // A plain static server, as a vendor would run one: sendfile on,
        // one worker per core.
        let conf = format!(
            "{user} daemon off; worker_processes auto; pid {dir}/nginx.pid; error_log {dir}/logs/error.log;
             events {{ worker_connections 64; }}
             http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {dir}/body;
                     proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi;
                     scgi_temp_path {dir}/scgi;
                     server {{ listen 127.0.0.1:{port}; root {root}; }} }}",
            dir = dir.display(),
            root = root.display(),
            // As root, nginx's workers would run as nobody, who cannot
            // read this bench's private temporary directory.
            user = if is_root() { "user root;" } else { "" }
        );
        std::fs::write(dir.join("nginx.conf"), conf).ok()?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Nginx { child, port })
    }

    /// Download `name` with curl to `out`, synced as a fetcher syncs before
    /// its rename; the MB/s.
    pub fn download(&self, name: &str, out: &Path, len: u64) -> f64 {
        let t = Instant::now();
        let ok = Command::new("curl")
            .args(["-sf", "-o"])
            .arg(out)
            .arg(format!("http://127.0.0.1:{}/{name}", self.port))
            .status()
            .expect("curl")
            .success();
        assert!(ok, "curl from nginx failed");
        std::fs::File::open(out).and_then(|f| f.sync_all()).expect("sync");
        let mbs = len as f64 / t.elapsed().as_secs_f64() / 1e6;
        let _ = std::fs::remove_file(out);
        mbs
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: the master then stops its workers too.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// What `/usr/bin/time -v` said of a command: (wall seconds it printed
/// itself aside, CPU seconds, peak RSS in MiB).
pub fn time_v(stderr: &str) -> (f64, f64) {
    let field = |name: &str| -> f64 {
        stderr.lines().find_map(|l| l.trim().strip_prefix(name)).and_then(|n| n.trim().parse().ok()).unwrap_or(f64::NAN)
    };
    let cpu = field("User time (seconds):") + field("System time (seconds):");
    (cpu, field("Maximum resident set size (kbytes):") / 1024.0)
}

/// A firmware-like image of `mib` MiB: mostly incompressible (compressed
/// kernels, squashfs), a line of text every 512 bytes; `seed` makes it differ.
pub fn image(mib: usize, seed: u8) -> Vec<u8> {
    let mut img = vec![0u8; mib << 20];
    blake3::Hasher::new().update(b"ota-bench").update(&[seed]).finalize_xof().fill(&mut img);
    for (i, line) in img.chunks_mut(64).enumerate().filter(|(i, _)| i % 8 == 0) {
        let text = format!("{i:010} config_option={} # text\n", i % 977);
        let n = text.len().min(line.len());
        line[..n].copy_from_slice(&text.as_bytes()[..n]);
    }
    img
}

/// The `ionshard` binary a bench runs: `IONSHARD_BIN`, else the release build.
pub fn ionshard_bin() -> PathBuf {
    std::env::var_os("IONSHARD_BIN").map_or_else(|| PathBuf::from("target/release/ionshard"), PathBuf::from)
}

/// A vendor with one key (threshold 1) whose root, valid for `hours`, is
/// written to `dir/root.json` (where devices read it) and registered with `spn`.
pub fn bench_vendor(spn: &client::Spn, dir: &Path, hours: u64) -> (ota::meta::VendorKey, ota::meta::Root) {
    use ota::meta;
    let key = meta::VendorKey::generate();
    let root = meta::Root {
        vendor: "bench".into(),
        version: 1,
        expires: proto::now() + hours * 3600,
        threshold: 1,
        keys: [(key.id(), key.public_hex())].into_iter().collect(),
        timestamp: None,
    };
    let root_text = meta::to_json(&meta::sign_root(root.clone(), &[&key]));
    std::fs::write(dir.join("root.json"), &root_text).expect("root.json");
    spn.register_vendor(&proto::api::Roots { roots: vec![proto::api::NewRoot { root: root_text, legacy: None }] })
        .expect("register the vendor");
    (key, root)
}
