//! Per-hop key derivation, the routing-information stream cipher and the header MAC.
//!
//! All symmetric keys of a hop come from one BLAKE3 key derivation over the hop's shared secret
//! (the compressed Ristretto point `x * E`), under a context string that names the format version.

use chacha20::{ChaCha20, cipher::KeyIvInit};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{geometry::MAC_SIZE, lioness::Lioness};

const HOP_KEYS_CONTEXT: &str = "p2pmix 2026-11 sphinx v1 hop keys";

/// Everything one hop needs, derived from its shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HopKeys {
    routing: [u8; 32],
    mac: [u8; 32],
    /// Replay tag: equal for two packets exactly when their shared secrets are equal.
    pub(crate) tag: [u8; 32],
    pub(crate) payload: Lioness,
}

impl HopKeys {
    pub(crate) fn derive(shared_secret: &[u8; 32]) -> Self {
        let mut okm = [0u8; 96 + Lioness::KEY_MATERIAL];
        let mut hasher = blake3::Hasher::new_derive_key(HOP_KEYS_CONTEXT);
        hasher.update(shared_secret);
        hasher.finalize_xof().fill(&mut okm);
        let mut routing = [0u8; 32];
        let mut mac = [0u8; 32];
        let mut tag = [0u8; 32];
        routing.copy_from_slice(&okm[0..32]);
        mac.copy_from_slice(&okm[32..64]);
        tag.copy_from_slice(&okm[64..96]);
        let payload = Lioness::from_key_material(&okm[96..]);
        okm.zeroize();
        HopKeys {
            routing,
            mac,
            tag,
            payload,
        }
    }

    /// The keystream that encrypts this hop's routing information (ChaCha20, nonce 0: each key
    /// is used for exactly one packet).
    pub(crate) fn routing_cipher(&self) -> ChaCha20 {
        ChaCha20::new(&self.routing.into(), &[0u8; 12].into())
    }

    /// Header MAC: keyed BLAKE3 over key id, element and routing information, cut to 16 bytes.
    pub(crate) fn mac(&self, key_id: u8, element: &[u8], routing: &[u8]) -> [u8; MAC_SIZE] {
        let mut hasher = blake3::Hasher::new_keyed(&self.mac);
        hasher.update(&[key_id]);
        hasher.update(element);
        hasher.update(routing);
        let mut out = [0u8; MAC_SIZE];
        hasher.finalize_xof().fill(&mut out);
        out
    }

    /// Constant-time check of a received MAC.
    pub(crate) fn verify_mac(
        &self,
        key_id: u8,
        element: &[u8],
        routing: &[u8],
        received: &[u8],
    ) -> bool {
        let expected = self.mac(key_id, element, routing);
        expected.ct_eq(received).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separates_keys() {
        let a = HopKeys::derive(&[7; 32]);
        let b = HopKeys::derive(&[7; 32]);
        let c = HopKeys::derive(&[8; 32]);
        assert_eq!(a.tag, b.tag);
        assert_ne!(a.tag, c.tag);
        assert_ne!(a.routing, a.mac);
        assert_ne!(a.mac, a.tag);
    }

    #[test]
    fn mac_verification() {
        let k = HopKeys::derive(&[1; 32]);
        let mac = k.mac(3, b"element", b"routing");
        assert!(k.verify_mac(3, b"element", b"routing", &mac));
        assert!(!k.verify_mac(4, b"element", b"routing", &mac));
        assert!(!k.verify_mac(3, b"element", b"routinh", &mac));
        assert!(!k.verify_mac(3, b"element", b"routing", &mac[..15]));
    }
}
