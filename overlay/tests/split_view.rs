//! A split view plus a double-signing authority, on the shared simulator: two documents for one
//! epoch each get a threshold of signatures, and no node or client ever switches from the one it
//! took to the other; each counts the conflict and serves the proof of who signed both.
//!
//! Three authorities: 0 and 1 honest, 2 the test's. Authority 2's vote reaches authority 0 a
//! millisecond before the reveal deadline, so that the copy authority 0 relays reaches authority
//! 1 just late: authority 0 computes a document with three voters, authority 1 one with two.
//! Authority 2 then signs both, each just before the publish deadline and each to one of them, so
//! that both publish before the relays tell them.
#![allow(missing_docs, unreachable_pub)]

use std::{collections::BTreeMap, time::Instant};

use libp2p::{PeerId, identity::Keypair};
use p2pmix::{
    bootstrap::{
        AuthorityConfig, EpochSchedule, Phase, PinnedAuthorities, build_reveal, build_vote,
        commitment, sign_consensus, test_network_parameters, verify_equivocation,
    },
    directory::{Action, DirectoryClient, answer_held},
    proto::v1::{
        DirectoryRequest, GetConsensus, GetEvidence, SignedConsensus, directory_request::Request,
        directory_response::Response,
    },
};
use p2pmix_sim::{
    Actor, ActorId, Ctx, Link, Sim,
    authority::{AuthorityActor, AuthorityMessage, add_authorities},
};

const PERIOD: u64 = 8_000;

fn schedule() -> EpochSchedule {
    EpochSchedule::new(0, PERIOD)
}

/// A node or client: a fetch-only directory client that asks the authorities in its own order,
/// then every other authority once more for the same epoch (as a node that fetches from several
/// sources would), and records every document it held for each epoch.
struct Holder {
    directory: DirectoryClient,
    /// Actor of each authority's peer id.
    actors: BTreeMap<PeerId, ActorId>,
    /// Every authority, for the second round of fetches.
    order: Vec<PeerId>,
    asked_again: bool,
    /// Per epoch, every digest it held, in order (a switch would add a second).
    held: BTreeMap<u64, Vec<[u8; 32]>>,
}

impl Holder {
    fn note(&mut self) {
        for epoch in [1, 2, 3] {
            if let Some(c) = self.directory.consensus(epoch) {
                let seen = self.held.entry(epoch).or_default();
                if seen.last() != Some(&c.digest()) {
                    seen.push(c.digest());
                }
            }
        }
    }
}

impl Actor<AuthorityMessage> for Holder {
    fn poll_timeout(&self) -> Option<Instant> {
        self.directory.poll_timeout()
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, AuthorityMessage>) {
        self.directory.handle_timeout(ctx.now);
        while let Some(action) = self.directory.poll_action() {
            if let Action::Fetch { epoch, from } = action {
                let request = DirectoryRequest {
                    request: Some(Request::GetConsensus(GetConsensus { epoch })),
                };
                ctx.send(self.actors[&from], AuthorityMessage::Request(request));
            }
        }
        if !self.asked_again && self.directory.consensus(2).is_some() {
            self.asked_again = true;
            for a in &self.order {
                let request = DirectoryRequest {
                    request: Some(Request::GetConsensus(GetConsensus { epoch: 2 })),
                };
                ctx.send(self.actors[a], AuthorityMessage::Request(request));
            }
        }
    }

    fn handle_message(
        &mut self,
        ctx: &mut Ctx<'_, AuthorityMessage>,
        _from: ActorId,
        message: AuthorityMessage,
    ) {
        let AuthorityMessage::Response(response) = message else {
            return;
        };
        let offered = match response.response {
            Some(Response::Consensus(c)) => Some(c),
            _ => None,
        };
        let epoch = offered
            .as_ref()
            .and_then(|c| prost::Message::decode(&c.consensus[..]).ok())
            .map_or(2, |c: p2pmix::proto::v1::Consensus| c.epoch);
        let _ = self.directory.fetch_done(ctx.now.unix_ms, epoch, offered);
        self.note();
        // Keep the clock of the client going.
        self.handle_timeout(ctx);
    }
}

#[test]
fn with_a_split_view_and_a_double_signer_no_node_or_client_ever_switches_documents() {
    let keys: Vec<Keypair> = (0..3u8)
        .map(|i| Keypair::ed25519_from_bytes([i + 40; 32]).unwrap())
        .collect();
    let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
    let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut net: Sim<AuthorityMessage> = Sim::starting_at(7, schedule().start_of(1));
    net.set_default_link(Link::fixed(std::time::Duration::from_millis(2)));
    let configs = keys[..2].iter().map(|k| {
        AuthorityConfig::new(
            k.clone(),
            pinned.clone(),
            schedule(),
            test_network_parameters(),
        )
    });
    let ids = add_authorities(&mut net, configs, 5);
    // Authority 2 is played by the test: a silent actor, so that relays to it go somewhere.
    let liar_id = net.add(Silent);
    let actors: BTreeMap<PeerId, ActorId> = peers
        .iter()
        .copied()
        .zip(ids.iter().copied().chain([liar_id]))
        .collect();
    // Four holders: two ask authority 0 first, two authority 1.
    let mut holders = Vec::new();
    for h in 0..4 {
        let first = peers[h % 2];
        let mut order = vec![first, peers[1 - h % 2]];
        let directory =
            DirectoryClient::fetch_only(net.now(), schedule(), pinned.clone(), order.clone());
        order.push(peers[2]);
        holders.push(net.add(Holder {
            directory,
            actors: actors.clone(),
            order,
            asked_again: false,
            held: BTreeMap::new(),
        }));
    }

    let me = keys[2].public().encode_protobuf();
    let value = [9u8; 32];
    let inject = |net: &mut Sim<AuthorityMessage>, to: ActorId, request: Request| {
        net.with_actor(to, |a: &mut AuthorityActor, ctx| {
            a.request(
                ctx,
                DirectoryRequest {
                    request: Some(request),
                },
            )
        });
    };
    // The vote: to authority 0 only, a millisecond before the reveal deadline.
    let reveal_at = schedule().phase_start(1, Phase::Reveal);
    net.run_until(net.now().instant_at(reveal_at - 1), |_| false);
    let vote = build_vote(&keys[2], 2, [], commitment(2, &me, &value), None).unwrap();
    inject(&mut net, ids[0], Request::Vote(vote));
    net.run_until(net.now().instant_at(reveal_at + 1), |_| false);
    inject(
        &mut net,
        ids[0],
        Request::Reveal(build_reveal(&keys[2], 2, value).unwrap()),
    );
    // Both compute at the sign deadline: read the digests they signed.
    net.run_until(
        net.now()
            .instant_at(schedule().phase_start(1, Phase::Sign) + 10),
        |_| false,
    );
    let digest_of = |net: &Sim<AuthorityMessage>, i: usize| -> [u8; 32] {
        let a = net.actor::<AuthorityActor>(ids[i]).authority().unwrap();
        let own = keys[i].public().encode_protobuf();
        let s = a
            .state()
            .signatures
            .into_iter()
            .find(|s| s.authority == own)
            .expect("it signed");
        s.digest.try_into().unwrap()
    };
    let (d0, d1) = (digest_of(&net, 0), digest_of(&net, 1));
    assert_ne!(d0, d1, "the split view gives two documents");
    // The double signature, a millisecond before the publish deadline, one to each.
    let publish_at = schedule().phase_start(1, Phase::Publish);
    net.run_until(net.now().instant_at(publish_at - 1), |_| false);
    inject(
        &mut net,
        ids[0],
        Request::Signature(sign_consensus(&keys[2], 2, &d0).unwrap()),
    );
    inject(
        &mut net,
        ids[1],
        Request::Signature(sign_consensus(&keys[2], 2, &d1).unwrap()),
    );
    net.run_until(net.now().instant_at(schedule().start_of(2) + 500), |_| {
        false
    });

    // Two valid documents for epoch 2 exist...
    let doc = |i: usize| -> SignedConsensus {
        net.actor::<AuthorityActor>(ids[i])
            .authority()
            .unwrap()
            .consensus(Some(2))
            .expect("published")
            .clone()
    };
    let (first, second) = (doc(0), doc(1));
    assert_ne!(first.consensus, second.consensus);
    // ...both authorities caught the double signer afterwards...
    for &i in &ids {
        let e = net
            .actor::<AuthorityActor>(i)
            .authority()
            .unwrap()
            .evidence(Some(2));
        assert_eq!(e.equivocations.len(), 1);
        assert!(verify_equivocation(&e.equivocations[0], &pinned));
    }
    // ...and every holder kept the first it took, counted the other, and can prove who signed
    // both.
    let mut took = [0, 0];
    for &h in &holders {
        let holder = net.actor::<Holder>(h);
        let held = &holder.held[&2];
        assert_eq!(held.len(), 1, "a holder switched documents: {held:?}");
        took[usize::from(held[0] == d1)] += 1;
        assert_eq!(holder.directory.conflicts(), 1);
        let answer = answer_held(
            &holder.directory,
            DirectoryRequest {
                request: Some(Request::GetEvidence(GetEvidence { epoch: 2 })),
            },
        );
        let Some(Response::Evidence(evidence)) = answer.response else {
            panic!("no evidence served");
        };
        assert_eq!(evidence.conflicts.len(), 1);
        assert_eq!(evidence.equivocations.len(), 1, "one authority signed both");
        let proof = &evidence.equivocations[0];
        assert!(verify_equivocation(proof, &pinned));
        assert_eq!(proof.first.as_ref().unwrap().authority, me);
    }
    assert_eq!(
        took,
        [2, 2],
        "each document was taken by the holders that asked its authority"
    );
}

/// An actor that takes everything and answers nothing.
struct Silent;

impl Actor<AuthorityMessage> for Silent {
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _: &mut Ctx<'_, AuthorityMessage>) {}
    fn handle_message(
        &mut self,
        _: &mut Ctx<'_, AuthorityMessage>,
        _: ActorId,
        _: AuthorityMessage,
    ) {
    }
}
