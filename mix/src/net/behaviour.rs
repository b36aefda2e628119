//! The mix `NetworkBehaviour`: a thin adapter between the swarm and the sans-IO [`Relay`] and
//! [`DelayQueue`].
//!
//! Frames from neighbours pass the per-peer [`Admission`] on the event loop, wait in a
//! [`FairQueue`] by source (so that a flooding source waits behind itself), then go to worker
//! threads (a short queue each; they unwrap what waits in batches) for the Sphinx work, so a
//! slow packet never stalls the swarm. The
//! workers' decisions come back (bounded channel, waking the behaviour) into the delay queue; at
//! release time a packet is handed to the next hop's connection (dialled if needed) or, at the
//! final hop, reported as [`Event::Delivered`]. Every drop is counted by reason in [`Stats`]; a
//! peer that keeps sending invalid frames is disconnected and refused for a while. Admission and
//! the delay queue's shares are keyed on what is not free: consensus membership and the address
//! prefix of the sender's connection. With a replay journal ([`crate::ReplayLog`]), a decided
//! packet enters the delay queue only once its replay tag is on disk.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        Arc,
        mpsc::{Receiver, sync_channel},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{FutureExt, task::AtomicWaker};
use futures_timer::Delay as Timer;
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};

#[cfg(feature = "chaos")]
pub use super::chaos::Chaos;
pub use crate::stats::{DurationHistogram, HISTOGRAM_BUCKETS, MAX_BATCH, Stats, quantile_of};
use crate::{
    admission::{
        AddressShare, Admission, AdmissionConfig, ConnectionCounts, FairQueue, Fault, Origin,
        Prefix, Rate, Verdict,
    },
    net::{
        handler::{Handler, HandlerEvent, HandlerIn},
        outbox::{Change, Outbox, Sent},
        workers::{Job, Outcome, Workers},
    },
    pool::PacketPool,
    relay::{Decision, DelayQueue, DropReason, QueueLimits, Relay, ShareKey},
    sphinx::{
        replay::log::ReplayLog,
        routing::{ClientId, Destination, Label},
    },
    trace::{Direction, PacketTag, TraceSink, Truth},
};

/// How a mix behaviour runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Bounds of the delay queue.
    pub queue: QueueLimits,
    /// Packets per second a client (a neighbour that is not a node of any held consensus) may
    /// send; set from the consensus rates with [`Behaviour::set_client_rate`].
    pub client_rate: f64,
    /// Packets a client may send in one burst.
    pub client_burst: f64,
    /// Packets per second another node may send (it carries many clients' traffic).
    pub node_rate: f64,
    /// Packets another node may send in one burst.
    pub node_burst: f64,
    /// Worker threads for Sphinx unwrapping (default: one per core the node may use, so that every
    /// core can unwrap while the event loop, which needs little, shares them).
    pub workers: usize,
    /// Invalid frames (bad size, bad MAC, replay, over rate) after which a peer is cut off.
    pub max_peer_faults: u32,
    /// How long a cut-off peer is refused.
    pub ban: Duration,
    /// Faults held against a peer halve this often.
    pub fault_half_life: Duration,
    /// What all clients behind one IP address may send together (in clients' rates) and how
    /// many identities it may hold.
    pub per_address: AddressShare,
    /// The same for one address prefix (IPv4 /24, IPv6 /48).
    pub per_prefix: AddressShare,
    /// Packets waiting for a connection to one next hop (more are dropped).
    pub max_pending_per_peer: usize,
}

impl Config {
    /// The rates and ban rules of the per-peer admission.
    fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            client: Rate {
                per_second: self.client_rate,
                burst: self.client_burst,
            },
            node: Rate {
                per_second: self.node_rate,
                burst: self.node_burst,
            },
            max_faults: self.max_peer_faults,
            ban: self.ban,
            fault_half_life: self.fault_half_life,
            per_address: self.per_address,
            per_prefix: self.per_prefix,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue: QueueLimits::default(),
            client_rate: 1_000.0,
            client_burst: 1_000.0,
            node_rate: 50_000.0,
            node_burst: 5_000.0,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_peer_faults: 100,
            ban: Duration::from_secs(60),
            fault_half_life: Duration::from_secs(60),
            // A household or an office behind one address, a provider's customer behind a
            // prefix.
            per_address: AddressShare {
                clients_rate: 32.0,
                identities: 64,
                connections: 64,
            },
            per_prefix: AddressShare {
                clients_rate: 256.0,
                identities: 1024,
                connections: 1024,
            },
            max_pending_per_peer: 1024,
        }
    }
}

/// What the behaviour reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This node was the final hop of a packet for one of its clients; `body` is the packet's
    /// body (open it with `open_payload` or the SURB keys).
    Delivered {
        /// The client.
        client: ClientId,
        /// The creator's label.
        label: Label,
        /// The packet body.
        body: Vec<u8>,
    },
    /// A neighbour was cut off for sending invalid frames.
    PeerBanned(PeerId),
}

/// Free packet buffers kept for reuse (about 10 MiB at the default geometry).
const POOLED_BUFFERS: usize = 4096;
/// Jobs waiting for the workers (in the fair queue by source), and outcomes waiting for the
/// event loop (more jobs are dropped as [`DropReason::QueueFull`]).
const WORKER_CHANNEL: usize = 4096;
/// Jobs of one source (a node, a client prefix) waiting for the workers at most.
const WAITING_PER_SOURCE: usize = WORKER_CHANNEL / 4;
/// Jobs handed to one worker ahead of time: its next batch waits while it unwraps one, so it
/// never idles for the event loop; everything else waits its turn in the fair queue.
const WORKER_AHEAD: usize = 2 * MAX_BATCH;

/// A decided packet whose replay tag is not yet on disk.
struct Awaiting {
    /// The journal's count of pushes when the event loop took it from the workers (its tag was
    /// handed to the journal before).
    mark: u64,
    from: Option<PeerId>,
    share: Option<ShareKey>,
    decision: Decision<PeerId>,
    /// Its tag, when tracing.
    tag: Option<PacketTag>,
}

/// The timer of the delay queue's next release.
struct ReleaseTimer {
    /// The release it wakes the behaviour for.
    at: Instant,
    timer: Timer,
}

/// The mix protocol on a swarm. See the module documentation.
pub struct Behaviour {
    relay: Arc<Relay<PeerId>>,
    queue: DelayQueue<PeerId>,
    timer: Option<ReleaseTimer>,
    workers: Workers,
    /// Admitted frames waiting for a worker, served round-robin by source.
    waiting: FairQueue<Option<ShareKey>, Job>,
    outcomes: Receiver<Outcome>,
    waker: Arc<AtomicWaker>,
    admission: Admission<PeerId>,
    /// The IP address of each connected peer's latest connection.
    addresses: HashMap<PeerId, IpAddr>,
    /// Inbound connections of clients by source address and prefix.
    connections: ConnectionCounts<ConnectionId>,
    /// Keys the delay queue's shares (secretly, so nobody aims at another's share).
    share_hasher: RandomState,
    /// The replay journal, if the relay's keys have one: decisions wait in `awaiting` until
    /// their tags are durable.
    replay_log: Option<Arc<ReplayLog>>,
    awaiting: VecDeque<Awaiting>,
    /// Connections to next hops, where they listen (from the consensus or other behaviours), and
    /// packets waiting for a connection.
    outbox: Outbox,
    events: VecDeque<ToSwarm<Event, HandlerIn>>,
    stats: Arc<Stats>,
    pool: Arc<PacketPool>,
    /// Peers whose packets may end here as deliveries to clients (the last-layer mixes of the
    /// held consensuses); `None`: from anyone.
    final_senders: Option<HashSet<PeerId>>,
    /// Where link records and ground truth go (test networks only).
    trace: Option<Arc<dyn TraceSink>>,
    /// Misbehaviour for tests and drills (feature `chaos`).
    #[cfg(feature = "chaos")]
    chaos: Chaos,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("queued", &self.queue.len())
            .field("connected", &self.outbox.connected())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A mix behaviour around `relay`, with `config.workers` worker threads.
    pub fn new(relay: Arc<Relay<PeerId>>, config: Config) -> Self {
        let (outcome_tx, outcomes) = sync_channel::<Outcome>(WORKER_CHANNEL);
        let waker = Arc::new(AtomicWaker::new());
        let stats = Arc::new(Stats::default());
        let workers = Workers::start(
            config.workers,
            WORKER_AHEAD * config.workers.max(1),
            &relay,
            &outcome_tx,
            &waker,
            &stats,
        );
        let replay_log = relay.read_keys(|ring| ring.replay_log().cloned());
        Behaviour {
            relay: relay.clone(),
            queue: DelayQueue::new(config.queue),
            timer: None,
            workers,
            waiting: FairQueue::new(WORKER_CHANNEL, WAITING_PER_SOURCE),
            outcomes,
            waker,
            admission: Admission::new(config.admission()),
            addresses: HashMap::new(),
            connections: ConnectionCounts::new(
                config.per_address.connections,
                config.per_prefix.connections,
            ),
            share_hasher: RandomState::new(),
            replay_log,
            awaiting: VecDeque::new(),
            outbox: Outbox::new(config.max_pending_per_peer),
            events: VecDeque::new(),
            stats,
            pool: Arc::new(PacketPool::new(
                relay.geometry().packet_size(),
                POOLED_BUFFERS,
            )),
            final_senders: None,
            trace: None,
            #[cfg(feature = "chaos")]
            chaos: Chaos::default(),
        }
    }

    /// Records every frame that arrives or leaves (the link view) and what became of each
    /// (the ground truth) in `sink`. For test networks: the caller decides that it is one.
    pub fn set_trace(&mut self, sink: Arc<dyn TraceSink>) {
        self.trace = Some(sink);
    }

    /// Records ground truth, when tracing.
    fn truth(&self, record: impl FnOnce() -> Truth) {
        if let Some(t) = &self.trace {
            t.truth(record());
        }
    }

    /// Accepts deliveries to clients only from `senders` (a gateway gives the last-layer mixes
    /// of its held consensuses); others are dropped and counted as
    /// [`DropReason::FinalFromNonMix`] (not as faults of their sender). `None` accepts them from
    /// anyone.
    pub fn set_final_senders(&mut self, senders: Option<HashSet<PeerId>>) {
        self.final_senders = senders;
    }

    /// Starts misbehaving as `chaos` says (tests and drills only).
    #[cfg(feature = "chaos")]
    pub fn set_chaos(&mut self, chaos: Chaos) {
        self.chaos = chaos;
    }

    /// The relay (keys and topologies) this behaviour uses.
    pub fn relay(&self) -> &Arc<Relay<PeerId>> {
        &self.relay
    }

    /// Counters, shareable with a metrics exporter.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Packets and bytes in the delay queue.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queue.bytes())
    }

    /// Decided packets waiting for their replay tags to be on disk.
    pub fn awaiting_journal(&self) -> usize {
        self.awaiting.len()
    }

    /// Records where `peer` listens, so that packets for it can dial it (at most 8 addresses per
    /// peer are kept, newest first).
    pub fn add_address(&mut self, peer: PeerId, address: Multiaddr) {
        self.outbox.add_address(peer, address);
    }

    /// Forgets the addresses of peers no longer in any topology.
    pub fn retain_addresses(&mut self, keep: impl Fn(&PeerId) -> bool) {
        self.outbox.retain_addresses(keep);
    }

    /// Changes the rate and burst allowed to each client (from the consensus's sending rates);
    /// applies to every client from its next frame on.
    pub fn set_client_rate(&mut self, rate: f64, burst: f64) {
        let rate = Rate {
            per_second: rate,
            burst,
        };
        self.admission
            .set_client_rate(rate, |peer| self.relay.is_node(peer));
    }

    /// Processes a packet as if it had arrived from outside (a gateway taking a client's
    /// packet, or a test injecting traffic).
    pub fn inject(&mut self, packet: Vec<u8>) {
        self.stats.count_received();
        let tag = self.trace.as_ref().map(|_| PacketTag::of(&packet));
        self.submit(None, packet, tag);
    }

    /// Sends a packet this node built (its loop cover) straight to `peer`.
    pub fn send(&mut self, peer: PeerId, packet: Vec<u8>) {
        self.truth(|| Truth::Originated {
            output: PacketTag::of(&packet),
        });
        self.transmit(peer, packet);
    }

    /// Hands waiting jobs to the workers, one source after another, while they have room.
    fn feed_workers(&mut self) {
        while let Some((source, job)) = self.waiting.pop() {
            if let Some(job) = self.workers.submit(job) {
                self.waiting.restore(source, job);
                return;
            }
        }
    }

    fn submit(&mut self, from: Option<PeerId>, packet: Vec<u8>, tag: Option<PacketTag>) {
        let job = Job {
            arrived: Instant::now(),
            from,
            packet,
            tag,
        };
        let source = self.share_of(from.as_ref());
        // Refused, or taken in place of a longer line's newest packet: one is dropped.
        let dropped = match self.waiting.push(source, job) {
            Ok(None) => None,
            Ok(Some((_, pushed_out))) => Some(pushed_out.tag),
            Err((_, _)) => Some(tag),
        };
        self.feed_workers();
        if let Some(tag) = dropped {
            self.stats.count_drops(DropReason::QueueFull, 1);
            if let Some(input) = tag {
                self.truth(|| Truth::Dropped {
                    input,
                    reason: DropReason::QueueFull,
                });
            }
        }
    }

    fn transmit(&mut self, peer: PeerId, packet: Vec<u8>) {
        // Called from outside `poll` too (`send`): make sure the swarm polls us again.
        self.waker.wake();
        let tag = self.trace.as_ref().map(|_| PacketTag::of(&packet));
        if self
            .outbox
            .send(peer, packet, Instant::now(), &mut self.events)
            == Sent::Dropped
        {
            self.stats.count_drops(DropReason::QueueFull, 1);
        } else if let (Some(t), Some(tag)) = (&self.trace, tag) {
            t.link(Direction::Out, &peer, tag);
        }
    }

    /// Holds a drop for `reason` against `peer` (if the rules say so) and cuts it off if that
    /// was one fault too many.
    fn fault(&mut self, peer: PeerId, reason: DropReason) {
        let fault = self.admission.fault(Instant::now(), &peer, reason);
        self.on_fault(peer, fault);
    }

    /// What is known of `peer` for admission.
    fn origin(&self, peer: &PeerId) -> Origin {
        Origin {
            node: self.relay.is_node(peer),
            address: self.addresses.get(peer).copied(),
        }
    }

    /// The delay-queue share a packet from `from` counts against: its node, or its client's
    /// address prefix (or identity, if its address is unknown); none for the node's own.
    fn share_of(&self, from: Option<&PeerId>) -> Option<ShareKey> {
        let peer = from?;
        let key = if self.relay.is_node(peer) {
            self.share_hasher.hash_one((0u8, peer))
        } else {
            match self.addresses.get(peer) {
                Some(ip) => self.share_hasher.hash_one((1u8, Prefix::of(*ip))),
                None => self.share_hasher.hash_one((2u8, peer)),
            }
        };
        Some(ShareKey(key))
    }

    /// Puts a decided packet into the delay queue, or, with a replay journal, behind the
    /// packets waiting for it.
    fn hold(
        &mut self,
        from: Option<PeerId>,
        decision: Decision<PeerId>,
        tag: Option<PacketTag>,
    ) -> Result<(), DropReason> {
        let share = self.share_of(from.as_ref());
        let Some(log) = &self.replay_log else {
            return self.queue.push_shared(share, decision);
        };
        if self.awaiting.len() + self.queue.len() >= self.queue.limits().max_packets {
            return Err(DropReason::QueueFull);
        }
        self.awaiting.push_back(Awaiting {
            mark: log.mark(),
            from,
            share,
            decision,
            tag,
        });
        Ok(())
    }

    /// Moves the packets whose replay tags are on disk into the delay queue; whether any moved.
    fn release_durable(&mut self) -> bool {
        let Some(log) = self.replay_log.clone() else {
            return false;
        };
        let mut moved = false;
        while self
            .awaiting
            .front()
            .is_some_and(|a| log.is_durable(a.mark))
        {
            let Some(a) = self.awaiting.pop_front() else {
                break;
            };
            moved = true;
            if let Err(reason) = self.queue.push_shared(a.share, a.decision) {
                self.stats.count_drops(reason, 1);
                if let Some(input) = a.tag {
                    self.truth(|| Truth::Dropped { input, reason });
                }
                if let Some(peer) = a.from {
                    self.fault(peer, reason);
                }
            }
        }
        moved
    }

    /// Cuts `peer` off if the fault banned it.
    fn on_fault(&mut self, peer: PeerId, fault: Fault) {
        if let Fault::Banned { .. } = fault {
            self.events.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
            self.stats.count_banned();
            tracing::info!(%peer, "peer cut off for invalid traffic");
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::PeerBanned(peer)));
        }
    }

    fn check_ban(&mut self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.admission.is_banned(Instant::now(), peer) {
            return Err(ConnectionDenied::new(format!(
                "{peer} is banned for invalid traffic"
            )));
        }
        Ok(())
    }
}

/// The IP address a multiaddr starts with.
fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.connections.handshake_ended(connection);
        self.check_ban(&peer)?;
        // Counted once every behaviour has taken it (`ConnectionEstablished`).
        if let Some(ip) = ip_of(remote)
            && !self.relay.is_node(&peer)
            && let Err(refusal) = self.connections.admits(ip)
        {
            self.stats.count_connection_refused(&refusal);
            tracing::debug!(%peer, %ip, %refusal, "inbound connection refused");
            return Err(ConnectionDenied::new(refusal));
        }
        Ok(Handler::new(self.pool.clone()))
    }

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // Before the handshake the peer is unknown: every address, nodes' too, has the same
        // few handshakes at a time.
        if let Some(ip) = ip_of(remote)
            && let Err(refusal) = self.connections.handshake_started(connection, ip)
        {
            self.stats.count_connection_refused(&refusal);
            tracing::debug!(%ip, %refusal, "inbound handshake refused");
            return Err(ConnectionDenied::new(refusal));
        }
        Ok(())
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        self.check_ban(&peer)?;
        Ok(self.outbox.addresses(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_ban(&peer)?;
        Ok(Handler::new(self.pool.clone()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::NewExternalAddrOfPeer(e) => self.add_address(e.peer_id, e.addr.clone()),
            FromSwarm::ListenFailure(e) => self.connections.handshake_ended(e.connection_id),
            FromSwarm::ConnectionEstablished(e) => {
                self.connections.handshake_ended(e.connection_id);
                if let Some(ip) = ip_of(e.endpoint.get_remote_address()) {
                    self.addresses.insert(e.peer_id, ip);
                    if e.endpoint.is_listener() && !self.relay.is_node(&e.peer_id) {
                        self.connections.opened(e.connection_id, ip);
                    }
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                self.connections.closed(e.connection_id);
                if e.remaining_established == 0 {
                    self.addresses.remove(&e.peer_id);
                }
            }
            _ => {}
        }
        // Admission records survive reconnects (the outbox forgets only the connection), so
        // that reconnecting does not reset a peer's rate or its record.
        if let Change::DialFailed { packets, .. } =
            self.outbox
                .on_swarm_event(event, Instant::now(), &mut self.events)
        {
            self.stats
                .count_drops(DropReason::UnknownNextHop, packets as u64);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerEvent::Frame(frame) => {
                self.stats.count_received();
                // What an observer of the link sees: every frame, admitted or not.
                let tag = self.trace.as_ref().map(|t| {
                    let tag = PacketTag::of(&frame);
                    t.link(Direction::In, &peer, tag);
                    tag
                });
                let now = Instant::now();
                let origin = self.origin(&peer);
                match self.admission.admit(now, &peer, origin) {
                    Verdict::Admit => self.submit(Some(peer), frame, tag),
                    Verdict::Refuse { reason, fault } => {
                        self.stats.count_drops(reason, 1);
                        if let Some(input) = tag {
                            self.truth(|| Truth::Dropped { input, reason });
                        }
                        self.on_fault(peer, fault);
                    }
                }
            }
            HandlerEvent::OutboundDropped(n) => {
                self.stats.count_drops(DropReason::QueueFull, n as u64);
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.waker.register(cx.waker());
        if let Some(log) = &self.replay_log {
            log.register(cx.waker());
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            // Workers that took a batch have room for the next.
            self.feed_workers();
            // Decisions from the workers go into the delay queue.
            let mut progressed = false;
            while let Ok(Outcome {
                from,
                decision,
                tag,
            }) = self.outcomes.try_recv()
            {
                progressed = true;
                if let (Some(t), Some(input)) = (&self.trace, tag) {
                    t.truth(Truth::of_decision(input, &decision));
                }
                let final_refused = decision.as_ref().is_ok_and(|d| {
                    matches!(
                        d,
                        Decision::Final {
                            destination: Destination::Deliver { .. },
                            ..
                        }
                    ) && self
                        .final_senders
                        .as_ref()
                        .is_some_and(|s| !from.is_some_and(|p| s.contains(&p)))
                });
                match decision.and_then(|d| match d {
                    Decision::Final {
                        destination: Destination::Drop,
                        packet,
                        ..
                    } => {
                        self.stats.count_cover_dropped();
                        self.pool.give(packet);
                        Ok(())
                    }
                    d if final_refused => {
                        if let Decision::Final { packet, .. } = d {
                            self.pool.give(packet);
                        }
                        Err(DropReason::FinalFromNonMix)
                    }
                    #[cfg(feature = "chaos")]
                    Decision::Forward { packet, .. } if self.chaos.drops() => {
                        self.pool.give(packet);
                        Ok(())
                    }
                    #[cfg(feature = "chaos")]
                    d => self.hold(from, self.chaos.delayed(d), tag),
                    #[cfg(not(feature = "chaos"))]
                    d => self.hold(from, d, tag),
                }) {
                    Ok(()) => {}
                    Err(reason) => {
                        self.stats.count_drops(reason, 1);
                        if let (Some(input), DropReason::QueueFull | DropReason::FinalFromNonMix) =
                            (tag, reason)
                        {
                            // The worker's decision was recorded; it was refused after.
                            self.truth(|| Truth::Dropped { input, reason });
                        }
                        if let Some(peer) = from {
                            self.fault(peer, reason);
                        }
                    }
                }
            }
            // Packets whose replay tags are on disk may be held for their delay.
            progressed |= self.release_durable();
            // Packets whose delay is over leave.
            let now = Instant::now();
            while let Some(decision) = self.queue.poll_transmit(now) {
                progressed = true;
                let (Decision::Forward {
                    release, arrived, ..
                }
                | Decision::Final {
                    release, arrived, ..
                }) = &decision;
                self.stats.record_departure(
                    now.saturating_duration_since(*release),
                    now.saturating_duration_since(*arrived),
                );
                match decision {
                    Decision::Forward { to, packet, .. } => {
                        self.stats.count_forwarded();
                        self.transmit(to, packet);
                    }
                    Decision::Final {
                        destination: Destination::Deliver { client, label },
                        packet,
                        ..
                    } => {
                        self.stats.count_delivered();
                        let header = self.relay.geometry().header_size();
                        let body = packet.get(header..).unwrap_or_default().to_vec();
                        self.pool.give(packet);
                        self.events
                            .push_back(ToSwarm::GenerateEvent(Event::Delivered {
                                client,
                                label,
                                body,
                            }));
                    }
                    Decision::Final { packet, .. } => {
                        self.stats.count_cover_dropped();
                        self.pool.give(packet);
                    }
                }
            }
            // Packets that waited for a dial leave at the gaps they were released at.
            let events = self.events.len();
            let dropped = self.outbox.handle_timeout(now, &mut self.events);
            if dropped > 0 {
                self.stats
                    .count_drops(DropReason::QueueFull, dropped as u64);
            }
            progressed |= self.events.len() != events;
            if progressed {
                self.stats
                    .record_queue(self.queue.len(), self.queue.bytes());
                continue;
            }
            // Sleep until the next release (of the delay queue or of a paced packet).
            let next = [self.queue.poll_timeout(), self.outbox.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) => {
                    let mut timer = match self.timer.take() {
                        Some(t) if t.at == at => t.timer,
                        _ => Timer::new(at.saturating_duration_since(now)),
                    };
                    if timer.poll_unpin(cx).is_ready() {
                        continue;
                    }
                    self.timer = Some(ReleaseTimer { at, timer });
                }
                None => self.timer = None,
            }
            return Poll::Pending;
        }
    }
}
