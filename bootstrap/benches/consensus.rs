//! Consensus cost at 1000 and at 10 000 nodes: vote check, build + sign, verification, encoded
//! size, and the peak resident memory of the process.
//!
//! `cargo bench -p p2pmix-bootstrap --bench consensus`
//!
//! Three authorities each vote for the same 1000 descriptors (one vote per authority, every
//! descriptor signature checked once per vote, as an authority does when a vote arrives). Prints
//! medians over repeated runs and the targets (verify < 10 ms, size < 300 KB).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use p2pmix_bootstrap::{
    ConsensusInputs, EpochSchedule, PinnedAuthorities, build_reveal, build_vote, commitment,
    compute_consensus, consensus_digest, default_parameters, sign_consensus, sign_descriptor,
    verify_consensus, verify_reveal, verify_vote,
};
use p2pmix_mix::NodeSecretKey;
use p2pmix_proto::v1::{EpochKey, NodeDescriptor, Role, SignedConsensus};
use prost::Message;

const AUTHORITIES: usize = 3;

/// The process's peak resident memory (Linux `VmHWM`), in bytes: the whole bench process, inputs
/// included, so an upper bound on what one authority's round needs.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
const EPOCH: u64 = 10;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    for nodes in [1000, 10_000] {
        round(nodes);
    }
}

/// One round of `NODES` descriptors: three votes checked, the consensus built, signed and
/// verified.
#[allow(non_snake_case)]
fn round(NODES: usize) {
    let mut rng = rand::rng();
    let schedule = EpochSchedule::new(0, 3_600_000);
    let parameters = default_parameters();
    let authorities: Vec<Keypair> = (0..AUTHORITIES)
        .map(|_| Keypair::generate_ed25519())
        .collect();
    let pinned = PinnedAuthorities::new(authorities.iter().map(|k| k.public()));
    let descriptors: Vec<_> = (0..NODES)
        .map(|i| {
            let node = Keypair::generate_ed25519();
            let d = NodeDescriptor {
                epoch: EPOCH,
                identity: node.public().encode_protobuf(),
                addresses: vec![format!("/ip4/45.{}.{}.1/tcp/4001", i / 256, i % 256)],
                role: if i < 50 { Role::Gateway } else { Role::Mix } as i32,
                sphinx_keys: (EPOCH..EPOCH + 2)
                    .map(|e| EpochKey {
                        epoch: e,
                        sphinx_public_key: NodeSecretKey::random(&mut rng)
                            .public_key()
                            .to_bytes()
                            .to_vec(),
                    })
                    .collect(),
                software_version: "p2pmix 0.1.0".into(),
                protocol_version: 1,
                family: format!("operator-{i}"),
            };
            sign_descriptor(&node, &d).unwrap()
        })
        .collect();
    let values: Vec<[u8; 32]> = (0..AUTHORITIES).map(|i| [i as u8; 32]).collect();
    let signed_votes: Vec<_> = authorities
        .iter()
        .zip(&values)
        .map(|(k, v)| {
            let commit = commitment(EPOCH, &k.public().encode_protobuf(), v);
            build_vote(k, EPOCH, descriptors.iter().cloned(), commit, None).unwrap()
        })
        .collect();
    let reveals: Vec<_> = authorities
        .iter()
        .zip(&values)
        .map(|(k, v)| verify_reveal(&build_reveal(k, EPOCH, *v).unwrap(), &pinned, EPOCH).unwrap())
        .collect();

    let round_start = Instant::now();
    let t = Instant::now();
    let votes: Vec<_> = signed_votes
        .iter()
        .map(|v| verify_vote(v, &pinned, EPOCH, &parameters).unwrap())
        .collect();
    let vote_check = t.elapsed() / AUTHORITIES as u32;

    let mut build = Vec::new();
    let mut signed = None;
    for _ in 0..15 {
        let t = Instant::now();
        let consensus = compute_consensus(ConsensusInputs {
            epoch: EPOCH,
            schedule,
            parameters: &parameters,
            authorities: &pinned,
            votes: &votes.iter().collect::<Vec<_>>(),
            reveals: &reveals,
            previous: None,
        })
        .unwrap();
        let bytes = consensus.encode_to_vec();
        let digest = consensus_digest(&bytes);
        let signature = sign_consensus(&authorities[0], EPOCH, &digest)
            .unwrap()
            .signature;
        build.push(t.elapsed());
        let mut signatures: Vec<_> = authorities
            .iter()
            .map(|k| sign_consensus(k, EPOCH, &digest).unwrap())
            .collect();
        signatures.sort_by(|a, b| a.authority.cmp(&b.authority));
        assert_eq!(
            signatures
                .iter()
                .filter(|s| s.signature == signature)
                .count(),
            1
        );
        signed = Some(SignedConsensus {
            consensus: bytes,
            signatures,
        });
    }
    let round_time = round_start.elapsed();
    let encoded = signed.unwrap().encode_to_vec();
    let now = schedule.start_of(EPOCH) + 1;
    let mut verify = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let v = verify_consensus(&encoded, &pinned, now, Some(EPOCH)).unwrap();
        verify.push(t.elapsed());
        assert_eq!(v.nodes().len(), NODES);
    }
    let rounds = build.len() as u32;
    let build = median(build);
    let verify = median(verify);
    println!("consensus bench: {NODES} descriptors, {AUTHORITIES} authorities");
    println!(
        "  vote check (decode + {NODES} descriptor signatures), per vote: {:.2} ms",
        vote_check.as_secs_f64() * 1e3
    );
    println!(
        "  consensus build + encode + sign: {:.2} ms",
        build.as_secs_f64() * 1e3
    );
    println!(
        "  verify (decode, {AUTHORITIES} signatures, node checks): {:.3} ms (target < 10 ms)",
        verify.as_secs_f64() * 1e3
    );
    // The size target is for a network of 1000 nodes; ten times the nodes take ten times the
    // bytes (about 143 bytes a node).
    let size_target = if NODES <= 1000 {
        " (target < 300 KB)"
    } else {
        ""
    };
    println!(
        "  signed consensus size: {} bytes = {:.1} KB{size_target}",
        encoded.len(),
        encoded.len() as f64 / 1000.0
    );
    // One round = the three vote checks and one build + sign (the bench builds 15 times).
    let one_round = vote_check * AUTHORITIES as u32 + build;
    println!(
        "  one round (3 vote checks + build + sign): {:.2} s single-threaded (target < 5 s); \
         {} builds took {:.2} s; peak RSS of the process so far: {:.1} MiB (target < 200 MiB)",
        one_round.as_secs_f64(),
        rounds,
        round_time.as_secs_f64(),
        peak_rss().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );
}
