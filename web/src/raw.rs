//! A file's bytes: `GET /raw/PATH[?version=N][&download=1]`, one range at
//! most (`Range: bytes=A-B`), for downloads that resume and media that seek.
//!
//! Only what a browser shows without running it in this origin is served
//! inline: raster images, PDFs, plain text. Anything else is a download
//! (`application/octet-stream`, `Content-Disposition: attachment`), and
//! every answer says `nosniff` and carries a sandbox policy (PDFs excepted:
//! the browser's viewer does not open in a sandbox), so a stored HTML or
//! SVG file cannot act as the page.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use crate::session::Session;
use crate::{Error, Result, Web};

/// Bytes read from the spool file per piece of the answer.
const PIECE: usize = 256 << 10;

/// What `/raw/` takes.
#[derive(Debug, Deserialize)]
pub(crate) struct RawQuery {
    /// Which version, by its content hash (indices move as versions
    /// thin); the newest if absent.
    v: Option<String>,
    /// As a download, whatever its type.
    #[serde(default)]
    download: Option<String>,
}

/// What a file shows as, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Image,
    Pdf,
    Text,
    Other,
}

/// The kind and the type served inline for `name`.
pub(crate) fn kind_of(name: &str) -> (Kind, &'static str) {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => (Kind::Image, "image/png"),
        "jpg" | "jpeg" => (Kind::Image, "image/jpeg"),
        "gif" => (Kind::Image, "image/gif"),
        "webp" => (Kind::Image, "image/webp"),
        "avif" => (Kind::Image, "image/avif"),
        "bmp" => (Kind::Image, "image/bmp"),
        "pdf" => (Kind::Pdf, "application/pdf"),
        "txt" | "md" | "log" | "csv" | "tsv" | "json" | "toml" | "yaml" | "yml" | "ini" | "conf" | "cfg" | "rs"
        | "py" | "c" | "h" | "cpp" | "go" | "java" | "sh" | "xml" | "html" | "htm" | "css" | "js" | "svg" => {
            (Kind::Text, "text/plain; charset=utf-8")
        }
        _ => (Kind::Other, "application/octet-stream"),
    }
}

/// `Content-Disposition` for `name`, ASCII and UTF-8 both.
fn disposition(kind: &str, name: &str) -> HeaderValue {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let utf8: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{utf8}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The one range asked for, within `len`: `(start, end exclusive)`; an
/// error if it cannot be served. A header that does not parse, several
/// ranges, an `If-Range` naming another version, or an empty file: the
/// whole file (RFC 9110 lets a server ignore a range).
fn range_of(headers: &HeaderMap, len: u64, etag: &str) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(h) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if let Some(cond) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && cond.trim() != etag
    {
        return Ok(None);
    }
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') || len == 0 {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (start, end) = match (a.trim().parse::<u64>().ok(), b.trim()) {
        (None, n) if a.trim().is_empty() => match n.parse::<u64>() {
            Ok(n) if n > 0 => (len.saturating_sub(n), len),
            Ok(_) => return Err(()),
            Err(_) => return Ok(None),
        },
        (None, _) => return Ok(None),
        (Some(a), "") => (a, len),
        (Some(a), b) => match b.parse::<u64>() {
            Ok(b) if b >= a => (a, b.saturating_add(1).min(len)),
            _ => return Ok(None),
        },
    };
    if start >= len { Err(()) } else { Ok(Some((start, end))) }
}

/// `GET /raw/PATH`.
pub(crate) async fn raw(
    State(web): State<Arc<Web>>,
    _s: Session,
    Path(path): Path<String>,
    Query(q): Query<RawQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let path = drive::tree::normal(&path)?;
    let v = {
        let tree = web.served.tree().await?;
        match tree.get(&path) {
            Some(drive::tree::Entry::File { versions }) => match &q.v {
                None => versions.last().cloned(),
                Some(h) => versions.iter().rev().find(|x| &x.blake3 == h).cloned(),
            }
            .ok_or_else(|| Error::refused(StatusCode::NOT_FOUND, format!("{path} has no such version")))?,
            Some(drive::tree::Entry::Dir { .. }) => {
                return Err(Error::refused(StatusCode::BAD_REQUEST, format!("{path} is a folder")));
            }
            None => return Err(drive::Error::NotInDrive(path).into()),
        }
    };
    let name = path.rsplit('/').next().unwrap_or("file").to_string();
    serve_version(&web, &v, &name, &headers, q.download.is_some()).await
}

/// Version `v` of a file named `name`, as an answer: inline only if its
/// kind is safe to show and `download` is not asked, ranges honoured.
pub(crate) async fn serve_version(
    web: &Web,
    v: &drive::tree::Version,
    name: &str,
    headers: &HeaderMap,
    download: bool,
) -> Result<Response> {
    let name = name.to_string();
    let (kind, inline_type) = kind_of(&name);
    let download = download || kind == Kind::Other;
    let len = v.len;
    let etag = format!("\"{}\"", v.blake3.get(..32).unwrap_or(&v.blake3));
    let range = match range_of(headers, len, &etag) {
        Ok(r) => r,
        Err(()) => {
            let mut r = Response::new(Body::from(format!("no such range of {len} bytes\n")));
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r.headers_mut().insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
            return Ok(r);
        }
    };
    let fetched = web.served.fetched(v).await?;
    let (start, end) = range.unwrap_or((0, len));
    let body = futures::stream::unfold((fetched, start), move |(f, at)| async move {
        if at >= end {
            return None;
        }
        let n = PIECE.min((end - at) as usize);
        let mut buf = vec![0u8; n];
        match std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut buf, at) {
            Ok(()) => Some((Ok::<_, std::io::Error>(buf), (f, at + n as u64))),
            Err(e) => Some((Err(e), (f, end))),
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if download { "application/octet-stream" } else { inline_type }),
    );
    h.insert(header::CONTENT_LENGTH, hv(&(end - start).to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::CONTENT_DISPOSITION, disposition(if download { "attachment" } else { "inline" }, &name));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    let policy = if kind == Kind::Pdf && !download {
        "frame-ancestors 'self'"
    } else {
        "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"
    };
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    if let Some((a, b)) = range {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert(header::CONTENT_RANGE, hv(&format!("bytes {a}-{}/{len}", b - 1)));
    }
    Ok(r)
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
