//! End-to-end OTA figures: a bootstrap, 14 peers (redb stores) and an SPN as
//! tasks of this process on 127.0.0.1 (the harness's network); the SPN publishes a generated image
//! with 10+4; then the release `ionshard` binary fetches it as a separate
//! process under `/usr/bin/time -v` for its peak RSS.
//!
//! `cargo build --release -p ionshard && cargo run --release -p ionshard-benches --example ota -- [MiB]`
//! (default 256 MiB; runs the fetch 3 times and prints medians).

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
        let (mut speeds, mut rss) = (Vec::new(), Vec::new());
        for run in 0..3 {
            let out = d.join(format!("fetched-{run}.img"));
            let b = b.to_string();
            let (bin, d2) = (bin.clone(), d.to_path_buf());
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
                    .arg(&out)
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
            let kib: f64 = stderr
                .lines()
                .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
                .and_then(|n| n.parse().ok())
                .expect("time -v output");
            println!(
                "fetch run {run}: {secs:.2} s, {:.0} MB/s, peak RSS {:.1} MiB",
                img.len() as f64 / secs / 1e6,
                kib / 1024.0
            );
            speeds.push(img.len() as f64 / secs / 1e6);
            rss.push(kib / 1024.0);
            let _ = std::fs::remove_file(d.join(format!("fetched-{run}.img")));
        }
        drop(network);
        println!(
            "fetch {mib} MiB from 14 peers (10+4): median {:.0} MB/s, median peak RSS {:.1} MiB",
            median(speeds),
            median(rss)
        );
    });
}
