//! The client side of `/p2pmix/sphinx/1.0.0`: a `NetworkBehaviour` that only hands finished
//! packets to an entry node (a client's gateway) and never relays.
//!
//! A client builds every packet itself (the sans-IO client core) and must not unwrap, delay or
//! forward anyone else's; frames that arrive on its connections are counted and dropped. Packets
//! for a peer without a connection wait (bounded) while it is dialled; if the dial fails they are
//! dropped and counted, and the client's acknowledgements and retransmissions recover them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    task::{Context, Poll, Waker},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionDenied, ConnectionId, DialError, FromSwarm, NetworkBehaviour, NotifyHandler,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
    },
};

use crate::{
    Geometry,
    net::handler::{Handler, HandlerEvent, HandlerIn},
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
    connected: HashSet<PeerId>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    waiting: HashMap<PeerId, VecDeque<Vec<u8>>>,
    events: VecDeque<ToSwarm<(), HandlerIn>>,
    stats: LinkStats,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connected", &self.connected.len())
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
            connected: HashSet::new(),
            addresses: HashMap::new(),
            waiting: HashMap::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
            waker: None,
        }
    }

    /// Records where `peer` listens (at most 8 addresses, newest first).
    pub fn add_address(&mut self, peer: PeerId, address: Multiaddr) {
        let known = self.addresses.entry(peer).or_default();
        if !known.contains(&address) {
            known.insert(0, address);
            known.truncate(8);
        }
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
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
        if self.connected.contains(&peer) {
            self.stats.sent += 1;
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::Any,
                event: HandlerIn::Send(packet),
            });
            return;
        }
        let waiting = self.waiting.entry(peer).or_default();
        if waiting.is_empty() {
            self.events.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
        }
        if waiting.len() < MAX_WAITING {
            waiting.push_back(packet);
        } else {
            self.stats.dropped += 1;
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
        Ok(peer
            .and_then(|p| self.addresses.get(&p).cloned())
            .unwrap_or_default())
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
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connected.insert(e.peer_id);
                for packet in self.waiting.remove(&e.peer_id).unwrap_or_default() {
                    self.stats.sent += 1;
                    self.events.push_back(ToSwarm::NotifyHandler {
                        peer_id: e.peer_id,
                        handler: NotifyHandler::One(e.connection_id),
                        event: HandlerIn::Send(packet),
                    });
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
            }
            FromSwarm::DialFailure(e)
                if !matches!(e.error, DialError::DialPeerConditionFalse(_)) =>
            {
                if let Some(peer) = e.peer_id
                    && let Some(waiting) = self.waiting.remove(&peer)
                {
                    tracing::debug!(%peer, packets = waiting.len(), "entry node unreachable");
                    self.stats.dropped += waiting.len() as u64;
                }
            }
            _ => {}
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
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
