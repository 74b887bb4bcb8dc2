//! `ionshard backup` as a user runs it, against a network of real
//! processes: kill -9 of a run halfway and a resume that uploads only what
//! is missing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{bin, image, json_out, network, s};

fn backup(n: &common::Network, home: &Path, args: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.env("IONSHARD_HOME", home)
        .args(["backup", "--repo", "acme", "--spn", &n.url, "--token", n.token.trim(), "--bootstrap", &n.bootstrap])
        .args(args);
    c
}

#[test]
fn a_killed_run_resumes_without_uploading_again_what_was_placed() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = network(dir.path(), 6);
    let home = dir.path().join("home");
    json_out(&backup(&n, &home, &["init", "--json"]).output().expect("init"), "init");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    for i in 0..12u64 {
        std::fs::write(src.join(format!("part{i:02}.bin")), image(8 << 20, i)).expect("write");
    }
    let total_plain = 96u64 << 20;
    let mut child = backup(&n, &home, &["run", &s(&src), "--coding", "4+2", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    // Kill it once a third of the data is placed (the SPN's job says so).
    let journal = home.join("backup/acme/run.json");
    let api = client::Spn::new(&n.url, Some(n.token.trim().to_string())).expect("spn");
    let deadline = Instant::now() + Duration::from_secs(120);
    let placed_before = loop {
        assert!(Instant::now() < deadline, "the run never got a third of the way");
        assert!(child.try_wait().expect("wait").is_none(), "the run ended before it could be killed");
        let job = std::fs::read(&journal)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["job"].as_u64());
        if let Some(job) = job
            && let Ok(j) = api.job(job)
            && j.bytes_done >= total_plain / 3
        {
            break j.bytes_done;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let out =
        json_out(&backup(&n, &home, &["run", &s(&src), "--coding", "4+2", "--json"]).output().expect("rerun"), "rerun");
    assert_eq!(out["resumed"], true, "{out}");
    let st = &out["snapshot"]["stats"];
    let uploaded = st["uploaded_shard_bytes"].as_u64().expect("uploaded");
    // Shards are 1.5x the segment bytes at 4+2; one 8 MiB segment window of slack.
    let unfinished = (total_plain - placed_before) * 3 / 2;
    let window = (8u64 << 20) * 3 / 2;
    eprintln!(
        "placed before the kill {placed_before}, uploaded by the rerun {uploaded}, bound {}",
        unfinished + window
    );
    assert!(uploaded <= unfinished + window + (1 << 20), "the rerun uploaded {uploaded} bytes");
    assert!(st["segments_resumed"].as_u64().expect("resumed") >= 3, "{st}");
    // And the snapshot restores byte-exact.
    let target = dir.path().join("restore");
    let r = json_out(
        &backup(&n, &home, &["restore", "latest", "--target", &s(&target), "--json"]).output().expect("restore"),
        "restore",
    );
    assert_eq!(r["files"], 12, "{r}");
    for i in 0..12u64 {
        let got = std::fs::read(target.join(src.strip_prefix("/").expect("abs")).join(format!("part{i:02}.bin")))
            .expect("restored");
        assert!(got == image(8 << 20, i), "part{i:02} differs");
    }
    // No key appears in what scripts see.
    let list = backup(&n, &home, &["snapshots", "--json"]).output().expect("snapshots");
    assert!(!String::from_utf8_lossy(&list.stdout).contains("read_key"));
}
