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
}

impl Chain {
    fn start(dir: &Path, n: usize) -> Chain {
        let (genesis, producers) = harness::procs::ledger_genesis(exe(), dir, n, 300, 300).expect("genesis");
        let mut c = Chain { procs: Procs::new(&dir.join("logs")), genesis, producers };
        for i in 0..n {
            c.up(i);
        }
        c
    }
    fn up(&mut self, i: usize) {
        let (pdir, addr) = &self.producers[i];
        self.procs.start(&format!("producer{i}"), &harness::procs::producer_args(addr, pdir, &self.genesis));
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
    let mut c = Chain::start(dir.path(), 4);
    c.wait_height(0, 3, Duration::from_secs(60));

    // A transaction, signed, offered and final.
    let root = "ab".repeat(32);
    let o = bin()
        .args(["ledger", "tx", "--json", "--bootstrap", &c.producers[1].1, "--key", &s(&dir.path().join("spn.key"))])
        .args(["anchor", "--root", &root, "--count", "7", "--bytes", "1000"])
        .output()
        .expect("ledger tx");
    let tx = json_out(&o, "ledger tx");
    assert!(tx["height"].as_u64().is_some(), "{tx}");

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
    for h in 1..=top {
        let hashes: Vec<_> = stores.iter().map(|st| st.hash_at(h).expect("read")).collect();
        assert!(hashes.iter().all(|x| x.is_some() && *x == hashes[0]), "height {h}: {hashes:?}");
        let (block, cert) = stores[0].block_at(h).expect("read").expect("block");
        let set = ledger::Genesis::load(&c.genesis).expect("genesis").validators(Default::default());
        ledger::verify_certificate(chain, &cert, &set).expect("each block carries a certificate of more than 2/3");
        assert_eq!(cert.value_id, block.hash());
    }
}

#[test]
fn the_spn_anchors_receipts_as_it_publishes_and_a_receipt_proof_verifies_while_forgeries_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Chain::start(dir.path(), 4);
    let genesis = s(&c.genesis);
    let n = common::network_with(
        dir.path(),
        8,
        &["--ledger".into(), genesis.clone(), "--anchor-every".into(), "1s".into()],
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
    drop(n);
    drop(c);
}
