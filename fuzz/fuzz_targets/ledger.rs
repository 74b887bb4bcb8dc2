//! Every decoder of ledger bytes from the network or a file (gossip
//! messages: proposals with blocks, votes, transactions; sync and RPC
//! answers; proofs; questions; delete acknowledgements): none panics, each bounds what it allocates,
//! and what decodes encodes back to the same bytes (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ledger::Message::decode(data) {
        assert_eq!(m.encode(), data, "a message with two encodings");
    }
    if let Ok(t) = ledger::Tx::decode(data) {
        assert_eq!(t.encode(), data, "a transaction with two encodings");
    }
    if let Ok(b) = ledger::Block::decode(data) {
        assert_eq!(b.encode(), data, "a block with two encodings");
    }
    if let Ok(p) = ledger::Proof::decode(data) {
        assert_eq!(p.encode(), data, "a proof with two encodings");
    }
    if let Ok(q) = ledger::Question::decode(data) {
        assert_eq!(q.encode(), data, "a question with two encodings");
    }
    if let Ok(c) = ledger::decode_certificate(data) {
        assert_eq!(ledger::encode_certificate(&c), data, "a certificate with two encodings");
    }
    let _ = ledger::rpc::status_answer(data);
    let _ = ledger::rpc::lookup_answer(data);
    let _ = ledger::rpc::snapshot_answer(data);
    let _ = ledger::rpc::part_answer(data);
    let _ = ledger::rpc::submit_answer(data);
    let _ = ledger::rpc::find_answer(data);
    let _ = ledger::rpc::block_answer(data);
    // Delete acknowledgements an SPN hands an owner to attest.
    let _ = ledger::deletion_root(&[data.to_vec()]);
});
