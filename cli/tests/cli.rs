//! The `ionshard chunk` / `unchunk` commands, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The binary, without the defaults a shell may hold (`eval "$(ionshard
/// sandbox up)"`).
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ionshard"));
    for k in harness::procs::ENV_DEFAULTS {
        c.env_remove(k);
    }
    c
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn chunk(dir: &Path, file: &Path, extra: &[&str]) -> Value {
    let out = bin()
        .arg("chunk")
        .arg(file)
        .arg("--out")
        .arg(dir.join("shards"))
        .arg("--secret")
        .arg(dir.join("tenant.secret"))
        .args(extra)
        .arg("--json")
        .output()
        .expect("run");
    json(&out)
}

fn unchunk(dir: &Path, cap: &str, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("unchunk")
        .arg(cap)
        .arg("--shards")
        .arg(dir.join("shards"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--json")
        .output()
        .expect("run")
}

fn shard(dir: &Path, c: &Value, segment: usize, shard: usize) -> PathBuf {
    dir.join("shards").join(c["segments"][segment]["shards"][shard].as_str().expect("cid"))
}

#[test]
fn chunk_then_unchunk_with_losses_corruption_and_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let v1 = testdata("firmware-v1.img");
    let v1_bytes = std::fs::read(&v1).expect("v1");
    let args = ["--data-shards", "6", "--parity-shards", "2", "--segment-size", "1MiB"];
    let c = chunk(d, &v1, &args);
    let cap = c["capability"].as_str().expect("capability").to_string();
    assert!(cap.starts_with("ionshard:r1:"));
    assert!(c["compressed_chunks"].as_u64().expect("n") > 0, "the text area compresses");
    let mode = std::fs::metadata(d.join("tenant.secret")).expect("secret").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let segments = c["segments"].as_array().expect("segments").len();
    assert!(segments >= 2);

    let out = d.join("restored.img");
    let r = json(&unchunk(d, &cap, &out, &[]));
    assert_eq!(std::fs::read(&out).expect("restored"), v1_bytes);
    assert_eq!(r["rebuilt_ranges"], 0);

    // Lose data shard 0 of every segment and corrupt data shard 1 of segment 0:
    // still byte-exact, with the corrupt shard named.
    for s in 0..segments {
        std::fs::remove_file(shard(d, &c, s, 0)).expect("rm");
    }
    let victim = shard(d, &c, 0, 1);
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).expect("write");
    let out2 = d.join("restored2.img");
    let r = json(&unchunk(d, &cap, &out2, &[]));
    assert_eq!(std::fs::read(&out2).expect("restored"), v1_bytes);
    assert!(r["rebuilt_ranges"].as_u64().expect("n") > 0);
    let problems = r["problems"].to_string();
    let name = victim.file_name().expect("name").to_string_lossy().to_string();
    assert!(problems.contains(&name) && problems.contains("do not match"), "{problems}");

    // One more loss in segment 0 is one too many: a clear error, nothing written.
    std::fs::remove_file(shard(d, &c, 0, 6)).expect("rm parity");
    let out3 = d.join("restored3.img");
    let r = unchunk(d, &cap, &out3, &[]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(err.contains("cannot rebuild segment 0") && err.contains("nothing was written"), "{err}");
    assert!(!out3.exists());
    let leftovers = std::fs::read_dir(d)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .count();
    assert_eq!(leftovers, 0, "temporary files left behind");

    // v2 next to v1: with --known only new chunks are stored; with --seed little is read.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let d2 = dir2.path();
    let c1 = chunk(d2, &v1, &args);
    let cap1 = c1["capability"].as_str().expect("cap1");
    let v2 = testdata("firmware-v2.img");
    let mut known = args.to_vec();
    known.extend(["--known", cap1]);
    let c2 = chunk(d2, &v2, &known);
    let new_bytes = c2["new_segment_bytes"].as_u64().expect("n");
    assert!(new_bytes < 300_000, "v2 stored {new_bytes} new bytes");
    let cap2 = c2["capability"].as_str().expect("cap2");
    let out4 = d2.join("v2.img");
    let r = json(&unchunk(d2, cap2, &out4, &["--seed", v1.to_str().expect("utf8")]));
    assert_eq!(std::fs::read(&out4).expect("v2 restored"), std::fs::read(&v2).expect("v2"));
    let fetched = r["fetched_bytes"].as_u64().expect("n");
    assert!(fetched < 400_000, "fetched {fetched} with the seed");
    assert!(r["seed_chunks"].as_u64().expect("n") > 0);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let v1 = testdata("firmware-v1.img");
    let c = chunk(d, &v1, &[]);
    let cap = c["capability"].as_str().expect("capability").to_string();
    let out = d.join("never.img");

    let r = unchunk(d, "ionshard:r1:nonsense", &out, &[]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("malformed read capability"));

    let last = cap.chars().last().expect("char");
    let damaged = format!("{}{}", &cap[..cap.len() - 1], if last == 'a' { 'b' } else { 'a' });
    let r = unchunk(d, &damaged, &out, &[]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    assert!(err.contains("capability"), "{err}");

    let secret = d.join("tenant.secret");
    let r =
        bin().args(["chunk", "/nonexistent/file", "--out"]).arg(d).arg("--secret").arg(&secret).output().expect("run");
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/file"));

    let r = bin()
        .arg("chunk")
        .arg(&v1)
        .arg("--out")
        .arg(d)
        .args(["--data-shards", "200", "--parity-shards", "100", "--secret"])
        .arg(&secret)
        .output()
        .expect("run");
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("at most 255"));

    std::fs::write(d.join("short.secret"), b"too short").expect("write");
    let r = bin()
        .arg("chunk")
        .arg(&v1)
        .arg("--out")
        .arg(d)
        .arg("--secret")
        .arg(d.join("short.secret"))
        .output()
        .expect("run");
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("expected 32"));
    assert!(!out.exists());

    // A direct port the node would not use is an error, not silently ignored.
    let tcp = "/ip4/127.0.0.1/tcp/0";
    let cases: [(&[&str], &str); 3] = [
        (&["--role", "bootstrap", "--listen", tcp], "bootstrap node"),
        (&["--no-direct", "--listen", tcp], "turned off"),
        (&[], "there is none"),
    ];
    for (extra, why) in cases {
        let mut child = bin()
            .args(["node", "--direct-port", "4002", "--dir"])
            .arg(d.join("node"))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`node --direct-port 4002 {extra:?}` started instead of refusing");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read");
        assert!(!status.success());
        assert!(err.contains("direct port 4002 would not be used") && err.contains(why), "{extra:?}: {err}");
    }
}

#[test]
fn replication_k1_writes_one_file_per_segment_and_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let v1 = testdata("firmware-v1.img");
    let c = chunk(d, &v1, &["--data-shards", "1", "--parity-shards", "2", "--segment-size", "1MiB"]);
    // With k = 1 every parity shard equals the data shard: same CID, one file.
    let segments = c["segments"].as_array().expect("segments");
    assert_eq!(c["shards_written"].as_u64(), Some(segments.len() as u64));
    let out = d.join("restored.img");
    let cap = c["capability"].as_str().expect("cap");
    json(&unchunk(d, cap, &out, &[]));
    assert_eq!(std::fs::read(&out).expect("restored"), std::fs::read(&v1).expect("v1"));
}

/// `cli/layout/*.ld` go to the linker only in optimised builds (which the
/// tests are not), so their form is checked here: a line the linker
/// script's lexer would split, or a section the script would not place,
/// would break or silently undo every release build.
#[test]
fn the_fetch_layout_is_a_script_the_linker_reads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("layout");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cli/layout (scripts/fetch-layout.sh makes it)")
        .map(|e| e.expect("a layout file").path())
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("fetch.ld")), "release's layout, the one every profile falls back to");
    for path in files {
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("ld"), "{}", path.display());
        linker_script(&std::fs::read_to_string(&path).expect("a layout file"));
    }
}

fn linker_script(text: &str) {
    let body = text.split_once("*/").expect("the file opens with a comment saying where it came from").1;
    let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.first(), Some(&"SECTIONS {"));
    assert_eq!(lines.get(1), Some(&"  .text.hot : {"));
    assert_eq!(lines.iter().rev().take(2).copied().collect::<Vec<_>>(), ["} INSERT BEFORE .text;", "  }"]);
    let names = &lines[2..lines.len() - 2];
    assert!(names.len() > 1000, "only {} functions: was the profiled fetch cut short?", names.len());
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_$.*".contains(&b));
    for line in names {
        let inner = line.strip_prefix("    *(").and_then(|l| l.strip_suffix(')'));
        let (plain, cold) =
            inner.and_then(|l| l.split_once(' ')).unwrap_or_else(|| panic!("not a section line: {line}"));
        let name = plain.strip_prefix(".text.").unwrap_or_else(|| panic!("not a .text section: {line}"));
        assert_eq!(cold.strip_prefix(".text.unlikely."), Some(name), "{line}");
        assert!(token(name), "a name the linker would not read as one pattern: {line}");
    }
}
