//! The answer path's hook: what a node does to the shard bytes and proofs
//! it sends, just before they go out. A real node sends them as its store
//! read them ([`Honest`]); tests plug in a peer that lies or stalls, to see
//! that fetchers and the SPN catch it. (A corrupting store would not do: the
//! store checks what it reads and quarantines what does not match.)

use std::time::Duration;

/// Changes to answers on their way out.
pub trait Answers: Send + Sync + 'static {
    /// How long to hold an answer carrying shard bytes or a proof before
    /// sending it (for a streamed shard: before its first byte).
    fn hold(&self) -> Duration {
        Duration::ZERO
    }

    /// How long to hold a receipt for a stored shard before sending it
    /// (the shard is stored already).
    fn hold_receipt(&self) -> Duration {
        Duration::ZERO
    }

    /// Alter bytes about to be sent: a piece of a shard starting at
    /// `offset`, or a proof or a range's bytes (`offset` 0).
    fn alter(&self, _offset: u64, _bytes: &mut [u8]) {}
}

/// Answers as they are: the only implementation the `ionshard` binary uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Answers for Honest {}
