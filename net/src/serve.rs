//! Answering shard requests from the local store (runs on a blocking thread).

use libp2p::PeerId;
use libp2p::identity::Keypair;
use store::{PutOptions, Store};

use crate::receipt::Receipt;
use crate::wire::{Code, Request, Response};

fn refuse(code: Code, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

fn from_store(e: store::Error) -> Response {
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

/// The answer to one request.
pub(crate) fn serve(
    store: Option<&Store>,
    key: &Keypair,
    trusted: bool,
    peer: PeerId,
    request: Request,
    now: u64,
    default_expiry: Option<u64>,
) -> Response {
    let Some(store) = store else {
        return refuse(Code::NotFound, "this node stores no shards (it is a bootstrap node or a client)");
    };
    match request {
        Request::Put { cid, expiry, pinned, bytes } => {
            if !trusted {
                return refuse(Code::Untrusted, format!("{peer} is not a trusted SPN here; puts refused"));
            }
            // A pinned shard never expires, and its receipt says so.
            let expiry = if pinned { None } else { expiry.or(default_expiry.map(|d| now.saturating_add(d))) };
            let size = bytes.len() as u64;
            let opts = PutOptions { owner: peer.to_bytes(), now, expiry, pinned };
            match store.put(&cid, &bytes, &opts) {
                Ok(_) => match Receipt::sign(key, cid, size, now, expiry) {
                    Ok(r) => Response::Stored(r),
                    Err(e) => refuse(Code::Internal, e.to_string()),
                },
                Err(e) => from_store(e),
            }
        }
        Request::Get { cid } => match store.get(&cid) {
            Ok(b) => Response::Data(b),
            Err(e) => from_store(e),
        },
        Request::Ranges { cid, ranges } => match store.get_ranges(&cid, &ranges) {
            Ok(p) => Response::Proof(p),
            Err(e) => from_store(e),
        },
        Request::HasMany { cids } => match store.has_many(&cids) {
            Ok(h) => Response::Have(h),
            Err(e) => from_store(e),
        },
        Request::Delete { cid } => match store.delete(&cid, &peer.to_bytes()) {
            Ok(existed) => Response::Deleted(existed),
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
    }
}
