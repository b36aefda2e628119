//! One-shot directory requests to a peer that serves `/p2pmix/dir/1.0.0`: fetch a consensus or
//! the evidence of equivocation a peer holds, upload a descriptor.

use std::time::Duration;

use futures::StreamExt;
use libp2p_core::Multiaddr;
use libp2p_identity::Keypair;
use libp2p_request_response as request_response;
use libp2p_swarm::SwarmEvent;
use p2pmix_bootstrap::directory_behaviour;
use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, Evidence, GetConsensus, GetEvidence, RefusalCode,
    SignedConsensus, SignedDescriptor, directory_request::Request, directory_response::Response,
};
use thiserror::Error;

use crate::runtime::{SwarmError, build_swarm};

/// Why a one-shot request did not get what it asked for.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The short-lived swarm could not be built.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The address cannot be dialled.
    #[error("dial {address}: {source}")]
    Dial {
        /// The address.
        address: Multiaddr,
        /// Why.
        source: libp2p_swarm::DialError,
    },
    /// The connection could not be made.
    #[error("connecting to {address}: {source}")]
    Connection {
        /// The address.
        address: Multiaddr,
        /// Why.
        source: libp2p_swarm::DialError,
    },
    /// The request got no answer.
    #[error("request to {address}: {source}")]
    Request {
        /// The address.
        address: Multiaddr,
        /// Why.
        source: request_response::OutboundFailure,
    },
    /// No answer within the time allowed.
    #[error("no answer from {address} within {timeout:?}")]
    Timeout {
        /// The address.
        address: Multiaddr,
        /// The bound.
        timeout: Duration,
    },
    /// The peer refused.
    #[error("peer refused ({code:?}): {reason}")]
    Refused {
        /// What the peer's refusal means.
        code: RefusalCode,
        /// The peer's words, for people.
        reason: String,
    },
    /// The peer answered with something that is not an answer to the request.
    #[error("unexpected answer")]
    Unexpected,
}

/// Dials `address`, asks for the consensus of `epoch` (`None`: the newest) and returns it,
/// unverified (verify with [`p2pmix_bootstrap::verify_signed_consensus`]).
pub async fn fetch_consensus(
    address: Multiaddr,
    epoch: Option<u64>,
    timeout: Duration,
) -> Result<SignedConsensus, FetchError> {
    let request = DirectoryRequest {
        request: Some(Request::GetConsensus(GetConsensus {
            epoch: epoch.unwrap_or(0),
        })),
    };
    match request_once(address, request, timeout).await?.response {
        Some(Response::Consensus(c)) => Ok(c),
        Some(Response::Refused(r)) => Err(refused(r)),
        _ => Err(FetchError::Unexpected),
    }
}

/// Dials `address` and asks for the evidence of equivocation it holds for `epoch` (`None`:
/// every epoch it keeps), unverified (check each pair with
/// [`p2pmix_bootstrap::verify_equivocation`]).
pub async fn fetch_evidence(
    address: Multiaddr,
    epoch: Option<u64>,
    timeout: Duration,
) -> Result<Evidence, FetchError> {
    let request = DirectoryRequest {
        request: Some(Request::GetEvidence(GetEvidence {
            epoch: epoch.unwrap_or(0),
        })),
    };
    match request_once(address, request, timeout).await?.response {
        Some(Response::Evidence(e)) => Ok(e),
        Some(Response::Refused(r)) => Err(refused(r)),
        _ => Err(FetchError::Unexpected),
    }
}

/// Uploads a signed node descriptor to the authority at `address`.
pub async fn upload_descriptor(
    address: Multiaddr,
    descriptor: SignedDescriptor,
    timeout: Duration,
) -> Result<(), FetchError> {
    let request = DirectoryRequest {
        request: Some(Request::Descriptor(descriptor)),
    };
    match request_once(address, request, timeout).await?.response {
        Some(Response::Accepted(_)) => Ok(()),
        Some(Response::Refused(r)) => Err(refused(r)),
        _ => Err(FetchError::Unexpected),
    }
}

fn refused(r: p2pmix_proto::v1::Refused) -> FetchError {
    FetchError::Refused {
        code: r.code(),
        reason: r.reason,
    }
}

/// One request to one peer over a short-lived swarm, with a bound on the whole exchange.
pub async fn request_once(
    address: Multiaddr,
    request: DirectoryRequest,
    timeout: Duration,
) -> Result<DirectoryResponse, FetchError> {
    let mut swarm = build_swarm(Keypair::generate_ed25519(), |_| {
        directory_behaviour(false, timeout)
    })?;
    swarm
        .dial(address.clone())
        .map_err(|source| FetchError::Dial {
            address: address.clone(),
            source,
        })?;
    let mut request = Some(request);
    let work = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    if let Some(request) = request.take() {
                        swarm.behaviour_mut().send_request(&peer_id, request);
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(FetchError::Connection {
                        address: address.clone(),
                        source: error,
                    });
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    return Err(FetchError::Request {
                        address: address.clone(),
                        source: error,
                    });
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout {
            address: address.clone(),
            timeout,
        })?
}
