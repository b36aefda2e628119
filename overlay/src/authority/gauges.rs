//! The authority's metrics, exported from [`Authority::stats`] and [`Authority::rejections`] on
//! a timer (the sans-IO authority keeps counters as values and never touches the recorder).
//!
//! - `p2pmix_authority_equivocations_total`: authorities caught voting or signing twice;
//! - `p2pmix_authority_rejections_total{reason}`: refused requests, by reason (caps, rate
//!   limits, replays, bad signatures, ...);
//! - `p2pmix_authority_reach_total{result}`: reachability checks by outcome;
//! - `p2pmix_authority_left_out{reason}`: candidates this round's vote left out;
//! - `p2pmix_authority_round`, `p2pmix_authority_descriptors`,
//!   `p2pmix_authority_descriptor_bytes`, `p2pmix_authority_memory_bytes`.
//!
//! [`Authority::stats`]: p2pmix_bootstrap::Authority::stats
//! [`Authority::rejections`]: p2pmix_bootstrap::Authority::rejections

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use p2pmix_bootstrap::Authority;

/// How often the metrics are brought up to date.
pub(super) const EXPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Exports what `authority` counts.
pub(super) fn export(authority: &Authority) {
    let stats = authority.stats();
    counter!("p2pmix_authority_equivocations_total").absolute(stats.equivocations);
    for (reason, n) in authority.rejections() {
        counter!("p2pmix_authority_rejections_total", "reason" => *reason).absolute(*n);
    }
    let r = stats.reach;
    for (result, n) in [
        ("started", r.started),
        ("reached", r.reached),
        ("unreachable", r.unreachable),
        ("timed_out", r.timed_out),
        ("not_public", r.not_public),
    ] {
        counter!("p2pmix_authority_reach_total", "result" => result).absolute(n);
    }
    for (reason, n) in &stats.left_out {
        gauge!("p2pmix_authority_left_out", "reason" => *reason).set(*n as f64);
    }
    gauge!("p2pmix_authority_round").set(stats.round as f64);
    gauge!("p2pmix_authority_descriptors").set(stats.descriptors as f64);
    gauge!("p2pmix_authority_descriptor_bytes").set(stats.descriptor_bytes as f64);
    gauge!("p2pmix_authority_memory_bytes").set(stats.memory_bytes as f64);
}

/// When the next export is due.
#[derive(Debug)]
pub(super) struct ExportTimer {
    next: Instant,
}

impl ExportTimer {
    pub(super) fn new(now: Instant) -> Self {
        ExportTimer { next: now }
    }

    pub(super) fn deadline(&self) -> Instant {
        self.next
    }

    /// Whether an export is due at `now` (and schedules the next).
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + EXPORT_INTERVAL;
        true
    }
}
