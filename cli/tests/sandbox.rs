//! `ionshard sandbox`: a network started in the background, used through the
//! environment it prints (no --spn, no --bootstrap), and stopped without a
//! trace.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{bin, image, json_out, s};
use serde_json::Value;

fn alive(pid: u64) -> bool {
    // A zombie (exited, not yet reaped by init) has an empty command line.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Stops the sandbox however the test ends.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = bin().args(["sandbox", "down", "--dir", &s(&self.0)]).output();
    }
}

fn with_env(c: &mut std::process::Command, env: &Value) {
    for (k, v) in env.as_object().expect("env") {
        c.env(k, v.as_str().expect("env value"));
    }
}

#[test]
fn sandbox_up_serves_publish_and_update_through_its_environment_and_down_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("sandbox");
    let _guard = Down(dir.clone());
    let up = json_out(
        &bin().args(["sandbox", "up", "--peers", "4", "--dir", &s(&dir), "--json"]).output().expect("up"),
        "sandbox up",
    );
    let env = up["env"].clone();
    for k in ["IONSHARD_BOOTSTRAP", "IONSHARD_SPN", "IONSHARD_SPN_TOKEN", "IONSHARD_SANDBOX", "IONSHARD_GENESIS"] {
        assert!(env[k].as_str().is_some_and(|v| !v.is_empty()), "sandbox up printed no {k}: {up}");
    }
    let status =
        json_out(&bin().args(["sandbox", "status", "--dir", &s(&dir), "--json"]).output().expect("st"), "status");
    let nodes = status["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 10, "4 ledger producers, a bootstrap, 4 peers and an SPN: {status}");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "producer").count(), 4, "{status}");
    assert!(nodes.iter().all(|n| n["running"] == true), "{status}");
    // Each peer on a loopback address of its own (the default).
    let ips: std::collections::HashSet<String> = nodes
        .iter()
        .filter(|n| n["role"] == "peer")
        .filter_map(|n| n["address"].as_str()?.split('/').nth(2).map(str::to_string))
        .collect();
    assert_eq!(ips.len(), 4, "four peers, four households: {status}");
    assert!(ips.iter().all(|ip| ip.starts_with("127.0.0.") && ip != "127.0.0.1"), "{ips:?}");
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().expect("pid")).collect();
    // The environment names the sandbox too: `status` finds it without --dir.
    let mut c = bin();
    c.args(["sandbox", "status", "--json"]);
    with_env(&mut c, &env);
    let by_env = json_out(&c.output().expect("status by env"), "status by env");
    assert_eq!(by_env["nodes"].as_array().map(Vec::len), Some(10), "{by_env}");

    // A second `up` on the same directory refuses, and leaves it running.
    let again = bin().args(["sandbox", "up", "--dir", &s(&dir)]).output().expect("up again");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already runs"), "{again:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    // Another terminal gets the same environment from `env`.
    let same = json_out(&bin().args(["sandbox", "env", "--dir", &s(&dir), "--json"]).output().expect("env"), "env");
    assert_eq!(same["env"], env, "sandbox env: {same}");
    let shell = bin().args(["sandbox", "env", "--dir", &s(&dir)]).output().expect("env");
    let text = String::from_utf8_lossy(&shell.stdout);
    assert!(text.contains(&format!("export IONSHARD_SPN='{}'", env["IONSHARD_SPN"].as_str().unwrap_or("?"))), "{text}");

    // Vendor, publish and update with the environment alone.
    let vendor = tmp.path().join("vendor");
    let run = |args: &[&str], what: &str| {
        let mut c = bin();
        c.args(args).arg("--json");
        with_env(&mut c, &env);
        json_out(&c.output().expect(what), what)
    };
    run(&["vendor", "init", "--name", "acme", "--dir", &s(&vendor)], "vendor init");
    run(&["vendor", "register", "--dir", &s(&vendor)], "vendor register");
    let img = tmp.path().join("fw.img");
    std::fs::write(&img, image(3 << 20, 7)).expect("image");
    let p = run(
        &[
            "publish",
            &s(&img),
            "--product",
            "router",
            "--version",
            "1.0.0",
            "--hardware",
            "r1",
            "--data-shards",
            "2",
            "--parity-shards",
            "2",
            "--vendor-dir",
            &s(&vendor),
        ],
        "publish",
    );
    assert_eq!(p["release"], "router@1.0.0");
    let out = tmp.path().join("got.img");
    let state = tmp.path().join("device");
    run(
        &[
            "update",
            "--release",
            "router@latest",
            "--root",
            &s(&vendor.join("root.json")),
            "--product",
            "router",
            "--hardware",
            "r1",
            "--state",
            &s(&state),
            "--out",
            &s(&out),
        ],
        "update",
    );
    assert!(std::fs::read(&out).expect("fetched") == std::fs::read(&img).expect("image"), "fetched image differs");

    // The ledger through the environment: the bootstrap follows the chain.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = run(&["ledger", "status"], "ledger status");
        if st["height"].as_u64().is_some_and(|h| h >= 1) {
            assert_eq!(st["producers"].as_array().map(Vec::len), Some(4), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "no block in 60 s: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The sandbox's registry admin admits a manufacturer, which registers a device.
    let admin = s(&dir.join("ledger").join("admin.key"));
    let maker = tmp.path().join("maker.key");
    let device =
        run(&["id", "--key", &s(&tmp.path().join("device.key"))], "id")["peer_id"].as_str().expect("id").to_string();
    let maker_id = run(&["id", "--key", &s(&maker)], "id")["peer_id"].as_str().expect("id").to_string();
    run(&["ledger", "tx", "--key", &admin, "admit", &maker_id, "--name", "Acme"], "ledger tx admit");
    run(
        &["ledger", "tx", "--key", &s(&maker), "register", &device, "--product", "router", "--hardware", "r1"],
        "ledger tx register",
    );
    let rec = run(&["ledger", "show", "device", &device], "ledger show device");
    assert_eq!(rec["device"]["manufacturer"], maker_id.as_str(), "{rec}");

    // Down: every process gone, the directory removed.
    let down = json_out(&bin().args(["sandbox", "down", "--dir", &s(&dir), "--json"]).output().expect("down"), "down");
    assert_eq!(down["stopped"], 10, "{down}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pids.iter().any(|p| alive(*p)), "a sandbox process outlived `down`");
    let gone = bin().args(["sandbox", "env", "--dir", &s(&dir)]).output().expect("env after down");
    assert!(!gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("no sandbox"), "{gone:?}");
    assert!(!dir.exists(), "`down` left {}", dir.display());
}

#[test]
fn sandbox_up_refuses_a_directory_it_did_not_make_and_leaves_its_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mine = tmp.path().join("photos");
    std::fs::create_dir_all(&mine).expect("dir");
    std::fs::write(mine.join("holiday.jpg"), b"not a sandbox").expect("file");
    let o = bin().args(["sandbox", "up", "--peers", "1", "--dir", &s(&mine)]).output().expect("up");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no sandbox"), "{o:?}");
    let o = bin().args(["sandbox", "down", "--dir", &s(&mine)]).output().expect("down");
    assert!(!o.status.success(), "down of a directory without a sandbox must refuse");
    assert_eq!(std::fs::read(mine.join("holiday.jpg")).expect("kept"), b"not a sandbox");
    assert!(Path::new(&mine).exists());
}
