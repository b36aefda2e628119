//! Per-hop key derivation, the routing-information stream cipher and the header MAC.
//!
//! All symmetric keys of a hop come from one BLAKE3 key derivation over the hop's shared secret
//! (the Ristretto encoding of `x·E`), under a context string that names the format version. Each
//! key serves exactly one packet, which is what lets the routing stream run from counter 1 under
//! a zero nonce and the MAC be a one-time universal-hash authenticator. The choices were made by
//! measurement (`cargo bench -p p2pmix-mix --bench primitives`; BENCHMARKS.md).

use std::sync::LazyLock;

use aes::{Aes256, cipher::KeyInit};
use polyval::{Polyval, universal_hash::UniversalHash};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{
    geometry::{ELEMENT_SIZE, MAC_SIZE},
    hctr2::xctr,
    payload::PayloadLayer,
};

const HOP_KEYS_CONTEXT: &str = "p2pmix 2026-12 sphinx v2 hop keys";
/// The derivation's context key, computed once (it is the same for every packet).
static HOP_KDF: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(HOP_KEYS_CONTEXT));

/// Everything one hop needs, derived from its shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HopKeys {
    /// AES-256 key of the routing stream.
    routing: [u8; 32],
    /// POLYVAL key `h` and one-time pad of the header MAC.
    mac_hash: [u8; 16],
    mac_pad: [u8; 16],
    /// Replay tag: equal for two packets exactly when their shared secrets are equal.
    pub(crate) tag: [u8; 32],
    /// Key of this hop's payload layer.
    payload: [u8; 32],
}

impl HopKeys {
    /// The 128 bytes of key material: routing key (32) ‖ MAC hash key (16) ‖ MAC pad (16) ‖
    /// replay tag (32) ‖ payload key (32).
    pub(crate) fn material(shared_secret: &[u8; 32]) -> [u8; 128] {
        let mut okm = [0u8; 128];
        HOP_KDF
            .clone()
            .update(shared_secret)
            .finalize_xof()
            .fill(&mut okm);
        okm
    }

    pub(crate) fn derive(shared_secret: &[u8; 32]) -> Self {
        let mut okm = Self::material(shared_secret);
        let mut keys = HopKeys {
            routing: [0; 32],
            mac_hash: [0; 16],
            mac_pad: [0; 16],
            tag: [0; 32],
            payload: [0; 32],
        };
        keys.routing.copy_from_slice(&okm[0..32]);
        keys.mac_hash.copy_from_slice(&okm[32..48]);
        keys.mac_pad.copy_from_slice(&okm[48..64]);
        keys.tag.copy_from_slice(&okm[64..96]);
        keys.payload.copy_from_slice(&okm[96..128]);
        okm.zeroize();
        keys
    }

    /// XORs `data` with this hop's routing keystream from its start: AES-256 in counter mode
    /// (XCTR with a zero nonce: blocks `AES(le128(i))`, `i = 1, 2, …`).
    pub(crate) fn apply_routing_stream(&self, data: &mut [u8]) {
        let aes = Aes256::new(&self.routing.into());
        xctr(&aes, &[0; 16], data);
    }

    /// Header MAC: a one-time POLYVAL authenticator,
    /// `POLYVAL(h; E ‖ pad(routing) ‖ version ‖ 0^7 ‖ le64(8·|routing|)) ⊕ pad`.
    pub(crate) fn mac(&self, version: u8, element: &[u8], routing: &[u8]) -> [u8; MAC_SIZE] {
        let mut poly = Polyval::new(&self.mac_hash.into());
        // The element is two whole blocks; a short slice (never the case) is padded.
        debug_assert_eq!(element.len(), ELEMENT_SIZE);
        poly.update_padded(element);
        poly.update_padded(routing);
        let mut last = [0u8; 16];
        last[0] = version;
        last[8..].copy_from_slice(&((routing.len() as u64) * 8).to_le_bytes());
        poly.update(&[last.into()]);
        let mut tag: [u8; MAC_SIZE] = poly.finalize().into();
        for (t, p) in tag.iter_mut().zip(&self.mac_pad) {
            *t ^= p;
        }
        tag
    }

    /// Constant-time check of a received MAC.
    pub(crate) fn verify_mac(
        &self,
        version: u8,
        element: &[u8],
        routing: &[u8],
        received: &[u8],
    ) -> bool {
        let expected = self.mac(version, element, routing);
        expected.ct_eq(received).into()
    }

    /// This hop's layer of the body.
    pub(crate) fn payload_layer(&self) -> PayloadLayer {
        PayloadLayer::hop(&self.payload)
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
        assert_ne!(a.routing, a.payload);
        assert_ne!(a.mac_hash, a.mac_pad);
        assert_ne!(a.routing, a.tag);
    }

    #[test]
    fn mac_verification() {
        let k = HopKeys::derive(&[1; 32]);
        let element = [9u8; 32];
        let mac = k.mac(3, &element, b"routing");
        assert!(k.verify_mac(3, &element, b"routing", &mac));
        assert!(!k.verify_mac(4, &element, b"routing", &mac), "version");
        assert!(!k.verify_mac(3, &[8; 32], b"routing", &mac), "element");
        assert!(!k.verify_mac(3, &element, b"routinh", &mac), "routing");
        assert!(
            !k.verify_mac(3, &element, b"routing\0", &mac),
            "length is bound"
        );
        assert!(!k.verify_mac(3, &element, b"routing", &mac[..15]));
        assert!(
            !HopKeys::derive(&[2; 32]).verify_mac(3, &element, b"routing", &mac),
            "other key"
        );
    }

    #[test]
    fn routing_stream_is_deterministic_and_keyed() {
        let k = HopKeys::derive(&[5; 32]);
        let mut whole = [0u8; 100];
        k.apply_routing_stream(&mut whole);
        assert_ne!(whole, [0u8; 100]);
        let mut again = [0u8; 100];
        k.apply_routing_stream(&mut again);
        assert_eq!(whole, again, "deterministic");
        let mut other = [0u8; 100];
        HopKeys::derive(&[6; 32]).apply_routing_stream(&mut other);
        assert_ne!(whole, other);
    }
}
