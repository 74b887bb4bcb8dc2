//! Encode and decode throughput of the chunker on a 256 MiB incompressible
//! object, 10+4, default chunking: the figures the README quotes.
//!
//! `cargo bench -p ionshard-benches --bench chunker`
//! (`IONSHARD_BENCH_MIB=64` for a quicker run, `IONSHARD_BENCH_AVG=16384` for
//! another average chunk size.)

use std::collections::HashMap;

use chunker::{Cid, Decoder, EncodedSegment, Encoder, MemorySink, MemorySource, Params, SegmentSink, TenantSecret};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

struct NullSink;

impl SegmentSink for NullSink {
    fn put_segment(&mut self, seg: EncodedSegment<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::hint::black_box(seg.shards.len());
        Ok(())
    }
}

fn object() -> Vec<u8> {
    let mib: usize = std::env::var("IONSHARD_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let mut v = vec![0u8; mib << 20];
    blake3::Hasher::new().update(b"bench").finalize_xof().fill(&mut v);
    v
}

fn bench(c: &mut Criterion) {
    let data = object();
    let secret = TenantSecret::from_bytes([1; 32]);
    // IONSHARD_BENCH_AVG=16384 compares another average chunk size.
    let params = match std::env::var("IONSHARD_BENCH_AVG").ok().and_then(|v| v.parse().ok()) {
        Some(avg) => Params::default().with_chunking(chunker::Chunking::with_avg(avg)),
        None => Params::default(),
    };
    let mut g = c.benchmark_group("chunker");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("encode_10+4", |b| {
        b.iter(|| {
            let enc = Encoder::new(params, &secret).expect("params");
            enc.encode(&data[..], &mut NullSink, &mut |_| {}).expect("encode")
        })
    });
    let enc = Encoder::new(params, &secret).expect("params");
    let mut sink = MemorySink::default();
    let encoded = enc.encode(&data[..], &mut sink, &mut |_| {}).expect("encode");
    let contents = encoded.manifest.open(&encoded.read_key).expect("open");
    let all = MemorySource::new(sink.shards.clone());
    g.bench_function("decode_all_data_shards", |b| {
        b.iter(|| {
            Decoder::new(&encoded.manifest, &contents, &all).decode(&mut std::io::sink(), &mut |_| {}).expect("decode")
        })
    });
    let mut lossy: HashMap<Cid, Vec<u8>> = sink.shards;
    for seg in encoded.manifest.segments() {
        for cid in &seg.shards()[..4] {
            lossy.remove(cid);
        }
    }
    let lossy = MemorySource::new(lossy);
    g.bench_function("decode_4_data_shards_missing", |b| {
        b.iter(|| {
            Decoder::new(&encoded.manifest, &contents, &lossy)
                .decode(&mut std::io::sink(), &mut |_| {})
                .expect("decode")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
