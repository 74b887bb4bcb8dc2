//! Reading and writing the drive's binary messages (integers big-endian,
//! fields length-prefixed), never past their bounds.

/// A message (of the mailbox or of the drive protocol) that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct Malformed(pub String);

pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let (h, t) = self.0.split_at_checked(n).ok_or_else(|| Malformed("truncated".into()))?;
        self.0 = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Malformed> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn short(&mut self, max: usize) -> Result<Vec<u8>, Malformed> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(Malformed(format!("{n} bytes, at most {max}")));
        }
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn long(&mut self, max: usize) -> Result<Vec<u8>, Malformed> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(Malformed(format!("{n} bytes, at most {max}")));
        }
        Ok(self.take(n)?.to_vec())
    }
    /// A length-prefixed (u32) field of at most `max` bytes.
    pub(crate) fn big(&mut self, max: usize) -> Result<Vec<u8>, Malformed> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Malformed(format!("{n} bytes, at most {max}")));
        }
        Ok(self.take(n)?.to_vec())
    }
    /// `N` bytes as they are.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() { Ok(()) } else { Err(Malformed(format!("{} trailing bytes", self.0.len()))) }
    }
}

pub(crate) fn put_short(v: &mut Vec<u8>, b: &[u8]) {
    v.push(b.len().min(255) as u8);
    v.extend_from_slice(&b[..b.len().min(255)]);
}

pub(crate) fn put_long(v: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    v.extend_from_slice(&(n as u16).to_be_bytes());
    v.extend_from_slice(&b[..n]);
}

/// A length-prefixed (u32) field.
pub(crate) fn put_big(v: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u32::MAX as usize);
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v.extend_from_slice(&b[..n]);
}
