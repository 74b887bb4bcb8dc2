//! The whole path as users see it, each side its own process, old build
//! beside new: a bootstrap, 16 peers (10+6 needs 16) and an SPN as `ionshard` processes on
//! loopback; a vendor publishes (upload to the SPN, then encode, scatter and
//! receipts) and a device fetches with `ionshard fetch`, beside nginx + curl
//! of the same image, to this disk (synced) and to tmpfs.
//!
//! ```text
//! cargo build --release -p ionshard
//! cargo run --release -p ionshard-benches --example speed -- [--mib 256] [--base OLD_BIN] [--rounds 3]
//!     [--coding 10+4] [--coding 10+6]
//! ```
//!
//! With `--base`, every round runs the old binary's network and then the new
//! one's, in turn, so both see the same machine; the ratios are of medians.
//! Printed per build: publish MB/s with and without the upload, fetch MB/s
//! and its ratio to nginx + curl, and CPU per GB of image for each side
//! (the fetcher from `time -v`; the peers and the SPN from /proc), the
//! fetcher's peak RSS. `benches/speed.sh` installs nginx and builds the
//! previous release first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ionshard_benches::{Network, Nginx, bench_vendor, image, ionshard_bin, median, time_v};

/// Two series of figures under a name (a coding).
type Pair = (String, Vec<f64>, Vec<f64>);

/// Per place (disk, tmpfs): ours MB/s, nginx MB/s, fetcher core-s/GB, peers core-s/GB, RSS MiB.
type FetchRow = (String, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// Figures of one build, gathered over the rounds.
#[derive(Default)]
struct Figures {
    /// Per coding: publish MB/s with the upload, and without it.
    publish: Vec<Pair>,
    /// Per coding: SPN and peers' CPU s per GB of image during publishes.
    publish_cpu: Vec<Pair>,
    fetch: Vec<FetchRow>,
}

/// Records when the upload ended (the SPN's job began).
#[derive(Default)]
struct Phases(Mutex<Option<Instant>>);

impl client::Progress for Phases {
    fn start(&self, phase: &str, _: u64) {
        if phase == "scatter" {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

struct Args {
    mib: usize,
    base: Option<PathBuf>,
    rounds: usize,
    codings: Vec<(u8, u8)>,
}

fn args() -> Args {
    let mut a = Args { mib: 256, base: None, rounds: 3, codings: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--mib" => a.mib = value().parse().expect("--mib N"),
            "--base" => a.base = Some(PathBuf::from(value())),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--coding" => {
                let v = value();
                let (k, m) = v.split_once('+').expect("--coding K+M");
                a.codings.push((k.parse().expect("K"), m.parse().expect("M")));
            }
            other => panic!("unknown flag {other} (see the file's doc)"),
        }
    }
    if a.codings.is_empty() {
        a.codings = vec![(10, 4), (10, 6)];
    }
    a
}

fn main() {
    let a = args();
    let new = ionshard_bin();
    assert!(new.exists(), "{} is missing: cargo build --release -p ionshard", new.display());
    let mut builds: Vec<(String, PathBuf, Figures)> = Vec::new();
    if let Some(b) = &a.base {
        builds.push(("base".into(), b.clone(), Figures::default()));
    }
    builds.push(("new".into(), new, Figures::default()));
    let tmp = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    for round in 0..a.rounds {
        for (name, bin, figures) in &mut builds {
            println!("round {round}, {name} ({})", bin.display());
            let dir = tmp.path().join(format!("{name}-{round}"));
            run(bin, &dir, shm.as_ref().map(|t| t.path()), &a, round as u8, figures);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    report(&builds, a.mib);
}

/// One round of one build: a network, publishes, fetches.
fn run(bin: &Path, dir: &Path, shm: Option<&Path>, a: &Args, round: u8, f: &mut Figures) {
    let net = Network::start(bin, &dir.join("net"), 16);
    let spn = client::Spn::new(&net.url, Some(net.token.clone())).expect("SPN client");
    let (key, root) = bench_vendor(&spn, dir, 1);
    let bytes = (a.mib << 20) as f64;
    let mut last = None;
    for (i, (k, m)) in a.codings.iter().enumerate() {
        let coding = format!("{k}+{m}");
        let img = image(a.mib, round.wrapping_mul(16).wrapping_add(i as u8));
        let path = dir.join(format!("image-{coding}.img"));
        std::fs::write(&path, &img).expect("image");
        let o = ota::PublishOptions {
            image: path.clone(),
            product: format!("router{i}"),
            version: "1.0.0".into(),
            hardware: vec!["r1".into()],
            data_shards: *k,
            parity_shards: *m,
            expires_days: 1,
            product_key: None,
            patience: std::time::Duration::from_secs(600),
            patches: true,
        };
        let phases = Arc::new(Phases::default());
        let (p0, s0) = net.cpu();
        let t = Instant::now();
        let prepared = ota::publish(&spn, &root, &[&key], &o, phases.clone()).expect("publish");
        let total = t.elapsed().as_secs_f64();
        let (p1, s1) = net.cpu();
        let uploaded = phases.0.lock().unwrap_or_else(|p| p.into_inner()).map_or(0.0, |u| (u - t).as_secs_f64());
        println!(
            "  publish {} MiB {coding}: {total:.2} s, {:.0} MB/s; without the upload ({uploaded:.2} s) {:.0} MB/s; \
             SPN {:.2}, peers {:.2} core-s/GB",
            a.mib,
            bytes / total / 1e6,
            bytes / (total - uploaded) / 1e6,
            (s1 - s0) / (bytes / 1e9),
            (p1 - p0) / (bytes / 1e9),
        );
        push3(&mut f.publish, &coding, bytes / total / 1e6, bytes / (total - uploaded) / 1e6);
        push3(&mut f.publish_cpu, &coding, (s1 - s0) / (bytes / 1e9), (p1 - p0) / (bytes / 1e9));
        ota::submit(&spn, &prepared.signed).expect("submit");
        last = Some((prepared, img, path));
    }
    let (prepared, img, path) = last.expect("a publish");
    let bundle = ota::served_bundle(&spn, &prepared.signed.signed).expect("bundle");
    std::fs::write(dir.join("bundle.json"), bundle).expect("bundle file");
    let product = prepared.signed.signed.product.clone();
    // nginx serves the same image from this disk.
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("served dir");
    std::fs::rename(&path, served.join("image.img")).expect("image for nginx");
    let nginx = Nginx::start(&dir.join("nginx"), &served);
    if nginx.is_none() && round == 0 {
        println!("  nginx: not found (apt-get install nginx-light, or run benches/speed.sh): no reference figures");
    }
    let out_disk = dir.join("out");
    std::fs::create_dir_all(&out_disk).expect("out dir");
    let mut places = vec![("disk", out_disk)];
    if let Some(s) = shm {
        places.push(("tmpfs", s.to_path_buf()));
    }
    for (place, out) in places {
        let reference = nginx.as_ref().map(|n| n.download("image.img", &out.join("curl.img"), img.len() as u64));
        let (p0, _) = net.cpu();
        let (secs, cpu, rss) = fetch(bin, dir, &net.boot, &product, &out.join("fetched.img"));
        let (p1, _) = net.cpu();
        let gb = bytes / 1e9;
        println!(
            "  fetch to {place}: {secs:.2} s, {:.0} MB/s{}; fetcher {:.2}, peers {:.2} core-s/GB; peak RSS {rss:.1} MiB",
            bytes / secs / 1e6,
            reference.map(|r| format!(" (nginx + curl {r:.0} MB/s)")).unwrap_or_default(),
            cpu / gb,
            (p1 - p0) / gb
        );
        let row = match f.fetch.iter_mut().position(|r| r.0 == place) {
            Some(i) => &mut f.fetch[i],
            None => {
                f.fetch.push((place.to_string(), vec![], vec![], vec![], vec![], vec![]));
                f.fetch.last_mut().expect("row")
            }
        };
        row.1.push(bytes / secs / 1e6);
        row.2.extend(reference);
        row.3.push(cpu / gb);
        row.4.push((p1 - p0) / gb);
        row.5.push(rss);
    }
}

fn push3(rows: &mut Vec<Pair>, key: &str, a: f64, b: f64) {
    match rows.iter_mut().find(|r| r.0 == key) {
        Some(r) => {
            r.1.push(a);
            r.2.push(b);
        }
        None => rows.push((key.to_string(), vec![a], vec![b])),
    }
}

/// `bin fetch` of the bundle in `dir` to `out` under `time -v`: (seconds as
/// the fetcher reports them, its CPU seconds, its peak RSS in MiB).
fn fetch(bin: &Path, dir: &Path, boot: &str, product: &str, out: &Path) -> (f64, f64, f64) {
    let state = dir.join("device");
    let _ = std::fs::remove_dir_all(&state);
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(["fetch", "--bundle"])
        .arg(dir.join("bundle.json"))
        .arg("--root")
        .arg(dir.join("root.json"))
        .args(["--hardware", "r1", "--product", product, "--bootstrap", boot, "--json", "--state"])
        .arg(&state)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run ionshard fetch under /usr/bin/time");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fetch failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).expect("fetch JSON");
    let _ = std::fs::remove_file(out);
    let (cpu, rss) = time_v(&stderr);
    (report["seconds"].as_f64().expect("seconds"), cpu, rss)
}

fn report(builds: &[(String, PathBuf, Figures)], mib: usize) {
    println!("\n{mib} MiB image, 16 peers, medians of the rounds (each round: both builds in turn)");
    println!("{:<6} {:<22} {:>10} {:>16} {:>10} {:>10}", "build", "what", "MB/s", "beside", "fetcher", "peers/SPN");
    let base = builds.iter().find(|b| b.0 == "base");
    for (name, _, f) in builds {
        for ((coding, with, without), (_, spn_cpu, peer_cpu)) in f.publish.iter().zip(&f.publish_cpu) {
            let ratio = |mine: f64, pick: fn(&Pair) -> &Vec<f64>| {
                base.filter(|b| b.0 != *name)
                    .and_then(|b| b.2.publish.iter().find(|r| r.0 == *coding))
                    .map(|r| format!("{:.2}x base", mine / median(pick(r).clone())))
                    .unwrap_or_default()
            };
            let (w, wo) = (median(with.clone()), median(without.clone()));
            println!(
                "{name:<6} {:<22} {w:>10.0} {:>16} {:>10} {:>10}",
                format!("publish {coding}"),
                ratio(w, |r| &r.1),
                "",
                ""
            );
            println!(
                "{name:<6} {:<22} {wo:>10.0} {:>16} {:>10} {:>10}",
                format!("  without upload"),
                ratio(wo, |r| &r.2),
                "",
                format!("{:.2}/{:.2}", median(peer_cpu.clone()), median(spn_cpu.clone()))
            );
        }
        for (place, ours, theirs, cpu, peers, rss) in &f.fetch {
            let o = median(ours.clone());
            let nginx =
                if theirs.is_empty() { String::new() } else { format!("{:.2}x nginx", o / median(theirs.clone())) };
            let vs_base = base
                .filter(|b| b.0 != *name)
                .and_then(|b| b.2.fetch.iter().find(|r| r.0 == *place))
                .map(|r| format!(" {:.2}x base", o / median(r.1.clone())))
                .unwrap_or_default();
            println!(
                "{name:<6} {:<22} {o:>10.0} {:>16} {:>10.2} {:>10.2}   RSS {:.1} MiB, nginx + curl {:.0} MB/s",
                format!("fetch to {place}"),
                format!("{nginx}{vs_base}"),
                median(cpu.clone()),
                median(peers.clone()),
                median(rss.clone()),
                median(theirs.clone()),
            );
        }
    }
    println!("CPU columns: core-seconds per GB of image (fetcher; peers summed / the SPN).");
}
