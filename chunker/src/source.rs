//! A shard source over shards held in memory (tests, tools, a local cache).

use std::collections::HashMap;

use crate::address::Cid;
use crate::decode::{Piece, ShardRequest, ShardSource, SourceError};
use crate::proof::{self, Outboard};

/// Serves shards from a map: the whole shard when most of it is asked for,
/// otherwise a range proof, as a peer would.
#[derive(Debug, Default)]
pub struct MemorySource {
    shards: HashMap<Cid, Vec<u8>>,
}

impl MemorySource {
    /// Serve these shards.
    pub fn new(shards: HashMap<Cid, Vec<u8>>) -> Self {
        MemorySource { shards }
    }
}

/// Answer `req` from the bytes of the shard: whole if the ranges cover at
/// least half of it, else a proof. Shared by in-memory and on-disk sources.
pub fn answer(req: &ShardRequest<'_>, shard: &[u8]) -> Result<Piece, SourceError> {
    answer_cow(req, std::borrow::Cow::Borrowed(shard))
}

/// [`answer`] from a shard read into a buffer of its own, which a whole
/// answer hands over instead of copying (a source that reads files).
pub fn answer_owned(req: &ShardRequest<'_>, shard: Vec<u8>) -> Result<Piece, SourceError> {
    answer_cow(req, std::borrow::Cow::Owned(shard))
}

fn answer_cow(req: &ShardRequest<'_>, shard: std::borrow::Cow<'_, [u8]>) -> Result<Piece, SourceError> {
    let len = shard.len() as u64;
    if req.shard_len != len {
        return Err(SourceError::Failed(format!("asked for a shard of {} bytes, this one has {len}", req.shard_len)));
    }
    if let Some(r) = req.ranges.iter().find(|r| r.start >= r.end || r.end > len) {
        return Err(SourceError::Failed(format!(
            "range {}..{} is empty or outside the {len}-byte shard",
            r.start, r.end
        )));
    }
    let wanted = req.ranges.iter().fold(0u64, |acc, r| acc.saturating_add(r.end - r.start));
    if wanted.saturating_mul(2) >= len {
        return Ok(Piece::Whole(shard.into_owned()));
    }
    let ob = Outboard::create(&shard);
    proof::prove(&shard, &ob, req.ranges).map(Piece::Proof).map_err(|e| SourceError::Failed(e.to_string()))
}

impl ShardSource for MemorySource {
    fn fetch(&self, req: &ShardRequest<'_>) -> Result<Piece, SourceError> {
        let shard = self.shards.get(req.cid).ok_or(SourceError::Missing)?;
        answer(req, shard)
    }
}
