//! The mailbox protocol as both ends decode it: a gateway's answer (items with labels and
//! bodies, as the client behaviour reads them) and a client's fetch. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmix::proto::v1::{MailboxRequest, MailboxResponse, mailbox_response::Response};
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
    let _ = MailboxRequest::decode(data);
});
