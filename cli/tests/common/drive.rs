//! The drive's test helpers: pairing by code, a drive of three devices,
//! the CLI on a client, and a folder read whole.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Procs, bin, json_out, s};

/// `ionshard drive pair` started in `dir`; its child, and the code it printed.
pub fn pair(
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
pub fn finish(mut child: Child, mut out: std::io::BufReader<std::process::ChildStdout>) -> (bool, Value, String) {
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

pub fn join(dir: &Path, name: &str, boot: &str, code: &str) -> std::process::Output {
    bin()
        .args(["drive", "join", code, "--json", "--dir", &s(dir), "--name", name, "--bootstrap", boot])
        .output()
        .expect("drive join")
}

pub fn pairs(dir: &Path) -> Value {
    json_out(&bin().args(["drive", "pairs", "--json", "--dir", &s(dir)]).output().expect("pairs"), "drive pairs")
}

pub fn id_of(dir: &Path) -> String {
    harness::procs::id_of(super::exe(), &dir.join("identity.key")).expect("id")
}

pub fn drive(dir: &Path, boot: &str, args: &[&str]) -> std::process::Output {
    bin()
        .args(["drive"])
        .args(args)
        .args(["--json", "--dir", &s(dir), "--bootstrap", boot])
        .env("IONSHARD_DRIVE_PASSWORD", "correct horse battery")
        .output()
        .expect("ionshard drive")
}

pub fn refused(o: &std::process::Output, what: &str, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what} succeeded");
    assert!(e.contains(needle), "{what}: wanted {needle:?} in {e}");
}

/// Every file under `a`, by path relative to it, with its bytes.
pub fn files(a: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walk(a, None).expect("read the tree")
}

/// Every file under `a` but those in its folder named `skip` (if any), or
/// the error of one that went away while the walk looked (a live sync
/// renames files under it).
pub fn walk(a: &Path, skip: Option<&str>) -> std::io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![a.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if skip.is_some_and(|s| p == a.join(s)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(a).expect("under").to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p)?);
            }
        }
    }
    Ok(out)
}

/// A bootstrap and three devices as processes, a laptop paired with each
/// and a drive set up on them: (bootstrap address, laptop directory).
pub fn drive_of_three(procs: &mut Procs, dir: &Path) -> (String, std::path::PathBuf) {
    let (boot, laptop, _) = paired_with_three(procs, dir);
    json_out(&drive(&laptop, &boot, &["setup"]), "drive setup");
    (boot, laptop)
}

/// A bootstrap and three devices ("nas", "router", "tv") as processes, and
/// a laptop paired with each by a code: (bootstrap address, laptop
/// directory, the peer id the devices trust as their SPN).
pub fn paired_with_three(procs: &mut Procs, dir: &Path) -> (String, std::path::PathBuf, String) {
    let boot = super::bootstrap(procs, dir);
    let nobody = id_of(&dir.join("nobody"));
    let laptop = dir.join("laptop");
    for name in ["nas", "router", "tv"] {
        super::peer(procs, name, dir, &boot, &nobody);
        let (child, out, code) = pair(&dir.join(name), name, &boot, "5m");
        json_out(&join(&laptop, "laptop", &boot, &code), "drive join");
        let (ok, _, err) = finish(child, out);
        assert!(ok, "pairing {name}: {err}");
    }
    (boot, laptop, nobody)
}

/// Another client (`client`, named `name`) paired with the three devices
/// of [`paired_with_three`] under `dir`.
pub fn pair_another(dir: &Path, client: &Path, name: &str, boot: &str) {
    for device in ["nas", "router", "tv"] {
        let (child, out, code) = pair(&dir.join(device), device, boot, "5m");
        json_out(&join(client, name, boot, &code), "drive join");
        let (ok, _, err) = finish(child, out);
        assert!(ok, "pairing {device}: {err}");
    }
}

/// [`paired_with_three`], a drive set up by the laptop, and a phone paired
/// with the same devices and logged in: (bootstrap address, laptop
/// directory, phone directory).
pub fn two_clients(procs: &mut Procs, dir: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (boot, laptop, _) = paired_with_three(procs, dir);
    let phone = dir.join("phone");
    pair_another(dir, &phone, "phone", &boot);
    json_out(&drive(&laptop, &boot, &["setup"]), "drive setup");
    json_out(&drive(&phone, &boot, &["login"]), "drive login");
    (boot, laptop, phone)
}

pub const PASSWORD: &str = "correct horse battery";

/// Whether a test that needs `tools` (from the system's packages named
/// `packages`) must skip: said on stderr; a failure instead when `require`
/// is set in the environment (CI installs them and sets it).
pub fn skip_without(tools: &[&str], packages: &str, require: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return false;
    }
    let why = format!("needs {} (apt-get install {packages})", missing.join(", "));
    assert!(std::env::var_os(require).is_none(), "{require} is set, but this test {why}");
    eprintln!("skipping: this test {why}");
    true
}

/// `drive serve` on the client in `client` with `extra` flags, its log in
/// `dir/logs/NAME.log`; (child, its first JSON line).
pub fn serve(dir: &Path, client: &Path, boot: &str, name: &str, extra: &[&str]) -> (Child, Value) {
    let mut child = bin()
        .args(["drive", "serve", "--json", "--dir", &s(client), "--bootstrap", boot, "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("IONSHARD_DRIVE_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("logs/{name}.log"))).expect("log"))
        .spawn()
        .expect("drive serve");
    let first = super::first_line(&mut child);
    (child, first)
}
