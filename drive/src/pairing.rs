//! Pairing a device and a client by a code: SPAKE2 (Ed25519 group) over
//! the mailbox, then one sealed message each way.
//!
//! The device draws the code's words, starts SPAKE2 as side A with them as
//! the password and claims a slot with its message; the mailbox gives the
//! code its number. The client, given the code, starts as side B, joins
//! the slot (getting A's message), derives the key, and posts its sealed
//! message; the device polls for it, derives the key, opens it (if it
//! does not open, a wrong code was tried: the device aborts the slot and
//! the code is burned), and posts its own; the client polls for that.
//!
//! From the SPAKE2 key `K`: `k_cd = BLAKE3-derive("ionshard drive pairing
//! v1 client to device", K)`, `k_dc` likewise ("device to client"), and
//! `t = BLAKE3-derive("ionshard drive pairing v1 transcript", K)`. A sealed
//! message is AES-256-GCM under its direction's key (each key seals one
//! message, so the nonce is zero) of
//!
//! ```text
//! role: u8 (1 device, 2 client, 3 friend) | peer_len: u8 | peer id | name_len: u8 | name
//! | sig_len: u16 | sig   (the peer's node key over "ionshard drive pair v1" | t | role | name)
//! ```
//!
//! so each side records the other's node identity only if that node's key
//! signed this very exchange.

use std::future::Future;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use net::{Keypair, PeerId};
use serde::{Deserialize, Serialize};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::code::Code;
use crate::error::{Error, Result};
use crate::mailbox::{Answer, Refusal, Request};

const SIGNED: &[u8] = b"ionshard drive pair v1";
const ID_DEVICE: &[u8] = b"ionshard drive pairing v1: device";
const ID_CLIENT: &[u8] = b"ionshard drive pairing v1: client";

/// Which side of the drive a paired node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A device that holds the drive (router, NAS, set-top box).
    Device,
    /// A client that uses it (laptop, phone).
    Client,
    /// Another person's node: the second trust level. A friend may later
    /// receive shares and messages, never the drive; both sides of a
    /// friend pairing are friends.
    Friend,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Device => 1,
            Role::Client => 2,
            Role::Friend => 3,
        }
    }

    /// What the other side of a pairing with this one must be.
    fn other(self) -> Role {
        match self {
            Role::Device => Role::Client,
            Role::Client => Role::Device,
            Role::Friend => Role::Friend,
        }
    }
}

/// Who pairs: the node's identity key (its peer id is recorded by the
/// other side) and a name for people.
pub struct Me {
    /// The node's key.
    pub key: Keypair,
    /// Its name, shown in the other side's pairings (at most 64 bytes).
    pub name: String,
    /// Which side it is.
    pub role: Role,
}

/// The other side of a completed pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// Its node's peer id.
    pub peer: PeerId,
    /// Its name.
    pub name: String,
    /// Its side.
    pub role: Role,
    /// For a friend: the key both sides derived from this pairing, which
    /// seals the messages and files they send each other (end to end:
    /// whoever carries them cannot read them).
    pub key: Option<FriendKey>,
}

/// The secret two friends share, from the pairing that made them friends.
#[derive(Clone, PartialEq, Eq)]
pub struct FriendKey(pub [u8; 32]);

impl std::fmt::Debug for FriendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FriendKey(..)")
    }
}

/// A way to ask a pairing mailbox (a bootstrap node).
pub trait Transport: Sync {
    /// Ask the mailbox; its answer.
    fn ask(&self, request: Request) -> impl Future<Output = Result<Answer>> + Send;
}

struct Keys {
    to_device: [u8; 32],
    to_client: [u8; 32],
    transcript: [u8; 32],
    friend: [u8; 32],
}

fn keys(k: &[u8]) -> Keys {
    Keys {
        to_device: blake3::derive_key("ionshard drive pairing v1 client to device", k),
        to_client: blake3::derive_key("ionshard drive pairing v1 device to client", k),
        transcript: blake3::derive_key("ionshard drive pairing v1 transcript", k),
        friend: blake3::derive_key("ionshard drive pairing v1 friend key", k),
    }
}

fn seal(key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
    Aes256Gcm::new(key.into())
        .encrypt(&Nonce::default(), plain)
        .map_err(|_| Error::Mailbox("sealing the pairing message failed".into()))
}

fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    Aes256Gcm::new(key.into()).decrypt(&Nonce::default(), sealed).ok()
}

fn statement(transcript: &[u8; 32], role: Role, name: &str) -> Vec<u8> {
    [SIGNED, transcript, &[role.byte()], name.as_bytes()].concat()
}

/// My sealed payload (before sealing).
fn payload(me: &Me, transcript: &[u8; 32]) -> Result<Vec<u8>> {
    // At most 64 bytes, cut at a character's boundary, no control characters.
    let mut name = String::new();
    for c in me.name.chars().filter(|c| !c.is_control()) {
        if name.len() + c.len_utf8() > 64 {
            break;
        }
        name.push(c);
    }
    let name = name.as_str();
    let peer = me.key.public().to_peer_id().to_bytes();
    let sig = me
        .key
        .sign(&statement(transcript, me.role, name))
        .map_err(|e| Error::Mailbox(format!("signing the pairing: {e}")))?;
    let mut v = vec![me.role.byte(), peer.len() as u8];
    v.extend_from_slice(&peer);
    v.push(name.len() as u8);
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    v.extend_from_slice(&sig);
    Ok(v)
}

/// The other side's payload, checked: its role is `want`, and its node key
/// signed this exchange.
fn check(plain: &[u8], k: &Keys, want: Role) -> Result<Paired> {
    let transcript = &k.transcript;
    let bad = |why: &str| Error::BadPeer(why.to_string());
    let (&role, rest) = plain.split_first().ok_or_else(|| bad("empty"))?;
    let role = match role {
        1 => Role::Device,
        2 => Role::Client,
        3 => Role::Friend,
        _ => return Err(bad("an unknown role")),
    };
    if role != want {
        return Err(bad(match want {
            Role::Device => "the other side is not a device (two clients cannot pair; a friend pairs with --friend)",
            Role::Client => "the other side is not a client (two devices cannot pair this way)",
            Role::Friend => "the other side pairs as the owner's own node, not as a friend (both give --friend)",
        }));
    }
    let (&n, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    let (peer, rest) = rest.split_at_checked(usize::from(n)).ok_or_else(|| bad("truncated"))?;
    let peer = PeerId::from_bytes(peer).map_err(|_| bad("its peer id does not parse"))?;
    let (&n, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    let (name, rest) = rest.split_at_checked(usize::from(n)).ok_or_else(|| bad("truncated"))?;
    let name = std::str::from_utf8(name).map_err(|_| bad("its name is not UTF-8"))?.to_string();
    if name.chars().any(char::is_control) {
        return Err(bad("its name has control characters"));
    }
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(|| bad("truncated"))?;
    let (sig, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len))).ok_or_else(|| bad("truncated"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let key = proto::public_key_of(&peer).map_err(|e| Error::BadPeer(e.to_string()))?;
    if !key.verify(&statement(transcript, role, &name), sig) {
        return Err(bad("its node key did not sign this pairing"));
    }
    let key = (role == Role::Friend).then_some(FriendKey(k.friend));
    Ok(Paired { peer, name, role, key })
}

/// One poll while waiting: a failure to reach the mailbox is not the end
/// of a wait of minutes (it counts as no news yet), unless the wait is over.
async fn poll<T: Transport>(mailbox: &T, nameplate: u16, deadline: tokio::time::Instant) -> Result<Answer> {
    match mailbox.ask(Request::Poll { nameplate }).await {
        Err(Error::Mailbox(_)) if tokio::time::Instant::now() < deadline => Ok(Answer::Waiting),
        other => other,
    }
}

fn refused(a: Answer, what: &str) -> Error {
    match a {
        Answer::Refused { reason, message } => Error::Refused { reason, message },
        other => Error::Mailbox(format!("{what}: an unexpected answer {other:?}")),
    }
}

/// The device's side: claim a code, show it (`show`, with when it
/// expires), wait (polling every `every`) until a client joins and its
/// sealed message opens, answer, and return the client. A wrong code tried
/// burns the code ([`Error::WrongCode`]).
pub async fn offer<T: Transport>(
    mailbox: &T,
    me: &Me,
    lifetime: Duration,
    every: Duration,
    show: impl FnOnce(&Code, u64),
) -> Result<Paired> {
    let mut code = Code::new(1, &mut rand::rng());
    let (state, spake) = Spake2::<Ed25519Group>::start_a(
        &Password::new(code.password()),
        &Identity::new(ID_DEVICE),
        &Identity::new(ID_CLIENT),
    );
    let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    let (nameplate, expires) = match mailbox.ask(Request::Claim { lifetime_secs, spake }).await? {
        Answer::Claimed { nameplate, expires } => (nameplate, expires),
        other => return Err(refused(other, "claiming a code")),
    };
    if !(1..=crate::code::MAX_NAMEPLATE).contains(&nameplate) {
        return Err(Error::Mailbox(format!("the mailbox gave code number {nameplate}, outside 1 to 9999")));
    }
    code.nameplate = nameplate;
    show(&code, expires);
    let deadline = tokio::time::Instant::now() + lifetime;
    let unused = || {
        Error::TimedOut(format!(
            "no client joined code {nameplate} in {} s: run `ionshard drive pair` again",
            lifetime.as_secs()
        ))
    };
    let (their_spake, sealed) = loop {
        match poll(mailbox, nameplate, deadline).await? {
            Answer::Waiting => {}
            Answer::Ready { spake, sealed } => break (spake, sealed),
            // Our own code gone unjoined: it expired.
            Answer::Refused { reason: Refusal::Expired | Refusal::NoSuchCode, .. } => return Err(unused()),
            other => return Err(refused(other, "waiting for the client")),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(unused());
        }
        tokio::time::sleep(every).await;
    };
    let opened =
        state.finish(&their_spake).ok().map(|k| keys(&k)).and_then(|k| open(&k.to_device, &sealed).map(|p| (k, p)));
    let Some((k, plain)) = opened else {
        // A wrong guess: the code is burned, for the guesser and for us.
        let _ = mailbox.ask(Request::Abort { nameplate }).await;
        return Err(Error::WrongCode);
    };
    let client = match check(&plain, &k, me.role.other()) {
        Ok(c) => c,
        Err(e) => {
            let _ = mailbox.ask(Request::Abort { nameplate }).await;
            return Err(e);
        }
    };
    let mine = seal(&k.to_client, &payload(me, &k.transcript)?)?;
    match mailbox.ask(Request::Post { nameplate, sealed: mine }).await? {
        Answer::Posted => Ok(client),
        other => Err(refused(other, "answering the client")),
    }
}

/// The client's side: join `code`, send this node's sealed message, and
/// wait (polling every `every`, at most `wait`) for the device's; the
/// device.
pub async fn accept<T: Transport>(
    mailbox: &T,
    me: &Me,
    code: &Code,
    every: Duration,
    wait: Duration,
) -> Result<Paired> {
    let (state, spake) = Spake2::<Ed25519Group>::start_b(
        &Password::new(code.password()),
        &Identity::new(ID_DEVICE),
        &Identity::new(ID_CLIENT),
    );
    let nameplate = code.nameplate;
    let theirs = match mailbox.ask(Request::Join { nameplate, spake }).await? {
        Answer::Joined { spake } => spake,
        other => return Err(refused(other, "joining the code")),
    };
    let k = keys(&state.finish(&theirs).map_err(|_| Error::WrongCode)?);
    let mine = seal(&k.to_device, &payload(me, &k.transcript)?)?;
    match mailbox.ask(Request::Post { nameplate, sealed: mine }).await? {
        Answer::Posted => {}
        other => return Err(refused(other, "sending this node's pairing message")),
    }
    let deadline = tokio::time::Instant::now() + wait;
    let sealed = loop {
        match poll(mailbox, nameplate, deadline).await? {
            Answer::Waiting => {}
            Answer::Ready { sealed, .. } => break sealed,
            Answer::Refused { reason: Refusal::WrongCode, .. } => return Err(Error::WrongCode),
            other => return Err(refused(other, "waiting for the device")),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::TimedOut(format!(
                "the device did not answer in {} s (is `ionshard drive pair` still running there?)",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(every).await;
    };
    let plain = open(&k.to_client, &sealed).ok_or(Error::WrongCode)?;
    check(&plain, &k, me.role.other())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;
    use std::sync::{Arc, Mutex};

    /// A mailbox in memory, asked as one peer.
    #[derive(Clone)]
    struct Local {
        mailbox: Arc<Mutex<Mailbox>>,
        peer: PeerId,
    }

    impl Transport for Local {
        fn ask(&self, request: Request) -> impl Future<Output = Result<Answer>> + Send {
            let a = self.mailbox.lock().expect("lock").handle(self.peer, request, proto::now(), &mut rand::rng());
            async move { Ok(a) }
        }
    }

    fn me(role: Role, name: &str) -> Me {
        Me { key: Keypair::generate_ed25519(), name: name.into(), role }
    }

    async fn pair(typed: impl FnOnce(&Code) -> String + Send + 'static) -> (Result<Paired>, Result<Paired>, Me, Me) {
        pair_as(Role::Device, Role::Client, typed).await
    }

    async fn pair_as(
        offers: Role,
        accepts: Role,
        typed: impl FnOnce(&Code) -> String + Send + 'static,
    ) -> (Result<Paired>, Result<Paired>, Me, Me) {
        let mailbox = Arc::new(Mutex::new(Mailbox::new()));
        let dev = Local { mailbox: mailbox.clone(), peer: PeerId::random() };
        let cli = Local { mailbox, peer: PeerId::random() };
        let (device, client) = (me(offers, "nas"), me(accepts, "laptop"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let every = Duration::from_millis(5);
        let d = offer(&dev, &device, Duration::from_secs(5), every, move |c, _| {
            let _ = tx.send(typed(c));
        });
        let c = async {
            let typed = rx.await.expect("code");
            let code = Code::parse(&typed)?;
            accept(&cli, &client, &code, every, Duration::from_secs(5)).await
        };
        let (d, c) = tokio::join!(d, c);
        (d, c, device, client)
    }

    #[tokio::test]
    async fn a_device_and_a_client_pair_by_the_code_and_record_each_others_node() {
        let (d, c, device, client) = pair(|c| c.reveal()).await;
        let (d, c) = (d.expect("device side"), c.expect("client side"));
        assert_eq!((d.peer, d.name.as_str(), d.role), (client.key.public().to_peer_id(), "laptop", Role::Client));
        assert_eq!((c.peer, c.name.as_str(), c.role), (device.key.public().to_peer_id(), "nas", Role::Device));
        assert!(d.key.is_none() && c.key.is_none(), "own nodes share no friend key");
    }

    /// Two friends pair as friends; a friend and the owner's own node do
    /// not pair at all: the trust levels never mix.
    #[tokio::test]
    async fn friends_pair_as_friends_and_never_as_the_owners_own_nodes() {
        let (d, c, device, client) = pair_as(Role::Friend, Role::Friend, |c| c.reveal()).await;
        let (d, c) = (d.expect("one side"), c.expect("other side"));
        assert_eq!((d.peer, d.role), (client.key.public().to_peer_id(), Role::Friend));
        assert_eq!((c.peer, c.role), (device.key.public().to_peer_id(), Role::Friend));
        // Both derived the same key from this pairing, and no one else has it.
        assert!(d.key.is_some() && d.key == c.key, "both sides hold the friend key");
        let (again, _, _, _) = pair_as(Role::Friend, Role::Friend, |c| c.reveal()).await;
        assert_ne!(again.expect("again").key, d.key, "another pairing, another key");
        for (offers, accepts) in [(Role::Device, Role::Friend), (Role::Friend, Role::Client)] {
            let (d, c, _, _) = pair_as(offers, accepts, |c| c.reveal()).await;
            assert!(
                matches!(d, Err(Error::BadPeer(_))) || matches!(c, Err(Error::BadPeer(_))),
                "{offers:?} with {accepts:?}"
            );
            assert!(d.is_err() || c.is_err(), "{offers:?} with {accepts:?} paired");
        }
    }

    /// A guesser with the right number and wrong words pairs with nothing,
    /// and the code is burned for everyone.
    #[tokio::test]
    async fn a_wrong_code_pairs_nothing_and_burns_the_code() {
        let (d, c, _, _) = pair(|c| {
            let right = c.reveal();
            let wrong = Code::new(c.nameplate, &mut rand::rng()).reveal();
            assert_ne!(right, wrong);
            wrong
        })
        .await;
        assert!(matches!(d, Err(Error::WrongCode)), "{d:?}");
        assert!(matches!(c, Err(Error::WrongCode)), "{c:?}");
    }

    /// A long name in a script of several bytes a character is cut at a
    /// character's boundary (it panicked once), and terminal escapes in a
    /// name never travel.
    #[test]
    fn long_names_are_cut_whole_and_control_characters_never_travel() {
        let k = keys(&[3u8; 32]);
        let t = k.transcript;
        let mut me = me(Role::Device, &"設定".repeat(30));
        let p = check(&payload(&me, &t).expect("payload"), &k, Role::Device).expect("valid");
        assert!(p.name.len() <= 64 && p.name.chars().all(|c| c == '設' || c == '定'), "{}", p.name);
        me.name = "nas\u{1b}[2J".into();
        let p = check(&payload(&me, &t).expect("payload"), &k, Role::Device).expect("filtered on the way out");
        assert_eq!(p.name, "nas[2J");
    }

    /// A client whose node key did not sign this exchange (a payload
    /// replayed from another pairing, or a forged peer id) is not recorded.
    #[test]
    fn a_pairing_message_signed_for_another_exchange_is_refused() {
        let client = me(Role::Client, "laptop");
        let (k1, k2) = (keys(&[1u8; 32]), keys(&[2u8; 32]));
        let p = payload(&client, &k1.transcript).expect("payload");
        assert!(check(&p, &k1, Role::Client).is_ok());
        assert!(matches!(check(&p, &k2, Role::Client), Err(Error::BadPeer(_))));
        assert!(matches!(check(&p, &k1, Role::Device), Err(Error::BadPeer(_))), "the wrong role");
        for cut in 0..p.len() {
            assert!(check(&p[..cut], &k1, Role::Client).is_err(), "cut at {cut}");
        }
    }
}
