//! Route health as the client sees it: each mix of a round trip that came back counts a
//! success, each mix of one that was lost a loss, unless the mix carried a round trip sent
//! after the lost one that came back (it was alive then: the loss was elsewhere). A mix is
//! suspect, and avoided while its layer has another choice, when it lost
//! [`STREAK_SUSPECT`] round trips in a row with none of them so excused (a mix that just died:
//! its earlier successes do not protect it), for [`STREAK_MEMORY`] after the last loss, or when
//! its record has losses and no success at all. Under uniform loss every healthy mix sees
//! successes, so only dead ones are avoided; records halve every [`SUSPECT_HALF_LIFE`], so a mix
//! that came back is tried again while sparse traffic still remembers a dead one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use p2pmix_mix::NodeId;

/// Lost round trips, with no successful one, after which a client routes around a mix.
const SUSPECT_AFTER: u32 = 3;
/// Losses in a row (none excused by a later success) after which a mix is avoided.
pub(super) const STREAK_SUSPECT: u32 = 2;
/// How long such a streak keeps a mix avoided after its last loss.
pub(super) const STREAK_MEMORY: Duration = Duration::from_secs(30);
/// How long a record takes to halve.
const SUSPECT_HALF_LIFE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Record {
    ok: u32,
    lost: u32,
    since: Instant,
    /// Losses since the last success.
    streak: u32,
    last_loss: Option<Instant>,
    /// When the latest round trip through this mix that came back was sent.
    last_ok_sent: Option<Instant>,
}

impl Record {
    fn fresh(now: Instant) -> Self {
        Record {
            ok: 0,
            lost: 0,
            since: now,
            streak: 0,
            last_loss: None,
            last_ok_sent: None,
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
            ..*self
        }
    }

    fn suspect(&self, now: Instant) -> bool {
        let r = self.decayed(now);
        let streak = self.streak >= STREAK_SUSPECT
            && self
                .last_loss
                .is_some_and(|t| now.saturating_duration_since(t) < STREAK_MEMORY);
        streak || (r.ok == 0 && r.lost >= SUSPECT_AFTER)
    }
}

/// Per mix: round trips it was on that came back and that were lost. See the module
/// documentation.
#[derive(Debug, Default)]
pub(super) struct RouteHealth {
    records: HashMap<NodeId, Record>,
}

impl RouteHealth {
    /// A round trip through `mixes`, sent at `sent`, came back (`ok`) or was lost.
    pub(super) fn record(&mut self, now: Instant, mixes: &[NodeId], ok: bool, sent: Instant) {
        for node in mixes {
            let r = self
                .records
                .entry(*node)
                .or_insert_with(|| Record::fresh(now));
            *r = r.decayed(now);
            if ok {
                r.ok = r.ok.saturating_add(1);
                r.streak = 0;
                r.last_ok_sent = Some(r.last_ok_sent.map_or(sent, |t| t.max(sent)));
            } else if r.last_ok_sent.is_none_or(|t| t < sent) {
                r.lost = r.lost.saturating_add(1);
                r.streak = r.streak.saturating_add(1);
                r.last_loss = Some(now);
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
            health.record(t0, &[dead, healthy], false, t0);
        }
        health.record(t0, &[healthy], true, t0);
        assert!(health.suspect(dead, t0));
        assert!(!health.suspect(healthy, t0), "one success clears a mix");
        // Halved twice: 3 losses become 0, and the streak is forgotten.
        assert!(!health.suspect(dead, t0 + SUSPECT_HALF_LIFE * 2));
    }

    #[test]
    fn a_mix_that_dies_is_suspect_after_a_short_streak_despite_its_past_and_a_live_one_is_excused()
    {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut health = RouteHealth::default();
        let (dying, healthy) = (NodeId(1), NodeId(2));
        for i in 0..20 {
            health.record(t0 + s * i, &[dying, healthy], true, t0 + s * i);
        }
        // It dies at 20 s. The healthy mix carries a later round trip that comes back.
        let (lost_at, sent) = (t0 + s * 25, t0 + s * 21);
        health.record(t0 + s * 23, &[healthy], true, t0 + s * 22);
        for k in 0..STREAK_SUSPECT {
            health.record(lost_at + s * k, &[dying, healthy], false, sent + s * k / 2);
        }
        let now = lost_at + s * STREAK_SUSPECT;
        assert!(
            health.suspect(dying, now),
            "twenty old successes do not protect it"
        );
        assert!(
            !health.suspect(healthy, now),
            "a round trip sent after the lost ones came back: not its fault"
        );
        assert!(
            !health.suspect(dying, now + STREAK_MEMORY),
            "tried again later"
        );
    }
}
