//! The client state machine, sans-IO: messages in, Sphinx packets for the gateway out, packets
//! from the gateway in, events out. Time and randomness are passed in.
//!
//! - **Sending**: a message (up to [`ClientConfig::max_message`]) is cut into fragments; each
//!   fragment waits for a tick of the Poisson send stream ([`SendingSchedule`]), and only then
//!   gets a fresh route, a fresh SURB to acknowledge it, end-to-end encryption to the recipient
//!   ([`e2e`]) and its Sphinx packet. A fragment whose acknowledgement does not come back within
//!   its timeout (measured round trips, see `outbound`) goes out again over a route that
//!   avoids the mixes of the attempt that was lost; retransmissions back off (with jitter) up
//!   to [`ClientConfig::max_backoff`] and cover [`ClientConfig::give_up_after`] (a mailbox's
//!   lifetime: an absent recipient gets the message when it comes back), then the message
//!   fails.
//! - **Receiving**: fragments are decrypted, acknowledged (also duplicates: the first
//!   acknowledgement may have been lost) once they are durable, or once the application
//!   accepted the message ([`Acknowledge`]), and reassembled within bounded memory: a new
//!   message that does not fit is refused and counted, one that was admitted is never
//!   evicted. A message is handed to the application exactly once, also across restarts.
//! - **Durability**: with a store ([`ClientCore::restore`]) every change that must survive a
//!   restart leaves as a [`StoreOp`] ([`durable`]); what depends on it waits until the driver
//!   reports it written.
//! - **Replies**: a message may carry SURBs; the recipient answers through them without
//!   learning who sent it. Acknowledgements and replies travel inside SURB replies, which only
//!   the SURB's creator can open.
//! - **Cover**: when nothing is queued, the send stream emits drop cover; loop cover comes back
//!   to this client. All packets have one size and go to the client's gateway.
//!
//! The rooms: `outbound` (sending, acknowledgement timers, retransmission, cover), `inbound`
//! (what the gateway delivers, reassembly), `health` (which mixes to route around),
//! `labels` (what each handed-out label was for), [`durable`] (what the store must see, and
//! what waits for it), `restore` (a core back from its store); this file holds the state and
//! the timers.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p_identity::PeerId;
use p2pmix_mix::{ClientId, Geometry, RecipientKey, Surb};
use rand::CryptoRng;
use thiserror::Error;

pub use self::durable::{
    SavedAckLabel, SavedFragment, SavedOutbound, SavedReceived, SavedReplyLabel, SavedState,
    StoreBatch, StoreOp,
};
use self::{
    durable::Durability,
    health::RouteHealth,
    inbound::{Inbox, Partial},
    labels::{AckLabel, LOOP_LABEL_LIFETIME, LabelTable, ReplyLabel},
    outbound::{AckTimer, Outbound, RttEstimate},
};

/// How much longer than a message is retransmitted its labels are kept (its last
/// acknowledgement may still be on its way).
const LABEL_SLACK: Duration = Duration::from_secs(3600);
use super::{
    address::Address,
    e2e::{self, StaticKey},
    frame::{MessageId, REPLY_OVERHEAD, fragment_overhead},
    route::{RouteError, RoutePolicy, Topology},
    schedule::{Emission, SendingSchedule, StreamRates},
};

pub mod durable;
mod health;
mod inbound;
mod labels;
mod outbound;
mod restore;

/// When a received fragment is acknowledged end to end (and so when its sender is told
/// [`ClientEvent::Delivered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the fragment is durable (at once without a store); the message counts as accepted
    /// when it is handed to the application.
    WhenDurable,
    /// Once the application accepted the whole message ([`ClientCore::accept`]); with a store,
    /// a message not accepted yet is handed over again after a restart.
    WhenAccepted,
}
/// Limits and choices of one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// Largest message accepted by [`ClientCore::send`].
    pub max_message: usize,
    /// Largest number of reply SURBs one message may carry.
    pub max_reply_surbs: usize,
    /// Sends per fragment before the message fails.
    pub max_attempts: u32,
    /// How long a message is retransmitted before it fails (cover a mailbox's lifetime, so
    /// that an absent recipient still gets it).
    pub give_up_after: Duration,
    /// Longest wait between two sends of one fragment.
    pub max_backoff: Duration,
    /// Extra time allowed for an acknowledgement beyond the expected round trip, before round
    /// trips were measured.
    pub ack_slack: Duration,
    /// When received fragments are acknowledged.
    pub acknowledge: Acknowledge,
    /// Real packets that may wait for the send stream.
    pub max_queued: usize,
    /// Bytes of incomplete incoming messages held at most; a message is admitted with room for
    /// all its fragments or refused.
    pub max_reassembly_bytes: usize,
    /// How long an incomplete incoming message is kept (longer than senders retransmit: its
    /// fragments were acknowledged).
    pub reassembly_timeout: Duration,
    /// How long delivered message ids are remembered (to drop duplicates; longer than senders
    /// retransmit).
    pub remember_delivered: Duration,
    /// Route independence rules.
    pub policy: RoutePolicy,
    /// Whether recipients learn this client's static key (Noise X) or not (Noise N).
    pub known_sender: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_message: 1 << 20,
            max_reply_surbs: 4,
            max_attempts: 200,
            give_up_after: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(1800),
            ack_slack: Duration::from_secs(2),
            acknowledge: Acknowledge::WhenDurable,
            max_queued: 1 << 16,
            max_reassembly_bytes: 16 << 20,
            reassembly_timeout: Duration::from_secs(25 * 3600),
            remember_delivered: Duration::from_secs(26 * 3600),
            policy: RoutePolicy::default(),
            known_sender: false,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// Larger than [`ClientConfig::max_message`].
    #[error("message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More reply SURBs than allowed.
    #[error("{asked} reply SURBs asked, at most {max}")]
    TooManySurbs {
        /// Asked.
        asked: usize,
        /// Allowed.
        max: usize,
    },
    /// The sending queue cannot take the message's fragments now.
    #[error("the sending queue is full")]
    QueueFull,
    /// The address's recipient-layer key is not a valid key (a hand-built address).
    #[error("the address's recipient key is not a valid key")]
    BadAddress,
    /// The reply does not fit in the SURBs the message carried.
    #[error("the reply needs {needed} packets but {surbs} SURBs came with the message")]
    ReplyTooLarge {
        /// Packets needed.
        needed: usize,
        /// SURBs held.
        surbs: usize,
    },
}

/// Why a message failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FailReason {
    /// A fragment was never acknowledged.
    #[error("fragment {index} was not acknowledged after {attempts} attempts")]
    Unacknowledged {
        /// The fragment.
        index: u16,
        /// Sends.
        attempts: u32,
    },
    /// A fragment could not be built into a packet at its last attempts (nothing went out).
    #[error("fragment {index} could not be sent after {attempts} attempts: {reason}")]
    Unroutable {
        /// The fragment.
        index: u16,
        /// Send ticks it was due on.
        attempts: u32,
        /// Why its last attempt could not be built.
        reason: Unroutable,
    },
}

/// Why a fragment could not be built into a packet on its send tick: the tick sends drop cover
/// instead and the fragment is tried again a second later (until its message fails).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Unroutable {
    /// No verified consensus yet: there is nothing to route through.
    #[error("no consensus yet")]
    NoConsensus,
    /// The consensus offers no route (the recipient's gateway is not in it, a layer is empty,
    /// or no mix of a layer is independent of the other hops).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The recipient's address carries a key that is not a valid point.
    #[error("the recipient's address has an unusable key")]
    RecipientKey,
    /// The end-to-end encryption refused (a bad key in the address).
    #[error(transparent)]
    Seal(#[from] e2e::E2eError),
    /// The packet or a SURB could not be built.
    #[error(transparent)]
    Build(#[from] p2pmix_mix::BuildError),
}

/// SURBs that came with a message: the way to answer its sender.
#[derive(Debug)]
pub struct ReplyHandle {
    /// The message they came with.
    pub message: MessageId,
    surbs: Vec<Surb>,
}

impl ReplyHandle {
    /// Reply packets this handle can carry.
    pub fn surbs(&self) -> usize {
        self.surbs.len()
    }

    /// Largest reply in bytes.
    pub fn capacity(&self) -> usize {
        self.surbs.len() * reply_capacity()
    }
}

/// A message that arrived, whole.
#[derive(Debug)]
pub struct ReceivedMessage {
    /// The message; also the token to accept it with ([`ClientCore::accept`]).
    pub id: MessageId,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The sender's static key, when it chose to be known.
    pub from: Option<[u8; 32]>,
    /// For a reply: the message it answers.
    pub in_reply_to: Option<MessageId>,
    /// The way to answer (pass it to `reply`), if the sender gave SURBs.
    pub reply: Option<ReplyHandle>,
}

/// What the client reports (more kinds may come: match with a `_` arm).
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A message arrived (once per message).
    Received(ReceivedMessage),
    /// Every fragment of a sent message was acknowledged.
    Delivered(MessageId),
    /// A sent message could not be delivered.
    Failed(MessageId, FailReason),
    /// A fragment of a sent message could not be built into a packet (reported once, and again
    /// only after a packet of the message was built since); the client keeps trying until the
    /// message fails.
    Unroutable(MessageId, Unroutable),
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    /// Real fragment packets sent (first sends and retransmissions).
    pub fragments_sent: u64,
    /// Retransmissions among them.
    pub retransmissions: u64,
    /// Acknowledgement and reply packets sent.
    pub acks_and_replies_sent: u64,
    /// Drop-cover packets sent.
    pub drop_cover_sent: u64,
    /// Loop-cover packets sent.
    pub loop_cover_sent: u64,
    /// Loop-cover packets that came back.
    pub loop_cover_received: u64,
    /// Packets that could not be opened or were malformed.
    pub undecodable: u64,
    /// Duplicate fragments of already delivered messages.
    pub duplicates: u64,
    /// Fragments of new messages refused because reassembly memory was full (their senders
    /// retransmit).
    pub partials_refused: u64,
    /// Acknowledgements waiting for the application that were dropped (their senders
    /// retransmit, and the next copy is acknowledged).
    pub held_acks_dropped: u64,
}

/// What the last packet from [`ClientCore::poll_transmit`] carried: the ground truth a test
/// network records (`p2pmix_mix::trace`); nothing else reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmitted {
    /// Fragment `index` of `count` of `message`, sent for the `attempt`-th time.
    Fragment {
        /// The message.
        message: MessageId,
        /// The fragment.
        index: u16,
        /// Fragments of the message.
        count: u16,
        /// Sends of this fragment, this one included.
        attempt: u32,
    },
    /// An acknowledgement or a reply (through a SURB).
    Reply,
    /// Loop cover.
    LoopCover,
    /// Drop cover.
    DropCover,
}

/// What waits for a tick of the send stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    /// A fragment, built into a packet when its tick comes (fresh route, fresh SURB).
    Fragment { message: MessageId, index: u16 },
    /// A packet built ahead (an acknowledgement or a reply), by its number.
    Prebuilt(usize),
}

/// Bytes of message data one fragment carries, with `reply_surbs` SURBs in it.
pub fn fragment_capacity(reply_surbs: usize, known_sender: bool) -> usize {
    Geometry::DEFAULT
        .recipient_payload_size()
        .saturating_sub(2 + e2e::overhead(known_sender) + fragment_overhead(reply_surbs))
}

/// Bytes of reply data one SURB carries.
pub fn reply_capacity() -> usize {
    Geometry::DEFAULT.payload_size() - 2 - REPLY_OVERHEAD
}

/// The client state machine. See the module documentation.
pub struct ClientCore {
    config: ClientConfig,
    geometry: Geometry,
    me: ClientId,
    gateway: PeerId,
    key: StaticKey,
    /// The recipient-layer key (derived from `key`): forward packets for this client carry
    /// their innermost layer under it.
    recipient: RecipientKey,
    topology: Option<Topology>,
    schedule: SendingSchedule<Outgoing>,
    /// Packets built ahead (acknowledgements, replies), sent on send-stream ticks.
    prebuilt: HashMap<usize, Vec<u8>>,
    next_prebuilt: usize,
    outbound: HashMap<MessageId, Outbound>,
    acks: LabelTable<AckLabel>,
    replies: LabelTable<ReplyLabel>,
    loops: LabelTable<()>,
    health: RouteHealth,
    rtt: RttEstimate,
    timers: BinaryHeap<Reverse<AckTimer>>,
    partials: HashMap<MessageId, Partial>,
    /// Bytes reserved by the partials (each for all its fragments).
    partial_bytes: usize,
    /// Whole messages not accepted yet, and acknowledgements held for them.
    inbox: Inbox,
    delivered: HashMap<MessageId, Instant>,
    durability: Durability,
    mailbox_ack: u64,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
    last_transmitted: Option<Transmitted>,
}

impl std::fmt::Debug for ClientCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCore")
            .field("gateway", &self.gateway)
            .field("outbound", &self.outbound.len())
            .field("partials", &self.partials.len())
            .finish_non_exhaustive()
    }
}

impl ClientCore {
    /// A client registered as `me` at `gateway`, decrypting with `key`.
    pub fn new<R: CryptoRng + ?Sized>(
        now: Instant,
        config: ClientConfig,
        me: ClientId,
        gateway: PeerId,
        key: StaticKey,
        rates: StreamRates,
        rng: &mut R,
    ) -> Self {
        ClientCore {
            schedule: SendingSchedule::new(now, rates, config.max_queued, rng),
            config,
            geometry: Geometry::DEFAULT,
            me,
            gateway,
            recipient: key.recipient_key(),
            key,
            topology: None,
            prebuilt: HashMap::new(),
            next_prebuilt: 0,
            outbound: HashMap::new(),
            acks: LabelTable::new(config.give_up_after + LABEL_SLACK),
            replies: LabelTable::new(config.give_up_after + LABEL_SLACK),
            loops: LabelTable::new(LOOP_LABEL_LIFETIME),
            health: RouteHealth::default(),
            rtt: RttEstimate::default(),
            timers: BinaryHeap::new(),
            partials: HashMap::new(),
            partial_bytes: 0,
            inbox: Inbox::default(),
            delivered: HashMap::new(),
            durability: Durability::memory(now),
            mailbox_ack: 0,
            events: VecDeque::new(),
            stats: ClientStats::default(),
            last_transmitted: None,
        }
    }

    /// This client's address.
    pub fn address(&self) -> Address {
        Address {
            gateway: self.gateway,
            client: self.me,
            noise_key: self.key.public(),
            recipient_key: self.recipient.public_key().to_bytes(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Installs the topology packets are built for (the consensus in force).
    pub fn set_topology(&mut self, topology: Topology, rates: StreamRates) {
        self.topology = Some(topology);
        self.schedule.set_rates(rates);
    }

    /// The topology in use.
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// Packets waiting for the send stream (fragments, acknowledgements, replies).
    pub fn queued(&self) -> usize {
        self.schedule.queued()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientCore::handle_timeout`] next has retransmissions to queue or messages to
    /// fail (the send schedule aside: a driver that cannot send yet waits for this).
    pub fn poll_retransmit_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.deadline)
    }

    /// When [`ClientCore::handle_timeout`] or [`ClientCore::poll_transmit`] should next run:
    /// the send stream's next tick or the next acknowledgement deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let send = self.schedule.poll_timeout();
        Some(match self.poll_retransmit_timeout() {
            Some(t) => send.min(t),
            None => send,
        })
    }

    /// Retransmits fragments whose acknowledgement is late, fails messages out of attempts,
    /// forgets stale state.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_ack_timers(now);
        for (_, ack) in self.acks.expire(now) {
            self.durability.push(StoreOp::ForgetAckKeys {
                message: ack.message,
                label: ack.keys.label(),
            });
        }
        for (label, _) in self.replies.expire(now) {
            self.durability.push(StoreOp::ForgetReplyKeys { label });
        }
        self.loops.expire(now);
        let timeout = self.config.reassembly_timeout;
        let expired: Vec<MessageId> = self
            .partials
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.first_seen) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for message in expired {
            if let Some(p) = self.partials.remove(&message) {
                self.partial_bytes -= p.reserved;
                self.drop_held_acks(&message);
                self.durability.push(StoreOp::PartialExpired { message });
            }
        }
        let remember = self.config.remember_delivered;
        let forgotten: Vec<MessageId> = self
            .delivered
            .iter()
            .filter(|(id, t)| {
                now.saturating_duration_since(**t) >= remember && !self.inbox.holds(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for message in forgotten {
            self.delivered.remove(&message);
            self.durability.push(StoreOp::ForgetDelivered { message });
        }
    }

    /// What the last packet [`ClientCore::poll_transmit`] returned carried.
    pub fn last_transmitted(&self) -> Option<Transmitted> {
        self.last_transmitted
    }

    /// The next packet to hand to the gateway, if the schedule says one is due at `now`.
    pub fn poll_transmit<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        while let Some(emission) = self.schedule.poll_emit(now, rng) {
            let (packet, kind) = match emission {
                Emission::Real(Outgoing::Prebuilt(n)) => {
                    let p = self.prebuilt.remove(&n);
                    if p.is_some() {
                        self.stats.acks_and_replies_sent += 1;
                    }
                    (p, Transmitted::Reply)
                }
                Emission::Real(Outgoing::Fragment { message, index }) => {
                    match self.build_fragment(now, message, index, rng) {
                        Ok(packet) => {
                            let (count, attempt) =
                                self.outbound.get(&message).map_or((0, 0), |o| {
                                    let attempt = o.attempts(index);
                                    (o.fragments(), attempt)
                                });
                            let kind = Transmitted::Fragment {
                                message,
                                index,
                                count,
                                attempt,
                            };
                            (Some(packet), kind)
                        }
                        Err(reason) => {
                            // The tick still sends a packet, or the stream would have a gap
                            // where real traffic was due.
                            let p = if self.retry_unroutable(now, message, index, reason) {
                                self.stats.drop_cover_sent += 1;
                                self.build_cover(false, now, rng)
                            } else {
                                None
                            };
                            (p, Transmitted::DropCover)
                        }
                    }
                }
                Emission::DropCover => {
                    let p = self.build_cover(false, now, rng);
                    if p.is_some() {
                        self.stats.drop_cover_sent += 1;
                    }
                    (p, Transmitted::DropCover)
                }
                Emission::LoopCover => {
                    let p = self.build_cover(true, now, rng);
                    if p.is_some() {
                        self.stats.loop_cover_sent += 1;
                    }
                    (p, Transmitted::LoopCover)
                }
            };
            if packet.is_some() {
                self.last_transmitted = Some(kind);
                return packet;
            }
        }
        None
    }
}
