//! Everything that can go wrong in a fetch or with the SPN.

use std::path::PathBuf;

/// Errors of the client crate. Each keeps its source and says what it was
/// doing; none names a command-line flag (the CLI adds those hints).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done (`opening`, `writing`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Another fetch writes to the same partial file.
    #[error("{} is being written by another fetch; wait for it or fetch to another place", .0.display())]
    Busy(PathBuf),
    /// The manifest does not describe the object that was expected.
    #[error(
        "the manifest describes {got_len} bytes with hash {got_hash}, {label} is {want_len} bytes with hash {want_hash}"
    )]
    Mismatch {
        /// What was expected (a release id, a snapshot, a file).
        label: String,
        /// The manifest's object length.
        got_len: u64,
        /// The manifest's object hash, hex.
        got_hash: String,
        /// The expected length.
        want_len: u64,
        /// The expected hash, hex.
        want_hash: String,
    },
    /// The chunker refused the manifest, or could not rebuild the object.
    #[error(transparent)]
    Chunker(#[from] chunker::Error),
    /// The decoder's thread died.
    #[error("the fetch thread stopped: {0}")]
    Thread(#[source] tokio::task::JoinError),
    /// Not an SPN address.
    #[error("{0:?} is not an SPN address: give its API address, like http://127.0.0.1:7800")]
    BadUrl(String),
    /// The SPN could not be reached, or its answer not read.
    #[error("{what} at the SPN {url}: {source}")]
    Http {
        /// The request (`GET /v1/jobs/3`).
        what: String,
        /// The SPN's address.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The SPN refused a request.
    #[error("the SPN refused {what} ({status}): {message}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The SPN's reason.
        message: String,
    },
    /// The SPN's answer is not what the API says.
    #[error("the SPN's answer to {what} is not what its API says: {source}")]
    Answer {
        /// The request.
        what: String,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A request body could not be encoded.
    #[error("encoding the body of {what}: {source}")]
    Encode {
        /// The request.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A job on the SPN failed, or did not finish in time.
    #[error("job {job} on the SPN {why}")]
    Job {
        /// The job.
        job: u64,
        /// What happened.
        why: String,
    },
    /// A storage receipt the SPN gave does not parse or verify.
    #[error("the SPN's answer to {what} holds a bad receipt: {why}")]
    BadReceipt {
        /// The request.
        what: String,
        /// Why.
        why: String,
    },
}

impl Error {
    pub(crate) fn file(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { what, path, source }
    }
}

/// Results of the client crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
