//! The health measurements an authority puts in its vote: its driver runs the measurement
//! traffic and hands the per-node results in before the vote ([`Authority::vote_due_ms`] says
//! when); the vote takes them (see `crate::health` for what the consensus makes of them).

use p2pmix_proto::v1::NodeMeasurement;

use super::Authority;
use crate::{health::bound_measurements, schedule::Phase};

impl Authority {
    /// The wall-clock time (ms since the UNIX epoch) at which this authority votes in the round
    /// under way, until it has voted (or it is too late to): measurements handed in before then
    /// go into that vote.
    pub fn vote_due_ms(&self) -> Option<u64> {
        (!self.round.vote_done).then(|| {
            self.config
                .schedule
                .phase_start(self.round.epoch.saturating_sub(1), Phase::Vote)
        })
    }

    /// Hands in this authority's measurements for its next vote (replacing any given before).
    /// They are bounded as a vote must carry them: one per identity, malformed ones left out,
    /// and within [`crate::MAX_NODES`] and [`crate::MAX_MEASUREMENT_BYTES`] (the least healthy
    /// nodes kept), so that the vote stays valid and the memory held stays bounded.
    pub fn set_measurements(&mut self, measurements: Vec<NodeMeasurement>) {
        self.measurements = bound_measurements(measurements);
    }
}
