//! The shard protocol's operations, with every answer checked: a peer that
//! sends bytes not matching the CID, a proof that does not verify or a
//! receipt that is not its own is named in the error.

use std::ops::Range;

use chunker::{Cid, proof};
use libp2p::PeerId;

use crate::error::{Error, Result};
use crate::node::Client;
use crate::receipt::Receipt;
use crate::wire::{Request, Response};

fn unexpected(peer: PeerId, r: Response) -> Error {
    match r {
        Response::Error { code, message } => Error::Refused { peer: peer.to_string(), code, message },
        other => Error::BadAnswer { peer: peer.to_string(), reason: format!("unexpected answer {:?}", kind(&other)) },
    }
}

fn kind(r: &Response) -> &'static str {
    match r {
        Response::Stored(_) => "stored",
        Response::Data(_) => "data",
        Response::Proof(_) => "proof",
        Response::Have(_) => "have",
        Response::Deleted(_) => "deleted",
        Response::Audited { .. } => "audited",
        Response::Usage { .. } => "usage",
        Response::Error { .. } => "error",
    }
}

impl Client {
    /// Store a shard on `peer`; returns its receipt, checked.
    pub async fn put_shard(&self, peer: PeerId, cid: Cid, bytes: Vec<u8>, expiry: Option<u64>) -> Result<Receipt> {
        self.put(peer, cid, bytes, expiry, false).await
    }

    /// Store a shard on `peer` for good (until its owner deletes it): the
    /// receipt must carry no expiry, whatever the peer's default.
    pub async fn pin_shard(&self, peer: PeerId, cid: Cid, bytes: Vec<u8>) -> Result<Receipt> {
        self.put(peer, cid, bytes, None, true).await
    }

    async fn put(&self, peer: PeerId, cid: Cid, bytes: Vec<u8>, expiry: Option<u64>, pinned: bool) -> Result<Receipt> {
        let size = bytes.len() as u64;
        // Peers close the stream on a frame over the limit; say why before sending.
        let limit = crate::wire::Limits::default().max_request as u64 - 4096;
        if size > limit {
            return Err(Error::Config(format!(
                "shard of {size} bytes is over the protocol limit of {limit} bytes (use smaller segments)"
            )));
        }
        match self.request(peer, Request::Put { cid, expiry, pinned, bytes }).await? {
            Response::Stored(r) => {
                // The receipt must promise at least what was asked: until `expiry`, or for good.
                let keeps = match (expiry, r.expiry) {
                    (_, None) => true,
                    (_, Some(_)) if pinned => false,
                    (Some(want), Some(got)) => got >= want,
                    (None, Some(_)) => true, // the peer's default expiry applies to puts that name none
                };
                if r.peer != peer || r.cid != cid || r.size != size || !keeps {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: format!(
                            "receipt is for {} / {} / {} bytes / until {:?}",
                            r.peer, r.cid, r.size, r.expiry
                        ),
                    });
                }
                r.verify().map_err(|e| Error::BadAnswer { peer: peer.to_string(), reason: e.to_string() })?;
                Ok(r)
            }
            other => Err(unexpected(peer, other)),
        }
    }

    /// Fetch a whole shard from `peer`, checked against its CID.
    pub async fn get_shard(&self, peer: PeerId, cid: Cid) -> Result<Vec<u8>> {
        match self.request(peer, Request::Get { cid }).await? {
            Response::Data(b) => {
                if Cid::of_raw(&b) != cid {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: format!("bytes do not match {cid}"),
                    });
                }
                Ok(b)
            }
            other => Err(unexpected(peer, other)),
        }
    }

    /// Fetch byte ranges of a shard of `shard_len` bytes, each checked by its proof.
    pub async fn get_ranges(
        &self,
        peer: PeerId,
        cid: Cid,
        shard_len: u64,
        ranges: Vec<Range<u64>>,
    ) -> Result<Vec<Vec<u8>>> {
        match self.request(peer, Request::Ranges { cid, ranges: ranges.clone() }).await? {
            Response::Proof(p) => {
                if p.len() as u64 > proof::max_proof_len(shard_len, &ranges) {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: "proof longer than possible".into(),
                    });
                }
                proof::verify(&cid, shard_len, &ranges, &p)
                    .map_err(|e| Error::BadAnswer { peer: peer.to_string(), reason: format!("{cid}: {e}") })
            }
            other => Err(unexpected(peer, other)),
        }
    }

    /// Which of `cids` does `peer` hold?
    pub async fn has_many(&self, peer: PeerId, cids: Vec<Cid>) -> Result<Vec<bool>> {
        let n = cids.len();
        match self.request(peer, Request::HasMany { cids }).await? {
            Response::Have(h) if h.len() == n => Ok(h),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Delete a shard this node put on `peer`.
    pub async fn delete_shard(&self, peer: PeerId, cid: Cid) -> Result<bool> {
        match self.request(peer, Request::Delete { cid }).await? {
            Response::Deleted(d) => Ok(d),
            other => Err(unexpected(peer, other)),
        }
    }

    /// How much `peer` stores and offers: (shards, bytes, capacity).
    pub async fn usage(&self, peer: PeerId) -> Result<(u64, u64, u64)> {
        match self.request(peer, Request::Usage).await? {
            Response::Usage { shards, bytes, capacity } => Ok((shards, bytes, capacity)),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Challenge `peer` to prove it holds `ranges` of a shard of `shard_len`
    /// bytes (drawn at random by the auditor); checks the answer with the CID alone.
    pub async fn audit(&self, peer: PeerId, cid: Cid, shard_len: u64, ranges: Vec<Range<u64>>) -> Result<()> {
        match self.request(peer, Request::Audit { cid, ranges: ranges.clone() }).await? {
            Response::Audited { size, proof: p } => {
                if size != shard_len {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: format!("claims {cid} is {size} bytes, expected {shard_len}"),
                    });
                }
                if p.len() as u64 > proof::max_proof_len(shard_len, &ranges) {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: "proof longer than possible".into(),
                    });
                }
                proof::verify(&cid, shard_len, &ranges, &p)
                    .map(|_| ())
                    .map_err(|e| Error::BadAnswer { peer: peer.to_string(), reason: format!("audit of {cid}: {e}") })
            }
            other => Err(unexpected(peer, other)),
        }
    }
}
