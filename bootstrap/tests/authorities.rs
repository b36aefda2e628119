//! Authorities in a simulated network: agreement, failures, restarts, order independence.
#![allow(missing_docs, unreachable_pub)]

mod common;

use common::{PERIOD, Sim, nodes, rng, schedule};
use p2pmix_bootstrap::{
    AdoptError, Adoption, Authority, ComputeError, Event, RoundFailure, VerifyError,
    verify_consensus,
};
use p2pmix_proto::v1::{Consensus, Role};
use proptest::prelude::*;
use prost::Message;

/// From the start of epoch 1 to the start of epoch 2: the consensus of epoch 2 is made.
fn one_round(sim: &mut Sim, gateways: u64, mixes: u64) {
    let ns = nodes(gateways, mixes);
    sim.upload(&ns, 2);
    sim.run_until(schedule().start_of(2));
}

fn agreed(sim: &Sim, epoch: u64) -> Vec<u8> {
    let docs = sim.documents(epoch);
    let first = docs[0].clone().expect("a consensus was published");
    for d in &docs {
        assert_eq!(d.as_ref(), Some(&first), "authorities disagree");
    }
    first
}

#[test]
fn three_and_five_authorities_sign_identical_documents() {
    for n in [3, 5] {
        let mut sim = Sim::default(n, schedule().start_of(1));
        one_round(&mut sim, 2, 18);
        let bytes = agreed(&sim, 2);
        let consensus = Consensus::decode(&bytes[..]).unwrap();
        assert_eq!(consensus.epoch, 2);
        assert_eq!(consensus.nodes.len(), 20);
        assert_eq!(consensus.voters.len(), n);
        let mut per_layer = [0usize; 4];
        for node in &consensus.nodes {
            per_layer[node.layer as usize] += 1;
        }
        assert_eq!(
            per_layer,
            [2, 6, 6, 6],
            "gateways in 0, balanced mix layers"
        );
        // What nodes and clients check: every signature, at a time inside the window.
        let signed = sim.authority(0).consensus(Some(2)).unwrap();
        let verified = verify_consensus(
            &signed.encode_to_vec(),
            &sim.pinned,
            schedule().start_of(2) + 1,
            Some(2),
        )
        .unwrap();
        assert_eq!(verified.signed().signatures.len(), n);
        let events = sim.events();
        assert!(events.iter().all(|(_, e)| matches!(
            e,
            Event::Published { epoch: 2, .. } | Event::SignaturesAdded { epoch: 2, .. }
        )));
        assert_eq!(
            events
                .iter()
                .filter(|(_, e)| matches!(e, Event::Published { .. }))
                .count(),
            n,
            "every authority publishes once"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The order in which votes, reveals and signatures arrive does not change the document.
    #[test]
    fn any_arrival_order_gives_the_same_document(seed in any::<u64>(), n in prop_oneof![Just(3usize), Just(5)]) {
        let mut reference = Sim::default(n, schedule().start_of(1));
        one_round(&mut reference, 1, 7);
        let expected = agreed(&reference, 2);

        let mut shuffled = Sim::default(n, schedule().start_of(1));
        shuffled.shuffle = Some(rng(seed));
        one_round(&mut shuffled, 1, 7);
        prop_assert_eq!(agreed(&shuffled, 2), expected);
    }
}

#[test]
fn one_of_three_down_still_produces_a_consensus() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    sim.stop(2);
    one_round(&mut sim, 2, 6);
    let bytes = agreed(&sim, 2);
    let signed = sim.authority(0).consensus(Some(2)).unwrap();
    assert_eq!(signed.signatures.len(), 2);
    assert_eq!(Consensus::decode(&bytes[..]).unwrap().voters.len(), 2);
    verify_consensus(
        &signed.encode_to_vec(),
        &sim.pinned,
        schedule().start_of(2),
        Some(2),
    )
    .unwrap();

    // Every epoch, not just once.
    let ns = nodes(2, 6);
    sim.upload(&ns, 3);
    sim.run_until(schedule().start_of(3));
    agreed(&sim, 3);
}

#[test]
fn two_of_three_down_produces_none_and_says_why_and_the_last_one_serves_until_it_expires() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 2, 6);
    agreed(&sim, 2);
    let last = sim.authority(0).consensus(None).unwrap().clone();

    sim.stop(1);
    sim.stop(2);
    sim.clear_events();
    let ns = nodes(2, 6);
    sim.upload(&ns, 3);
    sim.run_until(schedule().start_of(3));
    let survivor = sim.authority(0);
    assert!(survivor.consensus(Some(3)).is_none());
    assert!(
        sim.events().iter().any(|(_, e)| matches!(
            e,
            Event::Failed {
                epoch: 3,
                reason: RoundFailure::Compute(ComputeError::NotEnoughVotes { got: 1, needed: 2 })
            }
        )),
        "{:?}",
        sim.events()
    );
    // The last valid consensus is still served and still verifies during epoch 3...
    assert_eq!(survivor.consensus(None), Some(&last));
    let bytes = last.encode_to_vec();
    verify_consensus(
        &bytes,
        &sim.pinned,
        schedule().start_of(3) + PERIOD / 2,
        None,
    )
    .unwrap();
    // ...until it expires.
    assert!(matches!(
        verify_consensus(&bytes, &sim.pinned, schedule().start_of(4), None),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn an_authority_restarted_mid_epoch_resumes_and_signs() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let ns = nodes(2, 6);
    sim.upload(&ns, 2);
    // Past the votes and reveals, before computing.
    sim.run_until(schedule().phase_start(1, p2pmix_bootstrap::Phase::Reveal) + 1);
    let state = sim.authority(1).state().encode_to_vec();
    sim.stop(1);
    let decoded = p2pmix_proto::v1::AuthorityState::decode(&state[..]).unwrap();
    sim.start(1, Authority::restore(sim.config(1), &decoded, sim.now()));
    assert_eq!(sim.authority(1).descriptor_count(), 8);
    sim.run_until(schedule().start_of(2));
    let bytes = agreed(&sim, 2);
    let signed = sim.authority(1).consensus(Some(2)).unwrap();
    assert_eq!(signed.consensus, bytes);
    assert_eq!(
        signed.signatures.len(),
        3,
        "the restarted authority signed too"
    );
}

#[test]
fn layers_stay_stable_for_nodes_that_stay() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let mut ns = nodes(2, 9);
    sim.upload(&ns, 2);
    sim.run_until(schedule().start_of(2));
    let first = Consensus::decode(&agreed(&sim, 2)[..]).unwrap();

    // Next epoch: one mix leaves, three join.
    ns.remove(5);
    ns.extend((100..103).map(|i| common::Node::new(i, Role::Mix)));
    sim.upload(&ns, 3);
    sim.run_until(schedule().start_of(3));
    let second = Consensus::decode(&agreed(&sim, 3)[..]).unwrap();

    let layer_of =
        |c: &Consensus, id: &[u8]| c.nodes.iter().find(|n| n.identity == id).map(|n| n.layer);
    let stayed: Vec<_> = first
        .nodes
        .iter()
        .filter(|n| n.role() == Role::Mix && layer_of(&second, &n.identity).is_some())
        .collect();
    let moved = stayed
        .iter()
        .filter(|n| layer_of(&second, &n.identity) != Some(n.layer))
        .count();
    assert_eq!(stayed.len(), 8);
    assert!(
        moved <= 1,
        "{moved} of {} staying mixes changed layer",
        stayed.len()
    );
    let mut sizes = [0usize; 4];
    for n in &second.nodes {
        sizes[n.layer as usize] += 1;
    }
    assert_eq!(sizes, [2, 4, 4, 3]);
}

#[test]
fn replayed_old_signatures_do_not_block_a_round() {
    use p2pmix_proto::v1::directory_request::Request;
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 1, 3);
    let old = sim.authority(0).consensus(Some(2)).unwrap().clone();
    // Round 3: anyone replays epoch 2's signatures before the authorities sign.
    sim.upload(&nodes(1, 3), 3);
    for i in 0..3 {
        for s in &old.signatures {
            let _ = sim.request(i, Request::Signature(s.clone()));
        }
    }
    sim.run_until(schedule().start_of(3));
    agreed(&sim, 3);
    let signed = sim.authority(0).consensus(Some(3)).unwrap();
    verify_consensus(
        &signed.encode_to_vec(),
        &sim.pinned,
        schedule().start_of(3),
        Some(3),
    )
    .unwrap();
    assert_eq!(signed.signatures.len(), 3);
}

#[test]
fn a_restart_after_publishing_keeps_the_document_valid() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 1, 3);
    let state = sim.authority(0).state();
    let restored = Authority::restore(sim.config(0), &state, sim.now());
    let signed = restored.consensus(Some(2)).unwrap();
    verify_consensus(
        &signed.encode_to_vec(),
        &sim.pinned,
        schedule().start_of(2),
        Some(2),
    )
    .unwrap();
}

#[test]
fn an_equivocating_authority_is_left_out_by_everyone() {
    use p2pmix_bootstrap::{build_vote, commitment};
    use p2pmix_proto::v1::directory_request::Request;
    let mut sim = Sim::default(3, schedule().start_of(1));
    sim.upload(&nodes(1, 3), 2);
    // Authority 2 is the equivocator: it never runs its own clock, and sends one vote to
    // authority 0 and a different one to authority 1.
    let liar = sim.stop(2).unwrap();
    drop(liar);
    let key = sim.keys[2].clone();
    let me = key.public().encode_protobuf();
    sim.run_until(schedule().phase_start(1, p2pmix_bootstrap::Phase::Vote) + 1);
    let a = build_vote(&key, 2, [], commitment(2, &me, &[1; 32]), None).unwrap();
    let b = build_vote(&key, 2, [], commitment(2, &me, &[2; 32]), None).unwrap();
    for (target, vote) in [(0, a), (1, b)] {
        sim.request(target, Request::Vote(vote)).unwrap();
    }
    sim.run_until(schedule().start_of(2));
    let bytes = agreed(&sim, 2);
    let consensus = Consensus::decode(&bytes[..]).unwrap();
    assert_eq!(
        consensus.voters.len(),
        2,
        "the equivocator's votes do not count"
    );
    assert!(!consensus.voters.contains(&me));
}

#[test]
fn a_failed_round_does_not_spin() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    sim.stop(1);
    sim.stop(2);
    sim.run_until(schedule().phase_start(1, p2pmix_bootstrap::Phase::Publish) + 10);
    let a = sim.authority(0);
    assert!(
        a.poll_timeout() > Some(sim.now().mono),
        "next wake-up is in the future"
    );
}

#[test]
fn an_early_non_matching_reveal_does_not_change_the_document() {
    use p2pmix_bootstrap::build_reveal;
    use p2pmix_proto::v1::directory_request::Request;
    let mut reference = Sim::default(3, schedule().start_of(1));
    one_round(&mut reference, 1, 3);
    let expected = agreed(&reference, 2);

    // Same run, but authority 0 first gets a validly signed reveal from authority 1 whose value
    // does not match authority 1's commitment (sent before the votes).
    let mut sim = Sim::default(3, schedule().start_of(1));
    let bogus = build_reveal(&sim.keys[1], 2, [0xee; 32]).unwrap();
    sim.request(0, Request::Reveal(bogus)).unwrap();
    one_round(&mut sim, 1, 3);
    assert_eq!(agreed(&sim, 2), expected);
}

/// An authority that lost the previous document (a disk replaced; the same as one that was
/// down while it was published, or refused to sign it) would fail every later round: each
/// builds on the one before. It asks the others for it, adopts it on a threshold of pinned
/// signatures, and computes and signs the same document as they do. (Before it asked, it sat
/// out with `MissingPrevious`, round after round.)
#[test]
fn an_authority_missing_the_agreed_previous_consensus_fetches_it_and_signs_again() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 1, 3);
    let previous = sim.authority(1).consensus(Some(2)).unwrap().clone();
    // Authority 0 loses its documents but keeps running.
    let mut state = sim.authority(0).state();
    state.consensuses.clear();
    sim.start(0, Authority::restore(sim.config(0), &state, sim.now()));
    sim.clear_events();
    sim.upload(&nodes(1, 3), 3);
    sim.run_until(schedule().start_of(3));
    let events = sim.events();
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::Adopted { epoch: 2, .. })),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::Failed { .. })),
        "{events:?}"
    );
    assert_eq!(sim.authority(0).consensus(Some(2)), Some(&previous));
    agreed(&sim, 3);
    // And the next round too.
    sim.upload(&nodes(1, 3), 4);
    sim.run_until(schedule().start_of(4));
    agreed(&sim, 4);
}

/// What an authority is offered as the previous document before the votes name one waits, and
/// only if it is the missing one and a threshold of pinned keys signed it; nothing is adopted
/// before the votes, and a holder takes nothing.
#[test]
fn an_offered_previous_document_waits_for_the_votes_and_bad_ones_are_refused() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 1, 3);
    sim.run_until(schedule().start_of(2) + PERIOD / 8);
    let held = sim.authority(1).consensus(Some(2)).unwrap().clone();
    let mut state = sim.authority(0).state();
    state.consensuses.clear();
    let mut lost = Authority::restore(sim.config(0), &state, sim.now());
    let now = sim.now();
    let mut one_signature = held.clone();
    one_signature.signatures.truncate(1);
    assert!(matches!(
        lost.handle_consensus(now, one_signature),
        Err(AdoptError::Invalid(VerifyError::BelowThreshold { .. }))
    ));
    let mut other = held.clone();
    other.consensus.push(0);
    assert!(matches!(
        lost.handle_consensus(now, other),
        Err(AdoptError::Invalid(_))
    ));
    assert_eq!(
        lost.handle_consensus(now, held.clone()),
        Ok(Adoption::Waiting)
    );
    assert_eq!(
        lost.handle_consensus(now, held.clone()),
        Ok(Adoption::Waiting)
    );
    assert!(lost.consensus(Some(2)).is_none(), "no vote names it yet");
    let mut holder = sim.stop(1).unwrap();
    assert_eq!(
        holder.handle_consensus(now, held),
        Err(AdoptError::NotWanted(2))
    );
}

/// The attack of one malicious authority that signed a second document for an epoch (here
/// with a second key, so that the document even has a threshold of valid signatures): handed
/// to an authority that lost the real one, it waits, and the document the round's votes build
/// on is the one adopted. Without the rule that the votes name it, the first valid answer was
/// taken, and that authority would serve another document than everyone else for the epoch.
#[test]
fn a_validly_signed_previous_document_the_votes_do_not_name_is_not_adopted() {
    use p2pmix_bootstrap::{consensus_digest, sign_consensus};
    use p2pmix_proto::v1::SignedConsensus;
    let mut sim = Sim::default(3, schedule().start_of(1));
    one_round(&mut sim, 1, 3);
    let real = sim.authority(1).consensus(Some(2)).unwrap().clone();
    let mut forged = Consensus::decode(&real.consensus[..]).unwrap();
    forged.shared_random = vec![9; 32];
    let bytes = forged.encode_to_vec();
    let digest = consensus_digest(&bytes);
    let mut signatures: Vec<_> = sim.keys[1..]
        .iter()
        .map(|k| sign_consensus(k, 2, &digest).unwrap())
        .collect();
    signatures.sort_by(|a, b| a.authority.cmp(&b.authority));
    let forged = SignedConsensus {
        consensus: bytes,
        signatures,
    };
    let mut state = sim.authority(0).state();
    state.consensuses.clear();
    let mut lost = Authority::restore(sim.config(0), &state, sim.now());
    assert_eq!(
        lost.handle_consensus(sim.now(), forged.clone()),
        Ok(Adoption::Waiting),
        "valid signatures, so it waits for the votes"
    );
    sim.start(0, lost);
    sim.upload(&nodes(1, 3), 3);
    sim.run_until(schedule().start_of(3));
    assert_eq!(sim.authority(0).consensus(Some(2)), Some(&real));
    agreed(&sim, 3);
}

#[test]
fn nodes_upload_over_the_network_and_fetch_what_was_published() {
    use p2pmix_proto::v1::{
        DirectoryRequest, GetConsensus, RefusalCode, directory_request::Request,
        directory_response::Response,
    };
    use p2pmix_sim::authority::AuthorityMessage;
    let mut sim = Sim::default(3, schedule().start_of(1));
    let node = sim.add_client();
    let send = |sim: &mut Sim, to: usize, request: Request| {
        let to = sim.ids[to];
        let request = DirectoryRequest {
            request: Some(request),
        };
        sim.net.send(node, to, AuthorityMessage::Request(request));
    };
    let ns = nodes(1, 3);
    for n in &ns {
        for i in 0..3 {
            send(&mut sim, i, Request::Descriptor(n.signed(2)));
        }
    }
    // The same descriptor again: refused, with the code a node acts on.
    send(&mut sim, 0, Request::Descriptor(ns[0].signed(2)));
    sim.run_until(schedule().start_of(2));
    let answers = &sim.net.actor::<common::Client>(node).answers;
    assert_eq!(answers.len(), 13, "every upload is answered");
    let accepted = answers
        .iter()
        .filter(|(_, r)| matches!(r.response, Some(Response::Accepted(_))))
        .count();
    assert_eq!(accepted, 12);
    assert!(answers.iter().any(|(from, r)| *from == sim.ids[0]
        && matches!(&r.response, Some(Response::Refused(x)) if x.code == RefusalCode::Duplicate as i32)));
    let published = agreed(&sim, 2);
    assert_eq!(Consensus::decode(&published[..]).unwrap().nodes.len(), 4);

    // Anyone fetches the newest document from any authority.
    send(
        &mut sim,
        2,
        Request::GetConsensus(GetConsensus { epoch: 0 }),
    );
    sim.deliver();
    let answers = &sim.net.actor::<common::Client>(node).answers;
    match &answers.last().expect("answered").1.response {
        Some(Response::Consensus(c)) => assert_eq!(c.consensus, published),
        other => panic!("{other:?}"),
    }
}
