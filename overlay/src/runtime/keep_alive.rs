//! Connections kept open while idle, with chosen peers only.
//!
//! A swarm closes a connection no handler needs once it has been idle for the swarm's idle
//! timeout. An authority's is short, so that an outsider cannot hold a connection slot for free
//! (to hold one it must keep sending requests, which are limited per source); the links between
//! authorities are the exception, kept open by this behaviour, so that a round never waits for
//! a handshake that a flood could delay.

use std::{
    collections::HashSet,
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p_core::{Endpoint, Multiaddr, transport::PortUse, upgrade::DeniedUpgrade};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    handler::ConnectionEvent,
};

/// Keeps every connection with one of `peers` open however long it is idle; speaks no
/// protocol.
pub struct KeepAlive {
    peers: HashSet<PeerId>,
}

impl KeepAlive {
    /// Connections with `peers` stay open.
    pub fn new(peers: HashSet<PeerId>) -> Self {
        KeepAlive { peers }
    }

    fn handler(&self, peer: &PeerId) -> KeepAliveHandler {
        KeepAliveHandler {
            keep: self.peers.contains(peer),
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = KeepAliveHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(&peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

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

/// The handler of [`KeepAlive`]: asks for its connection to stay open, or does not.
pub struct KeepAliveHandler {
    keep: bool,
}

impl ConnectionHandler for KeepAliveHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_peers_connections_are_kept_open() {
        let (pinned, outsider) = (PeerId::random(), PeerId::random());
        let mut keep = KeepAlive::new(HashSet::from([pinned]));
        let (local, remote): (Multiaddr, Multiaddr) = (
            "/ip4/192.0.2.1/tcp/4000".parse().unwrap(),
            "/ip4/203.0.113.7/tcp/5000".parse().unwrap(),
        );
        let id = ConnectionId::new_unchecked;
        let inbound = |keep: &mut KeepAlive, peer| {
            keep.handle_established_inbound_connection(id(1), peer, &local, &remote)
                .unwrap()
                .connection_keep_alive()
        };
        assert!(inbound(&mut keep, pinned));
        assert!(!inbound(&mut keep, outsider));
        let outbound = keep
            .handle_established_outbound_connection(
                id(2),
                pinned,
                &remote,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .unwrap();
        assert!(outbound.connection_keep_alive());
    }
}
