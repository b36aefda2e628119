//! Admission of neighbours' frames, before any crypto: a token bucket per peer, a count of each
//! peer's faults, and bans for peers that keep sending invalid frames.
//!
//! Sans-IO like the rest of the core: time is passed in, a peer is any `P: Eq + Hash + Clone`,
//! and whether a peer is a node (rather than a client) is asked of the caller, who holds the
//! topologies. The rules:
//! - nodes carry many clients' traffic and get their own, higher rate ([`AdmissionConfig`]);
//! - only [`DropReason::is_peer_fault`] reasons count against a peer, and a bad MAC or a replay
//!   does not count against a consensus node (it may be a client's doing further up the route);
//! - a peer with more than `max_faults` faults is refused for `ban`, then starts afresh;
//! - at most [`MAX_TRACKED_PEERS`] records are kept before clean ones are forgotten.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use crate::relay::DropReason;

/// Peers whose rate and record are tracked before clean records are forgotten.
pub const MAX_TRACKED_PEERS: usize = 65_536;

/// A sending rate: what one peer may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Frames per second.
    pub per_second: f64,
    /// Frames that may be sent in one burst.
    pub burst: f64,
}

/// The limits an [`Admission`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// What a client (a peer that is not a node of any held consensus) may send.
    pub client: Rate,
    /// What another node may send.
    pub node: Rate,
    /// Faults after which a peer is cut off.
    pub max_faults: u32,
    /// How long a cut-off peer is refused.
    pub ban: Duration,
}

/// What [`Admission::admit`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the frame on (to the Sphinx workers).
    Admit,
    /// Drop the frame and count it for `reason`; `fault` is what the refusal did to the peer's
    /// record. A banned peer's frames are refused as [`DropReason::RateLimited`], not counted.
    Refuse {
        /// Why the frame is dropped.
        reason: DropReason,
        /// What it did to the sender's record.
        fault: Fault,
    },
}

/// What one fault did to a peer's record, so that the caller can cut a banned peer off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not held against the peer: not a peer fault, a bad MAC or replay from a node, or a peer
    /// without a record.
    NotCounted,
    /// Held against the peer, which now has `faults`.
    Counted {
        /// The peer's faults so far.
        faults: u32,
    },
    /// The peer went over the limit: it is refused until `until` (its record is dropped).
    Banned {
        /// When the ban ends.
        until: Instant,
    },
}

/// What is known of one tracked peer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PeerRecord {
    bucket: TokenBucket,
    faults: u32,
}

/// Per-peer rate limits, fault counts and bans. See the module documentation.
#[derive(Debug, Clone)]
pub struct Admission<P> {
    config: AdmissionConfig,
    records: HashMap<P, PeerRecord>,
    banned: HashMap<P, Instant>,
}

impl<P: Eq + Hash + Clone> Admission<P> {
    /// No peer tracked, none banned.
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config,
            records: HashMap::new(),
            banned: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Decides whether a frame from `peer` at `now` goes on; counts a rate-limit fault.
    /// `is_node` says whether a peer is a consensus node; it is asked only when needed.
    pub fn admit(&mut self, now: Instant, peer: &P, is_node: impl Fn(&P) -> bool) -> Verdict {
        if self.is_banned(now, peer) {
            return Verdict::Refuse {
                reason: DropReason::RateLimited,
                fault: Fault::NotCounted,
            };
        }
        let rate = if is_node(peer) {
            self.config.node
        } else {
            self.config.client
        };
        if self.records.len() >= MAX_TRACKED_PEERS && !self.records.contains_key(peer) {
            // Forget peers with a clean record before tracking more.
            self.records.retain(|_, record| record.faults > 0);
            self.banned.retain(|_, until| *until > now);
        }
        let record = self
            .records
            .entry(peer.clone())
            .or_insert_with(|| PeerRecord {
                bucket: TokenBucket::new(rate.per_second, rate.burst),
                faults: 0,
            });
        if record.bucket.try_take(now) {
            return Verdict::Admit;
        }
        let fault = self.fault(now, peer, DropReason::RateLimited, is_node);
        Verdict::Refuse {
            reason: DropReason::RateLimited,
            fault,
        }
    }

    /// Holds a drop for `reason` of a frame from `peer` against it, if the rules say so.
    pub fn fault(
        &mut self,
        now: Instant,
        peer: &P,
        reason: DropReason,
        is_node: impl Fn(&P) -> bool,
    ) -> Fault {
        if !reason.is_peer_fault() {
            return Fault::NotCounted;
        }
        // A bad MAC or a replay from a consensus node may be a client's doing further up the
        // route (a packet valid for one hop can be broken for the next): only direct faults
        // (framing, rate) count against nodes, or one client could make honest mixes ban each
        // other.
        if matches!(reason, DropReason::BadMac | DropReason::Replay) && is_node(peer) {
            return Fault::NotCounted;
        }
        let Some(record) = self.records.get_mut(peer) else {
            return Fault::NotCounted;
        };
        record.faults += 1;
        if record.faults <= self.config.max_faults {
            return Fault::Counted {
                faults: record.faults,
            };
        }
        self.records.remove(peer);
        let until = now + self.config.ban;
        self.banned.insert(peer.clone(), until);
        Fault::Banned { until }
    }

    /// Whether `peer` is refused at `now` (frames and connections); forgets a ban that is over.
    pub fn is_banned(&mut self, now: Instant, peer: &P) -> bool {
        match self.banned.get(peer) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.banned.remove(peer);
                false
            }
            None => false,
        }
    }

    /// Changes what each client may send (from the consensus's sending rates): clients' records
    /// are dropped, so the new rate applies from their next frame on; nodes keep theirs.
    pub fn set_client_rate(&mut self, rate: Rate, is_node: impl Fn(&P) -> bool) {
        if rate != self.config.client {
            self.config.client = rate;
            self.records.retain(|peer, _| is_node(peer));
        }
    }

    /// Peers with a record (rate and faults).
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// The faults held against `peer`, if it has a record.
    pub fn faults(&self, peer: &P) -> Option<u32> {
        self.records.get(peer).map(|r| r.faults)
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up. Time is passed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        TokenBucket {
            rate: rate_per_second.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: None,
        }
    }

    /// Takes one token at `now`; `false` (rate limited) if none is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: AdmissionConfig = AdmissionConfig {
        client: Rate {
            per_second: 10.0,
            burst: 2.0,
        },
        node: Rate {
            per_second: 100.0,
            burst: 20.0,
        },
        max_faults: 3,
        ban: Duration::from_secs(60),
    };

    /// Peers below 100 are nodes.
    fn is_node(peer: &u32) -> bool {
        *peer < 100
    }

    fn rate_limited(fault: Fault) -> Verdict {
        Verdict::Refuse {
            reason: DropReason::RateLimited,
            fault,
        }
    }

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(later) && b.try_take(later) && !b.try_take(later));
    }

    #[test]
    fn a_client_over_its_rate_is_refused_and_counted() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        assert_eq!(a.admit(t0, &500, is_node), Verdict::Admit);
        assert_eq!(a.admit(t0, &500, is_node), Verdict::Admit);
        assert_eq!(
            a.admit(t0, &500, is_node),
            rate_limited(Fault::Counted { faults: 1 })
        );
        assert_eq!(a.faults(&500), Some(1));
        // 100 ms at 10 per second: one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(a.admit(t1, &500, is_node), Verdict::Admit);
        assert_eq!(
            a.admit(t1, &500, is_node),
            rate_limited(Fault::Counted { faults: 2 })
        );
        // Another peer has its own bucket.
        assert_eq!(a.admit(t1, &501, is_node), Verdict::Admit);
    }

    #[test]
    fn nodes_get_the_node_rate() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        let admitted = |a: &mut Admission<u32>, peer| {
            (0..50)
                .filter(|_| a.admit(t0, &peer, is_node) == Verdict::Admit)
                .count()
        };
        assert_eq!(admitted(&mut a, 7), 20, "a node's burst");
        assert_eq!(admitted(&mut a, 700), 2, "a client's burst");
    }

    #[test]
    fn a_peer_is_banned_after_max_faults_and_admitted_after_the_ban() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        assert_eq!(a.admit(t0, &500, is_node), Verdict::Admit);
        for faults in 1..=3 {
            assert_eq!(
                a.fault(t0, &500, DropReason::BadMac, is_node),
                Fault::Counted { faults }
            );
        }
        let until = t0 + CONFIG.ban;
        assert_eq!(
            a.fault(t0, &500, DropReason::WrongSize, is_node),
            Fault::Banned { until }
        );
        assert_eq!(a.faults(&500), None, "the record goes with the ban");
        assert!(a.is_banned(t0, &500));
        // Refused while banned, without counting anything.
        let during = until - Duration::from_millis(1);
        assert_eq!(
            a.admit(during, &500, is_node),
            rate_limited(Fault::NotCounted)
        );
        assert_eq!(a.tracked(), 0);
        // Afresh once the ban is over.
        assert!(!a.is_banned(until, &500));
        assert_eq!(a.admit(until, &500, is_node), Verdict::Admit);
        assert_eq!(a.faults(&500), Some(0));
    }

    #[test]
    fn rate_limiting_alone_gets_a_peer_banned() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        let verdicts: Vec<Verdict> = (0..6).map(|_| a.admit(t0, &500, is_node)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Admit,
                Verdict::Admit,
                rate_limited(Fault::Counted { faults: 1 }),
                rate_limited(Fault::Counted { faults: 2 }),
                rate_limited(Fault::Counted { faults: 3 }),
                rate_limited(Fault::Banned {
                    until: t0 + CONFIG.ban
                }),
            ]
        );
    }

    #[test]
    fn bad_macs_and_replays_from_nodes_are_not_counted() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        a.admit(t0, &7, is_node);
        a.admit(t0, &700, is_node);
        for reason in [DropReason::BadMac, DropReason::Replay] {
            assert_eq!(a.fault(t0, &7, reason, is_node), Fault::NotCounted);
        }
        assert_eq!(
            a.fault(t0, &7, DropReason::WrongSize, is_node),
            Fault::Counted { faults: 1 },
            "framing counts against nodes too"
        );
        assert_eq!(
            a.fault(t0, &700, DropReason::BadMac, is_node),
            Fault::Counted { faults: 1 },
            "but a client's bad MAC counts"
        );
        // Not peer faults at all, and peers without a record.
        for reason in [
            DropReason::UnknownKey,
            DropReason::UnknownNextHop,
            DropReason::QueueFull,
        ] {
            assert_eq!(a.fault(t0, &700, reason, is_node), Fault::NotCounted);
        }
        assert_eq!(
            a.fault(t0, &701, DropReason::BadMac, is_node),
            Fault::NotCounted
        );
    }

    #[test]
    fn clean_records_are_forgotten_at_the_tracking_bound() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        let clients = 1_000..1_000 + MAX_TRACKED_PEERS as u32;
        for peer in clients.clone() {
            assert_eq!(a.admit(t0, &peer, is_node), Verdict::Admit);
        }
        a.fault(t0, &1_000, DropReason::BadMac, is_node);
        assert_eq!(a.tracked(), MAX_TRACKED_PEERS);
        // A peer already tracked does not trigger forgetting.
        a.admit(t0, &1_001, is_node);
        assert_eq!(a.tracked(), MAX_TRACKED_PEERS);
        // A new one does: only records with faults stay, and the newcomer.
        assert_eq!(a.admit(t0, &5, is_node), Verdict::Admit);
        assert_eq!(a.tracked(), 2);
        assert_eq!(a.faults(&1_000), Some(1));
        assert_eq!(a.faults(&5), Some(0));
    }

    #[test]
    fn a_new_client_rate_resets_clients_but_not_nodes() {
        let t0 = Instant::now();
        let mut a = Admission::new(CONFIG);
        for peer in [7, 700] {
            a.admit(t0, &peer, is_node);
        }
        a.set_client_rate(CONFIG.client, is_node);
        assert_eq!(a.tracked(), 2, "the same rate changes nothing");
        let faster = Rate {
            per_second: 50.0,
            burst: 5.0,
        };
        a.set_client_rate(faster, is_node);
        assert_eq!(a.config().client, faster);
        assert_eq!((a.faults(&7), a.faults(&700)), (Some(0), None));
    }
}
