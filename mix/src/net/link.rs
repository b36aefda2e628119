//! The client side of `/p2pmix/sphinx/1.0.0`: a `NetworkBehaviour` that only hands finished
//! packets to an entry node (a client's gateway) and never relays.
//!
//! A client builds every packet itself (the sans-IO client core) and must not unwrap, delay or
//! forward anyone else's; frames that arrive on its connections are counted and dropped. Packets
//! for a peer without a connection wait (bounded) while it is dialled; if the dial fails they are
//! dropped and counted, and the client's acknowledgements and retransmissions recover them.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use futures::FutureExt;
use futures_timer::Delay as Timer;

use libp2p_core::Multiaddr;
use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

use crate::{
    Geometry,
    net::{
        handler::{Handler, HandlerEvent, HandlerIn},
        outbox::{Change, Outbox, Sent},
    },
    pool::PacketPool,
};

/// Packets that may wait for a connection to one peer (more are dropped).
pub const MAX_WAITING: usize = 1024;

/// Counters of a [`Link`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets handed to a connection.
    pub sent: u64,
    /// Packets dropped: no connection could be made, too many waiting, or the stream failed.
    pub dropped: u64,
    /// Frames that arrived (a client takes none over this protocol) and were dropped.
    pub unexpected: u64,
}

/// The send-only Sphinx link. See the module documentation.
pub struct Link {
    pool: Arc<PacketPool>,
    outbox: Outbox,
    events: VecDeque<ToSwarm<(), HandlerIn>>,
    stats: LinkStats,
    waker: Option<Waker>,
    /// The timer of the next paced packet (one that waited for a dial) and when it fires.
    timer: Option<(Instant, Timer)>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connected", &self.outbox.connected())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::new(Geometry::DEFAULT)
    }
}

impl Link {
    /// A link for packets of `geometry`.
    pub fn new(geometry: Geometry) -> Self {
        Link {
            pool: Arc::new(PacketPool::new(geometry.packet_size(), 64)),
            outbox: Outbox::new(MAX_WAITING),
            events: VecDeque::new(),
            stats: LinkStats::default(),
            waker: None,
            timer: None,
        }
    }

    /// Records where `peer` listens (at most 8 addresses, newest first).
    pub fn add_address(&mut self, peer: PeerId, address: Multiaddr) {
        self.outbox.add_address(peer, address);
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.outbox.is_connected(peer)
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Sends a finished packet to `peer`, dialling it first if needed.
    pub fn send(&mut self, peer: PeerId, packet: Vec<u8>) {
        // Called from outside `poll` too: make sure the swarm polls us again.
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        match self
            .outbox
            .send(peer, packet, Instant::now(), &mut self.events)
        {
            Sent::Handed => self.stats.sent += 1,
            Sent::Waiting => {}
            Sent::Dropped => self.stats.dropped += 1,
        }
    }
}

impl NetworkBehaviour for Link {
    type ConnectionHandler = Handler;
    type ToSwarm = ();

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.pool.clone()))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer.map(|p| self.outbox.addresses(&p)).unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.pool.clone()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match self
            .outbox
            .on_swarm_event(event, Instant::now(), &mut self.events)
        {
            Change::Nothing => {}
            Change::Flushed { packets, .. } => self.stats.sent += packets as u64,
            Change::DialFailed { peer, packets } => {
                tracing::debug!(%peer, packets, "entry node unreachable");
                self.stats.dropped += packets as u64;
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerEvent::Frame(frame) => {
                self.stats.unexpected += 1;
                self.pool.give(frame);
            }
            HandlerEvent::OutboundDropped(n) => self.stats.dropped += n as u64,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
        loop {
            // Packets that waited for a dial leave at the gaps they were queued at (counted as
            // sent when their connection came up; one dropped after that counts as both).
            let now = Instant::now();
            self.stats.dropped += self.outbox.handle_timeout(now, &mut self.events) as u64;
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            self.waker = Some(cx.waker().clone());
            match self.outbox.poll_timeout() {
                Some(at) => {
                    let mut timer = match self.timer.take() {
                        Some((t, timer)) if t == at => timer,
                        _ => Timer::new(at.saturating_duration_since(now)),
                    };
                    if timer.poll_unpin(cx).is_ready() {
                        continue;
                    }
                    self.timer = Some((at, timer));
                }
                None => self.timer = None,
            }
            return Poll::Pending;
        }
    }
}
