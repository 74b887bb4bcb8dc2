//! What the multi-node integration tests share: the network (from the
//! `harness` crate, nodes as tasks on loopback), the faulty peers only
//! tests plug into a node's answer path, a vendor of the tests, and a small
//! HTTP client for the SPN's API.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

pub use harness::tasks::Node;
use harness::tasks::{Network, PeerSpec, Spec};
use net::Keypair;

/// A peer that flips a byte in the middle of the first piece of everything
/// it sends (plugged into the answer path's hook).
pub struct Liar;

impl net::Answers for Liar {
    fn alter(&self, offset: u64, bytes: &mut [u8]) {
        let mid = bytes.len() / 2;
        if offset == 0
            && let Some(x) = bytes.get_mut(mid)
        {
            *x ^= 0x20;
        }
    }
}

/// A peer that holds every answer with shard bytes or a proof 12 s.
pub struct Slow;

impl net::Answers for Slow {
    fn hold(&self) -> Duration {
        Duration::from_secs(12)
    }
}

/// A peer that holds its second answer 12 s, and answers the rest at once
/// (a connection stuck once, on a lossy link).
#[derive(Default)]
pub struct StallsOnce(std::sync::atomic::AtomicU32);

impl net::Answers for StallsOnce {
    fn hold(&self) -> Duration {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 1 {
            Duration::from_secs(12)
        } else {
            Duration::ZERO
        }
    }
}

/// A peer that stores a shard at once but holds its receipt `0`.
pub struct SlowReceipts(pub Duration);

impl net::Answers for SlowReceipts {
    fn hold_receipt(&self) -> Duration {
        self.0
    }
}

/// A network with an SPN, as the SPN's tests use it.
pub struct Net {
    pub bootstrap: Node,
    pub peers: Vec<Node>,
    pub spn: spn::Spn,
    pub spn_node: Node,
    pub server: tokio::task::JoinHandle<()>,
    /// The SPN's HTTP API.
    pub http: std::net::SocketAddr,
    /// The bootstrap's address.
    pub boot_addr: net::Multiaddr,
    pub _root: tempfile::TempDir,
}

/// How one peer of a test network behaves.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Honest,
    /// Flips a byte in every answer.
    Liar,
    /// No listen address: reached only through the bootstrap's relay.
    Relayed,
    /// Does not trust the SPN: refuses its puts.
    Untrusting,
    /// Answers ranges only after 12 s.
    Slow,
    /// Holds its second answer 12 s.
    StallsOnce,
}

/// The harness's description of a peer of kind `k`.
pub fn spec_of(k: Kind) -> PeerSpec {
    let mut p = PeerSpec::honest();
    match k {
        Kind::Honest => {}
        Kind::Liar => p.answers = Arc::new(Liar),
        Kind::Slow => p.answers = Arc::new(Slow),
        Kind::StallsOnce => p.answers = Arc::new(StallsOnce::default()),
        Kind::Relayed => p.listen = false,
        Kind::Untrusting => p.trust_spn = false,
    }
    p
}

/// A device: a client node joined through the test network's bootstrap.
pub async fn device(net: &Net) -> Node {
    let honest: Arc<dyn net::Answers> = Arc::new(net::Honest);
    let boot = vec![net.boot_addr.clone()];
    harness::tasks::start_node(net::Role::Client, None, boot, vec![], None, honest, Keypair::generate_ed25519())
        .await
        .expect("device starts")
}

pub async fn network(peers: usize, liar: Option<usize>) -> Net {
    network_of(&(0..peers).map(|i| if liar == Some(i) { Kind::Liar } else { Kind::Honest }).collect::<Vec<_>>()).await
}

pub async fn network_of(kinds: &[Kind]) -> Net {
    network_with(kinds, |_| {}).await
}

/// A network whose SPN config `tune` may change first. Returns once the
/// SPN has found and asked every peer for its free space (at most 20 s).
pub async fn network_with(kinds: &[Kind], tune: impl FnOnce(&mut spn::Config)) -> Net {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = Spec {
        peers: kinds.iter().map(|k| spec_of(*k)).collect(),
        households: true,
        spn: true,
        trusted: Keypair::generate_ed25519(),
    };
    let n = Network::start(root.path(), &spec, tune).await.expect("the test network starts");
    let Network { bootstrap, boot_addr, peers, spn, .. } = n;
    let s = spn.expect("an SPN");
    Net { bootstrap, peers, spn: s.spn, spn_node: s.node, server: s.server, http: s.http, boot_addr, _root: root }
}

pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn now() -> u64 {
    proto::now()
}

/// One HTTP/1.1 request to `addr`; the status and the body. `token` goes in
/// `Authorization: Bearer`.
pub fn http(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the SPN");
    c.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: spn\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).expect("send");
    c.write_all(body).expect("send body");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The same from async code (on a blocking thread).
pub async fn http_async(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let (m, p, t) = (method.to_string(), path.to_string(), token.map(str::to_string));
    tokio::task::spawn_blocking(move || http(addr, &m, &p, t.as_deref(), &body)).await.expect("http thread")
}

/// A vendor of the tests: root keys, an online timestamp key, its roots.
pub struct Vendor {
    pub name: String,
    pub keys: Vec<ota::meta::VendorKey>,
    pub timestamp_key: ota::meta::VendorKey,
    pub root: ota::meta::Root,
    /// Every root so far, as sent to the SPN.
    pub roots: Vec<spn::types::NewRoot>,
    pub seq: std::cell::Cell<u64>,
}

impl Vendor {
    /// `keys` root keys of which `threshold` must sign, and a timestamp key; root v1 (format 2).
    pub fn new(name: &str, keys: usize, threshold: u32) -> Vendor {
        use ota::meta::{self, Role, Root, VendorKey};
        let ks: Vec<VendorKey> = (0..keys).map(|_| VendorKey::generate()).collect();
        let ts = VendorKey::generate();
        let root = Root {
            vendor: name.into(),
            version: 1,
            expires: now() + 86400,
            threshold,
            keys: ks.iter().map(|k| (k.id(), k.public_hex())).collect(),
            timestamp: Some(Role { threshold: 1, keys: [(ts.id(), ts.public_hex())].into_iter().collect() }),
        };
        let signers: Vec<&VendorKey> = ks.iter().collect();
        let new = spn::types::NewRoot {
            root: meta::to_json(&meta::sign_root(root.clone(), &signers)),
            legacy: Some(meta::to_json(&meta::sign_root(root.legacy(), &signers))),
        };
        Vendor { name: name.into(), keys: ks, timestamp_key: ts, root, roots: vec![new], seq: 0.into() }
    }

    /// The newest root's text (what a device is provisioned with).
    pub fn root_text(&self) -> String {
        self.roots.last().map(|r| r.root.clone()).unwrap_or_default()
    }

    /// Register with the SPN (in process).
    pub fn register(&self, net: &Net) {
        net.spn.register_vendor(&self.name, &self.roots).expect("register");
    }

    /// The first `n` root keys.
    pub fn signers(&self, n: usize) -> Vec<&ota::meta::VendorKey> {
        self.keys.iter().take(n).collect()
    }

    /// A release of an object the SPN stores, signed by `signers`.
    pub fn release(
        &self,
        res: &spn::JobResult,
        product: &str,
        version: &str,
        hardware: &[&str],
        signers: &[&ota::meta::VendorKey],
    ) -> String {
        use ota::meta::{self, KeyWrap, Release};
        let r = Release {
            vendor: self.name.clone(),
            product: product.into(),
            hardware: hardware.iter().map(|h| h.to_string()).collect(),
            version: version.into(),
            length: res.length,
            blake3: res.blake3.clone(),
            manifest: res.manifest.clone(),
            read_key: KeyWrap::Clear(res.read_key.clone()),
            issued: now(),
            expires: now() + 3600,
        };
        meta::to_json(&meta::sign_release(r, signers))
    }

    /// A timestamp of `product` naming, per hardware, (version, image hash), for `life` seconds.
    pub fn timestamp(&self, product: &str, latest: &[(&str, &str, &str)], life: u64) -> String {
        use ota::meta::{self, Latest, Timestamp};
        self.seq.set(self.seq.get() + 1);
        let t = Timestamp {
            vendor: self.name.clone(),
            product: product.into(),
            version: self.seq.get(),
            issued: now(),
            expires: now() + life,
            latest: latest
                .iter()
                .map(|(h, v, b)| (h.to_string(), Latest { version: v.to_string(), blake3: b.to_string() }))
                .collect(),
        };
        meta::to_json(&meta::sign_timestamp(t, &[&self.timestamp_key]))
    }
}

/// Store `bytes` as an object of `tenant`/`product` (6+2); its job result.
pub async fn object(net: &Net, dir: &std::path::Path, tenant: &str, product: &str, bytes: &[u8]) -> spn::JobResult {
    let path = dir.join(format!("object-{}", rand_name()));
    std::fs::write(&path, bytes).expect("write object");
    net.spn.publish_file(&path, tenant, product, 6, 2).await.expect("publish")
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A bundle from the SPN's HTTP API (format 2, for `hardware`), or the refusal.
pub async fn bundle(net: &Net, id: &str, hardware: Option<&str>) -> Result<ota::Bundle, (u16, String)> {
    let hw = hardware.map(|h| format!("&hardware={h}")).unwrap_or_default();
    let (status, body) = http_async(net.http, "GET", &format!("/v1/releases/{id}?format=2{hw}"), None, vec![]).await;
    if status != 200 {
        return Err((status, body));
    }
    let mut sink = Vec::new();
    let (mut b, _) =
        ota::Bundle::read_streaming(body.as_bytes(), &mut sink, &mut |_| Ok(())).map_err(|e| (0, e.to_string()))?;
    b.manifest = ota::Bundle::encode_manifest(&sink);
    Ok(b)
}

/// The version of the release in a bundle.
pub fn version_of(b: &ota::Bundle) -> String {
    serde_json::from_str::<ota::meta::Signed<ota::meta::Release>>(&b.release).expect("release").signed.version
}
