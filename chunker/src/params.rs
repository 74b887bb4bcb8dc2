//! Encoding parameters: chunk sizes, compression, erasure coding, segment size.

use crate::error::{Error, Result};
use crate::seal::STORED_OVERHEAD;

/// Content-defined chunking sizes (FastCDC 2020, normalisation level 1).
///
/// The chunk is the unit of dedup and delta: smaller chunks find more of an
/// old version inside a new one, at the cost of a larger manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Smallest chunk, except the last one of an object.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for Chunking {
    /// 32 KiB average (8 KiB min, 128 KiB max): chosen by measurement, see
    /// `benches/README.md` ("chunk size").
    fn default() -> Self {
        Chunking { min: 8 * 1024, avg: 32 * 1024, max: 128 * 1024 }
    }
}

impl Chunking {
    /// Chunking around an average size, with min = avg/4 and max = avg*4.
    pub fn with_avg(avg: u32) -> Self {
        Chunking { min: (avg / 4) & !1, avg, max: avg.saturating_mul(4) }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let Chunking { min, avg, max } = *self;
        let bad = |msg: String| Err(Error::InvalidParams(msg));
        if !(64..=1 << 20).contains(&min) {
            return bad(format!("minimum chunk size {min} must be between 64 B and 1 MiB"));
        }
        if !(256..=4 << 20).contains(&avg) {
            return bad(format!("average chunk size {avg} must be between 256 B and 4 MiB"));
        }
        if !(1024..=4 << 20).contains(&max) {
            return bad(format!("maximum chunk size {max} must be between 1 KiB and 4 MiB"));
        }
        if !(min <= avg && avg <= max) {
            return bad(format!("chunk sizes must satisfy min <= avg <= max (got {min} / {avg} / {max})"));
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return bad(format!("chunk sizes must be even (got {min} / {avg} / {max})"));
        }
        Ok(())
    }
}

/// Systematic Reed-Solomon parameters: `data` shards carry the segment as is,
/// `parity` shards let any `data` of the `data + parity` rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coding {
    /// k: data shards per segment (at least 1).
    pub data: u8,
    /// m: parity shards per segment (0 means no redundancy).
    pub parity: u8,
}

impl Default for Coding {
    /// 10 + 4: any 4 of 14 peers may be lost.
    fn default() -> Self {
        Coding { data: 10, parity: 4 }
    }
}

impl Coding {
    /// k + m.
    pub fn total(&self) -> usize {
        usize::from(self.data) + usize::from(self.parity)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.data == 0 {
            return Err(Error::InvalidParams("data shards (k) must be at least 1".to_string()));
        }
        if self.total() > 255 {
            return Err(Error::InvalidParams(format!(
                "data + parity shards must be at most 255 (got {} + {})",
                self.data, self.parity
            )));
        }
        Ok(())
    }
}

/// Everything an encoder needs besides the input and the tenant secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Chunk sizes.
    pub chunking: Chunking,
    /// Erasure coding.
    pub coding: Coding,
    /// Target segment size in bytes (stored chunks packed per segment).
    pub segment_size: u32,
    /// zstd level tried on each chunk; 0 turns compression off. At the
    /// default or below, a chunk that barely compresses gets level 1.
    pub zstd_level: i32,
}

impl Default for Params {
    fn default() -> Self {
        Params { chunking: Chunking::default(), coding: Coding::default(), segment_size: 8 << 20, zstd_level: 3 }
    }
}

impl Params {
    /// Replace the chunk sizes.
    pub fn with_chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Replace k and m.
    pub fn with_coding(mut self, data: u8, parity: u8) -> Self {
        self.coding = Coding { data, parity };
        self
    }

    /// Replace the segment size.
    pub fn with_segment_size(mut self, bytes: u32) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Replace the zstd level (0 = no compression).
    pub fn with_zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// Check that these parameters can encode anything.
    pub fn validate(&self) -> Result<()> {
        self.chunking.validate()?;
        self.coding.validate()?;
        let min_segment = self.chunking.max as u64 + STORED_OVERHEAD as u64 + 64;
        if u64::from(self.segment_size) < min_segment {
            return Err(Error::InvalidParams(format!(
                "segment size {} must hold the largest chunk: at least {min_segment}",
                self.segment_size
            )));
        }
        if self.segment_size > 1 << 30 {
            return Err(Error::InvalidParams(format!("segment size {} exceeds 1 GiB", self.segment_size)));
        }
        if !(0..=19).contains(&self.zstd_level) {
            return Err(Error::InvalidParams(format!("zstd level {} must be between 0 (off) and 19", self.zstd_level)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Params::default().validate().expect("default params");
    }

    #[test]
    fn bad_coding_is_refused() {
        assert!(Params::default().with_coding(0, 4).validate().is_err());
        assert!(Params::default().with_coding(200, 56).validate().is_err());
        Params::default().with_coding(200, 55).validate().expect("255 ok");
        Params::default().with_coding(1, 0).validate().expect("1+0 ok");
    }

    #[test]
    fn bad_chunking_is_refused() {
        let p = Params::default().with_chunking(Chunking { min: 64 * 1024, avg: 32 * 1024, max: 128 * 1024 });
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("min <= avg <= max"), "{err}");
        let p = Params::default().with_segment_size(4096);
        assert!(p.validate().is_err());
    }
}
