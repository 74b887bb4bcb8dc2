//! The chunk table as a decoder reads it: in object order, a run of entries
//! at a time, either from contents opened whole ([`Contents`]) or a sealed
//! page at a time from wherever the manifest lies ([`PagedContents`]), so a
//! device never holds the table of a large image.

use crate::decode::Seed;
use crate::error::{Error, Result};
use crate::keys::ReadKey;
use crate::manifest::{ChunkEntry, Contents, Manifest, Opener};

/// A chunk table: what the sealed part of a manifest says.
pub trait ChunkTable: Sync {
    /// Length of the object.
    fn object_len(&self) -> u64;
    /// BLAKE3 hash of the whole object.
    fn object_hash(&self) -> [u8; 32];
    /// The key of the chunks' match tags (to find them in a seed).
    fn match_key(&self) -> [u8; 32];
    /// Number of chunks.
    fn chunk_count(&self) -> u64;
    /// Entries from chunk `start` on, in object order: at least one while
    /// `start` is below the count, each checked against the manifest.
    fn read_chunks(&self, start: u64) -> Result<Vec<ChunkEntry>>;
    /// Whether the table is a whole object's, whose hash the decoder checks
    /// at the end (not a [`Selection`]).
    fn is_whole(&self) -> bool {
        true
    }
}

/// Some chunks of an object, to be decoded back to back (what a publisher
/// reads of an earlier release to make patches against it). Each chunk is
/// checked as it is opened (authenticated encryption under its key); there
/// is no object hash to check.
#[derive(Debug, Clone)]
pub struct Selection {
    entries: Vec<ChunkEntry>,
    match_key: [u8; 32],
    len: u64,
}

impl Contents {
    /// The chunks at `indices` (in that order), as a table of their own.
    /// Fails on an index past the end.
    pub fn select(&self, indices: &[usize]) -> Result<Selection> {
        let entries = indices
            .iter()
            .map(|i| self.chunks.get(*i).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::InvalidParams(format!("a selection past the {} chunks", self.chunks.len())))?;
        let len = entries.iter().map(|e| u64::from(e.plain_len)).sum();
        Ok(Selection { entries, match_key: self.match_key, len })
    }
}

impl ChunkTable for Selection {
    fn object_len(&self) -> u64 {
        self.len
    }
    fn object_hash(&self) -> [u8; 32] {
        [0; 32]
    }
    fn match_key(&self) -> [u8; 32] {
        self.match_key
    }
    fn chunk_count(&self) -> u64 {
        self.entries.len() as u64
    }
    fn read_chunks(&self, start: u64) -> Result<Vec<ChunkEntry>> {
        Ok(run_from(&self.entries, start))
    }
    fn is_whole(&self) -> bool {
        false
    }
}

/// Entries handed out at a time from contents held whole.
const RUN: usize = 4096;

/// Up to [`RUN`] of `entries` from `start` on (none past the end).
fn run_from(entries: &[ChunkEntry], start: u64) -> Vec<ChunkEntry> {
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(entries.len());
    entries[start..(start + RUN).min(entries.len())].to_vec()
}

impl ChunkTable for Contents {
    fn object_len(&self) -> u64 {
        self.object_len
    }
    fn object_hash(&self) -> [u8; 32] {
        self.object_hash
    }
    fn match_key(&self) -> [u8; 32] {
        self.match_key
    }
    fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }
    fn read_chunks(&self, start: u64) -> Result<Vec<ChunkEntry>> {
        Ok(run_from(&self.chunks, start))
    }
}

/// A chunk table read a sealed page (1024 entries, 96 KiB) at a time from the
/// sealed part of a manifest kept elsewhere (a file): memory does not grow
/// with the object. Each page is authenticated as it is read; a page that
/// fails (changed on disk, wrong key) is an error, never used.
pub struct PagedContents<'a> {
    manifest: &'a Manifest,
    sealed: &'a dyn Seed,
    opener: Opener,
}

impl std::fmt::Debug for PagedContents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedContents").field("chunks", &self.opener.head.chunks).finish_non_exhaustive()
    }
}

impl<'a> PagedContents<'a> {
    /// Open the head of `sealed` (the manifest's sealed part, read at will:
    /// see [`Manifest::read_public`]) with the object's read key.
    pub fn open(manifest: &'a Manifest, sealed: &'a dyn Seed, key: &ReadKey) -> Result<Self> {
        let mut head = vec![0u8; crate::manifest::HEAD.min(sealed.size() as usize)];
        sealed.read_at(0, &mut head).map_err(|e| Error::io("reading the manifest's sealed part", e))?;
        let opener = Opener::new(manifest, key, &head, sealed.size())?;
        Ok(PagedContents { manifest, sealed, opener })
    }
}

impl ChunkTable for PagedContents<'_> {
    fn object_len(&self) -> u64 {
        self.opener.head.object_len
    }
    fn object_hash(&self) -> [u8; 32] {
        self.opener.head.object_hash
    }
    fn match_key(&self) -> [u8; 32] {
        self.opener.head.match_key
    }
    fn chunk_count(&self) -> u64 {
        self.opener.head.chunks
    }
    fn read_chunks(&self, start: u64) -> Result<Vec<ChunkEntry>> {
        if start >= self.chunk_count() {
            return Ok(Vec::new());
        }
        let per = u64::from(self.opener.head.page_chunks);
        let page = start / per;
        // A decoder reads page after page, each once: nothing is cached.
        let (at, len) = self.opener.page_span(page);
        let mut bytes = vec![0u8; len];
        self.sealed.read_at(at, &mut bytes).map_err(|e| Error::io("reading the manifest's chunk table", e))?;
        let mut entries = Vec::with_capacity(per as usize);
        self.opener.open_page(self.manifest, page, &mut bytes, &mut entries, None)?;
        entries.drain(..(start - page * per) as usize);
        Ok(entries)
    }
}
