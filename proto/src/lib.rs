//! ionshard's protocol types: what travels between nodes and what the SPN
//! answers, shared by every server and client, with no networking and no
//! runtime in them (a ledger that checks storage receipts depends on this
//! crate, not on libp2p's swarm).
//!
//! - [`wire`]: the shard protocols' messages, their byte layout and their
//!   [`wire::Limits`]; every decoder is bounded before it allocates.
//! - [`Receipt`]: a peer's signed statement that it stores a shard.
//! - [`api`]: the SPN HTTP API's request and answer bodies, and the records
//!   the SPN keeps ([`api::JobRecord`] with its [`api::JobState`]).
//!
//! Formats are promises: a change to a byte here bumps its version (see
//! each module) and the test vectors in `testdata/`.

mod ack;
pub mod api;
mod error;
mod receipt;
pub mod wire;

pub use ack::DeleteAck;
pub use error::{Error, Result};
pub use libp2p_identity::{Keypair, PeerId, PublicKey};
pub use receipt::{Receipt, public_key_of};

/// Seconds since the Unix epoch (0 if the clock is before it): the unit of
/// every timestamp in these types (receipts, expiries, records), and the one
/// clock reading of the workspace's wall time.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
