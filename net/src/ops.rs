//! The shard protocol's operations, with every answer checked: a peer that
//! sends bytes not matching the CID, a proof that does not verify or a
//! receipt that is not its own is named in the error.

use std::ops::Range;

use chunker::{Cid, proof};
use libp2p::PeerId;

use crate::error::{Error, Result};
use crate::node::Client;
use crate::stream::OpenError;
use crate::wire::{PutHead, Request, Response};
use proto::Receipt;

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
        Response::DeleteAck(_) => "delete-ack",
        Response::Direct { .. } => "direct",
        Response::Audited { .. } => "audited",
        Response::Usage { .. } => "usage",
        Response::Status { .. } => "status",
        Response::Error { .. } => "error",
    }
}

/// A peer's answer to `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// Shards it stores.
    pub shards: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its quota.
    pub capacity: u64,
    /// Its owner is retiring it.
    pub retiring: bool,
}

/// How much later than asked a renewal receipt may say (a peer keeps the
/// later of what it had and what is asked).
const MAX_RENEW_SLACK: u64 = 400 * 86_400;

/// Whether a renewal receipt promises what was asked: at least until
/// `asked`, never "for good" and not past the slack.
fn renewal_fits(asked: u64, got: Option<u64>) -> bool {
    got.is_some_and(|e| e >= asked && e <= asked.saturating_add(MAX_RENEW_SLACK))
}

impl Client {
    /// Store a shard on `peer`; returns its receipt, checked. `bytes` is
    /// any owner of the shard's bytes (a `Vec`, or a handle shared with
    /// other puts of the same bytes: nothing is copied to send it).
    pub async fn put_shard(
        &self,
        peer: PeerId,
        cid: Cid,
        bytes: impl AsRef<[u8]> + Send + Sync,
        expiry: Option<u64>,
    ) -> Result<Receipt> {
        self.put(peer, cid, bytes.as_ref(), expiry, false).await
    }

    /// Store a shard on `peer` for good (until its owner deletes it): the
    /// receipt must carry no expiry, whatever the peer's default.
    pub async fn pin_shard(&self, peer: PeerId, cid: Cid, bytes: impl AsRef<[u8]> + Send + Sync) -> Result<Receipt> {
        self.put(peer, cid, bytes.as_ref(), None, true).await
    }

    /// A put on `/ionshard/put/1` (head first, the body only once the peer
    /// agreed); to a peer of an earlier release, on `/ionshard/shard/1`.
    async fn send_put(&self, peer: PeerId, head: PutHead, bytes: &[u8]) -> Result<Response> {
        self.connect(peer).await?;
        let mut control = self.control.clone();
        let deadline = crate::stream::body_deadline(self.request_timeout, head.size);
        let attempt = crate::stream::put(&mut control, peer, head, bytes, &self.limits);
        match tokio::time::timeout(deadline, attempt).await {
            Err(_) => Err(Error::Timeout { peer: peer.to_string() }),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(OpenError::Failed(e))) => Err(e),
            Ok(Err(OpenError::Unsupported)) => {
                let PutHead { cid, expiry, pinned, .. } = head;
                self.request(peer, Request::Put { cid, expiry, pinned, bytes: bytes.to_vec() }).await
            }
        }
    }

    async fn put(&self, peer: PeerId, cid: Cid, bytes: &[u8], expiry: Option<u64>, pinned: bool) -> Result<Receipt> {
        let size = bytes.len() as u64;
        // Say why before sending: the peer would refuse it from the head.
        let limit = self.limits.max_shard;
        if size > limit {
            return Err(Error::Config(format!(
                "shard of {size} bytes is over the protocol limit of {limit} bytes (use smaller segments)"
            )));
        }
        match self.send_put(peer, PutHead { cid, expiry, pinned, size }, bytes).await? {
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

    /// Fetch a whole shard from `peer` into `sink` as it streams in, checked
    /// against its CID on the way (the caller keeps what it wrote only once
    /// this returns `Ok`: a peer that lies is found at the end). At most
    /// `max` bytes are taken. Returns the length.
    pub async fn get_shard_to(
        &self,
        peer: PeerId,
        cid: Cid,
        max: u64,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        self.connect(peer).await?;
        let mut control = self.control.clone();
        let max = max.min(self.limits.max_shard);
        let deadline = crate::stream::body_deadline(self.request_timeout, max);
        let attempt = crate::stream::get(&mut control, peer, cid, max, sink);
        match tokio::time::timeout(deadline, attempt).await {
            Err(_) => Err(Error::Timeout { peer: peer.to_string() }),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(OpenError::Failed(e))) => Err(e),
            Ok(Err(OpenError::Unsupported)) => {
                // A peer of an earlier release answers in one message.
                let b = self.get_shard_whole(peer, cid).await?;
                sink.write_all(&b).map_err(|e| Error::Protocol(format!("writing {cid}: {e}")))?;
                Ok(b.len() as u64)
            }
        }
    }

    /// Fetch a whole shard from `peer` into memory, checked against its CID.
    pub async fn get_shard(&self, peer: PeerId, cid: Cid) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.get_shard_to(peer, cid, self.limits.max_shard, &mut v).await?;
        Ok(v)
    }

    /// A get on `/ionshard/shard/1`, answered in one message.
    async fn get_shard_whole(&self, peer: PeerId, cid: Cid) -> Result<Vec<u8>> {
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

    /// Delete a shard this node put on `peer`, with the peer's signed
    /// acknowledgement, checked: it names `peer` and `cid` and its
    /// signature verifies. A node of an earlier release signs none (it
    /// answers `BadRequest`): it is asked a plain delete, and the
    /// acknowledgement comes back `None`. Whether the shard was there,
    /// and the acknowledgement.
    pub async fn delete_shard_acked(&self, peer: PeerId, cid: Cid) -> Result<(bool, Option<proto::DeleteAck>)> {
        match self.request(peer, Request::DeleteAcked { cid }).await? {
            Response::DeleteAck(a) => {
                let bad = |reason: String| Error::BadAnswer { peer: peer.to_string(), reason };
                if a.peer != peer || a.cid != cid {
                    return Err(bad(format!("asked to delete {cid}, it acknowledged {} as {}", a.cid, a.peer)));
                }
                a.verify().map_err(|e| bad(e.to_string()))?;
                Ok((a.existed, Some(a)))
            }
            // An earlier release, or a peer that no longer trusts this SPN
            // (it signs nothing for it, but its owner may still delete).
            Response::Error { code: crate::wire::Code::BadRequest | crate::wire::Code::Untrusted, .. } => {
                Ok((self.delete_shard(peer, cid).await?, None))
            }
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

    /// Ask `peer` to keep a shard it holds for us at least until `expiry`;
    /// its fresh receipt, checked. A node of an earlier release refuses
    /// with `BadRequest` (re-put the shard to it instead, or let it expire).
    pub async fn renew_shard(&self, peer: PeerId, cid: Cid, expiry: u64) -> Result<Receipt> {
        match self.request(peer, Request::Renew { cid, expiry }).await? {
            Response::Stored(r) => {
                // The promise asked for, not more: a peer answering "for good"
                // (or for ever) would make the owner stop renewing a shard
                // that is meant to expire, and repair pin it elsewhere.
                if r.peer != peer || r.cid != cid || !renewal_fits(expiry, r.expiry) {
                    return Err(Error::BadAnswer {
                        peer: peer.to_string(),
                        reason: format!("renewal receipt is for {} / {} / until {:?}", r.peer, r.cid, r.expiry),
                    });
                }
                r.verify().map_err(|e| Error::BadAnswer { peer: peer.to_string(), reason: e.to_string() })?;
                Ok(r)
            }
            other => Err(unexpected(peer, other)),
        }
    }

    /// What `peer` stores and offers, and whether its owner is retiring it.
    /// A node of an earlier release, which does not know `Status`, is asked
    /// for its usage instead (and is not retiring).
    pub async fn peer_status(&self, peer: PeerId) -> Result<PeerStatus> {
        match self.request(peer, Request::Status).await {
            Ok(Response::Status { shards, bytes, capacity, retiring }) => {
                Ok(PeerStatus { shards, bytes, capacity, retiring })
            }
            // A refusal comes back as an answer (`request` only fails on
            // the way), so the older node's BadRequest is matched here.
            Ok(Response::Error { code: crate::wire::Code::BadRequest, .. }) => {
                let (shards, bytes, capacity) = self.usage(peer).await?;
                Ok(PeerStatus { shards, bytes, capacity, retiring: false })
            }
            Ok(other) => Err(unexpected(peer, other)),
            Err(e) => Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer answering a renewal with "kept for good" (or for ever) would
    /// make its owner stop renewing a shard meant to expire, and repair pin
    /// it on honest peers.
    #[test]
    fn a_renewal_receipt_claiming_forever_or_less_than_asked_is_refused() {
        assert!(renewal_fits(1_000, Some(1_000)));
        assert!(renewal_fits(1_000, Some(1_000 + 86_400)), "a peer may keep the later date it had");
        assert!(!renewal_fits(1_000, None), "for good");
        assert!(!renewal_fits(1_000, Some(u64::MAX)), "for ever");
        assert!(!renewal_fits(1_000, Some(999)), "less than asked");
    }
}
