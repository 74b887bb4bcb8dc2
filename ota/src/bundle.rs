//! A release bundle: everything a device needs to fetch one release, in one
//! JSON file or HTTP answer.
//!
//! Only the signed release (and roots, and the timestamp) are trusted, and
//! only after checking; the manifest is checked against the CID the release
//! names; the placement and bootstrap addresses are hints (a wrong hint costs
//! time, never correctness: every byte is verified against a CID).
//!
//! ```text
//! format 1: { "format": 1, "release", "roots", "manifest", "placement", "bootstrap" }
//! format 2: { "format": 2, "release", "roots", "timestamp", "manifest", "placement", "bootstrap" }
//! format 3: { "format": 3, "release", "roots", "timestamp", "manifest", "placement", "bootstrap", "placement_from" }
//! format 4: format 3's fields, then "patches"?, "manifest_delta"?
//! ```
//!
//! Format 4 (this release) adds, both optional and both checked against the
//! signed manifest CID before use: `patches`, the release's patch table
//! (base64, sealed with its read key: which changed chunks have a patch
//! against chunks of the previous release, and where the patches lie; see
//! `chunker::PatchTable`), and `manifest_delta` (`{"base": CID, "delta":
//! base64}`), the manifest as a delta against the manifest of the release
//! the device said it has (`?base=CID`), with `manifest` then empty. A
//! device that cannot use the delta asks again without `base`. SPNs serve
//! format 3 to devices that ask for it (those of the previous release
//! refuse unknown fields).
//!
//! Format 3 (this release) adds `placement_from`: where to ask for the
//! shards' *current* placement (an absolute `http(s)://` URL, or a path on
//! the SPN that served the bundle), because repair moves shards after a
//! bundle was made: a fetcher whose peers for a shard are all gone asks
//! there. It is a hint like the placement. SPNs serve format 2 to devices
//! that ask for it (those of the previous release refuse unknown fields).
//!
//! Format 2 adds `timestamp` (the vendor's signed statement of
//! the newest release per hardware, or null) and carries format 2 roots
//! (with the timestamp role) from version 1 on; format 1 carries format 1
//! roots after version 1 and is what devices of earlier releases read (they
//! refuse unknown fields). A reader takes the fields in this order: the
//! signed parts are checked *before* the manifest (the part that grows with
//! the image) is read, so a forged release costs a device its few KB.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest bundle read, in bytes (the manifest of an image of tens of GiB).
pub const MAX_BUNDLE: usize = 128 << 20;

/// Bytes of a bundle outside its manifest (release, roots, placement,
/// bootstrap): the placement of a 30 GiB image is about 4 MB. What a bundle
/// can make a device hold is bounded by this, not by [`MAX_BUNDLE`].
const MAX_BUNDLE_REST: u64 = 16 << 20;

/// A reader that fails, saying so, once more than [`MAX_BUNDLE`] bytes were
/// read, or more than [`MAX_BUNDLE_REST`] outside the stretch marked
/// `exempt` (the manifest, which goes to disk).
struct Budget<R> {
    inner: R,
    total: u64,
    rest: u64,
    exempt: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: std::io::Read> std::io::Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)? as u64;
        let over = |what: String| std::io::Error::other(format!("over {what}: refused"));
        self.total = self.total.checked_sub(n).ok_or_else(|| over(format!("{} MiB", MAX_BUNDLE >> 20)))?;
        if !self.exempt.get() {
            self.rest = self.rest.checked_sub(n).ok_or_else(|| {
                over(format!("{} MiB outside the manifest (a placement is a few MB)", MAX_BUNDLE_REST >> 20))
            })?;
        }
        Ok(n as usize)
    }
}

// A signed text, read through a cap: a bundle cannot make us hold more.
fn text(json: &mut struson::reader::JsonStreamReader<impl std::io::Read>, what: &str) -> Result<String> {
    use std::io::Read;
    use struson::reader::JsonReader;
    let mut out = String::new();
    let cap = crate::meta::MAX_METADATA as u64;
    json.next_string_reader()
        .map_err(|e| Error::Malformed(format!("release bundle {what}: {e}")))?
        .take(cap + 1)
        .read_to_string(&mut out)
        .map_err(|e| Error::Malformed(format!("release bundle {what}: {e}")))?;
    if out.len() as u64 > cap {
        return Err(Error::TooLarge { what: format!("bundle {what}"), len: out.len() as u64, limit: cap });
    }
    Ok(out)
}

/// The roots of a bundle: at most 1000 signed texts.
fn roots(json: &mut struson::reader::JsonStreamReader<impl std::io::Read>) -> Result<Vec<String>> {
    use struson::reader::JsonReader;
    let bad = |e: &dyn std::fmt::Display| Error::Malformed(format!("release bundle roots: {e}"));
    let mut roots = Vec::new();
    json.begin_array().map_err(|e| bad(&e))?;
    while json.has_next().map_err(|e| bad(&e))? {
        if roots.len() >= 1000 {
            return Err(Error::Malformed("release bundle: over 1000 roots".to_string()));
        }
        roots.push(text(json, "root")?);
    }
    json.end_array().map_err(|e| bad(&e))?;
    Ok(roots)
}

pub use proto::api::Placement;

/// The bundle format this build writes for devices of this release.
pub const FORMAT: u32 = 4;

/// The format of the previous release (no patches, no manifest delta).
pub(crate) const PLACEMENT_FROM_FORMAT: u32 = 3;

/// Longest manifest delta or patch table read (base64), in bytes.
const MAX_DELTA_FIELD: usize = 12 << 20;

/// A manifest as a delta against another (format 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDelta {
    /// The CID of the manifest it applies to (the device's installed release's).
    pub base: String,
    /// The delta (see `chunker::apply_manifest_delta`), base64.
    pub delta: String,
}

/// The first format with a timestamp (what devices of the previous release read).
pub const TIMESTAMP_FORMAT: u32 = 2;

/// Longest `placement_from` read.
const MAX_PLACEMENT_FROM: usize = 2048;

/// The bundle format devices of releases before timestamps read.
pub const LEGACY_FORMAT: u32 = 1;

/// One release, ready for a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Format version: [`FORMAT`] or [`LEGACY_FORMAT`].
    pub format: u32,
    /// The signed release, exactly as signed (JSON text).
    pub release: String,
    /// Signed roots, oldest first (JSON texts), so a device with an older
    /// root can follow rotations: in format 1, format 1 roots after version
    /// 1; in format 2, format 2 roots (and any format 1 ones before the
    /// vendor had a timestamp key) from version 1.
    pub roots: Vec<String>,
    /// The vendor's newest timestamp of the product (format 2; absent in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The manifest (CBOR), base64.
    pub manifest: String,
    /// Where the shards are.
    pub placement: Placement,
    /// Bootstrap addresses to join the network through.
    pub bootstrap: Vec<String>,
    /// Where to ask for the current placement (format 3): an absolute
    /// `http(s)://` URL, or a path on the SPN the bundle came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_from: Option<String>,
    /// The release's patch table, sealed, base64 (format 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<String>,
    /// The manifest as a delta against the device's (format 4; `manifest` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_delta: Option<ManifestDelta>,
}

impl Bundle {
    /// Read a bundle as it streams in (a file, an HTTP answer), writing its
    /// manifest, decoded, to `manifest_out` instead of holding it: the
    /// manifest is the one part that grows with the image (about 3.5 MB of
    /// base64 per GiB). `check` sees the bundle's signed parts (format,
    /// release, roots, timestamp) before a byte of the manifest is read, and
    /// stops the read by failing. Returns the bundle, with `manifest` empty,
    /// and the manifest's length. At most [`MAX_BUNDLE`] bytes are read; the
    /// signed parts are bounded by [`crate::meta::MAX_METADATA`] each.
    pub fn read_streaming(
        reader: impl std::io::Read,
        manifest_out: &mut dyn std::io::Write,
        check: &mut dyn FnMut(&Bundle) -> Result<()>,
    ) -> Result<(Bundle, u64)> {
        use struson::reader::{JsonReader, JsonStreamReader};
        let bad = |e: &dyn std::fmt::Display| Error::Malformed(format!("release bundle: {e}"));
        let exempt = std::rc::Rc::new(std::cell::Cell::new(false));
        let budget = Budget { inner: reader, total: MAX_BUNDLE as u64, rest: MAX_BUNDLE_REST, exempt: exempt.clone() };
        let mut json = JsonStreamReader::new(budget);
        let mut bundle = Bundle {
            format: 0,
            release: String::new(),
            roots: Vec::new(),
            timestamp: None,
            manifest: String::new(),
            placement: Placement::default(),
            bootstrap: Vec::new(),
            placement_from: None,
            patches: None,
            manifest_delta: None,
        };
        // The fields seen, to hold the reader to the order the writer keeps.
        let mut seen: Vec<String> = Vec::new();
        let mut manifest_len = None;
        json.begin_object().map_err(|e| bad(&e))?;
        while json.has_next().map_err(|e| bad(&e))? {
            let name = json.next_name_owned().map_err(|e| bad(&e))?;
            if seen.contains(&name) {
                return Err(Error::Malformed(format!("release bundle: two {name:?} fields")));
            }
            seen.push(name.clone());
            match name.as_str() {
                "format" => {
                    bundle.format = json.next_number::<u32>().map_err(|e| bad(&e))?.map_err(|e| bad(&e))?;
                    if !(LEGACY_FORMAT..=FORMAT).contains(&bundle.format) {
                        return Err(Error::Malformed(format!(
                            "release bundle format {} (this build reads {LEGACY_FORMAT} to {FORMAT})",
                            bundle.format
                        )));
                    }
                }
                "release" => bundle.release = text(&mut json, "release")?,
                "timestamp" if bundle.format == LEGACY_FORMAT => {
                    return Err(Error::Malformed("release bundle: a timestamp in format 1".to_string()));
                }
                "timestamp" if manifest_len.is_some() => {
                    return Err(Error::Malformed(
                        "release bundle: the timestamp comes after the manifest (signed parts come first)".to_string(),
                    ));
                }
                "timestamp" => {
                    if json.peek().map_err(|e| bad(&e))? == struson::reader::ValueType::Null {
                        json.next_null().map_err(|e| bad(&e))?;
                    } else {
                        bundle.timestamp = Some(text(&mut json, "timestamp")?);
                    }
                }
                "roots" => bundle.roots = roots(&mut json)?,
                "manifest" => {
                    // Everything signed comes first, and is checked before
                    // the part that grows with the image is read.
                    if let Some(missing) = ["format", "release", "roots"].iter().find(|f| !seen.iter().any(|s| s == *f))
                    {
                        return Err(Error::Malformed(format!(
                            "release bundle: the manifest comes before {missing:?} (signed parts come first)"
                        )));
                    }
                    if bundle.release.is_empty() {
                        return Err(Error::Malformed("release bundle: no release".to_string()));
                    }
                    check(&bundle)?;
                    exempt.set(true);
                    let b64 = json.next_string_reader().map_err(|e| bad(&e))?;
                    let mut decoder = base64::read::DecoderReader::new(b64, &base64::engine::general_purpose::STANDARD);
                    let n = std::io::copy(&mut decoder, manifest_out)
                        .map_err(|e| Error::Malformed(format!("release bundle manifest: {e}")))?;
                    drop(decoder);
                    exempt.set(false);
                    manifest_len = Some(n);
                }
                "placement" => bundle.placement = json.deserialize_next().map_err(|e| bad(&e))?,
                "bootstrap" => bundle.bootstrap = json.deserialize_next().map_err(|e| bad(&e))?,
                "placement_from" if bundle.format < 3 => {
                    return Err(Error::Malformed(format!(
                        "release bundle: placement_from in format {} (it is new in format 3)",
                        bundle.format
                    )));
                }
                "placement_from" => {
                    let from: String = json.deserialize_next().map_err(|e| bad(&e))?;
                    let ok = from.len() <= MAX_PLACEMENT_FROM
                        && (from.starts_with('/') || from.starts_with("http://") || from.starts_with("https://"));
                    if !ok {
                        return Err(Error::Malformed(format!(
                            "release bundle: placement_from must be an http(s) URL or a path of at most \
                             {MAX_PLACEMENT_FROM} bytes, not {:?}",
                            from.chars().take(80).collect::<String>()
                        )));
                    }
                    bundle.placement_from = Some(from);
                }
                "patches" | "manifest_delta" if bundle.format < 4 => {
                    return Err(Error::Malformed(format!(
                        "release bundle: {name} in format {} (it is new in format 4)",
                        bundle.format
                    )));
                }
                "patches" => {
                    let p: String = json.deserialize_next().map_err(|e| bad(&e))?;
                    if p.len() > MAX_DELTA_FIELD {
                        return Err(Error::Malformed(format!("release bundle: patches over {MAX_DELTA_FIELD} bytes")));
                    }
                    bundle.patches = Some(p);
                }
                "manifest_delta" => {
                    let d: ManifestDelta = json.deserialize_next().map_err(|e| bad(&e))?;
                    if d.delta.len() > MAX_DELTA_FIELD || d.base.len() > 200 {
                        return Err(Error::Malformed(format!(
                            "release bundle: manifest_delta over {MAX_DELTA_FIELD} bytes"
                        )));
                    }
                    bundle.manifest_delta = Some(d);
                }
                other => return Err(Error::Malformed(format!("release bundle: unknown field {other:?}"))),
            }
        }
        json.end_object().map_err(|e| bad(&e))?;
        json.consume_trailing_whitespace().map_err(|e| bad(&e))?;
        let manifest_len = manifest_len.ok_or_else(|| Error::Malformed("release bundle: no manifest".to_string()))?;
        if bundle.release.is_empty() {
            return Err(Error::Malformed("release bundle: no release".to_string()));
        }
        Ok((bundle, manifest_len))
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The manifest bytes.
    pub fn manifest_bytes(&self) -> Result<Vec<u8>> {
        data_encoding::BASE64
            .decode(self.manifest.as_bytes())
            .map_err(|e| Error::Malformed(format!("bundle manifest is not base64: {e}")))
    }

    /// Base64 of manifest bytes, for building a bundle.
    pub fn encode_manifest(bytes: &[u8]) -> String {
        data_encoding::BASE64.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(manifest: &[u8]) -> Bundle {
        Bundle {
            format: 3,
            release: "{\"signed\":{\"a\":\"b\\\"c\"}}".to_string(),
            roots: vec!["{\"root\":2}".to_string()],
            timestamp: Some("{\"t\":1}".to_string()),
            manifest: Bundle::encode_manifest(manifest),
            placement: Placement {
                peers: vec!["p1".to_string()],
                shards: [("c1".to_string(), vec![0u32])].into_iter().collect(),
            },
            bootstrap: vec!["/ip4/127.0.0.1/tcp/1".to_string()],
            placement_from: Some("/v1/releases/router@1.0/placement".to_string()),
            patches: None,
            manifest_delta: None,
        }
    }

    #[test]
    fn streaming_read_gives_the_bundle_and_writes_the_manifest_aside() {
        let manifest: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b = sample(&manifest);
        let mut out = Vec::new();
        let (read, n) = Bundle::read_streaming(b.to_json().as_bytes(), &mut out, &mut |_| Ok(())).expect("read");
        assert_eq!(n, manifest.len() as u64);
        assert!(out == manifest, "manifest bytes differ");
        assert_eq!(Bundle { manifest: b.manifest.clone(), ..read }, b);
    }

    #[test]
    fn a_format_4_bundle_carries_patches_and_a_manifest_delta() {
        let mut b = sample(b"");
        b.format = 4;
        b.patches = Some("cGF0Y2hlcw==".into());
        b.manifest_delta = Some(ManifestDelta { base: "bafyold".into(), delta: "ZGVsdGE=".into() });
        let mut out = Vec::new();
        let (read, n) = Bundle::read_streaming(b.to_json().as_bytes(), &mut out, &mut |_| Ok(())).expect("read");
        assert_eq!(n, 0);
        assert_eq!(read, b);
    }

    /// A bundle's fields in the writer's order (serde_json's Value would sort them).
    type Fields = Vec<(String, serde_json::Value)>;

    fn fields(b: &Bundle) -> Fields {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&b.to_json()).expect("json");
        [
            "format",
            "release",
            "roots",
            "timestamp",
            "manifest",
            "placement",
            "bootstrap",
            "placement_from",
            "patches",
            "manifest_delta",
        ]
        .iter()
        .filter_map(|k| v.get(*k).map(|x| (k.to_string(), x.clone())))
        .collect()
    }

    fn text(f: &Fields) -> String {
        let parts: Vec<String> =
            f.iter().map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str()))).collect();
        format!("{{{}}}", parts.join(","))
    }

    fn set(f: &mut Fields, k: &str, v: serde_json::Value) {
        match f.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v,
            None => f.push((k.to_string(), v)),
        }
    }

    #[test]
    fn streaming_read_refuses_what_it_must() {
        let b = sample(b"m");
        let v = fields(&b);
        type Change = Box<dyn Fn(&mut Fields)>;
        // What is changed, and a word the error must say.
        let cases: Vec<(&str, Change)> = vec![
            ("unknown field", Box::new(|v| set(v, "extra", 1.into()))),
            ("format 5", Box::new(|v| set(v, "format", 5.into()))),
            ("patches in format 3", Box::new(|v| set(v, "patches", "AAAA".into()))),
            (
                "manifest_delta in format 3",
                Box::new(|v| set(v, "manifest_delta", serde_json::json!({"base": "b", "delta": "AAAA"}))),
            ),
            (
                "patches over",
                Box::new(|v| {
                    set(v, "format", 4.into());
                    set(v, "patches", "A".repeat(MAX_DELTA_FIELD + 4).into());
                }),
            ),
            (
                "unknown field",
                Box::new(|v| {
                    set(v, "format", 4.into());
                    set(v, "manifest_delta", serde_json::json!({"base": "b", "delta": "AAAA", "more": 1}));
                }),
            ),
            ("placement_from in format 2", Box::new(|v| set(v, "format", 2.into()))),
            ("placement_from must be", Box::new(|v| set(v, "placement_from", "file:///etc/passwd".into()))),
            ("placement_from must be", Box::new(|v| set(v, "placement_from", format!("/{}", "x".repeat(3000)).into()))),
            (
                "a timestamp in format 1",
                Box::new(|v| {
                    set(v, "format", 1.into());
                    v.retain(|(k, _)| k != "placement_from");
                }),
            ),
            ("no manifest", Box::new(|v| v.retain(|(k, _)| k != "manifest"))),
            ("manifest", Box::new(|v| set(v, "manifest", "not base64!".into()))),
            ("release", Box::new(|v| set(v, "release", "x".repeat(crate::meta::MAX_METADATA + 1).into()))),
            ("outside the manifest", Box::new(|v| set(v, "bootstrap", vec!["x".repeat(1 << 20); 17].into()))),
            ("128 MiB", Box::new(|v| set(v, "manifest", "AAAA".repeat((MAX_BUNDLE >> 2) + 1).into()))),
            ("two \"roots\"", Box::new(|v| v.insert(1, ("roots".into(), serde_json::json!([]))))),
            ("signed parts come first", Box::new(|v| v.retain(|(k, _)| k != "release"))),
            // Found by the bundle fuzz target: an empty release reached the check.
            ("no release", Box::new(|v| set(v, "release", "".into()))),
        ];
        for (says, change) in cases {
            let mut w = v.clone();
            change(&mut w);
            let e = Bundle::read_streaming(text(&w).as_bytes(), &mut std::io::sink(), &mut |_| Ok(()))
                .err()
                .unwrap_or_else(|| panic!("{says}: accepted"));
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
        let mut w = v.clone();
        set(&mut w, "manifest", "".into());
        assert!(
            Bundle::read_streaming(text(&w).as_bytes(), &mut Vec::new(), &mut |_| Ok(())).is_ok(),
            "an empty manifest field parses"
        );
    }

    #[test]
    fn a_forged_release_is_refused_before_the_manifest_is_read() {
        let manifest = vec![7u8; 3 << 20];
        let b = sample(&manifest);
        let mut out = Vec::new();
        let e = Bundle::read_streaming(b.to_json().as_bytes(), &mut out, &mut |seen| {
            assert_eq!(seen.release, b.release, "the check sees the signed parts");
            assert_eq!(seen.timestamp, b.timestamp);
            Err(Error::Malformed("forged".to_string()))
        })
        .expect_err("refused");
        assert!(e.to_string().contains("forged"), "{e}");
        assert!(out.is_empty(), "{} manifest bytes written before the release was checked", out.len());
        // A manifest placed before the release is refused, not read.
        let mut f = fields(&b);
        let m = f.remove(4);
        f.insert(1, m);
        let e = Bundle::read_streaming(text(&f).as_bytes(), &mut out, &mut |_| Ok(())).expect_err("out of order");
        assert!(e.to_string().contains("signed parts come first"), "{e}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_format_1_bundle_of_the_previous_release_still_reads() {
        // Written by the SPN of the release before timestamps (testdata).
        let text = include_str!("../../testdata/compat/bundle-format1.json");
        let mut out = Vec::new();
        let (b, n) = Bundle::read_streaming(text.as_bytes(), &mut out, &mut |_| Ok(())).expect("format 1 reads");
        assert_eq!((b.format, b.timestamp.is_none(), n as usize), (1, true, out.len()));
        assert!(n > 0);
    }
}
