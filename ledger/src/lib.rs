//! ionshard's ledger: the chain the bootstrap operators run, on which the
//! SPN anchors the Merkle roots of storage-receipt batches and vendors
//! record their releases, so anyone can check later that the network held
//! what it claims and that a release was published.
//!
//! Agreement and finality come from Malachite's Tendermint core
//! (`arc-malachitebft-core-consensus`, a pure input/effect machine; see
//! `engine.rs`): a block is final once more than 2/3 of the producers'
//! voting power precommitted it, with no fork to wait out. The core's
//! messages travel over the node's own libp2p swarm, which this crate does
//! not know: the engine takes bytes in and hands bytes out ([`Out`]).
//! Blocks, certificates and the write-ahead log live in redb ([`Store`]).
//!
//! It must never accept a block without a certificate of more than 2/3 of
//! the set's power, a transaction for another chain or after its expiry,
//! or any network bytes it has not bounded first.

mod block;
mod cert;
mod codec;
mod ctx;
mod engine;
mod error;
mod genesis;
pub mod merkle;
mod proof;
mod recovery;
mod registry;
pub mod rpc;
pub mod sets;
mod snapshot;
mod state;
mod store;
mod tx;
mod validate;
mod wire;

pub use block::{Block, Hash, Header, MAX_BLOCK_BYTES, MAX_TXS};
pub use cert::{
    Certificate, MAX_SIGNATURES, decode as decode_certificate, encode as encode_certificate,
    verify as verify_certificate,
};
pub use ctx::{Address, Ctx, Height, ValidatorSet, validator};
pub use engine::{Ledger, Out, Status, answer, start};
pub use error::{Error, Result, TxError};
pub use genesis::{Account, GENESIS_VERSION, Genesis, MAX_PRODUCERS, Params, Producer};
pub use proof::{MAX_ITEM_BYTES, Proof, ProofError, Proven, batch_root, deletion_root, prove};
pub use recovery::Recovery;
pub use registry::{ALREADY_CREDITED, Deletion, Device, Lookup, MAX_LISTED, Maker, Points, Record, Release, tx_id};
pub use rpc::Question;
pub use snapshot::{Download, MAX_SNAPSHOT_BYTES, Offer, PART_BYTES};
pub use state::set_hash;
pub use store::{STORE_FORMAT, Store};
pub use tx::{
    AnchorKind, Body, Change, Credit, MAX_LIFETIME, MAX_POINTS, MAX_TX_BYTES, Tx, TxId, ed25519_key, ed25519_peer,
};
pub use validate::{MAX_CLOCK_DRIFT_MS, check_block, check_tx};
pub use wire::{MAX_ANSWER_BYTES, MAX_MESSAGE_BYTES, Message};
