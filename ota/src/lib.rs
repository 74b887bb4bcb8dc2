//! Over-the-air releases: signed release metadata in the shape of The Update
//! Framework (vendor roots with a signature threshold, root rotation, expiry,
//! rollback and hardware checks, size limits), release bundles, the device
//! fetcher (ranged, verified, resumable, delta-aware, long-tail tolerant) and
//! the hand-off to the installer.
//!
//! Pure checks live in [`meta`]; device state does I/O; the image comes
//! through the one fetcher (`client::fetch`); [`update`] is the device's
//! whole update as one library call.

mod bundle;
mod device;
mod error;
mod fetch;
pub mod meta;
mod publish;
mod update;

pub use bundle::{
    Bundle, FORMAT as BUNDLE_FORMAT, LEGACY_FORMAT as LEGACY_BUNDLE_FORMAT, MAX_BUNDLE, ManifestDelta, Placement,
    TIMESTAMP_FORMAT as TIMESTAMP_BUNDLE_FORMAT,
};
pub use client::{Dropped, FetchOptions, FetchReport, PeerUse, Progress, part_path, write_atomic};
pub use device::{Checked, Device, Installed, Want, run_installer};
pub use error::{Error, Result};
pub use fetch::fetch;
pub use publish::{Prepared, PublishOptions, publish, served_bundle, submit};
pub use update::{
    Downloads, Notes, ProductKey, SeedChoice, Source, Update, UpdateOptions, UpdateReport, bundle_or_older, update,
};
