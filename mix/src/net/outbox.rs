//! What the node's behaviour and the client's link both keep to get packets onto connections:
//! which peers are connected, where peers listen, and packets waiting for a connection.
//!
//! A packet for a connected peer goes to its connection at once. One for a peer without a
//! connection waits (at most `max_waiting` per peer; more are dropped), and the first one to wait
//! dials the peer. When the connection is up the first waiting packet goes to it at once and the
//! others follow with the gaps they were queued at, not in one burst: a burst after a dial would
//! show an observer of the link how many packets the dial held up and, on a mix's link, undo the
//! mixing delays of every one of them. When the dial fails they are dropped (a dial refused
//! because another one is under way is not a failure: the packets wait for that one). The outbox
//! says what happened and each caller counts it in its own counters. Time is passed in; the
//! paced packets come out of [`Outbox::handle_timeout`] at [`Outbox::poll_timeout`].

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::Instant,
};

use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionId, DialError, FromSwarm, NotifyHandler, ToSwarm,
    dial_opts::{DialOpts, PeerCondition},
};

use crate::net::handler::HandlerIn;

/// Addresses kept per peer (newest first).
pub(crate) const MAX_ADDRESSES: usize = 8;

/// Packets paced out after dials, at most (past it they go at once: a bound, never reached by
/// the waiting limits in practice).
const MAX_PACED: usize = 65_536;

/// The swarm commands of a behaviour, which the outbox adds to in order.
pub(crate) type Commands<E> = VecDeque<ToSwarm<E, HandlerIn>>;

/// What became of one packet handed to [`Outbox::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Handed to a connection.
    Handed,
    /// Waiting for a connection.
    Waiting,
    /// Dropped: too many packets wait for this peer already.
    Dropped,
}

/// What a swarm event did to the packets waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing waiting changed.
    Nothing,
    /// A connection to `peer` is up and `packets` that waited for it go to it (the first at
    /// once, the others at the gaps they were queued at).
    Flushed {
        /// The peer.
        peer: PeerId,
        /// Packets handed to the new connection.
        packets: usize,
    },
    /// Dialling `peer` failed and the `packets` that waited for it are dropped.
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// Packets dropped.
        packets: usize,
    },
}

/// Connections, addresses and waiting packets. See the module documentation.
#[derive(Debug)]
pub(crate) struct Outbox {
    connected: HashSet<PeerId>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Packets waiting for a connection, with when each was queued.
    waiting: HashMap<PeerId, VecDeque<(Instant, Vec<u8>)>>,
    max_waiting: usize,
    /// Packets that waited for a connection now up, by release time (and arrival order).
    paced: BTreeMap<(Instant, u64), (PeerId, Vec<u8>)>,
    paced_seq: u64,
}

impl Outbox {
    /// An empty outbox that lets at most `max_waiting` packets wait for one peer.
    pub(crate) fn new(max_waiting: usize) -> Self {
        Outbox {
            connected: HashSet::new(),
            addresses: HashMap::new(),
            waiting: HashMap::new(),
            max_waiting,
            paced: BTreeMap::new(),
            paced_seq: 0,
        }
    }

    /// Records where `peer` listens, for dialling it ([`MAX_ADDRESSES`], newest first).
    pub(crate) fn add_address(&mut self, peer: PeerId, address: Multiaddr) {
        let known = self.addresses.entry(peer).or_default();
        if !known.contains(&address) {
            known.insert(0, address);
            known.truncate(MAX_ADDRESSES);
        }
    }

    /// Forgets the addresses of the peers `keep` refuses.
    pub(crate) fn retain_addresses(&mut self, keep: impl Fn(&PeerId) -> bool) {
        self.addresses.retain(|p, _| keep(p));
    }

    /// Where to dial `peer` (for `handle_pending_outbound_connection`).
    pub(crate) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addresses.get(peer).cloned().unwrap_or_default()
    }

    /// Whether a connection to `peer` is up.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
    }

    /// Peers with a connection up.
    pub(crate) fn connected(&self) -> usize {
        self.connected.len()
    }

    /// Sends `packet` to `peer` at `now`: to any of its connections, or waiting for one (the
    /// first packet to wait dials it).
    pub(crate) fn send<E>(
        &mut self,
        peer: PeerId,
        packet: Vec<u8>,
        now: Instant,
        commands: &mut Commands<E>,
    ) -> Sent {
        if self.connected.contains(&peer) {
            commands.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::Any,
                event: HandlerIn::Send(packet),
            });
            return Sent::Handed;
        }
        let waiting = self.waiting.entry(peer).or_default();
        if waiting.is_empty() {
            commands.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
        }
        if waiting.len() < self.max_waiting {
            waiting.push_back((now, packet));
            Sent::Waiting
        } else {
            Sent::Dropped
        }
    }

    /// When the next paced packet is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.paced.keys().next().map(|(at, _)| *at)
    }

    /// Sends the paced packets due at `now`; returns how many were dropped (their connection
    /// went down meanwhile and too many wait for the next one).
    pub(crate) fn handle_timeout<E>(&mut self, now: Instant, commands: &mut Commands<E>) -> usize {
        let mut dropped = 0;
        while let Some(entry) = self.paced.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (peer, packet) = entry.remove();
            if self.send(peer, packet, now, commands) == Sent::Dropped {
                dropped += 1;
            }
        }
        dropped
    }

    /// Packets paced out after a dial, not yet sent.
    #[cfg(test)]
    pub(crate) fn paced(&self) -> usize {
        self.paced.len()
    }

    /// Follows the connections and dials of the swarm (`now`: when the event is handled).
    pub(crate) fn on_swarm_event<E>(
        &mut self,
        event: FromSwarm<'_>,
        now: Instant,
        commands: &mut Commands<E>,
    ) -> Change {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.on_connected(e.peer_id, e.connection_id, now, commands)
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
                Change::Nothing
            }
            FromSwarm::DialFailure(e)
                if !matches!(e.error, DialError::DialPeerConditionFalse(_)) =>
            {
                match e.peer_id {
                    Some(peer) => self.on_dial_failed(peer),
                    None => Change::Nothing,
                }
            }
            _ => Change::Nothing,
        }
    }

    /// A connection to `peer` is up: the first packet that waited for it goes to that
    /// connection now, the others at the gaps they were queued at.
    fn on_connected<E>(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        now: Instant,
        commands: &mut Commands<E>,
    ) -> Change {
        self.connected.insert(peer);
        let Some(mut waiting) = self.waiting.remove(&peer) else {
            return Change::Nothing;
        };
        let packets = waiting.len();
        let Some((first_at, first)) = waiting.pop_front() else {
            return Change::Nothing;
        };
        commands.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: HandlerIn::Send(first),
        });
        for (queued, packet) in waiting {
            if self.paced.len() >= MAX_PACED {
                commands.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: HandlerIn::Send(packet),
                });
                continue;
            }
            let release = now + queued.saturating_duration_since(first_at);
            self.paced_seq += 1;
            self.paced.insert((release, self.paced_seq), (peer, packet));
        }
        Change::Flushed { peer, packets }
    }

    /// Dialling `peer` failed: what waited for it is dropped.
    fn on_dial_failed(&mut self, peer: PeerId) -> Change {
        match self.waiting.remove(&peer) {
            Some(waiting) => Change::DialFailed {
                peer,
                packets: waiting.len(),
            },
            None => Change::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p_core::{ConnectedPoint, Endpoint, transport::PortUse};
    use libp2p_swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure};

    use super::*;

    fn sends(commands: &Commands<()>) -> Vec<&'static str> {
        commands
            .iter()
            .map(|c| match c {
                ToSwarm::Dial { .. } => "dial",
                ToSwarm::NotifyHandler {
                    handler: NotifyHandler::Any,
                    ..
                } => "any",
                ToSwarm::NotifyHandler {
                    handler: NotifyHandler::One(_),
                    ..
                } => "one",
                _ => "other",
            })
            .collect()
    }

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: Multiaddr::empty(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn established<'a>(peer: PeerId, endpoint: &'a ConnectedPoint) -> FromSwarm<'a> {
        FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: ConnectionId::new_unchecked(1),
            endpoint,
            failed_addresses: &[],
            other_established: 0,
        })
    }

    fn dial_failure(peer: PeerId, error: &DialError) -> FromSwarm<'_> {
        FromSwarm::DialFailure(DialFailure {
            peer_id: Some(peer),
            error,
            connection_id: ConnectionId::new_unchecked(2),
        })
    }

    #[test]
    fn packets_wait_bounded_dial_once_and_flush_on_connection() {
        let now = Instant::now();
        let mut outbox = Outbox::new(2);
        let mut commands = Commands::<()>::new();
        let peer = PeerId::random();
        let sent: Vec<Sent> = (0..3)
            .map(|i| outbox.send(peer, vec![i], now, &mut commands))
            .collect();
        assert_eq!(sent, [Sent::Waiting, Sent::Waiting, Sent::Dropped]);
        assert_eq!(sends(&commands), ["dial"], "one dial for the first packet");
        commands.clear();
        let endpoint = endpoint();
        assert_eq!(
            outbox.on_swarm_event(established(peer, &endpoint), now, &mut commands),
            Change::Flushed { peer, packets: 2 }
        );
        // Queued at the same instant: the second is due at once.
        assert_eq!(sends(&commands), ["one"]);
        assert_eq!(outbox.poll_timeout(), Some(now));
        assert_eq!(outbox.handle_timeout(now, &mut commands), 0);
        assert_eq!(sends(&commands), ["one", "any"]);
        assert_eq!(outbox.poll_timeout(), None);
        assert!(outbox.is_connected(&peer));
        commands.clear();
        assert_eq!(outbox.send(peer, vec![9], now, &mut commands), Sent::Handed);
        assert_eq!(sends(&commands), ["any"]);
        // Closed, but another connection remains: still connected.
        let closed = |remaining_established| {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id: peer,
                connection_id: ConnectionId::new_unchecked(1),
                endpoint: &endpoint,
                cause: None,
                remaining_established,
            })
        };
        outbox.on_swarm_event(closed(1), now, &mut commands);
        assert!(outbox.is_connected(&peer));
        outbox.on_swarm_event(closed(0), now, &mut commands);
        assert!(!outbox.is_connected(&peer));
        assert_eq!(outbox.connected(), 0);
    }

    #[test]
    fn a_failed_dial_drops_what_waits_but_a_dial_already_under_way_does_not() {
        let now = Instant::now();
        let mut outbox = Outbox::new(10);
        let mut commands = Commands::<()>::new();
        let peer = PeerId::random();
        outbox.send(peer, vec![1], now, &mut commands);
        outbox.send(peer, vec![2], now, &mut commands);
        let under_way = DialError::DialPeerConditionFalse(PeerCondition::DisconnectedAndNotDialing);
        assert_eq!(
            outbox.on_swarm_event(dial_failure(peer, &under_way), now, &mut commands),
            Change::Nothing
        );
        assert_eq!(
            outbox.on_swarm_event(dial_failure(peer, &DialError::Aborted), now, &mut commands),
            Change::DialFailed { peer, packets: 2 }
        );
        assert_eq!(
            outbox.on_swarm_event(dial_failure(peer, &DialError::Aborted), now, &mut commands),
            Change::Nothing,
            "nothing left to drop"
        );
        // The next packet dials again.
        commands.clear();
        outbox.send(peer, vec![3], now, &mut commands);
        assert_eq!(sends(&commands), ["dial"]);
    }

    /// The attack: a mix whose connection to the next hop is down queues what it releases; an
    /// observer of the link then saw every held packet leave in one burst at the dial, each one's
    /// mixing delay undone. Now they leave with the gaps they were released at.
    #[test]
    fn packets_that_waited_for_a_dial_leave_with_the_gaps_they_were_queued_at() {
        use std::time::Duration;
        let t0 = Instant::now();
        let mut outbox = Outbox::new(10);
        let mut commands = Commands::<()>::new();
        let peer = PeerId::random();
        let gaps = [0u64, 10, 40, 45];
        for (i, g) in gaps.iter().enumerate() {
            let at = t0 + Duration::from_millis(*g);
            assert_eq!(
                outbox.send(peer, vec![i as u8], at, &mut commands),
                Sent::Waiting
            );
        }
        commands.clear();
        let up = t0 + Duration::from_millis(500);
        let endpoint = endpoint();
        assert_eq!(
            outbox.on_swarm_event(established(peer, &endpoint), up, &mut commands),
            Change::Flushed { peer, packets: 4 }
        );
        assert_eq!(
            sends(&commands),
            ["one"],
            "only the first leaves at the dial"
        );
        let mut left = vec![up];
        while let Some(at) = outbox.poll_timeout() {
            commands.clear();
            assert_eq!(outbox.handle_timeout(at, &mut commands), 0);
            assert_eq!(sends(&commands).len(), 1, "one at a time");
            left.push(at);
        }
        let after: Vec<u64> = left.iter().map(|t| (*t - up).as_millis() as u64).collect();
        assert_eq!(after, gaps, "the gaps they were queued at");
        assert_eq!(outbox.paced(), 0);

        // A connection lost before a paced packet is due: it waits and dials again.
        let peer = PeerId::random();
        outbox.send(peer, vec![1], t0, &mut commands);
        outbox.send(peer, vec![2], t0 + Duration::from_millis(20), &mut commands);
        outbox.on_swarm_event(established(peer, &endpoint), up, &mut commands);
        outbox.on_swarm_event(
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id: peer,
                connection_id: ConnectionId::new_unchecked(1),
                endpoint: &endpoint,
                cause: None,
                remaining_established: 0,
            }),
            up,
            &mut commands,
        );
        commands.clear();
        outbox.handle_timeout(up + Duration::from_millis(20), &mut commands);
        assert_eq!(sends(&commands), ["dial"]);
    }

    #[test]
    fn at_most_eight_addresses_newest_first() {
        let mut outbox = Outbox::new(1);
        let peer = PeerId::random();
        let address = |i: u16| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{i}").parse().unwrap() };
        for i in 0..10 {
            outbox.add_address(peer, address(i));
        }
        outbox.add_address(peer, address(9));
        let known = outbox.addresses(&peer);
        assert_eq!(known, (2..10).rev().map(address).collect::<Vec<_>>());
        outbox.retain_addresses(|p| *p != peer);
        assert!(outbox.addresses(&peer).is_empty());
    }
}
