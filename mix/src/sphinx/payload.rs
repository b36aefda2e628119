//! The payload layer: how one hop's (or a SURB reply key's) encryption of the body is done.
//!
//! This is the one function boundary of the body's encryption in format v2: [`PayloadLayer`]
//! says which key a layer uses ([`PayloadLayer::hop`], [`PayloadLayer::reply`]) and applies it
//! ([`PayloadLayer::wrap`] on the sender's side, [`PayloadLayer::peel`] at a hop). Everything
//! else (`create.rs`, `peel.rs`, `surb.rs`) only calls these, so a later change of the payload
//! layer (issue 14) touches this file alone and, before a release, needs no second version bump.
//!
//! v2's layer is HCTR2-AES-256 under an empty tweak ([`super::hctr2`]): a strong pseudorandom
//! permutation over the whole body, so one flipped bit anywhere turns the whole plaintext,
//! including its 16-byte zero tag, into noise at the end of the route; tampering is caught there,
//! and a tagging attacker learns nothing about where the body went.

use std::sync::LazyLock;

use zeroize::Zeroize;

use super::hctr2::Hctr2;

const REPLY_LAYER_CONTEXT: &str = "p2pmix 2026-12 sphinx v2 reply layer";
static REPLY_KDF: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(REPLY_LAYER_CONTEXT));

/// The tweak every layer uses: every key serves one packet, so the tweak has nothing to separate.
const TWEAK: &[u8] = &[];

/// One layer of the body's encryption.
pub(crate) struct PayloadLayer(Hctr2);

impl PayloadLayer {
    /// A hop's layer, from the 32-byte payload key of its key derivation.
    pub(crate) fn hop(key: &[u8; 32]) -> Self {
        PayloadLayer(Hctr2::new(key))
    }

    /// The layer a SURB's replier applies, from the SURB's 32-byte reply key.
    pub(crate) fn reply(reply_key: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        REPLY_KDF
            .clone()
            .update(reply_key)
            .finalize_xof()
            .fill(&mut key);
        let layer = PayloadLayer(Hctr2::new(&key));
        key.zeroize();
        layer
    }

    /// Puts this layer on `body` (the sender's side; a SURB's creator re-applies hop layers with
    /// it). Bodies shorter than one 16-byte block are left unchanged; the geometry never has
    /// them.
    pub(crate) fn wrap(&self, body: &mut [u8]) {
        self.0.encrypt(TWEAK, body);
    }

    /// Takes this layer off `body` (a hop's side).
    pub(crate) fn peel(&self, body: &mut [u8]) {
        self.0.decrypt(TWEAK, body);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn peel_inverts_wrap(key in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 48..3000)) {
            for layer in [PayloadLayer::hop(&key), PayloadLayer::reply(&key)] {
                let mut body = data.clone();
                layer.wrap(&mut body);
                prop_assert_ne!(&body, &data);
                layer.peel(&mut body);
                prop_assert_eq!(&body, &data);
            }
        }
    }

    #[test]
    fn reply_and_hop_layers_differ_under_one_key() {
        let mut a = vec![0u8; 64];
        let mut b = a.clone();
        PayloadLayer::hop(&[1; 32]).wrap(&mut a);
        PayloadLayer::reply(&[1; 32]).wrap(&mut b);
        assert_ne!(a, b);
    }
}
