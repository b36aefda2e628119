//! A client in the test's own process that hands hand-built Sphinx packets to a gateway, and
//! the packets it sends: routes through the test network's consensus with chosen delays.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId, identity::Keypair, swarm::SwarmEvent};
use p2pmix::{
    build_swarm,
    directory::sphinx_key,
    proto::v1::ConsensusNode,
    sphinx::{
        ClientId, Delay, Destination, Geometry, Hop, KeyRing, Label, NodeId, Relay, RelayConfig,
        ReplayConfig,
        behaviour::{Behaviour, Config},
        build_packet,
    },
};
use tokio::sync::mpsc;

/// A swarm in the test process with the mix behaviour and no keys: a client that hands packets
/// to a gateway. Events it reports: connections closed by the other side.
pub struct TestClient {
    pub runtime: tokio::runtime::Runtime,
    commands: mpsc::Sender<(Multiaddr, PeerId, Vec<u8>)>,
    pub closed: mpsc::Receiver<PeerId>,
}

impl TestClient {
    pub fn new() -> TestClient {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (commands, mut command_rx) = mpsc::channel::<(Multiaddr, PeerId, Vec<u8>)>(4096);
        let (closed_tx, closed) = mpsc::channel(64);
        runtime.spawn(async move {
            let relay = Arc::new(Relay::new(
                Geometry::DEFAULT,
                RelayConfig {
                    max_delay: Duration::from_secs(1),
                },
                KeyRing::new(0, Duration::from_secs(1), ReplayConfig::default()),
            ));
            let mut swarm = build_swarm(Keypair::generate_ed25519(), |_| {
                Behaviour::new(
                    relay,
                    Config {
                        workers: 1,
                        ..Config::default()
                    },
                )
            })
            .unwrap();
            loop {
                tokio::select! {
                    command = command_rx.recv() => {
                        let Some((addr, peer, packet)) = command else { return };
                        swarm.behaviour_mut().add_address(peer, addr);
                        swarm.behaviour_mut().send(peer, packet);
                    }
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = event {
                            let _ = closed_tx.try_send(peer_id);
                        }
                    }
                }
            }
        });
        TestClient {
            runtime,
            commands,
            closed,
        }
    }

    pub fn send(&self, addr: &str, peer: PeerId, packet: Vec<u8>) {
        let addr: Multiaddr = addr.parse().unwrap();
        self.commands.blocking_send((addr, peer, packet)).unwrap();
    }
}

/// A packet from gateway `entry` through one mix per layer to gateway `exit` (which delivers it
/// to a client's mailbox, label `label`), mix hop `i` holding it for `delays[i]`.
pub fn packet_with_delays(
    entry: &ConsensusNode,
    mixes: [&ConsensusNode; 3],
    exit: &ConsensusNode,
    label: u16,
    delays: [Duration; 3],
) -> Vec<u8> {
    let hop = |n: &ConsensusNode, delay: Duration| Hop {
        node: NodeId(n.node_id as u16),
        key: sphinx_key(n).expect("a valid key"),
        delay: Delay::from_micros(delay.as_micros() as u32),
    };
    let route = [
        hop(entry, Duration::ZERO),
        hop(mixes[0], delays[0]),
        hop(mixes[1], delays[1]),
        hop(mixes[2], delays[2]),
        hop(exit, Duration::ZERO),
    ];
    let mut l = [0u8; 16];
    l[..2].copy_from_slice(&label.to_be_bytes());
    build_packet(
        &Geometry::DEFAULT,
        &route,
        &Destination::Deliver {
            client: ClientId([7; 32]),
            label: Label(l),
        },
        b"through the mixnet",
        &mut rand::rng(),
    )
    .unwrap()
}
