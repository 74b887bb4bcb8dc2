//! `ionshard drive serve`: a client's local drive node. It joins the
//! network, logs in to the owner's devices (over libp2p: relayed or
//! hole-punched as needed, no port opened at home) and serves the drive on
//! localhost: the web page at `/` (log in with the drive's password) and
//! WebDAV at `/dav/`, so a file manager, rclone or cadaver mounts it (HTTP
//! basic auth: any user name, the drive's password).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tower::ServiceExt;

use crate::drive_files::{On, Secret};

/// How a connection may sit without a request in its headers.
const IDLE: Duration = Duration::from_secs(30);
/// Connections to the page and WebDAV served at once, at most.
const MAX_CONNECTIONS: usize = 256;

/// How `drive serve` serves.
pub(crate) struct ServeArgs {
    pub(crate) listen: SocketAddr,
    pub(crate) lan: bool,
    pub(crate) max_upload: u64,
    pub(crate) session_idle: Duration,
}

fn basic_password(req: &hyper::Request<hyper::body::Incoming>) -> Option<String> {
    let h = req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic "))?;
    let raw = data_encoding::BASE64.decode(b64.trim().as_bytes()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':').map(|(_, p)| p.to_string())
}

fn unauthorized() -> hyper::Response<dav_server::body::Body> {
    let mut r = hyper::Response::new(dav_server::body::Body::from("the drive's password is needed (any user name)\n"));
    *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"ionshard drive\", charset=\"UTF-8\""),
    );
    r
}

/// The names this node answers to: on loopback only its own address,
/// `localhost` and `[::1]` with its port (a web site that points its name
/// at 127.0.0.1, DNS rebinding, is refused); on a LAN any.
#[derive(Clone)]
struct Hosts(Option<Vec<String>>);

impl Hosts {
    fn for_listen(at: SocketAddr, lan: bool) -> Hosts {
        if lan {
            return Hosts(None);
        }
        let p = at.port();
        Hosts(Some(vec![format!("{at}"), format!("localhost:{p}"), format!("127.0.0.1:{p}"), format!("[::1]:{p}")]))
    }

    fn refuses(&self, req: &hyper::Request<hyper::body::Incoming>) -> Option<hyper::Response<axum::body::Body>> {
        let allowed = self.0.as_ref()?;
        let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return None;
        }
        Some(plain(421, &format!("this drive node answers to {} only, not to Host {host:?}\n", allowed[0])))
    }
}

fn plain(status: u16, text: &str) -> hyper::Response<axum::body::Body> {
    let mut r = hyper::Response::new(axum::body::Body::from(text.to_string()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Is this request for WebDAV (`/dav`, `/dav/...`)?
fn is_dav(path: &str) -> bool {
    path == "/dav" || path.starts_with("/dav/")
}

/// Serve one connection: the page, or WebDAV for the drive's password.
async fn connection<S>(io: S, handler: dav_server::DavHandler, gate: Arc<web::Gate>, page: axum::Router, hosts: Hosts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (handler, gate, page, hosts) = (handler.clone(), gate.clone(), page.clone(), hosts.clone());
        async move {
            if let Some(refusal) = hosts.refuses(&req) {
                return Ok::<_, std::convert::Infallible>(refusal);
            }
            if !is_dav(req.uri().path()) {
                let r = page.oneshot(req.map(axum::body::Body::new)).await;
                return Ok(r.unwrap_or_else(|e| match e {}));
            }
            let verdict = match basic_password(&req) {
                Some(pw) => gate.admits(&pw).await,
                None => web::Verdict::No,
            };
            match verdict {
                web::Verdict::Yes => {}
                web::Verdict::No => return Ok(unauthorized().map(axum::body::Body::new)),
                web::Verdict::Busy => return Ok(plain(503, "too many password checks at once: retry shortly\n")),
            }
            let mut r = handler.handle(req).await.map(axum::body::Body::new);
            // A stored HTML or SVG file read over WebDAV in a browser must
            // not act as the drive's page: no script, an origin of its own.
            let h = r.headers_mut();
            h.insert("content-security-policy", hyper::header::HeaderValue::from_static("sandbox; default-src 'none'"));
            h.insert("x-content-type-options", hyper::header::HeaderValue::from_static("nosniff"));
            Ok(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    // A client that hangs up mid-request is its own business.
    let _ = conn.await;
}

/// `ionshard drive serve`.
pub(crate) fn serve(on: On, secret: Secret, args: ServeArgs) -> Result<()> {
    let ServeArgs { listen, lan, max_upload, session_idle } = args;
    if !listen.ip().is_loopback() && !lan {
        bail!(
            "--listen {listen} is not a loopback address: the drive would be reachable by others on that network; \
             give --lan to mean it (a home device serving its LAN)"
        );
    }
    // On a LAN, over TLS: the password crosses the network in every
    // WebDAV request and at each login.
    let tls = if lan {
        let mut names = vec!["localhost".to_string(), listen.ip().to_string()];
        if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
            names.push(h.trim().to_string());
        }
        names.retain(|n| !n.is_empty() && n != "0.0.0.0" && n != "::");
        Some(crate::drive_tls::load_or_make(&on.dir().join("drive").join("tls"), names)?)
    } else {
        None
    };
    let password = crate::drive_files::password(&secret)?;
    let rt = crate::node_cmd::runtime()?;
    rt.block_on(async move {
        let devices = on.devices()?;
        let (net, _h) = on.net().await?;
        let (login, check) = drive::login_checked(&net, &devices, &password).await?;
        login.save(&on.dir())?;
        let d = drive::Drive::new(net.clone(), devices.clone(), &login)?;
        let served = drive::served::Served::start(d, &on.dir().join("spool")).await?;
        let handler = dav_server::DavHandler::builder()
            .strip_prefix("/dav")
            .filesystem(Box::new(drive::dav::DavDrive(served.clone())))
            .locksystem(dav_server::memls::MemLs::new())
            .build_handler();
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let at = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{at}/");
        let dav = format!("{scheme}://{at}/dav/");
        let fingerprint = tls.as_ref().map(|t| t.fingerprint.clone());
        if on.json {
            println!(
                "{}",
                json!({ "url": url, "dav": dav, "devices": devices.len(), "user": "any", "password": "the drive's",
                        "tls_sha256": fingerprint })
            );
        } else {
            println!("serving the drive at {url} (open it in a browser; log in with the drive's password)");
            if let Some(t) = &tls {
                println!(
                    "  TLS with this node's own certificate ({}): a browser warns the first time; go on only if it shows \
                     SHA-256 {}",
                    t.cert.display(),
                    t.fingerprint
                );
            }
            println!("  WebDAV at {dav} (any user name, the drive's password):");
            println!(
                "    rclone lsf :webdav: --webdav-url {dav} --webdav-user me --webdav-pass $(rclone obscure PASSWORD)"
            );
            println!("    cadaver {dav}    (or mount it in a file manager: dav://{at}/dav/)");
        }
        let gate = Arc::new(web::Gate::new(check));
        let mut config = web::Config::new(on.dir().join("drive").join("pairs.json"));
        config.max_upload = max_upload;
        config.session_idle = session_idle;
        config.cookie = format!("ionshard-{}", at.port());
        config.tls = tls.is_some();
        let acceptor = tls.map(|t| t.acceptor);
        let hosts = Hosts::for_listen(at, lan);
        config.node = Some(net.peer_id().to_string());
        let state = web::Web::new(served.clone(), gate.clone(), config);
        let page = web::router(state.clone());
        // Friends' letters arrive here, and their nodes open share links
        // here; letters this client wrote and could not deliver yet go out
        // from here.
        let opener: crate::drive_msg::Opener = Arc::new(move |link: String, token: String, path: String, offset: u64| {
            let state = state.clone();
            let open: crate::drive_msg::Opening =
                Box::pin(async move { web::open_for_friend(state, &link, &token, &path, offset).await });
            open
        });
        let _letters = crate::drive_msg::serve_client(&net, &on.dir(), devices.clone(), Some(opener))?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Connections served at once: each past this waits to be accepted
        // (a flood of idle ones held a descriptor each, without end, until
        // the node could accept nothing, its libp2p side included).
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let slot = tokio::select! {
                s = open.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            };
            let _ = stream.set_nodelay(true);
            let (handler, gate, page, acceptor) = (handler.clone(), gate.clone(), page.clone(), acceptor.clone());
            let hosts = hosts.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match acceptor {
                    None => connection(stream, handler, gate, page, hosts).await,
                    Some(a) => {
                        // A handshake that does not end is dropped.
                        if let Ok(Ok(tls)) = tokio::time::timeout(IDLE, a.accept(stream)).await {
                            connection(tls, handler, gate, page, hosts).await;
                        }
                    }
                }
            });
        }
        eprintln!("stopping: writing the drive's changes to the devices");
        // Another client's write in between makes a flush re-apply ours
        // on top: a few tries, then say what is not saved.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for _ in 0..10 {
            if served.pending().await == 0 || tokio::time::Instant::now() > deadline {
                break;
            }
            match tokio::time::timeout_at(deadline, served.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("  not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => eprintln!("  the devices did not answer within 30 s"),
            }
        }
        let left = served.pending().await;
        if left > 0 {
            bail!(
                "{left} change(s) made through the page or WebDAV are not on the devices: the devices did not take them"
            );
        }
        anyhow::Ok(())
    })
}
