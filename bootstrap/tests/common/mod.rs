//! A simulated authority network on the shared simulator (`p2pmix-sim`): authorities as
//! [`AuthorityActor`]s, nodes that upload descriptors, links that can reorder.
//!
//! [`Sim`] keeps the helper API the tests were written against (upload, run the clock, look at
//! documents and events, stop and restart authorities, shuffle) on top of
//! [`p2pmix_sim::Sim`]: virtual time jumps from one authority deadline to the next, every
//! message crosses a link of [`LATENCY`], and shuffling gives every message a random delay.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, AuthorityLimits, EpochSchedule, Event, Now, Origin,
    PinnedAuthorities, Rejection, sign_descriptor, test_network_parameters,
};
use p2pmix_mix::NodeSecretKey;
use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, EpochKey, NetworkParameters, NodeDescriptor, Role,
    SignedDescriptor, directory_request::Request,
};
use p2pmix_sim::{
    Actor, ActorId, Ctx, Link,
    authority::{AuthorityActor, AuthorityMessage, Reachability, add_authorities},
};
use rand_chacha::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};

pub const PERIOD: u64 = 8_000;

/// Every link's latency.
pub const LATENCY: Duration = Duration::from_millis(2);

/// The longest delay of a message in a shuffling simulation, in milliseconds: far more than the
/// latency, so the messages of one phase arrive in any order (a relayed copy can beat the
/// original), and far less than a phase (`PERIOD / 8` = 1 s), so that even a relayed message
/// arrives within the phase it was sent in.
pub const SHUFFLE_MAX_DELAY_MS: u64 = 200;

/// The shared simulator, carrying directory requests and answers.
pub type Net = p2pmix_sim::Sim<AuthorityMessage>;

/// Seed of the simulator's own generator (link jitter and loss: none here); the authorities
/// draw from their own generators.
const NET_SEED: u64 = 1;
/// Seed of the authorities' generators (authority `i` gets `AUTHORITY_SEED + i`).
const AUTHORITY_SEED: u64 = 77;

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
    /// What it announces (default: a loopback address, for test networks).
    pub addresses: Vec<String>,
    /// Its declared family (default: one of its own).
    pub family: String,
}

impl Node {
    pub fn new(index: u64, role: Role) -> Self {
        Node {
            keypair: keypair(1000 + index),
            role,
            index,
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", 10_000 + index)],
            family: format!("operator-{index}"),
        }
    }

    /// A node announcing `addresses` with `family`.
    pub fn announcing(index: u64, role: Role, addresses: Vec<String>, family: &str) -> Self {
        Node {
            addresses,
            family: family.to_string(),
            ..Node::new(index, role)
        }
    }

    pub fn peer_id(&self) -> libp2p_identity::PeerId {
        self.keypair.public().to_peer_id()
    }

    pub fn descriptor(&self, epoch: u64) -> NodeDescriptor {
        let mut r = rng(5000 + self.index * 100 + epoch);
        NodeDescriptor {
            epoch,
            identity: self.keypair.public().encode_protobuf(),
            addresses: self.addresses.clone(),
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
            family: self.family.clone(),
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

/// A node (or client) on the network: what the authorities answer it is kept.
#[derive(Debug, Default)]
pub struct Client {
    pub answers: Vec<(ActorId, DirectoryResponse)>,
}

impl Actor<AuthorityMessage> for Client {
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _: &mut Ctx<'_, AuthorityMessage>) {}
    fn handle_message(
        &mut self,
        _: &mut Ctx<'_, AuthorityMessage>,
        from: ActorId,
        message: AuthorityMessage,
    ) {
        if let AuthorityMessage::Response(r) = message {
            self.answers.push((from, r));
        }
    }
}

pub struct Sim {
    pub keys: Vec<Keypair>,
    pub pinned: PinnedAuthorities,
    pub parameters: NetworkParameters,
    /// The shared simulator the authorities run on.
    pub net: Net,
    /// Authority `i` is actor `ids[i]`.
    pub ids: Vec<ActorId>,
    /// Shuffles deliveries when set: every message gets a random delay from this generator.
    pub shuffle: Option<ChaCha20Rng>,
}

impl Sim {
    pub fn new(n: usize, parameters: NetworkParameters, start_ms: u64) -> Self {
        Self::with_limits(n, parameters, AuthorityLimits::default(), start_ms)
    }

    /// [`Sim::new`] with authorities bound by `limits`.
    pub fn with_limits(
        n: usize,
        parameters: NetworkParameters,
        limits: AuthorityLimits,
        start_ms: u64,
    ) -> Self {
        let keys: Vec<Keypair> = (0..n as u64).map(keypair).collect();
        let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
        let mut net = p2pmix_sim::Sim::starting_at(NET_SEED, start_ms);
        net.set_default_link(Link::fixed(LATENCY));
        let configs = keys.iter().map(|k| AuthorityConfig {
            limits,
            ..AuthorityConfig::new(k.clone(), pinned.clone(), schedule(), parameters)
        });
        let ids = add_authorities(&mut net, configs, AUTHORITY_SEED);
        Sim {
            keys,
            pinned,
            parameters,
            net,
            ids,
            shuffle: None,
        }
    }

    /// `n` authorities of a local test network (the test nodes announce 127.0.0.1).
    pub fn default(n: usize, start_ms: u64) -> Self {
        Self::new(n, test_network_parameters(), start_ms)
    }

    pub fn config(&self, i: usize) -> AuthorityConfig {
        AuthorityConfig::new(
            self.keys[i].clone(),
            self.pinned.clone(),
            schedule(),
            self.parameters,
        )
    }

    /// The virtual time, both clocks.
    pub fn now(&self) -> Now {
        self.net.now()
    }

    /// The virtual wall clock in milliseconds since the UNIX epoch.
    pub fn now_ms(&self) -> u64 {
        self.net.now().unix_ms
    }

    /// Authority `i`'s actor (running or stopped).
    pub fn actor(&self, i: usize) -> &AuthorityActor {
        self.net.actor(self.ids[i])
    }

    /// Authority `i`.
    ///
    /// # Panics
    /// If it is stopped.
    pub fn authority(&self, i: usize) -> &Authority {
        self.actor(i)
            .authority()
            .unwrap_or_else(|| panic!("authority {i} is stopped"))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.actor(i).is_running()
    }

    /// Stops authority `i`: no timers, and what is sent to it is lost. Returns it as it was.
    pub fn stop(&mut self, i: usize) -> Option<Authority> {
        let id = self.ids[i];
        self.net.take_down(id);
        self.net.actor_mut::<AuthorityActor>(id).stop()
    }

    /// Runs `authority` as authority `i` from now on (a restart, or a replacement of the one
    /// that runs).
    pub fn start(&mut self, i: usize, authority: Authority) {
        let id = self.ids[i];
        self.net.actor_mut::<AuthorityActor>(id).start(authority);
        self.net.bring_up(id);
    }

    /// Hands `request` to authority `i` now, as if from outside; what it relays goes out at
    /// once.
    ///
    /// # Panics
    /// If it is stopped.
    pub fn request(&mut self, i: usize, request: Request) -> Result<(), Rejection> {
        let request = DirectoryRequest {
            request: Some(request),
        };
        self.net
            .with_actor(self.ids[i], |a: &mut AuthorityActor, ctx| {
                a.request(ctx, request)
            })
            .unwrap_or_else(|| panic!("authority {i} is stopped"))
    }

    /// [`Sim::request`] from `origin` (per-source limits apply to [`Origin::Peer`]).
    pub fn request_from(
        &mut self,
        i: usize,
        origin: Origin,
        request: Request,
    ) -> Result<(), Rejection> {
        let request = DirectoryRequest {
            request: Some(request),
        };
        self.net
            .with_actor(self.ids[i], |a: &mut AuthorityActor, ctx| {
                a.request_from(ctx, origin, request)
            })
            .unwrap_or_else(|| panic!("authority {i} is stopped"))
    }

    /// Which nodes answer authority `i`'s reachability dials.
    pub fn set_reachability(&mut self, i: usize, reachability: Reachability) {
        self.net
            .actor_mut::<AuthorityActor>(self.ids[i])
            .reachability = reachability;
    }

    /// Every node uploads its descriptor for `epoch` to every running authority.
    pub fn upload(&mut self, nodes: &[Node], epoch: u64) {
        for node in nodes {
            for i in 0..self.ids.len() {
                if self.is_running(i) {
                    self.request(i, Request::Descriptor(node.signed(epoch)))
                        .expect("descriptor accepted");
                }
            }
        }
    }

    /// Lets every message in flight arrive, and what they cause, until none is left (a few
    /// link latencies; at most a phase).
    pub fn deliver(&mut self) {
        let limit = self.net.now().mono + Duration::from_millis(PERIOD / 8);
        let settled = self.step_until(limit, |net| net.in_flight() == 0);
        assert!(settled, "messages kept flowing");
    }

    /// Runs the clock to `until_ms` (every authority timer runs when it is due), then delivers
    /// what is still in flight.
    pub fn run_until(&mut self, until_ms: u64) {
        let deadline = self.net.now().instant_at(until_ms);
        self.step_until(deadline, |_| false);
        self.deliver();
    }

    /// [`p2pmix_sim::Sim::run_until`], except that a shuffling simulation draws new link
    /// delays before every step, so that each message gets its own.
    ///
    /// The delays are whole milliseconds rather than link jitter: with jitter, events fall
    /// less than a millisecond apart, and the simulator's wall clock, moved on by whole
    /// milliseconds at each step, falls behind (with three authorities waking a fraction of a
    /// millisecond apart it stops, and so does the schedule).
    fn step_until(&mut self, deadline: Instant, done: impl Fn(&Net) -> bool) -> bool {
        if self.shuffle.is_none() {
            return self.net.run_until(deadline, done);
        }
        for _ in 0..p2pmix_sim::MAX_STEPS {
            if done(&self.net) {
                return true;
            }
            if self.net.next_event().is_none_or(|at| at > deadline) {
                return self.net.run_until(deadline, done);
            }
            self.draw_delays();
            self.net.step();
        }
        panic!("the simulation did not settle");
    }

    /// A fresh random delay on every link, from the shuffle generator.
    fn draw_delays(&mut self) {
        let Some(r) = &mut self.shuffle else {
            return;
        };
        let actors = self.net.next_id().0;
        for a in 0..actors {
            for b in a + 1..actors {
                let delay = 1 + r.next_u64() % SHUFFLE_MAX_DELAY_MS;
                let link = Link::fixed(Duration::from_millis(delay));
                self.net.set_link(ActorId(a), ActorId(b), link);
            }
        }
    }

    /// Adds a node or client that talks to the authorities over the network.
    pub fn add_client(&mut self) -> ActorId {
        self.net.add(Client::default())
    }

    /// What authority `i` reported, in order.
    pub fn events_of(&self, i: usize) -> impl Iterator<Item = &Event> {
        self.actor(i).events.iter().map(|(_, e)| e)
    }

    /// What every authority reported, in the order it happened: (authority, event).
    pub fn events(&self) -> Vec<(usize, Event)> {
        let mut all: Vec<(Instant, usize, Event)> = (0..self.ids.len())
            .flat_map(|i| {
                self.actor(i)
                    .events
                    .iter()
                    .map(move |(at, e)| (at.mono, i, e.clone()))
            })
            .collect();
        all.sort_by_key(|(at, _, _)| *at);
        all.into_iter().map(|(_, i, e)| (i, e)).collect()
    }

    pub fn clear_events(&mut self) {
        for id in self.ids.clone() {
            self.net.actor_mut::<AuthorityActor>(id).events.clear();
        }
    }

    /// The consensus bytes each running authority holds for `epoch`.
    pub fn documents(&self, epoch: u64) -> Vec<Option<Vec<u8>>> {
        (0..self.ids.len())
            .filter_map(|i| self.actor(i).authority())
            .map(|a| a.consensus(Some(epoch)).map(|s| s.consensus.clone()))
            .collect()
    }
}
