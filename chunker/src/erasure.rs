//! Systematic Reed-Solomon over GF(2^8): k data shards, m parity shards.
//!
//! Each byte position across the n = k + m shards is its own codeword, so any
//! byte range of any shard can be rebuilt from the same range of any k others:
//! [`Coder::rebuild`] works on whole shards and on ranges alike.

use rayon::prelude::*;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{Error, Result};
use crate::params::Coding;

/// Columns encoded per parallel task: large enough to amortise the call,
/// small enough to spread a segment over all cores.
const COLUMN_BLOCK: usize = 32 * 1024;

/// An erasure coder for one (k, m).
#[derive(Debug)]
pub struct Coder {
    k: usize,
    m: usize,
    rs: Option<ReedSolomon>,
}

impl Coder {
    /// A coder for k data and m parity shards (k ≥ 1, k + m ≤ 255).
    pub fn new(data: u8, parity: u8) -> Result<Self> {
        let coding = Coding { data, parity };
        coding.validate()?;
        let (k, m) = (usize::from(data), usize::from(parity));
        let rs = if m == 0 {
            None
        } else {
            Some(ReedSolomon::new(k, m).map_err(|e| Error::InvalidParams(format!("{e:?}")))?)
        };
        Ok(Coder { k, m, rs })
    }

    /// k.
    pub fn data_shards(&self) -> usize {
        self.k
    }

    /// m.
    pub fn parity_shards(&self) -> usize {
        self.m
    }

    /// Length of each shard of a segment of `segment_len` bytes (the segment
    /// is zero-padded to k × this).
    pub fn shard_len(&self, segment_len: usize) -> usize {
        segment_len.div_ceil(self.k)
    }

    /// Compute the m parity shards from the k data shards (all of one length).
    /// Runs on all cores, a block of columns per task.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<()> {
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        self.encode_into(data, &mut outs)
    }

    /// [`Coder::encode`] into slices (parity in a buffer of its own or
    /// behind the data in the segment's).
    pub fn encode_into(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<()> {
        let Some(rs) = &self.rs else { return Ok(()) };
        let len = data.first().map_or(0, |d| d.len());
        if data.len() != self.k
            || parity.len() != self.m
            || data.iter().any(|d| d.len() != len)
            || parity.iter().any(|p| p.len() != len)
        {
            return Err(Error::InvalidParams(format!(
                "encode needs {} data and {} parity shards of one length",
                self.k, self.m
            )));
        }
        let blocks = len.div_ceil(COLUMN_BLOCK);
        let mut columns: Vec<Vec<&mut [u8]>> = (0..blocks).map(|_| Vec::with_capacity(self.m)).collect();
        for p in parity.iter_mut() {
            for (i, c) in p.chunks_mut(COLUMN_BLOCK).enumerate() {
                columns[i].push(c);
            }
        }
        columns.into_par_iter().enumerate().try_for_each(|(i, mut out)| {
            let start = i * COLUMN_BLOCK;
            let end = (start + COLUMN_BLOCK).min(len);
            let ins: Vec<&[u8]> = data.iter().map(|d| &d[start..end]).collect();
            rs.encode_sep(&ins, &mut out).map_err(|e| Error::InvalidParams(format!("reed-solomon encode: {e:?}")))
        })
    }

    /// Fill in the missing (`None`) entries of `pieces`, which holds the same
    /// byte range of each of the n shards in shard order (data first). Needs
    /// any k present, all of one length. With `data_only`, parity pieces are
    /// left missing (less work when only the data is wanted).
    pub fn rebuild(&self, pieces: &mut [Option<Vec<u8>>], data_only: bool) -> Result<()> {
        let n = self.k + self.m;
        if pieces.len() != n {
            return Err(Error::InvalidParams(format!("rebuild needs {n} slots, got {}", pieces.len())));
        }
        let present = pieces.iter().filter(|p| p.is_some()).count();
        let missing_data = pieces[..self.k].iter().any(Option::is_none);
        if !missing_data && (data_only || present == n) {
            return Ok(());
        }
        if present < self.k {
            return Err(Error::InvalidParams(format!("rebuild needs {} pieces, only {present} present", self.k)));
        }
        let mut lens = pieces.iter().flatten().map(Vec::len);
        let first = lens.next().unwrap_or(0);
        if lens.any(|l| l != first) {
            return Err(Error::InvalidParams("rebuild pieces differ in length".to_string()));
        }
        let Some(rs) = &self.rs else {
            // m = 0 and all k present was handled above.
            return Err(Error::InvalidParams("no parity to rebuild from".to_string()));
        };
        let r = if data_only { rs.reconstruct_data(pieces) } else { rs.reconstruct(pieces) };
        r.map_err(|e| Error::InvalidParams(format!("reed-solomon rebuild: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(k: usize, len: usize) -> Vec<Vec<u8>> {
        (0..k).map(|i| (0..len).map(|j| (i * 31 + j * 7 + j / 251) as u8).collect()).collect()
    }

    #[test]
    fn any_k_rebuild_whole_shards_and_ranges() {
        let c = Coder::new(4, 2).expect("coder");
        let data = shards(4, 100_000);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = vec![vec![0; 100_000]; 2];
        c.encode(&refs, &mut parity).expect("encode");
        let all: Vec<Vec<u8>> = data.iter().chain(parity.iter()).cloned().collect();
        // Lose shards 0 and 3; rebuild only bytes 40_000..40_500 of them.
        let range = 40_000..40_500;
        let mut pieces: Vec<Option<Vec<u8>>> = all.iter().map(|s| Some(s[range.clone()].to_vec())).collect();
        pieces[0] = None;
        pieces[3] = None;
        c.rebuild(&mut pieces, true).expect("rebuild");
        assert_eq!(pieces[0].as_deref(), Some(&all[0][range.clone()]));
        assert_eq!(pieces[3].as_deref(), Some(&all[3][range]));
        // Three lost is one too many.
        let mut pieces: Vec<Option<Vec<u8>>> = all.iter().map(|s| Some(s.clone())).collect();
        pieces[0] = None;
        pieces[1] = None;
        pieces[5] = None;
        assert!(c.rebuild(&mut pieces, true).is_err());
    }

    #[test]
    fn no_parity_is_allowed() {
        let c = Coder::new(3, 0).expect("coder");
        let data = shards(3, 10);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        c.encode(&refs, &mut []).expect("encode");
        let mut pieces: Vec<Option<Vec<u8>>> = data.into_iter().map(Some).collect();
        c.rebuild(&mut pieces, true).expect("nothing to do");
        pieces[1] = None;
        assert!(c.rebuild(&mut pieces, true).is_err());
    }
}
