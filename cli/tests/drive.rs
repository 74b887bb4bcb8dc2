//! Pairing a person's own devices by a one-time code, with real processes:
//! a bootstrap node keeps the mailbox, `ionshard drive pair` on a device
//! prints the code, `ionshard drive join CODE` on a client completes the
//! exchange. A wrong code, a replayed one, an expired one and an unknown
//! one are each refused with their own message, and pair nothing.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::drive::*;
use common::{Procs, bin, json_out, s};

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

#[test]
fn a_client_keeps_a_tree_on_its_devices_through_a_new_one_and_two_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop, nobody) = paired_with_three(&mut procs, dir.path());
    // Before the drive exists, and with a short password: clear refusals.
    refused(&drive(&laptop, &boot, &["ls"]), "ls before setup", "not logged in");
    let o = bin()
        .args(["drive", "setup", "--dir", &s(&laptop), "--bootstrap", &boot])
        .env("IONSHARD_DRIVE_PASSWORD", "short")
        .output()
        .expect("setup");
    refused(&o, "a short password", "at least 8 characters");
    let set = json_out(&drive(&laptop, &boot, &["setup"]), "drive setup");
    assert!(set["recovery_code"].as_str().is_some_and(|c| c.len() > 20), "{set}");
    assert!(set["survives"].as_str().is_some_and(|s| s.contains("any 1 may be lost")), "{set}");
    refused(&drive(&laptop, &boot, &["setup"]), "a second setup", "keeps a drive already");

    // A tree of files: empty, small, several segments, deep, and an empty folder.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deep")).expect("mkdir");
    std::fs::create_dir_all(src.join("emptydir")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"hello drive\n").expect("write");
    std::fs::write(src.join("empty"), b"").expect("write");
    std::fs::write(src.join("big.bin"), common::image(9 << 20, 7)).expect("write");
    std::fs::write(src.join("sub/deep/c.txt"), b"deep").expect("write");
    let put = json_out(&drive(&laptop, &boot, &["put", &s(&src), "--to", "/docs"]), "drive put");
    assert_eq!(put["files"], 4, "{put}");
    assert_eq!(put["coding"], serde_json::json!([2, 1]), "{put}");
    let ls = json_out(&drive(&laptop, &boot, &["ls", "-r", "/docs"]), "drive ls");
    let paths: Vec<&str> =
        ls["entries"].as_array().expect("entries").iter().filter_map(|e| e["path"].as_str()).collect();
    for want in ["/docs/src/emptydir", "/docs/src/sub/deep/c.txt", "/docs/src/big.bin", "/docs/src/empty"] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }

    // Rename, move to the trash and back: no content moves.
    json_out(&drive(&laptop, &boot, &["mv", "/docs/src/a.txt", "/docs/src/renamed.txt"]), "drive mv");
    json_out(&drive(&laptop, &boot, &["rm", "/docs/src/sub"]), "drive rm");
    refused(
        &drive(&laptop, &boot, &["get", "/docs/src/sub", &s(&dir.path().join("x"))]),
        "a trashed folder",
        "not in the drive",
    );
    json_out(&drive(&laptop, &boot, &["restore", "--trash", "/docs/src/sub"]), "drive restore");

    // Read back byte for byte, then again with one device stopped.
    let mut want = files(&src);
    let a = want.remove("a.txt").expect("a");
    want.insert("renamed.txt".into(), a);
    let back = dir.path().join("back");
    json_out(&drive(&laptop, &boot, &["get", "/docs/src", &s(&back)]), "drive get");
    assert_eq!(files(&back), want);
    refused(&drive(&laptop, &boot, &["get", "/docs/src", &s(&back)]), "over local files", "--force");

    // A fourth device joins: after a login it has the drive, and balancing
    // moves shards onto it.
    common::peer(&mut procs, "stb", dir.path(), &boot, &nobody);
    let (child, out, code) = pair(&dir.path().join("stb"), "stb", &boot, "5m");
    json_out(&join(&laptop, "laptop", &boot, &code), "drive join");
    assert!(finish(child, out).0, "pairing stb");
    json_out(&drive(&laptop, &boot, &["login"]), "drive login");
    let b = json_out(&drive(&laptop, &boot, &["balance"]), "drive balance");
    let moved = b["balanced"]["moved_bytes"].as_u64().unwrap_or(0);
    assert!(moved > 0 && b["balanced"]["manifests_copied"].as_u64() > Some(0), "{b}");
    let stb = id_of(&dir.path().join("stb"));
    assert!(b["balanced"]["after"][&stb].as_u64() >= Some(moved), "{b}");

    // One device stops: everything still reads.
    procs.kill("tv");
    let again = dir.path().join("again");
    let got = json_out(&drive(&laptop, &boot, &["get", "/docs/src", &s(&again)]), "drive get, one device down");
    assert_eq!(got["files"], 4, "{got}");
    assert_eq!(files(&again), want, "everything reads with one device stopped");
    // It is gone for good: the owner says so, balancing rebuilds its
    // shards on the others, and then another device may stop.
    refused(&drive(&laptop, &boot, &["balance"]), "balancing with a device down", "did not answer");
    json_out(
        &bin().args(["drive", "revoke", "tv", "--client", "--json", "--dir", &s(&laptop)]).output().expect("revoke"),
        "drive revoke",
    );
    let b = json_out(&drive(&laptop, &boot, &["balance"]), "drive balance after a loss");
    assert!(b["balanced"]["rebuilt_bytes"].as_u64() > Some(0), "{b}");
    assert!(b["balanced"]["unrecoverable"].as_array().is_some_and(Vec::is_empty), "{b}");
    procs.kill("router");
    let third = dir.path().join("third");
    json_out(&drive(&laptop, &boot, &["get", "/docs/src", &s(&third)]), "drive get, two of four gone");
    assert_eq!(files(&third), want, "everything reads after the rebuild with a second device stopped");

    // A put killed halfway leaves no half file: the file is either not
    // there or whole; run again, it completes (sending what is missing).
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, common::image(24 << 20, 11)).expect("write");
    let mut child = bin()
        .args(["drive", "put", &s(&cut), "--to", "/cut", "--json", "--dir", &s(&laptop), "--bootstrap", &boot])
        .env("IONSHARD_DRIVE_PASSWORD", "correct horse battery")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("drive put");
    std::thread::sleep(Duration::from_millis(700));
    let _ = child.kill();
    let _ = child.wait();
    let ls = drive(&laptop, &boot, &["ls", "-r", "/"]);
    if String::from_utf8_lossy(&ls.stdout).contains("/cut/cut.bin") {
        let whole = dir.path().join("cut-back.bin");
        json_out(&drive(&laptop, &boot, &["get", "/cut/cut.bin", &s(&whole)]), "get after a kill");
        assert_eq!(std::fs::read(&whole).expect("read"), std::fs::read(&cut).expect("read"), "named means whole");
    }
    let again = json_out(&drive(&laptop, &boot, &["put", &s(&cut), "--to", "/cut"]), "put again");
    eprintln!("put again after a kill: {again}");
    let whole = dir.path().join("cut-again.bin");
    json_out(&drive(&laptop, &boot, &["get", "/cut/cut.bin", &s(&whole)]), "get");
    assert_eq!(std::fs::read(&whole).expect("read"), std::fs::read(&cut).expect("read"));

    // Names that would escape the drive, over every way in.
    refused(&drive(&laptop, &boot, &["put", &s(&src), "--to", "../etc"]), "put to ..", "is not a name");
    refused(&drive(&laptop, &boot, &["mv", "/docs/src", "/docs/../../x"]), "mv to ..", "is not a name");
    refused(&drive(&laptop, &boot, &["get", "/docs/../../etc/passwd"]), "get ..", "is not a name");
    refused(&drive(&laptop, &boot, &["ls", "/docs\u{1}x"]), "a control character", "control character");

    // Logged out: nothing opens; the wrong password neither; the right one does.
    json_out(&drive(&laptop, &boot, &["logout"]), "drive logout");
    refused(&drive(&laptop, &boot, &["ls"]), "ls after logout", "not logged in");
    let o = bin()
        .args(["drive", "login", "--dir", &s(&laptop), "--bootstrap", &boot])
        .env("IONSHARD_DRIVE_PASSWORD", "wrong horse battery")
        .output()
        .expect("login");
    refused(&o, "a wrong password", "wrong password");
    json_out(&drive(&laptop, &boot, &["login"]), "drive login");
    assert!(
        json_out(&drive(&laptop, &boot, &["ls", "/docs/src"]), "drive ls")["entries"]
            .as_array()
            .is_some_and(|e| e.len() == 5)
    );
    // An unpaired client is told to pair first.
    refused(&drive(&dir.path().join("stranger"), &boot, &["ls"]), "an unpaired client", "paired with no device");
    drop(procs);
}

/// One raw HTTP request to the served drive; its status line.
fn http(addr: &str, head: &str, body: &[u8], send: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let auth = data_encoding::BASE64.encode(format!("me:{PASSWORD}").as_bytes());
    let req = format!(
        "{head}\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("head");
    if s.write_all(&body[..send.min(body.len())]).is_err() || send < body.len() {
        return String::new(); // cut off: no answer expected
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn webdav_clients_round_trip_through_the_drive_and_litmus_scores_it() {
    if skip_without(&["rclone", "cadaver", "litmus"], "rclone cadaver litmus", "IONSHARD_REQUIRE_WEBDAV") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::new(&dir.path().join("logs"));
    let (boot, laptop) = drive_of_three(&mut procs, dir.path());
    let (serve, first) = serve(dir.path(), &laptop, &boot, "serve", &[]);
    // Stopped with the nodes, also when an assertion fails.
    procs.children.push(("drive-serve".into(), serve));
    // WebDAV is at /dav/; the web page at /.
    let url = first["dav"].as_str().expect("dav url").to_string();
    let addr = first["url"].as_str().expect("url").trim_start_matches("http://").trim_end_matches('/').to_string();
    let obscured = String::from_utf8(
        std::process::Command::new("rclone").args(["obscure", PASSWORD]).output().expect("rclone obscure").stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let rclone = |args: &[&str], pass: &str| {
        std::process::Command::new("rclone")
            .args(args)
            .args(["--webdav-url", &url, "--webdav-user", "me", "--webdav-pass", pass, "--config", "/dev/null"])
            .output()
            .expect("rclone")
    };
    let ok = |o: std::process::Output, what: &str| {
        assert!(o.status.success(), "rclone {what}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    // rclone: a tree in, renamed, moved, deleted, and out again.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deep")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"through webdav\n").expect("write");
    std::fs::write(src.join("empty"), b"").expect("write");
    std::fs::write(src.join("big.bin"), common::image(7 << 20, 3)).expect("write");
    std::fs::write(src.join("sub/deep/c.txt"), b"deep").expect("write");
    ok(rclone(&["copy", &s(&src), ":webdav:/docs"], &obscured), "copy in");
    ok(rclone(&["moveto", ":webdav:/docs/a.txt", ":webdav:/docs/renamed.txt"], &obscured), "moveto");
    ok(rclone(&["mkdir", ":webdav:/docs/new"], &obscured), "mkdir");
    ok(rclone(&["moveto", ":webdav:/docs/sub", ":webdav:/docs/new/sub"], &obscured), "move a folder");
    ok(rclone(&["deletefile", ":webdav:/docs/empty"], &obscured), "deletefile");
    let back = dir.path().join("back");
    ok(rclone(&["copy", ":webdav:/docs", &s(&back)], &obscured), "copy out");
    let mut want = files(&src);
    want.remove("empty");
    let a = want.remove("a.txt").expect("a");
    want.insert("renamed.txt".into(), a);
    let c = want.remove("sub/deep/c.txt").expect("c");
    want.insert("new/sub/deep/c.txt".into(), c);
    assert_eq!(files(&back), want, "what rclone reads back is what it put, renamed and moved");

    // The CLI reads what WebDAV wrote, byte for byte, once the served node
    // has written its tree (every half second: the last change, the
    // removal, may come a write after the others).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = drive(&laptop, &boot, &["ls", "-r", "/docs"]);
        let listed = String::from_utf8_lossy(&o.stdout);
        if o.status.success() && listed.contains("/docs/new/sub/deep/c.txt") && !listed.contains("/docs/empty") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI never saw WebDAV's changes: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let via_cli = dir.path().join("via-cli");
    json_out(&drive(&laptop, &boot, &["get", "/docs", &s(&via_cli)]), "drive get");
    assert_eq!(files(&via_cli), want, "the CLI reads the tree WebDAV wrote, byte for byte");

    // cadaver, with the password from a .netrc, commands on stdin.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let host = addr.split(':').next().expect("host");
    std::fs::write(home.join(".netrc"), format!("machine {host}\nlogin me\npassword \"{PASSWORD}\"\n")).expect("netrc");
    std::fs::set_permissions(home.join(".netrc"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::write(dir.path().join("cad.txt"), b"from cadaver\n").expect("write");
    let out = dir.path().join("cad-back.txt");
    let script = format!(
        "cd docs\nput {} cad.txt\nmove cad.txt cad2.txt\nget cad2.txt {}\ndelete renamed.txt\nquit\n",
        s(&dir.path().join("cad.txt")),
        s(&out)
    );
    let mut cad = std::process::Command::new("cadaver")
        .arg(&url)
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cadaver");
    std::io::Write::write_all(&mut cad.stdin.take().expect("stdin"), script.as_bytes()).expect("script");
    let cad = cad.wait_with_output().expect("cadaver");
    assert_eq!(
        std::fs::read(&out).ok().as_deref(),
        Some(&b"from cadaver\n"[..]),
        "cadaver: {}",
        String::from_utf8_lossy(&cad.stdout)
    );
    let listed = ok(rclone(&["lsf", ":webdav:/docs"], &obscured), "lsf");
    assert!(
        listed.contains("cad2.txt") && !listed.contains("cad.txt\n") && !listed.contains("renamed.txt"),
        "{listed}"
    );

    // A partial write (Content-Range) changes those bytes and keeps the rest.
    let status = http(&addr, "PUT /dav/docs/cad2.txt HTTP/1.1\r\nContent-Range: bytes 0-3/*", b"FROM", 4);
    assert!(status.contains(" 2"), "a ranged PUT: {status}");
    let cat = ok(rclone(&["cat", ":webdav:/docs/cad2.txt"], &obscured), "cat");
    assert_eq!(cat, "FROM cadaver\n", "the ranged write changed the first bytes only");

    // Refused: a wrong password, names that climb out, an upload cut off.
    let o = rclone(&["lsf", ":webdav:/"], "wrong");
    assert!(!o.status.success(), "a wrong password lists nothing");
    for bad in ["/dav/docs/..%2f..%2fescape.txt", "/dav/docs/a%00b.txt", "/dav/docs/ctl%01.txt"] {
        let status = http(&addr, &format!("PUT {bad} HTTP/1.1"), b"x", 1);
        assert!(status.contains(" 4"), "PUT {bad}: {status}");
    }
    let big = vec![7u8; 4 << 20];
    let _ = http(&addr, "PUT /dav/docs/half.bin HTTP/1.1", &big, 1 << 20);
    std::thread::sleep(Duration::from_millis(1500));
    let listed = ok(rclone(&["lsf", "-R", ":webdav:/"], &obscured), "lsf");
    assert!(!listed.contains("half.bin") && !listed.contains("escape"), "{listed}");

    // litmus, the WebDAV conformance suite: its score goes in the README.
    let o = std::process::Command::new("timeout")
        .args(["600", "litmus", &url, "me", PASSWORD])
        .current_dir(dir.path())
        .output()
        .expect("litmus");
    let text = String::from_utf8_lossy(&o.stdout);
    let summaries: Vec<&str> = text.lines().filter(|l| l.starts_with("<- summary")).collect();
    eprintln!("litmus:\n{}", summaries.join("\n"));
    for suite in ["basic", "copymove", "props", "locks", "http"] {
        let line = summaries
            .iter()
            .find(|l| l.contains(&format!("`{suite}'")))
            .unwrap_or_else(|| panic!("litmus ran no {suite} suite:\n{text}"));
        assert!(line.contains("0 failed"), "litmus {suite}: {line}");
    }
    drop(procs);
}
