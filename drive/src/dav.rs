//! The drive as a WebDAV file system (`dav-server`'s [`DavFileSystem`]),
//! over a [`Served`] drive (see there for how changes reach the devices).

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream, OpenOptions,
    ReadDirMeta,
};
use futures::FutureExt;

use crate::error::Error;
use crate::served::{Change, Fetched, Locked, Served, Upload, now};
use crate::tree::{self, Entry, Tree};

fn fs_error(e: &Error) -> FsError {
    match e {
        Error::NotInDrive(_) => FsError::NotFound,
        Error::BadPath { .. } => FsError::Forbidden,
        Error::Exists(_) => FsError::Exists,
        Error::NoRoom(_) => FsError::InsufficientStorage,
        _ => FsError::GeneralFailure,
    }
}

/// The drive path of a WebDAV path (decoded, UTF-8, checked).
fn path_of(p: &DavPath) -> FsResult<String> {
    let s = std::str::from_utf8(p.as_bytes()).map_err(|_| FsError::Forbidden)?;
    tree::normal(s).map_err(|_| FsError::Forbidden)
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// The tree, as WebDAV wants errors.
async fn tree_of(s: &Served) -> FsResult<Locked<'_>> {
    s.tree().await.map_err(|e| fs_error(&e))
}

/// A change, as WebDAV wants errors.
async fn change(s: &Served, op: Change) -> FsResult<()> {
    s.change(op).await.map_err(|e| fs_error(&e))
}

/// A served drive as `dav-server` uses it.
#[derive(Clone, Debug)]
pub struct DavDrive(pub Arc<Served>);

#[derive(Debug, Clone)]
struct Meta {
    len: u64,
    modified: u64,
    dir: bool,
    /// A file's content hash: its ETag.
    blake3: Option<String>,
}

impl DavMetaData for Meta {
    fn etag(&self) -> Option<String> {
        match &self.blake3 {
            Some(h) => Some(h.chars().take(32).collect()),
            None => Some(format!("{:x}", self.modified)),
        }
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(self.modified))
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
}

fn meta_of(t: &Tree, path: &str) -> FsResult<Meta> {
    if path == "/" {
        return Ok(Meta { len: 0, modified: 0, dir: true, blake3: None });
    }
    match t.get(path) {
        Some(Entry::Dir { created }) => Ok(Meta { len: 0, modified: *created, dir: true, blake3: None }),
        Some(Entry::File { versions }) => {
            let v = versions.last().ok_or(FsError::NotFound)?;
            Ok(Meta { len: v.len, modified: v.at, dir: false, blake3: Some(v.blake3.clone()) })
        }
        None => Err(FsError::NotFound),
    }
}

struct DirEntry {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for DirEntry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }
    fn metadata(&'_ self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        futures::future::ready(Ok(m)).boxed()
    }
}

#[derive(Debug)]
struct ReadFile {
    spool: Arc<Fetched>,
    meta: Meta,
    pos: u64,
}

#[derive(Debug)]
struct WriteFile {
    path: String,
    spool: Upload,
    pos: u64,
    len: u64,
    done: bool,
    /// The bytes the request said it sends (`Content-Length`, or Finder's
    /// `X-Expected-Entity-Length`), and the bytes written so far.
    expected: Option<u64>,
    written: u64,
}

impl DavFile for ReadFile {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        futures::future::ready(Ok(m)).boxed()
    }
    fn write_buf(&'_ mut self, _: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    fn write_bytes(&'_ mut self, _: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    fn read_bytes(&'_ mut self, count: usize) -> FsFuture<'_, Bytes> {
        let want = count.min(self.meta.len.saturating_sub(self.pos) as usize);
        let mut buf = vec![0u8; want];
        let read = std::os::unix::fs::FileExt::read_exact_at(self.spool.file(), &mut buf, self.pos);
        let r = match read {
            Ok(()) => {
                self.pos += want as u64;
                Ok(Bytes::from(buf))
            }
            Err(_) => Err(FsError::GeneralFailure),
        };
        futures::future::ready(r).boxed()
    }
    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let r = seek_to(&mut self.pos, self.meta.len, pos);
        futures::future::ready(r).boxed()
    }
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}

fn seek_to(pos: &mut u64, len: u64, to: SeekFrom) -> FsResult<u64> {
    let new = match to {
        SeekFrom::Start(n) => Some(n),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    *pos = new.ok_or(FsError::GeneralFailure)?;
    Ok(*pos)
}

impl WriteFile {
    fn write_to(file: &mut std::fs::File, pos: &mut u64, len: &mut u64, bytes: &[u8]) -> FsResult<()> {
        file.seek(SeekFrom::Start(*pos)).map_err(|_| FsError::GeneralFailure)?;
        file.write_all(bytes).map_err(|e| {
            if e.raw_os_error() == Some(28) { FsError::InsufficientStorage } else { FsError::GeneralFailure }
        })?;
        *pos += bytes.len() as u64;
        *len = (*len).max(*pos);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> FsResult<()> {
        Self::write_to(self.spool.file_mut(), &mut self.pos, &mut self.len, bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl DavFile for WriteFile {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta { len: self.len, modified: now(), dir: false, blake3: None });
        futures::future::ready(Ok(m)).boxed()
    }
    fn write_buf(&'_ mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let mut r = Ok(());
        while buf.has_remaining() && r.is_ok() {
            let chunk = buf.chunk();
            let n = chunk.len();
            r = WriteFile::write_to(self.spool.file_mut(), &mut self.pos, &mut self.len, chunk);
            self.written += n as u64;
            buf.advance(n);
        }
        futures::future::ready(r).boxed()
    }
    fn write_bytes(&'_ mut self, buf: Bytes) -> FsFuture<'_, ()> {
        let r = self.write(&buf);
        futures::future::ready(r).boxed()
    }
    fn read_bytes(&'_ mut self, _: usize) -> FsFuture<'_, Bytes> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    /// Within what was written (a partial PUT continues a file, it does
    /// not leave a hole: `Content-Range: bytes 1099511627776-…` made the
    /// devices store a 1 TiB file of zeros).
    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let mut at = self.pos;
        let r = match seek_to(&mut at, self.len, pos) {
            Ok(n) if n > self.len => Err(FsError::NotImplemented),
            Ok(n) => {
                self.pos = n;
                Ok(n)
            }
            Err(e) => Err(e),
        };
        futures::future::ready(r).boxed()
    }
    /// The upload is over: store it, then name it in the tree.
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        async move {
            if self.done {
                return Ok(());
            }
            // dav-server names the file (this flush) before it compares the
            // body with what the request said: a body that ended short, or
            // was cut at the said length, would have been stored as the
            // newest version while the client was told 400.
            if self.expected.is_some_and(|n| n != self.written) {
                tracing::warn!(
                    "{}: {} bytes came of the {} the request said: not stored",
                    self.path,
                    self.written,
                    self.expected.unwrap_or(0)
                );
                return Err(FsError::GeneralFailure);
            }
            self.spool.finish(&self.path, self.len).await.map_err(|e| {
                tracing::warn!("storing {}: {e}", self.path);
                fs_error(&e)
            })?;
            self.done = true;
            Ok(())
        }
        .boxed()
    }
}

impl DavFileSystem for DavDrive {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let p = path_of(path)?;
            if p == "/" {
                return Err(FsError::Forbidden);
            }
            let served = &self.0;
            let (existing, parent_ok) = {
                let st = tree_of(served).await?;
                let existing = match st.get(&p) {
                    Some(Entry::Dir { .. }) => return Err(FsError::Forbidden),
                    Some(Entry::File { versions }) => versions.last().cloned(),
                    None => None,
                };
                let parent = parent_of(&p);
                (existing, parent == "/" || matches!(st.get(parent), Some(Entry::Dir { .. })))
            };
            if options.write {
                if options.create_new && existing.is_some() {
                    return Err(FsError::Exists);
                }
                if existing.is_none() && !options.create {
                    return Err(FsError::NotFound);
                }
                if !parent_ok {
                    return Err(FsError::NotFound);
                }
                // A partial write keeps what is there: fetched, then written over.
                let from = if options.truncate { None } else { existing.as_ref() };
                let len = from.map_or(0, |v| v.len);
                let spool = served.upload(from).await.map_err(|e| fs_error(&e))?;
                let pos = if options.append { len } else { 0 };
                let f = WriteFile { path: p, spool, pos, len, done: false, expected: options.size, written: 0 };
                return Ok(Box::new(f) as Box<dyn DavFile>);
            }
            let v = existing.ok_or(FsError::NotFound)?;
            let spool = served.fetched(&v).await.map_err(|e| fs_error(&e))?;
            let meta = Meta { len: v.len, modified: v.at, dir: false, blake3: Some(v.blake3.clone()) };
            Ok(Box::new(ReadFile { spool, meta, pos: 0 }) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, _: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let p = path_of(path)?;
            let st = tree_of(&self.0).await?;
            let lines = st.list(&p).map_err(|e| fs_error(&e))?;
            if lines.len() == 1 && lines[0].path == p && !lines[0].dir {
                return Err(FsError::Forbidden);
            }
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = lines
                .into_iter()
                .map(|l| {
                    let name = l.path.rsplit('/').next().unwrap_or_default().as_bytes().to_vec();
                    let e: Box<dyn DavDirEntry> = Box::new(DirEntry {
                        name,
                        meta: Meta { len: l.len, modified: l.at, dir: l.dir, blake3: None },
                    });
                    Ok(e)
                })
                .collect();
            let s: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures::stream::iter(entries));
            Ok(s)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let p = path_of(path)?;
            let st = tree_of(&self.0).await?;
            let m: Box<dyn DavMetaData> = Box::new(meta_of(&st, &p)?);
            Ok(m)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let p = path_of(path)?;
            {
                let st = tree_of(&self.0).await?;
                if p == "/" || st.get(&p).is_some() {
                    return Err(FsError::Exists);
                }
                let parent = parent_of(&p);
                if parent != "/" && !matches!(st.get(parent), Some(Entry::Dir { .. })) {
                    return Err(FsError::NotFound);
                }
            }
            change(&self.0, Change::Mkdir(p)).await
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path, true)
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove(path, false)
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (a, b) = (path_of(from)?, path_of(to)?);
            self.make_room(&b).await?;
            change(&self.0, Change::Rename(a, b)).await
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (a, b) = (path_of(from)?, path_of(to)?);
            self.make_room(&b).await?;
            change(&self.0, Change::Copy(a, b)).await
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(futures::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(http::StatusCode, DavProp)>> {
        async move {
            let p = path_of(path)?;
            let ours: Vec<(bool, tree::Prop)> = patch.iter().map(|(set, d)| (*set, to_prop(d))).collect();
            change(&self.0, Change::Props(p, ours)).await?;
            Ok(patch.into_iter().map(|(_, d)| (http::StatusCode::OK, DavProp { xml: None, ..d })).collect())
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let p = path_of(path)?;
            let st = tree_of(&self.0).await?;
            meta_of(&st, &p)?;
            Ok(st.props.get(&p).map(|m| m.values().map(|x| from_prop(x, do_content)).collect()).unwrap_or_default())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let p = path_of(path)?;
            let st = tree_of(&self.0).await?;
            let key = to_prop(&prop).key();
            st.props
                .get(&p)
                .and_then(|m| m.get(&key))
                .and_then(|x| x.xml.clone())
                .map(String::into_bytes)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }
}

fn to_prop(p: &DavProp) -> tree::Prop {
    tree::Prop {
        name: p.name.clone(),
        prefix: p.prefix.clone(),
        namespace: p.namespace.clone(),
        xml: p.xml.as_ref().map(|x| String::from_utf8_lossy(x).into_owned()),
    }
}

fn from_prop(p: &tree::Prop, content: bool) -> DavProp {
    DavProp {
        name: p.name.clone(),
        prefix: p.prefix.clone(),
        namespace: p.namespace.clone(),
        xml: if content { p.xml.as_ref().map(|x| x.clone().into_bytes()) } else { None },
    }
}

impl DavDrive {
    /// Clear `to` for a move or copy: a file there goes to the trash (it
    /// is replaced); a folder there is never replaced.
    async fn make_room(&self, to: &str) -> FsResult<()> {
        let st = tree_of(&self.0).await?;
        match st.get(to) {
            Some(Entry::Dir { .. }) => Err(FsError::Exists),
            Some(Entry::File { .. }) => {
                drop(st);
                change(&self.0, Change::Remove(to.to_string())).await
            }
            None => Ok(()),
        }
    }

    fn remove<'a>(&'a self, path: &'a DavPath, dir: bool) -> FsFuture<'a, ()> {
        async move {
            let p = path_of(path)?;
            {
                let st = tree_of(&self.0).await?;
                match st.get(&p) {
                    None => return Err(FsError::NotFound),
                    Some(Entry::Dir { .. }) if !dir => return Err(FsError::Forbidden),
                    Some(Entry::File { .. }) if dir => return Err(FsError::Forbidden),
                    _ => {}
                }
            }
            change(&self.0, Change::Remove(p)).await
        }
        .boxed()
    }
}
