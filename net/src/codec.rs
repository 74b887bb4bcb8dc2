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
}

pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit of {max}"),
        ));
    }
    // Grown as bytes arrive, so a lying length costs the liar the bytes it
    // sends; never past the length (read_to_end would double a full buffer).
    let mut buf: Vec<u8> = Vec::with_capacity(len.min(1 << 20));
    let mut piece = [0u8; 64 << 10];
    while buf.len() < len {
        let want = piece.len().min(len - buf.len());
        let n = io.read(&mut piece[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated frame"));
        }
        if buf.len() + n > buf.capacity() {
            let grow = buf.capacity().max(64 << 10).min(len - buf.len());
            buf.reserve_exact(grow);
        }
        buf.extend_from_slice(&piece[..n]);
    }
    Ok(buf)
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
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
        let body = read_frame(io, self.limits.max_response).await?;
        Response::decode_owned(body, &self.limits).map_err(invalid)
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
        write_frame(io, &req.encode()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode()).await
    }
}
