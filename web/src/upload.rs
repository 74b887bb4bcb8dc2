//! Uploads in parts, so a browser can send a large file over a flaky link
//! and resume where the node has it:
//!
//! - `POST /up` `{dir, name, size, key}`: an upload of `size` bytes to
//!   `dir/name` (`name` may hold folders: a folder dropped on the page);
//!   answers `{id, offset}`. The same `key` (the page makes it from the
//!   file's name, size and time) in the same session gives back the upload
//!   under way, so a reloaded page resumes it.
//! - `PUT /up/{id}?offset=N`: the next part (at most [`MAX_PART`]) at
//!   offset N; a part at another offset is refused with the node's offset.
//! - `GET /up/{id}`: the node's offset.
//! - `POST /up/{id}/done`: store the file on the devices and name it.
//! - `DELETE /up/{id}`: give up.
//!
//! Every one carries the session's CSRF token in `X-CSRF-Token`. An upload
//! is in a spool file until it is done: nothing is named in the drive
//! before the whole file is stored. Uploads left without a part for
//! [`STALE`] are dropped.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::session::Session;
use crate::{Error, Result, Web};

/// The largest part of an upload one request carries.
pub(crate) const MAX_PART: usize = 8 << 20;
/// Uploads under way at once, at most.
const MAX_UPLOADS: usize = 64;
/// An upload without a part for this long is dropped.
const STALE: Duration = Duration::from_secs(3600);

struct Pending {
    session: String,
    key: String,
    path: String,
    size: u64,
    last: Mutex<Instant>,
    state: tokio::sync::Mutex<Progress>,
}

struct Progress {
    upload: Option<drive::served::Upload>,
    offset: u64,
}

/// The uploads under way.
#[derive(Default)]
pub(crate) struct Uploads {
    map: Mutex<HashMap<String, Arc<Pending>>>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads").finish_non_exhaustive()
    }
}

impl Uploads {
    fn get(&self, id: &str, s: &Session) -> Result<Arc<Pending>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(p) if p.session == s.id => {
                *p.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                Ok(p.clone())
            }
            _ => Err(Error::refused(
                StatusCode::NOT_FOUND,
                "no such upload under way here (it was finished, given up, left too long, or the node restarted): \
                 send the file again",
            )),
        }
    }

    fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Drop the uploads left without a part for [`STALE`] (their spool
    /// files with them).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, p| now.duration_since(*p.last.lock().unwrap_or_else(|p| p.into_inner())) < STALE);
    }

    /// Drop a session's uploads (it logged out or ended).
    pub(crate) fn end_session(&self, session: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, p| p.session != session);
    }
}

/// Why a file cannot be named `path` in `tree`: a folder is there, or a
/// file where a folder above it would be.
fn blocked(tree: &drive::tree::Tree, path: &str) -> Option<String> {
    if let Some(drive::tree::Entry::Dir { .. }) = tree.get(path) {
        return Some(format!("{path} is a folder: the file needs another name"));
    }
    let mut at = path;
    while let Some(i) = at.rfind('/').filter(|i| *i > 0) {
        at = &at[..i];
        if let Some(drive::tree::Entry::File { .. }) = tree.get(at) {
            return Some(format!("{at} is a file, so nothing can go in it: upload somewhere else"));
        }
    }
    None
}

fn csrf(s: &Session, headers: &HeaderMap) -> Result<()> {
    s.check(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or(""))
}

/// What `POST /up` takes.
#[derive(Debug, Deserialize)]
pub(crate) struct Start {
    dir: String,
    name: String,
    size: u64,
    #[serde(default)]
    key: String,
}

/// Where an upload stands.
#[derive(Debug, Serialize)]
pub(crate) struct Standing {
    id: String,
    path: String,
    offset: u64,
    size: u64,
}

fn standing(id: &str, p: &Pending, offset: u64) -> Json<Standing> {
    Json(Standing { id: id.to_string(), path: p.path.clone(), offset, size: p.size })
}

pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `POST /up`.
pub(crate) async fn start(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: HeaderMap,
    Json(q): Json<Start>,
) -> Result<Json<Standing>> {
    csrf(&s, &headers)?;
    if q.size > web.config.max_upload {
        return Err(Error::refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} is {}; this drive node takes files of up to {} (its --max-upload)",
                q.name,
                human(q.size),
                human(web.config.max_upload)
            ),
        ));
    }
    if q.name.contains('\0') || q.dir.contains('\0') {
        return Err(Error::refused(StatusCode::BAD_REQUEST, "a name may not hold a NUL character"));
    }
    let path = drive::tree::normal(&format!("{}/{}", q.dir, q.name))?;
    if path == "/" {
        return Err(Error::refused(StatusCode::BAD_REQUEST, "the file has no name"));
    }
    if let Some(why) = blocked(&*web.served.tree().await?, &path) {
        return Err(Error::refused(StatusCode::CONFLICT, why));
    }
    let key = q.key.chars().take(256).collect::<String>();
    web.uploads.sweep();
    // Made first, then checked and named under one lock (an empty spool
    // file: dropped again if the upload is resumed or refused).
    let upload = web.served.upload(None).await?;
    let now = Instant::now();
    let mut map = web.uploads.map.lock().unwrap_or_else(|p| p.into_inner());
    if !key.is_empty()
        && let Some((id, p)) =
            map.iter().find(|(_, p)| p.session == s.id && p.key == key && p.path == path && p.size == q.size)
    {
        let offset = p.state.try_lock().map_or(0, |st| st.offset);
        return Ok(standing(id, p, offset));
    }
    if map.len() >= MAX_UPLOADS {
        return Err(Error::refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_UPLOADS} uploads are under way here: let some finish first"),
        ));
    }
    let id = data_encoding::BASE32_NOPAD.encode(&rand::random::<[u8; 16]>()).to_ascii_lowercase();
    let p = Arc::new(Pending {
        session: s.id.clone(),
        key,
        path,
        size: q.size,
        last: Mutex::new(now),
        state: tokio::sync::Mutex::new(Progress { upload: Some(upload), offset: 0 }),
    });
    map.insert(id.clone(), p.clone());
    Ok(standing(&id, &p, 0))
}

/// `GET /up/{id}`.
pub(crate) async fn status(State(web): State<Arc<Web>>, s: Session, Path(id): Path<String>) -> Result<Json<Standing>> {
    let p = web.uploads.get(&id, &s)?;
    let offset = p.state.lock().await.offset;
    Ok(standing(&id, &p, offset))
}

/// Where a part goes.
#[derive(Debug, Deserialize)]
pub(crate) struct At {
    offset: u64,
}

/// `PUT /up/{id}?offset=N`.
pub(crate) async fn part(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(at): Query<At>,
    body: Bytes,
) -> Result<Json<Standing>> {
    csrf(&s, &headers)?;
    let p = web.uploads.get(&id, &s)?;
    let mut st = p.state.lock().await;
    if at.offset != st.offset {
        return Err(Error::refused(
            StatusCode::CONFLICT,
            format!("this part is at offset {}; the node has {} bytes: send from there", at.offset, st.offset),
        ));
    }
    let end = st.offset + body.len() as u64;
    if end > p.size {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            format!("this part ends at {end}, past the {} bytes the upload was started with", p.size),
        ));
    }
    let offset = st.offset;
    let up = st.upload.as_mut().ok_or_else(|| Error::refused(StatusCode::CONFLICT, "this upload is being stored"))?;
    let file = up.file_mut();
    let wrote = std::io::Seek::seek(file, std::io::SeekFrom::Start(offset)).and_then(|_| file.write_all(&body));
    if let Err(e) = wrote {
        // What was written of this part is not counted: it is sent again.
        let status = if e.raw_os_error() == Some(28) {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Err(Error::refused(status, format!("the drive node could not keep this part: {e}")));
    }
    st.offset = end;
    Ok(standing(&id, &p, end))
}

/// `POST /up/{id}/done`.
pub(crate) async fn done(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Standing>> {
    csrf(&s, &headers)?;
    let p = web.uploads.get(&id, &s)?;
    let mut st = p.state.lock().await;
    if st.offset != p.size {
        return Err(Error::refused(
            StatusCode::CONFLICT,
            format!("the node has {} of the {} bytes: send the rest first", st.offset, p.size),
        ));
    }
    // The drive may have changed since the upload began.
    if let Some(why) = blocked(&*web.served.tree().await?, &p.path) {
        web.uploads.remove(&id);
        return Err(Error::refused(StatusCode::CONFLICT, why));
    }
    let mut up = st.upload.take().ok_or_else(|| Error::refused(StatusCode::CONFLICT, "this upload is being stored"))?;
    drop(st);
    // Stored by a task of its own: a browser that goes away meanwhile (a
    // closed tab, a dropped network) drops this request, and with it the
    // upload and its spool file, leaving it "being stored" for ever.
    let (uploads, pending, key) = (web.clone(), p.clone(), id.clone());
    let job = tokio::spawn(async move {
        match up.finish(&pending.path, pending.size).await {
            Ok(_) => {
                uploads.uploads.remove(&key);
                Ok(())
            }
            Err(e) => {
                // Kept: finishing again tries again.
                pending.state.lock().await.upload = Some(up);
                Err(e)
            }
        }
    });
    match job.await {
        Ok(Ok(())) => Ok(standing(&id, &p, p.size)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(Error::refused(StatusCode::INTERNAL_SERVER_ERROR, format!("storing the upload failed: {e}"))),
    }
}

/// `DELETE /up/{id}`.
pub(crate) async fn cancel(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    csrf(&s, &headers)?;
    web.uploads.get(&id, &s)?;
    web.uploads.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}
