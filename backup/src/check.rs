//! `check`: is the repository whole, and will it stay so?
//!
//! For every object a snapshot uses it checks, from the SPN's records and
//! the peers' own signatures:
//! - the manifest is the one its CID names;
//! - every shard has a storage receipt from each peer said to hold it,
//!   signed by that peer, for that shard and size, not expired;
//! - every segment can be read: at least k of its n shards are placed
//!   (fewer than n is *degraded*: repair is due; fewer than k is an error);
//! - each snapshot's tree reads, and every file in it points inside one of
//!   the snapshot's objects.
//!
//! With a data subset it also reads whole objects from the peers, chosen
//! at random until they add up to the share asked for, and checks each
//! against its BLAKE3 (restic's `--read-data-subset`).

use std::collections::HashMap;
use std::sync::Arc;

use chunker::Manifest;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::{ObjectCap, Repo};

/// A receipt that expires sooner than this is a warning (a renewal is due).
const EXPIRY_WARNING_SECS: u64 = 30 * 86_400;

/// What a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Objects they use.
    pub objects: u64,
    /// Segments of those objects.
    pub segments: u64,
    /// Shard copies the SPN says are placed.
    pub copies: u64,
    /// Receipts that verify and match their copy.
    pub receipts_ok: u64,
    /// Segments with fewer than n shards placed (still readable: repair is due).
    pub segments_degraded: u64,
    /// Segments with fewer than k shards placed (unreadable).
    pub segments_unreadable: u64,
    /// The soonest a copy expires, seconds since the epoch (0: none expire).
    pub earliest_expiry: u64,
    /// Objects read from the peers and checked against their hash.
    pub objects_read: u64,
    /// Their bytes.
    pub bytes_read: u64,
    /// What is wrong: the repository cannot be trusted whole.
    pub errors: Vec<String>,
    /// What needs attention (repair, renewal).
    pub warnings: Vec<String>,
}

impl CheckReport {
    fn error(&mut self, e: String) {
        if self.errors.len() < 1000 {
            self.errors.push(e);
        }
    }
}

/// Check `repo`; read `subset` (0 to 1) of its objects' bytes from the
/// peers through `net`. `now` is seconds since the epoch.
pub async fn check(
    repo: &Repo,
    net: &net::Client,
    subset: f64,
    now: u64,
    progress: Arc<dyn client::Progress>,
) -> Result<CheckReport> {
    repo.key.need_full("check the repository")?;
    if !(0.0..=1.0).contains(&subset) {
        return Err(Error::Invalid(format!("a data subset of {subset} is not between 0% and 100%")));
    }
    let mut r = CheckReport::default();
    let (snaps, bad) = repo.snapshots_checked()?;
    for b in bad {
        r.error(format!("record {} is not a snapshot of this repository: {}", b.name, b.why));
    }
    r.snapshots = snaps.len() as u64;
    let objects = crate::repo::objects_of(&snaps);
    r.objects = objects.len() as u64;
    progress.start("check", objects.len() as u64);
    for (i, cap) in objects.iter().enumerate() {
        check_object(repo, cap, now, &mut r);
        progress.set(i as u64 + 1);
    }
    progress.finish();
    // Trees: each reads and points inside its snapshot's objects.
    for s in &snaps {
        match repo.tree(Some(net), s).await {
            Ok(tree) => {
                for e in &tree.entries {
                    let Some(d) = &e.data else { continue };
                    let inside = s
                        .data
                        .get(d.object as usize)
                        .is_some_and(|o| d.offset.checked_add(e.size).is_some_and(|end| end <= o.length));
                    if !inside {
                        r.error(format!("snapshot {}: /{} points outside its data objects", s.id, e.display_path()));
                    }
                }
            }
            Err(e) => r.error(format!("snapshot {}: its tree does not read: {e}", s.id)),
        }
    }
    // Data: whole objects at random, up to the share asked for.
    if subset > 0.0 {
        let total: u64 = objects.iter().map(|o| o.length).sum();
        let want = ((total as f64) * subset).ceil() as u64;
        let mut order: Vec<&ObjectCap> = objects.iter().collect();
        {
            use rand::seq::SliceRandom;
            order.shuffle(&mut rand::rng());
        }
        let scratch = repo.cache.join("check");
        std::fs::create_dir_all(&scratch).map_err(Error::file("creating", &scratch))?;
        for cap in order {
            if r.bytes_read >= want && r.objects_read > 0 {
                break;
            }
            let out = scratch.join(cap.manifest.parse::<chunker::Cid>()?.to_string());
            match repo.fetch_object(net, cap, &out, progress.clone()).await {
                Ok(_) => {
                    r.objects_read += 1;
                    r.bytes_read += cap.length;
                }
                Err(e) => r.error(format!("object {}: reading it from the peers failed: {e}", cap.manifest)),
            }
            let _ = std::fs::remove_file(&out);
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if r.earliest_expiry > 0 && r.earliest_expiry < now + EXPIRY_WARNING_SECS {
        r.warnings.push(format!(
            "some data expires on the peers within {} day(s): run `ionshard backup renew` (every run renews)",
            r.earliest_expiry.saturating_sub(now) / 86_400
        ));
    }
    if r.segments_degraded > 0 {
        r.warnings.push(format!(
            "{} segment(s) have fewer copies than shards: the SPN's repair rebuilds them",
            r.segments_degraded
        ));
    }
    Ok(r)
}

/// One object: its manifest, its receipts, its segments' placement.
fn check_object(repo: &Repo, cap: &ObjectCap, now: u64, r: &mut CheckReport) {
    let name = &cap.manifest;
    let info = match repo.spn.object(name) {
        Ok(i) => i,
        Err(e) => return r.error(format!("object {name}: the SPN does not have it: {e}")),
    };
    let m = match repo.spn.manifest(name, 256 << 20).map_err(Error::from).and_then(|b| {
        let cid = name.parse()?;
        Ok(Manifest::from_bytes_with_cid(&b, &cid, &Default::default())?)
    }) {
        Ok(m) => m,
        Err(e) => return r.error(format!("object {name}: its manifest: {e}")),
    };
    let receipts = match repo.spn.receipts(name) {
        Ok(list) => list,
        Err(e) => return r.error(format!("object {name}: its receipts: {e}")),
    };
    // (shard, peer) → the receipt's size and expiry.
    let mut by_copy: HashMap<(String, String), (u64, Option<u64>)> = HashMap::new();
    for rc in receipts {
        by_copy.insert((rc.cid.to_string(), rc.peer.to_string()), (rc.size, rc.expiry));
    }
    let p = &info.placement;
    for seg in m.segments() {
        r.segments += 1;
        let mut placed = 0;
        for c in seg.shards() {
            let holders = p.shards.get(&c.to_string()).cloned().unwrap_or_default();
            if !holders.is_empty() {
                placed += 1;
            }
            for h in holders {
                r.copies += 1;
                let Some(peer) = p.peers.get(h as usize) else {
                    r.error(format!("object {name}: the SPN's placement of {c} names no peer"));
                    continue;
                };
                match by_copy.get(&(c.to_string(), peer.clone())) {
                    None => r.error(format!("object {name}: no receipt from {peer} for {c}")),
                    Some((size, _)) if *size != seg.shard_len() => {
                        r.error(format!("object {name}: {peer}'s receipt for {c} is for {size} bytes"))
                    }
                    Some((_, Some(e))) if *e <= now => {
                        r.error(format!("object {name}: {peer}'s copy of {c} expired (renew sooner)"))
                    }
                    Some((_, expiry)) => {
                        r.receipts_ok += 1;
                        if let Some(e) = expiry
                            && (r.earliest_expiry == 0 || *e < r.earliest_expiry)
                        {
                            r.earliest_expiry = *e;
                        }
                    }
                }
            }
        }
        if placed < seg.data_shards() {
            r.segments_unreadable += 1;
            r.error(format!(
                "object {name}: a segment has {placed} of the {} shards it needs placed: it cannot be read",
                seg.data_shards()
            ));
        } else if placed < seg.shards().len() {
            r.segments_degraded += 1;
        }
    }
}
