//! The ledger's one error type.

use std::path::PathBuf;

/// What went wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not a well-formed message of their kind.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// The kind of message.
        what: &'static str,
        /// Why it was refused.
        why: String,
    },
    /// A signature did not verify.
    #[error("bad signature on {what} from {signer}")]
    BadSignature {
        /// What was signed.
        what: &'static str,
        /// Who claims to have signed it.
        signer: String,
    },
    /// A commit certificate without enough valid precommits.
    #[error(
        "the certificate for block {height} carries {signed} of {total} voting power in valid precommits; more than 2/3 is needed"
    )]
    WeakCertificate {
        /// The block's height.
        height: u64,
        /// Voting power whose signatures verified.
        signed: u64,
        /// The set's total voting power.
        total: u64,
    },
    /// A certificate or proof about a block this chain does not have.
    #[error("unknown block: {0}")]
    UnknownBlock(String),
    /// A block that does not follow from the chain as we hold it.
    #[error("invalid block {height}: {why}")]
    InvalidBlock {
        /// Its height.
        height: u64,
        /// What is wrong with it.
        why: String,
    },
    /// A transaction the chain refuses.
    #[error("transaction refused: {0}")]
    Tx(#[from] TxError),
    /// A genesis file that cannot be used.
    #[error("genesis: {0}")]
    Genesis(String),
    /// A proof that does not check out.
    #[error("proof refused: {0}")]
    Proof(String),
    /// A state snapshot that cannot be used (offered, fetched or imported).
    #[error("snapshot refused: {0}")]
    Snapshot(String),
    /// The block store (redb) failed.
    #[error("ledger database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node's key could not sign.
    #[error("signing: {0}")]
    Signing(String),
}

/// Why a transaction is refused; each attack has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The reference block is not a finalized block of this chain: the
    /// transaction was made for another chain (or a fork that never was).
    #[error("it names block {height} as {named}, which is not this chain's block at that height")]
    WrongChain {
        /// The height it names.
        height: u64,
        /// The hash prefix it names, in hex.
        named: String,
    },
    /// Its expiry height has passed.
    #[error("it expired at height {expiry}; the chain is at {height}: sign it again against a recent block")]
    Expired {
        /// Its last valid height.
        expiry: u64,
        /// The height it was offered at.
        height: u64,
    },
    /// It lives longer than the chain allows.
    #[error("it would stay valid for {lifetime} heights; at most {max} are allowed")]
    TooLong {
        /// The lifetime asked.
        lifetime: u64,
        /// The chain's bound.
        max: u64,
    },
    /// The same transaction is already on the chain.
    #[error("it is already on the chain (replayed)")]
    Replayed,
    /// The signature does not match the signer.
    #[error("its signature does not verify")]
    BadSignature,
    /// Its content breaks a rule of its kind.
    #[error("{0}")]
    Invalid(String),
    /// A manufacturer admitted (or removed) by a key that is no registry admin.
    #[error("{0} is not a registry admin of this chain (the genesis names them)")]
    NotAdmin(String),
    /// A device registered by a key that is no admitted manufacturer.
    #[error("{0} is not an admitted manufacturer: registry admins admit manufacturers first")]
    NotManufacturer(String),
    /// A device registered a second time ("one device, one code").
    #[error("device {device} is registered already, by {by}: a device is registered once")]
    AlreadyRegistered {
        /// The device.
        device: String,
        /// Its manufacturer.
        by: String,
    },
    /// A device's state changed by neither its manufacturer nor its owner.
    #[error("{signer} is neither the manufacturer nor the owner of device {device}")]
    NotYours {
        /// The device.
        device: String,
        /// Who tried.
        signer: String,
    },
}

/// The ledger's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(path: &std::path::Path, e: impl Into<redb::Error>) -> Error {
        Error::Database { path: path.to_path_buf(), source: e.into() }
    }
}

/// redb's errors inside the state's transitions; the store names the file.
macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database { path: PathBuf::new(), source: e.into() }
            }
        })*
    };
}
from_redb!(redb::Error, redb::TableError, redb::StorageError, redb::TransactionError, redb::CommitError);
