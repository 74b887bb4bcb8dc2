//! End-to-end OTA figures: a bootstrap, 14 peers (redb stores) and an SPN as
//! tasks of this process on 127.0.0.1 (the harness's network); the SPN publishes a generated image
//! with 10+4; then the release `ionshard` binary fetches it as a separate
//! process under `/usr/bin/time -v` for its peak RSS.
//!
//! Each fetch runs beside nginx + curl of the same file (the central
//! server ionshard replaces), in turn, to the same disk (synced, as the
//! fetcher syncs before its rename) and to tmpfs (/dev/shm), with the
//! fetcher's CPU (core-seconds per GB, from `time -v`).
//!
//! `cargo build --release -p ionshard && cargo run --release -p ionshard-benches --example ota -- [MiB]`
//! (default 256 MiB; 3 runs per target, medians), or
//! `benches/fetch-vs-nginx.sh [MiB]`, which installs nginx first.

use std::process::Command;
use std::time::Instant;

use ota::meta::{self, KeyWrap, Release, Root, VendorKey};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        // The network, as the tests start it (the harness, nodes as tasks).
        let mut spec = harness::tasks::Spec::honest(14);
        for p in &mut spec.peers {
            p.capacity = 8 << 30;
        }
        let network = harness::tasks::Network::start(&d.join("net"), &spec, |c| c.max_upload = 1 << 40)
            .await
            .expect("the network starts");
        let b = network.boot_addr.clone();
        let spn = &network.spn.as_ref().expect("an SPN").spn;
        // Firmware-like: mostly incompressible (compressed kernels, squashfs),
        // some text. Three different images, for a median; the last is fetched.
        let mut publish_speeds = Vec::new();
        let mut last = None;
        let mut img = vec![0u8; mib << 20];
        for round in 0..3u8 {
            blake3::Hasher::new().update(b"ota-bench").update(&[round]).finalize_xof().fill(&mut img);
            for (i, line) in img.chunks_mut(64).enumerate().filter(|(i, _)| i % 8 == 0) {
                let text = format!("{i:010} config_option={} # text\n", i % 977);
                let n = text.len().min(line.len());
                line[..n].copy_from_slice(&text.as_bytes()[..n]);
            }
            let path = d.join("image.img");
            std::fs::write(&path, &img).expect("image");
            let t = Instant::now();
            let res = spn.publish_file(&path, "bench", &format!("router{round}"), 10, 4).await.expect("publish");
            let publish_s = t.elapsed().as_secs_f64();
            println!(
                "publish {mib} MiB, 10+4 over 14 peers: {publish_s:.2} s, {:.0} MB/s (encode + scatter, {} receipts)",
                img.len() as f64 / publish_s / 1e6,
                res.receipts
            );
            publish_speeds.push(img.len() as f64 / publish_s / 1e6);
            last = Some(res);
        }
        let res = last.expect("published");
        println!("publish median {:.0} MB/s", median(publish_speeds));
        let key = VendorKey::generate();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let root = Root {
            vendor: "bench".into(),
            version: 1,
            expires: now + 3600,
            threshold: 1,
            keys: [(key.id(), key.public_hex())].into_iter().collect(),
            timestamp: None,
        };
        let root_text = meta::to_json(&meta::sign_root(root, &[&key]));
        std::fs::write(d.join("root.json"), &root_text).expect("root");
        spn.register_vendor("bench", &[spn::types::NewRoot { root: root_text, legacy: None }]).expect("register");
        let release = Release {
            vendor: "bench".into(),
            product: "router2".into(),
            hardware: vec!["r1".into()],
            version: "1.0".into(),
            length: res.length,
            blake3: res.blake3.clone(),
            manifest: res.manifest.clone(),
            read_key: KeyWrap::Clear(res.read_key.clone()),
            issued: now,
            expires: now + 3600,
        };
        let bundle = spn.add_release(meta::to_json(&meta::sign_release(release, &[&key]))).expect("release");
        std::fs::write(d.join("bundle.json"), bundle.to_json()).expect("bundle");
        let bin = std::env::var("IONSHARD_BIN").unwrap_or_else(|_| "target/release/ionshard".into());
        // The same image on disk for nginx, the central server ionshard replaces.
        let image = d.join("served").join("image.img");
        std::fs::create_dir_all(image.parent().expect("dir")).expect("served dir");
        std::fs::write(&image, &img).expect("image for nginx");
        let nginx = Nginx::start(&d.join("nginx"), image.parent().expect("dir"));
        if nginx.is_none() {
            println!("nginx: not found (apt-get install nginx-light, or run benches/fetch-vs-nginx.sh): no reference figures");
        }
        // Disk: beside the bench's own files; tmpfs: /dev/shm.
        let disk = d.join("out");
        std::fs::create_dir_all(&disk).expect("out dir");
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        let mut targets = vec![("disk", disk.clone())];
        if let Some(t) = &shm {
            targets.push(("tmpfs", t.path().to_path_buf()));
        }
        let mut table = Vec::new();
        for (place, dir) in &targets {
            let (mut ours, mut theirs, mut cpu, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..3 {
                // In turn: nginx + curl, then ionshard, so both see the same machine.
                if let Some(n) = &nginx {
                    let out = dir.join("curl.img");
                    let t = Instant::now();
                    let ok = Command::new("curl")
                        .args(["-sf", "-o"])
                        .arg(&out)
                        .arg(format!("http://127.0.0.1:{}/image.img", n.port))
                        .status()
                        .expect("curl")
                        .success();
                    assert!(ok, "curl from nginx failed");
                    // As the fetcher does before it renames: the file on disk.
                    std::fs::File::open(&out).and_then(|f| f.sync_all()).expect("sync");
                    theirs.push(img.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
                    let _ = std::fs::remove_file(&out);
                }
                let out = dir.join(format!("fetched-{run}.img"));
                let b = b.to_string();
                let (bin, d2, out2) = (bin.clone(), d.to_path_buf(), out.clone());
                let o = tokio::task::spawn_blocking(move || {
                    Command::new("/usr/bin/time")
                        .arg("-v")
                        .arg(&bin)
                        .args(["fetch", "--bundle"])
                        .arg(d2.join("bundle.json"))
                        .arg("--root")
                        .arg(d2.join("root.json"))
                        .args(["--hardware", "r1", "--product", "router2", "--bootstrap", &b, "--json", "--state"])
                        .arg(d2.join(format!("state-{run}")))
                        .args(std::env::var("FETCH_ARGS").unwrap_or_default().split_whitespace())
                        .arg("--out")
                        .arg(&out2)
                        .output()
                        .expect("run ionshard fetch (build it first: cargo build --release -p ionshard)")
                })
                .await
                .expect("fetch thread");
                let stderr = String::from_utf8_lossy(&o.stderr);
                assert!(o.status.success(), "fetch failed: {stderr}");
                let v: serde_json::Value =
                    serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).expect("json");
                let secs = v["seconds"].as_f64().expect("seconds");
                let field = |name: &str| -> f64 {
                    stderr
                        .lines()
                        .find_map(|l| l.trim().strip_prefix(name))
                        .and_then(|n| n.trim().parse().ok())
                        .expect("time -v output")
                };
                let kib = field("Maximum resident set size (kbytes):");
                let core_s = field("User time (seconds):") + field("System time (seconds):");
                println!(
                    "fetch to {place}, run {run}: {secs:.2} s, {:.0} MB/s, {:.2} core-s/GB in the fetcher, peak RSS {:.1} MiB{}",
                    img.len() as f64 / secs / 1e6,
                    core_s / (img.len() as f64 / 1e9),
                    kib / 1024.0,
                    theirs.last().map(|t| format!("; nginx + curl {t:.0} MB/s")).unwrap_or_default()
                );
                ours.push(img.len() as f64 / secs / 1e6);
                cpu.push(core_s / (img.len() as f64 / 1e9));
                rss.push(kib / 1024.0);
                let _ = std::fs::remove_file(&out);
                let _ = std::fs::remove_dir_all(d.join(format!("state-{run}")));
            }
            table.push((place.to_string(), median(ours), theirs, median(cpu), median(rss)));
        }
        drop(network);
        println!("fetch {mib} MiB from 14 peers (10+4), medians of 3, each run beside nginx + curl of the same file:");
        for (place, ours, theirs, cpu, rss) in table {
            let reference = if theirs.is_empty() {
                String::new()
            } else {
                let t = median(theirs);
                format!(", nginx + curl {t:.0} MB/s, ratio {:.2}x", ours / t)
            };
            println!(
                "  to {place}{}: ionshard {ours:.0} MB/s{reference}; fetcher {cpu:.2} core-s/GB, peak RSS {rss:.1} MiB",
                if place == "disk" { " (synced)" } else { "" }
            );
        }
    });
}

/// An nginx serving one directory on 127.0.0.1, stopped on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    /// `None` when nginx is not installed.
    fn start(dir: &std::path::Path, root: &std::path::Path) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())?;
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
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Nginx { child, port })
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
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}
