//! A repository: a tenant of the SPN, its key, its snapshot records (sealed
//! to the key, kept on the SPN as opaque records) and a local cache.
//!
//! ```text
//! SPN record "config"          = JSON { "format": "ionshard-backup-repo/1", "public": hex(32) }
//! SPN record "snap-<id>"       = sealed("snapshot <id>", JSON Snapshot)
//! cache  DIR/trees/<id>.tree   = a snapshot's tree as stored (zstd JSON)
//!        DIR/run.json          = the run in progress (for a resume after a kill)
//!        DIR/last/<h>.json     = a put-only host's last snapshot of these paths and
//!                                the manifests of its objects (h = BLAKE3(host ‖ 0 ‖ paths joined by 0), 16 hex):
//!                                it cannot read the repository's records, so it
//!                                remembers what its incremental runs compare with
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::{RepoKey, seal};
use crate::tree::Tree;

/// The repository config format.
pub const REPO_FORMAT: &str = "ionshard-backup-repo/1";
/// The snapshot record format.
pub const SNAPSHOT_FORMAT: &str = "ionshard-backup-snapshot/1";

/// An object of the repository and the key that reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCap {
    /// Manifest CID.
    pub manifest: String,
    /// Read key, hex (random: destroyed with the last record that holds it).
    pub read_key: String,
    /// Object length.
    pub length: u64,
    /// Object BLAKE3, hex.
    pub blake3: String,
}

impl ObjectCap {
    /// The capability of an object just encoded (length and hash as the encoder found them).
    pub(crate) fn of(enc: &chunker::Encoded) -> Result<ObjectCap> {
        let contents = enc.manifest.open(&enc.read_key)?;
        Ok(ObjectCap {
            manifest: enc.manifest.cid().to_string(),
            read_key: data_encoding::HEXLOWER.encode(&enc.read_key.to_bytes()),
            length: contents.object_len(),
            blake3: data_encoding::HEXLOWER.encode(contents.object_hash()),
        })
    }
}

/// A file the run could not back up, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The path.
    pub path: String,
    /// Why.
    pub why: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Files in the snapshot.
    pub files: u64,
    /// Directories in it.
    pub dirs: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Files read (new or changed).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks stored for the first time.
    pub new_plain_bytes: u64,
    /// Segment bytes stored for the first time (compressed, encrypted; parity not counted).
    pub new_segment_bytes: u64,
    /// Shard bytes sent to the SPN (data shards alone where the SPN makes
    /// the parity, as one of this release does; parity too otherwise).
    pub uploaded_shard_bytes: u64,
    /// Segments that were placed already (a resumed run).
    pub segments_resumed: u64,
    /// Seconds the run took.
    pub seconds: f64,
}

/// A snapshot record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// Its id (16 hex digits).
    pub id: String,
    /// When it was taken, nanoseconds since the epoch.
    pub time_ns: u64,
    /// The host it was taken on.
    pub host: String,
    /// The paths backed up (absolute).
    pub paths: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The snapshot it was compared with.
    pub parent: Option<String>,
    /// The tree.
    pub tree: ObjectCap,
    /// The data objects the tree's files point into.
    pub data: Vec<ObjectCap>,
    /// Figures.
    pub stats: RunStats,
    /// Files left out, and why.
    pub skipped: Vec<Skipped>,
    /// Who added it, if not the full key: the append token of the
    /// put-only key that saved it, as the SPN says, or [`UNMARKED`] for a
    /// record without the full key's mark that the SPN says is the full
    /// key's (forged by whoever holds the tenant's token, or written before
    /// records were marked). `None` only for a record the full key marked.
    /// Never read from the record itself (its writer chose what is in it).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// [`Snapshot::added_by`] of a record the SPN says the full key added but
/// that carries no good mark of it.
pub const UNMARKED: &str = "unmarked";

/// [`Snapshot::added_by`] in words: "put-only key T", or that the full
/// key did not mark it.
pub fn added_by_label(by: &str) -> String {
    if by == UNMARKED {
        "not marked by the full key: forged, or saved before records were marked".to_string()
    } else {
        format!("put-only key {by}")
    }
}

/// How far ahead of the SPN's clock a snapshot's own time may be (clock
/// skew): a record saved at T claims at most T plus this.
const SKEW_NS: u64 = 300 * 1_000_000_000;

/// A record that could not be read as a snapshot, and why (skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// The record's name.
    pub name: String,
    /// Why.
    pub why: String,
    /// The put-only key that added it; `None`: the full key wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// What a put-only host keeps of its last run (it cannot read records).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LastRun {
    /// The snapshot as it was saved (sealed) to the repository.
    pub(crate) snapshot: Snapshot,
    /// Its objects' manifests: CID → bytes, base64.
    pub(crate) manifests: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Config {
    format: String,
    public: String,
}

/// A repository as a full-key holder uses it.
#[derive(Debug, Clone)]
pub struct Repo {
    pub(crate) spn: client::Spn,
    pub(crate) key: RepoKey,
    pub(crate) cache: PathBuf,
}

fn record_name(id: &str) -> String {
    format!("snap-{id}")
}

impl Repo {
    /// The repository `key` names, at `spn`, caching under `cache`.
    pub fn new(spn: client::Spn, key: RepoKey, cache: PathBuf) -> Repo {
        Repo { spn, key, cache }
    }

    /// The SPN it lives on.
    pub fn spn(&self) -> &client::Spn {
        &self.spn
    }

    /// Its key.
    pub fn key(&self) -> &RepoKey {
        &self.key
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.key.repository()
    }

    /// Create the repository on the SPN (refused if it exists with another key).
    pub fn init(&self) -> Result<()> {
        self.key.need_full("make a repository")?;
        let public = data_encoding::HEXLOWER.encode(&self.key.public());
        if let Some(bytes) = self.spn.record(self.name(), "config")? {
            let c: Config = serde_json::from_slice(&bytes).map_err(|e| Error::format("repository config", e))?;
            if c.public == public {
                return Ok(());
            }
            return Err(Error::Key(format!(
                "repository {} exists already with another key: choose another name, or use its key",
                self.name()
            )));
        }
        let c = Config { format: REPO_FORMAT.to_string(), public };
        self.spn.put_record(self.name(), "config", &serde_json::to_vec(&c).unwrap_or_default())?;
        Ok(())
    }

    /// Check that the SPN's repository is this key's.
    pub fn check_config(&self) -> Result<()> {
        let bytes = self.spn.record(self.name(), "config")?.ok_or_else(|| {
            Error::Invalid(format!("no repository {} at this SPN: run `ionshard backup init` first", self.name()))
        })?;
        let c: Config = serde_json::from_slice(&bytes).map_err(|e| Error::format("repository config", e))?;
        if c.format != REPO_FORMAT {
            return Err(Error::format("repository config", format!("format {:?}", c.format)));
        }
        if c.public != data_encoding::HEXLOWER.encode(&self.key.public()) {
            return Err(Error::Key(format!("this key is not repository {}'s", self.name())));
        }
        Ok(())
    }

    /// Every snapshot, oldest first (records that do not open are left out:
    /// [`Repo::snapshots_checked`] names them).
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.snapshots_checked()?.0)
    }

    /// Every snapshot, oldest first, and the records that are not one (a
    /// damaged or forged record must not stop every command). A snapshot a
    /// put-only key saved carries its token's id, and no time later than
    /// the SPN's clock when it was saved (plus skew): a forged record can
    /// neither pass for the full key's nor date itself into the future.
    pub fn snapshots_checked(&self) -> Result<(Vec<Snapshot>, Vec<BadRecord>)> {
        self.key.need_full("list snapshots")?;
        let list = self.spn.records(self.name(), "snap-")?;
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for r in list.records {
            let Some(bytes) = self.spn.record(self.name(), &r.name)? else { continue };
            let id = r.name.trim_start_matches("snap-");
            match self.open_snapshot(id, &bytes) {
                Ok((mut s, marked)) => {
                    s.added_by = match (marked, r.added_by) {
                        (true, _) => None,
                        (false, Some(token)) => Some(token),
                        (false, None) => Some(UNMARKED.to_string()),
                    };
                    if r.created > 0 {
                        s.time_ns = s.time_ns.min(r.created.saturating_mul(1_000_000_000).saturating_add(SKEW_NS));
                    }
                    out.push(s);
                }
                Err(e) => bad.push(BadRecord { name: r.name, why: e.to_string(), added_by: r.added_by }),
            }
        }
        out.sort_by(|a, b| (a.time_ns, &a.id).cmp(&(b.time_ns, &b.id)));
        Ok((out, bad))
    }

    /// Every snapshot, for deciding what data is still used (prune,
    /// repack): refused while a record the full key wrote does not open
    /// (damaged, or a newer build's), since the data it uses would look
    /// unused and be deleted. Records a put-only key added that do not
    /// open are left out: such a key can add anything, and must not be
    /// able to stop every prune.
    pub(crate) fn snapshots_for_prune(&self) -> Result<Vec<Snapshot>> {
        let (snaps, bad) = self.snapshots_checked()?;
        if let Some(b) = bad.iter().find(|b| b.added_by.is_none()) {
            return Err(Error::Invalid(format!(
                "record {} was saved with this repository's full key but does not open here ({}): the data it \
                 uses would look unused and be deleted, so nothing was pruned. If a newer ionshard wrote it, \
                 prune with that build; `ionshard backup check` lists every such record",
                b.name, b.why
            )));
        }
        Ok(snaps)
    }

    /// A snapshot record opened, and whether the full key marked it.
    fn open_snapshot(&self, id: &str, sealed: &[u8]) -> Result<(Snapshot, bool)> {
        let what = format!("snapshot {id}");
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::format(what, "not a snapshot id (16 hex digits)"));
        }
        let opened = self.key.open(&what, sealed)?;
        let (body, marked) = self.key.unmarked(&what, &opened);
        let s: Snapshot = serde_json::from_slice(body).map_err(|e| Error::format(&what, e))?;
        if s.format != SNAPSHOT_FORMAT || s.id != id {
            return Err(Error::format(what, "not a snapshot record of this build, or renamed"));
        }
        Ok((s, marked))
    }

    /// The snapshot `id` (a unique prefix will do, or `latest`).
    pub fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let all = self.snapshots()?;
        if id == "latest" {
            return all.into_iter().last().ok_or_else(|| Error::NoSnapshot(id.to_string()));
        }
        let mut hits: Vec<Snapshot> = all.into_iter().filter(|s| s.id.starts_with(id)).collect();
        match hits.len() {
            1 => Ok(hits.remove(0)),
            0 => Err(Error::NoSnapshot(id.to_string())),
            n => Err(Error::Invalid(format!("{n} snapshots start with {id:?}: give more of the id"))),
        }
    }

    /// Save a snapshot record, with the full key's mark if `mark` (and
    /// this is the full key).
    pub(crate) fn save_snapshot(&self, s: &Snapshot, mark: bool) -> Result<()> {
        let body = serde_json::to_vec(s).map_err(|e| Error::format("snapshot", e))?;
        let what = format!("snapshot {}", s.id);
        let body = if mark { self.key.marked(&what, &body) } else { body };
        let sealed = seal(&self.key.public(), &what, &body);
        self.spn.put_record(self.name(), &record_name(&s.id), &sealed)?;
        Ok(())
    }

    /// Remove a snapshot's record (its objects stay until `prune`).
    pub fn forget(&self, id: &str) -> Result<()> {
        self.key.need_full("forget snapshots")?;
        self.spn.delete_record(self.name(), &record_name(id))?;
        let _ = std::fs::remove_file(self.tree_cache(id));
        Ok(())
    }

    fn last_path(&self, host: &str, paths: &[String]) -> PathBuf {
        let mut h = blake3::Hasher::new();
        h.update(host.as_bytes());
        for p in paths {
            h.update(&[0]);
            h.update(p.as_bytes());
        }
        self.cache.join("last").join(format!("{}.json", &h.finalize().to_hex()[..16]))
    }

    /// A put-only host's last snapshot of `host` and `paths`, and the
    /// manifests of its objects (None if this host has none, or the file
    /// is damaged: the run then reads everything).
    pub(crate) fn last_run(&self, host: &str, paths: &[String]) -> Option<LastRun> {
        let bytes = std::fs::read(self.last_path(host, paths)).ok()?;
        let last: LastRun = serde_json::from_slice(&bytes).ok()?;
        (last.snapshot.host == host && last.snapshot.paths == paths).then_some(last)
    }

    /// Forget a put-only host's last run (its next run reads everything).
    pub(crate) fn forget_last_run(&self, host: &str, paths: &[String]) {
        let _ = std::fs::remove_file(self.last_path(host, paths));
    }

    /// Remember a put-only host's snapshot (written whole or not at all).
    pub(crate) fn save_last_run(&self, last: &LastRun) -> Result<()> {
        let path = self.last_path(&last.snapshot.host, &last.snapshot.paths);
        let bytes = serde_json::to_vec(last).map_err(|e| Error::format("the last run", e))?;
        client::write_atomic(&path, &bytes).map_err(Error::file("saving the last run", &path))
    }

    pub(crate) fn tree_cache(&self, id: &str) -> PathBuf {
        self.cache.join("trees").join(format!("{id}.tree"))
    }

    pub(crate) fn cache_tree(&self, id: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tree_cache(id);
        client::write_atomic(&path, bytes).map_err(Error::file("caching the tree", &path))
    }

    /// The folder objects are fetched into (plaintext: this user's only).
    pub(crate) fn scratch_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.cache.join("fetch");
        std::fs::create_dir_all(&dir).map_err(Error::file("making the scratch folder", &dir))?;
        for d in [&self.cache, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::file("making the cache private", d))?;
        }
        Ok(dir)
    }

    /// A snapshot's tree: from the cache, or fetched from the peers.
    pub async fn tree(&self, net: Option<&net::Client>, s: &Snapshot) -> Result<Tree> {
        let path = self.tree_cache(&s.id);
        if let Ok(bytes) = std::fs::read(&path)
            && blake3::hash(&bytes).to_hex().as_str() == s.tree.blake3
        {
            return Tree::from_bytes(&bytes);
        }
        let Some(net) = net else {
            return Err(Error::NeedsNetwork(format!("the tree of snapshot {} is not cached here", s.id)));
        };
        let tmp = self.scratch_dir()?.join(format!("tree-{}", s.id));
        self.fetch_object(net, &s.tree, &tmp, Arc::new(client::Hidden)).await?;
        let bytes = std::fs::read(&tmp).map_err(Error::file("reading", &tmp))?;
        let _ = std::fs::remove_file(&tmp);
        self.cache_tree(&s.id, &bytes)?;
        Tree::from_bytes(&bytes)
    }

    /// Fetch one object to `out` (resumable: a partial file beside it).
    pub(crate) async fn fetch_object(
        &self,
        net: &net::Client,
        cap: &ObjectCap,
        out: &Path,
        progress: Arc<dyn client::Progress>,
    ) -> Result<client::FetchReport> {
        let info = self.spn.object(&cap.manifest)?;
        let manifest = self.spn.manifest(&cap.manifest, 256 << 20)?;
        let expect = client::Expect {
            label: format!("object {}", &cap.manifest[..cap.manifest.len().min(16)]),
            manifest: cap.manifest.parse()?,
            length: cap.length,
            blake3: unhex32(&cap.blake3, "object hash")?,
        };
        let mut opts = client::FetchOptions::new(out.to_path_buf());
        opts.placement_from = Some(Arc::new(client::PlacementAt::new(
            self.spn.clone(),
            format!("/v1/objects/{}/placement", cap.manifest),
        )));
        let key = unhex32(&cap.read_key, "read key")?;
        Ok(client::fetch(net, &manifest[..], info.placement, &expect, key, &opts, progress).await?)
    }
}

/// Every object `snaps` use, once each, in the order met.
pub(crate) fn objects_of(snaps: &[Snapshot]) -> Vec<ObjectCap> {
    let mut seen = std::collections::HashSet::new();
    snaps
        .iter()
        .flat_map(|s| s.data.iter().chain(std::iter::once(&s.tree)))
        .filter(|cap| seen.insert(cap.manifest.clone()))
        .cloned()
        .collect()
}

pub(crate) fn unhex32(s: &str, what: &str) -> Result<[u8; 32]> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::format(what, "not 32 bytes of hex"))
}
