//! Route health as the client sees it: each mix of a round trip that came back counts a
//! success, each mix of one that was lost a loss. A mix with losses and no success is suspect
//! and avoided while its layer has another choice. Under uniform loss every healthy mix sees
//! some successes, so only dead ones are avoided; records halve every [`SUSPECT_HALF_LIFE`], so
//! a mix that came back is tried again while sparse traffic still remembers a dead one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use p2pmix_mix::NodeId;

/// Lost round trips, with no successful one, after which a client routes around a mix.
const SUSPECT_AFTER: u32 = 3;
/// How long a record takes to halve.
const SUSPECT_HALF_LIFE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Record {
    ok: u32,
    lost: u32,
    since: Instant,
}

impl Record {
    fn fresh(now: Instant) -> Self {
        Record {
            ok: 0,
            lost: 0,
            since: now,
        }
    }

    /// The record as of `now`, halved once per half-life since it was last brought up to date.
    fn decayed(&self, now: Instant) -> Record {
        let halvings = (now.saturating_duration_since(self.since).as_secs()
            / SUSPECT_HALF_LIFE.as_secs().max(1))
        .min(31) as u32;
        Record {
            ok: self.ok >> halvings,
            lost: self.lost >> halvings,
            since: self.since + SUSPECT_HALF_LIFE * halvings,
        }
    }

    fn suspect(&self, now: Instant) -> bool {
        let r = self.decayed(now);
        r.ok == 0 && r.lost >= SUSPECT_AFTER
    }
}

/// Per mix: round trips it was on that came back and that were lost. See the module
/// documentation.
#[derive(Debug, Default)]
pub(super) struct RouteHealth {
    records: HashMap<NodeId, Record>,
}

impl RouteHealth {
    /// A round trip through `mixes` came back (`ok`) or was lost.
    pub(super) fn record(&mut self, now: Instant, mixes: &[NodeId], ok: bool) {
        for node in mixes {
            let r = self
                .records
                .entry(*node)
                .or_insert_with(|| Record::fresh(now));
            *r = r.decayed(now);
            if ok {
                r.ok = r.ok.saturating_add(1);
            } else {
                r.lost = r.lost.saturating_add(1);
            }
        }
    }

    /// Whether routes should avoid `node` at `now`: it lost round trips and none came back.
    pub(super) fn suspect(&self, node: NodeId, now: Instant) -> bool {
        self.records.get(&node).is_some_and(|r| r.suspect(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_that_loses_every_round_trip_is_suspect_until_its_record_decays() {
        let t0 = Instant::now();
        let mut health = RouteHealth::default();
        let dead = NodeId(3);
        let healthy = NodeId(4);
        for _ in 0..3 {
            health.record(t0, &[dead, healthy], false);
        }
        health.record(t0, &[healthy], true);
        assert!(health.suspect(dead, t0));
        assert!(!health.suspect(healthy, t0), "one success clears a mix");
        // Halved twice: 3 losses become 0.
        assert!(!health.suspect(dead, t0 + SUSPECT_HALF_LIFE * 2));
    }
}
