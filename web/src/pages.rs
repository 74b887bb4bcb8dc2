//! The pages: login, folders, a file, the trash, the devices; the form
//! actions behind them, and the headers every answer carries.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::raw::{Kind, kind_of};
use crate::session::{Flash, Session, login_why, set_cookie};
use crate::upload::human;
use crate::{Error, Result, Web};
use drive::served::Change;
use drive::tree::Entry;

/// Text files shown in the page up to this size.
const TEXT_PREVIEW: u64 = 256 << 10;
/// How long the devices page waits for a device.
const ASK_DEVICE: Duration = Duration::from_secs(3);

/// Headers on every answer: what the page may load and run (its own
/// scripts and styles only), no framing by others, no referrer.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ));
    h.entry("x-content-type-options").or_insert(HeaderValue::from_static("nosniff"));
    h.entry("referrer-policy").or_insert(HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

/// `/files/...` of a drive path, each part escaped.
pub(crate) fn href(prefix: &str, path: &str) -> String {
    let mut out = prefix.to_string();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        out.push('/');
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out == prefix {
        out.push('/');
    }
    out
}

pub(crate) fn when(secs: u64) -> String {
    // UTC, as the drive keeps times.
    let days = secs / 86_400;
    let (y, m, d) = drive::sync::civil(days as i64);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", t / 3600, t / 60 % 60)
}

/// The parts of a path, each with its link: the breadcrumbs.
fn crumbs(path: &str) -> Vec<(String, String)> {
    let mut out = vec![("Drive".to_string(), "/files/".to_string())];
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        out.push((part.to_string(), href("/files", &at)));
    }
    out
}

fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub(crate) fn page(t: impl Template) -> Result<Response> {
    Ok(Html(t.render()?).into_response())
}

/// `GET /`.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/files/")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    message: &'a str,
    error: bool,
}

/// Why the login page was shown.
#[derive(Debug, Deserialize)]
pub(crate) struct Why {
    why: Option<String>,
}

/// `GET /login`.
pub(crate) async fn login_page(Query(q): Query<Why>) -> Result<Response> {
    let why = q.why.unwrap_or_default();
    page(LoginPage { message: login_why(&why), error: why == "expired" || why == "unknown" })
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    password: String,
}

/// Whether a request comes from another site's page, as the browser says
/// (`Sec-Fetch-Site`, `Origin`). Programs that send neither are not.
fn from_another_site(headers: &axum::http::HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if matches!(text(header::HeaderName::from_static("sec-fetch-site")), Some("cross-site" | "same-site")) {
        return true;
    }
    // "null" says nothing: the page's own form sends it (its referrer
    // policy is no-referrer), and `Sec-Fetch-Site` above tells the rest.
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some("null") | None, _) => false,
        (Some(origin), host) => origin.split_once("://").map(|(_, h)| h) != host,
    }
}

/// `POST /login`. Refused from another site's page: any page the owner
/// opens could send guesses (about one a second, each answered after the
/// check, right ones sooner) and, by keeping the line full, lock the owner
/// and WebDAV clients out.
pub(crate) async fn login(
    State(web): State<Arc<Web>>,
    headers: axum::http::HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response> {
    if from_another_site(&headers) {
        let body =
            LoginPage { message: "A login from another site's page is refused: log in here.", error: true }.render()?;
        return Ok((StatusCode::FORBIDDEN, Html(body)).into_response());
    }
    let verdict = if f.password.len() > 1024 { crate::Verdict::No } else { web.gate.admits(&f.password).await };
    match verdict {
        crate::Verdict::Yes => {}
        crate::Verdict::No => {
            let body = LoginPage { message: "That is not the drive's password.", error: true }.render()?;
            return Ok((StatusCode::UNAUTHORIZED, Html(body)).into_response());
        }
        crate::Verdict::Busy => {
            let message = "Too many logins are being checked at once: try again in a few seconds.";
            let body = LoginPage { message, error: true }.render()?;
            return Ok((StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], Html(body)).into_response());
        }
    }
    let (id, _csrf) = web.sessions.open();
    let cookie = set_cookie(&web, &id);
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/files/".to_string()), (header::SET_COOKIE, cookie)])
        .into_response())
}

/// A form that changes nothing but carries the token.
#[derive(Debug, Deserialize)]
pub(crate) struct Token {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout(State(web): State<Arc<Web>>, s: Session, Form(f): Form<Token>) -> Result<Response> {
    s.check(&f.csrf)?;
    web.sessions.close(&s.id);
    web.uploads.end_session(&s.id);
    let cookie = set_cookie(&web, "");
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/login?why=out".to_string()), (header::SET_COOKIE, cookie)])
        .into_response())
}

/// One line of a folder's listing.
struct Line {
    name: String,
    href: String,
    raw: String,
    path: String,
    dir: bool,
    size: String,
    when: String,
    kind: &'static str,
}

#[derive(Template)]
#[template(path = "files.html")]
struct FolderPage {
    csrf: String,
    flash: Option<Flash>,
    path: String,
    crumbs: Vec<(String, String)>,
    lines: Vec<Line>,
    folders: Vec<String>,
    max_upload: u64,
    pending: usize,
}

#[derive(Template)]
#[template(path = "file.html")]
struct FilePage {
    csrf: String,
    flash: Option<Flash>,
    path: String,
    name: String,
    crumbs: Vec<(String, String)>,
    size: String,
    when: String,
    hash: String,
    raw: String,
    download: String,
    kind: &'static str,
    text: Option<String>,
    /// Content hash, when, size, link; newest first.
    versions: Vec<(String, String, String, String)>,
    folders: Vec<String>,
    parent_href: String,
}

/// Every folder, for "move to".
fn folders_of(tree: &drive::tree::Tree) -> Vec<String> {
    let mut out = vec!["/".to_string()];
    out.extend(tree.entries.iter().filter(|(_, e)| matches!(e, Entry::Dir { .. })).map(|(p, _)| p.clone()));
    out
}

fn kind_name(name: &str) -> &'static str {
    match kind_of(name).0 {
        Kind::Image => "image",
        Kind::Pdf => "pdf",
        Kind::Text => "text",
        Kind::Other => "file",
    }
}

/// `GET /files/`.
pub(crate) async fn files_root(state: State<Arc<Web>>, s: Session) -> Result<Response> {
    show(state, s, "/".to_string()).await
}

/// `GET /files/PATH`.
pub(crate) async fn files(state: State<Arc<Web>>, s: Session, Path(path): Path<String>) -> Result<Response> {
    show(state, s, path).await
}

async fn show(State(web): State<Arc<Web>>, s: Session, path: String) -> Result<Response> {
    let path = drive::tree::normal(&path)?;
    let flash = s.take_flash();
    let tree = web.served.tree().await?;
    match tree.get(&path) {
        Some(Entry::File { versions }) => {
            let v = versions.last().ok_or_else(|| drive::Error::NotInDrive(path.clone()))?.clone();
            let name = name_of(&path).to_string();
            let kind = kind_name(&name);
            let vlist = versions
                .iter()
                .rev()
                .map(|x| {
                    let link = format!("{}?v={}&download=1", href("/raw", &path), x.blake3);
                    (x.blake3.clone(), when(x.at), human(x.len), link)
                })
                .collect();
            let folders = folders_of(&tree);
            drop(tree);
            let text = if kind == "text" && v.len <= TEXT_PREVIEW {
                let f = web.served.fetched(&v).await?;
                let mut buf = vec![0u8; v.len as usize];
                std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut buf, 0)
                    .map_err(|e| Error::refused(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {path}: {e}")))?;
                Some(String::from_utf8_lossy(&buf).into_owned())
            } else {
                None
            };
            page(FilePage {
                csrf: s.csrf.clone(),
                flash,
                raw: href("/raw", &path),
                download: format!("{}?download=1", href("/raw", &path)),
                crumbs: crumbs(&path),
                parent_href: href("/files", &parent(&path)),
                name,
                size: human(v.len),
                when: when(v.at),
                hash: v.blake3.clone(),
                kind,
                text,
                versions: vlist,
                folders,
                path,
            })
        }
        Some(Entry::Dir { .. }) | None if path == "/" || tree.get(&path).is_some() => {
            let mut lines: Vec<Line> = tree
                .list(&path)?
                .into_iter()
                .filter(|l| l.path != path)
                .map(|l| {
                    let name = name_of(&l.path).to_string();
                    Line {
                        href: href("/files", &l.path),
                        raw: href("/raw", &l.path),
                        kind: if l.dir { "folder" } else { kind_name(&name) },
                        size: if l.dir { String::new() } else { human(l.len) },
                        when: when(l.at),
                        dir: l.dir,
                        path: l.path,
                        name,
                    }
                })
                .collect();
            lines.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase())));
            let folders = folders_of(&tree);
            drop(tree);
            page(FolderPage {
                csrf: s.csrf.clone(),
                flash,
                crumbs: crumbs(&path),
                lines,
                folders,
                max_upload: web.config.max_upload,
                pending: web.served.pending().await,
                path,
            })
        }
        _ => Err(drive::Error::NotInDrive(path).into()),
    }
}

/// What a change's form carries.
#[derive(Debug, Deserialize)]
pub(crate) struct ChangeForm {
    #[serde(default)]
    csrf: String,
    path: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    to: String,
    /// A version, by its content hash.
    #[serde(default)]
    hash: String,
}

/// A name for something in a folder: one part, no `/`.
fn one_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::refused(StatusCode::BAD_REQUEST, "give a name"));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(Error::refused(
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a name: a name holds no '/' and no NUL", name.escape_debug().to_string()),
        ));
    }
    Ok(name.to_string())
}

/// Answer a change: back to `to` with what happened said there; a
/// failure is said too, and answered with its status.
pub(crate) async fn after(s: &Session, to: &str, done: Result<String>) -> Result<Response> {
    match done {
        Ok(text) => {
            s.flash(true, text);
            Ok(Redirect::to(to).into_response())
        }
        Err(Error::LogIn(w)) => Err(Error::LogIn(w)),
        Err(e @ Error::Refused(StatusCode::FORBIDDEN, _)) => Err(e),
        Err(e) => {
            s.flash(false, e.to_string());
            Ok(Redirect::to(to).into_response())
        }
    }
}

/// `POST /do/mkdir`: `path` (the folder in), `name`.
pub(crate) async fn mkdir(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let back = href("/files", &f.path);
    let done = async {
        let name = one_name(&f.name)?;
        let p = drive::tree::normal(&format!("{}/{name}", f.path))?;
        if web.served.tree().await?.get(&p).is_some() {
            return Err(drive::Error::Exists(p).into());
        }
        web.served.change(Change::Mkdir(p.clone())).await?;
        Ok(format!("Made folder {name}."))
    }
    .await;
    after(&s, &back, done).await
}

/// `POST /do/rename`: `path`, `name` (the new name in the same folder).
pub(crate) async fn rename(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let back = href("/files", &parent(&f.path));
    let done = async {
        let from = drive::tree::normal(&f.path)?;
        let name = one_name(&f.name)?;
        let to = drive::tree::normal(&format!("{}/{name}", parent(&from)))?;
        web.served.change(Change::Rename(from.clone(), to)).await?;
        Ok(format!("Renamed {} to {name}.", name_of(&from)))
    }
    .await;
    after(&s, &back, done).await
}

/// `POST /do/move`: `path`, `to` (a folder).
pub(crate) async fn move_to(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let back = href("/files", &parent(&f.path));
    let done = async {
        let from = drive::tree::normal(&f.path)?;
        let folder = drive::tree::normal(&f.to)?;
        let to = drive::tree::normal(&format!("{folder}/{}", name_of(&from)))?;
        if to == from {
            return Ok(format!("{} is in {folder} already.", name_of(&from)));
        }
        if web.served.tree().await?.get(&to).is_some() {
            return Err(Error::refused(
                StatusCode::CONFLICT,
                format!("{to} exists: rename one of them first (nothing is overwritten)"),
            ));
        }
        web.served.change(Change::Rename(from.clone(), to)).await?;
        Ok(format!("Moved {} to {folder}.", name_of(&from)))
    }
    .await;
    after(&s, &back, done).await
}

/// `POST /do/delete`: `path`, to the trash.
pub(crate) async fn delete(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let back = href("/files", &parent(&f.path));
    let done = async {
        let p = drive::tree::normal(&f.path)?;
        if p == "/" {
            return Err(Error::refused(StatusCode::BAD_REQUEST, "the drive's root cannot go to the trash"));
        }
        web.served.change(Change::Remove(p.clone())).await?;
        Ok(format!("Moved {} to the trash.", name_of(&p)))
    }
    .await;
    after(&s, &back, done).await
}

/// `POST /do/untrash`: `path`, the newest trashed there.
pub(crate) async fn untrash(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let done = async {
        let p = drive::tree::normal(&f.path)?;
        web.served.change(Change::Untrash(p.clone())).await?;
        Ok(format!("Restored {p}."))
    }
    .await;
    after(&s, "/trash", done).await
}

/// `POST /do/restore`: `path`, `version`.
pub(crate) async fn restore(State(web): State<Arc<Web>>, s: Session, Form(f): Form<ChangeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let back = href("/files", &f.path);
    let done = async {
        let p = drive::tree::normal(&f.path)?;
        // Named by content: indices move as versions thin.
        let i = match web.served.tree().await?.get(&p) {
            Some(Entry::File { versions }) => versions.iter().rposition(|v| v.blake3 == f.hash),
            _ => None,
        }
        .ok_or_else(|| Error::refused(StatusCode::NOT_FOUND, format!("{p} has no such version (any more)")))?;
        web.served.change(Change::RestoreVersion(p.clone(), i)).await?;
        Ok(format!("The version you chose is {}'s newest again; the one before is kept.", name_of(&p)))
    }
    .await;
    after(&s, &back, done).await
}

struct TrashLine {
    path: String,
    when: String,
    files: usize,
    size: String,
}

#[derive(Template)]
#[template(path = "trash.html")]
struct TrashPage {
    csrf: String,
    flash: Option<Flash>,
    lines: Vec<TrashLine>,
    days: u64,
}

/// `GET /trash`.
pub(crate) async fn trash(State(web): State<Arc<Web>>, s: Session) -> Result<Response> {
    let flash = s.take_flash();
    let tree = web.served.tree().await?;
    let lines = tree
        .trash
        .iter()
        .rev()
        .map(|t| {
            let files: Vec<u64> = t
                .entries
                .values()
                .filter_map(|e| match e {
                    Entry::File { versions } => versions.last().map(|v| v.len),
                    Entry::Dir { .. } => None,
                })
                .collect();
            TrashLine { path: t.path.clone(), when: when(t.at), files: files.len(), size: human(files.iter().sum()) }
        })
        .collect();
    page(TrashPage { csrf: s.csrf.clone(), flash, lines, days: drive::tree::TRASH_SECS / 86_400 })
}

struct DeviceLine {
    name: String,
    peer: String,
    online: bool,
    state: String,
}

struct PairLine {
    name: String,
    peer: String,
    role: String,
    since: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    csrf: String,
    flash: Option<Flash>,
    devices: Vec<DeviceLine>,
    survives: String,
    pairs: Vec<PairLine>,
    pending: usize,
}

/// `GET /devices`: each device asked at once for its state.
pub(crate) async fn devices(State(web): State<Arc<Web>>, s: Session) -> Result<Response> {
    let flash = s.take_flash();
    let pairs = drive::Pairs::load(&web.config.pairs)?;
    let name_of_peer = |peer: &str| {
        pairs.list().iter().find(|p| p.peer == peer).map_or_else(|| "a device".to_string(), |p| p.name.clone())
    };
    let d = web.served.drive();
    let asks = d.devices().iter().map(|peer| async move {
        let status = tokio::time::timeout(ASK_DEVICE, d.net().peer_status(*peer)).await;
        let link = d.net().link(*peer).await.ok().flatten();
        (*peer, status, link)
    });
    let mut devices = Vec::new();
    for (peer, status, link) in futures::future::join_all(asks).await {
        let (online, state) = match status {
            Ok(Ok(st)) => {
                let how = match link {
                    Some(l) if l.relayed => "through a relay",
                    Some(l) if l.hole_punched => "direct (hole punched)",
                    _ => "direct",
                };
                (true, format!("online, {how}; keeps {} of {}", human(st.bytes), human(st.capacity)))
            }
            Ok(Err(e)) => (false, format!("did not answer: {e}")),
            Err(_) => (false, format!("no answer within {} s", ASK_DEVICE.as_secs())),
        };
        devices.push(DeviceLine { name: name_of_peer(&peer.to_string()), peer: peer.to_string(), online, state });
    }
    let list = pairs
        .list()
        .iter()
        .map(|p| PairLine {
            name: p.name.clone(),
            peer: p.peer.clone(),
            role: format!("{:?}", p.role).to_lowercase(),
            since: when(p.paired_at),
        })
        .collect();
    page(DevicesPage {
        csrf: s.csrf.clone(),
        flash,
        survives: drive::survives(devices.len()),
        devices,
        pairs: list,
        pending: web.served.pending().await,
    })
}

/// The revoke form.
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    peer: String,
}

/// `POST /do/revoke`: this node forgets a pairing.
pub(crate) async fn revoke(State(web): State<Arc<Web>>, s: Session, Form(f): Form<RevokeForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let done = async {
        let mut pairs = drive::Pairs::load(&web.config.pairs)?;
        let p = pairs.revoke(&f.peer, crate::session::now())?;
        Ok(format!(
            "Revoked {} here. A device keeps serving this client until it is revoked there too \
             (`ionshard drive revoke` on the device); a drive node restart stops using it here.",
            p.name
        ))
    }
    .await;
    after(&s, "/devices", done).await
}

/// What the share form carries.
#[derive(Debug, Deserialize)]
pub(crate) struct ShareForm {
    #[serde(default)]
    csrf: String,
    path: String,
    /// Seconds the link stays open.
    life: u64,
}

/// `POST /do/share`: a read link to `path`, shown once on the links page.
pub(crate) async fn share(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: axum::http::HeaderMap,
    Form(f): Form<ShareForm>,
) -> Result<Response> {
    s.check(&f.csrf)?;
    let done = async {
        let p = drive::tree::normal(&f.path)?;
        let item = crate::share::identity(&*web.served.tree().await?, &p)
            .ok_or_else(|| drive::Error::NotInDrive(p.clone()))?;
        let link = crate::share::create(&web, &p, item, f.life, crate::session::now())?;
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let scheme = if web.config.tls { "https" } else { "http" };
        s.set_link(format!("{scheme}://{host}{link}"));
        let friend = match &web.config.node {
            Some(node) => format!(
                " A friend's node opens it with: ionshard drive open ionshard:{node}/{}",
                link.trim_start_matches("/s/")
            ),
            None => String::new(),
        };
        Ok(format!("Made a link to {p}, open until {}.{friend}", when(crate::session::now() + f.life)))
    }
    .await;
    after(&s, "/shares", done).await
}

/// The unshare form.
#[derive(Debug, Deserialize)]
pub(crate) struct UnshareForm {
    #[serde(default)]
    csrf: String,
    id: String,
}

/// `POST /do/unshare`: the link stops opening at once.
pub(crate) async fn unshare(State(web): State<Arc<Web>>, s: Session, Form(f): Form<UnshareForm>) -> Result<Response> {
    s.check(&f.csrf)?;
    let done =
        crate::share::revoke(&web, &f.id).map(|sh| format!("The link to {} is revoked: it opens no more.", sh.path));
    after(&s, "/shares", done).await
}

struct ShareLine {
    id: String,
    path: String,
    state: &'static str,
    until: String,
    open: bool,
}

#[derive(Template)]
#[template(path = "shares.html")]
struct SharesPage {
    csrf: String,
    flash: Option<Flash>,
    fresh: Option<String>,
    lines: Vec<ShareLine>,
    reach: String,
}

/// `GET /shares`: this node's links.
pub(crate) async fn shares(
    State(web): State<Arc<Web>>,
    s: Session,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let flash = s.take_flash();
    let now = crate::session::now();
    let lines = crate::share::list(&web)
        .into_iter()
        .map(|sh| {
            let (state, open) = if sh.revoked {
                ("revoked", false)
            } else if sh.expires <= now {
                ("expired", false)
            } else {
                ("open", true)
            };
            ShareLine { id: sh.id, path: sh.path, state, until: when(sh.expires), open }
        })
        .collect();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let local = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    let reach = if local {
        "it listens on this machine only, so a link opens here alone; a home device serving its network \
         (`drive serve --lan`, over TLS) makes links others on that network can open."
            .to_string()
    } else {
        format!("whoever can reach {host} and has a link can read what it names.")
    };
    page(SharesPage { csrf: s.csrf.clone(), flash, fresh: s.take_link(), lines, reach })
}

/// `GET /assets/NAME`: the page's own script, style and htmx.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (ty, body): (&str, &'static [u8]) = match name.as_str() {
        "htmx.min.js" => ("text/javascript; charset=utf-8", include_bytes!("../assets/htmx.min.js")),
        "drive.js" => ("text/javascript; charset=utf-8", include_bytes!("../assets/drive.js")),
        "drive.css" => ("text/css; charset=utf-8", include_bytes!("../assets/drive.css")),
        "icon.svg" => ("image/svg+xml", include_bytes!("../assets/icon.svg")),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "private, max-age=3600")], body).into_response()
}

/// Anything else.
pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "nothing here: the drive's page is at /files/\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn login_from_another_origin_is_refused() {
        let host = ("host", "127.0.0.1:4918");
        assert!(from_another_site(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(from_another_site(&headers(&[host, ("sec-fetch-site", "same-site")])));
        assert!(from_another_site(&headers(&[host, ("origin", "http://evil.example")])));
        assert!(from_another_site(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(from_another_site(&headers(&[host, ("origin", "null"), ("sec-fetch-site", "cross-site")])));
        // The page's own form, and programs that send neither header.
        assert!(!from_another_site(&headers(&[host, ("origin", "http://127.0.0.1:4918")])));
        assert!(!from_another_site(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        // What Chromium sends for the page's own form (no-referrer policy).
        assert!(!from_another_site(&headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")])));
        assert!(!from_another_site(&headers(&[host, ("sec-fetch-site", "none")])));
        assert!(!from_another_site(&headers(&[host])));
    }
}
