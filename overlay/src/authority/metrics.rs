//! The authority's Prometheus metrics. The sans-IO [`Authority`] keeps its counters as values
//! ([`Authority::stats`], [`Authority::rejections`]) and never touches the recorder: they are
//! exported on a timer ([`ExportTimer`], [`export`]), with the writer thread's count of state
//! writes; the driver counts what passes through it (requests taken, consensus requests, the
//! core's events) as it happens.
//!
//! - `p2pmix_authority_accepted_total{kind}`: descriptors, votes, reveals, signatures taken;
//! - `p2pmix_authority_rejections_total{reason}`: refused requests, by reason (caps, rate
//!   limits, replays, bad signatures, late, …);
//! - `p2pmix_authority_consensus_published_total`, `p2pmix_authority_consensus_epoch`,
//!   `p2pmix_authority_consensus_signatures`, `p2pmix_authority_signatures_added_total`;
//! - `p2pmix_authority_rounds_failed_total{reason}`;
//! - `p2pmix_authority_consensus_requests_total{outcome}`: documents served or not held;
//! - `p2pmix_authority_equivocations_total`: authorities caught voting or signing twice;
//! - `p2pmix_authority_reach_total{result}`: reachability checks by outcome;
//! - `p2pmix_authority_left_out{reason}`: candidates this round's vote left out;
//! - `p2pmix_authority_excluded_health{reason}`: nodes the newest consensus the authority holds
//!   leaves out for health (`low_delivery`, `slow`; docs/consensus.md, "Health"), set when it
//!   publishes one and at start from a restored state;
//! - `p2pmix_authority_state_writes_total`, `p2pmix_authority_state_bytes`: state files the
//!   writer thread put on disk, and the size of the last;
//! - `p2pmix_authority_round`, `p2pmix_authority_descriptors`,
//!   `p2pmix_authority_descriptor_bytes`, `p2pmix_authority_memory_bytes`,
//!   `p2pmix_authority_peers_connected`, `p2pmix_epoch`.
//!
//! [`Authority::stats`]: p2pmix_bootstrap::Authority::stats
//! [`Authority::rejections`]: p2pmix_bootstrap::Authority::rejections

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use p2pmix_bootstrap::{Authority, Event, Rejection, RoundFailure};
use p2pmix_proto::v1::{Consensus, DirectoryRequest, ExclusionReason, directory_request::Request};

use super::writer::Progress;

/// How often the exported values are brought up to date.
pub(super) const EXPORT_INTERVAL: Duration = Duration::from_millis(500);

/// What kind of request an authority took, as the `kind` label says it.
pub(super) fn request_kind(request: &DirectoryRequest) -> &'static str {
    match request.request {
        Some(Request::Descriptor(_)) => "descriptor",
        Some(Request::Vote(_)) => "vote",
        Some(Request::Reveal(_)) => "reveal",
        Some(Request::Signature(_)) => "signature",
        Some(Request::GetConsensus(_)) => "get_consensus",
        Some(Request::GetEvidence(_)) => "get_evidence",
        None => "empty",
    }
}

/// Counts one accepted request of `kind` (refusals are counted by the core, by reason: see
/// [`export`]).
pub(super) fn count_request(kind: &'static str, result: &Result<(), Rejection>) {
    if result.is_ok() {
        counter!("p2pmix_authority_accepted_total", "kind" => kind).increment(1);
    }
}

/// Counts one consensus request: served, or not held.
pub(super) fn count_consensus_request(served: bool) {
    let outcome = if served { "served" } else { "not_held" };
    counter!("p2pmix_authority_consensus_requests_total", "outcome" => outcome).increment(1);
}

/// Counts what the core reported.
pub(super) fn count_event(event: &Event) {
    match event {
        Event::Published {
            epoch, signatures, ..
        } => {
            counter!("p2pmix_authority_consensus_published_total").increment(1);
            gauge!("p2pmix_authority_consensus_epoch").set(*epoch as f64);
            gauge!("p2pmix_authority_consensus_signatures").set(*signatures as f64);
        }
        Event::SignaturesAdded { signatures, .. } => {
            counter!("p2pmix_authority_signatures_added_total").increment(1);
            gauge!("p2pmix_authority_consensus_signatures").set(*signatures as f64);
        }
        Event::Failed { reason, .. } => {
            let reason = match reason {
                RoundFailure::Compute(_) => "compute",
                RoundFailure::NotEnoughSignatures { .. } => "not_enough_signatures",
                RoundFailure::OwnVote(_) => "own_vote",
                RoundFailure::AlreadySigned => "already_signed",
                _ => "other",
            };
            counter!("p2pmix_authority_rounds_failed_total", "reason" => reason).increment(1);
        }
        // Equivocations are counted from the core's stats.
        _ => {}
    }
}

/// The `reason` labels of exclusions for health, every one exported (0 when none).
const EXCLUSION_REASONS: [(ExclusionReason, &str); 3] = [
    (ExclusionReason::LowDelivery, "low_delivery"),
    (ExclusionReason::Slow, "slow"),
    (ExclusionReason::Unspecified, "unspecified"),
];

/// How many nodes `consensus` leaves out for health, per `reason` label (every label, in
/// [`EXCLUSION_REASONS`] order; a reason this build does not know counts as `unspecified`).
fn excluded_by_reason(consensus: &Consensus) -> [(&'static str, usize); 3] {
    let mut counts = EXCLUSION_REASONS.map(|(_, label)| (label, 0));
    for e in &consensus.excluded {
        let reason = ExclusionReason::try_from(e.reason).unwrap_or(ExclusionReason::Unspecified);
        if let Some(i) = EXCLUSION_REASONS.iter().position(|(r, _)| *r == reason) {
            counts[i].1 += 1;
        }
    }
    counts
}

/// Sets `p2pmix_authority_excluded_health{reason}` from `consensus`, the newest the authority
/// holds.
pub(super) fn set_excluded(consensus: &Consensus) {
    for (reason, n) in excluded_by_reason(consensus) {
        gauge!("p2pmix_authority_excluded_health", "reason" => reason).set(n as f64);
    }
}

/// Exports what `authority` counts, the round under way, the links to the other authorities
/// (`authorities_connected`) and the writer thread's `progress`.
pub(super) fn export(
    authority: &Authority,
    epoch: u64,
    authorities_connected: usize,
    progress: &Progress,
) {
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
    counter!("p2pmix_authority_state_writes_total").absolute(progress.writes);
    gauge!("p2pmix_authority_state_bytes").set(progress.last_bytes as f64);
    gauge!("p2pmix_epoch").set(epoch as f64);
    gauge!("p2pmix_authority_round").set(stats.round as f64);
    gauge!("p2pmix_authority_descriptors").set(stats.descriptors as f64);
    gauge!("p2pmix_authority_descriptor_bytes").set(stats.descriptor_bytes as f64);
    gauge!("p2pmix_authority_memory_bytes").set(stats.memory_bytes as f64);
    gauge!("p2pmix_authority_peers_connected").set(authorities_connected as f64);
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

#[cfg(test)]
mod tests {
    use p2pmix_proto::v1::ExcludedNode;

    use super::*;

    #[test]
    fn exclusions_are_counted_per_reason_every_reason_exported() {
        let out = |reason: i32| ExcludedNode {
            reason,
            ..Default::default()
        };
        let c = Consensus {
            excluded: vec![
                out(ExclusionReason::LowDelivery as i32),
                out(ExclusionReason::Slow as i32),
                out(ExclusionReason::LowDelivery as i32),
                out(99),
            ],
            ..Default::default()
        };
        assert_eq!(
            excluded_by_reason(&c),
            [("low_delivery", 2), ("slow", 1), ("unspecified", 1)]
        );
        assert_eq!(
            excluded_by_reason(&Consensus::default()),
            [("low_delivery", 0), ("slow", 0), ("unspecified", 0)]
        );
    }
}
