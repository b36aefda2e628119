//! Token buckets, and fault scores that decay.

use std::time::{Duration, Instant};

/// A sending rate: what one peer (or one address) may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Frames per second.
    pub per_second: f64,
    /// Frames that may be sent in one burst.
    pub burst: f64,
}

impl Rate {
    /// This rate times `factor` (rate and burst).
    pub fn times(self, factor: f64) -> Rate {
        Rate {
            per_second: self.per_second * factor,
            burst: self.burst * factor,
        }
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

    /// A full bucket of `rate`.
    pub fn of(rate: Rate) -> Self {
        TokenBucket::new(rate.per_second, rate.burst)
    }

    /// Takes one token at `now`; `false` (rate limited) if none is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back one token taken at the same instant (a frame another limit refused).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Whether the bucket is full at `now`: it has rested long enough to be forgotten.
    pub fn is_full(&self, now: Instant) -> bool {
        let mut b = *self;
        b.refill(now);
        b.tokens >= b.burst
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
    }
}

/// Faults held against a peer, halving every `half_life`: a peer is banned for many faults in a
/// short time, not for a few in a long life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FaultScore {
    value: f64,
    at: Option<Instant>,
}

impl FaultScore {
    pub(crate) const ZERO: FaultScore = FaultScore {
        value: 0.0,
        at: None,
    };

    /// The score at `now`.
    pub(crate) fn at(&self, now: Instant, half_life: Duration) -> f64 {
        match self.at {
            None => self.value,
            Some(at) if half_life.is_zero() => {
                if now > at {
                    0.0
                } else {
                    self.value
                }
            }
            Some(at) => {
                let halvings =
                    now.saturating_duration_since(at).as_secs_f64() / half_life.as_secs_f64();
                self.value * (-halvings).exp2()
            }
        }
    }

    /// Adds one fault at `now`; returns the score after it.
    pub(crate) fn add(&mut self, now: Instant, half_life: Duration) -> f64 {
        self.value = self.at(now, half_life) + 1.0;
        self.at = Some(now);
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(b.is_full(later));
        assert!(b.try_take(later) && b.try_take(later) && !b.try_take(later));
        b.give_back();
        assert!(b.try_take(later));
    }

    #[test]
    fn faults_halve_every_half_life() {
        let t0 = Instant::now();
        let h = Duration::from_secs(10);
        let mut f = FaultScore::ZERO;
        for _ in 0..8 {
            f.add(t0, h);
        }
        assert_eq!(f.at(t0, h), 8.0);
        assert!((f.at(t0 + h, h) - 4.0).abs() < 1e-9);
        assert!((f.add(t0 + 2 * h, h) - 3.0).abs() < 1e-9);
    }
}
