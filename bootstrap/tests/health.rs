//! Health in the consensus, with authorities on the shared simulator: the median over the
//! authorities decides, so one authority alone can neither exclude a node nor keep one in;
//! unmeasured nodes are on probation; a node left out is held out, with strikes, and comes back
//! on probation.
#![allow(missing_docs, unreachable_pub)]

mod common;

use common::{Node, Sim, nodes, schedule};
use p2pmix_bootstrap::{
    MAX_MEASUREMENT_BYTES, default_parameters, test_network_parameters, vote_measurement_bytes,
};
use p2pmix_proto::v1::{
    Consensus, ExclusionReason, HealthStatus, NetworkParameters, NodeMeasurement,
};
use prost::Message;

fn identity(node: &Node) -> Vec<u8> {
    node.keypair.public().encode_protobuf()
}

fn measurement(node: &Node, delivery_permille: u32, delay_p90_ms: u32) -> NodeMeasurement {
    NodeMeasurement {
        identity: identity(node),
        probes: 500,
        delivery_permille,
        delay_p90_ms,
    }
}

/// Hands each authority its measurements for the vote of the round under way.
fn measure(sim: &mut Sim, per_authority: Vec<Vec<NodeMeasurement>>) {
    for (i, m) in per_authority.into_iter().enumerate() {
        let id = sim.ids[i];
        sim.net
            .actor_mut::<p2pmix_sim::authority::AuthorityActor>(id)
            .authority_mut()
            .expect("running")
            .set_measurements(m);
    }
}

/// Uploads for `epoch`, runs to its start and returns the document all agree on.
fn round(
    sim: &mut Sim,
    ns: &[Node],
    epoch: u64,
    per_authority: Vec<Vec<NodeMeasurement>>,
) -> Consensus {
    sim.upload(ns, epoch);
    measure(sim, per_authority);
    sim.run_until(schedule().start_of(epoch));
    let docs = sim.documents(epoch);
    let first = docs[0].clone().expect("published");
    assert!(
        docs.iter().all(|d| d.as_ref() == Some(&first)),
        "authorities disagree"
    );
    Consensus::decode(&first[..]).unwrap()
}

fn is_in(c: &Consensus, node: &Node) -> bool {
    c.nodes.iter().any(|n| n.identity == identity(node))
}

#[test]
fn one_authority_alone_can_neither_exclude_an_honest_node_nor_keep_a_dead_one() {
    let ns = nodes(2, 9);
    let (honest, dead) = (&ns[2], &ns[3]);
    let mut sim = Sim::default(3, schedule().start_of(1));
    // Authority 0 lies about both; 1 and 2 measured the truth.
    let liar = vec![measurement(honest, 0, 0), measurement(dead, 1000, 0)];
    let truth = vec![measurement(honest, 990, 20), measurement(dead, 0, 0)];
    let c = round(
        &mut sim,
        &ns,
        2,
        vec![liar.clone(), truth.clone(), truth.clone()],
    );
    assert!(is_in(&c, honest), "the liar excluded an honest node");
    assert!(!is_in(&c, dead), "the liar kept a dead node in");
    let h = c
        .nodes
        .iter()
        .find(|n| n.identity == identity(honest))
        .unwrap()
        .health
        .unwrap();
    assert_eq!(h.status(), HealthStatus::Measured);
    assert_eq!(
        (h.delivery_permille, h.reports),
        (990, 3),
        "the median of 0, 990, 990"
    );
    let out = c
        .excluded
        .iter()
        .find(|e| e.identity == identity(dead))
        .expect("recorded");
    assert_eq!(out.reason(), ExclusionReason::LowDelivery);
    assert_eq!(
        (
            out.delivery_permille,
            out.strikes,
            out.since_epoch,
            out.until_epoch
        ),
        (0, 1, 2, 3)
    );
    // Everyone else was measured by nobody: on probation, in.
    for n in &ns[4..] {
        let h = c
            .nodes
            .iter()
            .find(|x| x.identity == identity(n))
            .unwrap()
            .health
            .unwrap();
        assert_eq!((h.status(), h.reports), (HealthStatus::Probation, 0));
    }

    // The same with a second liar: now a threshold (2 of 3) says so, and it decides.
    let mut sim = Sim::default(3, schedule().start_of(1));
    let c = round(&mut sim, &ns, 2, vec![liar.clone(), liar, truth]);
    assert!(!is_in(&c, honest));
    assert!(is_in(&c, dead));
}

#[test]
fn one_authority_alone_cannot_exclude_when_the_others_did_not_measure() {
    // Only the liar reports: fewer than a threshold, so the node is on probation, in.
    let ns = nodes(2, 6);
    let mut sim = Sim::default(3, schedule().start_of(1));
    let c = round(
        &mut sim,
        &ns,
        2,
        vec![vec![measurement(&ns[2], 0, 0)], vec![], vec![]],
    );
    let h = c
        .nodes
        .iter()
        .find(|n| n.identity == identity(&ns[2]))
        .unwrap()
        .health
        .unwrap();
    assert_eq!((h.status(), h.reports), (HealthStatus::Probation, 1));
    // Too few probes do not count as a report either.
    let mut sim = Sim::default(3, schedule().start_of(1));
    let few = |d| NodeMeasurement {
        probes: 99,
        ..measurement(&ns[2], d, 0)
    };
    let c = round(
        &mut sim,
        &ns,
        2,
        vec![vec![few(0)], vec![few(0)], vec![few(0)]],
    );
    assert!(is_in(&c, &ns[2]));
}

#[test]
fn a_slow_node_is_left_out_held_out_with_strikes_and_comes_back_on_probation() {
    let ns = nodes(2, 9);
    let slow = &ns[5];
    let mut sim = Sim::default(3, schedule().start_of(1));
    let report = || vec![measurement(slow, 1000, 2_000)];
    let c = round(&mut sim, &ns, 2, vec![report(), report(), report()]);
    let out = c
        .excluded
        .iter()
        .find(|e| e.identity == identity(slow))
        .expect("left out");
    assert_eq!(out.reason(), ExclusionReason::Slow);
    assert_eq!((out.strikes, out.until_epoch), (1, 3));
    // Epoch 3: back on probation (nobody has measured it since), its strike remembered.
    let c = round(&mut sim, &ns, 3, vec![vec![], vec![], vec![]]);
    let h = c
        .nodes
        .iter()
        .find(|n| n.identity == identity(slow))
        .unwrap()
        .health
        .unwrap();
    assert_eq!((h.status(), h.strikes), (HealthStatus::Probation, 1));
    // Slow again: a second strike holds it out for two epochs, even without a descriptor.
    let c = round(&mut sim, &ns, 4, vec![report(), report(), report()]);
    let out = c
        .excluded
        .iter()
        .find(|e| e.identity == identity(slow))
        .unwrap();
    assert_eq!((out.strikes, out.since_epoch, out.until_epoch), (2, 4, 6));
    let c = round(&mut sim, &ns[..5], 5, vec![vec![], vec![], vec![]]);
    assert!(
        c.excluded.iter().any(|e| e.identity == identity(slow)),
        "still held"
    );
    let c = round(&mut sim, &ns, 6, vec![vec![], vec![], vec![]]);
    assert!(is_in(&c, slow), "back after its hold");
    // Measured good: it earns a strike back.
    let good = || vec![measurement(slow, 1000, 10)];
    let c = round(&mut sim, &ns, 7, vec![good(), good(), good()]);
    let h = c
        .nodes
        .iter()
        .find(|n| n.identity == identity(slow))
        .unwrap()
        .health
        .unwrap();
    assert_eq!((h.status(), h.strikes), (HealthStatus::Measured, 1));
}

#[test]
fn at_most_a_third_of_the_mixes_are_left_out_and_every_layer_keeps_one() {
    let ns = nodes(2, 9);
    let mut sim = Sim::default(3, schedule().start_of(1));
    // Five mixes measured dead, worst first: only three (9 / 3) go.
    let dead: Vec<NodeMeasurement> = (2..7)
        .map(|i| measurement(&ns[i], (i as u32 - 2) * 100, 0))
        .collect();
    let c = round(&mut sim, &ns, 2, vec![dead.clone(), dead.clone(), dead]);
    let out: Vec<&[u8]> = c.excluded.iter().map(|e| e.identity.as_slice()).collect();
    assert_eq!(out.len(), 3);
    for n in &ns[2..5] {
        assert!(out.contains(&identity(n).as_slice()), "the worst go first");
    }
    let mut per_layer = [0; 4];
    for n in &c.nodes {
        per_layer[n.layer as usize] += 1;
    }
    assert_eq!(per_layer, [2, 2, 2, 2]);
    // Gateways: one of two is never left out (a third of two is none).
    let mut sim = Sim::default(3, schedule().start_of(1));
    let gw = || vec![measurement(&ns[0], 0, 0)];
    let c = round(&mut sim, &ns, 2, vec![gw(), gw(), gw()]);
    assert!(is_in(&c, &ns[0]));
}

#[test]
fn without_measurement_nobody_is_left_out_and_no_health_is_recorded() {
    let parameters = NetworkParameters {
        health_probes_per_node: 0,
        ..test_network_parameters()
    };
    let ns = nodes(2, 6);
    let mut sim = Sim::new(3, parameters, schedule().start_of(1));
    let dead = || vec![measurement(&ns[2], 0, 0)];
    let c = round(&mut sim, &ns, 2, vec![dead(), dead(), dead()]);
    assert!(is_in(&c, &ns[2]));
    assert!(c.nodes.iter().all(|n| n.health.is_none()));
    assert!(c.excluded.is_empty());
}

#[test]
fn a_vote_with_unsorted_or_out_of_range_measurements_is_refused() {
    use p2pmix_bootstrap::{Context, PinnedAuthorities, VoteError, encode_and_sign, verify_vote};
    use p2pmix_proto::v1::{SignedVote, Vote};

    let key = common::keypair(0);
    let pinned = PinnedAuthorities::new([key.public()]);
    let ns = nodes(0, 2);
    let mut a = measurement(&ns[0], 1000, 0);
    let mut b = measurement(&ns[1], 1000, 0);
    if a.identity > b.identity {
        std::mem::swap(&mut a, &mut b);
    }
    let signed = |measurements: Vec<NodeMeasurement>| {
        let vote = Vote {
            epoch: 2,
            authority: key.public().encode_protobuf(),
            commit: vec![0; 32],
            measurements,
            ..Vote::default()
        };
        let (vote, signature) = encode_and_sign(&key, Context::Vote, &vote).unwrap();
        SignedVote { vote, signature }
    };
    let parameters = default_parameters();
    let check = |m| verify_vote(&signed(m), &pinned, 2, &parameters).map(|v| v.measurements.len());
    assert_eq!(check(vec![a.clone(), b.clone()]), Ok(2));
    assert_eq!(
        check(vec![b.clone(), a.clone()]),
        Err(VoteError::BadMeasurements)
    );
    assert_eq!(
        check(vec![a.clone(), a.clone()]),
        Err(VoteError::BadMeasurements)
    );
    let over = NodeMeasurement {
        delivery_permille: 1001,
        ..a.clone()
    };
    assert_eq!(check(vec![over]), Err(VoteError::BadMeasurements));
    let nameless = NodeMeasurement {
        identity: Vec::new(),
        ..a
    };
    assert_eq!(check(vec![nameless]), Err(VoteError::BadMeasurements));
    // Sorted, unique and in range, but more bytes than a vote may carry.
    let many = fillers(25_000);
    let bytes: usize = many.iter().map(vote_measurement_bytes).sum();
    assert!(bytes > MAX_MEASUREMENT_BYTES, "{bytes}");
    assert_eq!(check(many), Err(VoteError::BadMeasurements));
}

/// `n` healthy measurements of nodes that do not exist, under identities that sort before every
/// real one, sorted.
fn fillers(n: u32) -> Vec<NodeMeasurement> {
    (0..n)
        .map(|i| {
            let mut identity = vec![0u8; 36];
            identity[..4].copy_from_slice(&i.to_be_bytes());
            NodeMeasurement {
                identity,
                probes: 500,
                delivery_permille: 1000,
                delay_p90_ms: 0,
            }
        })
        .collect()
}

#[test]
fn an_authority_handed_more_measurements_than_a_vote_carries_keeps_the_least_healthy() {
    let ns = nodes(2, 9);
    let dead = &ns[3];
    let mut sim = Sim::default(3, schedule().start_of(1));
    // Authority 0 measured far more nodes than fit (healthy ones, sorting first) and the dead
    // one; authority 1 the dead one; authority 2 nothing. The dead node is out only if the
    // reports of both 0 and 1 count: 0's vote must stay valid and keep the dead node's report.
    let mut flood = fillers(25_000);
    flood.push(measurement(dead, 0, 0));
    let c = round(
        &mut sim,
        &ns,
        2,
        vec![flood, vec![measurement(dead, 0, 0)], Vec::new()],
    );
    assert_eq!(c.voters.len(), 3, "every vote counted");
    assert!(!is_in(&c, dead), "the dead node's report was dropped");
    let e = c
        .excluded
        .iter()
        .find(|e| e.identity == identity(dead))
        .expect("recorded");
    assert_eq!(e.reason(), ExclusionReason::LowDelivery);
    for n in ns.iter().filter(|n| n.index != dead.index) {
        assert!(is_in(&c, n), "node {} out", n.index);
    }
}
