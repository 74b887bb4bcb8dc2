//! Letters on disk: those a node holds to deliver ([`Spool`]: sealed, as
//! they came), those it receives ([`Inbox`]), and the list of letters it
//! sent and received ([`Letters`]).
//!
//! A spool keeps each letter in a folder named by its id: `envelope` (its
//! bytes) and `parts` (its sealed parts in order, synced before a part is
//! acknowledged). A letter whose parts are not all there is not delivered;
//! a part cut by a crash is asked again and written over the cut one.
//! A letter written by this node is made whole in a folder of its own and
//! renamed into place, so it is never seen half written.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use net::PeerId;
use serde::{Deserialize, Serialize};

use crate::FriendKey;
use crate::error::{Error, Result};
use crate::friends::{Answer, Envelope, Id, Letter, PART, Refusal, SEALED_PART, open_part};

/// The most letters a spool keeps at once.
const MAX_LETTERS: usize = 10_000;
/// The largest letters list read.
const MAX_LIST: u64 = 64 << 20;

fn hex(id: &Id) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// Letters kept to be delivered, sealed.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    quota: u64,
}

fn refused(reason: Refusal, message: impl Into<String>) -> (Refusal, String) {
    (reason, message.into())
}

/// A letter's id from its folder's name (32 hex digits), if it is one.
fn id_of(name: &str) -> Option<Id> {
    if name.len() != 32 {
        return None;
    }
    data_encoding::HEXLOWER.decode(name.as_bytes()).ok()?.try_into().ok()
}

/// Sync folder `dir`: a rename in it lasts.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Spool {
    /// The spool in `dir` (made if missing), keeping at most `quota`
    /// sealed bytes. Letters half written by this node (an hour ago or
    /// more), or half removed, when a process was killed are cleared.
    pub fn open(dir: &Path, quota: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir).map_err(Error::file("making", dir))?;
        let spool = Spool { dir: dir.to_path_buf(), quota };
        let _g = spool.locked()?;
        for e in std::fs::read_dir(dir).map_err(Error::file("reading", dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Another process may be writing a letter now: only those
            // left for an hour are a killed one's.
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            let stale = name.ends_with(".gone") || old.is_some_and(|d| d.as_secs() > 3600);
            if name.starts_with('.') && (name.ends_with(".new") || name.ends_with(".gone")) && stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(spool)
    }

    /// The spool's lock, held while it changes (a node's threads and
    /// another process on the same folder take turns).
    fn locked(&self) -> Result<std::fs::File> {
        let path = self.dir.join(".lock");
        crate::files::lock(&path).map_err(Error::file("locking", &path))
    }

    fn folder(&self, id: &Id) -> PathBuf {
        self.dir.join(hex(id))
    }

    /// The letter `id`, if kept here.
    pub fn envelope(&self, id: &Id) -> Option<Envelope> {
        let b = crate::files::read_bounded(&self.folder(id).join("envelope"), 1 << 20).ok()??;
        Envelope::decode(&b).ok()
    }

    /// The letters kept here, whole or not.
    pub fn all(&self) -> Vec<Envelope> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut ids: Vec<Id> = rd.flatten().filter_map(|e| id_of(e.file_name().to_str()?)).collect();
        ids.sort_unstable();
        ids.iter().filter_map(|id| self.envelope(id)).collect()
    }

    /// The letters whose parts are all here.
    pub fn ready(&self) -> Vec<Envelope> {
        self.all().into_iter().filter(|e| self.next(e) == e.parts).collect()
    }

    /// The part to send next of `e` (`e.parts`: all here). A part cut
    /// short by a crash counts as missing; it is written again at its
    /// place, over what was cut.
    pub fn next(&self, e: &Envelope) -> u32 {
        let have = std::fs::metadata(self.folder(&e.id).join("parts")).map_or(0, |m| m.len());
        if have >= e.sealed_len() { e.parts } else { (have / SEALED_PART as u64) as u32 }
    }

    /// Keep the letter `e` (a second offer of one kept says where it
    /// stands); the part to send next.
    pub fn offer(&self, e: &Envelope) -> std::result::Result<u32, (Refusal, String)> {
        let internal = |err: String| refused(Refusal::Internal, format!("keeping the letter: {err}"));
        let _g = self.locked().map_err(|e| internal(e.to_string()))?;
        if let Some(kept) = self.envelope(&e.id) {
            if kept != *e {
                return Err(refused(Refusal::BadRequest, "another letter with this id is kept here"));
            }
            return Ok(self.next(&kept));
        }
        let all = self.all();
        if all.len() >= MAX_LETTERS {
            return Err(refused(Refusal::Full, format!("{MAX_LETTERS} letters are waiting here already")));
        }
        let used: u64 = all.iter().map(Envelope::sealed_len).sum();
        if used.saturating_add(e.sealed_len()) > self.quota {
            return Err(refused(
                Refusal::Full,
                format!(
                    "no room: {used} of {} bytes held for delivery; this letter needs {}",
                    self.quota,
                    e.sealed_len()
                ),
            ));
        }
        let io = |err: std::io::Error| internal(err.to_string());
        let tmp = self.dir.join(format!(".{}.new", hex(&e.id)));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io)?;
        crate::files::write_private(&tmp.join("envelope"), &e.encode()).map_err(io)?;
        std::fs::File::create(tmp.join("parts")).and_then(|f| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, self.folder(&e.id)).map_err(io)?;
        sync_dir(&self.dir).map_err(io)?;
        Ok(0)
    }

    /// Keep sealed part `index` of letter `id` if it is the one expected
    /// and `opens` says it is genuine; the part to send next.
    pub fn put(
        &self,
        id: &Id,
        index: u32,
        sealed: &[u8],
        opens: impl FnOnce(&Envelope) -> bool,
    ) -> std::result::Result<(Envelope, u32), (Refusal, String)> {
        let internal = |err: String| refused(Refusal::Internal, format!("keeping part {index}: {err}"));
        let _g = self.locked().map_err(|e| internal(e.to_string()))?;
        let e =
            self.envelope(id).ok_or_else(|| refused(Refusal::NoSuchLetter, "no such letter here: offer it first"))?;
        let next = self.next(&e);
        if index != next || next == e.parts {
            // Sent again after a lost answer, or out of order: say where.
            return Ok((e, next));
        }
        if sealed.len() != e.part_len(index) || !opens(&e) {
            return Err(refused(Refusal::Forged, format!("part {index} is not this letter's")));
        }
        let io = |err: std::io::Error| internal(err.to_string());
        let mut f = std::fs::OpenOptions::new().write(true).open(self.folder(id).join("parts")).map_err(io)?;
        f.seek(SeekFrom::Start(u64::from(index) * SEALED_PART as u64)).map_err(io)?;
        f.write_all(sealed).and_then(|()| f.sync_data()).map_err(io)?;
        Ok((e, index + 1))
    }

    /// Sealed part `index` of `e`, as kept.
    pub fn part(&self, e: &Envelope, index: u32) -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(self.folder(&e.id).join("parts"))?;
        f.seek(SeekFrom::Start(u64::from(index) * SEALED_PART as u64))?;
        let mut v = vec![0u8; e.part_len(index)];
        f.read_exact(&mut v)?;
        Ok(v)
    }

    /// Drop part `index` of `e` and those after it (one that does not
    /// open any more): they are asked again.
    fn cut(&self, e: &Envelope, index: u32) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(self.folder(&e.id).join("parts")) {
            let _ = f.set_len(u64::from(index) * SEALED_PART as u64).and_then(|()| f.sync_all());
        }
    }

    /// Keep a letter this node wrote, whole: `e` and its sealed parts;
    /// `check`, once they are written, may still refuse it. Seen by the
    /// courier only once whole and checked.
    pub fn write(
        &self,
        e: &Envelope,
        mut part: impl FnMut(u32) -> Result<Vec<u8>>,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let tmp = self.dir.join(format!(".{}.new", hex(&e.id)));
        let made = (|| {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(Error::file("making", &tmp))?;
            crate::files::write_private(&tmp.join("envelope"), &e.encode()).map_err(Error::file("writing", &tmp))?;
            let path = tmp.join("parts");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(Error::file("making", &path))?);
            for i in 0..e.parts {
                f.write_all(&part(i)?).map_err(Error::file("writing", &path))?;
            }
            let f = f.into_inner().map_err(|e| Error::file("writing", &path)(e.into_error()))?;
            f.sync_all().map_err(Error::file("syncing", &path))?;
            check()
        })();
        if let Err(err) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(err);
        }
        let _g = self.locked()?;
        std::fs::rename(&tmp, self.folder(&e.id)).map_err(Error::file("keeping", &tmp))?;
        sync_dir(&self.dir).map_err(Error::file("syncing", &self.dir))
    }

    /// Forget letter `id` (delivered, or never deliverable): renamed out
    /// of sight first, so a kill halfway leaves no half letter.
    pub fn remove(&self, id: &Id) {
        let Ok(_g) = self.locked() else { return };
        let gone = self.dir.join(format!(".{}.gone", hex(id)));
        if std::fs::rename(self.folder(id), &gone).is_ok() {
            let _ = std::fs::remove_dir_all(&gone);
        }
    }
}

/// A letter in a node's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Its id, hex.
    pub id: String,
    /// Received (or sent)?
    pub incoming: bool,
    /// The friend: sender or recipient.
    pub peer: String,
    /// The friend's name, as paired.
    pub name: String,
    /// When it was written (seconds since the epoch).
    pub at: u64,
    /// Its text.
    pub text: String,
    /// Its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<KeptFile>,
    /// Where it stands: `received`; or, sent, `waiting` (on this node),
    /// `held` (by this person's own devices) or `delivered`.
    pub state: String,
}

/// A letter's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFile {
    /// Its name.
    pub name: String,
    /// Its bytes.
    pub len: u64,
    /// Where it was saved (received) or read from (sent).
    pub path: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct List {
    format: u32,
    letters: Vec<Kept>,
}

/// A node's list of letters, in `DIR/drive/letters.json` (format 1),
/// changed under a lock (the node and a command may both write it).
#[derive(Debug, Clone)]
pub struct Letters {
    path: PathBuf,
}

impl Letters {
    /// The list in the drive folder `dir`.
    pub fn at(dir: &Path) -> Letters {
        Letters { path: dir.join("letters.json") }
    }

    fn read(&self) -> Result<List> {
        let err = |why: String| Error::Pairs { path: self.path.clone(), why };
        match crate::files::read_bounded(&self.path, MAX_LIST).map_err(|e| err(e.to_string()))? {
            None => Ok(List { format: 1, letters: Vec::new() }),
            Some(b) => {
                let l: List = serde_json::from_slice(&b).map_err(|e| err(format!("not a letters list: {e}")))?;
                if l.format != 1 {
                    return Err(err(format!("letters format {}, this build reads 1", l.format)));
                }
                Ok(l)
            }
        }
    }

    /// The letters, oldest first.
    pub fn list(&self) -> Result<Vec<Kept>> {
        Ok(self.read()?.letters)
    }

    /// Change the list with `f`, under the lock; what `f` returned.
    pub fn update<T>(&self, f: impl FnOnce(&mut Vec<Kept>) -> T) -> Result<T> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::file("making", dir))?;
        let lock_path = dir.join("letters.lock");
        let _lock = crate::files::lock(&lock_path).map_err(Error::file("locking", &lock_path))?;
        let mut l = self.read()?;
        let out = f(&mut l.letters);
        let bytes = serde_json::to_vec_pretty(&l).map_err(|e| Error::Drive(e.to_string()))?;
        crate::files::write_private(&self.path, &bytes).map_err(Error::file("writing", &self.path))?;
        Ok(out)
    }

    /// Set the state of sent letter `id`.
    pub fn set_state(&self, id: &Id, state: &str) -> Result<()> {
        let id = hex(id);
        self.update(|l| l.iter_mut().filter(|k| k.id == id && !k.incoming).for_each(|k| k.state = state.into()))
    }
}

/// Where a node receives its friends' letters: files go to
/// `received/FRIEND/NAME`, texts and the rest to the [`Letters`] list.
#[derive(Debug)]
pub struct Inbox {
    me: PeerId,
    spool: Spool,
    letters: Letters,
    received: PathBuf,
    pairs: PathBuf,
}

/// The answer to an offer or a part: the part wanted next, or why not.
fn next_or_refused(r: std::result::Result<u32, (Refusal, String)>) -> Answer {
    match r {
        Ok(n) => Answer::Next(n),
        Err((reason, message)) => Answer::refused(reason, message),
    }
}

/// The most bytes of one friend's files a node keeps (received, and on
/// their way).
const PER_FRIEND: u64 = 32 << 30;

/// Bytes of the files under `dir` (0 if there is none).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Letters list bytes past which no more letters are taken (it is read
/// whole, and at most [`MAX_LIST`] of it).
const LIST_FULL: u64 = MAX_LIST - (1 << 20);

impl Inbox {
    /// The inbox of node `me` whose drive folder is `dir`, taking at most
    /// `quota` bytes of letters not yet whole.
    pub fn open(me: PeerId, dir: &Path, quota: u64) -> Result<Inbox> {
        Ok(Inbox {
            me,
            spool: Spool::open(&dir.join("incoming"), quota)?,
            letters: Letters::at(dir),
            received: dir.join("received"),
            pairs: dir.join("pairs.json"),
        })
    }

    /// The list of letters.
    pub fn letters(&self) -> &Letters {
        &self.letters
    }

    fn friend(&self, peer: &PeerId) -> std::result::Result<(FriendKey, String), (Refusal, String)> {
        let pairs = crate::Pairs::load(&self.pairs).map_err(|e| refused(Refusal::Internal, e.to_string()))?;
        let key = pairs.friend_key(peer).ok_or_else(|| {
            refused(
                Refusal::NotFriend,
                format!("{peer} is not a friend of this node (pair with `drive pair --friend`)"),
            )
        })?;
        let name = pairs.friends().into_iter().find(|(p, _)| p == peer).map(|(_, n)| n).unwrap_or_default();
        Ok((key, name))
    }

    /// Was letter `e` received? (A list that does not read is an error:
    /// the letter is then asked again later, not taken twice.)
    fn received(&self, e: &Envelope) -> std::result::Result<bool, (Refusal, String)> {
        let (id, from) = (hex(&e.id), e.from.to_string());
        let list = self.letters.list().map_err(|e| refused(Refusal::Internal, e.to_string()))?;
        Ok(list.iter().any(|k| k.incoming && k.id == id && k.peer == from))
    }

    /// A letter offered to this node.
    pub fn offer(&self, e: Envelope) -> Answer {
        let r = (|| {
            if e.to != self.me {
                return Err(refused(Refusal::NotFriend, "this letter is for another node"));
            }
            // A stranger is told what a forger is: whom this node calls a
            // friend is not for it to learn.
            let not_here = || {
                refused(
                    Refusal::Forged,
                    "the letter does not open here: it is not from a friend of this node, or not sealed with its key",
                )
            };
            let (key, name) = self.friend(&e.from).map_err(|_| not_here())?;
            let letter = Letter::open(&key, &e).ok_or_else(not_here)?;
            if self.received(&e)? {
                return Ok(e.parts);
            }
            self.room_for(&e, &name)?;
            if e.parts == 0 {
                match letter.file {
                    None => self.record(&e, &name, &letter, None)?,
                    // An empty file: nothing to carry, saved at once.
                    Some(_) => self.finish(&e, &key, &name)?,
                }
                return Ok(0);
            }
            let next = self.spool.offer(&e)?;
            if next == e.parts {
                // All here before, and not saved (a failure then): again.
                self.finish(&e, &key, &name)?;
            }
            Ok(next)
        })();
        next_or_refused(r)
    }

    /// Whether this node takes letter `e` from friend `name`: its list
    /// of letters is not full, and the friend's files (received, and on
    /// their way) stay within [`PER_FRIEND`].
    fn room_for(&self, e: &Envelope, name: &str) -> std::result::Result<(), (Refusal, String)> {
        if std::fs::metadata(&self.letters.path).is_ok_and(|m| m.len() > LIST_FULL) {
            return Err(refused(
                Refusal::Full,
                "this node's list of letters is full: its owner clears it with `ionshard drive msg clear`",
            ));
        }
        if e.parts == 0 {
            return Ok(());
        }
        let on_the_way: u64 = self.spool.all().iter().filter(|x| x.from == e.from).map(Envelope::sealed_len).sum();
        let kept = bytes_under(&self.received.join(safe_name(name, "friend")));
        if on_the_way.saturating_add(kept).saturating_add(e.len) > PER_FRIEND {
            return Err(refused(
                Refusal::Full,
                format!(
                    "no room for this file: {name}'s files here would pass {} GiB; the owner moves some out of {}",
                    PER_FRIEND >> 30,
                    self.received.display()
                ),
            ));
        }
        Ok(())
    }

    /// A part of a letter offered; the last one saves its file. A part of
    /// a letter not here (never offered, or saved already from another
    /// carrier) is answered so: its carrier offers the letter again, which
    /// proves it and says where it stands.
    pub fn part(&self, id: &Id, index: u32, sealed: &[u8]) -> Answer {
        let r = (|| {
            let Some(e) = self.spool.envelope(id) else {
                return Err(refused(Refusal::NoSuchLetter, "no such letter here: offer it first"));
            };
            let (key, name) = self.friend(&e.from)?;
            let (e, next) = self.spool.put(id, index, sealed, |e| open_part(&key, e, index, sealed).is_some())?;
            if next == e.parts {
                self.finish(&e, &key, &name)?;
            }
            Ok(next)
        })();
        next_or_refused(r)
    }

    /// All parts here: open them into the file, check it, list it. Under
    /// the incoming spool's lock: two carriers of one letter (each of the
    /// sender's devices), or two processes on this folder, save it once.
    fn finish(&self, e: &Envelope, key: &FriendKey, name: &str) -> std::result::Result<(), (Refusal, String)> {
        let internal = |err: String| refused(Refusal::Internal, err);
        let _g = self.spool.locked().map_err(|e| internal(e.to_string()))?;
        if self.received(e)? {
            return Ok(());
        }
        let letter = Letter::open(key, e).ok_or_else(|| internal("the letter no longer opens".into()))?;
        let Some(file) = &letter.file else { return Err(internal("a letter with parts and no file".into())) };
        let folder = self.received.join(safe_name(name, "friend"));
        // One folder down, whatever the friend calls itself.
        if folder.parent() != Some(self.received.as_path()) {
            return Err(refused(Refusal::Internal, format!("a friend's name {name:?} leaves the received folder")));
        }
        std::fs::create_dir_all(&folder).map_err(|err| internal(format!("making {}: {err}", folder.display())))?;
        let tmp = folder.join(format!(".{}.partial", hex(&e.id)));
        let mut bad_part = None;
        let write = |bad_part: &mut Option<u32>| -> std::io::Result<[u8; 32]> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            let mut hasher = blake3::Hasher::new();
            for i in 0..e.parts {
                let sealed = self.spool.part(e, i)?;
                let Some(plain) = open_part(key, e, i, &sealed) else {
                    *bad_part = Some(i);
                    return Err(std::io::Error::other(format!("part {i} as kept does not open")));
                };
                hasher.update(&plain);
                out.write_all(&plain)?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(*hasher.finalize().as_bytes())
        };
        let hash = write(&mut bad_part).map_err(|err| {
            let _ = std::fs::remove_file(&tmp);
            if let Some(i) = bad_part {
                // Spoiled on this disk: asked again from there.
                self.spool.cut(e, i);
            }
            internal(format!("saving the file: {err}"))
        })?;
        if hash != file.blake3 {
            let _ = std::fs::remove_file(&tmp);
            self.remove_locked(&e.id);
            return Err(refused(Refusal::Forged, "the file's bytes are not those its letter names"));
        }
        let target = place(&tmp, &folder, &safe_name(&file.name, "file"))
            .map_err(|err| internal(format!("saving {}: {err}", file.name)))?;
        let _ = sync_dir(&folder);
        if let Err(err) = self.record(e, name, &letter, Some(target.display().to_string())) {
            // Not listed: not kept either (asked again, saved again once).
            let _ = std::fs::remove_file(&target);
            return Err(err);
        }
        self.remove_locked(&e.id);
        Ok(())
    }

    /// [`Spool::remove`] for a caller that holds the spool's lock.
    fn remove_locked(&self, id: &Id) {
        let gone = self.spool.dir.join(format!(".{}.gone", hex(id)));
        if std::fs::rename(self.spool.folder(id), &gone).is_ok() {
            let _ = std::fs::remove_dir_all(&gone);
        }
    }

    fn record(
        &self,
        e: &Envelope,
        name: &str,
        letter: &Letter,
        path: Option<String>,
    ) -> std::result::Result<(), (Refusal, String)> {
        let kept = Kept {
            id: hex(&e.id),
            incoming: true,
            peer: e.from.to_string(),
            name: name.to_string(),
            at: letter.sent_at,
            // Kept as it reads: no terminal escapes (nor their JSON escapes).
            text: letter.text.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect(),
            file: letter.file.as_ref().map(|f| KeptFile {
                name: safe_name(&f.name, "file"),
                len: f.len,
                path: path.unwrap_or_default(),
            }),
            state: "received".into(),
        };
        let full = self.letters.path.clone();
        self.letters
            .update(|l| {
                // Checked again under the lock: offers at once all pass the first look.
                if std::fs::metadata(&full).is_ok_and(|m| m.len() > LIST_FULL) {
                    return Err(refused(Refusal::Full, "this node's list of letters is full"));
                }
                if !l.iter().any(|k| k.id == kept.id && k.incoming && k.peer == kept.peer) {
                    l.push(kept);
                }
                Ok(())
            })
            .map_err(|err| refused(Refusal::Internal, err.to_string()))?
    }
}

/// A file name from another person, safe to save: no folders, no control
/// characters, not hidden, at most 200 bytes; `fallback` if nothing is left.
pub fn safe_name(name: &str, fallback: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in base.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    // Dots and blanks in front come off together, until neither is left:
    // " .." trimmed after its dots were taken was "..", the folder above.
    let out = out.trim_start_matches(|c: char| c == '.' || c.is_whitespace()).trim_end().to_string();
    if out.is_empty() || out == "." || out == ".." { fallback.to_string() } else { out }
}

/// Put `tmp` in `folder` as `name`, or `name (2)`, `name (3)`… if taken:
/// never over a file already there (a hard link fails if the name
/// exists, even if another process just made it); the name it took.
fn place(tmp: &Path, folder: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    for n in 1..10_000u32 {
        let target = if n == 1 { folder.join(name) } else { folder.join(format!("{stem} ({n}){ext}")) };
        match std::fs::hard_link(tmp, &target) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                return Ok(target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!("10,000 files named like {name} already")))
}

/// Seal a letter with `text` and the file at `file` (if any) from `from`
/// to `to` as letter `id`, and keep it, whole, in `outbox`; its envelope.
/// The file is read twice (its hash goes in the letter, before its
/// parts), never whole into memory; one that changes in between is
/// refused, and nothing of it kept.
pub fn write_letter(
    outbox: &Spool,
    key: &FriendKey,
    (from, to): (PeerId, PeerId),
    id: Id,
    text: &str,
    file: Option<&Path>,
    now: u64,
) -> Result<Envelope> {
    if text.len() > crate::friends::MAX_TEXT {
        return Err(Error::Drive(format!("the text is {} bytes; a letter carries at most 64 KiB", text.len())));
    }
    let attached = match file {
        None => None,
        Some(p) => {
            let mut f = std::fs::File::open(p).map_err(Error::file("opening", p))?;
            let mut hasher = blake3::Hasher::new();
            let len = std::io::copy(&mut f, &mut hasher).map_err(Error::file("reading", p))?;
            if len > crate::friends::MAX_FILE {
                return Err(Error::Drive(format!("{} is {len} bytes; a letter carries at most 64 GiB", p.display())));
            }
            let name = safe_name(&p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), "file");
            Some(crate::friends::Attached { name, len, blake3: *hasher.finalize().as_bytes() })
        }
    };
    let letter = Letter { sent_at: now, text: text.to_string(), file: attached.clone() };
    let e = letter.seal(key, from, to, id);
    let path = file.unwrap_or(Path::new(""));
    let mut reader = match file {
        Some(p) => Some(std::fs::File::open(p).map_err(Error::file("opening", p))?),
        None => None,
    };
    let mut buf = vec![0u8; PART];
    let hasher = std::cell::RefCell::new(blake3::Hasher::new());
    let part = |i: u32| {
        let want = (e.len - u64::from(i) * PART as u64).min(PART as u64) as usize;
        let r = reader.as_mut().ok_or_else(|| Error::Drive("a letter with parts and no file".into()))?;
        r.read_exact(&mut buf[..want]).map_err(Error::file("reading", path))?;
        hasher.borrow_mut().update(&buf[..want]);
        Ok(crate::friends::seal_part(key, &e, i, &buf[..want]))
    };
    let check = || match &attached {
        Some(a) if a.blake3 != *hasher.borrow().finalize().as_bytes() => Err(Error::Drive(format!(
            "{} changed while it was being sealed: send it again once it is written",
            path.display()
        ))),
        _ => Ok(()),
    };
    outbox.write(&e, part, check)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Paired, Pairs, Role};

    /// A letter of three parts crosses from one spool to a friend's inbox
    /// part by part, through a crash that cut a part short, and its file
    /// comes out byte-exact; a part from someone else is refused and the
    /// letter is received once however often it is offered.
    #[test]
    fn a_letter_crosses_whole_through_a_cut_part_and_arrives_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let key = FriendKey([3; 32]);
        let src = tmp.path().join("photo.jpg");
        let bytes: Vec<u8> = (0..(2 * PART + 77)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &bytes).expect("src");
        let outbox = Spool::open(&tmp.path().join("out"), 1 << 30).expect("outbox");
        let e = write_letter(&outbox, &key, (alice, bob), [8; 16], "for you", Some(&src), 9).expect("written");
        assert_eq!((e.parts, outbox.ready().len()), (3, 1));

        let bdir = tmp.path().join("bob");
        let mut pairs = Pairs::load(&bdir.join("pairs.json")).expect("pairs");
        pairs
            .add(&Paired { peer: alice, name: "alice".into(), role: Role::Friend, key: Some(key.clone()) }, 1)
            .expect("add");
        let inbox = Inbox::open(bob, &bdir, 1 << 30).expect("inbox");
        assert_eq!(inbox.offer(e.clone()), Answer::Next(0));
        assert_eq!(inbox.part(&e.id, 0, &outbox.part(&e, 0).expect("p0")), Answer::Next(1));
        // A crash in the middle of part 1: half of it on disk.
        let parts = bdir.join("incoming").join(hex(&e.id)).join("parts");
        let p1 = outbox.part(&e, 1).expect("p1");
        let mut f = std::fs::OpenOptions::new().append(true).open(&parts).expect("parts");
        f.write_all(&p1[..1000]).expect("half");
        assert_eq!(inbox.offer(e.clone()), Answer::Next(1), "asked again from the cut part");
        let forged = vec![0u8; p1.len()];
        assert!(matches!(inbox.part(&e.id, 1, &forged), Answer::Refused { reason: Refusal::Forged, .. }));
        assert_eq!(inbox.part(&e.id, 1, &p1), Answer::Next(2));
        assert_eq!(inbox.part(&e.id, 2, &outbox.part(&e, 2).expect("p2")), Answer::Next(3));
        let got = inbox.letters().list().expect("list");
        assert_eq!(got.len(), 1);
        let path = got[0].file.as_ref().expect("file").path.clone();
        assert_eq!(std::fs::read(&path).expect("saved"), bytes);
        assert_eq!((got[0].text.as_str(), got[0].name.as_str()), ("for you", "alice"));
        assert_eq!(inbox.offer(e.clone()), Answer::Next(3), "offered again: already here");
        assert_eq!(inbox.letters().list().expect("list").len(), 1);
    }

    /// A stranger's letter, or one sealed with another key, is refused
    /// before anything is kept.
    #[test]
    fn a_letter_from_a_stranger_or_with_a_wrong_key_keeps_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (alice, bob, eve) = (PeerId::random(), PeerId::random(), PeerId::random());
        let bdir = tmp.path().join("bob");
        let mut pairs = Pairs::load(&bdir.join("pairs.json")).expect("pairs");
        let key = Some(FriendKey([3; 32]));
        pairs.add(&Paired { peer: alice, name: "alice".into(), role: Role::Friend, key }, 1).expect("add");
        let inbox = Inbox::open(bob, &bdir, 1 << 30).expect("inbox");
        let letter = Letter { sent_at: 1, text: "hi".into(), file: None };
        let from_eve = letter.seal(&FriendKey([3; 32]), eve, bob, [1; 16]);
        assert!(matches!(inbox.offer(from_eve), Answer::Refused { reason: Refusal::Forged, .. }));
        let wrong_key = letter.seal(&FriendKey([4; 32]), alice, bob, [2; 16]);
        assert!(matches!(inbox.offer(wrong_key), Answer::Refused { reason: Refusal::Forged, .. }));
        assert!(inbox.letters().list().expect("list").is_empty());
        assert!(inbox.spool.all().is_empty());
    }

    /// Names from another person cannot climb out of the folder, hide, or
    /// carry terminal escapes.
    #[test]
    fn received_names_stay_in_their_folder() {
        assert_eq!(safe_name("../../etc/passwd", "f"), "passwd");
        assert_eq!(safe_name("..", "f"), "f");
        assert_eq!(safe_name(" . notes.txt", "f"), "notes.txt");
    }

    /// A friend picks the name its letters are filed under (`received/NAME/`).
    /// " .." lost its dots before its blank, so it came out "..": the
    /// friend's files landed beside the node's own settings (a missing
    /// `shares.json` among them: a share link of the whole drive).
    #[test]
    fn a_friend_named_blank_dot_dot_cannot_file_letters_above_received() {
        for sneaky in [" ..", "Bob/ ..", " . .", "\t..", ". .. .", "..\u{a0}"] {
            let got = safe_name(sneaky, "f");
            assert!(got != "." && got != ".." && !got.starts_with('.') && !got.contains('/'), "{sneaky:?} -> {got:?}");
            let folder = Path::new("/srv/received").join(&got);
            assert_eq!(folder.parent(), Some(Path::new("/srv/received")), "{sneaky:?}");
        }
        assert_eq!(safe_name(".bashrc", "f"), "bashrc");
        assert_eq!(safe_name("a\u{1b}[2Jb\0", "f"), "a[2Jb");
        assert_eq!(safe_name("C:\\x\\y.txt", "f"), "y.txt");
        assert!(safe_name(&"é".repeat(300), "f").len() <= 200);
    }

    /// A spool keeps no more than its quota.
    #[test]
    fn a_spool_refuses_letters_past_its_quota() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(tmp.path(), 3 * SEALED_PART as u64).expect("spool");
        let key = FriendKey([1; 32]);
        let (a, b) = (PeerId::random(), PeerId::random());
        let big = |id| {
            let file = Some(crate::friends::Attached { name: "x".into(), len: 2 * PART as u64, blake3: [0; 32] });
            Letter { sent_at: 1, text: String::new(), file }.seal(&key, a, b, id)
        };
        assert_eq!(spool.offer(&big([1; 16])), Ok(0));
        assert!(matches!(spool.offer(&big([2; 16])), Err((Refusal::Full, _))));
        assert_eq!(spool.offer(&big([1; 16])), Ok(0), "the same letter again");
    }
}
