//! The drive as a client uses it: set up, log in and out on the owner's
//! devices, read and replace the sealed tree they keep, and store and
//! fetch file content on them alone.
//!
//! Content goes through the same chunker as everything else (encrypted
//! here, erasure-coded) with keys derived from the drive's key; each
//! segment's shards go to distinct devices, chosen by the placement
//! library the SPN uses ([`client::placement`]), weighted by free space.
//! The coding follows the number of devices: one parity shard per four
//! devices (at least one with two or more), so with three or more any one
//! device may be lost; with two every shard is mirrored; with one nothing
//! survives its loss. A manifest is kept whole on every device. A fetch
//! asks every device which shards it holds, so repair and rebalancing
//! need no record of where shards went.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chunker::{Cid, Encoder, KnownChunks, Manifest, Params, ReadKey, SegmentSink};
use futures::future::join_all;
use net::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys;
use crate::protocol::{Accepted, Answer, Ballot, MAX_MESSAGE, Record, Refusal, Request};
use crate::tree::{Tree, Version};

/// A login, as the client keeps it (`DIR/session.json`, mode 0600): the
/// drive's key, so that commands need not ask for the password again
/// until `ionshard drive logout`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    /// Its format.
    pub format: u32,
    /// Which drive, hex.
    pub drive_id: String,
    /// The drive key, hex.
    pub key: String,
    /// Until when the devices keep the session.
    pub expires: u64,
}

const LOGIN_FORMAT: u32 = 1;

impl Login {
    /// The login kept in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Login>> {
        let path = dir.join("session.json");
        let Some(b) = crate::files::read_bounded(&path, 4096).map_err(Error::file("reading", &path))? else {
            return Ok(None);
        };
        let l: Login = serde_json::from_slice(&b).map_err(|e| Error::Drive(format!("{}: {e}", path.display())))?;
        if l.format != LOGIN_FORMAT {
            return Err(Error::Drive(format!(
                "{}: format {}, this build reads {LOGIN_FORMAT}",
                path.display(),
                l.format
            )));
        }
        Ok(Some(l))
    }

    /// Keep it in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("session.json");
        let b = serde_json::to_vec_pretty(self).map_err(|e| Error::Drive(e.to_string()))?;
        crate::files::write_private(&path, &b).map_err(Error::file("writing", &path))
    }

    /// Forget it in `dir`.
    pub fn forget(dir: &Path) -> Result<()> {
        let path = dir.join("session.json");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::file("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    fn drive_id(&self) -> Result<[u8; 16]> {
        data_encoding::HEXLOWER
            .decode(self.drive_id.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Drive("the session file's drive id is not 16 hex bytes: log in again".into()))
    }

    fn key(&self) -> Result<[u8; 32]> {
        let b = data_encoding::HEXLOWER
            .decode(self.key.as_bytes())
            .map_err(|_| Error::Drive("the session file's key is not hex: log in again".into()))?;
        b.try_into().map_err(|_| Error::Drive("the session file's key is not 32 bytes: log in again".into()))
    }
}

/// Ask device `peer` one drive question.
async fn ask(net: &net::Client, peer: PeerId, request: &Request) -> Result<Answer> {
    let b = net
        .ask_drive(peer, &request.encode(), MAX_MESSAGE)
        .await
        .map_err(|e| Error::Drive(format!("device {peer}: {e}")))?;
    let a = Answer::decode(&b).map_err(|e| Error::Drive(format!("device {peer}: {e}")))?;
    match a {
        Answer::Refused { reason, message } => {
            Err(Error::Device { reason, message: format!("device {peer}: {message}") })
        }
        a => Ok(a),
    }
}

/// Ask every device in `devices` the same question, at once.
async fn ask_all(net: &net::Client, devices: &[PeerId], request: &Request) -> Vec<(PeerId, Result<Answer>)> {
    let asks = join_all(devices.iter().map(|p| ask(net, *p, request))).await;
    devices.iter().copied().zip(asks).collect()
}

/// Which devices did what was asked, and why the others did not.
fn reached<T>(answers: Vec<(PeerId, Result<T>)>) -> Reached {
    let mut r = Reached::default();
    for (peer, a) in answers {
        match a {
            Ok(_) => r.ok.push(peer.to_string()),
            Err(e) => r.failed.push((peer.to_string(), e.to_string())),
        }
    }
    r
}

fn unexpected(peer: PeerId, a: &Answer) -> Error {
    Error::Drive(format!("device {peer} answered {a:?}"))
}

/// What a login or setup did on each device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reached {
    /// Devices logged in.
    pub ok: Vec<String>,
    /// Devices that could not be, and why.
    pub failed: Vec<(String, String)>,
}

/// Set up a new drive on `devices` (none may keep one): its key, the
/// record each keeps, and a login on each.
pub async fn setup(net: &net::Client, devices: &[PeerId], password: &str, recovery: &str) -> Result<(Login, Reached)> {
    if devices.is_empty() {
        return Err(Error::Drive("no device is paired: pair one first (`ionshard drive join CODE`)".into()));
    }
    for (peer, a) in ask_all(net, devices, &Request::Hello).await {
        match a? {
            Answer::Drive(None) => {}
            Answer::Drive(Some(_)) => {
                return Err(Error::Drive(format!(
                    "device {peer} keeps a drive already: log in to it (`ionshard drive login`)"
                )));
            }
            other => return Err(unexpected(peer, &other)),
        }
    }
    let (key, record) = keys::new_drive(password, recovery, keys::KDF)?;
    for (peer, a) in ask_all(net, devices, &Request::Setup { record: Box::new(record.clone()), proof: None }).await {
        if !matches!(a?, Answer::Done) {
            return Err(Error::Drive(format!("device {peer} did not keep the drive's record")));
        }
    }
    let derived = keys::login_with(&record.hello(), password, false)?;
    let mut sessions = Vec::new();
    for peer in devices {
        sessions.push((*peer, log_in_one(net, *peer, &derived, false).await));
    }
    finish_login(key, &record, sessions)
}

fn finish_login(
    key: [u8; 32],
    record: &Record,
    sessions: Vec<(PeerId, Result<(u64, Record)>)>,
) -> Result<(Login, Reached)> {
    let expires = sessions.iter().filter_map(|(_, r)| r.as_ref().ok().map(|(e, _)| *e)).min().unwrap_or(0);
    let r = reached(sessions);
    if r.ok.is_empty() {
        let why: Vec<String> = r.failed.iter().map(|(_, w)| w.clone()).collect();
        return Err(Error::Drive(format!("no device logged in: {}", why.join("; "))));
    }
    let login = Login {
        format: LOGIN_FORMAT,
        drive_id: data_encoding::HEXLOWER.encode(&record.drive_id),
        key: data_encoding::HEXLOWER.encode(&key),
        expires,
    };
    Ok((login, r))
}

/// Log in to the drive on `devices` with its password, or (`recovering`)
/// its recovery code. Devices paired since the drive was set up get its
/// record and a session too.
pub async fn login(net: &net::Client, devices: &[PeerId], secret: &str, recovering: bool) -> Result<(Login, Reached)> {
    login_full(net, devices, secret, recovering).await.map(|(l, r, _)| (l, r))
}

/// Checks a password against the drive's record, here: what a served
/// drive asks of a WebDAV client, without asking the devices each time.
#[derive(Clone)]
pub struct PasswordCheck {
    hello: crate::protocol::Hello,
    verifier: [u8; 32],
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordCheck(<hidden>)")
    }
}

impl PasswordCheck {
    /// Whether `password` is the drive's (argon2id: costs what a login does).
    pub fn check(&self, password: &str) -> bool {
        keys::login_with(&self.hello, password, false)
            .is_ok_and(|d| blake3::hash(&d.auth) == blake3::Hash::from_bytes(self.verifier))
    }
}

/// Log in with the password, as [`login`], and keep what checks it.
pub async fn login_checked(net: &net::Client, devices: &[PeerId], password: &str) -> Result<(Login, PasswordCheck)> {
    let (login, _, record) = login_full(net, devices, password, false).await?;
    Ok((login, PasswordCheck { hello: record.hello(), verifier: record.verifier_pw }))
}

async fn login_full(
    net: &net::Client,
    devices: &[PeerId],
    secret: &str,
    recovering: bool,
) -> Result<(Login, Reached, Record)> {
    // Each device's own salt and costs (a device that missed a password
    // change has the old ones); argon2 runs once per distinct set.
    let mut derived: Vec<(crate::protocol::Hello, keys::Derived)> = Vec::new();
    let mut found: Option<(Record, [u8; 32])> = None;
    let mut sessions = Vec::new();
    let mut wrong: Option<Error> = None;
    let mut empty = Vec::new();
    for (peer, a) in ask_all(net, devices, &Request::Hello).await {
        let hello = match a {
            Ok(Answer::Drive(Some(h))) => h,
            Ok(Answer::Drive(None)) => {
                empty.push(peer);
                continue;
            }
            Ok(other) => {
                sessions.push((peer, Err(unexpected(peer, &other))));
                continue;
            }
            Err(e) => {
                sessions.push((peer, Err(e)));
                continue;
            }
        };
        if found.as_ref().is_some_and(|(r, _)| r.drive_id != hello.drive_id) {
            sessions.push((peer, Err(Error::Drive(format!("device {peer} keeps another drive")))));
            continue;
        }
        let i = match derived.iter().position(|(h, _)| *h == hello) {
            Some(i) => i,
            None => match keys::login_with(&hello, secret, recovering) {
                Ok(d) => {
                    derived.push((hello, d));
                    derived.len() - 1
                }
                Err(e) => {
                    sessions.push((peer, Err(e)));
                    continue;
                }
            },
        };
        let d = &derived[i].1;
        match log_in_one(net, peer, d, recovering).await {
            Ok((expires, record)) => {
                if found.is_none() {
                    let wrap = if recovering { record.wrap_rc } else { record.wrap_pw };
                    match keys::unwrap(d, &wrap) {
                        Ok(key) => found = Some((record.clone(), key)),
                        Err(e) => {
                            sessions.push((peer, Err(e)));
                            continue;
                        }
                    }
                }
                sessions.push((peer, Ok((expires, record))));
            }
            Err(e @ Error::Device { reason: Refusal::WrongPassword | Refusal::TooManyTries, .. }) => {
                // Another device may know the new password yet.
                sessions.push((peer, Err(Error::Drive(e.to_string()))));
                wrong.get_or_insert(e);
            }
            Err(e) => sessions.push((peer, Err(e))),
        }
    }
    let Some((record, key)) = found else {
        if let Some(e) = wrong {
            return Err(e);
        }
        if sessions.is_empty() {
            return Err(Error::Drive("no paired device keeps a drive: set one up (`ionshard drive setup`)".into()));
        }
        let why: Vec<String> = sessions.into_iter().filter_map(|(_, r)| r.err().map(|e| e.to_string())).collect();
        return Err(Error::Drive(format!("no device logged in: {}", why.join("; "))));
    };
    // Devices paired since the drive was set up get its record.
    for peer in empty {
        let copied = ask(net, peer, &Request::Setup { record: Box::new(record.clone()), proof: None }).await;
        let r = match copied {
            Ok(_) => match derived.iter().find(|(h, _)| *h == record.hello()) {
                Some((_, d)) => log_in_one(net, peer, d, recovering).await,
                None => Err(Error::Drive("the drive's record changed while logging in; log in again".into())),
            },
            Err(e) => Err(e),
        };
        sessions.push((peer, r));
    }
    let (login, r) = finish_login(key, &record, sessions)?;
    Ok((login, r, record))
}

/// Log in on `peer` with `derived`.
async fn log_in_one(
    net: &net::Client,
    peer: PeerId,
    derived: &keys::Derived,
    recovering: bool,
) -> Result<(u64, Record)> {
    let req = if recovering { Request::Recover(derived.auth) } else { Request::Login(derived.auth) };
    match ask(net, peer, &req).await? {
        Answer::Session { expires, record } => Ok((expires, *record)),
        other => Err(unexpected(peer, &other)),
    }
}

/// Give the drive a new password (after a login with the recovery code,
/// which proves the change to each device): every device gets the new
/// record, and every other session ends.
pub async fn change_password(
    net: &net::Client,
    devices: &[PeerId],
    login: &Login,
    password: &str,
    recovery: &str,
) -> Result<Reached> {
    let key = login.key()?;
    let id = login.drive_id()?;
    let record = keys::record_for(&key, id, password, recovery, keys::KDF)?;
    let mut done = Vec::new();
    let mut proofs: Vec<(crate::protocol::Hello, [u8; 32])> = Vec::new();
    for (peer, a) in ask_all(net, devices, &Request::Hello).await {
        let hello = match a {
            Ok(Answer::Drive(Some(h))) if h.drive_id == id => h,
            Ok(_) => {
                done.push((peer, Err(Error::Drive(format!("device {peer} does not keep this drive")))));
                continue;
            }
            Err(e) => {
                done.push((peer, Err(e)));
                continue;
            }
        };
        let proof = match proofs.iter().find(|(h, _)| *h == hello) {
            Some((_, p)) => *p,
            None => match keys::login_with(&hello, recovery, true) {
                Ok(d) => {
                    proofs.push((hello, d.auth));
                    d.auth
                }
                Err(e) => {
                    done.push((peer, Err(e)));
                    continue;
                }
            },
        };
        let r = ask(net, peer, &Request::Setup { record: Box::new(record.clone()), proof: Some(proof) }).await;
        done.push((peer, r));
    }
    Ok(reached(done))
}

/// End this client's sessions on `devices`.
pub async fn logout(net: &net::Client, devices: &[PeerId]) -> Reached {
    reached(ask_all(net, devices, &Request::Logout).await)
}

/// The coding for a drive on `devices` devices: (data, parity).
pub fn coding_for(devices: usize) -> (u8, u8) {
    let d = devices.clamp(1, 200);
    let parity = if d >= 2 { (d / 4).max(1) } else { 0 };
    ((d - parity) as u8, parity as u8)
}

/// What losing devices does to a drive on `devices` devices, in words.
pub fn survives(devices: usize) -> String {
    let (k, m) = coding_for(devices);
    match (devices, m) {
        (0, _) => "no device is paired: nothing can be stored".into(),
        (1, _) => "one device: losing it loses the drive (pair two more to survive losing one)".into(),
        (2, _) => "two devices, every shard mirrored: either may be lost (a third spreads the load)".into(),
        _ => format!("{devices} devices, {k} data + {m} parity shards per segment: any {m} may be lost at once"),
    }
}

/// How long a write tries to get past other clients' ballots.
const WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a vote reaches the devices.
pub(crate) trait Voters {
    /// How many devices vote.
    fn count(&self) -> usize;
    /// Ask every device `request` at once: each one's answer.
    fn ask_each(&self, request: &Request) -> impl std::future::Future<Output = Vec<(PeerId, Result<Answer>)>> + Send;
}

impl Voters for Drive {
    fn count(&self) -> usize {
        self.devices.len()
    }

    async fn ask_each(&self, request: &Request) -> Vec<(PeerId, Result<Answer>)> {
        Drive::ask_each(self, request).await
    }
}

/// Make `sealed` root `seq`, after the root whose BLAKE3 is `after`, by
/// Paxos among `voters` (see [`Drive::write`]); trying past other
/// clients' ballots for up to `wait`. How many devices learnt it.
/// `unopened`: devices whose refusals are not heard.
pub(crate) async fn decide(
    voters: &impl Voters,
    unopened: &HashSet<PeerId>,
    seq: u64,
    after: [u8; 32],
    sealed: &[u8],
    wait: std::time::Duration,
) -> Result<usize> {
    let n = voters.count();
    let need = n / 2 + 1;
    let stale = |message: String| Error::Device {
        reason: Refusal::Stale,
        message: format!("the drive changed meanwhile ({message}); run the command again"),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut round = 1u64;
    let mut attempt = 0u32;
    // Some device accepted this root, too few to know it is the drive's.
    let mut doubt = false;
    loop {
        // A ballot of its own each time: one ballot never carries two roots.
        let ballot = Ballot { round, by: rand::random() };
        let mut vote = Vote::default();
        let mut newest: Option<Accepted> = None;
        for (peer, a) in voters.ask_each(&Request::Prepare { seq, ballot }).await {
            if unopened.contains(&peer) && matches!(a, Err(Error::Device { reason: Refusal::Stale, .. })) {
                continue;
            }
            if let Some(acc) = vote.count(peer, ballot, a)
                && newest.as_ref().is_none_or(|n| acc.ballot > n.ballot)
            {
                newest = Some(acc);
            }
        }
        if let Some(m) = vote.stale {
            return Err(stale(m));
        }
        if vote.yes >= need {
            // A root accepted before may be the drive's already: it
            // goes on, and this client's change after it.
            let (prev, value, ours) = match newest {
                Some(acc) if acc.sealed != sealed => (acc.prev, acc.sealed, false),
                _ => (after, sealed.to_vec(), true),
            };
            let accept = Request::Accept { seq, ballot, prev, sealed: value.clone() };
            vote = Vote { beat: vote.beat, ..Vote::default() };
            for (peer, a) in voters.ask_each(&accept).await {
                if unopened.contains(&peer) && matches!(a, Err(Error::Device { reason: Refusal::Stale, .. })) {
                    continue;
                }
                vote.count(peer, ballot, a);
            }
            if vote.yes >= need {
                let learn = Request::Learn { seq, sealed: value.clone() };
                let kept = voters.ask_each(&learn).await.into_iter().filter(|(_, a)| a.is_ok()).count();
                if ours {
                    return Ok(kept);
                }
                return Err(stale(format!("another client's change, begun before, is tree {seq}")));
            }
            if let Some(m) = vote.stale {
                return Err(stale(m));
            }
            doubt |= ours && vote.yes > 0;
        }
        let outbid = vote.beat >= round;
        if !(outbid || doubt) || tokio::time::Instant::now() > deadline {
            let why = if outbid {
                format!("other clients kept changing the drive for {} s", wait.as_secs())
            } else {
                format!(
                    "only {} of the {n} devices took part in the change, and it needs {need}: start the others \
                         (or, for one gone for good, `drive revoke NAME --client` on every client): {}",
                    vote.yes,
                    vote.why.join("; ")
                )
            };
            if doubt {
                return Err(Error::InDoubt(format!(
                    "{why}; some devices accepted the change: the drive's next change may finish it"
                )));
            }
            return Err(Error::Drive(why));
        }
        // A newer ballot, or this root may yet be the drive's: try again
        // past it, after a pause that keeps two clients from outbidding
        // each other forever.
        round = vote.beat.max(round) + 1;
        let ms = 10 + rand::random::<u64>() % (20u64 << attempt.min(5));
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The answers to one phase of a vote.
#[derive(Default)]
struct Vote {
    /// Devices that promised or accepted.
    yes: usize,
    /// The newest round another client's ballot has.
    beat: u64,
    /// A device decided the number already (why).
    stale: Option<String>,
    /// Why the others did not.
    why: Vec<String>,
}

impl Vote {
    /// Count `peer`'s answer to a phase under `ballot`; what it accepted
    /// before, if it promised.
    fn count(&mut self, peer: PeerId, ballot: Ballot, a: Result<Answer>) -> Option<Accepted> {
        match a {
            Ok(Answer::Done) => self.yes += 1,
            Ok(Answer::Promise { promised, accepted }) if promised == ballot => {
                self.yes += 1;
                return accepted.map(|a| *a);
            }
            Ok(Answer::Promise { promised, .. }) => {
                self.beat = self.beat.max(promised.round);
                self.why.push(format!("device {peer} promised a newer ballot"));
            }
            Ok(other) => self.why.push(unexpected(peer, &other).to_string()),
            Err(Error::Device { reason: Refusal::Stale, message }) => self.stale = Some(message),
            Err(e) => self.why.push(e.to_string()),
        }
        None
    }
}

/// In which order a read tries the roots `kept` (device, number, hash):
/// newest first, then the one more devices keep, then the first device's
/// (by peer id). No root (number 0) comes last.
fn read_order(kept: &[(usize, u64, [u8; 32])]) -> Vec<(u64, [u8; 32])> {
    let mut held: BTreeMap<(u64, [u8; 32]), (usize, usize)> = BTreeMap::new();
    for &(i, seq, hash) in kept {
        let e = held.entry((seq, hash)).or_insert((0, i));
        e.0 += 1;
        e.1 = e.1.min(i);
    }
    let mut order: Vec<_> = held.into_iter().collect();
    order.sort_by_key(|&((seq, _), (n, first))| (seq == 0, std::cmp::Reverse(seq), std::cmp::Reverse(n), first));
    order.into_iter().map(|(r, _)| r).collect()
}

/// The owner's drive, logged in.
#[derive(Clone)]
pub struct Drive {
    net: net::Client,
    /// By peer id.
    devices: Vec<PeerId>,
    key: [u8; 32],
    drive_id: [u8; 16],
    /// Devices whose tree did not open at the last read: their refusals
    /// are not heard.
    unopened: Arc<std::sync::Mutex<HashSet<PeerId>>>,
}

/// How long a read of the tree waits for a device.
const ROOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive").field("devices", &self.devices).finish_non_exhaustive()
    }
}

/// Which sealed tree: its sequence number (0: none stored yet) and BLAKE3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootId {
    /// Its sequence number.
    pub seq: u64,
    /// BLAKE3 of its sealed bytes (zeros for none).
    pub hash: [u8; 32],
}

/// A tree as read, and which it is (its successor follows it).
#[derive(Debug, Clone)]
pub struct Read {
    /// The tree.
    pub tree: Tree,
    /// Which.
    pub root: RootId,
}

/// What storing a file did.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// The version made.
    pub version: Version,
    /// Bytes of shards sent to devices (data and parity).
    pub shard_bytes: u64,
    /// Bytes of shards the devices held already, not sent again (an
    /// upload cut off before, resumed; or the same content).
    pub resumed_bytes: u64,
    /// The coding used.
    pub coding: (u8, u8),
}

/// Bytes of a segment's data shard, at most: well inside what a device
/// holds in memory for one peer (8 MiB).
const SHARD: u32 = 2 << 20;

struct Segment {
    cids: Vec<Cid>,
    shards: Vec<chunker::ShardBytes>,
}

struct ChannelSink(tokio::sync::mpsc::Sender<Segment>);

impl SegmentSink for ChannelSink {
    fn put_segment(
        &mut self,
        seg: chunker::EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let s = Segment { cids: seg.segment.shards().to_vec(), shards: seg.shards };
        self.0.blocking_send(s).map_err(|_| "the upload stopped".into())
    }
}

impl Drive {
    /// The drive `login` opens, on `devices`.
    pub fn new(net: net::Client, mut devices: Vec<PeerId>, login: &Login) -> Result<Drive> {
        devices.sort();
        devices.dedup();
        Ok(Drive { net, devices, key: login.key()?, drive_id: login.drive_id()?, unopened: Arc::default() })
    }

    /// What a sealed root at `seq` is bound to: this drive and that number
    /// (a device cannot pass another drive's tree, or an older one under a
    /// newer number).
    fn root_aad(&self, seq: u64) -> Vec<u8> {
        let mut aad = b"ionshard drive root v1".to_vec();
        aad.extend_from_slice(&self.drive_id);
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    /// The devices.
    pub fn devices(&self) -> &[PeerId] {
        &self.devices
    }

    /// The network client it reaches them through.
    pub fn net(&self) -> &net::Client {
        &self.net
    }

    /// The drive's tree: the newest root the devices keep that opens (a
    /// device keeps only roots a majority of the devices accepted, so
    /// any is the drive's; one that does not answer in time is read
    /// around). One that does not open (damaged, or not this drive's) is
    /// passed over for the next. Devices seen behind are given it.
    pub async fn read(&self) -> Result<Read> {
        let mut why = Vec::new();
        let mut kept: Vec<(usize, u64, [u8; 32])> = Vec::new();
        let mut sealed_of: BTreeMap<(u64, [u8; 32]), Vec<u8>> = BTreeMap::new();
        for (i, (peer, a)) in self.ask_each(&Request::GetRoot).await.into_iter().enumerate() {
            match a {
                Ok(Answer::Root { seq, sealed }) => {
                    let hash = if seq == 0 { [0; 32] } else { *blake3::hash(&sealed).as_bytes() };
                    kept.push((i, seq, hash));
                    sealed_of.entry((seq, hash)).or_insert(sealed);
                }
                Ok(other) => why.push(unexpected(peer, &other).to_string()),
                Err(e) => why.push(e.to_string()),
            }
        }
        if kept.is_empty() {
            return Err(Error::Drive(format!("no device gave the drive's tree: {}", why.join("; "))));
        }
        let mut failed = false;
        let mut unopened = HashSet::new();
        for (seq, hash) in read_order(&kept) {
            if seq == 0 {
                break;
            }
            let sealed = &sealed_of[&(seq, hash)];
            let opened = keys::open_aad(&keys::tree_key(&self.key), &self.root_aad(seq), sealed).and_then(|packed| {
                let plain = zstd::bulk::decompress(&packed, 64 << 20)
                    .map_err(|e| Error::Drive(format!("the drive's tree does not unpack: {e}")))?;
                Tree::from_bytes(&plain)
            });
            let at = || -> String {
                let at: Vec<String> =
                    kept.iter().filter(|k| (k.1, k.2) == (seq, hash)).map(|k| self.devices[k.0].to_string()).collect();
                at.join(", ")
            };
            match opened {
                Ok(tree) => {
                    *self.unopened.lock().unwrap_or_else(|p| p.into_inner()) = unopened;
                    if kept.iter().any(|k| k.1 == seq && k.2 != hash) {
                        tracing::warn!("two roots {seq} are kept: the one on {} is read", at());
                    }
                    let late: Vec<PeerId> = kept.iter().filter(|k| k.1 < seq).map(|k| self.devices[k.0]).collect();
                    self.learn(&late, seq, sealed).await;
                    return Ok(Read { tree, root: RootId { seq, hash } });
                }
                Err(e) => {
                    tracing::warn!("the tree {seq} on {} does not open ({e}); trying another", at());
                    why.push(format!("tree {seq} on {}: {e}", at()));
                    unopened.extend(kept.iter().filter(|k| (k.1, k.2) == (seq, hash)).map(|k| self.devices[k.0]));
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Error::Drive(format!("no device keeps a tree that opens: {}", why.join("; "))));
        }
        *self.unopened.lock().unwrap_or_else(|p| p.into_inner()) = unopened;
        Ok(Read { tree: Tree::default(), root: RootId { seq: 0, hash: [0; 32] } })
    }

    /// Ask every device `request` (about the root: asking twice is
    /// harmless) at once, each for at most [`ROOT_WAIT`]. A question lost
    /// on the way (a device sheds questions past its limits by closing
    /// the stream) is asked again, after a pause.
    async fn ask_each(&self, request: &Request) -> Vec<(PeerId, Result<Answer>)> {
        let asks = join_all(self.devices.iter().map(|p| async move {
            let again = async {
                let mut tries = 0u32;
                loop {
                    match ask(&self.net, *p, request).await {
                        Err(Error::Drive(_)) if tries < 4 => {
                            tries += 1;
                            let ms = 50 + rand::random::<u64>() % (100u64 << tries);
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        a => return a,
                    }
                }
            };
            match tokio::time::timeout(ROOT_WAIT, again).await {
                Ok(a) => a,
                Err(_) => Err(Error::Drive(format!("device {p} did not answer in {} s", ROOT_WAIT.as_secs()))),
            }
        }))
        .await;
        self.devices.iter().copied().zip(asks).collect()
    }

    /// Give root `seq` (`sealed`, which a majority accepted) to `peers`;
    /// how many keep it.
    async fn learn(&self, peers: &[PeerId], seq: u64, sealed: &[u8]) -> usize {
        if peers.is_empty() {
            return 0;
        }
        let give = Request::Learn { seq, sealed: sealed.to_vec() };
        let asks = join_all(peers.iter().map(|p| tokio::time::timeout(ROOT_WAIT, ask(&self.net, *p, &give)))).await;
        let mut kept = 0;
        for (peer, a) in peers.iter().zip(asks) {
            match a {
                Ok(Ok(_)) => kept += 1,
                Ok(Err(e)) => tracing::warn!("device {peer} did not keep tree {seq}: {e}"),
                Err(_) => {
                    tracing::warn!("device {peer} did not keep tree {seq}: no answer in {} s", ROOT_WAIT.as_secs())
                }
            }
        }
        kept
    }

    /// Keep `tree` as the successor of `after` on the devices: Paxos, one
    /// number at a time. The devices promise this client's ballot (a
    /// majority must), it proposes the root one of them accepted under
    /// the newest ballot if any (another client's change, maybe the
    /// drive's already) else its own, and a majority must accept it; then
    /// every device learns it. So of two clients writing at once one wins,
    /// and a client that stopped halfway has its change finished by the
    /// next. Which root it is, and how many devices keep it. Refused as
    /// [`Refusal::Stale`] if another client's change is the successor of
    /// `after` (make the change again on it: [`Drive::update`] does), else
    /// if too few devices answer ([`Error::InDoubt`] if some accepted it:
    /// keep what it names).
    pub async fn write(&self, after: RootId, tree: &Tree) -> Result<(RootId, usize)> {
        let seq =
            after.seq.checked_add(1).ok_or_else(|| Error::Drive("the drive's tree number is at its end".into()))?;
        let packed =
            zstd::bulk::compress(&tree.to_bytes(), 3).map_err(|e| Error::Drive(format!("packing the tree: {e}")))?;
        // The nonce follows from the number and the content: the same write
        // sent again is the same bytes, which a device that kept it knows.
        let tk = keys::tree_key(&self.key);
        let mut at = seq.to_be_bytes().to_vec();
        at.extend_from_slice(&packed);
        let nk = blake3::derive_key("ionshard drive root nonce v1", &tk);
        let nonce: [u8; 12] = blake3::keyed_hash(&nk, &at).as_bytes()[..12].try_into().unwrap_or_default();
        let sealed = keys::seal_with(&tk, nonce, &self.root_aad(seq), &packed);
        if sealed.len() > crate::protocol::MAX_ROOT {
            return Err(Error::Drive(format!(
                "the drive's tree is {} bytes packed, over the {} a device keeps: empty the trash, drop WebDAV \
                 properties, or split the drive",
                sealed.len(),
                crate::protocol::MAX_ROOT
            )));
        }
        let id = RootId { seq, hash: *blake3::hash(&sealed).as_bytes() };
        // A device whose tree did not open at the last read (damaged) says
        // nothing about the drive: its refusals are not heard.
        let unopened = self.unopened.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let kept = decide(self, &unopened, seq, after.hash, &sealed, WRITE_WAIT).await?;
        Ok((id, kept))
    }

    /// Read the tree, change it with `change`, write it back; what
    /// `change` returned. If another client wrote meanwhile, the change is
    /// made again on what it wrote (for up to a minute, then refused); if
    /// the tree read is the one this change made (its write went through
    /// though it was not confirmed), it is done.
    pub async fn update<T>(&self, mut change: impl FnMut(&mut Tree) -> Result<T>) -> Result<T> {
        let deadline = std::time::Instant::now() + 2 * WRITE_WAIT;
        let mut tried: Option<(Vec<u8>, T)> = None;
        loop {
            let Read { mut tree, root } = self.read().await?;
            if let Some((bytes, out)) = tried.take()
                && tree.to_bytes() == bytes
            {
                return Ok(out);
            }
            let out = change(&mut tree)?;
            match self.write(root, &tree).await {
                Ok(_) => return Ok(out),
                Err(Error::Device { reason: Refusal::Stale, .. }) if std::time::Instant::now() < deadline => {
                    tried = Some((tree.to_bytes(), out));
                    tokio::time::sleep(std::time::Duration::from_millis(rand::random::<u64>() % 200)).await;
                }
                Err(Error::InDoubt(m)) => {
                    // Taken after all?
                    return match self.read().await {
                        Ok(r) if r.tree.to_bytes() == tree.to_bytes() => Ok(out),
                        _ => Err(Error::InDoubt(m)),
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Of `shards`, those the drive's tree (read now) no longer names:
    /// what may be deleted. Nothing, if the tree cannot be read.
    pub async fn unnamed(&self, shards: &[String]) -> Vec<String> {
        match self.read().await {
            Ok(r) => {
                let live = r.tree.live_shards();
                shards.iter().filter(|s| !live.contains(s.as_str())).cloned().collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Free bytes on each device that answers.
    async fn candidates(&self) -> Vec<client::placement::Candidate> {
        let asks = join_all(self.devices.iter().map(|p| self.net.usage(*p))).await;
        self.devices
            .iter()
            .zip(asks)
            .filter_map(|(p, u)| {
                u.ok().map(|(_, bytes, cap)| client::placement::Candidate::new(*p, cap.saturating_sub(bytes)))
            })
            .collect()
    }

    /// Store the content of `file` on the devices: a new version (not yet
    /// in the tree; [`Tree::add_version`] puts it there). `progress` hears
    /// the bytes read.
    pub async fn store(&self, file: &Path, now: u64, progress: Arc<dyn client::Progress>) -> Result<Stored> {
        self.store_from(file, now, progress, None).await
    }

    /// Store `file` as a new version of what `base` is a version of: only
    /// the chunks `base` does not hold are encoded and sent (an edit in a
    /// large file sends the segments around the edit, not the file); the
    /// new version names `base`'s shards it still uses. Without `base`, or
    /// if its manifest cannot be read, the whole file is sent.
    pub async fn store_from(
        &self,
        file: &Path,
        now: u64,
        progress: Arc<dyn client::Progress>,
        base: Option<&Version>,
    ) -> Result<Stored> {
        let mut known = KnownChunks::new();
        if let Some(b) = base {
            match self.known_of(b).await {
                Ok(k) => known = k,
                Err(e) => tracing::warn!("the file's previous version will not be reused: {e}"),
            }
        }
        let cands = self.candidates().await;
        if cands.is_empty() {
            return Err(Error::Drive("no device answered: are they running?".into()));
        }
        let (k, m) = coding_for(cands.len());
        let params = Params::default().with_coding(k, m).with_segment_size(SHARD * u32::from(k));
        let len = std::fs::metadata(file).map_err(Error::file("reading", file))?.len();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Segment>(2);
        let secret = keys::chunk_secret(&self.key);
        let path = file.to_path_buf();
        progress.start("upload", len);
        let prog = progress.clone();
        let encode = tokio::task::spawn_blocking(move || -> Result<(chunker::Encoded, [u8; 32], u64)> {
            let f = std::fs::File::open(&path).map_err(Error::file("opening", &path))?;
            let mut hasher = blake3::Hasher::new();
            let reader = HashingReader { inner: std::io::BufReader::with_capacity(1 << 20, f), hasher: &mut hasher };
            let enc = Encoder::new(params, &secret).map_err(|e| Error::Drive(e.to_string()))?.with_known(&known);
            let mut sink = ChannelSink(tx);
            let encoded = enc
                .encode(reader, &mut sink, &mut |done| prog.set(done))
                .map_err(|e| Error::Drive(format!("encoding {}: {e}", path.display())))?;
            // The bytes read, not the length seen before: a file written
            // meanwhile makes a version whose length is its content's.
            Ok((encoded, *hasher.finalize().as_bytes(), hasher.count()))
        });
        let mut shards = Vec::new();
        let (mut shard_bytes, mut resumed_bytes) = (0u64, 0u64);
        let mut failed = None;
        // Segments go out in order: an upload cut off before got through a
        // first stretch of them. Past the first segment none of whose shards
        // a device holds, asking is a round trip for nothing.
        let mut probe = true;
        while let Some(seg) = rx.recv().await {
            if failed.is_some() {
                continue;
            }
            match self.place(&cands, &seg, probe).await {
                Ok((sent, resumed)) => {
                    probe = resumed > 0;
                    shard_bytes += sent;
                    resumed_bytes += resumed;
                    shards.extend(seg.cids.iter().map(Cid::to_string));
                }
                Err(e) => {
                    // Some of this segment's shards may be kept already.
                    shards.extend(seg.cids.iter().map(Cid::to_string));
                    failed = Some(e);
                }
            }
        }
        progress.finish();
        let encoded = encode.await.map_err(|e| Error::Drive(format!("the encoder failed: {e}")));
        let placed_so_far: Vec<String> = shards.clone();
        // Same content gives the same shards: those a file in the tree
        // already uses stay.
        let cleanup = |e: Error| async move {
            self.delete(&self.unnamed(&placed_so_far).await).await;
            Err(e)
        };
        if let Some(e) = failed {
            return cleanup(e).await;
        }
        let (encoded, hash, len) = match encoded.and_then(|r| r) {
            Ok(x) => x,
            Err(e) => return cleanup(e).await,
        };
        let manifest = encoded.manifest.to_bytes();
        let stored = Cid::of_raw(&manifest);
        let puts = join_all(self.devices.iter().map(|p| self.net.pin_shard(*p, stored, &manifest[..]))).await;
        if puts.iter().all(|r| r.is_err()) {
            let why: Vec<String> = puts.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
            return cleanup(Error::Drive(format!("no device kept the manifest: {}", why.join("; ")))).await;
        }
        // Every shard the manifest names: the new ones (all placed above)
        // and the base's it reuses.
        drop(shards);
        let named: Vec<String> =
            encoded.manifest.segments().iter().flat_map(|s| s.shards().iter().map(Cid::to_string)).collect();
        let version = Version {
            at: now,
            len,
            blake3: data_encoding::HEXLOWER.encode(&hash),
            manifest: encoded.manifest.cid().to_string(),
            stored: stored.to_string(),
            read_key: data_encoding::HEXLOWER.encode(&encoded.read_key.to_bytes()),
            shards: named,
        };
        Ok(Stored { version, shard_bytes, resumed_bytes, coding: (k, m) })
    }

    /// Put one segment's shards on distinct devices (another device if
    /// one refuses); the bytes sent.
    async fn place(&self, cands: &[client::placement::Candidate], seg: &Segment, probe: bool) -> Result<(u64, u64)> {
        let n = seg.cids.len();
        let shard_len = seg.shards.first().map_or(0, |s| s.len() as u64);
        // Shards a device holds already (an upload cut off before this one,
        // or the same content stored before) are not sent again: the same
        // content makes the same shards. One per device. Asked only while
        // `probe` (the caller stops once a segment had none held).
        let held = if probe {
            join_all(cands.iter().map(|c| self.net.has_many(c.peer, seg.cids.clone()))).await
        } else {
            Vec::new()
        };
        let mut at: Vec<Option<PeerId>> = vec![None; n];
        for (c, h) in cands.iter().zip(held) {
            let Ok(h) = h else { continue };
            if let Some(j) = (0..n.min(h.len())).find(|&j| h[j] && at[j].is_none()) {
                at[j] = Some(c.peer);
            }
        }
        let kept: HashSet<PeerId> = at.iter().flatten().copied().collect();
        let todo: Vec<usize> = (0..n).filter(|&j| at[j].is_none()).collect();
        let resumed = (n - todo.len()) as u64 * shard_len;
        let chosen = {
            let mut spread = client::placement::Spread::new(n);
            client::placement::choose(todo.len(), shard_len, cands, &[], &kept, &mut spread, &mut rand::rng())
        };
        if chosen.len() < todo.len() {
            return Err(Error::NoRoom(format!(
                "only {} of the {} devices can take a {shard_len}-byte shard (full, or not answering); {n} are needed",
                chosen.len() + kept.len(),
                cands.len()
            )));
        }
        let mut used: HashSet<PeerId> = chosen.iter().chain(&kept).copied().collect();
        let puts = join_all(
            chosen.iter().zip(&todo).map(|(p, &j)| self.net.pin_shard(*p, seg.cids[j], seg.shards[j].clone())),
        )
        .await;
        let mut sent = 0u64;
        for (&i, r) in todo.iter().zip(puts) {
            if r.is_ok() {
                sent += shard_len;
                continue;
            }
            let first = r.err().map(|e| e.to_string()).unwrap_or_default();
            // Another device that holds none of this segment yet.
            let mut placed = false;
            let others: Vec<PeerId> =
                cands.iter().filter(|c| !used.contains(&c.peer) && c.free >= shard_len).map(|c| c.peer).collect();
            for peer in others {
                used.insert(peer);
                if self.net.pin_shard(peer, seg.cids[i], seg.shards[i].clone()).await.is_ok() {
                    placed = true;
                    sent += shard_len;
                    break;
                }
            }
            if !placed {
                return Err(Error::NoRoom(format!(
                    "shard {} was refused ({first}) and no other device took it",
                    seg.cids[i]
                )));
            }
        }
        Ok((sent, resumed))
    }

    /// Which device holds which of `shards`.
    async fn placement(&self, shards: &[String]) -> Result<proto::api::Placement> {
        let cids: Vec<Cid> = shards
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Drive(format!("the drive's tree names a shard that is not a CID: {e}")))?;
        let asks = join_all(self.devices.iter().map(|p| self.net.has_many(*p, cids.clone()))).await;
        let mut map: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (i, have) in asks.into_iter().enumerate() {
            let Ok(have) = have else { continue };
            for (s, h) in shards.iter().zip(have) {
                if h {
                    map.entry(s.clone()).or_default().push(i as u32);
                }
            }
        }
        Ok(proto::api::Placement { peers: self.devices.iter().map(PeerId::to_string).collect(), shards: map })
    }

    /// A version's manifest, as kept on the devices (the first that has it).
    async fn manifest_of(&self, v: &Version) -> Result<Vec<u8>> {
        let stored: Cid = v.stored.parse().map_err(|e| Error::Drive(format!("bad manifest CID in the tree: {e}")))?;
        let mut why = Vec::new();
        for p in &self.devices {
            match self.net.get_shard(*p, stored).await {
                Ok(b) => return Ok(b.to_vec()),
                Err(e) => why.push(format!("{p}: {e}")),
            }
        }
        Err(Error::Drive(format!("no device gave the file's manifest: {}", why.join("; "))))
    }

    /// The chunks a version holds, to encode a new one against.
    async fn known_of(&self, v: &Version) -> Result<KnownChunks> {
        let bytes = self.manifest_of(v).await?;
        let cid: Cid = v.manifest.parse().map_err(|e| Error::Drive(format!("bad manifest CID in the tree: {e}")))?;
        let bad = |e: chunker::Error| Error::Drive(format!("the previous version's manifest: {e}"));
        let m = Manifest::from_bytes_with_cid(&bytes, &cid, &Default::default()).map_err(bad)?;
        let contents = m.open(&ReadKey::from_bytes(hex32(&v.read_key)?)).map_err(bad)?;
        let mut known = KnownChunks::new();
        known.add(&m, &contents).map_err(bad)?;
        Ok(known)
    }

    /// Fetch version `v` into `out` (resumable: a partial file beside it;
    /// checked against the version's hash before it takes `out`'s name).
    pub async fn fetch(
        &self,
        v: &Version,
        out: &Path,
        progress: Arc<dyn client::Progress>,
    ) -> Result<client::FetchReport> {
        let manifest = self.manifest_of(v).await?;
        let placement = self.placement(&v.shards).await?;
        let expect = client::Expect {
            label: out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            manifest: v.manifest.parse().map_err(|e| Error::Drive(format!("bad manifest CID in the tree: {e}")))?,
            length: v.len,
            blake3: hex32(&v.blake3)?,
        };
        let opts = client::FetchOptions::new(out.to_path_buf());
        client::fetch(&self.net, &manifest[..], placement, &expect, hex32(&v.read_key)?, &opts, progress)
            .await
            .map_err(|e| Error::Drive(e.to_string()))
    }

    /// Delete `shards` from every device (best effort: a device that is
    /// down keeps its copies); how many copies went.
    pub async fn delete(&self, shards: &[String]) -> u64 {
        let mut gone = 0;
        for s in shards {
            let Ok(cid) = s.parse::<Cid>() else { continue };
            let asks = join_all(self.devices.iter().map(|p| self.net.delete_shard(*p, cid))).await;
            gone += asks.into_iter().filter(|r| matches!(r, Ok(true))).count() as u64;
        }
        gone
    }
}

fn hex32(s: &str) -> Result<[u8; 32]> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Drive(format!("{s:?} in the drive's tree is not 32 hex bytes")))
}

/// Hashes what it reads.
struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: std::io::Read> std::io::Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest root is read first; of two of one number (which the
    /// vote never makes), the one more devices keep; no root comes last.
    #[test]
    fn a_read_takes_the_newest_root() {
        let (c, o, p) = ([1; 32], [2; 32], [3; 32]);
        assert_eq!(read_order(&[(0, 7, c), (2, 8, o)]), vec![(8, o), (7, c)]);
        assert_eq!(read_order(&[(0, 8, o), (1, 8, p), (2, 8, p)]), vec![(8, p), (8, o)]);
        assert_eq!(read_order(&[(3, 8, o), (1, 8, p)]), vec![(8, p), (8, o)]);
        assert_eq!(read_order(&[(0, 0, [0; 32]), (1, 0, [0; 32]), (2, 9, c)]), vec![(9, c), (0, [0; 32])]);
    }

    /// Three or more devices survive losing one; two mirror; one nothing.
    #[test]
    fn the_coding_follows_the_devices() {
        assert_eq!(coding_for(1), (1, 0));
        assert_eq!(coding_for(2), (1, 1));
        assert_eq!(coding_for(3), (2, 1));
        assert_eq!(coding_for(4), (3, 1));
        assert_eq!(coding_for(8), (6, 2));
        assert!(survives(1).contains("loses the drive"));
        assert!(survives(3).contains("any 1 may be lost"));
    }
}
