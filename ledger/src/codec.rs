//! The byte layout every ledger message uses: fixed-width big-endian
//! integers, and byte strings behind a `u32` length that is checked against
//! a bound before anything is allocated. One encoding per value (no
//! optional fields, no maps), so a hash or a signature over the bytes names
//! one message; a decoder refuses bytes left over.
//!
//! ```text
//! u8 | u32 | u64 | i64     fixed width, big-endian
//! bytes(max)              len: u32 (≤ max) | len bytes
//! list(max)               count: u32 (≤ max) | items
//! ```

use crate::error::{Error, Result};

/// Appends fields to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new() -> Self {
        Writer(Vec::with_capacity(128))
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A byte string behind its length. Callers keep `v` within the bound
    /// its decoder checks; lengths past `u32` cannot occur for our messages.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v)
    }
    pub(crate) fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads fields from untrusted bytes; every read checks what is left.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    fn bad(&self, why: impl Into<String>) -> Error {
        Error::Malformed { what: self.what, why: why.into() }
    }
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.bad(format!("truncated: {n} bytes wanted, {} left", self.buf.len())));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.raw(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A byte string of at most `max` bytes, refused before any allocation.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.bad(format!("a field of {n} bytes, at most {max} allowed")));
        }
        self.raw(n)
    }
    /// A count of at most `max` items; each item is at least one byte, so a
    /// count beyond what is left is refused too.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n > max || n > self.buf.len() {
            return Err(self.bad(format!("{n} items, at most {max} allowed")));
        }
        Ok(n)
    }
    pub(crate) fn end(self) -> Result<()> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.bad(format!("{} bytes left over", self.buf.len()))) }
    }
    pub(crate) fn malformed(&self, why: impl Into<String>) -> Error {
        self.bad(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_beyond_the_bound_is_refused_before_allocation() {
        let mut w = Writer::new();
        w.u32(1 << 30);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes, "test");
        assert!(matches!(r.bytes(1024), Err(Error::Malformed { .. })));
    }

    #[test]
    fn fields_round_trip_and_leftovers_are_refused() {
        let mut w = Writer::new();
        w.u8(7).u64(42).i64(-1).bytes(b"abc");
        let mut bytes = w.finish();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!((r.u8().ok(), r.u64().ok(), r.i64().ok()), (Some(7), Some(42), Some(-1)));
        assert_eq!(r.bytes(3).ok(), Some(&b"abc"[..]));
        assert!(r.end().is_ok());
        bytes.push(0);
        let mut r = Reader::new(&bytes, "test");
        let _ = (r.u8(), r.u64(), r.i64(), r.bytes(3));
        assert!(r.end().is_err());
    }
}
