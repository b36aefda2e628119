//! The mix `NetworkBehaviour`: a thin adapter between the swarm and the sans-IO [`Relay`] and
//! [`DelayQueue`].
//!
//! Frames from neighbours pass the per-peer [`Admission`] on the event loop, then go to worker
//! threads (a bounded queue each; they unwrap what waits in batches) for the Sphinx work, so a
//! slow packet never stalls the swarm. The
//! workers' decisions come back (bounded channel, waking the behaviour) into the delay queue; at
//! release time a packet is handed to the next hop's connection (dialled if needed) or, at the
//! final hop, reported as [`Event::Delivered`]. Every drop is counted by reason in [`Stats`]; a
//! peer that keeps sending invalid frames is disconnected and refused for a while.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        mpsc::{Receiver, sync_channel},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{FutureExt, task::AtomicWaker};
use futures_timer::Delay as Timer;
use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
};

pub use crate::stats::{DurationHistogram, HISTOGRAM_BUCKETS, MAX_BATCH, Stats, quantile_of};
use crate::{
    admission::{Admission, AdmissionConfig, Fault, Rate, Verdict},
    net::{
        handler::{Handler, HandlerEvent, HandlerIn},
        outbox::{Change, Outbox, Sent},
        workers::{Job, Outcome, Workers},
    },
    pool::PacketPool,
    relay::{Decision, DelayQueue, DropReason, QueueLimits, Relay},
    sphinx::routing::{ClientId, Destination, Label},
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
/// Jobs waiting for the workers (all queues together), and outcomes waiting for the event loop
/// (more jobs are dropped as [`DropReason::QueueFull`]).
const WORKER_CHANNEL: usize = 4096;

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
    outcomes: Receiver<Outcome>,
    waker: Arc<AtomicWaker>,
    admission: Admission<PeerId>,
    /// Connections to next hops, where they listen (from the consensus or other behaviours), and
    /// packets waiting for a connection.
    outbox: Outbox,
    events: VecDeque<ToSwarm<Event, HandlerIn>>,
    stats: Arc<Stats>,
    pool: Arc<PacketPool>,
    /// Peers whose packets may end here as deliveries to clients (the last-layer mixes of the
    /// held consensuses); `None`: from anyone.
    final_senders: Option<HashSet<PeerId>>,
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
            WORKER_CHANNEL,
            &relay,
            &outcome_tx,
            &waker,
            &stats,
        );
        Behaviour {
            relay: relay.clone(),
            queue: DelayQueue::new(config.queue),
            timer: None,
            workers,
            outcomes,
            waker,
            admission: Admission::new(config.admission()),
            outbox: Outbox::new(config.max_pending_per_peer),
            events: VecDeque::new(),
            stats,
            pool: Arc::new(PacketPool::new(
                relay.geometry().packet_size(),
                POOLED_BUFFERS,
            )),
            final_senders: None,
        }
    }

    /// Accepts deliveries to clients only from `senders` (a gateway gives the last-layer mixes
    /// of its held consensuses); others are dropped and counted as
    /// [`DropReason::FinalFromNonMix`] (not as faults of their sender). `None` accepts them from
    /// anyone.
    pub fn set_final_senders(&mut self, senders: Option<HashSet<PeerId>>) {
        self.final_senders = senders;
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
        self.submit(None, packet);
    }

    /// Sends a ready packet straight to `peer` (a client to its entry gateway).
    pub fn send(&mut self, peer: PeerId, packet: Vec<u8>) {
        self.transmit(peer, packet);
    }

    fn submit(&mut self, from: Option<PeerId>, packet: Vec<u8>) {
        let job = Job {
            arrived: Instant::now(),
            from,
            packet,
        };
        if !self.workers.submit(job) {
            self.stats.count_drops(DropReason::QueueFull, 1);
        }
    }

    fn transmit(&mut self, peer: PeerId, packet: Vec<u8>) {
        // Called from outside `poll` too (`send`): make sure the swarm polls us again.
        self.waker.wake();
        if self.outbox.send(peer, packet, &mut self.events) == Sent::Dropped {
            self.stats.count_drops(DropReason::QueueFull, 1);
        }
    }

    /// Holds a drop for `reason` against `peer` (if the rules say so) and cuts it off if that
    /// was one fault too many.
    fn fault(&mut self, peer: PeerId, reason: DropReason) {
        let fault = self
            .admission
            .fault(Instant::now(), &peer, reason, |p| self.relay.is_node(p));
        self.on_fault(peer, fault);
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

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_ban(&peer)?;
        Ok(Handler::new(self.pool.clone()))
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
        if let FromSwarm::NewExternalAddrOfPeer(e) = event {
            self.add_address(e.peer_id, e.addr.clone());
        }
        // Admission records survive reconnects (the outbox forgets only the connection), so
        // that reconnecting does not reset a peer's rate or its record.
        if let Change::DialFailed { packets, .. } =
            self.outbox.on_swarm_event(event, &mut self.events)
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
                let now = Instant::now();
                match self.admission.admit(now, &peer, |p| self.relay.is_node(p)) {
                    Verdict::Admit => self.submit(Some(peer), frame),
                    Verdict::Refuse { reason, fault } => {
                        self.stats.count_drops(reason, 1);
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
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            // Decisions from the workers go into the delay queue.
            let mut progressed = false;
            while let Ok(Outcome { from, decision }) = self.outcomes.try_recv() {
                progressed = true;
                let final_senders = &self.final_senders;
                let final_refused = |d: &Decision<PeerId>| {
                    matches!(
                        d,
                        Decision::Final {
                            destination: Destination::Deliver { .. },
                            ..
                        }
                    ) && final_senders
                        .as_ref()
                        .is_some_and(|s| !from.is_some_and(|p| s.contains(&p)))
                };
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
                    d if final_refused(&d) => {
                        if let Decision::Final { packet, .. } = d {
                            self.pool.give(packet);
                        }
                        Err(DropReason::FinalFromNonMix)
                    }
                    d => self.queue.push(d),
                }) {
                    Ok(()) => {}
                    Err(reason) => {
                        self.stats.count_drops(reason, 1);
                        if let Some(peer) = from {
                            self.fault(peer, reason);
                        }
                    }
                }
            }
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
            if progressed {
                self.stats
                    .record_queue(self.queue.len(), self.queue.bytes());
                continue;
            }
            // Sleep until the next release.
            match self.queue.poll_timeout() {
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
