//! Over-the-air releases: signed release metadata in the shape of The Update
//! Framework (vendor roots with a signature threshold, root rotation, expiry,
//! rollback and hardware checks, size limits), release bundles, the device
//! fetcher (ranged, verified, resumable, delta-aware, long-tail tolerant) and
//! the hand-off to the installer.
//!
//! Pure checks live in [`meta`]; the fetcher and device state do I/O.

mod bundle;
mod device;
mod error;
mod fetch;
pub mod meta;

pub use bundle::{Bundle, FORMAT as BUNDLE_FORMAT, LEGACY_FORMAT as LEGACY_BUNDLE_FORMAT, MAX_BUNDLE, Placement};
pub use device::{Checked, Device, Installed, Want, run_installer, write_atomic};
pub use error::{Error, Result};
pub use fetch::{Dropped, FetchOptions, FetchReport, PeerUse, fetch, part_path};
