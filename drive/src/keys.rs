//! The drive's keys, on the client: from a password (or the recovery code)
//! argon2id derives a master key; from it come the `auth` value a device
//! checks at login and the key that unwraps the drive key. The drive key
//! (random, made at setup) seals the tree and is the secret the chunker
//! derives every file's keys from.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::protocol::{Hello, Kdf, Record, WRAP_LEN};

/// The argon2id costs of a new drive: 64 MiB, 3 passes, one lane (above
/// OWASP's floor; about half a second on a laptop).
pub(crate) const KDF: Kdf = Kdf { memory_kib: 64 * 1024, passes: 3, lanes: 1 };

/// The least a device may name (OWASP's floor for argon2id): a device
/// naming less would make the auth value it hears cheap to guess from.
const MIN_KDF: Kdf = Kdf { memory_kib: 19 * 1024, passes: 2, lanes: 1 };
/// The most a device may name (more could make a phone spend its memory).
const MAX_KDF: Kdf = Kdf { memory_kib: 256 * 1024, passes: 8, lanes: 4 };

const CTX_AUTH: &str = "ionshard drive auth v1";
const CTX_KEK: &str = "ionshard drive key-wrapping key v1";
const CTX_TREE: &str = "ionshard drive tree key v1";
const CTX_SECRET: &str = "ionshard drive chunk secret v1";

/// What a password (or the recovery code) gives.
pub(crate) struct Derived {
    pub(crate) auth: [u8; 32],
    kek: [u8; 32],
}

/// Derive from `secret` with `salt` at `kdf`'s costs.
pub(crate) fn derive(secret: &str, salt: &[u8; 16], kdf: Kdf) -> Result<Derived> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(32))
        .map_err(|e| Error::Drive(format!("argon2 costs {kdf:?}: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut master = [0u8; 32];
    a.hash_password_into(secret.as_bytes(), salt, &mut master).map_err(|e| Error::Drive(format!("argon2: {e}")))?;
    Ok(Derived { auth: blake3::derive_key(CTX_AUTH, &master), kek: blake3::derive_key(CTX_KEK, &master) })
}

fn wrap(kek: &[u8; 32], key: &[u8; 32]) -> [u8; WRAP_LEN] {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = Aes256Gcm::new(kek.into()).encrypt(&Nonce::from(nonce), &key[..]).unwrap_or_default();
    let mut out = [0u8; WRAP_LEN];
    out[..12].copy_from_slice(&nonce);
    out[12..12 + sealed.len().min(48)].copy_from_slice(&sealed[..sealed.len().min(48)]);
    out
}

/// The drive key inside `wrapped`, if `derived` opens it.
pub(crate) fn unwrap(derived: &Derived, wrapped: &[u8; WRAP_LEN]) -> Result<[u8; 32]> {
    let nonce: [u8; 12] = wrapped[..12].try_into().map_err(|_| Error::Drive("short wrapped key".into()))?;
    let key = Aes256Gcm::new((&derived.kek).into())
        .decrypt(&Nonce::from(nonce), &wrapped[12..])
        .map_err(|_| Error::Drive("the device's wrapped drive key does not open with this password".into()))?;
    key.try_into().map_err(|_| Error::Drive("the wrapped drive key is not 32 bytes".into()))
}

/// A new recovery code: 15 random bytes (120 bits) in base32, in groups of four.
pub fn new_recovery_code() -> String {
    let mut b = [0u8; 15];
    rand::rng().fill_bytes(&mut b);
    let s = data_encoding::BASE32_NOPAD.encode(&b);
    s.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
}

/// A recovery code as typed: case and dashes do not matter.
pub(crate) fn normal_recovery_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// A new drive: its key, and the record its devices keep for `password`
/// and `recovery` (the code as [`new_recovery_code`] made it).
pub(crate) fn new_drive(password: &str, recovery: &str, kdf: Kdf) -> Result<([u8; 32], Record)> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut drive_id = [0u8; 16];
    rand::rng().fill_bytes(&mut drive_id);
    let record = record_for(&key, drive_id, password, recovery, kdf)?;
    Ok((key, record))
}

/// The record of drive `key` for `password` and `recovery`, with fresh salts.
pub(crate) fn record_for(
    key: &[u8; 32],
    drive_id: [u8; 16],
    password: &str,
    recovery: &str,
    kdf: Kdf,
) -> Result<Record> {
    let (mut salt_pw, mut salt_rc) = ([0u8; 16], [0u8; 16]);
    rand::rng().fill_bytes(&mut salt_pw);
    rand::rng().fill_bytes(&mut salt_rc);
    let pw = derive(password, &salt_pw, kdf)?;
    let rc = derive(&normal_recovery_code(recovery), &salt_rc, kdf)?;
    Ok(Record {
        kdf,
        salt_pw,
        verifier_pw: *blake3::hash(&pw.auth).as_bytes(),
        wrap_pw: wrap(&pw.kek, key),
        salt_rc,
        verifier_rc: *blake3::hash(&rc.auth).as_bytes(),
        wrap_rc: wrap(&rc.kek, key),
        drive_id,
    })
}

/// Derive what logs in to a drive `hello` describes, from the password or
/// (with `recovering`) the recovery code.
pub(crate) fn login_with(hello: &Hello, secret: &str, recovering: bool) -> Result<Derived> {
    let k = hello.kdf;
    let within = |x: u32, lo: u32, hi: u32| (lo..=hi).contains(&x);
    if !within(k.memory_kib, MIN_KDF.memory_kib, MAX_KDF.memory_kib)
        || !within(k.passes, MIN_KDF.passes, MAX_KDF.passes)
        || !within(k.lanes, MIN_KDF.lanes, MAX_KDF.lanes)
    {
        return Err(Error::Drive(format!(
            "a device names argon2 costs of {} KiB, {} passes, {} lanes: outside what this client accepts \
             ({MIN_KDF:?} to {MAX_KDF:?}); is it the owner's device?",
            k.memory_kib, k.passes, k.lanes
        )));
    }
    if recovering {
        derive(&normal_recovery_code(secret), &hello.salt_rc, hello.kdf)
    } else {
        derive(secret, &hello.salt_pw, hello.kdf)
    }
}

/// The key that seals the drive's tree.
pub(crate) fn tree_key(drive_key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(CTX_TREE, drive_key)
}

/// The secret the chunker derives the drive's file keys from.
pub(crate) fn chunk_secret(drive_key: &[u8; 32]) -> chunker::TenantSecret {
    chunker::TenantSecret::from_bytes(blake3::derive_key(CTX_SECRET, drive_key))
}

/// Seal `plain` under `key`, bound to `aad` (a random nonce first).
#[cfg(test)]
pub(crate) fn seal_aad(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    seal_with(key, nonce, aad, plain)
}

/// Seal `plain` under `key` and `nonce` (first in the output), bound to
/// `aad`. A nonce must never seal two different texts under one key: the
/// caller derives it from what it seals.
pub(crate) fn seal_with(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = nonce.to_vec();
    let payload = aes_gcm::aead::Payload { msg: plain, aad };
    out.extend(Aes256Gcm::new(key.into()).encrypt(&Nonce::from(nonce), payload).unwrap_or_default());
    out
}

/// Open what [`seal_with`] sealed with the same `aad`.
pub(crate) fn open_aad(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    let (nonce, ct) = sealed.split_at_checked(12).ok_or_else(|| Error::Drive("sealed tree too short".into()))?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| Error::Drive("sealed tree too short".into()))?;
    let payload = aes_gcm::aead::Payload { msg: ct, aad };
    Aes256Gcm::new(key.into()).decrypt(&Nonce::from(nonce), payload).map_err(|_| {
        Error::Drive("the drive's tree does not open with this drive's key (another drive's, older, or damaged)".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Kdf = MIN_KDF;

    /// The password and the recovery code each unwrap the same drive key;
    /// a wrong one neither logs in (its auth differs) nor unwraps.
    #[test]
    fn password_and_recovery_code_each_open_the_drive_key_and_nothing_else_does() {
        let rc = new_recovery_code();
        let (key, rec) = new_drive("correct horse", &rc, CHEAP).expect("new");
        let hello = rec.hello();
        let pw = login_with(&hello, "correct horse", false).expect("derive");
        assert_eq!(*blake3::hash(&pw.auth).as_bytes(), rec.verifier_pw);
        assert_eq!(unwrap(&pw, &rec.wrap_pw).expect("unwrap"), key);
        let typed = rc.to_lowercase().replace('-', " ");
        let r = login_with(&hello, &typed, true).expect("derive");
        assert_eq!(*blake3::hash(&r.auth).as_bytes(), rec.verifier_rc);
        assert_eq!(unwrap(&r, &rec.wrap_rc).expect("unwrap"), key);
        let bad = login_with(&hello, "wrong horse", false).expect("derive");
        assert_ne!(*blake3::hash(&bad.auth).as_bytes(), rec.verifier_pw);
        assert!(unwrap(&bad, &rec.wrap_pw).is_err());
        let tk = tree_key(&key);
        assert_eq!(open_aad(&tk, b"7", &seal_aad(&tk, b"7", b"tree")).expect("open"), b"tree");
        assert!(open_aad(&tree_key(&[0; 32]), b"7", &seal_aad(&tk, b"7", b"tree")).is_err());
        assert!(open_aad(&tk, b"8", &seal_aad(&tk, b"7", b"tree")).is_err(), "another number does not open");
        let weak = Hello { kdf: Kdf { memory_kib: 8, passes: 1, lanes: 1 }, ..hello };
        assert!(login_with(&weak, "correct horse", false).is_err(), "a device cannot name cheap costs");
        let heavy = Hello { kdf: Kdf { memory_kib: 1 << 30, passes: 1, lanes: 1 }, ..hello };
        assert!(login_with(&heavy, "correct horse", false).is_err(), "nor ruinous ones");
    }
}
