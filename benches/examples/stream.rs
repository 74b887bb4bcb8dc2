//! Write N bytes of a deterministic incompressible stream to stdout, e.g.
//! `cargo run --release -p ionshard-benches --example stream -- 4GiB`.
//! Its BLAKE3 goes to stderr, for checking what comes back.

use std::io::Write;

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "1GiB".to_string());
    let n: u64 = match arg.strip_suffix("GiB") {
        Some(g) => g.parse::<u64>().expect("size") << 30,
        None => match arg.strip_suffix("MiB") {
            Some(m) => m.parse::<u64>().expect("size") << 20,
            None => arg.parse().expect("size in bytes, MiB or GiB"),
        },
    };
    let mut xof = blake3::Hasher::new().update(b"ionshard stream").finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut out = std::io::stdout().lock();
    let mut left = n;
    while left > 0 {
        let take = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..take]);
        hasher.update(&buf[..take]);
        if out.write_all(&buf[..take]).is_err() {
            std::process::exit(1);
        }
        left -= take as u64;
    }
    eprintln!("{}", hasher.finalize().to_hex());
}
