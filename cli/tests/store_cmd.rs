//! `ionshard store stats|scrub` on a real store.

use std::process::Command;

use chunker::Cid;
use serde_json::Value;
use store::{Config, PutOptions, Store};

/// The binary, without the defaults a shell may hold (`eval "$(ionshard
/// sandbox up)"`).
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ionshard"));
    for k in harness::procs::ENV_DEFAULTS {
        c.env_remove(k);
    }
    c
}

#[test]
fn stats_and_scrub_report_and_quarantine() {
    let node = tempfile::tempdir().expect("tempdir");
    let dir = node.path().join("store");
    let mut cids = Vec::new();
    {
        let (s, _) = Store::open(&dir, Config::default().with_capacity(5 << 20)).expect("open");
        for i in 0..5u8 {
            let bytes = vec![i; 100_000 + usize::from(i)];
            let cid = Cid::of_raw(&bytes);
            s.put(&cid, &bytes, &PutOptions { owner: b"spn".to_vec(), now: 1, expiry: None, pinned: false })
                .expect("put");
            cids.push(cid);
        }
    }
    let out = bin().args(["store", "stats", "--json", "--dir"]).arg(node.path()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["shards"], 5);
    assert_eq!(v["capacity"], 5 << 20);
    assert_eq!(v["bytes"], 500_010);

    // Rot one shard on disk: scrub names it, quarantines it, exits 3.
    let fan = format!("{:02x}", cids[2].digest()[0]);
    let path = dir.join("shards").join(fan).join(cids[2].to_string());
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[5] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let out = bin().args(["store", "scrub", "--json", "--dir"]).arg(node.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["checked"], 5);
    assert_eq!(v["bad"][0]["cid"], cids[2].to_string());
    let out = bin().args(["store", "stats", "--json", "--dir"]).arg(node.path()).output().expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((v["shards"].as_u64(), v["quarantined"].as_u64()), (Some(4), Some(1)));

    let out = bin().args(["store", "stats", "--dir", "/nonexistent/node"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shard store at"));
}
