//! Every decoder of ledger bytes against arbitrary input (never a panic,
//! what decodes encodes back to the same bytes), and round trips of real
//! signed messages. The fuzz target `fuzz/fuzz_targets/ledger.rs` runs the
//! same checks under libFuzzer.

use ledger::{AnchorKind, Block, Body, Hash, Message, Proof, Question, Tx};
use libp2p_identity::Keypair;
use proptest::prelude::*;

fn one_encoding(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(t) = Tx::decode(data) {
        assert_eq!(t.encode(), data);
    }
    if let Ok(b) = Block::decode(data) {
        assert_eq!(b.encode(), data);
    }
    if let Ok(p) = Proof::decode(data) {
        assert_eq!(p.encode(), data);
    }
    if let Ok(q) = Question::decode(data) {
        assert_eq!(q.encode(), data);
    }
    if let Ok(c) = ledger::decode_certificate(data) {
        assert_eq!(ledger::encode_certificate(&c), data);
    }
    let _ = ledger::rpc::status_answer(data);
    let _ = ledger::rpc::block_answer(data);
    let _ = ledger::rpc::lookup_answer(data);
    let _ = ledger::rpc::snapshot_answer(data);
    let _ = ledger::rpc::part_answer(data);
}

/// A body of each kind in turn.
fn body(i: usize) -> Body {
    let peer = || Keypair::generate_ed25519().public().to_peer_id();
    match i % 12 {
        0 => Body::Anchor { kind: AnchorKind::Receipts, root: [i as u8; 32], count: i as u64, bytes: 7 },
        1 => Body::Release {
            product: "cam".into(),
            version: format!("1.{i}"),
            manifest: "bafy".into(),
            image_hash: [3; 32],
        },
        2 => Body::Vote { candidates: vec![peer(), peer()] },
        3 => Body::Candidate { addr: "/ip4/127.0.0.1/tcp/1".into() },
        4 => Body::Evidence { first: vec![1, 2], second: vec![3] },
        5 => Body::Admit { manufacturer: peer(), name: "Acme".into(), admit: i.is_multiple_of(2) },
        6 => Body::Register { device: peer(), product: "router".into(), hardware: "r1".into() },
        7 => Body::Lifecycle { device: peer(), change: ledger::Change::Transfer(peer()) },
        8 => Body::Authorize { object: "b3obj".into(), receiver: peer(), grant: true },
        9 => Body::Deletion { object: "b3obj".into(), acks_root: [5; 32], acks: 3 },
        10 => Body::Checkpoint { height: i as u64, state: [7; 32], size: 1 << 20 },
        _ => Body::Points {
            root: [6; 32],
            credits: vec![ledger::Credit { peer: peer(), byte_hours: 1 << 40, audits: 2 }],
        },
    }
}

#[test]
fn every_kind_of_transaction_round_trips() {
    let key = Keypair::generate_ed25519();
    let chain = Hash([4; 32]);
    for i in 0..12 {
        let tx = Tx::sign(&key, chain, (0, chain), 10, body(i)).expect("sign");
        let back = Tx::decode(&tx.encode()).expect("decode");
        assert_eq!(back, tx, "kind {i}");
    }
    let retire = Tx::sign(
        &key,
        chain,
        (0, chain),
        10,
        Body::Lifecycle { device: key.public().to_peer_id(), change: ledger::Change::Retire },
    )
    .expect("sign");
    assert_eq!(Tx::decode(&retire.encode()).expect("decode"), retire);
}

fn block(txs: usize, seed: u8) -> Block {
    let key = Keypair::generate_ed25519();
    let chain = Hash([seed; 32]);
    let txs = (0..txs).map(|i| Tx::sign(&key, chain, (0, chain), 10, body(i)).expect("sign")).collect();
    Block {
        chain,
        height: 5,
        parent: Hash([9; 32]),
        time_ms: 77,
        proposer: key.public().to_peer_id(),
        next_set: Hash([8; 32]),
        txs,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_decode_to_one_encoding(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        one_encoding(&data);
    }

    #[test]
    fn a_changed_bit_in_a_real_message_never_panics(txs in 0usize..12, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let b = block(txs, 1);
        let m = Message::Tx(b.txs.first().cloned().unwrap_or_else(|| block(1, 2).txs[0].clone()));
        for bytes in [b.encode(), m.encode(), Question::Block(3).encode()] {
            let mut bad = bytes.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            one_encoding(&bad);
        }
    }
}

#[test]
fn a_nil_vote_carrying_a_hash_is_refused_so_a_vote_has_one_encoding() {
    // Found by the fuzz target: a nil vote whose hash field was not zero
    // decoded, and encoded back differently.
    let crash = include_bytes!("../../fuzz/regressions/ledger-nil-vote-with-hash.bin");
    one_encoding(crash);
    assert!(Message::decode(crash).is_err());
}

#[test]
fn real_blocks_and_proofs_round_trip() {
    let b = block(5, 4);
    assert_eq!(Block::decode(&b.encode()).expect("block"), b);
    let cert = unsigned_certificate(&b);
    let proof =
        ledger::prove(&b, &cert, 2, Some((&[b"r1".to_vec(), b"r2".to_vec(), b"r3".to_vec()], 1))).expect("prove");
    assert_eq!(Proof::decode(&proof.encode()).expect("proof"), proof);
    let p2 = ledger::prove(&b, &cert, 1, None).expect("prove tx");
    assert_eq!(Proof::decode(&p2.encode()).expect("proof"), p2);
}

/// A certificate with no signatures (its shape only; nothing verifies it here).
fn unsigned_certificate(b: &Block) -> ledger::Certificate {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&b.height.to_be_bytes());
    bytes.extend_from_slice(&0i64.to_be_bytes());
    bytes.extend_from_slice(&b.hash().0);
    bytes.extend_from_slice(&0u32.to_be_bytes());
    ledger::decode_certificate(&bytes).expect("certificate")
}
