//! HCTR2 over AES-256 (Crowley, Huckleberry and Biggers, "Length-preserving encryption with
//! HCTR2", 2021): a tweakable wide-block cipher, a strong pseudorandom permutation over the whole
//! input, built from one AES block encryption, the XCTR counter mode and two POLYVAL hashes.
//!
//! ```text
//! M ‖ N = P (|M| = 16);  MM = M ⊕ H(T, N);  UU = E(MM);  S = MM ⊕ UU ⊕ L;
//! V = N ⊕ XCTR(S);  U = UU ⊕ H(T, V);  C = U ‖ V
//! h = E(0), L = E(le128(1)), H(T, X) = POLYVAL(h, le128(2·|T|bits + 2 + [16 ∤ |X|]) ‖ pad(T) ‖ pad(X [‖ 1]))
//! XCTR(S)_i = E(S ⊕ le128(i)), i = 1, 2, …
//! ```
//! AES runs on AES-NI or VAES and POLYVAL on CLMUL where the CPU has them (the `aes` and
//! `polyval` crates pick at run time); elsewhere both fall back to constant-time software. No
//! well-kept HCTR2 crate exists (the `hctr2` crate needs a nightly compiler and encrypts one
//! block at a time), so this is ours, checked against the authors' published test vectors.

use aes::{
    Aes256,
    cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit},
};
use polyval::{Polyval, universal_hash::UniversalHash};
use zeroize::{Zeroize, Zeroizing};

/// AES and POLYVAL block size.
const BLOCK: usize = 16;
/// Keystream blocks encrypted per AES call: enough to fill the AES pipeline (8 blocks on AES-NI,
/// 16 or 32 on VAES), small enough for the stack.
const CHUNK_BLOCKS: usize = 32;

/// One HCTR2-AES-256 key: the AES key schedule, the hash key `h` and the mask `L`.
pub(crate) struct Hctr2 {
    aes: Aes256,
    /// POLYVAL keyed with `h = E(0)`, to be cloned for each hash.
    poly: Polyval,
    l: Zeroizing<[u8; BLOCK]>,
}

impl Hctr2 {
    /// Bytes of key.
    pub(crate) const KEY_SIZE: usize = 32;

    /// The cipher under `key`.
    pub(crate) fn new(key: &[u8; Self::KEY_SIZE]) -> Self {
        let aes = Aes256::new(&Array::from(*key));
        let mut h = Array::from([0u8; BLOCK]);
        aes.encrypt_block(&mut h);
        let mut l = Array::from(1u128.to_le_bytes());
        aes.encrypt_block(&mut l);
        let poly = Polyval::new(&h);
        let hctr2 = Hctr2 {
            aes,
            poly,
            l: Zeroizing::new(l.into()),
        };
        h.zeroize();
        l.zeroize();
        hctr2
    }

    /// Encrypts `data` in place under `tweak`. Inputs shorter than one block are left unchanged
    /// (the Sphinx geometry never has them).
    pub(crate) fn encrypt(&self, tweak: &[u8], data: &mut [u8]) {
        let Some((m, n)) = data.split_first_chunk_mut::<BLOCK>() else {
            return;
        };
        let mut mm = xor(m, &self.hash(tweak, n));
        let mut uu = Array::from(mm);
        self.aes.encrypt_block(&mut uu);
        let mut s = xor(&xor(&mm, &uu.into()), &self.l);
        xctr(&self.aes, &s, n);
        *m = xor(&uu.into(), &self.hash(tweak, n));
        mm.zeroize();
        uu.zeroize();
        s.zeroize();
    }

    /// Decrypts `data` in place under `tweak` (the inverse of [`Self::encrypt`]).
    pub(crate) fn decrypt(&self, tweak: &[u8], data: &mut [u8]) {
        let Some((u, v)) = data.split_first_chunk_mut::<BLOCK>() else {
            return;
        };
        let mut uu = xor(u, &self.hash(tweak, v));
        let mut mm = Array::from(uu);
        self.aes.decrypt_block(&mut mm);
        let mut s = xor(&xor(&mm.into(), &uu), &self.l);
        xctr(&self.aes, &s, v);
        *u = xor(&mm.into(), &self.hash(tweak, v));
        mm.zeroize();
        uu.zeroize();
        s.zeroize();
    }

    /// `H(T, X)`: POLYVAL over the length block, the padded tweak and the padded input (with a
    /// one-byte `1` marker when the input does not fill its last block).
    fn hash(&self, tweak: &[u8], x: &[u8]) -> [u8; BLOCK] {
        let mut poly = self.poly.clone();
        let ragged = !x.len().is_multiple_of(BLOCK);
        let lengths = (tweak.len() as u128) * 8 * 2 + 2 + u128::from(ragged);
        poly.update(&[Array::from(lengths.to_le_bytes())]);
        poly.update_padded(tweak);
        let full = x.len() - x.len() % BLOCK;
        let (head, tail) = x.split_at(full);
        poly.update_padded(head);
        if ragged {
            let mut last = [0u8; BLOCK];
            last[..tail.len()].copy_from_slice(tail);
            last[tail.len()] = 1;
            poly.update(&[Array::from(last)]);
            last.zeroize();
        }
        poly.finalize().into()
    }
}

/// XORs `data` with the XCTR keystream of `aes` for nonce `s`: blocks `E(s ⊕ le128(i))` for
/// `i = 1, 2, …`, encrypted [`CHUNK_BLOCKS`] at a time so that AES-NI or VAES stay pipelined.
pub(crate) fn xctr(aes: &Aes256, s: &[u8; BLOCK], data: &mut [u8]) {
    let nonce = u128::from_le_bytes(*s);
    let mut stream = [[0u8; BLOCK]; CHUNK_BLOCKS];
    let mut counter = 1u128;
    for chunk in data.chunks_mut(CHUNK_BLOCKS * BLOCK) {
        let blocks = chunk.len().div_ceil(BLOCK);
        for block in &mut stream[..blocks] {
            *block = (nonce ^ counter).to_le_bytes();
            counter += 1;
        }
        aes.encrypt_blocks(Array::cast_slice_from_core_mut(&mut stream[..blocks]));
        let keystream = &stream[..blocks];
        let (full, tail) = chunk.as_chunks_mut::<BLOCK>();
        for (d, k) in full.iter_mut().zip(keystream) {
            *d = (u128::from_ne_bytes(*d) ^ u128::from_ne_bytes(*k)).to_ne_bytes();
        }
        if let Some(last) = keystream.get(full.len()) {
            for (d, k) in tail.iter_mut().zip(last) {
                *d ^= k;
            }
        }
    }
    stream.zeroize();
}

fn xor(a: &[u8; BLOCK], b: &[u8; BLOCK]) -> [u8; BLOCK] {
    (u128::from_ne_bytes(*a) ^ u128::from_ne_bytes(*b)).to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        if s == "-" {
            return Vec::new();
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn published_test_vectors() {
        let vectors = include_str!("testdata/hctr2-aes256.txt");
        let mut checked = 0;
        for line in vectors.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<Vec<u8>> = line.split(' ').map(unhex).collect();
            let [key, tweak, plain, cipher] = &fields[..] else {
                panic!("bad vector line {line}");
            };
            let hctr2 = Hctr2::new(&key[..].try_into().unwrap());
            let mut data = plain.clone();
            hctr2.encrypt(tweak, &mut data);
            assert_eq!(&data, cipher, "encrypting {} bytes", plain.len());
            hctr2.decrypt(tweak, &mut data);
            assert_eq!(&data, plain, "decrypting {} bytes", plain.len());
            checked += 1;
        }
        assert_eq!(checked, 7);
    }

    #[test]
    fn short_inputs_are_left_alone() {
        let hctr2 = Hctr2::new(&[1; 32]);
        let mut data = [5u8; 15];
        hctr2.encrypt(&[], &mut data);
        assert_eq!(data, [5u8; 15]);
    }

    proptest! {
        #[test]
        fn decrypt_inverts_encrypt(key in any::<[u8; 32]>(), tweak in proptest::collection::vec(any::<u8>(), 0..40), data in proptest::collection::vec(any::<u8>(), 16..1200)) {
            let hctr2 = Hctr2::new(&key);
            let mut block = data.clone();
            hctr2.encrypt(&tweak, &mut block);
            prop_assert_ne!(&block, &data);
            hctr2.decrypt(&tweak, &mut block);
            prop_assert_eq!(block, data);
        }

        /// A strong pseudorandom permutation: one flipped ciphertext bit anywhere turns every
        /// 16-byte block of the plaintext into noise, the first (where Sphinx keeps its zero
        /// tag) and the last alike.
        #[test]
        fn one_flipped_bit_scrambles_every_block(bit in 0usize..(2064 * 8)) {
            let hctr2 = Hctr2::new(&[9; 32]);
            let plain = vec![0u8; 2064];
            let mut block = plain.clone();
            hctr2.encrypt(&[], &mut block);
            block[bit / 8] ^= 1 << (bit % 8);
            hctr2.decrypt(&[], &mut block);
            for (i, (got, was)) in block.chunks(16).zip(plain.chunks(16)).enumerate() {
                prop_assert_ne!(got, was, "block {} survived", i);
            }
        }
    }
}
