//! Sphinx key pairs of mix nodes and gateways.
//!
//! A node holds one key pair per epoch (see [`crate::KeyRing`]); its public half goes into the
//! node's descriptor and from there into the consensus. Keys are elements of the Ristretto group
//! over Curve25519: prime order and canonical encodings, so no cofactor or malleability caveats.

use std::fmt;

use curve25519_dalek::{
    constants::RISTRETTO_BASEPOINT_TABLE,
    ristretto::{CompressedRistretto, RistrettoPoint},
    scalar::Scalar,
};
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A node's secret Sphinx key for one epoch. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NodeSecretKey {
    scalar: Scalar,
    /// `scalar / 2`: batched unwrapping computes `(x/2)·E` and gets the encoding of `x·E` from
    /// dalek's batch double-and-encode, which needs no square root (see `peel.rs`).
    half: Scalar,
}

impl NodeSecretKey {
    /// A fresh random key.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_scalar(Scalar::random(rng))
    }

    /// Restores a key from its 32-byte encoding; `None` if it is not a canonical scalar.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        Option::from(Scalar::from_canonical_bytes(bytes)).map(Self::from_scalar)
    }

    fn from_scalar(scalar: Scalar) -> Self {
        NodeSecretKey {
            half: scalar * half(),
            scalar,
        }
    }

    /// The 32-byte encoding, for the node's key store.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.scalar.to_bytes()
    }

    /// The matching public key, to publish in the node's descriptor.
    pub fn public_key(&self) -> NodePublicKey {
        let point = RistrettoPoint::mul_base(&self.scalar);
        NodePublicKey {
            bytes: point.compress().to_bytes(),
            point,
        }
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.scalar
    }

    /// `x / 2` (mod the group order).
    pub(crate) fn half(&self) -> &Scalar {
        &self.half
    }
}

/// `1/2` modulo the group order: the group has odd (prime) order, so halving is a bijection.
pub(crate) fn half() -> Scalar {
    Scalar::from(2u8).invert()
}

impl fmt::Debug for NodeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecretKey(..)")
    }
}

/// A node's public Sphinx key for one epoch, as published in the consensus.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePublicKey {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

impl NodePublicKey {
    /// Decodes a published key; `None` if the bytes are not a valid, non-identity element.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        let point = CompressedRistretto(bytes).decompress()?;
        if point == RistrettoPoint::default() {
            return None;
        }
        Some(NodePublicKey { bytes, point })
    }

    /// The 32-byte encoding that goes into descriptors and the consensus.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    pub(crate) fn point(&self) -> &RistrettoPoint {
        &self.point
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey(")?;
        for b in &self.bytes[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Computes `scalar * base` for the fixed base point; used for ephemeral elements.
pub(crate) fn mul_base(scalar: &Scalar) -> RistrettoPoint {
    RISTRETTO_BASEPOINT_TABLE * scalar
}

#[cfg(test)]
mod tests {
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    use super::*;

    #[test]
    fn secret_round_trips_and_public_matches() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let sk = NodeSecretKey::random(&mut rng);
        let restored = NodeSecretKey::from_bytes(sk.to_bytes()).map(|k| k.public_key());
        assert_eq!(restored, Some(sk.public_key()));
        let pk = sk.public_key();
        assert_eq!(NodePublicKey::from_bytes(pk.to_bytes()), Some(pk));
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert!(NodePublicKey::from_bytes([0; 32]).is_none(), "identity");
        assert!(
            NodePublicKey::from_bytes([0xff; 32]).is_none(),
            "not canonical"
        );
        assert!(
            NodeSecretKey::from_bytes([0xff; 32]).is_none(),
            "not a canonical scalar"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let sk = NodeSecretKey::random(&mut ChaCha20Rng::from_seed([2; 32]));
        assert_eq!(format!("{sk:?}"), "NodeSecretKey(..)");
    }

    #[test]
    fn half_doubles_back() {
        let sk = NodeSecretKey::random(&mut ChaCha20Rng::from_seed([3; 32]));
        assert_eq!(sk.half() + sk.half(), *sk.scalar());
    }
}
