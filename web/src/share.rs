//! Share links through the owner's page: a read link for one file or
//! folder, with an expiry, revocable, for someone with only a browser.
//!
//! A link is `/s/ID/TOKEN`: the id names the share, the token (128 random
//! bits, kept only as its BLAKE3 here) proves the link. Whoever holds the
//! link reads that file, or anything under that folder, through this node
//! until the link expires or is revoked; nothing else (no listing above
//! it, no change). The node must be reachable by the one who opens it
//! (`drive serve --lan` on a home device, or a tunnel): a link is as
//! exposed as the node that serves it. Shares are this node's, kept in
//! `DIR/drive/shares.json` (the owner's alone), changed under a lock
//! (`shares.lock`: the page and `ionshard drive share` may both write it)
//! and read again when the file changes.
//!
//! The same link opens for a friend's node as `ionshard:PEER/ID/TOKEN`
//! (`ionshard drive open`), over the friends' protocol: only nodes paired
//! as friends are answered ([`open_for_friend`]).

use std::path::Path;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::session::same;
use crate::upload::human;
use crate::{Error, Result, Web};
use drive::tree::Entry;

/// The longest a link may live.
pub(crate) const MAX_LIFE: u64 = 30 * 86_400;
/// Shares kept at once, at most.
const MAX_SHARES: usize = 1000;
/// A revoked or expired link is listed (and answers "revoked" or
/// "expired") until this long after its expiry, then forgotten.
const KEEP_DEAD: u64 = 30 * 86_400;

/// One share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    /// Its id (in its links).
    pub id: String,
    /// BLAKE3 of the token, hex.
    token_hash: String,
    /// The drive path shared.
    pub path: String,
    /// When it was made (seconds since the epoch).
    pub created: u64,
    /// When it stops opening.
    pub expires: u64,
    /// Revoked by the owner.
    #[serde(default)]
    pub revoked: bool,
    /// What was at `path` when the link was made (its kind and birth): a
    /// link opens only while that same file or folder is there, not
    /// whatever is later moved or made at that name.
    #[serde(default)]
    item: String,
}

/// What identifies the entry at `path`: a folder by when it was made, a
/// file by its first version kept.
pub fn identity(tree: &drive::tree::Tree, path: &str) -> Option<String> {
    if path == "/" {
        return Some("root".into());
    }
    match tree.get(path)? {
        Entry::Dir { created } => Some(format!("dir {created}")),
        Entry::File { versions } => versions.first().map(|v| format!("file {} {}", v.at, v.blake3)),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    shares: Vec<Share>,
}

/// This node's shares, read from `path` (none if it does not exist).
pub(crate) fn load(path: &Path) -> Result<Vec<Share>> {
    match std::fs::read(path) {
        Ok(b) => {
            let f: File = serde_json::from_slice(&b).map_err(|e| {
                Error::refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{} is not a shares file: {e}", path.display()),
                )
            })?;
            Ok(f.shares)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::refused(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {}: {e}", path.display()))),
    }
}

fn save(path: &Path, shares: &[Share]) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(&File { format: 1, shares: shares.to_vec() })
        .map_err(|e| Error::refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().write(true).create(true).truncate(true),
            0o600,
        )
        .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::refused(StatusCode::INTERNAL_SERVER_ERROR, format!("writing {}: {e}", path.display())))
}

fn token() -> String {
    data_encoding::BASE32_NOPAD.encode(&rand::random::<[u8; 16]>()).to_ascii_lowercase()
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Change the shares file `path` with `f`, under its lock.
fn locked<T>(path: &Path, f: impl FnOnce(&mut Vec<Share>) -> Result<T>) -> Result<T> {
    let lock_path = path.with_extension("lock");
    let _lock = drive::lock(&lock_path).map_err(|e| internal(format!("locking {}: {e}", lock_path.display())))?;
    let mut all = load(path)?;
    let out = f(&mut all)?;
    save(path, &all)?;
    Ok(out)
}

/// A new share, in the shares file `shares`, of `path` (the entry `item`
/// names, from [`identity`]) for `life` seconds; its id and token.
pub fn add(shares: &Path, path: &str, item: String, life: u64, now: u64) -> Result<(String, String)> {
    if life == 0 || life > MAX_LIFE {
        return Err(Error::refused(StatusCode::BAD_REQUEST, "a link lives from a second to 30 days"));
    }
    locked(shares, |all| {
        // Dead links are still listed, and still say why, for a while.
        all.retain(|s| now < s.expires.saturating_add(KEEP_DEAD));
        if all.iter().filter(|s| !s.revoked && s.expires > now).count() >= MAX_SHARES {
            return Err(Error::refused(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_SHARES} links are open: revoke some"),
            ));
        }
        let (id, secret) = (token(), token());
        let token_hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
        all.push(Share {
            id: id.clone(),
            token_hash,
            path: path.to_string(),
            created: now,
            // `now` is whole seconds: the second it was made in counts
            // in full, so the link lives at least `life` seconds (it
            // could be gone in a moment when made late in a second).
            expires: now + life + 1,
            revoked: false,
            item,
        });
        Ok((id, secret))
    })
}

/// Revoke share `id` in the shares file `shares`.
pub fn take_back(shares: &Path, id: &str) -> Result<Share> {
    locked(shares, |all| {
        let s =
            all.iter_mut().find(|s| s.id == id).ok_or_else(|| Error::refused(StatusCode::NOT_FOUND, "no such link"))?;
        s.revoked = true;
        Ok(s.clone())
    })
}

/// The shares in the shares file `shares`, newest first.
pub fn all(shares: &Path) -> Result<Vec<Share>> {
    let mut v = load(shares)?;
    v.reverse();
    Ok(v)
}

/// Read the shares file again if it changed since it was read.
fn fresh(web: &Web) {
    let stamp = std::fs::metadata(&web.config.shares)
        .ok()
        .map(|m| (m.modified().ok(), m.len(), std::os::unix::fs::MetadataExt::ino(&m)));
    let mut seen = web.shares_stamp.lock().unwrap_or_else(|p| p.into_inner());
    if *seen == stamp {
        return;
    }
    match load(&web.config.shares) {
        Ok(v) => {
            *web.shares.write().unwrap_or_else(|p| p.into_inner()) = v;
            *seen = stamp;
        }
        Err(e) => eprintln!("share links: {e}"),
    }
}

/// A new share of `path` (the entry `item` identifies) for `life`
/// seconds; its link's path (`/s/ID/TOKEN`).
pub(crate) fn create(web: &Web, path: &str, item: String, life: u64, now: u64) -> Result<String> {
    let (id, secret) = add(&web.config.shares, path, item, life, now)?;
    fresh(web);
    Ok(format!("/s/{id}/{secret}"))
}

/// Revoke share `id`.
pub(crate) fn revoke(web: &Web, id: &str) -> Result<Share> {
    let s = take_back(&web.config.shares, id)?;
    fresh(web);
    Ok(s)
}

/// The shares, newest first.
pub(crate) fn list(web: &Web) -> Vec<Share> {
    fresh(web);
    let mut all = web.shares.read().unwrap_or_else(|p| p.into_inner()).clone();
    all.reverse();
    all
}

/// The share a link names, if its token is right and it is open (from
/// memory, read again if the file changed).
fn open(web: &Web, id: &str, secret: &str, now: u64) -> Result<Share> {
    fresh(web);
    let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
    let s = web
        .shares
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|s| s.id == id && same(&s.token_hash, &hash))
        .cloned()
        .ok_or_else(|| Error::refused(StatusCode::NOT_FOUND, "no such link: check that it was copied whole"))?;
    if s.revoked {
        return Err(Error::refused(StatusCode::GONE, "this link was revoked by the drive's owner"));
    }
    if s.expires <= now {
        return Err(Error::refused(StatusCode::GONE, "this link has expired: ask the drive's owner for a new one"));
    }
    Ok(s)
}

/// A share link opened by a friend's node: the folder's entries, or the
/// file's bytes from `offset` (at most [`drive::friends::PART`] of them).
/// The caller has checked that the asker is a friend.
pub async fn open_for_friend(web: Arc<Web>, id: &str, token: &str, rel: &str, offset: u64) -> drive::friends::Answer {
    use drive::friends::{Answer, Listed, Refusal};
    let r: Result<Answer> = async {
        let share = open(&web, id, token, crate::session::now())?;
        let path = within(&share, rel)?;
        let tree = web.served.tree().await?;
        if !share.item.is_empty() && identity(&tree, &share.path).as_deref() != Some(share.item.as_str()) {
            return Err(Error::refused(StatusCode::GONE, "what this link shared was moved, removed or replaced since"));
        }
        match tree.get(&path) {
            Some(Entry::File { versions }) => {
                let v = versions.last().cloned().ok_or_else(|| drive::Error::NotInDrive(path.clone()))?;
                drop(tree);
                let name = path.rsplit('/').next().unwrap_or("file").to_string();
                if offset > v.len {
                    return Err(Error::refused(StatusCode::RANGE_NOT_SATISFIABLE, "past the file's end"));
                }
                // A large file is read from the devices whole first: on a
                // task of its own, which a friend's next ask finds done.
                // One such read at a time for all friends: asking for many
                // large files in turn does not start a read of each.
                {
                    let mut busy = web.friend_fetch.lock().unwrap_or_else(|p| p.into_inner());
                    match busy.as_deref() {
                        Some(h) if h != v.blake3 => {
                            return Ok(Answer::refused(
                                Refusal::Busy,
                                "another shared file is being read from the owner's devices: ask again shortly",
                            ));
                        }
                        Some(_) => {}
                        None => *busy = Some(v.blake3.clone()),
                    }
                }
                let (served, version, w) = (web.served.clone(), v.clone(), Arc::downgrade(&web));
                let fetch = tokio::spawn(async move {
                    let r = served.fetched(&version).await;
                    if let Some(w) = w.upgrade() {
                        *w.friend_fetch.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    r
                });
                let fetched = match tokio::time::timeout(std::time::Duration::from_secs(15), fetch).await {
                    Ok(Ok(f)) => f?,
                    Ok(Err(e)) => return Err(internal(e)),
                    Err(_) => {
                        return Ok(Answer::refused(
                            Refusal::Busy,
                            "the file is being read from the owner's devices: ask again shortly",
                        ));
                    }
                };
                let n = (v.len - offset).min(drive::friends::PART as u64) as usize;
                let data = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    std::os::unix::fs::FileExt::read_exact_at(fetched.file(), &mut buf, offset).map(|()| buf)
                })
                .await
                .map_err(internal)?
                .map_err(internal)?;
                Ok(Answer::Bytes { total: v.len, name, data })
            }
            Some(Entry::Dir { .. }) | None if path == "/" || tree.get(&path).is_some() => {
                let items = tree.list(&path)?.into_iter().filter(|l| l.path != path);
                let items = items.map(|l| Listed {
                    name: l.path.rsplit('/').next().unwrap_or("").to_string(),
                    dir: l.dir,
                    size: if l.dir { 0 } else { l.len },
                });
                Ok(Answer::Listing(items.collect()))
            }
            _ => Err(Error::refused(StatusCode::NOT_FOUND, "not in this link (moved or removed since it was made?)")),
        }
    }
    .await;
    r.unwrap_or_else(|e| Answer::refused(Refusal::NoLink, e.to_string()))
}

/// A path under the share: `p` (relative) confined to it.
fn within(share: &Share, p: &str) -> Result<String> {
    let full = drive::tree::normal(&format!("{}/{p}", share.path))
        .map_err(|e| Error::refused(StatusCode::NOT_FOUND, format!("not in this link: {e}")))?;
    let root = &share.path;
    if full == *root || (root == "/" && full.starts_with('/')) || full.starts_with(&format!("{root}/")) {
        Ok(full)
    } else {
        Err(Error::refused(StatusCode::NOT_FOUND, "not in this link"))
    }
}

/// What a shared page takes.
#[derive(Debug, Deserialize)]
pub(crate) struct Sub {
    #[serde(default)]
    p: String,
    #[serde(default)]
    raw: Option<String>,
}

struct Item {
    name: String,
    href: String,
    dir: bool,
    size: String,
}

#[derive(Template)]
#[template(path = "shared.html")]
struct SharedPage {
    title: String,
    crumbs: Vec<(String, String)>,
    items: Vec<Item>,
    file: Option<(String, String)>,
    expires: String,
}

fn q(rel: &str) -> String {
    let mut out = String::new();
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /s/ID/TOKEN[?p=REL][&raw=1]`: a shared file or folder, read-only.
pub(crate) async fn shared(
    State(web): State<Arc<Web>>,
    UrlPath((id, secret)): UrlPath<(String, String)>,
    Query(sub): Query<Sub>,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let now = crate::session::now();
    let share = open(&web, &id, &secret, now)?;
    let path = within(&share, &sub.p)?;
    let base = format!("/s/{id}/{secret}");
    let tree = web.served.tree().await?;
    if !share.item.is_empty() && identity(&tree, &share.path).as_deref() != Some(share.item.as_str()) {
        return Err(Error::refused(
            StatusCode::GONE,
            "what this link shared was moved, removed or replaced since: ask the drive's owner for a new link",
        ));
    }
    let rel_of = |p: &str| p.strip_prefix(&share.path).unwrap_or("").trim_start_matches('/').to_string();
    match tree.get(&path) {
        Some(Entry::File { versions }) => {
            let v = versions.last().cloned().ok_or_else(|| drive::Error::NotInDrive(path.clone()))?;
            drop(tree);
            let name = path.rsplit('/').next().unwrap_or("file").to_string();
            if sub.raw.is_some() {
                let Ok(_reading) = web.link_fetches.try_acquire() else {
                    let mut r = Response::new(axum::body::Body::from(
                        "other shared files are being read from the owner's devices: try again in a few seconds\n",
                    ));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return Ok(r);
                };
                // Always a download, sandboxed: a link's reader is not the owner.
                let mut r = crate::raw::serve_version(&web, &v, &name, &headers, true).await?;
                r.headers_mut().insert("x-robots-tag", HeaderValue::from_static("noindex"));
                return Ok(r);
            }
            let page = SharedPage {
                title: name.clone(),
                crumbs: crumbs(&base, &share, &rel_of(&path)),
                items: Vec::new(),
                file: Some((human(v.len), format!("{base}?p={}&raw=1", q(&rel_of(&path))))),
                expires: crate::pages::when(share.expires),
            };
            Ok(Html(page.render()?).into_response())
        }
        Some(Entry::Dir { .. }) | None if path == "/" || tree.get(&path).is_some() => {
            let mut items: Vec<Item> = tree
                .list(&path)?
                .into_iter()
                .filter(|l| l.path != path)
                .map(|l| {
                    let rel = rel_of(&l.path);
                    Item {
                        name: l.path.rsplit('/').next().unwrap_or("").to_string(),
                        href: format!("{base}?p={}", q(&rel)),
                        dir: l.dir,
                        size: if l.dir { String::new() } else { human(l.len) },
                    }
                })
                .collect();
            items.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase())));
            let title = if path == "/" {
                "Shared folder".to_string()
            } else {
                path.rsplit('/').next().unwrap_or("").to_string()
            };
            let page = SharedPage {
                title,
                crumbs: crumbs(&base, &share, &rel_of(&path)),
                items,
                file: None,
                expires: crate::pages::when(share.expires),
            };
            Ok(Html(page.render()?).into_response())
        }
        _ => Err(Error::refused(StatusCode::NOT_FOUND, "not in this link (moved or removed since it was made?)")),
    }
}

fn crumbs(base: &str, share: &Share, rel: &str) -> Vec<(String, String)> {
    let top = share.path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("Shared").to_string();
    let mut out = vec![(top, base.to_string())];
    let mut at = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        out.push((part.to_string(), format!("{base}?p={}", q(&at))));
    }
    out
}
