//! The durability report: what `ionshard spn health` and
//! `GET /v1/durability` show.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use proto::api::{Durability, ObjectHealth};

use crate::durability;
use crate::repair::{Layout, healthy_shards};
use crate::state::PeerRecord;
use crate::{Error, Inner, Result, now};

/// The report, for every object or for `object` alone.
pub(crate) fn report(inner: &Inner, object: Option<&str>) -> Result<Durability> {
    let s = &inner.settings;
    let t = now();
    let layout = Layout::read(&inner.state)?;
    let peers: HashMap<String, PeerRecord> = inner.state.peers()?.into_iter().map(|p| (p.peer.clone(), p)).collect();
    let mut objects = Vec::new();
    for o in inner.state.objects()? {
        if object.is_some_and(|c| c != o.manifest) {
            continue;
        }
        let (threshold, success) = s.thresholds(o.data_shards, o.parity_shards);
        let mut h = ObjectHealth {
            manifest: o.manifest.clone(),
            tenant: o.tenant.clone(),
            product: o.product.clone(),
            needed: o.data_shards,
            repair_threshold: threshold,
            success_threshold: success,
            total: o.data_shards.saturating_add(o.parity_shards),
            segments: 0,
            lowest_healthy: u64::MAX,
            at_risk: 0,
            unreadable: 0,
            placement_version: o.placement_version,
        };
        // Expired (unrenewed) segments are gone by design, not at risk.
        for seg in
            layout.segments.iter().filter(|g| g.objects.contains(&o.manifest) && g.keep != crate::repair::Keep::Expired)
        {
            let ok = healthy_shards(seg, &layout, &peers, t, s).iter().filter(|b| **b).count() as u64;
            h.segments += 1;
            h.lowest_healthy = h.lowest_healthy.min(ok);
            if ok <= u64::from(threshold) && ok < seg.shards.len() as u64 {
                h.at_risk += 1;
            }
            if ok < seg.k as u64 {
                h.unreadable += 1;
            }
        }
        if h.segments == 0 {
            h.lowest_healthy = 0;
        }
        objects.push(h);
    }
    if let Some(c) = object
        && objects.is_empty()
    {
        return Err(Error::NotFound(format!("object {c}")));
    }
    let holdings = layout.holdings();
    let mut stored = 0u64;
    let mut audit_per_day = 0u64;
    let mut at_defaults = 0u64;
    let defaults = durability::Settings::default();
    for shards in holdings.values() {
        let held: u64 = shards.iter().map(|(_, l)| l).sum();
        stored += held;
        let typical = held / shards.len().max(1) as u64;
        audit_per_day += durability::audit_bytes_per_day(held, typical, s);
        at_defaults += durability::audit_bytes_per_day(held, typical, &defaults);
    }
    let count = |f: &dyn Fn(&PeerRecord) -> bool| peers.values().filter(|p| f(p)).count() as u64;
    Ok(Durability {
        objects,
        peers_live: count(&|p| crate::heartbeat::is_live(p, t, s)),
        peers_lost: count(&|p| p.disqualified.is_none() && durability::is_lost(p, t, s)),
        peers_disqualified: count(&|p| p.disqualified.is_some()),
        repair_queue: inner.repair_queue.load(Ordering::Relaxed),
        shards_repaired: inner.state.stat("shards_repaired")?,
        repair_bytes: inner.state.stat("repair_bytes")?,
        bytes_lost: inner.state.stat("bytes_lost")?,
        audit_bytes: inner.state.stat("audit_bytes")?,
        audits_passed: peers.values().map(|p| p.audits_passed).sum(),
        audits_failed: peers.values().map(|p| p.audits_failed).sum(),
        stored_bytes: stored,
        audit_bytes_per_day: audit_per_day,
        audit_share_per_day: if stored == 0 { 0.0 } else { audit_per_day as f64 / stored as f64 },
        audit_share_at_defaults: if stored == 0 { 0.0 } else { at_defaults as f64 / stored as f64 },
        settings: s.view(),
    })
}
