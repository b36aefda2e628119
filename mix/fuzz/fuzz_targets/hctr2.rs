//! The body cipher (HCTR2-AES-256) on arbitrary keys, tweaks and inputs: never a panic, decrypt
//! inverts encrypt, and a ciphertext changed anywhere decrypts to a plaintext whose every 16-byte
//! block differs from the original (the strong-PRP property the Sphinx body relies on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix_mix::fuzzing::{hctr2_decrypt, hctr2_encrypt};

fuzz_target!(|data: &[u8]| {
    let Some((key, rest)) = data.split_first_chunk::<32>() else { return };
    let Some((&tweak_len, rest)) = rest.split_first() else { return };
    let (tweak, rest) = rest.split_at(usize::from(tweak_len % 48).min(rest.len()));
    let Some((&flip, plain)) = rest.split_first() else { return };
    let mut block = plain.to_vec();
    hctr2_encrypt(key, tweak, &mut block);
    if plain.len() < 16 {
        assert_eq!(block, plain, "short inputs are left alone");
        return;
    }
    let mut copy = block.clone();
    hctr2_decrypt(key, tweak, &mut copy);
    assert_eq!(copy, plain, "decrypt inverts encrypt");
    // Flip one bit, chosen by the input, and decrypt: nothing of the plaintext survives.
    let bit = (usize::from(flip) * 7919) % (block.len() * 8);
    block[bit / 8] ^= 1 << (bit % 8);
    hctr2_decrypt(key, tweak, &mut block);
    for (got, was) in block.chunks(16).zip(plain.chunks(16)) {
        // A full block survives with probability 2^-128; a short tail block with at most 2^-8
        // per byte, so only full blocks are checked.
        if got.len() == 16 {
            assert_ne!(got, was, "a plaintext block survived a flipped ciphertext bit");
        }
    }
});
