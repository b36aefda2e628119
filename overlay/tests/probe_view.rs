//! What a measured mix sees of the authorities' measurement probes, against what it sees of
//! client loop cover (issue 13: "a mix cannot tell them from it"). Two runs of the same
//! simulated network (two gateways, three layers of two mixes, real Sphinx relays): in one only
//! two client cores send loop cover, in the other only a measurer sends probes. Every relay
//! records what a curious mix learns of each packet it unwraps (`RelayActor::record_view`):
//! its size, the delay its header asks, which node handed it over, which node it goes to next,
//! and when it arrived. For each mix the test compares the two runs:
//! - sizes: one and the same size;
//! - header delays: two-sample Kolmogorov-Smirnov, α = 0.001;
//! - previous and next hops: each node's share within four standard errors;
//! - arrival process: the gaps between arrivals, scaled by their mean (the rates differ; the
//!   shape must not), two-sample Kolmogorov-Smirnov.
//!
//! The same comparisons are shown to tell apart what they should: delays half as long again, and a
//! measurer that sends through one gateway only (its probes then reach layer 1 from one node).
#![allow(missing_docs, unreachable_pub)]

mod sim_net;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use p2pmix::{
    client::{ClientConfig, RoutePolicy, StreamRates, client_id},
    measure::{MeasureConfig, MeasuredNetwork, Measurer},
};
use p2pmix_sim::{
    Actor, ActorId, Ctx,
    mix::{MixMessage, RelayActor, Seen},
};
use sim_net::Net;

/// Mixes per layer.
const PER_LAYER: usize = 2;
/// How long each run sends.
const RUN: Duration = Duration::from_secs(120);
/// Each client's mean loop-cover interval; with two clients the network carries one loop every
/// 50 ms, as the measurer below sends one probe every 50 ms.
const LOOP_INTERVAL: Duration = Duration::from_millis(100);

/// The measurer on the simulated network: its probes enter at the gateway it names, the
/// gateways hand back what is addressed to it.
struct MeasurerActor {
    measurer: Measurer,
    gateways: HashMap<libp2p::PeerId, ActorId>,
}

impl Actor<MixMessage> for MeasurerActor {
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.measurer.poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, MixMessage>) {
        let now = ctx.mono();
        self.measurer.handle_timeout(now, ctx.rng);
        while let Some((gateway, packet)) = self.measurer.poll_transmit() {
            if let Some(&to) = self.gateways.get(&gateway) {
                ctx.send(to, MixMessage::Packet(packet));
            }
        }
    }
    fn handle_message(&mut self, ctx: &mut Ctx<'_, MixMessage>, _: ActorId, m: MixMessage) {
        if let MixMessage::Delivery { label, .. } = m {
            self.measurer.handle_delivery(ctx.mono(), &label);
        }
    }
}

/// Which traffic a run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traffic {
    /// Both clients' loop cover, nothing else.
    LoopCover,
    /// The measurer's probes through the gateways it is registered at (the first `gateways`).
    Probes { gateways: usize },
}

/// What every mix saw in one run, by relay index (2.. are the mixes), and the probe counts.
struct Views {
    seen: BTreeMap<usize, Vec<Seen>>,
    /// Relay index by actor (the previous and next hops, named so that runs compare).
    index: HashMap<ActorId, usize>,
    sent: u64,
    returned: u64,
}

fn run(traffic: Traffic, seed: u64) -> Views {
    let mut net = Net::new(PER_LAYER, seed, ClientConfig::default());
    let off = StreamRates {
        send: Duration::ZERO,
        loop_cover: Duration::ZERO,
        drop_cover: Duration::ZERO,
    };
    let loops = StreamRates {
        loop_cover: LOOP_INTERVAL,
        ..off
    };
    let rates = if traffic == Traffic::LoopCover {
        loops
    } else {
        off
    };
    for c in 0..2 {
        let topology = net.topology.clone();
        net.client(c).set_topology(topology, rates);
    }
    let mut measurer = None;
    if let Traffic::Probes { gateways } = traffic {
        // 600 probes an epoch through each of the two mixes of a layer, a minute an epoch: one
        // probe every 50 ms.
        let config = MeasureConfig {
            probes_per_node: 600,
            min_probes: 10,
            epoch: Duration::from_secs(60),
            window: Duration::from_secs(120),
            loss_timeout: Duration::from_secs(5),
            policy: RoutePolicy::default(),
        };
        let me = client_id(&libp2p::PeerId::random());
        let mut m = Measurer::new(config, me, net.sim.now().mono);
        m.set_network(Some(MeasuredNetwork::new(net.topology.clone())));
        let mut by_peer = HashMap::new();
        for (g, node) in net.topology.gateways().iter().enumerate() {
            by_peer.insert(node.peer, net.relays[g]);
            if g < gateways {
                m.set_gateway_ready(node.peer, true);
            }
        }
        let id = net.sim.add(MeasurerActor {
            measurer: m,
            gateways: by_peer,
        });
        for g in 0..2 {
            net.sim
                .actor_mut::<RelayActor>(net.relays[g])
                .serve_client(me, id);
        }
        measurer = Some(id);
    }
    for &relay in &net.relays {
        net.sim.actor_mut::<RelayActor>(relay).record_view();
    }
    net.run(RUN, |_| false);
    let index = net
        .relays
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, i))
        .collect();
    let seen = (2..net.relays.len())
        .map(|i| {
            let view = net.sim.actor::<RelayActor>(net.relays[i]).view().to_vec();
            (i, view)
        })
        .collect();
    let (sent, returned) = match measurer {
        Some(id) => {
            let stats = net.sim.actor::<MeasurerActor>(id).measurer.stats();
            (stats.sent, stats.returned)
        }
        None => {
            let s: Vec<_> = (0..2).map(|c| net.client(c).stats()).collect();
            (
                s.iter().map(|s| s.loop_cover_sent).sum(),
                s.iter().map(|s| s.loop_cover_received).sum(),
            )
        }
    };
    Views {
        seen,
        index,
        sent,
        returned,
    }
}

/// The two-sample Kolmogorov-Smirnov statistic and its critical value at α = 0.001.
fn ks(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // c(α) = sqrt(-ln(α/2) / 2) = 1.949 for α = 0.001.
    let c = (-(0.0005f64).ln() / 2.0).sqrt();
    (d, c * ((n + m) / (n * m)).sqrt())
}

/// The largest gap, in standard errors, between the shares two samples give one category.
fn worst_share_gap(a: &[usize], b: &[usize]) -> f64 {
    let count = |xs: &[usize]| {
        let mut m: BTreeMap<usize, f64> = BTreeMap::new();
        for x in xs {
            *m.entry(*x).or_default() += 1.0;
        }
        m
    };
    let (ca, cb) = (count(a), count(b));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    ca.keys()
        .chain(cb.keys())
        .map(|k| {
            let pa = ca.get(k).copied().unwrap_or(0.0) / na;
            let pb = cb.get(k).copied().unwrap_or(0.0) / nb;
            let p = (pa * na + pb * nb) / (na + nb);
            let se = (p * (1.0 - p) * (1.0 / na + 1.0 / nb)).sqrt().max(1e-9);
            (pa - pb).abs() / se
        })
        .fold(0.0, f64::max)
}

const FINAL: usize = usize::MAX;

/// One mix's view, as the samples the comparisons take.
struct Sample {
    sizes: Vec<usize>,
    delays_ms: Vec<f64>,
    from: Vec<usize>,
    next: Vec<usize>,
    /// Gaps between arrivals over their mean.
    gaps: Vec<f64>,
}

fn sample(views: &Views, relay: usize) -> Sample {
    let seen = &views.seen[&relay];
    let name = |a: &ActorId| views.index.get(a).copied().unwrap_or(FINAL - 1);
    let mut at: Vec<_> = seen.iter().map(|s| s.at).collect();
    at.sort();
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    Sample {
        sizes: seen.iter().map(|s| s.size).collect(),
        delays_ms: seen
            .iter()
            .map(|s| s.delay.as_secs_f64() * 1000.0)
            .collect(),
        from: seen.iter().map(|s| name(&s.from)).collect(),
        next: seen
            .iter()
            .map(|s| s.next.as_ref().map_or(FINAL, name))
            .collect(),
        gaps: gaps.iter().map(|g| g / mean.max(1e-12)).collect(),
    }
}

/// What tells the two views of one mix apart, if anything.
fn differences(a: &Sample, b: &Sample) -> Vec<String> {
    let mut out = Vec::new();
    let sizes = |s: &Sample| {
        let mut v = s.sizes.clone();
        v.sort();
        v.dedup();
        v
    };
    if sizes(a) != sizes(b) {
        out.push(format!("sizes {:?} vs {:?}", sizes(a), sizes(b)));
    }
    let (d, crit) = ks(&a.delays_ms, &b.delays_ms);
    if d > crit {
        out.push(format!("header delays: KS {d:.3} > {crit:.3}"));
    }
    let z = worst_share_gap(&a.from, &b.from);
    if z > 4.0 {
        out.push(format!("previous hops: {z:.1} standard errors apart"));
    }
    let z = worst_share_gap(&a.next, &b.next);
    if z > 4.0 {
        out.push(format!("next hops: {z:.1} standard errors apart"));
    }
    let (d, crit) = ks(&a.gaps, &b.gaps);
    if d > crit {
        out.push(format!("arrival gaps: KS {d:.3} > {crit:.3}"));
    }
    out
}

#[test]
fn a_mix_sees_the_same_of_measurement_probes_as_of_client_loop_cover() {
    let cover = run(Traffic::LoopCover, 40);
    let probes = run(Traffic::Probes { gateways: 2 }, 41);
    let one_gateway = run(Traffic::Probes { gateways: 1 }, 42);
    for views in [&cover, &probes, &one_gateway] {
        assert!(views.sent > 2_000, "sent {}", views.sent);
        assert!(
            views.returned * 10 > views.sent * 9,
            "{} of {} back",
            views.returned,
            views.sent
        );
    }
    for relay in cover.seen.keys().copied() {
        let (a, b) = (sample(&cover, relay), sample(&probes, relay));
        assert!(
            a.sizes.len() > 500 && b.sizes.len() > 500,
            "mix {relay}: too few packets"
        );
        let found = differences(&a, &b);
        assert!(
            found.is_empty(),
            "mix {relay} tells probes from loop cover: {found:?}"
        );

        eprintln!(
            "mix {relay}: {} loops, {} probes",
            a.sizes.len(),
            b.sizes.len()
        );
        // The comparisons have the power to see a difference: the same probes with header
        // delays half as long again are told apart at every mix.
        let longer = Sample {
            delays_ms: b.delays_ms.iter().map(|d| d * 1.5).collect(),
            ..sample(&probes, relay)
        };
        let found = differences(&a, &longer);
        assert!(
            found.iter().any(|f| f.starts_with("header delays")),
            "mix {relay}: longer delays not seen: {found:?}"
        );
    }
    // A measurer registered at one gateway only: a mix of layer 1 sees every probe come from
    // that gateway, where client loops come from both.
    for relay in 2..2 + PER_LAYER {
        let found = differences(&sample(&cover, relay), &sample(&one_gateway, relay));
        assert!(
            found.iter().any(|f| f.starts_with("previous hops")),
            "layer-1 mix {relay}: one-gateway probes not seen: {found:?}"
        );
    }
}
