//! Pairing a person's own devices by a one-time code, with real processes:
//! a bootstrap node keeps the mailbox, `ionshard drive pair` on a device
//! prints the code, `ionshard drive join CODE` on a client completes the
//! exchange. A wrong code, a replayed one, an expired one and an unknown
//! one are each refused with their own message, and pair nothing.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Procs, bin, json_out, s};
use serde_json::Value;

/// `ionshard drive pair` started in `dir`; its child, and the code it printed.
fn pair(
    dir: &Path,
    name: &str,
    boot: &str,
    lifetime: &str,
) -> (Child, std::io::BufReader<std::process::ChildStdout>, String) {
    let mut child = bin()
        .args([
            "drive",
            "pair",
            "--json",
            "--dir",
            &s(dir),
            "--name",
            name,
            "--bootstrap",
            boot,
            "--lifetime",
            lifetime,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drive pair");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the code line");
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let code = v["code"].as_str().expect("code").to_string();
    (child, out, code)
}

/// The rest of `pair`'s output once it ended: (success, last stdout line as JSON or null, stderr).
fn finish(mut child: Child, mut out: std::io::BufReader<std::process::ChildStdout>) -> (bool, Value, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "drive pair did not end in 90 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("stdout");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("stderr");
    let last = rest.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (status.success(), last, err)
}

fn join(dir: &Path, name: &str, boot: &str, code: &str) -> std::process::Output {
    bin()
        .args(["drive", "join", code, "--json", "--dir", &s(dir), "--name", name, "--bootstrap", boot])
        .output()
        .expect("drive join")
}

fn pairs(dir: &Path) -> Value {
    json_out(&bin().args(["drive", "pairs", "--json", "--dir", &s(dir)]).output().expect("pairs"), "drive pairs")
}

fn id_of(dir: &Path) -> String {
    harness::procs::id_of(common::exe(), &dir.join("identity.key")).expect("id")
}

#[test]
fn a_device_and_a_client_pair_by_code_and_wrong_replayed_expired_and_unknown_codes_pair_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let boot = common::bootstrap(&mut procs, dir.path());
    let (nas, laptop, thief) = (dir.path().join("nas"), dir.path().join("laptop"), dir.path().join("thief"));

    // A device directory with no node identity pairs nothing (no node
    // would run with a key made here).
    let o = bin().args(["drive", "pair", "--dir", &s(&nas), "--bootstrap", &boot]).output().expect("drive pair");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("no node identity"), "{e}");
    let nas_id = id_of(&nas); // as `ionshard node --dir` would make it

    // The right code: both record the other's node.
    let (child, out, code) = pair(&nas, "nas", &boot, "5m");
    let o = join(&laptop, "laptop", &boot, &code);
    let joined = json_out(&o, "drive join");
    let (ok, paired, err) = finish(child, out);
    assert!(ok, "drive pair failed: {err}");
    assert_eq!(paired["paired"]["peer"], id_of(&laptop), "{paired}");
    assert_eq!(joined["paired"]["peer"], nas_id, "{joined}");
    assert_eq!(joined["paired"]["role"], "device");
    assert_eq!(pairs(&nas)["pairs"][0]["name"], "laptop");
    assert_eq!(pairs(&laptop)["pairs"][0]["name"], "nas");

    // Replayed: the code was spent.
    let o = join(&thief, "thief", &boot, &code);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("used already"), "{e}");

    // A wrong guess: the right number, other words. It pairs nothing on
    // either side, and the code is burned for the real client too.
    let (child, out, code) = pair(&nas, "nas", &boot, "5m");
    let (number, words) = code.split_once('-').expect("code");
    let wrong = if words.starts_with("acorn-") {
        format!("{number}-actor-actor-actor")
    } else {
        format!("{number}-acorn-acorn-acorn")
    };
    let o = join(&thief, "thief", &boot, &wrong);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("wrong code"), "{e}");
    let (ok, _, err) = finish(child, out);
    assert!(!ok && err.contains("wrong code"), "{err}");
    let o = join(&laptop, "laptop", &boot, &code);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && (e.contains("used already") || e.contains("burned")), "{e}");
    assert_eq!(pairs(&nas)["pairs"].as_array().map(Vec::len), Some(1), "the guesser was not recorded");
    assert!(!thief.join("drive/pairs.json").exists() || pairs(&thief)["pairs"].as_array().is_some_and(Vec::is_empty));

    // Expired: nobody joined in time.
    let (child, out, code) = pair(&nas, "nas", &boot, "2s");
    let (ok, _, err) = finish(child, out);
    assert!(!ok && err.contains("no client joined"), "{err}");
    let o = join(&laptop, "laptop", &boot, &code);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("expired"), "{e}");

    // A number nobody claimed, and a typo, each with its own message.
    let o = join(&laptop, "laptop", &boot, "9999-apple-river-stone");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && (e.contains("no code 9999") || e.contains("used already")), "{e}");
    let o = join(&laptop, "laptop", &boot, "12-apple-rivr-stone");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("rivr"), "{e}");

    // Revoked: listed as such, gone from the pairings.
    let o = bin().args(["drive", "revoke", "laptop", "--json", "--dir", &s(&nas)]).output().expect("revoke");
    json_out(&o, "drive revoke");
    let after = pairs(&nas);
    assert!(after["pairs"].as_array().is_some_and(Vec::is_empty), "{after}");
    assert_eq!(after["revoked"][0]["name"], "laptop");
    drop(procs);
}
