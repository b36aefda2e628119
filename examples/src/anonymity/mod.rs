//! Anonymity measured on a live network: from what a global passive observer recorded (every
//! link's packets with their times, `--trace-links`) and the consensus, the adversary's
//! probability distribution over the possible senders of every delivered message, scored
//! against the ground truth the processes recorded (`--trace-truth`).
//!
//! [`model`] is the inference (the adversary's side: links and consensus only; its assumptions
//! are listed there), [`score`] the figures (entropy, anonymity set, top-1 success, epsilon;
//! their definitions are there), [`load`] reads a run directory, [`timing`] says where the
//! latency went (each kind of node's hold, each kind of link's time). [`analyse`] puts them together;
//! `p2pmix-anonymity RUN_DIR` and the testnet report print the result.
//!
//! The ground truth is used only to choose which packets to ask about (the arrival at the exit
//! gateway of each delivered fragment) and who really sent them, plus one calibration the
//! adversary could make itself by sending packets of its own: each gateway's mean processing
//! time, the scale of its (zero-delay) hop's density.

pub mod load;
pub mod model;
pub mod score;
pub mod timing;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Instant,
};

use anyhow::Result;
use libp2p::PeerId;
use p2pmix::{proto::v1::NetworkParameters, sphinx::trace::Truth};

use self::{
    load::Traces,
    model::{Hop, Network, PeerIx, Role, infer},
    score::{MessageScore, Summary, combine, entropy_bits, epsilon, sender_distribution, top1},
    timing::Timings,
};

/// The scale used for a gateway whose processing time the traces do not show.
const DEFAULT_GATEWAY_HOLD_US: f64 = 500.0;
/// Hops followed at most from a client to the exit (more is a loop in the records).
const MAX_HOPS: usize = 16;

/// What [`analyse`] found.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Every delivered message, scored.
    pub messages: Vec<MessageScore>,
    /// Clients seen sending into a gateway.
    pub senders: usize,
    /// Messages some fragment of which never reached an exit.
    pub undelivered: usize,
    /// Arrivals whose departure was not in the traces.
    pub unmatched: u64,
    /// Link records read.
    pub events: usize,
    /// What is wrong with the traces.
    pub problems: Vec<String>,
    /// Where the latency went.
    pub timings: Timings,
    /// Seconds the inference and scoring took (reading the files aside).
    pub seconds: f64,
}

impl Analysis {
    /// The run's figures.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.messages, self.senders)
    }
}

/// Analyses the run in `dir` (see the module documentation).
pub fn analyse(dir: &Path) -> Result<Analysis> {
    let consensus = load::consensus(dir)?;
    let mut traces = Traces::read_dir(dir)?;
    Ok(analyse_traces(
        &mut traces,
        &load::nodes(&consensus),
        &consensus.parameters(),
    ))
}

/// One fragment's delivered copy: where the adversary's question is asked.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    sent_us: u64,
    exit_tag: u64,
}

/// Analyses `traces` of a network of `nodes` (peer, `None` for gateways or the mix layer)
/// running with `parameters`.
pub fn analyse_traces(
    traces: &mut Traces,
    nodes: &[(PeerId, Option<u32>)],
    parameters: &NetworkParameters,
) -> Analysis {
    let started = Instant::now();
    let mut node_roles = Vec::new();
    for (peer, layer) in nodes {
        let ix = traces.index_of(*peer);
        node_roles.push((
            ix,
            match layer {
                None => Role::Gateway,
                Some(layer) => Role::Mix { layer: *layer },
            },
        ));
    }
    let k = traces.peers.len();
    let mut roles = vec![Role::Client; k];
    for (ix, role) in node_roles {
        roles[ix] = role;
    }
    let mut hold_us = vec![0.0; k];
    let gateway_hold = gateway_holds(traces, &roles);
    for (ix, role) in roles.iter().enumerate() {
        hold_us[ix] = match role {
            Role::Mix { .. } => parameters.mean_delay_us as f64,
            Role::Gateway => gateway_hold
                .get(&ix)
                .copied()
                .unwrap_or(DEFAULT_GATEWAY_HOLD_US),
            Role::Client => 0.0,
        };
    }
    let timings = Timings::of(traces, &roles);
    let network = Network {
        roles,
        hold_us,
        layers: parameters.layers.max(1),
        node_loops_per_s: match parameters.mix_loop_interval_us {
            0 => 0.0,
            us => 1e6 / us as f64,
        },
    };

    // The ground truth: how each packet went on, where it ended, what clients sent.
    let mut forward: HashMap<u64, u64> = HashMap::new();
    let mut delivered: HashSet<u64> = HashSet::new();
    let mut fragments = Vec::new();
    for (recorder, t) in &traces.truth {
        match *t {
            Truth::Forwarded { input, output } => {
                forward.insert(input.0, output.0);
            }
            Truth::Delivered { input } => {
                delivered.insert(input.0);
            }
            Truth::Fragment {
                output,
                message,
                index,
                count,
                ..
            } => fragments.push((*recorder, message, index, count, output.0)),
            _ => {}
        }
    }
    let mut sent_at: HashMap<(PeerIx, u64), u64> = HashMap::new();
    for e in &traces.events {
        if e.hop == Hop::Depart && network.roles.get(e.node) == Some(&Role::Client) {
            sent_at.insert((e.node, e.tag), e.at_us);
        }
    }
    // Each fragment send followed to its exit, if it got there.
    let mut copies: HashMap<([u8; 16], u16), Vec<Delivery>> = HashMap::new();
    let mut messages: HashMap<[u8; 16], (PeerIx, u16)> = HashMap::new();
    let mut targets = HashSet::new();
    for &(client, message, index, count, first) in &fragments {
        messages.insert(message, (client, count));
        let mut tag = first;
        for _ in 0..MAX_HOPS {
            if delivered.contains(&tag) {
                let Some(&sent_us) = sent_at.get(&(client, first)) else {
                    break;
                };
                targets.insert(tag);
                copies.entry((message, index)).or_default().push(Delivery {
                    sent_us,
                    exit_tag: tag,
                });
                break;
            }
            match forward.get(&tag) {
                Some(next) => tag = *next,
                None => break,
            }
        }
    }

    let events = traces.events.len();
    let inference = infer(&network, &mut traces.events, &targets);
    let senders = &inference.active_senders;
    let mut scores = Vec::new();
    let mut undelivered = 0;
    for (message, (sender, count)) in &messages {
        let mut dists = Vec::new();
        let mut latency_ms: f64 = 0.0;
        for index in 0..*count {
            // The first copy to reach the exit is the one the recipient got.
            let best = copies
                .get(&(*message, index))
                .into_iter()
                .flatten()
                .filter_map(|c| inference.posteriors.get(&c.exit_tag).map(|p| (c, p)))
                .min_by_key(|(_, p)| p.at_us);
            let Some((copy, posterior)) = best else {
                break;
            };
            latency_ms = latency_ms.max(posterior.at_us.saturating_sub(copy.sent_us) as f64 / 1e3);
            dists.push(sender_distribution(&posterior.weights, senders));
        }
        if dists.len() < usize::from(*count) || dists.is_empty() {
            undelivered += 1;
            continue;
        }
        let d = combine(&dists);
        let truth = senders.iter().position(|s| s == sender);
        scores.push(MessageScore {
            sender: *sender,
            fragments: *count,
            entropy_bits: entropy_bits(&d),
            top1: top1(&d, truth),
            epsilon: epsilon(&d),
            network_latency_ms: latency_ms,
        });
    }
    Analysis {
        messages: scores,
        senders: senders.len(),
        undelivered,
        unmatched: inference.unmatched,
        events,
        problems: traces.problems.clone(),
        timings,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Each gateway's mean time from a packet's arrival to its departure (its processing), from
/// its own links and truth.
fn gateway_holds(traces: &Traces, roles: &[Role]) -> HashMap<PeerIx, f64> {
    let gateway = |ix: PeerIx| roles.get(ix) == Some(&Role::Gateway);
    let mut arrived: HashMap<(PeerIx, u64), u64> = HashMap::new();
    let mut left: HashMap<(PeerIx, u64), u64> = HashMap::new();
    for e in traces.events.iter().filter(|e| gateway(e.node)) {
        let map = match e.hop {
            Hop::Arrive => &mut arrived,
            Hop::Depart => &mut left,
        };
        map.insert((e.node, e.tag), e.at_us);
    }
    let mut sums: HashMap<PeerIx, (f64, f64)> = HashMap::new();
    for (recorder, t) in &traces.truth {
        if let Truth::Forwarded { input, output } = t
            && gateway(*recorder)
            && let (Some(a), Some(b)) = (
                arrived.get(&(*recorder, input.0)),
                left.get(&(*recorder, output.0)),
            )
            && b >= a
        {
            let s = sums.entry(*recorder).or_default();
            s.0 += (b - a) as f64;
            s.1 += 1.0;
        }
    }
    sums.into_iter()
        .map(|(g, (sum, n))| (g, (sum / n).max(1.0)))
        .collect()
}
