//! The dialling side of reachability checks: the sans-IO [`Authority`] decides whom to check and
//! when ([`Authority::poll_reach_check`]); this dials the node's announced addresses on a
//! connection of its own (even if the node is connected already: its upload came in on the
//! node's connection, which says nothing about its announced address), reports whether the
//! Noise handshake proved the node's identity there, and closes that connection at once.
//!
//! [`Authority`]: p2pmix_bootstrap::Authority
//! [`Authority::poll_reach_check`]: p2pmix_bootstrap::Authority::poll_reach_check

use std::{collections::HashMap, net::IpAddr};

use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::ConnectedPoint,
    multiaddr::Protocol,
    swarm::{
        ConnectionId, NetworkBehaviour,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use p2pmix_bootstrap::{ReachCheck, ReachOutcome};

/// The dials under way. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct ReachDialer {
    dials: HashMap<ConnectionId, PeerId>,
}

/// The IP address a multiaddr starts with.
pub(super) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl ReachDialer {
    /// Starts the dial of `check`; a dial that cannot even start is reported at once.
    pub(super) fn start<B: NetworkBehaviour>(
        &mut self,
        swarm: &mut Swarm<B>,
        check: ReachCheck,
    ) -> Option<(PeerId, ReachOutcome)> {
        let opts = DialOpts::peer_id(check.peer)
            .addresses(check.addresses)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, check.peer);
                None
            }
            Err(_) => Some((check.peer, ReachOutcome::Unreachable)),
        }
    }

    /// A connection came up: if it is one of ours, the node answered as itself (libp2p refuses
    /// a dial whose handshake proves another identity). Closes it.
    pub(super) fn established<B: NetworkBehaviour>(
        &mut self,
        swarm: &mut Swarm<B>,
        connection: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
    ) -> Option<(PeerId, ReachOutcome)> {
        let expected = self.dials.remove(&connection)?;
        swarm.close_connection(connection);
        if expected != peer {
            return Some((expected, ReachOutcome::Unreachable));
        }
        let observed = ip_of(endpoint.get_remote_address());
        Some((peer, ReachOutcome::Reached { observed }))
    }

    /// A dial failed: if it is one of ours, the node was not reached.
    pub(super) fn failed(&mut self, connection: ConnectionId) -> Option<(PeerId, ReachOutcome)> {
        let peer = self.dials.remove(&connection)?;
        Some((peer, ReachOutcome::Unreachable))
    }
}
