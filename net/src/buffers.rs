//! Reused buffers for the bodies of `Data` and `Proof` answers.
//!
//! A fetcher receives an answer of a few hundred KiB to a MiB every few
//! milliseconds. Allocated fresh each time, every page of each one is
//! faulted in and zeroed by the kernel (the C allocator maps blocks this
//! large and unmaps them when freed): a quarter of a fetcher's time went
//! there. Buffers given back once their bytes are used ([`recycle`]) are
//! read into again instead. The pool is bounded in count and in the size of
//! a buffer it keeps, so it never holds more than a few windows' worth.

use std::sync::Mutex;

/// Bytes of idle buffers kept at most.
const KEEP_BYTES: usize = 16 << 20;
/// Larger buffers are freed, not kept (answers are usually under 1 MiB).
const KEEP_UP_TO: usize = 4 << 20;

/// Idle buffers and the sum of their capacities.
static POOL: Mutex<(Vec<Vec<u8>>, usize)> = Mutex::new((Vec::new(), 0));

/// A buffer to read an answer into or build one in: a recycled one (its
/// old bytes still in it, to be overwritten), or a new empty one.
pub(crate) fn take() -> Vec<u8> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    match pool.0.pop() {
        Some(b) => {
            pool.1 -= b.capacity();
            b
        }
        None => Vec::new(),
    }
}

/// Give back the buffer of an answer whose bytes are no longer needed
/// (`Response::Data` or `Response::Proof`, or what a verifier made of one),
/// to be read into again.
pub fn recycle(buf: Vec<u8>) {
    let cap = buf.capacity();
    if cap == 0 || cap > KEEP_UP_TO {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.1 + cap <= KEEP_BYTES {
        pool.1 += cap;
        pool.0.push(buf);
    }
}

/// Read exactly `len` bytes into `buf` (reusing its allocation and not
/// zeroing what it will overwrite), growing it only as bytes arrive: a peer
/// that announces a long answer and sends little costs the bytes it sent,
/// not its claim.
pub(crate) async fn read_into<T>(io: &mut T, buf: &mut Vec<u8>, len: usize) -> std::io::Result<()>
where
    T: libp2p::futures::AsyncRead + Unpin + Send,
{
    use libp2p::futures::AsyncReadExt;
    let mut filled = 0usize;
    // What is there already may be read into without growing.
    buf.truncate(len);
    while filled < len {
        if filled == buf.len() {
            let grow = buf.len().max(64 << 10).min(len - filled);
            buf.resize(filled + grow, 0);
        }
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated frame"));
        }
        filled += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives at most `piece` bytes a call, then says EOF.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl libp2p::futures::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.piece).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_reused_buffer_ends_holding_exactly_the_new_bytes() {
        let mut buf = vec![7u8; 300_000];
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        block_on(read_into(&mut Trickle { data: data.clone(), at: 0, piece: 9_999 }, &mut buf, data.len()))
            .expect("read");
        assert_eq!(buf, data);
        // Growing past what it held works too.
        let long: Vec<u8> = (0..700_000u32).map(|i| (i * 7) as u8).collect();
        block_on(read_into(&mut Trickle { data: long.clone(), at: 0, piece: 65_536 }, &mut buf, long.len()))
            .expect("read");
        assert_eq!(buf, long);
    }

    #[test]
    fn a_peer_claiming_a_long_answer_and_sending_little_costs_only_what_it_sent() {
        let mut buf = Vec::new();
        let r = block_on(read_into(&mut Trickle { data: vec![1; 1000], at: 0, piece: 1000 }, &mut buf, 60 << 20));
        assert!(r.is_err(), "a truncated answer is an error");
        assert!(buf.capacity() <= 128 << 10, "grew to {} bytes for 1000 sent", buf.capacity());
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_bytes() {
        for _ in 0..100 {
            recycle(vec![0u8; 1 << 20]);
        }
        recycle(vec![0u8; 8 << 20]);
        let held = POOL.lock().unwrap_or_else(|p| p.into_inner()).1;
        assert!(held <= KEEP_BYTES, "{held}");
        let mut taken = 0;
        while POOL.lock().unwrap_or_else(|p| p.into_inner()).1 > 0 && taken < 1000 {
            assert!(take().capacity() <= KEEP_UP_TO);
            taken += 1;
        }
    }
}
