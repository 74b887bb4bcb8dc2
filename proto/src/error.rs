//! The protocol types' one error type.

use chunker::Cid;
use libp2p_identity::PeerId;

/// What can be wrong with a receipt or a peer's key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The receipt's signature does not verify against its peer's key: it
    /// was forged or altered.
    #[error("receipt of {peer} for {cid}: the signature does not verify")]
    BadSignature {
        /// The peer the receipt names.
        peer: PeerId,
        /// The shard it names.
        cid: Cid,
    },
    /// A delete acknowledgement's signature does not verify against its
    /// peer's key: it was forged or altered.
    #[error("delete acknowledgement of {peer} for {cid}: the signature does not verify")]
    BadAckSignature {
        /// The peer the acknowledgement names.
        peer: PeerId,
        /// The shard it names.
        cid: Cid,
    },
    /// The peer id is a hash of its key, not the key itself (only ed25519
    /// ids carry it), so nothing it signed can be checked.
    #[error("peer id {peer} does not carry its public key")]
    NoInlineKey {
        /// The peer.
        peer: PeerId,
    },
    /// The key inside the peer id does not decode.
    #[error("peer id {peer}: its public key does not decode")]
    BadKey {
        /// The peer.
        peer: PeerId,
        /// Why.
        #[source]
        source: libp2p_identity::DecodingError,
    },
    /// Signing failed (a key that cannot sign).
    #[error("signing a receipt")]
    Signing(#[source] libp2p_identity::SigningError),
}

/// The protocol types' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
