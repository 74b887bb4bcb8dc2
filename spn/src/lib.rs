//! The specific peer node (SPN): takes objects from vendors over HTTP,
//! encodes them, scatters their shards over peer nodes with signed storage
//! receipts, keeps where everything is, and serves release bundles to devices.
//!
//! One process: a libp2p client node (the caller starts it and hands over its
//! [`net::Client`]) and an HTTP API (axum). State lives in redb
//! (`DIR/spn.redb`) and survives restarts; uploads are kept in `DIR/uploads`
//! only for the length of their job.
//!
//! # HTTP API
//! Every route but `GET /v1/health` and the release reads needs
//! `Authorization: Bearer TOKEN`.
//!
//! | route | does |
//! |---|---|
//! | `GET /v1/health` | liveness, peer id, live peers |
//! | `POST /v1/objects?tenant=T&product=P&data=K&parity=M` | body: the object; answers `{"job": id}` |
//! | `GET /v1/jobs/{id}` | job state and progress, the object when done |
//! | `GET /v1/objects/{cid}` | an object's record and shard placement |
//! | `GET /v1/objects/{cid}/receipts` | its storage receipts (hex, wire layout) |
//! | `POST /v1/releases` | `{"release": signed JSON, "roots": [...]}`; answers the bundle |
//! | `GET /v1/releases?product=P` | releases, newest version last |
//! | `GET /v1/releases/{id}` | a release bundle (`product@version`, or `product@latest`) |
//! | `GET /v1/peers` | peers seen, capacity, last seen |

mod api;
mod error;
mod placement;
mod publish;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{Error, Result};
pub use placement::{Candidate, choose};
pub use state::{JobRecord, JobResult, ObjectRecord, PeerRecord, ReleaseRecord};

use state::State;

/// How to run an SPN.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory.
    pub dir: PathBuf,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// API token.
    pub token: String,
    /// Bootstrap addresses handed to devices in release bundles.
    pub bootstrap: Vec<String>,
    /// Largest object accepted, in bytes.
    pub max_upload: u64,
}

pub(crate) struct Inner {
    state: State,
    client: net::Client,
    dir: PathBuf,
    token: String,
    bootstrap: Vec<String>,
    max_upload: u64,
    /// Live job progress (the database has the last saved copy).
    jobs: Mutex<HashMap<u64, state::JobRecord>>,
    /// One encoding at a time: bounded memory, and both cores for it.
    encode_lock: tokio::sync::Mutex<()>,
    /// Next job id.
    next_job: Mutex<u64>,
}

/// A tenant or product name the SPN accepts: 1 to 64 letters, digits, '-', '_' or '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Answered the last usage request, within the last two minutes.
pub(crate) fn is_live(p: &PeerRecord) -> bool {
    p.failures == 0 && p.last_seen + 120 >= now()
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Inner {
    /// Update a live job's progress.
    pub(crate) fn progress(&self, id: u64, f: impl FnOnce(&mut state::JobRecord)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = jobs.get_mut(&id) {
            f(j);
        }
    }

    fn job(&self, id: u64) -> Result<Option<state::JobRecord>> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(Some(j.clone()));
        }
        self.state.job(id)
    }

    /// Ask every peer the DHT knows how much room it has.
    pub(crate) async fn refresh_peers(&self) {
        let Ok(peers) = self.client.peers().await else { return };
        let asks = peers.into_iter().map(|p| {
            let client = self.client.clone();
            async move {
                let r = tokio::time::timeout(publish::USAGE_TIMEOUT, client.usage(p.peer)).await;
                (p.peer, r)
            }
        });
        let known: HashMap<String, PeerRecord> =
            self.state.peers().unwrap_or_default().into_iter().map(|p| (p.peer.clone(), p)).collect();
        for (peer, r) in futures::future::join_all(asks).await {
            let id = peer.to_string();
            let rec = match r {
                Ok(Ok((shards, used, capacity))) => {
                    PeerRecord { peer: id.clone(), capacity, used, shards, last_seen: now(), failures: 0 }
                }
                // Bootstrap nodes and clients store nothing: not peers for placement.
                Ok(Err(net::Error::Refused { .. })) => continue,
                _ => match known.get(&id) {
                    Some(k) => PeerRecord { failures: k.failures + 1, ..k.clone() },
                    None => continue,
                },
            };
            if let Err(e) = self.state.put_peer(&rec) {
                tracing::warn!("saving peer {id}: {e}");
            }
        }
    }
}

/// A running SPN.
#[derive(Clone)]
pub struct Spn {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spn").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

impl Spn {
    /// Open the state, mark jobs a previous run left unfinished as failed, and
    /// start the HTTP API and the peer refresher. Returns the bound address.
    pub async fn start(config: Config, client: net::Client) -> Result<(Spn, SocketAddr, tokio::task::JoinHandle<()>)> {
        let state = State::open(&config.dir)?;
        let interrupted = state.fail_interrupted(now())?;
        if interrupted > 0 {
            tracing::warn!("{interrupted} job(s) were interrupted by the last stop and are marked failed");
        }
        let uploads = config.dir.join("uploads");
        // Uploads of jobs that did not finish: plaintext not to keep.
        let _ = std::fs::remove_dir_all(&uploads);
        std::fs::create_dir_all(&uploads).map_err(|e| Error::io(format!("creating {}", uploads.display()), e))?;
        let next = state.next_job_id()?;
        let inner = Arc::new(Inner {
            state,
            client,
            dir: config.dir.clone(),
            token: config.token.clone(),
            bootstrap: config.bootstrap.clone(),
            max_upload: config.max_upload,
            jobs: Mutex::new(HashMap::new()),
            encode_lock: tokio::sync::Mutex::new(()),
            next_job: Mutex::new(next),
        });
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.http), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading the HTTP address", e))?;
        let app = api::router(inner.clone());
        // Holds the state weakly: when the server and every handle are gone,
        // the database closes and the refresher ends.
        let refresher = {
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                while let Some(inner) = weak.upgrade() {
                    inner.refresh_peers().await;
                    drop(inner);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            })
        };
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("HTTP server stopped: {e}");
            }
            refresher.abort();
        });
        Ok((Spn { inner }, addr, server))
    }

    /// Refresh the peer table now (peers that just started).
    pub async fn refresh_peers(&self) {
        self.inner.refresh_peers().await;
    }

    /// Publish a file already on this machine (what `POST /v1/objects` does
    /// after the upload); waits for the job. The file is not removed.
    pub async fn publish_file(
        &self,
        path: &std::path::Path,
        tenant: &str,
        product: &str,
        data: u8,
        parity: u8,
    ) -> Result<JobResult> {
        let copy = self.inner.dir.join("uploads").join(format!("{:016x}.upload", rand::random::<u64>()));
        std::fs::copy(path, &copy).map_err(|e| Error::io(format!("copying {}", path.display()), e))?;
        let len = std::fs::metadata(&copy).map_err(|e| Error::io("reading the copy", e))?.len();
        let id = api::new_job(&self.inner, len)?;
        let params = publish::PublishParams { tenant: tenant.into(), product: product.into(), data, parity };
        api::run_job(self.inner.clone(), id, copy, params).await
    }

    /// Keep a signed release (JSON text) and the vendor's newer roots; returns the bundle devices fetch.
    pub fn add_release(&self, release: String, roots: Vec<String>) -> Result<ota::Bundle> {
        api::release_added(&self.inner, release, roots).map_err(|e| Error::BadRequest(e.1))
    }

    /// A job's record (live progress while it runs).
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        self.inner.job(id)
    }

    /// Peers seen.
    pub fn peers(&self) -> Result<Vec<PeerRecord>> {
        self.inner.state.peers()
    }
}
