//! The typed client of the SPN's HTTP API (ureq: blocking, rustls for
//! https). Every request and answer is a `proto::api` type, the same the
//! server encodes; an answer that is not one is an error, not a guess.

use std::io::Read;
use std::time::{Duration, Instant};

use proto::api::{
    Accepted, ErrorBody, Health, IssuedToken, JobRecord, JobResult, JobState, NewRelease, NewTimestamp, NewToken,
    NewWithdrawal, ReleaseInfo, ReleaseList, Roots, TokenList, VendorInfo,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::progress::Progress;

/// Largest answer read (a release bundle with a big manifest).
const MAX_ANSWER: u64 = 160 << 20;

/// Largest placement answer read: a placement is ~70 bytes a shard (16
/// MiB is a 100 GiB image at 10+4). It may come from any URL a bundle names
/// and is asked for again during a fetch: at [`MAX_ANSWER`], 160 MiB of
/// empty strings parsed into gigabytes on a small device.
const MAX_PLACEMENT: u64 = 16 << 20;

/// Largest error answer read.
const MAX_ERROR: u64 = 64 << 10;

/// An SPN's API, with the token its requests carry.
#[derive(Debug, Clone)]
pub struct Spn {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An image to upload and publish: where and how the SPN should scatter it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The tenant (for a vendor, its name).
    pub tenant: &'a str,
    /// The product.
    pub product: &'a str,
    /// Data shards per segment.
    pub data: u32,
    /// Parity shards per segment.
    pub parity: u32,
    /// Let the SPN patch the changed chunks against the product's previous release.
    pub patches: bool,
}

type Response = ureq::http::Response<ureq::Body>;

impl Spn {
    /// The SPN at `url` (`http://HOST:PORT`), sending `token` if given.
    pub fn new(url: &str, token: Option<String>) -> Result<Spn> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::BadUrl(url.to_string()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // The SPN answers once an upload is in; a stalled one must not hang a publish.
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .build()
            .into();
        Ok(Spn { base: url.trim_end_matches('/').to_string(), token, agent })
    }

    fn http(&self, what: &str) -> impl FnOnce(ureq::Error) -> Error {
        let (what, url) = (what.to_string(), self.base.clone());
        move |e| Error::Http { what, url, source: Box::new(e) }
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// A refusal's message, from the error body (or its text).
    fn refused(what: &str, mut r: Response) -> Error {
        let status = r.status().as_u16();
        let bytes = r.body_mut().with_config().limit(MAX_ERROR).read_to_vec().unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        let message = if message.is_empty() { "no reason given".to_string() } else { message };
        Error::Refused { what: what.to_string(), status, message }
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, r: Response) -> Result<T> {
        self.decode_counted(what, r).map(|(t, _)| t)
    }

    /// [`Spn::decode`], and the bytes of the answer's body.
    fn decode_counted<T: DeserializeOwned>(&self, what: &str, r: Response) -> Result<(T, u64)> {
        self.decode_limited(what, r, MAX_ANSWER)
    }

    /// [`Spn::decode_counted`] of an answer of at most `limit` bytes.
    fn decode_limited<T: DeserializeOwned>(&self, what: &str, mut r: Response, limit: u64) -> Result<(T, u64)> {
        if !r.status().is_success() {
            return Err(Self::refused(what, r));
        }
        let bytes = r.body_mut().with_config().limit(limit).read_to_vec().map_err(self.http(what))?;
        let t = serde_json::from_slice(&bytes).map_err(|source| Error::Answer { what: what.to_string(), source })?;
        Ok((t, bytes.len() as u64))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let what = format!("GET {path}");
        let r = self.with_auth(self.agent.get(format!("{}{path}", self.base))).call().map_err(self.http(&what))?;
        self.decode(&what, r)
    }

    /// `POST body` (as JSON) to `path`; the request's name and the answer.
    fn send_json<B: Serialize>(&self, path: &str, body: &B) -> Result<(String, Response)> {
        let what = format!("POST {path}");
        let text = serde_json::to_string(body).map_err(|source| Error::Encode { what: what.clone(), source })?;
        let req = self.with_auth(self.agent.post(format!("{}{path}", self.base)));
        let r = req.header("Content-Type", "application/json").send(text).map_err(self.http(&what))?;
        Ok((what, r))
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let (what, r) = self.send_json(path, body)?;
        self.decode(&what, r)
    }

    /// `POST body` to `path` and check only that it was accepted.
    fn post_unit<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        let (what, r) = self.send_json(path, body)?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// `GET path` as a stream of at most `limit` bytes.
    fn get_stream(&self, path: &str, limit: u64) -> Result<impl Read + use<>> {
        let what = format!("GET {path}");
        let r = self.with_auth(self.agent.get(format!("{}{path}", self.base))).call().map_err(self.http(&what))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(r.into_body().into_with_config().limit(limit).reader())
    }

    /// The URL this client talks to (`http://HOST:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The current placement at `from`, a format 3 bundle's
    /// `placement_from`: a path on this SPN (sent with the token, if any),
    /// or an absolute URL (sent without); at most the answer limit is read.
    pub fn placement(&self, from: &str) -> Result<proto::api::Placement> {
        self.placement_counted(from).map(|(p, _)| p)
    }

    /// [`Spn::placement`], and the bytes of its answer's body.
    fn placement_counted(&self, from: &str) -> Result<(proto::api::Placement, u64)> {
        let url = if from.starts_with('/') { format!("{}{from}", self.base) } else { from.to_string() };
        let what = format!("GET {url}");
        // The token goes only to this SPN, never to a URL a bundle names.
        let req = self.agent.get(&url);
        let req = if from.starts_with('/') { self.with_auth(req) } else { req };
        let r = req.call().map_err(self.http(&what))?;
        self.decode_limited(&what, r, MAX_PLACEMENT)
    }

    /// Whether the SPN runs, and how many peers it sees (`refresh`: ask them now).
    pub fn health(&self, refresh: bool) -> Result<Health> {
        self.get(if refresh { "/v1/health?refresh=true" } else { "/v1/health" })
    }

    /// Upload `body` (`len` bytes, 0 if unknown) to be published, then wait
    /// (up to `patience`) for the SPN to encode and scatter it. Progress:
    /// `"upload"` as the body is read (the reader reports), then `"scatter"`.
    pub fn publish(
        &self,
        up: &Upload<'_>,
        body: impl Read,
        len: u64,
        patience: Duration,
        progress: &dyn Progress,
    ) -> Result<JobResult> {
        let mut path =
            format!("/v1/objects?tenant={}&product={}&data={}&parity={}", up.tenant, up.product, up.data, up.parity);
        if !up.patches {
            path.push_str("&patches=false");
        }
        let what = format!("POST {path}");
        let req = self.with_auth(self.agent.post(format!("{}{path}", self.base)));
        let mut body = body;
        let r = req
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(self.http(&what))?;
        let Accepted { job, .. } = self.decode(&what, r)?;
        progress.finish();
        progress.start("scatter", len);
        let done = self.wait_job(job, patience, progress);
        progress.finish();
        done
    }

    /// Follow job `job` until it is done (its result) or failed.
    pub fn wait_job(&self, job: u64, patience: Duration, progress: &dyn Progress) -> Result<JobResult> {
        let deadline = Instant::now() + patience;
        loop {
            let j: JobRecord = self.job(job)?;
            progress.set(j.bytes_done);
            match j.state {
                JobState::Done => {
                    return j.result.ok_or(Error::Job { job, why: "finished without a result".into() });
                }
                JobState::Failed => {
                    let why = format!("failed: {}", j.error.as_deref().unwrap_or("no reason given"));
                    return Err(Error::Job { job, why });
                }
                _ if Instant::now() > deadline => {
                    let why = format!("is still {} after {} s", j.state, patience.as_secs());
                    return Err(Error::Job { job, why });
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A job's record.
    pub fn job(&self, job: u64) -> Result<JobRecord> {
        self.get(&format!("/v1/jobs/{job}"))
    }

    /// A vendor's record, or `None` if the SPN does not know it.
    pub fn vendor(&self, vendor: &str) -> Result<Option<VendorInfo>> {
        match self.get(&format!("/v1/vendors/{vendor}")) {
            Err(Error::Refused { status: 404, .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Register a vendor by its roots (the first is self-signed).
    pub fn register_vendor(&self, roots: &Roots) -> Result<VendorInfo> {
        self.post("/v1/vendors", roots)
    }

    /// Send the roots after the ones the SPN has of `vendor`.
    pub fn add_roots(&self, vendor: &str, roots: &Roots) -> Result<VendorInfo> {
        self.post(&format!("/v1/vendors/{vendor}/roots"), roots)
    }

    /// Publish a signed release (its object must be on the SPN).
    pub fn add_release(&self, release: &NewRelease) -> Result<()> {
        self.post_unit("/v1/releases", release)
    }

    /// The releases of `product`.
    pub fn releases(&self, product: &str) -> Result<ReleaseList> {
        self.get(&format!("/v1/releases?product={product}"))
    }

    /// The bundle of release `id` (`PRODUCT@VERSION` or `PRODUCT@latest`)
    /// in bundle `format`, for `hardware` if given, as a stream of at most
    /// `limit` bytes. Needs no token.
    pub fn bundle(&self, id: &str, format: u32, hardware: Option<&str>, limit: u64) -> Result<impl Read + use<>> {
        self.bundle_from(id, format, hardware, None, limit)
    }

    /// [`Spn::bundle`] for a device that has the release whose manifest is
    /// `base` (a CID) installed: a format 4 bundle may then carry the
    /// manifest as a delta against that one.
    pub fn bundle_from(
        &self,
        id: &str,
        format: u32,
        hardware: Option<&str>,
        base: Option<&str>,
        limit: u64,
    ) -> Result<impl Read + use<>> {
        let hw = hardware.map(|h| format!("&hardware={h}")).unwrap_or_default();
        let base = base.map(|b| format!("&base={b}")).unwrap_or_default();
        self.get_stream(&format!("/v1/releases/{id}?format={format}{hw}{base}"), limit)
    }

    /// Withdraw a release.
    pub fn withdraw(&self, id: &str, w: &NewWithdrawal) -> Result<ReleaseInfo> {
        self.post(&format!("/v1/releases/{id}/withdraw"), w)
    }

    /// Publish a signed timestamp.
    pub fn add_timestamp(&self, t: &NewTimestamp) -> Result<()> {
        self.post_unit("/v1/timestamps", t)
    }

    /// Issue a tenant token (operator only).
    pub fn issue_token(&self, t: &NewToken) -> Result<IssuedToken> {
        self.post("/v1/tokens", t)
    }

    /// The tokens issued (operator only).
    pub fn tokens(&self) -> Result<TokenList> {
        self.get("/v1/tokens")
    }

    /// Revoke a token (operator only).
    pub fn revoke_token(&self, id: &str) -> Result<()> {
        let what = format!("DELETE /v1/tokens/{id}");
        let r = self
            .with_auth(self.agent.delete(format!("{}/v1/tokens/{id}", self.base)))
            .call()
            .map_err(self.http(&what))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// Every peer the SPN has seen, with its status and audit record (operator only).
    pub fn peers(&self) -> Result<proto::api::PeerList> {
        self.get("/v1/peers")
    }

    /// Set a peer's failure-domain labels (operator only).
    pub fn label_peer(&self, peer: &str, labels: &proto::api::PeerLabels) -> Result<proto::api::PeerRecord> {
        self.post(&format!("/v1/peers/{peer}/labels"), labels)
    }

    /// The durability report: every object, or one (operator only).
    pub fn durability(&self, object: Option<&str>) -> Result<proto::api::Durability> {
        match object {
            Some(o) => self.get(&format!("/v1/durability?object={o}")),
            None => self.get("/v1/durability"),
        }
    }
}

/// Objects a client encoded itself (backups), and a tenant's records.
impl Spn {
    fn send_bytes(&self, method: &str, path: &str, body: &[u8]) -> Result<(String, Response)> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let r = self
            .with_auth(req)
            .header("Content-Type", "application/octet-stream")
            .send(body)
            .map_err(self.http(&what))?;
        Ok((what, r))
    }

    fn delete_path(&self, path: &str) -> Result<(String, Response)> {
        let what = format!("DELETE {path}");
        let r = self.with_auth(self.agent.delete(format!("{}{path}", self.base))).call().map_err(self.http(&what))?;
        Ok((what, r))
    }

    /// Open an upload session for `tenant`.
    pub fn open_session(&self, tenant: &str) -> Result<proto::api::EncodedSession> {
        let (what, r) = self.send_bytes("POST", &format!("/v1/encoded?tenant={tenant}"), b"")?;
        self.decode(&what, r)
    }

    /// Place one segment (its n shards, data first, `len` and `k` as its
    /// manifest says) in session `job`. The shards are streamed from the
    /// caller's buffers, not copied into one body.
    pub fn put_segment<S>(&self, job: u64, len: u64, k: u8, shards: Vec<S>) -> Result<proto::api::SegmentPlaced>
    where
        S: AsRef<[u8]> + Send + 'static,
    {
        self.put_shards(format!("/v1/encoded/{job}/segments?len={len}&k={k}"), shards)
    }

    /// Place one segment from its k data shards alone, in session `job`
    /// of an SPN that computes parity ([`proto::api::EncodedSession::parity_here`]):
    /// the SPN makes the `n - k` parity shards. The caller compares the
    /// answer's segment CID with its own (it names every shard).
    pub fn put_segment_data<S>(
        &self,
        job: u64,
        len: u64,
        k: u8,
        n: u8,
        data: Vec<S>,
    ) -> Result<proto::api::SegmentPlaced>
    where
        S: AsRef<[u8]> + Send + 'static,
    {
        self.put_shards(format!("/v1/encoded/{job}/segments?len={len}&k={k}&n={n}"), data)
    }

    /// `PUT path` with `shards` back to back as the body, streamed from the
    /// caller's buffers.
    fn put_shards<S>(&self, path: String, shards: Vec<S>) -> Result<proto::api::SegmentPlaced>
    where
        S: AsRef<[u8]> + Send + 'static,
    {
        let what = format!("PUT {path}");
        let body = ureq::SendBody::from_owned_reader(Shards::new(shards));
        // The SPN refuses some segments from the headers alone (an ended
        // session, an impossible coding): it answers before reading the
        // body and closes, and a client still sending would see only a
        // broken pipe. Asked to wait for "100 Continue", it reads the
        // refusal and its reason instead (one round trip per segment).
        let r = self
            .with_auth(self.agent.put(format!("{}{path}", self.base)))
            .header("Content-Type", "application/octet-stream")
            .header("Expect", "100-continue")
            .send(body)
            .map_err(self.http(&what))?;
        self.decode(&what, r)
    }

    /// Which of `shards` session `job` has placed.
    pub fn held(&self, job: u64, shards: Vec<String>) -> Result<Vec<bool>> {
        let h: proto::api::Held = self.post(&format!("/v1/encoded/{job}/held"), &proto::api::ShardCids { shards })?;
        Ok(h.held)
    }

    /// Save `manifests` as the tenant's objects and end session `job`;
    /// `uses` names existing objects they go on using.
    pub fn commit(&self, job: u64, manifests: &[Vec<u8>], uses: &[String]) -> Result<proto::api::Committed> {
        let body = proto::api::EncodedCommit {
            manifests: manifests.iter().map(|m| data_encoding::BASE64.encode(m)).collect(),
            uses: uses.to_vec(),
        };
        self.post(&format!("/v1/encoded/{job}/commit"), &body)
    }

    /// Keep these encoded objects on the peers another window (backups
    /// expire unless renewed); any number, sent in batches.
    pub fn renew(&self, objects: &[String]) -> Result<proto::api::Renewed> {
        let mut total = proto::api::Renewed::default();
        for batch in objects.chunks(proto::api::MAX_RENEW) {
            let r: proto::api::Renewed =
                self.post("/v1/objects/renew", &proto::api::RenewObjects { objects: batch.to_vec() })?;
            total.until = r.until;
            total.renewed += r.renewed;
            total.fresh += r.fresh;
            total.failed += r.failed;
            total.missing += r.missing;
            total.failures.extend(r.failures.into_iter().take(8usize.saturating_sub(total.failures.len())));
        }
        Ok(total)
    }

    /// Give up session `job` (what it placed is deleted).
    pub fn abandon(&self, job: u64) -> Result<()> {
        let (what, r) = self.delete_path(&format!("/v1/encoded/{job}"))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// An object's manifest bytes (at most `limit`).
    pub fn manifest(&self, cid: &str, limit: u64) -> Result<Vec<u8>> {
        let path = format!("/v1/objects/{cid}/manifest");
        let mut bytes = Vec::new();
        self.get_stream(&path, limit)?.read_to_end(&mut bytes).map_err(|e| Error::Http {
            what: format!("GET {path}"),
            url: self.base.clone(),
            source: Box::new(e.into()),
        })?;
        Ok(bytes)
    }

    /// An object's record and placement.
    pub fn object(&self, cid: &str) -> Result<proto::api::ObjectInfo> {
        self.get(&format!("/v1/objects/{cid}"))
    }

    /// The storage receipts of an object's shards, checked: each signed by
    /// the peer it names.
    pub fn receipts(&self, cid: &str) -> Result<Vec<proto::Receipt>> {
        let what = format!("GET /v1/objects/{cid}/receipts");
        let list: proto::api::ReceiptList = self.get(&format!("/v1/objects/{cid}/receipts"))?;
        let mut out = Vec::new();
        for hex in list.receipts {
            let bad = |why: String| Error::BadReceipt { what: what.clone(), why };
            let bytes =
                data_encoding::HEXLOWER.decode(hex.as_bytes()).map_err(|e| bad(format!("receipt not hex: {e}")))?;
            let r = proto::Receipt::from_bytes(&bytes).map_err(|e| bad(format!("receipt malformed: {e}")))?;
            r.verify().map_err(|e| bad(format!("receipt of {} does not verify: {e}", r.peer)))?;
            out.push(r);
        }
        Ok(out)
    }

    /// A tenant's objects.
    pub fn objects(&self, tenant: &str) -> Result<proto::api::ObjectList> {
        self.get(&format!("/v1/objects?tenant={tenant}"))
    }

    /// Delete a client-encoded object.
    pub fn delete_object(&self, cid: &str) -> Result<proto::api::Deleted> {
        let (what, r) = self.delete_path(&format!("/v1/objects/{cid}"))?;
        self.decode(&what, r)
    }

    /// Delete an object only if no commit saved or used it after
    /// `older_than` (seconds since the epoch); `Ok(None)` if one did (an
    /// SPN before this release deletes it regardless).
    pub fn delete_object_older_than(&self, cid: &str, older_than: u64) -> Result<Option<proto::api::Deleted>> {
        let (what, r) = self.delete_path(&format!("/v1/objects/{cid}?older_than={older_than}"))?;
        if r.status().as_u16() == 409 {
            return Ok(None);
        }
        self.decode(&what, r).map(Some)
    }

    /// A deleted object's delete acknowledgements (as the SPN reports
    /// them: check each before relying on it).
    pub fn deletion(&self, cid: &str) -> Result<proto::api::DeletionAcks> {
        self.get(&format!("/v1/objects/{cid}/deletion"))
    }

    /// Save a record of `tenant`.
    pub fn put_record(&self, tenant: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let (what, r) = self.send_bytes("PUT", &format!("/v1/records/{tenant}/{name}"), bytes)?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// A record of `tenant`, if there is one.
    pub fn record(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let path = format!("/v1/records/{tenant}/{name}");
        let what = format!("GET {path}");
        let r = self.with_auth(self.agent.get(format!("{}{path}", self.base))).call().map_err(self.http(&what))?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        let mut bytes = Vec::new();
        r.into_body().into_with_config().limit(8 << 20).reader().read_to_end(&mut bytes).map_err(|e| Error::Http {
            what,
            url: self.base.clone(),
            source: Box::new(e.into()),
        })?;
        Ok(Some(bytes))
    }

    /// Records of `tenant` whose names start with `prefix`.
    pub fn records(&self, tenant: &str, prefix: &str) -> Result<proto::api::RecordList> {
        self.get(&format!("/v1/records/{tenant}?prefix={prefix}"))
    }

    /// Report this host's schedules to the fleet of `tenant` (its agent does, after each pass).
    pub fn report_host(&self, tenant: &str, host: &str, report: &proto::api::HostReport) -> Result<()> {
        let path = format!("/v1/fleet/{tenant}/hosts/{host}");
        let body =
            serde_json::to_vec(report).map_err(|source| Error::Encode { what: format!("PUT {path}"), source })?;
        let what = format!("PUT {path}");
        let r = self
            .with_auth(self.agent.put(format!("{}{path}", self.base)))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(self.http(&what))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// The hosts of `tenant`'s fleet, their schedules and waiting runs.
    pub fn hosts(&self, tenant: &str) -> Result<proto::api::HostList> {
        self.get(&format!("/v1/fleet/{tenant}/hosts"))
    }

    /// The receipt batches the SPN anchors on the ledger (operator only).
    pub fn anchor_batches(&self) -> Result<proto::api::AnchorBatches> {
        self.get("/v1/ledger/batches")
    }

    /// The proof that the receipt `peer` signed for `shard` is on the ledger.
    pub fn receipt_proof(&self, shard: &str, peer: &str) -> Result<proto::api::ReceiptProof> {
        self.get(&format!("/v1/ledger/receipts/{shard}/{peer}"))
    }

    /// One host of `tenant`'s fleet.
    pub fn host(&self, tenant: &str, host: &str) -> Result<proto::api::HostInfo> {
        self.get(&format!("/v1/fleet/{tenant}/hosts/{host}"))
    }

    /// Ask `host`'s agent to run `schedule` (all its schedules for `tenant` when None) at its next pass.
    pub fn request_run(&self, tenant: &str, host: &str, schedule: Option<&str>) -> Result<proto::api::RunRequest> {
        let body = proto::api::NewRunRequest { schedule: schedule.map(String::from) };
        self.post(&format!("/v1/fleet/{tenant}/hosts/{host}/runs"), &body)
    }

    /// The runs waiting for `host` (its agent asks).
    pub fn run_requests(&self, tenant: &str, host: &str) -> Result<proto::api::RunRequests> {
        self.get(&format!("/v1/fleet/{tenant}/hosts/{host}/runs"))
    }

    /// Tell the SPN `host` carried out run request `id` (it leaves the queue).
    pub fn ack_run(&self, tenant: &str, host: &str, id: u64) -> Result<()> {
        let (what, r) = self.delete_path(&format!("/v1/fleet/{tenant}/hosts/{host}/runs/{id}"))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// Forget a host of `tenant`'s fleet (a decommissioned one).
    pub fn forget_host(&self, tenant: &str, host: &str) -> Result<()> {
        let (what, r) = self.delete_path(&format!("/v1/fleet/{tenant}/hosts/{host}"))?;
        if !r.status().is_success() {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }

    /// Remove a record of `tenant`.
    pub fn delete_record(&self, tenant: &str, name: &str) -> Result<()> {
        let (what, r) = self.delete_path(&format!("/v1/records/{tenant}/{name}"))?;
        if !r.status().is_success() && r.status().as_u16() != 404 {
            return Err(Self::refused(&what, r));
        }
        Ok(())
    }
}

/// A segment's shards as one request body. Each shard is dropped as soon as
/// it has been read out: the SPN places the segment after it has the whole
/// body, and a backup client's next segment is coded meanwhile, so holding
/// the sent one until the answer came would keep a whole segment (16 MiB at
/// 10+10) resident for nothing.
struct Shards<S> {
    shards: std::collections::VecDeque<S>,
    pos: usize,
}

impl<S> Shards<S> {
    fn new(shards: Vec<S>) -> Shards<S> {
        Shards { shards: shards.into(), pos: 0 }
    }
}

impl<S: AsRef<[u8]>> Read for Shards<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(s) = self.shards.front() {
            let s = s.as_ref();
            if self.pos < s.len() {
                let n = (s.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&s[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.shards.pop_front();
            self.pos = 0;
        }
        Ok(0)
    }
}

/// Where a fetch asks for the current placement: `from` (a path or a URL) on an SPN.
/// Its clones share the count of bytes downloaded.
#[derive(Debug, Clone)]
pub struct PlacementAt {
    spn: Spn,
    from: String,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PlacementAt {
    /// `from` resolved against `spn` (if it is a path).
    pub fn new(spn: Spn, from: String) -> PlacementAt {
        PlacementAt { spn, from, bytes: Default::default() }
    }

    /// An absolute `placement_from` URL, with no SPN known.
    pub fn url(url: &str) -> Result<PlacementAt> {
        Ok(PlacementAt { spn: Spn::new(url, None)?, from: url.to_string(), bytes: Default::default() })
    }

    /// Bytes of the placements downloaded so far (bodies).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl crate::fetch::PlacementSource for PlacementAt {
    fn current(&self) -> std::result::Result<proto::api::Placement, String> {
        let (p, n) = self.spn.placement_counted(&self.from).map_err(|e| e.to_string())?;
        self.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::Shards;

    struct Shard(Arc<Vec<u8>>);

    impl AsRef<[u8]> for Shard {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    /// A sent shard is let go of at once, not when the SPN answers: the
    /// backup client codes its next segment meanwhile.
    #[test]
    fn a_shard_read_out_of_the_body_is_dropped() {
        let (a, b) = (Arc::new(vec![1u8; 1000]), Arc::new(vec![2u8; 1000]));
        let mut body = Shards::new(vec![Shard(a.clone()), Shard(b.clone())]);
        let mut buf = [0u8; 1000];
        body.read_exact(&mut buf).expect("first shard");
        assert_eq!(buf, [1u8; 1000]);
        body.read_exact(&mut buf[..10]).expect("into the second");
        assert_eq!(Arc::strong_count(&a), 1, "the first shard is still held by the body");
        assert_eq!(Arc::strong_count(&b), 2);
        let mut rest = Vec::new();
        body.read_to_end(&mut rest).expect("the rest");
        assert_eq!(rest.len(), 990);
        assert_eq!(Arc::strong_count(&b), 1, "the last shard is still held by the body");
    }

    /// Serve `body` once on loopback as a JSON answer; its URL.
    fn serve_once(body: Vec<u8>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/placement", l.local_addr().expect("addr"));
        std::thread::spawn(move || {
            use std::io::Write;
            if let Ok((mut c, _)) = l.accept() {
                let mut req = [0u8; 4096];
                let _ = c.read(&mut req);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes()).and_then(|()| c.write_all(&body));
            }
        });
        url
    }

    /// A bundle may name any URL for its placement: 160 MiB of empty peer
    /// names there parsed into gigabytes on a device. A placement answer
    /// is read up to 16 MiB.
    #[test]
    fn a_placement_answer_past_16_mib_is_not_read() {
        let spn = super::Spn::new("http://127.0.0.1:9", None).expect("spn");
        let json = |names: usize| {
            let mut b = b"{\"peers\":[".to_vec();
            for i in 0..names {
                b.extend_from_slice(if i == 0 { b"\"\"" } else { b",\"\"" });
            }
            b.extend_from_slice(b"],\"shards\":{}}");
            b
        };
        let small = spn.placement(&serve_once(json(1000))).expect("a small placement");
        assert_eq!(small.peers.len(), 1000);
        let big = json(6 << 20); // 18 MiB
        assert!(big.len() > 16 << 20);
        assert!(spn.placement(&serve_once(big)).is_err(), "an 18 MiB placement was read");
    }
}
