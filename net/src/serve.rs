//! Answering shard requests from the local store (runs on a blocking thread).

use libp2p::PeerId;
use libp2p::identity::Keypair;
use store::{PutOptions, Store};

use crate::gate::Ticket;
use crate::wire::{Code, Request, Response};
use proto::Receipt;

fn refuse(code: Code, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

pub(crate) fn from_store(e: store::Error) -> Response {
    let code = match &e {
        store::Error::QuotaExceeded { .. } => Code::QuotaExceeded,
        store::Error::HashMismatch { .. } => Code::HashMismatch,
        store::Error::TooLarge { .. } => Code::TooLarge,
        store::Error::NotFound(_) | store::Error::Corrupt { .. } => Code::NotFound,
        store::Error::NotOwner { .. } => Code::NotOwner,
        store::Error::Range { .. } => Code::BadRequest,
        _ => Code::Internal,
    };
    refuse(code, e.to_string())
}

/// Hold the bytes an answer about `cid` will take (a whole shard, or a
/// proof of ranges of it); the refusal if they cannot be held.
fn hold_for(
    ticket: Option<&mut Ticket>,
    trusted: bool,
    store: &Store,
    cid: &chunker::Cid,
    ranges: Option<&[std::ops::Range<u64>]>,
) -> Option<Response> {
    let ticket = ticket?;
    let size = match store.meta(cid) {
        Ok(Some(m)) if !m.quarantined => m.size,
        Ok(_) => return Some(refuse(Code::NotFound, format!("{cid} is not stored here"))),
        Err(e) => return Some(from_store(e)),
    };
    let need = match ranges {
        Some(r) => chunker::proof::max_proof_len(size, r),
        None => size,
    };
    if ticket.hold(need, trusted) {
        return None;
    }
    Some(match ranges {
        None => refuse(
            Code::Busy,
            format!(
                "{cid} is {size} bytes, more than this node holds in memory for one request now; \
                 get it streamed (/ionshard/get/1) or retry"
            ),
        ),
        Some(_) => refuse(Code::Busy, "this node is holding too much at once; retry"),
    })
}

/// The answer to one request. With a ticket (requests of the
/// request-response protocol, whose answers are held whole until sent), the
/// bytes of a data or proof answer are held on it first, or the request is
/// answered `Busy`.
/// A shard to store, as a put names it.
pub(crate) struct Stored<'a> {
    pub(crate) cid: chunker::Cid,
    pub(crate) expiry: Option<u64>,
    pub(crate) pinned: bool,
    pub(crate) bytes: &'a [u8],
}

/// Store a shard for `peer` and sign its receipt (a trusted SPN's put only).
pub(crate) fn put(
    store: &Store,
    key: &Keypair,
    trusted: bool,
    peer: PeerId,
    shard: Stored<'_>,
    now: u64,
    default_expiry: Option<u64>,
) -> Response {
    let Stored { cid, expiry, pinned, bytes } = shard;
    if !trusted {
        return refuse(Code::Untrusted, format!("{peer} is not a trusted SPN here; puts refused"));
    }
    // A pinned shard never expires, and its receipt says so.
    let expiry = if pinned { None } else { expiry.or(default_expiry.map(|d| now.saturating_add(d))) };
    let size = bytes.len() as u64;
    let opts = PutOptions { owner: peer.to_bytes(), now, expiry, pinned };
    match store.put(&cid, bytes, &opts) {
        Ok(_) => match Receipt::sign(key, cid, size, now, expiry) {
            Ok(r) => Response::Stored(r),
            Err(e) => refuse(Code::Internal, e.to_string()),
        },
        Err(e) => from_store(e),
    }
}

/// The furthest ahead a renewal may keep a shard (a window is 90 days):
/// no owner can turn an expiring shard into one kept for ever.
const MAX_RENEW_AHEAD: u64 = 400 * 86_400;

/// What a node says of itself in a `Status` answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeState {
    /// Its owner is retiring it.
    pub(crate) retiring: bool,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn serve(
    store: Option<&Store>,
    key: &Keypair,
    trusted: bool,
    peer: PeerId,
    request: Request,
    now: u64,
    default_expiry: Option<u64>,
    ticket: Option<&mut Ticket>,
    state: NodeState,
) -> Response {
    let Some(store) = store else {
        return refuse(Code::NotFound, "this node stores no shards (it is a bootstrap node or a client)");
    };
    let refused = match &request {
        Request::Get { cid } => hold_for(ticket, trusted, store, cid, None),
        Request::Ranges { cid, ranges } | Request::Audit { cid, ranges } => {
            hold_for(ticket, trusted, store, cid, Some(ranges))
        }
        _ => None,
    };
    if let Some(r) = refused {
        return r;
    }
    match request {
        Request::Put { cid, expiry, pinned, bytes } => {
            put(store, key, trusted, peer, Stored { cid, expiry, pinned, bytes: &bytes }, now, default_expiry)
        }
        Request::Get { cid } => match store.get(&cid) {
            Ok(b) => Response::Data(b),
            Err(e) => from_store(e),
        },
        Request::Ranges { cid, ranges } => {
            // Built in a reused buffer, given back once it is sent.
            let mut buf = crate::buffers::take();
            match store.get_ranges_into(&cid, &ranges, &mut buf) {
                Ok(()) => Response::Proof(buf),
                Err(e) => {
                    crate::buffers::recycle(buf);
                    from_store(e)
                }
            }
        }
        Request::HasMany { cids } => match store.has_many(&cids) {
            Ok(h) => Response::Have(h),
            Err(e) => from_store(e),
        },
        Request::Delete { cid } => match store.delete(&cid, &peer.to_bytes()) {
            Ok(existed) => Response::Deleted(existed),
            Err(e) => from_store(e),
        },
        Request::DeleteAcked { cid } => match store.delete(&cid, &peer.to_bytes()) {
            Ok(existed) => match proto::DeleteAck::sign(key, cid, existed, now) {
                Ok(a) => Response::DeleteAck(a),
                Err(e) => refuse(Code::Internal, format!("signing the delete acknowledgement: {e}")),
            },
            Err(e) => from_store(e),
        },
        Request::Audit { cid, ranges } => {
            let size = match store.meta(&cid) {
                Ok(Some(m)) if !m.quarantined => m.size,
                Ok(_) => return refuse(Code::NotFound, format!("{cid} is not stored here")),
                Err(e) => return from_store(e),
            };
            match store.get_ranges(&cid, &ranges) {
                Ok(proof) => Response::Audited { size, proof },
                Err(e) => from_store(e),
            }
        }
        Request::Usage => {
            let u = store.usage();
            Response::Usage { shards: u.shards, bytes: u.bytes, capacity: u.capacity }
        }
        Request::Status => {
            let u = store.usage();
            Response::Status { shards: u.shards, bytes: u.bytes, capacity: u.capacity, retiring: state.retiring }
        }
        Request::Renew { .. } if !trusted => {
            refuse(Code::Untrusted, format!("{peer} is not a trusted SPN here; renewals refused"))
        }
        Request::Renew { expiry, .. } if expiry > now.saturating_add(MAX_RENEW_AHEAD) => refuse(
            Code::BadRequest,
            format!("a renewal to {expiry} is more than {} days ahead", MAX_RENEW_AHEAD / 86_400),
        ),
        Request::Renew { cid, expiry } => match store.renew(&cid, &peer.to_bytes(), expiry) {
            Ok(Some(meta)) => match Receipt::sign(key, cid, meta.size, now, meta.expiry) {
                Ok(r) => Response::Stored(r),
                Err(e) => refuse(Code::Internal, format!("signing the receipt: {e}")),
            },
            Ok(None) => refuse(Code::NotFound, format!("{cid} is not stored here")),
            Err(e) => from_store(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renew(store: &Store, key: &Keypair, trusted: bool, peer: PeerId, cid: chunker::Cid, expiry: u64) -> Response {
        let req = Request::Renew { cid, expiry };
        serve(Some(store), key, trusted, peer, req, 1_000, None, None, NodeState::default())
    }

    /// Only the SPN that put a shard, and still trusted here, may renew it,
    /// and never past 400 days: an SPN the owner stopped trusting cannot
    /// keep its shards for ever.
    #[test]
    fn renewals_from_an_untrusted_or_foreign_owner_or_too_far_ahead_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path(), store::Config::default()).expect("store");
        let key = Keypair::generate_ed25519();
        let spn = PeerId::random();
        let bytes = vec![7u8; 4096];
        let cid = chunker::Cid::of_raw(&bytes);
        let opts = PutOptions { owner: spn.to_bytes(), now: 1_000, expiry: Some(2_000), pinned: false };
        store.put(&cid, &bytes, &opts).expect("put");
        let code = |r: Response| match r {
            Response::Error { code, .. } => Some(code),
            _ => None,
        };
        assert_eq!(code(renew(&store, &key, false, spn, cid, 5_000)), Some(Code::Untrusted));
        assert_eq!(code(renew(&store, &key, true, PeerId::random(), cid, 5_000)), Some(Code::NotOwner));
        assert_eq!(code(renew(&store, &key, true, spn, cid, 1_000 + 401 * 86_400)), Some(Code::BadRequest));
        match renew(&store, &key, true, spn, cid, 5_000) {
            Response::Stored(r) => assert_eq!((r.cid, r.expiry), (cid, Some(5_000))),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.meta(&cid).expect("meta").expect("there").expiry, Some(5_000));
    }
}
