//! Sessions: a random id in an HttpOnly, SameSite=Strict cookie, a CSRF
//! token per session, and an end after [`Config::session_idle`](crate::Config)
//! without use. They live in the node's memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::{Error, Web};

/// Sessions kept at once, at most (the oldest unused goes first).
const MAX_SESSIONS: usize = 64;

/// What a page shows once, after a change: whether it went well, and what.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

#[derive(Debug)]
struct Data {
    csrf: String,
    last: Instant,
    flash: Option<Flash>,
    /// A share link just made, shown once.
    link: Option<String>,
}

/// The node's sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Data>>,
}

fn random_token() -> String {
    data_encoding::BASE32_NOPAD.encode(&rand::random::<[u8; 32]>()).to_ascii_lowercase()
}

/// Equal, in a time that does not depend on where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the login page says for each reason it was sent to.
pub(crate) fn login_why(why: &str) -> &'static str {
    match why {
        "expired" => "Your session ended after a while without use: log in again.",
        "unknown" => "This drive node does not know your session (it restarted, or you logged out): log in.",
        "out" => "You are logged out.",
        _ => "Log in with the drive's password.",
    }
}

impl Sessions {
    /// A new session; its id and CSRF token.
    pub(crate) fn open(&self) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, d)| d.last).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), Data { csrf: csrf.clone(), last: Instant::now(), flash: None, link: None });
        (id, csrf)
    }

    pub(crate) fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// A logged-in request's session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) csrf: String,
    web: Arc<Web>,
}

impl Session {
    /// Refuse a change without this session's CSRF token.
    pub(crate) fn check(&self, token: &str) -> crate::Result<()> {
        if same(token, &self.csrf) {
            Ok(())
        } else {
            Err(Error::refused(
                StatusCode::FORBIDDEN,
                "this change did not come from the drive's page (its CSRF token is missing or out of date): \
                 reload the page and try again",
            ))
        }
    }

    /// Say `text` on the next page shown.
    pub(crate) fn flash(&self, ok: bool, text: impl Into<String>) {
        let mut map = self.web.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get_mut(&self.id) {
            d.flash = Some(Flash { ok, text: text.into() });
        }
    }

    /// Show `link` once, on the links page.
    pub(crate) fn set_link(&self, link: String) {
        let mut map = self.web.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get_mut(&self.id) {
            d.link = Some(link);
        }
    }

    /// The share link just made, once.
    pub(crate) fn take_link(&self) -> Option<String> {
        let mut map = self.web.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&self.id).and_then(|d| d.link.take())
    }

    /// What to say once, if anything.
    pub(crate) fn take_flash(&self) -> Option<Flash> {
        let mut map = self.web.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&self.id).and_then(|d| d.flash.take())
    }
}

/// The session id in a request's cookie, if any.
pub(crate) fn cookie_id(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Arc<Web>> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie_id(parts, &web.config.cookie) else { return Err(Error::LogIn("login")) };
        let mut map = web.sessions.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = map.get_mut(&id) else { return Err(Error::LogIn("unknown")) };
        if d.last.elapsed() > web.config.session_idle {
            map.remove(&id);
            drop(map);
            web.uploads.end_session(&id);
            return Err(Error::LogIn("expired"));
        }
        d.last = Instant::now();
        Ok(Session { id, csrf: d.csrf.clone(), web: web.clone() })
    }
}

/// The cookie that opens session `id` (or, empty, ends it).
pub(crate) fn set_cookie(web: &Web, id: &str) -> String {
    let secure = if web.config.tls { "; Secure" } else { "" };
    let age = if id.is_empty() { "; Max-Age=0" } else { "" };
    format!("{}={id}; Path=/; HttpOnly; SameSite=Strict{secure}{age}", web.config.cookie)
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
