//! The recipient layer: the innermost payload layer of a forward packet, keyed to the recipient
//! client, so that the exit gateway (the last hop, which removes the last hop layer) sees
//! uniformly random bytes whatever the packet is.
//!
//! Without it the final hop of a forward message reads the plaintext body: its 16 zero tag bytes,
//! the payload's length and whatever framing lies inside, and the zero padding behind it. With
//! it, the body the final hop hands over is
//!
//! ```text
//! representative (32) ‖ HCTR2(k_r; 0^16 ‖ payload ‖ zero padding)
//! ```
//!
//! where the sender draws `e`, sends `E = e·G` as an Elligator representative (RFC 9496's
//! `MAP` inverted: 32 bytes uniformly distributed over all 2^256 strings, below) and
//! `k_r = BLAKE3-derive_key("… recipient layer", enc(e·X) ‖ representative ‖ X)`, `X` the
//! recipient's [`RecipientPublicKey`]. The recipient computes `enc(x·MAP(representative))`, the
//! same secret. Any changed bit anywhere (the representative included: it changes the key) fails
//! the zero tag at the recipient, as before.
//!
//! **Why the representative is uniform.** Every one of the `p` field elements maps to one group
//! element; a group element has between 0 and 16 preimages (`map_to_curve_inverse` lists 16
//! slots). The sender draws `e`, picks one of the 16 slots at random and keeps it if it holds a
//! preimage, else draws again: each field element then comes out with probability
//! `(1/ℓ)·(1/16)` per draw, the same for all, so the accepted one is uniform over the field
//! (on average about two draws). The top bit, which the map ignores, is drawn at random, and
//! field elements never exceed `p`, which differs from uniform 255-bit strings by `19/2^255`.
//! SURB replies and loop cover need no such layer: a reply's body is ciphertext under its reply
//! key at the gateway, loop cover is random bytes (its label, not its body, says it came back).

use curve25519_dalek::{
    ristretto::{CompressedRistretto, RistrettoPoint},
    scalar::Scalar,
};
use rand_core::CryptoRng;
use std::sync::LazyLock;
use zeroize::{Zeroize, Zeroizing};

use super::{error::OpenError, geometry::Geometry, hctr2::Hctr2, keys::mul_base};

/// Bytes the recipient layer takes from a forward packet's payload (the representative).
pub const REPRESENTATIVE_SIZE: usize = 32;

const LAYER_CONTEXT: &str = "p2pmix 2026-12 sphinx v2 recipient layer";
static LAYER_KDF: LazyLock<blake3::Hasher> =
    LazyLock::new(|| blake3::Hasher::new_derive_key(LAYER_CONTEXT));
const SEED_CONTEXT: &str = "p2pmix 2026-12 recipient key from seed";

/// A client's secret key for the recipient layer (a Ristretto255 scalar). Zeroized on drop.
pub struct RecipientKey {
    scalar: Scalar,
    public: RecipientPublicKey,
}

impl Drop for RecipientKey {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipientKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl RecipientKey {
    /// A fresh random key.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_scalar(Scalar::random(rng))
    }

    /// The key derived from a 32-byte secret seed (a client derives it from its end-to-end
    /// static key, so that one secret file keeps its address).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mut wide = Zeroizing::new([0u8; 64]);
        blake3::Hasher::new_derive_key(SEED_CONTEXT)
            .update(seed)
            .finalize_xof()
            .fill(&mut wide[..]);
        Self::from_scalar(Scalar::from_bytes_mod_order_wide(&wide))
    }

    fn from_scalar(scalar: Scalar) -> Self {
        let point = mul_base(&scalar);
        RecipientKey {
            scalar,
            public: RecipientPublicKey {
                bytes: point.compress().to_bytes(),
                point,
            },
        }
    }

    /// The public key senders encrypt the recipient layer to.
    pub fn public_key(&self) -> RecipientPublicKey {
        self.public
    }

    /// Takes the recipient layer off a forward packet's final `body` in place, checks the
    /// integrity tag and returns the payload (`geometry.payload_size() - 32` bytes).
    pub fn open<'a>(&self, geometry: &Geometry, body: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        if body.len() != geometry.body_size() {
            return Err(OpenError::WrongSize {
                expected: geometry.body_size(),
                got: body.len(),
            });
        }
        let (rep, inner) = body.split_at_mut(REPRESENTATIVE_SIZE);
        let mut rep_bytes = [0u8; 32];
        rep_bytes.copy_from_slice(rep);
        let element = RistrettoPoint::map_to_curve(rep_bytes);
        let shared = Zeroizing::new((element * self.scalar).compress().to_bytes());
        layer(&shared, &rep_bytes, &self.public.bytes).decrypt(&[], inner);
        let body: &'a [u8] = body;
        open_inner(geometry, &body[REPRESENTATIVE_SIZE..])
    }
}

/// The tag check on the inner body (its length is one representative short of a body).
fn open_inner<'a>(geometry: &Geometry, inner: &'a [u8]) -> Result<&'a [u8], OpenError> {
    use subtle::ConstantTimeEq;
    let tag_size = super::geometry::PAYLOAD_TAG_SIZE;
    if inner.len() != geometry.body_size() - REPRESENTATIVE_SIZE {
        return Err(OpenError::WrongSize {
            expected: geometry.body_size(),
            got: inner.len() + REPRESENTATIVE_SIZE,
        });
    }
    let (tag, payload) = inner.split_at(tag_size);
    if bool::from(tag.ct_eq(&[0u8; 16])) {
        Ok(payload)
    } else {
        Err(OpenError::Tampered)
    }
}

/// A client's public key for the recipient layer, as its address carries it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecipientPublicKey {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

impl RecipientPublicKey {
    /// Decodes a published key; `None` if the bytes are not a valid, non-identity element.
    pub fn from_bytes(bytes: [u8; 32]) -> Option<Self> {
        let point = CompressedRistretto(bytes).decompress()?;
        if point == RistrettoPoint::default() {
            return None;
        }
        Some(RecipientPublicKey { bytes, point })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }
}

impl std::fmt::Debug for RecipientPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecipientPublicKey({}..)", hex8(&self.bytes))
    }
}

fn hex8(bytes: &[u8; 32]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn layer(shared: &[u8; 32], rep: &[u8; 32], recipient: &[u8; 32]) -> Hctr2 {
    let mut key = Zeroizing::new([0u8; 32]);
    LAYER_KDF
        .clone()
        .update(shared)
        .update(rep)
        .update(recipient)
        .finalize_xof()
        .fill(&mut key[..]);
    Hctr2::new(&key)
}

/// A fresh ephemeral scalar and the uniform representative of its element (see the module
/// documentation for why the rejection makes it uniform).
fn ephemeral<R: CryptoRng + ?Sized>(rng: &mut R) -> (Scalar, [u8; 32]) {
    loop {
        let e = Scalar::random(rng);
        let slots = mul_base(&e).map_to_curve_inverse();
        let pick = (rng.next_u32() & 15) as usize;
        if let Some(mut rep) = Option::<[u8; 32]>::from(slots[pick]) {
            // The map ignores the top bit; drawing it makes the 32 bytes uniform.
            rep[31] |= (rng.next_u32() as u8) & 0x80;
            return (e, rep);
        }
        let mut e = e;
        e.zeroize();
    }
}

/// Puts the recipient layer on a plaintext `body` laid out as `32 bytes (overwritten) ‖ tag ‖
/// payload ‖ padding` (`seal_body` over the body after the representative).
pub(crate) fn seal<R: CryptoRng + ?Sized>(
    recipient: &RecipientPublicKey,
    body: &mut [u8],
    rng: &mut R,
) {
    let (mut e, rep) = ephemeral(rng);
    let shared = Zeroizing::new((recipient.point * e).compress().to_bytes());
    e.zeroize();
    let (rep_out, inner) = body.split_at_mut(REPRESENTATIVE_SIZE);
    rep_out.copy_from_slice(&rep);
    layer(&shared, &rep, &recipient.bytes).encrypt(&[], inner);
}

#[cfg(test)]
mod tests {
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    use super::*;
    use crate::sphinx::create::seal_body;

    #[test]
    fn representatives_map_back_to_their_element() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..200 {
            let (e, rep) = ephemeral(&mut rng);
            assert_eq!(RistrettoPoint::map_to_curve(rep), mul_base(&e));
        }
    }

    #[test]
    fn a_sealed_body_opens_for_its_recipient_only_and_any_flip_is_caught() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let g = Geometry::DEFAULT;
        let bob = RecipientKey::random(&mut rng);
        let eve = RecipientKey::from_seed(&[7; 32]);
        let mut body = vec![0u8; g.body_size()];
        seal_body(b"hello", &mut body[REPRESENTATIVE_SIZE..]);
        seal(&bob.public_key(), &mut body, &mut rng);
        let sealed = body.clone();
        let opened = bob.open(&g, &mut body).unwrap();
        assert_eq!(&opened[..5], b"hello");
        assert!(opened[5..].iter().all(|&b| b == 0));
        assert_eq!(eve.open(&g, &mut sealed.clone()), Err(OpenError::Tampered));
        for bit in [0usize, 7, 255, 256, 300, 8 * sealed.len() - 1] {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // Bit 255 is the representative's top bit: the map ignores it, the key does not.
            assert_eq!(
                bob.open(&g, &mut flipped),
                Err(OpenError::Tampered),
                "bit {bit}"
            );
        }
        assert!(matches!(
            bob.open(&g, &mut [0u8; 10]),
            Err(OpenError::WrongSize { .. })
        ));
        // A key restored from its seed is the same key.
        assert_eq!(
            RecipientKey::from_seed(&[7; 32]).public_key(),
            eve.public_key()
        );
    }

    /// Each bit of the representative is one with probability 1/2 (the top bit too, and the
    /// lowest, which a canonical Ristretto encoding always has zero).
    #[test]
    fn representative_bits_are_balanced() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let n = 2000;
        let mut ones = [0u32; 256];
        for _ in 0..n {
            let (_, rep) = ephemeral(&mut rng);
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += u32::from((rep[bit / 8] >> (bit % 8)) & 1);
            }
        }
        // 6 standard deviations of Binomial(2000, 1/2) is about 134.
        for (bit, &count) in ones.iter().enumerate() {
            assert!(count.abs_diff(n / 2) < 134, "bit {bit}: {count} of {n}");
        }
    }
}
