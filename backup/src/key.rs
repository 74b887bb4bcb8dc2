//! A repository's keys, and records sealed to them.
//!
//! The **full key** is 32 random bytes made at `init`. From it derive:
//! - the chunk-id secret (keyed BLAKE3 ids: dedup within the repository,
//!   nothing confirmable from outside);
//! - an X25519 key pair; its public half is the repository's public key.
//!
//! Every snapshot record (which holds the read keys of the snapshot's
//! objects) is sealed to the public key: a fresh X25519 key per record,
//! the shared secret through BLAKE3 into an AES-256-GCM key. Only the full
//! key opens a record; writing one needs only the public key, which is what
//! a put-only key will carry.
//!
//! A **put-only** key carries the chunk-id secret and the public key, and
//! the SPN append token its host uses: it adds snapshots (dedup against
//! the chunks its own earlier runs stored, which its host remembers) but
//! opens no record, so it cannot list, read or restore a snapshot, and the
//! SPN refuses its token every delete and every read but the `config`
//! record. What it can still learn: with the chunk-id secret, whether a
//! chunk of data it holds has the id of a chunk it has seen in its own
//! runs (the ids of other hosts' chunks stay in records it cannot open).
//!
//! Losing the full key loses the repository: nothing else can open it.
//!
//! Anyone with the public key (a put-only host, the SPN) can seal a record
//! that opens. So a record the full key writes carries, inside the seal, a
//! **mark**: a BLAKE3 MAC of its name and body under a key derived from the
//! full secret. A record without a good mark is not the full key's,
//! whatever the SPN says of who added it.
//!
//! ```text
//! key file  = JSON { "format": "ionshard-backup-key/1", "repository": NAME,
//!                    "kind": "full", "secret": hex(32) }
//!           | JSON { "format": "ionshard-backup-key/1", "repository": NAME,
//!                    "kind": "put-only", "ids": hex(32), "public": hex(32), "token": T? }
//! ids       = BLAKE3-derive("ionshard 2026-12 backup chunk ids v1", secret)
//! public    = X25519(BLAKE3-derive("ionshard 2026-12 backup wrap key v1", secret))
//! sealed    = "ISB1" ‖ ephemeral public (32) ‖ AES-256-GCM(k, nonce 0, aad = "ISB1" ‖ what, body) ‖ tag (16)
//! k         = BLAKE3-derive("ionshard 2026-12 backup seal v1", shared ‖ ephemeral public ‖ repository public)
//! marked    = body ‖ "\n#mark " ‖ hex(BLAKE3-keyed(m, len(what) as u64 LE ‖ what ‖ body))   (the full key's records)
//! m         = BLAKE3-derive("ionshard 2026-12 backup record mark v1", secret)
//! ```

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::error::{Error, Result};

const KEY_FORMAT: &str = "ionshard-backup-key/1";
const SEAL_MAGIC: &[u8; 4] = b"ISB1";
const CTX_IDS: &str = "ionshard 2026-12 backup chunk ids v1";
const CTX_WRAP: &str = "ionshard 2026-12 backup wrap key v1";
const CTX_SEAL: &str = "ionshard 2026-12 backup seal v1";
const CTX_MARK: &str = "ionshard 2026-12 backup record mark v1";
/// What comes between a marked record's body and its mark (a JSON body
/// never ends with it).
const MARK_SEP: &[u8] = b"\n#mark ";

/// A repository's key: the **full** key reads, writes, forgets and prunes;
/// a **put-only** key (made from the full one) only adds snapshots.
#[derive(Clone)]
pub struct RepoKey {
    repository: String,
    kind: Kind,
    /// A put-only key's SPN token (an append token), if it carries one.
    token: Option<String>,
}

#[derive(Clone)]
enum Kind {
    Full([u8; 32]),
    /// The chunk-id secret (to dedup against its own chunks) and the
    /// public key (to seal records): nothing that opens one.
    PutOnly {
        ids: [u8; 32],
        public: [u8; 32],
    },
}

impl fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoKey({}, {}, <hidden>)", self.repository, self.kind_name())
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    repository: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ids: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn hex32(s: Option<&str>, what: &str) -> Result<[u8; 32]> {
    s.and_then(|s| data_encoding::HEXLOWER.decode(s.as_bytes()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| Error::Key(format!("the key file's {what} is not 32 bytes of hex")))
}

impl RepoKey {
    /// A new random key for `repository`.
    pub fn generate(repository: &str) -> RepoKey {
        RepoKey { repository: repository.to_string(), kind: Kind::Full(rand::random()), token: None }
    }

    /// A put-only key of this repository, carrying the SPN append token
    /// `token` (from the full key only).
    pub fn put_only(&self, token: Option<String>) -> Result<RepoKey> {
        match &self.kind {
            Kind::Full(secret) => Ok(RepoKey {
                repository: self.repository.clone(),
                kind: Kind::PutOnly { ids: blake3::derive_key(CTX_IDS, secret), public: self.public() },
                token,
            }),
            Kind::PutOnly { .. } => Err(Error::PutOnly("make other keys")),
        }
    }

    /// The repository's name (the SPN tenant).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `full` or `put-only`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Full(_) => "full",
            Kind::PutOnly { .. } => "put-only",
        }
    }

    /// Only adds snapshots?
    pub fn is_put_only(&self) -> bool {
        matches!(self.kind, Kind::PutOnly { .. })
    }

    /// The SPN token a put-only key carries.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The full key, or [`Error::PutOnly`] naming what needed it.
    pub(crate) fn need_full(&self, what: &'static str) -> Result<()> {
        if self.is_put_only() { Err(Error::PutOnly(what)) } else { Ok(()) }
    }

    /// The secret chunk ids derive from.
    pub(crate) fn tenant_secret(&self) -> chunker::TenantSecret {
        match &self.kind {
            Kind::Full(secret) => chunker::TenantSecret::from_bytes(blake3::derive_key(CTX_IDS, secret)),
            Kind::PutOnly { ids, .. } => chunker::TenantSecret::from_bytes(*ids),
        }
    }

    fn wrap_secret(&self) -> Result<StaticSecret> {
        match &self.kind {
            Kind::Full(secret) => Ok(StaticSecret::from(blake3::derive_key(CTX_WRAP, secret))),
            Kind::PutOnly { .. } => Err(Error::PutOnly("open snapshot records (list, read or restore them)")),
        }
    }

    /// The repository's public key (records are sealed to it).
    pub fn public(&self) -> [u8; 32] {
        match &self.kind {
            Kind::Full(_) => self.wrap_secret().map(|s| PublicKey::from(&s).to_bytes()).unwrap_or_default(),
            Kind::PutOnly { public, .. } => *public,
        }
    }

    /// The key file's text (what `init` writes and `key export` prints).
    pub fn to_file_text(&self) -> String {
        let hex = |b: &[u8]| Some(data_encoding::HEXLOWER.encode(b));
        let f = match &self.kind {
            Kind::Full(secret) => KeyFile {
                format: KEY_FORMAT.to_string(),
                repository: self.repository.clone(),
                kind: "full".to_string(),
                secret: hex(secret),
                ids: None,
                public: None,
                token: None,
            },
            Kind::PutOnly { ids, public } => KeyFile {
                format: KEY_FORMAT.to_string(),
                repository: self.repository.clone(),
                kind: "put-only".to_string(),
                secret: None,
                ids: hex(ids),
                public: hex(public),
                token: self.token.clone(),
            },
        };
        serde_json::to_string_pretty(&f).unwrap_or_default() + "\n"
    }

    /// A key from a key file's text.
    pub fn from_file_text(text: &str) -> Result<RepoKey> {
        let f: KeyFile =
            serde_json::from_str(text).map_err(|e| Error::Key(format!("not an ionshard backup key file: {e}")))?;
        if f.format != KEY_FORMAT {
            return Err(Error::Key(format!("key file format {:?}; this build reads {KEY_FORMAT}", f.format)));
        }
        let kind = match f.kind.as_str() {
            "full" => Kind::Full(hex32(f.secret.as_deref(), "secret")?),
            "put-only" => Kind::PutOnly {
                ids: hex32(f.ids.as_deref(), "chunk-id secret")?,
                public: hex32(f.public.as_deref(), "public key")?,
            },
            k => return Err(Error::Key(format!("a {k} key; this build reads full and put-only keys"))),
        };
        Ok(RepoKey { repository: f.repository, kind, token: f.token })
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<RepoKey> {
        let text = std::fs::read_to_string(path).map_err(Error::file("reading the key", path))?;
        Self::from_file_text(&text)
    }

    /// Write the key file (0600), never over an existing one.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(Error::file("creating", dir))?;
        }
        let tmp = path.with_extension("key.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::file("writing the key", &tmp))?;
        f.write_all(self.to_file_text().as_bytes()).map_err(Error::file("writing the key", &tmp))?;
        f.sync_all().map_err(Error::file("syncing the key", &tmp))?;
        // A hard link fails if the name exists: an existing key is never replaced.
        std::fs::hard_link(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Key(format!("{} exists already: a repository's key is never replaced", path.display()))
            } else {
                Error::File { what: "saving the key", path: path.to_path_buf(), source: e }
            }
        })?;
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }

    /// `body` with the full key's mark behind it (a put-only key writes
    /// records without one: it has no secret to mark with).
    pub(crate) fn marked(&self, what: &str, body: &[u8]) -> Vec<u8> {
        match self.mark(what, body) {
            Some(m) => [body, MARK_SEP, data_encoding::HEXLOWER.encode(&m).as_bytes()].concat(),
            None => body.to_vec(),
        }
    }

    /// A record's body (opened), and whether the full key marked it.
    pub(crate) fn unmarked<'b>(&self, what: &str, opened: &'b [u8]) -> (&'b [u8], bool) {
        let tail = MARK_SEP.len() + 64;
        if opened.len() < tail || &opened[opened.len() - tail..opened.len() - 64] != MARK_SEP {
            return (opened, false);
        }
        let (body, hex) = (&opened[..opened.len() - tail], &opened[opened.len() - 64..]);
        let good = match (self.mark(what, body), data_encoding::HEXLOWER.decode(hex)) {
            // Compared in constant time (blake3's Hash equality is).
            (Some(want), Ok(got)) => {
                <[u8; 32]>::try_from(got.as_slice()).is_ok_and(|g| blake3::Hash::from(g) == blake3::Hash::from(want))
            }
            _ => false,
        };
        (body, good)
    }

    fn mark(&self, what: &str, body: &[u8]) -> Option<[u8; 32]> {
        let Kind::Full(secret) = &self.kind else { return None };
        let mut h = blake3::Hasher::new_keyed(&blake3::derive_key(CTX_MARK, secret));
        h.update(&(what.len() as u64).to_le_bytes());
        h.update(what.as_bytes());
        h.update(body);
        Some(*h.finalize().as_bytes())
    }

    /// Open a record sealed to this repository; `what` names it (and is
    /// bound to it: a record cannot be passed off as another).
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let wrap = self.wrap_secret()?;
        let fail = || Error::Sealed { what: what.to_string() };
        if sealed.len() < 4 + 32 + 16 || &sealed[..4] != SEAL_MAGIC {
            return Err(fail());
        }
        let eph: [u8; 32] = sealed[4..36].try_into().map_err(|_| fail())?;
        let shared = wrap.diffie_hellman(&PublicKey::from(eph));
        let cipher = seal_cipher(shared.as_bytes(), &eph, &self.public());
        let aad = [SEAL_MAGIC.as_slice(), what.as_bytes()].concat();
        cipher.decrypt(&Nonce::default(), Payload { msg: &sealed[36..], aad: &aad }).map_err(|_| fail())
    }
}

fn seal_cipher(shared: &[u8; 32], eph: &[u8; 32], public: &[u8; 32]) -> Aes256Gcm {
    let mut h = blake3::Hasher::new_derive_key(CTX_SEAL);
    h.update(shared);
    h.update(eph);
    h.update(public);
    Aes256Gcm::new(h.finalize().as_bytes().into())
}

/// Seal `body` to the repository whose public key is `public`, as `what`.
/// The sealer cannot open it again.
pub fn seal(public: &[u8; 32], what: &str, body: &[u8]) -> Vec<u8> {
    seal_with(rand::random(), public, what, body)
}

/// [`seal`] with a given ephemeral secret (the test vectors' only use).
fn seal_with(ephemeral: [u8; 32], public: &[u8; 32], what: &str, body: &[u8]) -> Vec<u8> {
    let eph_secret = StaticSecret::from(ephemeral);
    let eph = PublicKey::from(&eph_secret).to_bytes();
    let shared = eph_secret.diffie_hellman(&PublicKey::from(*public));
    let cipher = seal_cipher(shared.as_bytes(), &eph, public);
    let aad = [SEAL_MAGIC.as_slice(), what.as_bytes()].concat();
    // A fresh key per record: the fixed nonce is never reused under one key.
    let ct = cipher
        .encrypt(&Nonce::default(), Payload { msg: body, aad: &aad })
        .unwrap_or_else(|_| unreachable!("records are far below the GCM length limit"));
    [SEAL_MAGIC.as_slice(), &eph, &ct].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_with_its_repositorys_key_and_name() {
        let k = RepoKey::generate("acme");
        let s = seal(&k.public(), "snapshot 1", b"the record");
        assert_eq!(k.open("snapshot 1", &s).expect("open"), b"the record");
        assert!(k.open("snapshot 2", &s).is_err(), "bound to its name");
        assert!(RepoKey::generate("acme").open("snapshot 1", &s).is_err(), "another key");
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open("snapshot 1", &bad).is_err(), "changed");
        assert_ne!(seal(&k.public(), "snapshot 1", b"the record"), s, "fresh per seal");
    }

    /// testdata/backup-vectors.json: the key file, the public key, and a
    /// record sealed with a fixed ephemeral key, so another implementation
    /// (or a later build) can check itself.
    #[test]
    fn seal_vectors_hold() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../testdata/backup-vectors.json")).expect("vectors");
        let k = RepoKey::from_file_text(v["key_file"].as_str().expect("key file")).expect("key");
        let s = &v["seal"];
        let eph: [u8; 32] = data_encoding::HEXLOWER
            .decode(s["ephemeral"].as_str().expect("eph").as_bytes())
            .expect("hex")
            .try_into()
            .expect("32");
        let what = s["what"].as_str().expect("what");
        let body = s["body"].as_str().expect("body").as_bytes();
        let sealed = seal_with(eph, &k.public(), what, body);
        if std::env::var_os("IONSHARD_PRINT_VECTORS").is_some() {
            eprintln!("public {}", data_encoding::HEXLOWER.encode(&k.public()));
            eprintln!("sealed {}", data_encoding::HEXLOWER.encode(&sealed));
        }
        assert_eq!(data_encoding::HEXLOWER.encode(&k.public()), v["public"].as_str().expect("public"));
        assert_eq!(data_encoding::HEXLOWER.encode(&sealed), s["sealed"].as_str().expect("sealed"));
        assert_eq!(k.open(what, &sealed).expect("open"), body);
        // The put-only key the full one makes: its chunk-id secret and public key.
        let p = k.put_only(None).expect("put-only");
        let pf: serde_json::Value = serde_json::from_str(&p.to_file_text()).expect("json");
        if std::env::var_os("IONSHARD_PRINT_VECTORS").is_some() {
            eprintln!("put-only {}", p.to_file_text());
        }
        let want: serde_json::Value =
            serde_json::from_str(v["put_only_key_file"].as_str().expect("put-only file")).expect("json");
        assert_eq!(pf, want);
        let back = RepoKey::from_file_text(&p.to_file_text()).expect("put-only key");
        assert_eq!(back.public(), k.public());
        assert!(back.is_put_only());
        assert!(matches!(back.open(what, &sealed), Err(Error::PutOnly(_))));
        // The full key's mark behind a record's body; a put-only key makes none.
        let marked = k.marked(what, body);
        if std::env::var_os("IONSHARD_PRINT_VECTORS").is_some() {
            eprintln!("marked {}", String::from_utf8_lossy(&marked));
        }
        assert_eq!(String::from_utf8_lossy(&marked), s["marked"].as_str().expect("marked"));
        assert_eq!(k.unmarked(what, &marked), (body, true));
        assert_eq!(back.marked(what, body), body);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&sealed),
            data_encoding::HEXLOWER.encode(&seal_with(eph, &back.public(), what, body))
        );
    }

    /// Anyone with the public key seals records that open; only the full
    /// key's mark says a record is its own.
    #[test]
    fn a_record_without_the_full_keys_good_mark_is_not_the_full_keys() {
        let k = RepoKey::generate("acme");
        let what = "snapshot 0123456789abcdef";
        let body = br#"{"format":"ionshard-backup-snapshot/1"}"#;
        let marked = k.marked(what, body);
        assert_eq!(k.unmarked(what, &marked), (body.as_slice(), true));
        assert_eq!(k.unmarked(what, body), (body.as_slice(), false), "no mark");
        assert!(!k.unmarked("snapshot 1111111111111111", &marked).1, "moved to another name");
        let mut changed = marked.clone();
        changed[3] ^= 1;
        assert!(!k.unmarked(what, &changed).1, "body changed");
        let other = RepoKey::generate("acme");
        assert!(!k.unmarked(what, &other.marked(what, body)).1, "another repository's key");
        let put = k.put_only(None).expect("put-only");
        assert!(!k.unmarked(what, &put.marked(what, body)).1, "a put-only key marks nothing");
        let mut forged = [body.as_slice(), MARK_SEP].concat();
        forged.extend_from_slice(&[b'0'; 64]);
        assert!(!k.unmarked(what, &forged).1, "a made-up mark");
        forged.truncate(forged.len() - 64);
        forged.extend_from_slice(&[b'z'; 64]);
        assert!(!k.unmarked(what, &forged).1, "not hex");
    }

    #[test]
    fn a_key_file_round_trips_and_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let k = RepoKey::generate("acme");
        let path = dir.path().join("acme.key");
        k.save_new(&path).expect("save");
        let back = RepoKey::load(&path).expect("load");
        assert_eq!(back.public(), k.public());
        assert_eq!(back.repository(), "acme");
        let err = RepoKey::generate("acme").save_new(&path).unwrap_err().to_string();
        assert!(err.contains("never replaced"), "{err}");
        assert_eq!(RepoKey::load(&path).expect("load").public(), k.public());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(format!("{k:?}").contains("hidden"));
    }
}
