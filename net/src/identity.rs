//! A node's identity: an ed25519 key kept in a file with mode 0600.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::{Error, Result};

/// Load the key at `path`, creating it (mode 0600) if the file does not exist.
/// Returns the key and whether it was created.
pub fn load_or_create_key(path: &Path) -> Result<(Keypair, bool)> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key = Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| Error::Config(format!("{} is not an ionshard identity key: {e}", path.display())))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("creating {}: {e}", dir.display())))?;
            }
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| Error::Config(format!("encoding a key: {e}")))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(|e| Error::Config(format!("creating {}: {e}", path.display())))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::Config(format!("writing {}: {e}", path.display())))?;
            Ok((key, true))
        }
        Err(e) => Err(Error::Config(format!("reading {}: {e}", path.display()))),
    }
}
