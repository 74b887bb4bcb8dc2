//! Local ionshard networks for the demo, the sandbox, the benches and the
//! multi-node tests: a bootstrap, N storage peers and an SPN, started
//! either as tasks of the caller ([`tasks`]) or as `ionshard` processes
//! ([`procs`]), on loopback. With households on, every node gets its own
//! address in 127.0.0.0/8 ([`household`]), so a test can tell nodes apart
//! by address as it would homes.
//!
//! Fault injection is not here: a lying, slow or dying peer is the test's
//! own `net::Answers` passed in a [`tasks::PeerSpec`]. The shipped binary
//! depends on this crate; what it ships cannot misbehave on purpose.

pub mod procs;
pub mod tasks;

use std::net::Ipv4Addr;

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node could not start.
    #[error("{node}: {why}")]
    Start {
        /// The node (`bootstrap`, `peer3`, `spn`).
        node: String,
        /// What went wrong (and where its log is, for a process).
        why: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The network did not come together in time.
    #[error("{0}")]
    NotReady(String),
    /// A node failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// A peer's store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The SPN failed.
    #[error(transparent)]
    Spn(#[from] spn::Error),
}

/// Results of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The loopback address of household `n` (0: the bootstrap's and the SPN's,
/// 127.0.0.1; then 127.0.0.2, …; beyond 253 households they share).
pub fn household(n: usize) -> Ipv4Addr {
    let last = 1 + (n % 253) as u8;
    Ipv4Addr::new(127, 0, 0, last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn households_stay_on_loopback() {
        for n in [0, 1, 252, 253, 10_000] {
            let a = super::household(n);
            assert!(a.is_loopback(), "{a}");
            assert_ne!(a.octets()[3], 0);
        }
        assert_eq!(super::household(0).octets(), [127, 0, 0, 1]);
        assert_eq!(super::household(3).octets(), [127, 0, 0, 4]);
    }
}
