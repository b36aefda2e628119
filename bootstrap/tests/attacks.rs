//! The attacks on the root of trust, each tried against authorities on the shared simulator:
//! replayed signatures, a double-signing authority, an equivocating voter, a flood of fresh
//! identities, many nodes in one /24, unreachable nodes, loopback addresses on a production
//! network (docs/consensus.md, "Threat model").
#![allow(missing_docs, unreachable_pub)]

mod common;

use std::collections::BTreeSet;

use common::{Node, Sim, keypair, nodes, schedule};
use p2pmix_bootstrap::{
    AuthorityLimits, DescriptorError, EquivocationKind, Event, MEMORY_BUDGET_BYTES, Origin, Phase,
    ReachLimits, Rejection, VoteError, build_vote, commitment, default_parameters, sign_consensus,
    sign_descriptor, test_network_parameters, verify_consensus, verify_equivocation, verify_vote,
};
use p2pmix_mix::NodeSecretKey;
use p2pmix_proto::v1::{
    Consensus, ConsensusSignature, EpochKey, NodeDescriptor, Role, directory_request::Request,
};
use p2pmix_sim::authority::Reachability;
use prost::Message;
use rand::Rng;

fn agreed(sim: &Sim, epoch: u64) -> Consensus {
    let docs = sim.documents(epoch);
    let first = docs[0]
        .clone()
        .unwrap_or_else(|| panic!("no consensus for epoch {epoch}: {:?}", sim.events()));
    for d in &docs {
        assert_eq!(
            d.as_ref(),
            Some(&first),
            "authorities disagree on epoch {epoch}"
        );
    }
    Consensus::decode(&first[..]).unwrap()
}

/// A round for `epoch` with `ns` uploaded at its start: runs from now to the start of `epoch`.
fn round(sim: &mut Sim, ns: &[Node], epoch: u64) {
    sim.upload(ns, epoch);
    sim.run_until(schedule().start_of(epoch));
}

#[test]
fn replaying_the_signatures_of_earlier_documents_blocks_no_round() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let ns = nodes(1, 3);
    // Four documents first, so that there are four earlier ones to replay.
    for epoch in 2..=5 {
        round(&mut sim, &ns, epoch);
        agreed(&sim, epoch);
    }
    for epoch in 6..=10 {
        // Early in the round, anyone replays at every authority every signature of the
        // documents the authorities serve (the last four).
        let served: Vec<ConsensusSignature> = (epoch - 4..epoch)
            .flat_map(|e| {
                sim.authority(0)
                    .consensus(Some(e))
                    .unwrap()
                    .signatures
                    .clone()
            })
            .collect();
        assert_eq!(served.len(), 4 * 3, "four documents of three signatures");
        for i in 0..3 {
            for s in &served {
                assert!(sim.request(i, Request::Signature(s.clone())).is_err());
            }
        }
        round(&mut sim, &ns, epoch);
        let c = agreed(&sim, epoch);
        assert_eq!(c.epoch, epoch);
        let signed = sim.authority(1).consensus(Some(epoch)).unwrap();
        assert_eq!(
            signed.signatures.len(),
            3,
            "every authority signed epoch {epoch}"
        );
        verify_consensus(
            &signed.encode_to_vec(),
            &sim.pinned,
            schedule().start_of(epoch),
            Some(epoch),
        )
        .unwrap();
    }
    for i in 0..3 {
        let refused = sim.authority(i).rejections()["signature_wrong_epoch"];
        assert_eq!(refused, 5 * 12, "authority {i}");
        assert_eq!(
            sim.authority(i).stats().equivocations,
            0,
            "replays are not equivocation"
        );
    }
}

#[test]
fn a_double_signer_is_caught_its_signatures_do_not_count_and_the_proof_is_served() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let ns = nodes(1, 3);
    sim.upload(&ns, 2);
    // Authority 2 runs and signs the digest everyone computes, and also signs another digest
    // for the same epoch, which it sends to authority 0 only, before the publish deadline.
    sim.run_until(schedule().phase_start(1, Phase::Sign) + 10);
    let other = sign_consensus(&sim.keys[2], 2, &[0xab; 32]).unwrap();
    assert_eq!(
        sim.request(0, Request::Signature(other.clone())),
        Err(Rejection::Signature(
            p2pmix_bootstrap::SignatureError::Equivocation
        ))
    );
    sim.deliver();
    // Everyone learnt it through the relay; the same proof again is not relayed again, and a
    // third digest is refused without being kept.
    assert_eq!(sim.net.in_flight(), 0);
    for i in 0..3 {
        let _ = sim.request(i, Request::Signature(other.clone()));
        let third = sign_consensus(&sim.keys[2], 2, &[0xcd; 32]).unwrap();
        assert!(sim.request(i, Request::Signature(third)).is_err());
        assert_eq!(sim.net.in_flight(), 0, "nothing relayed by authority {i}");
    }
    sim.run_until(schedule().start_of(2));
    let c = agreed(&sim, 2);
    let liar = sim.keys[2].public().encode_protobuf();
    for i in 0..3 {
        let a = sim.authority(i);
        let signed = a.consensus(Some(2)).unwrap();
        assert_eq!(
            signed
                .signatures
                .iter()
                .map(|s| s.authority.clone())
                .collect::<BTreeSet<_>>(),
            sim.keys[..2]
                .iter()
                .map(|k| k.public().encode_protobuf())
                .collect(),
            "the double signer's signature does not count at authority {i}"
        );
        let evidence = a.evidence(Some(2));
        assert_eq!(evidence.equivocations.len(), 1);
        assert!(verify_equivocation(&evidence.equivocations[0], &sim.pinned));
        assert_eq!(a.stats().equivocations, 1);
    }
    assert_eq!(c.voters.len(), 3, "its vote was fine");
    let caught: Vec<usize> = sim
        .events()
        .iter()
        .filter(|(_, e)| {
            matches!(e, Event::Equivocation { epoch: 2, authority, kind: EquivocationKind::Signature } if *authority == liar)
        })
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        caught.len(),
        3,
        "reported once by each authority: {caught:?}"
    );
}

#[test]
fn an_equivocating_voter_gets_nothing_more_checked_kept_or_relayed() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    sim.upload(&nodes(1, 3), 2);
    sim.stop(2);
    let key = sim.keys[2].clone();
    let me = key.public().encode_protobuf();
    sim.run_until(schedule().phase_start(1, Phase::Vote) + 1);
    let vote = |v: u8| build_vote(&key, 2, [], commitment(2, &me, &[v; 32]), None).unwrap();
    sim.request(0, Request::Vote(vote(1))).unwrap();
    assert_eq!(
        sim.request(0, Request::Vote(vote(2))),
        Err(Rejection::Vote(VoteError::Duplicate)),
        "the second is the proof"
    );
    sim.deliver();
    // Any number of further votes: refused unchecked, nothing stored, nothing relayed.
    let before = sim.authority(0).memory_bytes();
    for v in 3..50 {
        assert_eq!(
            sim.request(0, Request::Vote(vote(v))),
            Err(Rejection::Vote(VoteError::Equivocator))
        );
        assert_eq!(sim.net.in_flight(), 0);
    }
    assert_eq!(sim.authority(0).memory_bytes(), before);
    assert_eq!(sim.authority(0).rejections()["vote_from_equivocator"], 47);
    // Authority 1 learnt it from the relay.
    assert_eq!(
        sim.request(1, Request::Vote(vote(77))),
        Err(Rejection::Vote(VoteError::Equivocator))
    );
    sim.run_until(schedule().start_of(2));
    assert_eq!(agreed(&sim, 2).voters.len(), 2);
}

/// `count` descriptors for `epoch` of fresh identities drawn from `seed`, each about `size` bytes, each announcing
/// a public IPv4 address in a /24 of its own (so that no prefix cap applies).
fn fresh_identities(
    seed: u64,
    count: u32,
    epoch: u64,
    size: usize,
) -> Vec<p2pmix_proto::v1::SignedDescriptor> {
    let mut rng = common::rng(seed);
    let sphinx = NodeSecretKey::random(&mut rng)
        .public_key()
        .to_bytes()
        .to_vec();
    let padding = "x".repeat(size.saturating_sub(200));
    (0..count)
        .map(|i| {
            // Seeded, so that which ones the store displaces is the same on every run.
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let key = libp2p_identity::Keypair::ed25519_from_bytes(seed)
                .expect("any 32 bytes are an ed25519 secret key");
            let d = NodeDescriptor {
                epoch,
                identity: key.public().encode_protobuf(),
                addresses: vec![format!(
                    "/ip4/{}.{}.{}.7/tcp/4100",
                    11 + i / 65_536,
                    (i / 256) % 256,
                    i % 256
                )],
                role: Role::Mix as i32,
                sphinx_keys: vec![EpochKey {
                    epoch,
                    sphinx_public_key: sphinx.clone(),
                }],
                software_version: padding.clone(),
                protocol_version: 1,
                family: String::new(),
            };
            sign_descriptor(&key, &d).unwrap()
        })
        .collect()
}

/// Honest nodes of a production network: public addresses, each in a /24 of its own.
fn public_nodes(gateways: u64, mixes: u64) -> Vec<Node> {
    (0..gateways + mixes)
        .map(|i| {
            let role = if i < gateways {
                Role::Gateway
            } else {
                Role::Mix
            };
            Node::announcing(
                i,
                role,
                vec![format!("/ip4/80.{i}.0.1/tcp/4100")],
                &format!("op{i}"),
            )
        })
        .collect()
}

#[test]
fn ten_thousand_fresh_identities_in_one_round_are_capped_and_the_consensus_is_published() {
    // Reachability checks start at 64 a second: an hour's epoch has a quarter hour for them,
    // this test's 8 s epoch 2 s; the pace is scaled up by the same factor.
    let limits = AuthorityLimits {
        reach: ReachLimits {
            per_second: 64.0 * 450.0,
            ..ReachLimits::default()
        },
        ..AuthorityLimits::default()
    };
    let mut sim = Sim::with_limits(3, default_parameters(), limits, schedule().start_of(1));
    let honest = public_nodes(2, 9);
    round(&mut sim, &honest, 2);
    assert_eq!(agreed(&sim, 2).nodes.len(), 11);

    // Round 3: the honest nodes again, and 10 000 descriptors of fresh identities (3 KB each,
    // 30 MB in all, against a store of 16 MiB) from as many addresses, arriving at each
    // authority in its own order; and 100 more from a single address.
    let flood = fresh_identities(99, 10_000, 3, 3_000);
    let from_one = fresh_identities(98, 100, 3, 300);
    for i in 0..3 {
        let mut order: Vec<usize> = (0..flood.len()).collect();
        order.rotate_left(i * 3_333);
        if i == 1 {
            order.reverse();
        }
        for (n, k) in order.into_iter().enumerate() {
            let ip = std::net::Ipv4Addr::from(0x0b00_0000 + n as u32 * 7 + i as u32);
            let _ = sim.request_from(
                i,
                Origin::Peer(ip.into()),
                Request::Descriptor(flood[k].clone()),
            );
        }
        let one = Origin::Peer("12.0.0.1".parse().unwrap());
        for d in &from_one {
            let _ = sim.request_from(i, one, Request::Descriptor(d.clone()));
        }
        assert!(
            sim.authority(i).memory_bytes() <= MEMORY_BUDGET_BYTES,
            "{} bytes after the uploads",
            sim.authority(i).memory_bytes()
        );
    }
    sim.upload(&honest, 3);
    for i in 0..3 {
        let a = sim.authority(i);
        let r = a.rejections();
        let stats = a.stats();
        assert_eq!(r["rate_limited"], 100 - 16, "{r:?}");
        assert!(stats.descriptor_bytes <= 16 * 1024 * 1024);
        // Every one of the 10 016 looked at is held, displaced, or refused as over the bound.
        assert_eq!(
            stats.descriptors as u64 + stats.evicted + r["descriptor_round_full"],
            10_016 + 11,
            "{stats:?} {r:?}"
        );
        // The bound bit: thousands were displaced or refused, not a handful.
        assert!(
            stats.evicted + r["descriptor_round_full"] > 4_000,
            "{stats:?} {r:?}"
        );
        // Whatever the order they arrived in, the authorities hold the same ones.
        assert_eq!(stats.descriptors, sim.authority(0).stats().descriptors);
    }
    // Past the votes: every authority holds three votes (their descriptors shared with its own
    // store), still within its budget.
    sim.run_until(schedule().phase_start(2, Phase::Sign) - 1);
    for i in 0..3 {
        let a = sim.authority(i);
        assert!(
            a.memory_bytes() <= MEMORY_BUDGET_BYTES,
            "{} bytes with the votes",
            a.memory_bytes()
        );
        assert!(
            a.stats().left_out.get("vote_size").copied().unwrap_or(0) > 0,
            "the vote was trimmed to its limit: {:?}",
            a.stats().left_out
        );
        assert_eq!(a.stats().left_out, sim.authority(0).stats().left_out);
    }
    sim.run_until(schedule().start_of(3));
    let c = agreed(&sim, 3);
    // The honest nodes were in the last document: they rank first and are all in.
    for n in &honest {
        let id = n.keypair.public().encode_protobuf();
        assert!(
            c.nodes.iter().any(|x| x.identity == id),
            "honest node {} left out",
            n.index
        );
    }
    assert!(c.nodes.len() > 1_000, "{} nodes", c.nodes.len());
    for i in 0..3 {
        assert!(sim.authority(i).memory_bytes() <= MEMORY_BUDGET_BYTES);
    }
}

#[test]
fn fifty_mixes_in_one_slash_24_get_at_most_k_places() {
    let parameters = default_parameters();
    let k = parameters.max_nodes_per_ipv4_24 as usize;
    let mut sim = Sim::new(3, parameters, schedule().start_of(1));
    let mut ns = public_nodes(2, 6);
    ns.extend((100..150).map(|i| {
        Node::announcing(
            i,
            Role::Mix,
            vec![format!("/ip4/45.1.2.{}/tcp/4100", i - 100)],
            &format!("sybil{i}"),
        )
    }));
    for n in &ns {
        for i in 0..3 {
            let _ = sim.request(i, Request::Descriptor(n.signed(2)));
        }
    }
    sim.run_until(schedule().phase_start(1, Phase::Vote) + 1);
    for i in 0..3 {
        // The store keeps 4K of one /24 (refusing or displacing the rest), the vote K.
        let a = sim.authority(i);
        let stats = a.stats();
        assert_eq!(
            a.rejections()["descriptor_full_ipv4_24"] + stats.evicted,
            50 - 4 * k as u64
        );
        assert_eq!(stats.descriptors, 8 + 4 * k);
        assert_eq!(stats.left_out.get("ipv4_24"), Some(&(3 * k as u64)));
    }
    sim.run_until(schedule().start_of(2));
    let c = agreed(&sim, 2);
    let in_24 = c
        .nodes
        .iter()
        .filter(|n| n.addresses.iter().any(|a| a.starts_with("/ip4/45.1.2.")))
        .count();
    assert_eq!(in_24, k, "at most K = {k} from the /24");
    assert_eq!(c.nodes.len(), 8 + k);
}

#[test]
fn per_address_and_per_family_caps_hold_too() {
    let mut sim = Sim::new(3, default_parameters(), schedule().start_of(1));
    let mut ns = public_nodes(2, 3);
    // Five nodes on one address, twelve of one declared family on addresses of their own.
    ns.extend((100..105).map(|i| {
        Node::announcing(
            i,
            Role::Mix,
            vec![format!("/ip4/46.0.0.1/tcp/{i}")],
            &format!("x{i}"),
        )
    }));
    ns.extend((200..212).map(|i| {
        Node::announcing(
            i,
            Role::Mix,
            vec![format!("/ip4/47.{i}.0.1/tcp/1")],
            "BigOperator",
        )
    }));
    round(&mut sim, &ns, 2);
    let c = agreed(&sim, 2);
    let on_one = c
        .nodes
        .iter()
        .filter(|n| n.addresses.iter().any(|a| a.starts_with("/ip4/46.0.0.1/")))
        .count();
    let family = c.nodes.iter().filter(|n| n.family == "BigOperator").count();
    let p = default_parameters();
    assert_eq!(on_one, p.max_nodes_per_ipv4 as usize);
    assert_eq!(family, p.max_nodes_per_family as usize);
}

#[test]
fn a_node_whose_address_does_not_answer_is_not_admitted_and_one_reached_last_round_still_is() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let ns = nodes(2, 6);
    let dead = ns[3].peer_id();
    let flaky = ns[4].peer_id();
    for i in 0..3 {
        sim.set_reachability(i, Reachability::AllBut(BTreeSet::from([dead])));
    }
    sim.upload(&ns, 2);
    sim.run_until(schedule().phase_start(1, Phase::Vote) + 1);
    for i in 0..3 {
        assert_eq!(sim.authority(i).stats().left_out.get("unreached"), Some(&1));
        assert_eq!(sim.authority(i).stats().reach.unreachable, 1);
    }
    sim.run_until(schedule().start_of(2));
    let ids = |c: &Consensus| -> BTreeSet<Vec<u8>> {
        c.nodes.iter().map(|n| n.identity.clone()).collect()
    };
    let c = agreed(&sim, 2);
    assert_eq!(c.nodes.len(), 7);
    assert!(!ids(&c).contains(&ns[3].keypair.public().encode_protobuf()));
    // The flaky node stops answering: reached in the last round is enough for this one...
    for i in 0..3 {
        sim.set_reachability(i, Reachability::AllBut(BTreeSet::from([dead, flaky])));
    }
    round(&mut sim, &ns, 3);
    assert!(ids(&agreed(&sim, 3)).contains(&ns[4].keypair.public().encode_protobuf()));
    // ...but not for the next.
    round(&mut sim, &ns, 4);
    let c = agreed(&sim, 4);
    assert!(!ids(&c).contains(&ns[4].keypair.public().encode_protobuf()));
    assert_eq!(c.nodes.len(), 6);
}

#[test]
fn a_production_network_refuses_loopback_addresses_and_a_test_network_admits_them() {
    let loopback = Node::new(1, Role::Mix);
    let mut production = Sim::new(3, default_parameters(), schedule().start_of(1));
    assert_eq!(
        production.request(0, Request::Descriptor(loopback.signed(2))),
        Err(Rejection::Descriptor(DescriptorError::NotPublicAddress))
    );
    let private = Node::announcing(2, Role::Mix, vec!["/ip4/192.168.1.20/tcp/1".into()], "");
    assert_eq!(
        production.request(0, Request::Descriptor(private.signed(2))),
        Err(Rejection::Descriptor(DescriptorError::NotPublicAddress))
    );
    let mut testnet = Sim::default(3, schedule().start_of(1));
    testnet
        .request(0, Request::Descriptor(loopback.signed(2)))
        .unwrap();
    testnet
        .request(0, Request::Descriptor(private.signed(2)))
        .unwrap();
    // And a vote carrying a loopback node carries nothing on a production network.
    let vote = build_vote(
        &keypair(1),
        2,
        [loopback.signed(2)],
        commitment(2, &[], &[0; 32]),
        None,
    )
    .unwrap();
    let pinned = production.pinned.clone();
    let seen = |p| {
        verify_vote(&vote, &pinned, 2, &p)
            .unwrap()
            .descriptors
            .len()
    };
    assert_eq!(seen(default_parameters()), 0);
    assert_eq!(seen(test_network_parameters()), 1);
}
