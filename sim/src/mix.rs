//! The mix core on the simulated network: a [`RelayActor`] is one node's [`Relay`] and
//! [`DelayQueue`], exactly as the mix behaviour drives them, with no threads and no sockets.
//!
//! A packet that arrives is unwrapped at once and held for the delay its header asks; at
//! release it goes to the next hop's actor, or, at the final hop, to the actor registered for
//! its client ([`RelayActor::serve_client`]) or into [`RelayActor::finals`]. Misbehaviour for
//! tests: a relay can be a black hole ([`RelayActor::dead`]), drop a fraction of what it takes
//! ([`RelayActor::drop_fraction`]), hold every packet longer than its header asks
//! ([`RelayActor::added_delay`]) or tamper with what it forwards. What a relay sees of each
//! packet it takes (the view of a curious mix) can be recorded ([`RelayActor::record_view`]).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use p2pmix_mix::{
    ClientId, Decision, DelayQueue, Destination, DropReason, Geometry, KeyRing, Label, NodeId,
    NodePublicKey, NodeSecretKey, QueueLimits, Relay, RelayConfig, ReplayConfig,
};
use rand_chacha::rand_core::Rng;

use crate::{Actor, ActorId, Ctx, Sim, unit};

/// What a relay learns of one packet it took: the view of a curious mix, for comparing kinds of
/// traffic the mix should not be able to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// Who handed it over (a client, a gateway, another mix).
    pub from: ActorId,
    /// Its size in bytes.
    pub size: usize,
    /// The delay its header asks of this hop.
    pub delay: Duration,
    /// The next hop, or `None` when this relay is the final hop.
    pub next: Option<ActorId>,
}

/// A message type that carries Sphinx packets between relays and delivers bodies to clients.
/// [`MixMessage`] is the plain one; a test with more kinds of message implements this for its
/// own enum.
pub trait SphinxMessage: Sized + 'static {
    /// A whole packet, for the next hop.
    fn packet(bytes: Vec<u8>) -> Self;
    /// A final hop's delivery of a packet body to a client.
    fn delivery(client: ClientId, label: Label, body: Vec<u8>) -> Self;
    /// The packet, if this message is one.
    fn into_packet(self) -> Result<Vec<u8>, Self>;
}

/// Packets between relays, bodies to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixMessage {
    /// A Sphinx packet.
    Packet(Vec<u8>),
    /// A body delivered by a final hop.
    Delivery {
        /// For whom.
        client: ClientId,
        /// The creator's label.
        label: Label,
        /// The packet body.
        body: Vec<u8>,
    },
}

impl SphinxMessage for MixMessage {
    fn packet(bytes: Vec<u8>) -> Self {
        MixMessage::Packet(bytes)
    }
    fn delivery(client: ClientId, label: Label, body: Vec<u8>) -> Self {
        MixMessage::Delivery {
            client,
            label,
            body,
        }
    }
    fn into_packet(self) -> Result<Vec<u8>, Self> {
        match self {
            MixMessage::Packet(p) => Ok(p),
            other => Err(other),
        }
    }
}

/// A packet that ended at this relay and was not handed to a client actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// When it was released.
    pub at: Instant,
    /// Where its header said it goes.
    pub destination: Destination,
    /// The whole packet (its body starts at the geometry's header size).
    pub packet: Vec<u8>,
}

/// One node's mix core on the simulated network. See the module documentation.
pub struct RelayActor {
    relay: Relay<ActorId>,
    queue: DelayQueue<ActorId>,
    clients: HashMap<ClientId, ActorId>,
    /// Drops by reason (unwrapping, next hop, queue).
    pub drops: BTreeMap<DropReason, u64>,
    /// Packets that ended here and were not for a client actor.
    pub finals: Vec<Final>,
    /// Packets forwarded to a next hop.
    pub forwarded: u64,
    /// Packets handed to client actors.
    pub delivered: u64,
    /// A black hole: takes packets and does nothing with them.
    pub dead: bool,
    /// Flips one random byte at or after this offset of every packet it forwards.
    pub tamper_from: Option<usize>,
    /// Drops this fraction of the packets it takes (at random), after unwrapping them.
    pub drop_fraction: f64,
    /// Holds every packet this much longer than its header asks.
    pub added_delay: Duration,
    /// Packets dropped or delayed on purpose ([`RelayActor::drop_fraction`],
    /// [`RelayActor::added_delay`]).
    pub misbehaved: u64,
    view: Option<Vec<Seen>>,
}

impl RelayActor {
    /// A relay around `relay`, holding packets within `limits`.
    pub fn new(relay: Relay<ActorId>, limits: QueueLimits) -> Self {
        RelayActor {
            relay,
            queue: DelayQueue::new(limits),
            clients: HashMap::new(),
            drops: BTreeMap::new(),
            finals: Vec::new(),
            forwarded: 0,
            delivered: 0,
            dead: false,
            tamper_from: None,
            drop_fraction: 0.0,
            added_delay: Duration::ZERO,
            misbehaved: 0,
            view: None,
        }
    }

    /// Records what this relay sees of every packet it unwraps from now on (see
    /// [`RelayActor::view`]).
    pub fn record_view(&mut self) {
        self.view.get_or_insert_with(Vec::new);
    }

    /// What this relay saw of the packets it unwrapped since [`RelayActor::record_view`].
    pub fn view(&self) -> &[Seen] {
        self.view.as_deref().unwrap_or_default()
    }

    /// The relay (keys, topologies).
    pub fn relay(&self) -> &Relay<ActorId> {
        &self.relay
    }

    /// Packets held in the delay queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Final-hop deliveries for `client` go to the actor `to` (a gateway's client).
    pub fn serve_client(&mut self, client: ClientId, to: ActorId) {
        self.clients.insert(client, to);
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }

    /// Unwraps a packet that arrived at `now` and holds it for its delay.
    pub fn receive(&mut self, now: Instant, packet: Vec<u8>) {
        if self.dead {
            return;
        }
        let outcome = self
            .relay
            .process(now, packet)
            .and_then(|d| self.queue.push(d));
        if let Err(reason) = outcome {
            *self.drops.entry(reason).or_default() += 1;
        }
    }
}

impl<M: SphinxMessage> Actor<M> for RelayActor {
    fn poll_timeout(&self) -> Option<Instant> {
        self.queue.poll_timeout()
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, M>) {
        let now = ctx.mono();
        while let Some(decision) = self.queue.poll_transmit(now) {
            match decision {
                Decision::Forward { to, mut packet, .. } => {
                    if let Some(from) = self.tamper_from
                        && from < packet.len()
                    {
                        let span = (packet.len() - from) as u64;
                        let i = from + (ctx.rng.next_u64() % span) as usize;
                        packet[i] ^= 0x40;
                    }
                    self.forwarded += 1;
                    ctx.send(to, M::packet(packet));
                }
                Decision::Final {
                    destination,
                    packet,
                    ..
                } => {
                    let client = match destination {
                        Destination::Deliver { client, label } => {
                            self.clients.get(&client).map(|to| (*to, client, label))
                        }
                        Destination::Drop => None,
                    };
                    match client {
                        Some((to, client, label)) => {
                            let header = self.relay.geometry().header_size();
                            let body = packet.get(header..).unwrap_or_default().to_vec();
                            self.delivered += 1;
                            ctx.send(to, M::delivery(client, label, body));
                        }
                        None => self.finals.push(Final {
                            at: now,
                            destination,
                            packet,
                        }),
                    }
                }
            }
        }
    }

    fn handle_message(&mut self, ctx: &mut Ctx<'_, M>, from: ActorId, message: M) {
        let Ok(packet) = message.into_packet() else {
            return;
        };
        if self.dead {
            return;
        }
        let now = ctx.mono();
        let size = packet.len();
        let decision = match self.relay.process(now, packet) {
            Ok(d) => d,
            Err(reason) => {
                *self.drops.entry(reason).or_default() += 1;
                return;
            }
        };
        if let Some(view) = &mut self.view {
            let (release, next) = match &decision {
                Decision::Forward { release, to, .. } => (*release, Some(*to)),
                Decision::Final { release, .. } => (*release, None),
            };
            view.push(Seen {
                at: now,
                from,
                size,
                delay: release - now,
                next,
            });
        }
        if self.drop_fraction > 0.0 && unit(ctx.rng) < self.drop_fraction {
            self.misbehaved += 1;
            return;
        }
        let decision = if self.added_delay.is_zero() {
            decision
        } else {
            self.misbehaved += 1;
            delayed(decision, self.added_delay)
        };
        if let Err(reason) = self.queue.push(decision) {
            *self.drops.entry(reason).or_default() += 1;
        }
    }
}

/// `decision` released `extra` later than its header asks.
fn delayed<P>(decision: Decision<P>, extra: Duration) -> Decision<P> {
    match decision {
        Decision::Forward {
            to,
            packet,
            release,
            arrived,
        } => Decision::Forward {
            to,
            packet,
            release: release + extra,
            arrived,
        },
        Decision::Final {
            destination,
            packet,
            release,
            arrived,
        } => Decision::Final {
            destination,
            packet,
            release: release + extra,
            arrived,
        },
    }
}

/// A relay added by [`add_relays`]: its actor, its node id in the topology and its public key.
#[derive(Debug, Clone, Copy)]
pub struct RelayNode {
    /// The actor.
    pub actor: ActorId,
    /// Its node id in every relay's topology.
    pub node: NodeId,
    /// Its Sphinx key for the epoch.
    pub key: NodePublicKey,
}

/// How [`add_relays`] builds its relays.
#[derive(Debug, Clone, Copy)]
pub struct RelaySetup {
    /// The epoch of the keys and the topology.
    pub epoch: u64,
    /// The replay filter of each key.
    pub replay: ReplayConfig,
    /// The longest per-hop delay accepted.
    pub max_delay: Duration,
    /// Bounds of each delay queue.
    pub limits: QueueLimits,
    /// Seed of the relays' keys.
    pub seed: u64,
}

impl Default for RelaySetup {
    fn default() -> Self {
        RelaySetup {
            epoch: 4,
            replay: ReplayConfig {
                expected_packets: 100_000,
                false_positive_rate: 1e-6,
            },
            max_delay: Duration::from_secs(60),
            limits: QueueLimits::default(),
            seed: 500,
        }
    }
}

/// Adds `count` relays to `sim` that know each other: node `i` is the `i`-th relay added, each
/// holds a fresh key for `setup.epoch` and the topology of all of them.
pub fn add_relays<M: SphinxMessage>(
    sim: &mut Sim<M>,
    count: u16,
    setup: RelaySetup,
) -> Vec<RelayNode> {
    let mut rng = crate::rng(setup.seed);
    let first = sim.next_id().0;
    let topology: HashMap<NodeId, ActorId> = (0..count)
        .map(|i| (NodeId(i), ActorId(first + usize::from(i))))
        .collect();
    (0..count)
        .map(|i| {
            let secret = NodeSecretKey::random(&mut rng);
            let key = secret.public_key();
            let mut ring = KeyRing::new(setup.epoch, Duration::from_secs(60), setup.replay);
            // A fresh ring takes the key of its own epoch.
            let _ = ring.insert(setup.epoch, secret);
            let relay = Relay::new(
                Geometry::DEFAULT,
                RelayConfig {
                    max_delay: setup.max_delay,
                },
                ring,
            );
            relay.set_topology(setup.epoch, topology.clone());
            let actor = sim.add(RelayActor::new(relay, setup.limits));
            RelayNode {
                actor,
                node: NodeId(i),
                key,
            }
        })
        .collect()
}
