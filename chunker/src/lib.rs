//! The pure data path of ionshard: bytes → content-defined chunks → compressed,
//! encrypted → packed into segments → Reed-Solomon shards named by CID, plus
//! the manifest that turns shards back into bytes, and range proofs that let a
//! reader check any byte range of a shard from an untrusted peer.
//!
//! This crate must never do I/O of its own: no files, no network, no clock, no
//! randomness. Inputs arrive as `Read`ers, shards leave through a
//! [`SegmentSink`] and come back through a [`ShardSource`]; callers bring
//! secrets and salts. It uses all cores (rayon) for the heavy loops.
//!
//! Two units, two jobs: the *chunk* (FastCDC, 32 KiB average by default) is
//! the unit of dedup and delta; the *segment* (8 MiB by default) is the unit
//! of erasure coding and placement.

mod address;
mod capability;
mod cdc;
mod decode;
mod delta;
mod encode;
mod erasure;
mod error;
mod keys;
mod manifest;
mod params;
mod patch;
pub mod proof;
mod seal;
mod source;
mod table;

pub use address::Cid;
pub use capability::ReadCapability;
pub use decode::{DecodeStats, Decoder, Piece, Seed, ShardRequest, ShardSource, SourceError, WriteAt};
pub use delta::{Patch, PatchPlan, Patcher, apply_manifest_delta, manifest_delta, plan_patches};
pub use encode::{EncodeStats, Encoded, EncodedSegment, Encoder, KnownChunks, MemorySink, SegmentSink, ShardBytes};
pub use erasure::Coder;
pub use error::{Error, Result, ShardProblem};
pub use keys::{ChunkId, ReadKey, TenantSecret};
pub use manifest::{ChunkEntry, Contents, FORMAT_VERSION, Limits, Manifest, Segment};
pub use params::{Chunking, Coding, Params};
pub use patch::{Base, MAX_BASES, PatchEntry, PatchTable, patch_frame};
pub use source::{MemorySource, answer, answer_owned};
pub use table::{ChunkTable, PagedContents, Selection};
