//! The file operations a store makes, behind a trait so tests can make them
//! fail or stop dead at any step.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// File operations of a shard store.
pub trait Backend: Send + Sync + 'static {
    /// Create `path` (new), write `bytes`, fsync.
    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Rename within one filesystem (atomic).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Read a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Open a file to read parts of it (ranges, streamed gets).
    fn open(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }
    /// Remove a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsync a directory, so renames and removals in it are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fs;

impl Backend for Fs {
    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = File::options().write(true).create_new(true).open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
