//! Mix cores on the shared simulator (virtual time, links of zero latency): a stratified route of
//! five relays, each holding packets for exactly the sender's delay; drops by reason.
#![allow(missing_docs, unreachable_pub)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{EPOCH, deliver, rng, small_replay};
use p2pmix_mix::{
    Delay, Destination, DropReason, Geometry, HEADER_VERSION, Hop, NodeId, QueueLimits,
    build_packet, open_payload,
};
use p2pmix_sim::{
    Link, Sim,
    mix::{Final, MixMessage, RelayActor, RelayNode, RelaySetup, add_relays},
};

/// Relays that know each other, on links that take no time: a packet's time in the network is
/// exactly the sum of its hops' delays.
struct Net {
    sim: Sim<MixMessage>,
    relays: Vec<RelayNode>,
}

impl Net {
    fn new(n: u16, max_delay: Duration, limits: QueueLimits) -> Self {
        let mut sim = Sim::new(500);
        sim.set_default_link(Link::fixed(Duration::ZERO));
        let setup = RelaySetup {
            epoch: EPOCH,
            replay: small_replay(),
            max_delay,
            limits,
            seed: 500,
        };
        let relays = add_relays(&mut sim, n, setup);
        Net { sim, relays }
    }

    /// Hands `packet` to relay `at` now, as if it had just arrived.
    fn receive(&mut self, at: usize, packet: Vec<u8>) {
        let now = self.sim.now().mono;
        self.sim
            .actor_mut::<RelayActor>(self.relays[at].actor)
            .receive(now, packet);
    }

    /// Runs until nothing is held or in flight.
    fn run(&mut self) {
        let settled = self
            .sim
            .run_within(Duration::from_secs(3600), |s| s.next_event().is_none());
        assert!(settled, "the simulation did not settle");
    }

    fn relay(&self, i: usize) -> &RelayActor {
        self.sim.actor::<RelayActor>(self.relays[i].actor)
    }

    /// Drops by reason, over every relay.
    fn drops(&self) -> BTreeMap<DropReason, u64> {
        let mut all = BTreeMap::new();
        for i in 0..self.relays.len() {
            for (reason, n) in &self.relay(i).drops {
                *all.entry(*reason).or_default() += n;
            }
        }
        all
    }

    /// Packets that ended at a final hop, over every relay.
    fn delivered(&self) -> Vec<&Final> {
        (0..self.relays.len())
            .flat_map(|i| &self.relay(i).finals)
            .collect()
    }

    fn route(&self, delays_ms: &[u64]) -> Vec<Hop> {
        delays_ms
            .iter()
            .zip(&self.relays)
            .map(|(&ms, relay)| Hop {
                node: relay.node,
                key: relay.key,
                delay: Delay::from_duration(Duration::from_millis(ms)),
            })
            .collect()
    }
}

#[test]
fn each_hop_holds_the_packet_for_exactly_its_delay() {
    let mut net = Net::new(5, Duration::from_secs(10), QueueLimits::default());
    let t0 = net.sim.now().mono;
    let mut r = rng(501);
    let delays = [3u64, 40, 7, 120, 0];
    let route = net.route(&delays);
    for i in 0..50u8 {
        let packet =
            build_packet(&Geometry::DEFAULT, &route, &deliver(1, i), &[i; 64], &mut r).unwrap();
        net.receive(0, packet);
    }
    net.run();
    let delivered = net.delivered();
    assert_eq!(delivered.len(), 50, "drops: {:?}", net.drops());
    let total: u64 = delays.iter().sum();
    for Final {
        at,
        destination,
        packet,
    } in delivered
    {
        assert_eq!(*at, t0 + Duration::from_millis(total));
        let Destination::Deliver { label, .. } = destination else {
            panic!("not a delivery")
        };
        let payload = open_payload(
            &Geometry::DEFAULT,
            &packet[Geometry::DEFAULT.header_size()..],
        )
        .unwrap();
        assert_eq!(payload[0], label.0[0]);
    }
}

#[test]
fn drops_are_counted_by_reason() {
    let mut net = Net::new(
        5,
        Duration::from_millis(500),
        QueueLimits {
            max_packets: 4,
            max_bytes: usize::MAX,
        },
    );
    let mut r = rng(502);
    let g = Geometry::DEFAULT;
    // Garbage of the wrong size, and of the right size.
    net.receive(0, vec![1; 100]);
    net.receive(0, vec![HEADER_VERSION; g.packet_size()]);
    // A replay.
    let route = net.route(&[1, 1, 1]);
    let packet = build_packet(&g, &route, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, packet.clone());
    net.receive(0, packet);
    // A next hop outside the topology.
    let mut stranger = net.route(&[1, 1]);
    stranger[1].node = NodeId(999);
    let packet = build_packet(&g, &stranger, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, packet);
    // A delay above the cap.
    let slow = net.route(&[501, 1]);
    let packet = build_packet(&g, &slow, &deliver(1, 1), b"x", &mut r).unwrap();
    net.receive(0, packet);
    // A full queue (4 packets): one is already queued at node 0, three more fit, the fourth not.
    for _ in 0..4 {
        let packet = build_packet(&g, &route, &deliver(1, 1), b"x", &mut r).unwrap();
        net.receive(0, packet);
    }
    let expected: BTreeMap<DropReason, u64> = [
        (DropReason::WrongSize, 1),
        (DropReason::BadMac, 1),
        (DropReason::Replay, 1),
        (DropReason::UnknownNextHop, 1),
        (DropReason::DelayTooLong, 1),
        (DropReason::QueueFull, 1),
    ]
    .into();
    assert_eq!(net.drops(), expected);
    net.run();
    assert_eq!(
        net.delivered().len(),
        4,
        "the accepted packets still arrive"
    );
    assert!(DropReason::ALL.iter().all(|r| !r.label().is_empty()));
}
