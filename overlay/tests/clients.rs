//! dApps on real swarms over 127.0.0.1: each swarm carries the client behaviour next to another
//! behaviour (ping), fetches and verifies the consensus itself, and talks to the other through
//! 3 authorities, 2 gateways and 6 mixes running as processes.
//!
//! - Alice sends to Bob with a SURB; Bob answers through it; Alice gets the answer and the
//!   acknowledgement.
//! - Bob is away: his gateway keeps Alice's message in his mailbox, on disk across a restart of
//!   the gateway, and hands it over when Bob comes back.
//!
//! The tests run one at a time (11 processes each on a 2-core machine).
#![allow(missing_docs, unreachable_pub)]

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId,
    identity::Keypair,
    ping,
    swarm::{NetworkBehaviour, Swarm, SwarmEvent},
};
use p2pmix::{
    build_swarm,
    client::{self, Address, ClientConfig, Config, Event, ReceivedMessage, StaticKey},
    config::Authorities,
};

mod common;
use common::{net::Net, wait_for};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Longest wait for one step on the network.
const STEP: Duration = Duration::from_secs(90);

#[derive(NetworkBehaviour)]
struct DApp {
    mixnet: client::Behaviour,
    ping: ping::Behaviour,
}

struct Identity {
    keypair: Keypair,
    client: client::ClientKey,
    noise: StaticKey,
}

impl Identity {
    fn new() -> Self {
        Identity {
            keypair: Keypair::generate_ed25519(),
            client: client::ClientKey::generate(),
            noise: StaticKey::generate().unwrap(),
        }
    }
}

fn dapp(net: &Net, who: &Identity, gateway: usize) -> Swarm<DApp> {
    let authorities = Authorities::load(&net.authorities_file()).unwrap();
    let noise = StaticKey::from_secret(who.noise.secret()[..].try_into().unwrap()).unwrap();
    let address: Multiaddr = net.listen_addr(gateway).parse().unwrap();
    let config = Config {
        gateway: net.peer(gateway),
        gateway_addresses: vec![address],
        authorities,
        client: ClientConfig::default(),
        store: None,
    };
    build_swarm(who.keypair.clone(), |key| DApp {
        mixnet: client::Behaviour::new(
            key.public().to_peer_id(),
            client::ClientIdentity::Key(who.client.clone()),
            noise,
            config,
        )
        .unwrap(),
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(1))),
    })
    .unwrap()
}

/// Polls `swarms` until `done` returns a value (or panics after [`STEP`]); every behaviour
/// event goes to `on_event` with the index of its swarm.
async fn run_until<T>(
    swarms: &mut [&mut Swarm<DApp>],
    what: &str,
    on_event: impl FnMut(usize, &mut Swarm<DApp>, DAppEvent) -> Option<T>,
) -> T {
    match try_run_until(swarms, on_event).await {
        Some(v) => v,
        None => panic!("timed out waiting for {what}"),
    }
}

/// [`run_until`], `None` after [`STEP`].
async fn try_run_until<T>(
    swarms: &mut [&mut Swarm<DApp>],
    mut on_event: impl FnMut(usize, &mut Swarm<DApp>, DAppEvent) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + STEP;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        let next = futures::future::select_all(
            swarms
                .iter_mut()
                .enumerate()
                .map(|(i, s)| Box::pin(async move { (i, s.select_next_some().await) })),
        );
        let Ok(((i, event), ..)) = tokio::time::timeout(remaining, next).await else {
            return None;
        };
        if let SwarmEvent::Behaviour(e) = event
            && let Some(v) = on_event(i, swarms[i], e)
        {
            return Some(v);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_dapp_sends_to_another_and_gets_the_answer_through_a_surb() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::start_with("surb", "health_probes_per_node = 0\n");
    let _ = net.consensus(1);
    let (alice_id, bob_id) = (Identity::new(), Identity::new());
    runtime().block_on(async {
        let mut alice = dapp(&net, &alice_id, 0);
        let mut bob = dapp(&net, &bob_id, 1);
        let bob_address: Address = bob.behaviour().mixnet.address();
        // Both fetch and verify a consensus themselves before anything can be sent.
        let mut ready = [false, false];
        let mut pinged = false;
        run_until(
            &mut [&mut alice, &mut bob],
            "both consensus documents",
            |i, _, e| {
                match e {
                    DAppEvent::Mixnet(Event::Consensus { .. }) => ready[i] = true,
                    DAppEvent::Ping(ping::Event { result: Ok(_), .. }) => pinged = true,
                    _ => {}
                }
                (ready == [true, true]).then_some(())
            },
        )
        .await;

        let question = alice
            .behaviour_mut()
            .mixnet
            .send_with_replies(&bob_address, b"ping through the mixnet", 1)
            .unwrap();
        let mut answered = false;
        let mut acknowledged = false;
        run_until(
            &mut [&mut alice, &mut bob],
            "the answer and the acknowledgement",
            |i, swarm, e| {
                match (i, e) {
                    (
                        1,
                        DAppEvent::Mixnet(Event::Received(ReceivedMessage {
                            id,
                            bytes,
                            from,
                            reply,
                            ..
                        })),
                    ) => {
                        assert_eq!(id, question);
                        assert_eq!(bytes, b"ping through the mixnet");
                        assert_eq!(from, None, "an anonymous sender stays anonymous");
                        let handle = reply.expect("the message carried a SURB");
                        swarm
                            .behaviour_mut()
                            .mixnet
                            .reply(handle, b"pong, without knowing who asked")
                            .unwrap();
                    }
                    (
                        0,
                        DAppEvent::Mixnet(Event::Received(ReceivedMessage {
                            bytes,
                            in_reply_to,
                            ..
                        })),
                    ) => {
                        assert_eq!(in_reply_to, Some(question));
                        assert_eq!(bytes, b"pong, without knowing who asked");
                        answered = true;
                    }
                    (0, DAppEvent::Mixnet(Event::Delivered(id))) => {
                        assert_eq!(id, question);
                        acknowledged = true;
                    }
                    (_, DAppEvent::Mixnet(Event::Failed(id, reason))) => {
                        panic!("{id} failed: {reason}")
                    }
                    (_, DAppEvent::Ping(ping::Event { result: Ok(_), .. })) => pinged = true,
                    _ => {}
                }
                (answered && acknowledged).then_some(())
            },
        )
        .await;
        assert!(pinged, "the dApp's other behaviour works on the same swarm");
    });
}

#[test]
fn a_gateway_keeps_messages_for_an_absent_client_across_its_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut net = Net::start_with("mailbox", "health_probes_per_node = 0\n");
    let _ = net.consensus(1);
    let (alice_id, bob_id) = (Identity::new(), Identity::new());
    let rt = runtime();
    // Bob registers with gateway 1 (his first fetch), then goes away.
    let bob_address = rt.block_on(async {
        let mut bob = dapp(&net, &bob_id, 1);
        let address = bob.behaviour().mixnet.address();
        run_until(&mut [&mut bob], "bob's consensus", |_, _, e| {
            matches!(e, DAppEvent::Mixnet(Event::Consensus { .. })).then_some(())
        })
        .await;
        wait_for("bob's registration", Duration::from_secs(30), || {
            net.log(1).contains("client registered").then_some(())
        });
        address
    });

    // Alice writes while Bob is away; the gateway stores the packet.
    let stored_before = net.metrics(1).get("p2pmix_mailbox_stored_total");
    let mut alice = dapp(&net, &alice_id, 0);
    let sent = rt.block_on(async {
        run_until(&mut [&mut alice], "alice's consensus", |_, _, e| {
            matches!(e, DAppEvent::Mixnet(Event::Consensus { .. })).then_some(())
        })
        .await;
        let id = alice
            .behaviour_mut()
            .mixnet
            .send(&bob_address, b"kept for you")
            .unwrap();
        // Keep Alice's swarm running until the gateway holds the packet.
        let deadline = Instant::now() + STEP;
        while net.metrics(1).get("p2pmix_mailbox_stored_total") <= stored_before {
            assert!(
                Instant::now() < deadline,
                "the gateway never stored the packet"
            );
            let _ =
                tokio::time::timeout(Duration::from_millis(200), alice.select_next_some()).await;
        }
        id
    });

    // The gateway restarts (same identity and address, as a production gateway keeps its
    // configured port) and still holds it.
    let gateway: PeerId = net.peer(1);
    let address = net.listen_addr(1);
    assert!(address.ends_with(&gateway.to_string()));
    let listen = address.split("/p2p/").next().unwrap().to_string();
    net.kill(1);
    net.start_node_listening(1, Some(&listen));
    assert_eq!(net.listen_addr(1), address);
    assert!(
        net.log(1).contains("mailboxes opened clients=1 held=1"),
        "{}",
        net.log(1)
    );

    // Bob comes back with the same keys: the message is handed over, exactly once, and Alice
    // gets the acknowledgement (its packets cross the restarted gateway, which relays again
    // from the next epoch: retransmissions cover the gap).
    rt.block_on(async {
        let mut bob = dapp(&net, &bob_id, 1);
        assert_eq!(bob.behaviour().mixnet.address(), bob_address);
        let mut received = 0;
        let mut acknowledged = false;
        let phase = Instant::now();
        let done = try_run_until(&mut [&mut alice, &mut bob], |i, _, e| {
            match (i, e) {
                (1, DAppEvent::Mixnet(Event::Received(ReceivedMessage { id, bytes, .. }))) => {
                    assert_eq!((id, &bytes[..]), (sent, &b"kept for you"[..]));
                    eprintln!("{:?} bob received the stored message", phase.elapsed());
                    received += 1;
                }
                (0, DAppEvent::Mixnet(Event::Delivered(id))) => {
                    assert_eq!(id, sent);
                    eprintln!("{:?} alice got the acknowledgement", phase.elapsed());
                    acknowledged = true;
                }
                (i, DAppEvent::Mixnet(Event::Consensus { epoch })) => {
                    eprintln!("dApp {i}: consensus of epoch {epoch}");
                }
                (_, DAppEvent::Mixnet(Event::Failed(id, reason))) => {
                    panic!("{id} failed: {reason}")
                }
                _ => {}
            }
            (received > 0 && acknowledged).then_some(())
        })
        .await;
        if done.is_none() || std::env::var_os("P2PMIX_TEST_VERBOSE").is_some() {
            for i in 0..net.nodes.len() {
                let m = net.metrics(i);
                let mut series: Vec<_> = m
                    .0
                    .iter()
                    .filter(|(k, v)| **v > 0.0 && (k.contains("total") && !k.contains("bucket")))
                    .collect();
                series.sort_by(|a, b| a.0.cmp(b.0));
                eprintln!("node {i}: {series:?}");
            }
            eprintln!("alice: {:?}", alice.behaviour().mixnet.stats());
            eprintln!("bob: {:?}", bob.behaviour().mixnet.stats());
        }
        assert!(
            done.is_some(),
            "timed out: received {received}, acknowledged {acknowledged}"
        );
        assert_eq!(received, 1);
    });
}

#[test]
fn a_mistyped_address_is_refused_before_anything_is_sent() {
    let scratch = common::Scratch::new("typo");
    let to = Address {
        gateway: PeerId::random(),
        client: client::client_id(&PeerId::random()),
        noise_key: [7; 32],
        recipient_key: StaticKey::generate()
            .unwrap()
            .recipient_key()
            .public_key()
            .to_bytes(),
    }
    .to_string();
    // One character changed in the middle (to another of the alphabet).
    let mut typo = to.into_bytes();
    let i = typo.len() / 2;
    typo[i] = if typo[i] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let data_dir = scratch.0.join("sender");
    let out = std::process::Command::new(common::BIN)
        .args(["client", "send", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--gateway",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE",
        ])
        .args(["--to", &typo, "--message", "hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("check character {}", i + 1)),
        "the error names the character: {stderr}"
    );
    assert!(
        !data_dir.exists(),
        "nothing was done: no data directory, no key, no dial"
    );
}
