//! Delta: a new version next to an old one costs about what changed.

mod common;

use chunker::{KnownChunks, MemorySource, Params};
use common::*;

#[test]
fn one_mib_edit_in_256_mib_needs_under_2_mib() {
    let old = noise(256, 256 << 20);
    let mut new = old.clone();
    let mid = 128 << 20;
    new[mid..mid + (1 << 20)].copy_from_slice(&noise(999, 1 << 20));

    let params = Params::default();
    let (e_old, old_shards) = encode(params, &old, None);
    let (e_new, new_shards) = encode(params, &new, None);

    // Decoding the new version with the old one as seed asks the shards only
    // for the chunks the seed lacks.
    let src = Counting { inner: MemorySource::new(new_shards), served: Default::default() };
    let (out, stats) = decode_with(&e_new.manifest, &e_new, &src, Some(&&old[..])).expect("decode");
    assert!(out == new, "delta decode differs");
    let fetched = *src.served.lock().expect("lock");
    println!(
        "delta decode: {} of {} chunks from the seed, {fetched} bytes ({:.2} MiB) from the shards",
        stats.seed_chunks,
        stats.chunks,
        fetched as f64 / (1 << 20) as f64
    );
    assert_eq!(fetched, stats.fetched_bytes);
    assert!(fetched < 2 << 20, "needed {fetched} bytes from the shards");

    // Re-encoding the edited version with the old chunk ids known stores only the new chunks.
    let mut known = KnownChunks::new();
    known.add(&e_old.manifest, &e_old.manifest.open(&e_old.read_key).expect("open")).expect("fits");
    let (e_inc, inc_shards) = encode(params, &new, Some(&known));
    println!(
        "incremental encode: {} new chunks, {} bytes ({:.2} MiB) of new segment data, {} bytes of shards",
        e_inc.stats.new_chunks,
        e_inc.stats.new_segment_bytes,
        e_inc.stats.new_segment_bytes as f64 / (1 << 20) as f64,
        e_inc.stats.new_shard_bytes
    );
    assert!(e_inc.stats.new_segment_bytes < 2 << 20, "stored {} new bytes", e_inc.stats.new_segment_bytes);
    // And it decodes from the old shards plus the new ones.
    let mut all = old_shards;
    all.extend(inc_shards);
    let (out, _) = decode(&e_inc, all).expect("decode incremental");
    assert!(out == new, "incremental decode differs");
}
