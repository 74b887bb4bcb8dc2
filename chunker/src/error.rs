//! The chunker's one error type.

use std::fmt;

/// Where in an object something went wrong: enough to find the shard or chunk
/// again and to tell an operator which piece of storage to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProblem {
    /// Index of the segment in the manifest.
    pub segment: usize,
    /// Index of the shard within its segment (`0..k` data, `k..k+m` parity).
    pub shard: usize,
    /// The shard's content address.
    pub cid: String,
    /// What was wrong with it, in words.
    pub reason: String,
}

impl fmt::Display for ShardProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {} shard {} ({}): {}", self.segment, self.shard, self.cid, self.reason)
    }
}

/// Everything that can go wrong in the chunker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Parameters that cannot work (k = 0, k + m > 255, chunk sizes out of order, ...).
    #[error("invalid parameters: {0}")]
    InvalidParams(String),

    /// Reading the input or seed, or handing a segment to its sink, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },

    /// A segment sink refused a segment.
    #[error("storing segment {segment} failed: {reason}")]
    Sink {
        /// Index of the segment in the manifest.
        segment: usize,
        /// What the sink said.
        reason: String,
    },

    /// Bytes that claim to be a manifest are not one we can read.
    #[error("manifest is malformed: {0}")]
    ManifestMalformed(String),

    /// A manifest of a format version this build does not know.
    #[error(
        "manifest format version {found} is not supported (this build reads version {supported}); upgrade ionshard"
    )]
    ManifestVersion {
        /// Version found in the bytes.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },

    /// The manifest's bytes do not hash to the CID they were asked for under.
    #[error("manifest bytes do not match {expected} (they hash to {actual})")]
    ManifestCidMismatch {
        /// The CID the caller expected.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// The read key does not open the manifest's sealed part.
    #[error("the read key does not open this manifest: wrong capability, or the manifest was altered")]
    WrongReadKey,

    /// A read capability string could not be parsed.
    #[error("malformed read capability: {0}")]
    Capability(String),

    /// A content identifier could not be parsed.
    #[error("malformed CID {text:?}: {reason}")]
    Cid {
        /// The text that was given.
        text: String,
        /// Why it is not a CID we accept.
        reason: String,
    },

    /// A range proof failed to verify or was malformed.
    #[error("range proof rejected: {0}")]
    Proof(String),

    /// Fewer than k good shards were available for some bytes a chunk needs.
    #[error(
        "cannot rebuild segment {segment}, needed by chunks {chunk}..={last_chunk} (object bytes {offset}..{end}): \
         {good} good shard(s) of the {needed} needed{}",
        problems_suffix(.problems)
    )]
    Unrecoverable {
        /// Segment index in the manifest.
        segment: usize,
        /// First chunk (index in the manifest) that cannot be rebuilt.
        chunk: usize,
        /// Last chunk of this stretch that needs the segment.
        last_chunk: usize,
        /// The first chunk's offset in the object.
        offset: u64,
        /// Where the last chunk ends in the object.
        end: u64,
        /// How many good shards were found.
        good: usize,
        /// How many are needed (k).
        needed: usize,
        /// What was wrong with the shards that were tried and failed.
        problems: Vec<ShardProblem>,
    },

    /// A chunk's stored bytes came from verified shards but do not decrypt,
    /// decompress or match: the manifest and the shards disagree.
    #[error("chunk {chunk} (segment {segment}, offset {offset} in segment) is corrupt: {reason}")]
    ChunkCorrupt {
        /// Chunk index in the manifest.
        chunk: usize,
        /// Segment index in the manifest.
        segment: usize,
        /// Byte offset of the stored chunk in its segment.
        offset: u64,
        /// What failed.
        reason: String,
    },

    /// The rebuilt object does not hash to what the manifest says.
    #[error("rebuilt object does not match the manifest's hash {expected} (got {actual})")]
    ObjectHashMismatch {
        /// Hash recorded in the manifest.
        expected: String,
        /// Hash of the bytes produced.
        actual: String,
    },
}

fn problems_suffix(problems: &[ShardProblem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!("; problems: {}", list.join("; "))
}

impl Error {
    pub(crate) fn io(what: &'static str, source: std::io::Error) -> Self {
        Error::Io { what, source }
    }
}

/// The chunker's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
