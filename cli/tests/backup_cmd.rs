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
    // The host sends the data shards alone (this SPN makes the parity):
    // about the segment bytes; one 8 MiB segment window of slack.
    let unfinished = total_plain - placed_before;
    let window = 8u64 << 20;
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
    let first = json_out(&list, "snapshots")["snapshots"][0]["id"].as_str().expect("id").to_string();

    // Half the files deleted, a second run, the first forgotten: prune
    // repacks the half still used (the threshold is checked before anything).
    for i in 6..12u64 {
        std::fs::remove_file(src.join(format!("part{i:02}.bin"))).expect("rm");
    }
    json_out(&backup(&n, &home, &["run", &s(&src), "--coding", "4+2", "--json"]).output().expect("run"), "second run");
    let bad = backup(&n, &home, &["prune", "--max-unused", "150%"]).output().expect("prune");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("0% to 100%"), "{}", String::from_utf8_lossy(&bad.stderr));
    let p = json_out(
        &backup(&n, &home, &["forget", &first, "--prune", "--grace", "0", "--max-unused", "0%", "--json"])
            .output()
            .expect("forget --prune"),
        "forget --prune",
    );
    let repacked = &p["prune"]["repack"]["repacked"];
    assert_eq!(repacked.as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!((repacked[0]["length"].as_u64(), repacked[0]["live"].as_u64()), (Some(96 << 20), Some(48 << 20)), "{p}");
    assert_eq!(p["prune"]["repack"]["snapshots_rewritten"].as_array().map(Vec::len), Some(1), "{p}");
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The agent with its clock set: a nightly schedule whose time passed
/// while no agent ran is caught up once at start; a failing one is
/// retried with backoff, and `status` says so. Then a put-only key made
/// with `key add` backs up and is refused a listing.
#[test]
fn the_agent_catches_up_a_missed_run_retries_a_failed_one_and_a_put_only_key_only_adds() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = network(dir.path(), 4);
    let home = dir.path().join("home");
    json_out(&backup(&n, &home, &["init", "--json"]).output().expect("init"), "init");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("ledger.txt"), b"the accounts\n".repeat(1000)).expect("write");
    let gone = dir.path().join("gone");
    std::fs::create_dir_all(&gone).expect("gone");
    let add = |name: &str, path: &Path| {
        let mut c = backup(&n, &home, &["schedule", "add", name, "--cron", "0 2 * * *", &s(path), "--coding", "2+2"]);
        c.args(["--keep-last", "3", "--json"]);
        json_out(&c.output().expect("schedule add"), "schedule add")
    };
    add("nightly", &src);
    add("broken", &gone);
    std::fs::remove_dir(&gone).expect("rm");
    // The agent was down at 02:00 UTC: it starts the next day at 09:00.
    let start = (now_secs() / 86_400 + 1) * 86_400 + 9 * 3600;
    let agent = |at: i64| {
        let mut c = backup(&n, &home, &["agent", "--once", "--now", &at.to_string(), "--host", "office-1", "--json"]);
        c.env("TZ", "UTC").output().expect("agent")
    };
    let out = agent(start);
    assert!(!out.status.success(), "a failed run fails --once");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per attempt"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let nightly = lines.iter().find(|l| l["schedule"] == "nightly").expect("nightly ran");
    assert!(nightly["attempt"]["snapshot"].is_string(), "{nightly}");
    assert_eq!(nightly["attempt"]["caught_up"], true);
    assert_eq!(nightly["attempt"]["slot"], start - 7 * 3600);
    let broken = lines.iter().find(|l| l["schedule"] == "broken").expect("broken tried");
    assert!(broken["attempt"]["error"].as_str().expect("error").contains("does not exist"), "{broken}");

    // Run again at once: nothing is due (the retry waits a minute).
    let out = agent(start + 30);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "ran again: {}", String::from_utf8_lossy(&out.stdout));
    // After the backoff, the failing one is tried again, and only it.
    let out = agent(start + 120);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    let l: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!((l["schedule"].as_str(), l["attempt"]["attempt"].as_u64()), (Some("broken"), Some(2)), "{l}");

    let st = json_out(&backup(&n, &home, &["status", "--json"]).env("TZ", "UTC").output().expect("status"), "status");
    let by_name = |name: &str| st["schedules"].as_array().expect("list").iter().find(|s| s["name"] == name).cloned();
    let nightly = by_name("nightly").expect("nightly");
    assert_eq!(
        nightly["last_ok"]["snapshot"],
        lines.iter().find(|l| l["schedule"] == "nightly").expect("n")["attempt"]["snapshot"]
    );
    let broken = by_name("broken").expect("broken");
    assert_eq!(broken["retry"]["attempts"], 2, "{broken}");
    assert!(broken["last"]["error"].is_string());
    let snaps = json_out(&backup(&n, &home, &["snapshots", "--json"]).output().expect("snapshots"), "snapshots");
    assert_eq!(snaps["snapshots"].as_array().expect("list").len(), 1);

    // The business system sees the host through the SPN: states in the
    // clear, paths and errors sealed (opened here with the full key).
    let fleet =
        || json_out(&backup(&n, &home, &["fleet", "--json"]).env("TZ", "UTC").output().expect("fleet"), "fleet");
    let f = fleet();
    let host = &f["hosts"][0];
    assert_eq!(host["host"]["host"], "office-1", "{f}");
    let schedules = host["host"]["report"]["schedules"].as_array().expect("schedules");
    let state = |name: &str| schedules.iter().find(|s| s["name"] == name).map(|s| s["state"].clone());
    assert_eq!((state("nightly"), state("broken")), (Some("ok".into()), Some("retrying".into())), "{f}");
    let detail = host["details"].as_array().expect("details").iter().find(|d| d["schedule"] == "broken").cloned();
    let detail = detail.expect("broken's detail");
    assert!(detail["detail"]["error"].as_str().expect("opened").contains("does not exist"), "{detail}");
    assert_eq!(detail["detail"]["paths"][0], s(&gone));
    let api = client::Spn::new(&n.url, Some(n.token.trim().to_string())).expect("spn");
    let raw = serde_json::to_string(&api.host("acme", "office-1").expect("the SPN's record")).expect("json");
    assert!(!raw.contains(&s(&gone)) && !raw.contains(&s(&src)), "the SPN holds no path in the clear: {raw}");
    // Asked to run through the SPN, the agent runs it at its next pass
    // though nothing is due, and the request leaves the queue.
    let req = json_out(
        &backup(&n, &home, &["fleet", "run", "office-1", "--schedule", "nightly", "--json"]).output().expect("run"),
        "fleet run",
    );
    let id = req["id"].as_u64().expect("request id");
    assert_eq!(fleet()["hosts"][0]["host"]["pending"][0]["id"], id);
    let out = agent(start + 150);
    let text = String::from_utf8_lossy(&out.stdout);
    let l: serde_json::Value = serde_json::from_str(text.trim()).expect("one attempt");
    assert_eq!((l["schedule"].as_str(), l["request"].as_u64()), (Some("nightly"), Some(id)), "{text}");
    assert!(l["attempt"]["snapshot"].is_string(), "{l}");
    let f = fleet();
    assert_eq!(f["hosts"][0]["host"]["pending"].as_array().map(Vec::len), Some(0), "{f}");

    // A put-only key for another host: it adds, and cannot list.
    let put = dir.path().join("db-host.key");
    let made = json_out(
        &backup(&n, &home, &["key", "add", "--put-only", "--out", &s(&put), "--label", "db host", "--json"])
            .output()
            .expect("key add"),
        "key add",
    );
    assert!(made["token_id"].is_string());
    let host_home = dir.path().join("db-host");
    let put_run = |args: &[&str]| {
        let mut c = bin();
        c.env("IONSHARD_HOME", &host_home)
            .env_remove("IONSHARD_SPN_TOKEN")
            .args(["backup", "--repo", "acme", "--key", &s(&put), "--spn", &n.url, "--bootstrap", &n.bootstrap])
            .args(args);
        c.output().expect("put-only command")
    };
    let out = put_run(&["run", &s(&src), "--coding", "2+2", "--host", "db", "--json"]);
    let saved = json_out(&out, "put-only run");
    let out = put_run(&["snapshots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("put-only key") && err.contains("list snapshots"), "{err}");
    let snaps = json_out(&backup(&n, &home, &["snapshots", "--json"]).output().expect("snapshots"), "snapshots");
    let ids: Vec<&str> = snaps["snapshots"].as_array().expect("list").iter().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.contains(&saved["snapshot"]["id"].as_str().expect("id")), "{ids:?}");
    let keys = json_out(&backup(&n, &home, &["key", "list", "--json"]).output().expect("key list"), "key list");
    assert!(keys["tokens"].as_array().expect("tokens").iter().any(|t| t["scope"] == "append"), "{keys}");
    // Its token may report for a host of its own, but neither watch the
    // fleet, nor ask for runs, nor report over another host's agent.
    for args in [&["fleet"][..], &["fleet", "run", "office-1"][..], &["fleet", "forget", "office-1"][..]] {
        let out = put_run(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("403"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = std::fs::read_to_string(&put).expect("key");
    let token: serde_json::Value = serde_json::from_str(&token).expect("key json");
    let put_api = client::Spn::new(&n.url, token["token"].as_str().map(String::from)).expect("spn");
    let report = api.host("acme", "office-1").expect("host").report.expect("report");
    let e =
        put_api.report_host("acme", "office-1", &report).expect_err("a put-only key overwriting another host's report");
    assert!(e.to_string().contains("409"), "{e}");
    put_api.report_host("acme", "db", &report).expect("its own host");
    put_api.report_host("acme", "db", &report).expect("again: it reported for db first");
    assert_eq!(put_api.run_requests("acme", "db").expect("its runs").requests, vec![]);
    let e = put_api.report_host("acme", "db-2", &report).expect_err("a second host name for one put-only key");
    assert!(e.to_string().contains("409"), "{e}");
    let e = put_api.run_requests("acme", "office-1").expect_err("another host's requested runs");
    assert!(e.to_string().contains("403"), "{e}");
}

/// On a peer, `store expired` lists backup shards past their expiry (the
/// SPN's window shrunk to 3 s, nobody renewing) and `store clear-expired`
/// frees them.
#[test]
fn a_peer_lists_and_clears_backup_data_nobody_renewed() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = common::network_with(dir.path(), 4, &["--backup-window".to_string(), "3s".to_string()]);
    let home = dir.path().join("home");
    json_out(&backup(&n, &home, &["init", "--json"]).output().expect("init"), "init");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("scan.bin"), image(200_000, 3)).expect("write");
    let run =
        json_out(&backup(&n, &home, &["run", &s(&src), "--coding", "2+2", "--json"]).output().expect("run"), "run");
    assert_eq!(run["renewed"]["failed"], 0, "{run}");
    std::thread::sleep(Duration::from_secs(4));
    n.procs.kill("peer0");
    let peer = dir.path().join("peer0");
    let store = |args: &[&str]| {
        let mut c = bin();
        c.args(["store"]).args(args).args(["--dir", &s(&peer), "--json"]);
        json_out(&c.output().expect("store"), "store")
    };
    let listed = store(&["expired"]);
    let count = listed["expired"].as_array().expect("list").len();
    assert!(count > 0, "{listed}");
    let cleared = store(&["clear-expired"]);
    assert_eq!(cleared["cleared"].as_u64(), Some(count as u64), "{cleared}");
    assert!(store(&["expired"])["expired"].as_array().expect("list").is_empty());
    assert_eq!(store(&["stats"])["shards"], 0, "a peer holding only this backup is empty again");
}

/// A run that saves a snapshot without some files (here one that cannot be
/// read) says so in its exit status, as restic's 3: cron and scripts see
/// an incomplete backup; the JSON still comes on stdout.
#[test]
fn a_run_that_could_not_read_every_file_exits_with_status_3() {
    let bad = Path::new("/proc/self/mem");
    if !bad.exists() {
        eprintln!("skipped: no /proc/self/mem on this system to stand for an unreadable file");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let n = network(dir.path(), 4);
    let home = dir.path().join("home");
    json_out(&backup(&n, &home, &["init", "--json"]).output().expect("init"), "init");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("fine.txt"), b"fine").expect("write");
    let ok = backup(&n, &home, &["run", &s(&src), "--coding", "2+2", "--json"]).output().expect("run");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = backup(&n, &home, &["run", &s(&src), &s(bad), "--coding", "2+2", "--json"]).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON on stdout");
    assert_eq!(v["snapshot"]["skipped"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not be read"));
}
