//! Content-defined chunking of a stream, a buffer at a time.
//!
//! FastCDC finds cut points in a window of the input; every chunk but the
//! last in a window is final (its cut depends only on bytes before it), and
//! the last is carried over to the next window unless the input has ended.

use std::io::Read;
use std::ops::Range;

use fastcdc::v2020::FastCDC;

use crate::params::Chunking;

/// A chunking window over a reader.
pub(crate) struct ChunkStream<R> {
    reader: R,
    buf: Vec<u8>,
    filled: usize,
    eof: bool,
    chunking: Chunking,
}

impl<R: Read> ChunkStream<R> {
    /// A stream that reads `window` bytes at a time (at least 2 × max chunk).
    pub(crate) fn new(reader: R, chunking: Chunking, window: usize) -> Self {
        let window = window.max(2 * chunking.max as usize);
        ChunkStream { reader, buf: vec![0; window], filled: 0, eof: false, chunking }
    }

    /// Read more input and cut it. Returns the window and the final chunks in
    /// it (empty at the end of input). Call [`Self::consume`] with the end of
    /// the last chunk before the next call.
    pub(crate) fn next_window(&mut self) -> std::io::Result<(&[u8], Vec<Range<usize>>)> {
        while !self.eof && self.filled < self.buf.len() {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let data = &self.buf[..self.filled];
        let Chunking { min, avg, max } = self.chunking;
        let mut chunks: Vec<Range<usize>> = FastCDC::new(data, min as usize, avg as usize, max as usize)
            .map(|c| c.offset..c.offset + c.length)
            .collect();
        if !self.eof {
            // The window is at least two maximal chunks, so one is final.
            chunks.pop();
        }
        Ok((data, chunks))
    }

    /// Drop the first `upto` bytes of the window (the chunks just handled).
    pub(crate) fn consume(&mut self, upto: usize) {
        self.buf.copy_within(upto..self.filled, 0);
        self.filled -= upto;
    }
}

/// One window of input, cut: `buf[..len]` holds the bytes, `chunks` the final
/// chunks in it, which end at `end`; `buf[end..len]` carries over.
pub(crate) struct Window {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
    pub(crate) end: usize,
    pub(crate) chunks: Vec<Range<usize>>,
}

impl Window {
    /// Fill `buf` with `carry` then input until full or the input ends, and cut it.
    pub(crate) fn fill(
        reader: &mut impl Read,
        mut buf: Vec<u8>,
        carry: &[u8],
        chunking: Chunking,
    ) -> std::io::Result<Window> {
        let cap = buf.len().max(2 * chunking.max as usize);
        buf.resize(cap, 0);
        buf[..carry.len()].copy_from_slice(carry);
        let mut len = carry.len();
        let mut eof = false;
        while len < cap {
            match reader.read(&mut buf[len..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let Chunking { min, avg, max } = chunking;
        let mut chunks: Vec<Range<usize>> = FastCDC::new(&buf[..len], min as usize, avg as usize, max as usize)
            .map(|c| c.offset..c.offset + c.length)
            .collect();
        if !eof {
            // The window holds at least two maximal chunks, so one is final.
            chunks.pop();
        }
        let end = chunks.last().map_or(0, |c| c.end);
        Ok(Window { buf, len, end, chunks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_do_not_move_cut_points() {
        let mut data = vec![0u8; 3_000_000];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let chunking = Chunking::with_avg(16 * 1024);
        let whole: Vec<usize> = FastCDC::new(&data, 4096, 16384, 65536).map(|c| c.length).collect();
        for window in [128 * 1024, 300_000, 4 << 20] {
            let mut s = ChunkStream::new(&data[..], chunking, window);
            let mut lens = Vec::new();
            loop {
                let (_, chunks) = s.next_window().expect("read");
                if chunks.is_empty() {
                    break;
                }
                let end = chunks.last().map_or(0, |c| c.end);
                lens.extend(chunks.iter().map(|c| c.len()));
                s.consume(end);
            }
            assert_eq!(lens, whole, "window {window}");
            let mut w = Window::fill(&mut &data[..], vec![0; window], &[], chunking).expect("fill");
            let mut reader = &data[w.len..];
            let mut lens = Vec::new();
            while !w.chunks.is_empty() {
                lens.extend(w.chunks.iter().map(|c| c.len()));
                let carry = w.buf[w.end..w.len].to_vec();
                w = Window::fill(&mut reader, vec![0; window], &carry, chunking).expect("fill");
            }
            assert_eq!(lens, whole, "double-buffered window {window}");
        }
    }
}
