//! Secrets and the keys derived from them.
//!
//! A tenant (a vendor, a business, a person) holds one 32-byte secret. From it:
//! - the chunk id of a plaintext chunk is `BLAKE3-keyed(K_id, BLAKE3(chunk))`,
//!   so one tenant's equal chunks get equal ids (dedup), while nobody without
//!   the secret can confirm a guess of a chunk's content (one pass over the
//!   bytes serves both the id and the match tag below);
//! - the chunk key is `BLAKE3-keyed(K_key, chunk id)`;
//! - an object's read key is `BLAKE3-keyed(K_read, object hash)`; it opens the
//!   sealed part of that object's manifest and nothing else;
//! - each encoding draws a match key from the secret and a salt; the sealed
//!   manifest lists a 16-byte match tag per chunk under it, which is how a
//!   reader holding an old version (a seed) recognises chunks it already has.
//!
//! Secret types never print their bytes in `Debug`.

use std::fmt;

const CTX_CHUNK_ID: &str = "ionshard 2026-11 chunk id v1";
const CTX_CHUNK_KEY: &str = "ionshard 2026-11 chunk key v1";
const CTX_READ_KEY: &str = "ionshard 2026-11 read key v1";
const CTX_SEED_MATCH: &str = "ionshard 2026-11 seed match v1";

/// A tenant's root secret. Everything else a tenant encrypts derives from it.
#[derive(Clone)]
pub struct TenantSecret {
    id_key: [u8; 32],
    chunk_key_key: [u8; 32],
    read_key_key: [u8; 32],
    match_key_key: [u8; 32],
}

impl TenantSecret {
    /// A secret from 32 bytes of key material (random, kept by the tenant).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TenantSecret {
            id_key: blake3::derive_key(CTX_CHUNK_ID, &bytes),
            chunk_key_key: blake3::derive_key(CTX_CHUNK_KEY, &bytes),
            read_key_key: blake3::derive_key(CTX_READ_KEY, &bytes),
            match_key_key: blake3::derive_key(CTX_SEED_MATCH, &bytes),
        }
    }

    /// The id of a chunk whose plain BLAKE3 hash is `digest` (see [`digest`]).
    pub(crate) fn chunk_id(&self, digest: &[u8; 32]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, digest).as_bytes())
    }

    pub(crate) fn chunk_key(&self, id: &ChunkId) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.chunk_key_key, &id.0).as_bytes())
    }

    pub(crate) fn read_key(&self, object_hash: &[u8; 32]) -> ReadKey {
        ReadKey(*blake3::keyed_hash(&self.read_key_key, object_hash).as_bytes())
    }

    /// The key under which one encoding's chunks get their match tags. It is
    /// sealed into the manifest, so a reader can recognise chunks of a seed;
    /// the salt makes it differ per object, so tags say nothing across objects.
    pub(crate) fn match_key(&self, salt: &[u8; 32]) -> [u8; 32] {
        *blake3::keyed_hash(&self.match_key_key, salt).as_bytes()
    }
}

impl fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantSecret(<hidden>)")
    }
}

/// A chunk's id: keyed BLAKE3 of its plaintext under the tenant's id key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub(crate) [u8; 32]);

impl ChunkId {
    /// The 32 id bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An id from its bytes (as listed in a manifest).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkId(bytes)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The AES-256-GCM key of one stored chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkKey(pub(crate) [u8; 32]);

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(<hidden>)")
    }
}

/// The key that opens one object's manifest: with the manifest CID it forms
/// the object's read capability.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReadKey(pub(crate) [u8; 32]);

impl ReadKey {
    /// A read key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ReadKey(bytes)
    }

    /// The key bytes (handle with care: they grant read access).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadKey(<hidden>)")
    }
}

/// The one hash pass over a chunk's bytes; ids and tags are keyed hashes of it.
pub(crate) fn digest(plaintext: &[u8]) -> [u8; 32] {
    *blake3::hash(plaintext).as_bytes()
}

/// The 16-byte tag a reader compares to recognise a chunk it holds, from the
/// chunk's [`digest`].
pub(crate) fn match_tag(match_key: &[u8; 32], digest: &[u8; 32]) -> [u8; 16] {
    let h = blake3::keyed_hash(match_key, digest);
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&h.as_bytes()[..16]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let s = TenantSecret::from_bytes([7; 32]);
        assert_eq!(format!("{s:?}"), "TenantSecret(<hidden>)");
        let r = ReadKey::from_bytes([7; 32]);
        assert!(!format!("{r:?}").contains('7'));
    }

    #[test]
    fn ids_are_keyed() {
        let a = TenantSecret::from_bytes([1; 32]);
        let b = TenantSecret::from_bytes([2; 32]);
        let d = digest(b"x");
        assert_eq!(a.chunk_id(&d), a.chunk_id(&d));
        assert_ne!(a.chunk_id(&d), b.chunk_id(&d));
        assert_ne!(a.chunk_id(&d).0, d);
    }
}
