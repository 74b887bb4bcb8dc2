//! `forget` and `prune`: retention and deletion that really deletes.
//!
//! `forget` removes snapshot records (the policy says which). `prune`
//! deletes, at the SPN, every object of the repository that no remaining
//! snapshot uses: the SPN drops the shards no other object shares and
//! deletes them from the peers. A removed snapshot's read keys existed only
//! in its sealed record, so once the record is gone and the objects are
//! deleted, nothing a peer or the SPN may have kept can be read again
//! (crypto-shredding); chunks still used by kept snapshots keep their keys
//! in those snapshots' manifests.
//!
//! No locks: a backup run saves its objects (commit) moments before its
//! record, so `prune` leaves alone every object younger than a grace period
//! (default one hour), as lock-free repositories do; and the SPN refuses a
//! commit that uses shards deleted meanwhile, so a run racing a prune fails
//! cleanly and its rerun stores what is missing. Nothing is ever left
//! referenced but deleted.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::policy::{Candidate, Decision, Policy, apply};
use crate::repack::RepackReport;
use crate::repo::Repo;

/// What `forget` decided (and did, unless it was a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Per group (`host paths`), the decisions, newest first.
    pub groups: BTreeMap<String, Vec<Decision>>,
    /// Snapshots removed.
    pub removed: Vec<String>,
    /// Whether it only said what it would do.
    pub dry_run: bool,
}

/// Apply `policy` to every group of snapshots (host and paths), optionally
/// only those of `host`; remove what it does not keep unless `dry_run`.
pub fn forget(repo: &Repo, policy: &Policy, host: Option<&str>, dry_run: bool) -> Result<ForgetReport> {
    forget_in(repo, policy, host, None, dry_run)
}

/// [`forget`], only in the group of `host` and `paths` when given (a
/// schedule's retention touches its own snapshots only).
pub fn forget_in(
    repo: &Repo,
    policy: &Policy,
    host: Option<&str>,
    paths: Option<&[String]>,
    dry_run: bool,
) -> Result<ForgetReport> {
    repo.key.need_full("forget snapshots")?;
    if policy.is_empty() {
        return Err(Error::Invalid(
            "a policy that keeps nothing would remove every snapshot: give at least one --keep-* option \
             (to remove a snapshot by name, give its id)"
                .to_string(),
        ));
    }
    let mut groups: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for s in repo.snapshots()? {
        if host.is_some_and(|h| h != s.host) || paths.is_some_and(|p| p != s.paths.as_slice()) {
            continue;
        }
        // A put-only key's snapshots are a group of their own: forged ones
        // cannot push the full key's out of a `--keep-last`.
        let by = s.added_by.as_deref().map(|t| format!(" ({})", crate::repo::added_by_label(t))).unwrap_or_default();
        groups.entry(format!("{} {}{by}", s.host, s.paths.join(","))).or_default().push(Candidate {
            id: s.id.clone(),
            time_ns: s.time_ns,
            tags: s.tags.clone(),
        });
    }
    let mut report = ForgetReport { groups: BTreeMap::new(), removed: Vec::new(), dry_run };
    for (name, group) in groups {
        let decisions = apply(policy, &group);
        for d in decisions.iter().filter(|d| !d.keep) {
            if !dry_run {
                repo.forget(&d.id)?;
            }
            report.removed.push(d.id.clone());
        }
        report.groups.insert(name, decisions);
    }
    Ok(report)
}

/// Remove snapshots by id (unique prefixes).
pub fn forget_ids(repo: &Repo, ids: &[String]) -> Result<Vec<String>> {
    repo.key.need_full("forget snapshots")?;
    let mut out = Vec::new();
    for id in ids {
        let s = repo.snapshot(id)?;
        repo.forget(&s.id)?;
        out.push(s.id);
    }
    Ok(out)
}

/// What `prune` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Objects the remaining snapshots use.
    pub objects_kept: u64,
    /// Objects deleted.
    pub objects_deleted: Vec<String>,
    /// Shard copies queued for deletion on peers.
    pub shards_deleted: u64,
    /// Unused objects younger than the grace period, left for the next prune.
    pub objects_too_young: u64,
    /// Partly used data objects encoded again with only their used part
    /// (before the deletion, which then takes the old ones).
    pub repack: RepackReport,
    /// Why nothing was repacked, when the caller could not (no way to the peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack_skipped: Option<String>,
}

/// How `prune` works.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Leave objects younger than this many seconds (a backup may be saving them).
    pub grace_secs: u64,
    /// Repack a data object kept snapshots use only in part once more than
    /// this percent of it is unused (100: never; 0: any unused byte).
    pub max_unused_pct: u8,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions { grace_secs: 3600, max_unused_pct: DEFAULT_MAX_UNUSED }
    }
}

/// The default repack threshold, percent of an object unused.
pub const DEFAULT_MAX_UNUSED: u8 = 10;

/// `prune` with repacking: data objects kept snapshots use only in part
/// (more than `o.max_unused_pct` percent unused, and older than the grace
/// period) are encoded again with only what is used, under new keys, and
/// the snapshots are rewritten to use the new objects; then every object
/// no snapshot uses is deleted, the old ones with their keys. `net` reads
/// the objects from the peers.
pub async fn prune_with(
    repo: &Repo,
    net: &net::Client,
    o: &PruneOptions,
    now_secs: u64,
    progress: std::sync::Arc<dyn client::Progress>,
) -> Result<PruneReport> {
    repo.key.need_full("prune")?;
    let repack = if o.max_unused_pct < 100 {
        let snaps = repo.snapshots_for_prune()?;
        let eligible: HashSet<String> = repo
            .spn
            .objects(repo.name())?
            .objects
            .into_iter()
            .filter(|x| x.read_key.is_empty() && x.created.saturating_add(o.grace_secs) <= now_secs)
            .map(|x| x.manifest)
            .collect();
        crate::repack::repack(repo, net, &snaps, &eligible, o.max_unused_pct, progress).await?
    } else {
        RepackReport::default()
    };
    let mut report = prune(repo, o.grace_secs, now_secs)?;
    report.repack = repack;
    Ok(report)
}

/// Delete every object no snapshot uses and older than `grace_secs` (no
/// repacking: [`prune_with`] does both).
pub fn prune(repo: &Repo, grace_secs: u64, now_secs: u64) -> Result<PruneReport> {
    repo.key.need_full("prune")?;
    let mut used = HashSet::new();
    for s in repo.snapshots_for_prune()? {
        used.insert(s.tree.manifest.clone());
        used.extend(s.data.iter().map(|d| d.manifest.clone()));
    }
    let mut report = PruneReport::default();
    for o in repo.spn.objects(repo.name())?.objects {
        // Objects the SPN published (releases) are not this repository's to prune.
        if !o.read_key.is_empty() {
            continue;
        }
        if used.contains(&o.manifest) {
            report.objects_kept += 1;
            continue;
        }
        if o.created + grace_secs > now_secs {
            report.objects_too_young += 1;
            continue;
        }
        // The grace checked again where the delete happens: a run that
        // committed this object since the listing keeps it.
        // "Unchanged since listed", by the SPN's own clock.
        match repo.spn.delete_object_older_than(&o.manifest, o.created)? {
            Some(d) => {
                report.shards_deleted += d.shards_deleted;
                report.objects_deleted.push(o.manifest);
            }
            None => report.objects_too_young += 1,
        }
    }
    Ok(report)
}

/// Ask the peers to keep every object a snapshot uses for another window
/// (backup data expires on the peers three months after its last renewal).
/// Every `backup run` with the full key does it.
pub fn renew(repo: &Repo) -> Result<proto::api::Renewed> {
    repo.key.need_full("renew every snapshot (its own runs renew what they save)")?;
    renew_of(repo, &repo.snapshots()?)
}

/// Renew the objects `snaps` use.
pub(crate) fn renew_of(repo: &Repo, snaps: &[crate::repo::Snapshot]) -> Result<proto::api::Renewed> {
    let live: Vec<String> = crate::repo::objects_of(snaps).into_iter().map(|c| c.manifest).collect();
    Ok(repo.spn.renew(&live)?)
}
