//! Who may reach a drive's bytes, with real nodes on loopback: a device
//! (a peer with a redb store that keeps its owner's drive), the owner's
//! logged-in client, a paired client without the password, and a stranger
//! who knows every CID. Only the first client reads, lists or deletes a
//! drive shard; the others are refused before the device reads a byte,
//! and a revoked pairing is refused at its next request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::Cid;
use net::{Client, Config, Keypair, Multiaddr, PeerId, Role};

fn tcp0() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")]
}

async fn addr(c: &Client) -> Multiaddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = c.listen_addrs().await.expect("addrs").into_iter().next() {
            return a.with(net::Protocol::P2p(c.peer_id()));
        }
        assert!(Instant::now() < deadline, "no listen address in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pair(device_dir: &Path, client_dir: &Path, name: &str, client: PeerId, device: PeerId) {
    let p = |peer, name: &str, role| drive::Paired { peer, name: name.into(), role, key: None };
    let mut d = drive::Pairs::load(&device_dir.join("drive/pairs.json")).expect("pairs");
    d.add(&p(client, name, drive::Role::Client), 1).expect("add");
    let mut c = drive::Pairs::load(&client_dir.join("drive/pairs.json")).expect("pairs");
    c.add(&p(device, "nas", drive::Role::Device), 1).expect("add");
}

fn refusal(e: net::Error) -> String {
    e.to_string()
}

/// A bootstrap node on loopback, and its address.
async fn bootstrap() -> ((Client, tokio::task::JoinHandle<()>), Multiaddr) {
    let config = Config { role: Role::Bootstrap, listen: tcp0(), ..Config::default() };
    let (boot, h) = net::start(config, Keypair::generate_ed25519(), None).await.expect("bootstrap");
    let a = addr(&boot).await;
    ((boot, h), a)
}

/// A device as `ionshard node` runs one: a peer with a store, its drive in
/// its directory `dir`, answering the drive protocol.
async fn device(
    dir: &Path,
    boot: &Multiaddr,
    config: store::Config,
) -> (Client, tokio::task::JoinHandle<()>, store::Store) {
    let (store, _) = store::Store::open(dir.join("store"), config).expect("store");
    let device = Arc::new(drive::Device::open(dir).expect("device"));
    let config = Config {
        role: Role::Peer,
        listen: tcp0(),
        bootstrap: vec![boot.clone()],
        private: Some(device.clone()),
        ..Config::default()
    };
    let (nas, h) = net::start(config, Keypair::generate_ed25519(), Some(store.clone())).await.expect("device");
    let (answers, paired) = (device.clone(), device);
    nas.serve_drive(
        drive::protocol::MAX_MESSAGE,
        move |p: &PeerId| paired.is_paired(p),
        move |peer, q| {
            let d = answers.clone();
            async move { d.answer(&peer, &q, now()) }
        },
    )
    .expect("serve drive");
    let _ = addr(&nas).await;
    (nas, h, store)
}

/// A device that fills up refuses the next file with a clear error, and
/// what it already keeps stays whole and readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_refuses_clearly_and_keeps_what_it_has() {
    let root = tempfile::tempdir().expect("tmp");
    let (_boot, boot_addr) = bootstrap().await;
    let ddir = root.path().join("nas");
    let (nas, _nh, store) = device(&ddir, &boot_addr, store::Config::default().with_capacity(8 << 20)).await;
    let (laptop, _lh) =
        net::join(std::slice::from_ref(&boot_addr), Some(Keypair::generate_ed25519())).await.expect("client");
    pair(&ddir, &root.path().join("laptop"), "laptop", laptop.peer_id(), nas.peer_id());
    let devices = [nas.peer_id()];
    let (login, _) =
        drive::setup(&laptop, &devices, "correct horse battery", &drive::new_recovery_code()).await.expect("setup");
    let d = drive::Drive::new(laptop.clone(), devices.to_vec(), &login).expect("drive");
    // Random bytes (the chunker compresses; these do not shrink).
    let noise = |n: usize, seed: u8| -> Vec<u8> {
        let mut v = vec![0u8; n];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
        v
    };
    let small = root.path().join("small.bin");
    std::fs::write(&small, noise(3 << 20, 1)).expect("write");
    let kept = d.store(&small, now(), Arc::new(client::Hidden)).await.expect("fits");
    d.update(|t| t.add_version("/small.bin", kept.version.clone(), now())).await.expect("tree");
    let before = store.usage();
    let big = root.path().join("big.bin");
    std::fs::write(&big, noise(9 << 20, 2)).expect("write");
    let e = d.store(&big, now(), Arc::new(client::Hidden)).await.expect_err("no room");
    let why = e.to_string();
    assert!(why.contains("full") || why.contains("no room") || why.contains("can take"), "{why}");
    assert!(matches!(e, drive::Error::NoRoom(_)), "{e:?}");
    // Nothing of the refused file stays; what was there reads back whole.
    let after = store.usage();
    assert_eq!((after.shards, after.bytes), (before.shards, before.bytes), "the refused file left nothing behind");
    let out = root.path().join("back.bin");
    d.fetch(&kept.version, &out, Arc::new(client::Hidden)).await.expect("fetch");
    assert_eq!(std::fs::read(&out).expect("read"), std::fs::read(&small).expect("read"));
}

/// A new version of a large file after a small edit sends only the
/// segments around the edit; it names the old version's shards it reuses,
/// so thinning the old version away deletes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_a_large_file_sends_only_what_changed_and_survives_its_old_version() {
    let root = tempfile::tempdir().expect("tmp");
    let (_boot, boot_addr) = bootstrap().await;
    let ddir = root.path().join("nas");
    let (nas, _nh, _store) = device(&ddir, &boot_addr, store::Config::default()).await;
    let (laptop, _lh) =
        net::join(std::slice::from_ref(&boot_addr), Some(Keypair::generate_ed25519())).await.expect("client");
    pair(&ddir, &root.path().join("laptop"), "laptop", laptop.peer_id(), nas.peer_id());
    let devices = [nas.peer_id()];
    let (login, _) =
        drive::setup(&laptop, &devices, "correct horse battery", &drive::new_recovery_code()).await.expect("setup");
    let d = drive::Drive::new(laptop.clone(), devices.to_vec(), &login).expect("drive");
    let mut bytes = vec![0u8; 12 << 20];
    blake3::Hasher::new().update(b"large").finalize_xof().fill(&mut bytes);
    let file = root.path().join("large.bin");
    std::fs::write(&file, &bytes).expect("write");
    let v1 = d.store(&file, now(), Arc::new(client::Hidden)).await.expect("v1");
    d.update(|t| t.add_version("/large.bin", v1.version.clone(), now())).await.expect("tree");
    // A few bytes changed in the middle.
    bytes[6 << 20..(6 << 20) + 40].copy_from_slice(&[0x55; 40]);
    std::fs::write(&file, &bytes).expect("write");
    let v2 = d.store_from(&file, now(), Arc::new(client::Hidden), Some(&v1.version)).await.expect("v2");
    assert!(
        v2.shard_bytes * 4 < v1.shard_bytes,
        "an edit sent {} bytes of shards; the whole file took {}",
        v2.shard_bytes,
        v1.shard_bytes
    );
    let reused = v2.version.shards.iter().filter(|s| v1.version.shards.contains(s)).count();
    assert!(reused > 0, "v2 names v1's shards it reuses");
    // v1 goes (as thinning or a purged trash drops it): only its shards no
    // other version names are deleted, and v2 reads back whole.
    let dropped = d
        .update(|t| {
            let Some(drive::tree::Entry::File { versions }) = t.entries.get_mut("/large.bin") else {
                return Err(drive::Error::NotInDrive("/large.bin".into()));
            };
            versions.insert(versions.len(), v2.version.clone());
            versions.retain(|v| v.manifest != v1.version.manifest);
            Ok(t.unreferenced(std::slice::from_ref(&v1.version)))
        })
        .await
        .expect("tree");
    assert!(dropped.iter().all(|s| !v2.version.shards.contains(s)), "no shard v2 uses is dropped");
    d.delete(&dropped).await;
    let out = root.path().join("back.bin");
    d.fetch(&v2.version, &out, Arc::new(client::Hidden)).await.expect("fetch v2");
    assert!(std::fs::read(&out).expect("read") == bytes, "v2 reads back byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaired_node_that_knows_the_cids_reads_nothing_and_revocation_counts_at_once() {
    let root = tempfile::tempdir().expect("tmp");
    let (_boot, boot_addr) = bootstrap().await;
    let ddir = root.path().join("nas");
    let (nas, _nh, store) = device(&ddir, &boot_addr, store::Config::default()).await;
    // Three clients: the owner's laptop, the owner's phone (paired, no
    // password), a stranger.
    let client = || async {
        net::join(std::slice::from_ref(&boot_addr), Some(Keypair::generate_ed25519())).await.expect("client")
    };
    let (laptop, _lh) = client().await;
    let (phone, _ph) = client().await;
    let (stranger, _sh) = client().await;
    let (friend, _fh) = client().await;
    let ldir = root.path().join("laptop");
    let pdir = root.path().join("phone");
    pair(&ddir, &ldir, "laptop", laptop.peer_id(), nas.peer_id());
    pair(&ddir, &pdir, "phone", phone.peer_id(), nas.peer_id());
    // A friend's node: paired, at the other trust level.
    let mut d = drive::Pairs::load(&ddir.join("drive/pairs.json")).expect("pairs");
    d.add(&drive::Paired { peer: friend.peer_id(), name: "alice".into(), role: drive::Role::Friend, key: None }, 1)
        .expect("add");

    // Before a drive exists and a login: no puts from anyone but a trusted SPN.
    let probe = vec![5u8; 1000];
    let e = laptop.pin_shard(nas.peer_id(), Cid::of_raw(&probe), &probe[..]).await.expect_err("no session yet");
    assert!(refusal(e).contains("not logged in"), "a paired client without a session puts nothing");

    let devices = [nas.peer_id()];
    let (login, reached) =
        drive::setup(&laptop, &devices, "correct horse battery", &drive::new_recovery_code()).await.expect("setup");
    assert_eq!(reached.ok.len(), 1, "{reached:?}");
    let d = drive::Drive::new(laptop.clone(), devices.to_vec(), &login).expect("drive");
    let file = root.path().join("secret.bin");
    // Random bytes: several segments, not compressed away.
    let mut bytes = vec![0u8; 5_000_000];
    blake3::Hasher::new().update(b"secret").finalize_xof().fill(&mut bytes);
    std::fs::write(&file, &bytes).expect("write");
    let stored = d.store(&file, now(), Arc::new(client::Hidden)).await.expect("store");
    d.update(|t| t.add_version("/secret.bin", stored.version.clone(), now())).await.expect("tree");
    let shards: Vec<Cid> = stored.version.shards.iter().map(|s| s.parse().expect("cid")).collect();
    let manifest: Cid = stored.version.stored.parse().expect("cid");
    assert!(!shards.is_empty());
    let before = store.usage();

    // The owner reads it back, byte for byte.
    let out = root.path().join("back.bin");
    d.fetch(&stored.version, &out, Arc::new(client::Hidden)).await.expect("fetch");
    assert_eq!(std::fs::read(&out).expect("read"), bytes);

    // An upload cut off halfway (its first segments kept, the rest not),
    // run again: the same content makes the same shards, and only those the
    // device lacks are sent.
    let last = *shards.last().expect("shards");
    assert!(shards.len() > 1 && laptop.delete_shard(nas.peer_id(), last).await.expect("delete"));
    let again = d.store(&file, now(), Arc::new(client::Hidden)).await.expect("store again");
    assert_eq!(again.version.shards, stored.version.shards);
    assert!(again.resumed_bytes > 0 && again.shard_bytes > 0, "{again:?}");
    assert!(again.shard_bytes < stored.shard_bytes, "only the missing shard was sent: {again:?}");
    assert_eq!(store.usage().bytes, before.bytes, "the device keeps what it kept before");

    // A stranger who knows every CID is told, at the drive, that it is not
    // paired; asking for the bytes, it hears what it would of a shard the
    // device does not keep (knowing a CID does not tell whether it is
    // here), and gets nothing, deletes nothing.
    let e = drive::login(&stranger, &devices, "correct horse battery", false).await.expect_err("stranger login");
    assert!(e.to_string().contains("not paired with this device"), "{e}");
    let absent = Cid::of_raw(b"nobody stored this");
    let as_absent = |e: String, cid: &Cid| e.replace(&cid.to_string(), "CID");
    let unknown = as_absent(refusal(stranger.get_shard(nas.peer_id(), absent).await.expect_err("absent")), &absent);
    for cid in shards.iter().chain([&manifest]) {
        let e = refusal(stranger.get_shard(nas.peer_id(), *cid).await.expect_err("stranger get"));
        assert_eq!(as_absent(e, cid), unknown, "a drive shard is answered as an absent one");
        let e = refusal(stranger.get_ranges(nas.peer_id(), *cid, 16, vec![0..8]).await.expect_err("stranger ranges"));
        assert!(e.contains("not stored here"), "{e}");
        assert_eq!(
            stranger.delete_shard(nas.peer_id(), *cid).await.ok(),
            Some(false),
            "as if not here: nothing deleted"
        );
    }
    // A friend's node: told so by the drive; the bytes are as absent to it.
    let e = drive::login(&friend, &devices, "correct horse battery", false).await.expect_err("friend login");
    assert!(e.to_string().contains("a friend's node"), "{e}");
    let e = refusal(friend.get_shard(nas.peer_id(), shards[0]).await.expect_err("friend get"));
    assert!(e.contains("not stored here"), "{e}");
    let have = stranger.has_many(nas.peer_id(), shards.clone()).await.expect("has many");
    assert!(have.iter().all(|h| !h), "a stranger is not even told the shards are here");
    let have = laptop.has_many(nas.peer_id(), shards.clone()).await.expect("has many");
    assert!(have.iter().all(|h| *h), "the owner is");
    let e = refusal(stranger.pin_shard(nas.peer_id(), Cid::of_raw(&probe), &probe[..]).await.expect_err("put"));
    assert!(e.contains("not a trusted SPN"), "{e}");
    // The paired phone without the password: its own refusal.
    let e = refusal(phone.get_shard(nas.peer_id(), shards[0]).await.expect_err("phone get"));
    assert!(e.contains("not logged in"), "{e}");
    let wrong = drive::login(&phone, &devices, "wrong horse", false).await.expect_err("wrong password");
    assert!(wrong.to_string().contains("wrong password"), "{wrong}");
    // Nothing the refused asked for changed the store.
    let after = store.usage();
    assert_eq!((after.shards, after.bytes), (before.shards, before.bytes), "the store is as it was");
    for cid in &shards {
        assert!(store.meta(cid).expect("meta").is_some_and(|m| m.owner == net::PRIVATE_OWNER && m.pinned));
    }

    // Revoked on the device by another process: refused at the next
    // request (the drive says why; the shards are as good as absent).
    drive::Pairs::load(&ddir.join("drive/pairs.json")).expect("pairs").revoke("laptop", 2).expect("revoke");
    let e = refusal(laptop.get_shard(nas.peer_id(), shards[0]).await.expect_err("revoked get"));
    assert!(e.contains("not stored here"), "{e}");
    let e = d.read().await.expect_err("revoked: no tree");
    assert!(e.to_string().contains("revoked"), "{e}");
    assert!(store.meta(&shards[0]).expect("meta").is_some(), "revoking deletes nothing");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
