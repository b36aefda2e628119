//! Joining the network, sans-IO: the bootstrap list dialled until each address answered once,
//! with a backoff per address that doubles from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`].
//!
//! A reached bootstrap peer seeds Kademlia, which finds everyone else; it is not dialled again
//! (Kademlia keeps the node connected from then on). The driver dials what
//! [`BootstrapDialer::poll_dial`] hands it and reports each dial's fate by connection id.

use std::time::{Duration, Instant};

use libp2p_core::Multiaddr;
use libp2p_swarm::ConnectionId;

/// The wait after a first failed dial.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two dials of one address.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Which bootstrap address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapIndex(pub usize);

#[derive(Debug)]
struct BootstrapPeer {
    address: Multiaddr,
    next_attempt: Instant,
    backoff: Duration,
    state: DialState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialState {
    /// Waiting for its next attempt.
    Waiting,
    /// Handed to the driver, not yet dialled.
    Due,
    /// A dial is under way.
    Dialing(ConnectionId),
    /// It answered once: done.
    Reached,
}

/// A dial that ended without a connection, for the driver's warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The address.
    pub address: Multiaddr,
    /// When it is tried again.
    pub retry_in: Duration,
}

/// The bootstrap list's dial loop. See the module documentation.
#[derive(Debug)]
pub struct BootstrapDialer {
    peers: Vec<BootstrapPeer>,
}

impl BootstrapDialer {
    /// Dials each of `addresses` from `now` on.
    pub fn new(addresses: impl IntoIterator<Item = Multiaddr>, now: Instant) -> Self {
        BootstrapDialer {
            peers: addresses
                .into_iter()
                .map(|address| BootstrapPeer {
                    address,
                    next_attempt: now,
                    backoff: FIRST_BACKOFF,
                    state: DialState::Waiting,
                })
                .collect(),
        }
    }

    /// When an address is next due for a dial.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter(|p| p.state == DialState::Waiting)
            .map(|p| p.next_attempt)
            .min()
    }

    /// Marks the addresses whose attempt is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in &mut self.peers {
            if peer.state == DialState::Waiting && peer.next_attempt <= now {
                peer.state = DialState::Due;
            }
        }
    }

    /// The next address to dial; report it with [`BootstrapDialer::dialing`] or
    /// [`BootstrapDialer::dial_failed`].
    pub fn poll_dial(&mut self) -> Option<(BootstrapIndex, Multiaddr)> {
        self.peers
            .iter()
            .position(|p| p.state == DialState::Due)
            .map(|i| (BootstrapIndex(i), self.peers[i].address.clone()))
    }

    /// The dial of `index` is under way as connection `id`.
    pub fn dialing(&mut self, index: BootstrapIndex, id: ConnectionId) {
        if let Some(peer) = self.peers.get_mut(index.0) {
            peer.state = DialState::Dialing(id);
        }
    }

    /// The dial of `index` could not even start (or ended without a connection).
    pub fn dial_failed(&mut self, index: BootstrapIndex, now: Instant) -> Option<Unreachable> {
        let peer = self.peers.get_mut(index.0)?;
        peer.state = DialState::Waiting;
        peer.next_attempt = now + peer.backoff;
        let retry_in = peer.backoff;
        peer.backoff = (peer.backoff * 2).min(MAX_BACKOFF);
        Some(Unreachable {
            address: peer.address.clone(),
            retry_in,
        })
    }

    fn by_connection(&self, id: ConnectionId) -> Option<BootstrapIndex> {
        self.peers
            .iter()
            .position(|p| p.state == DialState::Dialing(id))
            .map(BootstrapIndex)
    }

    /// Connection `id` is up: if it was a bootstrap dial, returns the address it reached (the
    /// driver seeds Kademlia with it).
    pub fn handle_connected(&mut self, id: ConnectionId) -> Option<Multiaddr> {
        let index = self.by_connection(id)?;
        let peer = &mut self.peers[index.0];
        peer.state = DialState::Reached;
        Some(peer.address.clone())
    }

    /// Connection `id` could not be made: if it was a bootstrap dial, it is retried later.
    pub fn handle_dial_failure(&mut self, id: ConnectionId, now: Instant) -> Option<Unreachable> {
        let index = self.by_connection(id)?;
        self.dial_failed(index, now)
    }

    /// Whether every bootstrap address answered once.
    pub fn all_reached(&self) -> bool {
        self.peers.iter().all(|p| p.state == DialState::Reached)
    }
}

#[cfg(test)]
mod tests {
    use p2pmix_sim::{Actor, ActorId, Ctx, Link, Sim};

    use super::*;

    /// A dial to the network, and what became of it.
    enum Wire {
        Dial(ConnectionId),
        Failed(ConnectionId),
        Connected(ConnectionId),
    }

    struct Node {
        dialer: BootstrapDialer,
        network: ActorId,
        dials: Vec<Instant>,
        reached: Vec<Multiaddr>,
    }

    impl Actor<Wire> for Node {
        fn poll_timeout(&self) -> Option<Instant> {
            self.dialer.poll_timeout()
        }
        fn handle_timeout(&mut self, ctx: &mut Ctx<'_, Wire>) {
            self.dialer.handle_timeout(ctx.mono());
            while let Some((index, _)) = self.dialer.poll_dial() {
                let id = ConnectionId::new_unchecked(self.dials.len());
                self.dials.push(ctx.mono());
                self.dialer.dialing(index, id);
                ctx.send(self.network, Wire::Dial(id));
            }
        }
        fn handle_message(&mut self, ctx: &mut Ctx<'_, Wire>, _: ActorId, message: Wire) {
            match message {
                Wire::Failed(id) => {
                    self.dialer.handle_dial_failure(id, ctx.mono());
                }
                Wire::Connected(id) => self.reached.extend(self.dialer.handle_connected(id)),
                Wire::Dial(_) => {}
            }
        }
    }

    /// Refuses the first `refuse` dials, then answers.
    struct Network {
        refuse: usize,
        seen: usize,
    }

    impl Actor<Wire> for Network {
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: &mut Ctx<'_, Wire>) {}
        fn handle_message(&mut self, ctx: &mut Ctx<'_, Wire>, from: ActorId, message: Wire) {
            if let Wire::Dial(id) = message {
                self.seen += 1;
                let answer = if self.seen <= self.refuse {
                    Wire::Failed(id)
                } else {
                    Wire::Connected(id)
                };
                ctx.send(from, answer);
            }
        }
    }

    #[test]
    fn an_unreachable_bootstrap_peer_is_retried_with_doubling_backoff_until_it_answers() {
        let mut sim = Sim::new(7);
        // A dial takes 50 ms to fail or succeed.
        sim.set_default_link(Link::fixed(Duration::from_millis(25)));
        let network = sim.add(Network { refuse: 9, seen: 0 });
        let start = sim.now().mono;
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/4100".parse().unwrap();
        let node = sim.add(Node {
            dialer: BootstrapDialer::new([address.clone()], start),
            network,
            dials: Vec::new(),
            reached: Vec::new(),
        });
        sim.run_for(Duration::from_secs(3600));
        let node = sim.actor::<Node>(node);
        assert_eq!(node.reached, vec![address], "reached on the tenth dial");
        assert!(node.dialer.all_reached());
        let gaps: Vec<u64> = node
            .dials
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        // Each wait starts when the failure is known (50 ms after the dial): 1, 2, 4, ... s,
        // capped at 60 s.
        assert_eq!(
            gaps,
            vec![
                1_050, 2_050, 4_050, 8_050, 16_050, 32_050, 60_050, 60_050, 60_050
            ]
        );
        assert_eq!(node.dials.len(), 10, "never dialled again once reached");
    }
}
