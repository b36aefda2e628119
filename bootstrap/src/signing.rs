//! Domain-separated ed25519 signatures with libp2p identity keys, and the consensus digest.
//!
//! Every signature covers `context || bytes`, with a context per object kind, so that a signature
//! over one kind of object can never be replayed as another.

use libp2p_identity::{Keypair, PublicKey};

/// What a signature is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A node descriptor, signed by the node.
    Descriptor,
    /// An authority's vote.
    Vote,
    /// An authority's reveal.
    Reveal,
    /// The digest of a consensus document.
    Consensus,
}

impl Context {
    fn prefix(self) -> &'static [u8] {
        match self {
            Context::Descriptor => b"p2pmix-descriptor-v1",
            Context::Vote => b"p2pmix-vote-v1",
            Context::Reveal => b"p2pmix-reveal-v1",
            Context::Consensus => b"p2pmix-consensus-v1",
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
}
