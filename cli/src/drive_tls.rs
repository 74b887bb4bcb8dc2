//! TLS for `drive serve --lan`: a home device serving its LAN keeps a
//! self-signed certificate of its own (`DIR/drive/tls/`, made once, the
//! key readable by the owner alone) and prints its SHA-256 fingerprint, so
//! the person can check it the first time a browser asks (there is no
//! certificate authority for a device at home).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The node's TLS setup: an acceptor and the certificate's fingerprint.
pub(crate) struct Tls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) fingerprint: String,
    pub(crate) cert: PathBuf,
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().write(true).create(true).truncate(true),
        0o600,
    )
    .open(&tmp)
    .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The certificate in `dir` (made for `names` if there is none yet).
pub(crate) fn load_or_make(dir: &Path, names: Vec<String>) -> Result<Tls> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert_path.exists() || !key_path.exists() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let made = rcgen::generate_simple_self_signed(names).context("making a TLS certificate")?;
        write_private(&key_path, made.key_pair.serialize_pem().as_bytes())?;
        write_private(&cert_path, made.cert.pem().as_bytes())?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .with_context(|| format!("reading {} (delete it and its key.pem to make a new one)", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading {} (delete it and cert.pem to make a new one)", key_path.display()))?;
    let first = certs.first().with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, first.as_ref());
    let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), fingerprint, cert: cert_path })
}
