//! The pairing mailbox a bootstrap node keeps: a slot per code, through
//! which a device and a client exchange the two messages of the key
//! exchange and one sealed message each way. The mailbox learns nothing of
//! the code's words or the sealed messages; it only keeps one guess per
//! code: a slot takes one joiner, for good.
//!
//! Messages of `/ionshard/mailbox/1` (one request, one answer per stream;
//! integers big-endian; each frame at most [`MAX_MESSAGE`] bytes):
//!
//! ```text
//! request  = 1 Claim  lifetime_secs: u32 len: u8 spake…     (the device)
//!          | 2 Join   nameplate: u16 len: u8 spake…         (the client)
//!          | 3 Post   nameplate: u16 len: u16 sealed…       (either side, once)
//!          | 4 Poll   nameplate: u16                        (either side)
//!          | 5 Abort  nameplate: u16                        (the device: a wrong code was tried)
//! answer   = 1 Claimed nameplate: u16 expires: u64
//!          | 2 Joined  len: u8 spake…                       (the device's)
//!          | 3 Posted
//!          | 4 Waiting
//!          | 5 Ready   len: u8 spake… len: u16 sealed…      (the other side's; spake empty for the client)
//!          | 255 Refused reason: u8 message: utf-8…
//! ```
//!
//! A slot belongs to the peer that claimed it; the first peer that joins
//! it is its only joiner. A claim, join or post repeated as it was, and
//! the client's last poll repeated (their answers lost on the way), get the
//! same answer. Each side posts once and reads only what the
//! other side posted. A slot closes once the client has read the device's
//! sealed message, when the device aborts, or when it expires. A slot
//! someone joined leaves its number answering `Used`, `WrongCode` or
//! `Expired` for an hour (so a replayed code is told what happened), not
//! handed out again meanwhile; one nobody joined just goes (so claiming and
//! dropping codes cannot use up the numbers).

use std::collections::HashMap;

use net::PeerId;
use rand::Rng;

pub use crate::bytes::Malformed;
use crate::bytes::{Cursor, put_long, put_short};
use crate::code::MAX_NAMEPLATE;

/// The largest request or answer frame.
pub const MAX_MESSAGE: usize = 4096;
/// The longest a slot stays open.
pub const MAX_LIFETIME_SECS: u32 = 30 * 60;
/// How long a closed slot's number remembers why it closed.
pub const TOMB_SECS: u64 = 3600;
/// Open slots at most (in all).
pub const MAX_SLOTS: usize = 2048;
/// Open slots one peer may have claimed.
pub const MAX_SLOTS_PER_PEER: usize = 4;
/// The longest key-exchange message (SPAKE2 over Ed25519 sends 33 bytes).
pub const MAX_SPAKE: usize = 64;
/// The longest sealed message.
pub const MAX_SEALED: usize = 2048;

/// A request to the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Open a slot with the device's key-exchange message.
    Claim {
        /// How long the code may wait for its client.
        lifetime_secs: u32,
        /// The device's key-exchange message.
        spake: Vec<u8>,
    },
    /// Join a slot with the client's key-exchange message.
    Join {
        /// The code's number.
        nameplate: u16,
        /// The client's key-exchange message.
        spake: Vec<u8>,
    },
    /// Leave one sealed message for the other side.
    Post {
        /// The slot.
        nameplate: u16,
        /// Sealed under the exchanged key.
        sealed: Vec<u8>,
    },
    /// What the other side left.
    Poll {
        /// The slot.
        nameplate: u16,
    },
    /// The device could not open the client's sealed message: the code it
    /// used was wrong; the slot closes for good.
    Abort {
        /// The slot.
        nameplate: u16,
    },
}

/// Why the mailbox refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// Malformed, or over a limit.
    BadRequest = 1,
    /// No slot has that number (never claimed, or closed over an hour ago).
    NoSuchCode = 2,
    /// The code was used already (a pairing completed, or someone joined first).
    Used = 3,
    /// The code's time ran out.
    Expired = 4,
    /// The device refused: a wrong code was tried, and the code is burned.
    WrongCode = 5,
    /// Not this peer's to do (another peer's slot, or a second post).
    NotYours = 6,
    /// Too many open slots (in all, or of this peer).
    Full = 7,
}

impl Refusal {
    fn from_u8(v: u8) -> Refusal {
        match v {
            2 => Refusal::NoSuchCode,
            3 => Refusal::Used,
            4 => Refusal::Expired,
            5 => Refusal::WrongCode,
            6 => Refusal::NotYours,
            7 => Refusal::Full,
            _ => Refusal::BadRequest,
        }
    }
}

/// The mailbox's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A slot is open under `nameplate` until `expires` (seconds since the epoch).
    Claimed {
        /// The code's number.
        nameplate: u16,
        /// When it closes unused.
        expires: u64,
    },
    /// Joined; the device's key-exchange message.
    Joined {
        /// The device's message.
        spake: Vec<u8>,
    },
    /// The sealed message waits for the other side.
    Posted,
    /// Nothing from the other side yet.
    Waiting,
    /// What the other side left.
    Ready {
        /// The client's key-exchange message (to the device; empty to the client).
        spake: Vec<u8>,
        /// Its sealed message.
        sealed: Vec<u8>,
    },
    /// Refused, and why.
    Refused {
        /// Why, for programs.
        reason: Refusal,
        /// Why, for people.
        message: String,
    },
}

impl Request {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Request::Claim { lifetime_secs, spake } => {
                v.push(1);
                v.extend_from_slice(&lifetime_secs.to_be_bytes());
                put_short(&mut v, spake);
            }
            Request::Join { nameplate, spake } => {
                v.push(2);
                v.extend_from_slice(&nameplate.to_be_bytes());
                put_short(&mut v, spake);
            }
            Request::Post { nameplate, sealed } => {
                v.push(3);
                v.extend_from_slice(&nameplate.to_be_bytes());
                put_long(&mut v, sealed);
            }
            Request::Poll { nameplate } => {
                v.push(4);
                v.extend_from_slice(&nameplate.to_be_bytes());
            }
            Request::Abort { nameplate } => {
                v.push(5);
                v.extend_from_slice(&nameplate.to_be_bytes());
            }
        }
        v
    }

    /// Parse a frame from an untrusted peer.
    pub fn decode(b: &[u8]) -> Result<Request, Malformed> {
        if b.len() > MAX_MESSAGE {
            return Err(Malformed(format!("{} bytes, at most {MAX_MESSAGE}", b.len())));
        }
        let mut c = Cursor(b);
        let r = match c.u8()? {
            1 => Request::Claim { lifetime_secs: c.u32()?, spake: c.short(MAX_SPAKE)? },
            2 => Request::Join { nameplate: c.u16()?, spake: c.short(MAX_SPAKE)? },
            3 => Request::Post { nameplate: c.u16()?, sealed: c.long(MAX_SEALED)? },
            4 => Request::Poll { nameplate: c.u16()? },
            5 => Request::Abort { nameplate: c.u16()? },
            t => return Err(Malformed(format!("unknown request type {t}"))),
        };
        c.end()?;
        Ok(r)
    }
}

impl Answer {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            Answer::Claimed { nameplate, expires } => {
                v.push(1);
                v.extend_from_slice(&nameplate.to_be_bytes());
                v.extend_from_slice(&expires.to_be_bytes());
            }
            Answer::Joined { spake } => {
                v.push(2);
                put_short(&mut v, spake);
            }
            Answer::Posted => v.push(3),
            Answer::Waiting => v.push(4),
            Answer::Ready { spake, sealed } => {
                v.push(5);
                put_short(&mut v, spake);
                put_long(&mut v, sealed);
            }
            Answer::Refused { reason, message } => {
                v.push(255);
                v.push(*reason as u8);
                v.extend_from_slice(message.chars().take(512).collect::<String>().as_bytes());
            }
        }
        v
    }

    /// Parse a frame from an untrusted mailbox.
    pub fn decode(b: &[u8]) -> Result<Answer, Malformed> {
        if b.len() > MAX_MESSAGE {
            return Err(Malformed(format!("{} bytes, at most {MAX_MESSAGE}", b.len())));
        }
        let mut c = Cursor(b);
        let a = match c.u8()? {
            1 => Answer::Claimed { nameplate: c.u16()?, expires: c.u64()? },
            2 => Answer::Joined { spake: c.short(MAX_SPAKE)? },
            3 => Answer::Posted,
            4 => Answer::Waiting,
            5 => Answer::Ready { spake: c.short(MAX_SPAKE)?, sealed: c.long(MAX_SEALED)? },
            255 => {
                let reason = Refusal::from_u8(c.u8()?);
                // A person reads it: no control characters (terminal escapes).
                let message = String::from_utf8_lossy(std::mem::take(&mut c.0))
                    .chars()
                    .filter(|ch| !ch.is_control())
                    .take(512)
                    .collect();
                Answer::Refused { reason, message }
            }
            t => return Err(Malformed(format!("unknown answer type {t}"))),
        };
        c.end()?;
        Ok(a)
    }
}

/// One open slot.
struct Slot {
    device: PeerId,
    expires: u64,
    device_spake: Vec<u8>,
    /// The joiner, and its key-exchange message.
    client: Option<(PeerId, Vec<u8>)>,
    from_client: Option<Vec<u8>>,
    from_device: Option<Vec<u8>>,
}

/// Why a slot's number is not open any more, and until when it says so.
struct Tomb {
    reason: Refusal,
    until: u64,
    /// The device's sealed message as the client read it, for that client
    /// only: its answer may have been lost on the way, and it asks again.
    delivered: Option<(PeerId, Vec<u8>)>,
    /// The device and what it posted: its post repeated (the answer lost)
    /// is answered as the first was.
    posted: Option<(PeerId, Vec<u8>)>,
}

/// The mailbox's state: a pure state machine (time and randomness passed in).
#[derive(Default)]
pub struct Mailbox {
    slots: HashMap<u16, Slot>,
    tombs: HashMap<u16, Tomb>,
}

fn refuse(reason: Refusal, message: impl Into<String>) -> Answer {
    Answer::Refused { reason, message: message.into() }
}

impl Mailbox {
    /// A new, empty mailbox.
    pub fn new() -> Mailbox {
        Mailbox::default()
    }

    /// Open slots now.
    pub fn open_slots(&self) -> usize {
        self.slots.len()
    }

    /// Close what expired by `now`.
    fn sweep(&mut self, now: u64) {
        let expired: Vec<u16> = self.slots.iter().filter(|(_, s)| s.expires <= now).map(|(n, _)| *n).collect();
        for n in expired {
            self.close(n, Refusal::Expired, now);
        }
        self.tombs.retain(|_, t| t.until > now);
    }

    /// Close slot `n`. Only a slot someone joined leaves a tomb (its number
    /// then says why it closed, for an hour): one nobody joined just goes,
    /// so claiming and dropping codes cannot use up the numbers.
    fn close(&mut self, n: u16, reason: Refusal, now: u64) {
        let Some(s) = self.slots.remove(&n) else { return };
        let Some((client, _)) = s.client else { return };
        let (delivered, posted) = match (reason, s.from_device) {
            (Refusal::Used, Some(sealed)) => (Some((client, sealed.clone())), Some((s.device, sealed))),
            _ => (None, None),
        };
        self.tombs.insert(n, Tomb { reason, until: now.saturating_add(TOMB_SECS), delivered, posted });
    }

    /// Why `n` is not an open slot.
    fn gone(&self, n: u16) -> Answer {
        match self.tombs.get(&n).map(|t| t.reason) {
            Some(Refusal::Used) => refuse(Refusal::Used, format!("code {n} was used already: ask for a new one")),
            Some(Refusal::Expired) => refuse(Refusal::Expired, format!("code {n} expired: ask for a new one")),
            Some(Refusal::WrongCode) => refuse(
                Refusal::WrongCode,
                format!(
                    "the device refused code {n}: a wrong code was tried, and the code is burned; ask for a new one"
                ),
            ),
            _ => refuse(
                Refusal::NoSuchCode,
                format!("no code {n} is waiting (it expired, or the number is wrong): ask for a new one"),
            ),
        }
    }

    /// Answer `request` from `peer` at `now`.
    pub fn handle(&mut self, peer: PeerId, request: Request, now: u64, rng: &mut impl Rng) -> Answer {
        self.sweep(now);
        match request {
            Request::Claim { lifetime_secs, spake } => {
                if lifetime_secs == 0 || lifetime_secs > MAX_LIFETIME_SECS || spake.is_empty() {
                    return refuse(
                        Refusal::BadRequest,
                        format!("a code lives 1 to {MAX_LIFETIME_SECS} s and carries the key exchange's message"),
                    );
                }
                if let Some((n, s)) = self.slots.iter().find(|(_, s)| s.device == peer && s.device_spake == spake) {
                    // Claimed already (the answer was lost): the same slot.
                    return Answer::Claimed { nameplate: *n, expires: s.expires };
                }
                if self.slots.len() >= MAX_SLOTS
                    || self.slots.values().filter(|s| s.device == peer).count() >= MAX_SLOTS_PER_PEER
                {
                    return refuse(
                        Refusal::Full,
                        "too many codes are waiting here: try again later, or another bootstrap node",
                    );
                }
                // A free number: drawn at random (a code's number is not a
                // secret, but need not be guessable either).
                let free = (0..64)
                    .map(|_| rng.random_range(1..=MAX_NAMEPLATE))
                    .find(|n| !self.slots.contains_key(n) && !self.tombs.contains_key(n));
                let Some(nameplate) = free else {
                    return refuse(Refusal::Full, "no code number is free here: try again later");
                };
                let expires = now.saturating_add(u64::from(lifetime_secs));
                self.slots.insert(
                    nameplate,
                    Slot {
                        device: peer,
                        expires,
                        device_spake: spake,
                        client: None,
                        from_client: None,
                        from_device: None,
                    },
                );
                Answer::Claimed { nameplate, expires }
            }
            Request::Join { nameplate, spake } => {
                let Some(slot) = self.slots.get_mut(&nameplate) else { return self.gone(nameplate) };
                if slot.client.as_ref().is_some_and(|(c, s)| *c == peer && *s == spake) {
                    // The joiner asking again (its answer was lost): the same answer.
                    return Answer::Joined { spake: slot.device_spake.clone() };
                }
                if slot.client.is_some() {
                    // One guess per code: whoever came first is its only joiner.
                    return refuse(Refusal::Used, format!("code {nameplate} was used already: ask for a new one"));
                }
                if spake.is_empty() || slot.device == peer {
                    return refuse(Refusal::BadRequest, "a device cannot join its own code");
                }
                slot.client = Some((peer, spake));
                Answer::Joined { spake: slot.device_spake.clone() }
            }
            Request::Post { nameplate, sealed } => {
                let again = self.tombs.get(&nameplate).and_then(|t| t.posted.as_ref());
                if again.is_some_and(|(d, b)| *d == peer && *b == sealed) {
                    // The device's post, repeated after the client read it.
                    return Answer::Posted;
                }
                let Some(slot) = self.slots.get_mut(&nameplate) else { return self.gone(nameplate) };
                let place = if slot.device == peer {
                    &mut slot.from_device
                } else if slot.client.as_ref().is_some_and(|(c, _)| *c == peer) {
                    &mut slot.from_client
                } else {
                    return refuse(Refusal::NotYours, format!("code {nameplate} is not yours"));
                };
                if place.as_ref() == Some(&sealed) {
                    // Posted already (its answer was lost): the same answer.
                    return Answer::Posted;
                }
                if place.is_some() || sealed.is_empty() {
                    return refuse(Refusal::NotYours, "each side posts once");
                }
                *place = Some(sealed);
                Answer::Posted
            }
            Request::Poll { nameplate } => {
                let again = self.tombs.get(&nameplate).and_then(|t| t.delivered.as_ref()).filter(|(c, _)| *c == peer);
                if let Some((_, sealed)) = again {
                    // The client asking again for what it was given.
                    return Answer::Ready { spake: Vec::new(), sealed: sealed.clone() };
                }
                let Some(slot) = self.slots.get(&nameplate) else { return self.gone(nameplate) };
                if slot.device == peer {
                    match (&slot.client, &slot.from_client) {
                        (Some((_, spake)), Some(sealed)) => {
                            Answer::Ready { spake: spake.clone(), sealed: sealed.clone() }
                        }
                        _ => Answer::Waiting,
                    }
                } else if slot.client.as_ref().is_some_and(|(c, _)| *c == peer) {
                    match slot.from_device.clone() {
                        Some(sealed) => {
                            // The client has the device's answer: the pairing is
                            // complete, and the code is spent.
                            self.close(nameplate, Refusal::Used, now);
                            Answer::Ready { spake: Vec::new(), sealed }
                        }
                        None => Answer::Waiting,
                    }
                } else {
                    refuse(Refusal::NotYours, format!("code {nameplate} is not yours"))
                }
            }
            Request::Abort { nameplate } => {
                let Some(slot) = self.slots.get(&nameplate) else { return self.gone(nameplate) };
                if slot.device != peer {
                    return refuse(Refusal::NotYours, format!("code {nameplate} is not yours"));
                }
                self.close(nameplate, Refusal::WrongCode, now);
                Answer::Posted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(a: &Answer) -> Option<Refusal> {
        match a {
            Answer::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let reqs = [
            Request::Claim { lifetime_secs: 600, spake: vec![1; 33] },
            Request::Join { nameplate: 7, spake: vec![2; 33] },
            Request::Post { nameplate: 7, sealed: vec![3; 100] },
            Request::Poll { nameplate: 7 },
            Request::Abort { nameplate: 7 },
        ];
        for r in reqs {
            let b = r.encode();
            assert_eq!(Request::decode(&b).expect("decode"), r);
            for cut in 0..b.len() {
                assert!(Request::decode(&b[..cut]).is_err(), "cut at {cut}");
            }
        }
        let answers = [
            Answer::Claimed { nameplate: 9, expires: 1 << 40 },
            Answer::Joined { spake: vec![4; 33] },
            Answer::Posted,
            Answer::Waiting,
            Answer::Ready { spake: vec![], sealed: vec![5; 10] },
            Answer::Refused { reason: Refusal::Used, message: "used".into() },
        ];
        for a in answers {
            assert_eq!(Answer::decode(&a.encode()).expect("decode"), a);
        }
        assert!(Request::decode(&[1, 0, 0, 0, 1, 200]).is_err(), "a key-exchange message over the limit");
        assert!(Request::decode(&[9]).is_err());
        assert!(Request::decode(&vec![4; MAX_MESSAGE + 1]).is_err());
    }

    /// The whole exchange, then every way to misuse a code: a second
    /// joiner, a stranger's post or poll, an expired code, a replayed one.
    #[test]
    fn one_joiner_per_code_each_side_reads_only_the_other_and_spent_codes_say_why() {
        let mut rng = rand::rng();
        let (device, client, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut m = Mailbox::new();
        let Answer::Claimed { nameplate: n, expires } =
            m.handle(device, Request::Claim { lifetime_secs: 60, spake: vec![1] }, 100, &mut rng)
        else {
            panic!("not claimed")
        };
        assert_eq!(expires, 160);
        assert_eq!(m.handle(device, Request::Poll { nameplate: n }, 101, &mut rng), Answer::Waiting);
        assert_eq!(
            m.handle(client, Request::Join { nameplate: n, spake: vec![2] }, 101, &mut rng),
            Answer::Joined { spake: vec![1] }
        );
        // Asked again (a lost answer), the same; another message from the joiner is a second guess.
        let again = m.handle(client, Request::Join { nameplate: n, spake: vec![2] }, 101, &mut rng);
        assert_eq!(again, Answer::Joined { spake: vec![1] });
        let other = m.handle(client, Request::Join { nameplate: n, spake: vec![7] }, 101, &mut rng);
        assert_eq!(refusal(&other), Some(Refusal::Used));
        // One guess per code: nobody joins after the first.
        let second = m.handle(stranger, Request::Join { nameplate: n, spake: vec![9] }, 102, &mut rng);
        assert_eq!(refusal(&second), Some(Refusal::Used));
        assert_eq!(
            refusal(&m.handle(stranger, Request::Post { nameplate: n, sealed: vec![9] }, 102, &mut rng)),
            Some(Refusal::NotYours)
        );
        assert_eq!(
            refusal(&m.handle(stranger, Request::Poll { nameplate: n }, 102, &mut rng)),
            Some(Refusal::NotYours)
        );
        assert_eq!(
            refusal(&m.handle(stranger, Request::Abort { nameplate: n }, 102, &mut rng)),
            Some(Refusal::NotYours)
        );
        assert_eq!(m.handle(client, Request::Post { nameplate: n, sealed: vec![3] }, 103, &mut rng), Answer::Posted);
        assert_eq!(
            refusal(&m.handle(client, Request::Post { nameplate: n, sealed: vec![4] }, 103, &mut rng)),
            Some(Refusal::NotYours)
        );
        let same = m.handle(client, Request::Post { nameplate: n, sealed: vec![3] }, 103, &mut rng);
        assert_eq!(same, Answer::Posted, "the same post again");
        assert_eq!(
            m.handle(device, Request::Poll { nameplate: n }, 104, &mut rng),
            Answer::Ready { spake: vec![2], sealed: vec![3] }
        );
        assert_eq!(m.handle(client, Request::Poll { nameplate: n }, 104, &mut rng), Answer::Waiting);
        assert_eq!(m.handle(device, Request::Post { nameplate: n, sealed: vec![5] }, 105, &mut rng), Answer::Posted);
        assert_eq!(
            m.handle(client, Request::Poll { nameplate: n }, 105, &mut rng),
            Answer::Ready { spake: vec![], sealed: vec![5] }
        );
        // The client's answer was lost: asked again, the same; to others, spent.
        let again = m.handle(client, Request::Poll { nameplate: n }, 105, &mut rng);
        assert_eq!(again, Answer::Ready { spake: vec![], sealed: vec![5] });
        // The device's post repeated after that (its answer lost): the same answer.
        assert_eq!(m.handle(device, Request::Post { nameplate: n, sealed: vec![5] }, 105, &mut rng), Answer::Posted);
        assert_eq!(refusal(&m.handle(stranger, Request::Poll { nameplate: n }, 105, &mut rng)), Some(Refusal::Used));
        // Spent: a replay is told so, for an hour; then the number is unknown.
        assert_eq!(
            refusal(&m.handle(stranger, Request::Join { nameplate: n, spake: vec![2] }, 106, &mut rng)),
            Some(Refusal::Used)
        );
        assert_eq!(
            refusal(&m.handle(stranger, Request::Join { nameplate: n, spake: vec![2] }, 105 + TOMB_SECS, &mut rng)),
            Some(Refusal::NoSuchCode)
        );

        // Expired, and aborted after a wrong guess.
        let Answer::Claimed { nameplate: e, .. } =
            m.handle(device, Request::Claim { lifetime_secs: 10, spake: vec![1] }, 200, &mut rng)
        else {
            panic!("not claimed")
        };
        // Nobody joined it: its number just goes (the message says it may have expired).
        let late = m.handle(client, Request::Join { nameplate: e, spake: vec![2] }, 211, &mut rng);
        assert_eq!(refusal(&late), Some(Refusal::NoSuchCode));
        assert!(matches!(&late, Answer::Refused { message, .. } if message.contains("expired")));
        let Answer::Claimed { nameplate: w, .. } =
            m.handle(device, Request::Claim { lifetime_secs: 10, spake: vec![1] }, 300, &mut rng)
        else {
            panic!("not claimed")
        };
        m.handle(stranger, Request::Join { nameplate: w, spake: vec![2] }, 301, &mut rng);
        assert_eq!(m.handle(device, Request::Abort { nameplate: w }, 302, &mut rng), Answer::Posted);
        assert_eq!(
            refusal(&m.handle(stranger, Request::Poll { nameplate: w }, 303, &mut rng)),
            Some(Refusal::WrongCode)
        );
        assert_eq!(m.open_slots(), 0);
    }

    #[test]
    fn a_peer_cannot_fill_the_mailbox() {
        let mut rng = rand::rng();
        let mut m = Mailbox::new();
        let greedy = PeerId::random();
        let claim = |i: u8| Request::Claim { lifetime_secs: 60, spake: vec![i] };
        let mut first = None;
        for i in 0..MAX_SLOTS_PER_PEER as u8 {
            let a = m.handle(greedy, claim(i), 0, &mut rng);
            assert!(matches!(a, Answer::Claimed { .. }));
            first.get_or_insert(a);
        }
        // The same claim again is the same slot, not a new one.
        assert_eq!(m.handle(greedy, claim(0), 0, &mut rng), first.expect("claimed"));
        assert_eq!(refusal(&m.handle(greedy, claim(99), 0, &mut rng)), Some(Refusal::Full));
        assert!(matches!(m.handle(PeerId::random(), claim(1), 0, &mut rng), Answer::Claimed { .. }));
        // Claiming and dropping codes nobody joins leaves no numbers used up.
        let mut m = Mailbox::new();
        for i in 0..20_000u32 {
            let Answer::Claimed { nameplate, .. } = m.handle(greedy, claim(1), u64::from(i), &mut rng) else {
                panic!("claim {i} refused")
            };
            m.handle(greedy, Request::Abort { nameplate }, u64::from(i), &mut rng);
        }
        assert_eq!(m.open_slots(), 0);
    }
}
