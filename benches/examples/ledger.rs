//! The ledger end to end: producers as `ionshard` processes on loopback,
//! a client offering transactions to one of them over the ledger protocol.
//!
//! ```text
//! cargo build --release -p ionshard
//! cargo run --release -p ionshard-benches --example ledger -- [PRODUCERS,…] [SECONDS] [BLOCK_MS]
//! ```
//!
//! For each producer count (default 4 and 21), printed:
//! - finality: from offering a transaction to a final block holding it
//!   (median, p99 of sequential transactions), and the time between blocks;
//! - transactions per second sustained (16 clients offering anchors at
//!   once for SECONDS, counted once final);
//! - receipts anchored per second through batches (anchors per second times
//!   the SPN's batch of up to 65,536 receipts, and what building such a
//!   batch's root costs);
//! - a receipt proof's size and the time to check it (median of 1,000);
//! - chain bytes per day: blocks and certificates as measured, at the
//!   default pacing (an empty block every 30 s) with one SPN anchoring a
//!   batch a minute, which serves 1,000 peers (or 100,000) alike.

use std::path::Path;
use std::time::{Duration, Instant};

use ionshard_benches::{ionshard_bin, median};
use ledger::{AnchorKind, Body, Genesis, Hash, Question, Tx};

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn ask(client: &net::Client, peer: net::PeerId, q: &Question) -> Vec<u8> {
    client.ask_ledger(peer, &q.encode(), ledger::MAX_ANSWER_BYTES).await.unwrap_or_default()
}

async fn status(client: &net::Client, peer: net::PeerId) -> ledger::Status {
    for _ in 0..100 {
        if let Ok(s) = ledger::rpc::status_answer(&ask(client, peer, &Question::Status).await) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("producer {peer} does not answer");
}

fn anchor(chain: Hash, st: &ledger::Status, key: &net::Keypair) -> Tx {
    let root: [u8; 32] = rand::random();
    let body = Body::Anchor { kind: AnchorKind::Receipts, root, count: 65_536, bytes: 1 << 30 };
    let reference = Hash::from_hex(&st.hash).unwrap_or(chain);
    Tx::sign(key, chain, (st.height, reference), 600, body).expect("sign")
}

async fn final_at(client: &net::Client, peer: net::PeerId, id: ledger::TxId, within: Duration) -> Option<(u64, u32)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(at)) = ledger::rpc::find_answer(&ask(client, peer, &Question::Find(id)).await) {
            return Some(at);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn run(n: usize, seconds: u64, block_ms: u64, dir: &Path) {
    let exe = ionshard_bin();
    let (genesis, producers) =
        harness::procs::ledger_genesis(&exe, dir, n, block_ms, 30_000).expect("genesis and producers' keys");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let mut children = Vec::new();
    for (i, (pdir, addr)) in producers.iter().enumerate() {
        let args = harness::procs::producer_args(addr, pdir, &genesis);
        let (child, _) = harness::procs::start(&exe, &format!("producer{i}"), &logs, &args, false).expect("producer");
        children.push(child);
    }
    let g = Genesis::load(&genesis).expect("genesis");
    let chain = g.hash();
    let boot = vec![producers[0].1.parse().expect("address")];
    let (client, _h) = net::join(&boot, None).await.expect("join");
    let peer: net::PeerId = g.producers[0].node().expect("its node's peer id");
    let key = net::Keypair::generate_ed25519();
    // Wait for the first blocks (every producer connected).
    let t = Instant::now();
    while status(&client, peer).await.height < 2 {
        assert!(t.elapsed() < Duration::from_secs(120), "no blocks with {n} producers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Finality of one transaction at a time.
    let samples = if n > 8 { 15 } else { 30 };
    let mut fin = Vec::new();
    for _ in 0..samples {
        let st = status(&client, peer).await;
        let tx = anchor(chain, &st, &key);
        let id = tx.id();
        let t = Instant::now();
        let _ = ask(&client, peer, &Question::Submit(Box::new(tx))).await;
        if final_at(&client, peer, id, Duration::from_secs(60)).await.is_some() {
            fin.push(t.elapsed().as_secs_f64());
        }
    }

    // Sustained: 16 clients offering anchors for `seconds`.
    let st0 = status(&client, peer).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut st = status(&client, peer).await;
            while start.elapsed() < Duration::from_secs(seconds) {
                let tx = anchor(chain, &st, &key);
                let id = tx.id();
                if let Ok(Ok(_)) =
                    ledger::rpc::submit_answer(&ask(&client, peer, &Question::Submit(Box::new(tx))).await)
                {
                    ids.push(id);
                }
                if ids.len() % 200 == 0 {
                    st = status(&client, peer).await;
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("client task"));
    }
    let offered = start.elapsed().as_secs_f64();
    let mut last = 0;
    let mut included = 0usize;
    for id in ids.iter().rev().take(1) {
        if let Some((h, _)) = final_at(&client, peer, *id, Duration::from_secs(120)).await {
            last = h;
        }
    }
    let done = start.elapsed().as_secs_f64();
    // Count what the blocks of the run hold.
    let mut block_bytes = Vec::new();
    let mut proof_block = None;
    let mut times = Vec::new();
    for h in st0.height + 1..=last.max(st0.height + 1) {
        let a = ask(&client, peer, &Question::Block(h)).await;
        if let Ok(Some((b, c))) = ledger::rpc::block_answer(&a) {
            included += b.txs.len();
            if !b.txs.is_empty() {
                times.push(b.time_ms);
            }
            if b.txs.is_empty() {
                block_bytes.push((b.encode().len() + ledger::encode_certificate(&c).len()) as f64);
            } else if proof_block.is_none() {
                proof_block = Some((b, c));
            }
        }
    }
    let end = status(&client, peer).await;
    let interval = median(times.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64).collect());
    // An empty block's bytes, if the run left none empty: one made now.
    if block_bytes.is_empty() {
        let a = ask(&client, peer, &Question::Block(1)).await;
        if let Ok(Some((b, c))) = ledger::rpc::block_answer(&a) {
            block_bytes.push((b.encode().len() + ledger::encode_certificate(&c).len()) as f64);
        }
    }
    let tps = included as f64 / done.max(offered);

    // A receipt proof against a batch of 65,536 receipts in a real block.
    let receipts: Vec<Vec<u8>> = (0..65_536u32)
        .map(|i| {
            let mut r = vec![0u8; 160];
            r[..4].copy_from_slice(&i.to_be_bytes());
            r
        })
        .collect();
    let t = Instant::now();
    let _ = ledger::batch_root(&receipts);
    let batch_ms = t.elapsed().as_secs_f64() * 1e3;
    // The anchor in the block is a bench's (its root names no batch here):
    // the transaction's proof is checked whole (its signature, its path,
    // the header, the certificate's signatures), and a receipt's path in a
    // batch of 65,536 is climbed beside it.
    let block_txs = proof_block.as_ref().map_or(0, |(b, _)| b.txs.len());
    let (proof_bytes, verify_us) = match proof_block {
        Some((b, c)) => {
            let with_item = ledger::prove(&b, &c, 0, Some((&receipts, 12_345))).expect("proof");
            let p = ledger::prove(&b, &c, 0, None).expect("proof");
            let (leaf, path) = with_item.item.clone().expect("item");
            let leaf = *blake3::hash(&leaf).as_bytes();
            let set = g.validators(Hash::default());
            p.verify(chain, &set).expect("a real block's proof holds");
            let mut ts = Vec::new();
            for _ in 0..1000 {
                let t = Instant::now();
                let _ = std::hint::black_box(p.verify(chain, &set));
                let _ = std::hint::black_box(ledger::merkle::climb(&leaf, &path));
                ts.push(t.elapsed().as_secs_f64() * 1e6);
            }
            (with_item.encode().len(), median(ts))
        }
        None => (0, 0.0),
    };
    let empty = median(block_bytes);
    let anchor_tx = 230.0;
    // Default pacing: an empty block every 30 s; one SPN's batch a minute makes a block of one anchor.
    let per_day = 2880.0 * empty + 1440.0 * (empty + anchor_tx);
    println!("\n{n} producers (block_ms {block_ms}, idle_ms 30000, on this machine's 2 cores):");
    println!(
        "  finality, offer to final block: median {:.0} ms, p99 {:.0} ms ({} txs, one at a time)",
        median(fin.clone()) * 1e3,
        pct(fin, 0.99) * 1e3,
        samples
    );
    println!("  time between busy blocks: {interval:.0} ms (median)");
    println!(
        "  sustained: {tps:.0} tx/s ({included} anchors final in {:.1} s; offered for {offered:.1} s by 16 clients; height {} -> {})",
        done, st0.height, end.height
    );
    println!(
        "  receipts anchored: up to {:.1} M/s: the SPN builds a 65,536-receipt batch root in {batch_ms:.0} ms ({:.1} M/s), the chain takes {tps:.0} anchors/s",
        (tps * 65_536.0).min(65_536.0 / (batch_ms / 1e3)) / 1e6,
        65_536.0 / (batch_ms / 1e3) / 1e6
    );
    println!(
        "  receipt proof: {proof_bytes} bytes (batch of 65,536, block of {block_txs} txs), checked in {verify_us:.0} µs (median of 1,000)"
    );
    println!(
        "  chain bytes per day: {:.1} MB ({empty:.0} B per empty block with its certificate; one SPN anchoring a batch a minute, the same for 1,000 or 100,000 peers while a minute's receipts fit a batch)",
        per_day / 1e6
    );
    client.shutdown().await;
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .nth(1)
        .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 21]);
    let seconds: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let block_ms: u64 = std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    for n in counts {
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(run(n, seconds, block_ms, dir.path()));
    }
}
