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
pub fn check_tx(store: &Store, chain: Hash, height: u64, tx: &Tx) -> Result<()> {
    tx.check(chain)?;
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
    if let crate::tx::Body::Anchor { root, .. } = &tx.body {
        if let Some(id) = store.anchor(root)? {
            return Err(TxError::Invalid(format!("that root is anchored already, by transaction {id}")).into());
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
    let mut ids = HashSet::new();
    let mut roots = HashSet::new();
    for tx in &block.txs {
        if !ids.insert(tx.id()) {
            return Err(bad("a transaction appears twice".into()));
        }
        if let crate::tx::Body::Anchor { root, .. } = &tx.body {
            if !roots.insert(*root) {
                return Err(bad("a root is anchored twice".into()));
            }
        }
        check_tx(store, chain, height, tx).map_err(|e| bad(format!("transaction {}: {e}", tx.id())))?;
    }
    Ok(())
}
