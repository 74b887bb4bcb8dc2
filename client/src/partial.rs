//! The files of a fetch: the partial file `OUT.part` (written in place,
//! synced every [`SYNC_EVERY`] bytes, locked to one fetch), the seeds it is
//! read back from, and spans of the manifest file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chunker::Seed;

use crate::error::{Error, Result};
use crate::files::with_suffix;

/// `OUT.part`: where a fetch to `OUT` writes until the object is whole.
pub fn part_path(out: &Path) -> PathBuf {
    with_suffix(out, ".part")
}

/// Open (or create) the partial file, locked: one fetch per output at a
/// time (the lock goes with the process).
pub(crate) fn open_part(part: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(part)
        .map_err(Error::file("opening", part))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(part.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::file("locking", part)(e)),
    }
}

/// The partial file of an interrupted fetch, then the seed image, as one seed.
pub(crate) struct Seeds {
    pub(crate) parts: Vec<(File, u64)>,
    /// The decoder first reads the whole seed once to index it (not counted),
    /// then copies chunks (counted).
    indexed: AtomicBool,
    /// Bytes copied from the first file (the partial one).
    pub(crate) from_part: AtomicU64,
    /// Bytes copied from the others (an old partial file, the seed image).
    pub(crate) from_seed: AtomicU64,
}

impl Seeds {
    pub(crate) fn new(parts: Vec<(File, u64)>) -> Seeds {
        Seeds { parts, indexed: AtomicBool::new(false), from_part: AtomicU64::new(0), from_seed: AtomicU64::new(0) }
    }

    /// Read (across files if need be), and say from which file it started.
    fn read_uncounted(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let (mut base, mut first, mut done) = (0u64, None, 0usize);
        for (i, (f, len)) in self.parts.iter().enumerate() {
            let at = offset + done as u64;
            if done < buf.len() && at < base + len {
                let n = ((base + len - at) as usize).min(buf.len() - done);
                f.read_exact_at(&mut buf[done..done + n], at - base)?;
                first.get_or_insert(i);
                done += n;
            }
            base += len;
        }
        if done < buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the seed"));
        }
        Ok(first.unwrap_or(0))
    }
}

impl Seed for Seeds {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if !self.indexed.load(Ordering::Relaxed) {
            if offset + buf.len() as u64 >= self.size() {
                self.indexed.store(true, Ordering::Relaxed);
            }
            return self.read_uncounted(offset, buf).map(|_| ());
        }
        let i = self.read_uncounted(offset, buf)?;
        let counter = if i == 0 { &self.from_part } else { &self.from_seed };
        counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Bytes `start..start + len` of a file, read at will: the manifest, or its
/// sealed part.
pub(crate) struct FileSpan {
    pub(crate) file: File,
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl FileSpan {
    pub(crate) fn whole(file: File, path: &Path) -> Result<Self> {
        let len = file.metadata().map_err(Error::file("reading", path))?.len();
        Ok(FileSpan { file, start: 0, len })
    }
}

impl Seed for FileSpan {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + buf.len() as u64 > self.len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the manifest"));
        }
        self.file.read_exact_at(buf, self.start + offset)
    }
}

/// Writes windows at their offsets, syncing every [`SYNC_EVERY`] bytes: a
/// kill loses nothing written (the page cache keeps it), a power loss at
/// most that much, which the next run downloads again.
pub(crate) struct PartWriter {
    pub(crate) file: File,
    unsynced: u64,
    /// Asks the syncing thread for a sync (at most one waiting).
    ask: Option<std::sync::mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

impl PartWriter {
    /// Write `file`, syncing it on a thread of its own every
    /// [`SYNC_EVERY`] bytes: a power loss costs a rerun at most about that
    /// much again, and the fetch never waits for the disk on the way (a
    /// sync in line stalled every window behind it: 79 MB/s to this disk
    /// against 121 to tmpfs on the speed bench).
    pub(crate) fn new(file: File) -> PartWriter {
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let syncer = file.try_clone().ok().and_then(|f| {
            std::thread::Builder::new()
                .name("sync-part".into())
                .spawn(move || {
                    while asked.recv().is_ok() {
                        // A failed background sync is not fatal: the final
                        // sync before the rename reports it.
                        let _ = f.sync_data();
                    }
                })
                .ok()
        });
        PartWriter { file, unsynced: 0, ask: syncer.is_some().then_some(ask), syncer }
    }

    /// Stop the syncing thread (the caller syncs the whole file itself).
    pub(crate) fn into_file(mut self) -> File {
        self.ask = None;
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.file
    }

    /// `n` more bytes written: a sync once [`SYNC_EVERY`] are.
    fn wrote(&mut self, n: usize) -> std::io::Result<()> {
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            match &self.ask {
                // One sync waiting is enough: it covers these bytes too.
                Some(ask) => {
                    let _ = ask.try_send(());
                }
                None => self.file.sync_data()?,
            }
        }
        Ok(())
    }
}

/// Bytes written between syncs of the partial file.
const SYNC_EVERY: u64 = 32 << 20;

/// Windows written where they belong, as they are done (a fetch): what
/// a kill leaves is found again by the next run's seed index, wherever it
/// lies in the file.
impl chunker::WriteAt for PartWriter {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)?;
        self.wrote(buf.len())
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_holds_every_byte_written_past_its_background_syncs() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("x.part");
        use chunker::WriteAt;
        let mut w = PartWriter::new(File::create(&path).expect("create"));
        let piece: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
        // More than two sync periods, out of order.
        for i in (0..15u64).rev() {
            w.write_at(i * piece.len() as u64, &piece).expect("write");
        }
        w.write_at(15 * piece.len() as u64, b"tail").expect("write");
        let f = w.into_file();
        f.sync_all().expect("sync");
        let got = std::fs::read(&path).expect("read");
        assert_eq!(got.len(), 15 * piece.len() + 4);
        assert!(got.chunks(piece.len()).take(15).all(|c| c == &piece[..]));
        assert!(got.ends_with(b"tail"));
    }

    #[test]
    fn seeds_read_across_files_and_count_where_bytes_came_from() {
        let d = tempfile::tempdir().expect("tempdir");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"0123").expect("a");
        std::fs::write(&b, b"456789").expect("b");
        let open = |p: &Path| File::open(p).expect("open");
        let s = Seeds::new(vec![(open(&a), 4), (open(&b), 6)]);
        assert_eq!(s.size(), 10);
        let mut all = [0u8; 10];
        s.read_at(0, &mut all).expect("index pass");
        assert_eq!(&all, b"0123456789");
        let mut two = [0u8; 2];
        s.read_at(3, &mut two).expect("spanning read");
        assert_eq!(&two, b"34");
        s.read_at(6, &mut two).expect("seed read");
        assert_eq!(s.from_part.load(Ordering::Relaxed), 2);
        assert_eq!(s.from_seed.load(Ordering::Relaxed), 2);
        assert!(s.read_at(9, &mut two).is_err(), "past the end");
    }

    #[test]
    fn a_second_fetch_to_the_same_place_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = part_path(&d.path().join("out.img"));
        let _first = open_part(&p).expect("first");
        assert!(matches!(open_part(&p), Err(Error::Busy(_))));
    }
}
