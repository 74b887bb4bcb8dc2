//! A publish job: the uploaded object is encoded (chunked, compressed,
//! encrypted, erasure-coded) and every new shard is stored on a peer that
//! answers with a valid signed receipt. A shard a peer refuses or fails is
//! retried on another peer; the job is done only when every shard has a
//! receipt, and otherwise fails naming each shard that could not be placed
//! and why. Every shard stored is journaled with the job in the same
//! transaction as its placement, so a failed job (see `api::run_job`), or
//! one cut short by a kill, has its shards deleted again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunker::{
    Cid, Contents, EncodedSegment, Encoder, KnownChunks, Manifest, Params, PatchPlan, Patcher, ReadKey, SegmentSink,
    ShardBytes, TenantSecret,
};

use crate::error::{Error, Result};
use crate::state::JobState;
use crate::state::{JobResult, ObjectRecord};
use crate::{Inner, now};
use client::placement::{Candidate, Failure, LongTail, Pool, SegmentPlan};
use net::PeerId;

/// What to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishParams {
    pub(crate) tenant: String,
    pub(crate) product: String,
    pub(crate) data: u8,
    pub(crate) parity: u8,
    /// Patch changed chunks against the product's previous release.
    pub(crate) patches: bool,
}

/// Segments being scattered while the encoder makes the next one.
const IN_FLIGHT: usize = 2;

/// What the segments of one job share.
pub(crate) struct Shared {
    pool: Pool,
    /// Shards that could not be placed, and why.
    pub(crate) unplaced: Vec<String>,
    /// Receipts collected.
    pub(crate) receipts: u64,
    /// m: the job's parity shards per segment.
    parity: u8,
    /// Until when peers keep the shards (client-encoded objects: backups);
    /// None pins them (releases), until the SPN deletes them.
    expiry: Option<u64>,
}

impl Shared {
    pub(crate) fn new(pool: Pool, parity: u8) -> Shared {
        Shared { pool, unplaced: Vec::new(), receipts: 0, parity, expiry: None }
    }

    /// Shards kept until `expiry` (renewed by their owner), not pinned.
    pub(crate) fn expiring(mut self, expiry: u64) -> Shared {
        self.expiry = Some(expiry);
        self
    }
}

/// How placement treats a failed put: a peer that cannot be reached, does
/// not trust this SPN, is full or lies is offered no more shards this job; a
/// busy one is.
fn failure_kind(e: &net::Error) -> Failure {
    use net::wire::Code;
    match e {
        net::Error::Refused { code: Code::Busy | Code::Internal, .. } => Failure::Passing,
        _ => Failure::Drop,
    }
}

type Task = tokio::task::JoinHandle<Result<()>>;

/// Scatters each segment as a task, so encoding goes on meanwhile.
struct Scatter {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    job: u64,
    shared: Arc<std::sync::Mutex<Shared>>,
    tasks: std::collections::VecDeque<Task>,
}

impl Scatter {
    /// Wait for segments in flight until at most `keep` remain.
    fn wait(&mut self, keep: usize) -> Result<()> {
        while self.tasks.len() > keep {
            let Some(t) = self.tasks.pop_front() else { break };
            self.rt.block_on(t).map_err(|e| Error::io("scatter task", std::io::Error::other(e)))??;
        }
        Ok(())
    }
}

impl SegmentSink for Scatter {
    fn put_segment(
        &mut self,
        seg: EncodedSegment<'_>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let cids = seg.segment.shards().to_vec();
        // The encoder's buffers themselves, not copies: each put shares them.
        let shards = seg.shards;
        let task = self.rt.spawn(place_segment(
            self.inner.clone(),
            self.shared.clone(),
            self.job,
            seg.index,
            seg.segment.shard_len(),
            cids,
            shards,
        ));
        self.tasks.push_back(task);
        self.wait(IN_FLIGHT)?;
        Ok(())
    }
}

/// Store one segment's shards on distinct peers, retrying refused or failed
/// shards on others (the rounds are [`SegmentPlan`]'s); what cannot be
/// placed is recorded with its reasons. Within a round, a put still running
/// past the long-tail cut ([`LongTail`]) is hedged on another peer: the
/// first receipt for a shard is kept and the other put cancelled; a copy
/// that was stored anyway has no receipt recorded, so the job's end queues
/// its delete (see `State::put_object`).
pub(crate) async fn place_segment(
    inner: Arc<Inner>,
    shared: Arc<std::sync::Mutex<Shared>>,
    job: u64,
    index: usize,
    shard_len: u64,
    cids: Vec<Cid>,
    shards: Vec<ShardBytes>,
) -> Result<()> {
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    let data = cids.len() - usize::from(lock().parity);
    let mut plan = SegmentPlan::new(index, cids.len(), data, shard_len, &lock().pool, &mut rand::rng());
    let mut won: HashSet<usize> = HashSet::new();
    loop {
        let puts = plan.next_round(&mut lock().pool, &mut rand::rng());
        if puts.is_empty() {
            break;
        }
        let mut round = Round::new(&inner, job, puts.len(), lock().expiry);
        // The whole round journaled in one transaction, then sent.
        let starts: Vec<(usize, PeerId, Cid, ShardBytes)> =
            puts.into_iter().map(|(i, peer)| (i, peer, cids[i], shards[i].clone())).collect();
        round.start(starts)?;
        // Receipts of the round, recorded together at its end (a kill
        // before that leaves the shards journaled: the job's cleanup
        // deletes them).
        let mut receipts: Vec<(String, String, Vec<u8>)> = Vec::new();
        // Told to the plan in shard order at the round's end, as they were
        // sent, not as they came in: the order in which peers join the
        // pool's sticky list decides the next segments' turn (which peer
        // gets a data shard where).
        let mut signed: Vec<(usize, PeerId)> = Vec::new();
        while let Some(ended) = round.next().await {
            let (i, peer, r) = match ended {
                Ended::Cut => {
                    for i in round.hedgeable() {
                        let Some(peer) = plan.hedge(i, &mut lock().pool, &mut rand::rng()) else { continue };
                        tracing::info!(segment = index, shard = i, %peer, "put past the long-tail cut: hedged");
                        round.start(vec![(i, peer, cids[i], shards[i].clone())])?;
                    }
                    continue;
                }
                Ended::Put(i, peer, r) => (i, peer, *r),
            };
            if won.contains(&i) {
                // Another peer signed first; this copy is surplus (deleted at the job's end).
                continue;
            }
            match r {
                Ok(receipt) => {
                    receipts.push((cids[i].to_string(), peer.to_string(), receipt.to_bytes()));
                    won.insert(i);
                    signed.push((i, peer));
                    let mut st = lock();
                    st.receipts += 1;
                    for other in round.cancel(i) {
                        plan.outrun(other, &mut st.pool);
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, shard = i, "put failed: {e}");
                    plan.failed(i, peer, e.to_string(), failure_kind(&e), &mut lock().pool);
                }
            }
        }
        inner.state.put_placements(&receipts)?;
        signed.sort_unstable();
        let mut st = lock();
        for (i, peer) in signed {
            plan.placed(i, peer, &mut st.pool);
        }
    }
    let (placed, left) = plan.finish();
    let retries = {
        let mut st = lock();
        for (i, why) in left {
            st.unplaced.push(format!("segment {index} shard {i} ({}): {why}", cids[i]));
        }
        st.pool.retries
    };
    inner.progress(job, |j| {
        j.shards_placed += placed;
        j.retries = retries;
    });
    Ok(())
}

/// What ended in a round: a put (shard, peer, outcome), or the long-tail cut.
enum Ended {
    Put(usize, PeerId, Box<std::result::Result<net::Receipt, net::Error>>),
    Cut,
}

type PutTask = (usize, PeerId, std::result::Result<net::Receipt, net::Error>);

/// The puts of one round in flight, each journaled before it is sent.
struct Round<'a> {
    inner: &'a Arc<Inner>,
    job: u64,
    /// [`Shared::expiry`].
    expiry: Option<u64>,
    began: Instant,
    tail: LongTail,
    set: tokio::task::JoinSet<PutTask>,
    /// Puts in flight per shard.
    flying: HashMap<usize, Vec<(PeerId, tokio::task::AbortHandle)>>,
    /// Shards hedged already (once each).
    hedged: HashSet<usize>,
    /// Which put each task is.
    tasks: HashMap<tokio::task::Id, (usize, PeerId)>,
}

impl<'a> Round<'a> {
    fn new(inner: &'a Arc<Inner>, job: u64, puts: usize, expiry: Option<u64>) -> Round<'a> {
        Round {
            inner,
            job,
            expiry,
            began: Instant::now(),
            tail: LongTail::new(puts),
            set: tokio::task::JoinSet::new(),
            flying: HashMap::new(),
            hedged: HashSet::new(),
            tasks: HashMap::new(),
        }
    }

    /// Journal the puts (shard `i` of `cid` on `peer`) in one transaction
    /// (a kill from now on leaves nothing unknown on the peers), then send them.
    fn start(&mut self, puts: Vec<(usize, PeerId, Cid, ShardBytes)>) -> Result<()> {
        let journal: Vec<(String, String)> = puts.iter().map(|(_, p, c, _)| (c.to_string(), p.to_string())).collect();
        self.inner.state.intend_puts(self.job, &journal)?;
        for (i, peer, cid, bytes) in puts {
            let client = self.inner.client.clone();
            // Firmware stays until the SPN deletes it: pinned. Backups
            // expire unless their owner renews them.
            let expiry = self.expiry;
            let handle = self.set.spawn(async move {
                let r = match expiry {
                    Some(e) => client.put_shard(peer, cid, bytes, Some(e)).await,
                    None => client.pin_shard(peer, cid, bytes).await,
                };
                (i, peer, r)
            });
            self.tasks.insert(handle.id(), (i, peer));
            self.flying.entry(i).or_default().push((peer, handle));
        }
        Ok(())
    }

    /// Shards still running, not hedged yet, within the round's hedges.
    fn hedgeable(&mut self) -> Vec<usize> {
        let mut open: Vec<usize> =
            self.flying.iter().filter(|(i, v)| !v.is_empty() && !self.hedged.contains(i)).map(|(i, _)| *i).collect();
        open.sort_unstable();
        open.retain(|_| self.tail.may_hedge());
        self.hedged.extend(open.iter().copied());
        open
    }

    /// Cancel the puts of shard `i` still in flight; the peers they went to.
    fn cancel(&mut self, i: usize) -> Vec<PeerId> {
        self.flying
            .remove(&i)
            .unwrap_or_default()
            .into_iter()
            .map(|(p, h)| {
                h.abort();
                p
            })
            .collect()
    }

    /// The next put to end, or the cut when puts are left to hedge; `None`
    /// when nothing is in flight.
    async fn next(&mut self) -> Option<Ended> {
        loop {
            let waiting = self.flying.iter().any(|(i, v)| !v.is_empty() && !self.hedged.contains(i));
            let cut = self.tail.cut().filter(|_| waiting && self.tail.has_hedges()).map(|c| self.began + c);
            let joined = match cut {
                Some(at) => tokio::select! {
                    j = self.set.join_next_with_id() => j,
                    () = tokio::time::sleep_until(at.into()) => return Some(Ended::Cut),
                },
                None => self.set.join_next_with_id().await,
            };
            let (id, r) = match joined? {
                Ok((id, (_, _, r))) => (id, r),
                // Cancelled: its shard was placed already.
                Err(e) if e.is_cancelled() => {
                    self.tasks.remove(&e.id());
                    continue;
                }
                Err(e) => (e.id(), Err(net::Error::Config(format!("the put failed on this SPN: {e}")))),
            };
            let Some((i, peer)) = self.tasks.remove(&id) else { continue };
            self.tail.ended(self.began.elapsed());
            if let Some(v) = self.flying.get_mut(&i) {
                v.retain(|(p, _)| *p != peer);
            }
            return Some(Ended::Put(i, peer, Box::new(r)));
        }
    }
}

/// Live peers that may take shards, freshest data.
pub(crate) async fn candidates(inner: &Inner, want: usize) -> Result<Vec<Candidate>> {
    // Peers that just joined or moved may take a moment to be found: a few tries.
    let mut out = Vec::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        inner.refresh_peers().await;
        let peers = inner.state.peers()?.into_iter().map(|p| (p.peer.clone(), p)).collect();
        out = crate::repair::candidates(&peers, now(), &inner.settings);
        if out.len() >= want {
            break;
        }
    }
    Ok(out)
}

/// Run one publish; the upload file is the object.
pub(crate) async fn publish(inner: Arc<Inner>, job: u64, upload: &Path, req: PublishParams) -> Result<JobResult> {
    let n = usize::from(req.data) + usize::from(req.parity);
    let params = Params::default().with_coding(req.data, req.parity);
    params.validate()?;
    let cands = candidates(&inner, n).await?;
    if cands.len() < n {
        return Err(Error::NotEnoughPeers { need: n, have: cands.len() });
    }
    let mut pool = Pool::new(cands);
    if !inner.settings.relax_domains {
        // Losing any one household, network or operator loses at most m shards.
        pool.max_per_domain = usize::from(req.parity.max(1));
        let fits = pool.spreadable(n);
        if fits < n {
            return Err(Error::TooFewDomains { need: n, fits, parity: req.parity });
        }
    }
    let secret = TenantSecret::from_bytes(inner.state.tenant_secret(&req.tenant)?);
    // Chunks of the same product stored before: only new chunks are stored.
    let mut known = KnownChunks::new();
    // The release the next one is patched against: the newest that devices
    // may hold (verified, not withdrawn), else the newest object.
    let newest_release = inner
        .state
        .releases(Some(&req.product))?
        .into_iter()
        .filter(|r| r.verified && r.withdrawn.is_none() && r.vendor == req.tenant)
        .max_by_key(|r| r.published)
        .map(|r| r.manifest);
    let (mut released, mut newest): (Option<Opened>, Option<Opened>) = (None, None);
    for o in inner.state.objects_of(&req.tenant, &req.product)? {
        let Some(bytes) = inner.state.manifest(&o.manifest)? else { continue };
        let cid: Cid = o.manifest.parse()?;
        let m = Manifest::from_bytes_with_cid(&bytes, &cid, &Default::default())?;
        let key: [u8; 32] = data_encoding::HEXLOWER
            .decode(o.read_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Db("damaged read key".to_string()))?;
        let contents = m.open(&ReadKey::from_bytes(key))?;
        known.add(&m, &contents)?;
        if newest_release.as_deref() == Some(o.manifest.as_str()) {
            released = Some((m.clone(), contents.clone()));
        }
        newest = Some((m, contents));
    }
    let previous = released.or(newest);
    // Chunks the release keeps keep their tags (the previous release's
    // match key), so the manifest delta copies them; a fresh key otherwise.
    let match_key = previous.as_ref().filter(|_| req.patches).map(|(_, c)| c.match_key());
    let file = std::fs::File::open(upload).map_err(|e| Error::io("opening the upload", e))?;
    let total = file.metadata().map_err(|e| Error::io("reading the upload", e))?.len();
    inner.progress(job, |j| {
        j.state = JobState::Encoding;
        j.bytes_total = total;
    });
    let shared = Arc::new(std::sync::Mutex::new(Shared::new(pool, req.parity)));
    let mut sink = Scatter {
        inner: inner.clone(),
        rt: tokio::runtime::Handle::current(),
        job,
        shared: shared.clone(),
        tasks: Default::default(),
    };
    let inner2 = inner.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let encoder = Encoder::new(params, &secret)?.with_known(&known).with_salt(rand::random());
        let encoder = match match_key {
            Some(k) => encoder.with_match_key(k),
            None => encoder,
        };
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        let r = encoder.encode(reader, &mut sink, &mut |done| inner2.progress(job, |j| j.bytes_done = done));
        // Segments still in flight finish either way (their shards are cleaned up on failure).
        let drained = sink.wait(0);
        Ok::<_, Error>(r.map_err(Error::from).and_then(|e| drained.map(|()| e)))
    })
    .await
    .map_err(|e| Error::io("encoder thread", std::io::Error::other(e)))?;
    let (unplaced, receipts) = {
        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut st.unplaced), st.receipts)
    };
    // On failure the caller deletes what the job's journal names.
    let encoded = match encoded.and_then(|r| r) {
        Ok(e) if unplaced.is_empty() => e,
        Ok(_) => return Err(Error::Unplaced(unplaced)),
        Err(e) => return Err(e),
    };
    let mut patched = Patched::default();
    let mut encoded = encoded;
    match (previous, req.patches) {
        (_, false) => patched.why_not = Some("the publisher asked for none".into()),
        (None, true) => patched.why_not = Some("the product has no earlier release here".into()),
        (Some(prev), true) => {
            let started = Instant::now();
            let j = PatchJob {
                inner: inner.clone(),
                job,
                shared: shared.clone(),
                upload: upload.to_path_buf(),
                encoded: encoded.clone(),
                prev,
                params,
            };
            match patch(j).await? {
                Ok((manifest, table, made)) => {
                    encoded.manifest = manifest;
                    patched = made;
                    patched.table = Some(table);
                }
                Err(why) => patched.why_not = Some(why),
            }
            patched.millis = started.elapsed().as_millis() as u64;
        }
    }
    let manifest_cid = encoded.manifest.cid().to_string();
    let manifest = encoded.manifest.to_bytes();
    let contents = encoded.manifest.open(&encoded.read_key)?;
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    // Every shard of the object, new or shared, must have a holder.
    let mut peers = HashSet::new();
    for s in encoded.manifest.segments() {
        for c in s.shards() {
            let holders = inner.state.placement(&c.to_string())?;
            if holders.is_empty() {
                return Err(Error::Unplaced(vec![format!("{c}: no holder recorded")]));
            }
            peers.extend(holders);
        }
    }
    let record = ObjectRecord {
        manifest: manifest_cid.clone(),
        tenant: req.tenant.clone(),
        product: req.product.clone(),
        read_key: hex(&encoded.read_key.to_bytes()),
        length: contents.object_len(),
        blake3: hex(contents.object_hash()),
        data_shards: req.data,
        parity_shards: req.parity,
        segments: encoded.manifest.segments().len() as u64,
        new_segments: encoded.stats.new_segments,
        new_shard_bytes: encoded.stats.new_shard_bytes,
        created: now(),
        placement_version: 0,
    };
    inner.state.put_object(job, &record, &manifest, patched.table.as_deref(), now())?;
    Ok(JobResult {
        manifest: manifest_cid,
        read_key: record.read_key,
        length: record.length,
        blake3: record.blake3,
        segments: record.segments,
        new_segments: record.new_segments,
        new_shard_bytes: record.new_shard_bytes,
        receipts: receipts + patched.receipts,
        peers: peers.len() as u64,
        patches: patched.count,
        patch_bytes: patched.bytes,
        patched_chunk_bytes: patched.chunk_bytes,
        patch_millis: patched.millis,
        no_patches: patched.why_not,
    })
}

/// An object's manifest and its opened contents.
type Opened = (Manifest, Contents);

/// What the patches of a publish came to.
#[derive(Debug, Default)]
struct Patched {
    /// The sealed patch table.
    table: Option<Vec<u8>>,
    count: u64,
    bytes: u64,
    chunk_bytes: u64,
    receipts: u64,
    millis: u64,
    why_not: Option<String>,
}

/// A patched manifest, its sealed patch table and what it came to; or why
/// there are no patches.
type PatchOutcome = std::result::Result<(Manifest, Vec<u8>, Patched), String>;

/// Changed chunks past this share of the image: not a patch release, none made.
const PATCH_MAX_SHARE: u64 = 2;
/// Changed plaintext handled at a time (with its bases, in memory).
const PATCH_BATCH: u64 = 16 << 20;

/// The zstd level of patches: faster as the changed bytes grow, so that
/// patching costs at most about what the encoding did.
fn patch_level(changed: u64) -> i32 {
    // Level 9: on Django 5.1.3 -> 5.1.4, patches 4% larger than level 19's
    // at a fifteenth of the time (benches/delta.sh).
    if changed <= 64 << 20 { 9 } else { 6 }
}

/// Patch the changed chunks of `encoded` against `prev` (the product's
/// previous release): its chunks read back from the peers (the SPN holds
/// its read key), the new ones from the upload, patches kept where they pay,
/// packed into segments of their own and placed like any segment. The
/// manifest gains those segments. The inner `Err` says why there are no
/// patches (the release is published without them); the outer one fails
/// the job (patch segments that could not be placed).
async fn patch(job: PatchJob) -> Result<PatchOutcome> {
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || patch_blocking(&rt, job))
        .await
        .map_err(|e| Error::io("patch thread", std::io::Error::other(e)))?
}

/// What [`patch`] works on: the job, its upload and encoding, the previous release.
struct PatchJob {
    inner: Arc<Inner>,
    job: u64,
    shared: Arc<std::sync::Mutex<Shared>>,
    upload: std::path::PathBuf,
    encoded: chunker::Encoded,
    prev: Opened,
    params: Params,
}

/// [`patch`], on a thread that may block (the network through `rt`).
fn patch_blocking(rt: &tokio::runtime::Handle, j: PatchJob) -> Result<PatchOutcome> {
    let PatchJob { inner, job, shared, upload, encoded, prev, params } = &j;
    let (job, params) = (*job, *params);
    let contents = encoded.manifest.open(&encoded.read_key)?;
    let plans = chunker::plan_patches(&contents, &prev.1);
    if plans.is_empty() {
        return Ok(Err("no chunk changed, or none has a counterpart in the previous release".into()));
    }
    let changed: u64 = plans.iter().map(|p| u64::from(contents.chunks()[p.chunk].plain_len())).sum();
    if changed * PATCH_MAX_SHARE > contents.object_len() {
        return Ok(Err(format!(
            "{changed} of {} bytes changed: not a patch release (patches are made when at most half changed)",
            contents.object_len()
        )));
    }
    let placement = crate::api::placement_of(inner, &prev.0)?;
    let starts: Vec<u64> = contents
        .chunks()
        .iter()
        .scan(0u64, |s, c| {
            let a = *s;
            *s += u64::from(c.plain_len());
            Some(a)
        })
        .collect();
    let file = std::fs::File::open(upload).map_err(|e| Error::io("opening the upload", e))?;
    let level = patch_level(changed);
    let mut patcher = Patcher::new(&contents, &prev.1, level);
    let mut made = Patched::default();
    // A batch of plans at a time: their bases read back, their patches made.
    let mut at = 0;
    while at < plans.len() {
        let mut end = at;
        let mut bytes = 0u64;
        while end < plans.len() && (end == at || bytes < PATCH_BATCH) {
            bytes += u64::from(contents.chunks()[plans[end].chunk].plain_len());
            end += 1;
        }
        let batch: Vec<PatchPlan> = plans[at..end].to_vec();
        at = end;
        let mut need: Vec<usize> = batch.iter().flat_map(|p| p.bases.iter().copied()).collect();
        need.sort_unstable();
        need.dedup();
        let selection = prev.1.select(&need)?;
        let bases = match rt.block_on(client::read_chunks(&inner.client, &prev.0, selection, placement.clone())) {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("the previous release's chunks could not be read back: {e}"))),
        };
        let mut base_at = std::collections::HashMap::new();
        let mut off = 0usize;
        for i in &need {
            let len = prev.1.chunks()[*i].plain_len() as usize;
            base_at.insert(*i, off..off + len);
            off += len;
        }
        let news: Vec<(u64, usize)> =
            batch.iter().map(|p| (starts[p.chunk], contents.chunks()[p.chunk].plain_len() as usize)).collect();
        let new_plain = {
            use std::os::unix::fs::FileExt;
            news.into_iter()
                .map(|(at, len)| {
                    let mut b = vec![0u8; len];
                    file.read_exact_at(&mut b, at).map(|()| b)
                })
                .collect::<std::io::Result<Vec<Vec<u8>>>>()
                .map_err(|e| Error::io("reading the upload", e))?
        };
        let sealed: Vec<Option<chunker::Patch>> = {
            use rayon::prelude::*;
            let patcher = &patcher;
            batch
                .par_iter()
                .zip(&new_plain)
                .map(|(p, n)| {
                    let b: Vec<&[u8]> = p.bases.iter().map(|i| &bases[base_at[i].clone()]).collect();
                    patcher.make(p, n, &b)
                })
                .collect::<chunker::Result<Vec<_>>>()?
        };
        for (p, s) in batch.iter().zip(sealed) {
            if let Some(s) = s {
                made.count += 1;
                made.bytes += s.len() as u64;
                made.chunk_bytes += u64::from(contents.chunks()[p.chunk].stored_len());
                patcher.keep(p, s);
            }
        }
    }
    if patcher.is_empty() {
        return Ok(Err("no patch came to a third of its chunk or less".into()));
    }
    // The patch segments go out like the encoder's, on this job's journal.
    let mut sink =
        Scatter { inner: inner.clone(), rt: rt.clone(), job, shared: shared.clone(), tasks: Default::default() };
    let receipts_before = shared.lock().unwrap_or_else(|p| p.into_inner()).receipts;
    let first = encoded.manifest.segments().len();
    let (k, m) = (params.coding.data, params.coding.parity);
    let r = patcher.finish(params.segment_size, k, m, first, &mut sink);
    let drained = sink.wait(0);
    let (segments, table) = r.map_err(Error::from).and_then(|x| drained.map(|()| x))?;
    {
        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
        if !st.unplaced.is_empty() {
            return Err(Error::Unplaced(std::mem::take(&mut st.unplaced)));
        }
        made.receipts = st.receipts - receipts_before;
    }
    let manifest = encoded.manifest.with_extra_segments(&contents, &encoded.read_key, segments)?;
    let sealed = table.seal(&encoded.read_key, &manifest);
    Ok(Ok((manifest, sealed, made)))
}

/// How long a peer may take to answer a usage request during a refresh.
pub(crate) const USAGE_TIMEOUT: Duration = Duration::from_secs(5);
