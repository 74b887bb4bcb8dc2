//! The network's one error type.

use crate::wire::Code;

/// Everything that can go wrong talking to peers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer could not be found or reached (directly or through a relay).
    #[error("cannot reach peer {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer answered with a refusal.
    #[error("peer {peer} refused ({code:?}): {message}")]
    Refused {
        /// The peer.
        peer: String,
        /// Why, for programs.
        code: Code,
        /// Why, as the peer put it.
        message: String,
    },
    /// The peer sent something that is not a valid answer (wrong bytes,
    /// a proof that does not verify, a forged receipt): it lied or is broken.
    #[error("peer {peer} sent a bad answer: {reason}")]
    BadAnswer {
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// A request took longer than its timeout.
    #[error("request to {peer} timed out")]
    Timeout {
        /// The peer.
        peer: String,
    },
    /// A receipt that does not verify, or cannot be made.
    #[error("bad receipt")]
    Receipt(#[source] Box<proto::Error>),
    /// A protocol-level failure (transport, stream, encoding).
    #[error("{0}")]
    Protocol(String),
    /// A configuration that cannot work (bad multiaddr, unreadable key file).
    #[error("configuration: {0}")]
    Config(String),
    /// The node's event loop has stopped.
    #[error("the node has shut down")]
    Shutdown,
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<proto::Error> for Error {
    fn from(e: proto::Error) -> Self {
        Error::Receipt(Box::new(e))
    }
}

/// The network's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
