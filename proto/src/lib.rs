//! ionshard's protocol types: what travels between nodes and what the SPN
//! answers, shared by every server and client, with no networking and no
//! runtime in them (a ledger that checks storage receipts depends on this
//! crate, not on libp2p's swarm).
//!
//! - [`wire`]: the shard protocols' messages, their byte layout and their
//!   [`wire::Limits`]; every decoder is bounded before it allocates.
//! - [`direct`]: the direct channel's hello, frames and keys (range answers
//!   outside libp2p, sealed with AES-256-GCM).
//! - [`Receipt`]: a peer's signed statement that it stores a shard.
//! - [`api`]: the SPN HTTP API's request and answer bodies, and the records
//!   the SPN keeps ([`api::JobRecord`] with its [`api::JobState`]).
//!
//! Formats are promises: a change to a byte here bumps its version (see
//! each module) and the test vectors in `testdata/`.

mod ack;
pub mod api;
pub mod direct;
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

/// The civil date (year, month 1-12, day 1-31) of a day number since
/// 1970-01-01, in the proleptic Gregorian calendar (Howard Hinnant's
/// algorithm): the one calendar of the workspace's dates.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
