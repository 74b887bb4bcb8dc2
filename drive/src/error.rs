//! The drive's one error type.

use crate::mailbox::Refusal;

/// What can go wrong pairing devices or keeping their pairings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pairing code that does not parse.
    #[error("pairing code: {0}")]
    BadCode(String),
    /// The mailbox refused (the code is unknown, used, expired or burned).
    #[error("{message}")]
    Refused {
        /// Why, for programs.
        reason: Refusal,
        /// Why, for people.
        message: String,
    },
    /// The mailbox could not be reached, or answered nonsense.
    #[error("the pairing mailbox: {0}")]
    Mailbox(String),
    /// The other side's message does not open with the exchanged key: a
    /// wrong code was tried (the code is burned).
    #[error(
        "a wrong code was tried on this pairing, so the code is burned and nothing was paired: run `ionshard \
         drive pair` again for a new code"
    )]
    WrongCode,
    /// The other side's message opened but is not a valid pairing (a bad
    /// signature, the wrong role).
    #[error("the other side's pairing message is not valid: {0}")]
    BadPeer(String),
    /// Nobody joined, or the other side did not answer, in time.
    #[error("{0}")]
    TimedOut(String),
    /// The pairings file.
    #[error("{path}: {why}")]
    Pairs {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Not paired.
    #[error("{0} is not paired here (`ionshard drive pairs` lists the pairings)")]
    NotPaired(String),
    /// A device refused a drive request.
    #[error("{message}")]
    Device {
        /// Why, for programs.
        reason: crate::protocol::Refusal,
        /// Why, for people (the device's words, and which device).
        message: String,
    },
    /// A path the drive does not take.
    #[error("{path}: {why}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// Nothing at that path.
    #[error("{0} is not in the drive (`ionshard drive ls` lists it)")]
    NotInDrive(String),
    /// Something is at that path already.
    #[error("{0} exists already: remove it first, or choose another name")]
    Exists(String),
    /// The devices have no room (full, or too few answering).
    #[error("{0}")]
    NoRoom(String),
    /// A local file.
    #[error("{what} {path}: {source}")]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The drive itself (its tree, its keys, its devices).
    #[error("{0}")]
    Drive(String),
    /// A change some devices accepted, too few to be sure it is the
    /// drive's: the next change may finish it. What it stored must be kept.
    #[error("{0}")]
    InDoubt(String),
}

impl Error {
    /// A file error's constructor, for `map_err`.
    pub(crate) fn file(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::File { what, path, source }
    }
}

/// The drive's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
