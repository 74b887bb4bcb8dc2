//! The specific peer node (SPN): takes objects from vendors over HTTP,
//! encodes them, scatters their shards over peer nodes with signed storage
//! receipts, keeps where everything is, and serves release bundles to devices.
//!
//! One process: a libp2p client node (the caller starts it and hands over its
//! [`net::Client`]) and an HTTP API (axum on a connection loop of its own,
//! see [`HttpLimits`]). State lives in redb (`DIR/spn.redb`, mode 0600, in a
//! 0700 directory) and survives restarts; uploads are kept in `DIR/uploads`
//! (0700, files 0600) only for the length of their job. What a job placed
//! is journaled: a job that fails, or an SPN killed during one, has its
//! shards deleted from the peers again (retried until the peers say so).
//!
//! It watches what it placed (see [`durability`]): heartbeats, audits at
//! random times with range proofs, repair of segments at risk onto peers
//! in other failure domains, and placement weighed by what peers proved.
//!
//! It trusts no vendor by default: a vendor registers its root once, later
//! roots must follow it by TUF's rules, and every release, withdrawal and
//! timestamp is checked against the vendor's newest root before it is kept.
//!
//! # HTTP API
//! Routes marked *token* need `Authorization: Bearer TOKEN`: the operator's
//! token (`DIR/api.token`) may do everything; a tenant's token (issued with
//! `POST /v1/tokens`) acts only for its tenant (vendor). The token is
//! checked before a body is read.
//!
//! | route | auth | does |
//! |---|---|---|
//! | `GET /v1/health` | | liveness, peer id, live peers |
//! | `POST /v1/objects?tenant=T&product=P&data=K&parity=M` | token | body: the object; answers `{"job": id}` |
//! | `GET /v1/jobs/{id}` | token | job state and progress, the object when done |
//! | `GET /v1/objects/{cid}` | token | an object's record and shard placement |
//! | `GET /v1/objects/{cid}/receipts` | token | its storage receipts (hex, wire layout) |
//! | `POST /v1/vendors` | token | [`types::Roots`]: register a vendor with its roots from v1 |
//! | `POST /v1/vendors/{vendor}/roots` | token | [`types::Roots`]: the vendor's new roots |
//! | `GET /v1/vendors/{vendor}` | | [`types::VendorInfo`] |
//! | `POST /v1/releases` | token | [`types::NewRelease`]; answers the bundle |
//! | `POST /v1/releases/{id}/withdraw` | token | [`types::NewWithdrawal`] |
//! | `POST /v1/timestamps` | token | [`types::NewTimestamp`] |
//! | `GET /v1/timestamps/{product}` | | the newest timestamp (signed JSON) |
//! | `GET /v1/releases?product=P&hardware=H` | | [`types::ReleaseList`], newest version last |
//! | `GET /v1/releases/{id}?format=2&hardware=H` | | a release bundle (`product@version`, or `product@latest`: the newest for that hardware); format 1 without `format` (devices of earlier releases) |
//! | `GET /v1/peers` | operator | peers seen: status, uptime, audits, where seen, why disqualified |
//! | `POST /v1/peers/{peer}/labels` | operator | [`types::PeerLabels`]: a peer's region and operator |
//! | `GET /v1/durability?object=CID` | operator | [`types::Durability`]: per object the lowest healthy shard count, segments at risk; repair queue and bytes; peers lost and disqualified; audits and their cost |
//! | `POST /v1/encoded?tenant=T` | token | [`types::EncodedSession`]: an upload session for objects the client encoded (backups) |
//! | `PUT /v1/encoded/{job}/segments?len=L&k=K` | token | body: a segment's n shards back to back (checked: lengths, parity); placed with receipts: [`types::SegmentPlaced`] |
//! | `PUT /v1/encoded/{job}/segments?len=L&k=K&n=N` | token | body: its k data shards; the n − k parity shards are made here, then placed as above |
//! | `POST /v1/encoded/{job}/held` | token | [`types::ShardCids`] → [`types::Held`]: which the session placed (a resumed run) |
//! | `POST /v1/encoded/{job}/commit` | token | [`types::EncodedCommit`] → [`types::Committed`]: the manifests saved as the tenant's objects; unused shards deleted |
//! | `DELETE /v1/encoded/{job}` | token | give up a session: what it placed is deleted |
//! | `GET /v1/objects?tenant=T` | token | [`types::ObjectList`]: the tenant's objects |
//! | `GET /v1/objects/{cid}/manifest` | token | the manifest's bytes |
//! | `POST /v1/objects/renew` | token (append too) | [`types::RenewObjects`] → [`types::Renewed`]: the peers keep these encoded objects' shards another window |
//! | `GET /v1/objects/{cid}/placement` | token | [`types::Placement`]: which peers hold its shards now |
//! | `DELETE /v1/objects/{cid}` | token | a client-encoded object: gone, its shards no other object uses deleted from the peers ([`types::Deleted`]) |
//! | `PUT`, `GET`, `DELETE /v1/records/{tenant}/{name}`; `GET /v1/records/{tenant}?prefix=P` | token | a tenant's opaque records (≤ 4 MiB each; [`types::RecordList`]) |
//! | `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}` | operator, or a tenant's full token for its own append tokens | [`types::NewToken`] → [`types::IssuedToken`]; [`types::TokenList`]; revoke |
//!
//! An **append** token ([`types::TokenScope`], a backup host's put-only
//! key) may open upload sessions, place segments, ask what its session
//! holds, commit or abandon it, follow its jobs, create records (never
//! replace one) and read the record named `config`; every other route
//! refuses it.

mod anchor;
mod api;
mod audit;
mod cleanup;
pub mod durability;
mod error;
mod health;
mod heartbeat;
mod http;
mod publish;
mod repair;
mod state;
mod vendors;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use anchor::Anchoring;
pub use client::placement::{Candidate, choose};
pub use durability::Settings;
pub use error::{Error, Result};
pub use http::Limits as HttpLimits;
pub use proto::api as types;
pub use state::{JobRecord, JobResult, JobState, ObjectRecord, PeerRecord, ReleaseRecord};

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
    /// HTTP connection bounds.
    pub http_limits: HttpLimits,
    /// Peers that never held a shard of ours are forgotten after this long unseen.
    pub forget_idle_after: Duration,
    /// Heartbeats, audits, repair and placement across failure domains.
    pub durability: Settings,
    /// How long peers keep the shards of client-encoded objects (backups)
    /// unless renewed: the whitepapers' three months.
    pub backup_window: Duration,
    /// Anchor storage receipts on the ledger (`None`: the SPN follows no chain).
    pub anchoring: Option<Anchoring>,
}

impl Config {
    /// An SPN in `dir` listening on `http`, with the operator token `token`.
    pub fn new(dir: PathBuf, http: SocketAddr, token: String) -> Config {
        Config {
            dir,
            http,
            token,
            bootstrap: Vec::new(),
            max_upload: 64 << 30,
            http_limits: HttpLimits::default(),
            forget_idle_after: Duration::from_secs(3600),
            durability: Settings::default(),
            backup_window: Duration::from_secs(90 * 86_400),
            anchoring: None,
        }
    }
}

/// Manifest deltas by (release manifest CID, base manifest CID); `None`
/// where there is none to send (kept too).
type Deltas = HashMap<(String, String), Option<Arc<Vec<u8>>>>;

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
    forget_idle_after: Duration,
    settings: Settings,
    /// Segments waiting for repair after the last pass.
    repair_queue: std::sync::atomic::AtomicU64,
    /// [`Config::backup_window`].
    backup_window: Duration,
    /// [`Config::anchoring`].
    anchoring: Option<Anchoring>,
    /// The chain's newest final block as last seen (height, hash): the
    /// seed of audit challenges, so a peer cannot know them before it.
    final_block: Mutex<Option<(u64, [u8; 32])>>,
    /// One anchoring pass at a time (the loop's, or `anchor_now`'s): a pass
    /// writes batch records it read earlier.
    anchoring_pass: tokio::sync::Mutex<()>,
    /// One pass over the delete queue at a time: two would both ask a peer
    /// and race to record its answer.
    deleting: tokio::sync::Mutex<()>,
    /// Manifest deltas made lately, by (release manifest, base manifest):
    /// every device of a fleet on one release asks for the same one.
    deltas: Mutex<Deltas>,
}

/// A tenant or product name the SPN accepts: 1 to 64 letters, digits, '-',
/// '_' or '.', not starting with '.'.
pub fn valid_name(s: &str) -> bool {
    ota::meta::valid_name(s)
}

/// Make `dir` (and its parents) and keep it for the owner only (0700).
pub(crate) fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("making {} private", dir.display()), e))
}

/// Make sure `path` exists and is the owner's only (0600), before anything is written to it.
pub(crate) fn private_file(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| Error::io(format!("making {} private", path.display()), e))
}

/// Create a new file readable by the owner only.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

pub(crate) use proto::now;

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
        // What interrupted jobs had stored goes to the delete queue.
        for job in state.journaled_jobs()? {
            let n = state.abandon_job(job, now())?;
            tracing::warn!("job {job} was interrupted: {n} shard(s) it stored will be deleted from the peers");
        }
        // A repair cut short: its puts without a receipt are deleted; the
        // segment is as it was, and the next pass repairs it again.
        let n = state.abandon_repairs(now())?;
        if n > 0 {
            tracing::warn!("a repair was interrupted: {n} put(s) without a receipt will be deleted; it starts again");
        }
        let uploads = config.dir.join("uploads");
        // Uploads of jobs that did not finish: plaintext not to keep.
        let _ = std::fs::remove_dir_all(&uploads);
        private_dir(&uploads)?;
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
            forget_idle_after: config.forget_idle_after,
            settings: config.durability.clone(),
            repair_queue: Default::default(),
            backup_window: config.backup_window,
            anchoring: config.anchoring.clone(),
            final_block: Mutex::new(None),
            anchoring_pass: tokio::sync::Mutex::new(()),
            deleting: tokio::sync::Mutex::new(()),
            deltas: Mutex::new(HashMap::new()),
        });
        inner.state.set_anchoring(inner.anchoring.is_some());
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.http), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("reading the HTTP address", e))?;
        let app = api::router(inner.clone());
        // Holds the state weakly: when the server and every handle are gone,
        // the database closes and the refresher ends.
        let refresher = {
            let weak = Arc::downgrade(&inner);
            let every = config.durability.heartbeat;
            tokio::spawn(async move {
                while let Some(inner) = weak.upgrade() {
                    inner.refresh_peers().await;
                    drop(inner);
                    tokio::time::sleep(every).await;
                }
            })
        };
        let deleter = tokio::spawn(cleanup::run(Arc::downgrade(&inner)));
        let auditor = tokio::spawn(audit::run(Arc::downgrade(&inner)));
        let repairer = tokio::spawn(repair::run(Arc::downgrade(&inner)));
        let anchorer = tokio::spawn(anchor::run(Arc::downgrade(&inner)));
        let limits = config.http_limits;
        let server = tokio::spawn(async move {
            http::serve(listener, app, limits).await;
            refresher.abort();
            deleter.abort();
            auditor.abort();
            repairer.abort();
            anchorer.abort();
        });
        Ok((Spn { inner }, addr, server))
    }

    /// Batch the receipts queued for the ledger and move unanchored batches
    /// along now (a test's or the demo's `--anchor-every` without the wait).
    pub async fn anchor_now(&self) -> Result<()> {
        anchor::pass(&self.inner).await
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
        let owner = self.inner.state.claim_product(product, tenant)?;
        if owner != tenant {
            return Err(Error::Forbidden(format!("product {product} belongs to vendor {owner}")));
        }
        let copy = self.inner.dir.join("uploads").join(format!("{:016x}.upload", rand::random::<u64>()));
        std::fs::copy(path, &copy).map_err(|e| Error::io(format!("copying {}", path.display()), e))?;
        let len = std::fs::metadata(&copy).map_err(|e| Error::io("reading the copy", e))?.len();
        let id = api::new_job(&self.inner, tenant, len)?;
        let params =
            publish::PublishParams { tenant: tenant.into(), product: product.into(), data, parity, patches: true };
        api::run_job(self.inner.clone(), id, copy, params).await
    }

    /// Register a vendor with its roots from version 1 (as `POST /v1/vendors`).
    pub fn register_vendor(&self, vendor: &str, roots: &[types::NewRoot]) -> Result<types::VendorInfo> {
        vendors::register(&self.inner.state, vendor, roots, now())
    }

    /// Keep a signed release (JSON text), checked against its vendor's root;
    /// returns the bundle devices fetch.
    pub fn add_release(&self, release: String) -> Result<ota::Bundle> {
        api::release_added(&self.inner, &api::Caller::Operator, release).map_err(|e| Error::BadRequest(e.1))
    }

    /// Keep a signed timestamp, checked against its vendor's root.
    pub fn add_timestamp(&self, text: &str) -> Result<()> {
        let peek: ota::meta::Signed<ota::meta::Timestamp> =
            serde_json::from_str(text).map_err(|e| Error::BadRequest(format!("timestamp: {e}")))?;
        vendors::accept_timestamp(&self.inner.state, &peek.signed.vendor, text, now()).map(|_| ())
    }

    /// Shards still queued for deletion from peers (their job failed).
    pub fn pending_deletes(&self) -> Result<usize> {
        Ok(self.inner.state.pending_deletes()?.len())
    }

    /// A job's record (live progress while it runs).
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        self.inner.job(id)
    }

    /// Peers seen.
    pub fn peers(&self) -> Result<Vec<PeerRecord>> {
        self.inner.state.peers()
    }

    /// An object's manifest bytes and where its shards are now.
    pub fn object_placement(&self, cid: &str) -> Result<(Vec<u8>, types::Placement)> {
        let bytes = self.inner.state.manifest(cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
        let m = chunker::Manifest::from_bytes_with_cid(&bytes, &cid.parse()?, &Default::default())?;
        let p = api::placement_of(&self.inner, &m)?;
        Ok((bytes, p))
    }

    /// Per segment of an object, per shard, the peers recorded as holding it.
    pub fn segment_holders(&self, cid: &str) -> Result<Vec<Vec<Vec<String>>>> {
        let bytes = self.inner.state.manifest(cid)?.ok_or_else(|| Error::NotFound(format!("object {cid}")))?;
        let m = chunker::Manifest::from_bytes_with_cid(&bytes, &cid.parse()?, &Default::default())?;
        let mut out = Vec::new();
        for s in m.segments() {
            let mut seg = Vec::new();
            for c in s.shards() {
                seg.push(self.inner.state.placement(&c.to_string())?);
            }
            out.push(seg);
        }
        Ok(out)
    }

    /// The durability report (every object, or one).
    pub fn durability(&self, object: Option<&str>) -> Result<types::Durability> {
        health::report(&self.inner, object)
    }

    /// Run one repair pass now (the repairer also runs on its own).
    pub async fn repair_now(&self) -> Result<()> {
        let mut pace = repair::Pace::new(self.inner.settings.repair_rate);
        repair::pass(&self.inner, &mut pace).await
    }

    /// Audit every peer holding shards now, once (the auditor also runs on
    /// its own, at random times). Returns how many audits failed.
    pub async fn audit_now(&self) -> Result<u64> {
        let layout = repair::Layout::read(&self.inner.state)?;
        let mut failed = 0;
        for (peer, shards) in layout.holdings() {
            let Ok(id) = peer.parse::<net::PeerId>() else { continue };
            if let Some(o) = audit::audit(&self.inner, id, &shards).await {
                failed += u64::from(o.failed.is_some() || !o.bad.is_empty());
                audit::record(&self.inner, id, &shards, o)?;
            }
        }
        Ok(failed)
    }
}
