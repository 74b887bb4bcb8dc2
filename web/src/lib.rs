//! The personal drive's web page, served by the client's drive node
//! (`ionshard drive serve`) beside WebDAV: server-rendered HTML (askama),
//! a vendored htmx for smooth navigation and a small script for uploads;
//! no build step.
//!
//! - Log in with the drive's password ([`Gate`]); a session cookie
//!   (HttpOnly, SameSite=Strict, Secure over TLS) that ends after a time
//!   without use, and a CSRF token per session that every change carries.
//! - Browse folders, preview images, text and PDFs, download (ranges
//!   too), rename, move, delete to the trash, restore from the trash and
//!   from versions; see the devices that hold the drive and the pairings.
//! - Uploads in parts (module `upload`): several files or a whole folder, with
//!   progress; a part that fails is sent again from where the node has it.
//! - Share links (module `share`): a read link to a file or folder, with an
//!   expiry, revocable, opened in a browser through this node (or by a
//!   friend's node, over libp2p).
//! - Messages (module `letters`): texts to and from friends, and the files
//!   friends sent.
//!
//! Never: serve a file with a type a browser would run in the page's
//! origin (only images, PDFs and plain text are shown; everything else is
//! a download, and file answers carry a sandbox policy), take a change
//! without the session's CSRF token, or read a path outside the drive.

mod error;
mod gate;
mod letters;
mod pages;
mod raw;
mod session;
mod share;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

pub use error::{Error, Result};
pub use gate::{Gate, Verdict};
pub use share::{Share, add as add_share, all as shares, identity, open_for_friend, take_back as revoke_share};

/// How the page is served.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's pairings file (`DIR/drive/pairs.json`).
    pub pairs: PathBuf,
    /// Served over TLS: cookies are marked Secure.
    pub tls: bool,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// The largest file one upload may be.
    pub max_upload: u64,
    /// The session cookie's name (one per node: browsers share cookies
    /// between ports of a host).
    pub cookie: String,
    /// This node's share links (`DIR/drive/shares.json`).
    pub shares: PathBuf,
    /// This node's peer id: a friend's node opens a link through it.
    pub node: Option<String>,
}

impl Config {
    /// The defaults for a node whose pairings are in `pairs`.
    /// [`Web::new`] must be called within a tokio runtime.
    pub fn new(pairs: PathBuf) -> Config {
        let shares = pairs.with_file_name("shares.json");
        Config {
            shares,
            pairs,
            tls: false,
            session_idle: Duration::from_secs(2 * 3600),
            max_upload: 64 << 30,
            cookie: "ionshard".to_string(),
            node: None,
        }
    }
}

/// The web page's state.
pub struct Web {
    served: Arc<drive::served::Served>,
    gate: Arc<Gate>,
    sessions: session::Sessions,
    uploads: upload::Uploads,
    config: Config,
    /// The share links, as in the shares file (read at start; every
    /// change written through).
    shares: std::sync::RwLock<Vec<share::Share>>,
    /// The shares file's time, size and inode when last read.
    shares_stamp: std::sync::Mutex<Option<(Option<std::time::SystemTime>, u64, u64)>>,
    /// The file (its BLAKE3) being read from the devices for a friend's
    /// share link, if one is.
    friend_fetch: std::sync::Mutex<Option<String>>,
    /// Files read whole from the devices at once for share links' readers
    /// (a link's holder asking for five files in turn made the devices
    /// send each whole, again and again, all at once).
    link_fetches: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Web {
    /// The page for `served`, opened by `gate`.
    pub fn new(served: Arc<drive::served::Served>, gate: Arc<Gate>, config: Config) -> Arc<Web> {
        // A shares file that does not read opens no link (and is said).
        let shares = share::load(&config.shares).unwrap_or_else(|e| {
            eprintln!("share links: {e}; no link opens until it is mended or removed");
            Vec::new()
        });
        let web = Arc::new(Web {
            served,
            gate,
            sessions: session::Sessions::default(),
            uploads: upload::Uploads::default(),
            config,
            shares: std::sync::RwLock::new(shares),
            shares_stamp: std::sync::Mutex::new(None),
            friend_fetch: std::sync::Mutex::new(None),
            link_fetches: tokio::sync::Semaphore::new(LINK_FETCHES),
        });
        // Uploads left behind are dropped, their spool files with them,
        // even when nobody starts another.
        let weak = Arc::downgrade(&web);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(w) = weak.upgrade() else { return };
                w.uploads.sweep();
            }
        });
        web
    }
}

/// Files read from the devices at once for share links, at most.
const LINK_FETCHES: usize = 2;

/// The page's routes (everything but WebDAV, which the caller mounts).
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/files", get(pages::files_root))
        .route("/files/", get(pages::files_root))
        .route("/files/{*path}", get(pages::files))
        .route("/raw/{*path}", get(raw::raw))
        .route("/trash", get(pages::trash))
        .route("/devices", get(pages::devices))
        .route("/do/mkdir", post(pages::mkdir))
        .route("/do/rename", post(pages::rename))
        .route("/do/move", post(pages::move_to))
        .route("/do/delete", post(pages::delete))
        .route("/do/untrash", post(pages::untrash))
        .route("/do/restore", post(pages::restore))
        .route("/do/revoke", post(pages::revoke))
        .route("/do/share", post(pages::share))
        .route("/do/unshare", post(pages::unshare))
        .route("/shares", get(pages::shares))
        .route("/letters", get(letters::letters))
        .route("/letters/{id}/file", get(letters::file))
        .route("/do/send", post(letters::send))
        .route("/s/{id}/{token}", get(share::shared))
        .route("/up", post(upload::start))
        .route(
            "/up/{id}",
            get(upload::status)
                .put(upload::part)
                .delete(upload::cancel)
                .layer(axum::extract::DefaultBodyLimit::max(upload::MAX_PART)),
        )
        .route("/up/{id}/done", post(upload::done))
        .route("/assets/{name}", get(pages::asset))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(pages::headers))
        .with_state(web)
}
