//! Identity key files: a node's or authority's libp2p ed25519 keypair on disk.
//!
//! The file holds the keypair's protobuf encoding (libp2p's own format), readable only by its
//! owner. A restarted node reads it back and keeps its peer id.

use std::{fs, io, path::Path};

use libp2p::identity::Keypair;
use thiserror::Error;

/// File name of the identity inside a data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// Why an identity could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The file does not hold an ed25519 keypair.
    #[error("{0}: not a p2pmix identity key (protobuf-encoded ed25519 keypair)")]
    Malformed(String),
}

/// Reads an identity written by [`write_identity`].
pub fn read_identity(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let keypair = Keypair::from_protobuf_encoding(&bytes)
        .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err(IdentityError::Malformed(path.display().to_string()));
    }
    Ok(keypair)
}

/// Writes `keypair` to `path` with owner-only permissions, refusing to overwrite a file.
pub fn write_identity(path: &Path, keypair: &Keypair) -> Result<(), IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err)?;
    io::Write::write_all(&mut file, &bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// Reads the identity at `path`, or creates one there if the file does not exist yet.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, IdentityError> {
    if path.exists() {
        read_identity(path)
    } else {
        let keypair = Keypair::generate_ed25519();
        write_identity(path, &keypair)?;
        Ok(keypair)
    }
}
