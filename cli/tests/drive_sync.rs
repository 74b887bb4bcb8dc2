//! Two clients (a laptop and a phone, both paired with three device
//! processes and logged in to one drive) keep a folder each in sync with
//! the drive's `/sync`: a first sync each way; then both as daemons while
//! each side edits, adds and removes; an edit in a large file that sends
//! only what changed; a conflict (both edit one file while neither runs),
//! kept as two files; a removal that lands in the drive's trash; a pass
//! killed halfway and run again. At each end both folders are equal and
//! no change is lost.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::drive::*;
use common::{Procs, bin, json_out, s};
use serde_json::Value;

fn sync_once(client: &Path, boot: &str, folder: &Path, name: &str) -> Value {
    let o = bin()
        .args(["drive", "sync", &s(folder), "--remote", "/sync", "--once", "--name", name])
        .args(["--json", "--dir", &s(client), "--bootstrap", boot])
        .output()
        .expect("drive sync");
    json_out(&o, "drive sync --once")
}

fn daemon(client: &Path, boot: &str, folder: &Path, name: &str, log: &Path) -> Child {
    bin()
        .args(["drive", "sync", &s(folder), "--remote", "/sync", "--interval", "2", "--name", name])
        .args(["--json", "--dir", &s(client), "--bootstrap", boot])
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
        .spawn()
        .expect("drive sync")
}

/// Files with their bytes, and folders, by path relative to the top.
type Tree = (std::collections::BTreeMap<String, Vec<u8>>, Vec<String>);

/// Every file (not the sync's own state) and folder under `a`, walked
/// again when a file or folder goes away under the walk (the sync renames
/// a conflicting file while this looks).
fn tree_of(a: &Path) -> Tree {
    for _ in 0..50 {
        match try_tree_of(a) {
            Ok(t) => return t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("reading {}: {e}", a.display()),
        }
    }
    panic!("{}: files kept going away for 5 s", a.display())
}

fn try_tree_of(a: &Path) -> std::io::Result<Tree> {
    // The sync's own state (its temporary files come and go) is not read.
    let files = walk(a, Some(".ionshard-sync"))?;
    let mut dirs = Vec::new();
    let mut stack = vec![a.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let rel = p.strip_prefix(a).expect("under").to_string_lossy().into_owned();
            if p.is_dir() && !rel.starts_with(".ionshard-sync") {
                dirs.push(rel);
                stack.push(p);
            }
        }
    }
    dirs.sort();
    Ok((files, dirs))
}

/// Wait until both folders are equal and `ok` holds for them.
fn converge(
    a: &Path,
    b: &Path,
    secs: u64,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, Vec<u8>>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ta, tb) = (tree_of(a), tree_of(b));
        if ta == tb && ok(&ta.0) {
            return;
        }
        if Instant::now() > deadline {
            let show = |t: &Tree| {
                let files: Vec<String> =
                    t.0.iter().map(|(k, v)| format!("{k}={}", &blake3::hash(v).to_hex()[..8])).collect();
                format!("{files:?} dirs {:?}", t.1)
            };
            let logs = a.parent().expect("dir").join("logs");
            let tail = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap_or_default();
            panic!(
                "{what}: not in sync within {secs} s:\nlaptop: {}\nphone:  {}\nlaptop's sync:\n{}{}\nphone's sync:\n{}{}",
                show(&ta),
                show(&tb),
                tail("sync-laptop.log"),
                tail("sync-laptop.err"),
                tail("sync-phone.log"),
                tail("sync-phone.err")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn stop(child: &mut Child) {
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "drive sync did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_clients_sync_a_folder_both_ways_with_a_conflict_kept_twice_and_nothing_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop, phone) = two_clients(&mut procs, dir.path());

    let a = dir.path().join("A");
    let b = dir.path().join("B");
    std::fs::create_dir_all(a.join("docs")).expect("mkdir");
    std::fs::create_dir_all(a.join("empty")).expect("mkdir");
    std::fs::create_dir_all(&b).expect("mkdir");
    std::fs::write(a.join("a.txt"), "hello\n").expect("write");
    std::fs::write(a.join("docs/b.txt"), "b\n").expect("write");
    let mut big = common::image(8 << 20, 7);
    std::fs::write(a.join("big.bin"), &big).expect("write");

    // A first sync each way.
    let up = sync_once(&laptop, &boot, &a, "laptop");
    assert_eq!(up["pass"]["uploaded"].as_array().map(Vec::len), Some(3), "{up}");
    let down = sync_once(&phone, &boot, &b, "phone");
    assert_eq!(down["pass"]["downloaded"].as_array().map(Vec::len), Some(3), "{down}");
    assert_eq!(tree_of(&a), tree_of(&b), "the phone's folder is the laptop's, folders and all");
    let again = sync_once(&laptop, &boot, &a, "laptop");
    assert!(again["pass"]["uploaded"].as_array().is_some_and(Vec::is_empty), "nothing twice: {again}");

    // Both as daemons; each side changes something.
    let mut la = daemon(&laptop, &boot, &a, "laptop", &dir.path().join("logs/sync-laptop.log"));
    let mut ph = daemon(&phone, &boot, &b, "phone", &dir.path().join("logs/sync-phone.log"));
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(a.join("a.txt"), "hello from the laptop\n").expect("write");
    std::fs::write(b.join("c.txt"), "made on the phone\n").expect("write");
    std::fs::remove_file(b.join("docs/b.txt")).expect("rm");
    converge(&a, &b, 120, "edits on both sides", |f| {
        f.get("a.txt").is_some_and(|x| x == b"hello from the laptop\n")
            && f.get("c.txt").is_some_and(|x| x == b"made on the phone\n")
            && !f.contains_key("docs/b.txt")
    });
    // An edit in the middle of the large file: only what changed is sent.
    big[4 << 20..(4 << 20) + 64].copy_from_slice(&[0xAB; 64]);
    std::fs::write(a.join("big.bin"), &big).expect("write");
    converge(&a, &b, 120, "an edit in a large file", |f| f.get("big.bin").is_some_and(|x| *x == big));
    stop(&mut la);
    stop(&mut ph);
    let log = std::fs::read_to_string(dir.path().join("logs/sync-laptop.log")).expect("log");
    let sent: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["pass"]["uploaded"].as_array().is_some_and(|u| u.iter().any(|x| x == "big.bin")))
        .filter_map(|v| v["pass"]["shard_bytes"].as_u64())
        .collect();
    assert!(!sent.is_empty(), "the laptop's daemon uploaded the edit: {log}");
    assert!(sent.iter().all(|n| *n < (2 << 20)), "an edit of 64 bytes in 8 MiB sent {sent:?} bytes of shards");

    // A conflict: both edit a.txt while neither runs.
    std::fs::write(a.join("a.txt"), "the laptop's second edit\n").expect("write");
    std::fs::write(b.join("a.txt"), "the phone's edit\n").expect("write");
    sync_once(&laptop, &boot, &a, "laptop");
    let c = sync_once(&phone, &boot, &b, "phone");
    assert_eq!(c["pass"]["conflicts"].as_array().map(Vec::len), Some(1), "{c}");
    sync_once(&laptop, &boot, &a, "laptop");
    let (fa, _) = tree_of(&a);
    assert_eq!(tree_of(&a), tree_of(&b), "both folders equal after the conflict");
    assert_eq!(fa.get("a.txt").map(Vec::as_slice), Some(&b"the laptop's second edit\n"[..]));
    let kept: Vec<&String> = fa.keys().filter(|k| k.starts_with("a (conflict from phone ")).collect();
    assert_eq!(kept.len(), 1, "{:?}", fa.keys().collect::<Vec<_>>());
    assert_eq!(fa[kept[0]], b"the phone's edit\n", "the phone's edit is kept beside");

    // The removal went to the drive's trash.
    let trash = json_out(&drive(&laptop, &boot, &["trash"]), "drive trash");
    assert!(trash.to_string().contains("/sync/docs/b.txt"), "{trash}");

    // A pass killed halfway, run again: it finishes, nothing lost.
    let huge = common::image(24 << 20, 9);
    std::fs::write(a.join("huge.bin"), &huge).expect("write");
    let mut killed = bin()
        .args(["drive", "sync", &s(&a), "--remote", "/sync", "--once", "--name", "laptop"])
        .args(["--json", "--dir", &s(&laptop), "--bootstrap", &boot])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("drive sync");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = killed.kill();
    let _ = killed.wait();
    sync_once(&laptop, &boot, &a, "laptop");
    sync_once(&phone, &boot, &b, "phone");
    assert_eq!(tree_of(&a), tree_of(&b), "in sync after a killed pass");
    assert!(tree_of(&b).0.get("huge.bin").is_some_and(|x| *x == huge));

    // A synced file replaced here by a link: skipped and said, never taken
    // as removed (the drive and the phone keep it).
    std::fs::remove_file(a.join("c.txt")).expect("rm");
    std::os::unix::fs::symlink("/etc/hostname", a.join("c.txt")).expect("symlink");
    let p = sync_once(&laptop, &boot, &a, "laptop");
    assert!(p["pass"]["removed_there"].as_array().is_some_and(Vec::is_empty), "a_link_is_not_a_removal: {p}");
    assert!(p["pass"]["skipped"].to_string().contains("c.txt"), "{p}");
    sync_once(&phone, &boot, &b, "phone");
    assert_eq!(std::fs::read(b.join("c.txt")).ok().as_deref(), Some(&b"made on the phone\n"[..]));
    drop(procs);
}
