//! Everything that can go wrong in the SPN.

/// Errors of the spn crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state database failed.
    #[error("SPN state database: {0}")]
    Db(String),
    /// The state database (redb) failed.
    #[error("SPN state database: {0}")]
    Database(#[source] redb::Error),
    /// Another SPN process has the state open.
    #[error("the SPN state in {0} is in use by another process; stop it first")]
    Locked(String),
    /// Not enough live peers to place a segment.
    #[error(
        "need {need} distinct live peers with room, found {have}; start more peers, or ask for fewer data and parity shards"
    )]
    NotEnoughPeers {
        /// Needed.
        need: usize,
        /// Found.
        have: usize,
    },
    /// Too few failure domains (households, networks, operators) to spread
    /// a segment so that losing any one loses at most m shards.
    #[error(
        "need {need} shards per segment with at most {parity} in any one household, network or operator, but the live \
         peers fit only {fits}: start peers in more homes (each of a segment's shards must survive its household \
         going dark), ask for more parity, or start the SPN with --relax-domains"
    )]
    TooFewDomains {
        /// Shards per segment.
        need: usize,
        /// How many the domains can hold.
        fits: usize,
        /// m: the most per domain.
        parity: u8,
    },
    /// Shards that could not be stored anywhere.
    #[error("{} shard(s) could not be placed: {}", .0.len(), .0.join("; "))]
    Unplaced(Vec<String>),
    /// The ledger could not be reached, or refused what the SPN offered.
    #[error("ledger: {0}")]
    Ledger(String),
    /// Not found.
    #[error("{0} not found")]
    NotFound(String),
    /// A request that cannot be served.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Signed metadata that does not verify against the vendor's root.
    #[error("refused: {0}")]
    Refused(String),
    /// The caller's token does not reach this tenant's objects or releases.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Conflicts with what is kept (a release id taken, a stale timestamp).
    #[error("{0}")]
    Conflict(String),
    /// Encoding failed.
    #[error(transparent)]
    Chunker(#[from] chunker::Error),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database(e.into())
            }
        }
    )*};
}
from_redb!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
