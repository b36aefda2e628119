//! One-shot directory requests to a peer that serves `/p2pmix/dir/1.0.0`: fetch a consensus,
//! upload a descriptor.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{Multiaddr, identity::Keypair, request_response, swarm::SwarmEvent};
use p2pmix_bootstrap::directory_behaviour;
use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, GetConsensus, SignedConsensus, SignedDescriptor,
    directory_request::Request, directory_response::Response,
};
use thiserror::Error;

use crate::authority_node::build_swarm;

/// Why no consensus was fetched.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The peer could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered without a consensus.
    #[error("peer refused: {0}")]
    Refused(String),
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
        Some(Response::Refused(r)) => Err(FetchError::Refused(r.reason)),
        _ => Err(FetchError::Refused("unexpected answer".into())),
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
        Some(Response::Refused(r)) => Err(FetchError::Refused(r.reason)),
        _ => Err(FetchError::Refused("unexpected answer".into())),
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
    })
    .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    swarm
        .dial(address.clone())
        .map_err(|e| FetchError::Unreachable(format!("dial {address}: {e}")))?;
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
                    return Err(FetchError::Unreachable(format!("dial {address}: {error}")));
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    return Err(FetchError::Unreachable(format!("request failed: {error}")));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        FetchError::Unreachable(format!("no answer from {address} within {timeout:?}"))
    })?
}
