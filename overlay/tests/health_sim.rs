//! The network watching its own health, on the shared virtual-time simulator: three authorities
//! that measure (each a [`Measurer`] next to its [`AuthorityActor`]), gateways and mixes whose
//! relays rotate keys and install each consensus, links that lose 5% of everything. Mixes that
//! drop everything, drop half, or add 2 s start misbehaving once the network runs, and must be
//! out of the consensus within two epochs; honest mixes must stay in; one authority lies about
//! everyone and changes nothing.
//!
//! One simulation serves the four tests (it takes seconds of CPU: each probe is five real
//! Sphinx unwraps); each test asserts its own part of what happened.
#![allow(missing_docs, unreachable_pub)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
    time::{Duration, Instant},
};

use libp2p::{PeerId, identity::Keypair};
use p2pmix::{
    bootstrap::{
        Authority, AuthorityConfig, EpochSchedule, Phase, PinnedAuthorities, sign_descriptor,
        test_network_parameters, verify_signed_consensus,
    },
    measure::{MeasureConfig, MeasuredNetwork, Measurer, NodeReport},
    sphinx::{
        ClientId, Geometry, KeyRing, Label, NodeId, NodeSecretKey, QueueLimits, Relay, RelayConfig,
        ReplayConfig,
    },
};
use p2pmix_proto::v1::{
    Consensus, DirectoryRequest, DirectoryResponse, EpochKey, ExclusionReason, GetConsensus,
    NetworkParameters, NodeDescriptor, NodeMeasurement, Role, SignedConsensus,
    directory_request::Request, directory_response::Response,
};
use p2pmix_sim::{
    Actor, ActorId, Ctx, Link, Sim,
    authority::{AuthorityActor, DirectoryMessage},
    mix::{RelayActor, SphinxMessage},
};
use prost::Message;
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// Epoch length: long against the 2 s a slow mix adds and the measurers' loss timeout.
const PERIOD_MS: u64 = 60_000;
const MIXES_PER_LAYER: usize = 4;
const GATEWAYS: usize = 2;

/// Everything that crosses the simulated network.
#[derive(Debug, Clone)]
enum Msg {
    Packet(Vec<u8>),
    Delivery { client: ClientId, label: Label },
    Request(DirectoryRequest),
    Response(DirectoryResponse),
}

impl SphinxMessage for Msg {
    fn packet(bytes: Vec<u8>) -> Self {
        Msg::Packet(bytes)
    }
    fn delivery(client: ClientId, label: Label, _body: Vec<u8>) -> Self {
        Msg::Delivery { client, label }
    }
    fn into_packet(self) -> Result<Vec<u8>, Self> {
        match self {
            Msg::Packet(p) => Ok(p),
            other => Err(other),
        }
    }
}

impl DirectoryMessage for Msg {
    fn request(request: DirectoryRequest) -> Self {
        Msg::Request(request)
    }
    fn response(response: DirectoryResponse) -> Self {
        Msg::Response(response)
    }
    fn into_request(self) -> Result<DirectoryRequest, Self> {
        match self {
            Msg::Request(r) => Ok(r),
            other => Err(other),
        }
    }
    fn into_response(self) -> Option<DirectoryResponse> {
        match self {
            Msg::Response(r) => Some(r),
            _ => None,
        }
    }
}

fn schedule() -> EpochSchedule {
    EpochSchedule::new(0, PERIOD_MS)
}

fn keypair(seed: u64) -> Keypair {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[31] = 0x5a;
    Keypair::ed25519_from_bytes(bytes).expect("32 bytes")
}

/// The Sphinx key of node `index` for `epoch` (the same in its descriptor and its ring).
fn sphinx_secret(index: u64, epoch: u64) -> NodeSecretKey {
    NodeSecretKey::random(&mut ChaCha20Rng::seed_from_u64(index * 10_000 + epoch))
}

/// A gateway or mix: its relay, and what a node does around it (descriptor uploads, key
/// rotation, fetching and installing each consensus).
struct NodeActor {
    relay: RelayActor,
    index: u64,
    keypair: Keypair,
    role: Role,
    authorities: Vec<ActorId>,
    pinned: PinnedAuthorities,
    actors: HashMap<PeerId, ActorId>,
    uploaded: u64,
    installed: u64,
    next: Instant,
}

/// How often a node looks at its schedule (a fraction of a phase).
const NODE_TICK: Duration = Duration::from_millis(PERIOD_MS / 32);

impl NodeActor {
    fn descriptor(&self, epoch: u64) -> DirectoryRequest {
        let descriptor = NodeDescriptor {
            epoch,
            identity: self.keypair.public().encode_protobuf(),
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", 20_000 + self.index)],
            role: self.role as i32,
            sphinx_keys: (epoch..epoch + 2)
                .map(|e| EpochKey {
                    epoch: e,
                    sphinx_public_key: sphinx_secret(self.index, e)
                        .public_key()
                        .to_bytes()
                        .to_vec(),
                })
                .collect(),
            software_version: "sim".into(),
            protocol_version: 1,
            family: format!("operator-{}", self.index),
        };
        DirectoryRequest {
            request: Some(Request::Descriptor(
                sign_descriptor(&self.keypair, &descriptor).expect("signs"),
            )),
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_, Msg>) {
        let now = ctx.now;
        let s = schedule();
        let epoch = s.epoch_at(now.unix_ms);
        self.relay.relay().with_keys(|ring| {
            ring.advance(epoch, now.mono);
            ring.handle_timeout(now.mono);
            for e in [epoch, epoch + 1] {
                if ring.for_epoch(e).is_none() {
                    let _ = ring.insert(e, sphinx_secret(self.index, e));
                }
            }
        });
        if s.phase_at(now.unix_ms) == Phase::Descriptors && self.uploaded <= epoch {
            for a in &self.authorities {
                ctx.send(*a, Msg::Request(self.descriptor(epoch + 1)));
            }
            self.uploaded = epoch + 1;
        }
        if s.phase_at(now.unix_ms) >= Phase::Publish && self.installed <= epoch {
            let from = self.authorities[(self.index as usize) % self.authorities.len()];
            let get = Request::GetConsensus(GetConsensus { epoch: epoch + 1 });
            ctx.send(from, Msg::Request(DirectoryRequest { request: Some(get) }));
        }
        self.next = now.mono + NODE_TICK;
    }

    fn install(&mut self, signed: SignedConsensus) {
        let Ok(c) = Consensus::decode(&signed.consensus[..]) else {
            return;
        };
        let Ok(verified) =
            verify_signed_consensus(signed, &self.pinned, c.valid_after_ms, Some(c.epoch))
        else {
            return;
        };
        let topology: HashMap<NodeId, ActorId> = verified
            .nodes()
            .iter()
            .filter_map(|n| {
                let peer = p2pmix::bootstrap::peer_id(n)?;
                Some((NodeId(n.node_id as u16), *self.actors.get(&peer)?))
            })
            .collect();
        self.relay.relay().set_topology(verified.epoch(), topology);
        self.installed = self.installed.max(verified.epoch());
    }
}

impl Actor<Msg> for NodeActor {
    fn poll_timeout(&self) -> Option<Instant> {
        let relay = Actor::<Msg>::poll_timeout(&self.relay);
        Some(relay.map_or(self.next, |r| r.min(self.next)))
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, Msg>) {
        if ctx.mono() >= self.next {
            self.tick(ctx);
        }
        Actor::<Msg>::handle_timeout(&mut self.relay, ctx);
    }
    fn handle_message(&mut self, ctx: &mut Ctx<'_, Msg>, from: ActorId, message: Msg) {
        match message {
            Msg::Response(DirectoryResponse {
                response: Some(Response::Consensus(signed)),
            }) => self.install(signed),
            Msg::Packet(p) => self.relay.handle_message(ctx, from, Msg::Packet(p)),
            _ => {}
        }
    }
}

/// How an authority's measurer reports (an honest one reports what it found).
type Lie = fn(&NodeReport, &HashMap<Vec<u8>, &'static str>) -> NodeReport;

/// An authority with its measurer: the measurer probes the consensus in force and hands its
/// reports to the authority before each vote.
struct MeasuringAuthority {
    auth: AuthorityActor,
    measurer: Measurer,
    pinned: PinnedAuthorities,
    actors: HashMap<PeerId, ActorId>,
    in_force: Option<u64>,
    lie: Option<Lie>,
    kinds: HashMap<Vec<u8>, &'static str>,
}

impl MeasuringAuthority {
    fn next_epoch_at(&self, now_ms: u64) -> u64 {
        schedule().start_of(schedule().epoch_at(now_ms) + 1)
    }
}

impl Actor<Msg> for MeasuringAuthority {
    fn poll_timeout(&self) -> Option<Instant> {
        let now = self.auth.authority()?.poll_timeout()?;
        let measure = self.measurer.poll_timeout().unwrap_or(now);
        Some(now.min(measure))
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, Msg>) {
        let now = ctx.now;
        let epoch = schedule().epoch_at(now.unix_ms);
        if self.in_force != Some(epoch)
            && let Some(signed) = self.auth.authority().and_then(|a| a.consensus(Some(epoch)))
            && let Ok(v) =
                verify_signed_consensus(signed.clone(), &self.pinned, now.unix_ms, Some(epoch))
        {
            let network = MeasuredNetwork::from_consensus(&v);
            for g in network.topology().gateways() {
                self.measurer.set_gateway_ready(g.peer, true);
            }
            self.measurer.set_network(Some(network));
            self.in_force = Some(epoch);
        }
        let due = self
            .auth
            .authority()
            .and_then(|a| a.vote_due_ms())
            .is_some_and(|at| now.unix_ms >= at);
        if due {
            let reports: Vec<NodeReport> = self
                .measurer
                .report(now.mono)
                .iter()
                .map(|r| match self.lie {
                    Some(lie) => lie(r, &self.kinds),
                    None => r.clone(),
                })
                .collect();
            let measurements: Vec<NodeMeasurement> = NodeReport::to_measurements(&reports);
            if let Some(a) = self.auth.authority_mut() {
                a.set_measurements(measurements);
            }
        }
        Actor::<Msg>::handle_timeout(&mut self.auth, ctx);
        self.measurer.handle_timeout(now.mono, ctx.rng);
        while let Some((gateway, packet)) = self.measurer.poll_transmit() {
            if let Some(to) = self.actors.get(&gateway) {
                ctx.send(*to, Msg::Packet(packet));
            }
        }
        let _ = self.next_epoch_at(now.unix_ms);
    }

    fn handle_message(&mut self, ctx: &mut Ctx<'_, Msg>, from: ActorId, message: Msg) {
        match message {
            Msg::Delivery { client, label } => {
                assert_eq!(client, self.measurer.client(), "only probes come here");
                self.measurer.handle_delivery(ctx.mono(), &label);
            }
            other => self.auth.handle_message(ctx, from, other),
        }
    }
}

/// Which node does what, by name.
const BLACK_HOLE: &str = "black hole";
const HALF: &str = "drops half";
const SLOW: &str = "adds 2 s";
const HONEST: &str = "honest";

/// What the simulation produced: every authority-0 consensus by epoch, the node kinds by
/// identity, and when the misbehaviour started.
struct Outcome {
    consensuses: BTreeMap<u64, Consensus>,
    kinds: HashMap<Vec<u8>, &'static str>,
    started_ms: u64,
}

/// The liar: every node it measured is dead to it, except the dead, which it calls perfect.
fn liar(r: &NodeReport, kinds: &HashMap<Vec<u8>, &'static str>) -> NodeReport {
    let bad = kinds.get(&r.identity).is_some_and(|k| *k != HONEST);
    NodeReport {
        delivery_permille: if bad { 1000 } else { 0 },
        delay_p90_ms: if bad { 0 } else { 60_000 },
        ..r.clone()
    }
}

fn parameters() -> NetworkParameters {
    NetworkParameters {
        mean_delay_us: 20_000,
        health_probes_per_node: 500,
        health_min_probes: 50,
        ..test_network_parameters()
    }
}

fn simulate() -> Outcome {
    let mut sim: Sim<Msg> = Sim::starting_at(31, schedule().start_of(1));
    sim.set_default_link(Link {
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(1),
        loss: 0.05,
    });
    let keys: Vec<Keypair> = (0..3).map(keypair).collect();
    let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
    let parameters = parameters();
    let authority_ids: Vec<ActorId> = (0..3).map(ActorId).collect();
    let nodes = GATEWAYS + 3 * MIXES_PER_LAYER;
    let node_keys: Vec<Keypair> = (0..nodes as u64).map(|i| keypair(100 + i)).collect();
    let first = authority_ids.len();
    let actors: HashMap<PeerId, ActorId> = node_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.public().to_peer_id(), ActorId(first + i)))
        .collect();
    let mut kinds: HashMap<Vec<u8>, &'static str> = HashMap::new();
    // Three mixes misbehave (they land in layers by the shared random value).
    let bad = [(2usize, BLACK_HOLE), (7, HALF), (12, SLOW)];
    for (i, key) in node_keys.iter().enumerate().skip(GATEWAYS) {
        let kind = bad
            .iter()
            .find(|(b, _)| *b == i)
            .map_or(HONEST, |(_, k)| *k);
        kinds.insert(key.public().encode_protobuf(), kind);
    }

    // The authorities, each with a measurer whose identity of its own is registered at every
    // gateway.
    let period = schedule().period_ms();
    let mut measurer_ids = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let config = MeasureConfig::from_parameters(&parameters, period).expect("measures");
        let me = p2pmix::client::client_id(&keypair(900 + i as u64).public().to_peer_id());
        measurer_ids.push(me);
        let authority = Authority::new(
            AuthorityConfig::new(key.clone(), pinned.clone(), schedule(), parameters),
            sim.now(),
        );
        let peers = authority_ids.iter().copied().filter(|p| p.0 != i).collect();
        let id = sim.add(MeasuringAuthority {
            auth: AuthorityActor::new(authority, ChaCha20Rng::seed_from_u64(500 + i as u64), peers),
            measurer: Measurer::new(config, me, sim.now().mono),
            pinned: pinned.clone(),
            actors: actors.clone(),
            in_force: None,
            lie: (i == 0).then_some(liar as Lie),
            kinds: kinds.clone(),
        });
        assert_eq!(id, authority_ids[i]);
    }

    for (i, key) in node_keys.iter().enumerate() {
        let role = if i < GATEWAYS {
            Role::Gateway
        } else {
            Role::Mix
        };
        let relay = Relay::new(
            Geometry::DEFAULT,
            RelayConfig {
                max_delay: Duration::from_micros(parameters.max_delay_us),
            },
            KeyRing::new(
                1,
                Duration::from_millis(PERIOD_MS),
                ReplayConfig {
                    expected_packets: 200_000,
                    false_positive_rate: 1e-6,
                },
            ),
        );
        let mut relay = RelayActor::new(relay, QueueLimits::default());
        if role == Role::Gateway {
            for (me, authority) in measurer_ids.iter().zip(&authority_ids) {
                relay.serve_client(*me, *authority);
            }
        }
        let id = sim.add(NodeActor {
            relay,
            index: i as u64,
            keypair: key.clone(),
            role,
            authorities: authority_ids.clone(),
            pinned: pinned.clone(),
            actors: actors.clone(),
            uploaded: 0,
            installed: 0,
            next: sim.now().mono,
        });
        assert_eq!(id, ActorId(first + i));
    }

    // A healthy network until the consensus of epoch 4 (the first consensus is for epoch 2;
    // the votes for 4 are the first to score every node), then the misbehaviour starts, a
    // third into epoch 3: just after that epoch's vote, the worst moment for the measurers. Authority 1's documents are collected
    // as they come (an authority keeps only the last few).
    let started_ms = schedule().start_of(3) + PERIOD_MS / 3;
    let end_ms = started_ms + 2 * PERIOD_MS;
    let mut consensuses = BTreeMap::new();
    let mut at_ms = sim.now().unix_ms;
    while at_ms < end_ms {
        let next_ms = (at_ms + PERIOD_MS / 4).min(end_ms);
        if at_ms < started_ms && next_ms >= started_ms {
            let deadline = sim.now().instant_at(started_ms);
            sim.run_until(deadline, |_| false);
            for (i, kind) in bad {
                let node = sim.actor_mut::<NodeActor>(ActorId(first + i));
                match kind {
                    BLACK_HOLE => node.relay.drop_fraction = 1.0,
                    HALF => node.relay.drop_fraction = 0.5,
                    _ => node.relay.added_delay = Duration::from_secs(2),
                }
            }
        }
        let deadline = sim.now().instant_at(next_ms);
        sim.run_until(deadline, |_| false);
        let authority = sim
            .actor::<MeasuringAuthority>(authority_ids[1])
            .auth
            .authority()
            .expect("running");
        for e in 1..=schedule().epoch_at(next_ms) + 1 {
            if let Some(signed) = authority.consensus(Some(e)) {
                consensuses
                    .entry(e)
                    .or_insert_with(|| Consensus::decode(&signed.consensus[..]).expect("decodes"));
            }
        }
        at_ms = next_ms;
    }
    Outcome {
        consensuses,
        kinds,
        started_ms,
    }
}

fn outcome() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(simulate)
}

fn identity_of(o: &Outcome, kind: &str) -> Vec<u8> {
    o.kinds
        .iter()
        .find(|(_, k)| **k == kind)
        .map(|(id, _)| id.clone())
        .expect("that kind exists")
}

/// The consensus in force two epochs after the misbehaviour started leaves the node out, for
/// `reason`; every consensus from before the start keeps it in.
fn out_within_two_epochs(kind: &str, reasons: &[ExclusionReason]) {
    let o = outcome();
    let id = identity_of(o, kind);
    let start_epoch = schedule().epoch_at(o.started_ms);
    let by = schedule().epoch_at(o.started_ms + 2 * PERIOD_MS);
    for (epoch, c) in &o.consensuses {
        let inside = c.nodes.iter().any(|n| n.identity == id);
        if *epoch <= start_epoch {
            assert!(
                inside,
                "{kind}: left out of epoch {epoch}, before it misbehaved"
            );
        }
    }
    let c = &o.consensuses[&by];
    assert!(
        c.nodes.iter().all(|n| n.identity != id),
        "{kind}: still in the consensus of epoch {by}"
    );
    let e = c
        .excluded
        .iter()
        .find(|e| e.identity == id)
        .expect("recorded as excluded");
    assert!(reasons.contains(&e.reason()), "{kind}: {e:?}");
}

#[test]
fn a_mix_that_drops_everything_is_out_within_two_epochs() {
    out_within_two_epochs(BLACK_HOLE, &[ExclusionReason::LowDelivery]);
}

#[test]
fn a_mix_that_drops_half_is_out_within_two_epochs() {
    out_within_two_epochs(HALF, &[ExclusionReason::LowDelivery]);
}

#[test]
fn a_mix_that_adds_two_seconds_is_out_within_two_epochs() {
    out_within_two_epochs(SLOW, &[ExclusionReason::Slow]);
}

#[test]
fn honest_mixes_on_lossy_links_stay_in_whatever_one_authority_says() {
    let o = outcome();
    assert!(o.consensuses.len() >= 4, "{:?}", o.consensuses.keys());
    for (epoch, c) in &o.consensuses {
        for (id, kind) in &o.kinds {
            if *kind == HONEST {
                assert!(
                    c.nodes.iter().any(|n| n.identity == *id),
                    "an honest mix was left out of epoch {epoch}: {:?}",
                    c.excluded
                );
            }
        }
        assert_eq!(
            c.nodes.iter().filter(|n| n.role() == Role::Gateway).count(),
            GATEWAYS
        );
        // From epoch 4 on every node in has been measured, honest ones near 1000 per mille.
        if *epoch >= 4 {
            for n in &c.nodes {
                if o.kinds.get(&n.identity) == Some(&HONEST) {
                    let h = n.health.expect("health recorded");
                    assert!(h.delivery_permille >= 900, "epoch {epoch}: {h:?}");
                }
            }
        }
    }
}
