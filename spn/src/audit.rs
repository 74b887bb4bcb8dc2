//! Audits: at random times, each live peer holding shards of ours is asked
//! for blocks drawn from a seed it cannot predict, and answers with range
//! proofs that are checked against the shards' CIDs (see
//! [`durability`](crate::durability) for how many blocks, and what they
//! catch). A shard whose proof fails, or that the peer no longer has, stops
//! counting as held there (repair rebuilds it elsewhere). A peer that fails
//! [`Settings::disqualify_after`](crate::Settings) of its last 16 audits, or
//! that many shards in one audit, is disqualified for good: it gets no new
//! shards and all of its shards count as lost.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use chunker::Cid;
use net::PeerId;
use rand::{Rng, SeedableRng};

use crate::durability::{self, audit_plan, blocks_for};
use crate::{Inner, now};

/// Audits in flight at once.
const AT_ONCE: usize = 8;

/// What one audit found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Shards whose proof failed or that the peer no longer has, and why.
    pub(crate) bad: Vec<(String, u64, String)>,
    /// The peer did not answer in time, or answered something else.
    pub(crate) failed: Option<String>,
    /// Blocks asked for.
    pub(crate) blocks: u32,
    /// Bytes the answers carried (blocks and proofs, as bounded).
    pub(crate) bytes: u64,
    /// The final block (height, hash) that seeded the challenge, if any.
    pub(crate) seeded: Option<(u64, [u8; 32])>,
}

/// The auditor: runs while the SPN does.
pub(crate) async fn run(inner: Weak<Inner>) {
    // When each peer is due, drawn anew at start (nothing to predict).
    let mut due: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let tick = (strong.settings.audit_every / 8).clamp(Duration::from_millis(500), Duration::from_secs(60));
        if let Err(e) = round(&strong, &mut due).await {
            tracing::warn!("audit round: {e}");
        }
        drop(strong);
        tokio::time::sleep(tick).await;
    }
}

/// Audit every peer that is due.
async fn round(inner: &Inner, due: &mut HashMap<String, u64>) -> crate::Result<()> {
    use futures::StreamExt;
    let layout = crate::repair::Layout::read(&inner.state)?;
    let held = layout.holdings();
    let t = now();
    let every = inner.settings.audit_every.as_secs().max(1);
    let mut todo = Vec::new();
    for p in inner.state.peers()? {
        let Some(shards) = held.get(&p.peer) else { continue };
        if p.disqualified.is_some() || !crate::heartbeat::is_live(&p, t, &inner.settings) && !p.retiring {
            continue;
        }
        let when = *due.entry(p.peer.clone()).or_insert_with(|| t + rand::rng().random_range(0..every));
        if when <= t {
            due.insert(p.peer.clone(), t + rand::rng().random_range(every / 2..=every + every / 2));
            if let Ok(id) = p.peer.parse::<PeerId>() {
                todo.push((id, shards.clone()));
            }
        }
    }
    let audits = futures::stream::iter(todo)
        .map(|(peer, shards)| async move { (peer, shards.clone(), audit(inner, peer, &shards).await) })
        .buffer_unordered(AT_ONCE);
    let results: Vec<_> = audits.collect().await;
    for (peer, shards, outcome) in results {
        if let Some(o) = outcome {
            record(inner, peer, &shards, o)?;
        }
    }
    Ok(())
}

/// An audit's seed: the final block's hash and height, the peer, and fresh
/// randomness.
fn audit_seed(hash: &[u8; 32], height: u64, peer: &PeerId, fresh: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"ionshard audit seed v1");
    h.update(hash);
    h.update(&height.to_be_bytes());
    h.update(&peer.to_bytes());
    h.update(fresh);
    *h.finalize().as_bytes()
}

/// Audit requests in flight to one peer at once.
const AUDIT_PARALLEL: usize = 4;

/// Challenge `peer` for blocks of `shards` (CID, length). `None`: it could
/// not be reached at all (heartbeats deal with that), so no audit happened.
pub(crate) async fn audit(inner: &Inner, peer: PeerId, shards: &[(Cid, u64)]) -> Option<Outcome> {
    let total: u64 = shards.iter().map(|(_, l)| l).sum();
    let typical = total / shards.len().max(1) as u64;
    let c = blocks_for(total, typical, &inner.settings);
    // A fresh seed from the OS, mixed with the chain's newest final hash
    // when the SPN follows one: the peer cannot know which blocks come,
    // and the challenge is tied to the chain's state at the time.
    let mut fresh = [0u8; 32];
    rand::rng().fill(&mut fresh);
    let seeded = *inner.final_block.lock().unwrap_or_else(|p| p.into_inner());
    let seed = match seeded {
        Some((height, hash)) => audit_seed(&hash, height, &peer, &fresh),
        None => fresh,
    };
    let mut rng = rand::rngs::StdRng::from_seed(seed);
    let plan = audit_plan(shards, c, &mut rng);
    let mut out = Outcome { blocks: c, seeded, ..Outcome::default() };
    let timeout = inner.settings.audit_timeout;
    let asks = plan.into_iter().map(|(cid, len, ranges)| {
        let client = inner.client.clone();
        async move {
            let bytes: u64 =
                ranges.iter().map(|r| r.end - r.start).sum::<u64>() + chunker::proof::max_proof_len(len, &ranges);
            let r = tokio::time::timeout(timeout, client.audit(peer, cid, len, ranges)).await;
            (cid, len, bytes, r)
        }
    });
    let mut reached = false;
    // Fewer at once than a peer serves for one asker (8): more would be
    // answered Busy, and an honest peer holding many shards would fail.
    use futures::StreamExt;
    let answers: Vec<_> = futures::stream::iter(asks).buffer_unordered(AUDIT_PARALLEL).collect().await;
    for (cid, len, bytes, r) in answers {
        match r {
            Ok(Ok(())) => {
                reached = true;
                out.bytes += bytes;
            }
            Ok(Err(net::Error::Unreachable { .. })) => {}
            Ok(Err(e @ net::Error::Refused { code: net::wire::Code::Busy, .. })) => {
                reached = true;
                out.failed.get_or_insert_with(|| e.to_string());
            }
            Ok(Err(e @ (net::Error::BadAnswer { .. } | net::Error::Refused { .. }))) => {
                reached = true;
                out.bad.push((cid.to_string(), len, e.to_string()));
            }
            Ok(Err(e)) => {
                reached = true;
                out.failed.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                reached = true;
                out.failed.get_or_insert_with(|| format!("no answer within {} s", timeout.as_secs()));
            }
        }
    }
    reached.then_some(out)
}

/// Keep what an audit found: the peer's record, and the shards it failed.
pub(crate) fn record(inner: &Inner, peer: PeerId, shards: &[(Cid, u64)], o: Outcome) -> crate::Result<()> {
    let id = peer.to_string();
    let t = now();
    let held: u64 = shards.iter().map(|(_, l)| l).sum();
    let failed = o.failed.is_some() || !o.bad.is_empty();
    let limit = inner.settings.disqualify_after.max(1);
    inner.state.update_peer(&id, |cur| {
        let mut p = cur?;
        p.last_audit = t;
        p.audit_window = (p.audit_window << 1) | u32::from(failed);
        if failed {
            p.audits_failed += 1;
            p.proven_bytes /= 2;
        } else {
            p.audits_passed += 1;
            p.proven_bytes = held;
        }
        let why = o.failed.clone().or_else(|| o.bad.first().map(|b| b.2.clone())).unwrap_or_default();
        if p.disqualified.is_none() && (p.recent_audit_failures() >= limit || o.bad.len() >= limit as usize) {
            let reason = format!(
                "failed {} of its last {} audits ({} shard(s) in the last one); last: {why}",
                p.recent_audit_failures(),
                (p.audits_passed + p.audits_failed).min(16),
                o.bad.len()
            );
            tracing::warn!(peer = %id, "peer disqualified: {reason}");
            p.disqualified = Some(reason);
        }
        p.status = durability::status(&p, t, &inner.settings).to_string();
        Some(p)
    })?;
    if failed {
        tracing::warn!(peer = %id, blocks = o.blocks, bad = o.bad.len(), "audit failed: {:?}", o.failed);
    } else {
        tracing::info!(peer = %id, blocks = o.blocks, bytes = o.bytes, "audit passed");
    }
    for (shard, _, why) in &o.bad {
        tracing::warn!(peer = %id, %shard, "shard failed its audit, to be rebuilt elsewhere: {why}");
        inner.state.drop_holder(shard, &id, t)?;
    }
    inner.state.add_stat("audit_bytes", o.bytes)?;
    // The result goes on the chain with the next batch of audits (when
    // anchoring): the peer's points count its passes.
    let (height, hash) = o.seeded.unwrap_or((0, [0; 32]));
    inner.state.enqueue_audit(&crate::state::AuditResult {
        peer,
        at: t,
        height,
        hash,
        blocks: o.blocks,
        bytes: o.bytes,
        passed: !failed,
    })?;
    Ok(())
}
