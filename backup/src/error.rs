//! The backup crate's one error type.

use std::path::PathBuf;

/// What can go wrong in a backup, a restore or the upkeep of a repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The repository's key is missing, damaged or the wrong kind.
    #[error("{0}")]
    Key(String),
    /// A sealed record does not open with this key (wrong repository, or changed).
    #[error("{what} does not open with this repository's key (another repository's, or changed since it was written)")]
    Sealed {
        /// What it was.
        what: String,
    },
    /// A record or tree is not what this build writes or reads.
    #[error("{what}: {why}")]
    Format {
        /// What it was.
        what: String,
        /// Why it is refused.
        why: String,
    },
    /// No such snapshot.
    #[error("no snapshot {0} in this repository (see `ionshard backup snapshots`)")]
    NoSnapshot(String),
    /// A put-only key was used for something that needs the full key.
    #[error("this is a put-only key: it can add snapshots but not {0}; use the repository's full key")]
    PutOnly(&'static str),
    /// A restore would write outside its target.
    #[error("refused {path:?}: {why}")]
    Outside {
        /// The path in the snapshot.
        path: String,
        /// Why.
        why: String,
    },
    /// The data path (chunker).
    #[error(transparent)]
    Chunker(#[from] chunker::Error),
    /// The SPN or a fetch from the peers.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// The work needs a node on the network (to fetch a tree not cached here).
    #[error("{0}: join the network (give the bootstrap nodes)")]
    NeedsNetwork(String),
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn file(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { what, path, source }
    }

    pub(crate) fn format(what: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Format { what: what.into(), why: why.to_string() }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
