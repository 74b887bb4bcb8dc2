//! The store's one error type.

/// Everything that can go wrong in a shard store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },

    /// Another process (a running node) has the store open.
    #[error("the shard store at {0} is in use by another process (a running node?); stop it first")]
    Locked(String),

    /// The index database failed.
    #[error("shard index: {0}")]
    Index(String),
    /// The index database (redb) failed.
    #[error("shard index database: {0}")]
    Database(#[source] redb::Error),

    /// A put that would exceed the owner's quota. Nothing is evicted to make room.
    #[error(
        "store is full: {size} more bytes would exceed the capacity of {capacity} bytes \
         ({used} used, {reserved} being written); raise --capacity or free space"
    )]
    QuotaExceeded {
        /// Bytes of the refused shard.
        size: u64,
        /// Bytes stored.
        used: u64,
        /// Bytes of puts in progress.
        reserved: u64,
        /// The quota.
        capacity: u64,
    },

    /// Bytes offered under a CID they do not hash to.
    #[error("shard bytes do not match {cid} (they hash to {actual}): refused")]
    HashMismatch {
        /// The CID claimed.
        cid: String,
        /// The CID of the bytes.
        actual: String,
    },

    /// A shard over the size limit.
    #[error("shard of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// No such shard here.
    #[error("shard {0} is not stored here")]
    NotFound(String),

    /// The shard's bytes on disk no longer match its CID; it has been quarantined.
    #[error("shard {cid} is corrupt on disk ({reason}); quarantined, not served")]
    Corrupt {
        /// The shard.
        cid: String,
        /// What was wrong.
        reason: String,
    },

    /// Delete by someone who does not own the shard.
    #[error("shard {cid} belongs to another owner; not deleted")]
    NotOwner {
        /// The shard.
        cid: String,
    },

    /// A range request or proof failed.
    #[error("range of {cid}: {reason}")]
    Range {
        /// The shard.
        cid: String,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { what, path: path.display().to_string(), source }
    }
}

macro_rules! index_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database(e.into())
            }
        }
    )*};
}

index_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
