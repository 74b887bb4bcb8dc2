//! Answering shard requests from the local store (runs on a blocking thread).

use libp2p::identity::Keypair;
use store::{PutOptions, Store};

use crate::gate::Ticket;
use crate::private::{Admission, Caller, PRIVATE_OWNER, not_here};
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

/// The size of `cid` if `caller` may read it (a private shard only for a
/// peer the drive admits), checked on its record before any byte is read;
/// the refusal otherwise.
fn readable(caller: &Caller<'_>, store: &Store, cid: &chunker::Cid) -> Result<u64, Box<Response>> {
    match store.meta(cid) {
        Ok(Some(m)) if !m.quarantined => match caller.refuses(cid, &m.owner) {
            Some((code, why)) => Err(Box::new(refuse(code, why))),
            None => Ok(m.size),
        },
        Ok(_) => Err(Box::new(refuse(Code::NotFound, not_here(cid)))),
        Err(e) => Err(Box::new(from_store(e))),
    }
}

/// Check that `caller` may read `cid`, then hold the bytes an answer about
/// it will take (a whole shard, or a proof of ranges of it); the refusal if
/// either fails.
fn hold_for(
    ticket: Option<&mut Ticket>,
    caller: &Caller<'_>,
    store: &Store,
    cid: &chunker::Cid,
    ranges: Option<&[std::ops::Range<u64>]>,
) -> Option<Response> {
    let size = match readable(caller, store, cid) {
        Ok(size) => size,
        Err(r) => return Some(*r),
    };
    let ticket = ticket?;
    let need = match ranges {
        Some(r) => chunker::proof::max_proof_len(size, r),
        None => size,
    };
    if ticket.hold(need) {
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

/// Why `caller` may not put here, if it may not: only a trusted SPN, or a
/// peer this node's drive admits, puts shards.
pub(crate) fn may_put(caller: &Caller<'_>) -> Option<String> {
    if caller.trusted {
        return None;
    }
    match caller.admission() {
        Admission::Yes => None,
        Admission::Stranger => Some(format!("{} is not a trusted SPN here; puts refused", caller.peer)),
        Admission::Not(why) => {
            Some(format!("{} may not use this device's drive now ({why}); puts refused", caller.peer))
        }
    }
}

/// Store a shard for `caller` and sign its receipt: a trusted SPN's put
/// as it asks, a drive's put as a private shard kept until its owner
/// deletes it.
pub(crate) fn put(
    store: &Store,
    key: &Keypair,
    caller: &Caller<'_>,
    shard: Stored<'_>,
    now: u64,
    default_expiry: Option<u64>,
) -> Response {
    let Stored { cid, expiry, pinned, bytes } = shard;
    if let Some(why) = may_put(caller) {
        return refuse(Code::Untrusted, why);
    }
    let (owner, expiry, pinned) = if caller.trusted {
        // A pinned shard never expires, and its receipt says so.
        (
            caller.peer.to_bytes(),
            if pinned { None } else { expiry.or(default_expiry.map(|d| now.saturating_add(d))) },
            pinned,
        )
    } else {
        (PRIVATE_OWNER.to_vec(), None, true)
    };
    // A shard stays its owner's (the store refuses a put of one held for
    // another, once the bytes matched): a drive's put never takes over an
    // SPN's shard (which anyone may read), nor an SPN's a drive's or
    // another SPN's. A quarantined copy is replaced by good bytes, within
    // its class: checked here, once the bytes are known to be the shard's.
    if let Ok(Some(m)) = store.meta(&cid)
        && m.quarantined
        && (m.owner == PRIVATE_OWNER) != (owner == PRIVATE_OWNER)
        && chunker::Cid::of_raw(bytes) == cid
    {
        return refuse(Code::NotOwner, format!("{cid} is held here for another owner"));
    }
    let size = bytes.len() as u64;
    let opts = PutOptions { owner, now, expiry, pinned };
    match store.put(&cid, bytes, &opts) {
        Ok(_) => match Receipt::sign(key, cid, size, now, expiry) {
            Ok(r) => Response::Stored(r),
            Err(e) => refuse(Code::Internal, e.to_string()),
        },
        Err(e) => from_store(e),
    }
}

/// Delete `cid` for `caller`: a drive's shard if the drive admits it; a
/// stranger's delete of one is answered as if it were not here (nothing
/// deleted), the owner's refused with why. Whether it existed.
fn delete(caller: &Caller<'_>, store: &Store, cid: &chunker::Cid) -> Result<bool, Box<Response>> {
    let private = store.meta(cid).ok().flatten().is_some_and(|m| m.owner == PRIVATE_OWNER);
    let owner = match private.then(|| caller.refuses(cid, PRIVATE_OWNER)) {
        None => caller.peer.to_bytes(),
        Some(None) => PRIVATE_OWNER.to_vec(),
        // A stranger hears what it would of a shard not here.
        Some(Some((Code::NotFound, _))) => return Ok(false),
        Some(Some((code, why))) => return Err(Box::new(refuse(code, why))),
    };
    store.delete(cid, &owner).map_err(|e| Box::new(from_store(e)))
}

/// Which of `cids` are here for `caller`: a private shard it may not use
/// is answered as absent.
fn has_many(caller: &Caller<'_>, store: &Store, cids: &[chunker::Cid]) -> store::Result<Vec<bool>> {
    let mut have = store.has_many(cids)?;
    if caller.admission() != Admission::Yes {
        for (h, cid) in have.iter_mut().zip(cids) {
            if *h && store.meta(cid)?.is_some_and(|m| m.owner == PRIVATE_OWNER) {
                *h = false;
            }
        }
    }
    Ok(have)
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
    caller: &Caller<'_>,
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
        Request::Get { cid } => hold_for(ticket, caller, store, cid, None),
        Request::Ranges { cid, ranges } | Request::Audit { cid, ranges } => {
            hold_for(ticket, caller, store, cid, Some(ranges))
        }
        _ => None,
    };
    if let Some(r) = refused {
        return r;
    }
    match request {
        Request::Put { cid, expiry, pinned, bytes } => {
            put(store, key, caller, Stored { cid, expiry, pinned, bytes: &bytes }, now, default_expiry)
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
        Request::HasMany { cids } => match has_many(caller, store, &cids) {
            Ok(h) => Response::Have(h),
            Err(e) => from_store(e),
        },
        Request::Delete { cid } => match delete(caller, store, &cid) {
            Ok(existed) => Response::Deleted(existed),
            Err(r) => *r,
        },
        // A signed statement is for the SPNs this node trusts (they show it
        // on the ledger): a stranger asking of a drive's shard would have
        // got "it was not here", signed, while it is.
        Request::DeleteAcked { .. } if !caller.trusted => {
            refuse(Code::Untrusted, format!("{} is not a trusted SPN here; ask a plain delete", caller.peer))
        }
        Request::DeleteAcked { cid } => match delete(caller, store, &cid) {
            Ok(existed) => match proto::DeleteAck::sign(key, cid, existed, now) {
                Ok(a) => Response::DeleteAck(a),
                Err(e) => refuse(Code::Internal, format!("signing the delete acknowledgement: {e}")),
            },
            Err(r) => *r,
        },
        Request::Audit { cid, ranges } => {
            let size = match readable(caller, store, &cid) {
                Ok(size) => size,
                Err(r) => return *r,
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
        Request::Renew { .. } if !caller.trusted => {
            refuse(Code::Untrusted, format!("{} is not a trusted SPN here; renewals refused", caller.peer))
        }
        Request::Renew { expiry, .. } if expiry > now.saturating_add(MAX_RENEW_AHEAD) => refuse(
            Code::BadRequest,
            format!("a renewal to {expiry} is more than {} days ahead", MAX_RENEW_AHEAD / 86_400),
        ),
        Request::Renew { cid, .. } if store.meta(&cid).ok().flatten().is_some_and(|m| m.owner == PRIVATE_OWNER) => {
            refuse(Code::NotFound, not_here(&cid))
        }
        // The node answers these itself, before they reach the store.
        Request::Direct { .. } => refuse(Code::BadRequest, "no direct channel here"),
        Request::Renew { cid, expiry } => match store.renew(&cid, &caller.peer.to_bytes(), expiry) {
            Ok(Some(meta)) => match Receipt::sign(key, cid, meta.size, now, meta.expiry) {
                Ok(r) => Response::Stored(r),
                Err(e) => refuse(Code::Internal, format!("signing the receipt: {e}")),
            },
            Ok(None) => refuse(Code::NotFound, not_here(&cid)),
            Err(e) => from_store(e),
        },
    }
}

/// What serving needs of the node: its store, key, default expiry and
/// answer hook.
pub(crate) type Served<'a> = (Option<&'a Store>, &'a Keypair, Option<u64>, &'a dyn crate::Answers);

/// [`serve`] `request` now, and pass the answer through the node's answer
/// hook (what the request-response path and the direct channel send). A
/// panic while serving is answered too, so the peer's slot is freed.
pub(crate) fn answer(
    (store, key, default_expiry, answers): Served<'_>,
    caller: &Caller<'_>,
    request: Request,
    ticket: Option<&mut Ticket>,
    state: NodeState,
) -> Response {
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(store, key, caller, request, crate::node::now(), default_expiry, ticket, state)
    }));
    let mut response = served.unwrap_or_else(|_| Response::Error {
        code: Code::Internal,
        message: "the peer failed while serving this request".to_string(),
    });
    if let Response::Data(b) | Response::Proof(b) | Response::Audited { proof: b, .. } = &mut response {
        answers.alter(0, b);
    }
    let hold = match response {
        Response::Stored(_) => answers.hold_receipt(),
        Response::Data(_) | Response::Proof(_) => answers.hold(),
        _ => std::time::Duration::ZERO,
    };
    if !hold.is_zero() {
        std::thread::sleep(hold);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    /// An empty store (in a directory kept while the test runs) and a node key.
    fn fresh() -> (tempfile::TempDir, Store, Keypair) {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path(), store::Config::default()).expect("store");
        (dir, store, Keypair::generate_ed25519())
    }

    /// How a drive's shard is put.
    fn drives() -> PutOptions {
        PutOptions { owner: PRIVATE_OWNER.to_vec(), now: 1_000, expiry: None, pinned: true }
    }

    fn renew(store: &Store, key: &Keypair, trusted: bool, peer: PeerId, cid: chunker::Cid, expiry: u64) -> Response {
        let req = Request::Renew { cid, expiry };
        let caller = Caller { peer, trusted, private: None };
        serve(Some(store), key, &caller, req, 1_000, None, None, NodeState::default())
    }

    /// Only the SPN that put a shard, and still trusted here, may renew it,
    /// and never past 400 days: an SPN the owner stopped trusting cannot
    /// keep its shards for ever.
    #[test]
    fn renewals_from_an_untrusted_or_foreign_owner_or_too_far_ahead_are_refused() {
        let (_dir, store, key) = fresh();
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

    fn put_as(store: &Store, key: &Keypair, peer: PeerId, bytes: &[u8], cid: chunker::Cid, pinned: bool) -> Response {
        let caller = Caller { peer, trusted: true, private: None };
        let shard = Stored { cid, expiry: Some(2_000), pinned, bytes };
        put(store, key, &caller, shard, 1_000, None)
    }

    /// A stranger asking a signed delete acknowledgement of a drive's
    /// shard got one saying it was not here, signed by this node.
    #[test]
    fn a_stranger_gets_no_signed_ack_for_a_private_shard() {
        let (_dir, store, key) = fresh();
        let private = vec![6u8; 4096];
        let cid = chunker::Cid::of_raw(&private);
        store.put(&cid, &private, &drives()).expect("the drive's put");
        let caller = Caller { peer: PeerId::random(), trusted: false, private: None };
        let req = Request::DeleteAcked { cid };
        match serve(Some(&store), &key, &caller, req, 1_000, None, None, NodeState::default()) {
            Response::Error { code: Code::Untrusted, .. } => {}
            other => panic!("a stranger's acknowledged delete was answered {other:?}"),
        }
        assert!(store.meta(&cid).expect("meta").is_some(), "still here");
    }

    /// Two SPNs trusted here: the second puts the first one's shard again,
    /// pinned. It got a receipt for a shard the first may delete at any
    /// time, and kept the first one's shard for ever.
    #[test]
    fn a_second_spns_put_cannot_pin_or_claim_another_spns_shard() {
        let (_dir, store, key) = fresh();
        let (a, b) = (PeerId::random(), PeerId::random());
        let bytes = vec![9u8; 4096];
        let cid = chunker::Cid::of_raw(&bytes);
        assert!(matches!(put_as(&store, &key, a, &bytes, cid, false), Response::Stored(_)));
        match put_as(&store, &key, b, &bytes, cid, true) {
            Response::Error { code: Code::NotOwner, .. } => {}
            other => panic!("another SPN's put was answered {other:?}"),
        }
        let meta = store.meta(&cid).expect("meta").expect("there");
        assert!(!meta.pinned && meta.expiry == Some(2_000) && meta.owner == a.to_bytes(), "{meta:?}");
        // Its owner's own put again is fine (and may pin it).
        assert!(matches!(put_as(&store, &key, a, &bytes, cid, true), Response::Stored(_)));
    }

    /// A trusted SPN puts a CID with bytes that are not its: the answer
    /// is the same whether this device's drive holds that CID or not.
    #[test]
    fn an_spn_put_cannot_tell_whether_a_private_shard_is_here() {
        let (_dir, store, key) = fresh();
        let private = vec![5u8; 4096];
        let cid = chunker::Cid::of_raw(&private);
        let absent = chunker::Cid::of_raw(b"not here");
        store.put(&cid, &private, &drives()).expect("the drive's put");
        let code = |r: Response| match r {
            Response::Error { code, .. } => Some(code),
            other => panic!("{other:?}"),
        };
        let spn = PeerId::random();
        let here = code(put_as(&store, &key, spn, b"garbage", cid, false));
        let not_here = code(put_as(&store, &key, spn, b"garbage", absent, false));
        assert_eq!(here, not_here, "the answer tells a private shard apart");
    }
}
