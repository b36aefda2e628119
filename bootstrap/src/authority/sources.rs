//! Per-source limits on what outsiders may ask of an authority: a token bucket per IPv4 address
//! and per IPv6 /48 (a /64 or even a /48 costs an attacker nothing extra, an IPv4 address does),
//! at most [`SourceLimits::max_sources`] of them; sources beyond share one bucket, so that a
//! botnet larger than the table gets no more than one source's rate from its overflow.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use p2pmix_mix::TokenBucket;

/// Where a request came from, as the driver knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A pinned authority (its votes, reveals, signatures and relays): not limited.
    Authority,
    /// A peer connected from this address.
    Peer(IpAddr),
    /// The caller does not say (a test, a tool in the same process): not limited.
    Local,
}

/// Bounds on requests from outsiders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceLimits {
    /// Requests one source may make in one burst (a node makes one upload per authority per
    /// round, and up to a few nodes share an address).
    pub burst: f64,
    /// Requests one source may make per epoch, refilled evenly over it.
    pub per_epoch: f64,
    /// Sources tracked with their own bucket.
    pub max_sources: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            burst: 16.0,
            per_epoch: 16.0,
            max_sources: 65_536,
        }
    }
}

/// What a limit is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4([u8; 4]),
    V6([u16; 3]),
}

fn key_of(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SourceKey::V4(v4.octets()),
            None => {
                let s = v6.segments();
                SourceKey::V6([s[0], s[1], s[2]])
            }
        },
    }
}

/// The per-source buckets. See the module documentation.
#[derive(Debug)]
pub(super) struct SourceLimiter {
    limits: SourceLimits,
    rate: f64,
    buckets: HashMap<SourceKey, TokenBucket>,
    overflow: TokenBucket,
}

impl SourceLimiter {
    pub(super) fn new(limits: SourceLimits, period: Duration) -> Self {
        let rate = limits.per_epoch / period.as_secs_f64().max(0.001);
        SourceLimiter {
            limits,
            rate,
            buckets: HashMap::new(),
            overflow: TokenBucket::new(rate, limits.burst),
        }
    }

    /// Whether a request from `origin` at `now` may be looked at; non-public sources of a test
    /// network (every process of a local testnet shares 127.0.0.1) are not limited.
    pub(super) fn allow(&mut self, now: Instant, origin: Origin, test_network: bool) -> bool {
        let ip = match origin {
            Origin::Authority | Origin::Local => return true,
            Origin::Peer(ip) => ip,
        };
        if test_network && !crate::address::is_public_ip(ip) {
            return true;
        }
        let key = key_of(ip);
        let full = self.buckets.len() >= self.limits.max_sources;
        match self.buckets.get_mut(&key) {
            Some(bucket) => bucket.try_take(now),
            None if full => self.overflow.try_take(now),
            None => {
                let mut bucket = TokenBucket::new(self.rate, self.limits.burst);
                let ok = bucket.try_take(now);
                self.buckets.insert(key, bucket);
                ok
            }
        }
    }

    /// Forgets the sources idle long enough to have refilled (called once a round).
    pub(super) fn prune(&mut self, now: Instant) {
        let refill = Duration::from_secs_f64(self.limits.burst / self.rate.max(1e-9));
        self.buckets.retain(|_, b| {
            // A probe on a copy: a bucket that has a full burst again has nothing to remember.
            let mut probe = *b;
            let mut n = 0.0;
            let later = now + refill;
            while n < self.limits.burst && probe.try_take(later) {
                n += 1.0;
            }
            n < self.limits.burst
        });
    }

    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_burst_and_a_v6_48_counts_as_one() {
        let mut l = SourceLimiter::new(
            SourceLimits {
                burst: 3.0,
                per_epoch: 3.0,
                max_sources: 2,
            },
            Duration::from_secs(60),
        );
        let t = Instant::now();
        let a = Origin::Peer("45.1.2.3".parse().unwrap());
        assert_eq!((0..5).filter(|_| l.allow(t, a, false)).count(), 3);
        // Different addresses in one /48 share a bucket.
        let v6 = |s: &str| Origin::Peer(s.parse().unwrap());
        let n = (0..5)
            .filter(|i| l.allow(t, v6(&format!("2a01:4f8:10:{i}::1")), false))
            .count();
        assert_eq!(n, 3);
        // The table is full: newcomers share the overflow bucket.
        let n = (0..5)
            .filter(|i| {
                l.allow(
                    t,
                    Origin::Peer(format!("46.0.0.{i}").parse().unwrap()),
                    false,
                )
            })
            .count();
        assert_eq!(n, 3);
        // Authorities are never limited; loopback only on a test network.
        assert!((0..100).all(|_| l.allow(t, Origin::Authority, false)));
        let lo = Origin::Peer("127.0.0.1".parse().unwrap());
        assert!((0..100).all(|_| l.allow(t, lo, true)));
        // After a whole refill the idle ones are forgotten.
        l.prune(t + Duration::from_secs(120));
        assert_eq!(l.len(), 0);
    }
}
