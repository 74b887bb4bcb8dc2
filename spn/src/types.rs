//! The request and answer bodies of the SPN's HTTP API routes this release
//! added (vendors, releases by hardware, withdrawals, timestamps, tokens),
//! shared by the server and its clients.

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

/// `POST /v1/tokens` (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The tenant (vendor) the token acts for: it may publish and read only
    /// that tenant's objects and releases.
    pub tenant: String,
    /// A name for people.
    #[serde(default)]
    pub label: String,
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
}

/// `GET /v1/tokens`.
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
