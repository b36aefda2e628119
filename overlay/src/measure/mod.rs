//! The network watching its own health: measurement traffic and the scores drawn from it.
//!
//! Each authority runs a measurer with keys of its own (an identity that is not the authority's,
//! registered as a client at every gateway). It sends Sphinx packets built exactly like a
//! client's loop cover: a route chosen the way clients choose routes (its gateway, one mix per
//! layer, back to the same gateway), the consensus's exponential delay at every mix, a random
//! body addressed to its own mailbox, sent at the times of a Poisson process, so that a mix
//! cannot tell them from loop cover: `overlay/tests/probe_view.rs` compares what every mix sees
//! of both (sizes, header delays, previous and next hops, the shape of the arrival process) and
//! finds nothing, while the same comparisons catch a measurer that uses one gateway only.
//! From what comes back it scores every node: its delivery relative to its layer and the delay
//! it adds beyond what the headers asked ([`score`](mod@score)). The scores go into the authority's vote;
//! the consensus takes their median over the authorities and leaves out nodes below the
//! thresholds (`p2pmix_bootstrap`, `docs/consensus.md`, "Health").
//!
//! The rooms: [`measurer`] (the sans-IO machine: schedule, probes, returns, reports), [`score`](mod@score)
//! (the pure scoring). The authority's driver runs it on a swarm of its own
//! (`crate::authority`).

pub mod measurer;
pub mod score;

pub use measurer::{MeasureConfig, MeasureStats, MeasuredNetwork, Measurer, NodeReport};
pub use score::{NodeScore, Outcome, score};
