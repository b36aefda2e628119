//! Serving consensus documents: every node answers `GetConsensus` from the verified documents it
//! holds, so that clients and nodes can fetch the next consensus from any peer, not only from
//! the authorities; and `GetEvidence` with the conflicting documents it was offered.

use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, RefusalCode, Refused, SignedConsensus,
    directory_request::Request, directory_response::Response,
};

use super::DirectoryClient;

/// The refusal for an epoch whose document is not held.
pub fn not_held() -> Response {
    Response::Refused(Refused {
        reason: "no consensus held for that epoch".into(),
        code: RefusalCode::NotHeld as i32,
    })
}

/// A node's answer to a directory request: the document asked for (epoch 0: the newest) from
/// what `held` holds; anything but `GetConsensus` is for authorities.
pub fn answer_held(held: &DirectoryClient, request: DirectoryRequest) -> DirectoryResponse {
    let response = match request.request {
        Some(Request::GetConsensus(get)) => {
            let document: Option<&SignedConsensus> = if get.epoch == 0 {
                held.newest().map(|c| c.signed())
            } else {
                held.consensus(get.epoch).map(|c| c.signed())
            };
            document.map_or_else(not_held, |c| Response::Consensus(c.clone()))
        }
        Some(Request::GetEvidence(get)) => {
            Response::Evidence(held.evidence((get.epoch != 0).then_some(get.epoch)))
        }
        _ => Response::Refused(Refused {
            reason: "this node is not an authority".into(),
            code: RefusalCode::Unsupported as i32,
        }),
    };
    DirectoryResponse {
        response: Some(response),
    }
}
