//! The authority's Prometheus metrics: what it accepted and refused, what it published, and its
//! state writes. The sans-IO [`Authority`] keeps no metrics of its own; the driver counts what
//! passes through it.

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

/// Counts one answered request of `kind`: accepted, or refused for a reason.
pub fn count_request(kind: &'static str, result: &Result<(), Rejection>) {
    match result {
        Ok(()) => counter!("p2pmix_authority_accepted_total", "kind" => kind).increment(1),
        Err(e) => counter!("p2pmix_authority_refused_total", "reason" => e.reason()).increment(1),
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

/// The gauges of the round under way and of the links to the other authorities.
pub fn export(authority: &Authority, epoch: u64, authorities_connected: usize) {
    gauge!("p2pmix_epoch").set(epoch as f64);
    gauge!("p2pmix_authority_round_epoch").set(authority.round_epoch() as f64);
    gauge!("p2pmix_authority_round_descriptors").set(authority.descriptor_count() as f64);
    gauge!("p2pmix_authority_peers_connected").set(authorities_connected as f64);
}
