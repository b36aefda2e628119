//! The mailbox protocol as both ends decode it: a gateway's answer (items with labels and
//! bodies, as the client behaviour reads them) and a client's fetch, with its registration
//! proof checked as the gateway checks it (an arbitrary key and signature never register).
//! Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p_identity::PeerId;
use p2pmix::{
    mailbox::registered_client,
    proto::v1::{MailboxRequest, MailboxResponse, mailbox_response::Response},
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(MailboxResponse {
        response: Some(Response::Batch(batch)),
    }) = MailboxResponse::decode(data)
    {
        for item in batch.items {
            let _ = <[u8; 16]>::try_from(item.label.as_slice());
        }
    }
    if let Ok(request) = MailboxRequest::decode(data) {
        // Two made-up peers (sha2-256 multihashes).
        let peer = |b: u8| {
            let mut bytes = vec![0x12, 0x20];
            bytes.extend_from_slice(&[b; 32]);
            PeerId::from_bytes(&bytes)
        };
        if let (Ok(gateway), Ok(peer)) = (peer(1), peer(2)) {
            let result = registered_client(&gateway, &peer, &request);
            // Forging an ed25519 signature is out of a fuzzer's reach: a key from the input
            // never registers.
            assert!(request.client_key.is_empty() || result.is_err());
        }
    }
});
