//! A simulated authority network (sans-IO): authorities, nodes that upload descriptors, and a
//! message bus that can reorder and drop.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, EpochSchedule, Event, Now, PinnedAuthorities, default_parameters,
    sign_descriptor,
};
use p2pmix_mix::NodeSecretKey;
use p2pmix_proto::v1::{
    DirectoryRequest, EpochKey, NetworkParameters, NodeDescriptor, Role, SignedDescriptor,
    directory_request::Request,
};
use rand_chacha::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};

pub const PERIOD: u64 = 8_000;

pub fn schedule() -> EpochSchedule {
    EpochSchedule::new(0, PERIOD)
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha20Rng::from_seed(s)
}

/// Deterministic ed25519 keypair from a seed.
pub fn keypair(seed: u64) -> Keypair {
    let mut bytes = [0u8; 32];
    rng(seed ^ 0xa5a5).fill_bytes(&mut bytes);
    Keypair::ed25519_from_bytes(bytes).expect("32 bytes")
}

pub struct Node {
    pub keypair: Keypair,
    pub role: Role,
    pub index: u64,
}

impl Node {
    pub fn new(index: u64, role: Role) -> Self {
        Node {
            keypair: keypair(1000 + index),
            role,
            index,
        }
    }

    pub fn descriptor(&self, epoch: u64) -> NodeDescriptor {
        let mut r = rng(5000 + self.index * 100 + epoch);
        NodeDescriptor {
            epoch,
            identity: self.keypair.public().encode_protobuf(),
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + self.index)],
            role: self.role as i32,
            sphinx_keys: (epoch..epoch + 2)
                .map(|e| EpochKey {
                    epoch: e,
                    sphinx_public_key: NodeSecretKey::random(&mut r)
                        .public_key()
                        .to_bytes()
                        .to_vec(),
                })
                .collect(),
            software_version: "test".into(),
            protocol_version: 1,
            family: format!("operator-{}", self.index),
        }
    }

    pub fn signed(&self, epoch: u64) -> SignedDescriptor {
        sign_descriptor(&self.keypair, &self.descriptor(epoch)).expect("ed25519 signs")
    }
}

pub fn nodes(gateways: u64, mixes: u64) -> Vec<Node> {
    (0..gateways)
        .map(|i| Node::new(i, Role::Gateway))
        .chain((gateways..gateways + mixes).map(|i| Node::new(i, Role::Mix)))
        .collect()
}

pub struct Sim {
    pub keys: Vec<Keypair>,
    pub pinned: PinnedAuthorities,
    pub authorities: Vec<Option<Authority>>,
    pub rngs: Vec<ChaCha20Rng>,
    pub events: Vec<(usize, Event)>,
    /// Shuffles deliveries when set.
    pub shuffle: Option<ChaCha20Rng>,
    pub now: u64,
    /// The reading the simulation started at: [`Sim::now`] is `start` moved to `now`.
    pub start: Now,
}

impl Sim {
    pub fn new(n: usize, parameters: NetworkParameters, start_ms: u64) -> Self {
        let start = Now::new(Instant::now(), start_ms);
        let keys: Vec<Keypair> = (0..n as u64).map(keypair).collect();
        let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
        let authorities = keys
            .iter()
            .map(|k| {
                Some(Authority::new(
                    AuthorityConfig {
                        keypair: k.clone(),
                        authorities: pinned.clone(),
                        schedule: schedule(),
                        parameters,
                    },
                    start,
                ))
            })
            .collect();
        Sim {
            keys,
            pinned,
            authorities,
            rngs: (0..n as u64).map(|i| rng(77 + i)).collect(),
            events: Vec::new(),
            shuffle: None,
            now: start_ms,
            start,
        }
    }

    /// The time as the authorities see it: both clocks at `self.now`.
    pub fn now(&self) -> Now {
        self.start
            .later(Duration::from_millis(self.now - self.start.unix_ms))
    }

    pub fn default(n: usize, start_ms: u64) -> Self {
        Self::new(n, default_parameters(), start_ms)
    }

    pub fn config(&self, i: usize) -> AuthorityConfig {
        AuthorityConfig {
            keypair: self.keys[i].clone(),
            authorities: self.pinned.clone(),
            schedule: schedule(),
            parameters: default_parameters(),
        }
    }

    /// Every node uploads its descriptor for `epoch` to every running authority.
    pub fn upload(&mut self, nodes: &[Node], epoch: u64) {
        let now = self.now();
        for node in nodes {
            let request = DirectoryRequest {
                request: Some(Request::Descriptor(node.signed(epoch))),
            };
            for a in self.authorities.iter_mut().flatten() {
                a.handle_request(now, request.clone())
                    .expect("descriptor accepted");
            }
        }
    }

    /// Delivers every pending message to every other running authority until none is left.
    pub fn deliver(&mut self) {
        let now = self.now();
        for _ in 0..1000 {
            let mut batch = Vec::new();
            for (i, a) in self.authorities.iter_mut().enumerate() {
                if let Some(a) = a {
                    while let Some(m) = a.poll_transmit() {
                        batch.push((i, m));
                    }
                }
            }
            if batch.is_empty() {
                return;
            }
            if let Some(r) = &mut self.shuffle {
                // Fisher-Yates with the test's own generator.
                for i in (1..batch.len()).rev() {
                    let j = (r.next_u64() % (i as u64 + 1)) as usize;
                    batch.swap(i, j);
                }
            }
            for (from, message) in batch {
                for (to, a) in self.authorities.iter_mut().enumerate() {
                    if to != from
                        && let Some(a) = a
                    {
                        let _ = a.handle_request(now, message.clone());
                    }
                }
            }
        }
        panic!("messages kept flowing");
    }

    /// Runs the clock to `until_ms` in steps of a sixteenth of an epoch.
    pub fn run_until(&mut self, until_ms: u64) {
        while self.now < until_ms {
            self.now = (self.now + PERIOD / 16).min(until_ms);
            let now = self.now();
            for (i, a) in self.authorities.iter_mut().enumerate() {
                if let Some(a) = a {
                    a.handle_timeout(now, &mut self.rngs[i]);
                }
            }
            self.deliver();
            for (i, a) in self.authorities.iter_mut().enumerate() {
                if let Some(a) = a {
                    while let Some(e) = a.poll_event() {
                        self.events.push((i, e));
                    }
                }
            }
        }
    }

    /// The consensus bytes each running authority holds for `epoch`.
    pub fn documents(&self, epoch: u64) -> Vec<Option<Vec<u8>>> {
        self.authorities
            .iter()
            .flatten()
            .map(|a| a.consensus(Some(epoch)).map(|s| s.consensus.clone()))
            .collect()
    }
}
