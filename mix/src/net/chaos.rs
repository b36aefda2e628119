//! Misbehaviour on command (feature `chaos`, which release builds and dApps never enable): what
//! a black hole or a slow mix does, so that tests and the testnet drill can run real
//! misbehaving nodes ([`super::behaviour::Behaviour::set_chaos`]).

use std::time::Duration;

use crate::relay::Decision;

/// Misbehaviour a node can be told to show, for tests and the testnet drill only: the `chaos`
/// feature, which release builds and dApps never enable. It applies to packets this node
/// forwards to a next hop (what a black hole or a slow mix does), not to final deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// Fraction of forwarded packets dropped (0 to 1; spread evenly, not at random).
    pub drop_fraction: f64,
    /// Delay added to every forwarded packet on top of what its header asks.
    pub added_delay: Duration,
    /// Drop debt carried between packets (the even spread of `drop_fraction`).
    debt: f64,
}

impl Chaos {
    /// Drops `drop_fraction` of the forwarded packets and delays all of them by `added_delay`.
    pub fn new(drop_fraction: f64, added_delay: Duration) -> Self {
        Chaos {
            drop_fraction: drop_fraction.clamp(0.0, 1.0),
            added_delay,
            debt: 0.0,
        }
    }

    /// Whether the next forwarded packet is dropped.
    pub(super) fn drops(&mut self) -> bool {
        self.debt += self.drop_fraction;
        if self.debt >= 1.0 {
            self.debt -= 1.0;
            true
        } else {
            false
        }
    }

    /// `decision` with the added delay, if it forwards to a next hop.
    pub(super) fn delayed<P>(&self, decision: Decision<P>) -> Decision<P> {
        match decision {
            Decision::Forward {
                to,
                packet,
                release,
                arrived,
            } => Decision::Forward {
                to,
                packet,
                release: release + self.added_delay,
                arrived,
            },
            other => other,
        }
    }
}
