//! Business backups on ionshard: repositories, snapshots of file trees,
//! restores.
//!
//! Everything is encoded on the business's own host: files are read,
//! chunked, compressed, encrypted under random keys and erasure-coded here,
//! and the SPN receives only ciphertext segments to place on peers
//! (`client::Spn::put_segment`) and sealed records it cannot open. A
//! repository is a tenant of the SPN with its own key ([`RepoKey`]); a
//! snapshot is a tree object (metadata) plus data objects (the bytes of
//! the files, many files per segment), and a record sealed to the
//! repository's key that holds the objects' read keys.
//!
//! This crate must never send a key or a plaintext byte to the SPN.

mod check;
mod error;
mod fleet;
mod key;
mod policy;
mod repack;
mod repo;
mod restore;
mod run;
mod scan;
mod schedule;
mod tree;
mod upkeep;
mod xattr;

pub use check::{CheckReport, check};
pub use error::{Error, Result};
pub use fleet::{Detail, host_report, open_detail, state_of};
pub use key::{RepoKey, seal};
pub use policy::{Candidate, Decision, Policy, Within, apply, utc};
pub use repack::{RepackReport, Repacked};
pub use repo::{
    BadRecord, ObjectCap, REPO_FORMAT, Repo, RunStats, SNAPSHOT_FORMAT, Skipped, Snapshot, UNMARKED, added_by_label,
};
pub use restore::{RestoreOptions, RestoreReport, restore};
pub use run::{RunOptions, RunReport, run};
pub use scan::{ScanOptions, absolute};
pub use schedule::{
    Attempt, Keep, MAX_ATTEMPTS, Plan, Retry, Schedule, Status, load_schedules, load_status, next_run, plan, record,
    record_requested, save_schedules, save_status,
};
pub use tree::{Change, DataRef, Entry, Kind, TREE_FORMAT, Tree, diff};
pub use upkeep::{
    DEFAULT_MAX_UNUSED, ForgetReport, PruneOptions, PruneReport, forget, forget_ids, forget_in, prune, prune_with,
    renew,
};
pub use xattr::Xattr;
