//! What the network's self-measurement costs (issue 13): the probe traffic each authority sends
//! and each node carries at 100 and 1,000 nodes with the default parameters, the authority's CPU
//! to build it (against building the same number of client loop-cover packets, its peer: a
//! probe is one, plus the record kept of it) and the memory of the two-epoch window.
//!
//! `cargo bench -p p2pmix --bench measure`
//!
//! The authority's rate is counted, not assumed: the measurer runs sans-IO over two minutes of
//! virtual time and the probes it emits are tallied (in all and per entry gateway); what each
//! mix and gateway carries follows from it, every probe crossing one mix of each layer and
//! entering and leaving at one gateway.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;
use p2pmix::{
    bootstrap::default_parameters,
    client::{RouteNode, RoutePolicy, Topology, choose_route, client_id},
    measure::{MeasureConfig, MeasuredNetwork, Measurer},
    sphinx::{Destination, Geometry, Label, NodeId, NodeSecretKey, build_cover_packet},
};
use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

/// The authorities of the network (each sends its own probes).
const AUTHORITIES: u64 = 3;
/// The example configuration's epoch.
const EPOCH: Duration = Duration::from_secs(3600);
/// Virtual time each size is run for.
const RUN: Duration = Duration::from_secs(120);

fn topology(nodes: usize, rng: &mut ChaCha20Rng) -> Topology {
    let gateways = (nodes / 10).max(2);
    let per_layer = (nodes - gateways) / 3;
    let mut id = 0u16;
    let mut node = |rng: &mut ChaCha20Rng| {
        let n = RouteNode::new(
            NodeId(id),
            PeerId::random(),
            NodeSecretKey::random(rng).public_key(),
            "",
            &[],
        );
        id += 1;
        n
    };
    let g = (0..gateways).map(|_| node(rng)).collect();
    let layers = (0..3)
        .map(|_| (0..per_layer).map(|_| node(rng)).collect())
        .collect();
    Topology::new(7, Duration::from_millis(50), g, layers)
}

fn main() {
    let parameters = default_parameters();
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    println!(
        "measurement cost, default parameters ({} probes per node and epoch, {} s epochs, {} \
         authorities):",
        parameters.health_probes_per_node,
        EPOCH.as_secs(),
        AUTHORITIES
    );
    for nodes in [100usize, 1_000] {
        let topology = topology(nodes, &mut rng);
        let mut config = MeasureConfig::from_parameters(&parameters, EPOCH.as_millis() as u64)
            .expect("the defaults measure");
        config.policy = RoutePolicy::default();
        let start = Instant::now();
        let mut measurer = Measurer::new(config, client_id(&PeerId::random()), start);
        measurer.set_network(Some(MeasuredNetwork::new(topology.clone())));
        for g in topology.gateways() {
            measurer.set_gateway_ready(g.peer, true);
        }
        // Run the measurer through RUN of virtual time, timing its CPU.
        let mut per_gateway: HashMap<PeerId, u64> = HashMap::new();
        let mut now = start;
        let cpu = Instant::now();
        let mut packets = 0u64;
        while now < start + RUN {
            measurer.handle_timeout(now, &mut rng);
            while let Some((gateway, packet)) = measurer.poll_transmit() {
                std::hint::black_box(&packet);
                *per_gateway.entry(gateway).or_default() += 1;
                packets += 1;
            }
            now = measurer
                .poll_timeout()
                .unwrap()
                .max(now + Duration::from_micros(1));
        }
        let cpu = cpu.elapsed();
        let per_probe = cpu / packets.max(1) as u32;

        // The peer: the same number of client loop-cover packets, built directly.
        let gateway = topology.gateways()[0].peer;
        let me = client_id(&PeerId::random());
        let peer = Instant::now();
        for _ in 0..packets {
            let route = choose_route(
                &topology,
                &gateway,
                &gateway,
                &RoutePolicy::default(),
                &mut rng,
            )
            .unwrap();
            let mut label = [0u8; 16];
            rand::Rng::fill_bytes(&mut rng, &mut label);
            let packet = build_cover_packet(
                &Geometry::DEFAULT,
                &route,
                &Destination::Deliver {
                    client: me,
                    label: Label(label),
                },
                &mut rng,
            )
            .unwrap();
            std::hint::black_box(packet);
        }
        let per_cover = peer.elapsed() / packets.max(1) as u32;

        let rate = packets as f64 / RUN.as_secs_f64();
        let per_layer = topology.layer(1).len() as f64;
        let gateways = topology.gateways().len() as f64;
        let bytes = Geometry::DEFAULT.packet_size() as f64;
        // Every probe crosses one mix of each layer, and enters and leaves at one gateway.
        let mix_rate = rate * AUTHORITIES as f64 / per_layer;
        let gateway_rate = 2.0 * rate * AUTHORITIES as f64 / gateways;
        let busiest = per_gateway.values().max().copied().unwrap_or(0) as f64 / RUN.as_secs_f64();
        println!(
            "  {nodes} nodes ({} gateways, {} mixes a layer): an authority sends {rate:.2} \
             probes/s ({:.1} KiB/s); each mix carries {mix_rate:.3} probes/s of all \
             authorities, each gateway {gateway_rate:.3} (in and out; the busiest gateway took \
             {busiest:.2}/s of this authority's)",
            gateways as usize,
            per_layer as usize,
            rate * bytes / 1024.0,
        );
        println!(
            "    authority CPU {per_probe:?} a probe vs {per_cover:?} a loop-cover packet \
             ({:.2}x), {:.3}% of one core; window memory {} probes remembered",
            per_probe.as_secs_f64() / per_cover.as_secs_f64().max(1e-12),
            per_probe.as_secs_f64() * rate * 100.0,
            measurer.remembered(),
        );
        let window = 2.0 * rate * EPOCH.as_secs_f64();
        println!(
            "    a full two-epoch window holds {window:.0} probes (about {:.1} MiB at ~100 B each)",
            window * 100.0 / (1024.0 * 1024.0)
        );
    }
}
