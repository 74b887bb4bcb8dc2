//! The ledger with real producer processes on loopback: four finalize
//! blocks; with one down the chain goes on; with two down it halts; brought
//! back, it resumes, and every node holds the same blocks.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Procs, bin, exe, json_out, s};
use serde_json::Value;

struct Chain {
    procs: Procs,
    genesis: PathBuf,
    producers: Vec<(PathBuf, String)>,
    /// Producers that sign with a key file apart from their node key.
    keys: harness::procs::ProducerKeys,
}

impl Chain {
    fn start(dir: &Path, n: usize) -> Chain {
        Chain::start_with_keys(dir, n, &[])
    }
    /// The producers `apart` sign with a producer key apart from their node key.
    fn start_with_keys(dir: &Path, n: usize, apart: &[usize]) -> Chain {
        let (genesis, producers, keys) =
            harness::procs::ledger_genesis_apart(exe(), dir, n, 300, 300, &[], apart).expect("genesis");
        let mut c = Chain { procs: Procs::new(&dir.join("logs")), genesis, producers, keys };
        for i in 0..n {
            c.up(i);
        }
        c
    }
    fn up(&mut self, i: usize) {
        let (pdir, addr) = &self.producers[i];
        let key = self.keys.iter().find(|(k, _)| *k == i).map(|(_, f)| f.as_path());
        self.procs.start(&format!("producer{i}"), &harness::procs::producer_args_keyed(addr, pdir, &self.genesis, key));
    }
    fn down(&mut self, i: usize) {
        self.procs.kill(&format!("producer{i}"));
    }
    /// `ionshard ledger status` through producer `i`.
    fn status(&self, i: usize) -> Value {
        let o = bin()
            .args(["ledger", "status", "--json", "--bootstrap", &self.producers[i].1])
            .output()
            .expect("ledger status");
        json_out(&o, "ledger status")
    }
    fn height(&self, i: usize) -> u64 {
        self.status(i)["height"].as_u64().expect("height")
    }
    /// Wait until producer `i` holds block `h` (at most `within`).
    fn wait_height(&self, i: usize, h: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let now = self.height(i);
            if now >= h {
                return now;
            }
            assert!(Instant::now() < deadline, "producer {i} stayed at height {now}, below {h}, for {within:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn four_producers_go_on_with_one_down_halt_with_two_down_and_resume_with_no_fork() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Producer 1 signs with a key file apart from its node key: the chain
    // goes on with producer 3 down only if its votes count.
    let mut c = Chain::start_with_keys(dir.path(), 4, &[1]);
    c.wait_height(0, 3, Duration::from_secs(60));
    let (key_file, node_key) = (&c.keys[0].1.clone(), c.producers[1].0.join("identity.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key_file).expect("key").permissions().mode() & 0o777, 0o600);
    let id = |f: &Path| harness::procs::id_of(exe(), f).expect("ionshard id");
    let (apart, node) = (id(key_file), id(&node_key));
    assert_ne!(apart, node);
    let listed: Vec<String> = c.status(0)["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| p.as_str().map_or_else(|| p["peer"].as_str().unwrap_or_default().to_string(), str::to_string))
        .collect();
    assert!(listed.contains(&apart) && !listed.contains(&node), "{listed:?}");
    // A producer key others may read is refused, with the fix.
    let loose = dir.path().join("loose.key");
    std::fs::copy(key_file, &loose).expect("copy");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = bin()
        .args([
            "node",
            "--role",
            "bootstrap",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--dir",
            &s(&dir.path().join("loose")),
        ])
        .args(["--genesis", &s(&c.genesis), "--produce", "--producer-key", &s(&loose)])
        .output()
        .expect("node");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("chmod 600"), "{err}");

    // A transaction, signed, offered and final.
    let root = "ab".repeat(32);
    let t = tx(
        &c.producers[1].1,
        &dir.path().join("spn.key"),
        &["anchor", "--root", &root, "--count", "7", "--bytes", "1000"],
    );
    assert!(t["height"].as_u64().is_some(), "{t}");

    // One of four down: more than 2/3 remain, blocks go on.
    c.down(3);
    let h = c.height(0);
    c.wait_height(0, h + 3, Duration::from_secs(60));

    // Two of four down: the chain halts (safely: nothing is final without 3).
    c.down(2);
    std::thread::sleep(Duration::from_secs(2));
    let stalled = c.height(0);
    std::thread::sleep(Duration::from_secs(4));
    assert!(c.height(0) <= stalled + 1, "the chain went on with half its producers");
    assert_eq!(c.height(1), c.height(0));

    // Back up: it resumes, and the two that were down catch up.
    c.up(2);
    c.up(3);
    let target = stalled + 4;
    c.wait_height(0, target, Duration::from_secs(90));
    c.wait_height(3, target, Duration::from_secs(90));
    c.wait_height(2, target, Duration::from_secs(90));
    let missed = c.status(0)["missed"].clone();
    assert!(missed.as_object().is_some_and(|m| !m.is_empty()), "missed slots are recorded: {missed}");

    // No fork: every node holds the same block at every height.
    for i in 0..4 {
        c.down(i);
    }
    let chain = ledger::Genesis::load(&c.genesis).expect("genesis").hash();
    let stores: Vec<ledger::Store> =
        c.producers.iter().map(|(d, _)| ledger::Store::open(&d.join("ledger"), chain).expect("store")).collect();
    let top = stores.iter().map(|st| st.height().expect("height")).min().expect("four");
    assert!(top >= target);
    let mut signed_apart = false;
    for h in 1..=top {
        let hashes: Vec<_> = stores.iter().map(|st| st.hash_at(h).expect("read")).collect();
        assert!(hashes.iter().all(|x| x.is_some() && *x == hashes[0]), "height {h}: {hashes:?}");
        let (block, cert) = stores[0].block_at(h).expect("read").expect("block");
        let set = ledger::Genesis::load(&c.genesis).expect("genesis").validators(Default::default());
        ledger::verify_certificate(chain, &cert, &set).expect("each block carries a certificate of more than 2/3");
        assert_eq!(cert.value_id, block.hash());
        signed_apart |= cert.commit_signatures.iter().any(|x| x.address.0.to_string() == apart);
    }
    assert!(signed_apart, "the producer key apart from the node key signed no certificate");
    drop(stores);

    // A recovery signed with producer 1's node key would not count: refused
    // before it signs; with its producer key, signed.
    let file = dir.path().join("recovery.bin");
    let ids: Vec<String> =
        ledger::Genesis::load(&c.genesis).expect("genesis").producers.iter().map(|p| p.peer.clone()).collect();
    let sign = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args(["ledger", "recover", "sign", "--dir", &s(&c.producers[1].0), "--genesis", &s(&c.genesis)]);
        cmd.args(["--file", &s(&file), "--json"]).args(extra);
        for id in &ids[..3] {
            cmd.args(["--producer", id]);
        }
        cmd.output().expect("recover sign")
    };
    let o = sign(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not a producer"), "{err}");
    assert!(!file.exists(), "nothing was signed");
    json_out(&sign(&["--producer-key", &s(key_file)]), "recover sign --producer-key");
    assert!(file.exists());
}

#[test]
fn the_spn_anchors_receipts_as_it_publishes_and_a_receipt_proof_verifies_while_forgeries_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Chain::start(dir.path(), 4);
    let genesis = s(&c.genesis);
    let n = common::network_with(
        dir.path(),
        8,
        &[
            "--ledger".into(),
            genesis.clone(),
            "--anchor-every".into(),
            "1s".into(),
            "--points-every".into(),
            "1s".into(),
        ],
    );
    let vendor = common::vendor(&n, dir.path());
    let image = dir.path().join("fw.bin");
    std::fs::write(&image, common::image(3 << 20, 11)).expect("image");
    let published = common::publish(&n, &vendor, &image, "1.0.0", &[]);
    let object = published["object"].as_str().or(published["manifest"].as_str()).expect("object cid").to_string();
    let api = client::Spn::new(&n.url, Some(n.token.trim().to_string())).expect("api");
    let receipts = api.receipts(&object).expect("receipts");
    assert!(!receipts.is_empty());
    let r = &receipts[0];

    // The SPN batches the receipts, anchors the root and serves the proof.
    let deadline = Instant::now() + Duration::from_secs(90);
    let proof = loop {
        match api.receipt_proof(&r.cid.to_string(), &r.peer.to_string()) {
            Ok(p) => break p,
            Err(e) => assert!(Instant::now() < deadline, "no proof within 90 s: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let file = dir.path().join("receipt.proof");
    std::fs::write(&file, &proof.proof).expect("proof file");
    let o = bin().args(["ledger", "verify", &s(&file), "--producers", &genesis, "--json"]).output().expect("verify");
    let v = json_out(&o, "ledger verify");
    assert_eq!(v["valid"], true);
    assert_eq!(v["proves"]["receipt"]["shard"], r.cid.to_string());
    assert_eq!(v["height"].as_u64(), Some(proof.height));
    let batches = api.anchor_batches().expect("batches");
    assert!(batches.batches.iter().any(|b| b.height == Some(proof.height)));

    // Forgeries, each refused with its own error.
    let g = ledger::Genesis::load(&c.genesis).expect("genesis");
    let (chain, set) = (g.hash(), g.validators(Default::default()));
    let bytes = data_encoding::HEXLOWER.decode(proof.proof.trim().as_bytes()).expect("hex");
    let good = ledger::Proof::decode(&bytes).expect("decode");
    assert!(good.verify_receipt(chain, &set).is_ok());

    let mut forged = good.clone();
    if let Some((item, _)) = forged.item.as_mut() {
        let last = item.len() - 1;
        item[last] ^= 1; // the receipt's signature
    }
    assert!(matches!(forged.verify_receipt(chain, &set), Err(ledger::ProofError::ForgedItem(_))));

    let mut unknown = good.clone();
    unknown.header.time_ms += 1;
    assert!(matches!(unknown.verify_receipt(chain, &set), Err(ledger::ProofError::UnknownBlock { .. })));

    let mut weak = good.clone();
    weak.certificate.commit_signatures.truncate(2);
    assert!(matches!(weak.verify_receipt(chain, &set), Err(ledger::ProofError::WeakCertificate { .. })));

    // The same proof against producers of another chain is worth nothing.
    let other = ledger::Genesis { time_ms: g.time_ms + 1, ..g.clone() };
    assert!(good.verify_receipt(other.hash(), &other.validators(Default::default())).is_err());

    // Once the batch is final, the SPN credits the peer with the
    // byte-hours its receipts promise: on the chain, per attester.
    let via = &c.producers[0].1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let points = loop {
        let o = bin()
            .args(["ledger", "show", "points", &r.peer.to_string(), "--json", "--bootstrap", via])
            .output()
            .expect("show points");
        let v = json_out(&o, "ledger show points");
        if v["points"]["byte_hours"].as_u64().unwrap_or(0) > 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no points within 60 s: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(points["points"]["by"][0][0], n.spn_id, "{points}");

    // A device that requires the ledger installs a release its vendor
    // recorded there, and refuses one that is not, before downloading it.
    let recorded = bin()
        .args(["ledger", "tx", "release", "--vendor-dir", &s(&vendor), "--release", "router@1.0.0"])
        .args(["--bootstrap", via, "--json"])
        .output()
        .expect("tx release");
    json_out(&recorded, "ledger tx release");
    let bundle = published["bundle"].as_str().expect("bundle").to_string();
    let state = dir.path().join("device");
    let require = ["--require-ledger", &genesis, "--bootstrap", via];
    let ok = common::update(&n, &vendor, &state, &[&["--bundle", bundle.as_str()][..], &require[..]].concat());
    assert_eq!(json_out(&ok, "update")["installed"], true);
    std::fs::write(&image, common::image(3 << 20, 12)).expect("image v2");
    let v2 = common::publish(&n, &vendor, &image, "1.0.1", &[]);
    let bundle2 = v2["bundle"].as_str().expect("bundle").to_string();
    let refused = common::update(&n, &vendor, &state, &[&["--bundle", bundle2.as_str()][..], &require[..]].concat());
    assert!(!refused.status.success(), "an unrecorded release was installed");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not recorded on the ledger") && err.contains("nothing was downloaded"), "{err}");
    assert!(!state.join("images").join("router-1.0.1.img").exists(), "the refused release's image is on disk");
    drop(n);
    drop(c);
}

/// A manufacturer admitted by the registry's admins registers a device once;
/// strangers can neither register nor change it; its record proves from a
/// block and certificate; authorizations and deletions are recorded once.
#[test]
fn the_registry_admits_a_manufacturer_registers_a_device_once_and_refuses_strangers_with_their_own_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let id = |name: &str| {
        let o = bin().args(["id", "--json", "--key", &s(&d.join(format!("{name}.key")))]).output().expect("id");
        json_out(&o, "id")["peer_id"].as_str().expect("peer id").to_string()
    };
    let (admin, maker, device, owner) = (id("admin"), id("maker"), id("device"), id("owner"));
    let _ = id("stranger");
    let producers: Vec<(PathBuf, String)> = (0..4)
        .map(|i| harness::procs::ledger_node(exe(), d, &format!("producer{i}"), i).expect("producer key"))
        .collect();
    let addrs: Vec<String> = producers.iter().map(|(_, a)| a.clone()).collect();
    let genesis = harness::procs::ledger_init(exe(), d, &addrs, 300, 300, &["--admin".to_string(), admin.clone()])
        .expect("genesis");
    let mut procs = Procs::new(&d.join("logs"));
    for (i, (pdir, addr)) in producers.iter().enumerate() {
        procs.start(&format!("producer{i}"), &harness::procs::producer_args(addr, pdir, &genesis));
    }
    let via = producers[0].1.clone();
    let key = |name: &str| d.join(format!("{name}.key"));
    let refused = |name: &str, args: &[&str]| -> String {
        let o =
            bin().args(["ledger", "tx", "--bootstrap", &via, "--key", &s(&key(name))]).args(args).output().expect("tx");
        assert!(!o.status.success(), "{args:?} by {name} was taken");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    let e = refused("stranger", &["admit", &maker, "--name", "Acme"]);
    assert!(e.contains("is not a registry admin"), "{e}");
    let e = refused("maker", &["register", &device, "--product", "router", "--hardware", "r1"]);
    assert!(e.contains("is not an admitted manufacturer"), "{e}");
    tx(&via, &key("admin"), &["admit", &maker, "--name", "Acme"]);
    let reg = tx(&via, &key("maker"), &["register", &device, "--product", "router", "--hardware", "r1"]);
    let e = refused("maker", &["register", &device, "--product", "router", "--hardware", "r2"]);
    assert!(e.contains("is registered already"), "{e}");
    let e = refused("stranger", &["transfer", &device, "--to", &owner]);
    assert!(e.contains("neither the manufacturer nor the owner"), "{e}");
    tx(&via, &key("maker"), &["transfer", &device, "--to", &owner]);
    tx(&via, &key("owner"), &["retire", &device]);
    let e = refused("owner", &["transfer", &device, "--to", &admin]);
    assert!(e.contains("is retired"), "{e}");

    let show = bin().args(["ledger", "show", "device", &device, "--json", "--bootstrap", &via]).output().expect("show");
    let rec = json_out(&show, "ledger show device");
    assert_eq!(rec["device"]["status"], "retired", "{rec}");
    assert_eq!(rec["device"]["owner"], owner.as_str());
    assert_eq!(rec["device"]["registration"], reg["tx"]);

    // The registration's proof checks holding only the genesis.
    let proof = d.join("device.proof");
    let o = bin()
        .args([
            "ledger",
            "prove",
            "device",
            &device,
            "--registration",
            "--bootstrap",
            &via,
            "--out",
            &s(&proof),
            "--json",
        ])
        .output()
        .expect("prove");
    json_out(&o, "ledger prove device");
    let o =
        bin().args(["ledger", "verify", &s(&proof), "--producers", &s(&genesis), "--json"]).output().expect("verify");
    let v = json_out(&o, "ledger verify");
    assert_eq!(v["proves"]["register"]["device"], device.as_str(), "{v}");
    assert_eq!(v["signer"], maker.as_str());

    // An owner authorizes a friend for an object, then revokes; a deletion is attested once.
    tx(&via, &key("owner"), &["authorize", "b3object", "--receiver", &admin]);
    let ask = |args: &[&str]| {
        let o = bin().args(["ledger", "show"]).args(args).args(["--json", "--bootstrap", &via]).output().expect("show");
        json_out(&o, "ledger show")
    };
    let q = ["authorized", "--owner", &owner, "--object", "b3object", "--receiver", &admin];
    assert!(ask(&q)["authorized"].as_u64().is_some());
    tx(&via, &key("owner"), &["authorize", "b3object", "--receiver", &admin, "--revoke"]);
    assert!(ask(&q)["authorized"].is_null());
    let root = "ab".repeat(32);
    tx(&via, &key("owner"), &["delete", "b3object", "--acks-root", &root, "--acks", "6"]);
    let e = refused("owner", &["delete", "b3object", "--acks-root", &root, "--acks", "6"]);
    assert!(e.contains("attested the deletion of b3object already"), "{e}");
    let del = ask(&["deletion", "--owner", &owner, "--object", "b3object"]);
    assert_eq!(del["deletion"]["acks"], 6, "{del}");
    drop(procs);
}

/// `ionshard ledger tx … --json` through `via`, signed with `key`.
fn tx(via: &str, key: &Path, args: &[&str]) -> Value {
    let o =
        bin().args(["ledger", "tx", "--json", "--bootstrap", via, "--key", &s(key)]).args(args).output().expect("tx");
    json_out(&o, "ledger tx")
}

fn peer_id(addr: &str) -> String {
    addr.rsplit("/p2p/").next().expect("peer id").to_string()
}

#[test]
fn a_vote_brings_a_producer_in_at_the_boundary_and_an_equivocating_producer_is_caught_jailed_and_voted_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let nodes: Vec<(PathBuf, String)> =
        (0..5).map(|i| harness::procs::ledger_node(exe(), d, &format!("producer{i}"), i).expect("node")).collect();
    let ids: Vec<String> = nodes.iter().map(|(_, a)| peer_id(a)).collect();
    let voter_key = d.join("voter.key");
    let voter = json_out(&bin().args(["id", "--json", "--key", &s(&voter_key)]).output().expect("id"), "id");
    let voter = voter["peer_id"].as_str().expect("voter id").to_string();
    let addrs: Vec<String> = nodes[..4].iter().map(|(_, a)| a.clone()).collect();
    let extra: Vec<String> = ["--account", &format!("{voter}=10000"), "--maintenance", "10", "--max-producers", "4"]
        .map(String::from)
        .into();
    let genesis = harness::procs::ledger_init(exe(), d, &addrs, 300, 300, &extra).expect("genesis");
    let mut c = Chain { procs: Procs::new(&d.join("logs")), genesis, producers: nodes, keys: Vec::new() };
    for i in 0..5 {
        c.up(i);
    }
    c.wait_height(0, 3, Duration::from_secs(60));
    let via = c.producers[0].1.clone();
    let producers = |c: &Chain| -> Vec<String> {
        c.status(0)["producers"]
            .as_array()
            .expect("producers")
            .iter()
            .map(|p| p.as_str().unwrap_or("").to_string())
            .collect()
    };
    let wait_set = |c: &Chain, want: &dyn Fn(&[String]) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = producers(c);
            if want(&now) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: the set stayed {now:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // Node 4 stands; the voter's stake approves it over producer 3.
    tx(&via, &c.producers[4].0.join("identity.key"), &["candidate", "--addr", &c.producers[4].1]);
    let ballot: Vec<&str> = [&ids[0], &ids[1], &ids[2], &ids[4]].iter().flat_map(|id| ["--for", id.as_str()]).collect();
    let mut args = vec!["vote"];
    args.extend(ballot);
    tx(&via, &voter_key, &args);
    wait_set(&c, &|s| s.contains(&ids[4]) && !s.contains(&ids[3]), "after the vote");
    let changed_at = c.height(0) + 1;
    c.wait_height(0, changed_at + 4, Duration::from_secs(60));

    // Producer 1 signs two prevotes for one height and round: injected
    // into the chain's gossip with its key, as a faulty producer would.
    let chain = ledger::Genesis::load(&c.genesis).expect("genesis").hash();
    let p1 = net::load_or_create_key(&c.producers[1].0.join("identity.key")).expect("key").0;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (inbound, mut rx) = tokio::sync::mpsc::channel(64);
        let mut cfg = net::client_config(&[via.parse().expect("address")]);
        cfg.ledger = Some(net::Gossip {
            topic: format!("/ionshard/ledger/{}", chain.to_hex()),
            inbound,
            max_bytes: ledger::MAX_MESSAGE_BYTES,
        });
        let (client, _h) = net::start(cfg, net::Keypair::generate_ed25519(), None).await.expect("gossip node");
        // In the mesh once the chain's messages reach us.
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("gossip arrives");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let h = c.height(0);
        let set: Vec<net::PeerId> = producers(&c).iter().map(|p| p.parse().expect("peer id")).collect();
        let epoch = ledger::set_hash(&set);
        for ahead in 2..5 {
            for value in [[1u8; 32], [2u8; 32]] {
                let m = ledger::Message::prevote(&p1, chain, epoch, h + ahead, 0, ledger::Hash(value)).expect("sign");
                client.publish_ledger(m.encode()).await.expect("publish");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        client.shutdown().await;
    });
    wait_set(&c, &|s| !s.contains(&ids[1]) && s.contains(&ids[3]) && s.contains(&ids[4]), "after the equivocation");
    let out_at = c.height(0) + 1;
    c.wait_height(0, out_at + 4, Duration::from_secs(60));

    // On every store: producer 1 jailed and slashed, and every block after
    // each change certified by its new set alone.
    for i in 0..5 {
        c.down(i);
    }
    let stores: Vec<ledger::Store> =
        c.producers.iter().map(|(d, _)| ledger::Store::open(&d.join("ledger"), chain).expect("store")).collect();
    let p1_id: net::PeerId = ids[1].parse().expect("id");
    for st in &stores {
        assert!(st.jailed(&p1_id).expect("read").is_some(), "producer 1 is jailed");
        // 10% burned per offence; it signed two votes at up to three heights.
        let stake = st.stake(&p1_id).expect("read");
        assert!((729..=900).contains(&stake), "stake {stake}");
    }
    let top = stores.iter().map(|st| st.height().expect("height")).min().expect("five");
    for h in 1..=top {
        let hashes: Vec<_> = stores.iter().map(|st| st.hash_at(h).expect("read")).collect();
        assert!(hashes.iter().all(|x| *x == hashes[0]), "height {h}: {hashes:?}");
        let (block, cert) = stores[0].block_at(h).expect("read").expect("block");
        let set = stores[0].set_at(h).expect("set");
        let vs = ledger::ValidatorSet::new(
            set.iter().filter_map(|p| ledger::validator(*p, 1)).collect(),
            ledger::Hash::default(),
        );
        ledger::verify_certificate(chain, &cert, &vs).expect("certified by its own set");
        for s in &cert.commit_signatures {
            assert!(set.contains(&s.address.0), "block {h} signed by {} outside its set", s.address);
        }
        assert_eq!(cert.value_id, block.hash());
    }
}

#[test]
fn a_chain_halted_for_good_restarts_under_a_recovery_signed_by_half_its_producers_and_light_proofs_follow_the_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let nodes: Vec<(PathBuf, String)> =
        (0..5).map(|i| harness::procs::ledger_node(exe(), d, &format!("producer{i}"), i).expect("node")).collect();
    let ids: Vec<String> = nodes.iter().map(|(_, a)| peer_id(a)).collect();
    let addrs: Vec<String> = nodes[..4].iter().map(|(_, a)| a.clone()).collect();
    let genesis = harness::procs::ledger_init(exe(), d, &addrs, 300, 300, &[]).expect("genesis");
    let gs = s(&genesis);
    let mut c = Chain { procs: Procs::new(&d.join("logs")), genesis, producers: nodes, keys: Vec::new() };
    for i in 0..5 {
        c.up(i); // node 4 follows the chain
    }
    c.wait_height(0, 3, Duration::from_secs(60));
    c.wait_height(4, 3, Duration::from_secs(60));

    // Producers 2 and 3 are lost for good: the chain halts.
    c.down(2);
    c.down(3);
    std::thread::sleep(Duration::from_secs(2));
    let halted = c.height(0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.height(0) <= halted + 1, "the chain went on with half its producers");
    // The follower holds every final block before it stops (a node behind
    // must sync before it can apply the recovery).
    c.wait_height(4, c.height(0), Duration::from_secs(30));
    for i in [0, 1, 4] {
        c.down(i);
    }
    let rec = d.join("recovery.bin");
    let sign = |i: usize| {
        bin()
            .args(["ledger", "recover", "sign", "--json", "--dir", &s(&c.producers[i].0), "--genesis", &gs])
            .args(["--file", &s(&rec), "--producer", &ids[0], "--producer", &ids[1], "--producer", &ids[4]])
            .output()
            .expect("recover sign")
    };
    let apply = |i: usize| {
        bin()
            .args(["ledger", "recover", "apply", &s(&rec), "--json", "--dir", &s(&c.producers[i].0), "--genesis", &gs])
            .output()
            .expect("recover apply")
    };
    let one = json_out(&sign(0), "sign");
    assert_eq!(one["enough"], false);
    let refused = apply(0);
    assert!(!refused.status.success(), "a recovery one producer of four signed was applied");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("at least 2"), "{why}");
    let two = json_out(&sign(1), "sign");
    assert_eq!(two["enough"], true);
    for i in [0, 1, 4] {
        json_out(&apply(i), "apply");
    }
    for i in [0, 1, 4] {
        c.up(i);
    }
    c.wait_height(0, halted + 4, Duration::from_secs(90));
    c.wait_height(4, halted + 4, Duration::from_secs(90));
    let now: Vec<String> = c.status(0)["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| p.as_str().unwrap_or("").into())
        .collect();
    assert!(now.contains(&ids[4]) && !now.contains(&ids[2]) && now.len() == 3, "{now:?}");

    // A release recorded after the recovery; its proof checks against the
    // producers file (genesis + the signed change), not the genesis alone.
    let via = c.producers[0].1.clone();
    let key = d.join("vendor.key");
    let hash = "cd".repeat(32);
    let t = tx(
        &via,
        &key,
        &["release", "--product", "cam", "--version", "9", "--manifest", "bafyx", "--image-hash", &hash],
    );
    let id = t["tx"].as_str().expect("tx id");
    assert!(t["height"].as_u64().expect("height") > halted);
    let proof = d.join("release.proof");
    let o =
        bin().args(["ledger", "prove", "tx", id, "--bootstrap", &via, "--out", &s(&proof)]).output().expect("prove");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pf = d.join("producers.json");
    let o = bin()
        .args(["ledger", "producers", "--genesis", &gs, "--out", &s(&pf), "--bootstrap", &via, "--json"])
        .output()
        .expect("producers");
    assert_eq!(json_out(&o, "producers")["changes"], 1);
    let ok = bin().args(["ledger", "verify", &s(&proof), "--producers", &s(&pf), "--json"]).output().expect("verify");
    assert_eq!(json_out(&ok, "verify")["proves"]["release"]["version"], "9");
    let old = bin().args(["ledger", "verify", &s(&proof), "--producers", &gs]).output().expect("verify");
    assert!(!old.status.success(), "a block of the new producers checked against the genesis's");
}

#[test]
fn a_new_node_starts_from_a_certified_state_snapshot_and_follows_the_chain_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = ["--snapshot-every".to_string(), "8".to_string()];
    let (genesis, producers) =
        harness::procs::ledger_genesis_with(exe(), dir.path(), 4, 300, 300, &extra).expect("genesis");
    let mut c = Chain { procs: Procs::new(&dir.path().join("logs")), genesis, producers, keys: Vec::new() };
    for i in 0..4 {
        c.up(i);
    }
    c.wait_height(0, 2, Duration::from_secs(60));
    // State to carry over: an anchored root, before the first snapshot.
    let root = "cd".repeat(32);
    let t = tx(
        &c.producers[0].1,
        &dir.path().join("spn.key"),
        &["anchor", "--root", &root, "--count", "3", "--bytes", "100"],
    );
    let id = t["tx"].as_str().expect("tx id").to_string();
    // Snapshots at 8 and 16; the checkpoint of 16 is final a block or two later.
    c.wait_height(0, 19, Duration::from_secs(90));

    let (ndir, addr) = harness::procs::ledger_node(exe(), dir.path(), "newcomer", 4).expect("node");
    let mut args = harness::procs::producer_args(&addr, &ndir, &c.genesis);
    args.retain(|a| a != "--produce");
    c.procs.start("newcomer", &args);
    let deadline = Instant::now() + Duration::from_secs(90);
    let st = loop {
        let o = bin().args(["ledger", "status", "--json", "--bootstrap", &addr]).output().expect("status");
        if o.status.success() {
            let st: Value = serde_json::from_slice(&o.stdout).expect("json");
            if st["height"].as_u64().unwrap_or(0) >= 24 {
                break st;
            }
        }
        assert!(Instant::now() < deadline, "the newcomer did not reach height 24 in 90 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    let from = st["started_from"].as_u64().expect("the newcomer started from a snapshot");
    assert!(from >= 8 && from % 8 == 0, "{st}");
    let log = std::fs::read_to_string(dir.path().join("logs/newcomer.log")).unwrap_or_default();
    assert!(log.contains("imported and checked"), "{log}");

    // It holds no block before the snapshot, knows what was anchored
    // before it, and holds the same blocks as the producers after it.
    c.procs.kill("newcomer");
    for i in 0..4 {
        c.down(i);
    }
    let chain = ledger::Genesis::load(&c.genesis).expect("genesis").hash();
    let newcomer = ledger::Store::open(&ndir.join("ledger"), chain).expect("store");
    let producer = ledger::Store::open(&c.producers[0].0.join("ledger"), chain).expect("store");
    assert!(newcomer.block_at(1).expect("read").is_none());
    let id = ledger::TxId(ledger::Hash::from_hex(&id).expect("hex").0);
    assert_eq!(newcomer.tx_at(&id).expect("read"), producer.tx_at(&id).expect("read"));
    let top = newcomer.height().expect("height").min(producer.height().expect("height"));
    assert!(top >= 24);
    for h in from..=top {
        assert_eq!(newcomer.hash_at(h).expect("read"), producer.hash_at(h).expect("read"), "height {h}");
    }
}
