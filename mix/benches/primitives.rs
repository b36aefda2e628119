//! The symmetric primitives of one Sphinx hop, each against the alternative it was chosen over,
//! at the sizes a hop uses them (default geometry: 2064-byte body, 330-byte routing stream,
//! 308-byte MAC input, 128 bytes of derived keys). Every figure includes the key setup, since
//! every key serves one packet.
//!
//! `cargo bench -p p2pmix-mix --bench primitives`
//!
//! Groups: `parts` (what HCTR2 is made of: AES-256 over 128 blocks, its counter mode over 2 KiB,
//! its key schedule, POLYVAL over 2 KiB), `body` (HCTR2-AES-256 against format v1's Lioness over
//! ChaCha20 and BLAKE3),
//! `routing_stream` (AES-256 in counter mode against ChaCha20), `mac` (a one-time POLYVAL
//! authenticator against keyed BLAKE3), `kdf` (BLAKE3 key derivation with the context key
//! derived per call or once).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, sync::LazyLock, time::Duration};

use aes::{
    Aes256,
    cipher::{Array, BlockCipherEncrypt, KeyInit},
};
use chacha20::{
    ChaCha20,
    cipher::{KeyIvInit, StreamCipher},
};
use criterion::{Criterion, criterion_group, criterion_main};
use polyval::{Polyval, universal_hash::UniversalHash};

const BODY: usize = 2064;
const ROUTING_STREAM: usize = 6 * 55;
const MAC_INPUT: usize = 1 + 32 + 5 * 55;

/// Format v1's body cipher, as it was: `R ^= ChaCha20(L ^ k1); L ^= BLAKE3(k2; R); ...`.
fn lioness(keys: &[[u8; 32]; 4], block: &mut [u8]) {
    let (left, right) = block.split_at_mut(32);
    for (round, round_key) in keys.iter().enumerate() {
        if round % 2 == 0 {
            let mut key = [0u8; 32];
            for ((k, l), r) in key.iter_mut().zip(left.iter()).zip(round_key) {
                *k = l ^ r;
            }
            ChaCha20::new(&key.into(), &[0u8; 12].into()).apply_keystream(right);
        } else {
            let digest = blake3::keyed_hash(round_key, right);
            for (l, d) in left.iter_mut().zip(digest.as_bytes()) {
                *l ^= d;
            }
        }
    }
}

fn aes_ctr(key: &[u8; 32], data: &mut [u8]) {
    let aes = Aes256::new(&Array::from(*key));
    let mut stream = [Array::from([0u8; 16]); 32];
    let mut counter = 1u128;
    for chunk in data.chunks_mut(32 * 16) {
        let blocks = chunk.len().div_ceil(16);
        for b in &mut stream[..blocks] {
            *b = Array::from(counter.to_le_bytes());
            counter += 1;
        }
        aes.encrypt_blocks(&mut stream[..blocks]);
        let keystream = Array::cast_slice_to_core(&stream[..blocks]);
        let (full, tail) = chunk.as_chunks_mut::<16>();
        for (d, k) in full.iter_mut().zip(keystream) {
            *d = (u128::from_ne_bytes(*d) ^ u128::from_ne_bytes(*k)).to_ne_bytes();
        }
        if let Some(last) = keystream.get(full.len()) {
            for (d, k) in tail.iter_mut().zip(last) {
                *d ^= k;
            }
        }
    }
}

fn body(c: &mut Criterion) {
    let mut group = c.benchmark_group("body");
    let mut data = vec![7u8; BODY];
    group.bench_function("hctr2-aes256", |b| {
        b.iter(|| p2pmix_mix::fuzzing::hctr2_decrypt(black_box(&[3; 32]), &[], &mut data))
    });
    group.bench_function("lioness-chacha20-blake3", |b| {
        b.iter(|| lioness(black_box(&[[3; 32]; 4]), &mut data))
    });
    group.finish();
}

fn routing_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing_stream");
    let mut data = [0u8; ROUTING_STREAM];
    group.bench_function("aes256-ctr", |b| {
        b.iter(|| aes_ctr(black_box(&[4; 32]), &mut data))
    });
    group.bench_function("chacha20", |b| {
        b.iter(|| {
            ChaCha20::new(&black_box([4u8; 32]).into(), &[0u8; 12].into())
                .apply_keystream(&mut data)
        })
    });
    group.finish();
}

fn mac(c: &mut Criterion) {
    let mut group = c.benchmark_group("mac");
    let data = [5u8; MAC_INPUT];
    group.bench_function("polyval-one-time", |b| {
        b.iter(|| {
            let mut poly = Polyval::new(&Array::from(black_box([6u8; 16])));
            poly.update_padded(black_box(&data));
            poly.update(&[Array::from((MAC_INPUT as u128 * 8).to_le_bytes())]);
            let mut tag: [u8; 16] = poly.finalize().into();
            for (t, p) in tag.iter_mut().zip(black_box([7u8; 16])) {
                *t ^= p;
            }
            tag
        })
    });
    group.bench_function("blake3-keyed", |b| {
        b.iter(|| {
            let mut out = [0u8; 16];
            blake3::Hasher::new_keyed(black_box(&[6; 32]))
                .update(black_box(&data))
                .finalize_xof()
                .fill(&mut out);
            out
        })
    });
    group.finish();
}

fn kdf(c: &mut Criterion) {
    const CONTEXT: &str = "p2pmix 2026-12 sphinx v2 hop keys";
    static CACHED: LazyLock<blake3::Hasher> =
        LazyLock::new(|| blake3::Hasher::new_derive_key(CONTEXT));
    let mut group = c.benchmark_group("kdf");
    let mut out = [0u8; 128];
    group.bench_function("blake3-derive-cached-context", |b| {
        b.iter(|| {
            CACHED
                .clone()
                .update(black_box(&[8; 32]))
                .finalize_xof()
                .fill(&mut out)
        })
    });
    group.bench_function("blake3-derive", |b| {
        b.iter(|| {
            blake3::Hasher::new_derive_key(CONTEXT)
                .update(black_box(&[8; 32]))
                .finalize_xof()
                .fill(&mut out)
        })
    });
    group.finish();
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parts");
    let mut data = vec![7u8; 2048];
    group.bench_function("aes256-ctr-2048", |b| {
        b.iter(|| aes_ctr(black_box(&[4; 32]), &mut data))
    });
    group.bench_function("aes256-keyinit", |b| {
        b.iter(|| Aes256::new(&Array::from(black_box([4u8; 32]))))
    });
    let aes = Aes256::new(&Array::from([4u8; 32]));
    let mut blocks = [Array::from([0u8; 16]); 128];
    group.bench_function("aes256-128-blocks", |b| {
        b.iter(|| aes.encrypt_blocks(black_box(&mut blocks)))
    });
    group.bench_function("polyval-2048", |b| {
        b.iter(|| {
            let mut poly = Polyval::new(&Array::from(black_box([6u8; 16])));
            poly.update_padded(black_box(&data));
            poly.finalize()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(40).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    targets = parts, body, routing_stream, mac, kdf
}
criterion_main!(benches);
