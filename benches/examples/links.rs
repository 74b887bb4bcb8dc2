//! Publish and fetch over shaped links, as homes see them: every node in a
//! network namespace of its own, joined by `benches/linkemu.py` (a switch in
//! user space that gives each port a rate and a one-way delay: this kernel
//! has no netem). Needs root, `ip` and python3.
//!
//! ```text
//! cargo build --release -p ionshard
//! cargo run --release -p ionshard-benches --example links -- [--mib 64] [--rounds 3] [--backup-mib 48] \
//!     [--slow-peers 3] [--fetch "[@OTHER-BUILD] FETCHER FLAGS"]...
//! ```
//!
//! The network: a bootstrap; an SPN with a 100 Mbit/s link both ways; 14
//! peers at 100 Mbit/s, three of them with a 20 Mbit/s uplink, one-way
//! delays from 5 to 20 ms (round trips 30–80 ms with the device); a device
//! at 100 Mbit/s, 20 ms; a backup host with a 20 Mbit/s uplink, 15 ms.
//! The vendor (this process) sits on a fast port. Printed: the device's
//! fetch against its own link's rate, the scatter (the SPN sending shards)
//! against the SPN's uplink, with the CPU of each side, and a backup of
//! `--backup-mib` MiB (48; 0: none) against the host's uplink.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ionshard_benches::{bench_vendor, cpu_seconds, image, ionshard_bin, median, time_v};

const NET: &str = "198.51.100";

/// The backup host's uplink.
const HOST_UP_MBIT: f64 = 20.0;

/// One node's link.
struct Port {
    /// What it is (the counts at the end name the SPN's and device's).
    name: &'static str,
    ns: Option<String>,
    host: u8,
    up_mbit: f64,
    down_mbit: f64,
    delay_ms: f64,
}

/// The namespaces and the link emulator; removed on drop.
struct Lab {
    prefix: String,
    names: Vec<String>,
    emulator: Option<Child>,
    nodes: Vec<Child>,
    /// The emulator's log, and how many counts it was asked for.
    log: PathBuf,
    asked: std::cell::Cell<u32>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn start(ports: &[Port], dir: &Path) -> Result<Lab, String> {
        let prefix = format!("lk{:x}", std::process::id() & 0xffff);
        let log = dir.join("linkemu.log");
        let mut lab =
            Lab { prefix, names: Vec::new(), emulator: None, nodes: Vec::new(), log, asked: Default::default() };
        let mut spec = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let ns = p.ns.as_ref().map(|n| lab.ns(n));
            if let Some(ns) = &ns {
                sh(&["ip", "netns", "add", ns])?;
                lab.names.push(ns.clone());
                sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
                // LINKS_SYSCTL="net.ipv4.tcp_slow_start_after_idle=0;…": kernel
                // settings for every node's namespace (to try what a link's TCP
                // does), separated by ';' (a value may hold spaces).
                for kv in std::env::var("LINKS_SYSCTL")
                    .unwrap_or_default()
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    sh(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", kv])?;
                }
            }
            spec.push(serde_json::json!({
                "tap": format!("{}t{i}", lab.prefix),
                "netns": ns,
                "addr": format!("{NET}.{}/24", p.host),
                "up_mbit": p.up_mbit, "down_mbit": p.down_mbit, "delay_ms": p.delay_ms,
            }));
        }
        let spec_path = dir.join("links.json");
        let spec = serde_json::json!({ "queue_ms": 100, "ports": spec });
        std::fs::write(&spec_path, spec.to_string()).map_err(|e| e.to_string())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("linkemu.py");
        let mut emu = Command::new("python3")
            .arg(script)
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("linkemu.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let mut line = String::new();
        let out = emu.stdout.take().ok_or("no stdout")?;
        lab.emulator = Some(emu);
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("the link emulator did not start (see {})", dir.join("linkemu.log").display()));
        }
        Ok(lab)
    }

    /// The switch's counts now, per port in the layout's order (SIGUSR1;
    /// it answers within its poll's half second): none if it did not.
    fn counts(&self) -> Option<Vec<serde_json::Value>> {
        let pid = self.emulator.as_ref()?.id();
        sh(&["kill", "-USR1", &pid.to_string()]).ok()?;
        self.asked.set(self.asked.get() + 1);
        let n = self.asked.get();
        for _ in 0..50 {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found = log
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .rfind(|v| v["counts"].as_u64().is_some_and(|c| c >= u64::from(n)));
            if let Some(v) = found {
                return v["ports"].as_array().cloned();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Start `bin ARGS` in namespace `ns` (its pid, its first line).
    fn node(&mut self, ns: &str, bin: &Path, name: &str, logs: &Path, args: &[String]) -> (u32, serde_json::Value) {
        let mut full = vec!["netns".to_string(), "exec".into(), self.ns(ns), bin.display().to_string()];
        full.extend(args.iter().cloned());
        let (child, info) = harness::procs::start(Path::new("ip"), name, logs, &full, false).expect("a node starts");
        let pid = child.id();
        self.nodes.push(child);
        (pid, info)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut e) = self.emulator.take() {
            // Closing its stdin stops it (it prints its counts); killed if it lingers.
            drop(e.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(3);
            while e.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = e.kill();
            let _ = e.wait();
        }
        for n in &self.names {
            let _ = sh(&["ip", "netns", "del", n]);
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

fn ports(peers: usize, slow: usize) -> Vec<Port> {
    let mut v = vec![
        Port { name: "vendor", ns: None, host: 254, up_mbit: 1000.0, down_mbit: 1000.0, delay_ms: 0.5 },
        Port { name: "boot", ns: Some("b".into()), host: 2, up_mbit: 1000.0, down_mbit: 1000.0, delay_ms: 5.0 },
        Port { name: "spn", ns: Some("s".into()), host: 3, up_mbit: 100.0, down_mbit: 100.0, delay_ms: 10.0 },
        Port { name: "device", ns: Some("d".into()), host: 4, up_mbit: 100.0, down_mbit: 100.0, delay_ms: 20.0 },
        // A business's backup host: a 20 Mbit/s uplink, as offices' often are.
        Port { name: "host", ns: Some("h".into()), host: 5, up_mbit: HOST_UP_MBIT, down_mbit: 100.0, delay_ms: 15.0 },
    ];
    for i in 0..peers {
        // `slow` peers (three) have a slow uplink; delays spread over 5..20 ms.
        let up = if i + slow >= peers { 20.0 } else { 100.0 };
        let delay = 5.0 + 15.0 * i as f64 / (peers.max(2) - 1) as f64;
        v.push(Port {
            name: "peer",
            ns: Some(format!("p{i}")),
            host: 10 + i as u8,
            up_mbit: up,
            down_mbit: 100.0,
            delay_ms: delay,
        });
    }
    v
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

fn main() {
    let mut mib = 64usize;
    let mut rounds = 3usize;
    // MiB a backup host sends through the SPN after the rounds (0: none).
    let mut backup_mib = 48usize;
    // Fetcher flags to compare (each is a fetch per round); none: the defaults.
    let mut variants: Vec<String> = Vec::new();
    // Peers with a 20 Mbit/s uplink.
    let mut slow = 3usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--mib" => mib = it.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--backup-mib" => backup_mib = it.next().and_then(|v| v.parse().ok()).expect("--backup-mib N"),
            "--slow-peers" => slow = it.next().and_then(|v| v.parse().ok()).expect("--slow-peers N"),
            "--fetch" => variants.push(it.next().expect("--fetch \"FLAGS\"")),
            other => panic!("unknown flag {other}"),
        }
    }
    if variants.is_empty() {
        variants.push(String::new());
    }
    if !ionshard_benches::is_root() {
        println!("links: needs root (network namespaces); skipped");
        return;
    }
    let bin = std::fs::canonicalize(ionshard_bin()).expect("build it first: cargo build --release -p ionshard");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let peers = 14;
    let layout = ports(peers, slow);
    let mut lab = Lab::start(&layout, dir).unwrap_or_else(|e| panic!("cannot build the network: {e}"));
    let ip = |host: u8| std::net::Ipv4Addr::new(198, 51, 100, host);
    let (_, boot) = lab.node("b", &bin, "bootstrap", &logs, &harness::procs::bootstrap_args(ip(2), &dir.join("boot")));
    let boot = boot["listen"][0].as_str().expect("bootstrap address").to_string();
    let spn_dir = dir.join("spn");
    std::fs::create_dir_all(&spn_dir).expect("spn dir");
    let (key, _) = net::load_or_create_key(&spn_dir.join("identity.key")).expect("SPN key");
    let spn_id = key.public().to_peer_id().to_string();
    let mut peer_pids = Vec::new();
    for i in 0..peers {
        let args = harness::procs::peer_args(ip(10 + i as u8), &boot, &spn_id, "64GiB", &dir.join(format!("p{i}")));
        peer_pids.push(lab.node(&format!("p{i}"), &bin, &format!("peer{i}"), &logs, &args).0);
    }
    // All peers share one /24 here: the household and network rule is relaxed.
    let mut spn_args = harness::procs::spn_args(ip(3), &boot, &spn_dir);
    spn_args.push("--relax-domains".into());
    let (spn_pid, info) = lab.node("s", &bin, "spn", &logs, &spn_args);
    let url = info["http"].as_str().expect("SPN address").to_string();
    let token = std::fs::read_to_string(info["token_file"].as_str().expect("token file")).expect("token");
    let spn = client::Spn::new(&url, Some(token.clone())).expect("SPN client");
    harness::procs::wait_peers(&spn, peers as u64, Duration::from_secs(120)).expect("peers join");
    let (vkey, root) = bench_vendor(&spn, dir, 2);
    let (spn_up, device_link) = (100e6 / 8.0, 100e6 / 8.0);
    let mut scatter = Vec::new();
    let mut spn_cpu = Vec::new();
    // Per variant: share of the link (whole fetch, after the setup), device and peers' CPU.
    let mut fetches: Vec<[Vec<f64>; 4]> = variants.iter().map(|_| Default::default()).collect();
    println!("{mib} MiB images, 10+4 over {peers} peers; SPN and device links 100 Mbit/s (12.5 MB/s)");
    for round in 0..rounds {
        let img = image(mib, 100 + round as u8);
        let path = dir.join(format!("image{round}.img"));
        std::fs::write(&path, &img).expect("image");
        let o = ota::PublishOptions {
            image: path.clone(),
            product: format!("router{round}"),
            version: "1.0.0".into(),
            hardware: vec!["r1".into()],
            data_shards: 10,
            parity_shards: 4,
            expires_days: 1,
            product_key: None,
            patience: Duration::from_secs(1800),
            patches: true,
        };
        let phases = Arc::new(Phases::default());
        let c0 = (cpu_seconds(spn_pid), peer_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>());
        let t = Instant::now();
        let prepared = ota::publish(&spn, &root, &[&vkey], &o, phases.clone()).expect("publish");
        let done = Instant::now();
        let c1 = (cpu_seconds(spn_pid), peer_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>());
        let began = phases.0.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(t);
        let secs = (done - began).as_secs_f64();
        let shard_bytes = prepared.result.new_shard_bytes as f64;
        let gb = img.len() as f64 / 1e9;
        println!(
            "  publish {round}: upload {:.2} s, scatter {secs:.2} s: {:.2} MB/s of shards = {:.0}% of the SPN's uplink; \
             SPN {:.2}, peers {:.2} core-s/GB",
            (began - t).as_secs_f64(),
            shard_bytes / secs / 1e6,
            100.0 * shard_bytes / secs / spn_up,
            (c1.0 - c0.0) / gb,
            (c1.1 - c0.1) / gb,
        );
        scatter.push(100.0 * shard_bytes / secs / spn_up);
        spn_cpu.push((c1.0 - c0.0) / gb);
        ota::submit(&spn, &prepared.signed).expect("submit");
        let bundle = ota::served_bundle(&spn, &prepared.signed.signed).expect("bundle");
        let bundle_path = dir.join(format!("bundle{round}.json"));
        std::fs::write(&bundle_path, bundle).expect("bundle");
        // The peers' CPU when idle (heartbeats, the DHT), taken off what a
        // fetch costs them; measured once the publish's aftermath (provider
        // records, syncs) has settled: a second at a time, at most 20.
        let peers_cpu_now = || peer_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
        let mut idle = f64::MAX;
        for _ in 0..20 {
            let i0 = peers_cpu_now();
            std::thread::sleep(Duration::from_secs(1));
            let rate = peers_cpu_now() - i0;
            let settled = rate >= idle * 0.8;
            idle = idle.min(rate);
            if settled {
                break;
            }
        }
        println!("  peers idle: {idle:.3} cores together");
        for (v, flags) in variants.iter().enumerate() {
            let p0: f64 = peer_pids.iter().map(|p| cpu_seconds(*p)).sum();
            let before = lab.counts();
            let (report, cpu) = device_fetch(&lab, &bin, dir, &boot, &bundle_path, &o.product, flags);
            let p1: f64 = peer_pids.iter().map(|p| cpu_seconds(*p)).sum();
            let frames = drops(&layout, before, lab.counts());
            let secs = report["seconds"].as_f64().expect("seconds");
            let setup = report["setup_seconds"].as_f64().unwrap_or(0.0);
            let down = report["downloaded_bytes"].as_f64().expect("downloaded");
            let peers_cpu = (p1 - p0 - idle * secs).max(0.0) / gb;
            println!(
                "  fetch {round}{}: {secs:.2} s ({setup:.2} s finding and connecting), {:.2} MB/s received = {:.0}% of \
                 the device's link, {:.0}% after the setup ({:.2} MB/s of image; up to {} windows in flight); device {:.2}, \
                 peers {:.2} core-s/GB; {frames}",
                if flags.is_empty() { String::new() } else { format!(" [{flags}]") },
                down / secs / 1e6,
                100.0 * down / secs / device_link,
                100.0 * down / (secs - setup) / device_link,
                img.len() as f64 / secs / 1e6,
                report["most_ahead"].as_u64().unwrap_or(0),
                cpu / gb,
                peers_cpu
            );
            let f = &mut fetches[v];
            f[0].push(100.0 * down / secs / device_link);
            f[1].push(100.0 * down / (secs - setup) / device_link);
            f[2].push(cpu / gb);
            f[3].push(peers_cpu);
        }
        let _ = std::fs::remove_file(&path);
    }
    let backup_line = (backup_mib > 0).then(|| host_backup(&lab, &bin, dir, (&url, token.trim(), &boot), backup_mib));
    let before = lab.counts();
    let reference = parallel_http(&lab, dir, mib, 10);
    println!("  reference (10 HTTP downloads): {}", drops(&layout, before, lab.counts()));
    println!("\nmedians of {rounds}:");
    println!("  | what | share of its link | CPU core-s/GB |");
    println!("  |---|---|---|");
    println!("  | scatter (SPN uplink 100 Mbit/s) | {:.0}% | SPN {:.2} |", median(scatter), median(spn_cpu));
    println!(
        "  | reference: {mib} MiB as 10 plain HTTP downloads at once, one from each of 10 peers (curl from python's http.server) | {:.0}% | |",
        100.0 * reference / device_link
    );
    for (flags, f) in variants.iter().zip(fetches) {
        let [share, transfer, dev, peers] = f;
        println!(
            "  | device fetch{} (100 Mbit/s link) | {:.0}% (after finding and connecting: {:.0}%) | device {:.2}, peers {:.2} |",
            if flags.is_empty() { String::new() } else { format!(" [{flags}]") },
            median(share),
            median(transfer),
            median(dev),
            median(peers)
        );
    }
    if let Some(line) = backup_line {
        println!("{line}");
    }
    drop(lab);
    // The switch's own account: frames, bytes and drops per port.
    if let Ok(log) = std::fs::read_to_string(dir.join("linkemu.log")) {
        let names: Vec<&str> = layout.iter().map(|p| p.name).collect();
        for (i, line) in log.lines().filter(|l| l.starts_with("{\"port\"")).enumerate() {
            if matches!(names.get(i), Some(&("spn" | "device"))) {
                println!("  link of the {}: {line}", names[i]);
            }
        }
    }
}

/// What a phase cost the links, from the switch's counts before and after
/// it: frames delivered to the device and dropped at its downlink's queue,
/// and dropped at the peers' uplinks.
fn drops(layout: &[Port], before: Option<Vec<serde_json::Value>>, after: Option<Vec<serde_json::Value>>) -> String {
    let (Some(a), Some(b)) = (before, after) else { return "no counts from the switch".to_string() };
    let diff = |i: usize, key: &str| b[i][key].as_u64().unwrap_or(0).saturating_sub(a[i][key].as_u64().unwrap_or(0));
    let Some(dev) = layout.iter().position(|p| p.name == "device") else { return String::new() };
    let (out, down) = (diff(dev, "out"), diff(dev, "dropped_down"));
    let peers_up: u64 = (0..layout.len()).filter(|&i| layout[i].name == "peer").map(|i| diff(i, "dropped_up")).sum();
    format!(
        "device port: {out} frames delivered, {down} dropped at its queue ({:.1}%), peers' uplinks dropped {peers_up}",
        100.0 * down as f64 / (out + down).max(1) as f64
    )
}

/// A business's host (a [`HOST_UP_MBIT`] uplink) backs up `mib` MiB in
/// eight files through the SPN at 7+7 (the backups' 10+10 needs 20 peers;
/// this network has 14; parity is as large a share) (`ionshard backup run`
/// in its own namespace): a table row with the share of its uplink the shards it sent
/// took, and the data's rate. Sending parity too (as before the SPN made
/// it) would need twice the bytes for the same data.
fn host_backup(lab: &Lab, bin: &Path, dir: &Path, (url, token, boot): (&str, &str, &str), mib: usize) -> String {
    let src = dir.join("backup-src");
    std::fs::create_dir_all(&src).expect("backup source");
    for i in 0..8u8 {
        std::fs::write(src.join(format!("f{i}.bin")), image(mib.div_ceil(8), 200 + i)).expect("backup file");
    }
    let home = dir.join("backup-home");
    let run = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.ns("h")])
            .arg(bin)
            .env("IONSHARD_HOME", &home)
            .args(["backup", "--repo", "bench", "--spn", url, "--token", token, "--bootstrap", boot])
            .args(args)
            .output()
            .expect("ip netns exec … ionshard backup");
        assert!(o.status.success(), "backup {}: {}", args[0], String::from_utf8_lossy(&o.stderr));
        serde_json::from_str::<serde_json::Value>(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or(""))
            .expect("JSON")
    };
    run(&["init", "--json"]);
    let t = Instant::now();
    let r = run(&["run", &src.display().to_string(), "--coding", "7+7", "--json"]);
    let secs = t.elapsed().as_secs_f64();
    let st = &r["snapshot"]["stats"];
    let sent = st["uploaded_shard_bytes"].as_u64().expect("uploaded") as f64;
    let data = (mib.div_ceil(8) * 8) as f64 * 1048576.0;
    let link = HOST_UP_MBIT * 1e6 / 8.0;
    format!(
        "  | backup of {mib} MiB from a host with a {HOST_UP_MBIT:.0} Mbit/s uplink, 7+7 | shards sent: {:.0}% of its \
         uplink ({:.1} MB, {:.2}x the data) | {:.2} MB/s of files, {:.1} s (sending parity too, the same uplink \
         would carry at most {:.2}) |",
        100.0 * sent / secs / link,
        sent / 1e6,
        sent / data,
        data / secs / 1e6,
        secs,
        link / 2.0 / 1e6,
    )
}

/// What the links allow without ionshard: `parts` plain HTTP downloads at
/// once into the device, one from each of the first `parts` peers, of
/// `mib / parts` MiB each; bytes per second.
fn parallel_http(lab: &Lab, dir: &Path, mib: usize, parts: usize) -> f64 {
    let piece = dir.join("http");
    std::fs::create_dir_all(&piece).expect("http dir");
    let len = (mib << 20) / parts;
    std::fs::write(piece.join("part.bin"), &image(len.div_ceil(1 << 20), 7)[..len]).expect("part");
    let servers: Vec<Child> = (0..parts)
        .map(|i| {
            Command::new("ip")
                .args(["netns", "exec", &lab.ns(&format!("p{i}")), "python3", "-m", "http.server", "8099"])
                .args(["--bind", &format!("{NET}.{}", 10 + i), "--directory"])
                .arg(&piece)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 http.server")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let curls: Vec<Child> = (0..parts)
        .map(|i| {
            Command::new("ip")
                .args(["netns", "exec", &lab.ns("d"), "curl", "-sf", "-o", "/dev/null"])
                .arg(format!("http://{NET}.{}:8099/part.bin", 10 + i))
                .spawn()
                .expect("curl")
        })
        .collect();
    let mut ok = true;
    for mut c in curls {
        ok &= c.wait().map(|s| s.success()).unwrap_or(false);
    }
    let secs = t.elapsed().as_secs_f64();
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(ok, "a reference download failed");
    (len * parts) as f64 / secs
}

/// `bin fetch` in the device's namespace under `time -v`: its JSON report
/// and CPU seconds.
fn device_fetch(
    lab: &Lab,
    bin: &Path,
    dir: &Path,
    boot: &str,
    bundle: &PathBuf,
    product: &str,
    flags: &str,
) -> (serde_json::Value, f64) {
    let state = dir.join("device");
    let out = dir.join("fetched.img");
    let _ = std::fs::remove_dir_all(&state);
    // "@PATH FLAGS": this variant's fetcher is another build (A/B in one run).
    let (bin, flags) = match flags.strip_prefix('@') {
        Some(rest) => {
            let (path, flags) = rest.split_once(' ').unwrap_or((rest, ""));
            (Path::new(path), flags)
        }
        None => (bin, flags),
    };
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.ns("d"), "/usr/bin/time", "-v"])
        .arg(bin)
        .args(["fetch", "--bundle"])
        .arg(bundle)
        .arg("--root")
        .arg(dir.join("root.json"))
        .args(["--hardware", "r1", "--product", product, "--bootstrap", boot, "--json", "--state"])
        .arg(&state)
        .args(flags.split_whitespace())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("ip netns exec … ionshard fetch");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fetch failed: {stderr}");
    if let Some(keep) = std::env::var_os("LINKS_DEVICE_LOG") {
        let _ = std::fs::write(keep, stderr.as_bytes());
    }
    let _ = std::fs::remove_file(&out);
    let report = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).expect("JSON");
    if let Some(keep) = std::env::var_os("LINKS_DEVICE_REPORT") {
        let _ = std::fs::write(keep, &o.stdout);
    }
    (report, time_v(&stderr).0)
}
