#![allow(dead_code, unreachable_pub, missing_docs)]
//! Helpers shared by the chunker's integration tests.

use std::collections::HashMap;
use std::sync::Mutex;

use chunker::{
    Cid, DecodeStats, Decoder, Encoded, Encoder, KnownChunks, Manifest, MemorySink, MemorySource, Params, Piece,
    ShardRequest, ShardSource, SourceError, TenantSecret,
};

pub fn secret() -> TenantSecret {
    TenantSecret::from_bytes([42; 32])
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut v);
    v
}

pub fn encode(params: Params, data: &[u8], known: Option<&KnownChunks>) -> (Encoded, HashMap<Cid, Vec<u8>>) {
    let s = secret();
    let mut enc = Encoder::new(params, &s).expect("params");
    if let Some(k) = known {
        enc = enc.with_known(k);
    }
    let mut sink = MemorySink::default();
    let e = enc.encode(data, &mut sink, &mut |_| {}).expect("encode");
    (e, sink.shards)
}

pub fn decode_with(
    m: &Manifest,
    e: &Encoded,
    src: &dyn ShardSource,
    seed: Option<&&[u8]>,
) -> chunker::Result<(Vec<u8>, DecodeStats)> {
    let contents = m.open(&e.read_key)?;
    let mut dec = Decoder::new(m, &contents, src);
    if let Some(s) = seed {
        dec = dec.with_seed(s as &dyn chunker::Seed);
    }
    let mut out = Vec::new();
    let stats = dec.decode(&mut out, &mut |_| {})?;
    Ok((out, stats))
}

pub fn decode(e: &Encoded, shards: HashMap<Cid, Vec<u8>>) -> chunker::Result<(Vec<u8>, DecodeStats)> {
    decode_with(&e.manifest, e, &MemorySource::new(shards), None)
}

/// A source that counts what it serves.
pub struct Counting<S> {
    pub inner: S,
    pub served: Mutex<u64>,
}

impl<S: ShardSource> ShardSource for Counting<S> {
    fn fetch(&self, req: &ShardRequest<'_>) -> Result<Piece, SourceError> {
        let p = self.inner.fetch(req)?;
        let n = match &p {
            Piece::Whole(b) | Piece::Proof(b) => b.len() as u64,
        };
        *self.served.lock().expect("lock") += n;
        Ok(p)
    }
}
