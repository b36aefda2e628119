//! Reachability: before an authority votes for a node it dials the node's announced addresses;
//! only nodes reached in this round or the previous one are voted for.
//!
//! This is the decision, sans-IO: which node to check next, how many checks run at once, how
//! fast new ones start, when one has taken too long, and what was learnt. The driver dials
//! ([`Authority::poll_reach_check`](super::Authority::poll_reach_check)) and reports
//! ([`Authority::handle_reach_result`](super::Authority::handle_reach_result)); a dial counts as
//! reached only if the peer at the address proves the node's identity (libp2p's Noise handshake
//! does), so an address that answers for someone else does not count.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;

/// Bounds on reachability checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReachLimits {
    /// Checks under way at once.
    pub in_flight: usize,
    /// New checks started per second (and in one burst).
    pub per_second: f64,
    /// How long a check may take before the node counts as not reached (at most an eighth of
    /// the epoch is used).
    pub timeout: Duration,
}

impl Default for ReachLimits {
    fn default() -> Self {
        ReachLimits {
            in_flight: 64,
            per_second: 64.0,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A dial the driver should make: connect to `peer` at one of `addresses` (and close the
/// connection once it is up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachCheck {
    /// The node, whose identity the connection must prove.
    pub peer: PeerId,
    /// Its announced addresses, as checked at admission.
    pub addresses: Vec<Multiaddr>,
}

/// How a [`ReachCheck`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachOutcome {
    /// Connected, and the peer proved the node's identity; `observed` is the IP address the
    /// connection went to (a DNS name's answer), if the driver knows it.
    Reached {
        /// The remote address of the connection.
        observed: Option<IpAddr>,
    },
    /// No connection (refused, timed out, another identity answered).
    Unreachable,
}

/// Counts of what the checks found, for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReachStats {
    /// Checks handed to the driver.
    pub started: u64,
    /// Nodes reached.
    pub reached: u64,
    /// Nodes that did not answer as themselves.
    pub unreachable: u64,
    /// Checks given up on after the timeout.
    pub timed_out: u64,
    /// Results that were a non-public address on a production network.
    pub not_public: u64,
}

/// A token bucket on the monotonic clock that also says when its next token comes.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Pace {
    fn new(per_second: f64) -> Self {
        let per_second = per_second.max(0.001);
        Pace {
            per_second,
            tokens: per_second.max(1.0),
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        }
        self.last = Some(now);
    }

    fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is there (now if one is).
    fn next_at(&self, now: Instant) -> Instant {
        let mut copy = *self;
        copy.refill(now);
        if copy.tokens >= 1.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - copy.tokens) / self.per_second)
    }
}

/// The reachability state of an authority. See the module documentation.
#[derive(Debug)]
pub(super) struct Reachability {
    limits: ReachLimits,
    /// Per node: the last round it was reached in, and the address the connection went to.
    reached: BTreeMap<PeerId, (u64, Option<IpAddr>)>,
    /// Nodes to check this round, in order.
    queue: VecDeque<(PeerId, Vec<Multiaddr>)>,
    queued: HashSet<PeerId>,
    /// Checks under way and their deadlines on the monotonic clock.
    in_flight: BTreeMap<PeerId, Instant>,
    pace: Pace,
    stats: ReachStats,
}

impl Reachability {
    pub(super) fn new(limits: ReachLimits) -> Self {
        Reachability {
            limits,
            reached: BTreeMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: BTreeMap::new(),
            pace: Pace::new(limits.per_second),
            stats: ReachStats::default(),
        }
    }

    pub(super) fn stats(&self) -> ReachStats {
        self.stats
    }

    /// Whether `peer` was reached in round `epoch` or the one before.
    /// A check that reached no IP address (a dial by name that the driver did not resolve, or a
    /// record from before addresses were kept) does not count: the admission caps count that
    /// address, and a node that had none would escape every one of them.
    pub(super) fn eligible(&self, peer: &PeerId, epoch: u64) -> bool {
        self.reached
            .get(peer)
            .is_some_and(|(e, ip)| ip.is_some() && e.saturating_add(1) >= epoch)
    }

    /// The IP address the last check of `peer` reached.
    pub(super) fn observed(&self, peer: &PeerId) -> Option<IpAddr> {
        self.reached.get(peer).and_then(|(_, ip)| *ip)
    }

    /// Queues a check of `peer`; nodes not reached last round go to the front (they cannot be
    /// voted for without one), the others to the back.
    pub(super) fn enqueue(&mut self, peer: PeerId, addresses: Vec<Multiaddr>, round: u64) {
        if !self.queued.insert(peer) {
            return;
        }
        if self.eligible(&peer, round) {
            self.queue.push_back((peer, addresses));
        } else {
            self.queue.push_front((peer, addresses));
        }
    }

    /// Forgets a queued check (the descriptor was displaced).
    pub(super) fn dequeue(&mut self, peer: &PeerId) {
        if self.queued.remove(peer) {
            self.queue.retain(|(p, _)| p != peer);
        }
    }

    /// The next check to start at `now`, if one may start; `timeout_cap` bounds the check's
    /// duration (an eighth of the epoch).
    pub(super) fn poll_check(&mut self, now: Instant, timeout_cap: Duration) -> Option<ReachCheck> {
        if self.in_flight.len() >= self.limits.in_flight || self.queue.is_empty() {
            return None;
        }
        if !self.pace.try_take(now) {
            return None;
        }
        let (peer, addresses) = self.queue.pop_front()?;
        self.queued.remove(&peer);
        self.in_flight
            .insert(peer, now + self.limits.timeout.min(timeout_cap));
        self.stats.started += 1;
        Some(ReachCheck { peer, addresses })
    }

    /// Records how the check of `peer` ended during round `epoch`; a result for a check not
    /// under way (timed out, or never asked) is ignored.
    pub(super) fn handle_result(
        &mut self,
        peer: &PeerId,
        outcome: ReachOutcome,
        epoch: u64,
        test_network: bool,
    ) {
        if self.in_flight.remove(peer).is_none() {
            return;
        }
        match outcome {
            ReachOutcome::Reached { observed } => {
                if let Some(ip) = observed
                    && !test_network
                    && !crate::address::is_public_ip(ip)
                {
                    // A public name that leads to a private address: not a reachable node.
                    self.stats.not_public += 1;
                    self.stats.unreachable += 1;
                    return;
                }
                self.stats.reached += 1;
                self.reached.insert(*peer, (epoch, observed));
            }
            ReachOutcome::Unreachable => self.stats.unreachable += 1,
        }
    }

    /// Gives up on checks past their deadline at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, deadline| *deadline > now);
        self.stats.timed_out += (before - self.in_flight.len()) as u64;
    }

    /// When there is next something to do: a check to start, or one to give up on.
    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let start = (!self.queue.is_empty() && self.in_flight.len() < self.limits.in_flight)
            .then(|| self.pace.next_at(now));
        let expiry = self.in_flight.values().min().copied();
        [start, expiry].into_iter().flatten().min()
    }

    /// A new round `epoch` begins: what was queued or under way is dropped, and only nodes
    /// reached in the last round are remembered.
    pub(super) fn new_round(&mut self, epoch: u64) {
        self.queue.clear();
        self.queued.clear();
        self.in_flight.clear();
        self.reached
            .retain(|_, (e, _)| e.saturating_add(1) >= epoch);
    }

    /// Nodes reached, for the state file: (peer, round, address reached).
    pub(super) fn records(&self) -> impl Iterator<Item = (&PeerId, u64, Option<IpAddr>)> {
        self.reached.iter().map(|(p, (e, ip))| (p, *e, *ip))
    }

    /// A record from the state file.
    pub(super) fn restore(&mut self, peer: PeerId, epoch: u64, ip: Option<IpAddr>) {
        self.reached.insert(peer, (epoch, ip));
    }

    /// Entries held (for the memory charge).
    pub(super) fn len(&self) -> usize {
        self.reached.len() + self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &mut Reachability, now: Instant) -> Option<PeerId> {
        r.poll_check(now, Duration::from_secs(60)).map(|c| c.peer)
    }

    #[test]
    fn checks_are_bounded_in_parallel_paced_and_time_out() {
        let mut r = Reachability::new(ReachLimits {
            in_flight: 2,
            per_second: 10.0,
            timeout: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for p in &peers {
            r.enqueue(*p, Vec::new(), 2);
        }
        let a = check(&mut r, t0).unwrap();
        let b = check(&mut r, t0).unwrap();
        assert!(check(&mut r, t0).is_none(), "two at most at once");
        let here = Some("127.0.0.1".parse().unwrap());
        r.handle_result(&a, ReachOutcome::Reached { observed: here }, 2, true);
        assert!(r.eligible(&a, 2) && r.eligible(&a, 3) && !r.eligible(&a, 4));
        // The third waits for its token only if the burst is spent; the burst is 10 here.
        assert!(check(&mut r, t0).is_some());
        // b never answers: it times out and counts as not reached.
        r.expire(t0 + Duration::from_secs(2));
        assert!(!r.eligible(&b, 2));
        assert_eq!(r.stats().timed_out, 2);
        // A late answer for a check given up on is ignored.
        r.handle_result(&b, ReachOutcome::Reached { observed: here }, 2, true);
        assert!(!r.eligible(&b, 2));
    }

    /// A node announcing only a name was reached at an address nobody counted: the dial
    /// reported the name, and the admission caps (per address and prefix) never saw the IP, so
    /// any number of nodes behind one address got in. A reach without an address is no reach.
    #[test]
    fn a_reach_without_an_address_does_not_make_a_node_eligible() {
        let mut r = Reachability::new(ReachLimits::default());
        let p = PeerId::random();
        r.enqueue(p, Vec::new(), 2);
        check(&mut r, Instant::now()).unwrap();
        r.handle_result(&p, ReachOutcome::Reached { observed: None }, 2, false);
        assert!(!r.eligible(&p, 2));
        // A record from a state file of before addresses were kept is the same.
        r.restore(p, 2, None);
        assert!(!r.eligible(&p, 2));
        r.restore(p, 2, Some("203.0.113.7".parse().unwrap()));
        assert!(r.eligible(&p, 2));
        assert_eq!(r.observed(&p), Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn starts_are_paced() {
        let mut r = Reachability::new(ReachLimits {
            in_flight: 100,
            per_second: 2.0,
            timeout: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        for _ in 0..10 {
            r.enqueue(PeerId::random(), Vec::new(), 2);
        }
        let started = (0..10).filter(|_| check(&mut r, t0).is_some()).count();
        assert_eq!(started, 2, "a burst of two");
        let next = r.next_deadline(t0).unwrap();
        assert!(
            next > t0 && next <= t0 + Duration::from_millis(500),
            "{:?}",
            next - t0
        );
        assert!(check(&mut r, next).is_some());
    }

    #[test]
    fn a_private_address_behind_a_public_name_is_not_reached_in_production() {
        let mut r = Reachability::new(ReachLimits::default());
        let p = PeerId::random();
        r.enqueue(p, Vec::new(), 2);
        check(&mut r, Instant::now()).unwrap();
        let private = Some("10.1.2.3".parse().unwrap());
        r.handle_result(&p, ReachOutcome::Reached { observed: private }, 2, false);
        assert!(!r.eligible(&p, 2));
        assert_eq!(r.stats().not_public, 1);
    }
}
