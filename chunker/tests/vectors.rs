//! Test vectors: fixed inputs with their chunk boundaries, shard CIDs and
//! manifest CID, in `testdata/vectors.json`, so the format cannot drift
//! silently and another implementation can check itself against them.
//!
//! After an intended format change: `IONSHARD_BLESS=1 cargo test -p ionshard-chunker --test vectors`,
//! then review the diff of `testdata/vectors.json` and bump the format version.

mod common;

use chunker::{Chunking, Cid, Encoder, MemorySink, Params, TenantSecret, proof};
use serde_json::{Value, json};

fn input(name: &str) -> Vec<u8> {
    match name {
        "empty" => Vec::new(),
        "hello" => b"hello, ionshard\n".to_vec(),
        // 300 000 bytes of BLAKE3 XOF output keyed by its name: incompressible.
        "noise-300k" => common::noise(300_000, 300_000),
        // A text-like, compressible megabyte.
        "text-1m" => {
            (0..1_048_576u32).map(|i| b"abcdefghij klmnop\n"[(i % 18) as usize] ^ ((i / 4099) % 3) as u8).collect()
        }
        other => panic!("unknown vector {other}"),
    }
}

fn vector(name: &str, params: Params) -> Value {
    let data = input(name);
    let secret = TenantSecret::from_bytes([7; 32]);
    let mut sink = MemorySink::default();
    let e = Encoder::new(params, &secret)
        .expect("params")
        .with_salt([9; 32])
        .encode(&data[..], &mut sink, &mut |_| {})
        .expect("encode");
    let contents = e.manifest.open(&e.read_key).expect("open");
    let chunk_lengths: Vec<u32> = contents.chunks().iter().map(|c| c.plain_len()).collect();
    let segments: Vec<Value> = e
        .manifest
        .segments()
        .iter()
        .map(|s| {
            json!({
                "length": s.len(),
                "k": s.data_shards(),
                "shards": s.shards().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "segment_cid": s.cid().to_string(),
            })
        })
        .collect();
    // A range proof of the first shard, bytes 1000..5000 (or what it has).
    let range_proof = e.manifest.segments().first().map(|s| {
        let cid = s.shards()[0];
        let shard = &sink.shards[&cid];
        let end = (shard.len() as u64).min(5000);
        let start = 1000.min(end - 1);
        let p = proof::prove(shard, &proof::Outboard::create(shard), &[start..end]).expect("prove");
        json!({ "shard": cid.to_string(), "shard_length": shard.len(), "range": [start, end], "proof_blake3": blake3::hash(&p).to_hex().to_string(), "proof_length": p.len() })
    });
    json!({
        "name": name,
        "input_length": data.len(),
        "input_blake3": blake3::hash(&data).to_hex().to_string(),
        "params": {
            "chunk_min": params.chunking.min, "chunk_avg": params.chunking.avg, "chunk_max": params.chunking.max,
            "segment_size": params.segment_size, "zstd_level": params.zstd_level,
            "data_shards": params.coding.data, "parity_shards": params.coding.parity,
        },
        "tenant_secret": "07".repeat(32),
        "salt": "09".repeat(32),
        "chunk_lengths": chunk_lengths,
        "segments": segments,
        "manifest_length": e.manifest.to_bytes().len(),
        "manifest_cid": e.manifest.cid().to_string(),
        "range_proof": range_proof,
    })
}

#[test]
fn vectors_match_testdata() {
    let small =
        Params::default().with_chunking(Chunking::with_avg(16 * 1024)).with_segment_size(256 * 1024).with_coding(4, 2);
    let all = json!({
        "about": "ionshard chunker test vectors: inputs are defined in chunker/tests/vectors.rs; \
                  CIDs are CIDv1 raw/cbor with BLAKE3; see chunker/src/manifest.rs for the format",
        "format_version": chunker::FORMAT_VERSION,
        "vectors": [
            vector("empty", Params::default()),
            vector("hello", Params::default()),
            vector("noise-300k", small),
            vector("text-1m", small),
            vector("noise-300k", Params::default().with_coding(1, 0)),
        ],
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors.json");
    let text = serde_json::to_string_pretty(&all).expect("json") + "\n";
    if std::env::var_os("IONSHARD_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write vectors");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("testdata/vectors.json (bless with IONSHARD_BLESS=1)");
    let want: Value = serde_json::from_str(&want).expect("parse vectors");
    assert_eq!(
        all, want,
        "the encoding changed: if intended, bless (see the top of this file) and bump the format version"
    );
    // The CIDs in the file parse back as what they claim to be.
    for v in want["vectors"].as_array().expect("list") {
        let m: Cid = v["manifest_cid"].as_str().expect("cid").parse().expect("manifest cid");
        assert!(!m.is_raw());
    }
}
