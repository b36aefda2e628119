//! Lioness: a wide-block cipher (a strong pseudorandom permutation over the whole body), built as
//! a four-round unbalanced Feistel network from ChaCha20 and keyed BLAKE3 (Anderson and Biham).
//!
//! Because every output bit depends on every input bit, one flipped bit anywhere in the body
//! turns the whole plaintext, including its 16-byte zero tag, into noise at the end of the route;
//! so tampering is caught, and a tagging attacker learns nothing about where the body went.
//!
//! The block splits into `L` (32 bytes) and `R` (the rest):
//! ```text
//! R ^= ChaCha20(L ^ k1);  L ^= BLAKE3(k2; R);  R ^= ChaCha20(L ^ k3);  L ^= BLAKE3(k4; R)
//! ```

use chacha20::{
    ChaCha20,
    cipher::{KeyIvInit, StreamCipher},
};
use zeroize::{Zeroize, ZeroizeOnDrop};

const HALF: usize = 32;
const SEED_CONTEXT: &str = "p2pmix 2026-11 sphinx v1 lioness seed";

/// The four round keys of one Lioness instance.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Lioness {
    keys: [[u8; 32]; 4],
}

impl Lioness {
    /// Bytes of key material [`Lioness::from_key_material`] takes.
    pub(crate) const KEY_MATERIAL: usize = 128;

    /// Round keys from 128 bytes of derived key material (shorter input leaves zero keys, so
    /// callers always pass exactly [`Self::KEY_MATERIAL`]).
    pub(crate) fn from_key_material(material: &[u8]) -> Self {
        let mut keys = [[0u8; 32]; 4];
        for (key, chunk) in keys.iter_mut().zip(material.chunks_exact(32)) {
            key.copy_from_slice(chunk);
        }
        Lioness { keys }
    }

    /// Round keys from a 32-byte seed (the extra layer a SURB's replier applies).
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let mut material = [0u8; Self::KEY_MATERIAL];
        let mut hasher = blake3::Hasher::new_derive_key(SEED_CONTEXT);
        hasher.update(seed);
        hasher.finalize_xof().fill(&mut material);
        let lioness = Self::from_key_material(&material);
        material.zeroize();
        lioness
    }

    /// Encrypts `block` in place. Blocks of 32 bytes or fewer are left unchanged; the geometry
    /// guarantees bodies of at least 48 bytes.
    pub(crate) fn encrypt(&self, block: &mut [u8]) {
        if block.len() <= HALF {
            return;
        }
        let (left, right) = block.split_at_mut(HALF);
        self.stream_round(0, left, right);
        self.hash_round(1, left, right);
        self.stream_round(2, left, right);
        self.hash_round(3, left, right);
    }

    /// Decrypts `block` in place (the inverse of [`Self::encrypt`]).
    pub(crate) fn decrypt(&self, block: &mut [u8]) {
        if block.len() <= HALF {
            return;
        }
        let (left, right) = block.split_at_mut(HALF);
        self.hash_round(3, left, right);
        self.stream_round(2, left, right);
        self.hash_round(1, left, right);
        self.stream_round(0, left, right);
    }

    fn stream_round(&self, round: usize, left: &[u8], right: &mut [u8]) {
        let mut key = [0u8; 32];
        for ((k, l), r) in key.iter_mut().zip(left).zip(&self.keys[round]) {
            *k = l ^ r;
        }
        ChaCha20::new(&key.into(), &[0u8; 12].into()).apply_keystream(right);
        key.zeroize();
    }

    fn hash_round(&self, round: usize, left: &mut [u8], right: &[u8]) {
        let mut digest = *blake3::keyed_hash(&self.keys[round], right).as_bytes();
        for (l, d) in left.iter_mut().zip(&digest) {
            *l ^= d;
        }
        digest.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn decrypt_inverts_encrypt(seed in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 33..600)) {
            let lioness = Lioness::from_seed(&seed);
            let mut block = data.clone();
            lioness.encrypt(&mut block);
            prop_assert_ne!(&block, &data);
            lioness.decrypt(&mut block);
            prop_assert_eq!(block, data);
        }

        #[test]
        fn one_flipped_bit_scrambles_everything(bit in 0usize..(200 * 8)) {
            let lioness = Lioness::from_seed(&[9; 32]);
            let plain = vec![0u8; 200];
            let mut block = plain.clone();
            lioness.encrypt(&mut block);
            block[bit / 8] ^= 1 << (bit % 8);
            lioness.decrypt(&mut block);
            // Both halves change: the zero tag in front and the data behind it.
            prop_assert_ne!(&block[..16], &plain[..16]);
            prop_assert_ne!(&block[100..], &plain[100..]);
        }
    }
}
