//! A behaviour offered only to a fixed set of peers: the authorities' own protocol.
//!
//! Votes and signed documents between authorities run to megabytes, so the codec that reads them
//! may buffer up to [`MAX_MESSAGE_BYTES`](p2pmix_bootstrap::MAX_MESSAGE_BYTES) a stream. Anyone
//! reaching that codec could make an authority buffer that much per stream, so it is not reached:
//! on a connection to a peer outside the set the wrapped behaviour gets no handler (a dummy one
//! stands in, offering no protocol), so the stream is refused at negotiation, before a byte of
//! it is read. The wrapped behaviour never hears of such connections, so it never addresses them.

use std::{
    collections::HashSet,
    task::{Context, Poll},
};

use either::Either;
use libp2p_core::Multiaddr;
use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use tracing::warn;

/// `inner`, on connections to `peers` only.
pub struct PeersOnly<B> {
    inner: B,
    peers: HashSet<PeerId>,
}

impl<B> PeersOnly<B> {
    /// `inner`, offered to `peers` and to nobody else.
    pub fn new(inner: B, peers: HashSet<PeerId>) -> Self {
        Self { inner, peers }
    }

    /// The wrapped behaviour (to send requests and answers through).
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn admits(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for PeersOnly<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.admits(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(Either::Left)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if !maybe_peer.is_some_and(|p| self.admits(&p)) {
            return Ok(Vec::new());
        }
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.admits(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        self.inner
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(Either::Left)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        // What concerns a peer reaches the inner behaviour only for peers of the set: it
        // heard of no other peer's connections or dials. Every inbound connection's pending
        // stage reached it, so every `ListenFailure` does too.
        let peer = match &event {
            FromSwarm::ConnectionEstablished(e) => Some(e.peer_id),
            FromSwarm::ConnectionClosed(e) => Some(e.peer_id),
            FromSwarm::AddressChange(e) => Some(e.peer_id),
            FromSwarm::DialFailure(e) => e.peer_id,
            FromSwarm::NewExternalAddrOfPeer(e) => Some(e.peer_id),
            _ => {
                self.inner.on_swarm_event(event);
                return;
            }
        };
        if peer.is_some_and(|p| self.admits(&p)) {
            self.inner.on_swarm_event(event);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => {
                self.inner
                    .on_connection_handler_event(peer_id, connection_id, event);
            }
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                // The inner behaviour only knows connections of the set; an event for any other
                // would reach a dummy handler (a panic in libp2p), so it is dropped.
                Poll::Ready(ToSwarm::NotifyHandler { peer_id, .. }) if !self.admits(&peer_id) => {
                    warn!(%peer_id, "dropped an event for a peer outside the set");
                }
                Poll::Ready(event) => return Poll::Ready(event.map_in(Either::Left)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p_identity::Keypair;
    use libp2p_request_response::{self as request_response, OutboundFailure};
    use libp2p_swarm::{Swarm, SwarmEvent};
    use p2pmix_bootstrap::{AUTHORITY_PROTOCOL, PeerBehaviour, peer_behaviour};
    use p2pmix_proto::v1::{
        DirectoryRequest, DirectoryResponse, GetConsensus, directory_request::Request,
    };

    use super::*;

    fn swarm<B: NetworkBehaviour + Send>(behaviour: B) -> Swarm<B>
    where
        B::ToSwarm: Send,
    {
        crate::runtime::build_swarm(Keypair::generate_ed25519(), |_| behaviour).expect("a swarm")
    }

    fn ask() -> DirectoryRequest {
        DirectoryRequest {
            request: Some(Request::GetConsensus(GetConsensus { epoch: 0 })),
        }
    }

    /// Runs `server` and `client` until the client's request to the server is answered or
    /// fails; what the client saw.
    async fn exchange(
        server: &mut Swarm<PeersOnly<PeerBehaviour>>,
        client: &mut Swarm<PeerBehaviour>,
    ) -> Result<(), OutboundFailure> {
        server
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("an address"))
            .expect("listens");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        client.add_peer_address(*server.local_peer_id(), addr);
        client
            .behaviour_mut()
            .send_request(server.local_peer_id(), ask());
        loop {
            tokio::select! {
                event = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. }, ..
                    }) = event {
                        let _ = server.behaviour_mut().inner_mut().send_response(
                            channel,
                            DirectoryResponse { response: None },
                        );
                    }
                }
                event = client.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { .. }, ..
                    }) => return Ok(()),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                        return Err(error);
                    }
                    _ => {}
                },
            }
        }
    }

    #[tokio::test]
    async fn only_peers_of_the_set_may_open_the_protocol() {
        let timeout = Duration::from_secs(10);
        let pinned = swarm(peer_behaviour(timeout));
        let outsider = swarm(peer_behaviour(timeout));

        let mut server = swarm(PeersOnly::new(
            peer_behaviour(timeout),
            HashSet::from([*pinned.local_peer_id()]),
        ));
        let mut outsider = outsider;
        let refused = tokio::time::timeout(
            Duration::from_secs(30),
            exchange(&mut server, &mut outsider),
        )
        .await
        .expect("the exchange ends");
        assert!(
            matches!(refused, Err(OutboundFailure::UnsupportedProtocols)),
            "an outsider is refused at negotiation, before its request is read: {refused:?} \
             ({AUTHORITY_PROTOCOL})"
        );

        let mut server = swarm(PeersOnly::new(
            peer_behaviour(timeout),
            HashSet::from([*pinned.local_peer_id()]),
        ));
        let mut pinned = pinned;
        let answered =
            tokio::time::timeout(Duration::from_secs(30), exchange(&mut server, &mut pinned))
                .await
                .expect("the exchange ends");
        assert!(
            answered.is_ok(),
            "a peer of the set is answered: {answered:?}"
        );
    }
}
