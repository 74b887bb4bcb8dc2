//! The pairings a node keeps: its owner's devices and clients it paired
//! with, its friends, and those revoked. One JSON file (`format` 2; 1,
//! without friend keys, is read too), mode 0600,
//! replaced whole (written beside, synced, renamed, the directory synced),
//! so a crash leaves the old list or the new one, never half of either.
//!
//! ```json
//! { "format": 2,
//!   "pairs":   [ { "peer": "12D3Koo…", "name": "nas", "role": "device", "paired_at": 1764950000 } ],
//!   "revoked": [ { "peer": "12D3Koo…", "name": "old phone", "at": 1764950100 } ],
//!   "friend_keys": { "12D3Koo…": "hex of the 32-byte key the friend pairing derived" } }
//! ```
//!
//! A friend's key is never listed with the pairings: only
//! [`Pairs::friend_key`] gives it.

use std::path::{Path, PathBuf};

use net::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pairing::{Paired, Role};

const FORMAT: u32 = 2;
/// The largest pairings file read (a few thousand pairings).
const MAX_FILE: u64 = 4 << 20;

/// A paired node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Its peer id.
    pub peer: String,
    /// Its name, as it gave it.
    pub name: String,
    /// Its side.
    pub role: Role,
    /// When it was paired (seconds since the epoch).
    pub paired_at: u64,
}

/// A pairing taken back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Its peer id.
    pub peer: String,
    /// Its name.
    pub name: String,
    /// When (seconds since the epoch).
    pub at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    #[serde(default)]
    pairs: Vec<Pair>,
    #[serde(default)]
    revoked: Vec<Revoked>,
    #[serde(default)]
    friend_keys: std::collections::BTreeMap<String, String>,
}

/// A node's pairings, as read from its file.
#[derive(Debug)]
pub struct Pairs {
    path: PathBuf,
    file: File,
}

impl Pairs {
    /// The pairings in `path` (none if it does not exist yet).
    pub fn load(path: &Path) -> Result<Pairs> {
        let err = |why: String| Error::Pairs { path: path.to_path_buf(), why };
        let file = match crate::files::read_bounded(path, MAX_FILE).map_err(|e| err(e.to_string()))? {
            None => File { format: FORMAT, ..File::default() },
            Some(bytes) => {
                let file: File =
                    serde_json::from_slice(&bytes).map_err(|e| err(format!("not a pairings file: {e}")))?;
                if !(1..=FORMAT).contains(&file.format) {
                    return Err(err(format!(
                        "pairings format {}, this build reads {FORMAT}: run the ionshard that wrote it",
                        file.format
                    )));
                }
                File { format: FORMAT, ..file }
            }
        };
        Ok(Pairs { path: path.to_path_buf(), file })
    }

    /// The paired nodes.
    pub fn list(&self) -> &[Pair] {
        &self.file.pairs
    }

    /// The revoked pairings.
    pub fn revoked(&self) -> &[Revoked] {
        &self.file.revoked
    }

    /// Is `peer` paired (and not revoked)?
    pub fn is_paired(&self, peer: &PeerId) -> bool {
        let p = peer.to_string();
        self.file.pairs.iter().any(|x| x.peer == p)
    }

    /// The key a friend pairing with `peer` derived, if it is a friend.
    pub fn friend_key(&self, peer: &PeerId) -> Option<crate::FriendKey> {
        let p = peer.to_string();
        if !self.file.pairs.iter().any(|x| x.peer == p && x.role == Role::Friend) {
            return None;
        }
        let hex = self.file.friend_keys.get(&p)?;
        let k: [u8; 32] = data_encoding::HEXLOWER.decode(hex.as_bytes()).ok()?.try_into().ok()?;
        Some(crate::FriendKey(k))
    }

    /// The friends, by peer id and name.
    pub fn friends(&self) -> Vec<(PeerId, String)> {
        let friends = self.file.pairs.iter().filter(|p| p.role == Role::Friend);
        friends.filter_map(|p| Some((p.peer.parse().ok()?, p.name.clone()))).collect()
    }

    /// Record a pairing (one with the same peer is replaced; a revoked one
    /// is paired again) and save.
    pub fn add(&mut self, paired: &Paired, now: u64) -> Result<()> {
        let peer = paired.peer.to_string();
        self.file.pairs.retain(|p| p.peer != peer);
        self.file.revoked.retain(|r| r.peer != peer);
        self.file.friend_keys.remove(&peer);
        if let Some(k) = &paired.key {
            self.file.friend_keys.insert(peer.clone(), data_encoding::HEXLOWER.encode(&k.0));
        }
        self.file.pairs.push(Pair { peer, name: paired.name.clone(), role: paired.role, paired_at: now });
        self.save()
    }

    /// Take a pairing back, by peer id or name, and save; what was revoked.
    pub fn revoke(&mut self, who: &str, now: u64) -> Result<Pair> {
        // A peer id is exact: it wins over a name (the other side chose the
        // name, and could choose another pairing's peer id as one).
        let find = |by_id: bool| -> Vec<usize> {
            let hit = |p: &Pair| if by_id { p.peer == who } else { p.name == who };
            self.file.pairs.iter().enumerate().filter(|(_, p)| hit(p)).map(|(i, _)| i).collect()
        };
        let matching = match find(true) {
            v if v.is_empty() => find(false),
            v => v,
        };
        let i = match matching.as_slice() {
            [i] => *i,
            [] => return Err(Error::NotPaired(who.to_string())),
            _ => {
                return Err(Error::Pairs {
                    path: self.path.clone(),
                    why: format!("{} pairings are named {who:?}: give the peer id", matching.len()),
                });
            }
        };
        let p = self.file.pairs.remove(i);
        self.file.friend_keys.remove(&p.peer);
        self.file.revoked.push(Revoked { peer: p.peer.clone(), name: p.name.clone(), at: now });
        self.save()?;
        Ok(p)
    }

    fn save(&self) -> Result<()> {
        let err = |why: String| Error::Pairs { path: self.path.clone(), why };
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(|e| err(e.to_string()))?;
        crate::files::write_private(&self.path, &bytes).map_err(|e| err(format!("writing: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairings_are_kept_revoked_at_once_and_refuse_a_file_they_cannot_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("drive").join("pairs.json");
        let mut p = Pairs::load(&path).expect("empty");
        assert!(p.list().is_empty());
        let nas = Paired { peer: PeerId::random(), name: "nas".into(), role: Role::Device, key: None };
        let tv = Paired { peer: PeerId::random(), name: "tv".into(), role: Role::Device, key: None };
        p.add(&nas, 10).expect("add");
        p.add(&tv, 11).expect("add");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        let again = Pairs::load(&path).expect("load");
        assert!(again.is_paired(&nas.peer) && again.is_paired(&tv.peer));
        let mut again = again;
        assert_eq!(again.revoke("nas", 12).expect("revoke").peer, nas.peer.to_string());
        assert!(matches!(again.revoke("nas", 13), Err(Error::NotPaired(_))));
        let after = Pairs::load(&path).expect("load");
        assert!(!after.is_paired(&nas.peer) && after.is_paired(&tv.peer));
        assert_eq!(after.revoked().len(), 1);
        std::fs::write(&path, b"{ not json").expect("corrupt");
        assert!(Pairs::load(&path).is_err());
        std::fs::write(&path, br#"{"format": 3}"#).expect("newer");
        assert!(Pairs::load(&path).expect_err("newer").to_string().contains("format 3"));
    }

    /// A friend's key is kept with its pairing, never shown with the
    /// list, and goes when the pairing is revoked; a format 1 file (before
    /// friend keys) still reads.
    #[test]
    fn a_friends_key_is_kept_apart_and_goes_with_its_pairing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pairs.json");
        std::fs::write(&path, br#"{"format": 1, "pairs": [], "revoked": []}"#).expect("old");
        let mut p = Pairs::load(&path).expect("format 1 reads");
        let bob = Paired {
            peer: PeerId::random(),
            name: "bob".into(),
            role: Role::Friend,
            key: Some(crate::FriendKey([7; 32])),
        };
        p.add(&bob, 1).expect("add");
        let again = Pairs::load(&path).expect("load");
        assert_eq!(again.friend_key(&bob.peer), Some(crate::FriendKey([7; 32])));
        assert_eq!(again.friends(), vec![(bob.peer, "bob".to_string())]);
        assert!(!serde_json::to_string(again.list()).expect("json").contains(&"07".repeat(32)), "listed with the key");
        let mut again = again;
        again.revoke("bob", 2).expect("revoke");
        assert_eq!(Pairs::load(&path).expect("load").friend_key(&bob.peer), None);
        assert!(!std::fs::read_to_string(&path).expect("read").contains(&"07".repeat(32)), "the key stayed");
    }
}
