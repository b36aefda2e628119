//! Each rejection reason, forged one defect at a time: descriptors at an authority, and signed
//! consensus documents at the shared verification function.
#![allow(missing_docs, unreachable_pub)]

mod common;

use common::{Node, PERIOD, Sim, keypair, nodes, schedule};
use p2pmix_bootstrap::{
    DescriptorError, Phase, Rejection, VerifyError, consensus_digest, sign_consensus,
    sign_descriptor, verify_consensus,
};
use p2pmix_proto::v1::{
    Consensus, EpochKey, NodeDescriptor, Role, SignedConsensus, SignedDescriptor,
    directory_request::Request,
};
use prost::Message;

fn upload(sim: &mut Sim, signed: SignedDescriptor) -> Result<(), Rejection> {
    sim.request(0, Request::Descriptor(signed))
}

fn resign(node: &Node, d: &NodeDescriptor) -> SignedDescriptor {
    sign_descriptor(&node.keypair, d).unwrap()
}

#[test]
fn each_descriptor_defect_is_refused_with_its_reason_and_counted() {
    let mut sim = Sim::default(3, schedule().start_of(1));
    let node = Node::new(1, Role::Mix);
    let good = node.descriptor(2);

    let mut bad_sig = resign(&node, &good);
    bad_sig.signature[0] ^= 1;
    let mut other_epoch = good.clone();
    other_epoch.epoch = 3;
    let mut far_key = good.clone();
    far_key.sphinx_keys.push(EpochKey {
        epoch: 2 + 4,
        sphinx_public_key: good.sphinx_keys[0].sphinx_public_key.clone(),
    });
    let mut old = good.clone();
    old.protocol_version = 0;
    let mut no_role = good.clone();
    no_role.role = Role::Unspecified as i32;
    let mut no_key = good.clone();
    no_key.sphinx_keys.retain(|k| k.epoch != 2);
    let mut bad_key = good.clone();
    bad_key.sphinx_keys[0].sphinx_public_key = vec![0xff; 32];
    let mut no_addr = good.clone();
    no_addr.addresses.clear();
    let mut forged_identity = good.clone();
    forged_identity.identity = keypair(999).public().encode_protobuf(); // signed by someone else

    let cases: Vec<(SignedDescriptor, DescriptorError)> = vec![
        (bad_sig, DescriptorError::BadSignature),
        (
            resign(&node, &other_epoch),
            DescriptorError::WrongEpoch {
                got: 3,
                expected: 2,
            },
        ),
        (
            resign(&node, &far_key),
            DescriptorError::KeyTooFarAhead {
                key_epoch: 6,
                epoch: 2,
            },
        ),
        (
            resign(&node, &old),
            DescriptorError::VersionTooLow { got: 0, min: 1 },
        ),
        (resign(&node, &no_role), DescriptorError::NoRole),
        (resign(&node, &no_key), DescriptorError::BadSphinxKey(2)),
        (resign(&node, &bad_key), DescriptorError::BadSphinxKey(2)),
        (resign(&node, &no_addr), DescriptorError::BadAddresses),
        (
            resign(&node, &forged_identity),
            DescriptorError::BadSignature,
        ),
        (
            SignedDescriptor {
                descriptor: vec![0xff; 10],
                signature: vec![],
            },
            DescriptorError::Malformed,
        ),
    ];
    for (signed, expected) in cases {
        assert_eq!(
            upload(&mut sim, signed),
            Err(Rejection::Descriptor(expected.clone())),
            "{expected:?}"
        );
    }

    // The good one goes in once; a second (even identical) is a duplicate.
    upload(&mut sim, resign(&node, &good)).unwrap();
    assert_eq!(
        upload(&mut sim, resign(&node, &good)),
        Err(Rejection::Descriptor(DescriptorError::Duplicate))
    );
    // After the descriptor deadline: late.
    let late_node = Node::new(2, Role::Gateway);
    sim.run_until(schedule().phase_start(1, Phase::Vote));
    assert_eq!(
        upload(&mut sim, late_node.signed(2)),
        Err(Rejection::Descriptor(DescriptorError::Late))
    );

    let counts = sim.authority(0).rejections().clone();
    for reason in [
        "descriptor_bad_signature",
        "descriptor_wrong_epoch",
        "descriptor_key_too_far_ahead",
        "descriptor_version_too_low",
        "descriptor_no_role",
        "descriptor_bad_sphinx_key",
        "descriptor_bad_addresses",
        "descriptor_malformed",
        "descriptor_duplicate",
        "descriptor_late",
    ] {
        assert!(
            counts.get(reason).copied().unwrap_or(0) >= 1,
            "{reason} not counted: {counts:?}"
        );
    }
    assert_eq!(counts["descriptor_bad_signature"], 2);
    assert_eq!(counts["descriptor_bad_sphinx_key"], 2);
}

/// A valid signed consensus for epoch 2 from three authorities, and the simulation.
fn valid() -> (Sim, SignedConsensus) {
    let mut sim = Sim::default(3, schedule().start_of(1));
    sim.upload(&nodes(2, 6), 2);
    sim.run_until(schedule().start_of(2));
    let signed = sim.authority(0).consensus(Some(2)).unwrap().clone();
    (sim, signed)
}

fn check(
    sim: &Sim,
    signed: &SignedConsensus,
    now: u64,
    epoch: Option<u64>,
) -> Result<(), VerifyError> {
    verify_consensus(&signed.encode_to_vec(), &sim.pinned, now, epoch).map(|_| ())
}

#[test]
fn each_consensus_defect_is_refused_with_its_reason() {
    let (sim, signed) = valid();
    let inside = schedule().start_of(2) + 10;
    check(&sim, &signed, inside, Some(2)).unwrap();

    // Bad encoding.
    assert!(matches!(
        verify_consensus(&[0xff, 0xff, 0xff], &sim.pinned, inside, None),
        Err(VerifyError::Encoding(_))
    ));
    // Unknown signer: a fourth key signs the right digest.
    let digest = consensus_digest(&signed.consensus);
    let stranger = keypair(4242);
    let mut s = signed.clone();
    s.signatures
        .push(sign_consensus(&stranger, 2, &digest).unwrap());
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::UnknownSigner)
    );
    // Duplicate signer.
    let mut s = signed.clone();
    s.signatures.push(signed.signatures[0].clone());
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::DuplicateSigner)
    );
    // Below threshold: one signature of three.
    let mut s = signed.clone();
    s.signatures.truncate(1);
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::BelowThreshold {
            valid: 1,
            needed: 2
        })
    );
    // Digest mismatch: the document was changed after signing (signatures name the old digest).
    let mut s = signed.clone();
    let mut changed = Consensus::decode(&s.consensus[..]).unwrap();
    changed.shared_random = vec![0; 32];
    s.consensus = changed.encode_to_vec();
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::DigestMismatch)
    );
    // A signature over the right digest for another epoch: signatures cover the epoch.
    let mut s = signed.clone();
    let first = sim.keys[0].public().encode_protobuf();
    let at = s
        .signatures
        .iter()
        .position(|x| x.authority == first)
        .unwrap();
    s.signatures[at] = sign_consensus(&sim.keys[0], 3, &digest).unwrap();
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::SignatureEpoch)
    );
    // A signature that names the right digest but does not verify.
    let mut s = signed.clone();
    s.signatures[1].signature[5] ^= 1;
    assert_eq!(
        check(&sim, &s, inside, None),
        Err(VerifyError::BadSignature)
    );
    // Not yet valid, expired, wrong epoch.
    assert!(matches!(
        check(&sim, &signed, schedule().start_of(2) - 1, None),
        Err(VerifyError::NotYetValid { .. })
    ));
    assert!(matches!(
        check(&sim, &signed, schedule().start_of(4), None),
        Err(VerifyError::Expired { .. })
    ));
    assert_eq!(
        check(&sim, &signed, inside, Some(3)),
        Err(VerifyError::WrongEpoch {
            got: 2,
            expected: 3
        })
    );
    // Valid until the end of the next epoch (the fallback window), fresh until its own end.
    check(&sim, &signed, schedule().start_of(3) + PERIOD - 1, None).unwrap();
}

#[test]
fn votes_from_strangers_and_forged_votes_are_refused() {
    use p2pmix_bootstrap::{VoteError, build_vote, commitment};
    let mut sim = Sim::default(3, schedule().start_of(1));
    let stranger = keypair(31337);
    let vote = build_vote(&stranger, 2, [], commitment(2, &[], &[0; 32]), None).unwrap();
    let key = sim.keys[1].clone();
    let mut send = |v| sim.request(0, Request::Vote(v));
    assert_eq!(
        send(vote),
        Err(Rejection::Vote(VoteError::UnknownAuthority))
    );
    let mut forged = build_vote(&key, 2, [], [0; 32], None).unwrap();
    forged.signature[0] ^= 1;
    assert_eq!(send(forged), Err(Rejection::Vote(VoteError::BadSignature)));
    let wrong = build_vote(&key, 5, [], [0; 32], None).unwrap();
    assert_eq!(
        send(wrong),
        Err(Rejection::Vote(VoteError::WrongEpoch {
            got: 5,
            expected: 2
        }))
    );
    let honest = build_vote(&key, 2, [], [0; 32], None).unwrap();
    send(honest.clone()).unwrap();
    send(honest).unwrap(); // the same vote relayed again is fine
    let equivocation = build_vote(&key, 2, [], [1; 32], None).unwrap();
    assert_eq!(
        send(equivocation),
        Err(Rejection::Vote(VoteError::Duplicate))
    );
}

/// A flood past the rate limit leaves the persisted state byte for byte as it was, which is what
/// lets the driver skip the state write for such refusals (`Rejection::left_state_alone`):
/// before, each refused request scheduled a write of the whole state.
#[test]
fn a_flood_past_the_rate_limit_leaves_the_state_alone() {
    let sim = Sim::default(3, schedule().start_of(1));
    let now = sim.now();
    let mut authority = p2pmix_bootstrap::Authority::new(sim.config(0), now);
    // A public address (test networks do not limit private ones); nothing is sent to it.
    let origin = p2pmix_bootstrap::Origin::Peer("9.9.9.9".parse().unwrap());
    let node = Node::new(1, Role::Mix);
    let request = || p2pmix_proto::v1::DirectoryRequest {
        request: Some(Request::Descriptor(node.signed(2))),
    };
    let mut limited = None;
    for i in 0..10_000 {
        if let Err(Rejection::RateLimited) = authority.handle_request_from(now, origin, request()) {
            limited = Some(i);
            break;
        }
    }
    assert!(limited.is_some(), "never rate limited");
    let before = authority.state().encode_to_vec();
    for _ in 0..1_000 {
        let refused = authority
            .handle_request_from(now, origin, request())
            .unwrap_err();
        assert_eq!(refused, Rejection::RateLimited);
        assert!(refused.left_state_alone());
    }
    assert_eq!(authority.state().encode_to_vec(), before);
    // A refusal that may have kept something is never taken as leaving the state alone.
    assert!(!Rejection::Descriptor(DescriptorError::Duplicate).left_state_alone());
}
