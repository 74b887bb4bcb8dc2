//! Messages and files between friends, and share links a friend's node
//! opens: `/ionshard/friend/1` (one request, one answer per stream;
//! integers big-endian).
//!
//! A letter (a text, with or without a file) is sealed end to end with the
//! key the friend pairing derived ([`crate::FriendKey`]): whoever carries
//! it (the sender's own devices hold it while the friend is offline) reads
//! neither the text, nor the file's name, nor its bytes. What a carrier
//! sees: who sends to whom, the letter's id, and its size in parts.
//!
//! ```text
//! request = 1 Offer envelope                 (deliver to `to`; or, from the owner's own
//!                                              client, hold for `to` and deliver later)
//!         | 2 Part id[16] index: u32 sealed: u32-prefixed   (part `index` of a letter offered)
//!         | 3 Held                           (the owner's client asks: which letters are held here)
//!         | 4 Open link: u8-prefixed token: u8-prefixed path: u16-prefixed offset: u64
//!                                            (a friend reads a share link's file or folder)
//! envelope = from: u8-prefixed peer id  to: u8-prefixed peer id  id[16]  parts: u32  len: u64
//!            header: u32-prefixed (sealed letter)
//! answer  = 1 Next index: u32                (send part `index` next; `parts`: all here)
//!         | 2 Ids n: u32 (id[16])…
//!         | 3 Listing n: u32 (dir: u8 size: u64 name: u16-prefixed)…
//!         | 4 Bytes total: u64 name: u16-prefixed data: u32-prefixed   (from `offset`)
//!         | 255 Refused reason: u8 message: utf-8…
//! letter  = sent_at: u64  text: u32-prefixed utf-8  has_file: u8
//!           [name: u16-prefixed utf-8  len: u64  blake3[32]]
//! ```
//!
//! Sealing: the letter's key is BLAKE3 keyed with the friend key over
//! `"ionshard friend letter v1" | from | id`; the header is AES-256-GCM
//! under it with nonce `0…0 ff ff ff ff` and associated data `to | parts |
//! len`, part `i` with nonce `i` (big-endian, in the last four bytes) and
//! associated data `id`. A part opens only at its own index of its own
//! letter; a letter opens only from the friend who sent it (a letter
//! reflected back to its sender is sealed under the other direction's key
//! and does not open).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use net::PeerId;

use crate::FriendKey;
use crate::bytes::{Cursor, Malformed, put_big, put_long, put_short};

/// A file's bytes per part.
pub const PART: usize = 1 << 20;
/// A sealed part's bytes (a full one).
pub const SEALED_PART: usize = PART + 16;
/// The longest text.
pub const MAX_TEXT: usize = 64 << 10;
/// The largest file a letter carries.
pub const MAX_FILE: u64 = 64 << 30;
/// The longest request.
pub const MAX_REQUEST: usize = SEALED_PART + 1024;
/// The longest answer (a share's bytes come in pieces of [`PART`]).
pub const MAX_ANSWER: usize = PART + 4096;
/// The most entries of a folder one [`Answer::Listing`] carries.
pub const MAX_LISTING: usize = 10_000;
const MAX_HEADER: usize = MAX_TEXT + 1024;
const MAX_NAME: usize = 1024;

/// A letter's id.
pub type Id = [u8; 16];

/// Who sends a letter to whom, and how big it is: what a carrier sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The friend who wrote it.
    pub from: PeerId,
    /// The friend it is for.
    pub to: PeerId,
    /// Its id (random).
    pub id: Id,
    /// Its file's parts (0: a text only).
    pub parts: u32,
    /// Its file's bytes.
    pub len: u64,
    /// The sealed letter.
    pub header: Vec<u8>,
}

impl Envelope {
    /// Bytes of its parts, sealed.
    pub fn sealed_len(&self) -> u64 {
        self.len + 16 * u64::from(self.parts)
    }

    /// Bytes of sealed part `index`.
    pub fn part_len(&self, index: u32) -> usize {
        if index + 1 < self.parts { SEALED_PART } else { (self.len - u64::from(index) * PART as u64) as usize + 16 }
    }
}

/// What a letter says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// When it was written (seconds since the epoch).
    pub sent_at: u64,
    /// Its text.
    pub text: String,
    /// The file it carries.
    pub file: Option<Attached>,
}

/// A file a letter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Its name (no folders).
    pub name: String,
    /// Its bytes.
    pub len: u64,
    /// BLAKE3 of them.
    pub blake3: [u8; 32],
}

/// A request of `/ionshard/friend/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A letter: for the asked node, or to hold for its friend.
    Offer(Envelope),
    /// One sealed part of a letter offered.
    Part {
        /// The letter.
        id: Id,
        /// Which part.
        index: u32,
        /// Its sealed bytes.
        sealed: Vec<u8>,
    },
    /// Which letters does this device hold for its owner?
    Held,
    /// Read a share link's file or folder.
    Open {
        /// The link's id.
        link: String,
        /// Its token.
        token: String,
        /// A path under what it shares ("" for itself).
        path: String,
        /// From which byte (a file).
        offset: u64,
    },
}

/// Why a node refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Malformed, or over a limit.
    BadRequest = 1,
    /// The asker (or the letter's writer) is not a friend of this node,
    /// nor its owner's client.
    NotFriend = 2,
    /// No such letter here (offer it first).
    NoSuchLetter = 3,
    /// No room for it here.
    Full = 4,
    /// The node failed.
    Internal = 5,
    /// No such link, or it expired or was revoked.
    NoLink = 6,
    /// It does not open with the friend's key.
    Forged = 7,
    /// Not ready yet (a shared file still being read from the devices):
    /// ask again shortly.
    Busy = 8,
}

impl Refusal {
    fn from_u8(v: u8) -> Refusal {
        match v {
            2 => Refusal::NotFriend,
            3 => Refusal::NoSuchLetter,
            4 => Refusal::Full,
            5 => Refusal::Internal,
            6 => Refusal::NoLink,
            7 => Refusal::Forged,
            8 => Refusal::Busy,
            _ => Refusal::BadRequest,
        }
    }
}

/// An entry of a shared folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// A folder?
    pub dir: bool,
    /// Its bytes (a file).
    pub size: u64,
}

/// An answer of `/ionshard/friend/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send part `index` next (`parts`: all of it is here).
    Next(u32),
    /// The letters held here.
    Ids(Vec<Id>),
    /// A shared folder's entries.
    Listing(Vec<Listed>),
    /// A shared file's bytes from the offset asked.
    Bytes {
        /// The file's bytes in all.
        total: u64,
        /// Its name.
        name: String,
        /// These.
        data: Vec<u8>,
    },
    /// Refused.
    Refused {
        /// Why, for programs.
        reason: Refusal,
        /// Why, for people.
        message: String,
    },
}

impl Answer {
    /// A refusal.
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Answer {
        Answer::Refused { reason, message: message.into() }
    }
}

fn peer(c: &mut Cursor<'_>) -> Result<PeerId, Malformed> {
    PeerId::from_bytes(&c.short(64)?).map_err(|e| Malformed(format!("a peer id: {e}")))
}

fn utf8(b: Vec<u8>) -> Result<String, Malformed> {
    String::from_utf8(b).map_err(|_| Malformed("not UTF-8".into()))
}

impl Envelope {
    fn put(&self, v: &mut Vec<u8>) {
        put_short(v, &self.from.to_bytes());
        put_short(v, &self.to.to_bytes());
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.parts.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        put_big(v, &self.header);
    }

    fn take(c: &mut Cursor<'_>) -> Result<Envelope, Malformed> {
        let (from, to, id) = (peer(c)?, peer(c)?, c.array::<16>()?);
        let (parts, len) = (c.u32()?, c.u64()?);
        let header = c.big(MAX_HEADER)?;
        if len > MAX_FILE || u64::from(parts) != len.div_ceil(PART as u64) {
            return Err(Malformed(format!("{parts} parts for {len} bytes")));
        }
        Ok(Envelope { from, to, id, parts, len, header })
    }

    /// Its bytes (kept on disk by whoever holds it).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.put(&mut v);
        v
    }

    /// An envelope from its bytes.
    pub fn decode(b: &[u8]) -> Result<Envelope, Malformed> {
        let mut c = Cursor(b);
        let e = Envelope::take(&mut c)?;
        c.end()?;
        Ok(e)
    }
}

impl Request {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Request::Offer(e) => {
                v.push(1);
                e.put(&mut v);
            }
            Request::Part { id, index, sealed } => {
                v.push(2);
                v.extend_from_slice(id);
                v.extend_from_slice(&index.to_be_bytes());
                put_big(&mut v, sealed);
            }
            Request::Held => v.push(3),
            Request::Open { link, token, path, offset } => {
                v.push(4);
                put_short(&mut v, link.as_bytes());
                put_short(&mut v, token.as_bytes());
                put_long(&mut v, path.as_bytes());
                v.extend_from_slice(&offset.to_be_bytes());
            }
        }
        v
    }

    /// A request from its bytes.
    pub fn decode(b: &[u8]) -> Result<Request, Malformed> {
        let mut c = Cursor(b);
        let r = match c.u8()? {
            1 => Request::Offer(Envelope::take(&mut c)?),
            2 => Request::Part { id: c.array()?, index: c.u32()?, sealed: c.big(SEALED_PART)? },
            3 => Request::Held,
            4 => Request::Open {
                link: utf8(c.short(64)?)?,
                token: utf8(c.short(64)?)?,
                path: utf8(c.long(4096)?)?,
                offset: c.u64()?,
            },
            t => return Err(Malformed(format!("unknown friend request {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

impl Answer {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Answer::Next(i) => {
                v.push(1);
                v.extend_from_slice(&i.to_be_bytes());
            }
            Answer::Ids(ids) => {
                v.push(2);
                v.extend_from_slice(&(ids.len() as u32).to_be_bytes());
                ids.iter().for_each(|i| v.extend_from_slice(i));
            }
            Answer::Listing(items) => {
                v.push(3);
                // As many as fit in an answer (names are long at worst).
                let mut bytes = 64;
                let fit = items
                    .iter()
                    .take(MAX_LISTING)
                    .take_while(|l| {
                        bytes += 11 + l.name.len().min(usize::from(u16::MAX));
                        bytes <= MAX_ANSWER
                    })
                    .count();
                let items = &items[..fit];
                v.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for l in items {
                    v.push(u8::from(l.dir));
                    v.extend_from_slice(&l.size.to_be_bytes());
                    put_long(&mut v, l.name.as_bytes());
                }
            }
            Answer::Bytes { total, name, data } => {
                v.push(4);
                v.extend_from_slice(&total.to_be_bytes());
                put_long(&mut v, name.as_bytes());
                put_big(&mut v, data);
            }
            Answer::Refused { reason, message } => {
                v.push(255);
                v.push(*reason as u8);
                let mut end = message.len().min(2048);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                v.extend_from_slice(&message.as_bytes()[..end]);
            }
        }
        v
    }

    /// An answer from its bytes.
    pub fn decode(b: &[u8]) -> Result<Answer, Malformed> {
        // What this crate encodes fits with room to spare.
        if b.len() > MAX_ANSWER - 64 {
            return Err(Malformed(format!("{} bytes, at most {}", b.len(), MAX_ANSWER - 64)));
        }
        let mut c = Cursor(b);
        let a = match c.u8()? {
            1 => Answer::Next(c.u32()?),
            2 => {
                let n = c.u32()? as usize;
                if n > MAX_ANSWER / 16 {
                    return Err(Malformed(format!("{n} ids")));
                }
                Answer::Ids((0..n).map(|_| c.array()).collect::<Result<_, _>>()?)
            }
            3 => {
                let n = c.u32()? as usize;
                if n > MAX_LISTING {
                    return Err(Malformed(format!("{n} entries, at most {MAX_LISTING}")));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let (dir, size) = (c.u8()? != 0, c.u64()?);
                    items.push(Listed { dir, size, name: utf8(c.long(MAX_NAME)?)? });
                }
                Answer::Listing(items)
            }
            4 => Answer::Bytes { total: c.u64()?, name: utf8(c.long(MAX_NAME)?)?, data: c.big(PART)? },
            255 => {
                let reason = Refusal::from_u8(c.u8()?);
                let message = String::from_utf8_lossy(c.0).into_owned();
                c.0 = &[];
                Answer::Refused { reason, message }
            }
            t => return Err(Malformed(format!("unknown friend answer {t}"))),
        };
        c.end()?;
        Ok(a)
    }
}

fn letter_key(key: &FriendKey, from: &PeerId, id: &Id) -> Aes256Gcm {
    let material = [b"ionshard friend letter v1".as_slice(), &from.to_bytes(), id].concat();
    Aes256Gcm::new(blake3::keyed_hash(&key.0, &material).as_bytes().into())
}

fn nonce(index: u32) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&index.to_be_bytes());
    n.into()
}

fn header_aad(to: &PeerId, parts: u32, len: u64) -> Vec<u8> {
    [to.to_bytes().as_slice(), &parts.to_be_bytes(), &len.to_be_bytes()].concat()
}

impl Letter {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.sent_at.to_be_bytes().to_vec();
        put_big(&mut v, self.text.as_bytes());
        match &self.file {
            None => v.push(0),
            Some(f) => {
                v.push(1);
                put_long(&mut v, f.name.as_bytes());
                v.extend_from_slice(&f.len.to_be_bytes());
                v.extend_from_slice(&f.blake3);
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Result<Letter, Malformed> {
        let mut c = Cursor(b);
        let sent_at = c.u64()?;
        let text = utf8(c.big(MAX_TEXT)?)?;
        let file = match c.u8()? {
            0 => None,
            _ => Some(Attached { name: utf8(c.long(MAX_NAME)?)?, len: c.u64()?, blake3: c.array()? }),
        };
        c.end()?;
        Ok(Letter { sent_at, text, file })
    }

    /// Seal this letter from `from` to `to` (its file, if any, in
    /// `parts` parts of [`PART`]) as envelope `id`.
    pub fn seal(&self, key: &FriendKey, from: PeerId, to: PeerId, id: Id) -> Envelope {
        let len = self.file.as_ref().map_or(0, |f| f.len);
        let parts = len.div_ceil(PART as u64) as u32;
        let plain = self.encode();
        let aad = header_aad(&to, parts, len);
        // Encrypting in memory with a fresh key and nonce cannot fail.
        let header = letter_key(key, &from, &id)
            .encrypt(&nonce(u32::MAX), Payload { msg: &plain, aad: &aad })
            .unwrap_or_default();
        Envelope { from, to, id, parts, len, header }
    }

    /// The letter in `e`, if it opens with `key` (the friend key of
    /// `e.from`) and its file fits the envelope.
    pub fn open(key: &FriendKey, e: &Envelope) -> Option<Letter> {
        let aad = header_aad(&e.to, e.parts, e.len);
        let plain =
            letter_key(key, &e.from, &e.id).decrypt(&nonce(u32::MAX), Payload { msg: &e.header, aad: &aad }).ok()?;
        let l = Letter::decode(&plain).ok()?;
        (l.file.as_ref().map_or(0, |f| f.len) == e.len).then_some(l)
    }
}

/// Seal part `index` of the letter `e` (its plaintext bytes `plain`).
pub fn seal_part(key: &FriendKey, e: &Envelope, index: u32, plain: &[u8]) -> Vec<u8> {
    letter_key(key, &e.from, &e.id).encrypt(&nonce(index), Payload { msg: plain, aad: &e.id }).unwrap_or_default()
}

/// Open part `index` of the letter `e`, if it is that part, whole.
pub fn open_part(key: &FriendKey, e: &Envelope, index: u32, sealed: &[u8]) -> Option<Vec<u8>> {
    if index >= e.parts || sealed.len() != e.part_len(index) {
        return None;
    }
    letter_key(key, &e.from, &e.id).decrypt(&nonce(index), Payload { msg: sealed, aad: &e.id }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(len: u64) -> Letter {
        let file = (len > 0).then(|| Attached { name: "a.bin".into(), len, blake3: [9; 32] });
        Letter { sent_at: 5, text: "hello".into(), file }
    }

    /// Requests and answers read back as written, and cut or padded ones
    /// are refused.
    #[test]
    fn messages_round_trip_and_truncations_are_refused() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let e = letter(3 * PART as u64 + 5).seal(&FriendKey([1; 32]), a, b, [4; 16]);
        let requests = [
            Request::Offer(e.clone()),
            Request::Part { id: [4; 16], index: 3, sealed: vec![7; 21] },
            Request::Held,
            Request::Open { link: "l".into(), token: "t".into(), path: "/x".into(), offset: 9 },
        ];
        for r in requests {
            let bytes = r.encode();
            assert_eq!(Request::decode(&bytes).expect("decodes"), r);
            for cut in 0..bytes.len() {
                assert!(Request::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
            }
            assert!(Request::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        }
        let answers = [
            Answer::Next(4),
            Answer::Ids(vec![[1; 16], [2; 16]]),
            Answer::Listing(vec![Listed { name: "x".into(), dir: true, size: 0 }]),
            Answer::Bytes { total: 10, name: "a".into(), data: vec![1, 2] },
            Answer::refused(Refusal::Forged, "no"),
        ];
        for a in answers {
            assert_eq!(Answer::decode(&a.encode()).expect("decodes"), a);
        }
        assert_eq!(Envelope::decode(&e.encode()).expect("envelope"), e);
    }

    /// A letter opens for its friend only, from its writer only; a part
    /// opens only at its index; a changed size does not open.
    #[test]
    fn a_letter_opens_only_with_its_key_from_its_writer_at_its_size() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let key = FriendKey([1; 32]);
        let l = letter(PART as u64 + 10);
        let e = l.seal(&key, a, b, [4; 16]);
        assert_eq!(Letter::open(&key, &e), Some(l));
        assert_eq!(Letter::open(&FriendKey([2; 32]), &e), None, "another friend's key");
        let reflected = Envelope { from: b, to: a, ..e.clone() };
        assert_eq!(Letter::open(&key, &reflected), None, "reflected to its writer");
        let resized = Envelope { len: e.len - 1, ..e.clone() };
        assert_eq!(Letter::open(&key, &resized), None, "another size");
        let p0 = seal_part(&key, &e, 0, &vec![3; PART]);
        let p1 = seal_part(&key, &e, 1, &[4; 10]);
        assert_eq!(open_part(&key, &e, 0, &p0), Some(vec![3; PART]));
        assert_eq!(open_part(&key, &e, 1, &p1), Some(vec![4; 10]));
        assert_eq!(open_part(&key, &e, 1, &p0), None, "part 0 as part 1");
        let other = Envelope { id: [5; 16], ..e.clone() };
        assert_eq!(open_part(&key, &other, 1, &p1), None, "another letter's part");
    }
}
