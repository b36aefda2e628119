//! Time as the sans-IO cores see it: one reading of both clocks, passed in.
//!
//! Epochs follow the wall clock (every node and authority must agree on them), while delays and
//! retries follow the monotonic clock (it never steps). A driver reads both once per turn of its
//! loop ([`Now::system`]) and hands the same [`Now`] to every machine, so that two machines never
//! disagree about what time it is within one turn; a simulator builds [`Now`] from virtual time.
//!
//! Every machine has one timer shape: `poll_timeout(&self) -> Option<Instant>` says when it next
//! has work, `handle_timeout(now)` does it. Machines that follow the epoch schedule keep their
//! deadlines in wall-clock milliseconds and turn them into an [`Instant`] with
//! [`Now::instant_at`], using the last [`Now`] they were given.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One reading of the monotonic clock and the wall clock (milliseconds since the UNIX epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The monotonic clock: delays, timeouts, retries.
    pub mono: Instant,
    /// The wall clock in milliseconds since the UNIX epoch: epochs and their phases.
    pub unix_ms: u64,
}

impl Now {
    /// A reading made of the two given times.
    pub fn new(mono: Instant, unix_ms: u64) -> Self {
        Now { mono, unix_ms }
    }

    /// Reads both clocks of this machine (a wall clock before 1970 reads as 0).
    pub fn system() -> Self {
        Now {
            mono: Instant::now(),
            unix_ms: unix_ms(),
        }
    }

    /// The monotonic instant at which the wall clock will read `unix_ms`, assuming the two
    /// clocks run at the same pace from this reading on; a time already past maps to `mono`,
    /// one too far to represent to a year from now (never "due at once", which would spin a
    /// driver).
    pub fn instant_at(&self, unix_ms: u64) -> Instant {
        let ahead = Duration::from_millis(unix_ms.saturating_sub(self.unix_ms));
        self.mono
            .checked_add(ahead)
            .or_else(|| self.mono.checked_add(Duration::from_secs(365 * 86_400)))
            .unwrap_or(self.mono)
    }

    /// This reading moved `by` later on both clocks (for simulators and tests).
    pub fn later(&self, by: Duration) -> Now {
        Now {
            mono: self.mono.checked_add(by).unwrap_or(self.mono),
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Milliseconds since the UNIX epoch, from the system clock (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_deadlines_map_onto_the_monotonic_clock() {
        let now = Now::new(Instant::now(), 10_000);
        assert_eq!(
            now.instant_at(10_250),
            now.mono + Duration::from_millis(250)
        );
        assert_eq!(
            now.instant_at(9_000),
            now.mono,
            "a past deadline is due now"
        );
        let later = now.later(Duration::from_millis(1_500));
        assert_eq!(later.unix_ms, 11_500);
        assert_eq!(later.instant_at(11_500), later.mono);
    }
}
