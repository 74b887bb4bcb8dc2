//! A peer's local shard store.
//!
//! Shard bytes live in files (`DIR/shards/<xx>/<cid>`); the index (size,
//! owner, stored-at, expiry, pinned, quarantined) and each shard's BLAKE3
//! tree for range proofs live in redb (`DIR/index.redb`). Puts are verified
//! against the CID, bounded by a quota the owner sets, and crash-safe: after
//! a kill at any moment a shard is either whole and indexed or not visible.
//!
//! The store never serves bytes it has not checked: whole shards are hashed
//! on every get, ranges are checked against the tree as their proof is made,
//! and a shard found corrupt is quarantined and reported. It never evicts a
//! shard to make room, and never reads what it stores (peers hold ciphertext).

mod backend;
mod error;
mod meta;
mod store;

pub use backend::{Backend, Fs};
pub use error::{Error, Result};
pub use meta::{MAX_OWNER, ShardMeta};
pub use store::{Config, OpenReport, Put, PutOptions, ScrubReport, ShardFile, Store, Usage};
