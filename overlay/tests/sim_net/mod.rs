//! The client cores on a simulated mixnet, shared by the virtual-time client tests: real
//! Sphinx relays for two gateways and three layers of mixes, links that lose packets, a dead
//! mix, a mix that tampers; clients that go away (their gateway keeps what arrives) and come
//! back, and clients that keep their state in a real store and are killed and restarted on it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use libp2p::PeerId;
use p2pmix::client::{
    Address, ClientConfig, ClientCore, ClientEvent, ClientStore, MessageId, ReceivedMessage,
    RouteNode, SendError, StaticKey, StreamRates, Topology, client_id,
};
use p2pmix_mix::{ClientId, Label};
use p2pmix_sim::{
    Actor, ActorId, Ctx, Link, Sim,
    mix::{MixMessage, RelayActor, RelaySetup, add_relays},
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

pub const EPOCH: u64 = 4;
pub const LINK: Duration = Duration::from_millis(2);

/// A client core on the simulated network: its packets go to its gateway's relay, which
/// delivers the bodies for it back here. While it is away its gateway keeps what arrives (the
/// mailbox) and hands it over when it is back; with a store, every change the core reports is
/// written before anything else happens, and a restart builds a new core from the store.
pub struct ClientActor {
    pub core: ClientCore,
    pub gateway: ActorId,
    pub events: Vec<ClientEvent>,
    /// Away until then: nothing runs, deliveries wait in `mailbox`.
    pub away_until: Option<Instant>,
    pub mailbox: Vec<(Label, Vec<u8>)>,
    pub store: Option<ClientStore>,
    /// What a restart needs to build the core again.
    pub identity: (ClientId, PeerId, [u8; 32], ClientConfig),
    /// When set, every body the gateway delivered, as it was delivered, with what it turned
    /// out to be.
    pub tap: Option<Vec<(Seen, Vec<u8>)>>,
}

/// What a delivered body was, found from what the core did with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seen {
    Loop,
    /// A forward message: whether its sender was known (Noise X) and its length.
    Forward {
        known: bool,
        len: usize,
    },
    Reply,
    /// An acknowledgement (this client only sends one-fragment messages when tapped).
    Ack,
    Other,
}

impl ClientActor {
    fn drain(&mut self) {
        if let Some(store) = &mut self.store {
            while let Some(batch) = self.core.poll_store() {
                store.apply(&batch.ops).expect("the store writes");
                self.core.handle_stored(batch.through);
            }
        }
        while let Some(e) = self.core.poll_event() {
            self.events.push(e);
        }
    }

    fn away(&self, now: Instant) -> bool {
        self.away_until.is_some_and(|t| now < t)
    }
}

impl Actor<MixMessage> for ClientActor {
    fn poll_timeout(&self) -> Option<Instant> {
        match self.away_until {
            Some(t) => Some(t),
            None => self.core.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, MixMessage>) {
        let now = ctx.mono();
        if self.away(now) {
            return;
        }
        if self.away_until.take().is_some() {
            for (label, mut body) in std::mem::take(&mut self.mailbox) {
                self.core.handle_delivery(now, label, &mut body);
            }
            self.drain();
        }
        self.core.handle_timeout(now);
        self.drain();
        while let Some(packet) = self.core.poll_transmit(now, ctx.rng) {
            self.drain();
            ctx.send(self.gateway, MixMessage::Packet(packet));
        }
        self.drain();
    }
    fn handle_message(&mut self, ctx: &mut Ctx<'_, MixMessage>, _: ActorId, m: MixMessage) {
        if let MixMessage::Delivery {
            label, mut body, ..
        } = m
        {
            if self.away_until.is_some() {
                self.mailbox.push((label, body));
                return;
            }
            let as_delivered = self.tap.is_some().then(|| body.clone());
            let (before, events) = (self.core.stats(), self.events.len());
            self.core.handle_delivery(ctx.mono(), label, &mut body);
            self.drain();
            if let (Some(tap), Some(seen)) = (self.tap.as_mut(), as_delivered) {
                let after = self.core.stats();
                let kind = match self.events[events..].first() {
                    _ if after.loop_cover_received > before.loop_cover_received => Seen::Loop,
                    Some(ClientEvent::Received(ReceivedMessage {
                        in_reply_to: Some(_),
                        ..
                    })) => Seen::Reply,
                    Some(ClientEvent::Received(ReceivedMessage { from, bytes, .. })) => {
                        Seen::Forward {
                            known: from.is_some(),
                            len: bytes.len(),
                        }
                    }
                    _ if after == before => Seen::Ack,
                    _ => Seen::Other,
                };
                tap.push((kind, seen));
            }
        }
    }
}

pub const RATES: StreamRates = StreamRates {
    send: Duration::from_millis(10),
    loop_cover: Duration::from_millis(100),
    drop_cover: Duration::from_millis(100),
};

/// Two gateways (relays 0 and 1, each with one client) and `per_layer` mixes in each of three
/// layers.
pub struct Net {
    pub sim: Sim<MixMessage>,
    pub relays: Vec<ActorId>,
    pub clients: Vec<ActorId>,
    pub topology: Topology,
}

impl Net {
    pub fn new(per_layer: usize, seed: u64, config: ClientConfig) -> Net {
        let mut sim = Sim::new(seed + 1);
        sim.set_default_link(Link::fixed(LINK));
        let n = 2 + 3 * per_layer;
        let relays = add_relays(
            &mut sim,
            n as u16,
            RelaySetup {
                epoch: EPOCH,
                seed,
                ..RelaySetup::default()
            },
        );
        let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        let route_nodes: Vec<RouteNode> = relays
            .iter()
            .zip(&peers)
            .map(|(r, peer)| RouteNode::new(r.node, *peer, r.key, "", &[]))
            .collect();
        let layers = (0..3)
            .map(|l| route_nodes[2 + l * per_layer..2 + (l + 1) * per_layer].to_vec())
            .collect();
        let topology = Topology::new(
            EPOCH,
            Duration::from_millis(20),
            route_nodes[..2].to_vec(),
            layers,
        );
        let mut rng = ChaCha20Rng::seed_from_u64(seed + 2);
        let mut clients = Vec::new();
        for g in 0..2 {
            let id = client_id(&PeerId::random());
            let key = StaticKey::generate().unwrap();
            let secret: [u8; 32] = key.secret()[..].try_into().unwrap();
            let mut core =
                ClientCore::new(sim.now().mono, config, id, peers[g], key, RATES, &mut rng);
            core.set_topology(topology.clone(), RATES);
            let actor = sim.add(ClientActor {
                core,
                gateway: relays[g].actor,
                events: Vec::new(),
                away_until: None,
                mailbox: Vec::new(),
                store: None,
                identity: (id, peers[g], secret, config),
                tap: None,
            });
            sim.actor_mut::<RelayActor>(relays[g].actor)
                .serve_client(id, actor);
            clients.push(actor);
        }
        Net {
            sim,
            relays: relays.iter().map(|r| r.actor).collect(),
            clients,
            topology,
        }
    }

    /// Queues a message from client `c`.
    pub fn send(
        &mut self,
        c: usize,
        to: Address,
        bytes: &[u8],
        reply_surbs: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<MessageId, SendError> {
        let now = self.sim.now().mono;
        let actor = self.sim.actor_mut::<ClientActor>(self.clients[c]);
        let id = actor.core.send(now, to, bytes, reply_surbs, rng);
        actor.drain();
        id
    }

    /// Client `c` is away for `away` from now: its gateway keeps what arrives.
    pub fn go_away(&mut self, c: usize, away: Duration) {
        let until = self.sim.now().mono + away;
        self.sim
            .actor_mut::<ClientActor>(self.clients[c])
            .away_until = Some(until);
    }

    /// Client `c` keeps its state in a store at `path` from now on.
    pub fn use_store(&mut self, c: usize, path: &std::path::Path) {
        let now = self.sim.now();
        let actor = self.sim.actor_mut::<ClientActor>(self.clients[c]);
        let store = ClientStore::open(path).expect("a store");
        let (saved, _) = store.load().unwrap();
        let (id, gateway, secret, config) = actor.identity;
        let mut core = ClientCore::new(
            now.mono,
            config,
            id,
            gateway,
            StaticKey::from_secret(&secret).unwrap(),
            RATES,
            &mut ChaCha20Rng::seed_from_u64(77),
        )
        .restore(now.mono, now.unix_ms, saved);
        std::mem::swap(&mut actor.core, &mut core);
        // The old core's topology goes to the new one.
        if let Some(t) = core.topology().cloned() {
            actor.core.set_topology(t, RATES);
        }
        actor.store = Some(store);
        actor.drain();
    }

    /// Client `c` is killed (its memory is gone; its store, if any, stays) and starts again
    /// after `down`, from its store (or empty without one). What arrives meanwhile waits at its
    /// gateway.
    pub fn kill_and_restart(&mut self, c: usize, path: Option<&std::path::Path>, down: Duration) {
        let actor = self.sim.actor_mut::<ClientActor>(self.clients[c]);
        // Whatever the dead process had not written is lost with it.
        actor.store = None;
        self.go_away(c, down);
        match path {
            Some(p) => self.use_store(c, p),
            None => {
                let now = self.sim.now();
                let actor = self.sim.actor_mut::<ClientActor>(self.clients[c]);
                let (id, gateway, secret, config) = actor.identity;
                let topology = actor.core.topology().cloned();
                actor.core = ClientCore::new(
                    now.mono,
                    config,
                    id,
                    gateway,
                    StaticKey::from_secret(&secret).unwrap(),
                    RATES,
                    &mut ChaCha20Rng::seed_from_u64(78),
                );
                if let Some(t) = topology {
                    actor.core.set_topology(t, RATES);
                }
            }
        }
    }

    /// Links between nodes lose `loss` of their packets (a client's link to its gateway
    /// does not).
    pub fn set_loss(&mut self, loss: f64) {
        self.sim.set_default_link(Link {
            latency: LINK,
            jitter: Duration::ZERO,
            loss,
        });
        for c in 0..2 {
            let (client, gateway) = (self.clients[c], self.relays[c]);
            self.sim.set_link(client, gateway, Link::fixed(LINK));
        }
    }

    /// Relay `n` takes packets and drops them all.
    pub fn kill(&mut self, n: usize) {
        self.sim.actor_mut::<RelayActor>(self.relays[n]).dead = true;
    }

    /// Relay `n` flips a byte of every packet it forwards.
    pub fn tamper(&mut self, n: usize) {
        self.sim.actor_mut::<RelayActor>(self.relays[n]).tamper_from = Some(400);
    }

    /// Records what client `c`'s gateway delivers to it from now on.
    pub fn tap(&mut self, c: usize) {
        self.sim.actor_mut::<ClientActor>(self.clients[c]).tap = Some(Vec::new());
    }

    pub fn tapped(&mut self, c: usize) -> Vec<(Seen, Vec<u8>)> {
        self.sim
            .actor_mut::<ClientActor>(self.clients[c])
            .tap
            .take()
            .unwrap_or_default()
    }

    pub fn client(&mut self, c: usize) -> &mut ClientCore {
        &mut self.sim.actor_mut::<ClientActor>(self.clients[c]).core
    }

    pub fn address(&mut self, c: usize) -> Address {
        self.client(c).address()
    }

    pub fn events(&self, c: usize) -> &[ClientEvent] {
        &self.sim.actor::<ClientActor>(self.clients[c]).events
    }

    pub fn received(&mut self, c: usize) -> &mut Vec<ClientEvent> {
        &mut self.sim.actor_mut::<ClientActor>(self.clients[c]).events
    }

    /// Runs until `done` holds or `limit` of virtual time passes.
    pub fn run(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) {
        let deadline = self.sim.now().mono + limit;
        for _ in 0..10_000_000u64 {
            if done(self) {
                return;
            }
            match self.sim.next_event() {
                Some(t) if t <= deadline => {
                    self.sim.step();
                }
                _ => return,
            }
        }
        panic!("the simulation did not settle");
    }

    pub fn received_messages(&self, c: usize) -> Vec<(MessageId, Vec<u8>)> {
        self.events(c)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Received(ReceivedMessage { id, bytes, .. }) => {
                    Some((*id, bytes.clone()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn delivered(&self, c: usize) -> Vec<MessageId> {
        self.events(c)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    pub fn failed(&self, c: usize) -> usize {
        self.events(c)
            .iter()
            .filter(|e| matches!(e, ClientEvent::Failed(..)))
            .count()
    }
}
