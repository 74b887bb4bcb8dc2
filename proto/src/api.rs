//! The request and answer bodies of the SPN's HTTP API, shared by the
//! server and every client: objects and the jobs that publish them,
//! placements, receipts, peers, vendors and their roots, releases,
//! withdrawals, timestamps and tokens.
//!
//! The records the SPN answers with are also what it keeps in its state
//! (JSON in redb), so their serde form is the state's layout too: a field
//! added here must be `#[serde(default)]`, and a change of meaning bumps the
//! state format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One root of a vendor, as the vendor sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoot {
    /// The signed root (JSON text), format 1 or 2.
    pub root: String,
    /// For a format 2 root: its format 1 projection, signed by the same
    /// keys, for devices of releases before timestamps.
    #[serde(default)]
    pub legacy: Option<String>,
}

/// `POST /v1/vendors` (register, once) and `POST /v1/vendors/{vendor}/roots` (rotations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roots {
    /// Roots in version order: all of them from version 1 to register; the
    /// new ones for a rotation.
    pub roots: Vec<NewRoot>,
}

/// What the SPN knows of a vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorInfo {
    /// The vendor.
    pub vendor: String,
    /// Its newest root's version.
    pub root_version: u64,
    /// Its newest root's format (2: with a timestamp key).
    pub root_format: u32,
    /// Its products here.
    pub products: Vec<String>,
}

/// `POST /v1/releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The signed release (JSON text), signed to the threshold of the
    /// vendor's newest root.
    pub release: String,
}

/// `POST /v1/releases/{id}/withdraw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWithdrawal {
    /// The signed withdrawal (JSON text), signed to the root's threshold.
    pub withdrawal: String,
}

/// `POST /v1/timestamps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTimestamp {
    /// The signed timestamp (JSON text), signed by the root's timestamp role.
    pub timestamp: String,
}

/// A release, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInfo {
    /// `product@version`.
    pub id: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Hardware revisions it fits.
    pub hardware: Vec<String>,
    /// Manifest CID.
    pub manifest: String,
    /// Seconds since the epoch.
    pub published: u64,
    /// Withdrawn, and why.
    pub withdrawn: Option<String>,
}

/// `GET /v1/releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseList {
    /// Oldest version first.
    pub releases: Vec<ReleaseInfo>,
}

/// What a tenant's token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenScope {
    /// Everything for its tenant.
    #[default]
    Full,
    /// Add only (a backup host's put-only key): open upload sessions, place
    /// segments, commit them, create records (never replace one), read the
    /// record named `config`, follow its jobs. Never read, list or delete
    /// objects or records.
    Append,
}

impl TokenScope {
    /// Full (the default, left out of the JSON so an SPN of an earlier
    /// release still takes the request).
    pub fn is_full(&self) -> bool {
        *self == TokenScope::Full
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenScope::Full => "full",
            TokenScope::Append => "append",
        })
    }
}

/// `POST /v1/tokens`: the operator issues any; a tenant's full token issues
/// append tokens for its own tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The tenant (vendor) the token acts for: it may publish and read only
    /// that tenant's objects and releases.
    pub tenant: String,
    /// A name for people.
    #[serde(default)]
    pub label: String,
    /// What it may do (an SPN of an earlier release refuses the field, so
    /// it never issues a full token when an append one was asked for).
    #[serde(default, skip_serializing_if = "TokenScope::is_full")]
    pub scope: TokenScope,
}

/// A token just issued: the only time the token itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// Its id (to list and revoke it).
    pub id: String,
    /// The bearer token.
    pub token: String,
    /// Its tenant.
    pub tenant: String,
    /// What it may do.
    #[serde(default)]
    pub scope: TokenScope,
}

/// A token, as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its label.
    pub label: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// When it was revoked.
    pub revoked: Option<u64>,
    /// What it may do.
    #[serde(default)]
    pub scope: TokenScope,
}

/// `GET /v1/tokens`: the operator sees every token, a tenant its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token issued.
    pub tokens: Vec<TokenInfo>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, and what to do.
    pub error: String,
}

/// Where a job is. Kept as these lowercase words, in the state and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted; its upload is being read.
    Queued,
    /// Being encrypted, erasure-coded and scattered.
    Encoding,
    /// Finished: its object is stored ([`JobRecord::result`]).
    Done,
    /// Given up ([`JobRecord::error`] says why); what it had placed is deleted.
    Failed,
}

impl JobState {
    /// Whether the job has ended, one way or the other.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::Queued => "queued",
            JobState::Encoding => "encoding",
            JobState::Done => "done",
            JobState::Failed => "failed",
        })
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Manifest CID.
    pub manifest: String,
    /// Tenant (vendor) it belongs to.
    pub tenant: String,
    /// Product, for firmware (objects of one product share chunks).
    pub product: String,
    /// Read key, hex.
    pub read_key: String,
    /// Object length.
    pub length: u64,
    /// Object BLAKE3, hex.
    pub blake3: String,
    /// Coding.
    pub data_shards: u8,
    /// Coding.
    pub parity_shards: u8,
    /// Segments in the manifest.
    pub segments: u64,
    /// Segments stored for this object (the rest were shared with earlier ones).
    pub new_segments: u64,
    /// Shard bytes stored for this object.
    pub new_shard_bytes: u64,
    /// Seconds since the epoch.
    pub created: u64,
    /// Bumped by every repair that moved one of its shards (0: as published).
    #[serde(default)]
    pub placement_version: u64,
}

/// A job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Id.
    pub id: u64,
    /// `publish`.
    pub kind: String,
    /// The tenant whose object it is (empty in jobs of a format 1 SPN).
    #[serde(default)]
    pub tenant: String,
    /// Where it is.
    pub state: JobState,
    /// Bytes of the object read so far.
    pub bytes_done: u64,
    /// Object length, once known.
    pub bytes_total: u64,
    /// Shards stored with a valid receipt.
    pub shards_placed: u64,
    /// Retries of shards on other peers.
    pub retries: u64,
    /// The object, when done.
    pub result: Option<JobResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since the epoch.
    pub started: u64,
    /// Seconds since the epoch.
    pub finished: Option<u64>,
    /// The append token that opened it (an upload session of a put-only
    /// key): only that token, or a full one, may use or see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
}

/// What a finished publish produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobResult {
    /// Manifest CID.
    pub manifest: String,
    /// Read key, hex.
    pub read_key: String,
    /// Object length.
    pub length: u64,
    /// Object BLAKE3, hex.
    pub blake3: String,
    /// Segments in the manifest.
    pub segments: u64,
    /// Segments stored now (the others were already stored for an earlier release).
    pub new_segments: u64,
    /// Shard bytes stored now (n/k times the new segment bytes).
    pub new_shard_bytes: u64,
    /// Receipts collected now.
    pub receipts: u64,
    /// Distinct peers holding the object.
    pub peers: u64,
    /// Changed chunks given a patch against the product's previous release.
    #[serde(default)]
    pub patches: u64,
    /// Stored bytes of those patches (what devices download instead of the chunks).
    #[serde(default)]
    pub patch_bytes: u64,
    /// Stored bytes of the chunks they stand for.
    #[serde(default)]
    pub patched_chunk_bytes: u64,
    /// Milliseconds the patches took (reading the previous release's
    /// chunks back from the peers, diffing, placing).
    #[serde(default)]
    pub patch_millis: u64,
    /// Why no patches were made, when none were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_patches: Option<String>,
}

/// A peer the SPN has seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer.
    pub peer: String,
    /// Quota.
    pub capacity: u64,
    /// Bytes stored.
    pub used: u64,
    /// Shards stored.
    pub shards: u64,
    /// Seconds since the epoch when it last answered.
    pub last_seen: u64,
    /// Failed requests since it last answered.
    pub failures: u64,
    /// Seconds since the epoch when first seen (0 in records of a format 1 SPN).
    #[serde(default)]
    pub first_seen: u64,
    /// This SPN has placed a shard on it (such a peer is never forgotten:
    /// repair and audits need its record, lost or not).
    #[serde(default)]
    pub held: bool,
    /// The IP address this SPN saw its last direct connection come from
    /// (empty: relayed only, or not seen yet). Never what the peer claims.
    #[serde(default)]
    pub address: String,
    /// Reached only through a relay at its last heartbeat.
    #[serde(default)]
    pub relayed: bool,
    /// Region, set by the SPN's operator (empty: not set).
    #[serde(default)]
    pub region: String,
    /// Who runs it, set by the SPN's operator (empty: its household stands for it).
    #[serde(default)]
    pub operator: String,
    /// The last 64 heartbeats, newest in bit 0: 1 answered, 0 did not.
    #[serde(default)]
    pub window: u64,
    /// How many bits of `window` are heartbeats (at most 64).
    #[serde(default)]
    pub window_len: u32,
    /// Audits passed.
    #[serde(default)]
    pub audits_passed: u64,
    /// Audits failed.
    #[serde(default)]
    pub audits_failed: u64,
    /// The last 16 audits, newest in bit 0: 1 failed.
    #[serde(default)]
    pub audit_window: u32,
    /// Seconds since the epoch of its last audit (0: never).
    #[serde(default)]
    pub last_audit: u64,
    /// Shard bytes of ours it held at its last passed audit.
    #[serde(default)]
    pub proven_bytes: u64,
    /// Why it gets no more shards and its shards count as lost, for good.
    #[serde(default)]
    pub disqualified: Option<String>,
    /// Since when it has been lost (unseen past the grace period).
    #[serde(default)]
    pub lost_since: Option<u64>,
    /// When it came back after being lost.
    #[serde(default)]
    pub returned: Option<u64>,
    /// Its owner is retiring it: its shards are moved away, it gets no new ones.
    #[serde(default)]
    pub retiring: bool,
    /// What the SPN makes of it now: `live`, `offline` (missed heartbeats,
    /// within the grace period), `lost`, `returning`, `retiring`, `retired`
    /// or `disqualified`.
    #[serde(default)]
    pub status: String,
}

impl PeerRecord {
    /// A peer first seen at `now`.
    pub fn new(peer: String, now: u64) -> PeerRecord {
        PeerRecord {
            peer,
            capacity: 0,
            used: 0,
            shards: 0,
            last_seen: now,
            failures: 0,
            first_seen: now,
            held: false,
            address: String::new(),
            relayed: false,
            region: String::new(),
            operator: String::new(),
            window: 0,
            window_len: 0,
            audits_passed: 0,
            audits_failed: 0,
            audit_window: 0,
            last_audit: 0,
            proven_bytes: 0,
            disqualified: None,
            lost_since: None,
            returned: None,
            retiring: false,
            status: String::new(),
        }
    }

    /// Share of the heartbeats in the window it answered (1.0 before any).
    pub fn uptime(&self) -> f64 {
        if self.window_len == 0 {
            return 1.0;
        }
        let n = self.window_len.min(64);
        let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        f64::from((self.window & mask).count_ones()) / f64::from(n)
    }

    /// Failed audits among the last 16.
    pub fn recent_audit_failures(&self) -> u32 {
        self.audit_window.count_ones()
    }
}

/// `POST /v1/peers/{peer}/labels` (operator only): failure-domain labels
/// only the operator may set (a peer's own claims are not trusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerLabels {
    /// Region (empty clears it).
    #[serde(default)]
    pub region: Option<String>,
    /// Who runs it (empty clears it).
    #[serde(default)]
    pub operator: Option<String>,
}

/// One object's durability, in Storj's four numbers and what they are now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectHealth {
    /// Manifest CID.
    pub manifest: String,
    /// Tenant.
    pub tenant: String,
    /// Product.
    pub product: String,
    /// k: shards any rebuild needs.
    pub needed: u8,
    /// Repair starts when a segment's healthy shards fall to this.
    pub repair_threshold: u8,
    /// A repair rebuilds up to this many healthy shards.
    pub success_threshold: u8,
    /// n: shards per segment.
    pub total: u8,
    /// Segments.
    pub segments: u64,
    /// The lowest healthy shard count of any segment.
    pub lowest_healthy: u64,
    /// Segments at or below the repair threshold (waiting for repair).
    pub at_risk: u64,
    /// Segments below k: unreadable until lost peers return.
    pub unreadable: u64,
    /// Bumped by every repair that moved a shard.
    pub placement_version: u64,
}

/// `GET /v1/durability[?object=CID]` (operator only): what `ionshard spn health` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durability {
    /// Per object (one, if asked for).
    pub objects: Vec<ObjectHealth>,
    /// Peers answering heartbeats.
    pub peers_live: u64,
    /// Peers unseen past the grace period.
    pub peers_lost: u64,
    /// Peers disqualified by failed audits.
    pub peers_disqualified: u64,
    /// Segments waiting for repair.
    pub repair_queue: u64,
    /// Shards rebuilt and placed since the SPN's state was made.
    pub shards_repaired: u64,
    /// Bytes a repair read and wrote (shards fetched plus shards placed).
    pub repair_bytes: u64,
    /// Shard bytes that had to be rebuilt (their holders lost, disqualified,
    /// retiring or failing an audit of them).
    pub bytes_lost: u64,
    /// Bytes audits moved (blocks and proofs) since the SPN's state was made.
    #[serde(default)]
    pub audit_bytes: u64,
    /// Audits passed.
    pub audits_passed: u64,
    /// Audits failed.
    pub audits_failed: u64,
    /// Shard bytes of ours the peers hold.
    pub stored_bytes: u64,
    /// Audit traffic per day at the configured rate and block count, bytes.
    pub audit_bytes_per_day: u64,
    /// `audit_bytes_per_day` as a share of `stored_bytes` (the goal is under 1%).
    pub audit_share_per_day: f64,
    /// The same share at the default settings (what a production SPN pays).
    #[serde(default)]
    pub audit_share_at_defaults: f64,
    /// The settings these numbers come from.
    pub settings: DurabilitySettings,
}

/// The SPN's durability settings, as `ionshard spn health` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurabilitySettings {
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds unseen before a peer counts as lost.
    pub grace_secs: u64,
    /// Mean seconds between two audits of one peer.
    pub audit_every_secs: u64,
    /// Blocks of 4 KiB per audit (at most).
    pub audit_blocks: u32,
    /// Failed audits among the last 16 that disqualify a peer.
    pub disqualify_after: u32,
    /// Repair bandwidth cap, bytes per second.
    pub repair_rate: u64,
}

/// Which peers hold which shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Peer ids.
    pub peers: Vec<String>,
    /// Shard CID → indices into `peers`.
    pub shards: BTreeMap<String, Vec<u32>>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always true in an answer (the SPN answers only when it runs).
    pub ok: bool,
    /// The SPN's own peer id.
    pub peer_id: String,
    /// Peers that answered lately.
    pub live_peers: u64,
}

/// `POST /v1/objects`: the upload was accepted, and a job publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The job, to follow at `GET /v1/jobs/{job}`.
    pub job: u64,
    /// Bytes of the upload read.
    pub bytes: u64,
}

/// `GET /v1/objects/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object.
    pub object: ObjectRecord,
    /// Where its shards are.
    pub placement: Placement,
}

/// `GET /v1/objects/{cid}/receipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptList {
    /// The object's manifest CID.
    pub object: String,
    /// Every receipt of its shards, in the wire encoding, hex.
    pub receipts: Vec<String>,
}

/// `GET /v1/peers` (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// Every peer the SPN has seen.
    pub peers: Vec<PeerRecord>,
}

/// `POST /v1/encoded?tenant=T`: an upload session for objects the client
/// encoded itself (a backup host: the SPN never sees a key or a plaintext
/// byte). Segments are placed into it one by one, then the manifests that
/// use them are committed together; a session that fails or is abandoned
/// has its shards deleted, as a failed publish does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedSession {
    /// The job that tracks the session (`GET /v1/jobs/{job}`).
    pub job: u64,
    /// The SPN computes parity: a segment may be sent as its k data shards
    /// alone (`PUT /v1/encoded/{job}/segments?len=L&k=K&n=N`, n at most
    /// 2k), half the upload at 10+10. Absent (false) from an SPN of an earlier release,
    /// whose session wants all n shards.
    #[serde(default)]
    pub parity_here: bool,
}

/// `PUT /v1/encoded/{job}/segments?len=L&k=K` (the body: the segment's n
/// shards back to back, data first), or `…&n=N` where the session says
/// [`EncodedSession::parity_here`] (the body: the k data shards; the SPN
/// computes the n − k parity shards): placed, each shard with a receipt.
/// The client compares `segment` with its own segment's CID, which names
/// every shard, parity too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlaced {
    /// The segment's CID (as a manifest names it).
    pub segment: String,
    /// Shards in it.
    pub shards: u64,
    /// Receipts collected for it now (0 when it was held already).
    pub receipts: u64,
    /// Every shard already had a holder from this session (a resumed run).
    pub held_already: bool,
}

/// `POST /v1/encoded/{job}/held`: which of these shards the session has placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCids {
    /// Shard CIDs.
    pub shards: Vec<String>,
}

/// The answer to [`ShardCids`]: one flag per shard, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// True where the shard has a holder that this session placed.
    pub held: Vec<bool>,
}

/// `POST /v1/encoded/{job}/commit`: the manifests whose segments the
/// session placed (or the tenant's earlier objects hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedCommit {
    /// Manifests, base64 (standard, padded).
    pub manifests: Vec<String>,
    /// Objects of the tenant that what is committed goes on using (a
    /// snapshot's unchanged files in earlier runs' objects): each must
    /// exist, and counts as used now (a prune's grace starts again).
    #[serde(default)]
    pub uses: Vec<String>,
}

/// What a commit saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The manifest CIDs, now objects of the tenant.
    pub objects: Vec<String>,
    /// Shards the session placed that no committed manifest uses (a run
    /// that changed between attempts), queued for deletion.
    pub shards_dropped: u64,
}

/// `POST /v1/objects/renew`: keep these client-encoded objects on the peers
/// for another window (backups expire unless renewed; at most
/// [`MAX_RENEW`] objects a request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewObjects {
    /// Manifest CIDs of the tenant's encoded objects.
    pub objects: Vec<String>,
}

/// Most objects in one [`RenewObjects`].
pub const MAX_RENEW: usize = 1024;

/// What a renewal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed {
    /// The shards are now kept at least until (seconds since the epoch).
    pub until: u64,
    /// Shard copies renewed now.
    pub renewed: u64,
    /// Copies renewed recently enough that they were left as they are.
    pub fresh: u64,
    /// Copies a peer did not renew (gone, or of an earlier release): they
    /// expire there, and repair places them again while the object lives.
    pub failed: u64,
    /// The first few failures, why.
    #[serde(default)]
    pub failures: Vec<String>,
    /// Objects named that are not this tenant's backup objects (pruned
    /// meanwhile, or releases): left alone.
    #[serde(default)]
    pub missing: u64,
}

/// `DELETE /v1/objects/{cid}` (a tenant's own encoded objects): gone from
/// the SPN, and every shard no other object uses queued for deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The object.
    pub object: String,
    /// Shards queued for deletion on their peers.
    pub shards_deleted: u64,
}

/// `GET /v1/objects/{cid}/deletion` (the deleting tenant's): what the
/// peers acknowledged of a deleted object's shards. An owner's deletion
/// attestation on the ledger names the Merkle root of `acks`
/// (`ionshard ledger tx deletion --spn`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionAcks {
    /// The object.
    pub object: String,
    /// Its tenant.
    pub tenant: String,
    /// When the SPN deleted it (seconds since the epoch).
    pub deleted_at: u64,
    /// Shard deletes queued for it at the time (one per shard and holder).
    pub queued: u64,
    /// Shard deletes still waiting for their peer's answer.
    pub pending: u64,
    /// The peers' signed acknowledgements (hex of [`crate::DeleteAck`]'s
    /// bytes), sorted.
    pub acks: Vec<String>,
    /// Deleted by peers of an earlier release, which sign nothing: `SHARD/PEER`.
    /// (A delete they refused is listed in `refused`.)
    #[serde(default)]
    pub unsigned: Vec<String>,
    /// Given up after 30 days without an answer: `SHARD/PEER: last error`.
    #[serde(default)]
    pub gave_up: Vec<String>,
    /// Refused by the peer (this SPN's copy is not there: not its owner's,
    /// or no store): `SHARD/PEER: why`.
    #[serde(default)]
    pub refused: Vec<String>,
}

/// `GET /v1/objects?tenant=T`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectList {
    /// The tenant's objects, oldest first.
    pub objects: Vec<ObjectRecord>,
}

/// A small opaque record a tenant keeps on the SPN (a backup repository's
/// encrypted snapshot records and key envelopes): `PUT`, `GET` and
/// `DELETE /v1/records/{tenant}/{name}`, listed by `GET /v1/records/{tenant}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    /// Its name.
    pub name: String,
    /// Its length.
    pub len: u64,
    /// When the SPN saved it, seconds since the epoch (0: before this
    /// release kept it).
    #[serde(default)]
    pub created: u64,
    /// The append token that wrote it (a put-only key's), if one did: its
    /// writer could not read the repository, so a reader weighs it apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// `GET /v1/records/{tenant}[?prefix=P]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordList {
    /// Records, by name.
    pub records: Vec<RecordInfo>,
}

/// The most schedules one host report may list.
pub const MAX_FLEET_SCHEDULES: usize = 256;
/// The most hosts a tenant's fleet may hold.
pub const MAX_FLEET_HOSTS: usize = 4096;
/// The most run requests waiting for one host.
pub const MAX_RUN_REQUESTS: usize = 64;

/// What a backup host's agent tells the SPN after each pass over its
/// schedules (`PUT /v1/fleet/{tenant}/hosts/{host}`): enough for a
/// business system to watch a fleet, nothing of what is backed up. The
/// paths and any error's text are sealed to the repository's key
/// (`sealed`): an error may name a local path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The agent's program and version (`ionshard 0.1.0`).
    pub agent: String,
    /// The host's clock when it reported, seconds since the epoch.
    pub reported_at: i64,
    /// Its schedules for this tenant.
    pub schedules: Vec<ScheduleReport>,
    /// Run requests it has carried out since its last report (their ids):
    /// the SPN drops them from the queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handled: Vec<u64>,
}

/// One schedule of a host, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleReport {
    /// Its name.
    pub name: String,
    /// Its cron pattern (in the host's zone).
    pub cron: String,
    /// `ok` (the last run saved a snapshot), `retrying` (it failed and is
    /// retried), `failed` (retries used up, waiting for the next time),
    /// `never-run`, or `error` (the schedule itself is wrong).
    pub state: String,
    /// The next run, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
    /// The last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RunSummary>,
    /// The last successful run's snapshot and when it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<(String, i64)>,
    /// JSON `{"paths": [...], "error": ..., "warning": ...}` sealed to the
    /// repository's public key, base64: the full key's holder opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// One attempt at a schedule's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The slot it was for (a cron time, or when a request asked for it).
    pub slot: i64,
    /// When it started and finished, seconds since the epoch.
    pub started: i64,
    /// When it finished.
    pub finished: i64,
    /// Its attempt number at this slot (1 the first).
    pub attempt: u32,
    /// Whether it saved a snapshot.
    pub ok: bool,
    /// The snapshot it saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Whether something after the snapshot failed (retention, prune, renewal).
    #[serde(default)]
    pub warning: bool,
}

/// A host as the SPN keeps it: `GET /v1/fleet/{tenant}/hosts[/{host}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host's name.
    pub host: String,
    /// Its last report (None: a run was requested before it ever reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HostReport>,
    /// When the SPN received that report, by the SPN's clock.
    #[serde(default)]
    pub received: u64,
    /// The append token that first reported for this host, if one did: only
    /// it (or a full token) may report for it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
    /// Run requests not yet carried out.
    #[serde(default)]
    pub pending: Vec<RunRequest>,
}

/// `GET /v1/fleet/{tenant}/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    /// The hosts, by name.
    pub hosts: Vec<HostInfo>,
}

/// `POST /v1/fleet/{tenant}/hosts/{host}/runs`: ask the host's agent to run
/// a schedule now (all of its schedules for the tenant when none is named).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRunRequest {
    /// The schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// A run request waiting for its host's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Its id.
    pub id: u64,
    /// The schedule (None: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// When it was asked for, by the SPN's clock.
    pub requested: u64,
}

/// `GET /v1/fleet/{tenant}/hosts/{host}/runs`: what the agent should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequests {
    /// Oldest first.
    pub requests: Vec<RunRequest>,
}

/// A batch of storage receipts whose Merkle root the SPN anchors on the
/// ledger (`GET /v1/ledger/batches`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnchorBatch {
    /// The batch's id.
    pub id: u64,
    /// What it holds: empty for storage receipts, `audits` for the SPN's
    /// audit results, `deletions` for peers' signed delete acknowledgements.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its Merkle root, hex.
    pub root: String,
    /// Receipts in it.
    pub count: u64,
    /// Shard bytes its receipts speak for.
    pub bytes: u64,
    /// When it was made (seconds since the epoch).
    pub created: u64,
    /// The anchoring transaction, hex of its bytes, once signed.
    pub tx: Option<String>,
    /// The block that holds it, once final.
    pub height: Option<u64>,
    /// Its index there.
    pub index: Option<u32>,
    /// The points transactions crediting the batch's peers with the
    /// byte-hours their receipts promise (hex of their bytes, at most 24
    /// peers each), once the batch is final.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<String>,
    /// Every points transaction is on the chain.
    #[serde(default)]
    pub credited: bool,
}

/// The SPN's batches (`GET /v1/ledger/batches`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnchorBatches {
    /// Receipts waiting for a batch.
    pub queued: u64,
    /// The newest batches, newest first (at most 100).
    pub batches: Vec<AnchorBatch>,
}

/// The proof that a storage receipt is anchored on the ledger
/// (`GET /v1/ledger/receipts/{shard}/{peer}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptProof {
    /// The batch.
    pub batch: u64,
    /// The block that holds the batch's root.
    pub height: u64,
    /// The proof's bytes, hex (`ionshard ledger verify` checks them).
    pub proof: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state keeps jobs as JSON: the enum must write the words earlier
    /// releases wrote, and read them back.
    #[test]
    fn job_states_are_the_words_the_state_has_always_held() {
        for (state, word) in [
            (JobState::Queued, "queued"),
            (JobState::Encoding, "encoding"),
            (JobState::Done, "done"),
            (JobState::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_string(&state).expect("encode"), format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<JobState>(&format!("\"{word}\"")).expect("decode"), state);
            assert_eq!(state.to_string(), word);
        }
        assert!(serde_json::from_str::<JobState>("\"running\"").is_err());
        // A job record as a format 2 SPN stored it.
        let stored = r#"{"id":7,"kind":"publish","tenant":"acme","state":"encoding","bytes_done":5,"bytes_total":9,
            "shards_placed":0,"retries":0,"result":null,"error":null,"started":1,"finished":null}"#;
        let j: JobRecord = serde_json::from_str(stored).expect("a stored job");
        assert_eq!(j.state, JobState::Encoding);
        assert!(!j.state.is_finished());
    }

    /// An SPN of an earlier release answers a session without
    /// `parity_here`: its client must then send all n shards. This
    /// release's answer says it, and an earlier client ignores the field.
    #[test]
    fn a_session_from_an_earlier_spn_wants_every_shard() {
        let old: EncodedSession = serde_json::from_str(r#"{"job":5}"#).expect("an earlier SPN's session");
        assert_eq!(old, EncodedSession { job: 5, parity_here: false });
        let new = serde_json::to_string(&EncodedSession { job: 6, parity_here: true }).expect("encode");
        assert_eq!(new, r#"{"job":6,"parity_here":true}"#);
    }
}
