//! A device's side of the drive: who may use it (paired clients, logged
//! in), the drive's record, sessions and sealed root, and the answers to
//! `/ionshard/drive/2` ([`crate::protocol`]).
//!
//! Kept in the node's directory, under `drive/`: `pairs.json` (written by
//! `ionshard drive pair` and `revoke`, re-read here whenever it changes,
//! so a revocation counts at the next request), `record.bin`,
//! `sessions.json`, `root.bin` and `slot.bin` (the vote on the next
//! root), each replaced whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use net::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::{read_bounded, write_private};
use crate::pairs::Pairs;
use crate::protocol::{Accepted, Answer, Ballot, MAX_ROOT, Record, Refusal, Request};

/// How long a login lasts.
pub(crate) const SESSION_SECS: u64 = 30 * 86_400;
/// Wrong passwords one peer may try in [`TRY_WINDOW_SECS`].
pub(crate) const MAX_WRONG_TRIES: usize = 5;
/// The window over which wrong tries are counted.
pub(crate) const TRY_WINDOW_SECS: u64 = 10 * 60;

const RECORD_FORMAT: u8 = 1;
const ROOT_FORMAT: u8 = 1;
const SLOT_FORMAT: u8 = 1;
const SESSIONS_FORMAT: u32 = 1;

/// One login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The client.
    pub peer: String,
    /// When it logged in.
    pub started: u64,
    /// Until when.
    pub expires: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SessionsFile {
    format: u32,
    sessions: Vec<Session>,
}

/// What identifies a version of the pairings file.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

#[derive(Debug)]
struct State {
    stamp: Stamp,
    pairs: std::result::Result<Pairs, String>,
    record: Option<Record>,
    sessions: Vec<Session>,
    wrong: HashMap<PeerId, Vec<u64>>,
}

/// The sealed root kept here: its number and BLAKE3 (held while it is
/// read or replaced, apart from the rest, so a big root's I/O does not
/// hold up the checks every shard request makes).
#[derive(Debug)]
struct Root {
    seq: u64,
    hash: [u8; 32],
    /// The vote on the next root.
    slot: Slot,
}

/// This device's vote on root `seq` (Paxos, one number at a time): the
/// newest ballot it promised, and what it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Slot {
    seq: u64,
    promised: Ballot,
    accepted: Option<Accepted>,
}

/// What a device answers about roots, and the vote it keeps, decided
/// apart from the disk.
impl Root {
    /// The vote on the root after the one kept here (a fresh one if the
    /// vote kept was on an older number).
    fn next_slot(&self) -> Slot {
        if self.slot.seq == self.seq.saturating_add(1) {
            self.slot.clone()
        } else {
            Slot { seq: self.seq.saturating_add(1), ..Slot::default() }
        }
    }

    /// Whether `seq` is the number being decided here.
    fn deciding(&self, seq: u64) -> std::result::Result<(), (Refusal, String)> {
        if seq <= self.seq {
            Err((Refusal::Stale, format!("this device keeps root {}, so {seq} is decided: read it again", self.seq)))
        } else if seq > self.seq.saturating_add(1) {
            Err((Refusal::Behind, format!("this device keeps root {}, behind {seq}: it cannot vote yet", self.seq)))
        } else {
            Ok(())
        }
    }

    /// A promise for `seq` under `ballot` (none older is accepted after
    /// it): the vote to keep (if it changed), and the answer.
    fn prepare(&self, seq: u64, ballot: Ballot) -> std::result::Result<(Option<Slot>, Answer), (Refusal, String)> {
        self.deciding(seq)?;
        let mut slot = self.next_slot();
        let changed = ballot > slot.promised || slot != self.slot;
        slot.promised = slot.promised.max(ballot);
        let answer = Answer::Promise { promised: slot.promised, accepted: slot.accepted.clone().map(Box::new) };
        Ok((changed.then_some(slot), answer))
    }

    /// Accept `root` for `seq` if no newer ballot was promised (else the
    /// answer names the ballot to beat). Which root it follows is the
    /// client's to say (a device that kept another root of the number
    /// before, under version 1, catches up when it learns this one).
    fn accept(&self, seq: u64, root: Accepted) -> std::result::Result<(Option<Slot>, Answer), (Refusal, String)> {
        self.deciding(seq)?;
        let mut slot = self.next_slot();
        if let Some(had) = &slot.accepted
            && had.ballot == root.ballot
            && had.sealed != root.sealed
        {
            return Err((
                Refusal::BadRequest,
                format!("ballot {} of {seq} carries another root here", root.ballot.round),
            ));
        }
        if root.ballot < slot.promised {
            return Ok((None, Answer::Promise { promised: slot.promised, accepted: slot.accepted.map(Box::new) }));
        }
        slot.promised = root.ballot;
        slot.accepted = Some(root);
        Ok((Some(slot), Answer::Done))
    }

    /// Whether to keep root `seq` (BLAKE3 `hash`), which a majority
    /// accepted: if newer than the one here (nothing to do if it is the
    /// one here).
    fn learn(&self, seq: u64, hash: &[u8; 32]) -> std::result::Result<bool, (Refusal, String)> {
        if seq == self.seq && *hash == self.hash {
            Ok(false)
        } else if seq > self.seq {
            Ok(true)
        } else if seq == self.seq {
            Err((Refusal::Stale, format!("this device keeps another root {seq}: two were decided, which cannot be")))
        } else {
            Err((Refusal::Stale, format!("this device keeps root {}, newer than {seq}", self.seq)))
        }
    }
}

/// A device's drive: answers the drive protocol and says who may use the
/// drive's shards ([`net::Private`]).
#[derive(Debug)]
pub struct Device {
    dir: PathBuf,
    state: Mutex<State>,
    root: Mutex<Root>,
}

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), std::os::unix::fs::MetadataExt::ino(&m)))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Device {
    /// The drive kept in node directory `dir` (none set up yet is fine).
    pub fn open(dir: &Path) -> Result<Device> {
        let dir = dir.join("drive");
        let err = |path: &Path, why: String| Error::Pairs { path: path.to_path_buf(), why };
        let record_path = dir.join("record.bin");
        let record = match read_bounded(&record_path, 4096).map_err(|e| err(&record_path, e.to_string()))? {
            None => None,
            Some(b) => match b.split_first() {
                Some((&RECORD_FORMAT, rest)) => {
                    Some(Record::from_bytes(rest).map_err(|e| err(&record_path, format!("not a drive record: {e}")))?)
                }
                _ => return Err(err(&record_path, "not a drive record of a format this build reads".into())),
            },
        };
        let sessions_path = dir.join("sessions.json");
        let sessions = match read_bounded(&sessions_path, 4 << 20).map_err(|e| err(&sessions_path, e.to_string()))? {
            None => Vec::new(),
            Some(b) => {
                let f: SessionsFile =
                    serde_json::from_slice(&b).map_err(|e| err(&sessions_path, format!("not a sessions file: {e}")))?;
                f.sessions
            }
        };
        let (seq, sealed) = Self::read_root(&dir).map_err(|e| err(&dir.join("root.bin"), e))?;
        let slot = Self::read_slot(&dir).map_err(|e| err(&dir.join("slot.bin"), e))?;
        let root = Root { seq, hash: if seq == 0 { [0; 32] } else { *blake3::hash(&sealed).as_bytes() }, slot };
        let state = State { stamp: None, pairs: Err("not read yet".into()), record, sessions, wrong: HashMap::new() };
        Ok(Device { dir, state: Mutex::new(state), root: Mutex::new(root) })
    }

    /// The vote kept (none: a default one, for number 0).
    fn read_slot(dir: &Path) -> std::result::Result<Slot, String> {
        let path = dir.join("slot.bin");
        match read_bounded(&path, MAX_ROOT as u64 + 256).map_err(|e| e.to_string())? {
            None => Ok(Slot::default()),
            Some(b) if b.len() >= 9 && b[0] == SLOT_FORMAT => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&b[1..9]);
                match Answer::decode(&b[9..]) {
                    Ok(Answer::Promise { promised, accepted }) => {
                        Ok(Slot { seq: u64::from_be_bytes(seq), promised, accepted: accepted.map(|a| *a) })
                    }
                    _ => Err("not a drive vote this build reads".into()),
                }
            }
            Some(_) => Err("not a drive vote of a format this build reads".into()),
        }
    }

    fn read_root(dir: &Path) -> std::result::Result<(u64, Vec<u8>), String> {
        let path = dir.join("root.bin");
        match read_bounded(&path, MAX_ROOT as u64 + 9).map_err(|e| e.to_string())? {
            None => Ok((0, Vec::new())),
            Some(b) if b.len() >= 9 && b[0] == ROOT_FORMAT => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&b[1..9]);
                Ok((u64::from_be_bytes(seq), b[9..].to_vec()))
            }
            Some(_) => Err("not a drive root of a format this build reads".into()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `peer` is a client paired with this device now; why not.
    fn paired(&self, st: &mut State, peer: &PeerId) -> std::result::Result<(), (Refusal, String)> {
        let path = self.dir.join("pairs.json");
        let s = stamp(&path);
        if s.is_none() || s != st.stamp {
            st.pairs = Pairs::load(&path).map_err(|e| e.to_string());
            st.stamp = s;
            // A revoked client's sessions go with its pairing: pairing it
            // again does not bring them back.
            if let Ok(p) = &st.pairs {
                let before = st.sessions.len();
                let paired: Vec<(String, u64)> = p.list().iter().map(|x| (x.peer.clone(), x.paired_at)).collect();
                st.sessions.retain(|s| paired.iter().any(|(id, at)| *id == s.peer && s.started >= *at));
                if st.sessions.len() != before {
                    let _ = self.save_sessions(st);
                }
            }
        }
        let pairs = st.pairs.as_ref().map_err(|e| (Refusal::Internal, format!("this device's pairings: {e}")))?;
        let id = peer.to_string();
        if pairs.list().iter().any(|p| p.peer == id && p.role == crate::Role::Client) {
            return Ok(());
        }
        if pairs.list().iter().any(|p| p.peer == id && p.role == crate::Role::Friend) {
            return Err((
                Refusal::NotPaired,
                format!("{peer} is a friend's node: friends may receive shares and messages, never the drive"),
            ));
        }
        if pairs.revoked().iter().any(|r| r.peer == id) {
            return Err((Refusal::NotPaired, format!("the pairing of {peer} with this device was revoked")));
        }
        Err((
            Refusal::NotPaired,
            format!(
                "{peer} is not paired with this device: pair first (`ionshard drive pair` there, `drive join CODE` here)"
            ),
        ))
    }

    fn logged_in(&self, st: &State, peer: &PeerId, now: u64) -> std::result::Result<(), (Refusal, String)> {
        let id = peer.to_string();
        let paired_at =
            st.pairs.as_ref().ok().and_then(|p| p.list().iter().find(|x| x.peer == id).map(|x| x.paired_at));
        if st.sessions.iter().any(|s| s.peer == id && s.expires > now && paired_at.is_some_and(|at| s.started >= at)) {
            return Ok(());
        }
        Err((Refusal::NoSession, format!("{peer} is paired but not logged in to this drive: `ionshard drive login`")))
    }

    fn lock_root(&self) -> std::sync::MutexGuard<'_, Root> {
        self.root.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_sessions(&self, st: &State) -> std::result::Result<(), String> {
        let f = SessionsFile { format: SESSIONS_FORMAT, sessions: st.sessions.clone() };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| e.to_string())?;
        write_private(&self.dir.join("sessions.json"), &bytes).map_err(|e| format!("saving sessions: {e}"))
    }

    fn save_record(&self, r: &Record) -> std::result::Result<(), String> {
        let mut b = vec![RECORD_FORMAT];
        b.extend_from_slice(&r.to_bytes());
        write_private(&self.dir.join("record.bin"), &b).map_err(|e| format!("saving the drive record: {e}"))
    }

    /// The sessions kept here now.
    pub fn sessions(&self) -> Vec<Session> {
        self.lock().sessions.clone()
    }

    /// Answer one request's bytes from `peer` at `now`.
    pub fn answer(&self, peer: &PeerId, question: &[u8], now: u64) -> Vec<u8> {
        let a = match Request::decode(question) {
            Ok(r) => self.handle(peer, r, now),
            Err(e) => Answer::refused(Refusal::BadRequest, e.to_string()),
        };
        a.encode()
    }

    /// Answer one request from `peer` at `now`.
    pub fn handle(&self, peer: &PeerId, request: Request, now: u64) -> Answer {
        let mut st = self.lock();
        if let Err((reason, message)) = self.paired(&mut st, peer) {
            return Answer::Refused { reason, message };
        }
        let internal = |e: String| Answer::refused(Refusal::Internal, e);
        let no_drive =
            || Answer::refused(Refusal::NoDrive, "no drive is set up on this device yet: run `ionshard drive setup`");
        match request {
            Request::Hello => Answer::Drive(st.record.as_ref().map(Record::hello)),
            Request::Setup { record, proof } => {
                let current = st.record.clone();
                let record = match (&current, proof) {
                    (None, _) => *record,
                    (Some(_), None) => {
                        let m = "a drive is set up on this device already: log in to it (`ionshard drive login`)";
                        return Answer::refused(Refusal::DriveExists, m);
                    }
                    (Some(old), _) if old.drive_id != record.drive_id => {
                        return Answer::refused(Refusal::DriveExists, "this device keeps another drive");
                    }
                    (Some(old), Some(proof)) => {
                        if let Some(refused) = Self::too_many(&mut st, peer, now) {
                            return refused;
                        }
                        let h = blake3::hash(&proof);
                        if h == blake3::Hash::from_bytes(old.verifier_rc) {
                            *record
                        } else if h == blake3::Hash::from_bytes(old.verifier_pw) {
                            // The password changes only the password's part:
                            // the recovery code stays what it was.
                            Record {
                                salt_rc: old.salt_rc,
                                verifier_rc: old.verifier_rc,
                                wrap_rc: old.wrap_rc,
                                ..*record
                            }
                        } else {
                            st.wrong.entry(*peer).or_default().push(now);
                            return Answer::refused(
                                Refusal::WrongPassword,
                                "wrong password or recovery code: the drive's record was not replaced",
                            );
                        }
                    }
                };
                let replacing = st.record.is_some();
                if let Err(e) = self.save_record(&record) {
                    return internal(e);
                }
                st.record = Some(record);
                if replacing {
                    // A new password ends every other session: one begun
                    // with the old password does not outlive it.
                    let id = peer.to_string();
                    st.sessions.retain(|s| s.peer == id);
                    if let Err(e) = self.save_sessions(&st) {
                        return internal(e);
                    }
                }
                Answer::Done
            }
            Request::Login(auth) | Request::Recover(auth) => {
                let Some(record) = st.record.clone() else { return no_drive() };
                let recovering = matches!(request, Request::Recover(_));
                if let Some(refused) = Self::too_many(&mut st, peer, now) {
                    return refused;
                }
                let verifier = if recovering { record.verifier_rc } else { record.verifier_pw };
                // blake3::Hash compares in constant time.
                if blake3::hash(&auth) != blake3::Hash::from_bytes(verifier) {
                    st.wrong.entry(*peer).or_default().push(now);
                    let what = if recovering { "recovery code" } else { "password" };
                    return Answer::refused(Refusal::WrongPassword, format!("wrong {what} for this drive"));
                }
                st.wrong.remove(peer);
                let expires = now.saturating_add(SESSION_SECS);
                let id = peer.to_string();
                // One session per client: a new login replaces its last.
                st.sessions.retain(|s| s.expires > now && s.peer != id);
                st.sessions.push(Session { peer: id, started: now, expires });
                if let Err(e) = self.save_sessions(&st) {
                    return internal(e);
                }
                Answer::Session { expires, record: Box::new(record) }
            }
            Request::Logout => {
                let id = peer.to_string();
                st.sessions.retain(|s| s.peer != id && s.expires > now);
                match self.save_sessions(&st) {
                    Ok(()) => Answer::Done,
                    Err(e) => internal(e),
                }
            }
            Request::GetRoot | Request::Learn { .. } | Request::Prepare { .. } | Request::Accept { .. } => {
                if st.record.is_none() {
                    return no_drive();
                }
                if let Err((reason, message)) = self.logged_in(&st, peer, now) {
                    return Answer::Refused { reason, message };
                }
                drop(st);
                let mut root = self.lock_root();
                let slot = match request {
                    Request::Prepare { seq, ballot } => root.prepare(seq, ballot),
                    Request::Accept { seq, ballot, prev, sealed } => {
                        root.accept(seq, Accepted { ballot, prev, sealed })
                    }
                    Request::Learn { seq, sealed } => {
                        let hash = *blake3::hash(&sealed).as_bytes();
                        return match root.learn(seq, &hash) {
                            Err((reason, message)) => Answer::Refused { reason, message },
                            Ok(false) => Answer::Done,
                            Ok(true) => {
                                let mut b = Vec::with_capacity(9 + sealed.len());
                                b.push(ROOT_FORMAT);
                                b.extend_from_slice(&seq.to_be_bytes());
                                b.extend_from_slice(&sealed);
                                if let Err(e) = write_private(&self.dir.join("root.bin"), &b) {
                                    return internal(format!("saving the drive's root: {e}"));
                                }
                                root.seq = seq;
                                root.hash = hash;
                                Answer::Done
                            }
                        };
                    }
                    _ => {
                        return match Self::read_root(&self.dir) {
                            Ok((seq, sealed)) => Answer::Root { seq, sealed },
                            Err(e) => internal(e),
                        };
                    }
                };
                match slot {
                    Err((reason, message)) => Answer::Refused { reason, message },
                    Ok((None, answer)) => answer,
                    Ok((Some(slot), answer)) => {
                        // Promised or accepted only once it is on disk: a
                        // device that restarts keeps its word.
                        let mut b = vec![SLOT_FORMAT];
                        b.extend_from_slice(&slot.seq.to_be_bytes());
                        b.extend_from_slice(
                            &Answer::Promise { promised: slot.promised, accepted: slot.accepted.clone().map(Box::new) }
                                .encode(),
                        );
                        if let Err(e) = write_private(&self.dir.join("slot.bin"), &b) {
                            return internal(format!("saving the drive's vote: {e}"));
                        }
                        root.slot = slot;
                        answer
                    }
                }
            }
        }
    }

    /// The refusal if `peer` tried too many wrong secrets lately.
    fn too_many(st: &mut State, peer: &PeerId, now: u64) -> Option<Answer> {
        let wrong = st.wrong.entry(*peer).or_default();
        wrong.retain(|t| t + TRY_WINDOW_SECS > now);
        (wrong.len() >= MAX_WRONG_TRIES).then(|| {
            Answer::refused(
                Refusal::TooManyTries,
                format!("{MAX_WRONG_TRIES} wrong tries in {} minutes: wait, then try again", TRY_WINDOW_SECS / 60),
            )
        })
    }
}

impl Device {
    /// Whether `peer` may use the drive's shards at `now`: paired, and
    /// logged in.
    pub fn admits_at(&self, peer: &PeerId, now: u64) -> std::result::Result<(), String> {
        let mut st = self.lock();
        self.paired(&mut st, peer).map_err(|(_, m)| m)?;
        self.logged_in(&st, peer, now).map_err(|(_, m)| m)
    }

    /// Whether `peer` is paired with this device now (it may then send
    /// the drive protocol's long requests).
    pub fn is_paired(&self, peer: &PeerId) -> bool {
        let mut st = self.lock();
        self.paired(&mut st, peer).is_ok()
    }

    /// Whether `peer` is a client paired with this device now; why not.
    pub fn is_client(&self, peer: &PeerId) -> std::result::Result<(), String> {
        let mut st = self.lock();
        self.paired(&mut st, peer).map_err(|(_, m)| m)
    }

    /// The drive's folder on this device (`DIR/drive`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl net::Private for Device {
    fn admits(&self, peer: &PeerId) -> net::Admission {
        let mut st = self.lock();
        if self.paired(&mut st, peer).is_err() {
            return net::Admission::Stranger;
        }
        match self.logged_in(&st, peer, now()) {
            Ok(()) => net::Admission::Yes,
            Err((_, why)) => net::Admission::Not(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::{Paired, Role};
    use crate::protocol::{Kdf, WRAP_LEN};

    fn record(verifier_pw: [u8; 32], verifier_rc: [u8; 32]) -> Record {
        Record {
            kdf: Kdf { memory_kib: 8, passes: 1, lanes: 1 },
            salt_pw: [1; 16],
            verifier_pw,
            wrap_pw: [3; WRAP_LEN],
            salt_rc: [4; 16],
            verifier_rc,
            wrap_rc: [6; WRAP_LEN],
            drive_id: [7; 16],
        }
    }

    fn pair(dir: &Path, peer: PeerId) {
        let mut p = Pairs::load(&dir.join("drive/pairs.json")).expect("pairs");
        p.add(&Paired { peer, name: "laptop".into(), role: Role::Client, key: None }, 1).expect("add");
    }

    fn reason(a: Answer) -> Refusal {
        match a {
            Answer::Refused { reason, .. } => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn setup(record: &Record, proof: Option<[u8; 32]>) -> Request {
        Request::Setup { record: Box::new(record.clone()), proof }
    }

    fn ballot(round: u64, by: u8) -> Ballot {
        Ballot { round, by: [by; 32] }
    }

    fn accepted(round: u64, by: u8, prev: [u8; 32], b: u8) -> Accepted {
        Accepted { ballot: ballot(round, by), prev, sealed: vec![b; 3] }
    }

    /// The device's side of the vote on the next root: a promise is kept
    /// (no older ballot is accepted after it) and says what was accepted;
    /// an accepted root must follow the root here; only a newer root is
    /// learnt.
    #[test]
    fn a_promise_is_kept_and_says_what_was_accepted_and_only_the_next_root_is_voted_on() {
        let mut here = Root { seq: 5, hash: [5; 32], slot: Slot::default() };
        let promise = |root: &Root, seq, b| root.prepare(seq, b).map(|(_, a)| a);
        let (slot, a) = here.prepare(6, ballot(2, 1)).expect("prepare");
        assert_eq!(a, Answer::Promise { promised: ballot(2, 1), accepted: None });
        here.slot = slot.expect("a promise is kept");
        assert_eq!(
            promise(&here, 6, ballot(1, 9)),
            Ok(Answer::Promise { promised: ballot(2, 1), accepted: None }),
            "an older ballot learns the one to beat"
        );
        let (slot, a) = here.accept(6, accepted(1, 9, [5; 32], 7)).expect("accept");
        assert!(slot.is_none() && matches!(a, Answer::Promise { .. }), "nothing older than the promise is accepted");
        let (slot, a) = here.accept(6, accepted(2, 1, [5; 32], 7)).expect("accept");
        assert_eq!(a, Answer::Done);
        here.slot = slot.expect("kept");
        assert_eq!(
            here.accept(6, accepted(2, 1, [5; 32], 8)).map(|x| x.1).map_err(|e| e.0),
            Err(Refusal::BadRequest),
            "one ballot carries one root"
        );
        let (_, a) = here.prepare(6, ballot(3, 4)).expect("prepare");
        assert_eq!(
            a,
            Answer::Promise { promised: ballot(3, 4), accepted: Some(Box::new(accepted(2, 1, [5; 32], 7))) },
            "a newer ballot hears what was accepted, and must propose it"
        );
        assert_eq!(promise(&here, 5, ballot(9, 9)).map_err(|e| e.0), Err(Refusal::Stale), "5 is decided here");
        assert_eq!(promise(&here, 8, ballot(9, 9)).map_err(|e| e.0), Err(Refusal::Behind));
        assert_eq!(here.learn(6, &[6; 32]), Ok(true));
        assert_eq!(here.learn(5, &[5; 32]), Ok(false), "the root here, again");
        assert_eq!(here.learn(5, &[1; 32]).map_err(|e| e.0), Err(Refusal::Stale));
        assert_eq!(here.learn(4, &[4; 32]).map_err(|e| e.0), Err(Refusal::Stale), "never back");
        here.seq = 6;
        let (slot, a) = here.prepare(7, ballot(1, 1)).expect("prepare");
        assert_eq!(a, Answer::Promise { promised: ballot(1, 1), accepted: None }, "a new number, a new vote");
        assert_eq!(slot.map(|s| s.seq), Some(7));
        let empty = Root { seq: 0, hash: [0; 32], slot: Slot::default() };
        assert_eq!(empty.accept(1, accepted(1, 1, [9; 32], 1)).map(|x| x.1), Ok(Answer::Done), "the first names none");
    }

    /// Devices in memory, each with its own vote, on a network that
    /// loses questions and answers (`loss` of each) and interleaves two
    /// clients at every device.
    /// A device's vote, and the root it learnt.
    type Voter = Mutex<(Root, Option<Vec<u8>>)>;

    struct Lossy {
        devices: Vec<(PeerId, Voter)>,
        rng: Mutex<rand::rngs::StdRng>,
        loss: f64,
    }

    impl crate::remote::Voters for Lossy {
        fn count(&self) -> usize {
            self.devices.len()
        }

        async fn ask_each(&self, request: &Request) -> Vec<(PeerId, Result<Answer>)> {
            use rand::Rng;
            let mut out = Vec::new();
            for (peer, dev) in &self.devices {
                tokio::task::yield_now().await;
                let (lost_question, lost_answer) = {
                    let mut rng = self.rng.lock().expect("rng");
                    (rng.random_bool(self.loss), rng.random_bool(self.loss))
                };
                if lost_question {
                    out.push((*peer, Err(Error::Drive("lost".into()))));
                    continue;
                }
                let answer = {
                    let mut d = dev.lock().expect("device");
                    let (root, learnt) = &mut *d;
                    let decided = match request.clone() {
                        Request::Prepare { seq, ballot } => root.prepare(seq, ballot),
                        Request::Accept { seq, ballot, prev, sealed } => {
                            root.accept(seq, Accepted { ballot, prev, sealed })
                        }
                        Request::Learn { seq, sealed } => {
                            let hash = *blake3::hash(&sealed).as_bytes();
                            match root.learn(seq, &hash) {
                                Ok(true) => {
                                    (root.seq, root.hash) = (seq, hash);
                                    *learnt = Some(sealed);
                                    Ok((None, Answer::Done))
                                }
                                Ok(false) => Ok((None, Answer::Done)),
                                Err(e) => Err(e),
                            }
                        }
                        other => panic!("not a vote: {other:?}"),
                    };
                    match decided {
                        Ok((slot, a)) => {
                            if let Some(slot) = slot {
                                root.slot = slot;
                            }
                            Ok(a)
                        }
                        Err((reason, message)) => Err(Error::Device { reason, message }),
                    }
                };
                out.push((*peer, if lost_answer { Err(Error::Drive("lost".into())) } else { answer }));
            }
            out
        }
    }

    /// Two clients propose different roots for one number at once over a
    /// lossy network, then a third client (no loss) proposes its own: one
    /// root is learnt, by every device that learns one; it is the root of
    /// a client told it won, and at most one is; the third finishes the
    /// first two's root if one was chosen. Over many seeds.
    #[tokio::test(start_paused = true)]
    async fn two_clients_proposing_at_once_over_a_lossy_network_never_both_win() {
        use rand::SeedableRng;
        let (a, b, c) = (vec![1u8; 40], vec![2u8; 40], vec![3u8; 40]);
        let none = std::collections::HashSet::new();
        let wait = std::time::Duration::from_secs(30);
        let mut tally = [0usize; 3];
        for seed in 0..300u64 {
            for n in [1usize, 2, 3, 5] {
                let fresh = || Mutex::new((Root { seq: 0, hash: [0; 32], slot: Slot::default() }, None));
                let net = Lossy {
                    devices: (0..n).map(|_| (PeerId::random(), fresh())).collect(),
                    rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
                    loss: 0.25,
                };
                let (ra, rb) = tokio::join!(
                    crate::remote::decide(&net, &none, 1, [0; 32], &a, wait),
                    crate::remote::decide(&net, &none, 1, [0; 32], &b, wait)
                );
                assert!(!(ra.is_ok() && rb.is_ok()), "seed {seed}, {n} devices: both won");
                let lossless = Lossy { loss: 0.0, ..net };
                let rc = crate::remote::decide(&lossless, &none, 1, [0; 32], &c, wait).await;
                let learnt: std::collections::BTreeSet<Vec<u8>> =
                    lossless.devices.iter().filter_map(|(_, d)| d.lock().expect("device").1.clone()).collect();
                assert_eq!(learnt.len(), 1, "seed {seed}, {n} devices: learnt {learnt:?} ({ra:?}, {rb:?}, {rc:?})");
                let won = learnt.first().expect("one");
                if ra.is_ok() {
                    assert_eq!(*won, a, "seed {seed}, {n} devices: a was told it won");
                }
                if rb.is_ok() {
                    assert_eq!(*won, b, "seed {seed}, {n} devices: b was told it won");
                }
                if rc.is_ok() {
                    assert!(ra.is_err() && rb.is_err() && *won == c, "seed {seed}, {n} devices");
                } else {
                    assert!(
                        matches!(rc, Err(Error::Device { reason: Refusal::Stale, .. })),
                        "seed {seed}: the third client, on a lossless network, wins or hears of the winner: {rc:?}"
                    );
                }
                tally[usize::from(ra.is_ok()) + 2 * usize::from(rb.is_ok())] += 1;
            }
        }
        // The loss is such that sometimes neither won, sometimes each did.
        assert!(tally.iter().all(|t| *t > 0), "{tally:?}");
    }

    /// An unpaired peer, a paired one without a session, a wrong password
    /// and a revoked pairing are each refused for their own reason; a
    /// login opens the root and the shards; a logout closes them.
    #[test]
    fn only_a_paired_logged_in_client_uses_the_drive_and_revocation_counts_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let dev = Device::open(dir.path()).expect("open");
        let (client, stranger) = (PeerId::random(), PeerId::random());
        let auth = [42u8; 32];
        let rec = record(*blake3::hash(&auth).as_bytes(), *blake3::hash(&[43; 32]).as_bytes());
        assert_eq!(reason(dev.handle(&client, Request::Hello, 10)), Refusal::NotPaired);
        pair(dir.path(), client);
        assert_eq!(dev.handle(&client, Request::Hello, 10), Answer::Drive(None));
        assert_eq!(reason(dev.handle(&client, Request::Login(auth), 10)), Refusal::NoDrive);
        assert_eq!(dev.handle(&client, setup(&rec, None), 10), Answer::Done);
        assert_eq!(reason(dev.handle(&client, setup(&rec, None), 10)), Refusal::DriveExists);
        assert_eq!(reason(dev.handle(&stranger, Request::Login(auth), 10)), Refusal::NotPaired);
        assert_eq!(reason(dev.handle(&client, Request::GetRoot, 10)), Refusal::NoSession);
        assert!(dev.admits_at(&client, 10).is_err(), "paired without a session: no shards");
        assert_eq!(reason(dev.handle(&client, Request::Login([0; 32]), 10)), Refusal::WrongPassword);
        for login in [Request::Login(auth), Request::Recover([43; 32])] {
            match dev.handle(&client, login, 10) {
                Answer::Session { record, .. } => assert_eq!(*record, rec),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(dev.sessions().len(), 1, "one session per client");
        assert!(dev.admits_at(&client, 10).is_ok());
        assert!(dev.admits_at(&stranger, 10).is_err());
        assert_eq!(net::Private::admits(&dev, &stranger), net::Admission::Stranger);

        // A root is voted on, then learnt; the promise survives a restart.
        let h = |b: u8| *blake3::hash(&[b; 3]).as_bytes();
        let ask = |dev: &Device, r: Request| dev.handle(&client, r, 11);
        let learn = |dev: &Device, seq, b: u8| ask(dev, Request::Learn { seq, sealed: vec![b; 3] });
        assert_eq!(
            ask(&dev, Request::Prepare { seq: 1, ballot: ballot(1, 1) }),
            Answer::Promise { promised: ballot(1, 1), accepted: None }
        );
        let accept = Request::Accept { seq: 1, ballot: ballot(1, 1), prev: [0; 32], sealed: vec![1; 3] };
        assert_eq!(ask(&dev, accept), Answer::Done);
        assert_eq!(ask(&dev, Request::Prepare { seq: 1, ballot: ballot(5, 2) }), {
            let a = Accepted { ballot: ballot(1, 1), prev: [0; 32], sealed: vec![1; 3] };
            Answer::Promise { promised: ballot(5, 2), accepted: Some(Box::new(a)) }
        });
        let dev = Device::open(dir.path()).expect("reopen");
        let late = Request::Accept { seq: 1, ballot: ballot(4, 4), prev: [0; 32], sealed: vec![4; 3] };
        assert!(matches!(ask(&dev, late), Answer::Promise { .. }), "a restarted device keeps its promise");
        assert_eq!(learn(&dev, 1, 1), Answer::Done);
        assert_eq!(learn(&dev, 1, 1), Answer::Done, "the same root again is fine");
        assert_eq!(reason(learn(&dev, 1, 9)), Refusal::Stale, "another root of the same number is not");
        let accept = Request::Accept { seq: 1, ballot: ballot(9, 1), prev: h(9), sealed: vec![2; 3] };
        assert_eq!(reason(ask(&dev, accept)), Refusal::Stale, "1 is decided here");
        assert_eq!(reason(ask(&dev, Request::Prepare { seq: 5, ballot: ballot(1, 1) })), Refusal::Behind);
        assert_eq!(learn(&dev, 5, 5), Answer::Done, "a device that was behind catches up");
        assert_eq!(reason(learn(&dev, 3, 3)), Refusal::Stale, "an older root never replaces a newer one");
        assert_eq!(dev.handle(&client, Request::GetRoot, 12), Answer::Root { seq: 5, sealed: vec![5; 3] });

        // The record is replaced only with a proof: the password's keeps
        // the recovery code's part; a wrong proof counts as a wrong try.
        let mut new = record([7; 32], [8; 32]);
        assert_eq!(reason(dev.handle(&client, setup(&new, Some([0; 32])), 12)), Refusal::WrongPassword);
        assert_eq!(dev.handle(&client, setup(&new, Some(auth)), 12), Answer::Done);
        let kept = dev.lock().record.clone().expect("record");
        assert_eq!((kept.verifier_pw, kept.verifier_rc), ([7; 32], rec.verifier_rc));
        new.drive_id = [1; 16];
        assert_eq!(reason(dev.handle(&client, setup(&new, Some([43; 32])), 12)), Refusal::DriveExists);

        // Kept across a restart.
        let again = Device::open(dir.path()).expect("reopen");
        assert!(again.admits_at(&client, 13).is_ok());
        assert_eq!(again.handle(&client, Request::GetRoot, 12), Answer::Root { seq: 5, sealed: vec![5; 3] });
        // Revoked by another process: refused at the next request; paired
        // again later, its old session is gone with the pairing.
        let mut p = Pairs::load(&dir.path().join("drive/pairs.json")).expect("pairs");
        p.revoke(&client.to_string(), 13).expect("revoke");
        let why = again.admits_at(&client, 13).expect_err("revoked");
        assert!(why.contains("revoked"), "{why}");
        assert_eq!(reason(again.handle(&client, Request::GetRoot, 13)), Refusal::NotPaired);
        p.add(&Paired { peer: client, name: "laptop".into(), role: Role::Client, key: None }, 14).expect("again");
        assert_eq!(reason(again.handle(&client, Request::GetRoot, 14)), Refusal::NoSession);
    }

    /// Five wrong passwords in ten minutes stop further tries, even the
    /// right one, until the window passes; a logout ends the session.
    #[test]
    fn wrong_passwords_are_limited_and_logout_ends_the_session() {
        let dir = tempfile::tempdir().expect("tmp");
        let dev = Device::open(dir.path()).expect("open");
        let client = PeerId::random();
        pair(dir.path(), client);
        let auth = [1u8; 32];
        let rec = record(*blake3::hash(&auth).as_bytes(), [0; 32]);
        assert_eq!(dev.handle(&client, setup(&rec, None), 10), Answer::Done);
        for _ in 0..MAX_WRONG_TRIES {
            assert_eq!(reason(dev.handle(&client, Request::Login([2; 32]), 100)), Refusal::WrongPassword);
        }
        assert_eq!(reason(dev.handle(&client, Request::Login(auth), 101)), Refusal::TooManyTries);
        assert!(matches!(dev.handle(&client, Request::Login(auth), 100 + TRY_WINDOW_SECS), Answer::Session { .. }));
        assert_eq!(dev.handle(&client, Request::Logout, 700), Answer::Done);
        assert_eq!(reason(dev.handle(&client, Request::GetRoot, 701)), Refusal::NoSession);
        assert!(dev.sessions().is_empty());
    }
}
