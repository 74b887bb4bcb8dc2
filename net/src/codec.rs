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
}

impl ShardCodec {
    pub(crate) fn new(limits: Limits) -> ShardCodec {
        ShardCodec { limits, answer: None }
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
        let body = read_frame(io, self.limits.max_request).await?;
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
