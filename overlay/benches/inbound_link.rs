//! What the constant-rate inbound link costs: the bytes a client's link carries at the default
//! pull rate (every answer padded to one size), against the long poll it replaced, and the
//! gateway's CPU per padded answer.
//!
//! `cargo bench -p p2pmix --bench inbound_link`
//!
//! The sizes are the encoded answers plus the codec's 4-byte length prefix (the Noise and yamux
//! framing on top is the same for both paces, per frame). The long poll's figures are the
//! lower bound of its traffic: an idle client's one empty answer per 20 s, and a busy one's
//! packets alone.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use p2pmix::{
    Now,
    bootstrap::default_parameters,
    mailbox::{
        MAX_WAIT, MailboxConfig, MailboxServer, PullRate,
        store::{MailboxStore, Persistence},
    },
    proto::v1::MailboxRequest,
    sphinx::{ClientId, Geometry, Label},
};
use prost::Message;

const PREFIX: usize = 4;

fn main() {
    let PullRate::Constant { interval, items } = PullRate::from_parameters(&default_parameters())
    else {
        panic!("the default parameters turn the constant rate off");
    };
    let now = Now::system();
    let store = MailboxStore::new(MailboxConfig::default(), Persistence::Memory, now.unix_ms);
    let mut server: MailboxServer<u32> = MailboxServer::new(store, now);
    let client = ClientId([7; 32]);
    let body = vec![0x5a; Geometry::DEFAULT.body_size()];
    let request = |ack: u64| MailboxRequest {
        ack_through: Some(ack),
        max: items,
        padded: true,
        ..MailboxRequest::default()
    };
    let answer = |server: &mut MailboxServer<u32>, ack: u64| {
        server.handle_fetch(now, client, None, request(ack), 0);
        server.poll_answer().unwrap().1
    };
    let idle = answer(&mut server, 0);
    for i in 0..items {
        server
            .handle_delivery(now, &client, Label([i as u8; 16]), &body)
            .unwrap();
    }
    let full = answer(&mut server, 0);
    let (idle_bytes, full_bytes) = (idle.encoded_len() + PREFIX, full.encoded_len() + PREFIX);
    assert_eq!(idle_bytes, full_bytes, "padded answers differ in size");
    let per_second = 1.0 / interval.as_secs_f64();
    let fetch_bytes = request(u64::MAX).encoded_len() + PREFIX;
    println!(
        "constant-rate link (default parameters: a pull every {interval:?}, {items} items): \
         answer {full_bytes} B, fetch {fetch_bytes} B"
    );
    println!(
        "  inbound {:.1} KiB/s, outbound {:.2} KiB/s, idle or busy alike",
        full_bytes as f64 * per_second / 1024.0,
        fetch_bytes as f64 * per_second / 1024.0
    );
    let empty_long_poll = {
        let store = MailboxStore::new(MailboxConfig::default(), Persistence::Memory, now.unix_ms);
        let mut s: MailboxServer<u32> = MailboxServer::new(store, now);
        s.handle_fetch(
            now,
            client,
            None,
            MailboxRequest {
                ack_through: Some(0),
                max: 64,
                ..MailboxRequest::default()
            },
            0,
        );
        s.poll_answer().unwrap().1.encoded_len() + PREFIX
    };
    let packet_item = full_bytes / items as usize;
    println!(
        "long poll (replaced): idle {:.3} KiB/s (one empty answer of {empty_long_poll} B per \
         {MAX_WAIT:?}), busy about {:.1} KiB per packet received",
        empty_long_poll as f64 / MAX_WAIT.as_secs_f64() / 1024.0,
        packet_item as f64 / 1024.0
    );
    // The gateway's CPU per padded answer, idle (all dummies) and full.
    let rounds = 20_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(answer(&mut server, 0));
    }
    let idle_cost = started.elapsed() / rounds;
    let started = Instant::now();
    let mut ack = 0;
    for r in 0..rounds {
        for i in 0..items {
            server
                .handle_delivery(now, &client, Label([(r + i) as u8; 16]), &body)
                .unwrap();
        }
        let a = std::hint::black_box(answer(&mut server, ack));
        if let Some(p2pmix::proto::v1::mailbox_response::Response::Batch(b)) = a.response {
            ack = b.items.iter().map(|i| i.seq).max().unwrap_or(ack);
        }
    }
    let full_cost = started.elapsed() / rounds;
    println!(
        "gateway CPU per padded answer: {idle_cost:?} all dummies, {full_cost:?} with {items} \
         packets stored and handed over ({:.4}% of one core per idle client at {:.0} pulls/s)",
        idle_cost.as_secs_f64() * per_second * 100.0,
        per_second
    );
}
