//! Framing of the shard protocol on libp2p streams (see [`crate::wire`]).

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{Limits, Malformed, Request, Response};

/// The shard protocol's id.
pub(crate) const SHARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ionshard/shard/1");

/// Reads and writes length-prefixed frames, refusing any longer than the limits.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardCodec {
    pub(crate) limits: Limits,
    /// The longest answer the request this codec wrote may get (libp2p
    /// writes a request and reads its answer with one codec).
    answer: Option<usize>,
    /// Room for the long requests this node is receiving, shared by every
    /// connection.
    room: RequestRoom,
}

impl ShardCodec {
    pub(crate) fn new(limits: Limits, room: RequestRoom) -> ShardCodec {
        ShardCodec { limits, answer: None, room }
    }
}

/// Bytes of long requests a node may be receiving at once, from every
/// peer on every connection. Short requests (up to [`SHORT_REQUEST`]:
/// range requests, has, status, audits) are read at once, so no one can
/// hold them up: 1,024 connections of 32 streams hold 128 MiB of them at
/// most. A longer body (a has-many, up to 256 KiB) is read only once there
/// is room for the length its head gives, and must then arrive within
/// [`RequestRoom::deadline`]: without the room, 1,024 connections of 32
/// streams could make a node hold 256 KiB each, 8 GiB, sent as slowly as
/// the sender likes. A long request that finds no room within the wait is
/// dropped (its stream ends; an honest client asks again or elsewhere):
/// a peer filling the room delays others' long requests, never their
/// range requests, and only for as long as its own bodies may take.
#[derive(Debug, Clone)]
pub(crate) struct RequestRoom {
    units: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

/// Requests this long or shorter are read without room.
pub(crate) const SHORT_REQUEST: usize = 4 << 10;
/// A node's room for long requests being received: 128 of the longest.
pub(crate) const REQUEST_ROOM: usize = 32 << 20;
/// How long a long request waits for room before it is dropped.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Default for RequestRoom {
    fn default() -> Self {
        RequestRoom::new(REQUEST_ROOM, ROOM_WAIT)
    }
}

impl RequestRoom {
    pub(crate) fn new(bytes: usize, wait: std::time::Duration) -> Self {
        RequestRoom { units: std::sync::Arc::new(tokio::sync::Semaphore::new(bytes.div_ceil(1024))), wait }
    }

    /// How long a body of `len` bytes may take to arrive once it has room:
    /// 5 s, and a second more for every 64 KiB (9 s for 256 KiB).
    pub(crate) fn deadline(len: usize) -> std::time::Duration {
        std::time::Duration::from_secs(5 + (len as u64 >> 16))
    }

    /// Room for a body of `len` bytes, held until the permit is dropped.
    pub(crate) async fn take(&self, len: usize) -> io::Result<tokio::sync::OwnedSemaphorePermit> {
        let units = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("no room for a request of {len} bytes: too many requests arriving at once"),
            )),
        }
    }
}

/// Room for an error answer (its code and message), or an audit's head.
const ERROR_ROOM: usize = 4096;

/// The longest answer `request` may get. A range request's proof is bounded
/// by its ranges (at the largest shard's depth), so a peer cannot make a
/// fetcher hold 64 MiB for each of its few-hundred-KiB requests in flight
/// (nor an auditor for each shard it audits); anything else may be a whole
/// shard.
pub(crate) fn answer_limit(request: &Request, limits: &Limits) -> usize {
    match request {
        // An audit's answer is its proof behind the shard's size.
        Request::Ranges { ranges, .. } | Request::Audit { ranges, .. } => {
            let proof = chunker::proof::max_proof_len(limits.max_shard, ranges);
            let proof = usize::try_from(proof).unwrap_or(usize::MAX);
            proof.saturating_add(ERROR_ROOM).min(limits.max_response)
        }
        _ => limits.max_response,
    }
}

/// A frame's length, refused if over `max`.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit of {max}"),
        ));
    }
    Ok(len)
}

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let len = read_len(io, max).await?;
    // Grown as bytes arrive, so a lying length costs the liar the bytes it
    // sends; never past the length (read_to_end would double a full buffer).
    let mut buf = Vec::new();
    crate::buffers::read_into(io, &mut buf, len).await?;
    Ok(buf)
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    write_parts(io, &[], data).await
}

/// One frame whose body is `head` then `body`, without joining them first.
async fn write_parts<T: AsyncWrite + Unpin + Send>(io: &mut T, head: &[u8], body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(head.len() + body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    let mut start = [0u8; 8];
    start[..4].copy_from_slice(&len.to_be_bytes());
    let n = head.len().min(4);
    start[4..4 + n].copy_from_slice(&head[..n]);
    io.write_all(&start[..4 + n]).await?;
    io.write_all(&head[n..]).await?;
    io.write_all(body).await?;
    io.flush().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    /// A request that frames correctly but does not parse is still read,
    /// so the node can answer `BadRequest` with the reason instead of
    /// dropping the stream.
    type Request = Result<Request, Malformed>;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Result<Request, Malformed>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io, self.limits.max_request).await?;
        let mut body = Vec::new();
        if len <= SHORT_REQUEST {
            crate::buffers::read_into(io, &mut body, len).await?;
            return Ok(Request::decode(&body, &self.limits));
        }
        let _room = self.room.take(len).await?;
        tokio::time::timeout(RequestRoom::deadline(len), crate::buffers::read_into(io, &mut body, len))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, format!("a request of {len} bytes came too slowly"))
            })??;
        Ok(Request::decode(&body, &self.limits))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io, self.answer.unwrap_or(self.limits.max_response)).await?;
        let mut kind = [0u8; 1];
        if len > 0 {
            io.read_exact(&mut kind).await?;
        }
        // Data and proofs (the bulk of what a fetcher receives) go straight
        // into a reused buffer, with no copy after.
        let bulk = |buf| match kind[0] {
            2 => Some(Response::Data(buf)),
            3 => Some(Response::Proof(buf)),
            _ => None,
        };
        if len > 0 && matches!(kind[0], 2 | 3) {
            let mut buf = crate::buffers::take();
            crate::buffers::read_into(io, &mut buf, len - 1).await?;
            return bulk(buf).ok_or_else(|| invalid("unreachable answer type"));
        }
        // Anything else is small; its buffer grows as it arrives.
        let mut body = Vec::new();
        crate::buffers::read_into(io, &mut body, len.saturating_sub(1)).await?;
        body.splice(0..0, kind[..len.min(1)].iter().copied());
        Response::decode(&body, &self.limits).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Result<Request, Malformed>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = req.map_err(invalid)?;
        self.answer = Some(answer_limit(&req, &self.limits));
        write_frame(io, &req.encode()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        // Data and proofs are sent from their own buffer (not copied into
        // a second one behind the type byte).
        let (kind, b) = match res {
            Response::Data(b) => (2, b),
            Response::Proof(b) => (3, b),
            other => return write_frame(io, &other.encode()).await,
        };
        let sent = write_parts(io, &[kind], &b).await;
        crate::buffers::recycle(b);
        sent
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use libp2p::request_response::Codec;

    use super::*;

    /// A request's head and then nothing: a sender stalling on purpose.
    struct Stalled {
        head: [u8; 4],
        at: usize,
    }

    impl AsyncRead for Stalled {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            if self.at == self.head.len() {
                return Poll::Pending;
            }
            let n = (self.head.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    #[tokio::test]
    async fn requests_sent_slowly_on_many_streams_hold_no_more_than_the_nodes_room() {
        let max = Limits::default().max_request;
        let codec = ShardCodec::new(Limits::default(), RequestRoom::new(4 * max, Duration::from_millis(200)));
        let stalled = move |len: usize| Stalled { head: (len as u32).to_be_bytes(), at: 0 };
        // Four of the longest fill the room, their bodies never coming.
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut c = codec.clone();
            held.push(tokio::spawn(async move {
                let mut s = stalled(max);
                c.read_request(&SHARD_PROTOCOL, &mut s).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A fifth is turned away within the wait, not read.
        let mut c = codec.clone();
        let mut s = stalled(max);
        let fifth = tokio::time::timeout(Duration::from_secs(5), c.read_request(&SHARD_PROTOCOL, &mut s)).await;
        let err = fifth.expect("turned away within the wait").expect_err("no room left");
        assert!(err.to_string().contains("no room for a request"), "{err}");
        // A short request (a range request) is read however full the room is.
        let mut short = SHORT_REQUEST.to_be_bytes()[4..].to_vec();
        short.extend(std::iter::repeat_n(0u8, SHORT_REQUEST));
        let mut whole = libp2p::futures::io::Cursor::new(short);
        let mut c = codec.clone();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_request(&SHARD_PROTOCOL, &mut whole)).await;
        assert!(read.expect("read at once").is_ok(), "a short request waits for no room");
        // One of the four gone: its room serves the next long request.
        let gone = held.pop().expect("four");
        gone.abort();
        let _ = gone.await;
        let long = SHORT_REQUEST + 1;
        let mut frame = (long as u32).to_be_bytes().to_vec();
        frame.extend(std::iter::repeat_n(0u8, long));
        let mut whole = libp2p::futures::io::Cursor::new(frame);
        let mut c = codec.clone();
        let next = tokio::time::timeout(Duration::from_secs(5), c.read_request(&SHARD_PROTOCOL, &mut whole)).await;
        assert!(next.expect("read within the wait").is_ok(), "room came back");
        for h in held {
            h.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_request_that_stalls_after_taking_room_is_cut_off() {
        let max = Limits::default().max_request;
        let mut codec = ShardCodec::new(Limits::default(), RequestRoom::new(4 * max, Duration::from_millis(200)));
        let mut s = Stalled { head: (max as u32).to_be_bytes(), at: 0 };
        let r = tokio::time::timeout(Duration::from_secs(60), codec.read_request(&SHARD_PROTOCOL, &mut s)).await;
        let err = r.expect("cut off before a minute").expect_err("too slow");
        assert!(err.to_string().contains("too slowly"), "{err}");
    }
}
