//! Who a mailbox fetch registers: the client's own mixnet key, not the swarm identity of the
//! connection it arrives on.
//!
//! A client id derived from the connection's peer id lets anyone who holds the client's address
//! check which public libp2p peer owns it (hash the candidate's peer id, compare). So a client
//! has its own [`ClientKey`] (an ed25519 key in its data directory, or given by the app): its
//! client id is a hash of that key, and each fetch carries the key and its signature over the
//! gateway's and the connection's peer ids ([`ClientKey::prove`]). The gateway checks it
//! ([`registered_client`]) and files the client under the key's id. The signature names the
//! connection, so a proof is of no use to any other peer (one that saw it cannot fetch the
//! client's packets). The gateway still sees which peer fetches (it must answer it); only an
//! app that asks for it explicitly ([`client_id`] of its peer id, a fetch without a key) has the
//! swarm-derived id.

use curve25519_dalek::edwards::CompressedEdwardsY;
use libp2p_identity::PeerId;
use libp2p_identity::{Keypair, PublicKey};
use p2pmix_mix::ClientId;
use p2pmix_proto::v1::MailboxRequest;
use thiserror::Error;

use crate::client::client_id;

const PROOF_CONTEXT: &[u8] = b"p2pmix 2026-12 mailbox registration v1";

/// Why a fetch's registration proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The key is not a protobuf-encoded ed25519 public key, or a signature came without a key.
    #[error("the client key is malformed")]
    MalformedKey,
    /// The signature does not verify for this gateway and this connection.
    #[error("the client key's signature does not verify for this connection")]
    BadSignature,
}

/// A client's own mixnet key: its client id at the gateway and what registration proves.
#[derive(Debug, Clone)]
pub struct ClientKey(Box<Keypair>);

impl ClientKey {
    /// A fresh key.
    pub fn generate() -> Self {
        ClientKey(Box::new(Keypair::generate_ed25519()))
    }

    /// A key from an ed25519 keypair (as stored in the data directory); `None` for other kinds.
    pub fn from_keypair(keypair: Keypair) -> Option<Self> {
        keypair.clone().try_into_ed25519().ok()?;
        Some(ClientKey(Box::new(keypair)))
    }

    /// The keypair, to store it.
    pub fn keypair(&self) -> &Keypair {
        &self.0
    }

    /// The id the gateway files this client's packets under.
    pub fn client_id(&self) -> ClientId {
        key_client_id(&self.0.public())
    }

    /// What a fetch from `local` (the connection's peer id) to `gateway` carries: the public key
    /// and its signature, for [`MailboxRequest::client_key`] and `client_signature`.
    pub fn prove(&self, gateway: &PeerId, local: &PeerId) -> (Vec<u8>, Vec<u8>) {
        let signature = self
            .0
            .sign(&proof_message(gateway, local))
            // ed25519 signing cannot fail.
            .unwrap_or_default();
        (self.0.public().encode_protobuf(), signature)
    }
}

/// The client id of a client key.
fn key_client_id(key: &PublicKey) -> ClientId {
    ClientId(blake3::derive_key(
        "p2pmix 2026-12 client id from client key v2",
        &key.encode_protobuf(),
    ))
}

fn proof_message(gateway: &PeerId, peer: &PeerId) -> Vec<u8> {
    let (g, p) = (gateway.to_bytes(), peer.to_bytes());
    let mut m = Vec::with_capacity(PROOF_CONTEXT.len() + 2 + g.len() + p.len());
    m.extend_from_slice(PROOF_CONTEXT);
    // Peer ids are multihashes of at most 64 bytes.
    m.push(g.len() as u8);
    m.extend_from_slice(&g);
    m.push(p.len() as u8);
    m.extend_from_slice(&p);
    m
}

/// The client a fetch from `peer` to the gateway `me` registers: the client key's id when the
/// fetch carries a key and a valid proof, the peer-derived id when it carries neither.
pub fn registered_client(
    me: &PeerId,
    peer: &PeerId,
    request: &MailboxRequest,
) -> Result<ClientId, RegistrationError> {
    if request.client_key.is_empty() {
        if !request.client_signature.is_empty() {
            return Err(RegistrationError::MalformedKey);
        }
        return Ok(client_id(peer));
    }
    let key = PublicKey::try_decode_protobuf(&request.client_key)
        .map_err(|_| RegistrationError::MalformedKey)?;
    let ed25519 = key
        .clone()
        .try_into_ed25519()
        .map_err(|_| RegistrationError::MalformedKey)?;
    // libp2p verifies without ed25519's strict checks: a small-order key would take a
    // signature anyone can make (for a mailbox id nobody else has, but a forged proof all the
    // same), so such keys are refused here.
    let small_order = CompressedEdwardsY(ed25519.to_bytes())
        .decompress()
        .is_none_or(|p| p.is_small_order());
    if small_order {
        return Err(RegistrationError::MalformedKey);
    }
    if !key.verify(&proof_message(me, peer), &request.client_signature) {
        return Err(RegistrationError::BadSignature);
    }
    Ok(key_client_id(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(proof: (Vec<u8>, Vec<u8>)) -> MailboxRequest {
        MailboxRequest {
            client_key: proof.0,
            client_signature: proof.1,
            ..MailboxRequest::default()
        }
    }

    #[test]
    fn a_proof_registers_the_key_for_its_connection_only() {
        let (gateway, me, thief) = (PeerId::random(), PeerId::random(), PeerId::random());
        let key = ClientKey::generate();
        let request = fetch(key.prove(&gateway, &me));
        assert_eq!(
            registered_client(&gateway, &me, &request),
            Ok(key.client_id())
        );
        // The id has nothing to do with the connection's peer id.
        assert_ne!(key.client_id(), client_id(&me));
        // A proof seen on the way is no use to another peer, nor at another gateway.
        assert_eq!(
            registered_client(&gateway, &thief, &request),
            Err(RegistrationError::BadSignature)
        );
        assert_eq!(
            registered_client(&PeerId::random(), &me, &request),
            Err(RegistrationError::BadSignature)
        );
        // Another key's signature, a mangled key, a signature without a key.
        let other = ClientKey::generate().prove(&gateway, &me);
        let mixed = fetch((request.client_key.clone(), other.1));
        assert_eq!(
            registered_client(&gateway, &me, &mixed),
            Err(RegistrationError::BadSignature)
        );
        let mut mangled = request.clone();
        mangled.client_key.truncate(5);
        assert_eq!(
            registered_client(&gateway, &me, &mangled),
            Err(RegistrationError::MalformedKey)
        );
        let lone = fetch((Vec::new(), vec![1; 64]));
        assert_eq!(
            registered_client(&gateway, &me, &lone),
            Err(RegistrationError::MalformedKey)
        );
        // A small-order key with the signature that verifies for every message under it
        // (R = identity, s = 0) under libp2p's lax verification: refused.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let weak = PublicKey::from(
            libp2p_identity::ed25519::PublicKey::try_from_bytes(&identity_point)
                .expect("libp2p takes the identity point as a key"),
        );
        let mut signature = vec![0u8; 64];
        signature[0] = 1;
        assert!(
            weak.verify(b"any message", &signature),
            "libp2p's lax check takes it"
        );
        let forged = fetch((weak.encode_protobuf(), signature));
        assert_eq!(
            registered_client(&gateway, &me, &forged),
            Err(RegistrationError::MalformedKey)
        );
        // Without a key, the peer-derived id (the explicit choice).
        assert_eq!(
            registered_client(&gateway, &me, &MailboxRequest::default()),
            Ok(client_id(&me))
        );
    }
}
