//! Encode then decode, whole and with losses.

mod common;

use common::*;

use chunker::{Chunking, Params};

fn small_params(k: u8, m: u8) -> Params {
    Params::default().with_chunking(Chunking::with_avg(4096)).with_segment_size(256 * 1024).with_coding(k, m)
}

#[test]
fn empty_object_round_trips() {
    let (e, shards) = encode(Params::default(), b"", None);
    assert!(e.manifest.segments().is_empty());
    let (out, _) = decode(&e, shards).expect("decode");
    assert!(out.is_empty());
}

#[test]
fn mixed_object_round_trips_with_losses() {
    let mut data = noise(1, 3_000_000);
    data.extend(std::iter::repeat_n(b'a', 500_000));
    data.extend(noise(2, 700_000));
    data.extend_from_slice(&data.clone()[..400_000]);
    let (e, mut shards) = encode(small_params(6, 3), &data, None);
    assert!(e.stats.compressed_chunks > 0);
    assert!(e.stats.new_chunks < e.stats.chunks, "repeats are stored once");
    let (out, stats) = decode(&e, shards.clone()).expect("decode");
    assert_eq!(out, data);
    assert_eq!(stats.rebuilt_ranges, 0);
    // Lose three shards of every segment, data ones.
    for seg in e.manifest.segments() {
        for c in &seg.shards()[..3] {
            shards.remove(c);
        }
    }
    let (out, stats) = decode(&e, shards.clone()).expect("decode with losses");
    assert_eq!(out, data);
    assert!(stats.rebuilt_ranges > 0);
    // One more is too many, and the error says where.
    let seg = &e.manifest.segments()[1];
    shards.remove(&seg.shards()[3]);
    let err = decode(&e, shards).unwrap_err().to_string();
    assert!(err.contains("cannot rebuild segment 1"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

/// A seed whose bytes change after they were indexed (the file was edited
/// during the update, or the disk returns rot): those chunks are fetched.
struct ChangingSeed(Vec<u8>);

impl chunker::Seed for ChangingSeed {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        // Indexing reads whole windows; per-chunk reads are small. Lie on every other chunk.
        if !buf.is_empty() && buf.len() < (1 << 20) && (offset / 4096).is_multiple_of(2) {
            buf[0] ^= 1;
        }
        Ok(())
    }
}

#[test]
fn a_seed_that_changes_underneath_falls_back_to_the_shards() {
    let data = noise(5, 3_000_000);
    let (e, shards) = encode(small_params(4, 2), &data, None);
    let contents = e.manifest.open(&e.read_key).expect("open");
    let src = chunker::MemorySource::new(shards);
    let seed = ChangingSeed(data.clone());
    let mut out = Vec::new();
    let stats = chunker::Decoder::new(&e.manifest, &contents, &src)
        .with_seed(&seed)
        .decode(&mut out, &mut |_| {})
        .expect("decode");
    assert!(out == data);
    assert!(stats.seed_chunks > 0 && stats.seed_chunks < stats.chunks, "{stats:?}");
}

/// The chunk table read a sealed page at a time, from the manifest's bytes
/// as a reader would hold them in a file: the same object, and any change to
/// the pages is an error, never a wrong object.
#[test]
fn paged_chunk_table_decodes_the_same_and_refuses_changed_pages() {
    use chunker::{Limits, Manifest, PagedContents};
    // 1 KiB chunks over 3 MB: about 3000 chunks, three pages and a part.
    let params =
        Params::default().with_chunking(Chunking::with_avg(1024)).with_segment_size(256 * 1024).with_coding(4, 2);
    let data = noise(9, 3_000_000);
    let (e, shards) = encode(params, &data, None);
    let bytes = e.manifest.to_bytes();
    let cid = e.manifest.cid();
    let (public, at, len) = Manifest::read_public(&bytes, &cid, &Limits::default()).expect("read public");
    assert_eq!(public.segments(), e.manifest.segments());
    assert_eq!(at + len, bytes.len() as u64);
    let sealed = bytes[at as usize..].to_vec();
    let table = PagedContents::open(&public, &sealed, &e.read_key).expect("open head");
    assert!(chunker::ChunkTable::chunk_count(&table) > 2048, "want several pages");
    let src = chunker::MemorySource::new(shards);
    let mut out = Vec::new();
    chunker::Decoder::new(&public, &table, &src).decode(&mut out, &mut |_| {}).expect("decode paged");
    assert!(out == data, "paged decode differs");

    // Another CID, a wrong key, a page changed, two pages swapped, a page dropped.
    assert!(Manifest::read_public(&bytes, &Manifest::cid(&public), &Limits::default()).is_err());
    let other = chunker::ReadKey::from_bytes([7; 32]);
    assert!(PagedContents::open(&public, &sealed, &other).is_err(), "a wrong key opened the head");
    let page = 28 + 1024 * 96;
    let head = 28 + 84;
    let decode_with = |sealed: &Vec<u8>| -> Result<Vec<u8>, String> {
        let t = PagedContents::open(&public, sealed, &e.read_key).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        chunker::Decoder::new(&public, &t, &src).decode(&mut out, &mut |_| {}).map_err(|e| e.to_string())?;
        Ok(out)
    };
    let mut changed = sealed.clone();
    changed[head + page + 500] ^= 1;
    assert!(decode_with(&changed).is_err(), "a changed page was used");
    let mut swapped = sealed.clone();
    let (a, b) = swapped[head..head + 2 * page].split_at_mut(page);
    a.swap_with_slice(b);
    assert!(decode_with(&swapped).is_err(), "swapped pages were used");
    let dropped = [&sealed[..head + page], &sealed[head + 2 * page..]].concat();
    assert!(decode_with(&dropped).is_err(), "a dropped page went unnoticed");
    assert!(decode_with(&sealed[..sealed.len() - 1].to_vec()).is_err(), "a truncated table went unnoticed");
}

/// A source whose answers are proofs (never whole shards), that counts the
/// buffers it hands out and gets back.
struct Recycling {
    inner: chunker::MemorySource,
    shards: std::collections::HashMap<chunker::Cid, Vec<u8>>,
    out: std::sync::atomic::AtomicU64,
    back: std::sync::atomic::AtomicU64,
}

impl chunker::ShardSource for Recycling {
    fn fetch(&self, req: &chunker::ShardRequest<'_>) -> Result<chunker::Piece, chunker::SourceError> {
        let shard = self.shards.get(req.cid).ok_or(chunker::SourceError::Missing)?;
        let ob = chunker::proof::Outboard::create(shard);
        self.out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = &self.inner;
        chunker::proof::prove(shard, &ob, req.ranges)
            .map(chunker::Piece::Proof)
            .map_err(|e| chunker::SourceError::Failed(e.to_string()))
    }
    fn recycle(&self, _buf: Vec<u8>) {
        self.back.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn windows_fetched_ahead_decode_the_same_object_and_give_every_buffer_back() {
    let mut data = noise(8, 2_500_000);
    data.extend(std::iter::repeat_n(b'z', 300_000));
    let (e, mut shards) = encode(small_params(4, 2), &data, None);
    let contents = e.manifest.open(&e.read_key).expect("open");
    // A shard lost in one segment: its ranges are rebuilt wherever a window needs them.
    let last = e.manifest.segments().len() - 1;
    shards.remove(&e.manifest.segments()[last].shards()[1]);
    let seed: Vec<u8> = data[..1_000_000].to_vec();
    for ahead in [1, 2, 8] {
        for window in [256 << 10, 1 << 20] {
            let src = Recycling {
                inner: chunker::MemorySource::default(),
                shards: shards.clone(),
                out: Default::default(),
                back: Default::default(),
            };
            let mut out = Vec::new();
            let stats = chunker::Decoder::new(&e.manifest, &contents, &src)
                .with_window(window)
                .with_ahead(ahead)
                .with_seed(&seed)
                .decode(&mut out, &mut |_| {})
                .unwrap_or_else(|err| panic!("ahead {ahead}, window {window}: {err}"));
            assert!(out == data, "ahead {ahead}, window {window}: other bytes");
            assert!(stats.seed_chunks > 0 && stats.rebuilt_ranges > 0, "{stats:?}");
            // One problem for the lost shard, however many windows met it.
            assert_eq!(stats.problems.len(), 1, "{:?}", stats.problems);
            let (given, back) = (src.out.into_inner(), src.back.into_inner());
            assert_eq!(given, back, "ahead {ahead}, window {window}: buffers handed out and given back");
        }
    }
}

/// Shards in memory behind one link that serves requests in the order they
/// came, each holding it for a while: windows arrive one after another, as
/// over a real link.
struct OneLink {
    shards: std::collections::HashMap<chunker::Cid, Vec<u8>>,
    /// When the link is next free.
    free_at: std::sync::Mutex<std::time::Instant>,
    per_request: std::time::Duration,
}

impl chunker::ShardSource for OneLink {
    fn fetch(&self, req: &chunker::ShardRequest<'_>) -> Result<chunker::Piece, chunker::SourceError> {
        self.fetch_many(std::slice::from_ref(req)).pop().unwrap_or(Err(chunker::SourceError::Missing))
    }
    fn fetch_many(&self, reqs: &[chunker::ShardRequest<'_>]) -> Vec<Result<chunker::Piece, chunker::SourceError>> {
        let done = {
            let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            *free_at = (*free_at).max(std::time::Instant::now()) + self.per_request * reqs.len() as u32;
            *free_at
        };
        std::thread::sleep(done.saturating_duration_since(std::time::Instant::now()));
        reqs.iter()
            .map(|req| {
                let shard = self.shards.get(req.cid).ok_or(chunker::SourceError::Missing)?;
                let ob = chunker::proof::Outboard::create(shard);
                chunker::proof::prove(shard, &ob, req.ranges)
                    .map(chunker::Piece::Proof)
                    .map_err(|e| chunker::SourceError::Failed(e.to_string()))
            })
            .collect()
    }
}

/// A writer slower than the source: the decoder never waits on windows.
struct SlowWriter(Vec<u8>, std::time::Duration);

impl std::io::Write for SlowWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.1);
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn windows_ahead_grow_while_the_network_is_the_bound_and_stay_at_two_while_it_is_not() {
    let data = noise(9, 3_000_000);
    let (e, shards) = encode(small_params(4, 2), &data, None);
    let contents = e.manifest.open(&e.read_key).expect("open");
    // The link is the bound: the decoder waits for each window and fetches
    // further ahead, up to the limit and never past it.
    for limit in [3, 4] {
        let src = OneLink {
            shards: shards.clone(),
            free_at: std::sync::Mutex::new(std::time::Instant::now()),
            per_request: std::time::Duration::from_millis(4),
        };
        let mut out = Vec::new();
        let stats = chunker::Decoder::new(&e.manifest, &contents, &src)
            .with_window(256 << 10)
            .with_ahead(limit)
            .decode(&mut out, &mut |_| {})
            .expect("decode");
        assert!(out == data);
        assert_eq!(stats.most_ahead, limit, "limit {limit}");
    }
    // The writer is the bound: the next window is there when the decoder
    // turns to it (it had a slow write's time), so the limit of four is not
    // reached. (One wait on a loaded machine may add one.)
    let src = chunker::MemorySource::new(shards);
    let mut out = SlowWriter(Vec::new(), std::time::Duration::from_millis(150));
    let stats = chunker::Decoder::new(&e.manifest, &contents, &src)
        .with_window(512 << 10)
        .decode(&mut out, &mut |_| {})
        .expect("decode");
    assert!(out.0 == data);
    assert!(stats.most_ahead <= 3, "{} windows ahead with the writer as the bound", stats.most_ahead);
}

/// Backups' destroyable keys: chunk ids still come from the secret (dedup
/// across encodings), but keys and the read key come from one-time
/// material, so the secret alone opens nothing and each encoding's keys
/// differ.
#[test]
fn data_keys_come_from_the_material_not_the_secret_and_dedup_still_works() {
    let params = small_params(4, 2);
    let data = noise(9, 1_500_000);
    let secret = secret();
    let enc = |material: [u8; 32], known: Option<&chunker::KnownChunks>| {
        let mut sink = chunker::MemorySink::default();
        let mut e = chunker::Encoder::new(params, &secret).expect("encoder").with_data_keys(material);
        if let Some(k) = known {
            e = e.with_known(k);
        }
        (e.encode(&data[..], &mut sink, &mut |_| {}).expect("encode"), sink.shards)
    };
    let (a, shards_a) = enc([1; 32], None);
    let (b, _) = enc([2; 32], None);
    assert_ne!(a.read_key, b.read_key, "each encoding has its own read key");
    // The key the secret would derive opens neither.
    let (derived, _) = encode(params, &data, None);
    assert!(a.manifest.open(&derived.read_key).is_err());
    let ca = a.manifest.open(&a.read_key).expect("open a");
    b.manifest.open(&b.read_key).expect("open b");
    // Same plaintext, same cuts: different ciphertext means different chunk keys.
    let shards = |e: &chunker::Encoded| e.manifest.segments().iter().map(|s| s.shards().to_vec()).collect::<Vec<_>>();
    assert_ne!(shards(&a), shards(&b), "chunk keys differ between encodings");
    assert_ne!(shards(&a), shards(&derived));
    let (out, _) = decode(&a, shards_a.clone()).expect("decode");
    assert_eq!(out, data);
    // A second encoding that knows the first stores nothing new and keeps the first's keys.
    let mut known = chunker::KnownChunks::new();
    known.add(&a.manifest, &ca).expect("known");
    let (c, _) = enc([3; 32], Some(&known));
    assert_eq!(c.stats.new_chunks, 0);
    // ... and it decodes from the first's shards alone: the keys are the first's.
    let (out, _) = decode(&c, shards_a).expect("decode c from a's shards");
    assert_eq!(out, data);
}

/// What an SPN checks of a segment a client encoded: lengths, and parity
/// that really is the parity of the data (repair rebuilds from it).
#[test]
fn a_segment_from_its_shards_is_the_encoders_and_bad_parity_is_refused() {
    let (e, shards) = encode(small_params(4, 2), &noise(11, 600_000), None);
    let seg = &e.manifest.segments()[0];
    let mut bytes: Vec<Vec<u8>> = seg.shards().iter().map(|c| shards[c].clone()).collect();
    let refs = |b: &[Vec<u8>]| b.iter().map(|v| v.to_vec()).collect::<Vec<_>>();
    let same = chunker::Segment::from_shards(seg.len(), 4, &view(&bytes)).expect("the encoder's own segment");
    assert_eq!(&same, seg);
    assert_eq!(same.cid(), seg.cid());
    let good = refs(&bytes);
    bytes[5][7] ^= 1;
    let err = chunker::Segment::from_shards(seg.len(), 4, &view(&bytes)).unwrap_err().to_string();
    assert!(err.contains("parity shard 5"), "{err}");
    bytes = good.clone();
    bytes[1].pop();
    let err = chunker::Segment::from_shards(seg.len(), 4, &view(&bytes)).unwrap_err().to_string();
    assert!(err.contains("shard 1 has"), "{err}");
    assert!(chunker::Segment::from_shards(seg.len(), 0, &view(&good)).is_err());
    assert!(chunker::Segment::from_shards(seg.len(), 4, &view(&good[..3])).is_err());
}

/// What an SPN makes of a segment's data shards alone (a backup client
/// that sends no parity): the encoder's own segment, parity byte for byte;
/// data of the wrong length or impossible codings are refused.
#[test]
fn a_segment_from_its_data_shards_alone_is_the_encoders() {
    let (e, shards) = encode(small_params(4, 2), &noise(12, 700_000), None);
    for seg in e.manifest.segments() {
        let data: Vec<u8> = seg.shards()[..4].iter().flat_map(|c| shards[c].iter().copied()).collect();
        let (same, bytes) = chunker::Segment::from_data(seg.len(), 4, 2, data.clone()).expect("from data");
        assert_eq!(&same, seg);
        assert_eq!(same.cid(), seg.cid());
        assert_eq!(bytes.len(), 6);
        for (b, c) in bytes.iter().zip(seg.shards()) {
            assert!(b[..] == shards[c][..], "shard {c} differs");
        }
        let err = chunker::Segment::from_data(seg.len(), 4, 2, data[1..].to_vec()).unwrap_err().to_string();
        assert!(err.contains("are not 4 data shards"), "{err}");
        assert!(chunker::Segment::from_data(seg.len(), 0, 2, data.clone()).is_err());
        assert!(chunker::Segment::from_data(seg.len(), 200, 100, data.clone()).is_err());
    }
}

fn view(b: &[Vec<u8>]) -> Vec<&[u8]> {
    b.iter().map(|v| v.as_slice()).collect()
}

/// Every shard has two holders, and the one asked first lies (flips a byte
/// of every answer): more false answers than the parity covers. The source
/// says another holder is left; the decoder asks again and gets the truth
/// instead of counting every shard bad and failing.
struct FirstHolderLies {
    inner: chunker::MemorySource,
    /// Shards (by CID) whose liar has been caught, so the next ask goes to
    /// the honest holder.
    caught: std::sync::Mutex<std::collections::HashSet<chunker::Cid>>,
    lies: std::sync::atomic::AtomicU64,
}

impl chunker::ShardSource for FirstHolderLies {
    fn fetch(&self, req: &chunker::ShardRequest<'_>) -> Result<chunker::Piece, chunker::SourceError> {
        let mut piece = self.inner.fetch(req)?;
        if !self.caught.lock().expect("lock").contains(req.cid) {
            self.lies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (chunker::Piece::Whole(b) | chunker::Piece::Proof(b)) = &mut piece;
            let mid = b.len() / 2;
            b[mid] ^= 0x20;
        }
        Ok(piece)
    }

    fn rejected(&self, req: &chunker::ShardRequest<'_>, _reason: &str) -> bool {
        // The liar is dropped; the honest holder is left to ask.
        self.caught.lock().expect("lock").insert(*req.cid)
    }
}

#[test]
fn a_lying_holder_does_not_make_a_shard_bad_while_another_holder_has_it() {
    let data = noise(21, 1_500_000);
    let (e, shards) = encode(small_params(4, 2), &data, None);
    let src = FirstHolderLies {
        inner: chunker::MemorySource::new(shards),
        caught: Default::default(),
        lies: Default::default(),
    };
    let (out, stats) = decode_with(&e.manifest, &e, &src, None).expect("decoded from the honest holders");
    assert!(out == data, "the object comes back byte-exact");
    assert!(src.lies.load(std::sync::atomic::Ordering::Relaxed) >= 4, "the liar was asked first");
    assert!(stats.problems.is_empty(), "no shard counted bad: {:?}", stats.problems);
}

/// A source whose answers for the first segment come late: the windows
/// after it are done first.
struct SlowStart(chunker::MemorySource);

impl chunker::ShardSource for SlowStart {
    fn fetch(&self, req: &chunker::ShardRequest<'_>) -> Result<chunker::Piece, chunker::SourceError> {
        if req.segment == 0 {
            // Long enough that the windows after it are done first even on
            // a machine busy with other tests.
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        self.0.fetch(req)
    }
    // On the window's own thread, not rayon's pool (whose two threads the
    // slow answers would hold).
    fn fetch_many(&self, reqs: &[chunker::ShardRequest<'_>]) -> Vec<Result<chunker::Piece, chunker::SourceError>> {
        reqs.iter().map(|r| self.fetch(r)).collect()
    }
}

/// An output in memory that records the order windows were written in,
/// and can be made to give back other bytes than it was given.
#[derive(Default)]
struct Recorded {
    bytes: Vec<u8>,
    offsets: Vec<u64>,
    lie: bool,
}

impl chunker::WriteAt for Recorded {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let end = offset as usize + buf.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(buf);
        self.offsets.push(offset);
        Ok(())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.copy_from_slice(&self.bytes[offset as usize..offset as usize + buf.len()]);
        if self.lie {
            buf[0] ^= 1;
        }
        Ok(())
    }
}

#[test]
fn windows_written_at_their_offsets_finish_in_any_order_and_the_object_is_still_checked_whole() {
    let data = noise(9, 2_000_000);
    let (e, shards) = encode(small_params(4, 2), &data, None);
    let contents = e.manifest.open(&e.read_key).expect("open");
    let src = SlowStart(chunker::MemorySource::new(shards));
    let decoder = chunker::Decoder::new(&e.manifest, &contents, &src).with_window(256 << 10).with_ahead(4);
    let mut out = Recorded::default();
    let stats = decoder.decode_at(&mut out, &mut |_| {}).expect("decode at offsets");
    assert_eq!(out.bytes, data);
    assert_eq!(stats.object_len, data.len() as u64);
    // The first window waited on its slow answers while later ones were written.
    assert_ne!(out.offsets.first(), Some(&0), "written in order: {:?}", out.offsets);
    let mut sorted = out.offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), out.offsets.len(), "each window once");
    // Windows written ahead are hashed from what the output gives back:
    // an output that gives back other bytes fails the object's hash.
    let mut liar = Recorded { lie: true, ..Recorded::default() };
    let r = decoder.decode_at(&mut liar, &mut |_| {});
    let err = r.map(|_| liar.offsets.clone()).expect_err("the liar's bytes fail the hash").to_string();
    assert!(err.contains("hash"), "{err}");
}
