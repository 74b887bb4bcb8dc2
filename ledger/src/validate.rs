//! The rules a block and its transactions keep against the chain before
//! it: what a producer checks before it votes for a proposal, and what a
//! node checks before it takes a block from the sync protocol.

use std::collections::HashSet;

use crate::block::{Block, Hash};
use crate::error::{Error, Result, TxError};
use crate::store::Store;
use crate::tx::Tx;

/// How far ahead of a node's clock a block's time may be.
pub const MAX_CLOCK_DRIFT_MS: u64 = 15_000;

/// The hash of block `height` (`0` is the genesis, whose hash names the chain).
pub(crate) fn hash_at(store: &Store, chain: Hash, height: u64) -> Result<Option<Hash>> {
    if height == 0 { Ok(Some(chain)) } else { store.hash_at(height) }
}

/// Check `tx` for inclusion at `height` on chain `chain`.
///
/// The reference block is checked before the signature, so a transaction
/// made for another chain is refused as such ([`TxError::WrongChain`]).
pub fn check_tx(store: &Store, chain: Hash, height: u64, tx: &Tx) -> Result<()> {
    if tx.expiry < height {
        return Err(TxError::Expired { expiry: tx.expiry, height }.into());
    }
    let named = hash_at(store, chain, tx.ref_height)?;
    if tx.ref_height >= height || named.is_none_or(|h| h.0[..8] != tx.ref_hash) {
        let named: String = tx.ref_hash.iter().map(|b| format!("{b:02x}")).collect();
        return Err(TxError::WrongChain { height: tx.ref_height, named }.into());
    }
    if store.tx_at(&tx.id())?.is_some() {
        return Err(TxError::Replayed.into());
    }
    tx.check(chain)?;
    match &tx.body {
        crate::tx::Body::Anchor { root, .. } => {
            if let Some(id) = store.anchor(&tx.signer, root)? {
                return Err(TxError::Invalid(format!("that root is anchored already, by transaction {id}")).into());
            }
        }
        crate::tx::Body::Vote { .. } if store.stake(&tx.signer)? == 0 => {
            return Err(TxError::Invalid(format!("{} holds no stake: only stake votes", tx.signer)).into());
        }
        crate::tx::Body::Evidence { first, second } => check_evidence(store, chain, height, first, second)?,
        crate::tx::Body::Checkpoint { height: cp, state, size } => {
            store.check_checkpoint(height, &tx.signer, *cp, state, *size)?;
        }
        _ => store.check_registry(tx)?,
    }
    Ok(())
}

/// Two votes one producer signed for the same height, round and step, for
/// different blocks, while in the set; an offence not recorded yet.
fn check_evidence(store: &Store, chain: Hash, height: u64, first: &[u8], second: &[u8]) -> Result<()> {
    let bad = |why: &str| Error::Tx(TxError::Invalid(format!("evidence: {why}")));
    let (a, b, key) = crate::state::offence(first, second).map_err(|e| bad(&e.to_string()))?;
    if a.validator != b.validator || a.height != b.height || a.round != b.round || a.kind != b.kind {
        return Err(bad("the votes are not of one producer at one height, round and step"));
    }
    if a.value == b.value {
        return Err(bad("the votes agree"));
    }
    if a.height.0 >= height {
        return Err(bad("the votes are not of a past height"));
    }
    let set = store.set_at(a.height.0)?;
    if !set.contains(&a.validator.0) {
        return Err(bad("the voter was not a producer at that height"));
    }
    let epoch = crate::state::set_hash(&set);
    if store.offence_recorded(&key)? {
        return Err(bad("that offence is on the chain already"));
    }
    let key_of = proto::public_key_of(&a.validator.0).map_err(|_| bad("the voter's key is not in its id"))?;
    for bytes in [first, second] {
        match crate::wire::Message::decode(bytes) {
            Ok(crate::wire::Message::Vote(v))
                if key_of.verify(&v.message.signed_bytes(chain, epoch), &v.signature.0) => {}
            _ => return Err(bad("a vote's signature does not verify")),
        }
    }
    Ok(())
}

/// Check `block` as the next block of the chain in `store`. `parent_time`
/// is the time of the block before it (the genesis time for block 1).
pub fn check_block(store: &Store, chain: Hash, parent_time: u64, block: &Block, now_ms: u64) -> Result<()> {
    let bad = |why: String| Error::InvalidBlock { height: block.height, why };
    if block.chain != chain {
        return Err(bad("it belongs to another chain".into()));
    }
    let height = store.height()? + 1;
    if block.height != height {
        return Err(bad(format!("the next height here is {height}")));
    }
    let parent = hash_at(store, chain, height - 1)?.ok_or_else(|| bad("its parent is missing here".into()))?;
    if block.parent != parent {
        return Err(bad(format!("its parent is {}, the chain's block {} is {parent}", block.parent, height - 1)));
    }
    if block.time_ms <= parent_time {
        return Err(bad("its time is not after its parent's".into()));
    }
    if block.time_ms > now_ms.saturating_add(MAX_CLOCK_DRIFT_MS) {
        return Err(bad("its time is too far in the future".into()));
    }
    let next = crate::state::set_hash(&store.set_at(height + 1)?);
    if block.next_set != next {
        return Err(bad("it names another producer set for the next height".into()));
    }
    let mut ids = HashSet::new();
    let mut held = HashSet::new();
    for tx in &block.txs {
        if !ids.insert(tx.id()) {
            return Err(bad("a transaction appears twice".into()));
        }
        if !crate::registry::exclusive(tx).into_iter().all(|k| held.insert(k)) {
            return Err(bad(format!(
                "transaction {} conflicts with an earlier one in the block (the same root, offence, device, \
                 manufacturer, authorization, deletion, release or credit)",
                tx.id()
            )));
        }
        check_tx(store, chain, height, tx).map_err(|e| bad(format!("transaction {}: {e}", tx.id())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use libp2p_identity::Keypair;
    use malachite_types::{CommitCertificate, Round};

    use super::*;
    use crate::ctx::Height;
    use crate::tx::{AnchorKind, Body};

    const CHAIN: Hash = Hash([1; 32]);

    fn genesis() -> crate::Genesis {
        crate::Genesis {
            version: crate::GENESIS_VERSION,
            name: "test".into(),
            time_ms: 0,
            producers: Vec::new(),
            params: crate::Params::default(),
            accounts: Vec::new(),
            admins: Vec::new(),
            admin_threshold: 1,
        }
    }

    fn anchor(n: u8) -> Body {
        Body::Anchor { kind: AnchorKind::Receipts, root: [n; 32], count: 1, bytes: 1 }
    }

    /// A store holding `n` empty blocks of `CHAIN` (certificates unchecked here).
    fn chain_of(dir: &std::path::Path, n: u64, txs_at_1: Vec<Tx>) -> Store {
        let store = Store::open(dir, CHAIN).expect("store");
        let key = Keypair::generate_ed25519();
        let mut parent = CHAIN;
        for h in 1..=n {
            let txs = if h == 1 { txs_at_1.clone() } else { Vec::new() };
            let b = Block {
                chain: CHAIN,
                height: h,
                parent,
                time_ms: h,
                proposer: key.public().to_peer_id(),
                next_set: crate::state::set_hash(&[]),
                txs,
            };
            let c = CommitCertificate {
                height: Height(h),
                round: Round::new(0),
                value_id: b.hash(),
                commit_signatures: vec![],
            };
            store.commit(&b, &c, &[], &genesis()).expect("commit");
            parent = b.hash();
        }
        store
    }

    #[test]
    fn a_transaction_replayed_on_another_chain_is_refused_as_made_for_another_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = chain_of(dir.path(), 3, Vec::new());
        let other = Hash([2; 32]);
        // Made against block 2 of another chain, whose hash this chain's block 2 does not have.
        let tx = Tx::sign(&Keypair::generate_ed25519(), other, (2, Hash([9; 32])), 10, anchor(1)).expect("sign");
        assert!(matches!(check_tx(&store, CHAIN, 4, &tx), Err(Error::Tx(TxError::WrongChain { height: 2, .. }))));
        // Even naming this chain's block, its signature is for the other chain.
        let h2 = store.hash_at(2).expect("read").expect("block 2");
        let tx = Tx::sign(&Keypair::generate_ed25519(), other, (2, h2), 10, anchor(1)).expect("sign");
        assert!(matches!(check_tx(&store, CHAIN, 4, &tx), Err(Error::Tx(TxError::BadSignature))));
        let good = Tx::sign(&Keypair::generate_ed25519(), CHAIN, (2, h2), 10, anchor(1)).expect("sign");
        assert!(check_tx(&store, CHAIN, 4, &good).is_ok());
    }

    #[test]
    fn a_transaction_offered_after_its_expiry_is_refused_as_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = chain_of(dir.path(), 3, Vec::new());
        let h1 = store.hash_at(1).expect("read").expect("block 1");
        let tx = Tx::sign(&Keypair::generate_ed25519(), CHAIN, (1, h1), 2, anchor(1)).expect("sign");
        assert!(check_tx(&store, CHAIN, 3, &tx).is_ok());
        assert!(matches!(check_tx(&store, CHAIN, 4, &tx), Err(Error::Tx(TxError::Expired { expiry: 3, height: 4 }))));
    }

    #[test]
    fn a_transaction_already_on_the_chain_is_refused_as_replayed_and_a_root_anchors_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Keypair::generate_ed25519();
        let tx = Tx::sign(&key, CHAIN, (0, CHAIN), 50, anchor(5)).expect("sign");
        let store = chain_of(dir.path(), 3, vec![tx.clone()]);
        assert!(matches!(check_tx(&store, CHAIN, 4, &tx), Err(Error::Tx(TxError::Replayed))));
        let again =
            Tx::sign(&key, CHAIN, (1, store.hash_at(1).expect("read").expect("b1")), 50, anchor(5)).expect("sign");
        assert!(matches!(check_tx(&store, CHAIN, 4, &again), Err(Error::Tx(TxError::Invalid(_)))));
        // Another signer taking the same root first blocks nobody: roots anchor once per signer.
        let squatter = Tx::sign(
            &Keypair::generate_ed25519(),
            CHAIN,
            (1, store.hash_at(1).expect("read").expect("b1")),
            50,
            anchor(5),
        )
        .expect("sign");
        assert!(check_tx(&store, CHAIN, 4, &squatter).is_ok());
    }

    #[test]
    fn a_block_that_does_not_follow_the_chain_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = chain_of(dir.path(), 2, Vec::new());
        let key = Keypair::generate_ed25519();
        let parent = store.hash_at(2).expect("read").expect("b2");
        let good = Block {
            chain: CHAIN,
            height: 3,
            parent,
            time_ms: 10,
            proposer: key.public().to_peer_id(),
            next_set: crate::state::set_hash(&[]),
            txs: vec![],
        };
        assert!(check_block(&store, CHAIN, 2, &good, 100).is_ok());
        for bad in [
            Block { parent: Hash([7; 32]), ..good.clone() },
            Block { height: 4, ..good.clone() },
            Block { chain: Hash([3; 32]), ..good.clone() },
            Block { time_ms: 2, ..good.clone() },
            Block { time_ms: 100 + MAX_CLOCK_DRIFT_MS + 1, ..good.clone() },
            Block { next_set: Hash([4; 32]), ..good.clone() },
        ] {
            assert!(matches!(check_block(&store, CHAIN, 2, &bad, 100), Err(Error::InvalidBlock { .. })), "{bad:?}");
        }
    }
}
