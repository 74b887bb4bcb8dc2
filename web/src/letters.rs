//! Messages between friends on the page: the letters this node sent and
//! received (`DIR/drive/letters.json`), a form that writes a text to a
//! friend (sealed into this node's outbox; the drive node's courier
//! delivers it, or hands it to the owner's devices to hold), and the
//! files friends sent, as downloads.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::pages::{after, page, when};
use crate::session::{Flash, Session};
use crate::upload::human;
use crate::{Error, Result, Web};

fn drive_dir(web: &Web) -> std::path::PathBuf {
    web.config.pairs.parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

struct Line {
    id: String,
    incoming: bool,
    name: String,
    when: String,
    state: String,
    text: String,
    file: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "letters.html")]
struct LettersPage {
    csrf: String,
    flash: Option<Flash>,
    friends: Vec<(String, String)>,
    lines: Vec<Line>,
}

/// `GET /letters`.
pub(crate) async fn letters(State(web): State<Arc<Web>>, s: Session) -> Result<Response> {
    let flash = s.take_flash();
    let pairs = drive::Pairs::load(&web.config.pairs)?;
    let friends = pairs.friends().into_iter().map(|(p, n)| (p.to_string(), n)).collect();
    let kept = drive::post::Letters::at(&drive_dir(&web)).list()?;
    let lines = kept
        .into_iter()
        .rev()
        .map(|k| Line {
            when: when(k.at),
            file: k.file.map(|f| (f.name, human(f.len))),
            id: k.id,
            incoming: k.incoming,
            name: k.name,
            state: k.state,
            text: k.text,
        })
        .collect();
    page(LettersPage { csrf: s.csrf.clone(), flash, friends, lines })
}

/// What the send form carries.
#[derive(Debug, Deserialize)]
pub(crate) struct SendForm {
    #[serde(default)]
    csrf: String,
    friend: String,
    text: String,
}

/// `POST /do/send`: a text to a friend, into the outbox.
pub(crate) async fn send(State(web): State<Arc<Web>>, s: Session, Form(f): Form<SendForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let done = async {
        let text = f.text.trim().to_string();
        if text.is_empty() {
            return Err(Error::refused(StatusCode::BAD_REQUEST, "write something to send"));
        }
        let me: net::PeerId = web
            .config
            .node
            .as_deref()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::refused(StatusCode::SERVICE_UNAVAILABLE, "this node sends no messages"))?;
        let pairs = drive::Pairs::load(&web.config.pairs)?;
        let (to, name) = pairs
            .friends()
            .into_iter()
            .find(|(p, _)| p.to_string() == f.friend)
            .ok_or_else(|| Error::refused(StatusCode::BAD_REQUEST, "not a friend of this node"))?;
        let key = pairs
            .friend_key(&to)
            .ok_or_else(|| Error::refused(StatusCode::BAD_REQUEST, "pair with this friend again to send messages"))?;
        let dir = drive_dir(&web);
        let now = crate::session::now();
        let t = text.clone();
        let e = tokio::task::spawn_blocking(move || -> drive::Result<drive::friends::Envelope> {
            let outbox = drive::post::Spool::open(&dir.join("outbox"), 1 << 40)?;
            let id: [u8; 16] = rand::random();
            let kept = drive::post::Kept {
                id: data_encoding::HEXLOWER.encode(&id),
                incoming: false,
                peer: to.to_string(),
                name: name.clone(),
                at: now,
                text: t.clone(),
                file: None,
                state: "waiting".into(),
            };
            let letters = drive::post::Letters::at(&dir);
            letters.update(|l| l.push(kept))?;
            match drive::post::write_letter(&outbox, &key, (me, to), id, &t, None, now) {
                Ok(e) => Ok(e),
                Err(err) => {
                    letters.set_state(&id, &format!("not sent: {err}"))?;
                    Err(err)
                }
            }
        })
        .await
        .map_err(|e| Error::refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        tracing::debug!(letter = %data_encoding::HEXLOWER.encode(&e.id), "written to the outbox");
        Ok("Sent: it goes out now, or waits on your devices until your friend is online.".to_string())
    }
    .await;
    after(&s, "/letters", done).await
}

/// `GET /letters/ID/file`: a file a friend sent, as a download.
pub(crate) async fn file(State(web): State<Arc<Web>>, _s: Session, Path(id): Path<String>) -> Result<Response> {
    let dir = drive_dir(&web);
    let kept = drive::post::Letters::at(&dir).list()?;
    let f = kept
        .into_iter()
        .find(|k| k.incoming && k.id == id)
        .and_then(|k| k.file)
        .ok_or_else(|| Error::refused(StatusCode::NOT_FOUND, "no such file"))?;
    // Only what the inbox saved: under DIR/drive/received.
    let path = std::path::PathBuf::from(&f.path);
    let root = dir.join("received");
    if !path.starts_with(&root) || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::refused(StatusCode::NOT_FOUND, "no such file"));
    }
    let file =
        std::fs::File::open(&path).map_err(|e| Error::refused(StatusCode::NOT_FOUND, format!("{}: {e}", f.name)))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let body = futures::stream::unfold((file, 0u64), move |(f, at)| async move {
        if at >= len {
            return None;
        }
        let mut buf = vec![0u8; (len - at).min(1 << 20) as usize];
        match std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at) {
            Ok(()) => {
                let n = buf.len() as u64;
                Some((Ok::<_, std::io::Error>(buf), (f, at + n)))
            }
            Err(e) => Some((Err(e), (f, len))),
        }
    });
    let mut r = axum::body::Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let ascii: String =
        f.name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("content-security-policy", HeaderValue::from_static("sandbox; default-src 'none'"));
    Ok(r)
}
