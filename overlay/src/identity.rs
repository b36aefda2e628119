//! Identity key files: a node's, authority's or client's libp2p ed25519 keypair on disk, and a
//! client's end-to-end (Noise) static key.
//!
//! The identity file holds the keypair's protobuf encoding (libp2p's own format), the Noise key
//! file the 32 secret bytes; both are readable only by their owner. A restarted node reads its
//! identity back and keeps its peer id; a restarted client keeps its address.

use std::{fs, path::Path};

use libp2p_identity::Keypair;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    client::StaticKey,
    runtime::files::{Access, FileError, write_new},
};

/// File name of the identity inside a data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// File name of a client's Noise static key inside its data directory.
pub const NOISE_KEY_FILE: &str = "noise.key";
/// File name of a client's own mixnet key (its id at the gateway) inside a data directory: kept
/// apart from the swarm identity so that the client's address does not name its peer.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// Why an identity could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file does not hold an ed25519 keypair.
    #[error("{0}: not a p2pmix identity key (protobuf-encoded ed25519 keypair)")]
    Malformed(String),
    /// The file does not hold a 32-byte Noise secret key.
    #[error("{0}: not a p2pmix Noise key (32 secret bytes)")]
    MalformedNoiseKey(String),
}

/// Reads an identity written by [`write_identity`].
pub fn read_identity(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = Zeroizing::new(fs::read(path).map_err(FileError::on(path))?);
    let keypair = Keypair::from_protobuf_encoding(&bytes)
        .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err(IdentityError::Malformed(path.display().to_string()));
    }
    Ok(keypair)
}

/// Writes `keypair` to `path` with owner-only permissions, refusing to overwrite a file.
pub fn write_identity(path: &Path, keypair: &Keypair) -> Result<(), IdentityError> {
    let bytes = Zeroizing::new(
        keypair
            .to_protobuf_encoding()
            .map_err(|_| IdentityError::Malformed(path.display().to_string()))?,
    );
    write_secret(path, &bytes)
}

/// Writes secret bytes to a new owner-only file (never over an existing one).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    Ok(write_new(path, bytes, Access::OwnerOnly, true)?)
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

/// Reads the client's mixnet key at `path` (an ed25519 keypair in the identity file format), or
/// creates one there if the file does not exist yet.
pub fn load_or_create_client_key(path: &Path) -> Result<crate::client::ClientKey, IdentityError> {
    let keypair = load_or_create_identity(path)?;
    // `read_identity` accepts only ed25519 keypairs, and a new one is ed25519.
    crate::client::ClientKey::from_keypair(keypair)
        .ok_or_else(|| IdentityError::Malformed(path.display().to_string()))
}

/// Reads the client Noise key at `path`, or creates one there if the file does not exist yet.
pub fn load_or_create_static_key(path: &Path) -> Result<StaticKey, IdentityError> {
    let malformed = || IdentityError::MalformedNoiseKey(path.display().to_string());
    if path.exists() {
        let bytes = Zeroizing::new(fs::read(path).map_err(FileError::on(path))?);
        let secret: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| malformed())?);
        StaticKey::from_secret(&secret).map_err(|_| malformed())
    } else {
        let key = StaticKey::generate().map_err(|_| malformed())?;
        write_secret(path, &key.secret())?;
        Ok(key)
    }
}
