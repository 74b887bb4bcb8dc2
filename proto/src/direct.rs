//! The direct channel's bytes (version 1): range requests and their answers
//! on a TCP connection of their own, outside libp2p, where a libp2p stream
//! costs noise's ChaCha20-Poly1305 and three copies on each side and
//! yamux's two more. Pure: no I/O here (the node's side is `net::direct`).
//!
//! A client asks a peer, on their libp2p connection (noise proved both
//! keys there), for tickets ([`crate::wire::Request::Direct`]); the answer
//! gives a port, a 32-byte secret and one 16-byte ticket per connection.
//! The client connects to that port at the address of that libp2p
//! connection and speaks:
//!
//! ```text
//! hello  = "ionshard/direct1" ticket(16)          client → peer, once; a ticket is good once
//! frame  = len: u32 (bytes after it) kind: u8 sealed(body) tag(16)
//! kind   = 0 a request   (body: a shard-protocol request; peers serve 3 Ranges)
//!        | 1 a response  (body: a shard-protocol response)
//!        | 3 a proof     (body: the proof bytes of a 3 Proof response, without its type byte)
//! ```
//!
//! Puts stay on libp2p: measured on puts, the channel's extra TCP
//! connections lost more to a shared uplink's queue than noise costs.
//!
//! Each direction has its own AES-256-GCM key, BLAKE3 `derive_key` of
//! `secret ‖ ticket` under [`CLIENT_TO_PEER`] or [`PEER_TO_CLIENT`]; the
//! nonce is four zero bytes then the direction's frame count (u64, from 0);
//! the additional data is the frame's first five bytes (length and kind).
//! A frame that does not open (changed, replayed, reordered, cut or from
//! another connection) ends the connection. One request is answered at a
//! time, in order.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::wire::Malformed;

/// Most tickets one answer gives (connections a client opens to one peer).
pub const MAX_TICKETS: u8 = 8;
/// The hello's first bytes.
pub const HELLO: &[u8; 16] = b"ionshard/direct1";
/// The hello's length: the magic and a ticket.
pub const HELLO_LEN: usize = 32;
/// A frame's head: its length and its kind.
pub const HEAD: usize = 5;
/// A frame's tag.
pub const TAG: usize = 16;
/// The key derivation context of frames a client sends.
pub const CLIENT_TO_PEER: &str = "ionshard direct/1 client to peer";
/// The key derivation context of frames a peer sends.
pub const PEER_TO_CLIENT: &str = "ionshard direct/1 peer to client";

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A shard-protocol request.
    Request = 0,
    /// A shard-protocol response.
    Response = 1,
    /// A proof answer's bytes.
    Proof = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, Malformed> {
        match b {
            0 => Ok(Kind::Request),
            1 => Ok(Kind::Response),
            3 => Ok(Kind::Proof),
            k => Err(Malformed(format!("direct frame of unknown kind {k}"))),
        }
    }
}

/// The ticket a hello presents, if it is one.
pub fn hello_ticket(hello: &[u8; HELLO_LEN]) -> Option<[u8; 16]> {
    let (magic, ticket) = hello.split_at(16);
    (magic == HELLO).then(|| ticket.try_into().expect("16 bytes"))
}

/// The hello presenting `ticket`.
pub fn hello(ticket: &[u8; 16]) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..16].copy_from_slice(HELLO);
    h[16..].copy_from_slice(ticket);
    h
}

fn key(context: &str, secret: &[u8; 32], ticket: &[u8; 16]) -> LessSafeKey {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(secret);
    h.update(ticket);
    let k = h.finalize();
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_bytes()).expect("a 32-byte key"))
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// One direction's sealing key and frame count.
pub struct Sealer {
    key: LessSafeKey,
    sent: u64,
}

/// One direction's opening key and frame count.
pub struct Opener {
    key: LessSafeKey,
    got: u64,
}

/// The two ends' keys of the connection of `ticket`.
pub fn keys(secret: &[u8; 32], ticket: &[u8; 16], client: bool) -> (Sealer, Opener) {
    let (mine, theirs) = if client { (CLIENT_TO_PEER, PEER_TO_CLIENT) } else { (PEER_TO_CLIENT, CLIENT_TO_PEER) };
    (Sealer { key: key(mine, secret, ticket), sent: 0 }, Opener { key: key(theirs, secret, ticket), got: 0 })
}

impl Sealer {
    /// Seal `body` in place as the next frame of `kind`: its head and tag,
    /// to be sent around it.
    pub fn seal(&mut self, kind: Kind, body: &mut [u8]) -> Result<([u8; HEAD], [u8; TAG]), Malformed> {
        let len = u32::try_from(1 + body.len() + TAG).map_err(|_| Malformed("direct frame over 4 GiB".into()))?;
        let mut head = [0u8; HEAD];
        head[..4].copy_from_slice(&len.to_be_bytes());
        head[4] = kind as u8;
        let n = self.sent;
        self.sent = n.checked_add(1).ok_or_else(|| Malformed("direct channel out of nonces".into()))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(n), Aad::from(head), body)
            .map_err(|_| Malformed("sealing a direct frame".into()))?;
        let mut t = [0u8; TAG];
        t.copy_from_slice(tag.as_ref());
        Ok((head, t))
    }
}

/// The length a frame's head says follows it (kind, body and tag), and
/// its kind; refused if the body would be over `max` bytes.
pub fn head(head: &[u8; HEAD], max: usize) -> Result<(usize, Kind), Malformed> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let kind = Kind::from_u8(head[4])?;
    if len < 1 + TAG || len - 1 - TAG > max {
        return Err(Malformed(format!("direct frame of {len} bytes (a body of at most {max})")));
    }
    Ok((len - 1, kind))
}

impl Opener {
    /// Open the next frame in place: `sealed` is what followed `head` (the
    /// body then the tag); the body's length. Fails for a frame that was
    /// changed, replayed, reordered or sealed under another key.
    pub fn open(&mut self, head: &[u8; HEAD], sealed: &mut [u8]) -> Result<usize, Malformed> {
        let n = self.got;
        let bad = || Malformed(format!("direct frame {n} does not open (changed, replayed or another key)"));
        if sealed.len() < TAG {
            return Err(bad());
        }
        let at = sealed.len() - TAG;
        let (body, tag) = sealed.split_at_mut(at);
        let tag: [u8; TAG] = (&*tag).try_into().expect("16 bytes");
        self.key
            .open_in_place_separate_tag(nonce(n), Aad::from(*head), Tag::from(tag), body, 0..)
            .map_err(|_| bad())?;
        self.got = n.checked_add(1).ok_or_else(bad)?;
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &mut Sealer, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut b = body.to_vec();
        let (h, t) = s.seal(kind, &mut b).expect("seal");
        [h.as_slice(), &b, &t].concat()
    }

    fn open(o: &mut Opener, f: &[u8]) -> Result<(Kind, Vec<u8>), Malformed> {
        let h: [u8; HEAD] = f[..HEAD].try_into().expect("head");
        // A reader waits for the length the head says; a frame cut short
        // is given to the opener as it is here.
        let (_, kind) = head(&h, 1 << 20)?;
        let mut b = f[HEAD..].to_vec();
        let n = o.open(&h, &mut b)?;
        b.truncate(n);
        Ok((kind, b))
    }

    /// These bytes are the format: a change to the derivation, the nonce,
    /// the additional data or the layout changes them.
    #[test]
    fn direct_frames_test_vector() {
        let (secret, ticket) = ([5u8; 32], [6u8; 16]);
        let (mut client, _) = keys(&secret, &ticket, true);
        let f0 = frame(&mut client, Kind::Request, b"ranges please");
        let f1 = frame(&mut client, Kind::Request, b"ranges please");
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&f0[..HEAD]), "0000001e00");
        assert_ne!(f0, f1, "the same body is sealed under the next nonce");
        assert_eq!(hex(&f0), "0000001e00a645677c82803c3fae4c39946637057a23525787f6148224ac0466f2fe");
        // The other direction has a key of its own: a peer's proof answer.
        let (mut peer, _) = keys(&secret, &ticket, false);
        assert_eq!(
            hex(&frame(&mut peer, Kind::Proof, b"proof")),
            "0000001603adfcfe2a16b14acd34cfcc9aae5dd7054d69bd003f"
        );
        assert_eq!(hello(&ticket)[..16], *b"ionshard/direct1");
        assert_eq!(hello_ticket(&hello(&ticket)), Some(ticket));
        let mut other = hello(&ticket);
        other[0] ^= 1;
        assert_eq!(hello_ticket(&other), None);
    }

    /// What a man in the middle can do to the frames: change a byte, send
    /// one again, swap two, send one back the other way, or cut one off.
    /// Every one of them fails to open, and the peer ends the connection.
    #[test]
    fn tampered_replayed_reordered_or_reflected_direct_frames_do_not_open() {
        let (secret, ticket) = ([1u8; 32], [2u8; 16]);
        let (mut cs, mut co) = keys(&secret, &ticket, true);
        let (mut ps, mut po) = keys(&secret, &ticket, false);
        let a = frame(&mut cs, Kind::Request, b"first");
        let b = frame(&mut cs, Kind::Request, b"second");
        // Honest order opens.
        let (mut po2, mut po3) = (keys(&secret, &ticket, false).1, keys(&secret, &ticket, false).1);
        assert_eq!(open(&mut po, &a).expect("a"), (Kind::Request, b"first".to_vec()));
        assert_eq!(open(&mut po, &b).expect("b"), (Kind::Request, b"second".to_vec()));
        // Replayed: the count moved on.
        assert!(open(&mut po, &b).is_err(), "replayed");
        // Reordered.
        assert!(open(&mut po2, &b).is_err(), "reordered");
        // Changed anywhere: body, tag, or the kind in the head.
        for at in [HEAD, a.len() - 1, 4] {
            let mut t = a.clone();
            t[at] ^= 1;
            let r = Kind::from_u8(t[4]).ok().map(|_| open(&mut keys(&secret, &ticket, false).1, &t));
            assert!(r.is_none_or(|r| r.is_err()), "changed at {at}");
        }
        // Reflected: a client's own frame sent back to it.
        assert!(open(&mut co, &a).is_err(), "reflected");
        // Another connection's keys.
        let (mut other, _) = keys(&secret, &[3u8; 16], true);
        assert!(open(&mut po3, &frame(&mut other, Kind::Request, b"first")).is_err(), "another ticket");
        // Cut short.
        assert!(open(&mut keys(&secret, &ticket, false).1, &a[..a.len() - 1]).is_err(), "cut");
        // The honest answer opens on the client.
        let r = frame(&mut ps, Kind::Proof, &[9; 1000]);
        assert_eq!(open(&mut co, &r).expect("answer"), (Kind::Proof, vec![9; 1000]));
    }

    #[test]
    fn a_frame_head_over_the_limit_or_of_no_kind_is_refused_before_its_body() {
        let mut h = [0u8; HEAD];
        h[..4].copy_from_slice(&((1u32 << 20) + 1 + TAG as u32 + 1).to_be_bytes());
        assert!(head(&h, 1 << 20).is_err(), "over the limit");
        h[..4].copy_from_slice(&(1u32 + TAG as u32).to_be_bytes());
        assert_eq!(head(&h, 1 << 20).expect("empty body"), (TAG, Kind::Request));
        h[4] = 2;
        assert!(head(&h, 1 << 20).is_err(), "kind 2");
        h[4] = 4;
        assert!(head(&h, 1 << 20).is_err(), "kind 4");
        h[..4].copy_from_slice(&3u32.to_be_bytes());
        h[4] = 0;
        assert!(head(&h, 1 << 20).is_err(), "shorter than a tag");
    }
}
