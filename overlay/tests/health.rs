//! The network measuring itself, as real processes on 127.0.0.1 (port 0 everywhere): 3
//! authorities whose measurers send probes through the real mix path (gateway, three mixes,
//! back to the gateway's mailbox), 2 gateways and 6 mixes. Every node ends up measured by every
//! authority, with the scores in the consensus; with the `chaos` feature one mix turns into a
//! black hole at the start of epoch 3 and must be out of the consensus within two epochs, while
//! every honest node stays in.
//!
//! Run with the black hole: `cargo test -p p2pmix --features chaos --test health`.
#![allow(missing_docs, unreachable_pub)]

#[cfg(feature = "chaos")]
use common::net::EPOCH_MS;
use common::{net::Net, sleep_until};
#[cfg(feature = "chaos")]
use p2pmix::proto::v1::ExclusionReason;
use p2pmix::{directory::VerifiedConsensus, proto::v1::HealthStatus};

mod common;

/// The mix that turns into a black hole (feature `chaos`).
#[cfg(feature = "chaos")]
const BLACK_HOLE: usize = 4;
/// The epoch at whose start it does.
const TURNS_AT_EPOCH: u64 = 3;

/// Probes enough for the 8 s epochs of the test network: 200 per node and epoch from each
/// authority (25 per second each: two mixes per layer), 40 needed for a score.
const PARAMETERS: &str =
    "mix_loop_interval_us = 0\nhealth_probes_per_node = 200\nhealth_min_probes = 40\n";

fn consensus_by(net: &Net, epoch: u64) -> VerifiedConsensus {
    // Published in the epoch before; a generous bound for a loaded machine.
    sleep_until(net.epoch_start(epoch));
    net.consensus(epoch)
}

fn dump(net: &Net) {
    net.dump_logs();
    for i in 0..3 {
        let log = net.authority_log(i);
        eprintln!("--- authority {i} ---");
        for line in log.lines().filter(|l| l.contains("measure")).rev().take(20) {
            eprintln!("{line}");
        }
    }
}

#[test]
fn authorities_measure_every_node_through_the_mix_path_and_leave_a_black_hole_out() {
    let net = Net::start_with_env("health", PARAMETERS, |i, genesis| {
        #[cfg(feature = "chaos")]
        if i == BLACK_HOLE {
            let from = genesis + TURNS_AT_EPOCH * EPOCH_MS;
            return vec![(
                "P2PMIX_CHAOS".to_string(),
                format!("drop=1,from_unix_ms={from}"),
            )];
        }
        let _ = (i, genesis);
        Vec::new()
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&net)));
    if result.is_err() {
        dump(&net);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn check(net: &Net) {
    // Everyone admitted before anything misbehaves.
    let first = consensus_by(net, 2);
    assert_eq!(
        first.nodes().len(),
        net.nodes.len(),
        "all nodes admitted in epoch 2"
    );
    let identities: Vec<Vec<u8>> = (0..net.nodes.len())
        .map(|i| {
            let peer = net.peer(i);
            first
                .nodes()
                .iter()
                .find(|n| p2pmix::directory::peer_id(n) == Some(peer))
                .map(|n| n.identity.clone())
                .expect("in the consensus")
        })
        .collect();

    // Each consensus is taken as it comes into force (a consensus expires a little later).
    let last = TURNS_AT_EPOCH + 2;
    let mut consensuses = vec![(2, first)];
    for epoch in 3..=last {
        consensuses.push((epoch, consensus_by(net, epoch)));
    }

    // The consensus of epoch 4 is voted in epoch 3: every node was probed through epoch 2 by
    // every authority and has its scores recorded, three reports each.
    let measured = &consensuses
        .iter()
        .find(|(e, _)| *e == 4)
        .expect("epoch 4")
        .1;
    let mut scored = 0;
    for n in measured.nodes() {
        if let Some(h) = n.health {
            assert_eq!(h.reports, 3, "{h:?}");
            scored += 1;
            let i = identities
                .iter()
                .position(|id| *id == n.identity)
                .expect("a test node");
            #[cfg(feature = "chaos")]
            if i == BLACK_HOLE {
                continue;
            }
            assert!(h.delivery_permille >= 900, "node {i}: {h:?}");
            assert_eq!(h.status(), HealthStatus::Measured, "node {i}: {h:?}");
        }
    }
    assert!(
        scored >= net.nodes.len() - 1,
        "{scored} of {} nodes scored",
        net.nodes.len()
    );

    // Two epochs after the black hole opened (the votes of epoch 4 saw a window of bad
    // epochs), it is out, for low delivery; every honest node is in every consensus.
    for (epoch, c) in &consensuses {
        let epoch = *epoch;
        for (i, id) in identities.iter().enumerate() {
            let inside = c.nodes().iter().any(|n| n.identity == *id);
            #[cfg(feature = "chaos")]
            if i == BLACK_HOLE {
                if epoch <= TURNS_AT_EPOCH {
                    assert!(
                        inside,
                        "the black hole out of epoch {epoch}, before it opened"
                    );
                }
                if epoch == last {
                    assert!(!inside, "the black hole still in epoch {epoch}");
                    let e = c
                        .consensus()
                        .excluded
                        .iter()
                        .find(|e| e.identity == *id)
                        .expect("recorded as excluded");
                    assert_eq!(e.reason(), ExclusionReason::LowDelivery, "{e:?}");
                }
                continue;
            }
            assert!(
                inside,
                "honest node {i} out of epoch {epoch}: {:?}",
                c.consensus().excluded
            );
        }
    }
}
