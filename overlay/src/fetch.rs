//! Fetching a signed consensus from any peer that serves `/p2pmix/dir/1.0.0`.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{Multiaddr, identity::Keypair, request_response, swarm::SwarmEvent};
use p2pmix_bootstrap::directory_behaviour;
use p2pmix_proto::v1::{
    DirectoryRequest, GetConsensus, SignedConsensus, directory_request::Request,
    directory_response::Response,
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
    let mut swarm = build_swarm(Keypair::generate_ed25519(), |_| {
        directory_behaviour(false, timeout)
    })
    .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    swarm
        .dial(address.clone())
        .map_err(|e| FetchError::Unreachable(format!("dial {address}: {e}")))?;
    let work = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    swarm.behaviour_mut().send_request(
                        &peer_id,
                        DirectoryRequest {
                            request: Some(Request::GetConsensus(GetConsensus {
                                epoch: epoch.unwrap_or(0),
                            })),
                        },
                    );
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(FetchError::Unreachable(format!("dial {address}: {error}")));
                }
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => {
                    return match response.response {
                        Some(Response::Consensus(c)) => Ok(c),
                        Some(Response::Refused(r)) => Err(FetchError::Refused(r.reason)),
                        _ => Err(FetchError::Refused("unexpected answer".into())),
                    };
                }
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
