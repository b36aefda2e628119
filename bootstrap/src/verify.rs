//! The one consensus check that nodes, clients and authorities share: encoded bytes + pinned
//! authority keys + now -> a verified consensus, or the typed reason it is not one.

use std::collections::BTreeSet;

use libp2p_identity::PeerId;
use p2pmix_mix::NodePublicKey;
use p2pmix_proto::v1::{
    Consensus, ConsensusNode, Equivocation, NetworkParameters, Role, SignedConsensus,
};
use prost::Message;
use thiserror::Error;

use crate::{
    authorities::PinnedAuthorities,
    signing::{consensus_digest, verify_consensus_signature},
};

/// Largest encoded signed consensus accepted (bytes).
pub const MAX_CONSENSUS_BYTES: usize = 32 * 1024 * 1024;

/// Why a consensus was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes are not a signed consensus (or too large), or the document inside does not
    /// decode, or a node entry is malformed.
    #[error("bad encoding: {0}")]
    Encoding(&'static str),
    /// A signature is by a key that is not pinned.
    #[error("signature by an unknown authority")]
    UnknownSigner,
    /// One authority signed twice.
    #[error("two signatures by one authority")]
    DuplicateSigner,
    /// A signature is over another digest than the document's.
    #[error("signature over a different digest")]
    DigestMismatch,
    /// A signature is for another epoch than the document's.
    #[error("signature for another epoch")]
    SignatureEpoch,
    /// A signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// Fewer valid signatures than the threshold.
    #[error("{valid} valid signatures, {needed} needed")]
    BelowThreshold {
        /// Valid signatures by distinct pinned authorities.
        valid: usize,
        /// The threshold.
        needed: usize,
    },
    /// Not valid yet.
    #[error("not valid before {valid_after_ms} (now {now_ms})")]
    NotYetValid {
        /// Start of validity.
        valid_after_ms: u64,
        /// The time checked.
        now_ms: u64,
    },
    /// No longer valid.
    #[error("expired at {valid_until_ms} (now {now_ms})")]
    Expired {
        /// End of validity.
        valid_until_ms: u64,
        /// The time checked.
        now_ms: u64,
    },
    /// For another epoch than the one asked for.
    #[error("consensus for epoch {got}, expected {expected}")]
    WrongEpoch {
        /// The document's epoch.
        got: u64,
        /// The epoch asked for.
        expected: u64,
    },
}

/// A consensus that carries a threshold of valid signatures and is valid at the time checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedConsensus {
    signed: SignedConsensus,
    consensus: Consensus,
    digest: [u8; 32],
}

impl VerifiedConsensus {
    /// The document.
    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    /// The signed form, to store and to serve to others.
    pub fn signed(&self) -> &SignedConsensus {
        &self.signed
    }

    /// The digest the authorities signed.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The epoch it describes.
    pub fn epoch(&self) -> u64 {
        self.consensus.epoch
    }

    /// The network parameters (present in every verified consensus).
    pub fn parameters(&self) -> NetworkParameters {
        self.consensus.parameters.unwrap_or_default()
    }

    /// Admitted nodes, ordered by compact node id.
    pub fn nodes(&self) -> &[ConsensusNode] {
        &self.consensus.nodes
    }

    /// Mixes of layer `layer` (1-based).
    pub fn layer(&self, layer: u32) -> impl Iterator<Item = &ConsensusNode> {
        self.consensus
            .nodes
            .iter()
            .filter(move |n| n.role() == Role::Mix && n.layer == layer)
    }

    /// Gateways.
    pub fn gateways(&self) -> impl Iterator<Item = &ConsensusNode> {
        self.consensus
            .nodes
            .iter()
            .filter(|n| n.role() == Role::Gateway)
    }

    /// Authorities whose signatures are attached, as encoded keys.
    pub fn signers(&self) -> impl Iterator<Item = &[u8]> {
        self.signed
            .signatures
            .iter()
            .map(|s| s.authority.as_slice())
    }
}

/// Verifies an encoded [`SignedConsensus`] against the pinned authorities at `now_ms`, and
/// optionally that it is for `expected_epoch`.
pub fn verify_consensus(
    bytes: &[u8],
    authorities: &PinnedAuthorities,
    now_ms: u64,
    expected_epoch: Option<u64>,
) -> Result<VerifiedConsensus, VerifyError> {
    if bytes.len() > MAX_CONSENSUS_BYTES {
        return Err(VerifyError::Encoding("too large"));
    }
    let signed =
        SignedConsensus::decode(bytes).map_err(|_| VerifyError::Encoding("signed consensus"))?;
    verify_signed_consensus(signed, authorities, now_ms, expected_epoch)
}

/// As [`verify_consensus`], for an already decoded [`SignedConsensus`].
pub fn verify_signed_consensus(
    signed: SignedConsensus,
    authorities: &PinnedAuthorities,
    now_ms: u64,
    expected_epoch: Option<u64>,
) -> Result<VerifiedConsensus, VerifyError> {
    let digest = consensus_digest(&signed.consensus);
    // Signatures cover the epoch: the document is decoded first to know it.
    let consensus =
        Consensus::decode(&signed.consensus[..]).map_err(|_| VerifyError::Encoding("consensus"))?;
    let mut signers = BTreeSet::new();
    for sig in &signed.signatures {
        let key = authorities
            .get(&sig.authority)
            .ok_or(VerifyError::UnknownSigner)?;
        if !signers.insert(sig.authority.as_slice()) {
            return Err(VerifyError::DuplicateSigner);
        }
        if sig.digest.as_slice() != digest.as_slice() {
            return Err(VerifyError::DigestMismatch);
        }
        if sig.epoch != consensus.epoch {
            return Err(VerifyError::SignatureEpoch);
        }
        if !verify_consensus_signature(key, sig) {
            return Err(VerifyError::BadSignature);
        }
    }
    let needed = authorities.threshold();
    if signers.len() < needed {
        return Err(VerifyError::BelowThreshold {
            valid: signers.len(),
            needed,
        });
    }
    if let Some(expected) = expected_epoch
        && consensus.epoch != expected
    {
        return Err(VerifyError::WrongEpoch {
            got: consensus.epoch,
            expected,
        });
    }
    if now_ms < consensus.valid_after_ms {
        return Err(VerifyError::NotYetValid {
            valid_after_ms: consensus.valid_after_ms,
            now_ms,
        });
    }
    if now_ms >= consensus.valid_until_ms {
        return Err(VerifyError::Expired {
            valid_until_ms: consensus.valid_until_ms,
            now_ms,
        });
    }
    check_nodes(&consensus)?;
    Ok(VerifiedConsensus {
        signed,
        consensus,
        digest,
    })
}

/// Signed documents can still be malformed (a buggy authority majority): check the structure
/// users of the topology rely on. Decoding every key (curve points) would cost ~10 µs per node;
/// that is left to [`sphinx_key`] and [`peer_id`], which users call for the nodes they route over.
fn check_nodes(consensus: &Consensus) -> Result<(), VerifyError> {
    if consensus.parameters.is_none() {
        return Err(VerifyError::Encoding("missing parameters"));
    }
    if consensus.nodes.len() > crate::consensus::MAX_NODES {
        return Err(VerifyError::Encoding("too many nodes"));
    }
    for (i, node) in consensus.nodes.iter().enumerate() {
        if node.node_id as usize != i {
            return Err(VerifyError::Encoding("node ids not sequential"));
        }
        if node.sphinx_public_key.len() != 32 {
            return Err(VerifyError::Encoding("sphinx key length"));
        }
        if node.identity.is_empty() {
            return Err(VerifyError::Encoding("node identity"));
        }
    }
    Ok(())
}

/// Whether `e` proves that one pinned authority signed two different documents for one epoch:
/// two of its valid signatures naming the same epoch and different digests.
pub fn verify_equivocation(e: &Equivocation, authorities: &PinnedAuthorities) -> bool {
    let (Some(a), Some(b)) = (&e.first, &e.second) else {
        return false;
    };
    let Some(key) = authorities.get(&a.authority) else {
        return false;
    };
    a.authority == b.authority
        && a.epoch == b.epoch
        && a.digest != b.digest
        && verify_consensus_signature(key, a)
        && verify_consensus_signature(key, b)
}

/// The Sphinx key of a consensus node; `None` if the published bytes are not a valid key.
pub fn sphinx_key(node: &ConsensusNode) -> Option<NodePublicKey> {
    let bytes: [u8; 32] = node.sphinx_public_key.as_slice().try_into().ok()?;
    NodePublicKey::from_bytes(bytes)
}

/// The PeerId of a consensus node (its identity was checked by verification).
pub fn peer_id(node: &ConsensusNode) -> Option<PeerId> {
    libp2p_identity::PublicKey::try_decode_protobuf(&node.identity)
        .ok()
        .map(|k| k.to_peer_id())
}
