//! The adversary's inference, pure: from link events alone (times, which peer sent to which,
//! packet tags that name a packet on one link) and the consensus (roles, layers, delays), the
//! probability that each packet arriving somewhere was first sent by each peer.
//!
//! The model (Loopix's, with the sender-chosen exponential delay): when node `X` sends a packet
//! at time `t`, the chance that it is the packet that arrived at `X` at time `tᵢ < t` is
//! proportional to the delay density `f(t - tᵢ) = λ e^{-λ (t - tᵢ)}` (`1/λ` the mean hold), over
//! every packet that entered `X`'s pool before `t`; its sender distribution is that mixture of
//! the inputs' distributions. For exponential densities the mixture is a running sum that
//! decays by `e^{-λ Δt}` between events, so one pass over the events in time order computes it
//! exactly, at a cost of one vector operation per event (no window to choose, nothing dropped).
//!
//! What the adversary knows and does:
//! - packets on a client's link to its gateway come from that client;
//! - a node's pool holds only the packets that continue from it: at a gateway, those from
//!   clients (what mixes send a gateway ends there); at a mix of layer `k > 1`, those from
//!   layer `k - 1`; at layer 1, those from anyone but the last layer (a packet from the last
//!   layer ends at the mix, as the end of its own loop);
//! - a node's own loop cover leaves only towards layer 1: an output of `X` to a layer-1 mix `Y`
//!   is `X`'s own with probability `(λ_loop / |layer 1|) / r(X→Y)` (the consensus rate over the
//!   measured rate of that link), and then names `X` as its sender;
//! - cover traffic it cannot tell apart is treated like any packet: client cover carries its
//!   client's distribution, so cover from everyone spreads every pool over everyone;
//! - outputs are attributed independently (the constraint that each input leaves exactly once
//!   is not used, as in Loopix's and Nym's analyses): a stronger adversary could do somewhat
//!   better, most where pools are small.

use std::collections::{HashMap, HashSet};

/// A peer's number in [`Network::roles`].
pub type PeerIx = usize;

/// What a peer is, from the consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not in the consensus: a client.
    Client,
    /// An entry and exit node.
    Gateway,
    /// A mix of one layer (1-based).
    Mix {
        /// Its layer.
        layer: u32,
    },
}

/// What the adversary knows of the network.
#[derive(Debug, Clone)]
pub struct Network {
    /// Every peer's role.
    pub roles: Vec<Role>,
    /// Per peer: the mean hold of its delay density, microseconds (nodes only).
    pub hold_us: Vec<f64>,
    /// Mix layers.
    pub layers: u32,
    /// Each node's own loop-cover rate, packets per second (0: none).
    pub node_loops_per_s: f64,
}

impl Network {
    fn is_node(&self, p: PeerIx) -> bool {
        !matches!(self.roles.get(p), Some(Role::Client) | None)
    }

    /// Whether a packet from `from` arriving at `at` goes on from `at` (see the module docs).
    fn enters_pool(&self, at: PeerIx, from: PeerIx) -> bool {
        let from = self.roles.get(from).copied().unwrap_or(Role::Client);
        match self.roles.get(at) {
            Some(Role::Gateway) => from == Role::Client,
            Some(Role::Mix { layer: 1 }) => from != Role::Mix { layer: self.layers },
            Some(Role::Mix { layer }) => from == Role::Mix { layer: layer - 1 },
            _ => false,
        }
    }

    fn layer_one(&self) -> usize {
        self.roles
            .iter()
            .filter(|r| **r == Role::Mix { layer: 1 })
            .count()
    }
}

/// Which way a link event went, seen from the recording peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    /// The packet left `node` for `peer`.
    Depart,
    /// The packet arrived at `node` from `peer`.
    Arrive,
}

/// One link record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    /// Microseconds since the UNIX epoch.
    pub at_us: u64,
    /// In or out.
    pub hop: Hop,
    /// The recording peer.
    pub node: PeerIx,
    /// The neighbour.
    pub peer: PeerIx,
    /// The packet on this link.
    pub tag: u64,
}

/// The adversary's belief about one arriving packet: weight per peer (clients: first sent it;
/// nodes: built it as their own cover), summing to one.
#[derive(Debug, Clone, PartialEq)]
pub struct Posterior {
    /// When it arrived.
    pub at_us: u64,
    /// Where it arrived.
    pub node: PeerIx,
    /// Weight per peer.
    pub weights: Vec<f64>,
}

/// What [`infer`] found.
#[derive(Debug, Clone, Default)]
pub struct Inference {
    /// The posterior of every target packet, by its tag on the link it arrived over.
    pub posteriors: HashMap<u64, Posterior>,
    /// Clients seen sending into a gateway.
    pub active_senders: Vec<PeerIx>,
    /// Arrivals from a node whose departure was not recorded (a missing or truncated trace).
    pub unmatched: u64,
}

/// A node's pool: the decaying sum of its inputs' distributions.
#[derive(Debug, Clone)]
struct Pool {
    weights: Vec<f64>,
    last_us: u64,
}

/// How long a departure waits for its arrival to be recorded before it is forgotten.
const IN_FLIGHT_FOR_US: u64 = 60_000_000;

/// Runs the inference over `events` (any order) and keeps the posteriors of the packets whose
/// arrival tag is in `targets`.
pub fn infer(network: &Network, events: &mut [LinkEvent], targets: &HashSet<u64>) -> Inference {
    // Time order; at one instant departures first (a packet leaves before it arrives).
    events.sort_by_key(|e| (e.at_us, e.hop));
    let k = network.roles.len();
    let span_s = match (events.first(), events.last()) {
        (Some(a), Some(b)) => ((b.at_us - a.at_us) as f64 / 1e6).max(1e-3),
        _ => return Inference::default(),
    };
    // Measured rate of each node-to-node link, for the share of a node's own loops on it.
    let mut link_rate: HashMap<(PeerIx, PeerIx), f64> = HashMap::new();
    for e in events.iter().filter(|e| e.hop == Hop::Depart) {
        *link_rate.entry((e.node, e.peer)).or_default() += 1.0 / span_s;
    }
    let loops_per_link = network.node_loops_per_s / network.layer_one().max(1) as f64;
    let mut pools: Vec<Pool> = vec![
        Pool {
            weights: vec![0.0; k],
            last_us: 0,
        };
        k
    ];
    let mut in_flight: HashMap<u64, (u64, Vec<f64>)> = HashMap::new();
    let mut out = Inference::default();
    let mut senders = HashSet::new();
    let one = |p: PeerIx| {
        let mut v = vec![0.0; k];
        if let Some(w) = v.get_mut(p) {
            *w = 1.0;
        }
        v
    };
    for (n, e) in events.iter().enumerate() {
        if e.node >= k || e.peer >= k {
            continue;
        }
        match e.hop {
            Hop::Depart => {
                if !network.is_node(e.node) {
                    continue; // a client's own record: its gateway's arrival says as much
                }
                let pool = decayed(&mut pools[e.node], e.at_us, network.hold_us[e.node]);
                let total: f64 = pool.iter().sum();
                let own = if network.roles[e.peer] == (Role::Mix { layer: 1 }) {
                    let rate = link_rate.get(&(e.node, e.peer)).copied().unwrap_or(0.0);
                    (loops_per_link / rate.max(1e-9)).min(1.0)
                } else {
                    0.0
                };
                let dist = if total > 0.0 && total.is_finite() {
                    let mut d: Vec<f64> = pool.iter().map(|w| w * (1.0 - own) / total).collect();
                    d[e.node] += own;
                    d
                } else {
                    one(e.node)
                };
                in_flight.insert(e.tag, (e.at_us, dist));
            }
            Hop::Arrive => {
                let dist = if network.is_node(e.peer) {
                    match in_flight.remove(&e.tag) {
                        Some((_, d)) => d,
                        None => {
                            out.unmatched += 1;
                            continue;
                        }
                    }
                } else {
                    if network.roles[e.node] == Role::Gateway {
                        senders.insert(e.peer);
                    }
                    one(e.peer)
                };
                if network.enters_pool(e.node, e.peer) {
                    let pool = decayed(&mut pools[e.node], e.at_us, network.hold_us[e.node]);
                    for (w, d) in pool.iter_mut().zip(&dist) {
                        *w += d;
                    }
                }
                if targets.contains(&e.tag) {
                    out.posteriors.insert(
                        e.tag,
                        Posterior {
                            at_us: e.at_us,
                            node: e.node,
                            weights: dist,
                        },
                    );
                }
            }
        }
        // Departures whose arrival never came (its recorder was down) are forgotten in time.
        if n % 65_536 == 65_535 {
            let horizon = e.at_us.saturating_sub(IN_FLIGHT_FOR_US);
            in_flight.retain(|_, (at, _)| *at >= horizon);
        }
    }
    let mut senders: Vec<PeerIx> = senders.into_iter().collect();
    senders.sort_unstable();
    out.active_senders = senders;
    out
}

/// `pool` decayed to `now_us` with mean hold `hold_us`.
fn decayed(pool: &mut Pool, now_us: u64, hold_us: f64) -> &mut Vec<f64> {
    let dt = now_us.saturating_sub(pool.last_us) as f64;
    if dt > 0.0 {
        let factor = (-dt / hold_us.max(1.0)).exp();
        pool.weights.iter_mut().for_each(|w| *w *= factor);
    }
    pool.last_us = pool.last_us.max(now_us);
    &mut pool.weights
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peers 0..clients are clients, then a gateway, one mix per layer, and an exit gateway.
    fn chain(clients: usize, layers: u32, hold_us: f64) -> Network {
        let mut roles = vec![Role::Client; clients];
        roles.push(Role::Gateway);
        for layer in 1..=layers {
            roles.push(Role::Mix { layer });
        }
        roles.push(Role::Gateway);
        let mut hold = vec![0.0; roles.len()];
        hold[clients] = 100.0; // the entry gateway's processing
        for h in hold.iter_mut().skip(clients + 1) {
            *h = hold_us;
        }
        Network {
            roles,
            hold_us: hold,
            layers,
            node_loops_per_s: 0.0,
        }
    }

    /// A packet hop by hop: departure from `from` at `t`, arrival at `to` 100 µs later.
    fn hop(events: &mut Vec<LinkEvent>, from: PeerIx, to: PeerIx, t: u64, tag: u64) {
        events.push(LinkEvent {
            at_us: t,
            hop: Hop::Depart,
            node: from,
            peer: to,
            tag,
        });
        events.push(LinkEvent {
            at_us: t + 100,
            hop: Hop::Arrive,
            node: to,
            peer: from,
            tag,
        });
    }

    fn entropy(w: &[f64]) -> f64 {
        w.iter().filter(|p| **p > 0.0).map(|p| -p * p.log2()).sum()
    }

    #[test]
    fn a_pool_of_n_simultaneous_senders_gives_log2_n() {
        for n in [2usize, 5, 20] {
            // n clients send at once to one layer-1 mix, which sends one packet on.
            let mut net = chain(n, 1, 10_000.0);
            let mix = n + 1;
            let exit = n + 2;
            net.roles[n] = Role::Gateway;
            let mut events = Vec::new();
            for c in 0..n {
                events.push(LinkEvent {
                    at_us: 1_000,
                    hop: Hop::Arrive,
                    node: mix,
                    peer: c,
                    tag: c as u64,
                });
            }
            hop(&mut events, mix, exit, 11_000, 999);
            let got = infer(&net, &mut events, &HashSet::from([999]));
            let p = &got.posteriors[&999];
            assert!((entropy(&p.weights) - (n as f64).log2()).abs() < 1e-9);
        }
    }

    #[test]
    fn one_sender_is_certain_through_every_layer() {
        let net = chain(1, 3, 50_000.0);
        let mut events = Vec::new();
        let mut targets = HashSet::new();
        for i in 0..20u64 {
            let t = i * 30_000;
            let tag = i * 10;
            hop(&mut events, 0, 1, t, tag);
            for h in 1..5 {
                hop(&mut events, h, h + 1, t + h as u64 * 7_000, tag + h as u64);
            }
            targets.insert(tag + 4);
        }
        let got = infer(&net, &mut events, &targets);
        assert_eq!(got.active_senders, vec![0]);
        assert_eq!(got.posteriors.len(), 20);
        for p in got.posteriors.values() {
            assert!((p.weights[0] - 1.0).abs() < 1e-12, "{:?}", p.weights);
        }
    }

    #[test]
    fn delays_far_below_the_gaps_give_the_sender_away() {
        // Ten clients, one after another a second apart; the mixes hold about 1 ms.
        let mut net = chain(10, 3, 1_000.0);
        net.hold_us[10] = 100.0;
        let mut events = Vec::new();
        let mut targets = HashSet::new();
        for c in 0..10usize {
            let t = 1_000_000 * c as u64;
            let tag = 100 * c as u64;
            hop(&mut events, c, 10, t, tag);
            for h in 10..14 {
                hop(
                    &mut events,
                    h,
                    h + 1,
                    t + 1_000 * (h as u64 - 9),
                    tag + h as u64,
                );
            }
            targets.insert(tag + 13);
        }
        let got = infer(&net, &mut events, &targets);
        for c in 0..10usize {
            let p = &got.posteriors[&(100 * c as u64 + 13)];
            assert!(entropy(&p.weights) < 1e-6, "{:?}", p.weights);
            assert!(p.weights[c] > 1.0 - 1e-9);
        }
    }

    #[test]
    fn what_ends_at_a_node_does_not_enter_its_pool() {
        // Client 0's packet reaches the exit gateway while client 1's enters it as an entry
        // gateway; then the exit sends a packet of its own clients on: only client 1 is in it.
        let net = chain(2, 1, 10_000.0);
        let (entry, mix, exit) = (2, 3, 4);
        let mut events = Vec::new();
        hop(&mut events, 0, entry, 0, 1);
        hop(&mut events, entry, mix, 200, 2);
        hop(&mut events, mix, exit, 5_000, 3); // ends at the exit: a delivery
        hop(&mut events, 1, exit, 5_100, 4); // client 1 enters at the exit gateway
        hop(&mut events, exit, mix, 5_300, 5);
        hop(&mut events, mix, entry, 9_000, 6);
        let got = infer(&net, &mut events, &HashSet::from([3, 5, 6]));
        assert_eq!(got.posteriors[&3].weights[0], 1.0);
        let p = &got.posteriors[&5].weights;
        assert_eq!(
            p[1], 1.0,
            "the delivery did not enter the exit's pool: {p:?}"
        );
        // The mix's pool holds both: the model does not take out what already left.
        let p = &got.posteriors[&6].weights;
        assert!(p[0] > 0.3 && p[1] > 0.5, "{p:?}");
    }

    #[test]
    fn a_nodes_own_loops_take_their_share_of_its_outputs_to_layer_one() {
        // A gateway forwarding 20 packets a second to the only layer-1 mix, and sending loops
        // at 20 a second: half of what it sends there is its own.
        let mut net = chain(1, 1, 10_000.0);
        net.node_loops_per_s = 20.0;
        let (gw, mix, exit) = (1, 2, 3);
        let mut events = Vec::new();
        let mut targets = HashSet::new();
        for i in 0..200u64 {
            let t = i * 50_000;
            hop(&mut events, 0, gw, t, 10 * i);
            hop(&mut events, gw, mix, t + 200, 10 * i + 1);
            targets.insert(10 * i + 1);
            // its loop, arriving at the mix alongside
            hop(&mut events, gw, mix, t + 25_000, 10 * i + 2);
        }
        let _ = exit;
        let got = infer(&net, &mut events, &targets);
        let own: f64 = got.posteriors.values().map(|p| p.weights[gw]).sum::<f64>()
            / got.posteriors.len() as f64;
        assert!((own - 0.5).abs() < 0.01, "{own}");
        // A departure to a mix of a later layer is never the node's own loop.
        let mut net = chain(1, 2, 10_000.0);
        net.node_loops_per_s = 10.0;
        let mut events = Vec::new();
        hop(&mut events, 0, 1, 0, 1);
        hop(&mut events, 1, 2, 200, 2);
        hop(&mut events, 2, 3, 5_000, 3);
        let got = infer(&net, &mut events, &HashSet::from([3]));
        assert_eq!(got.posteriors[&3].weights[2], 0.0);
    }

    #[test]
    fn an_arrival_without_its_departure_is_counted_not_guessed() {
        let net = chain(1, 1, 10_000.0);
        let mut events = vec![LinkEvent {
            at_us: 10,
            hop: Hop::Arrive,
            node: 2,
            peer: 1,
            tag: 77,
        }];
        let got = infer(&net, &mut events, &HashSet::from([77]));
        assert_eq!(got.unmatched, 1);
        assert!(got.posteriors.is_empty());
    }
}
