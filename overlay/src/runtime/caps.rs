//! Connection caps for a node's or an authority's swarm: incoming connections in their
//! handshake, incoming connections held, and connections held with one peer.
//!
//! In place of libp2p-connection-limits (0.7), which keeps an entry in its per-peer map for
//! every peer that ever connected (closing a connection empties the entry but never removes
//! it): identities are free, so a host that connects with a fresh one each time grew a node's
//! memory by about 150 bytes a connection, without bound. Here every entry belongs to a
//! connection held or in its handshake, so memory is bounded by the caps themselves.
//!
//! Some peers are exempt from the cap on incoming connections held (never from the per-peer
//! cap): an authority's pinned peers, and the nodes of the consensus it holds. Identities are
//! free, so the cap keeps a flood of throwaway ones from taking every open file a process has;
//! the exemption keeps that flood from shutting out the peers the consensus needs.
//!
//! A connection is counted as held only on `ConnectionEstablished`, once every behaviour took
//! it (one refused by a later behaviour ends with `ListenFailure` and was never counted), and
//! each refusal is counted by reason in `p2pmix_connections_refused_total`.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_core::{Multiaddr, multiaddr::Protocol};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use metrics::{Counter, counter};
use p2pmix_mix::{ConnectionCounts, ConnectionRefusal, MAX_PENDING_PER_ADDRESS, canonical_ip};
use thiserror::Error;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Incoming connections in their handshake at once.
    pub pending_incoming: usize,
    /// Incoming connections held at once.
    pub established_incoming: usize,
    /// Connections held with one peer, both ways.
    pub per_peer: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CapExceeded {
    /// As many incoming connections are in their handshake as may be.
    #[error("{0} incoming connections in their handshake already")]
    PendingIncoming(usize),
    /// As many incoming connections are held as may be.
    #[error("{0} incoming connections held already")]
    EstablishedIncoming(usize),
    /// As many connections with this peer are held as may be.
    #[error("{0} connections with this peer held already")]
    PerPeer(usize),
}

impl CapExceeded {
    /// Every refusal's label in `p2pmix_connections_refused_total`, in the order of
    /// `CapExceeded::index`.
    pub const LABELS: [&'static str; 3] = ["pending_total", "incoming_total", "per_peer"];

    fn index(&self) -> usize {
        match self {
            CapExceeded::PendingIncoming(_) => 0,
            CapExceeded::EstablishedIncoming(_) => 1,
            CapExceeded::PerPeer(_) => 2,
        }
    }
}

/// A connection held, as the caps counted it.
#[derive(Debug, Clone, Copy)]
struct HeldConnection {
    peer: PeerId,
    incoming: bool,
    /// The remote's IP address, if the remote address starts with one.
    ip: Option<IpAddr>,
}

/// Why the caps refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Cap(CapExceeded),
    Address(ConnectionRefusal),
}

/// The counts against [`Caps`] (and per address, when capped): sans-IO, driven by
/// [`ConnectionCaps`].
#[derive(Debug)]
struct Counts {
    caps: Caps,
    /// Peers whose incoming connections count against neither `caps.established_incoming` nor
    /// the per-address caps.
    exempt: HashSet<PeerId>,
    /// Source addresses whose handshakes pass the total and the prefix caps (a TCP source
    /// address cannot be forged past the handshake, and identities are not known before it):
    /// the pinned authorities', which no outsider can add to.
    trusted_sources: HashSet<IpAddr>,
    /// Handshakes under way from trusted sources, and their count per source (each source has
    /// `MAX_PENDING_PER_ADDRESS`, so these are bounded by the few trusted sources).
    trusted_pending: HashMap<ConnectionId, IpAddr>,
    trusted_handshakes: HashMap<IpAddr, usize>,
    /// Incoming connections by source address and prefix, when capped.
    addresses: Option<ConnectionCounts<ConnectionId>>,
    pending_incoming: HashSet<ConnectionId>,
    /// Every connection held, both ways (what closes are matched against).
    held: HashMap<ConnectionId, HeldConnection>,
    /// Incoming connections held that count against `caps.established_incoming`: those of
    /// peers not exempt (recounted when the exempt peers change).
    established_incoming: HashSet<ConnectionId>,
    per_peer: HashMap<PeerId, usize>,
}

impl Counts {
    fn new(caps: Caps) -> Self {
        Counts {
            caps,
            exempt: HashSet::new(),
            trusted_sources: HashSet::new(),
            trusted_pending: HashMap::new(),
            trusted_handshakes: HashMap::new(),
            addresses: None,
            pending_incoming: HashSet::new(),
            held: HashMap::new(),
            established_incoming: HashSet::new(),
            per_peer: HashMap::new(),
        }
    }

    fn pending_started(
        &mut self,
        connection: ConnectionId,
        ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if let Some(ip) = ip.map(canonical_ip)
            && self.trusted_sources.contains(&ip)
        {
            // Past the total and the prefix caps, but a trusted address too has only
            // `MAX_PENDING_PER_ADDRESS` handshakes at once.
            let held = self.trusted_handshakes.get(&ip).copied().unwrap_or(0);
            if held >= MAX_PENDING_PER_ADDRESS {
                return Err(Refusal::Address(ConnectionRefusal::Pending {
                    held,
                    max: MAX_PENDING_PER_ADDRESS,
                }));
            }
            if self.trusted_pending.insert(connection, ip).is_none() {
                *self.trusted_handshakes.entry(ip).or_default() += 1;
            }
            return Ok(());
        }
        if let (Some(addresses), Some(ip)) = (self.addresses.as_mut(), ip) {
            addresses
                .handshake_started(connection, ip)
                .map_err(Refusal::Address)?;
        }
        if self.pending_incoming.len() >= self.caps.pending_incoming {
            if let Some(addresses) = self.addresses.as_mut() {
                addresses.handshake_ended(connection);
            }
            return Err(Refusal::Cap(CapExceeded::PendingIncoming(
                self.caps.pending_incoming,
            )));
        }
        self.pending_incoming.insert(connection);
        Ok(())
    }

    fn pending_ended(&mut self, connection: ConnectionId) {
        self.pending_incoming.remove(&connection);
        if let Some(ip) = self.trusted_pending.remove(&connection)
            && let Some(n) = self.trusted_handshakes.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.trusted_handshakes.remove(&ip);
            }
        }
        if let Some(addresses) = self.addresses.as_mut() {
            addresses.handshake_ended(connection);
        }
    }

    /// The address an incoming connection of `peer` from `ip` counts against, if any:
    /// exempt peers and loopback count against none.
    fn counted_address(&self, peer: &PeerId, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.map(canonical_ip)
            .filter(|ip| !ip.is_loopback() && !self.exempt.contains(peer))
    }

    /// Whether one more connection with `peer` (incoming or not, from `ip`) is within the
    /// caps; it is counted by [`Counts::established`].
    fn admits(&self, peer: &PeerId, incoming: bool, ip: Option<IpAddr>) -> Result<(), Refusal> {
        if incoming
            && !self.exempt.contains(peer)
            && self.established_incoming.len() >= self.caps.established_incoming
        {
            return Err(Refusal::Cap(CapExceeded::EstablishedIncoming(
                self.caps.established_incoming,
            )));
        }
        if self.per_peer.get(peer).copied().unwrap_or(0) >= self.caps.per_peer {
            return Err(Refusal::Cap(CapExceeded::PerPeer(self.caps.per_peer)));
        }
        if incoming
            && let (Some(addresses), Some(ip)) =
                (self.addresses.as_ref(), self.counted_address(peer, ip))
        {
            addresses.admits(ip).map_err(Refusal::Address)?;
        }
        Ok(())
    }

    fn established(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        incoming: bool,
        ip: Option<IpAddr>,
    ) {
        self.pending_ended(connection);
        if self.held.contains_key(&connection) {
            return;
        }
        self.held
            .insert(connection, HeldConnection { peer, incoming, ip });
        *self.per_peer.entry(peer).or_default() += 1;
        if incoming && !self.exempt.contains(&peer) {
            self.count_incoming(connection);
        }
    }

    /// Counts the held incoming `connection` against the total and its address.
    fn count_incoming(&mut self, connection: ConnectionId) {
        let Some(held) = self.held.get(&connection).copied() else {
            return;
        };
        self.established_incoming.insert(connection);
        if let Some(ip) = self.counted_address(&held.peer, held.ip)
            && let Some(addresses) = self.addresses.as_mut()
        {
            addresses.opened(connection, ip);
        }
    }

    /// Counts `connection` off the total and its address (nothing if it was not counted).
    fn uncount_incoming(&mut self, connection: ConnectionId) {
        self.established_incoming.remove(&connection);
        if let Some(addresses) = self.addresses.as_mut() {
            addresses.closed(connection);
        }
    }

    fn closed(&mut self, connection: ConnectionId) {
        let Some(held) = self.held.remove(&connection) else {
            return;
        };
        self.uncount_incoming(connection);
        if let Some(n) = self.per_peer.get_mut(&held.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&held.peer);
            }
        }
    }

    /// New exempt peers. Incoming connections held are recounted at once: a peer that lost
    /// its exemption (a node dropped from the consensus) counts from now on, so that such
    /// connections cannot pile up outside every cap; one that gained it stops counting.
    fn set_exempt(&mut self, peers: HashSet<PeerId>) {
        self.exempt = peers;
        let incoming: Vec<(ConnectionId, bool)> = self
            .held
            .iter()
            .filter(|(_, held)| held.incoming)
            .map(|(c, held)| (*c, !self.exempt.contains(&held.peer)))
            .collect();
        for (connection, counts) in incoming {
            let counted = self.established_incoming.contains(&connection);
            if counts && !counted {
                self.count_incoming(connection);
            } else if !counts && counted {
                self.uncount_incoming(connection);
            }
        }
    }
}

/// A behaviour that refuses connections past [`Caps`] (and, with
/// [`ConnectionCaps::with_per_address`], past per-address caps); it speaks no protocol.
pub struct ConnectionCaps {
    counts: Counts,
    refused: [Counter; CapExceeded::LABELS.len()],
    refused_address: [Counter; ConnectionRefusal::LABELS.len()],
}

impl ConnectionCaps {
    /// Caps with no peer exempt.
    pub fn new(caps: Caps) -> Self {
        ConnectionCaps {
            counts: Counts::new(caps),
            refused: CapExceeded::LABELS
                .map(|r| counter!("p2pmix_connections_refused_total", "reason" => r)),
            refused_address: ConnectionRefusal::LABELS
                .map(|r| counter!("p2pmix_connections_refused_total", "reason" => r)),
        }
    }

    /// Also at most `per_address` incoming connections held from one address and `per_prefix`
    /// from one prefix (IPv4 /24, IPv6 /48; an IPv6 "address" is its /64), exempt peers and
    /// loopback aside, and at most `MAX_PENDING_PER_ADDRESS` / `MAX_PENDING_PER_PREFIX`
    /// handshakes (loopback aside): one host cannot take every slot. For a swarm with no mix
    /// behaviour, which counts per address itself.
    pub fn with_per_address(mut self, per_address: usize, per_prefix: usize) -> Self {
        self.counts.addresses = Some(ConnectionCounts::new(per_address, per_prefix));
        self
    }

    fn refuse(&self, refusal: Refusal) -> ConnectionDenied {
        match refusal {
            Refusal::Cap(cap) => {
                self.refused[cap.index()].increment(1);
                tracing::debug!(%cap, "connection refused");
                ConnectionDenied::new(cap)
            }
            Refusal::Address(refusal) => {
                self.refused_address[refusal.index()].increment(1);
                tracing::debug!(%refusal, "connection refused");
                ConnectionDenied::new(refusal)
            }
        }
    }

    /// Exempts `peers` (and no others) from the cap on incoming connections held and from the
    /// per-address caps; connections held are recounted at once.
    pub fn set_exempt(&mut self, peers: HashSet<PeerId>) {
        self.counts.set_exempt(peers);
    }

    /// Lets handshakes from `sources` past the total and the prefix caps on handshakes (each
    /// still has `MAX_PENDING_PER_ADDRESS`): the addresses of the pinned authorities, whose
    /// identity no handshake cap can see yet. Only addresses no outsider can choose belong
    /// here (not those a descriptor announces: nothing checks that a node holds them all).
    pub fn set_trusted_sources(&mut self, sources: impl IntoIterator<Item = IpAddr>) {
        self.counts.trusted_sources = sources.into_iter().map(canonical_ip).collect();
    }

    /// Peers with a connection held (what the caps' memory grows with).
    pub fn peers_held(&self) -> usize {
        self.counts.per_peer.len()
    }
}

/// The IP address a multiaddr starts with.
pub(crate) fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    match address.iter().next() {
        Some(Protocol::Ip4(ip)) => Some(IpAddr::V4(ip)),
        Some(Protocol::Ip6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl NetworkBehaviour for ConnectionCaps {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.counts
            .pending_started(connection, ip_of(remote))
            .map_err(|refusal| self.refuse(refusal))
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.counts.pending_ended(connection);
        self.counts
            .admits(&peer, true, ip_of(remote))
            .map_err(|refusal| self.refuse(refusal))?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.counts
            .admits(&peer, false, None)
            .map_err(|refusal| self.refuse(refusal))?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ListenFailure(e) => self.counts.pending_ended(e.connection_id),
            FromSwarm::ConnectionEstablished(e) => self.counts.established(
                e.connection_id,
                e.peer_id,
                e.endpoint.is_listener(),
                ip_of(e.endpoint.get_remote_address()),
            ),
            FromSwarm::ConnectionClosed(e) => self.counts.closed(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        pending_incoming: 4,
        established_incoming: 3,
        per_peer: 2,
    };

    /// A fresh identity a connection, 100,000 times over (through the handshake, held,
    /// closed): nothing stays behind. libp2p-connection-limits 0.7 kept one map entry per
    /// identity here.
    #[test]
    fn a_hundred_thousand_fresh_identities_leave_nothing_behind() {
        let mut counts = Counts::new(CAPS);
        for _ in 0..100_000 {
            let (connection, peer) = (ConnectionId::new_unchecked(0), PeerId::random());
            counts.pending_started(connection, None).unwrap();
            counts.admits(&peer, true, None).unwrap();
            counts.established(connection, peer, true, None);
            counts.closed(connection);
        }
        assert!(counts.per_peer.is_empty());
        assert!(counts.pending_incoming.is_empty() && counts.established_incoming.is_empty());
        assert!(counts.held.is_empty());
    }

    /// What the swarm calls for an incoming connection from `remote` that completes its
    /// handshake as `peer`: the verdict, and the event that counts it when admitted.
    fn establish(
        caps: &mut ConnectionCaps,
        connection: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let local: Multiaddr = "/ip4/192.0.2.1/tcp/4000".parse().unwrap();
        caps.handle_pending_inbound_connection(connection, &local, remote)?;
        caps.handle_established_inbound_connection(connection, peer, &local, remote)?;
        let endpoint = libp2p_core::ConnectedPoint::Listener {
            local_addr: local,
            send_back_addr: remote.clone(),
        };
        caps.on_swarm_event(FromSwarm::ConnectionEstablished(
            libp2p_swarm::behaviour::ConnectionEstablished {
                peer_id: peer,
                connection_id: connection,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: 0,
            },
        ));
        Ok(())
    }

    /// One host with many identities: its handshakes and its connections held are capped by
    /// address (another address, an exempt peer and loopback are not), and a closed connection
    /// frees its place.
    #[test]
    fn one_address_gets_its_share_whatever_identities_it_uses() {
        let mut caps = ConnectionCaps::new(Caps {
            pending_incoming: 1000,
            established_incoming: 1000,
            per_peer: 4,
        })
        .with_per_address(3, 5);
        let local: Multiaddr = "/ip4/192.0.2.1/tcp/4000".parse().unwrap();
        let host =
            |last: u8| -> Multiaddr { format!("/ip4/203.0.113.{last}/tcp/5000").parse().unwrap() };
        let id = ConnectionId::new_unchecked;
        let mut next = 0;
        let mut fresh = || {
            next += 1;
            id(next)
        };

        // Handshakes that stall.
        let stalled: Vec<_> = (0..p2pmix_mix::MAX_PENDING_PER_ADDRESS)
            .map(|_| {
                let c = fresh();
                caps.handle_pending_inbound_connection(c, &local, &host(7))
                    .unwrap();
                c
            })
            .collect();
        assert!(
            caps.handle_pending_inbound_connection(fresh(), &local, &host(7))
                .is_err()
        );
        let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/5000".parse().unwrap();
        assert!(
            caps.handle_pending_inbound_connection(fresh(), &local, &loopback)
                .is_ok()
        );
        for c in stalled {
            caps.on_swarm_event(FromSwarm::ListenFailure(
                libp2p_swarm::behaviour::ListenFailure {
                    local_addr: &local,
                    send_back_addr: &host(7),
                    error: &libp2p_swarm::ListenError::Aborted,
                    connection_id: c,
                    peer_id: None,
                },
            ));
        }

        // Held: three from one address, under fresh identities each.
        let held: Vec<_> = (0..3).map(|_| (fresh(), PeerId::random())).collect();
        for (c, peer) in &held {
            establish(&mut caps, *c, *peer, &host(7)).unwrap();
        }
        assert!(establish(&mut caps, fresh(), PeerId::random(), &host(7)).is_err());
        // Two more from the prefix, then the prefix is full too.
        establish(&mut caps, fresh(), PeerId::random(), &host(8)).unwrap();
        establish(&mut caps, fresh(), PeerId::random(), &host(9)).unwrap();
        assert!(establish(&mut caps, fresh(), PeerId::random(), &host(10)).is_err());
        let elsewhere: Multiaddr = "/ip4/198.51.100.1/tcp/5000".parse().unwrap();
        establish(&mut caps, fresh(), PeerId::random(), &elsewhere).unwrap();
        // Exempt peers and loopback are not counted.
        let pinned = PeerId::random();
        caps.set_exempt(HashSet::from([pinned]));
        establish(&mut caps, fresh(), pinned, &host(7)).unwrap();
        establish(&mut caps, fresh(), PeerId::random(), &loopback).unwrap();

        // The pinned peer loses its exemption: its connection counts against the address now,
        // so one closed connection of the three leaves the address full, a second frees it.
        caps.set_exempt(HashSet::new());
        assert!(establish(&mut caps, fresh(), PeerId::random(), &host(7)).is_err());
        let endpoint = libp2p_core::ConnectedPoint::Listener {
            local_addr: local.clone(),
            send_back_addr: host(7),
        };
        let close = |caps: &mut ConnectionCaps, (connection, peer): (ConnectionId, PeerId)| {
            caps.on_swarm_event(FromSwarm::ConnectionClosed(
                libp2p_swarm::behaviour::ConnectionClosed {
                    peer_id: peer,
                    connection_id: connection,
                    endpoint: &endpoint,
                    cause: None,
                    remaining_established: 0,
                },
            ));
        };
        close(&mut caps, held[0]);
        assert!(establish(&mut caps, fresh(), PeerId::random(), &host(7)).is_err());
        close(&mut caps, held[1]);
        establish(&mut caps, fresh(), PeerId::random(), &host(7)).unwrap();
    }

    /// A node dropped from the consensus keeps the connections it held while exempt: they count
    /// from the moment it loses the exemption (against the total and its address), so that
    /// such connections cannot pile up outside every cap, and stop counting when it is back.
    #[test]
    fn a_peer_that_loses_its_exemption_counts_at_once() {
        let mut counts = Counts::new(CAPS);
        counts.addresses = Some(ConnectionCounts::new(2, 10));
        let id = ConnectionId::new_unchecked;
        let host: IpAddr = "203.0.113.7".parse().unwrap();
        let (node, outsider) = (PeerId::random(), PeerId::random());
        counts.set_exempt(HashSet::from([node]));
        for c in 0..2 {
            counts.admits(&node, true, Some(host)).unwrap();
            counts.established(id(c), node, true, Some(host));
        }
        assert!(counts.established_incoming.is_empty());
        let addresses = |counts: &Counts| counts.addresses.as_ref().unwrap().from_address(host);
        assert_eq!(addresses(&counts), 0);

        counts.set_exempt(HashSet::new());
        assert_eq!(counts.established_incoming.len(), 2);
        assert_eq!(addresses(&counts), 2);
        assert!(matches!(
            counts.admits(&outsider, true, Some(host)),
            Err(Refusal::Address(ConnectionRefusal::Address { .. }))
        ));

        counts.set_exempt(HashSet::from([node]));
        assert!(counts.established_incoming.is_empty());
        assert_eq!(addresses(&counts), 0);
        counts.set_exempt(HashSet::new());
        counts.closed(id(0));
        counts.closed(id(1));
        assert!(counts.established_incoming.is_empty() && counts.held.is_empty());
        assert_eq!(addresses(&counts), 0);
    }

    /// Every handshake slot is taken by a host that stalls its handshakes: one from a trusted
    /// source (a pinned authority's address) still starts, up to its per-address share; from
    /// elsewhere none does.
    #[test]
    fn handshakes_from_trusted_sources_pass_full_handshake_caps() {
        let mut counts = Counts::new(CAPS);
        counts.addresses = Some(ConnectionCounts::new(2, 10));
        let id = ConnectionId::new_unchecked;
        let (flood, authority): (IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        );
        for c in 0..4 {
            let ip: IpAddr = format!("192.0.2.{c}").parse().unwrap();
            counts.pending_started(id(c), Some(ip)).unwrap();
        }
        assert_eq!(
            counts.pending_started(id(10), Some(flood)),
            Err(Refusal::Cap(CapExceeded::PendingIncoming(4)))
        );
        assert!(
            counts.addresses.as_ref().unwrap().handshaking() == 4,
            "the refused handshake left no count behind"
        );
        assert!(counts.pending_started(id(11), Some(authority)).is_err());
        counts.trusted_sources = HashSet::from([authority]);
        assert_eq!(counts.pending_started(id(11), Some(authority)), Ok(()));
        assert!(counts.pending_started(id(12), Some(flood)).is_err());
        // A trusted source still has its per-address share of handshakes, and gets it back.
        for c in 12..(11 + MAX_PENDING_PER_ADDRESS) {
            counts.pending_started(id(c), Some(authority)).unwrap();
        }
        let last = id(11 + MAX_PENDING_PER_ADDRESS);
        assert!(matches!(
            counts.pending_started(last, Some(authority)),
            Err(Refusal::Address(ConnectionRefusal::Pending { .. }))
        ));
        counts.pending_ended(id(11));
        assert_eq!(counts.pending_started(last, Some(authority)), Ok(()));
        for c in 12..=(11 + MAX_PENDING_PER_ADDRESS) {
            counts.pending_ended(id(c));
        }
        assert!(counts.trusted_pending.is_empty() && counts.trusted_handshakes.is_empty());
    }

    /// The cap on incoming connections is full of outsiders: an exempt peer still gets in, is
    /// not counted against it, and still meets the per-peer cap.
    #[test]
    fn exempt_peers_pass_a_full_incoming_cap_and_are_not_counted() {
        let mut counts = Counts::new(CAPS);
        let id = ConnectionId::new_unchecked;
        for c in 0..3 {
            let outsider = PeerId::random();
            counts.admits(&outsider, true, None).unwrap();
            counts.established(id(c), outsider, true, None);
        }
        let (outsider, pinned) = (PeerId::random(), PeerId::random());
        assert_eq!(
            counts.admits(&outsider, true, None),
            Err(Refusal::Cap(CapExceeded::EstablishedIncoming(3)))
        );
        assert_eq!(
            counts.admits(&pinned, true, None),
            Err(Refusal::Cap(CapExceeded::EstablishedIncoming(3))),
            "not exempt yet"
        );
        counts.set_exempt(HashSet::from([pinned]));
        assert_eq!(counts.admits(&pinned, true, None), Ok(()));
        counts.established(id(10), pinned, true, None);
        assert_eq!(counts.established_incoming.len(), 3);
        counts.established(id(11), pinned, true, None);
        assert_eq!(
            counts.admits(&pinned, true, None),
            Err(Refusal::Cap(CapExceeded::PerPeer(2))),
            "exempt from the total, not from the per-peer cap"
        );
        counts.closed(id(10));
        counts.closed(id(11));
        assert!(!counts.per_peer.contains_key(&pinned));
        assert_eq!(counts.established_incoming.len(), 3);
        assert_eq!(counts.held.len(), 3);
    }

    #[test]
    fn each_cap_holds_and_comes_back_when_connections_end() {
        let mut counts = Counts::new(CAPS);
        let id = ConnectionId::new_unchecked;
        // Handshakes: four at once; one that failed frees its slot.
        for c in 0..4 {
            counts.pending_started(id(c), None).unwrap();
        }
        assert_eq!(
            counts.pending_started(id(4), None),
            Err(Refusal::Cap(CapExceeded::PendingIncoming(4)))
        );
        counts.pending_ended(id(0));
        counts.pending_started(id(4), None).unwrap();

        // Held: three incoming; two with one peer, both ways.
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        counts.established(id(1), a, true, None);
        assert_eq!(counts.admits(&a, false, None), Ok(()));
        counts.established(id(10), a, false, None);
        assert_eq!(
            counts.admits(&a, false, None),
            Err(Refusal::Cap(CapExceeded::PerPeer(2)))
        );
        counts.established(id(2), b, true, None);
        counts.established(id(3), c, true, None);
        assert_eq!(
            counts.admits(&d, true, None),
            Err(Refusal::Cap(CapExceeded::EstablishedIncoming(3)))
        );
        // Outgoing dials are not held against the incoming cap.
        assert_eq!(counts.admits(&d, false, None), Ok(()));
        assert!(
            counts.pending_incoming.len() == 1,
            "established ones left the handshakes"
        );

        counts.closed(id(3));
        assert_eq!(counts.admits(&d, true, None), Ok(()));
        counts.closed(id(10));
        assert_eq!(counts.admits(&a, true, None), Ok(()));
        // A close of what was never counted (or counted twice) changes nothing.
        counts.closed(id(3));
        counts.established(id(2), b, true, None);
        assert_eq!(counts.per_peer.get(&b), Some(&1));
    }
}
