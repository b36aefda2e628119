//! A node's own loop cover, sans-IO: a Poisson stream of packets (mean interval from the
//! consensus's `mix_loop_interval_us`) around the layers and back to the node, which counts
//! what returns. It tells the node that the network carries traffic, and it is traffic in every
//! mix like anyone else's: a mix's loop starts at the next layer and wraps around through a
//! gateway ([`choose_loop`]), so that its first and last hops see a packet come from the layer
//! before them and go to the layer after, as for client packets.
//!
//! The driver installs the topology of the consensus in force ([`LoopCover::set_network`]) and
//! sends what [`LoopCover::poll_transmit`] gives it to the first hop; packets that come back are
//! recognised by their client id ([`LoopCover::is_loop`]). Time and randomness are passed in.

use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use p2pmix_mix::{ClientId, Destination, Geometry, Label, build_packet, sample_exponential};
use rand::{CryptoRng, RngExt};

use p2pmix_bootstrap::VerifiedConsensus;

use crate::client::{RoutePolicy, Topology, choose_loop, client_id};

/// How long the stream waits before looking again when it has no network to send into.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Shortest mean interval accepted from a consensus.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Counters of a node's loop cover.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoverStats {
    /// Loop packets sent.
    pub sent: u64,
    /// Loop packets that came back.
    pub returned: u64,
}

/// Where loops go: the topology of the consensus in force and the stream's mean interval.
#[derive(Debug)]
struct LoopNetwork {
    topology: Topology,
    mean: Duration,
}

/// A loop packet ready to leave, and its first hop.
#[derive(Debug)]
pub struct LoopPacket {
    /// The first hop (a mix of the next layer, or a gateway for a last-layer mix; a layer-1 mix
    /// for a gateway).
    pub to: PeerId,
    /// The packet.
    pub packet: Vec<u8>,
}

/// The node's loop-cover stream. See the module documentation.
#[derive(Debug)]
pub struct LoopCover {
    me: PeerId,
    loop_id: ClientId,
    network: Option<LoopNetwork>,
    /// The epoch of the consensus the stream last followed (also when it asked for no loops).
    followed: Option<u64>,
    next: Instant,
    outgoing: Option<LoopPacket>,
    stats: CoverStats,
}

impl LoopCover {
    /// The stream of node `me`, first due at `now`.
    pub fn new(me: PeerId, now: Instant) -> Self {
        LoopCover {
            me,
            loop_id: client_id(&me),
            network: None,
            followed: None,
            next: now,
            outgoing: None,
            stats: CoverStats::default(),
        }
    }

    /// The client id loop packets are addressed to.
    pub fn loop_id(&self) -> ClientId {
        self.loop_id
    }

    /// The epoch of the consensus the stream follows.
    pub fn epoch(&self) -> Option<u64> {
        self.followed
    }

    /// Follows the consensus in force (`None`: none is, nothing is sent): its topology and its
    /// `mix_loop_interval_us` (0: no node loop cover in this network). Only a new epoch costs
    /// anything.
    pub fn follow(&mut self, in_force: Option<&VerifiedConsensus>) {
        let epoch = in_force.map(VerifiedConsensus::epoch);
        if epoch == self.followed {
            return;
        }
        self.followed = epoch;
        self.set_network(in_force.map(|c| {
            (
                Topology::from_consensus(c),
                c.parameters().mix_loop_interval_us,
            )
        }));
    }

    /// Routes loops through `topology` with a mean interval of `interval_us` (0: no node loop
    /// cover in this network); `None`: nothing is sent.
    pub fn set_network(&mut self, network: Option<(Topology, u64)>) {
        self.network = network.and_then(|(topology, interval_us)| {
            (interval_us > 0).then(|| LoopNetwork {
                topology,
                mean: Duration::from_micros(interval_us).max(MIN_INTERVAL),
            })
        });
    }

    /// Counters.
    pub fn stats(&self) -> CoverStats {
        self.stats
    }

    /// When the next loop packet is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    /// Builds the loop packet due at `now` (when admitted and every layer has an independent
    /// mix) and draws the next send time.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) {
        if now < self.next {
            return;
        }
        let Some(LoopNetwork { topology, mean }) = &self.network else {
            self.next = now + IDLE_RECHECK;
            return;
        };
        self.next = now + sample_exponential(*mean, rng).as_duration();
        // Not admitted, or no independent mix in some layer: no loop this time.
        let Ok(route) = choose_loop(topology, &self.me, &RoutePolicy::default(), rng) else {
            return;
        };
        let Some(first) = route
            .first()
            .and_then(|h| topology.by_id(h.node))
            .map(|n| n.peer)
        else {
            return;
        };
        let destination = Destination::Deliver {
            client: self.loop_id,
            label: Label(rng.random()),
        };
        match build_packet(&Geometry::DEFAULT, &route, &destination, &[], rng) {
            Ok(packet) => {
                self.stats.sent += 1;
                self.outgoing = Some(LoopPacket { to: first, packet });
            }
            Err(e) => tracing::debug!(%e, "could not build a loop-cover packet"),
        }
    }

    /// The packet to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<LoopPacket> {
        self.outgoing.take()
    }

    /// Whether a packet delivered here for `client` is one of this node's loops (and counts it
    /// as returned).
    pub fn is_loop(&mut self, client: &ClientId) -> bool {
        let mine = *client == self.loop_id;
        if mine {
            self.stats.returned += 1;
        }
        mine
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use p2pmix_sim::{
        Actor, ActorId, Ctx, Link, Sim,
        mix::{MixMessage, RelayActor, RelaySetup, add_relays},
    };

    use super::*;
    use crate::client::RouteNode;

    /// The node's cover stream as an actor: sends to the first mix, takes back its deliveries.
    struct Cover {
        cover: LoopCover,
        actors: HashMap<PeerId, ActorId>,
        sent_at: Vec<Instant>,
        first_hops: Vec<ActorId>,
    }

    impl Actor<MixMessage> for Cover {
        fn poll_timeout(&self) -> Option<Instant> {
            self.cover.poll_timeout()
        }
        fn handle_timeout(&mut self, ctx: &mut Ctx<'_, MixMessage>) {
            self.cover.handle_timeout(ctx.mono(), ctx.rng);
            if let Some(LoopPacket { to: peer, packet }) = self.cover.poll_transmit() {
                let to = self.actors[&peer];
                self.sent_at.push(ctx.mono());
                self.first_hops.push(to);
                ctx.send(to, MixMessage::Packet(packet));
            }
        }
        fn handle_message(&mut self, _: &mut Ctx<'_, MixMessage>, _: ActorId, m: MixMessage) {
            if let MixMessage::Delivery { client, .. } = m {
                assert!(
                    self.cover.is_loop(&client),
                    "only the node's loops come here"
                );
            }
        }
    }

    /// Three layers of two mixes, and the node itself (a gateway) as relay 6.
    fn network(sim: &mut Sim<MixMessage>) -> (Vec<ActorId>, Topology, PeerId) {
        let relays = add_relays(sim, 7, RelaySetup::default());
        let peers: Vec<PeerId> = (0..7).map(|_| PeerId::random()).collect();
        let node = |i: usize| RouteNode::new(relays[i].node, peers[i], relays[i].key, "", &[]);
        let layers = (0..3).map(|l| vec![node(2 * l), node(2 * l + 1)]).collect();
        let topology = Topology::new(
            RelaySetup::default().epoch,
            Duration::from_millis(20),
            vec![node(6)],
            layers,
        );
        (relays.iter().map(|r| r.actor).collect(), topology, peers[6])
    }

    #[test]
    fn loops_leave_as_a_poisson_stream_through_every_layer_and_all_come_back() {
        let mut sim = Sim::new(21);
        sim.set_default_link(Link::fixed(Duration::from_millis(3)));
        let (relays, topology, me) = network(&mut sim);
        let peers: HashMap<PeerId, ActorId> = topology
            .layer(1)
            .iter()
            .chain(topology.layer(2))
            .chain(topology.layer(3))
            .chain(topology.gateways())
            .map(|n| (n.peer, relays[usize::from(n.id.0)]))
            .collect();
        let mut cover = LoopCover::new(me, sim.now().mono);
        // No consensus yet: nothing leaves, the stream looks again every second.
        cover.set_network(None);
        let actor = sim.add(Cover {
            cover,
            actors: peers,
            sent_at: Vec::new(),
            first_hops: Vec::new(),
        });
        sim.actor_mut::<RelayActor>(relays[6])
            .serve_client(client_id(&me), actor);
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sim.actor::<Cover>(actor).cover.stats().sent, 0);
        // A consensus with loops every 100 ms on average.
        sim.actor_mut::<Cover>(actor)
            .cover
            .set_network(Some((topology, 100_000)));
        sim.run_for(Duration::from_secs(200));
        sim.actor_mut::<Cover>(actor).cover.set_network(None);
        sim.run_for(Duration::from_secs(5)); // the last loops come home
        let cover = sim.actor::<Cover>(actor);
        let stats = cover.cover.stats();
        assert!(
            (1_800..2_200).contains(&stats.sent),
            "about 2000 loops in 200 s: {}",
            stats.sent
        );
        assert_eq!(stats.returned, stats.sent, "every loop came back");
        // Exponential gaps: mean 100 ms, standard deviation about the mean.
        let gaps: Vec<f64> = cover
            .sent_at
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((0.09..0.11).contains(&mean), "mean gap {mean}");
        assert!(
            (0.8..1.2).contains(&(sd / mean)),
            "coefficient of variation {}",
            sd / mean
        );
        // Every loop entered at layer 1 and crossed one mix of each layer.
        assert!(
            cover
                .first_hops
                .iter()
                .all(|a| [relays[0], relays[1]].contains(a))
        );
        for layer in 0..3 {
            let forwarded: u64 = (0..2)
                .map(|i| sim.actor::<RelayActor>(relays[2 * layer + i]).forwarded)
                .sum();
            assert_eq!(
                forwarded,
                stats.sent,
                "layer {} forwarded each loop",
                layer + 1
            );
        }
    }

    #[test]
    fn a_network_without_node_loops_sends_none() {
        let mut sim: Sim<MixMessage> = Sim::new(22);
        let (_, topology, me) = network(&mut sim);
        let mut cover = LoopCover::new(me, sim.now().mono);
        cover.set_network(Some((topology, 0)));
        let mut rng = p2pmix_sim::rng(1);
        let mut now = sim.now().mono;
        for _ in 0..100 {
            cover.handle_timeout(now, &mut rng);
            assert!(cover.poll_transmit().is_none());
            now = cover.poll_timeout().unwrap();
        }
        assert_eq!(cover.stats().sent, 0);
        assert_eq!(
            now - sim.now().mono,
            IDLE_RECHECK * 100,
            "it only looks again"
        );
    }
}
