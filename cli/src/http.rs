//! A small HTTP client for the SPN's API (ureq: blocking, rustls for https).

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Largest answer read (a release bundle with a big manifest).
const MAX_ANSWER: u64 = 160 << 20;

pub(crate) struct Spn {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

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

impl Spn {
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Spn> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--spn {url:?}: give the SPN's API address, like http://127.0.0.1:7800");
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // The SPN answers once an upload is in; a stalled one must not hang a publish.
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .build()
            .into();
        Ok(Spn { base: url.trim_end_matches('/').to_string(), token, agent })
    }

    fn answer(&self, what: &str, mut r: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = r.status();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .with_context(|| format!("reading the SPN's answer to {what}"))?;
        let v: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if !status.is_success() {
            let msg = v.get("error").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_string);
            bail!("SPN refused {what} ({status}): {msg}");
        }
        Ok(v)
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        let r = req.call().with_context(|| format!("cannot reach the SPN at {url}"))?;
        self.answer(&format!("GET {path}"), r)
    }

    /// GET `path` as a stream of at most `limit` bytes (an error answer is read whole and reported).
    pub(crate) fn get_reader(&self, path: &str, limit: u64) -> Result<impl std::io::Read + use<>> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).call().with_context(|| format!("cannot reach the SPN at {url}"))?;
        let status = r.status();
        let mut body = r.into_body();
        if !status.is_success() {
            let bytes = body.with_config().limit(64 << 10).read_to_vec().unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let msg = v.get("error").and_then(Value::as_str).unwrap_or("no reason given").to_string();
            bail!("SPN refused GET {path} ({status}): {msg}");
        }
        Ok(body.into_with_config().limit(limit).reader())
    }

    /// GET `path`: the answer's bytes as they are (at most `limit`).
    pub(crate) fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_reader(path, limit)?.read_to_end(&mut out).with_context(|| format!("reading GET {path}"))?;
        Ok(out)
    }

    /// GET `path` and decode the answer as `T`.
    pub(crate) fn get_typed<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self.get(path)?;
        serde_json::from_value(v).with_context(|| format!("the SPN's answer to GET {path}"))
    }

    /// The status of GET `path` and its answer, without failing on a refusal.
    pub(crate) fn get_status(&self, path: &str) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        let mut r = req.call().with_context(|| format!("cannot reach the SPN at {url}"))?;
        let status = r.status().as_u16();
        let bytes = r.body_mut().with_config().limit(MAX_ANSWER).read_to_vec().unwrap_or_default();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// POST `body` as JSON and decode the answer as `T`.
    pub(crate) fn post_typed<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let v = self.post_json(path, &serde_json::to_value(body).context("encoding a request")?)?;
        serde_json::from_value(v).with_context(|| format!("the SPN's answer to POST {path}"))
    }

    /// DELETE `path`.
    pub(crate) fn delete(&self, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.delete(&url);
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        let r = req.call().with_context(|| format!("cannot reach the SPN at {url}"))?;
        self.answer(&format!("DELETE {path}"), r).map(|_| ())
    }

    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url).header("Content-Type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        let r = req.send(body.to_string()).with_context(|| format!("cannot reach the SPN at {url}"))?;
        self.answer(&format!("POST {path}"), r)
    }

    /// POST `body` as a stream and decode the answer as `T`.
    pub(crate) fn post_stream_typed<T: serde::de::DeserializeOwned>(&self, path: &str, body: impl Read) -> Result<T> {
        let v = self.post_stream(path, body)?;
        serde_json::from_value(v).with_context(|| format!("the SPN's answer to POST {path}"))
    }

    pub(crate) fn post_stream(&self, path: &str, body: impl Read) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url).header("Content-Type", "application/octet-stream");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        let mut body = body;
        let r = req
            .send(ureq::SendBody::from_reader(&mut body))
            .with_context(|| format!("uploading to the SPN at {url}"))?;
        self.answer(&format!("POST {path}"), r)
    }
}
