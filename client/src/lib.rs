//! What a participant does over the network, shared by every workflow that
//! needs it (device updates, and the coming backups and drive):
//!
//! - [`fetch`]: the one fetcher of an object by its manifest: ranged,
//!   verified against each shard's CID, resumable from its partial file,
//!   delta-aware (a seed), tolerant of late and lying peers. Which peer to
//!   ask, when to give up on one and for how long to leave it alone is
//!   decided by [`PeerBook`], a state machine that takes the time as an
//!   argument.
//! - [`placement`]: which peers get a segment's shards, and the retry
//!   rounds of a refused one (the SPN scatters with it; the drive will over
//!   the owner's own devices, with no SPN).
//! - [`Spn`]: the typed client of the SPN's HTTP API (the request and answer
//!   types are `proto::api`'s, the same the server uses).
//! - [`Progress`]: how long work reports how far it is; [`Hidden`] for
//!   tests and scripts.
//! - [`files`]: the one atomic write (temporary file, fsync, rename, fsync of
//!   the directory) and the clock in seconds.

mod error;
mod fetch;
pub mod files;
mod partial;
mod peers;
pub mod placement;
mod progress;
mod spn;

pub use error::{Error, Result};
pub use fetch::{Expect, FetchOptions, FetchReport, PlacementSource, fetch, read_chunks};
pub use files::write_atomic;
pub use partial::part_path;
pub use peers::{Ask, Dropped, PeerBook, PeerUse};
pub use progress::{Hidden, Progress};
pub use spn::{PlacementAt, Spn, Upload};
