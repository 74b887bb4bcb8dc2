//! `ionshard chunk` and `ionshard unchunk`: the data path by hand, on files.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chunker::{
    Chunking, Cid, Decoder, EncodedSegment, Encoder, KnownChunks, Limits, Manifest, Params, Piece, ReadCapability,
    Seed, SegmentSink, ShardRequest, ShardSource, SourceError, TenantSecret,
};
use rayon::prelude::*;
use serde_json::json;

use crate::files::{self, write_atomic};
use crate::size::human;

/// Options of `ionshard chunk`.
#[derive(clap::Args)]
pub(crate) struct ChunkOpts {
    /// File to encode (`-` reads standard input).
    pub(crate) file: PathBuf,
    /// Directory for the shards and the manifest (created if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// k: data shards per segment.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub(crate) data_shards: u8,
    /// m: parity shards per segment (any m shards of a segment may be lost).
    #[arg(long, short = 'm', default_value_t = 4)]
    pub(crate) parity_shards: u8,
    /// Average chunk size (min is a quarter, max four times), e.g. 32KiB.
    #[arg(long, value_parser = crate::size::size_arg)]
    pub(crate) chunk_avg: Option<u64>,
    /// Segment size, e.g. 8MiB.
    #[arg(long, value_parser = crate::size::size_arg)]
    pub(crate) segment_size: Option<u64>,
    /// zstd level tried on each chunk (0 = never compress; at 3 or below, level 1 where a chunk barely compresses).
    #[arg(long, default_value_t = 3)]
    pub(crate) zstd_level: i32,
    /// Tenant secret (32 bytes; created if missing) [default: ~/.ionshard/tenant.secret].
    #[arg(long)]
    pub(crate) secret: Option<PathBuf>,
    /// Capability of an earlier object in --out whose chunks need not be stored again (repeatable).
    #[arg(long)]
    pub(crate) known: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Writes each shard as `DIR/<cid>`, atomically, in parallel.
struct DirSink<'a> {
    dir: &'a Path,
    /// Files written, synced before the manifest that names them is written.
    paths: Vec<PathBuf>,
    written: u64,
    skipped: u64,
    bytes: u64,
}

impl SegmentSink for DirSink<'_> {
    fn put_segment(
        &mut self,
        seg: EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Equal shards share a CID (with k = 1 every parity shard is a copy):
        // one file each.
        let mut unique: Vec<(&Cid, &[u8])> = Vec::with_capacity(seg.shards.len());
        for (cid, bytes) in seg.segment.shards().iter().zip(&seg.shards) {
            if !unique.iter().any(|(c, _)| *c == cid) {
                unique.push((cid, bytes));
            }
        }
        let results: Vec<Result<Option<PathBuf>>> = unique
            .par_iter()
            .map(|(cid, bytes)| {
                let path = self.dir.join(cid.to_string());
                // Same name, same content: an existing shard stays if its bytes
                // still hash to its name (a rotted copy is replaced).
                if fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64)
                    && fs::read(&path).is_ok_and(|old| Cid::of_raw(&old) == **cid)
                {
                    return Ok(None);
                }
                files::write_renamed(&path, bytes, false)?;
                Ok(Some(path))
            })
            .collect();
        for (r, (_, bytes)) in results.into_iter().zip(&unique) {
            match r.map_err(|e| format!("{e:#}"))? {
                Some(path) => {
                    self.paths.push(path);
                    self.written += 1;
                    self.bytes += bytes.len() as u64;
                }
                None => self.skipped += 1,
            }
        }
        Ok(())
    }
}

/// Reads shards back from `DIR/<cid>`, into buffers the decoder gives back
/// (a fresh buffer per shard cost a page fault per 4 KiB: more system time
/// than the decoding's own).
pub(crate) struct DirSource {
    pub(crate) dir: PathBuf,
    pub(crate) buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl DirSource {
    pub(crate) fn new(dir: PathBuf) -> DirSource {
        DirSource { dir, buffers: std::sync::Mutex::new(Vec::new()) }
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(std::io::Error::other)?;
        let mut buf = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        // Only growth is zeroed; the rest is overwritten by the read.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf.truncate(len);
        std::io::Read::read_exact(&mut f, &mut buf)?;
        Ok(buf)
    }
}

impl ShardSource for DirSource {
    fn fetch(&self, req: &ShardRequest<'_>) -> std::result::Result<Piece, SourceError> {
        let path = self.dir.join(req.cid.to_string());
        match self.read(&path) {
            // The whole file is read anyway: handed over whole, the decoder
            // checks it with one hash, where a range proof of part of it
            // hashed the whole shard to make, and the range again to check.
            Ok(bytes) if bytes.len() as u64 == req.shard_len => Ok(Piece::Whole(bytes)),
            Ok(bytes) => chunker::answer_owned(req, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::Missing),
            Err(e) => Err(SourceError::Failed(format!("reading {}: {e}", path.display()))),
        }
    }

    fn recycle(&self, buf: Vec<u8>) {
        let mut pool = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        // Two windows' worth of shards at most.
        if pool.len() < 64 {
            pool.push(buf);
        }
    }
}

struct FileSeed {
    file: File,
    len: u64,
}

impl Seed for FileSeed {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

fn load_manifest(dir: &Path, cid: &Cid) -> Result<Manifest> {
    let path = dir.join(cid.to_string());
    let bytes = fs::read(&path).with_context(|| {
        format!("reading manifest {} (is --shards the directory `ionshard chunk --out` wrote?)", path.display())
    })?;
    Ok(Manifest::from_bytes_with_cid(&bytes, cid, &Limits::default())?)
}

fn open_input(path: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(std::io::stdin()), None));
    }
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = f.metadata().with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory: chunk takes one file (tar a directory first, or use `-` for stdin)", path.display());
    }
    Ok((Box::new(std::io::BufReader::with_capacity(1 << 20, f)), Some(meta.len())))
}

pub(crate) fn chunk(o: ChunkOpts) -> Result<()> {
    let mut params = Params::default().with_coding(o.data_shards, o.parity_shards).with_zstd_level(o.zstd_level);
    if let Some(avg) = o.chunk_avg {
        let avg = u32::try_from(avg).map_err(|_| anyhow::anyhow!("--chunk-avg {avg} is too large"))?;
        params = params.with_chunking(Chunking::with_avg(avg & !1));
    }
    if let Some(seg) = o.segment_size {
        let seg = u32::try_from(seg).map_err(|_| anyhow::anyhow!("--segment-size {seg} is too large (max 1GiB)"))?;
        params = params.with_segment_size(seg);
    }
    params.validate()?;
    let (input, total) = open_input(&o.file)?;
    fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let secret = o.secret.clone().unwrap_or_else(|| files::home().join("tenant.secret"));
    let (secret_bytes, created) = files::load_or_create_secret(&secret)?;
    if created && !o.json {
        eprintln!("created a new tenant secret at {} (keep it: it decides chunk ids and keys)", secret.display());
    }
    let secret = TenantSecret::from_bytes(secret_bytes);
    let mut known = KnownChunks::new();
    for cap in &o.known {
        let cap: ReadCapability = cap.parse()?;
        let m = load_manifest(&o.out, &cap.manifest)?;
        let contents = m.open(&cap.key).with_context(|| format!("opening --known {}", cap.manifest))?;
        known.add(&m, &contents)?;
    }
    let encoder = Encoder::new(params, &secret)?.with_known(&known).with_salt(rand::random());
    let pb = crate::progress::bar(total, "chunking", o.json);
    let started = Instant::now();
    let mut sink = DirSink { dir: &o.out, paths: Vec::new(), written: 0, skipped: 0, bytes: 0 };
    let encoded = encoder.encode(input, &mut sink, &mut |done| pb.set_position(done))?;
    // The manifest is the commit point: every shard it names is durable first.
    pb.set_message("syncing");
    files::sync_files(&sink.paths)?;
    files::sync_dir(&o.out)?;
    let manifest_bytes = encoded.manifest.to_bytes();
    let manifest_cid = Cid::of_cbor(&manifest_bytes);
    write_atomic(&o.out.join(manifest_cid.to_string()), &manifest_bytes)?;
    files::sync_dir(&o.out)?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let cap = ReadCapability { manifest: manifest_cid, key: encoded.read_key };
    let s = &encoded.stats;
    let mbps = s.object_len as f64 / 1e6 / secs.max(1e-9);
    if o.json {
        let v = json!({
            "capability": cap.to_string(),
            "manifest": manifest_cid.to_string(),
            "manifest_bytes": manifest_bytes.len(),
            "object_bytes": s.object_len,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "compressed_chunks": s.compressed_chunks,
            "new_segments": s.new_segments,
            "new_segment_bytes": s.new_segment_bytes,
            "shards_written": sink.written,
            "shards_already_present": sink.skipped,
            "shard_bytes_written": sink.bytes,
            "segments": encoded.manifest.segments().iter().map(|seg| json!({
                "length": seg.len(),
                "data_shards": seg.data_shards(),
                "shards": seg.shards().iter().map(ToString::to_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "data_shards": params.coding.data,
            "parity_shards": params.coding.parity,
            "seconds": secs,
            "mb_per_s": mbps,
        });
        println!("{v}");
    } else {
        eprintln!(
            "{} in {} chunks ({} new, {} compressed), {} new segment(s) of {}+{} shards: wrote {} shards ({}), {} already present; {:.2}s, {:.0} MB/s",
            human(s.object_len),
            s.chunks,
            s.new_chunks,
            s.compressed_chunks,
            s.new_segments,
            params.coding.data,
            params.coding.parity,
            sink.written,
            human(sink.bytes),
            sink.skipped,
            secs,
            mbps
        );
        eprintln!("manifest {manifest_cid} ({})", human(manifest_bytes.len() as u64));
        eprintln!("read capability (keep it secret; it reads this object):");
        println!("{cap}");
    }
    Ok(())
}

/// Options of `ionshard unchunk`.
#[derive(clap::Args)]
pub(crate) struct UnchunkOpts {
    /// The read capability `ionshard chunk` printed.
    pub(crate) capability: String,
    /// Directory holding the manifest and (any k per segment of) the shards.
    #[arg(long)]
    pub(crate) shards: PathBuf,
    /// Where to write the object (written to a temporary file, renamed when verified).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// An older version of the object: chunks it holds are not read from the shards.
    #[arg(long)]
    pub(crate) seed: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn unchunk(o: UnchunkOpts) -> Result<()> {
    let cap: ReadCapability = o.capability.parse()?;
    let manifest = load_manifest(&o.shards, &cap.manifest)?;
    let contents = manifest.open(&cap.key)?;
    let source = DirSource::new(o.shards.clone());
    let seed = match &o.seed {
        Some(p) => {
            let file = File::open(p).with_context(|| format!("opening seed {}", p.display()))?;
            let len = file.metadata().with_context(|| format!("reading seed {}", p.display()))?.len();
            Some(FileSeed { file, len })
        }
        None => None,
    };
    let mut decoder = Decoder::new(&manifest, &contents, &source);
    if let Some(s) = &seed {
        decoder = decoder.with_seed(s);
    }
    if o.out.is_dir() {
        bail!("--out {} is a directory: give the path of the file to write", o.out.display());
    }
    let tmp = files::temp_beside(&o.out);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let pb = crate::progress::bar(Some(contents.object_len()), "restoring", o.json);
    let started = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = decoder.decode(&mut w, &mut |done| pb.set_position(done));
    pb.finish_and_clear();
    let finish = |w: BufWriter<File>| -> Result<()> {
        let f = w.into_inner().map_err(|e| e.into_error()).context("flushing output")?;
        f.sync_all().context("syncing output")?;
        Ok(())
    };
    let stats = match result.map_err(anyhow::Error::from).and_then(|s| finish(w).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("nothing was written to {}", o.out.display())));
        }
    };
    fs::rename(&tmp, &o.out).with_context(|| format!("renaming into {}", o.out.display()))?;
    if let Some(dir) = o.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::sync_dir(dir)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mbps = stats.object_len as f64 / 1e6 / secs.max(1e-9);
    let problems: Vec<String> = stats.problems.iter().map(ToString::to_string).collect();
    if o.json {
        let v = json!({
            "out": o.out.display().to_string(),
            "object_bytes": stats.object_len,
            "chunks": stats.chunks,
            "seed_chunks": stats.seed_chunks,
            "seed_bytes": stats.seed_bytes,
            "fetched_bytes": stats.fetched_bytes,
            "requests": stats.requests,
            "rebuilt_ranges": stats.rebuilt_ranges,
            "problems": problems,
            "blake3": blake3::Hash::from_bytes(*contents.object_hash()).to_hex().to_string(),
            "seconds": secs,
            "mb_per_s": mbps,
        });
        println!("{v}");
    } else {
        for p in &problems {
            eprintln!("warning: {p}");
        }
        eprintln!(
            "restored {} to {} (verified, BLAKE3 {}) in {:.2}s, {:.0} MB/s",
            human(stats.object_len),
            o.out.display(),
            blake3::Hash::from_bytes(*contents.object_hash()).to_hex(),
            secs,
            mbps
        );
        if o.seed.is_some() {
            eprintln!(
                "seed supplied {} of {} chunks ({}); needed {} from the shards ({:.1}% of the object)",
                stats.seed_chunks,
                stats.chunks,
                human(stats.seed_bytes),
                human(stats.fetched_bytes),
                100.0 * stats.fetched_bytes as f64 / stats.object_len.max(1) as f64
            );
        } else {
            eprintln!("read {} from the shards in {} requests", human(stats.fetched_bytes), stats.requests);
        }
        if stats.rebuilt_ranges > 0 {
            eprintln!("rebuilt {} shard range(s) from parity", stats.rebuilt_ranges);
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
