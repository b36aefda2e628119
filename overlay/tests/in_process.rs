//! Clients against `p2pmix::test_network` (a whole mixnet in this process, what a dApp's own
//! tests use): several messages each way with replies through SURBs, a gateway chosen among the
//! consensus's and remembered, and a message to a gateway
//! the consensus does not have, which the sender hears about at once instead of after every
//! retransmission.
#![allow(missing_docs, unreachable_pub)]

use std::{collections::HashSet, time::Duration};

use libp2p::PeerId;
use p2pmix::{
    client::{
        Address, Client, Event, RouteError, Unroutable,
        gateway::{GATEWAY_FILE, GatewayError, choose_gateway, fetch_verified_consensus},
        gateway_for,
    },
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
async fn clients_of_an_in_process_network_exchange_messages_choose_gateways_and_hear_why_one_cannot_be_routed()
 {
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

    // A gateway chosen automatically: one of the network's, uniformly (both seen over 200
    // draws; the chance of missing one is 2^-199), remembered in the data directory and kept.
    let dir = std::env::temp_dir().join(format!("p2pmix-gateway-choice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (first, chosen_now) = gateway_for(&dir, net.authorities()).await.unwrap();
    assert!(chosen_now);
    let peers: HashSet<_> = net.gateways().iter().map(|g| g.peer).collect();
    assert!(peers.contains(&first.peer), "a gateway of the network");
    let (again, chosen_now) = gateway_for(&dir, net.authorities()).await.unwrap();
    assert_eq!((again.peer, chosen_now), (first.peer, false), "remembered");
    let consensus = fetch_verified_consensus(net.authorities()).await.unwrap();
    let mut rng = rand::rng();
    let seen: HashSet<_> = (0..200)
        .filter_map(|_| choose_gateway(&consensus, &mut rng).map(|g| g.peer))
        .collect();
    assert_eq!(seen, peers, "every gateway can be chosen");
    std::fs::write(dir.join(GATEWAY_FILE), "not an address\n").unwrap();
    assert!(matches!(
        gateway_for(&dir, net.authorities()).await,
        Err(GatewayError::Remembered { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);

    // The command line chooses the same way when given no --gateway, and a malformed
    // --gateway is refused before it replaces the remembered choice (the address names it).
    let file = dir.with_extension("toml");
    let schedule = net.authorities().schedule.expect("a schedule");
    let mut text: String = net
        .authorities()
        .entries
        .iter()
        .map(|e| p2pmix::config::Authorities::entry(&e.public_key, &e.addresses))
        .collect();
    text.push_str(&format!(
        "[network]\ngenesis_unix_ms = {}\nepoch_ms = {}\ntest_network = true\n",
        schedule.start_of(0),
        schedule.period_ms()
    ));
    std::fs::write(&file, text).unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_p2pmix"))
            .args(["client", "address", "--data-dir"])
            .arg(&dir)
            .args(args)
            .output()
            .unwrap()
    };
    let chose = cli(&["--authorities", file.to_str().unwrap()]);
    assert!(
        chose.status.success(),
        "{}",
        String::from_utf8_lossy(&chose.stderr)
    );
    assert!(String::from_utf8_lossy(&chose.stdout).starts_with("p2pmix1"));
    assert!(String::from_utf8_lossy(&chose.stderr).contains("chose gateway"));
    let remembered = std::fs::read_to_string(dir.join(GATEWAY_FILE)).unwrap();
    assert!(
        net.gateways()
            .iter()
            .any(|g| remembered.contains(&g.peer.to_string()))
    );
    let refused = cli(&["--gateway", "/ip4/127.0.0.1/tcp/1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not end in /p2p/"));
    assert_eq!(
        std::fs::read_to_string(dir.join(GATEWAY_FILE)).unwrap(),
        remembered
    );
    let again = cli(&[]);
    assert_eq!(
        again.stdout, chose.stdout,
        "the same address from the remembered gateway"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);

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
