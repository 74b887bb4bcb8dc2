//! Private shards: those a person's own devices keep for their drive.
//!
//! A shard put by a peer that is not a trusted SPN but that the node's
//! [`Private`] check admits (a client paired with this device, logged in to
//! its drive) is stored with the owner [`PRIVATE_OWNER`], pinned. Such a
//! shard is served, proven, listed and deleted only for peers the check
//! admits at the time of the request, and the check runs on the shard's
//! record before a byte of it is read. To a peer that is not paired (a
//! stranger, or a client whose pairing was revoked) a private shard is
//! answered exactly as one that is not here, so that knowing a CID does
//! not tell whether a device keeps it; the owner's own client that may not
//! use it now (not logged in) is told why.

use libp2p::PeerId;

/// The owner recorded for a private (drive) shard. No peer id has these
/// bytes (a peer id is a multihash), so no SPN can own or delete one.
pub const PRIVATE_OWNER: &[u8] = b"ionshard drive v1";

/// What a node's drive says of a peer, for its private shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It may put, read and delete them.
    Yes,
    /// The owner's, but not now (why, said to it).
    Not(String),
    /// Not paired: its requests are answered as if no private shard were here.
    Stranger,
}

/// Who may use this node's private shards: asked on every request that
/// touches one, so a revoked pairing or an ended session counts at once.
pub trait Private: Send + Sync + std::fmt::Debug {
    /// What `peer` may do with private shards now.
    fn admits(&self, peer: &PeerId) -> Admission;
}

/// Who asks, and what this node lets them do.
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) peer: PeerId,
    /// A trusted SPN (may put, renew and delete its own shards).
    pub(crate) trusted: bool,
    /// The node's check for private shards, if it keeps a drive.
    pub(crate) private: Option<&'a dyn Private>,
}

impl Caller<'_> {
    /// What this caller may do with private shards.
    pub(crate) fn admission(&self) -> Admission {
        self.private.map_or(Admission::Stranger, |p| p.admits(&self.peer))
    }

    /// The refusal (code and message) for a shard owned by `owner` that
    /// this caller may not use, if it is private: a stranger hears what it
    /// would of a shard not here.
    pub(crate) fn refuses(&self, cid: &chunker::Cid, owner: &[u8]) -> Option<(crate::wire::Code, String)> {
        if owner != PRIVATE_OWNER {
            return None;
        }
        match self.admission() {
            Admission::Yes => None,
            Admission::Not(why) => {
                Some((crate::wire::Code::Untrusted, format!("{cid} is kept for this device's owner only: {why}")))
            }
            Admission::Stranger => Some((crate::wire::Code::NotFound, not_here(cid))),
        }
    }
}

/// What a node says of a shard it does not keep, word for word the same
/// on every path (a private shard is answered so to strangers).
pub(crate) fn not_here(cid: &chunker::Cid) -> String {
    store::Error::NotFound(cid.to_string()).to_string()
}
