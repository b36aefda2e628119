//! Node descriptors: built and signed by nodes, checked by authorities.

use libp2p_identity::{Keypair, PeerId, PublicKey};
use p2pmix_mix::NodePublicKey;
use p2pmix_proto::v1::{NetworkParameters, NodeDescriptor, Role, SignedDescriptor};
use prost::Message;
use thiserror::Error;

use crate::{
    address::{AddressError, check_address},
    signing::{Context, encode_and_sign, verify},
};

/// Most addresses a descriptor may list.
pub const MAX_ADDRESSES: usize = 16;
/// How many epochs past the descriptor's own a Sphinx key may be announced for.
pub const MAX_KEYS_AHEAD: u64 = 3;
/// Largest encoded descriptor accepted (bytes).
pub const MAX_DESCRIPTOR_BYTES: usize = 8 * 1024;

/// Why a descriptor was refused. Each reason is counted by the authority.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The bytes are not a descriptor, or too large.
    #[error("malformed descriptor")]
    Malformed,
    /// The identity field is not an ed25519 libp2p public key.
    #[error("identity is not an ed25519 public key")]
    BadIdentity,
    /// The signature does not verify under the descriptor's identity key.
    #[error("bad signature")]
    BadSignature,
    /// The descriptor is for another epoch than the one being prepared.
    #[error("descriptor for epoch {got}, expected {expected}")]
    WrongEpoch {
        /// The descriptor's epoch.
        got: u64,
        /// The epoch being prepared.
        expected: u64,
    },
    /// A Sphinx key is announced for an epoch too far ahead.
    #[error(
        "Sphinx key for epoch {key_epoch} is more than {MAX_KEYS_AHEAD} epochs ahead of {epoch}"
    )]
    KeyTooFarAhead {
        /// The key's epoch.
        key_epoch: u64,
        /// The descriptor's epoch.
        epoch: u64,
    },
    /// No valid Sphinx key for the descriptor's own epoch, a malformed key, or keys unsorted.
    #[error("missing or malformed Sphinx key for epoch {0}")]
    BadSphinxKey(u64),
    /// The role is not mix or gateway.
    #[error("no role requested")]
    NoRole,
    /// The node runs a protocol version below the network's minimum.
    #[error("protocol version {got} below minimum {min}")]
    VersionTooLow {
        /// The node's version.
        got: u32,
        /// The network's minimum.
        min: u32,
    },
    /// Too many or malformed addresses, or one that names another peer.
    #[error("bad address list")]
    BadAddresses,
    /// An address is loopback, private or otherwise not public, on a network that is not a
    /// test network.
    #[error("address is not public (only test networks admit loopback and private addresses)")]
    NotPublicAddress,
    /// The authority already holds a descriptor of this node for this epoch.
    #[error("duplicate descriptor")]
    Duplicate,
    /// Arrived after the descriptor deadline.
    #[error("descriptor arrived after the deadline")]
    Late,
    /// This round holds as many descriptors (or bytes of them) as it may, all ranked ahead of
    /// this one.
    #[error("the round is full")]
    Full,
    /// This round holds as many descriptors as it may from one of the node's prefixes or its
    /// family, all ranked ahead of this one.
    #[error("the round is full for this node's {0}")]
    GroupFull(&'static str),
}

/// A descriptor whose signature and content checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDescriptor {
    /// The signed form, as received (goes into votes unchanged).
    pub signed: SignedDescriptor,
    /// The decoded content.
    pub descriptor: NodeDescriptor,
    /// The node's identity.
    pub peer_id: PeerId,
    /// The node's Sphinx key for the descriptor's epoch.
    pub sphinx_key: NodePublicKey,
}

impl VerifiedDescriptor {
    /// The role the node asked for.
    pub fn role(&self) -> Role {
        self.descriptor.role()
    }
}

/// Signs a descriptor with the node's identity key.
pub fn sign_descriptor(keypair: &Keypair, descriptor: &NodeDescriptor) -> Option<SignedDescriptor> {
    let (descriptor, signature) = encode_and_sign(keypair, Context::Descriptor, descriptor)?;
    Some(SignedDescriptor {
        descriptor,
        signature,
    })
}

/// Checks a signed descriptor for `epoch` against the network's parameters (the minimum
/// protocol version; whether loopback and private addresses are admitted).
pub fn verify_descriptor(
    signed: &SignedDescriptor,
    epoch: u64,
    parameters: &NetworkParameters,
) -> Result<VerifiedDescriptor, DescriptorError> {
    let min_protocol_version = parameters.min_protocol_version;
    if signed.descriptor.len() > MAX_DESCRIPTOR_BYTES {
        return Err(DescriptorError::Malformed);
    }
    let descriptor =
        NodeDescriptor::decode(&signed.descriptor[..]).map_err(|_| DescriptorError::Malformed)?;
    let identity = PublicKey::try_decode_protobuf(&descriptor.identity)
        .map_err(|_| DescriptorError::BadIdentity)?;
    // The encoding must be canonical: one key, one byte string, one admission.
    if identity.clone().try_into_ed25519().is_err()
        || identity.encode_protobuf() != descriptor.identity
    {
        return Err(DescriptorError::BadIdentity);
    }
    if !verify(
        &identity,
        Context::Descriptor,
        &signed.descriptor,
        &signed.signature,
    ) {
        return Err(DescriptorError::BadSignature);
    }
    if descriptor.epoch != epoch {
        return Err(DescriptorError::WrongEpoch {
            got: descriptor.epoch,
            expected: epoch,
        });
    }
    if descriptor.protocol_version < min_protocol_version {
        return Err(DescriptorError::VersionTooLow {
            got: descriptor.protocol_version,
            min: min_protocol_version,
        });
    }
    if !matches!(descriptor.role(), Role::Mix | Role::Gateway) {
        return Err(DescriptorError::NoRole);
    }
    if descriptor.addresses.is_empty() || descriptor.addresses.len() > MAX_ADDRESSES {
        return Err(DescriptorError::BadAddresses);
    }
    let peer_id = identity.to_peer_id();
    for a in &descriptor.addresses {
        match check_address(a, Some(&peer_id), parameters.test_network) {
            Ok(_) => {}
            Err(AddressError::NotPublic) => return Err(DescriptorError::NotPublicAddress),
            Err(_) => return Err(DescriptorError::BadAddresses),
        }
    }
    let mut previous = None;
    let mut own = None;
    for key in &descriptor.sphinx_keys {
        if previous.is_some_and(|p| key.epoch <= p) {
            return Err(DescriptorError::BadSphinxKey(key.epoch));
        }
        previous = Some(key.epoch);
        if key.epoch > epoch.saturating_add(MAX_KEYS_AHEAD) {
            return Err(DescriptorError::KeyTooFarAhead {
                key_epoch: key.epoch,
                epoch,
            });
        }
        let bytes: [u8; 32] = key
            .sphinx_public_key
            .as_slice()
            .try_into()
            .map_err(|_| DescriptorError::BadSphinxKey(key.epoch))?;
        let public =
            NodePublicKey::from_bytes(bytes).ok_or(DescriptorError::BadSphinxKey(key.epoch))?;
        if key.epoch == epoch {
            own = Some(public);
        }
    }
    let sphinx_key = own.ok_or(DescriptorError::BadSphinxKey(epoch))?;
    Ok(VerifiedDescriptor {
        signed: signed.clone(),
        peer_id,
        descriptor,
        sphinx_key,
    })
}
