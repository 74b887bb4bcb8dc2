//! Test vectors for the signed metadata: fixed keys and documents, the exact
//! bytes each signature covers and the signed JSON, in
//! `testdata/ota-vectors.json`, so the formats cannot drift silently and
//! another implementation can check itself against them (ed25519 signatures
//! are deterministic).
//!
//! After an intended format change: `IONSHARD_BLESS=1 cargo test -p ionshard-ota --test vectors`,
//! then review the diff and bump the format version.

use std::collections::BTreeMap;

use ota::meta::{self, KeyWrap, Latest, Release, Role, Root, Timestamp, VendorKey, Withdrawal};
use serde_json::{Value, json};

fn key(n: u8) -> VendorKey {
    VendorKey::from_bytes([n; 32])
}

fn vectors() -> Value {
    let (a, b, t) = (key(1), key(2), key(9));
    let root = Root {
        vendor: "acme".into(),
        version: 1,
        expires: 1_900_000_000,
        threshold: 2,
        keys: [&a, &b].iter().map(|k| (k.id(), k.public_hex())).collect(),
        timestamp: Some(Role { threshold: 1, keys: [(t.id(), t.public_hex())].into_iter().collect() }),
    };
    let release = Release {
        vendor: "acme".into(),
        product: "router".into(),
        hardware: vec!["rev-b".into(), "rev-c".into()],
        version: "2.4.1".into(),
        length: 1_048_576,
        blake3: "ab".repeat(32),
        manifest: "bafir4igwj52xsabw4yuzvsguzdq2ahphm2whhbijfojtjkrnsufaxahsey".into(),
        read_key: KeyWrap::Clear("07".repeat(32)),
        issued: 1_800_000_000,
        expires: 1_807_776_000,
    };
    let ts = Timestamp {
        vendor: "acme".into(),
        product: "router".into(),
        version: 1_800_000_100,
        issued: 1_800_000_100,
        expires: 1_800_086_500,
        latest: BTreeMap::from([("rev-b".into(), Latest { version: "2.4.1".into(), blake3: "ab".repeat(32) })]),
    };
    let w = Withdrawal {
        vendor: "acme".into(),
        product: "router".into(),
        version: "2.4.1".into(),
        blake3: "ab".repeat(32),
        issued: 1_800_000_200,
        reason: "bad build".into(),
    };
    let hex = |b: Vec<u8>| data_encoding::HEXLOWER.encode(&b);
    let doc = |v: &dyn erased::Doc| json!({ "message_hex": hex(v.message()), "signed_json": v.json() });
    let keys: Vec<Value> = [&a, &b, &t].iter().map(|k| json!({ "id": k.id(), "public": k.public_hex() })).collect();
    json!({
        "about": "ionshard signed-metadata test vectors: keys are ed25519 seeds of 32 equal bytes (1, 2: root; 9: timestamp); message_hex is what each signature covers; see ota/src/meta.rs",
        "keys": keys,
        "root_format_2": doc(&(root.clone(), vec![&a, &b])),
        "root_format_1_projection": doc(&(root.legacy(), vec![&a, &b])),
        "release": doc(&(release, vec![&a, &b])),
        "timestamp": doc(&(ts, vec![&t])),
        "withdrawal": doc(&(w, vec![&a, &b])),
    })
}

/// Each kind of document, signed by its keys, behind one face.
mod erased {
    use super::*;

    pub(super) trait Doc {
        fn message(&self) -> Vec<u8>;
        fn json(&self) -> String;
    }

    macro_rules! doc {
        ($t:ty, $sign:path) => {
            impl Doc for ($t, Vec<&VendorKey>) {
                fn message(&self) -> Vec<u8> {
                    meta::signing_message(&self.0)
                }
                fn json(&self) -> String {
                    meta::to_json(&$sign(self.0.clone(), &self.1))
                }
            }
        };
    }
    doc!(Root, meta::sign_root);
    doc!(Release, meta::sign_release);
    doc!(Timestamp, meta::sign_timestamp);
    doc!(Withdrawal, meta::sign_withdrawal);
}

#[test]
fn signed_metadata_matches_testdata() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/ota-vectors.json");
    let got = vectors();
    if std::env::var_os("IONSHARD_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).expect("json") + "\n").expect("write vectors");
    }
    let want: Value = serde_json::from_slice(&std::fs::read(&path).expect("testdata/ota-vectors.json")).expect("json");
    assert_eq!(got, want, "signed metadata differs from testdata/ota-vectors.json");
    // And what is written there verifies as a device checks it.
    let root_text = want["root_format_2"]["signed_json"].as_str().expect("root");
    let root = meta::load_root(root_text.as_bytes()).expect("root verifies");
    let legacy = want["root_format_1_projection"]["signed_json"].as_str().expect("projection");
    assert_eq!(meta::load_root(legacy.as_bytes()).expect("projection verifies"), root.legacy());
    let rel = want["release"]["signed_json"].as_str().expect("release");
    meta::release_signed_by(&root, rel.as_bytes()).expect("release verifies");
    let ts = want["timestamp"]["signed_json"].as_str().expect("timestamp");
    meta::verify_timestamp(&root, ts.as_bytes(), "router", 1_800_000_200, 0).expect("timestamp verifies");
    let w = want["withdrawal"]["signed_json"].as_str().expect("withdrawal");
    meta::verify_withdrawal(&root, w.as_bytes()).expect("withdrawal verifies");
}
