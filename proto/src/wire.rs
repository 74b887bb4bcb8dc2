//! The shard protocols' messages and their bytes.
//!
//! Three protocols:
//!
//! - `/ionshard/shard/1`: one request and one response per stream (libp2p
//!   request-response), for everything small: ranges with proofs, has-many,
//!   delete, audit, usage. Since the put and get protocols below exist, a
//!   node reads requests of this protocol only up to
//!   [`Limits::max_request`] (256 KiB): a whole-shard `Put` travels on
//!   `/ionshard/put/1`, and `Get` is answered here only for shards that fit
//!   the node's memory budget for one peer (devices of earlier releases ask
//!   only for ranges, which still work).
//! - `/ionshard/put/1` (new in this release): the header comes first, the
//!   receiving node checks who sends (trusted SPNs only), the size limit and
//!   its quota, and says so *before* a byte of the body is sent.
//! - `/ionshard/get/1` (new in this release): a whole shard, streamed, never
//!   held in memory on either side.
//!
//! Request-response messages of `/ionshard/shard/1` are frames:
//!
//! ```text
//! frame    = length: u32 (big-endian, of the body) | body
//! request  = 1 Put      cid(36) expiry: u64 (u64::MAX none) pinned: u8 bytes…
//!          | 2 Get      cid(36)
//!          | 3 Ranges   cid(36) n: u16 (start: u64, end: u64) × n
//!          | 4 HasMany  n: u16 cid(36) × n
//!          | 5 Delete   cid(36)
//!          | 6 Audit    cid(36) n: u16 (start: u64, end: u64) × n
//!          | 7 Usage
//!          | 8 Status   (older nodes answer 255 BadRequest)
//!          | 9 Renew    cid(36) expiry: u64   (older nodes answer 255 BadRequest)
//!          | 10 DeleteAcked cid(36)   (a delete answered with a signed
//!                       acknowledgement; older nodes answer 255 BadRequest: ask 5 Delete)
//!          | 11 Direct  connections: u8 (1..=8)   (new in this release: tickets for
//!                       the direct channel; older nodes answer 255 BadRequest)
//! response = 1 Stored   receipt
//!          | 2 Data     bytes…
//!          | 3 Proof    bytes…        (chunker::proof format)
//!          | 4 Have     n: u16 bits: ceil(n/8) bytes
//!          | 5 Deleted  existed: u8
//!          | 6 Audited  size: u64 proof…
//!          | 7 Usage    shards: u64 bytes: u64 capacity: u64
//!          | 8 Status   shards: u64 bytes: u64 capacity: u64 flags: u8
//!                       (bit 0: its owner is retiring it; other bits reserved, ignored)
//!          | 9 DeleteAck ack          (the answer to 10 DeleteAcked; see [`crate::DeleteAck`])
//!          | 10 Direct  port: u16 secret(32) n: u8 ticket(16) × n   (the answer to 11 Direct, n ≥ 1)
//!          | 255 Error  code: u16 message: utf-8…
//! receipt  = peer_len: u8 peer cid(36) size: u64 stored_at: u64 expiry: u64 sig_len: u16 sig
//! ```
//!
//! Integers are big-endian. `bytes…` runs to the end of the frame. Sizes are
//! checked against [`Limits`] before anything is allocated: a frame longer
//! than the limit is refused from its length alone.
//!
//! The stream protocols use the same frames for their heads and answers, and
//! send the shard's bytes raw between them:
//!
//! ```text
//! /ionshard/put/1   → frame(put-head)   put-head = cid(36) expiry: u64 pinned: u8 size: u64
//!                   ← frame(ready)      (refused here: nothing of the body is read)
//!                   → size bytes
//!                   ← frame(response)   1 Stored receipt | 255 Error
//! /ionshard/get/1   → frame(get-head)   get-head = cid(36)
//!                   ← frame(ready)      (size: the shard's length)
//!                   ← size bytes
//! ready    = 0 Go size: u64 | 255 Error code: u16 message: utf-8…
//! ```
//!
//! Heads and ready frames are at most [`MAX_HEAD`] bytes.
//!
//! The direct channel (new in this release) carries range requests and
//! their answers on a TCP connection of its own, outside libp2p, keyed by
//! a `Direct` answer received on the peer's libp2p connection (noise
//! proved who it is there); its framing is in [`crate::direct`].

use std::ops::Range;

use chunker::Cid;
use libp2p_identity::PeerId;

use crate::ack::DeleteAck;
use crate::direct;
use crate::receipt::Receipt;

/// Largest head or ready frame of the put and get protocols.
pub const MAX_HEAD: usize = 1100;

/// Size limits on messages, checked before allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request frame read on `/ionshard/shard/1` (whole shards go
    /// on the put protocol; the largest request left is a has-many).
    pub max_request: usize,
    /// Largest response frame read (a peer of an earlier release answers a
    /// get with a whole shard).
    pub max_response: usize,
    /// Largest shard sent or received on the put and get protocols.
    pub max_shard: u64,
    /// Most ranges in one request.
    pub max_ranges: usize,
    /// Most bytes all the ranges of one request may cover.
    pub max_range_bytes: u64,
    /// Most CIDs in one has-many.
    pub max_cids: usize,
}

impl Default for Limits {
    /// Shards up to 64 MiB; ranges of up to 16 MiB a request.
    fn default() -> Self {
        Limits {
            max_request: 256 << 10,
            max_response: (64 << 20) + 4096,
            max_shard: 64 << 20,
            max_ranges: 1024,
            max_range_bytes: 16 << 20,
            max_cids: 4096,
        }
    }
}

/// A request of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a shard (trusted SPNs only); answered with a receipt.
    Put {
        /// The shard's CID.
        cid: Cid,
        /// Keep until (seconds since the epoch).
        expiry: Option<u64>,
        /// Never expire.
        pinned: bool,
        /// The shard.
        bytes: Vec<u8>,
    },
    /// The whole shard.
    Get {
        /// Which.
        cid: Cid,
    },
    /// Byte ranges with their proof.
    Ranges {
        /// Which shard.
        cid: Cid,
        /// Sorted, disjoint, inside the shard.
        ranges: Vec<Range<u64>>,
    },
    /// Which of these does the peer hold?
    HasMany {
        /// The shards asked about.
        cids: Vec<Cid>,
    },
    /// Delete a shard (its owner only).
    Delete {
        /// Which.
        cid: Cid,
    },
    /// Prove possession of auditor-chosen ranges.
    Audit {
        /// Which shard.
        cid: Cid,
        /// Ranges the auditor drew at random.
        ranges: Vec<Range<u64>>,
    },
    /// How much the peer stores and may store (for placement by free space).
    Usage,
    /// Usage and the node's state (whether its owner is retiring it): what
    /// an SPN's heartbeat asks. Nodes of earlier releases answer `BadRequest`; ask
    /// them `Usage`.
    Status,
    /// Keep a shard at least until `expiry` (its owner only; never
    /// shortens); answered with a fresh receipt that says so. Nodes of
    /// earlier releases answer `BadRequest`.
    Renew {
        /// Which.
        cid: Cid,
        /// Until (seconds since the epoch).
        expiry: u64,
    },
    /// Delete a shard (its owner only), answered with the peer's signed
    /// [`DeleteAck`]. Nodes of earlier releases answer `BadRequest`; ask
    /// them [`Request::Delete`].
    DeleteAcked {
        /// Which.
        cid: Cid,
    },
    /// Tickets for this many connections of the direct channel, answered
    /// with [`Response::Direct`]. Nodes of earlier releases answer
    /// `BadRequest`: ask them everything here.
    Direct {
        /// 1 to [`direct::MAX_TICKETS`].
        connections: u8,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Code {
    /// Malformed or truncated message.
    BadRequest = 1,
    /// Put from a peer not on the trust list.
    Untrusted = 2,
    /// Over a size limit.
    TooLarge = 3,
    /// Over the storage quota.
    QuotaExceeded = 4,
    /// Bytes that do not match the CID.
    HashMismatch = 5,
    /// Not stored here.
    NotFound = 6,
    /// Delete by someone other than the owner.
    NotOwner = 7,
    /// Too many requests from this peer at once.
    Busy = 8,
    /// Anything else on the serving side.
    Internal = 9,
}

impl Code {
    fn from_u16(v: u16) -> Code {
        match v {
            1 => Code::BadRequest,
            2 => Code::Untrusted,
            3 => Code::TooLarge,
            4 => Code::QuotaExceeded,
            5 => Code::HashMismatch,
            6 => Code::NotFound,
            7 => Code::NotOwner,
            8 => Code::Busy,
            _ => Code::Internal,
        }
    }
}

/// A response of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Stored; here is the receipt.
    Stored(Receipt),
    /// The whole shard.
    Data(Vec<u8>),
    /// A range proof.
    Proof(Vec<u8>),
    /// One flag per CID asked about.
    Have(Vec<bool>),
    /// Deleted (false: it was not here).
    Deleted(bool),
    /// Deleted (or not there), signed: the answer to [`Request::DeleteAcked`].
    DeleteAck(DeleteAck),
    /// An audit answer: the shard's size and the proof of the ranges.
    Audited {
        /// Shard size the peer claims (the proof is checked against it).
        size: u64,
        /// The proof.
        proof: Vec<u8>,
    },
    /// Space used and offered.
    Usage {
        /// Healthy shards stored.
        shards: u64,
        /// Their bytes.
        bytes: u64,
        /// The quota.
        capacity: u64,
    },
    /// Tickets for the direct channel: connect to `port` on the address
    /// this answer came from and present one ticket per connection.
    Direct {
        /// The peer's direct-channel TCP port.
        port: u16,
        /// The keys of every connection are derived from this and its ticket.
        secret: [u8; 32],
        /// One per connection, each good once and for a short while.
        tickets: Vec<[u8; 16]>,
    },
    /// Space used and offered, and the node's state.
    Status {
        /// Healthy shards stored.
        shards: u64,
        /// Their bytes.
        bytes: u64,
        /// The quota.
        capacity: u64,
        /// Its owner is retiring it (`ionshard node retire`): move its
        /// shards away, place nothing new on it.
        retiring: bool,
    },
    /// Refused.
    Error {
        /// Why, for programs.
        code: Code,
        /// Why, for people.
        message: String,
    },
}

/// A message that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct Malformed(pub String);

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed(format!("truncated: wanted {n} more bytes, {} left", self.b.len())));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn cid(&mut self) -> Result<Cid, Malformed> {
        Cid::from_bytes(self.take(36)?).map_err(|e| Malformed(e.to_string()))
    }
    /// A flag byte: 0 or 1, nothing else (one encoding per message).
    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(Malformed(format!("flag byte {x} (0 or 1)"))),
        }
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
    fn end(&self) -> Result<(), Malformed> {
        if self.b.is_empty() { Ok(()) } else { Err(Malformed(format!("{} trailing bytes", self.b.len()))) }
    }
    fn ranges(&mut self, limits: &Limits) -> Result<Vec<Range<u64>>, Malformed> {
        let n = usize::from(self.u16()?);
        if n == 0 || n > limits.max_ranges {
            return Err(Malformed(format!("{n} ranges (1..={} allowed)", limits.max_ranges)));
        }
        if self.b.len() < n * 16 {
            return Err(Malformed("truncated range list".to_string()));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, e) = (self.u64()?, self.u64()?);
            if s >= e || out.last().is_some_and(|p: &Range<u64>| p.end > s) {
                return Err(Malformed(format!("range {s}..{e} is empty, unsorted or overlapping")));
            }
            out.push(s..e);
        }
        let covered: u64 = out.iter().map(|r| r.end - r.start).sum();
        if covered > limits.max_range_bytes {
            return Err(Malformed(format!(
                "ranges cover {covered} bytes, over the limit of {} a request (ask in several)",
                limits.max_range_bytes
            )));
        }
        Ok(out)
    }
}

fn put_ranges(v: &mut Vec<u8>, ranges: &[Range<u64>]) {
    v.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
    for r in ranges {
        v.extend_from_slice(&r.start.to_be_bytes());
        v.extend_from_slice(&r.end.to_be_bytes());
    }
}

impl Request {
    /// The body bytes (without the frame length).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Request::Put { cid, expiry, pinned, bytes } => {
                v.reserve(64 + bytes.len());
                v.push(1);
                v.extend_from_slice(&cid.to_bytes());
                v.extend_from_slice(&expiry.unwrap_or(u64::MAX).to_be_bytes());
                v.push(u8::from(*pinned));
                v.extend_from_slice(bytes);
            }
            Request::Get { cid } => {
                v.push(2);
                v.extend_from_slice(&cid.to_bytes());
            }
            Request::Ranges { cid, ranges } => {
                v.push(3);
                v.extend_from_slice(&cid.to_bytes());
                put_ranges(&mut v, ranges);
            }
            Request::HasMany { cids } => {
                v.push(4);
                v.extend_from_slice(&(cids.len() as u16).to_be_bytes());
                for c in cids {
                    v.extend_from_slice(&c.to_bytes());
                }
            }
            Request::Delete { cid } => {
                v.push(5);
                v.extend_from_slice(&cid.to_bytes());
            }
            Request::Audit { cid, ranges } => {
                v.push(6);
                v.extend_from_slice(&cid.to_bytes());
                put_ranges(&mut v, ranges);
            }
            Request::Usage => v.push(7),
            Request::Status => v.push(8),
            Request::Renew { cid, expiry } => {
                v.push(9);
                v.extend_from_slice(&cid.to_bytes());
                v.extend_from_slice(&expiry.to_be_bytes());
            }
            Request::DeleteAcked { cid } => {
                v.push(10);
                v.extend_from_slice(&cid.to_bytes());
            }
            Request::Direct { connections } => v.extend_from_slice(&[11, *connections]),
        }
        v
    }

    /// Parse a body from an untrusted peer.
    pub fn decode(b: &[u8], limits: &Limits) -> Result<Request, Malformed> {
        let mut c = Cursor { b };
        let r = match c.u8()? {
            1 => {
                let cid = c.cid()?;
                let expiry = c.u64()?;
                let pinned = c.flag()?;
                let bytes = c.rest().to_vec();
                Request::Put { cid, expiry: (expiry != u64::MAX).then_some(expiry), pinned, bytes }
            }
            2 => Request::Get { cid: c.cid()? },
            3 => Request::Ranges { cid: c.cid()?, ranges: c.ranges(limits)? },
            4 => {
                let n = usize::from(c.u16()?);
                if n > limits.max_cids || c.b.len() != n * 36 {
                    return Err(Malformed(format!("has-many of {n} CIDs does not fit")));
                }
                let cids = (0..n).map(|_| c.cid()).collect::<Result<_, _>>()?;
                Request::HasMany { cids }
            }
            5 => Request::Delete { cid: c.cid()? },
            6 => Request::Audit { cid: c.cid()?, ranges: c.ranges(limits)? },
            7 => Request::Usage,
            8 => Request::Status,
            9 => Request::Renew { cid: c.cid()?, expiry: c.u64()? },
            10 => Request::DeleteAcked { cid: c.cid()? },
            11 => match c.u8()? {
                n @ 1..=direct::MAX_TICKETS => Request::Direct { connections: n },
                n => return Err(Malformed(format!("{n} direct connections asked (1..={})", direct::MAX_TICKETS))),
            },
            t => return Err(Malformed(format!("unknown request type {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

/// The head of a put on `/ionshard/put/1`: what is coming, before it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutHead {
    /// The shard's CID.
    pub cid: Cid,
    /// Keep until (seconds since the epoch).
    pub expiry: Option<u64>,
    /// Never expire.
    pub pinned: bool,
    /// The shard's length: exactly this many bytes follow a `Go`.
    pub size: u64,
}

impl PutHead {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(53);
        v.extend_from_slice(&self.cid.to_bytes());
        v.extend_from_slice(&self.expiry.unwrap_or(u64::MAX).to_be_bytes());
        v.push(u8::from(self.pinned));
        v.extend_from_slice(&self.size.to_be_bytes());
        v
    }

    /// Parse a frame body from an untrusted peer.
    pub fn decode(b: &[u8]) -> Result<PutHead, Malformed> {
        let mut c = Cursor { b };
        let cid = c.cid()?;
        let expiry = c.u64()?;
        let pinned = c.flag()?;
        let size = c.u64()?;
        c.end()?;
        Ok(PutHead { cid, expiry: (expiry != u64::MAX).then_some(expiry), pinned, size })
    }
}

/// The head of a get on `/ionshard/get/1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetHead {
    /// Which shard.
    pub cid: Cid,
}

impl GetHead {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        self.cid.to_bytes()
    }

    /// Parse a frame body from an untrusted peer.
    pub fn decode(b: &[u8]) -> Result<GetHead, Malformed> {
        let mut c = Cursor { b };
        let cid = c.cid()?;
        c.end()?;
        Ok(GetHead { cid })
    }
}

/// The answer to a put or get head: go on, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Send the body (put) or read it (get): `size` bytes.
    Go {
        /// Bytes that follow.
        size: u64,
    },
    /// Refused before any body moved.
    Refused {
        /// Why, for programs.
        code: Code,
        /// Why, for people.
        message: String,
    },
}

impl Ready {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Ready::Go { size } => {
                let mut v = vec![0];
                v.extend_from_slice(&size.to_be_bytes());
                v
            }
            Ready::Refused { code, message } => {
                let mut v = vec![255];
                v.extend_from_slice(&(*code as u16).to_be_bytes());
                // The frame stays within MAX_HEAD.
                let m: String = message.chars().take(256).collect();
                v.extend_from_slice(m.as_bytes());
                v
            }
        }
    }

    /// Parse a frame body from an untrusted peer.
    pub fn decode(b: &[u8]) -> Result<Ready, Malformed> {
        let mut c = Cursor { b };
        let r = match c.u8()? {
            0 => Ready::Go { size: c.u64()? },
            255 => {
                let code = Code::from_u16(c.u16()?);
                let message = String::from_utf8_lossy(c.rest()).chars().take(1000).collect();
                Ready::Refused { code, message }
            }
            t => return Err(Malformed(format!("unknown ready type {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

fn encode_receipt(v: &mut Vec<u8>, r: &Receipt) {
    v.extend_from_slice(&r.body_bytes());
    v.extend_from_slice(&(r.signature.len() as u16).to_be_bytes());
    v.extend_from_slice(&r.signature);
}

fn decode_receipt(c: &mut Cursor<'_>) -> Result<Receipt, Malformed> {
    let n = usize::from(c.u8()?);
    let peer = PeerId::from_bytes(c.take(n)?).map_err(|e| Malformed(format!("peer id: {e}")))?;
    let cid = c.cid()?;
    let size = c.u64()?;
    let stored_at = c.u64()?;
    let expiry = c.u64()?;
    let n = usize::from(c.u16()?);
    let signature = c.take(n)?.to_vec();
    Ok(Receipt { peer, cid, size, stored_at, expiry: (expiry != u64::MAX).then_some(expiry), signature })
}

impl Receipt {
    /// The receipt as bytes (the wire layout), to keep for the ledger.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        encode_receipt(&mut v, self);
        v
    }

    /// Parse receipt bytes (the signature is not checked here: call `verify`).
    pub fn from_bytes(b: &[u8]) -> Result<Receipt, Malformed> {
        let mut c = Cursor { b };
        let r = decode_receipt(&mut c)?;
        c.end()?;
        Ok(r)
    }
}

impl Response {
    /// The body bytes (without the frame length).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Response::Stored(r) => {
                v.push(1);
                encode_receipt(&mut v, r);
            }
            Response::Data(b) => {
                v.reserve(1 + b.len());
                v.push(2);
                v.extend_from_slice(b);
            }
            Response::Proof(b) => {
                v.reserve(1 + b.len());
                v.push(3);
                v.extend_from_slice(b);
            }
            Response::Have(flags) => {
                v.push(4);
                v.extend_from_slice(&(flags.len() as u16).to_be_bytes());
                let mut bits = vec![0u8; flags.len().div_ceil(8)];
                for (i, f) in flags.iter().enumerate() {
                    if *f {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                v.extend_from_slice(&bits);
            }
            Response::Deleted(existed) => {
                v.push(5);
                v.push(u8::from(*existed));
            }
            Response::Audited { size, proof } => {
                v.push(6);
                v.extend_from_slice(&size.to_be_bytes());
                v.extend_from_slice(proof);
            }
            Response::Usage { shards, bytes, capacity } => {
                v.push(7);
                for n in [shards, bytes, capacity] {
                    v.extend_from_slice(&n.to_be_bytes());
                }
            }
            Response::Status { shards, bytes, capacity, retiring } => {
                v.push(8);
                for n in [shards, bytes, capacity] {
                    v.extend_from_slice(&n.to_be_bytes());
                }
                v.push(u8::from(*retiring));
            }
            Response::DeleteAck(a) => {
                v.push(9);
                v.extend_from_slice(&a.to_bytes());
            }
            Response::Direct { port, secret, tickets } => {
                v.push(10);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(secret);
                v.push(tickets.len() as u8);
                for t in tickets {
                    v.extend_from_slice(t);
                }
            }
            Response::Error { code, message } => {
                v.push(255);
                v.extend_from_slice(&(*code as u16).to_be_bytes());
                v.extend_from_slice(message.as_bytes());
            }
        }
        v
    }

    /// Parse a body from an untrusted peer.
    pub fn decode(b: &[u8], limits: &Limits) -> Result<Response, Malformed> {
        let mut c = Cursor { b };
        let r = match c.u8()? {
            1 => Response::Stored(decode_receipt(&mut c)?),
            2 => Response::Data(c.rest().to_vec()),
            3 => Response::Proof(c.rest().to_vec()),
            4 => {
                let n = usize::from(c.u16()?);
                if n > limits.max_cids {
                    return Err(Malformed(format!("{n} flags is over the limit")));
                }
                let bits = c.take(n.div_ceil(8))?;
                if n % 8 != 0 && bits.last().is_some_and(|b| b >> (n % 8) != 0) {
                    return Err(Malformed("has-many answer with bits set past its count".to_string()));
                }
                Response::Have((0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
            }
            5 => Response::Deleted(c.flag()?),
            6 => Response::Audited { size: c.u64()?, proof: c.rest().to_vec() },
            7 => Response::Usage { shards: c.u64()?, bytes: c.u64()?, capacity: c.u64()? },
            8 => Response::Status { shards: c.u64()?, bytes: c.u64()?, capacity: c.u64()?, retiring: c.u8()? & 1 == 1 },
            9 => Response::DeleteAck(DeleteAck::from_bytes(c.rest())?),
            10 => {
                let port = c.u16()?;
                let secret: [u8; 32] = c.take(32)?.try_into().map_err(|_| Malformed("secret".into()))?;
                let n = c.u8()?;
                if n == 0 || n > direct::MAX_TICKETS {
                    return Err(Malformed(format!("{n} direct tickets (1..={})", direct::MAX_TICKETS)));
                }
                let tickets =
                    (0..n)
                        .map(|_| c.take(16).map(|t| t.try_into().expect("16 bytes")))
                        .collect::<Result<Vec<[u8; 16]>, _>>()?;
                Response::Direct { port, secret, tickets }
            }
            255 => {
                let code = Code::from_u16(c.u16()?);
                let message = String::from_utf8_lossy(c.rest()).chars().take(1000).collect();
                Response::Error { code, message }
            }
            t => return Err(Malformed(format!("unknown response type {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn cid(n: u8) -> Cid {
        Cid::of_raw(&[n])
    }

    #[test]
    fn every_message_round_trips() {
        let l = Limits::default();
        let reqs = vec![
            Request::Put { cid: cid(1), expiry: Some(9), pinned: true, bytes: vec![1, 2, 3] },
            Request::Put { cid: cid(1), expiry: None, pinned: false, bytes: vec![] },
            Request::Get { cid: cid(2) },
            Request::Ranges { cid: cid(3), ranges: vec![0..10, 20..4096] },
            Request::HasMany { cids: vec![cid(4), cid(5)] },
            Request::Usage,
            Request::Status,
            Request::Renew { cid: cid(8), expiry: 1_900_000_000 },
            Request::Delete { cid: cid(6) },
            Request::DeleteAcked { cid: cid(6) },
            Request::Direct { connections: 4 },
            Request::Audit { cid: cid(7), ranges: vec![5..6] },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode(), &l).expect("decode"), r);
        }
        let key = Keypair::generate_ed25519();
        let receipt = Receipt::sign(&key, cid(1), 3, 100, Some(200)).expect("sign");
        let resps = vec![
            Response::Stored(receipt),
            Response::Data(vec![9; 100]),
            Response::Proof(vec![8; 10]),
            Response::Have(vec![true, false, true, true, false, false, false, false, true]),
            Response::Deleted(true),
            Response::DeleteAck(DeleteAck::sign(&key, cid(6), true, 1_900_000_000).expect("sign")),
            Response::Audited { size: 77, proof: vec![1] },
            Response::Usage { shards: 1, bytes: 2, capacity: 3 },
            Response::Status { shards: 1, bytes: 2, capacity: 3, retiring: true },
            Response::Direct { port: 4001, secret: [3; 32], tickets: vec![[1; 16], [2; 16]] },
            Response::Error { code: Code::QuotaExceeded, message: "full".to_string() },
        ];
        for r in resps {
            assert_eq!(Response::decode(&r.encode(), &l).expect("decode"), r);
        }
    }

    #[test]
    fn the_renew_messages_bytes_are_fixed() {
        // A vector: these bytes are the format (new in this release).
        let r = Request::Renew { cid: cid(8), expiry: 0x0102_0304 };
        assert_eq!(r.encode(), [[9].as_slice(), &cid(8).to_bytes(), &0x0102_0304u64.to_be_bytes()].concat());
        let short = &r.encode()[..r.encode().len() - 1];
        assert!(Request::decode(short, &Limits::default()).is_err(), "a short renew is refused");
    }

    #[test]
    fn the_delete_ack_messages_bytes_are_fixed() {
        // A vector: these bytes are the format (new in this release).
        assert_eq!(Request::DeleteAcked { cid: cid(6) }.encode(), [[10].as_slice(), &cid(6).to_bytes()].concat());
        let key = Keypair::ed25519_from_bytes([7; 32]).expect("key");
        let peer = key.public().to_peer_id();
        let ack = DeleteAck::sign(&key, cid(6), true, 0x0102).expect("sign");
        let body = [
            [peer.to_bytes().len() as u8].as_slice(),
            &peer.to_bytes(),
            &cid(6).to_bytes(),
            &[1],
            &0x0102u64.to_be_bytes(),
        ]
        .concat();
        let signed = [b"ionshard delete ack v1".as_slice(), &body].concat();
        assert!(key.public().verify(&signed, &ack.signature), "the signature covers the domain and the fields");
        let want = [[9].as_slice(), &body, &(ack.signature.len() as u16).to_be_bytes(), &ack.signature].concat();
        assert_eq!(Response::DeleteAck(ack.clone()).encode(), want);
        assert_eq!(Response::decode(&want, &Limits::default()).expect("decode"), Response::DeleteAck(ack));
        assert!(Response::decode(&want[..want.len() - 1], &Limits::default()).is_err());
    }

    #[test]
    fn the_direct_messages_bytes_are_fixed() {
        // A vector: these bytes are the format (new in this release).
        let l = Limits::default();
        assert_eq!(Request::Direct { connections: 3 }.encode(), [11, 3]);
        for bad in [[11u8, 0], [11, direct::MAX_TICKETS + 1]] {
            assert!(Request::decode(&bad, &l).is_err(), "{bad:?}");
        }
        let r = Response::Direct { port: 0x0102, secret: [7; 32], tickets: vec![[9; 16]] };
        let want = [[10u8, 1, 2].as_slice(), &[7; 32], &[1], &[9; 16]].concat();
        assert_eq!(r.encode(), want);
        assert_eq!(Response::decode(&want, &l).expect("decode"), r);
        for cut in 0..want.len() {
            assert!(Response::decode(&want[..cut], &l).is_err(), "cut at {cut}");
        }
        let none = [[10u8, 1, 2].as_slice(), &[7; 32], &[0]].concat();
        assert!(Response::decode(&none, &l).is_err(), "no ticket");
    }

    #[test]
    fn the_status_messages_bytes_are_fixed() {
        // A vector: these bytes are the format (new in this release).
        assert_eq!(Request::Status.encode(), [8]);
        let r = Response::Status { shards: 2, bytes: 0x0102, capacity: 1 << 40, retiring: true };
        let want =
            [[8].as_slice(), &2u64.to_be_bytes(), &0x0102u64.to_be_bytes(), &(1u64 << 40).to_be_bytes(), &[1]].concat();
        assert_eq!(r.encode(), want);
        // Reserved flag bits are ignored; a missing flags byte is refused.
        let mut later = want.clone();
        later[25] = 0b1000_0001;
        assert_eq!(Response::decode(&later, &Limits::default()).expect("decode"), r);
        assert!(Response::decode(&want[..25], &Limits::default()).is_err());
    }

    #[test]
    fn stream_heads_round_trip_and_refuse_garbage() {
        let heads = [
            PutHead { cid: cid(1), expiry: Some(5), pinned: false, size: 60 << 20 },
            PutHead { cid: cid(2), expiry: None, pinned: true, size: 0 },
        ];
        for h in heads {
            let b = h.encode();
            assert!(b.len() <= MAX_HEAD);
            assert_eq!(PutHead::decode(&b).expect("decode"), h);
            for cut in 0..b.len() {
                assert!(PutHead::decode(&b[..cut]).is_err(), "cut at {cut}");
            }
        }
        let g = GetHead { cid: cid(3) };
        assert_eq!(GetHead::decode(&g.encode()).expect("decode"), g);
        assert!(GetHead::decode(&[g.encode(), vec![0]].concat()).is_err());
        for r in [Ready::Go { size: 7 }, Ready::Refused { code: Code::Untrusted, message: "no".into() }] {
            assert_eq!(Ready::decode(&r.encode()).expect("decode"), r);
        }
        let long = Ready::Refused { code: Code::Busy, message: "x".repeat(5000) }.encode();
        assert!(long.len() <= MAX_HEAD, "{}", long.len());
        assert!(Ready::decode(&[9]).is_err());
    }

    #[test]
    fn a_range_request_over_the_byte_limit_is_refused() {
        let l = Limits::default();
        let big = Request::Ranges { cid: cid(3), ranges: vec![0..(l.max_range_bytes + 1)] }.encode();
        assert!(Request::decode(&big, &l).is_err());
        let ok = Request::Ranges { cid: cid(3), ranges: vec![0..l.max_range_bytes] }.encode();
        assert!(Request::decode(&ok, &l).is_ok());
    }

    #[test]
    fn malformed_and_truncated_messages_are_refused() {
        let l = Limits::default();
        let good = Request::Ranges { cid: cid(3), ranges: vec![0..10, 20..30] }.encode();
        for cut in 0..good.len() {
            assert!(Request::decode(&good[..cut], &l).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Request::decode(&trailing, &l).is_err());
        let overlapping = Request::Ranges { cid: cid(3), ranges: vec![0..10, 5..30] }.encode();
        assert!(Request::decode(&overlapping, &l).is_err());
        assert!(Request::decode(&[42], &l).is_err());
        // A has-many claiming 65535 CIDs in a few bytes is refused before allocating.
        assert!(Request::decode(&[4, 0xff, 0xff, 1, 2, 3], &l).is_err());
    }
}
