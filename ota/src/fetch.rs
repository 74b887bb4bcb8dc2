//! A release's image from the network: the release names what the fetch
//! must end with, and the one fetcher (`client::fetch`) does the rest.

use std::sync::Arc;

use client::{Expect, FetchOptions, FetchReport, Progress};
use net::Client;

use crate::bundle::Placement;
use crate::error::{Error, Result};
use crate::meta::{Release, unhex};

/// Fetch the image of a checked `release`: `manifest` reads the manifest's
/// bytes (from the bundle), `placement` says which peers hold which shards.
pub async fn fetch(
    client: &Client,
    manifest: impl std::io::Read + Send,
    placement: Placement,
    release: &Release,
    read_key: [u8; 32],
    opts: &FetchOptions,
    progress: Arc<dyn Progress>,
) -> Result<FetchReport> {
    let expect = Expect {
        label: release.id(),
        manifest: release.manifest.parse().map_err(|e| Error::Malformed(format!("release manifest CID: {e}")))?,
        length: release.length,
        blake3: unhex(&release.blake3, "image hash")?
            .try_into()
            .map_err(|_| Error::Malformed("the release's image hash is not 32 bytes".to_string()))?,
    };
    client::fetch(client, manifest, placement, &expect, read_key, opts, progress).await.map_err(|e| match e {
        // Said as a device user knows it: the release's image.
        client::Error::Mismatch { got_len, got_hash, want_len, want_hash, .. } => Error::ImageMismatch(format!(
            "the manifest describes {got_len} bytes with hash {got_hash}, the release {want_len} bytes with hash {want_hash}"
        )),
        other => other.into(),
    })
}
