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
        let (genesis, producers) = harness::procs::ledger_genesis(exe(), dir, n, 300).expect("genesis");
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
