//! The client state machine, sans-IO: messages in, Sphinx packets for the gateway out, packets
//! from the gateway in, events out. Time and randomness are passed in.
//!
//! - **Sending**: a message (up to [`ClientConfig::max_message`]) is cut into fragments; each
//!   fragment waits for a tick of the Poisson send stream ([`SendingSchedule`]), and only then
//!   gets a fresh route, a fresh SURB to acknowledge it, end-to-end encryption to the recipient
//!   ([`e2e`]) and its Sphinx packet. A fragment whose acknowledgement does not come back within
//!   its timeout (the expected round trip, doubling per attempt) goes out again over a new
//!   route; after [`ClientConfig::max_attempts`] the message fails.
//! - **Receiving**: fragments are decrypted, acknowledged (always, also duplicates: the first
//!   acknowledgement may have been lost) and reassembled within bounded memory and time; a
//!   message is handed to the application exactly once.
//! - **Replies**: a message may carry SURBs; the recipient answers through them without
//!   learning who sent it. Acknowledgements and replies travel inside SURB replies, which only
//!   the SURB's creator can open.
//! - **Cover**: when nothing is queued, the send stream emits drop cover; loop cover comes back
//!   to this client. All packets have one size and go to the client's gateway.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use p2pmix_mix::{
    ClientId, Destination, Geometry, KeyId, Label, NodeId, Surb, SurbKeys, build_packet,
    create_surb, open_payload,
};
use rand::{CryptoRng, RngExt};
use thiserror::Error;

use super::{
    address::Address,
    e2e::{self, StaticKey},
    frame::{
        Frame, MessageId, REPLY_OVERHEAD, SURB_SIZE, fragment_overhead, from_payload, to_payload,
    },
    route::{RoutePolicy, Topology, choose_route, choose_route_avoiding},
    schedule::{Emission, SendingSchedule, StreamRates},
};

/// Limits and choices of one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// Largest message accepted by [`ClientCore::send`].
    pub max_message: usize,
    /// Largest number of reply SURBs one message may carry.
    pub max_reply_surbs: usize,
    /// Sends per fragment before the message fails.
    pub max_attempts: u32,
    /// Extra time allowed for an acknowledgement beyond the expected round trip.
    pub ack_slack: Duration,
    /// Real packets that may wait for the send stream.
    pub max_queued: usize,
    /// Bytes of incomplete incoming messages held at most.
    pub max_reassembly_bytes: usize,
    /// How long an incomplete incoming message is kept.
    pub reassembly_timeout: Duration,
    /// How long delivered message ids are remembered (to drop duplicates).
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
            max_attempts: 8,
            ack_slack: Duration::from_secs(2),
            max_queued: 1 << 16,
            max_reassembly_bytes: 16 << 20,
            reassembly_timeout: Duration::from_secs(600),
            remember_delivered: Duration::from_secs(3600),
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

/// What the client reports.
#[derive(Debug)]
pub enum ClientEvent {
    /// A message arrived (once per message).
    Received {
        /// The message.
        id: MessageId,
        /// Its bytes.
        bytes: Vec<u8>,
        /// The sender's static key, when it chose to be known.
        from: Option<[u8; 32]>,
        /// For a reply: the message it answers.
        in_reply_to: Option<MessageId>,
        /// The way to answer, if the sender gave SURBs.
        reply: Option<ReplyHandle>,
    },
    /// Every fragment of a sent message was acknowledged.
    Delivered(MessageId),
    /// A sent message could not be delivered.
    Failed(MessageId, FailReason),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    Fragment { message: MessageId, index: u16 },
    Prebuilt(usize),
}

/// Lost round trips, with no successful one, after which a client routes around a mix.
const SUSPECT_AFTER: u32 = 3;
/// A mix's record halves every this long, so that a mix that came back is tried again, while
/// sparse traffic still remembers a dead one.
const SUSPECT_HALF_LIFE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Record {
    ok: u32,
    lost: u32,
    since: Instant,
}

impl Record {
    fn fresh(now: Instant) -> Self {
        Record {
            ok: 0,
            lost: 0,
            since: now,
        }
    }

    /// The record as of `now`, halved once per half-life since it was last brought up to date.
    fn decayed(&self, now: Instant) -> Record {
        let halvings = (now.saturating_duration_since(self.since).as_secs()
            / SUSPECT_HALF_LIFE.as_secs().max(1))
        .min(31) as u32;
        Record {
            ok: self.ok >> halvings,
            lost: self.lost >> halvings,
            since: self.since + SUSPECT_HALF_LIFE * halvings,
        }
    }

    /// Whether routes should avoid this mix: it lost round trips and none came back.
    fn suspect(&self, now: Instant) -> bool {
        let r = self.decayed(now);
        r.ok == 0 && r.lost >= SUSPECT_AFTER
    }
}

struct Outbound {
    to: Address,
    parts: Vec<Vec<u8>>,
    reply_surbs: usize,
    acked: Vec<bool>,
    attempts: Vec<u32>,
    /// Mixes of each fragment's latest attempt (forward route and acknowledgement route).
    routes: Vec<Vec<NodeId>>,
    remaining: usize,
}

struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    bytes: usize,
    first_seen: Instant,
    from: Option<[u8; 32]>,
    in_reply_to: Option<MessageId>,
    surbs: Vec<Surb>,
}

/// Bytes of message data one fragment carries, with `reply_surbs` SURBs in it.
pub fn fragment_capacity(reply_surbs: usize, known_sender: bool) -> usize {
    Geometry::DEFAULT
        .payload_size()
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
    topology: Option<Topology>,
    schedule: SendingSchedule<Outgoing>,
    /// Packets built ahead (acknowledgements, replies), sent on send-stream ticks.
    prebuilt: HashMap<usize, Vec<u8>>,
    next_prebuilt: usize,
    outbound: HashMap<MessageId, Outbound>,
    /// Ack label -> (message, fragment, keys).
    acks: HashMap<Label, (MessageId, u16, SurbKeys, Instant)>,
    /// Per mix: round trips it was on that came back and that were lost, since when. Under
    /// uniform loss every mix sees some successes; a dead one sees none.
    suspects: HashMap<NodeId, Record>,
    /// Reply label -> (message answered, keys).
    replies: HashMap<Label, (MessageId, SurbKeys, Instant)>,
    loops: HashMap<Label, Instant>,
    /// (deadline, message, fragment, attempt).
    timers: BinaryHeap<Reverse<(Instant, MessageId, u16, u32)>>,
    partials: HashMap<MessageId, Partial>,
    partial_bytes: usize,
    delivered: HashMap<MessageId, Instant>,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
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

/// How long a fragment that could not be routed waits before it is queued again.
const UNROUTABLE_RETRY: Duration = Duration::from_secs(1);

/// Labels, SURB keys and loop records older than this are forgotten.
const LABEL_LIFETIME: Duration = Duration::from_secs(3600);
/// Most outstanding labels of each kind (bounds memory under loss).
const MAX_LABELS: usize = 1 << 16;

/// The mixes of a route (every hop but the two gateways).
fn mixes_of(route: &[p2pmix_mix::Hop]) -> Vec<NodeId> {
    let n = route.len();
    route
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i + 1 != n)
        .map(|(_, h)| h.node)
        .collect()
}

fn random_label<R: CryptoRng + ?Sized>(rng: &mut R) -> Label {
    let mut l = [0u8; 16];
    rng.fill_bytes(&mut l);
    Label(l)
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
            key,
            topology: None,
            prebuilt: HashMap::new(),
            next_prebuilt: 0,
            outbound: HashMap::new(),
            acks: HashMap::new(),
            suspects: HashMap::new(),
            replies: HashMap::new(),
            loops: HashMap::new(),
            timers: BinaryHeap::new(),
            partials: HashMap::new(),
            partial_bytes: 0,
            delivered: HashMap::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    /// This client's address.
    pub fn address(&self) -> Address {
        Address {
            gateway: self.gateway,
            client: self.me,
            noise_key: self.key.public(),
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

    /// Queues `bytes` for `to`, with `reply_surbs` SURBs the recipient may answer through.
    pub fn send<R: CryptoRng + ?Sized>(
        &mut self,
        to: Address,
        bytes: &[u8],
        reply_surbs: usize,
        rng: &mut R,
    ) -> Result<MessageId, SendError> {
        if bytes.len() > self.config.max_message {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: self.config.max_message,
            });
        }
        if reply_surbs > self.config.max_reply_surbs {
            return Err(SendError::TooManySurbs {
                asked: reply_surbs,
                max: self.config.max_reply_surbs,
            });
        }
        let first = fragment_capacity(reply_surbs, self.config.known_sender);
        let rest = fragment_capacity(0, self.config.known_sender);
        let mut parts = vec![bytes[..bytes.len().min(first)].to_vec()];
        let mut tail = &bytes[bytes.len().min(first)..];
        while !tail.is_empty() {
            let n = tail.len().min(rest);
            parts.push(tail[..n].to_vec());
            tail = &tail[n..];
        }
        let count = parts.len();
        if count > u16::MAX as usize || self.schedule.queued() + count > self.config.max_queued {
            return Err(SendError::QueueFull);
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let message = MessageId(id);
        for index in 0..count {
            // Capacity was checked above.
            let _ = self.schedule.push(Outgoing::Fragment {
                message,
                index: index as u16,
            });
        }
        self.outbound.insert(
            message,
            Outbound {
                to,
                parts,
                reply_surbs,
                acked: vec![false; count],
                attempts: vec![0; count],
                routes: vec![Vec::new(); count],
                remaining: count,
            },
        );
        Ok(message)
    }

    /// Answers through the SURBs of a received message.
    pub fn reply<R: CryptoRng + ?Sized>(
        &mut self,
        handle: ReplyHandle,
        bytes: &[u8],
        rng: &mut R,
    ) -> Result<MessageId, SendError> {
        let cap = reply_capacity();
        let needed = bytes.len().div_ceil(cap).max(1);
        if needed > handle.surbs.len() {
            return Err(SendError::ReplyTooLarge {
                needed,
                surbs: handle.surbs.len(),
            });
        }
        if self.schedule.queued() + needed > self.config.max_queued {
            return Err(SendError::QueueFull);
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let reply = MessageId(id);
        let mut chunks: Vec<&[u8]> = bytes.chunks(cap).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for ((index, chunk), surb) in chunks.iter().enumerate().zip(handle.surbs) {
            let frame = Frame::Reply {
                message: reply,
                index: index as u16,
                count: needed as u16,
                in_reply_to: handle.message,
                data: chunk,
            };
            if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&frame.encode())) {
                self.queue_prebuilt(packet);
            }
        }
        Ok(reply)
    }

    fn queue_prebuilt(&mut self, packet: Vec<u8>) {
        let n = self.next_prebuilt;
        self.next_prebuilt = self.next_prebuilt.wrapping_add(1);
        if self.schedule.push(Outgoing::Prebuilt(n)).is_ok() {
            self.prebuilt.insert(n, packet);
        }
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
        self.timers.peek().map(|Reverse((t, ..))| *t)
    }

    /// When [`ClientCore::handle_timeout`] or [`ClientCore::poll_transmit`] should next run.
    pub fn poll_timeout(&self) -> Instant {
        let send = self.schedule.poll_timeout();
        match self.timers.peek() {
            Some(Reverse((t, ..))) => send.min(*t),
            None => send,
        }
    }

    /// Expected time for a fragment's acknowledgement: there and back through three mixes each
    /// way, two send-stream waits, and the configured slack; doubled per attempt (up to 16x).
    fn ack_timeout(&self, attempt: u32) -> Duration {
        let mean = self
            .topology
            .as_ref()
            .map_or(Duration::from_millis(50), |t| t.mean_delay());
        let layers = self.topology.as_ref().map_or(3, |t| t.layers());
        let base = mean * (2 * layers) * 3 + self.config.ack_slack;
        base * (1u32 << attempt.saturating_sub(1).min(4))
    }

    /// Retransmits fragments whose acknowledgement is late, fails messages out of attempts,
    /// forgets stale state.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, message, index, attempt))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(out) = self.outbound.get(&message) else {
                continue;
            };
            let i = index as usize;
            if out.acked.get(i).copied().unwrap_or(true)
                || out.attempts.get(i).copied() != Some(attempt)
            {
                continue;
            }
            // Every mix of the lost round trip counts one loss.
            let route = out.routes.get(i).cloned().unwrap_or_default();
            for node in route {
                self.record(now, node, false);
            }
            if attempt >= self.config.max_attempts {
                self.outbound.remove(&message);
                self.acks.retain(|_, (m, ..)| *m != message);
                self.events.push_back(ClientEvent::Failed(
                    message,
                    FailReason::Unacknowledged {
                        index,
                        attempts: attempt,
                    },
                ));
            } else if self
                .schedule
                .push(Outgoing::Fragment { message, index })
                .is_err()
            {
                // The queue is full: try again after another timeout.
                let again = now + self.ack_timeout(attempt);
                self.timers.push(Reverse((again, message, index, attempt)));
            }
        }
        let expired = |t: &Instant| now.saturating_duration_since(*t) < LABEL_LIFETIME;
        self.acks.retain(|_, (.., t)| expired(t));
        self.replies.retain(|_, (_, _, t)| expired(t));
        self.loops.retain(|_, t| expired(t));
        let timeout = self.config.reassembly_timeout;
        let mut freed = 0;
        self.partials.retain(|_, p| {
            let keep = now.saturating_duration_since(p.first_seen) < timeout;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.partial_bytes -= freed;
        let remember = self.config.remember_delivered;
        self.delivered
            .retain(|_, t| now.saturating_duration_since(*t) < remember);
    }

    /// The next packet to hand to the gateway, if the schedule says one is due at `now`.
    pub fn poll_transmit<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        while let Some(emission) = self.schedule.poll_emit(now, rng) {
            let packet = match emission {
                Emission::Real(Outgoing::Prebuilt(n)) => {
                    let p = self.prebuilt.remove(&n);
                    if p.is_some() {
                        self.stats.acks_and_replies_sent += 1;
                    }
                    p
                }
                Emission::Real(Outgoing::Fragment { message, index }) => {
                    match self.build_fragment(now, message, index, rng) {
                        Some(packet) => Some(packet),
                        None => {
                            // The tick still sends a packet, or the stream would have a gap
                            // where real traffic was due.
                            if self.retry_unroutable(now, message, index) {
                                self.stats.drop_cover_sent += 1;
                                self.build_cover(false, now, rng)
                            } else {
                                None
                            }
                        }
                    }
                }
                Emission::DropCover => {
                    let p = self.build_cover(false, now, rng);
                    if p.is_some() {
                        self.stats.drop_cover_sent += 1;
                    }
                    p
                }
                Emission::LoopCover => {
                    let p = self.build_cover(true, now, rng);
                    if p.is_some() {
                        self.stats.loop_cover_sent += 1;
                    }
                    p
                }
            };
            if packet.is_some() {
                return packet;
            }
        }
        None
    }

    fn build_fragment<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        let topology = self.topology.as_ref()?;
        let out = self.outbound.get(&message)?;
        let i = index as usize;
        if out.acked.get(i).copied().unwrap_or(true) {
            return None;
        }
        let to = out.to;
        let key_id = KeyId::for_epoch(topology.epoch());
        let policy = self.config.policy;
        let suspects = &self.suspects;
        let avoid = |n: NodeId| suspects.get(&n).is_some_and(|r| r.suspect(now));
        let forward =
            choose_route_avoiding(topology, &self.gateway, &to.gateway, &policy, &avoid, rng)
                .ok()?;
        let surb_for = |rng: &mut R| -> Option<(Surb, SurbKeys, Label, Vec<NodeId>)> {
            let back =
                choose_route_avoiding(topology, &to.gateway, &self.gateway, &policy, &avoid, rng)
                    .ok()?;
            let label = random_label(rng);
            let (surb, keys) =
                create_surb(&self.geometry, key_id, &back, self.me, label, rng).ok()?;
            Some((surb, keys, label, mixes_of(&back)))
        };
        let (ack_surb, ack_keys, ack_label, back_mixes) = surb_for(rng)?;
        let mut round_trip = mixes_of(&forward);
        round_trip.extend(back_mixes);
        let mut reply_surbs = Vec::new();
        let mut reply_keys = Vec::new();
        if index == 0 {
            for _ in 0..out.reply_surbs {
                let (s, k, l, _) = surb_for(rng)?;
                reply_surbs.push(s.to_bytes());
                reply_keys.push((l, k));
            }
        }
        let ack_bytes = ack_surb.to_bytes();
        debug_assert_eq!(ack_bytes.len(), SURB_SIZE);
        let frame = Frame::Fragment {
            message,
            index,
            count: out.parts.len() as u16,
            ack: Some(&ack_bytes),
            reply_surbs: reply_surbs.iter().map(Vec::as_slice).collect(),
            data: out.parts.get(i)?,
        };
        let sender = self.config.known_sender.then_some(&self.key);
        let sealed = e2e::seal(&to.noise_key, sender, &frame.encode()).ok()?;
        let destination = Destination::Deliver {
            client: to.client,
            label: random_label(rng),
        };
        let packet = build_packet(
            &self.geometry,
            key_id,
            &forward,
            &destination,
            &to_payload(&sealed),
            rng,
        )
        .ok()?;
        // Bookkeeping only once the packet exists.
        if self.acks.len() < MAX_LABELS {
            self.acks.insert(ack_label, (message, index, ack_keys, now));
        }
        for (l, k) in reply_keys {
            if self.replies.len() < MAX_LABELS {
                self.replies.insert(l, (message, k, now));
            }
        }
        let attempt = {
            let out = self.outbound.get_mut(&message)?;
            if let Some(r) = out.routes.get_mut(i) {
                *r = round_trip;
            }
            let a = out.attempts.get_mut(i)?;
            *a += 1;
            *a
        };
        self.stats.fragments_sent += 1;
        if attempt > 1 {
            self.stats.retransmissions += 1;
        }
        let deadline = now + self.ack_timeout(attempt);
        self.timers
            .push(Reverse((deadline, message, index, attempt)));
        Some(packet)
    }

    /// A fragment that could not be built (no topology, no route to its recipient's gateway):
    /// the try counts as an attempt, and the fragment goes back to the queue after
    /// [`UNROUTABLE_RETRY`], so that a message that can never be routed fails after the
    /// configured attempts. Returns whether the fragment was still wanted.
    fn retry_unroutable(&mut self, now: Instant, message: MessageId, index: u16) -> bool {
        let Some(out) = self.outbound.get_mut(&message) else {
            return false;
        };
        let i = index as usize;
        if out.acked.get(i).copied().unwrap_or(true) {
            return false;
        }
        let Some(attempt) = out.attempts.get_mut(i) else {
            return false;
        };
        *attempt += 1;
        let attempt = *attempt;
        // Nothing went out: no mix is to blame when the timer fires.
        if let Some(r) = out.routes.get_mut(i) {
            r.clear();
        }
        self.timers
            .push(Reverse((now + UNROUTABLE_RETRY, message, index, attempt)));
        true
    }

    fn build_cover<R: CryptoRng + ?Sized>(
        &mut self,
        loop_back: bool,
        now: Instant,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        let topology = self.topology.as_ref()?;
        let gateways = topology.gateways();
        let (exit, destination) = if loop_back {
            let label = random_label(rng);
            if self.loops.len() < MAX_LABELS {
                self.loops.insert(label, now);
            }
            (
                self.gateway,
                Destination::Deliver {
                    client: self.me,
                    label,
                },
            )
        } else {
            let g = gateways.get(rng.random_range(0..gateways.len().max(1)))?;
            (g.peer, Destination::Drop)
        };
        let route = choose_route(topology, &self.gateway, &exit, &self.config.policy, rng).ok()?;
        build_packet(
            &self.geometry,
            KeyId::for_epoch(topology.epoch()),
            &route,
            &destination,
            &[],
            rng,
        )
        .ok()
    }

    /// Takes the body of a packet the gateway delivered to this client under `label`.
    pub fn handle_delivery(&mut self, now: Instant, label: Label, body: &mut [u8]) {
        if let Some((message, index, keys, _)) = self.acks.remove(&label) {
            match keys
                .open_reply(&self.geometry, body)
                .ok()
                .and_then(|p| from_payload(p).ok())
                .and_then(|f| Frame::decode(f).ok())
            {
                Some(Frame::Ack {
                    message: m,
                    index: i,
                }) if m == message && i == index => {
                    self.acked(now, message, index);
                }
                _ => self.stats.undecodable += 1,
            }
            return;
        }
        if let Some((answered, keys, _)) = self.replies.remove(&label) {
            let frame = keys
                .open_reply(&self.geometry, body)
                .ok()
                .and_then(|p| from_payload(p).ok())
                .map(<[u8]>::to_vec);
            match frame.as_deref().map(Frame::decode) {
                Some(Ok(Frame::Reply {
                    message,
                    index,
                    count,
                    in_reply_to,
                    data,
                })) if in_reply_to == answered => {
                    self.reassemble(
                        now,
                        message,
                        index,
                        count,
                        data,
                        None,
                        Some(in_reply_to),
                        Vec::new(),
                    );
                }
                _ => self.stats.undecodable += 1,
            }
            return;
        }
        if self.loops.remove(&label).is_some() {
            self.stats.loop_cover_received += 1;
            return;
        }
        let Some(sealed) = open_payload(&self.geometry, body)
            .ok()
            .and_then(|p| from_payload(p).ok())
        else {
            self.stats.undecodable += 1;
            return;
        };
        let Ok((plain, from)) = e2e::open(&self.key, sealed) else {
            self.stats.undecodable += 1;
            return;
        };
        let Ok(Frame::Fragment {
            message,
            index,
            count,
            ack,
            reply_surbs,
            data,
        }) = Frame::decode(&plain)
        else {
            self.stats.undecodable += 1;
            return;
        };
        // Acknowledge every copy: an earlier acknowledgement may have been lost.
        if let Some(surb) = ack.and_then(|a| Surb::from_bytes(&self.geometry, a).ok()) {
            let ack = Frame::Ack { message, index }.encode();
            if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&ack)) {
                self.queue_prebuilt(packet);
            }
        }
        let surbs = reply_surbs
            .iter()
            .filter_map(|s| Surb::from_bytes(&self.geometry, s).ok())
            .collect();
        self.reassemble(now, message, index, count, data, from, None, surbs);
    }

    fn record(&mut self, now: Instant, node: NodeId, ok: bool) {
        let r = self
            .suspects
            .entry(node)
            .or_insert_with(|| Record::fresh(now));
        *r = r.decayed(now);
        if ok {
            r.ok = r.ok.saturating_add(1);
        } else {
            r.lost = r.lost.saturating_add(1);
        }
    }

    fn acked(&mut self, now: Instant, message: MessageId, index: u16) {
        let Some(out) = self.outbound.get_mut(&message) else {
            return;
        };
        // The round trip worked: each of its mixes counts one success.
        let route = out.routes.get(index as usize).cloned().unwrap_or_default();
        for node in route {
            self.record(now, node, true);
        }
        let Some(out) = self.outbound.get_mut(&message) else {
            return;
        };
        if let Some(a) = out.acked.get_mut(index as usize)
            && !*a
        {
            *a = true;
            out.remaining -= 1;
            if out.remaining == 0 {
                self.outbound.remove(&message);
                self.acks.retain(|_, (m, ..)| *m != message);
                self.events.push_back(ClientEvent::Delivered(message));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reassemble(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        count: u16,
        data: &[u8],
        from: Option<[u8; 32]>,
        in_reply_to: Option<MessageId>,
        surbs: Vec<Surb>,
    ) {
        if self.delivered.contains_key(&message) {
            self.stats.duplicates += 1;
            return;
        }
        let max_parts = self.config.max_message / fragment_capacity(0, true).max(1) + 2;
        if count as usize > max_parts {
            self.stats.undecodable += 1;
            return;
        }
        // Make room: drop the oldest incomplete messages beyond the byte bound.
        while self.partial_bytes + data.len() > self.config.max_reassembly_bytes {
            let Some(oldest) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(id, _)| *id)
            else {
                return;
            };
            if let Some(p) = self.partials.remove(&oldest) {
                self.partial_bytes -= p.bytes;
            }
        }
        let partial = self.partials.entry(message).or_insert_with(|| Partial {
            parts: vec![None; count as usize],
            missing: count as usize,
            bytes: 0,
            first_seen: now,
            from,
            in_reply_to,
            surbs: Vec::new(),
        });
        if partial.parts.len() != count as usize {
            self.stats.undecodable += 1;
            return;
        }
        if !surbs.is_empty() {
            partial.surbs = surbs;
        }
        let Some(slot) = partial.parts.get_mut(index as usize) else {
            return;
        };
        if slot.is_some() {
            self.stats.duplicates += 1;
            return;
        }
        *slot = Some(data.to_vec());
        partial.missing -= 1;
        partial.bytes += data.len();
        self.partial_bytes += data.len();
        if partial.missing > 0 {
            return;
        }
        let Some(done) = self.partials.remove(&message) else {
            return;
        };
        self.partial_bytes -= done.bytes;
        let bytes: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
        self.delivered.insert(message, now);
        let reply = (!done.surbs.is_empty()).then_some(ReplyHandle {
            message,
            surbs: done.surbs,
        });
        self.events.push_back(ClientEvent::Received {
            id: message,
            bytes,
            from: done.from,
            in_reply_to: done.in_reply_to,
            reply,
        });
    }
}
