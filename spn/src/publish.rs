//! A publish job: the uploaded object is encoded (chunked, compressed,
//! encrypted, erasure-coded) and every new shard is stored on a peer that
//! answers with a valid signed receipt. A shard a peer refuses or fails is
//! retried on another peer; the job is done only when every shard has a
//! receipt, and otherwise fails naming each shard that could not be placed
//! and why. Every shard stored is journaled with the job in the same
//! transaction as its placement, so a failed job (see `api::run_job`), or
//! one cut short by a kill, has its shards deleted again.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chunker::{Cid, EncodedSegment, Encoder, KnownChunks, Manifest, Params, ReadKey, SegmentSink, TenantSecret};

use crate::error::{Error, Result};
use crate::state::JobState;
use crate::state::{JobResult, ObjectRecord};
use crate::{Inner, now};
use client::placement::{Candidate, Failure, Pool, SegmentPlan};

/// What to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishParams {
    pub(crate) tenant: String,
    pub(crate) product: String,
    pub(crate) data: u8,
    pub(crate) parity: u8,
}

/// Segments being scattered while the encoder makes the next one.
const IN_FLIGHT: usize = 2;

/// What the segments of one job share.
struct Shared {
    pool: Pool,
    unplaced: Vec<String>,
    receipts: u64,
    /// m: the job's parity shards per segment.
    parity: u8,
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
        let shards: Vec<Vec<u8>> = seg.shards.iter().map(|s| s.to_vec()).collect();
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
/// placed is recorded with its reasons.
async fn place_segment(
    inner: Arc<Inner>,
    shared: Arc<std::sync::Mutex<Shared>>,
    job: u64,
    index: usize,
    shard_len: u64,
    cids: Vec<Cid>,
    shards: Vec<Vec<u8>>,
) -> Result<()> {
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    let data = cids.len() - usize::from(lock().parity);
    let mut plan = SegmentPlan::new(index, cids.len(), data, shard_len, &lock().pool, &mut rand::rng());
    loop {
        let puts = plan.next_round(&mut lock().pool, &mut rand::rng());
        if puts.is_empty() {
            break;
        }
        // Journaled before they are sent: a kill now leaves nothing unknown on the peers.
        let intents: Vec<(String, String)> = puts.iter().map(|(i, p)| (cids[*i].to_string(), p.to_string())).collect();
        inner.state.intend_puts(job, &intents)?;
        let tries = puts.into_iter().map(|(i, peer)| {
            let client = inner.client.clone();
            let (cid, bytes) = (cids[i], shards[i].clone());
            // Firmware and backups stay until the SPN deletes them: pinned.
            async move { (i, peer, client.pin_shard(peer, cid, bytes).await) }
        });
        for (i, peer, r) in futures::future::join_all(tries).await {
            match r {
                Ok(receipt) => {
                    let (shard, holder) = (cids[i].to_string(), peer.to_string());
                    inner.state.put_placement(&shard, &holder, &receipt.to_bytes())?;
                    inner.state.mark_held(&holder)?;
                    let mut st = lock();
                    st.receipts += 1;
                    plan.placed(i, peer, &mut st.pool);
                }
                Err(e) => {
                    tracing::warn!(%peer, shard = i, "put failed: {e}");
                    plan.failed(i, peer, e.to_string(), failure_kind(&e), &mut lock().pool);
                }
            }
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

/// Live peers that may take shards, freshest data.
async fn candidates(inner: &Inner, want: usize) -> Result<Vec<Candidate>> {
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
    for o in inner.state.objects_of(&req.tenant, &req.product)? {
        let Some(bytes) = inner.state.manifest(&o.manifest)? else { continue };
        let cid: Cid = o.manifest.parse()?;
        let m = Manifest::from_bytes_with_cid(&bytes, &cid, &Default::default())?;
        let key: [u8; 32] = data_encoding::HEXLOWER
            .decode(o.read_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Db("damaged read key".to_string()))?;
        known.add(&m, &m.open(&ReadKey::from_bytes(key))?)?;
    }
    let file = std::fs::File::open(upload).map_err(|e| Error::io("opening the upload", e))?;
    let total = file.metadata().map_err(|e| Error::io("reading the upload", e))?.len();
    inner.progress(job, |j| {
        j.state = JobState::Encoding;
        j.bytes_total = total;
    });
    let shared =
        Arc::new(std::sync::Mutex::new(Shared { pool, unplaced: Vec::new(), receipts: 0, parity: req.parity }));
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
    inner.state.put_object(job, &record, &manifest, now())?;
    Ok(JobResult {
        manifest: manifest_cid,
        read_key: record.read_key,
        length: record.length,
        blake3: record.blake3,
        segments: record.segments,
        new_segments: record.new_segments,
        new_shard_bytes: record.new_shard_bytes,
        receipts,
        peers: peers.len() as u64,
    })
}

/// How long a peer may take to answer a usage request during a refresh.
pub(crate) const USAGE_TIMEOUT: Duration = Duration::from_secs(5);
