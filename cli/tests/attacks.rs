//! Attacks on the OTA path through the `ionshard` binary, every node a real
//! process on 127.0.0.1 (attackers on other loopback addresses), each test
//! named after its attack. Each failed before the fix it names.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Defect 5: sending the installed version's bundle again downloaded it
/// again and ran the install command again.
#[test]
fn a_replayed_bundle_does_not_run_the_installer_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = network(d, 8);
    let vendor = vendor(&n, d);
    let img = d.join("v1.img");
    std::fs::write(&img, image(3 << 20, 41)).expect("image");
    let p = publish(&n, &vendor, &img, "1.0", &[]);
    let bundle = p["bundle"].as_str().expect("bundle").to_string();
    let state = d.join("device");
    let runs = d.join("installer-runs");
    let cmd = format!("echo run >> '{}'", runs.display());
    let first = json_out(&update(&n, &vendor, &state, &["--bundle", &bundle, "--install-cmd", &cmd]), "update");
    assert_eq!(first["installed"], true, "{first}");
    // The same bundle again: nothing fetched, the installer not run.
    let again = json_out(&update(&n, &vendor, &state, &["--bundle", &bundle, "--install-cmd", &cmd]), "replay");
    assert_eq!(again["already_installed"], true, "{again}");
    assert!(again.get("downloaded_bytes").is_none(), "{again}");
    assert_eq!(std::fs::read_to_string(&runs).expect("runs").lines().count(), 1, "the installer ran twice");
    // Asked for on purpose, it is installed again.
    let re = update(&n, &vendor, &state, &["--bundle", &bundle, "--install-cmd", &cmd, "--reinstall"]);
    assert_eq!(json_out(&re, "reinstall")["installed"], true);
    assert_eq!(std::fs::read_to_string(&runs).expect("runs").lines().count(), 2);
}

/// A server that answers every request with `body`: an SPN that withholds
/// the newest release.
fn fake_spn(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten().take(20) {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes()).and_then(|()| c.write_all(body.as_bytes()));
        }
    });
    format!("http://{addr}")
}

/// Defect 3 through the binary: an SPN that answers `@latest` with the
/// older release (validly signed, unexpired) is caught by the vendor's timestamp.
#[test]
fn an_spn_serving_an_older_release_as_the_newest_is_refused_by_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let n = network(d, 8);
    let vendor = vendor(&n, d);
    let (v1, v2) = (d.join("v1.img"), d.join("v2.img"));
    std::fs::write(&v1, image(2 << 20, 42)).expect("v1");
    std::fs::write(&v2, image(2 << 20, 43)).expect("v2");
    publish(&n, &vendor, &v1, "1.0", &[]);
    publish(&n, &vendor, &v2, "1.1", &[]);
    // What the withholding SPN serves: 1.0, with the vendor's current timestamp (naming 1.1).
    let (status, old) = http(&n.url, "GET", "/v1/releases/router@1.0?format=2", None, b"");
    assert_eq!(status, 200);
    let fake = fake_spn(old);
    let state = d.join("device");
    let o = update(&n, &vendor, &state, &["--release", "router@latest", "--spn", &fake]);
    assert!(!o.status.success(), "the device took the withheld 1.0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("withheld"), "{err}");
    assert!(!state.join("installed.json").exists(), "something was installed");
    // The honest SPN serves 1.1, which the device takes.
    let ok = json_out(&update(&n, &vendor, &state, &["--release", "router@latest", "--spn", &n.url]), "update");
    assert_eq!(ok["release"], "router@1.1", "{ok}");
}

/// Defect 6: kill -9 of the SPN in the middle of a publish left the shards
/// already stored pinned on the peers for ever.
#[test]
fn an_spn_killed_mid_publish_leaves_no_shards_on_the_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut n = network(d, 8);
    let vendor = vendor(&n, d);
    let img = d.join("big.img");
    std::fs::write(&img, image(96 << 20, 44)).expect("image");
    let mut publish = bin()
        .args(["publish", &s(&img), "--product", "router", "--version", "1.0", "--hardware", "r1"])
        .args(["--data-shards", "6", "--parity-shards", "2", "--spn", &n.url, "--vendor-dir", &s(&vendor), "--json"])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("publish");
    // Wait until a good part of the object is encoded and scattered.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = http(&n.url, "GET", "/v1/jobs/1", Some(&n.token), b"");
        let j: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if j["shards_placed"].as_u64().unwrap_or(0) >= 24 {
            break;
        }
        assert!(j["state"] != "done", "the publish finished before the SPN could be killed");
        assert!(Instant::now() < deadline, "the publish made no progress: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    n.procs.kill("spn");
    let _ = publish.wait();
    let stored = stored_on_peers(&n);
    assert!(stored > 0, "nothing was stored before the kill");
    // Restarted on the same state, the SPN deletes what the interrupted job had placed.
    let spn = n.procs.start(
        "spn2",
        &["spn", "--dir", &s(&d.join("spn")), "--http", "127.0.0.1:0", "--bootstrap", &n.bootstrap].map(String::from),
    );
    n.url = spn["http"].as_str().expect("http").to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut left = stored;
    while left > 0 {
        assert!(Instant::now() < deadline, "{left} bytes of the interrupted publish still on the peers");
        std::thread::sleep(Duration::from_millis(500));
        left = stored_on_peers(&n);
    }
    let (_, job) = http(&n.url, "GET", "/v1/jobs/1", Some(&n.token), b"");
    assert!(job.contains("interrupted"), "{job}");
}

/// Bytes the peers store, asked of each peer directly (the SPN may be down).
fn stored_on_peers(n: &Network) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cfg = net::Config {
            role: net::Role::Client,
            bootstrap: vec![n.bootstrap.parse().expect("addr")],
            ..net::Config::default()
        };
        let (c, _h) = net::start(cfg, net::Keypair::generate_ed25519(), None).await.expect("client");
        let mut total = 0;
        for p in &n.peers {
            let id: net::PeerId = p.parse().expect("peer id");
            let (_, bytes, _) = c.usage(id).await.expect("usage");
            total += bytes;
        }
        c.shutdown().await;
        total
    })
}

/// A bootstrap node and an SPN whose open-file limit is 1024 (no peers).
fn spn_with_fd_limit(d: &Path) -> (Procs, String, String, u32) {
    let mut procs = Procs::new(&d.join("logs"));
    let b = bootstrap(&mut procs, d);
    let spn_dir = d.join("spn");
    let mut sh = Command::new("sh");
    // Not the defaults of the shell that runs the tests (the SPN would take
    // its token from IONSHARD_SPN_TOKEN and write no token file).
    for k in harness::procs::ENV_DEFAULTS {
        sh.env_remove(k);
    }
    let mut child = sh
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ionshard"))
        .args(["spn", "--dir", &s(&spn_dir), "--http", "127.0.0.1:0", "--bootstrap", &b, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spn");
    let v = first_line(&mut child);
    let pid = child.id();
    procs.children.push(("spn".into(), child));
    let url = v["http"].as_str().expect("http").to_string();
    let token = std::fs::read_to_string(v["token_file"].as_str().expect("token file")).expect("token");
    (procs, url, token, pid)
}

/// Raise this test's own open-file limit (it holds a thousand sockets).
fn raise_fd_limit() {
    let _ = Command::new("prlimit").args(["--pid", &std::process::id().to_string(), "--nofile=8192:"]).status();
}

/// Defect 7: the API had no timeouts and no connection cap; a thousand
/// half-sent requests from other addresses locked out `/v1/health`.
#[test]
fn a_thousand_half_open_connections_do_not_lock_out_the_api() {
    raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut procs, url, _token, pid) = spn_with_fd_limit(dir.path());
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // 500 from ten addresses (50 each), 500 from 500 addresses: each sends
    // half a request, holds it, and opens another when the SPN closes it.
    let sources: Vec<std::net::Ipv4Addr> = (0..1000u32)
        .map(|i| {
            if i < 500 {
                std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 10) as u8)
            } else {
                std::net::Ipv4Addr::from(0x7f01_0000 + i)
            }
        })
        .collect();
    let mut attackers = Vec::new();
    for src in sources {
        let stop = stop.clone();
        attackers.push(rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                let Ok(sock) = tokio::net::TcpSocket::new_v4() else { break };
                if sock.bind((src, 0).into()).is_err() {
                    break;
                }
                let Ok(Ok(mut c)) =
                    tokio::time::timeout(Duration::from_secs(5), sock.connect(([127, 0, 0, 1], port).into())).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let _ = c.write_all(b"POST /v1/releases HTTP/1.1\r\nHost: spn\r\nContent-Length: 1000000\r\n").await;
                // Hold it until the SPN closes it (or the test ends).
                let mut b = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(60), c.read(&mut b)).await;
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));
    // The honest client on 127.0.0.1 is answered, again and again, while the attack goes on.
    for round in 0..5 {
        let t = Instant::now();
        let (status, body) = http(&url, "GET", "/v1/health", None, b"");
        assert_eq!(status, 200, "round {round}: health did not answer ({body})");
        assert!(t.elapsed() < Duration::from_secs(20), "round {round}: health took {:?}", t.elapsed());
        std::thread::sleep(Duration::from_secs(4));
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    eprintln!("the SPN holds {fds} file descriptors under attack (limit 1024)");
    assert!(fds < 1000, "{fds} descriptors open");
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
    }
    drop(rt);
    assert!(procs.children[1].1.try_wait().expect("wait").is_none(), "the SPN died under the attack");
    procs.kill("spn");
}

/// Defect 7: an unauthenticated `POST /v1/releases` was parsed before its
/// token was checked; now the token is checked before a byte of the body is read.
#[test]
fn an_unauthenticated_body_is_refused_before_it_is_read() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_procs, url, _token, _pid) = spn_with_fd_limit(dir.path());
    for path in ["/v1/releases", "/v1/objects?tenant=acme&product=router", "/v1/vendors", "/v1/tokens"] {
        let mut c = std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        // Promises 100 MB, sends none of it.
        write!(c, "POST {path} HTTP/1.1\r\nHost: spn\r\nContent-Length: 100000000\r\n\r\n").expect("send");
        let t = Instant::now();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).expect("an answer without the body");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
        assert!(t.elapsed() < Duration::from_secs(5), "{path}: answered after {:?}", t.elapsed());
    }
}

/// Peak RSS of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// Defect 9: eight strangers pushing 60 MiB puts made a peer read each body
/// into memory before refusing it (88 MiB to 509 MB peak RSS); whole-shard
/// gets buffered too. The peer must stay under 128 MiB.
#[test]
fn strangers_pushing_big_puts_and_gets_cannot_exhaust_a_peers_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut procs = Procs::new(&d.join("logs"));
    let b = bootstrap(&mut procs, d);
    let spn_key = net::Keypair::generate_ed25519();
    let spn_id = spn_key.public().to_peer_id();
    let peer_id: net::PeerId = peer(&mut procs, "peer", d, &b, &spn_id.to_string()).parse().expect("peer id");
    let pid = procs.pid("peer");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let baseline = peak_rss(pid);
    let shard = image(60 << 20, 45);
    let cid = chunker::Cid::of_raw(&shard);
    let boot_addr: net::Multiaddr = b.parse().expect("addr");
    let join = |key: net::Keypair| {
        let cfg = net::Config { role: net::Role::Client, bootstrap: vec![boot_addr.clone()], ..net::Config::default() };
        async move { net::start(cfg, key, None).await.expect("client").0 }
    };
    rt.block_on(async {
        // The trusted SPN stores one 60 MiB shard for the strangers to get.
        let spn = join(spn_key).await;
        spn.pin_shard(peer_id, cid, shard.clone()).await.expect("trusted put");
        eprintln!("peer peak RSS after the trusted 60 MiB put: {:.1} MiB", peak_rss(pid) as f64 / 1048576.0);
        let mut strangers = Vec::new();
        for i in 0..8u64 {
            let c = join(net::Keypair::generate_ed25519()).await;
            let shard = shard.clone();
            strangers.push(tokio::spawn(async move {
                let bytes = image(60 << 20, 100 + i);
                let fake = chunker::Cid::of_raw(&bytes);
                for _ in 0..3 {
                    // The put protocol: refused from its head.
                    let e = c.put_shard(peer_id, fake, bytes.clone(), None).await.expect_err("a stranger's put");
                    assert!(e.to_string().contains("not a trusted SPN"), "{e}");
                    // The request-response protocol with the whole body in one frame.
                    // (Its frame is over the peer's request limit: the stream is cut, nothing read.)
                    let old = net::wire::Request::Put { cid: fake, expiry: None, pinned: false, bytes: bytes.clone() };
                    let r = c.request(peer_id, old).await;
                    assert!(r.is_err(), "a 60 MiB request frame was read: {r:?}");
                    // A whole-shard get, streamed.
                    let got = c.get_shard(peer_id, cid).await.expect("a stranger's get");
                    assert!(got == shard, "the shard came back different");
                    // And on the old protocol: too big to hold for a stranger.
                    match c.request(peer_id, net::wire::Request::Get { cid }).await {
                        Ok(net::wire::Response::Error { .. }) | Err(_) => {}
                        Ok(other) => {
                            panic!("a 60 MiB answer held for a stranger: {:?}", std::mem::discriminant(&other))
                        }
                    }
                }
            }));
        }
        for s in strangers {
            s.await.expect("stranger");
        }
    });
    let peak = peak_rss(pid);
    eprintln!(
        "peer peak RSS {:.1} MiB (at start {:.1} MiB) after 8 strangers x 3 rounds of 60 MiB puts and gets",
        peak as f64 / (1 << 20) as f64,
        baseline as f64 / (1 << 20) as f64
    );
    assert!(peak < 128 << 20, "peer peak RSS {} MiB", peak >> 20);
}

/// Defect 10: all keys in one directory, `publish` signing with the first
/// ones on its own; `vendor init` defaulting to one key with threshold 1.
#[test]
fn a_threshold_met_by_separate_key_holders_publishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A 1 of 1 vendor is warned about.
    let solo = bin()
        .args(["vendor", "init", "--name", "solo", "--keys", "1", "--threshold", "1", "--dir", &s(&d.join("solo"))])
        .output()
        .expect("init");
    assert!(String::from_utf8_lossy(&solo.stderr).contains("warning"), "no warning for 1 of 1");
    let n = network(d, 8);
    let vendor = vendor(&n, d);
    let shown =
        json_out(&bin().args(["vendor", "show", "--dir", &s(&vendor), "--json"]).output().expect("show"), "show");
    assert_eq!((shown["threshold"].as_u64(), shown["keys"].as_array().map(Vec::len)), (Some(2), Some(3)), "{shown}");
    // Two of the three keys go to other people.
    let ids: Vec<String> =
        shown["keys"].as_array().expect("keys").iter().map(|k| k.as_str().expect("id").into()).collect();
    let mut held = Vec::new();
    for id in &ids[1..] {
        let out = d.join(format!("holder-{id}.key"));
        let o = bin().args(["vendor", "key", "export", id, "--out", &s(&out), "--dir", &s(&vendor)]).output();
        assert!(o.expect("export").status.success());
        held.push(out);
    }
    let img = d.join("v1.img");
    std::fs::write(&img, image(2 << 20, 46)).expect("image");
    let p = publish(&n, &vendor, &img, "1.0", &[]);
    assert_eq!(p["signatures_missing"], 1, "{p}");
    let pending = p["pending"].as_str().expect("pending").to_string();
    let (status, _) = http(&n.url, "GET", "/v1/releases/router@1.0?format=2", None, b"");
    assert_eq!(status, 404, "a release with one signature of two is served");
    // The second holder signs it, somewhere else, with only its key.
    let o = bin().args(["vendor", "sign", &pending, "--key", &s(&held[0]), "--dir", &s(&d.join("nowhere"))]).output();
    assert!(o.expect("sign").status.success());
    let o = bin()
        .args(["vendor", "submit", &pending, "--spn", &n.url, "--dir", &s(&vendor), "--json"])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .output()
        .expect("submit");
    json_out(&o, "submit");
    let ok =
        json_out(&update(&n, &vendor, &d.join("device"), &["--release", "router@latest", "--spn", &n.url]), "update");
    assert_eq!(ok["release"], "router@1.0", "{ok}");
}

/// A product name is a file name (the product key of a confidential release
/// is `VENDOR/products/PRODUCT.key`): `--product ../../x` must be refused
/// before anything is written or sent, not after a key was created outside
/// the vendor directory.
#[test]
fn a_product_name_with_a_path_cannot_write_a_key_outside_the_vendor_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("net");
    std::fs::create_dir_all(&d).expect("dir");
    let n = network(&d, 0);
    let vendor = vendor(&n, &d);
    let img = d.join("fw.img");
    std::fs::write(&img, image(100_000, 3)).expect("image");
    let o = bin()
        .args(["publish", &s(&img), "--product", "../../../escape", "--version", "1.0", "--hardware", "r1"])
        .args(["--confidential", "--spn", &n.url, "--vendor-dir", &s(&vendor)])
        .env("IONSHARD_SPN_TOKEN", &n.token)
        .output()
        .expect("publish");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a product named with a path was published");
    assert!(err.contains("product"), "{err}");
    let escaped = |p: &Path| p.join("escape.key").exists();
    assert!(
        !escaped(dir.path()) && !escaped(&d) && !escaped(&vendor) && !escaped(&vendor.join("products")),
        "a key file was written for the bad name"
    );
    assert!(!vendor.join("products").exists(), "the products directory was made for a refused name");
}
