//! The health measurements an authority puts in its vote: its driver runs the measurement
//! traffic and hands the per-node results in before the vote ([`Authority::vote_due_ms`] says
//! when); the vote takes them (see `crate::health` for what the consensus makes of them).

use p2pmix_proto::v1::NodeMeasurement;

use super::Authority;
use crate::{MAX_NODES, health::MAX_IDENTITY_BYTES, schedule::Phase};

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

    /// Hands in this authority's measurements for its next vote (replacing any given before;
    /// at most [`MAX_NODES`], one per identity; malformed ones are left out so that the vote
    /// stays valid).
    pub fn set_measurements(&mut self, mut measurements: Vec<NodeMeasurement>) {
        measurements.retain(|m| !m.identity.is_empty() && m.identity.len() <= MAX_IDENTITY_BYTES);
        measurements.sort_by(|a, b| a.identity.cmp(&b.identity));
        measurements.dedup_by(|a, b| a.identity == b.identity);
        measurements.truncate(MAX_NODES);
        for m in &mut measurements {
            m.delivery_permille = m.delivery_permille.min(1000);
        }
        self.measurements = measurements;
    }
}
