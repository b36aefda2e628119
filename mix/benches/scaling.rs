//! Whether the Sphinx workers contend: the packets/s of one shared [`Relay`] (one key ring
//! behind its `RwLock`, one sharded replay cache, one topology map) unwrapped by 1 and by 2
//! threads, each thread taking batches of `MAX_BATCH` from its own share of the packets, as the
//! workers do. Without contention, two threads on two free cores do twice the work of one.
//!
//! `cargo bench -p p2pmix-mix --bench scaling`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use p2pmix_mix::{
    Delay, Destination, Geometry, Hop, KeyRing, NodeId, NodeSecretKey, Relay, RelayConfig,
    ReplayConfig, behaviour::MAX_BATCH, build_packet,
};

const PACKETS_PER_THREAD: usize = 4096;

fn main() {
    let g = Geometry::DEFAULT;
    let mut rng = rand::rng();
    let secret = NodeSecretKey::random(&mut rng);
    let route = [
        Hop {
            node: NodeId(0),
            key: secret.public_key(),
            delay: Delay::ZERO,
        },
        Hop {
            node: NodeId(1),
            key: NodeSecretKey::random(&mut rng).public_key(),
            delay: Delay::ZERO,
        },
    ];
    let packets: Vec<Vec<u8>> = (0..2 * PACKETS_PER_THREAD)
        .map(|_| build_packet(&g, &route, &Destination::Drop, &[1; 2048], &mut rng).unwrap())
        .collect();
    let mut rates = Vec::new();
    for threads in [1usize, 2] {
        let mut ring = KeyRing::new(1, Duration::from_secs(60), ReplayConfig::default());
        ring.insert(1, NodeSecretKey::from_bytes(secret.to_bytes()).unwrap())
            .unwrap();
        let relay = Arc::new(Relay::new(
            g,
            RelayConfig {
                max_delay: Duration::from_secs(1),
            },
            ring,
        ));
        relay.set_topology(1, HashMap::from([(NodeId(1), 1u32)]));
        let shares: Vec<Vec<Vec<u8>>> = packets
            .chunks(PACKETS_PER_THREAD)
            .take(threads)
            .map(<[Vec<u8>]>::to_vec)
            .collect();
        let start = Instant::now();
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let relay = relay.clone();
                std::thread::spawn(move || {
                    let mut ok = 0usize;
                    let mut share = share.into_iter().peekable();
                    while share.peek().is_some() {
                        let now = Instant::now();
                        let batch: Vec<(Instant, Vec<u8>)> =
                            share.by_ref().take(MAX_BATCH).map(|p| (now, p)).collect();
                        ok += relay
                            .process_batch(batch)
                            .iter()
                            .filter(|d| d.is_ok())
                            .count();
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(ok, threads * PACKETS_PER_THREAD);
        let rate = ok as f64 / elapsed;
        println!("{threads} thread(s): {ok} packets in {elapsed:.3} s = {rate:.0} pkt/s");
        rates.push(rate);
    }
    println!(
        "scaling: 2 threads = {:.2} x 1 thread (2.00 = no contention, on two idle cores)",
        rates[1] / rates[0]
    );
}
