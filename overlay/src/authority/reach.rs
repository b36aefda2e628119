//! The dialling side of reachability checks: the sans-IO [`Authority`] decides whom to check and
//! when ([`Authority::poll_reach_check`]); this dials the node's announced addresses on a
//! connection of its own (even if the node is connected already: its upload came in on the
//! node's connection, which says nothing about its announced address), reports whether the
//! Noise handshake proved the node's identity there, and closes that connection at once.
//!
//! Names are resolved here, off the event loop ([`RESOLVE_TIMEOUT`] at most), and the node is
//! dialled at the addresses they name: the IP address the node was reached at is what the
//! admission caps count, and a dial to a name would only report the name (a node announcing
//! only names would escape every per-address cap).
//!
//! [`Authority`]: p2pmix_bootstrap::Authority
//! [`Authority::poll_reach_check`]: p2pmix_bootstrap::Authority::poll_reach_check

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use libp2p_core::ConnectedPoint;
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use libp2p_swarm::Swarm;
use libp2p_swarm::{
    ConnectionId, NetworkBehaviour,
    dial_opts::{DialOpts, PeerCondition},
};
use p2pmix_bootstrap::{ReachCheck, ReachOutcome};
use tokio::sync::mpsc;

/// Longest a node's names may take to resolve before its check counts as unreachable.
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Addresses a name may resolve to that are dialled (a name that lists hundreds is not a
/// reason to dial hundreds).
const MAX_RESOLVED: usize = 8;

/// Resolutions finished and not yet taken by the driver (the core bounds the checks under way,
/// so this only smooths a burst).
const RESOLVED_QUEUE: usize = 64;

/// The dials under way. See the module documentation.
#[derive(Debug)]
pub(super) struct ReachDialer {
    dials: HashMap<ConnectionId, PeerId>,
    resolved_tx: mpsc::Sender<(PeerId, Vec<Multiaddr>)>,
    resolved_rx: mpsc::Receiver<(PeerId, Vec<Multiaddr>)>,
}

impl Default for ReachDialer {
    fn default() -> Self {
        let (resolved_tx, resolved_rx) = mpsc::channel(RESOLVED_QUEUE);
        ReachDialer {
            dials: HashMap::new(),
            resolved_tx,
            resolved_rx,
        }
    }
}

pub(super) use crate::runtime::caps::ip_of;

/// A `/dns*/NAME/tcp/PORT/...` address as the name, the port, whether only IPv4 (`/dns4`) or
/// IPv6 (`/dns6`) answers count, and what follows the port.
fn name_of(addr: &Multiaddr) -> Option<(String, u16, Option<bool>, Vec<Protocol<'static>>)> {
    let mut parts = addr.iter();
    let (name, v4) = match parts.next()? {
        Protocol::Dns(n) => (n.to_string(), None),
        Protocol::Dns4(n) => (n.to_string(), Some(true)),
        Protocol::Dns6(n) => (n.to_string(), Some(false)),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    Some((name, port, v4, parts.map(|p| p.acquire()).collect()))
}

/// `addr` with a resolved socket address in place of its name.
fn with_ip(socket: SocketAddr, rest: &[Protocol<'static>]) -> Multiaddr {
    let mut out = Multiaddr::empty();
    out.push(match socket.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    });
    out.push(Protocol::Tcp(socket.port()));
    for p in rest {
        out.push(p.clone());
    }
    out
}

/// The addresses `addresses` name, every name resolved (within [`RESOLVE_TIMEOUT`] in all);
/// addresses that are neither IP addresses nor names are dropped.
async fn resolve(addresses: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    let lookups = async {
        for addr in addresses {
            if ip_of(&addr).is_some() {
                out.push(addr);
                continue;
            }
            let Some((name, port, v4, rest)) = name_of(&addr) else {
                continue;
            };
            let Ok(found) = tokio::net::lookup_host((name.as_str(), port)).await else {
                continue;
            };
            out.extend(
                found
                    .filter(|s| v4.is_none_or(|v4| s.is_ipv4() == v4))
                    .take(MAX_RESOLVED)
                    .map(|s| with_ip(s, &rest)),
            );
        }
    };
    // What resolved before the deadline counts.
    let _ = tokio::time::timeout(RESOLVE_TIMEOUT, lookups).await;
    out
}

impl ReachDialer {
    /// Starts the check `check`: dials at once when every address is an IP address, or resolves
    /// the names first (the dial follows from [`ReachDialer::next_resolved`]); a dial that
    /// cannot even start is reported at once.
    pub(super) fn start<B: NetworkBehaviour>(
        &mut self,
        swarm: &mut Swarm<B>,
        check: ReachCheck,
    ) -> Option<(PeerId, ReachOutcome)> {
        if check.addresses.iter().all(|a| ip_of(a).is_some()) {
            return self.dial(swarm, check.peer, check.addresses);
        }
        let tx = self.resolved_tx.clone();
        tokio::spawn(async move {
            let resolved = resolve(check.addresses).await;
            let _ = tx.send((check.peer, resolved)).await;
        });
        None
    }

    /// The next check whose names are resolved (pending until there is one).
    pub(super) async fn next_resolved(&mut self) -> (PeerId, Vec<Multiaddr>) {
        // The dialer holds a sender itself, so the channel never closes.
        match self.resolved_rx.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Dials `peer` at `addresses` (IP addresses only).
    pub(super) fn dial<B: NetworkBehaviour>(
        &mut self,
        swarm: &mut Swarm<B>,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
    ) -> Option<(PeerId, ReachOutcome)> {
        if addresses.is_empty() {
            return Some((peer, ReachOutcome::Unreachable));
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, peer);
                None
            }
            Err(_) => Some((peer, ReachOutcome::Unreachable)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_resolved_to_the_addresses_the_caps_count() {
        let peer = PeerId::random();
        let ip: Multiaddr = format!("/ip4/127.0.0.1/tcp/4100/p2p/{peer}")
            .parse()
            .unwrap();
        let name: Multiaddr = format!("/dns4/localhost/tcp/4101/p2p/{peer}")
            .parse()
            .unwrap();
        let other: Multiaddr = "/unix/tmp%2Fsock".parse().unwrap();
        let resolved = resolve(vec![ip.clone(), name, other]).await;
        assert_eq!(resolved[0], ip);
        let expected: Multiaddr = format!("/ip4/127.0.0.1/tcp/4101/p2p/{peer}")
            .parse()
            .unwrap();
        assert!(
            resolved[1..].contains(&expected),
            "localhost resolves to 127.0.0.1: {resolved:?}"
        );
        assert!(resolved.iter().all(|a| ip_of(a).is_some()), "{resolved:?}");
        // A name that does not resolve leaves nothing to dial.
        assert!(
            resolve(vec!["/dns4/no-such-host.invalid/tcp/1".parse().unwrap()])
                .await
                .is_empty()
        );
    }
}
