//! Domain-separated ed25519 signatures with libp2p identity keys, and the consensus digest.
//!
//! Every signature covers `context || bytes`, with a context per object kind, so that a signature
//! over one kind of object can never be replayed as another. Consensus signatures cover the
//! document's epoch too ([`sign_consensus`]): a signature is tied to its round by its own bytes.

use libp2p_identity::{Keypair, PublicKey};
use p2pmix_proto::v1::ConsensusSignature;

/// What a signature is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A node descriptor, signed by the node.
    Descriptor,
    /// An authority's vote.
    Vote,
    /// An authority's reveal.
    Reveal,
    /// The epoch and digest of a consensus document ([`sign_consensus`]).
    Consensus,
}

impl Context {
    fn prefix(self) -> &'static [u8] {
        match self {
            Context::Descriptor => b"p2pmix-descriptor-v1",
            Context::Vote => b"p2pmix-vote-v1",
            Context::Reveal => b"p2pmix-reveal-v1",
            Context::Consensus => b"p2pmix-consensus-v2",
        }
    }
}

fn message(context: Context, bytes: &[u8]) -> Vec<u8> {
    let prefix = context.prefix();
    let mut msg = Vec::with_capacity(prefix.len() + bytes.len());
    msg.extend_from_slice(prefix);
    msg.extend_from_slice(bytes);
    msg
}

/// Signs `bytes` under `context`; `None` only for key types that cannot sign (not ed25519).
pub fn sign(keypair: &Keypair, context: Context, bytes: &[u8]) -> Option<Vec<u8>> {
    keypair.sign(&message(context, bytes)).ok()
}

/// Encodes `message` and signs the encoding: the `(bytes, signature)` pair every signed wire
/// object carries.
pub fn encode_and_sign<M: prost::Message>(
    keypair: &Keypair,
    context: Context,
    message: &M,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let bytes = message.encode_to_vec();
    let signature = sign(keypair, context, &bytes)?;
    Some((bytes, signature))
}

/// Checks a signature made by [`sign`].
pub fn verify(key: &PublicKey, context: Context, bytes: &[u8], signature: &[u8]) -> bool {
    key.verify(&message(context, bytes), signature)
}

/// The digest authorities sign: BLAKE3 of the encoded consensus.
pub fn consensus_digest(consensus_bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(consensus_bytes).as_bytes()
}

/// What a consensus signature covers after its context: the epoch (8 bytes, little endian), then
/// the digest.
fn consensus_message(epoch: u64, digest: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + digest.len());
    bytes.extend_from_slice(&epoch.to_le_bytes());
    bytes.extend_from_slice(digest);
    bytes
}

/// This authority's signature on the consensus of `epoch` whose digest is `digest`; `None` only
/// for key types that cannot sign.
pub fn sign_consensus(
    keypair: &Keypair,
    epoch: u64,
    digest: &[u8; 32],
) -> Option<ConsensusSignature> {
    let signature = sign(
        keypair,
        Context::Consensus,
        &consensus_message(epoch, digest),
    )?;
    Some(ConsensusSignature {
        authority: keypair.public().encode_protobuf(),
        digest: digest.to_vec(),
        signature,
        epoch,
    })
}

/// Whether `signature` is `key`'s valid signature over the epoch and digest it names (that it
/// names the right authority, document and epoch is the caller's to check).
pub fn verify_consensus_signature(key: &PublicKey, signature: &ConsensusSignature) -> bool {
    signature.digest.len() == 32
        && verify(
            key,
            Context::Consensus,
            &consensus_message(signature.epoch, &signature.digest),
            &signature.signature,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_do_not_mix() {
        let k = Keypair::generate_ed25519();
        let sig = sign(&k, Context::Vote, b"x").unwrap();
        assert!(verify(&k.public(), Context::Vote, b"x", &sig));
        assert!(!verify(&k.public(), Context::Reveal, b"x", &sig));
        assert!(!verify(&k.public(), Context::Vote, b"y", &sig));
        let other = Keypair::generate_ed25519();
        assert!(!verify(&other.public(), Context::Vote, b"x", &sig));
    }

    #[test]
    fn a_consensus_signature_covers_its_epoch() {
        let k = Keypair::generate_ed25519();
        let s = sign_consensus(&k, 7, &[3; 32]).unwrap();
        assert!(verify_consensus_signature(&k.public(), &s));
        let mut replayed = s.clone();
        replayed.epoch = 8;
        assert!(
            !verify_consensus_signature(&k.public(), &replayed),
            "relabelled for another epoch"
        );
        let mut short = s;
        short.digest.pop();
        assert!(!verify_consensus_signature(&k.public(), &short));
    }
}
