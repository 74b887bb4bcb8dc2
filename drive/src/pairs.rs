//! The pairings a node keeps: its owner's devices and clients it paired
//! with, and those revoked. One JSON file (`format` 1), mode 0600,
//! replaced whole (written beside, synced, renamed, the directory synced),
//! so a crash leaves the old list or the new one, never half of either.
//!
//! ```json
//! { "format": 1,
//!   "pairs":   [ { "peer": "12D3Koo…", "name": "nas", "role": "device", "paired_at": 1764950000 } ],
//!   "revoked": [ { "peer": "12D3Koo…", "name": "old phone", "at": 1764950100 } ] }
//! ```

use std::path::{Path, PathBuf};

use net::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pairing::{Paired, Role};

const FORMAT: u32 = 1;
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
                if file.format != FORMAT {
                    return Err(err(format!(
                        "pairings format {}, this build reads {FORMAT}: run the ionshard that wrote it",
                        file.format
                    )));
                }
                file
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

    /// Record a pairing (one with the same peer is replaced; a revoked one
    /// is paired again) and save.
    pub fn add(&mut self, paired: &Paired, now: u64) -> Result<()> {
        let peer = paired.peer.to_string();
        self.file.pairs.retain(|p| p.peer != peer);
        self.file.revoked.retain(|r| r.peer != peer);
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
        let nas = Paired { peer: PeerId::random(), name: "nas".into(), role: Role::Device };
        let tv = Paired { peer: PeerId::random(), name: "tv".into(), role: Role::Device };
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
        std::fs::write(&path, br#"{"format": 2}"#).expect("newer");
        assert!(Pairs::load(&path).expect_err("newer").to_string().contains("format 2"));
    }
}
