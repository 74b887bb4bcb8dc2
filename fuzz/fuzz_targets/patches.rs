//! What a delta update reads from untrusted sources: a patch table (from a
//! bundle), a patch's zstd frame (from peers, once its seal opened) and a
//! manifest delta (from a bundle). Decoding never panics and never writes
//! or allocates past its bounds: a frame makes exactly the chunk's length
//! or fails; a delta makes at most the bound it was given.
#![no_main]

use std::sync::OnceLock;

use chunker::{Contents, Encoder, Manifest, MemorySink, Params, PatchTable, ReadKey, TenantSecret};
use libfuzzer_sys::fuzz_target;

/// A small object's manifest and contents, made once.
fn object() -> &'static (Manifest, Contents, ReadKey) {
    static O: OnceLock<(Manifest, Contents, ReadKey)> = OnceLock::new();
    O.get_or_init(|| {
        let secret = TenantSecret::from_bytes([1; 32]);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut sink = MemorySink::default();
        let e = Encoder::new(Params::default(), &secret)
            .and_then(|enc| enc.encode(&data[..], &mut sink, &mut |_| {}))
            .expect("encode");
        let c = e.manifest.open(&e.read_key).expect("open");
        (e.manifest, c, e.read_key)
    })
}

fuzz_target!(|data: &[u8]| {
    let (m, c, key) = object();
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(t) = PatchTable::decode(rest, m, c.chunks().len() as u64) {
                for e in t.entries() {
                    assert!((e.chunk as usize) < c.chunks().len());
                    assert!(!e.bases.is_empty() && e.bases.len() <= chunker::MAX_BASES);
                }
            }
            let _ = PatchTable::open(rest, key, m, c.chunks().len() as u64);
        }
        1 => {
            let (len, frame) = rest.split_at(rest.len().min(2));
            let len = len.iter().fold(0usize, |a, b| a << 8 | usize::from(*b));
            let prefix: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
            let mut out = vec![0u8; len];
            let _ = chunker::patch_frame(frame, &prefix, &mut out);
        }
        _ => {
            if let Ok(back) = chunker::apply_manifest_delta(m, c, rest, key, 1 << 20) {
                assert!(back.to_bytes().len() < 4 << 20);
            }
        }
    }
});
