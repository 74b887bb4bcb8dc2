//! The CLI on local files beside the library in memory, in one run:
//! `ionshard chunk` and `ionshard unchunk` of a random object on tmpfs
//! (/dev/shm) against the same encoding and decoding done in memory (the
//! criterion bench's two cases: encode 10+4 into nothing, decode from every
//! data shard held in memory), each in turn, medians.
//!
//! ```text
//! cargo build --release -p ionshard
//! cargo run --release -p ionshard-benches --example local -- [MiB] [rounds]
//! ```
//!
//! Printed: MB/s of each, the CLI's ratio to the library, and the CLI's
//! user and system seconds (from `time -v`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chunker::{Decoder, EncodedSegment, Encoder, MemorySink, MemorySource, Params, SegmentSink, TenantSecret};
use ionshard_benches::{ionshard_bin, median};

struct NullSink;

impl SegmentSink for NullSink {
    fn put_segment(&mut self, seg: EncodedSegment<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::hint::black_box(seg.shards.len());
        Ok(())
    }
}

/// `time -v` of a command: (wall seconds, user, system).
fn timed(cmd: &mut Command) -> (f64, f64, f64, String) {
    let t = Instant::now();
    let o = cmd.output().expect("run the CLI under /usr/bin/time");
    let wall = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "failed: {stderr}");
    let field = |name: &str| -> f64 {
        stderr.lines().find_map(|l| l.trim().strip_prefix(name)).and_then(|n| n.trim().parse().ok()).unwrap_or(0.0)
    };
    (
        wall,
        field("User time (seconds):"),
        field("System time (seconds):"),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let bin = ionshard_bin();
    let shm = tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm (tmpfs)");
    let d = shm.path();
    let mut data = vec![0u8; mib << 20];
    blake3::Hasher::new().update(b"bench").finalize_xof().fill(&mut data);
    std::fs::write(d.join("object"), &data).expect("object");
    let secret = TenantSecret::from_bytes([1; 32]);
    std::fs::write(d.join("secret"), [1u8; 32]).expect("secret");
    let params = Params::default();
    let mb = data.len() as f64 / 1e6;
    let (mut enc, mut dec, mut chunk, mut unchunk) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut chunk_cpu, mut unchunk_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // In memory, as the criterion bench.
        let t = Instant::now();
        Encoder::new(params, &secret).expect("params").encode(&data[..], &mut NullSink, &mut |_| {}).expect("encode");
        enc.push(mb / t.elapsed().as_secs_f64());
        let mut sink = MemorySink::default();
        let encoded =
            Encoder::new(params, &secret).expect("params").encode(&data[..], &mut sink, &mut |_| {}).expect("encode");
        let contents = encoded.manifest.open(&encoded.read_key).expect("open");
        let source = MemorySource::new(sink.shards);
        let t = Instant::now();
        Decoder::new(&encoded.manifest, &contents, &source).decode(&mut std::io::sink(), &mut |_| {}).expect("decode");
        dec.push(mb / t.elapsed().as_secs_f64());
        drop(source);
        // The CLI, on tmpfs.
        let out = d.join(format!("shards{round}"));
        let (wall, user, sys, stdout) = timed(
            Command::new("/usr/bin/time")
                .arg("-v")
                .arg(&bin)
                .arg("chunk")
                .arg(d.join("object"))
                .arg("--out")
                .arg(&out)
                .arg("--secret")
                .arg(d.join("secret"))
                .arg("--json"),
        );
        chunk.push(mb / wall);
        chunk_cpu.push((user, sys));
        let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("chunk JSON");
        let cap = v["capability"].as_str().expect("capability").to_string();
        let restored = d.join("restored");
        let (wall, user, sys, _) = timed(
            Command::new("/usr/bin/time")
                .arg("-v")
                .arg(&bin)
                .arg("unchunk")
                .arg(&cap)
                .arg("--shards")
                .arg(&out)
                .arg("--out")
                .arg(&restored)
                .arg("--json"),
        );
        unchunk.push(mb / wall);
        unchunk_cpu.push((user, sys));
        assert!(std::fs::read(&restored).expect("restored") == data, "unchunk gave other bytes");
        let _ = std::fs::remove_file(&restored);
        let _ = std::fs::remove_dir_all(&out);
        println!(
            "round {round}: encode {:.0}, chunk {:.0}; decode {:.0}, unchunk {:.0} MB/s",
            enc[round], chunk[round], dec[round], unchunk[round]
        );
    }
    let cpu = |v: &[(f64, f64)]| (median(v.iter().map(|c| c.0).collect()), median(v.iter().map(|c| c.1).collect()));
    let (e, c, de, u) = (median(enc), median(chunk), median(dec), median(unchunk));
    println!("\n{mib} MiB of random data on tmpfs, medians of {rounds} ({}):", Path::new(&bin).display());
    println!("  | | library in memory | CLI on tmpfs | ratio | CLI user / sys s |");
    println!("  |---|---|---|---|---|");
    let (cu, cs) = cpu(&chunk_cpu);
    println!("  | encode / `chunk` | {e:.0} MB/s | {c:.0} MB/s | {:.2}x | {cu:.2} / {cs:.2} |", c / e);
    let (uu, us) = cpu(&unchunk_cpu);
    println!("  | decode / `unchunk` | {de:.0} MB/s | {u:.0} MB/s | {:.2}x | {uu:.2} / {us:.2} |", u / de);
}
