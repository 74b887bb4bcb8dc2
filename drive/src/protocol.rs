//! Messages of `/ionshard/drive/2`: what a client asks a device it is
//! paired with about the drive the device keeps (one request, one answer
//! per stream; integers big-endian).
//!
//! ```text
//! request = 1 Hello                              (is a drive here; how to derive its keys)
//!         | 2 Setup  record has_proof: u8 [proof[32]]  (a new drive; or, with the auth of the
//!                                                  recovery code or password, a new record)
//!         | 3 Login  auth[32]                    (from the password)
//!         | 4 Recover auth[32]                   (from the recovery code)
//!         | 5 Logout                             (ends this peer's sessions here)
//!         | 6 GetRoot
//!         | 7 Learn   seq: u64 len: u32 sealed…   (a root a majority accepted: kept if newer)
//!         | 8 Prepare seq: u64 ballot            (promise no older ballot for seq: Promise)
//!         | 9 Accept  seq: u64 ballot prev[32] len: u32 sealed…
//!                       (accepted if seq is the next after the root here, prev is
//!                        BLAKE3 of that root, and no newer ballot was promised)
//!                       (version 1 had one SetRoot, the first device deciding)
//! answer  = 1 Drive    present: u8 [kdf salt_pw[16] salt_rc[16] drive_id[16]]
//!         | 2 Done
//!         | 3 Session  expires: u64 record        (the wraps in it open with what logged in)
//!         | 4 Root     seq: u64 len: u32 sealed…  (seq 0, empty: none yet)
//!         | 5 Promise  promised: ballot has: u8 [ballot prev[32] len: u32 sealed…]
//!                       (the newest ballot promised for seq, and what was accepted
//!                        there; a promise if promised is the one asked for)
//!         | 255 Refused reason: u8 message: utf-8…
//! record  = kdf salt_pw[16] verifier_pw[32] wrap_pw[60] salt_rc[16] verifier_rc[32] wrap_rc[60] drive_id[16]
//! kdf     = memory_kib: u32 passes: u32 lanes: u32
//! ballot  = round: u64 by[32]                    (compared round first, then by)
//! ```
//!
//! The device never sees the password or the drive's key: the client
//! derives, with argon2id, a key from the password and the salt, and from
//! it an `auth` value (sent at login) and a key that unwraps the drive key
//! (`wrap`: nonce and AES-256-GCM of the 32-byte key). The device keeps
//! only `verifier = BLAKE3(auth)`. Likewise for the recovery code.

use crate::bytes::{Cursor, Malformed, put_big, put_long};

/// The largest sealed root (the drive's tree) a device keeps.
pub const MAX_ROOT: usize = 8 << 20;
/// The largest request or answer.
pub const MAX_MESSAGE: usize = MAX_ROOT + 64;
/// Bytes of a wrapped key: nonce, key, tag.
pub const WRAP_LEN: usize = 12 + 32 + 16;

/// How keys are derived from a password (argon2id's costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kdf {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

/// A drive's record on a device: how to check a login, and the drive key
/// wrapped twice (under the password and under the recovery code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The argon2id costs.
    pub kdf: Kdf,
    /// The password's salt.
    pub salt_pw: [u8; 16],
    /// BLAKE3 of the password's auth value.
    pub verifier_pw: [u8; 32],
    /// The drive key under the password.
    pub wrap_pw: [u8; WRAP_LEN],
    /// The recovery code's salt.
    pub salt_rc: [u8; 16],
    /// BLAKE3 of the recovery code's auth value.
    pub verifier_rc: [u8; 32],
    /// The drive key under the recovery code.
    pub wrap_rc: [u8; WRAP_LEN],
    /// Which drive (random, fixed at setup).
    pub drive_id: [u8; 16],
}

/// A request to a device's drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Is there a drive here, and how are its keys derived?
    Hello,
    /// Keep this drive (none here yet), or replace its record: with the
    /// recovery code's auth, all of it; with the password's, the password's
    /// part only.
    Setup {
        /// The record.
        record: Box<Record>,
        /// The auth value that allows replacing one.
        proof: Option<[u8; 32]>,
    },
    /// Log in with the password's auth value.
    Login([u8; 32]),
    /// Log in with the recovery code's auth value.
    Recover([u8; 32]),
    /// End this peer's sessions here.
    Logout,
    /// The drive's sealed root.
    GetRoot,
    /// Keep this sealed root: a majority of the devices accepted it (or a
    /// device keeps it), so it is the drive's; kept if newer than the one
    /// here.
    Learn {
        /// Its sequence number.
        seq: u64,
        /// Its bytes (sealed by the client; the device cannot read them).
        sealed: Vec<u8>,
    },
    /// Promise to accept no root for `seq` under a ballot older than
    /// `ballot`; say what was accepted for it.
    Prepare {
        /// The number of the root being decided (the next after this
        /// device's).
        seq: u64,
        /// The asker's ballot.
        ballot: Ballot,
    },
    /// Accept this sealed root for `seq` under `ballot`.
    Accept {
        /// The number of the root being decided.
        seq: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// BLAKE3 of the sealed root it follows (zeros for the first).
        prev: [u8; 32],
        /// Its bytes (sealed by the client; the device cannot read them).
        sealed: Vec<u8>,
    },
}

/// A ballot of the vote on a root: newer rounds win; a client's own `by`
/// (random) keeps two clients' ballots apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ballot {
    /// The round.
    pub round: u64,
    /// Whose.
    pub by: [u8; 32],
}

/// A root a device accepted for the number being decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Under which ballot.
    pub ballot: Ballot,
    /// BLAKE3 of the root it follows.
    pub prev: [u8; 32],
    /// Its bytes.
    pub sealed: Vec<u8>,
}

/// Why a device refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Malformed, or over a limit.
    BadRequest = 1,
    /// The asker is not paired with this device, or its pairing was revoked.
    NotPaired = 2,
    /// No drive is set up here yet.
    NoDrive = 3,
    /// A drive is set up here already.
    DriveExists = 4,
    /// Wrong password or recovery code.
    WrongPassword = 5,
    /// Too many wrong tries lately.
    TooManyTries = 6,
    /// Not logged in here.
    NoSession = 7,
    /// A root of that number (or a newer one) is kept here; or the root
    /// named as the one followed is not the one here.
    Stale = 8,
    /// The device failed.
    Internal = 9,
    /// This device is behind the root the request follows.
    Behind = 10,
}

impl Refusal {
    fn from_u8(v: u8) -> Refusal {
        match v {
            2 => Refusal::NotPaired,
            3 => Refusal::NoDrive,
            4 => Refusal::DriveExists,
            5 => Refusal::WrongPassword,
            6 => Refusal::TooManyTries,
            7 => Refusal::NoSession,
            8 => Refusal::Stale,
            9 => Refusal::Internal,
            10 => Refusal::Behind,
            _ => Refusal::BadRequest,
        }
    }
}

/// A device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Whether a drive is here, and if so how its keys are derived.
    Drive(Option<Hello>),
    /// Done.
    Done,
    /// Logged in: until when, and the drive's record (a client copies it
    /// to a device it pairs with later, and unwraps the drive key from it).
    Session {
        /// Until when (seconds since the epoch).
        expires: u64,
        /// The drive's record.
        record: Box<Record>,
    },
    /// The sealed root kept here (`seq` 0 and empty: none yet).
    Root {
        /// Its sequence number.
        seq: u64,
        /// Its bytes.
        sealed: Vec<u8>,
    },
    /// The newest ballot promised for the number asked about, and what
    /// was accepted for it (a promise if `promised` is the ballot asked
    /// for; else a refusal, with the ballot to beat).
    Promise {
        /// The newest ballot promised.
        promised: Ballot,
        /// What was accepted, if anything.
        accepted: Option<Box<Accepted>>,
    },
    /// Refused.
    Refused {
        /// Why, for programs.
        reason: Refusal,
        /// Why, for people.
        message: String,
    },
}

/// What a client needs to derive a drive's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The argon2id costs.
    pub kdf: Kdf,
    /// The password's salt.
    pub salt_pw: [u8; 16],
    /// The recovery code's salt.
    pub salt_rc: [u8; 16],
    /// Which drive.
    pub drive_id: [u8; 16],
}

fn put_ballot(v: &mut Vec<u8>, b: &Ballot) {
    v.extend_from_slice(&b.round.to_be_bytes());
    v.extend_from_slice(&b.by);
}

fn ballot(c: &mut Cursor<'_>) -> Result<Ballot, Malformed> {
    Ok(Ballot { round: c.u64()?, by: c.array()? })
}

fn put_kdf(v: &mut Vec<u8>, k: &Kdf) {
    for x in [k.memory_kib, k.passes, k.lanes] {
        v.extend_from_slice(&x.to_be_bytes());
    }
}

fn kdf(c: &mut Cursor<'_>) -> Result<Kdf, Malformed> {
    Ok(Kdf { memory_kib: c.u32()?, passes: c.u32()?, lanes: c.u32()? })
}

impl Record {
    fn encode_into(&self, v: &mut Vec<u8>) {
        put_kdf(v, &self.kdf);
        for part in
            [&self.salt_pw[..], &self.verifier_pw, &self.wrap_pw, &self.salt_rc, &self.verifier_rc, &self.wrap_rc]
        {
            v.extend_from_slice(part);
        }
        v.extend_from_slice(&self.drive_id);
    }

    fn decode_from(c: &mut Cursor<'_>) -> Result<Record, Malformed> {
        Ok(Record {
            kdf: kdf(c)?,
            salt_pw: c.array()?,
            verifier_pw: c.array()?,
            wrap_pw: c.array()?,
            salt_rc: c.array()?,
            verifier_rc: c.array()?,
            wrap_rc: c.array()?,
            drive_id: c.array()?,
        })
    }

    /// The record's bytes (as a device keeps them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// A record from its bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Record, Malformed> {
        let mut c = Cursor(b);
        let r = Record::decode_from(&mut c)?;
        c.end()?;
        Ok(r)
    }

    /// What a client needs of it to log in.
    pub fn hello(&self) -> Hello {
        Hello { kdf: self.kdf, salt_pw: self.salt_pw, salt_rc: self.salt_rc, drive_id: self.drive_id }
    }
}

impl Request {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Request::Hello => v.push(1),
            Request::Setup { record, proof } => {
                v.push(2);
                record.encode_into(&mut v);
                match proof {
                    None => v.push(0),
                    Some(p) => {
                        v.push(1);
                        v.extend_from_slice(p);
                    }
                }
            }
            Request::Login(a) => {
                v.push(3);
                v.extend_from_slice(a);
            }
            Request::Recover(a) => {
                v.push(4);
                v.extend_from_slice(a);
            }
            Request::Logout => v.push(5),
            Request::GetRoot => v.push(6),
            Request::Learn { seq, sealed } => {
                v.push(7);
                v.extend_from_slice(&seq.to_be_bytes());
                put_big(&mut v, sealed);
            }
            Request::Prepare { seq, ballot } => {
                v.push(8);
                v.extend_from_slice(&seq.to_be_bytes());
                put_ballot(&mut v, ballot);
            }
            Request::Accept { seq, ballot, prev, sealed } => {
                v.push(9);
                v.extend_from_slice(&seq.to_be_bytes());
                put_ballot(&mut v, ballot);
                v.extend_from_slice(prev);
                put_big(&mut v, sealed);
            }
        }
        v
    }

    /// Decode untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<Request, Malformed> {
        if b.len() > MAX_MESSAGE {
            return Err(Malformed(format!("{} bytes, at most {MAX_MESSAGE}", b.len())));
        }
        let mut c = Cursor(b);
        let r = match c.u8()? {
            1 => Request::Hello,
            2 => {
                let record = Box::new(Record::decode_from(&mut c)?);
                let proof = match c.u8()? {
                    0 => None,
                    1 => Some(c.array()?),
                    t => return Err(Malformed(format!("proof flag {t}"))),
                };
                Request::Setup { record, proof }
            }
            3 => Request::Login(c.array()?),
            4 => Request::Recover(c.array()?),
            5 => Request::Logout,
            6 => Request::GetRoot,
            7 => Request::Learn { seq: c.u64()?, sealed: c.big(MAX_ROOT)? },
            8 => Request::Prepare { seq: c.u64()?, ballot: ballot(&mut c)? },
            9 => Request::Accept { seq: c.u64()?, ballot: ballot(&mut c)?, prev: c.array()?, sealed: c.big(MAX_ROOT)? },
            t => return Err(Malformed(format!("unknown request type {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

impl Answer {
    /// A refusal.
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Answer {
        Answer::Refused { reason, message: message.into() }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Answer::Drive(None) => v.extend_from_slice(&[1, 0]),
            Answer::Drive(Some(h)) => {
                v.extend_from_slice(&[1, 1]);
                put_kdf(&mut v, &h.kdf);
                v.extend_from_slice(&h.salt_pw);
                v.extend_from_slice(&h.salt_rc);
                v.extend_from_slice(&h.drive_id);
            }
            Answer::Done => v.push(2),
            Answer::Session { expires, record } => {
                v.push(3);
                v.extend_from_slice(&expires.to_be_bytes());
                record.encode_into(&mut v);
            }
            Answer::Root { seq, sealed } => {
                v.push(4);
                v.extend_from_slice(&seq.to_be_bytes());
                put_big(&mut v, sealed);
            }
            Answer::Promise { promised, accepted } => {
                v.push(5);
                put_ballot(&mut v, promised);
                match accepted {
                    None => v.push(0),
                    Some(a) => {
                        v.push(1);
                        put_ballot(&mut v, &a.ballot);
                        v.extend_from_slice(&a.prev);
                        put_big(&mut v, &a.sealed);
                    }
                }
            }
            Answer::Refused { reason, message } => {
                v.push(255);
                v.push(*reason as u8);
                put_long(&mut v, message.as_bytes());
            }
        }
        v
    }

    /// Decode untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<Answer, Malformed> {
        if b.len() > MAX_MESSAGE {
            return Err(Malformed(format!("{} bytes, at most {MAX_MESSAGE}", b.len())));
        }
        let mut c = Cursor(b);
        let a = match c.u8()? {
            1 => match c.u8()? {
                0 => Answer::Drive(None),
                _ => Answer::Drive(Some(Hello {
                    kdf: kdf(&mut c)?,
                    salt_pw: c.array()?,
                    salt_rc: c.array()?,
                    drive_id: c.array()?,
                })),
            },
            2 => Answer::Done,
            3 => Answer::Session { expires: c.u64()?, record: Box::new(Record::decode_from(&mut c)?) },
            4 => Answer::Root { seq: c.u64()?, sealed: c.big(MAX_ROOT)? },
            5 => Answer::Promise {
                promised: ballot(&mut c)?,
                accepted: match c.u8()? {
                    0 => None,
                    1 => {
                        Some(Box::new(Accepted { ballot: ballot(&mut c)?, prev: c.array()?, sealed: c.big(MAX_ROOT)? }))
                    }
                    t => return Err(Malformed(format!("accepted flag {t}"))),
                },
            },
            255 => {
                let reason = Refusal::from_u8(c.u8()?);
                let message = String::from_utf8_lossy(&c.long(4096)?).into_owned();
                Answer::Refused { reason, message }
            }
            t => return Err(Malformed(format!("unknown answer type {t}"))),
        };
        c.end()?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            kdf: Kdf { memory_kib: 19 * 1024, passes: 2, lanes: 1 },
            salt_pw: [1; 16],
            verifier_pw: [2; 32],
            wrap_pw: [3; WRAP_LEN],
            salt_rc: [4; 16],
            verifier_rc: [5; 32],
            wrap_rc: [6; WRAP_LEN],
            drive_id: [7; 16],
        }
    }

    /// Every message decodes to itself, and fixed bytes pin the format.
    #[test]
    fn messages_round_trip_and_match_their_vectors() {
        let requests = [
            Request::Hello,
            Request::Setup { record: Box::new(record()), proof: None },
            Request::Setup { record: Box::new(record()), proof: Some([3; 32]) },
            Request::Login([9; 32]),
            Request::Recover([8; 32]),
            Request::Logout,
            Request::GetRoot,
            Request::Learn { seq: 3, sealed: b"sealed".to_vec() },
            Request::Prepare { seq: 3, ballot: Ballot { round: 2, by: [5; 32] } },
            Request::Accept { seq: 3, ballot: Ballot { round: 2, by: [5; 32] }, prev: [4; 32], sealed: vec![1] },
        ];
        for r in requests {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        let answers = [
            Answer::Drive(None),
            Answer::Drive(Some(record().hello())),
            Answer::Done,
            Answer::Session { expires: 5, record: Box::new(record()) },
            Answer::Root { seq: 0, sealed: Vec::new() },
            Answer::Promise { promised: Ballot::default(), accepted: None },
            Answer::Promise {
                promised: Ballot { round: 9, by: [1; 32] },
                accepted: Some(Box::new(Accepted {
                    ballot: Ballot { round: 3, by: [2; 32] },
                    prev: [3; 32],
                    sealed: vec![4],
                })),
            },
            Answer::refused(Refusal::NoSession, "log in"),
        ];
        for a in answers {
            assert_eq!(Answer::decode(&a.encode()), Ok(a));
        }
        assert_eq!(
            Request::Learn { seq: 1, sealed: vec![0xaa] }.encode(),
            [7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa]
        );
        let mut want = vec![9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        want.extend_from_slice(&[8; 32]);
        want.extend_from_slice(&[9; 32]);
        want.extend_from_slice(&[0, 0, 0, 1, 0xaa]);
        let b = Ballot { round: 2, by: [8; 32] };
        assert_eq!(Request::Accept { seq: 1, ballot: b, prev: [9; 32], sealed: vec![0xaa] }.encode(), want);
        let mut want = vec![5, 0, 0, 0, 0, 0, 0, 0, 2];
        want.extend_from_slice(&[8; 32]);
        want.push(0);
        assert_eq!(Answer::Promise { promised: b, accepted: None }.encode(), want);
        assert!(Ballot { round: 2, by: [0; 32] } > Ballot { round: 1, by: [9; 32] }, "the round counts first");
        assert_eq!(Answer::refused(Refusal::Stale, "x").encode(), [255, 8, 0, 1, b'x']);
        assert_eq!(Record::from_bytes(&record().to_bytes()), Ok(record()));
        assert_eq!(record().to_bytes().len(), 12 + 16 + 32 + WRAP_LEN + 16 + 32 + WRAP_LEN + 16);
    }

    /// Truncated, trailing and oversized messages are refused, not read.
    #[test]
    fn malformed_messages_are_refused() {
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[3, 1, 2]).is_err());
        assert!(Request::decode(&[5, 0]).is_err());
        assert!(Request::decode(&[42]).is_err());
        let mut big = vec![7, 0, 0, 0, 0, 0, 0, 0, 1];
        big.extend_from_slice(&((MAX_ROOT as u32) + 1).to_be_bytes());
        assert!(Request::decode(&big).is_err(), "a root over the limit is refused before it is read");
        assert!(Answer::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]).is_err());
    }
}
