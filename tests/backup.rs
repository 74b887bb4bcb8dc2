//! Business backups on real nodes: a bootstrap, peers and an SPN on
//! loopback, a backup host that encodes everything itself.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backup::{Repo, RepoKey, RestoreOptions, RunOptions, ScanOptions};
use common::{Net, device, image, network};

/// What a tree holds, as a restore must give it back.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    File { mode: u32, mtime: i64, bytes: Vec<u8> },
    Dir { mode: u32 },
    Link { target: String },
}

fn describe(root: &Path) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut budget = 100_000;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            budget -= 1;
            assert!(budget > 0, "tree too large for the test");
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(root).expect("under root").display().to_string();
            let m = std::fs::symlink_metadata(&p).expect("meta");
            let item = if m.file_type().is_symlink() {
                Item::Link { target: std::fs::read_link(&p).expect("link").display().to_string() }
            } else if m.is_dir() {
                stack.push(p.clone());
                Item::Dir { mode: m.permissions().mode() & 0o7777 }
            } else {
                Item::File {
                    mode: m.permissions().mode() & 0o7777,
                    mtime: m.mtime(),
                    bytes: std::fs::read(&p).expect("read"),
                }
            };
            out.insert(rel, item);
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options().write(true).open(path).expect("open").set_modified(t).expect("mtime");
}

/// A tree of mixed files: text that compresses, noise that does not,
/// nested folders, an empty file, an executable, a symlink and a hard link.
fn make_tree(root: &Path) {
    for i in 0..40u64 {
        let text = format!("line {i} of a document that a law firm keeps\n").repeat(200 + i as usize * 10);
        write(&root.join(format!("docs/letters/{i:03}.txt")), text.as_bytes());
    }
    write(&root.join("data/big.bin"), &image(3_000_000, 7));
    write(&root.join("data/medium.bin"), &image(400_000, 8));
    write(&root.join("empty"), b"");
    write(&root.join("bin/run.sh"), b"#!/bin/sh\necho hello\n");
    std::fs::set_permissions(root.join("bin/run.sh"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("../data/big.bin", root.join("bin/big-link")).expect("symlink");
    // Backed up as it is; a restore does not create it (it points outside the target).
    std::os::unix::fs::symlink("/etc/passwd", root.join("bin/passwd-link")).expect("symlink");
    std::fs::hard_link(root.join("data/medium.bin"), root.join("data/medium-hardlink.bin")).expect("hard link");
    set_mtime(&root.join("docs/letters/000.txt"), 1_600_000_000);
}

struct Host {
    repo: Repo,
    _cache: tempfile::TempDir,
}

fn host(net: &Net, name: &str) -> Host {
    let cache = tempfile::tempdir().expect("cache");
    let spn = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let key = RepoKey::generate(name);
    let repo = Repo::new(spn, key, cache.path().to_path_buf());
    repo.init().expect("init");
    Host { repo, _cache: cache }
}

fn options(paths: &[PathBuf]) -> RunOptions {
    RunOptions {
        scan: ScanOptions { paths: paths.to_vec(), excludes: vec![], one_file_system: false },
        tags: vec!["nightly".into()],
        host: "host-a".into(),
        coding: (4, 2),
        parent: None,
        force: false,
    }
}

/// A network of `peers` peers, a device, a host with repository `repo`,
/// and a work folder whose `dir` the test fills.
async fn setup(peers: usize, repo: &str, dir: &str) -> (Net, common::Node, Host, tempfile::TempDir, PathBuf) {
    let net = network(peers, None).await;
    let dev = device(&net).await;
    let h = host(&net, repo);
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join(dir);
    (net, dev, h, work, src)
}

/// Back up `src` at 2+2 and restore it into a fresh folder (a new `t`
/// under it): the report, where `src` arrived, and the folder to keep.
async fn back_up_and_restore(
    h: &Host,
    dev: &common::Node,
    src: &Path,
) -> (backup::RestoreReport, PathBuf, tempfile::TempDir) {
    let mut o = options(&[src.to_path_buf()]);
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(s.id.clone(), target.path().join("t"));
    let r = backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    let at = target.path().join("t").join(src.strip_prefix("/").expect("abs"));
    (r, at, target)
}

/// Restore `snapshot` and describe what arrived under the source's path.
async fn restored(h: &Host, dev: &net::Client, snapshot: &str, src: &Path) -> BTreeMap<String, Item> {
    let target = tempfile::tempdir().expect("target");
    let o = RestoreOptions::new(snapshot.to_string(), target.path().to_path_buf());
    let r = backup::restore(&h.repo, dev, &o, Arc::new(client::Hidden)).await.expect("restore");
    // The one symlink that leaves the target is reported, not made.
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(r.skipped[0].path.ends_with("bin/passwd-link") && r.skipped[0].why.contains("outside"), "{:?}", r.skipped);
    let at = target.path().join(src.strip_prefix("/").expect("absolute"));
    assert!(!target.path().join(".ionshard-restore").exists(), "the scratch folder is gone");
    let mut got = describe(&at);
    assert!(!got.contains_key("bin/passwd-link"));
    got.insert("bin/passwd-link".into(), Item::Link { target: "/etc/passwd".into() });
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tree_backed_up_twice_restores_both_snapshots_byte_exact() {
    let (net, dev, h, _work, src) = setup(6, "lawfirm", "src").await;
    make_tree(&src);
    let first_state = describe(&src);
    let o = options(std::slice::from_ref(&src));
    let one = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("first backup");
    let s1 = one.snapshot;
    assert!(s1.skipped.is_empty(), "{:?}", s1.skipped);
    assert_eq!(s1.stats.files, 45, "{:?}", s1.stats);
    assert!(s1.stats.bytes_read > 3_000_000);

    // Change, add, delete and rename.
    let mut big = image(3_000_000, 7);
    big[1_500_000..1_500_100].copy_from_slice(&[0xAB; 100]);
    write(&src.join("data/big.bin"), &big);
    write(&src.join("docs/new.txt"), b"a new document\n");
    std::fs::remove_file(src.join("docs/letters/005.txt")).expect("delete");
    std::fs::rename(src.join("docs/letters/006.txt"), src.join("docs/letters/renamed.txt")).expect("rename");
    let second_state = describe(&src);
    let two = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("second backup");
    let s2 = two.snapshot;
    assert_eq!(s2.parent.as_deref(), Some(s1.id.as_str()));
    // Only what changed was read: the edited file, the new one and the renamed one.
    assert_eq!(s2.stats.files_read, 3, "{:?}", s2.stats);
    // Dedup: the edit stores a few chunks, not the 3 MB file again.
    assert!(s2.stats.new_plain_bytes < 300_000, "{:?}", s2.stats);

    assert_eq!(restored(&h, &dev.client, &s1.id, &src).await, first_state);
    assert_eq!(restored(&h, &dev.client, &s2.id, &src).await, second_state);
    let snaps = h.repo.snapshots().expect("snapshots");
    assert_eq!(snaps.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![s1.id.clone(), s2.id.clone()]);

    // The SPN holds no key and no plaintext of the backup.
    let key_hex = h.repo_key_text();
    let mut spn_bytes = Vec::new();
    for e in walk_files(&net._root.path().join("spn")) {
        spn_bytes.extend(std::fs::read(&e).unwrap_or_default());
    }
    assert!(!spn_bytes.is_empty());
    for needle in
        [b"line 7 of a document that a law firm keeps".as_slice(), key_hex.as_bytes(), &image(400_000, 8)[1000..1064]]
    {
        assert!(!contains(&spn_bytes, needle), "the SPN's files contain {:?}", String::from_utf8_lossy(&needle[..20]));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

impl Host {
    /// The secret's hex as the key file holds it.
    fn repo_key_text(&self) -> String {
        let text = self.repo.key().to_file_text();
        let v: serde_json::Value = serde_json::from_str(&text).expect("key json");
        v["secret"].as_str().expect("secret").to_string()
    }
}

/// Losing m peers loses nothing; a forgotten snapshot's data is gone from
/// every peer after prune, while a kept snapshot that shares chunks with it
/// still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_deletes_only_what_no_kept_snapshot_needs_and_restores_survive_m_lost_peers() {
    let (mut net, dev, h, _work, src) = setup(6, "telecom", "etc").await;
    write(&src.join("shared.conf"), &image(600_000, 1));
    write(&src.join("old-only.bin"), &image(900_000, 2));
    let o = options(std::slice::from_ref(&src));
    let s1 = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("first").snapshot;
    // The second snapshot rewrites shared.conf unchanged in content (a new
    // inode, so it is read again: its chunks dedup against the first's) and
    // drops old-only.bin.
    let bytes = std::fs::read(src.join("shared.conf")).expect("read");
    std::fs::remove_file(src.join("shared.conf")).expect("rm");
    write(&src.join("shared.conf"), &bytes);
    std::fs::remove_file(src.join("old-only.bin")).expect("rm");
    let two = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("second").snapshot;
    assert_eq!(two.stats.files_read, 1);
    assert!(two.stats.new_plain_bytes < 100_000, "shared chunks are not stored again: {:?}", two.stats);
    let kept_state = describe(&src);
    // The shards only the first snapshot's objects hold.
    let spn = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let shards_of = |cid: &str| -> std::collections::HashSet<String> { shards_of(&spn, cid).into_iter().collect() };
    let mut old: std::collections::HashSet<String> = shards_of(&s1.tree.manifest);
    old.extend(s1.data.iter().flat_map(|d| shards_of(&d.manifest)));
    let mut kept: std::collections::HashSet<String> = shards_of(&two.tree.manifest);
    kept.extend(two.data.iter().flat_map(|d| shards_of(&d.manifest)));
    let only_old: Vec<String> = old.difference(&kept).cloned().collect();
    assert!(!only_old.is_empty(), "the first snapshot has shards of its own");
    assert!(old.intersection(&kept).count() > 0, "the snapshots share segments");

    backup::forget_ids(&h.repo, std::slice::from_ref(&s1.id)).expect("forget");
    let p = backup::prune(&h.repo, 0, u64::MAX / 2).expect("prune");
    assert!(p.objects_deleted.len() >= 2, "{p:?}");
    // Within 30 s the deletes reach every peer.
    gone_from_every_peer(&net, &dev, &only_old, "the forgotten snapshot").await;
    assert!(h.repo.snapshot(&s1.id).is_err(), "its record, and the read keys in it, are gone");
    // Each copy deleted is acknowledged, signed by the peer that held it:
    // the acks of the deleted objects cover exactly the shards only they
    // held, and make the root a deletion attestation names.
    let mut acked = std::collections::HashSet::new();
    for object in &p.objects_deleted {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let d = loop {
            let d = spn.deletion(object).expect("deletion");
            if d.pending == 0 {
                break d;
            }
            assert!(std::time::Instant::now() < deadline, "{} deletes of {object} still pending", d.pending);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!((d.tenant.as_str(), d.unsigned.len(), d.gave_up.len()), ("telecom", 0, 0), "{d:?}");
        assert_eq!(d.acks.len() as u64, d.queued, "every queued delete acknowledged: {d:?}");
        let bytes: Vec<Vec<u8>> =
            d.acks.iter().map(|h| data_encoding::HEXLOWER.decode(h.as_bytes()).expect("hex")).collect();
        for b in &bytes {
            let a = proto::DeleteAck::from_bytes(b).expect("ack");
            a.verify().expect("signed by its peer");
            assert!(a.existed, "{a:?}");
            assert!(net.peers.iter().any(|p| p.client.peer_id() == a.peer), "acknowledged by a peer of the network");
            acked.insert(a.cid.to_string());
        }
        let (_, n) = ledger::deletion_root(&bytes).expect("the acks make a root");
        assert_eq!(n, d.queued);
    }
    let only_old_set: std::collections::HashSet<String> = only_old.iter().cloned().collect();
    assert!(only_old_set.is_subset(&acked), "every shard only the forgotten snapshot held is acknowledged");
    assert!(acked.is_disjoint(&kept), "no shard a kept snapshot uses is acknowledged deleted");
    // Another tenant sees no such deletion.
    let issued = spn
        .issue_token(&proto::api::NewToken { tenant: "rival".into(), label: "rival".into(), scope: Default::default() })
        .expect("token");
    let rival = client::Spn::new(&format!("http://{}", net.http), Some(issued.token)).expect("spn");
    let err = rival.deletion(&p.objects_deleted[0]).expect_err("another tenant's deletion").to_string();
    assert!(err.contains("404") || err.contains("not found") || err.contains("no object"), "{err}");

    // Two of six peers (m = 2) lost: the kept snapshot restores byte-exact.
    for _ in 0..2 {
        net.peers.pop().expect("peer").stop().await;
    }
    let target = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(two.id.clone(), target.path().to_path_buf());
    backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore with 2 peers lost");
    assert_eq!(describe(&target.path().join(src.strip_prefix("/").expect("abs"))), kept_state);
}

/// Every shard copy of `cids` gone from every peer within 30 s.
async fn gone_from_every_peer(net: &Net, dev: &common::Node, cids: &[String], what: &str) {
    let cids: Vec<chunker::Cid> = cids.iter().map(|c| c.parse().expect("cid")).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut left = 0;
        for peer in &net.peers {
            let has = dev.client.has_many(peer.client.peer_id(), cids.clone()).await.expect("has");
            left += has.iter().filter(|h| **h).count();
        }
        if left == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{left} shard copies of {what} are still on peers");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The shards of object `cid`'s segments.
fn shards_of(spn: &client::Spn, cid: &str) -> Vec<String> {
    let m = chunker::Manifest::from_bytes(&spn.manifest(cid, 1 << 30).expect("manifest"), &Default::default())
        .expect("parse");
    m.segments().iter().flat_map(|s| s.shards()).map(|c| c.to_string()).collect()
}

/// One file kept from a run keeps that run's whole data object alive, and
/// readable with the kept record's key. `prune` repacks it: the file's
/// bytes move to a new object under new keys, the kept snapshot (same id)
/// is rewritten to use it, and every shard of the old object, the deleted
/// file's bytes with them, leaves every peer. A put-only key's snapshot
/// that is rewritten stays marked as the put-only key's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_repacks_a_partly_used_object_and_the_deleted_files_bytes_leave_every_peer() {
    let (net, dev, h, work, src) = setup(6, "lawfirm", "clients").await;
    write(&src.join("kept/contract.bin"), &image(500_000, 21));
    write(&src.join("kept/empty"), b"");
    write(&src.join("gone/settlement.bin"), &image(2_000_000, 22));
    let o = options(std::slice::from_ref(&src));
    let one = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("first").snapshot;
    assert_eq!(one.data.len(), 1, "one run, one data object");
    let old = one.data[0].clone();
    std::fs::remove_dir_all(src.join("gone")).expect("rm");
    let two = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("second").snapshot;
    assert_eq!(two.stats.files_read, 0, "nothing changed that is still there");
    assert_eq!(two.data, vec![old.clone()], "the kept file is still read from the first run's object");
    let kept_state = describe(&src);
    // A put-only host backs up another tree three times: a.bin edited,
    // then b.bin dropped. Its second snapshot keeps b.bin from the first
    // run's object; its third (its newest) no longer uses that object.
    let (put, _put_spn, _put_cache) = put_only_host(&net, &h);
    let desk = work.path().join("desk");
    // (`image` takes odd seeds: 2n and 2n+1 are the same bytes.)
    write(&desk.join("a.bin"), &image(300_000, 41));
    write(&desk.join("b.bin"), &image(900_000, 43));
    let po = options(std::slice::from_ref(&desk));
    let p1 = backup::run(&put, None, &po, Arc::new(client::Hidden)).await.expect("put-only first").snapshot;
    write(&desk.join("a.bin"), &image(300_000, 45));
    let p2 = backup::run(&put, None, &po, Arc::new(client::Hidden)).await.expect("put-only second").snapshot;
    assert_eq!(p2.data.len(), 2, "b.bin from the first object, a.bin from its own");
    let desk_state = describe(&desk);
    std::fs::remove_file(desk.join("b.bin")).expect("rm");
    let p3 = backup::run(&put, None, &po, Arc::new(client::Hidden)).await.expect("put-only third").snapshot;
    assert!(p3.data.iter().all(|d| d.manifest != p1.data[0].manifest));

    let spn = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let old_shards = shards_of(&spn, &old.manifest);
    let put_old_shards = shards_of(&spn, &p1.data[0].manifest);
    backup::forget_ids(&h.repo, &[one.id.clone(), p1.id.clone()]).expect("forget");
    // At 90% the kept 20% of the first object is not worth a repack; nothing moves.
    let lax = backup::PruneOptions { grace_secs: 0, max_unused_pct: 90 };
    let p =
        backup::prune_with(&h.repo, &dev.client, &lax, u64::MAX / 2, Arc::new(client::Hidden)).await.expect("prune");
    assert!(p.repack.repacked.iter().all(|r| r.object != old.manifest), "{p:?}");
    assert_eq!(h.repo.snapshot(&two.id).expect("two").data, vec![old.clone()]);

    let strict = backup::PruneOptions { grace_secs: 0, max_unused_pct: 10 };
    let p =
        backup::prune_with(&h.repo, &dev.client, &strict, u64::MAX / 2, Arc::new(client::Hidden)).await.expect("prune");
    let mine = p.repack.repacked.iter().find(|r| r.object == old.manifest).expect("the first object repacked");
    assert_eq!((mine.length, mine.live), (2_500_000, 500_000), "{p:?}");
    let mut rewritten = p.repack.snapshots_rewritten.clone();
    rewritten.sort();
    let mut expect = vec![two.id.clone(), p2.id.clone()];
    assert!(
        p.repack.repacked.iter().all(|r| !p3.data.iter().any(|d| d.manifest == r.object)),
        "a put-only host's newest snapshot's objects are left for its next run: {p:?}"
    );
    expect.sort();
    assert_eq!(rewritten, expect);
    assert!(p.objects_deleted.contains(&old.manifest) && p.objects_deleted.contains(&p1.data[0].manifest), "{p:?}");
    // The same snapshot, its bytes elsewhere.
    let now = h.repo.snapshots().expect("snapshots");
    let two_now = now.iter().find(|s| s.id == two.id).expect("same id");
    assert_eq!(two_now.data.len(), 1);
    assert_ne!(two_now.data[0].manifest, old.manifest);
    assert_eq!(two_now.data[0].length, 500_000);
    assert_ne!(two_now.data[0].read_key, old.read_key, "new keys");
    assert_eq!((two_now.host.as_str(), two_now.time_ns, &two_now.tags), (two.host.as_str(), two.time_ns, &two.tags));
    let p2_now = now.iter().find(|s| s.id == p2.id).expect("the put-only snapshot");
    assert!(
        p2_now.added_by.is_some(),
        "a rewritten put-only snapshot still passes for the put-only key's, not the full key's"
    );
    assert!(p2_now.time_ns <= p2.time_ns, "and does not get newer");
    // Every shard of both old objects leaves every peer (none was shared).
    let new_shards = shards_of(&spn, &two_now.data[0].manifest);
    assert!(old_shards.iter().all(|c| !new_shards.contains(c)), "the new object shares no segment with the old");
    gone_from_every_peer(&net, &dev, &old_shards, "the repacked object").await;
    gone_from_every_peer(&net, &dev, &put_old_shards, "the put-only host's repacked object").await;
    // Both rewritten snapshots restore byte-exact (a fresh cache: the trees come from the peers).
    let cache = tempfile::tempdir().expect("cache");
    let fresh =
        Host { repo: Repo::new(h.repo.spn().clone(), h.repo.key().clone(), cache.path().to_path_buf()), _cache: cache };
    for (id, dir, state) in [(&two.id, &src, &kept_state), (&p2.id, &desk, &desk_state)] {
        let target = tempfile::tempdir().expect("target");
        let ro = RestoreOptions::new(id.clone(), target.path().to_path_buf());
        backup::restore(&fresh.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
        assert_eq!(&describe(&target.path().join(dir.strip_prefix("/").expect("abs"))), state);
    }
    // Nothing more to repack: a second prune moves nothing.
    let again =
        backup::prune_with(&h.repo, &dev.client, &strict, u64::MAX / 2, Arc::new(client::Hidden)).await.expect("prune");
    assert!(again.repack.repacked.is_empty() && again.objects_deleted.is_empty(), "{again:?}");
    // The full key's next run compares with the rewritten snapshot.
    // The put-only host's next run commits as usual (its objects are still there).
    let p4 = backup::run(&put, None, &po, Arc::new(client::Hidden)).await.expect("put-only after the prune").snapshot;
    assert_eq!(p4.stats.files_read, 0, "still incremental: {:?}", p4.stats);
    write(&src.join("kept/new.txt"), b"new\n");
    let three = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("third").snapshot;
    assert_eq!(three.parent.as_deref(), Some(two.id.as_str()));
    assert_eq!(three.stats.files_read, 1, "{:?}", three.stats);
}

/// A prune lists the objects, then deletes the unused old ones one by
/// one; a backup that commits one of them again in between (it reuses its
/// parent's object, which a repack just replaced) must keep it: the SPN
/// checks the grace in the delete itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prune_cannot_delete_an_object_a_backup_committed_after_the_listing() {
    let net = network(6, None).await;
    let h = host(&net, "racer");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("src");
    write(&src.join("f.bin"), &image(200_000, 31));
    let one = backup::run(&h.repo, None, &options(std::slice::from_ref(&src)), Arc::new(client::Hidden))
        .await
        .expect("run")
        .snapshot;
    let spn = h.repo.spn();
    let x = one.data[0].manifest.clone();
    // The prune's listing, then a run's commit that goes on using X.
    let listed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&src.join("g.bin"), &image(1_000, 33));
    let two = backup::run(&h.repo, None, &options(std::slice::from_ref(&src)), Arc::new(client::Hidden))
        .await
        .expect("a run whose commit reuses X")
        .snapshot;
    assert!(two.data.iter().any(|d| d.manifest == x));
    assert!(
        spn.delete_object_older_than(&x, listed_at).expect("delete").is_none(),
        "deleted an object a backup committed after the prune's listing"
    );
    assert!(spn.object(&x).is_ok(), "X is still there");
    assert!(spn.delete_object_older_than(&x, u64::MAX / 2).expect("delete").is_some(), "older than that: deleted");
}

/// Files that cannot be read are reported in the snapshot and skipped; the
/// run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreadable_files_are_reported_and_skipped() {
    let net = network(6, None).await;
    let h = host(&net, "skips");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("tree");
    write(&src.join("fine.txt"), b"fine");
    // Reading /proc/self/mem from its start fails (EIO) for everyone, root included.
    let bad = PathBuf::from("/proc/self/mem");
    if !bad.exists() {
        eprintln!("skipped: no /proc/self/mem on this system to stand for an unreadable file");
        return;
    }
    let o = options(&[src.clone(), bad]);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("run").snapshot;
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert!(s.skipped[0].path.ends_with("mem") && s.skipped[0].why.contains("read failed"), "{:?}", s.skipped);
    assert_eq!(s.stats.files, 1, "the unreadable file is not in the snapshot: {:?}", s.stats);
}

#[test]
fn paths_that_leave_the_target_are_refused() {
    let e = |p: &str| backup::Entry {
        path: p.to_string(),
        path_hex: None,
        kind: backup::Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size: 0,
        dev: 0,
        inode: 0,
        ctime: 0,
        ctime_nsec: 0,
        target: None,
        target_hex: None,
        link_to: None,
        link_to_hex: None,
        data: None,
        blake3: None,
        xattrs: vec![],
        rdev: 0,
    };
    for bad in ["../etc/passwd", "a/../../b", "/etc/passwd", "", "a/./b", "a//b", "a/"] {
        assert!(matches!(e(bad).safe_relative(), Err(backup::Error::Outside { .. })), "{bad}");
    }
    assert!(e("home/ann/a.txt").safe_relative().is_ok());
}

/// Two runs of one repository on one host at once: the second is refused
/// with a clear error, and nothing of the first is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_at_the_same_time_is_refused() {
    let net = network(6, None).await;
    let h = host(&net, "twice");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("tree");
    write(&src.join("a.txt"), b"a");
    // The first run holds the lock (as a running `ionshard backup run` does).
    std::fs::create_dir_all(h._cache.path()).expect("cache");
    let held = std::fs::File::create(h._cache.path().join("run.lock")).expect("lock file");
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).expect("lock");
    let o = options(std::slice::from_ref(&src));
    let err = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.unwrap_err().to_string();
    assert!(err.contains("another backup run"), "{err}");
    drop(held);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("then it runs").snapshot;
    assert_eq!(s.stats.files, 1);
}

/// The attack: a tenant that has another tenant's shards (a release's are
/// public; any peer it runs holds some) uploads them as its own segments and
/// commits the victim's manifest, to make the object its own and delete it.
/// The commit is refused and the victim's object and shards stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_cannot_take_over_an_object_by_committing_its_manifest() {
    let net = network(6, None).await;
    let dev = device(&net).await;
    let victim = host(&net, "victim");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("files");
    write(&src.join("secret.bin"), &image(300_000, 5));
    let o = options(std::slice::from_ref(&src));
    let s = backup::run(&victim.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = s.data[0].manifest.clone();
    let (operator, attacker, manifest_bytes, segments) =
        attacker_with_shards_of(&net, &dev.client, "attacker", &target).await;
    let job = attacker.open_session("attacker").expect("session").job;
    for (len, k, shards) in segments {
        let a = attacker.clone();
        tokio::task::spawn_blocking(move || a.put_segment(job, len, k, shards)).await.expect("join").expect("upload");
    }
    let a = attacker.clone();
    let err = tokio::task::spawn_blocking(move || a.commit(job, &[manifest_bytes], &[]))
        .await
        .expect("join")
        .unwrap_err()
        .to_string();
    assert!(err.contains("409") && err.contains("cannot be committed again"), "{err}");
    // Not the attacker's to see or delete; the victim's snapshot restores.
    let a = attacker.clone();
    let t = target.clone();
    let del = tokio::task::spawn_blocking(move || a.delete_object(&t)).await.expect("join");
    assert!(del.is_err(), "the attacker deleted the victim's object");
    assert_eq!(operator.object(&target).expect("still there").object.tenant, "victim");
    let out = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(s.id.clone(), out.path().to_path_buf());
    backup::restore(&victim.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    let got = std::fs::read(out.path().join(src.strip_prefix("/").expect("abs")).join("secret.bin")).expect("file");
    assert!(got == image(300_000, 5));
}

/// The attack: a tenant uploads another tenant's shards as segments of its
/// own and abandons the session, again and again, hoping the SPN places a
/// copy on the very peer that holds the victim's and then deletes it there.
/// Abandoning must never take a copy some saved object uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoning_a_session_of_someone_elses_shards_deletes_none_of_their_copies() {
    let net = network(6, None).await;
    let dev = device(&net).await;
    let victim = host(&net, "victim2");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("files");
    write(&src.join("ledger.bin"), &image(200_000, 6));
    let o = options(std::slice::from_ref(&src));
    let s = backup::run(&victim.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = s.data[0].manifest.clone();
    let (operator, attacker, manifest_bytes, segments) =
        attacker_with_shards_of(&net, &dev.client, "attacker2", &target).await;
    let manifest = chunker::Manifest::from_bytes(&manifest_bytes, &Default::default()).expect("parse");
    // Ten sessions: with 6 peers each put lands on a holder one time in six.
    for _ in 0..10 {
        let (a, segs) = (attacker.clone(), segments.clone());
        tokio::task::spawn_blocking(move || {
            let job = a.open_session("attacker2").expect("session").job;
            for (len, k, shards) in segs {
                a.put_segment(job, len, k, shards).expect("upload");
            }
            a.abandon(job).expect("abandon");
        })
        .await
        .expect("join");
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = operator.object(&target).expect("object").placement;
    for c in manifest.segments().iter().flat_map(|s| s.shards()) {
        let held: Vec<&String> = after.shards[&c.to_string()].iter().map(|i| &after.peers[*i as usize]).collect();
        assert!(!held.is_empty(), "shard {c} of the victim lost every holder");
        for p in held {
            let peer: net::PeerId = p.parse().expect("peer id");
            assert_eq!(dev.client.has_many(peer, vec![*c]).await.expect("has"), vec![true], "{c} gone from {p}");
        }
    }
    let out = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(s.id.clone(), out.path().to_path_buf());
    backup::restore(&victim.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
}

/// An attacker tenant with a token of its own, and the bytes of every shard
/// of the victim's object `target` (fetched from its holders, as anyone
/// who runs a peer or reads a public release could have them):
/// (operator client, attacker client, manifest bytes, per segment: len, k, shards).
async fn attacker_with_shards_of(
    net: &Net,
    dev: &net::Client,
    tenant: &str,
    target: &str,
) -> (client::Spn, client::Spn, Vec<u8>, Vec<(u64, u8, Vec<Vec<u8>>)>) {
    let operator = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let issued = operator
        .issue_token(&proto::api::NewToken { tenant: tenant.into(), label: "attack".into(), scope: Default::default() })
        .expect("token");
    let attacker = client::Spn::new(&format!("http://{}", net.http), Some(issued.token)).expect("spn");
    let manifest_bytes = operator.manifest(target, 1 << 30).expect("manifest");
    let manifest = chunker::Manifest::from_bytes(&manifest_bytes, &Default::default()).expect("parse");
    let placement = operator.object(target).expect("object").placement;
    let mut segments = Vec::new();
    for seg in manifest.segments() {
        let mut shards = Vec::new();
        for c in seg.shards() {
            let holder = placement.shards[&c.to_string()][0] as usize;
            let peer: net::PeerId = placement.peers[holder].parse().expect("peer id");
            shards.push(dev.get_shard(peer, *c).await.expect("shard"));
        }
        segments.push((seg.len(), seg.data_shards() as u8, shards));
    }
    (operator, attacker, manifest_bytes, segments)
}

/// A backup sends the SPN each segment's data shards alone; the SPN makes
/// the parity and the host checks it by the segment's CID (which names
/// every shard). At 2+2 that is half the upload, and the snapshot still
/// restores with as many peers gone as there are parity shards (the
/// parity the SPN made is real).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_sends_data_shards_alone_and_the_spns_parity_restores_without_two_peers() {
    let (net, dev, h, _work, src) = setup(6, "halfup", "src").await;
    write(&src.join("a.bin"), &image(3_000_000, 21));
    write(&src.join("b.txt"), "text that compresses ".repeat(20_000).as_bytes());
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let operator = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let (mut data, mut all) = (0u64, 0u64);
    for cap in s.data.iter().chain(std::iter::once(&s.tree)) {
        let m = chunker::Manifest::from_bytes(
            &operator.manifest(&cap.manifest, 1 << 30).expect("manifest"),
            &Default::default(),
        )
        .expect("parse");
        for seg in m.segments() {
            data += seg.shard_len() * seg.data_shards() as u64;
            all += seg.shard_len() * seg.shards().len() as u64;
        }
    }
    assert_eq!(s.stats.uploaded_shard_bytes, data, "sent: the data shards alone (all shards: {all})");
    assert_eq!(all, 2 * data);
    // The holders of the first segment's two data shards gone: its data is
    // rebuilt from the parity the SPN made.
    let m = chunker::Manifest::from_bytes(
        &operator.manifest(&s.data[0].manifest, 1 << 30).expect("manifest"),
        &Default::default(),
    )
    .expect("parse");
    let placement = operator.object(&s.data[0].manifest).expect("object").placement;
    let gone: Vec<String> = m.segments()[0].shards()[..2]
        .iter()
        .map(|c| placement.peers[placement.shards[&c.to_string()][0] as usize].clone())
        .collect();
    let mut net = net;
    let mut stopped = 0;
    while let Some(i) = net.peers.iter().position(|p| gone.contains(&p.peer_id().to_string())) {
        net.peers.remove(i).stop().await;
        stopped += 1;
    }
    assert!((1..=2).contains(&stopped), "stopped {stopped} holders");
    let target = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(s.id.clone(), target.path().to_path_buf());
    backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    let at = target.path().join(src.strip_prefix("/").expect("abs"));
    assert!(std::fs::read(at.join("a.bin")).expect("a") == image(3_000_000, 21));
    assert!(std::fs::read(at.join("b.txt")).expect("b") == "text that compresses ".repeat(20_000).as_bytes());
}

/// A coding with more parity than data (2+4): the SPN makes no such
/// parity, so the host sends every shard, and the snapshot restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coding_with_more_parity_than_data_sends_every_shard() {
    let (_net, dev, h, _work, src) = setup(6, "moreparity", "src").await;
    write(&src.join("a.bin"), &image(1_500_000, 22));
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 4);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let st = &s.stats;
    assert!(st.uploaded_shard_bytes >= 3 * st.new_segment_bytes, "every shard sent: {st:?}");
    let target = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(s.id.clone(), target.path().to_path_buf());
    backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    let got = std::fs::read(target.path().join(src.strip_prefix("/").expect("abs")).join("a.bin")).expect("a");
    assert!(got == image(1_500_000, 22));
}

/// Data-only segments the SPN must refuse before it holds or places a
/// byte: n more than twice k (k = 1, n = 255: 254 parity bytes made and
/// sent to peers for each byte received, 24 GiB from a 96 MiB body), n
/// shards beyond one segment body, a body that is not the k data shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_only_segment_that_would_make_the_spn_send_peers_254_times_what_it_was_sent_is_refused() {
    let net = network(4, None).await;
    let spn = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let session = spn.open_session("grower").expect("session");
    assert!(session.parity_here, "this SPN makes parity");
    let job = session.job;
    let put = |path: String, body: Vec<u8>| {
        let addr = net.http;
        async move {
            tokio::task::spawn_blocking(move || common::http(addr, "PUT", &path, Some("t"), &body)).await.expect("join")
        }
    };
    // Refused from the query, before a byte of the body is read: more
    // parity than data (the SPN would send peers 254 bytes for each it
    // is sent), and n shards beyond one segment body.
    let (status, msg) = put(format!("/v1/encoded/{job}/segments?len=4096&k=1&n=255"), vec![7u8; 1]).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("at most as many parity shards as data shards"), "{msg}");
    let (status, msg) = put(format!("/v1/encoded/{job}/segments?len={}&k=10&n=20", 64 << 20), vec![7u8; 1]).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("impossible here"), "{msg}");
    // The body is not the k data shards.
    let (status, msg) = put(format!("/v1/encoded/{job}/segments?len=4000&k=2&n=4"), vec![1u8; 3999]).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("are not the 2 data shards"), "{msg}");
    // Through the host's client, with a whole 1 MiB body behind the
    // headers: the reason arrives, not a broken pipe.
    let s = spn.clone();
    let r = tokio::task::spawn_blocking(move || s.put_segment_data(job, 1 << 20, 1, 255, vec![vec![7u8; 1 << 20]]))
        .await
        .expect("join");
    let msg = format!("{r:?}");
    assert_eq!(refused_with(r, "k = 1, n = 255 from the client"), 400, "{msg}");
    assert!(msg.contains("impossible here"), "{msg}");
    // Nothing was placed; a good one is, parity and all.
    assert!(spn.job(job).expect("job").shards_placed == 0);
    let s = spn.clone();
    let placed = tokio::task::spawn_blocking(move || {
        s.put_segment_data(job, 4000, 2, 4, vec![vec![1u8; 2000], vec![2u8; 2000]])
    })
    .await
    .expect("join")
    .expect("placed");
    assert_eq!((placed.shards, placed.receipts), (4, 4));
    let mut bytes = vec![1u8; 2000];
    bytes.extend(vec![2u8; 2000]);
    let (want, _) = chunker::Segment::from_data(4000, 2, 2, bytes).expect("segment");
    assert_eq!(placed.segment, want.cid().to_string());
}

/// The status an SPN call was refused with (panics if it was not refused).
fn refused_with<T: std::fmt::Debug>(r: Result<T, client::Error>, what: &str) -> u16 {
    match r {
        Err(client::Error::Refused { status, .. }) => status,
        other => panic!("{what}: expected the SPN to refuse, got {other:?}"),
    }
}

/// A put-only key adds snapshots (incrementally: its host remembers its
/// own last run) and is refused every read and every delete, both by this
/// build (it opens no record) and by the SPN (its token only adds): a host
/// that is taken over can neither read nor destroy the backups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_only_key_adds_snapshots_but_cannot_list_restore_forget_or_prune() {
    use proto::api::{NewToken, TokenScope};
    let net = network(6, None).await;
    let dev = device(&net).await;
    let owner = host(&net, "telecom");
    let url = format!("http://{}", net.http);
    let operator = client::Spn::new(&url, Some("t".to_string())).expect("spn");
    let office = operator
        .issue_token(&NewToken { tenant: "telecom".into(), label: "office".into(), scope: TokenScope::Full })
        .expect("the tenant's full token");
    let office = client::Spn::new(&url, Some(office.token)).expect("spn");
    // The tenant makes its own put-only keys, and no full tokens.
    let issued = office
        .issue_token(&NewToken { tenant: "telecom".into(), label: "db host".into(), scope: TokenScope::Append })
        .expect("a tenant's full token issues append tokens");
    assert_eq!(issued.scope, TokenScope::Append);
    let full = NewToken { tenant: "telecom".into(), label: "more".into(), scope: TokenScope::Full };
    assert_eq!(refused_with(office.issue_token(&full), "a tenant issuing a full token"), 403);
    let text = owner.repo.key().put_only(Some(issued.token.clone())).expect("put-only").to_file_text();
    assert!(!text.contains(&owner.repo_key_text()), "a put-only key file holds no full secret");
    let key = RepoKey::from_file_text(&text).expect("put-only key file");
    assert_eq!(key.kind_name(), "put-only");
    let put_spn = client::Spn::new(&url, key.token().map(String::from)).expect("spn");
    let cache = tempfile::tempdir().expect("cache");
    let put = Repo::new(put_spn.clone(), key, cache.path().to_path_buf());

    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("src");
    make_tree(&src);
    let o = options(std::slice::from_ref(&src));
    let one = backup::run(&put, None, &o, Arc::new(client::Hidden)).await.expect("a put-only backup").snapshot;
    write(&src.join("docs/new.txt"), b"added by the put-only host\n");
    let two = backup::run(&put, None, &o, Arc::new(client::Hidden)).await.expect("its second backup").snapshot;
    assert_eq!(two.parent.as_deref(), Some(one.id.as_str()), "compared with its own last run");
    assert_eq!(two.stats.files_read, 1, "incremental: {:?}", two.stats);
    assert!(two.stats.new_plain_bytes < 1000, "{:?}", two.stats);

    // The owner sees both and restores them.
    let ids: Vec<String> = owner.repo.snapshots().expect("snapshots").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![one.id.clone(), two.id.clone()]);
    assert_eq!(restored(&owner, &dev.client, &two.id, &src).await, describe(&src));

    // This build refuses the put-only key everything but adding, and says why.
    let target = tempfile::tempdir().expect("target");
    let ro = RestoreOptions::new(one.id.clone(), target.path().to_path_buf());
    let policy = backup::Policy { last: 1, ..Default::default() };
    let errors = [
        put.snapshots().map(|_| ()).unwrap_err(),
        backup::restore(&put, &dev.client, &ro, Arc::new(client::Hidden)).await.map(|_| ()).unwrap_err(),
        backup::forget_ids(&put, std::slice::from_ref(&one.id)).map(|_| ()).unwrap_err(),
        backup::forget(&put, &policy, None, false).map(|_| ()).unwrap_err(),
        backup::prune(&put, 0, u64::MAX / 2).map(|_| ()).unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, backup::Error::PutOnly(_)), "{e}");
        assert!(e.to_string().contains("put-only key"), "{e}");
    }
    // And the SPN refuses its token whatever a client sends.
    let record = format!("snap-{}", one.id);
    assert_eq!(refused_with(put_spn.records("telecom", "snap-"), "listing records"), 403);
    assert_eq!(refused_with(put_spn.record("telecom", &record), "reading a snapshot record"), 403);
    assert_eq!(refused_with(put_spn.delete_record("telecom", &record), "deleting a snapshot record"), 403);
    assert_eq!(refused_with(put_spn.put_record("telecom", &record, b"garbage"), "overwriting a snapshot"), 409);
    assert_eq!(refused_with(put_spn.delete_object(&one.tree.manifest), "deleting an object"), 404);
    assert_eq!(refused_with(put_spn.objects("telecom"), "listing objects"), 403);
    assert_eq!(refused_with(put_spn.manifest(&one.tree.manifest, 1 << 20), "reading a manifest"), 404);
    let another = NewToken { tenant: "telecom".into(), label: "x".into(), scope: TokenScope::Append };
    assert_eq!(refused_with(put_spn.issue_token(&another), "issuing tokens"), 403);
    assert!(put_spn.tokens().expect("tokens").tokens.is_empty(), "an append token sees no tokens");
    let ids: Vec<String> = owner.repo.snapshots().expect("snapshots").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![one.id.clone(), two.id.clone()], "nothing was lost");
    assert_eq!(restored(&owner, &dev.client, &one.id, &src).await.len(), describe(&src).len() - 1);

    // Revoked, the key adds nothing more.
    office.revoke_token(&issued.id).expect("revoke");
    let err = backup::run(&put, None, &o, Arc::new(client::Hidden)).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("401") || err.to_string().contains("revoked"), "{err}");
}

/// The three-month window, shrunk to seconds: a backup's shards are kept
/// by the peers until an expiry (not pinned); a renewal moves it on, with
/// fresh receipts; what nobody renews is listed as expired on its peer and
/// cleared there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_shards_expire_unless_renewed_and_expired_ones_are_cleared_on_the_peer() {
    let window = std::time::Duration::from_secs(8);
    let mut net = common::network_with(&[common::Kind::Honest; 4], |c| c.backup_window = window).await;
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("files");
    write(&src.join("kept.bin"), &image(300_000, 11));
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let kept = host(&net, "clinic");
    let gone = host(&net, "gone-away");
    let t0 = proto::now();
    let s1 = backup::run(&kept.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let other = backup::run(&gone.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let spn = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    let expiries = |cid: &str| -> Vec<Option<u64>> {
        spn.receipts(cid).expect("receipts").into_iter().map(|r| r.expiry).collect()
    };
    let first = expiries(&s1.tree.manifest);
    assert!(!first.is_empty());
    for e in &first {
        let e = e.expect("a backup shard expires (it is not pinned)");
        assert!(e >= t0 + 7 && e <= proto::now() + 8, "expiry {e}, put at {t0}");
    }
    // A third of the window later, a renewal moves every copy on, with fresh receipts.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    let r = backup::renew(&kept.repo).expect("renew");
    assert!(r.renewed > 0 && r.failed == 0, "{r:?}");
    let renewed = expiries(&s1.tree.manifest);
    let old_max = first.iter().flatten().max().copied().expect("max");
    assert!(renewed.iter().all(|e| e.is_some_and(|e| e > old_max)), "{renewed:?} after {first:?}");
    // Once the window has passed, the unrenewed repository's shards are
    // expired on the peers, and a peer's owner clears them.
    // The moment the last of its copies expired: every renewed copy
    // outlives it (renewed after that repository's run ended).
    let check_at =
        spn.receipts(&other.tree.manifest).expect("receipts").iter().filter_map(|r| r.expiry).max().expect("expiry");
    assert!(renewed.iter().all(|e| e.is_some_and(|e| e > check_at)), "{renewed:?} against {check_at}");
    while proto::now() <= check_at {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The SPN counts an expired copy neither healthy nor lost: not audited
    // (an honest peer may have swept it), not repaired, not at risk.
    let d = spn.durability(Some(&other.tree.manifest)).expect("durability");
    assert_eq!((d.objects[0].segments, d.objects[0].unreadable), (0, 0), "{:?}", d.objects[0]);
    let d = spn.durability(Some(&s1.tree.manifest)).expect("durability");
    assert!(d.objects[0].segments > 0 && d.objects[0].unreadable == 0, "{:?}", d.objects[0]);
    assert_eq!(net.spn.audit_now().await.expect("audit"), 0, "no peer fails an audit over expired data");
    let node = net.peers.pop().expect("a peer");
    let (dir, node_id) = (node.dir.clone(), node.peer_id());
    node.stop().await;
    // The stopped node lets go of its store within moments.
    let mut tries = 0;
    let store = loop {
        match store::Store::open(dir.join("store"), store::Config::default()) {
            Ok((s, _)) => break s,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the peer's store: {e}"),
        }
    };
    let shards_of = |cid: &str| -> std::collections::HashSet<chunker::Cid> {
        let m = chunker::Manifest::from_bytes(&spn.manifest(cid, 1 << 30).expect("manifest"), &Default::default())
            .expect("parse");
        m.segments().iter().flat_map(|s| s.shards().iter().copied()).collect()
    };
    let expired: std::collections::HashSet<chunker::Cid> =
        store.expired(check_at).expect("expired").into_iter().map(|(c, _)| c).collect();
    let theirs = shards_of(&other.tree.manifest);
    let ours = shards_of(&s1.tree.manifest);
    assert!(expired.iter().any(|c| theirs.contains(c)), "the unrenewed repository's shards expired here");
    // Every copy the SPN placed here was renewed (a copy it lost track of,
    // such as a hedged put it cancelled, may expire: that is its cleanup).
    let placement = spn.object(&s1.tree.manifest).expect("object").placement;
    let here = node_id.to_string();
    let placed_here: Vec<chunker::Cid> = ours
        .iter()
        .filter(|c| placement.shards[&c.to_string()].iter().any(|&i| placement.peers[i as usize] == here))
        .copied()
        .collect();
    assert!(!placed_here.is_empty());
    let bad: Vec<_> = placed_here.iter().filter(|c| expired.contains(c)).collect();
    assert!(bad.is_empty(), "a renewed shard expired: {bad:?}, receipts {renewed:?}");
    let cleared = store.sweep_expired(check_at).expect("clear");
    assert_eq!(cleared.len(), expired.len());
    let left: Vec<chunker::Cid> = theirs.iter().copied().collect();
    assert!(store.has_many(&left).expect("has").iter().all(|h| !h), "cleared from the peer");
    assert!(store.has_many(&placed_here).expect("has").iter().all(|h| *h), "renewed copies stay");
}

/// A put-only host of `owner`'s repository: its repo and its SPN client (an append token).
fn put_only_host(net: &Net, owner: &Host) -> (Repo, client::Spn, tempfile::TempDir) {
    let url = format!("http://{}", net.http);
    let operator = client::Spn::new(&url, Some("t".to_string())).expect("spn");
    let issued = operator
        .issue_token(&proto::api::NewToken {
            tenant: owner.repo.name().into(),
            label: "front desk".into(),
            scope: proto::api::TokenScope::Append,
        })
        .expect("append token");
    let key = owner.repo.key().put_only(Some(issued.token.clone())).expect("put-only");
    let spn = client::Spn::new(&url, Some(issued.token)).expect("spn");
    let cache = tempfile::tempdir().expect("cache");
    (Repo::new(spn.clone(), key, cache.path().to_path_buf()), spn, cache)
}

/// Anyone with the repository's public key (every put-only host, the SPN)
/// can seal a snapshot record that opens, and the SPN alone said who added
/// it. A record without the full key's mark is never taken for the full
/// key's, even put with the tenant's full token; restoring it, or any
/// snapshot a put-only key added, leaves out setuid bits unless asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_passed_off_as_the_full_keys_is_not_taken_for_it_and_restores_without_setuid() {
    let net = network(4, None).await;
    let dev = device(&net).await;
    let owner = host(&net, "registry");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("src");
    write(&src.join("tool"), b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(src.join("tool"), std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let real = backup::run(&owner.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    // Sealed with the public key alone and put with the tenant's own token:
    // the SPN says no put-only key added it.
    let mut fake = real.clone();
    fake.id = "00000000c0ffee00".into();
    fake.time_ns += 1;
    let body = serde_json::to_vec(&fake).expect("json");
    let sealed = backup::seal(&owner.repo.key().public(), &format!("snapshot {}", fake.id), &body);
    owner.repo.spn().put_record("registry", &format!("snap-{}", fake.id), &sealed).expect("the tenant adds a record");
    let listed = owner.repo.snapshots().expect("snapshots");
    let by = |id: &str| listed.iter().find(|s| s.id == id).expect("listed").added_by.clone();
    assert_eq!(by(&real.id), None, "the full key's own record is marked");
    assert_eq!(by(&fake.id).as_deref(), Some(backup::UNMARKED), "taken for the full key's");
    // The next run compares with the marked snapshot, not the newer forgery.
    write(&src.join("more"), b"more\n");
    let next = backup::run(&owner.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    assert_eq!(next.parent.as_deref(), Some(real.id.as_str()));

    let out = tempfile::tempdir().expect("out");
    let tool = |t: &Path| t.join(src.strip_prefix("/").expect("abs")).join("tool");
    let mode = |p: PathBuf| std::fs::symlink_metadata(p).expect("restored").permissions().mode() & 0o7777;
    let ro = RestoreOptions::new(fake.id.clone(), out.path().join("forged"));
    let r = backup::restore(&owner.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    assert_eq!(r.added_by.as_deref(), Some(backup::UNMARKED));
    assert!(r.privileges_dropped >= 1, "{r:?}");
    assert_eq!(mode(tool(&ro.target)), 0o755, "no setuid from an unmarked snapshot");
    // Asked to trust it, and the full key's own: as they were.
    let trusted = RestoreOptions { target: out.path().join("trusted"), trust_added: true, ..ro.clone() };
    backup::restore(&owner.repo, &dev.client, &trusted, Arc::new(client::Hidden)).await.expect("restore");
    assert_eq!(mode(tool(&trusted.target)), 0o4755);
    let own = RestoreOptions { snapshot: real.id.clone(), target: out.path().join("own"), ..ro };
    let r = backup::restore(&owner.repo, &dev.client, &own, Arc::new(client::Hidden)).await.expect("restore");
    assert_eq!((r.added_by, r.privileges_dropped), (None, 0));
    assert_eq!(mode(tool(&own.target)), 0o4755);
}

/// Job ids are sequential: an append token that could use any session of
/// its tenant could abandon (and so delete) another host's backup in
/// progress, or commit into it. It sees and uses only the sessions it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_token_cannot_take_over_another_hosts_upload_session() {
    let net = network(4, None).await;
    let owner = host(&net, "depot");
    let (_put, put_spn, _cache) = put_only_host(&net, &owner);
    let victim = owner.repo.spn().open_session("depot").expect("the owner's session").job;
    assert_eq!(refused_with(put_spn.job(victim), "reading another session's job"), 404);
    assert_eq!(refused_with(put_spn.held(victim, vec![]), "asking another session what it holds"), 404);
    assert_eq!(refused_with(put_spn.commit(victim, &[], &[]), "committing into another session"), 404);
    assert_eq!(refused_with(put_spn.abandon(victim), "abandoning another session"), 404);
    let j = owner.repo.spn().job(victim).expect("the owner's session is still there");
    assert!(!j.state.is_finished(), "{j:?}");
    // Its own session it uses as any host does.
    let mine = put_spn.open_session("depot").expect("its own session").job;
    assert_eq!(put_spn.job(mine).expect("its own job").id, mine);
    put_spn.abandon(mine).expect("its own abandon");
}

/// A put-only key can seal records that open (it has the public key). It
/// must not be able to date them into the future, pass them off as the
/// full key's, or push the full key's snapshots out of a `--keep-last`, or
/// become the parent of the full key's next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_only_key_cannot_evict_real_snapshots_with_forged_future_ones() {
    let net = network(4, None).await;
    let owner = host(&net, "archive");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("src");
    write(&src.join("a.txt"), b"real data\n");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let real = backup::run(&owner.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let (_put, put_spn, _cache) = put_only_host(&net, &owner);
    // Three forged snapshots of the owner's host and paths, a year ahead.
    let public = owner.repo.key().public();
    let future = proto::now() * 1_000_000_000 + 365 * 86_400 * 1_000_000_000;
    for i in 0..3u64 {
        let mut fake = real.clone();
        fake.id = format!("{:016x}", 0xf00d_0000 + i);
        fake.time_ns = future + i;
        let body = serde_json::to_vec(&fake).expect("json");
        let sealed = backup::seal(&public, &format!("snapshot {}", fake.id), &body);
        put_spn.put_record("archive", &format!("snap-{}", fake.id), &sealed).expect("an append token adds records");
    }
    let all = owner.repo.snapshots().expect("snapshots");
    assert_eq!(all.len(), 4);
    for s in all.iter().filter(|s| s.id != real.id) {
        assert!(s.added_by.is_some(), "a forged snapshot is marked as the put-only key's");
        assert!(s.time_ns <= (proto::now() + 301) * 1_000_000_000, "dated into the future: {}", s.time_ns);
    }
    // The owner's retention keeps its own newest snapshot.
    let policy = backup::Policy { last: 1, ..Default::default() };
    let report = backup::forget(&owner.repo, &policy, None, false).expect("forget");
    assert!(!report.removed.contains(&real.id), "the real snapshot was evicted: {report:?}");
    // And its next run compares with its own snapshot, not a forged one.
    write(&src.join("b.txt"), b"more\n");
    let next = backup::run(&owner.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    assert_eq!(next.parent.as_deref(), Some(real.id.as_str()));
    // A record that does not open does not stop the listing.
    put_spn.put_record("archive", "snap-00000000deadbeef", b"garbage").expect("add");
    let (ok, bad) = owner.repo.snapshots_checked().expect("listing");
    assert!(ok.iter().any(|s| s.id == next.id));
    assert_eq!(bad.len(), 1, "{bad:?}");
}

/// `check` verifies every receipt and placement and reads the data back;
/// a snapshot whose object is gone is an error, not a silent pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_verifies_receipts_placement_and_data_and_finds_a_missing_object() {
    let (_net, dev, h, _work, src) = setup(4, "auditor", "books").await;
    write(&src.join("2026.csv"), &image(700_000, 21));
    write(&src.join("notes.txt"), b"quarterly notes\n");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let now = proto::now();
    let r = backup::check(&h.repo, &dev.client, 1.0, now, Arc::new(client::Hidden)).await.expect("check");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.objects, 2, "{r:?}");
    assert_eq!(r.receipts_ok, r.copies, "{r:?}");
    assert!(r.copies >= r.segments * 4, "{r:?}");
    assert_eq!(r.objects_read, 2, "every object read back: {r:?}");
    assert!(r.earliest_expiry > now, "{r:?}");
    // A snapshot that points at an object the SPN no longer has.
    let mut broken = s.clone();
    broken.id = "00000000000000aa".into();
    broken.data[0].manifest = s.tree.manifest.clone();
    broken.tree.manifest = "bafkr4ibrokenbrokenbrokenbrokenbrokenbrokenbrokenbrokenbro".into();
    let body = serde_json::to_vec(&broken).expect("json");
    let sealed = backup::seal(&h.repo.key().public(), "snapshot 00000000000000aa", &body);
    h.repo.spn().put_record("auditor", "snap-00000000000000aa", &sealed).expect("record");
    let r = backup::check(&h.repo, &dev.client, 0.0, now, Arc::new(client::Hidden)).await.expect("check");
    assert!(!r.errors.is_empty(), "{r:?}");
    assert!(r.errors.iter().any(|e| e.contains("bafkr4ibroken")), "{:?}", r.errors);
}

/// A local user who can write in the restore target could swap a folder
/// for a symlink between the restore's check and its write and send files
/// anywhere the restoring user may write. A target (or a folder in it, or
/// a folder it is in, unless sticky) that other users can write is
/// refused; a new target is made private.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_refuses_a_target_other_users_can_write() {
    let (_net, dev, h, _work, src) = setup(4, "notary", "deeds").await;
    write(&src.join("deed.txt"), b"the deed\n");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let shared = tempfile::tempdir().expect("shared");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let ro = RestoreOptions::new(s.id.clone(), shared.path().to_path_buf());
    let err = backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("can be written by other users"), "{err}");
    assert!(std::fs::read_dir(shared.path()).expect("ls").next().is_none(), "nothing written");
    // A new folder inside it is made private, but the user who can write
    // its parent could still rename it and put a symlink in its place.
    let target = shared.path().join("mine");
    let ro = RestoreOptions { target: target.clone(), ..ro };
    let err = backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("which another user can change"), "{err}");
    // In a sticky folder (as /tmp) only its owner may rename it: the restore goes ahead.
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    assert_eq!(std::fs::metadata(&target).expect("meta").permissions().mode() & 0o777, 0o700);
    let got = std::fs::read(target.join(src.strip_prefix("/").expect("abs")).join("deed.txt")).expect("restored");
    assert_eq!(got, b"the deed\n");
}

/// Extended attributes and sparse files come back: a file's `user.*`
/// attributes and a directory's are set again, and a file that is mostly
/// a hole is restored as one (byte-exact, a fraction of its size on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_attributes_and_sparse_files_are_restored() {
    let (_net, dev, h, _work, src) = setup(4, "studio", "project").await;
    write(&src.join("notes.txt"), b"notes\n");
    // 16 MiB: a hole, 4 KiB of data in the middle, a hole to the end.
    let disk = src.join("disk.img");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::File::create(&disk).expect("create");
        f.set_len(16 << 20).expect("len");
        f.seek(std::io::SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&[0xAB; 4096]).expect("data");
    }
    let xattrs = rustix::fs::lsetxattr(
        src.join("notes.txt").as_path(),
        "user.comment",
        b"keep me",
        rustix::fs::XattrFlags::empty(),
    )
    .and_then(|()| rustix::fs::lsetxattr(src.as_path(), "user.project", b"atlas", rustix::fs::XattrFlags::empty()));
    if let Err(e) = &xattrs {
        eprintln!("this file system keeps no user extended attributes ({e}): only the sparse file is checked");
    }
    let (r, at, _target) = back_up_and_restore(&h, &dev, &src).await;
    let back = at.join("disk.img");
    assert_eq!(std::fs::read(&back).expect("read"), std::fs::read(&disk).expect("read"), "byte-exact");
    assert!(r.hole_bytes >= (16 << 20) - 8192, "{r:?}");
    let on_disk = std::fs::metadata(&back).expect("meta").blocks() * 512;
    assert!(on_disk < 1 << 20, "the restored image takes {on_disk} bytes on disk: not sparse");
    if xattrs.is_ok() {
        let mut v = [0u8; 64];
        let n = rustix::fs::lgetxattr(at.join("notes.txt").as_path(), "user.comment", &mut v[..]).expect("file xattr");
        assert_eq!(&v[..n], b"keep me");
        let n = rustix::fs::lgetxattr(at.as_path(), "user.project", &mut v[..]).expect("dir xattr");
        assert_eq!(&v[..n], b"atlas");
        assert_eq!(r.xattrs_not_set, 0, "{r:?}");
    }
}

/// A FIFO comes back as a FIFO and, as root, a device node as the same
/// device; a socket is reported, not made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifos_and_device_nodes_are_made_again() {
    use rustix::fs::{CWD, FileType, Mode};
    let (_net, dev, h, _work, src) = setup(4, "lab", "rootfs").await;
    write(&src.join("etc/hostname"), b"lab\n");
    rustix::fs::mknodat(CWD, src.join("queue").as_path(), FileType::Fifo, Mode::from_raw_mode(0o640), 0).expect("fifo");
    let root = rustix::process::geteuid().is_root();
    let null = rustix::fs::makedev(1, 3);
    if root {
        rustix::fs::mknodat(
            CWD,
            src.join("null").as_path(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            null,
        )
        .expect("mknod");
    } else {
        eprintln!("not root: the device node part is left out");
    }
    let _sock = std::os::unix::net::UnixListener::bind(src.join("app.sock")).expect("socket");
    let (r, at, _target) = back_up_and_restore(&h, &dev, &src).await;
    let q = std::fs::symlink_metadata(at.join("queue")).expect("fifo back");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&q.file_type()));
    assert_eq!(q.permissions().mode() & 0o777, 0o640);
    if root {
        let n = std::fs::symlink_metadata(at.join("null")).expect("device back");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&n.file_type()));
        assert_eq!(n.rdev(), null);
    }
    assert_eq!(r.specials, 1 + u64::from(root), "{r:?}");
    assert!(r.skipped.iter().any(|k| k.path.ends_with("app.sock") && k.why.contains("socket")), "{:?}", r.skipped);
    assert!(!at.join("app.sock").exists());
}

/// Two names that differ only in bytes that are not UTF-8 read the same
/// once made text ("a\u{FFFD}"). Kept as text, a hard link of the first
/// was restored as a link of the second (another file's bytes under its
/// name), and a symlink to such a name pointed at U+FFFD instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_that_are_not_utf8_are_not_taken_for_each_other_in_links() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (_net, dev, h, _work, src) = setup(4, "names", "src").await;
    let name = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    let (fe, ff) = (name(b"a\xfe"), name(b"a\xff"));
    write(&src.join(&fe), b"the first file's bytes");
    write(&src.join(&ff), b"the second file's bytes");
    // Walk order: a\xfe (the link's first path), a\xff, h, s.
    std::fs::hard_link(src.join(&fe), src.join("h")).expect("hard link");
    std::os::unix::fs::symlink(&ff, src.join("s")).expect("symlink");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::os::unix::fs::symlink(name(b"../caf\xe9"), src.join("d/latin1")).expect("symlink");
    let (r, at, _target) = back_up_and_restore(&h, &dev, &src).await;
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(std::fs::read(at.join(&fe)).expect("a\\xfe"), b"the first file's bytes");
    assert_eq!(std::fs::read(at.join(&ff)).expect("a\\xff"), b"the second file's bytes");
    assert_eq!(std::fs::read(at.join("h")).expect("h"), b"the first file's bytes", "the link's own file");
    let ino = |p: &Path| std::fs::metadata(p).expect("meta").ino();
    assert_eq!(ino(&at.join("h")), ino(&at.join(&fe)), "h is a hard link of a\\xfe again");
    assert_eq!(std::fs::read_link(at.join("s")).expect("s").as_os_str().as_bytes(), b"a\xff");
    assert_eq!(std::fs::read(at.join("s")).expect("through s"), b"the second file's bytes");
    assert_eq!(std::fs::read_link(at.join("d/latin1")).expect("latin1").as_os_str().as_bytes(), b"../caf\xe9");
    // A root that is not UTF-8 is refused before anything is read: roots name
    // a snapshot's group as text, where two such roots would read the same.
    let odd_root = src.join(&fe);
    std::fs::remove_file(&odd_root).expect("rm");
    std::fs::create_dir_all(&odd_root).expect("mkdir");
    let err = backup::run(&h.repo, None, &options(&[odd_root]), Arc::new(client::Hidden)).await.expect_err("refused");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

/// A snapshot record the full key wrote that this build cannot open (a
/// newer build's format, or damage) names data too. `prune` took only the
/// records it could open as the ones in use, so it deleted that data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_does_not_delete_the_data_of_a_record_it_cannot_open() {
    let net = network(4, None).await;
    let owner = host(&net, "ledgers");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("src");
    write(&src.join("2026.csv"), &image(300_000, 31));
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&owner.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    // The same snapshot as a newer build would save it, under another id,
    // with the full key's token; then the readable one is forgotten.
    let mut newer = s.clone();
    newer.id = "00000000feedface".to_string();
    newer.format = "ionshard-backup-snapshot/9".to_string();
    let sealed = backup::seal(
        &owner.repo.key().public(),
        &format!("snapshot {}", newer.id),
        &serde_json::to_vec(&newer).expect("json"),
    );
    let operator = client::Spn::new(&format!("http://{}", net.http), Some("t".to_string())).expect("spn");
    operator.put_record("ledgers", &format!("snap-{}", newer.id), &sealed).expect("record");
    backup::forget_ids(&owner.repo, std::slice::from_ref(&s.id)).expect("forget");
    let before = operator.objects("ledgers").expect("objects").objects.len();
    let err = backup::prune(&owner.repo, 0, u64::MAX / 2).expect_err("prune must stop");
    assert!(
        err.to_string().contains("snap-00000000feedface") && err.to_string().contains("nothing was pruned"),
        "{err}"
    );
    assert_eq!(operator.objects("ledgers").expect("objects").objects.len(), before, "no object deleted");
    assert!(before >= 2, "the tree and the data object are still there: {before}");
    // Once that record is gone, the data is unused and goes; a record a
    // put-only key added that does not open does not stop the prune (such
    // a key can add anything).
    operator.delete_record("ledgers", &format!("snap-{}", newer.id)).expect("delete");
    let (_put, put_spn, _cache) = put_only_host(&net, &owner);
    put_spn.put_record("ledgers", "snap-00000000deadbeef", b"garbage").expect("add");
    let p = backup::prune(&owner.repo, 0, u64::MAX / 2).expect("prune");
    assert!(p.objects_deleted.len() >= 2, "{p:?}");
}

/// What real trees hold and a restore got wrong: a name of 250 bytes (the
/// temporary name made from it passed the 255-byte limit and failed the
/// whole restore), a file named like the old temporary name of its
/// sibling (one's bytes could land under the other's name), a chain of
/// symlinks that leaves the target (`a/up -> ..`, then `a/out -> up/..`),
/// and a symlink where the target tree has a directory (failed the whole
/// restore).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_names_lookalike_names_symlink_chains_and_directories_in_the_way() {
    let (_net, dev, h, _work, src) = setup(4, "names2", "src").await;
    let long = "é".repeat(125);
    assert_eq!(long.len(), 250);
    write(&src.join(&long), b"a long name's bytes");
    write(&src.join("foo"), b"foo's bytes");
    write(&src.join(".foo.ionshard-restore"), b"the lookalike's bytes");
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    std::os::unix::fs::symlink("..", src.join("a/up")).expect("symlink");
    std::os::unix::fs::symlink("up/..", src.join("a/out")).expect("symlink");
    std::os::unix::fs::symlink("foo", src.join("lnk")).expect("symlink");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = tempfile::tempdir().expect("target");
    let at = target.path().join(src.strip_prefix("/").expect("abs"));
    // Where the snapshot has the symlink `lnk`, the target has a directory.
    std::fs::create_dir_all(at.join("lnk")).expect("a directory in the way");
    let ro = RestoreOptions::new(s.id.clone(), target.path().to_path_buf());
    let r = backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    assert_eq!(std::fs::read(at.join(&long)).expect("long name"), b"a long name's bytes");
    assert_eq!(std::fs::read(at.join("foo")).expect("foo"), b"foo's bytes");
    assert_eq!(std::fs::read(at.join(".foo.ionshard-restore")).expect("lookalike"), b"the lookalike's bytes");
    assert_eq!(std::fs::read_link(at.join("a/up")).expect("a/up"), Path::new(".."));
    assert!(std::fs::symlink_metadata(at.join("a/out")).is_err(), "a/out would point outside the target");
    assert!(at.join("lnk").is_dir(), "the directory in the way stays");
    let skipped: Vec<&str> = r.skipped.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    assert!(skipped.iter().any(|p| p.ends_with("a/out")) && skipped.iter().any(|p| p.ends_with("/lnk")), "{skipped:?}");
    let stray: Vec<_> = std::fs::read_dir(&at)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ionshard-restore"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

/// `--include` of the second path of a hard-linked file only: its bytes are
/// kept under the first path, which is not restored. It was reported as
/// "a hard link of … which this restore does not include" and not made;
/// it is now restored as a file of its own with those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_included_hard_link_whose_first_path_is_left_out_is_restored_whole() {
    let (_net, dev, h, _work, src) = setup(4, "links", "src").await;
    write(&src.join("a/first.bin"), &image(200_000, 41));
    std::fs::create_dir_all(src.join("b")).expect("mkdir");
    std::fs::hard_link(src.join("a/first.bin"), src.join("b/second.bin")).expect("hard link");
    let mut o = options(std::slice::from_ref(&src));
    o.coding = (2, 2);
    let s = backup::run(&h.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = tempfile::tempdir().expect("target");
    let include = vec![src.join("b").display().to_string()];
    let ro =
        RestoreOptions { snapshot: s.id.clone(), target: target.path().to_path_buf(), include, trust_added: false };
    let r = backup::restore(&h.repo, &dev.client, &ro, Arc::new(client::Hidden)).await.expect("restore");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let at = target.path().join(src.strip_prefix("/").expect("abs"));
    assert_eq!(std::fs::read(at.join("b/second.bin")).expect("second"), image(200_000, 41));
    assert!(!at.join("a").exists(), "only what was included");
}

/// The attack: a tenant uploads segments honestly (here another tenant's
/// shards, which it has), then commits a manifest that lists them in a
/// segment claiming another length. Audits ask each holder for blocks of
/// the length the manifest says: every honest holder fails them, is
/// disqualified, and its copies (the victim's too) are deleted. The commit
/// is refused: the holders' signed receipts say each shard's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_cannot_list_shards_with_a_length_they_do_not_have() {
    let net = network(6, None).await;
    let dev = device(&net).await;
    let victim = host(&net, "victim3");
    let work = tempfile::tempdir().expect("work");
    let src = work.path().join("files");
    write(&src.join("books.bin"), &image(300_000, 9));
    let o = options(std::slice::from_ref(&src));
    let s = backup::run(&victim.repo, None, &o, Arc::new(client::Hidden)).await.expect("backup").snapshot;
    let target = s.data[0].manifest.clone();
    let (_operator, attacker, manifest_bytes, segments) =
        attacker_with_shards_of(&net, &dev.client, "attacker3", &target).await;
    let job = attacker.open_session("attacker3").expect("session").job;
    for (len, k, shards) in segments {
        let a = attacker.clone();
        tokio::task::spawn_blocking(move || a.put_segment(job, len, k, shards)).await.expect("join").expect("upload");
    }
    // The same manifest with its first segment's length made 8 times larger.
    let m = chunker::Manifest::from_bytes(&manifest_bytes, &Default::default()).expect("parse");
    let len = u32::try_from(m.segments()[0].len()).expect("a small segment");
    let find: Vec<u8> = [&[0x1a][..], &len.to_be_bytes()].concat();
    let at = manifest_bytes.windows(5).position(|w| w == find.as_slice()).expect("the segment's length");
    let mut forged = manifest_bytes.clone();
    forged[at + 1..at + 5].copy_from_slice(&(len * 8).to_be_bytes());
    let fm = chunker::Manifest::from_bytes(&forged, &Default::default()).expect("the forgery parses");
    assert_ne!(fm.segments()[0].shard_len(), m.segments()[0].shard_len(), "the forgery lies about the length");
    let a = attacker.clone();
    let err = tokio::task::spawn_blocking(move || a.commit(job, &[forged], &[]))
        .await
        .expect("join")
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not match what was uploaded"), "{err}");
}
