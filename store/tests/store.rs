//! The shard store: operations, refusals, corruption, expiry, and crashes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chunker::Cid;
use store::{Backend, Config, Error, Fs, Put, PutOptions, Store};

fn shard(seed: u64, len: usize) -> (Cid, Vec<u8>) {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut v);
    (Cid::of_raw(&v), v)
}

fn opts(owner: &str) -> PutOptions {
    PutOptions { owner: owner.as_bytes().to_vec(), now: 1_000, expiry: None, pinned: false }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn put_get_ranges_has_delete_list_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, report) = Store::open(dir.path(), Config::default()).expect("open");
    assert_eq!(report.removed_partial, 0);
    let (a, abytes) = shard(1, 300_000);
    let (b, bbytes) = shard(2, 1000);
    assert_eq!(store.put(&a, &abytes, &opts("spn")).expect("put"), Put::Stored);
    assert_eq!(store.put(&a, &abytes, &opts("spn")).expect("put again"), Put::AlreadyStored);
    store.put(&b, &bbytes, &opts("spn")).expect("put b");
    assert_eq!(store.get(&a).expect("get"), abytes);
    let ranges = vec![10..20, 100_000..165_536];
    let proof = store.get_ranges(&a, &ranges).expect("ranges");
    let got = chunker::proof::verify(&a, abytes.len() as u64, &ranges, &proof).expect("verify");
    assert_eq!(got[1], abytes[100_000..165_536]);
    let (c, _) = shard(3, 10);
    assert_eq!(store.has_many(&[a, c, b]).expect("has"), vec![true, false, true]);
    let u = store.usage();
    assert_eq!((u.shards, u.bytes), (2, 301_000));
    assert_eq!(store.list().expect("list").len(), 2);
    assert!(matches!(store.delete(&a, b"someone else"), Err(Error::NotOwner { .. })));
    assert!(store.delete(&a, b"spn").expect("delete"));
    assert!(!store.delete(&a, b"spn").expect("delete again"));
    assert!(matches!(store.get(&a), Err(Error::NotFound(_))));
    assert_eq!(store.usage().bytes, 1000);
    drop(store);
    // Reopening finds the same.
    let (store, _) = Store::open(dir.path(), Config::default()).expect("reopen");
    assert_eq!(store.usage().bytes, 1000);
    assert_eq!(store.get(&b).expect("get b"), bbytes);
}

#[test]
fn refusals_are_clear_and_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) =
        Store::open(dir.path(), Config::default().with_capacity(500_000).with_max_shard(400_000)).expect("open");
    let (a, abytes) = shard(1, 300_000);
    store.put(&a, &abytes, &opts("spn")).expect("put");
    let (b, bbytes) = shard(2, 300_000);
    let err = store.put(&b, &bbytes, &opts("spn")).unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
    assert!(err.to_string().contains("capacity of 500000 bytes"), "{err}");
    let (c, cbytes) = shard(3, 450_000);
    assert!(matches!(store.put(&c, &cbytes, &opts("spn")), Err(Error::TooLarge { .. })));
    let (d, _) = shard(4, 1000);
    let (_, other) = shard(5, 1000);
    let err = store.put(&d, &other, &opts("spn")).unwrap_err();
    assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
    // Nothing stored was harmed, nothing half-written is left.
    assert_eq!(store.get(&a).expect("get"), abytes);
    assert_eq!(store.usage().shards, 1);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[test]
fn corruption_is_caught_quarantined_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), Config::default()).expect("open");
    let mut cids = Vec::new();
    for i in 0..4 {
        let (c, b) = shard(i, 50_000);
        store.put(&c, &b, &opts("spn")).expect("put");
        cids.push(c);
    }
    let flip = |cid: &Cid| {
        let path = files_under(&dir.path().join("shards"))
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == cid.to_string()))
            .expect("file");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[777] ^= 4;
        std::fs::write(&path, bytes).expect("write");
    };
    flip(&cids[0]);
    assert!(matches!(store.get(&cids[0]), Err(Error::Corrupt { .. })));
    assert!(matches!(store.get(&cids[0]), Err(Error::NotFound(_))), "never served again");
    flip(&cids[1]);
    assert!(matches!(store.get_ranges(&cids[1], &[700..800]), Err(Error::Corrupt { .. })));
    flip(&cids[2]);
    let mut seen = 0;
    let report = store
        .scrub(&mut |done, total| {
            seen = done;
            assert!(done <= total);
        })
        .expect("scrub");
    assert_eq!(report.checked, 2);
    assert_eq!(report.bad.len(), 1);
    assert_eq!(report.bad[0].0, cids[2]);
    assert_eq!(seen, 2);
    let u = store.usage();
    assert_eq!((u.shards, u.quarantined), (1, 3));
    assert_eq!(store.has_many(&cids).expect("has"), vec![false, false, false, true]);
    // A good copy replaces a quarantined one.
    let (c0, b0) = shard(0, 50_000);
    assert_eq!(store.put(&c0, &b0, &opts("spn")).expect("put"), Put::Stored);
    assert_eq!(store.get(&c0).expect("get"), b0);
}

#[test]
fn expired_shards_are_swept_and_pinned_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), Config::default()).expect("open");
    let (a, ab) = shard(1, 1000);
    let (b, bb) = shard(2, 1000);
    let (c, cb) = shard(3, 1000);
    store.put(&a, &ab, &PutOptions { expiry: Some(2_000), ..opts("spn") }).expect("put");
    store.put(&b, &bb, &PutOptions { expiry: Some(2_000), pinned: true, ..opts("spn") }).expect("put");
    store.put(&c, &cb, &PutOptions { expiry: Some(9_000), ..opts("spn") }).expect("put");
    assert!(store.sweep_expired(1_999).expect("sweep").is_empty());
    assert_eq!(store.sweep_expired(2_000).expect("sweep"), vec![a]);
    assert_eq!(store.has_many(&[a, b, c]).expect("has"), vec![false, true, true]);
}

/// A backend that stops dead (panics) at its `at`-th operation, as a kill would.
struct Crashing {
    at: usize,
    ops: Arc<AtomicUsize>,
}

impl Crashing {
    fn step(&self) {
        if self.ops.fetch_add(1, Ordering::SeqCst) == self.at {
            panic!("simulated crash");
        }
    }
}

impl Backend for Crashing {
    fn write_new(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.step();
        // Half the bytes, then stop: a torn write.
        if self.ops.load(Ordering::SeqCst) == self.at + 1 {
            std::fs::write(path, &bytes[..bytes.len() / 2])?;
        }
        self.step();
        Fs.write_new(path, bytes)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.step();
        Fs.rename(from, to)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        Fs.read(path)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.step();
        Fs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.step();
        Fs.sync_dir(dir)
    }
}

#[test]
fn a_crash_at_any_step_of_a_put_leaves_all_or_nothing() {
    for at in 0..6 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (good, gb) = shard(100, 20_000);
        {
            let (s, _) = Store::open(dir.path(), Config::default()).expect("open");
            s.put(&good, &gb, &opts("spn")).expect("put");
        }
        let (cid, bytes) = shard(at as u64, 70_000);
        let ops = Arc::new(AtomicUsize::new(0));
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let backend = Box::new(Crashing { at, ops: ops.clone() });
            let (s, _) = Store::open_with_backend(dir.path(), Config::default(), backend).expect("open");
            s.put(&cid, &bytes, &opts("spn")).map(|_| ())
        }))
        .is_err();
        let (s, report) = Store::open(dir.path(), Config::default()).expect("reopen");
        let listed: Vec<Cid> = s.list().expect("list").into_iter().map(|(c, _)| c).collect();
        assert!(listed.contains(&good), "step {at}: an earlier shard was lost");
        if listed.contains(&cid) {
            assert_eq!(s.get(&cid).expect("whole"), bytes, "step {at}");
        } else {
            assert!(crashed, "step {at}: put neither crashed nor stored");
        }
        assert!(files_under(&dir.path().join("tmp")).is_empty(), "step {at}: temp files left");
        assert_eq!(files_under(&dir.path().join("shards")).len(), listed.len(), "step {at}: stray files ({report:?})");
        assert_eq!(s.usage().shards, listed.len() as u64);
    }
}

const CHILD: &str = "IONSHARD_STORE_CHILD";

/// Run in a child process by the kill -9 test: put shards until killed,
/// printing each CID once its put has returned.
#[test]
fn child_put_loop() {
    let Some(dir) = std::env::var_os(CHILD) else { return };
    let (s, _) = Store::open(&dir, Config::default()).expect("open");
    let started = Instant::now();
    for i in 0..5_000u64 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let (c, b) = shard(i, 50_000 + (i as usize * 7919) % 400_000);
        s.put(&c, &b, &opts("spn")).expect("put");
        println!("stored {c}");
    }
}

#[test]
fn kill_9_during_puts_then_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "child_put_loop", "--nocapture", "--test-threads", "1"])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(c) = line.strip_prefix("stored ") {
            reported.push(c.parse::<Cid>().expect("cid"));
        }
        if reported.len() >= 40 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert!(reported.len() >= 40, "child stored only {}", reported.len());

    let (s, report) = Store::open(dir.path(), Config::default()).expect("reopen");
    let listed = s.list().expect("list");
    for c in &reported {
        assert!(listed.iter().any(|(l, _)| l == c), "a shard whose put returned is gone");
    }
    for (c, m) in &listed {
        let bytes = s.get(c).expect("every listed shard reads back verified");
        assert_eq!(bytes.len() as u64, m.size);
    }
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(files_under(&dir.path().join("shards")).len(), listed.len());
    println!("kill -9 after {} puts: {} listed, reopen mended {report:?}", reported.len(), listed.len());
}

#[test]
fn a_second_put_extends_expiry_and_pins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), Config::default()).expect("open");
    let (a, ab) = shard(1, 1000);
    store.put(&a, &ab, &PutOptions { expiry: Some(2_000), ..opts("spn") }).expect("put");
    store.put(&a, &ab, &PutOptions { expiry: Some(5_000), ..opts("spn") }).expect("renew");
    assert!(store.sweep_expired(3_000).expect("sweep").is_empty(), "renewal was ignored");
    store.put(&a, &ab, &PutOptions { expiry: Some(1_000), pinned: true, ..opts("spn") }).expect("pin");
    assert!(store.sweep_expired(10_000).expect("sweep").is_empty(), "pin was ignored");
    assert_eq!(store.meta(&a).expect("meta").expect("there").expiry, Some(5_000));
}

#[test]
fn concurrent_puts_deletes_and_gets_keep_index_files_and_usage_in_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), Config::default()).expect("open");
    let set: Vec<(Cid, Vec<u8>)> = (0..8).map(|i| shard(i, 30_000)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            let set = &set;
            s.spawn(move || {
                for round in 0..30 {
                    let (c, b) = &set[(t + round) % set.len()];
                    if (t + round) % 3 == 0 {
                        let _ = store.delete(c, b"spn");
                    } else {
                        store.put(c, b, &opts("spn")).expect("put");
                        let _ = store.get(c);
                    }
                }
            });
        }
    });
    let listed = store.list().expect("list");
    let u = store.usage();
    assert_eq!(u.shards, listed.len() as u64, "usage drifted from the index");
    assert_eq!(u.bytes, listed.iter().map(|(_, m)| m.size).sum::<u64>());
    for (c, _) in &listed {
        store.get(c).expect("every listed shard has its whole file");
    }
    assert_eq!(files_under(&dir.path().join("shards")).len(), listed.len());
}

#[test]
fn a_renew_extends_only_its_owners_shards_never_shortens_and_expired_ones_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), Config::default()).expect("open");
    let (a, ab) = shard(1, 1000);
    let (b, bb) = shard(2, 1000);
    store.put(&a, &ab, &PutOptions { expiry: Some(2_000), ..opts("spn") }).expect("put");
    store.put(&b, &bb, &PutOptions { expiry: Some(2_000), ..opts("spn") }).expect("put");
    assert!(matches!(store.renew(&a, b"someone else", 9_000), Err(Error::NotOwner { .. })), "not the owner");
    assert_eq!(store.renew(&a, b"spn", 5_000).expect("renew").and_then(|m| m.expiry), Some(5_000));
    assert_eq!(store.renew(&a, b"spn", 3_000).expect("renew").and_then(|m| m.expiry), Some(5_000), "never shorter");
    let (c, _) = shard(3, 10);
    assert!(store.renew(&c, b"spn", 5_000).expect("renew").is_none(), "not here");
    let expired: Vec<Cid> = store.expired(2_500).expect("expired").into_iter().map(|(c, _)| c).collect();
    assert_eq!(expired, vec![b]);
    assert_eq!(store.sweep_expired(2_500).expect("clear"), vec![b]);
    assert_eq!(store.has_many(&[a, b]).expect("has"), vec![true, false]);
    // The renewal is on disk.
    drop(store);
    let (store, _) = Store::open(dir.path(), Config::default()).expect("reopen");
    assert_eq!(store.meta(&a).expect("meta").expect("there").expiry, Some(5_000));
}

/// Reads that find no file once (the file was gone when it was read: its
/// owner deleted the shard and put it again just then).
struct VanishesOnce {
    missed: std::sync::atomic::AtomicBool,
}

impl Backend for VanishesOnce {
    fn write_new(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        Fs.write_new(path, bytes)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        Fs.rename(from, to)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let shard = path.components().any(|c| c.as_os_str() == "shards");
        if shard && !self.missed.swap(true, Ordering::SeqCst) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Fs.read(path)
    }
    fn open(&self, path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::File::open(path)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        Fs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        Fs.sync_dir(dir)
    }
}

/// A get raced its shard's delete and put again: the get found no file,
/// and forgot the shard by the entry it had read before. That removed the
/// new shard (whose receipt was just signed) and counted its bytes out twice.
#[test]
fn a_get_racing_a_delete_and_a_put_again_keeps_the_new_shard_and_its_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Box::new(VanishesOnce { missed: Default::default() });
    let (s, _) = Store::open_with_backend(dir.path(), Config::default(), backend).expect("open");
    let (cid, bytes) = shard(77, 30_000);
    s.put(&cid, &bytes, &opts("spn")).expect("put");
    let before = s.usage();
    assert!(matches!(s.get(&cid), Err(Error::NotFound(_))), "the first read finds no file");
    assert_eq!(s.get(&cid).expect("the shard put again is still here"), bytes);
    let after = s.usage();
    assert_eq!((after.shards, after.bytes), (before.shards, before.bytes));
}
