//! Durability figures on real nodes: a bootstrap, n + 8 peers (redb
//! stores, each in a household of its own on 127.0.0.x) and an SPN as tasks
//! of this process; the SPN publishes with the release and backup default
//! 10+6, then
//! - **repair throughput**: 2 peers leave for good, and the time from the
//!   first repair pass until every segment is whole again gives MB/s of
//!   shards rebuilt (and the traffic a rebuilt byte costs);
//! - **audit cost**: audit rounds at the default settings (c = 100 blocks
//!   of 4 KiB, at most 0.5% a day of what a peer holds), their bytes and
//!   the CPU time of the whole process (SPN and peers), scaled to one GB
//!   stored for one day at the default rate (an audit of every peer every
//!   6 h).
//!
//! `cargo run --release -p ionshard-benches --example durability -- [MiB]`
//! (default 256 MiB; 3 rounds of each, medians).

use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let (k, m) = (10u8, 6u8);
    let n = usize::from(k + m);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        let mut spec = harness::tasks::Spec::honest(n + 8);
        for p in &mut spec.peers {
            p.capacity = 8 << 30;
        }
        let network = harness::tasks::Network::start(&d.join("net"), &spec, |c| {
            c.max_upload = 1 << 40;
            // The defaults, except: peers lost 3 s after their last
            // heartbeat, repair unpaced (this measures how fast it can go;
            // a production SPN caps it at --repair-rate), and the repair
            // loop left to this bench.
            c.durability.heartbeat = Duration::from_secs(1);
            c.durability.grace = Duration::from_secs(3);
            c.durability.repair_rate = u64::MAX / 4;
            // Repair at the first loss (the default waits for 3 of 6).
            c.durability.repair_margin = Some(m - 1);
            c.durability.repair_every = Duration::from_secs(3600);
            // audit_every stays 6 h: the number of blocks an audit asks for
            // depends on it (the daily budget), and its loop's first audit
            // comes hours after this bench ends.
        })
        .await
        .expect("the network starts");
        let mut peers = network.peers;
        let spn = &network.spn.as_ref().expect("an SPN").spn;
        let defaults = spn::Settings::default();
        let (mut repair_speeds, mut per_byte, mut audit_bytes, mut audit_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut publish = Vec::new();
        let mut img = vec![0u8; mib << 20];
        for round in 0..3u8 {
            blake3::Hasher::new().update(b"durability-bench").update(&[round]).finalize_xof().fill(&mut img);
            let path = d.join("object");
            std::fs::write(&path, &img).expect("object");
            let t0 = Instant::now();
            spn.publish_file(&path, "bench", &format!("backup{round}"), k, m).await.expect("publish");
            publish.push(img.len() as f64 / t0.elapsed().as_secs_f64() / 1e6);
            let _ = std::fs::remove_file(&path);

            // Audits at the defaults: every live peer, c blocks each.
            let before = spn.durability(None).expect("report");
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            let audited = spn.audit_now().await.expect("audit"); // audits that failed
            let (cpu, secs) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
            let after = spn.durability(None).expect("report");
            let bytes = after.audit_bytes - before.audit_bytes;
            let stored_gb = after.stored_bytes as f64 / 1e9;
            let per_day = 86400.0 / defaults.audit_every.as_secs_f64();
            println!(
                "audit round {round}: {audited} failed, {:.2} MB moved, {cpu:.3} CPU s, {secs:.2} s wall, over {:.2} GB stored",
                bytes as f64 / 1e6,
                stored_gb
            );
            audit_bytes.push(bytes as f64 * per_day / stored_gb);
            audit_cpu.push(cpu * per_day / stored_gb);

            // Two peers leave for good; their shards are rebuilt on the others.
            for _ in 0..2 {
                let gone = peers.remove(0);
                gone.stop().await;
            }
            // Past the grace period (3 s) and a heartbeat or two.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let before = spn.durability(None).expect("report");
            let t0 = Instant::now();
            let mut passes = 0;
            loop {
                spn.repair_now().await.expect("repair");
                passes += 1;
                let r = spn.durability(None).expect("report");
                if r.objects.iter().all(|o| o.lowest_healthy == u64::from(k + m)) || passes >= 120 {
                    break;
                }
                // A pass that finds nothing to do returns at once: wait for heartbeats.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let secs = t0.elapsed().as_secs_f64();
            let after = spn.durability(None).expect("report");
            let rebuilt = (after.bytes_lost - before.bytes_lost) as f64;
            let moved = (after.repair_bytes - before.repair_bytes) as f64;
            assert!(
                after.objects.iter().all(|o| o.lowest_healthy == u64::from(k + m)),
                "repair did not make every segment whole in {passes} passes: lowest {:?}, queue {}, lost {}, live {}, disqualified {}",
                after.objects.iter().map(|o| o.lowest_healthy).collect::<Vec<_>>(),
                after.repair_queue,
                after.peers_lost,
                after.peers_live,
                after.peers_disqualified
            );
            println!(
                "repair round {round}: {:.1} MB rebuilt in {secs:.2} s ({:.0} MB/s), {:.1} bytes moved per byte rebuilt, {passes} pass(es)",
                rebuilt / 1e6,
                rebuilt / secs / 1e6,
                moved / rebuilt.max(1.0)
            );
            repair_speeds.push(rebuilt / secs / 1e6);
            per_byte.push(moved / rebuilt.max(1.0));
        }
        println!(
            "repair (10+6, 2 of {} peers lost per round): median {:.0} MB/s rebuilt, {:.1} bytes moved per byte rebuilt; publish {:.0} MB/s",
            n + 8,
            median(repair_speeds.clone()),
            median(per_byte.clone()),
            median(publish.clone())
        );
        println!(
            "audit at the defaults (c = {}, every {} h): per GB stored per day {:.2} MB ({:.3}% of it) and {:.3} CPU s",
            defaults.audit_blocks,
            defaults.audit_every.as_secs() / 3600,
            median(audit_bytes.clone()) / 1e6,
            median(audit_bytes) / 1e9 * 100.0,
            median(audit_cpu)
        );
        // For benches/durability-vs-tahoe.sh: the medians as one JSON line.
        println!(
            "{}",
            serde_json::json!({
                "repair_mb_per_s": median(repair_speeds),
                "bytes_moved_per_byte_rebuilt": median(per_byte),
                "upload_mb_per_s": median(publish),
            })
        );
    });
}
