//! What a process says about itself on `/health` and `/ready`: a typed status its loop keeps up
//! to date and the metrics endpoint reads.
//!
//! Health is "the process runs and its loop turns": the loop calls [`Status::turned`] every turn
//! (it wakes at least once a second), and a loop that has not turned for [`STALL_AFTER`] is
//! unhealthy, whatever it last said. Readiness is what the process does for the network: a node
//! is ready when the consensus in force is this epoch's, names it, and the node holds this epoch's
//! Sphinx key (it relays); an authority when it holds this epoch's consensus (it serves it). The
//! loop judges readiness ([`Readiness`]) on its gauge timer.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::replaced::ReplacedGauges;

/// A loop that has not turned for this long is unhealthy (loops wake at least once a second; a
/// loaded machine can hold one back for seconds, a deadlock for ever).
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// Whether a process serves the network, and if not, why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Readiness {
    /// The loop has not judged yet.
    Starting,
    /// No consensus is in force (none fetched yet, or every one held has expired).
    NoConsensus {
        /// The epoch by the clock.
        epoch: u64,
    },
    /// The consensus in force is older than the current epoch: this epoch's round failed and
    /// the network runs on the previous document, which the node cannot rely on for long.
    Stale {
        /// The epoch by the clock.
        epoch: u64,
        /// The epoch of the consensus in force.
        consensus_epoch: u64,
    },
    /// The consensus in force does not name this node.
    NotAdmitted {
        /// The epoch of the consensus in force.
        consensus_epoch: u64,
    },
    /// The consensus names this node but it holds no key for the epoch (a restart retired it):
    /// it relays again from the next epoch.
    NoEpochKey {
        /// The epoch by the clock.
        epoch: u64,
    },
    /// Serving: a node admitted and relaying, an authority holding this epoch's consensus.
    Ready {
        /// The epoch by the clock.
        epoch: u64,
        /// A node's layer in the consensus (none for gateways and authorities).
        #[serde(skip_serializing_if = "Option::is_none")]
        layer: Option<u32>,
    },
}

impl Readiness {
    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }

    /// An authority's readiness at `epoch` from the newest consensus it holds: ready when that
    /// is this epoch's (it serves it to nodes and clients).
    pub fn of_authority(epoch: u64, newest: Option<u64>) -> Readiness {
        match newest {
            None => Readiness::NoConsensus { epoch },
            Some(c) if c < epoch => Readiness::Stale {
                epoch,
                consensus_epoch: c,
            },
            Some(_) => Readiness::Ready { epoch, layer: None },
        }
    }

    /// A node's readiness at `epoch` from the consensus in force (its epoch, and this node's
    /// entry if the consensus names it) and whether the relay holds this epoch's key.
    pub fn of_node(epoch: u64, in_force: Option<InForce>, has_epoch_key: bool) -> Readiness {
        match in_force {
            None => Readiness::NoConsensus { epoch },
            Some(c) if c.epoch < epoch => Readiness::Stale {
                epoch,
                consensus_epoch: c.epoch,
            },
            Some(InForce {
                admitted: None,
                epoch: consensus_epoch,
            }) => Readiness::NotAdmitted { consensus_epoch },
            Some(_) if !has_epoch_key => Readiness::NoEpochKey { epoch },
            Some(InForce {
                admitted: Some(admitted),
                ..
            }) => Readiness::Ready {
                epoch,
                layer: admitted.layer,
            },
        }
    }
}

/// The consensus in force, as readiness needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// Its epoch.
    pub epoch: u64,
    /// This node's entry, if it names this node.
    pub admitted: Option<Admitted>,
}

/// This node's entry in a consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Its layer (none for a gateway).
    pub layer: Option<u32>,
}

/// What `/health` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    /// The loop turned within [`STALL_AFTER`].
    Healthy {
        /// Milliseconds since the last turn.
        last_turn_ms: u64,
    },
    /// The loop has not turned since it started or for too long.
    Stalled {
        /// Milliseconds since the last turn (since the status was made, if it never turned).
        last_turn_ms: u64,
    },
}

impl Health {
    /// Whether `/health` answers 200.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy { .. })
    }
}

#[derive(Debug)]
struct State {
    created: Instant,
    last_turn: Option<Instant>,
    readiness: Readiness,
}

/// The status a loop keeps and the metrics endpoint serves, with the gauges whose label sets
/// the loop replaces as a whole; cheap to clone (shared cells).
#[derive(Debug, Clone)]
pub struct Status {
    state: Arc<Mutex<State>>,
    replaced: ReplacedGauges,
}

impl Status {
    /// A status made at `now`: not turned yet, [`Readiness::Starting`].
    pub fn new(now: Instant) -> Self {
        Status {
            state: Arc::new(Mutex::new(State {
                created: now,
                last_turn: None,
                readiness: Readiness::Starting,
            })),
            replaced: ReplacedGauges::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain values behind: still usable.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The gauges served at `/metrics` beside the recorder's, labelled by what comes and goes.
    pub fn replaced_gauges(&self) -> &ReplacedGauges {
        &self.replaced
    }

    /// The loop turned at `now`.
    pub fn turned(&self, now: Instant) {
        self.with(|s| s.last_turn = Some(now));
    }

    /// The loop's latest judgement.
    pub fn set_readiness(&self, readiness: Readiness) {
        self.with(|s| s.readiness = readiness);
    }

    /// The latest readiness.
    pub fn readiness(&self) -> Readiness {
        self.with(|s| s.readiness)
    }

    /// Health at `now`.
    pub fn health(&self, now: Instant) -> Health {
        self.with(|s| {
            let since = now.saturating_duration_since(s.last_turn.unwrap_or(s.created));
            let last_turn_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            match s.last_turn {
                Some(_) if since < STALL_AFTER => Health::Healthy { last_turn_ms },
                _ => Health::Stalled { last_turn_ms },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_force(epoch: u64, layer: Option<Option<u32>>) -> Option<InForce> {
        Some(InForce {
            epoch,
            admitted: layer.map(|layer| Admitted { layer }),
        })
    }

    #[test]
    fn a_node_is_ready_only_when_this_epochs_consensus_names_it_and_it_holds_the_key() {
        // Before any consensus.
        assert_eq!(
            Readiness::of_node(3, None, true),
            Readiness::NoConsensus { epoch: 3 }
        );
        // A consensus that leaves the node out.
        assert_eq!(
            Readiness::of_node(3, in_force(3, None), true),
            Readiness::NotAdmitted { consensus_epoch: 3 }
        );
        // Admitted.
        let ready = Readiness::of_node(3, in_force(3, Some(Some(2))), true);
        assert_eq!(
            ready,
            Readiness::Ready {
                epoch: 3,
                layer: Some(2)
            }
        );
        assert!(ready.is_ready());
        // Epoch 4's round failed: the document of 3 is still in force in epoch 4, stale.
        let stale = Readiness::of_node(4, in_force(3, Some(Some(2))), true);
        assert_eq!(
            stale,
            Readiness::Stale {
                epoch: 4,
                consensus_epoch: 3
            }
        );
        assert!(!stale.is_ready());
        // Admitted, but restarted during the epoch: its key is retired.
        assert_eq!(
            Readiness::of_node(3, in_force(3, Some(None)), false),
            Readiness::NoEpochKey { epoch: 3 }
        );
        for r in [
            Readiness::Starting,
            Readiness::NoConsensus { epoch: 1 },
            Readiness::NotAdmitted { consensus_epoch: 1 },
            Readiness::NoEpochKey { epoch: 1 },
        ] {
            assert!(!r.is_ready(), "{r:?}");
        }
    }

    #[test]
    fn an_authority_is_ready_when_it_holds_this_epochs_consensus() {
        assert!(!Readiness::of_authority(2, None).is_ready());
        assert!(!Readiness::of_authority(2, Some(1)).is_ready());
        // The next epoch's document is published during this one.
        assert!(Readiness::of_authority(2, Some(2)).is_ready());
        assert!(Readiness::of_authority(2, Some(3)).is_ready());
    }

    #[test]
    fn health_follows_the_loop_turning() {
        let t0 = Instant::now();
        let status = Status::new(t0);
        assert!(!status.health(t0).is_healthy(), "never turned");
        status.turned(t0);
        assert_eq!(
            status.health(t0 + Duration::from_secs(1)),
            Health::Healthy { last_turn_ms: 1000 }
        );
        assert!(!status.health(t0 + STALL_AFTER).is_healthy(), "stalled");
        status.turned(t0 + STALL_AFTER);
        assert!(
            status.health(t0 + STALL_AFTER).is_healthy(),
            "turning again"
        );
    }

    #[test]
    fn the_answers_are_json_objects_with_a_status() {
        let json = serde_json::to_string(&Readiness::Stale {
            epoch: 4,
            consensus_epoch: 3,
        })
        .unwrap();
        assert_eq!(json, r#"{"status":"stale","epoch":4,"consensus_epoch":3}"#);
        let json = serde_json::to_string(&Readiness::Ready {
            epoch: 4,
            layer: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"status":"ready","epoch":4}"#);
    }
}
