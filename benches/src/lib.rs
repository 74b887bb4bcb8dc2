//! Benchmarks of ionshard (see `benches/`); this library is empty.
