//! Test network: nodes with epoch keys, routes across them, and a walker that unwraps a packet
//! hop by hop the way real nodes would.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use p2pmix_mix::{
    ClientId, Delay, Destination, Geometry, Hop, KeyRing, Label, NodeId, NodeSecretKey, Processed,
    ReplayConfig, UnwrapError,
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

pub const EPOCH: u64 = 7;

pub struct Node {
    pub id: NodeId,
    pub ring: KeyRing,
}

/// Each hop's node and what it decided.
pub type Trace = Vec<(NodeId, Result<Processed, UnwrapError>)>;

pub struct Network {
    pub geometry: Geometry,
    pub nodes: Vec<Node>,
}

impl Network {
    pub fn new(size: usize, seed: u64) -> Self {
        let mut rng = rng(seed);
        let nodes = (0..size)
            .map(|i| {
                let mut ring = KeyRing::new(EPOCH, Duration::from_secs(60), small_replay());
                ring.insert(EPOCH, NodeSecretKey::random(&mut rng))
                    .expect("fresh ring takes the current key");
                Node {
                    id: NodeId(i as u16),
                    ring,
                }
            })
            .collect();
        Network {
            geometry: Geometry::DEFAULT,
            nodes,
        }
    }

    pub fn hop(&self, index: usize, delay_micros: u32) -> Hop {
        let node = &self.nodes[index];
        Hop {
            node: node.id,
            key: node
                .ring
                .for_epoch(EPOCH)
                .expect("key for the test epoch")
                .public_key(),
            delay: Delay::from_micros(delay_micros),
        }
    }

    /// Route over the given node indices with delays 1000, 2000, ... µs.
    pub fn route(&self, indices: &[usize]) -> Vec<Hop> {
        indices
            .iter()
            .enumerate()
            .map(|(i, &n)| self.hop(n, 1000 * (i as u32 + 1)))
            .collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// Sends `packet` to `first` and follows it to its final hop. Returns every hop's decision
    /// (node, outcome) and the final buffer.
    pub fn walk(&self, first: NodeId, mut packet: Vec<u8>) -> (Trace, Vec<u8>) {
        let mut at = first;
        let mut trace = Vec::new();
        for _ in 0..=self.geometry.max_hops() {
            let outcome = self.node(at).ring.process(&self.geometry, &mut packet);
            trace.push((at, outcome));
            match outcome {
                Ok(Processed::Forward { next, .. }) => at = next,
                _ => break,
            }
        }
        (trace, packet)
    }
}

pub fn small_replay() -> ReplayConfig {
    ReplayConfig {
        expected_packets: 10_000,
        false_positive_rate: 1e-9,
    }
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha20Rng::from_seed(s)
}

pub fn deliver(client: u8, label: u8) -> Destination {
    Destination::Deliver {
        client: ClientId([client; 32]),
        label: Label([label; 16]),
    }
}

pub fn now() -> Instant {
    Instant::now()
}
