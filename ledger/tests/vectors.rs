//! Test vectors: one transaction of every kind, signed with fixed keys
//! (ed25519 signs deterministically), as bytes and id in
//! `testdata/ledger-vectors.json`, so the transaction format cannot drift
//! silently and another implementation can check itself against them.
//!
//! After an intended format change: `IONSHARD_BLESS=1 cargo test -p ionshard-ledger --test vectors`,
//! then review the diff and bump the transaction format's version.

use ledger::{AnchorKind, Body, Change, Credit, Hash, Tx};
use libp2p_identity::Keypair;
use serde_json::{Value, json};

fn key(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n; 32]).expect("a fixed key")
}

fn bodies() -> Vec<(&'static str, Body)> {
    let peer = |n| key(n).public().to_peer_id();
    vec![
        ("anchor", Body::Anchor { kind: AnchorKind::Receipts, root: [1; 32], count: 3, bytes: 4096 }),
        (
            "release",
            Body::Release {
                product: "router".into(),
                version: "1.2.3".into(),
                manifest: "bafy".into(),
                image_hash: [2; 32],
            },
        ),
        ("vote", Body::Vote { candidates: vec![peer(3), peer(4)] }),
        ("candidate", Body::Candidate { addr: format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer(1)) }),
        ("evidence", Body::Evidence { first: vec![1, 2, 3], second: vec![4, 5] }),
        ("admit", Body::Admit { manufacturer: peer(5), name: "Acme".into(), admit: true }),
        ("register", Body::Register { device: peer(6), product: "router".into(), hardware: "r1".into() }),
        ("transfer", Body::Lifecycle { device: peer(6), change: Change::Transfer(peer(7)) }),
        ("retire", Body::Lifecycle { device: peer(6), change: Change::Retire }),
        ("authorize", Body::Authorize { object: "b3object".into(), receiver: peer(8), grant: true }),
        ("deletion", Body::Deletion { object: "b3object".into(), acks_root: [9; 32], acks: 6 }),
        (
            "points",
            Body::Points { root: [1; 32], credits: vec![Credit { peer: peer(9), byte_hours: 1 << 33, audits: 4 }] },
        ),
        ("checkpoint", Body::Checkpoint { height: 1000, state: [3; 32], size: 123_456 }),
    ]
}

#[test]
fn every_kind_of_transaction_keeps_its_bytes() {
    let chain = Hash([42; 32]);
    let signer = key(1);
    let mut all = Vec::new();
    for (name, body) in bodies() {
        let tx = Tx::sign(&signer, chain, (7, Hash([43; 32])), 100, body).expect("sign");
        assert_eq!(tx.check(chain), Ok(()), "{name}");
        let bytes = tx.encode();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        all.push(json!({ "kind": name, "tx": hex, "id": tx.id().to_string() }));
        assert_eq!(Tx::decode(&bytes).expect("decode"), tx, "{name}");
    }
    let all = json!({ "format": "ionshard ledger tx v1", "chain": chain.to_hex(), "vectors": all });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/ledger-vectors.json");
    if std::env::var_os("IONSHARD_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&all).expect("json") + "\n").expect("write vectors");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("testdata/ledger-vectors.json (bless with IONSHARD_BLESS=1)");
    let want: Value = serde_json::from_str(&want).expect("parse vectors");
    assert_eq!(
        all, want,
        "the transaction encoding changed: if intended, bless (see the top of this file) and bump its version"
    );
}
