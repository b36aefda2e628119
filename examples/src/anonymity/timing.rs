//! Where a run's latency went, from the same traces: how long each kind of node held packets
//! (arrival to departure of one packet, from the node's links and truth) and how long each kind
//! of link took (a departure to the arrival of the same tag at the other end). A node or link
//! far above its share (a gateway's zero-delay hop taking tens of milliseconds) is where a
//! network falls behind.

use std::collections::HashMap;

use super::{
    load::Traces,
    model::{Hop, PeerIx, Role},
    score::quantile,
};
use p2pmix::sphinx::trace::Truth;

/// One kind of hop or link, with its quantiles in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// What it is ("layer 1", "client -> gateway", ...).
    pub name: String,
    /// Median, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// Samples.
    pub count: usize,
}

/// The hold of each kind of node and the time of each kind of link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Per kind of node: arrival to departure.
    pub holds: Vec<Span>,
    /// Per kind of link: departure to arrival.
    pub links: Vec<Span>,
}

fn kind(role: Role) -> String {
    match role {
        Role::Client => "client".into(),
        Role::Gateway => "gateway".into(),
        Role::Mix { layer } => format!("layer {layer}"),
    }
}

fn spans(groups: HashMap<String, Vec<f64>>) -> Vec<Span> {
    let mut out: Vec<Span> = groups
        .into_iter()
        .map(|(name, mut v)| Span {
            name,
            p50: quantile(&mut v, 0.5).unwrap_or(0.0),
            p90: quantile(&mut v, 0.9).unwrap_or(0.0),
            count: v.len(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl Timings {
    /// The timings of `traces`, whose peers have `roles`.
    pub fn of(traces: &Traces, roles: &[Role]) -> Self {
        let role = |p: PeerIx| roles.get(p).copied().unwrap_or(Role::Client);
        let mut arrived: HashMap<(PeerIx, u64), u64> = HashMap::new();
        let mut left: HashMap<(PeerIx, u64), u64> = HashMap::new();
        let mut departures: HashMap<u64, (PeerIx, u64)> = HashMap::new();
        for e in &traces.events {
            match e.hop {
                Hop::Arrive => {
                    arrived.insert((e.node, e.tag), e.at_us);
                }
                Hop::Depart => {
                    left.insert((e.node, e.tag), e.at_us);
                    departures.insert(e.tag, (e.node, e.at_us));
                }
            }
        }
        let mut holds: HashMap<String, Vec<f64>> = HashMap::new();
        for (node, t) in &traces.truth {
            if let Truth::Forwarded { input, output } = t
                && let (Some(a), Some(b)) =
                    (arrived.get(&(*node, input.0)), left.get(&(*node, output.0)))
                && b >= a
            {
                holds
                    .entry(kind(role(*node)))
                    .or_default()
                    .push((b - a) as f64 / 1e3);
            }
        }
        let mut links: HashMap<String, Vec<f64>> = HashMap::new();
        for e in traces.events.iter().filter(|e| e.hop == Hop::Arrive) {
            if let Some((from, at)) = departures.get(&e.tag)
                && e.at_us >= *at
            {
                let name = format!("{} -> {}", kind(role(*from)), kind(role(e.node)))
                    .replace("layer 1", "mix")
                    .replace("layer 2", "mix")
                    .replace("layer 3", "mix");
                links
                    .entry(name)
                    .or_default()
                    .push((e.at_us - at) as f64 / 1e3);
            }
        }
        Timings {
            holds: spans(holds),
            links: spans(links),
        }
    }

    /// Lines for people.
    pub fn human(&self) -> String {
        let line = |title: &str, spans: &[Span]| {
            let parts: Vec<String> = spans
                .iter()
                .map(|s| format!("{} {:.1}/{:.1}", s.name, s.p50, s.p90))
                .collect();
            format!("{title:<20}{}\n", parts.join("  "))
        };
        line("holds p50/p90 (ms)", &self.holds) + &line("links p50/p90 (ms)", &self.links)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;
    use p2pmix::sphinx::trace::PacketTag;

    use super::*;
    use crate::anonymity::model::LinkEvent;

    #[test]
    fn holds_and_links_are_measured_per_kind() {
        let mut traces = Traces::default();
        let (client, gateway, mix) = (
            traces.index_of(PeerId::random()),
            traces.index_of(PeerId::random()),
            traces.index_of(PeerId::random()),
        );
        let mut roles = vec![Role::Client; 3];
        roles[gateway] = Role::Gateway;
        roles[mix] = Role::Mix { layer: 1 };
        let event = |at_us, hop, node, peer, tag| LinkEvent {
            at_us,
            hop,
            node,
            peer,
            tag,
        };
        traces.events = vec![
            event(0, Hop::Depart, client, gateway, 1),
            event(100, Hop::Arrive, gateway, client, 1),
            event(400, Hop::Depart, gateway, mix, 2),
            event(450, Hop::Arrive, mix, gateway, 2),
        ];
        traces.truth = vec![(
            gateway,
            Truth::Forwarded {
                input: PacketTag(1),
                output: PacketTag(2),
            },
        )];
        let t = Timings::of(&traces, &roles);
        assert_eq!(t.holds.len(), 1);
        assert_eq!((t.holds[0].name.as_str(), t.holds[0].p50), ("gateway", 0.3));
        let links: Vec<(&str, f64)> = t.links.iter().map(|s| (s.name.as_str(), s.p50)).collect();
        assert_eq!(
            links,
            vec![("client -> gateway", 0.1), ("gateway -> mix", 0.05)]
        );
        assert!(t.human().contains("gateway 0.3/0.3"));
    }
}
