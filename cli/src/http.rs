//! The SPN's typed client (`client::Spn`) as the CLI makes it: the address
//! from `--spn`, the token from `--token`, `$IONSHARD_SPN_TOKEN` or a file.

use anyhow::{Context, Result};

pub(crate) use client::Spn;

/// The API token: `--token`, else `$IONSHARD_SPN_TOKEN`, else the file given.
pub(crate) fn token(given: Option<String>, file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(t) = given.or_else(|| std::env::var("IONSHARD_SPN_TOKEN").ok()) {
        return Ok(Some(t.trim().to_string()));
    }
    match file {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading token file {}", f.display()))?
                .trim()
                .to_string(),
        )),
        None => Ok(None),
    }
}

/// The SPN at `url` (from `--spn`), with `token`.
pub(crate) fn spn(url: &str, token: Option<String>) -> Result<Spn> {
    Spn::new(url, token).context("--spn")
}
