//! Two friends on one network, as real processes: Alice (a laptop with a
//! drive on three devices) and Bob (a laptop alone) pair as friends by a
//! code. Alice sends Bob a text and a 100 MB file while Bob is offline: her
//! devices hold them, sealed, and deliver them when Bob comes online; Bob's
//! answer waits on his laptop until Alice comes online. Bob cannot read
//! Alice's drive. A share link Alice makes opens for Bob's node, not for a
//! stranger's, and no more once revoked or expired.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::drive::*;
use common::{Procs, bin, image, json_out, s};
use serde_json::Value;

fn msg(dir: &Path, boot: &str, args: &[&str]) -> std::process::Output {
    bin()
        .args(["drive", "msg"])
        .args(args)
        .args(["--json", "--dir", &s(dir), "--bootstrap", boot])
        .output()
        .expect("drive msg")
}

/// `drive msg list --wait` in the background: the node online, receiving.
fn online(dir: &Path, boot: &str, log: &Path) -> Child {
    bin()
        .args(["drive", "msg", "list", "--wait", "3m", "--json", "--dir", &s(dir), "--bootstrap", boot])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("drive msg list --wait")
}

fn letters(dir: &Path, boot: &str) -> Vec<Value> {
    let v = json_out(&msg(dir, boot, &["list"]), "drive msg list");
    v["letters"].as_array().expect("letters").clone()
}

/// Wait (at most `secs`) until `dir` lists `n` received letters.
fn received(dir: &Path, boot: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got: Vec<Value> = letters(dir, boot).into_iter().filter(|l| l["incoming"] == true).collect();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} received {} of {n} letters in {secs} s", dir.display(), got.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Alice and Bob pair as friends (both give --friend).
fn befriend(dir: &Path, alice: &Path, bob: &Path, boot: &str) {
    let mut offer = bin()
        .args(["drive", "pair", "--friend", "--json", "--dir", &s(alice), "--name", "alice", "--bootstrap", boot])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("logs/pair-friend.log")).expect("log"))
        .spawn()
        .expect("drive pair --friend");
    let code = common::first_line(&mut offer)["code"].as_str().expect("code").to_string();
    let o = bin()
        .args(["drive", "join", &code, "--friend", "--json", "--dir", &s(bob), "--name", "bob", "--bootstrap", boot])
        .output()
        .expect("join");
    let joined = json_out(&o, "drive join --friend");
    assert_eq!(joined["paired"]["role"], "friend");
    let deadline = Instant::now() + Duration::from_secs(60);
    while offer.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "drive pair --friend did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn friends_exchange_letters_and_a_large_file_while_offline_and_open_share_links() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut procs = Procs::new(&dir.join("logs"));
    let (boot, alice) = drive_of_three(&mut procs, dir);
    let bob = dir.join("bob");
    befriend(dir, &alice, &bob, &boot);

    // Bob is offline (no node of his runs): Alice's devices take the letters.
    let t = json_out(&msg(&alice, &boot, &["send", "bob", "hello Bob"]), "send a text");
    assert!(t["state"].as_str().expect("state").starts_with("held by"), "{t}");
    let big = dir.join("holiday.mov");
    let bytes = image(100 << 20, 7);
    std::fs::write(&big, &bytes).expect("file");
    let f = json_out(&msg(&alice, &boot, &["send", "bob", "the film", "--file", &s(&big)]), "send a file");
    assert!(f["state"].as_str().expect("state").starts_with("held by"), "{f}");
    // Nothing waits on Alice's laptop: the devices hold it all.
    let outbox = alice.join("drive").join("outbox");
    let left = std::fs::read_dir(&outbox)
        .expect("outbox")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'));
    assert_eq!(left.count(), 0, "left in the outbox");
    // A device holds only ciphertext: the text is nowhere in its files.
    let held = files(&dir.join("nas").join("drive").join("held"));
    assert!(!held.is_empty(), "nas holds nothing");
    assert!(held.values().all(|b| !b.windows(9).any(|w| w == b"hello Bob")), "the text is readable on a device");

    // Bob comes online: the devices deliver.
    let bob_online = online(&bob, &boot, &dir.join("logs/bob-online.log"));
    let got = received(&bob, &boot, 2, 240);
    let text = got.iter().find(|l| l["text"] == "hello Bob").expect("the text arrived");
    assert_eq!(text["name"], "alice");
    let film = got.iter().find(|l| l["text"] == "the film").expect("the file arrived");
    let path = film["file"]["path"].as_str().expect("saved");
    assert!(path.starts_with(&s(&bob.join("drive").join("received"))), "{path}");
    assert!(std::fs::read(path).expect("saved file") == bytes, "the film is not byte-exact");
    stop(bob_online);

    // Bob answers while Alice is offline: it waits on his laptop (he has
    // no devices), and goes out when both are online.
    let a = json_out(&msg(&bob, &boot, &["send", "alice", "thanks!"]), "bob answers");
    assert_eq!(a["state"], "waiting", "{a}");
    let alice_online = online(&alice, &boot, &dir.join("logs/alice-online.log"));
    let bob_online = online(&bob, &boot, &dir.join("logs/bob-online-2.log"));
    let got = received(&alice, &boot, 1, 180);
    assert_eq!((got[0]["text"].as_str(), got[0]["name"].as_str()), (Some("thanks!"), Some("bob")));
    stop(alice_online);
    // Alice's list says her letters were delivered once her devices hold
    // them no more (both carried each; Bob stays online meanwhile).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = json_out(&msg(&alice, &boot, &["list", "--wait", "1s"]), "list --wait");
        let sent: Vec<Value> =
            v["letters"].as_array().expect("letters").iter().filter(|l| l["incoming"] == false).cloned().collect();
        if sent.iter().all(|l| l["state"] == "delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "sent letters not marked delivered: {sent:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    stop(bob_online);
    // Bob got each letter once, though two devices carried each.
    assert_eq!(letters(&bob, &boot).iter().filter(|l| l["incoming"] == true).count(), 2);

    // A friend is not the drive's: Bob's node asks a device for the drive
    // and is refused (he is not paired with it), and reads nothing.
    let nas = id_of(&dir.join("nas"));
    let forged = format!(
        r#"{{"format":2,"pairs":[{{"peer":"{nas}","name":"nas","role":"device","paired_at":1}}],"revoked":[]}}"#
    );
    let mut pairs: Value =
        serde_json::from_slice(&std::fs::read(bob.join("drive/pairs.json")).expect("pairs")).expect("json");
    pairs["pairs"]
        .as_array_mut()
        .expect("pairs")
        .push(serde_json::from_str::<Value>(&forged).expect("forged")["pairs"][0].clone());
    std::fs::write(bob.join("drive/pairs.json"), serde_json::to_vec(&pairs).expect("json")).expect("write");
    refused(&drive(&bob, &boot, &["login"]), "a friend logging in to the drive", "not paired");
    refused(&drive(&bob, &boot, &["ls", "/"]), "a friend listing the drive", "not logged in");

    // Share links: Alice's drive node serves them to friends' nodes.
    std::fs::create_dir_all(dir.join("docs")).expect("docs");
    std::fs::write(dir.join("docs/a.txt"), b"shared with a friend").expect("a");
    std::fs::write(dir.join("docs/b.txt"), b"and this").expect("b");
    json_out(&drive(&alice, &boot, &["put", &s(&dir.join("docs")), "--to", "/"]), "put docs");
    let (serve_child, _) = serve(dir, &alice, &boot, "alice-serve", &[]);
    let serving = ChildGuard(serve_child);
    let link = json_out(&drive(&alice, &boot, &["share", "/docs", "--for", "1h"]), "share");
    let friend_link = link["friend_link"].as_str().expect("friend link").to_string();
    let open = |who: &Path, extra: &[&str]| {
        bin()
            .args(["drive", "open", &friend_link])
            .args(extra)
            .args(["--json", "--dir", &s(who), "--bootstrap", &boot])
            .output()
            .expect("drive open")
    };
    let listing = json_out(&open(&bob, &[]), "bob opens the folder");
    let names: Vec<&str> =
        listing["listing"].as_array().expect("listing").iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listing}");
    assert!(names.contains(&"a.txt") && names.contains(&"b.txt"), "{listing}");
    let out = dir.join("got-a.txt");
    json_out(&open(&bob, &["--path", "a.txt", "--out", &s(&out)]), "bob reads a file");
    assert_eq!(std::fs::read(&out).expect("got"), b"shared with a friend");
    // Outside the shared folder: nothing.
    refused(
        &open(&bob, &["--path", "../x", "--out", &s(&dir.join("x"))]),
        "climbing out of a link",
        "not in this link",
    );
    // A stranger's node with the link: refused, it is not a friend.
    refused(&open(&dir.join("eve"), &[]), "a stranger opening a link", "not a friend");
    // Revoked: opens no more, at once.
    let id = link["id"].as_str().expect("id");
    json_out(&drive(&alice, &boot, &["unshare", id]), "unshare");
    refused(&open(&bob, &[]), "a revoked link", "revoked");
    // Expired.
    let short = json_out(&drive(&alice, &boot, &["share", "/docs/a.txt", "--for", "2s"]), "share briefly");
    std::thread::sleep(Duration::from_secs(3));
    let o = bin()
        .args([
            "drive",
            "open",
            short["friend_link"].as_str().expect("link"),
            "--json",
            "--dir",
            &s(&bob),
            "--bootstrap",
            &boot,
        ])
        .output()
        .expect("open");
    refused(&o, "an expired link", "expired");
    drop(serving);
}

/// Kills its child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
