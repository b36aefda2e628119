//! Clients against `p2pmix::test_network` (a whole mixnet in this process, what a dApp's own
//! tests use): several messages each way with replies through SURBs, and a message to a gateway
//! the consensus does not have, which the sender hears about at once instead of after every
//! retransmission.
#![allow(missing_docs, unreachable_pub)]

use std::{collections::HashSet, time::Duration};

use libp2p::PeerId;
use p2pmix::{
    client::{Address, Client, Event, RouteError, Unroutable},
    test_network::TestNetwork,
};

/// Events of `client` until `done` says stop, within `limit`.
async fn until(client: &mut Client, limit: Duration, mut done: impl FnMut(Event) -> bool) {
    tokio::time::timeout(limit, async {
        loop {
            let event = client.next_event().await.expect("the client runs");
            if done(event) {
                return;
            }
        }
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "current_thread")]
async fn clients_of_an_in_process_network_exchange_messages_and_hear_why_one_cannot_be_routed() {
    let net = TestNetwork::start().await.expect("the network comes up");
    assert_eq!(net.gateways().len(), 2);
    assert_eq!(net.mixes().len(), 6);
    let (swarm, identity, key) = TestNetwork::client_keys().unwrap();
    let mut alice = Client::start(swarm, identity, key, net.client_config(0)).unwrap();
    let (swarm, identity, key) = TestNetwork::client_keys().unwrap();
    let mut bob = Client::start(swarm, identity, key, net.client_config(1)).unwrap();

    // Five questions, each answered through its SURB: every one arrives, once.
    let mut asked = HashSet::new();
    for i in 0..5 {
        let id = alice
            .send(&bob.address(), format!("question {i}").into_bytes(), 1)
            .await
            .unwrap();
        asked.insert(id);
    }
    let mut questions = HashSet::new();
    let mut to_answer = Vec::new();
    until(&mut bob, Duration::from_secs(120), |event| {
        if let Event::Received(m) = event {
            assert!(questions.insert(m.bytes.clone()), "a question came twice");
            to_answer.push(m);
        }
        questions.len() == 5
    })
    .await;
    for m in to_answer {
        let mut answer = b"answer to ".to_vec();
        answer.extend(&m.bytes);
        bob.reply(m.reply.expect("a SURB came"), answer)
            .await
            .unwrap();
    }
    let mut answered = HashSet::new();
    until(&mut alice, Duration::from_secs(120), |event| {
        if let Event::Received(m) = event {
            let of = m.in_reply_to.expect("an answer says what it answers");
            assert!(asked.contains(&of), "an answer to a question never asked");
            assert!(answered.insert(of), "an answer came twice");
        }
        answered.len() == 5
    })
    .await;

    // An address whose gateway is not in the consensus: the sender is told why within a
    // couple of send ticks, not after its retransmissions run out.
    let nowhere = Address {
        gateway: PeerId::random(),
        ..bob.address()
    };
    let id = alice
        .send(&nowhere, b"lost cause".to_vec(), 0)
        .await
        .unwrap();
    until(&mut alice, Duration::from_secs(10), |event| match event {
        Event::Unroutable(m, Unroutable::Route(RouteError::UnknownGateway(g))) => {
            assert_eq!((m, g), (id, nowhere.gateway));
            true
        }
        Event::Failed(m, _) => panic!("{m} failed before the sender heard why"),
        _ => false,
    })
    .await;
}
