//! The authority's Prometheus metrics: what it accepted and refused, what it published, and its
//! state writes. The sans-IO [`Authority`] keeps counters as values (refusals by reason); the
//! driver counts what passes through it and exports the rest.
//!
//! - `p2pmix_authority_accepted_total{kind}`: descriptors, votes, reveals, signatures taken;
//! - `p2pmix_authority_rejections_total{reason}`: refusals, by reason (`descriptor_late`, …);
//! - `p2pmix_authority_consensus_published_total`, `p2pmix_authority_consensus_epoch`,
//!   `p2pmix_authority_consensus_signatures`, `p2pmix_authority_signatures_added_total`;
//! - `p2pmix_authority_rounds_failed_total{reason}`;
//! - `p2pmix_authority_consensus_requests_total{outcome}`: documents served or not held;
//! - `p2pmix_authority_state_writes_total`, `p2pmix_authority_state_bytes`;
//! - `p2pmix_authority_round`, `p2pmix_authority_descriptors`,
//!   `p2pmix_authority_peers_connected`, `p2pmix_epoch`.

use metrics::{counter, gauge};
use p2pmix_bootstrap::{Authority, Event, Rejection, RoundFailure};
use p2pmix_proto::v1::{DirectoryRequest, directory_request::Request};

/// What kind of request an authority took, as the `kind` label says it.
pub fn request_kind(request: &DirectoryRequest) -> &'static str {
    match request.request {
        Some(Request::Descriptor(_)) => "descriptor",
        Some(Request::Vote(_)) => "vote",
        Some(Request::Reveal(_)) => "reveal",
        Some(Request::Signature(_)) => "signature",
        Some(Request::GetConsensus(_)) => "get_consensus",
        None => "empty",
    }
}

/// Counts one accepted request of `kind` (refusals are counted by the core, by reason: see
/// [`export`]).
pub fn count_request(kind: &'static str, result: &Result<(), Rejection>) {
    if result.is_ok() {
        counter!("p2pmix_authority_accepted_total", "kind" => kind).increment(1);
    }
}

/// Counts one consensus request: served, or not held.
pub fn count_consensus_request(served: bool) {
    let outcome = if served { "served" } else { "not_held" };
    counter!("p2pmix_authority_consensus_requests_total", "outcome" => outcome).increment(1);
}

/// Counts what the core reported.
pub fn count_event(event: &Event) {
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
                _ => "other",
            };
            counter!("p2pmix_authority_rounds_failed_total", "reason" => reason).increment(1);
        }
        _ => {}
    }
}

/// Counts one write of the state file of `bytes` bytes.
pub fn count_state_write(bytes: usize) {
    counter!("p2pmix_authority_state_writes_total").increment(1);
    gauge!("p2pmix_authority_state_bytes").set(bytes as f64);
}

/// The core's refusals by reason (`p2pmix_authority_rejections_total{reason}`), the round under
/// way and the links to the other authorities.
pub fn export(authority: &Authority, epoch: u64, authorities_connected: usize) {
    for (reason, n) in authority.rejections() {
        counter!("p2pmix_authority_rejections_total", "reason" => *reason).absolute(*n);
    }
    gauge!("p2pmix_epoch").set(epoch as f64);
    gauge!("p2pmix_authority_round").set(authority.round_epoch() as f64);
    gauge!("p2pmix_authority_descriptors").set(authority.descriptor_count() as f64);
    gauge!("p2pmix_authority_peers_connected").set(authorities_connected as f64);
}
