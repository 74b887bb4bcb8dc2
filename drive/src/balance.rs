//! Keeping the drive whole and even on its devices: every manifest on
//! every device; a shard no device holds any more rebuilt from the others
//! (Reed-Solomon) onto a device that holds none of its segment; and, when
//! a device was added (or one is fuller than the rest), shards moved from
//! the fullest onto the emptiest, each segment still on distinct devices.
//!
//! Where shards are is asked of the devices (which of these do you hold),
//! not kept anywhere: balancing needs every device to answer, so that a
//! device that is only down is never taken for one that lost its shards.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chunker::{Cid, Manifest};
use futures::future::join_all;
use net::PeerId;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::remote::Drive;
use crate::tree::{Entry, Tree, Version};

/// CIDs asked about in one request.
const ASK_AT_ONCE: usize = 1024;

/// What balancing did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Balanced {
    /// Segments looked at.
    pub segments: u64,
    /// Shards moved from one device to another, and their bytes.
    pub moved_shards: u64,
    /// Bytes moved.
    pub moved_bytes: u64,
    /// Shards no device held, rebuilt from the others, and their bytes.
    pub rebuilt_shards: u64,
    /// Bytes rebuilt.
    pub rebuilt_bytes: u64,
    /// Manifests copied to devices that lacked them.
    pub manifests_copied: u64,
    /// Segments too few shards are left of to rebuild (their files are lost).
    pub unrecoverable: Vec<String>,
    /// Segments with two or more shards on one device (fewer devices than
    /// shards): losing that device costs more than one; add a device.
    pub crowded: u64,
    /// Bytes of drive shards on each device, before.
    pub before: BTreeMap<String, u64>,
    /// And after.
    pub after: BTreeMap<String, u64>,
}

/// Every version the tree or its trash names, once each.
fn versions(tree: &Tree) -> Vec<Version> {
    let mut seen = HashSet::new();
    let files = tree.entries.values().chain(tree.trash.iter().flat_map(|t| t.entries.values()));
    files
        .flat_map(|e| match e {
            Entry::File { versions } => versions.clone(),
            Entry::Dir { .. } => Vec::new(),
        })
        .filter(|v| seen.insert(v.manifest.clone()))
        .collect()
}

/// One segment as balancing sees it.
struct Seg {
    k: usize,
    shard_len: u64,
    shards: Vec<Cid>,
    /// For each shard, the devices (indices) that hold it.
    holders: Vec<Vec<usize>>,
}

impl Drive {
    /// Which of `cids` each device holds; every device must answer.
    async fn holdings(&self, cids: &[Cid]) -> Result<Vec<Vec<bool>>> {
        let devices = self.devices();
        let mut out = vec![Vec::with_capacity(cids.len()); devices.len()];
        for batch in cids.chunks(ASK_AT_ONCE) {
            let asks = join_all(devices.iter().map(|p| self.net().has_many(*p, batch.to_vec()))).await;
            for (i, a) in asks.into_iter().enumerate() {
                let have = a.map_err(|e| {
                    Error::Drive(format!(
                        "device {} did not answer ({e}): balancing needs every device (revoke one that is gone \
                         for good: `ionshard drive revoke NAME --client`)",
                        devices[i]
                    ))
                })?;
                if have.len() != batch.len() {
                    return Err(Error::Drive(format!("device {} answered for the wrong number of shards", devices[i])));
                }
                out[i].extend(have);
            }
        }
        Ok(out)
    }

    /// Make the drive whole and even on its devices (see the module).
    /// `progress` hears segments done of all.
    pub async fn balance(&self, tree: &Tree, progress: Arc<dyn client::Progress>) -> Result<Balanced> {
        let devices = self.devices().to_vec();
        let n = devices.len();
        let mut report = Balanced::default();
        let versions = versions(tree);
        // Manifests first: every device keeps every one.
        let stored: Vec<Cid> = versions
            .iter()
            .map(|v| v.stored.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Drive(format!("the tree names a manifest that is not a CID: {e}")))?;
        let held = self.holdings(&stored).await?;
        let mut manifests = Vec::with_capacity(versions.len());
        for (j, (v, cid)) in versions.iter().zip(&stored).enumerate() {
            let have: Vec<usize> = (0..n).filter(|&i| held[i][j]).collect();
            let Some(&from) = have.first() else {
                report.unrecoverable.push(format!("the manifest of a version of {} bytes ({})", v.len, v.manifest));
                manifests.push(None);
                continue;
            };
            let bytes = self.net().get_shard(devices[from], *cid).await.map_err(|e| Error::Drive(e.to_string()))?;
            for i in (0..n).filter(|i| !have.contains(i)) {
                self.net()
                    .pin_shard(devices[i], *cid, &bytes[..])
                    .await
                    .map_err(|e| Error::Drive(format!("device {}: keeping a manifest: {e}", devices[i])))?;
                report.manifests_copied += 1;
            }
            let mcid: Cid = v.manifest.parse().map_err(|e| Error::Drive(format!("bad manifest CID: {e}")))?;
            let m = Manifest::from_bytes_with_cid(&bytes, &mcid, &chunker::Limits::default())
                .map_err(|e| Error::Drive(format!("manifest {}: {e}", v.manifest)))?;
            manifests.push(Some(m));
        }
        // Where every shard of every segment is (a segment shared by two
        // versions, as when a file grows at its end, once).
        let mut segs = Vec::new();
        let mut seen = HashSet::new();
        for m in manifests.iter().flatten() {
            for s in m.segments() {
                if !seen.insert(s.shards().to_vec()) {
                    continue;
                }
                segs.push(Seg {
                    k: s.data_shards(),
                    shard_len: s.shard_len(),
                    shards: s.shards().to_vec(),
                    holders: Vec::new(),
                });
            }
        }
        let all: Vec<Cid> = segs.iter().flat_map(|s| s.shards.iter().copied()).collect();
        let held = self.holdings(&all).await?;
        let mut at = 0;
        let mut load = vec![0u64; n];
        for s in &mut segs {
            for _ in 0..s.shards.len() {
                let h: Vec<usize> = (0..n).filter(|&i| held[i][at]).collect();
                for &i in &h {
                    load[i] += s.shard_len;
                }
                s.holders.push(h);
                at += 1;
            }
        }
        report.before = devices.iter().zip(&load).map(|(p, l)| (p.to_string(), *l)).collect();
        report.segments = segs.len() as u64;
        progress.start("balance", segs.len() as u64);
        for (done, s) in segs.iter_mut().enumerate() {
            self.repair(s, &devices, &mut load, &mut report).await?;
            self.spread(s, &devices, &mut load, &mut report).await?;
            progress.set(done as u64 + 1);
        }
        progress.finish();
        report.after = devices.iter().zip(&load).map(|(p, l)| (p.to_string(), *l)).collect();
        Ok(report)
    }

    /// Rebuild the shards of `s` no device holds, onto devices that hold
    /// none of `s`, the emptiest first.
    async fn repair(&self, s: &mut Seg, devices: &[PeerId], load: &mut [u64], report: &mut Balanced) -> Result<()> {
        let missing: Vec<usize> = (0..s.shards.len()).filter(|&j| s.holders[j].is_empty()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let present: Vec<usize> = (0..s.shards.len()).filter(|&j| !s.holders[j].is_empty()).collect();
        if present.len() < s.k {
            report.unrecoverable.push(format!(
                "a segment with {} of its {} shards left (it needs {})",
                present.len(),
                s.shards.len(),
                s.k
            ));
            return Ok(());
        }
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; s.shards.len()];
        for &j in present.iter().take(s.k) {
            let from = devices[s.holders[j][0]];
            pieces[j] = Some(self.net().get_shard(from, s.shards[j]).await.map_err(|e| Error::Drive(e.to_string()))?);
        }
        let coder =
            chunker::Coder::new(s.k as u8, (s.shards.len() - s.k) as u8).map_err(|e| Error::Drive(e.to_string()))?;
        coder.rebuild(&mut pieces, false).map_err(|e| Error::Drive(format!("rebuilding a segment: {e}")))?;
        for j in missing {
            let Some(bytes) = pieces[j].take() else { continue };
            if Cid::of_raw(&bytes) != s.shards[j] {
                return Err(Error::Drive(format!("a rebuilt shard does not match {}", s.shards[j])));
            }
            // A device holding none of this segment, the emptiest; with fewer
            // devices than shards, the one holding fewest of it.
            let count = |i: usize| s.holders.iter().filter(|h| h.contains(&i)).count();
            let Some(to) = (0..devices.len()).min_by_key(|&i| (count(i), load[i])) else {
                continue;
            };
            if count(to) > 0 {
                report.crowded += 1;
            }
            self.net()
                .pin_shard(devices[to], s.shards[j], &bytes[..])
                .await
                .map_err(|e| Error::Drive(format!("device {}: keeping a rebuilt shard: {e}", devices[to])))?;
            s.holders[j].push(to);
            load[to] += s.shard_len;
            report.rebuilt_shards += 1;
            report.rebuilt_bytes += s.shard_len;
        }
        Ok(())
    }

    /// Move shards of `s` from the fullest device holding one onto the
    /// emptiest holding none, while that evens the load.
    async fn spread(&self, s: &mut Seg, devices: &[PeerId], load: &mut [u64], report: &mut Balanced) -> Result<()> {
        loop {
            let used: HashSet<usize> = s.holders.iter().flatten().copied().collect();
            let Some(to) = (0..devices.len()).filter(|i| !used.contains(i)).min_by_key(|&i| load[i]) else {
                return Ok(());
            };
            let Some((j, from)) = s
                .holders
                .iter()
                .enumerate()
                .filter(|(_, h)| h.len() == 1)
                .map(|(j, h)| (j, h[0]))
                .max_by_key(|&(_, i)| load[i])
            else {
                return Ok(());
            };
            if load[from] < load[to] + 2 * s.shard_len {
                return Ok(());
            }
            let cid = s.shards[j];
            let bytes = self.net().get_shard(devices[from], cid).await.map_err(|e| Error::Drive(e.to_string()))?;
            if let Err(e) = self.net().pin_shard(devices[to], cid, &bytes[..]).await {
                // Full, or gone: this segment stays where it is.
                tracing::warn!("device {} did not take a shard: {e}", devices[to]);
                return Ok(());
            }
            // Kept there first, then let go here: never fewer copies.
            self.net().delete_shard(devices[from], cid).await.map_err(|e| Error::Drive(e.to_string()))?;
            s.holders[j] = vec![to];
            load[from] -= s.shard_len;
            load[to] += s.shard_len;
            report.moved_shards += 1;
            report.moved_bytes += s.shard_len;
        }
    }
}
