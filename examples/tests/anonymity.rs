//! The anonymity analysis end to end on synthetic trace files with known answers: files written
//! in the trace format (as nodes and clients write them), read back from a run directory, the
//! ground truth followed hop by hop, the adversary's inference scored.
//!
//! - one sender only: entropy 0, the adversary always right;
//! - N senders entering one pool at the same instant: log2(N) bits, success at chance;
//! - delays far below the gaps between senders: entropy near 0, the adversary always right.
#![allow(missing_docs)]

use std::{collections::HashMap, fs, path::PathBuf};

use libp2p::PeerId;
use p2pmix::sphinx::trace::{Direction, Line, TraceKind, Truth};
use p2pmix::{proto::v1::NetworkParameters, sphinx::trace::PacketTag};
use p2pmix_examples::anonymity::{
    analyse_traces,
    load::{LINKS_FILE, TRUTH_FILE, Traces},
};
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};

/// One process's records before they are written.
#[derive(Default)]
struct Process {
    links: Vec<(u64, Direction, PeerId, PacketTag)>,
    truth: Vec<Truth>,
}

/// A synthetic network: clients, an entry gateway, one mix per layer, an exit gateway.
struct Synthetic {
    clients: Vec<PeerId>,
    entry: PeerId,
    mixes: [PeerId; 3],
    exit: PeerId,
    processes: HashMap<PeerId, Process>,
    rng: StdRng,
}

impl Synthetic {
    fn new(clients: usize, seed: u64) -> Self {
        Synthetic {
            clients: (0..clients).map(|_| PeerId::random()).collect(),
            entry: PeerId::random(),
            mixes: [PeerId::random(), PeerId::random(), PeerId::random()],
            exit: PeerId::random(),
            processes: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn link(&mut self, from: PeerId, to: PeerId, at_us: u64, tag: PacketTag) -> u64 {
        self.processes
            .entry(from)
            .or_default()
            .links
            .push((at_us, Direction::Out, to, tag));
        let arrival = at_us + 50;
        self.processes
            .entry(to)
            .or_default()
            .links
            .push((arrival, Direction::In, from, tag));
        arrival
    }

    fn tag(&mut self) -> PacketTag {
        PacketTag(self.rng.next_u64())
    }

    /// Client `c` sends one single-fragment message at `t_us`; mixes hold it `holds_us`.
    fn message(&mut self, c: usize, t_us: u64, holds_us: [u64; 3]) {
        let client = self.clients[c];
        let mut message = [0u8; 16];
        self.rng.fill_bytes(&mut message);
        let mut tag = self.tag();
        self.processes
            .entry(client)
            .or_default()
            .truth
            .push(Truth::Fragment {
                output: tag,
                message,
                index: 0,
                count: 1,
                attempt: 1,
            });
        let mut at = self.link(client, self.entry, t_us, tag);
        let mut hops = vec![(self.entry, 100)];
        for (m, hold) in self.mixes.into_iter().zip(holds_us) {
            hops.push((m, hold));
        }
        let nexts: Vec<PeerId> = hops[1..].iter().map(|h| h.0).chain([self.exit]).collect();
        for ((node, hold), next) in hops.into_iter().zip(nexts) {
            let out = self.tag();
            self.processes
                .entry(node)
                .or_default()
                .truth
                .push(Truth::Forwarded {
                    input: tag,
                    output: out,
                });
            at = self.link(node, next, at + hold, out);
            tag = out;
        }
        self.processes
            .entry(self.exit)
            .or_default()
            .truth
            .push(Truth::Delivered { input: tag });
        let _ = at;
    }

    /// Writes every process's files into its own folder of a fresh run directory; `unclosed`
    /// leaves one file without its trailer, as a killed process would.
    fn write(&self, name: &str, unclosed: Option<PeerId>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pmix-anon-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (i, (peer, p)) in self.processes.iter().enumerate() {
            let folder = dir.join(format!("p{i}"));
            fs::create_dir_all(&folder).unwrap();
            let mut links = vec![
                Line::Header {
                    kind: TraceKind::Links,
                    local: *peer,
                }
                .to_string(),
            ];
            let mut numbers: HashMap<PeerId, u32> = HashMap::new();
            let mut sorted = p.links.clone();
            sorted.sort_by_key(|l| l.0);
            for (at_us, direction, other, tag) in sorted {
                let n = numbers.len() as u32;
                let index = *numbers.entry(other).or_insert_with(|| {
                    links.push(
                        Line::Peer {
                            index: n,
                            peer: other,
                        }
                        .to_string(),
                    );
                    n
                });
                links.push(
                    Line::Link {
                        direction,
                        at_us,
                        peer: index,
                        tag,
                    }
                    .to_string(),
                );
            }
            let mut truth = vec![
                Line::Header {
                    kind: TraceKind::Truth,
                    local: *peer,
                }
                .to_string(),
            ];
            truth.extend(p.truth.iter().map(|t| Line::Truth(*t).to_string()));
            let end = Line::End {
                written: 0,
                dropped: 0,
                capped: 0,
            }
            .to_string();
            if unclosed != Some(*peer) {
                links.push(end.clone());
            }
            truth.push(end);
            fs::write(folder.join(LINKS_FILE), links.join("\n") + "\n").unwrap();
            fs::write(folder.join(TRUTH_FILE), truth.join("\n") + "\n").unwrap();
        }
        dir
    }

    fn nodes(&self) -> Vec<(PeerId, Option<u32>)> {
        vec![
            (self.entry, None),
            (self.mixes[0], Some(1)),
            (self.mixes[1], Some(2)),
            (self.mixes[2], Some(3)),
            (self.exit, None),
        ]
    }

    fn exp(&mut self, mean_us: f64) -> u64 {
        (-(1.0 - self.rng.random::<f64>()).ln() * mean_us) as u64
    }
}

fn parameters(mean_delay_us: u64) -> NetworkParameters {
    NetworkParameters {
        mean_delay_us,
        layers: 3,
        mix_loop_interval_us: 0,
        ..NetworkParameters::default()
    }
}

fn analyse(
    net: &Synthetic,
    name: &str,
    mean_delay_us: u64,
    unclosed: Option<PeerId>,
) -> (p2pmix_examples::anonymity::Analysis, Vec<String>) {
    let dir = net.write(name, unclosed);
    let mut traces = Traces::read_dir(&dir).unwrap();
    let analysis = analyse_traces(&mut traces, &net.nodes(), &parameters(mean_delay_us));
    let _ = fs::remove_dir_all(&dir);
    let problems = analysis.problems.clone();
    (analysis, problems)
}

#[test]
fn one_sender_only_has_no_anonymity() {
    let mut net = Synthetic::new(1, 1);
    for i in 0..20 {
        let holds = [net.exp(50_000.0), net.exp(50_000.0), net.exp(50_000.0)];
        net.message(0, 1_000_000 + i * 40_000, holds);
    }
    let (analysis, problems) = analyse(&net, "one", 50_000, None);
    assert!(problems.is_empty(), "{problems:?}");
    let s = analysis.summary();
    assert_eq!((s.senders, s.messages), (1, 20));
    assert_eq!(s.entropy_bits_p50, 0.0);
    assert_eq!(s.top1_success, 1.0);
    assert_eq!(s.ideal_bits, 0.0);
}

#[test]
fn n_senders_entering_one_pool_together_get_log2_n() {
    for n in [2usize, 8, 20] {
        let mut net = Synthetic::new(n, n as u64);
        for c in 0..n {
            let holds = [net.exp(50_000.0), net.exp(50_000.0), net.exp(50_000.0)];
            net.message(c, 1_000_000, holds);
        }
        let (analysis, _) = analyse(&net, &format!("pool{n}"), 50_000, None);
        let s = analysis.summary();
        assert_eq!((s.senders, s.messages), (n, n));
        let ideal = (n as f64).log2();
        for m in &analysis.messages {
            assert!(
                (m.entropy_bits - ideal).abs() < 1e-9,
                "{} vs {ideal}",
                m.entropy_bits
            );
            assert!(m.epsilon.abs() < 1e-9);
        }
        // Every guess is an n-way tie: success exactly at chance.
        assert!((s.top1_success - s.chance).abs() < 1e-9, "{s:?}");
    }
}

#[test]
fn delays_far_below_the_gaps_between_senders_give_them_away() {
    let mut net = Synthetic::new(8, 3);
    for round in 0..5u64 {
        for c in 0..8 {
            let holds = [net.exp(1_000.0), net.exp(1_000.0), net.exp(1_000.0)];
            net.message(c, 1_000_000 * (1 + round * 8 + c as u64), holds);
        }
    }
    let (analysis, _) = analyse(&net, "gaps", 1_000, None);
    let s = analysis.summary();
    assert_eq!((s.senders, s.messages), (8, 40));
    assert!(s.entropy_bits_p50 < 0.01, "{s:?}");
    assert_eq!(s.top1_success, 1.0);
}

#[test]
fn the_same_senders_with_delays_above_the_gaps_blend() {
    // The contrast to the test above: the same schedule with holds of 20 s mixes them.
    let mut net = Synthetic::new(8, 3);
    for round in 0..5u64 {
        for c in 0..8 {
            let holds = [net.exp(20e6), net.exp(20e6), net.exp(20e6)];
            net.message(c, 1_000_000 * (1 + round * 8 + c as u64), holds);
        }
    }
    let (analysis, _) = analyse(&net, "blend", 20_000_000, None);
    let s = analysis.summary();
    assert!(s.entropy_bits_p50 > 0.9 * s.ideal_bits, "{s:?}");
    assert!(s.top1_success < 2.0 * s.chance, "{s:?}");
}

#[test]
fn an_unclosed_trace_is_reported() {
    let mut net = Synthetic::new(2, 4);
    net.message(0, 1_000_000, [1_000, 1_000, 1_000]);
    net.message(1, 1_000_100, [1_000, 1_000, 1_000]);
    let (analysis, problems) = analyse(&net, "unclosed", 1_000, Some(net.mixes[1]));
    assert_eq!(analysis.messages.len(), 2);
    assert!(
        problems.iter().any(|p| p.contains("not closed")),
        "{problems:?}"
    );
}
