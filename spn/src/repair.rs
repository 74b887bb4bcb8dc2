//! Repair before risk. Every [`Settings::repair_every`](crate::Settings)
//! the SPN counts each segment's healthy shards (held by a peer that is
//! neither lost, disqualified nor retiring); a segment at or below its
//! repair threshold, or with a shard on a retiring peer, joins the queue,
//! the lowest first. A repair reads k shards (each checked against its
//! CID), rebuilds the missing ones with the segment's erasure code, checks
//! each against the CID the manifest names, and places it on a new peer
//! that holds nothing else of the segment and whose failure domains still
//! have room, with the same journal as a publish: the intent before the
//! put, and the placement, the receipt, the stale holders' owner deletes,
//! the counters and the objects' placement versions in one transaction
//! after it. A kill at any point leaves the segment as it was or as
//! repaired; journaled puts without a receipt are deleted at start. Reads
//! and writes are paced to [`Settings::repair_rate`](crate::Settings).

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chunker::{Cid, Coder, Manifest};
use client::placement::{Candidate, Failure, Pool, SegmentPlan};
use net::PeerId;

use crate::durability::{self, Settings};
use crate::state::{PeerRecord, State};
use crate::{Error, Inner, Result, now};

/// One segment the SPN keeps, and the objects that use it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    /// k.
    pub(crate) k: usize,
    /// The n shard CIDs, data first.
    pub(crate) shards: Vec<Cid>,
    /// Bytes per shard.
    pub(crate) shard_len: u64,
    /// Manifest CIDs of the objects that use it.
    pub(crate) objects: Vec<String>,
    /// How long its copies are kept.
    pub(crate) keep: Keep,
}

/// How long a segment's copies are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// For good (a release uses it): until the SPN deletes it.
    Pin,
    /// Until then (a backup's, renewed by its owner): the latest expiry of
    /// its copies' receipts.
    Until(u64),
    /// Every copy's expiry has passed: nobody renewed it. Not audited, not
    /// repaired; forgotten after [`EXPIRED_GRACE`].
    Expired,
}

/// How long after expiry the SPN forgets an expired copy (the peers sweep
/// it a week after expiry too; a late renewal still finds it meanwhile).
pub(crate) const EXPIRED_GRACE: u64 = 7 * 86_400;

/// Every segment of every object, and where each shard is.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub(crate) segments: Vec<SegmentView>,
    /// Holders of each shard whose copy has not expired.
    pub(crate) holders: HashMap<String, Vec<String>>,
    /// Copies whose expiry has passed: (shard, peer, expiry). Left out of
    /// `holders`: an honest peer may have swept them, so they are neither
    /// audited nor counted healthy.
    pub(crate) expired: Vec<(String, String, u64)>,
}

impl Layout {
    /// Read it from the state (the manifests are parsed again each time:
    /// fine for thousands of objects; an index kept with the placement
    /// would be the next step).
    pub(crate) fn read(state: &State) -> Result<Layout> {
        let t = now();
        let mut by_cid: HashMap<Cid, usize> = HashMap::new();
        let mut segments: Vec<SegmentView> = Vec::new();
        for o in state.objects()? {
            let Some(bytes) = state.manifest(&o.manifest)? else { continue };
            let cid: Cid = o.manifest.parse()?;
            let m = Manifest::from_bytes_with_cid(&bytes, &cid, &Default::default())?;
            // Objects the SPN encoded (releases) keep a read key; a client's do not.
            let release = !o.read_key.is_empty();
            for s in m.segments() {
                let i = *by_cid.entry(s.cid()).or_insert_with(|| {
                    segments.push(SegmentView {
                        k: s.data_shards(),
                        shards: s.shards().to_vec(),
                        shard_len: s.shard_len(),
                        objects: Vec::new(),
                        keep: Keep::Expired,
                    });
                    segments.len() - 1
                });
                if !segments[i].objects.contains(&o.manifest) {
                    segments[i].objects.push(o.manifest.clone());
                }
                if release {
                    segments[i].keep = Keep::Pin;
                }
            }
        }
        let mut holders = state.placements()?;
        let mut expired = Vec::new();
        for seg in segments.iter_mut().filter(|s| s.keep != Keep::Pin) {
            let mut latest: Option<u64> = None;
            for c in &seg.shards {
                let key = c.to_string();
                for bytes in state.receipts(&key)? {
                    let Ok(r) = proto::Receipt::from_bytes(&bytes) else { continue };
                    let Some(e) = r.expiry else {
                        latest = Some(u64::MAX);
                        continue;
                    };
                    latest = Some(latest.map_or(e, |l| l.max(e)));
                    if e <= t {
                        let peer = r.peer.to_string();
                        if let Some(h) = holders.get_mut(&key) {
                            h.retain(|p| *p != peer);
                        }
                        expired.push((key.clone(), peer, e));
                    }
                }
            }
            seg.keep = match latest {
                Some(e) if e > t => Keep::Until(e),
                _ => Keep::Expired,
            };
        }
        Ok(Layout { segments, holders, expired })
    }

    /// Per peer, the shards of ours it holds (CID, length).
    pub(crate) fn holdings(&self) -> HashMap<String, Vec<(Cid, u64)>> {
        let mut out: HashMap<String, Vec<(Cid, u64)>> = HashMap::new();
        let mut seen = HashSet::new();
        for s in &self.segments {
            for c in &s.shards {
                if !seen.insert(*c) {
                    continue;
                }
                for h in self.holders.get(&c.to_string()).into_iter().flatten() {
                    out.entry(h.clone()).or_default().push((*c, s.shard_len));
                }
            }
        }
        out
    }

    /// Holders of a shard.
    pub(crate) fn holders_of(&self, c: &Cid) -> &[String] {
        self.holders.get(&c.to_string()).map_or(&[], Vec::as_slice)
    }
}

/// A segment's health: per shard, whether a healthy peer holds it.
pub(crate) fn healthy_shards(
    seg: &SegmentView,
    layout: &Layout,
    peers: &HashMap<String, PeerRecord>,
    now: u64,
    s: &Settings,
) -> Vec<bool> {
    seg.shards
        .iter()
        .map(|c| layout.holders_of(c).iter().any(|h| peers.get(h).is_some_and(|p| durability::is_healthy(p, now, s))))
        .collect()
}

/// Does this segment need a repair now: at or below its threshold, or a
/// shard on a retiring peer (a planned exit moves everything)?
pub(crate) fn needs_repair(
    seg: &SegmentView,
    healthy: &[bool],
    layout: &Layout,
    peers: &HashMap<String, PeerRecord>,
    s: &Settings,
) -> bool {
    let n = seg.shards.len();
    let ok = healthy.iter().filter(|h| **h).count();
    let (threshold, _) = s.thresholds(seg.k as u8, (n - seg.k) as u8);
    let retiring = seg
        .shards
        .iter()
        .zip(healthy)
        .any(|(c, h)| !h && layout.holders_of(c).iter().any(|p| peers.get(p).is_some_and(|p| p.retiring)));
    ok < n && (ok <= usize::from(threshold) || retiring)
}

/// Paces repair traffic to a rate.
pub(crate) struct Pace {
    rate: u64,
    next: Instant,
}

impl Pace {
    pub(crate) fn new(rate: u64) -> Pace {
        Pace { rate: rate.max(1), next: Instant::now() }
    }

    /// Wait until `bytes` more fit the rate.
    pub(crate) async fn take(&mut self, bytes: u64) {
        let now = Instant::now();
        if self.next < now {
            self.next = now;
        }
        let wait = self.next - now;
        self.next += Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The repairer: runs while the SPN does.
pub(crate) async fn run(inner: Weak<Inner>) {
    let mut pace = None;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let pace = pace.get_or_insert_with(|| Pace::new(strong.settings.repair_rate));
        if let Err(e) = pass(&strong, pace).await {
            tracing::warn!("repair pass: {e}");
        }
        let every = strong.settings.repair_every;
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

/// One pass: queue what needs repair, lowest first, and repair it.
pub(crate) async fn pass(inner: &Inner, pace: &mut Pace) -> Result<()> {
    let layout = Layout::read(&inner.state)?;
    let peers: HashMap<String, PeerRecord> = inner.state.peers()?.into_iter().map(|p| (p.peer.clone(), p)).collect();
    let t = now();
    let mut queue: Vec<(usize, usize)> = Vec::new();
    forget_expired(inner, &layout, t)?;
    for (i, seg) in layout.segments.iter().enumerate() {
        // Nobody renewed it: expiry, not loss.
        if seg.keep == Keep::Expired {
            continue;
        }
        let healthy = healthy_shards(seg, &layout, &peers, t, &inner.settings);
        if needs_repair(seg, &healthy, &layout, &peers, &inner.settings) {
            queue.push((healthy.iter().filter(|h| **h).count(), i));
        }
    }
    queue.sort_unstable();
    inner.repair_queue.store(queue.len() as u64, Ordering::Relaxed);
    for (left, (ok, i)) in queue.iter().enumerate() {
        let seg = &layout.segments[*i];
        tracing::info!(healthy = ok, k = seg.k, n = seg.shards.len(), objects = ?seg.objects, "segment at risk: repairing");
        if let Err(e) = repair_segment(inner, &layout, seg, pace).await {
            tracing::warn!(objects = ?seg.objects, "repair failed: {e}");
        }
        inner.repair_queue.store((queue.len() - left - 1) as u64, Ordering::Relaxed);
    }
    if !queue.is_empty() {
        // Stale copies on peers that answer (a retiring or returning one's)
        // go now, not at the next sweep; lost peers' wait for it.
        let live: HashSet<String> = peers.values().filter(|p| p.failures == 0).map(|p| p.peer.clone()).collect();
        crate::cleanup::drain_of(inner, Some(&live)).await;
    }
    Ok(())
}

/// Rebuild the segment's missing shards and place them.
async fn repair_segment(inner: &Inner, layout: &Layout, seg: &SegmentView, pace: &mut Pace) -> Result<()> {
    // Fresh records: a heartbeat may have changed them since the pass began.
    let peers: HashMap<String, PeerRecord> = inner.state.peers()?.into_iter().map(|p| (p.peer.clone(), p)).collect();
    let t = now();
    let s = &inner.settings;
    let healthy = healthy_shards(seg, layout, &peers, t, s);
    let n = seg.shards.len();
    let missing: Vec<usize> = (0..n).filter(|i| !healthy[*i]).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // Read k shards: from healthy holders first, then any holder that answers.
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut got = 0;
    let mut read = 0u64;
    let order: Vec<usize> = (0..n).filter(|i| healthy[*i]).chain(missing.iter().copied()).collect();
    for i in order {
        if got == seg.k {
            break;
        }
        let cid = seg.shards[i];
        for h in layout.holders_of(&cid) {
            let Ok(peer) = h.parse::<PeerId>() else { continue };
            pace.take(seg.shard_len).await;
            match tokio::time::timeout(Duration::from_secs(60), inner.client.get_shard(peer, cid)).await {
                Ok(Ok(bytes)) => {
                    read += bytes.len() as u64;
                    pieces[i] = Some(bytes);
                    got += 1;
                    break;
                }
                Ok(Err(e)) => tracing::debug!(%peer, %cid, "repair read failed: {e}"),
                Err(_) => tracing::debug!(%peer, %cid, "repair read timed out"),
            }
        }
    }
    inner.state.add_repair_bytes(read)?;
    if got < seg.k {
        return Err(Error::Unplaced(vec![format!(
            "segment of {:?} is unreadable now: {got} of the {} shards needed answered",
            seg.objects, seg.k
        )]));
    }
    let (k, m) = (seg.k as u8, (n - seg.k) as u8);
    let rebuilt = tokio::task::spawn_blocking(move || {
        Coder::new(k, m)?.rebuild(&mut pieces, false)?;
        Ok::<_, chunker::Error>(pieces)
    })
    .await
    .map_err(|e| Error::io("rebuild task", std::io::Error::other(e)))??;
    let mut shards: HashMap<usize, Vec<u8>> = HashMap::new();
    for &i in &missing {
        let bytes = rebuilt[i].clone().unwrap_or_default();
        if Cid::of_raw(&bytes) != seg.shards[i] {
            return Err(Error::Db(format!(
                "shard {i} rebuilt does not match {}: the manifest or a read is wrong",
                seg.shards[i]
            )));
        }
        shards.insert(i, bytes);
    }
    // Where: live peers, by what they proved; the healthy holders' domains count.
    let mut holders: Vec<(PeerId, Vec<String>)> = Vec::new();
    let mut excluded: HashSet<String> = HashSet::new();
    for (i, c) in seg.shards.iter().enumerate() {
        // A peer that lost a shard of this segment, or failed its audit, gets none of it back.
        excluded.extend(inner.state.deletes_of(&c.to_string())?);
        for h in layout.holders_of(c) {
            excluded.insert(h.clone());
            if healthy[i]
                && let (Some(p), Ok(id)) = (peers.get(h), h.parse::<PeerId>())
                && durability::is_healthy(p, t, s)
            {
                holders.push((id, durability::domains(p)));
            }
        }
    }
    let mut pool =
        Pool::new(candidates(&peers, t, s).into_iter().filter(|c| !excluded.contains(&c.peer.to_string())).collect());
    if !s.relax_domains {
        pool.max_per_domain = usize::from(m.max(1));
    }
    let mut plan = SegmentPlan::repair(seg.shard_len, seg.k, &missing, &holders, &pool);
    loop {
        let puts = plan.next_round(&mut pool, &mut rand::rng());
        if puts.is_empty() {
            break;
        }
        let intents: Vec<(String, String)> =
            puts.iter().map(|(i, p)| (seg.shards[*i].to_string(), p.to_string())).collect();
        inner.state.intend_repairs(&intents)?;
        pace.take(seg.shard_len * puts.len() as u64).await;
        let tries = puts.into_iter().map(|(i, peer)| {
            let client = inner.client.clone();
            let (cid, bytes) = (seg.shards[i], shards[&i].clone());
            // A new copy is kept as long as the others: pinned (releases),
            // or until their latest expiry (backups, renewed by their owner).
            let keep = seg.keep;
            async move {
                let r = match keep {
                    Keep::Until(e) => client.put_shard(peer, cid, bytes, Some(e)).await,
                    _ => client.pin_shard(peer, cid, bytes).await,
                };
                (i, peer, r)
            }
        });
        for (i, peer, r) in futures::future::join_all(tries).await {
            let shard = seg.shards[i].to_string();
            match r {
                Ok(receipt) => {
                    let stale: Vec<String> = layout
                        .holders_of(&seg.shards[i])
                        .iter()
                        .filter(|h| !peers.get(*h).is_some_and(|p| durability::is_healthy(p, t, s)))
                        .cloned()
                        .collect();
                    inner.state.repaired(
                        &shard,
                        &peer.to_string(),
                        &receipt.to_bytes(),
                        &stale,
                        seg.shard_len,
                        &seg.objects,
                        now(),
                    )?;
                    tracing::info!(%peer, %shard, ?stale, "shard rebuilt and placed");
                    plan.placed(i, peer, &mut pool);
                }
                Err(e) => {
                    tracing::warn!(%peer, %shard, "repair put failed: {e}");
                    inner.state.repair_failed(&shard, &peer.to_string(), now())?;
                    let kind = match e {
                        net::Error::Refused { code: net::wire::Code::Busy, .. } => Failure::Passing,
                        _ => Failure::Drop,
                    };
                    plan.failed(i, peer, e.to_string(), kind, &mut pool);
                }
            }
        }
    }
    let (_, left) = plan.finish();
    if !left.is_empty() {
        return Err(Error::Unplaced(left.into_iter().map(|(i, why)| format!("shard {i}: {why}")).collect()));
    }
    Ok(())
}

/// Live peers that may take shards, weighed by what they proved, with
/// their failure domains and whether they are directly reachable.
pub(crate) fn candidates(peers: &HashMap<String, PeerRecord>, now: u64, s: &Settings) -> Vec<Candidate> {
    let mut out = Vec::new();
    for p in peers.values() {
        if !crate::heartbeat::is_live(p, now, s) {
            continue;
        }
        let Ok(peer) = p.peer.parse::<PeerId>() else { continue };
        out.push(Candidate {
            peer,
            free: p.capacity.saturating_sub(p.used),
            weight: durability::weight(p, s),
            direct: !p.relayed,
            domains: durability::domains(p),
        });
    }
    out.sort_by_key(|c| c.peer);
    out
}

/// Forget copies that expired more than [`EXPIRED_GRACE`] ago (their
/// peers swept them: no delete is sent), and client-encoded objects whose
/// every segment expired that long ago (nobody renewed them: they are
/// gone by design, and a restore says so).
fn forget_expired(inner: &Inner, layout: &Layout, t: u64) -> Result<()> {
    let cutoff = t.saturating_sub(EXPIRED_GRACE);
    let old: Vec<(String, String)> =
        layout.expired.iter().filter(|(_, _, e)| *e <= cutoff).map(|(s, p, _)| (s.clone(), p.clone())).collect();
    if old.is_empty() {
        return Ok(());
    }
    inner.state.forget_copies(&old)?;
    let mut alive: HashSet<&String> = HashSet::new();
    let mut all: HashSet<&String> = HashSet::new();
    for seg in &layout.segments {
        all.extend(seg.objects.iter());
        if seg.keep != Keep::Expired {
            alive.extend(seg.objects.iter());
        }
    }
    let forgotten: HashSet<&String> = old.iter().map(|(s, _)| s).collect();
    for seg in layout.segments.iter().filter(|s| s.keep == Keep::Expired) {
        // Only once its copies are past the grace too.
        if !seg.shards.iter().any(|c| forgotten.contains(&c.to_string())) {
            continue;
        }
        for o in &seg.objects {
            if !alive.contains(o) && all.contains(o) {
                tracing::info!(object = %o, "every copy of this backup object expired unrenewed: forgotten");
                inner.state.delete_object(o, t)?;
                alive.insert(o);
            }
        }
    }
    Ok(())
}
