//! The client's sending schedule (Loopix): three independent Poisson streams.
//!
//! - the **send** stream: at each of its ticks the client sends its oldest queued real packet,
//!   or a drop-cover packet when nothing is queued;
//! - the **loop** stream: a loop-cover packet that comes back to the client (it shows the
//!   client that the network works and hides when it is receiving);
//! - the **drop** stream: a drop-cover packet that ends at a random gateway.
//!
//! When a packet leaves never depends on whether real traffic is waiting: the intervals are
//! drawn from the random source alone, so an observer of the client's link sees the same
//! process with or without real messages (tested below with a seeded source, and against the
//! exponential distribution). Sans-IO: time is passed in, the driver builds and sends the
//! packets.
//!
//! A mean interval of zero (a consensus parameter of 0) turns a stream off, for measuring what
//! cover buys on a test network: loop or drop off sends none of that cover; send off sends real
//! packets as soon as they are queued and nothing when none is, so the client's link then shows
//! exactly when it sends. An off stream looks again every [`OFF_RECHECK`] in case new rates
//! turned it on.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use p2pmix_mix::sample_exponential;
use rand::CryptoRng;

/// Mean intervals of the three streams (from the consensus); zero turns a stream off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRates {
    /// Mean interval of the send stream (real or drop cover).
    pub send: Duration,
    /// Mean interval of the loop-cover stream.
    pub loop_cover: Duration,
    /// Mean interval of the drop-cover stream.
    pub drop_cover: Duration,
}

impl StreamRates {
    /// The client rates a consensus fixes (0: that stream is off).
    pub fn from_parameters(parameters: &p2pmix_proto::v1::NetworkParameters) -> Self {
        let us = Duration::from_micros;
        StreamRates {
            send: us(parameters.client_send_interval_us),
            loop_cover: us(parameters.client_loop_interval_us),
            drop_cover: us(parameters.client_drop_interval_us),
        }
    }
}

/// What to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emission<T> {
    /// A real packet from the queue.
    Real(T),
    /// A drop-cover packet (the send stream had nothing queued, or the drop stream ticked).
    DropCover,
    /// A loop-cover packet addressed back to this client.
    LoopCover,
}

/// Why a packet was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sending queue is full ({0} packets)")]
pub struct QueueFull(pub usize);

/// One stream's next tick.
#[derive(Debug, Clone, Copy)]
struct Tick {
    at: Instant,
    /// Drawn from an on rate (an emission is due at `at`); false: an off stream's recheck.
    armed: bool,
}

/// The schedule. See the module documentation.
#[derive(Debug)]
pub struct SendingSchedule<T> {
    rates: StreamRates,
    queue: VecDeque<T>,
    max_queued: usize,
    next_send: Tick,
    next_loop: Tick,
    next_drop: Tick,
    /// The latest time passed in: when an unpaced send stream's queued packets are due.
    last: Instant,
}

/// Shortest mean interval accepted for a stream that is on.
const MIN_MEAN: Duration = Duration::from_millis(1);
/// How far a stream may fall behind before its missed ticks are dropped instead of caught up.
const MAX_LAG: Duration = Duration::from_secs(1);
/// How often a stream that is off looks again.
pub const OFF_RECHECK: Duration = Duration::from_secs(1);

/// The tick after `after` of a stream with mean interval `mean` (zero: off).
fn next<R: CryptoRng + ?Sized>(after: Instant, mean: Duration, rng: &mut R) -> Tick {
    if mean.is_zero() {
        return Tick {
            at: after + OFF_RECHECK,
            armed: false,
        };
    }
    Tick {
        at: after + sample_exponential(mean.max(MIN_MEAN), rng).as_duration(),
        armed: true,
    }
}

impl<T> SendingSchedule<T> {
    /// A schedule starting at `now`, holding at most `max_queued` real packets.
    pub fn new<R: CryptoRng + ?Sized>(
        now: Instant,
        rates: StreamRates,
        max_queued: usize,
        rng: &mut R,
    ) -> Self {
        SendingSchedule {
            rates,
            queue: VecDeque::new(),
            max_queued,
            next_send: next(now, rates.send, rng),
            next_loop: next(now, rates.loop_cover, rng),
            next_drop: next(now, rates.drop_cover, rng),
            last: now,
        }
    }

    /// Queues a real packet for the send stream.
    pub fn push(&mut self, packet: T) -> Result<(), QueueFull> {
        if self.queue.len() >= self.max_queued {
            return Err(QueueFull(self.max_queued));
        }
        self.queue.push_back(packet);
        Ok(())
    }

    /// Real packets waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Changes the rates (a new consensus); each stream's next tick is kept (a stream turned
    /// on from off starts at its next recheck).
    pub fn set_rates(&mut self, rates: StreamRates) {
        self.rates = rates;
    }

    fn unpaced(&self) -> bool {
        self.rates.send.is_zero() && !self.queue.is_empty()
    }

    /// When the next emission is due.
    pub fn poll_timeout(&self) -> Instant {
        let streams = self
            .next_send
            .at
            .min(self.next_loop.at)
            .min(self.next_drop.at);
        if self.unpaced() {
            streams.min(self.last)
        } else {
            streams
        }
    }

    /// The next emission due at `now`, if any (call until `None`). A stream that fell behind
    /// (the driver was late) catches up one emission per call; its schedule is not reset, so
    /// lateness never turns into a burst pattern of its own.
    pub fn poll_emit<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Option<Emission<T>> {
        self.last = self.last.max(now);
        if self.unpaced() {
            return self.queue.pop_front().map(Emission::Real);
        }
        // After a long stall (a suspended laptop), emitting every missed tick back to back would
        // be a burst no Poisson process makes: start the late streams afresh from now.
        if let Some(horizon) = now.checked_sub(MAX_LAG) {
            if self.next_send.at < horizon {
                self.next_send = next(now, self.rates.send, rng);
            }
            if self.next_loop.at < horizon {
                self.next_loop = next(now, self.rates.loop_cover, rng);
            }
            if self.next_drop.at < horizon {
                self.next_drop = next(now, self.rates.drop_cover, rng);
            }
        }
        loop {
            let due = self.poll_timeout();
            if due > now {
                return None;
            }
            if self.next_send.at == due {
                let tick = self.next_send;
                self.next_send = next(due, self.rates.send, rng);
                if tick.armed && !self.rates.send.is_zero() {
                    return Some(match self.queue.pop_front() {
                        Some(packet) => Emission::Real(packet),
                        None => Emission::DropCover,
                    });
                }
            } else if self.next_loop.at == due {
                let tick = self.next_loop;
                self.next_loop = next(due, self.rates.loop_cover, rng);
                if tick.armed && !self.rates.loop_cover.is_zero() {
                    return Some(Emission::LoopCover);
                }
            } else {
                let tick = self.next_drop;
                self.next_drop = next(due, self.rates.drop_cover, rng);
                if tick.armed && !self.rates.drop_cover.is_zero() {
                    return Some(Emission::DropCover);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    const RATES: StreamRates = StreamRates {
        send: Duration::from_millis(20),
        loop_cover: Duration::from_millis(200),
        drop_cover: Duration::from_millis(200),
    };

    /// Every emission time over `span`, with `real` packets queued up front.
    fn run(seed: u64, real: usize, span: Duration) -> (Vec<(Duration, bool)>, usize) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut s = SendingSchedule::new(t0, RATES, real.max(1), &mut rng);
        for i in 0..real {
            s.push(i).unwrap();
        }
        let mut out = Vec::new();
        let mut reals = 0;
        loop {
            let at = s.poll_timeout();
            if at > t0 + span {
                return (out, reals);
            }
            while let Some(e) = s.poll_emit(at, &mut rng) {
                let send_stream = !matches!(e, Emission::LoopCover);
                if matches!(e, Emission::Real(_)) {
                    reals += 1;
                }
                out.push((at - t0, send_stream));
            }
        }
    }

    #[test]
    fn send_times_do_not_depend_on_real_traffic() {
        let span = Duration::from_secs(60);
        let (cover_only, none) = run(7, 0, span);
        let (with_real, reals) = run(7, 500, span);
        assert_eq!(none, 0);
        assert_eq!(reals, 500, "every real packet went out");
        assert!(cover_only == with_real, "emission times differ");
    }

    /// Kolmogorov–Smirnov: the send stream's intervals against Exp(mean), with real traffic.
    #[test]
    fn send_intervals_are_exponential_with_or_without_real_traffic() {
        for real in [0, 2_000] {
            let mut rng = ChaCha20Rng::seed_from_u64(11);
            let t0 = Instant::now();
            let mut s = SendingSchedule::new(
                t0,
                StreamRates {
                    send: RATES.send,
                    loop_cover: Duration::from_secs(1_000_000),
                    drop_cover: Duration::from_secs(1_000_000),
                },
                real.max(1),
                &mut rng,
            );
            for i in 0..real {
                s.push(i).unwrap();
            }
            let mut last = t0;
            let mut intervals = Vec::new();
            while intervals.len() < 5_000 {
                let at = s.poll_timeout();
                assert!(s.poll_emit(at, &mut rng).is_some());
                intervals.push((at - last).as_secs_f64());
                last = at;
            }
            intervals.sort_by(f64::total_cmp);
            let n = intervals.len() as f64;
            let mean = RATES.send.as_secs_f64();
            let d = intervals
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let cdf = 1.0 - (-x / mean).exp();
                    (cdf - i as f64 / n)
                        .abs()
                        .max((cdf - (i + 1) as f64 / n).abs())
                })
                .fold(0.0, f64::max);
            // Critical value at alpha = 0.001: 1.95 / sqrt(n).
            assert!(
                d < 1.95 / n.sqrt(),
                "KS distance {d} with {real} real packets"
            );
        }
    }

    /// Emissions (loop cover or not) at each due time over `span`.
    fn emissions(
        s: &mut SendingSchedule<usize>,
        t0: Instant,
        span: Duration,
    ) -> Vec<Emission<usize>> {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut out = Vec::new();
        loop {
            let at = s.poll_timeout();
            if at > t0 + span {
                return out;
            }
            while let Some(e) = s.poll_emit(at, &mut rng) {
                out.push(e);
            }
        }
    }

    #[test]
    fn a_zero_interval_turns_a_stream_off() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let t0 = Instant::now();
        let span = Duration::from_secs(100);
        // Loop and drop off: only the send stream's ticks, about 50 a second.
        let send_only = StreamRates {
            send: RATES.send,
            loop_cover: Duration::ZERO,
            drop_cover: Duration::ZERO,
        };
        let mut s: SendingSchedule<usize> = SendingSchedule::new(t0, send_only, 10, &mut rng);
        let out = emissions(&mut s, t0, span);
        assert!(out.iter().all(|e| *e == Emission::DropCover));
        assert!((4_500..5_500).contains(&out.len()), "{}", out.len());
        // Everything off: nothing at all, and the schedule only looks again once a second.
        let off = StreamRates {
            send: Duration::ZERO,
            loop_cover: Duration::ZERO,
            drop_cover: Duration::ZERO,
        };
        let mut s: SendingSchedule<usize> = SendingSchedule::new(t0, off, 10, &mut rng);
        assert!(emissions(&mut s, t0, span).is_empty());
        assert!(s.poll_timeout() >= t0 + span);
        // An unpaced send stream: a queued packet is due at once, and leaves alone.
        let now = s.poll_timeout();
        s.push(7).unwrap();
        s.push(8).unwrap();
        assert!(s.poll_timeout() <= now);
        assert_eq!(s.poll_emit(now, &mut rng), Some(Emission::Real(7)));
        assert_eq!(s.poll_emit(now, &mut rng), Some(Emission::Real(8)));
        assert_eq!(s.poll_emit(now, &mut rng), None);
        assert!(s.poll_timeout() > now);
        // Turned on again: the loop stream starts within a recheck.
        s.set_rates(RATES);
        let later = now + OFF_RECHECK + Duration::from_secs(60);
        let mut loops = 0;
        while s.poll_timeout() <= later {
            let at = s.poll_timeout();
            while let Some(e) = s.poll_emit(at, &mut rng) {
                loops += usize::from(e == Emission::LoopCover);
            }
        }
        assert!(
            (200..400).contains(&loops),
            "about 300 loops in 60 s: {loops}"
        );
    }

    #[test]
    fn the_queue_is_bounded_and_drains_in_order() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut s = SendingSchedule::new(t0, RATES, 2, &mut rng);
        s.push('a').unwrap();
        s.push('b').unwrap();
        assert_eq!(s.push('c'), Err(QueueFull(2)));
        let mut reals = Vec::new();
        let end = t0 + Duration::from_secs(5);
        while s.poll_timeout() <= end {
            let at = s.poll_timeout();
            while let Some(e) = s.poll_emit(at, &mut rng) {
                if let Emission::Real(c) = e {
                    reals.push(c);
                }
            }
        }
        assert_eq!(reals, vec!['a', 'b']);
        assert_eq!(s.queued(), 0);
    }
}
