//! Misbehaviour on command, for tests and the testnet drill only (feature `chaos`, which release
//! builds and dApps never enable): a mix told to drop a fraction of what it forwards, or to
//! hold every packet longer, from a given wall-clock time on.
//!
//! The plan comes from the environment, so that no configuration file or flag of a release
//! build knows of it: `P2PMIX_CHAOS="drop=0.5,delay_ms=2000,from_unix_ms=1796140000000"` (every
//! key optional; `from_unix_ms` absent means at once).

use std::time::Duration;

use p2pmix_mix::behaviour::Chaos;

/// The environment variable holding the plan.
pub const CHAOS_ENV: &str = "P2PMIX_CHAOS";

/// What to do, and from when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChaosPlan {
    /// Wall-clock start (ms since the UNIX epoch).
    pub from_unix_ms: u64,
    /// The misbehaviour.
    pub chaos: Chaos,
}

impl ChaosPlan {
    /// The plan in [`CHAOS_ENV`], if any; a malformed one is an error naming the bad part.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(CHAOS_ENV) {
            Ok(text) => Self::parse(&text).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Parses `drop=F,delay_ms=N,from_unix_ms=T`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut drop, mut delay_ms, mut from_unix_ms) = (0.0f64, 0u64, 0u64);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{CHAOS_ENV}: bad part {part:?}");
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "drop" => {
                    drop = value.parse().map_err(|_| bad())?;
                    if !(0.0..=1.0).contains(&drop) {
                        return Err(bad());
                    }
                }
                "delay_ms" => delay_ms = value.parse().map_err(|_| bad())?,
                "from_unix_ms" => from_unix_ms = value.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        Ok(ChaosPlan {
            from_unix_ms,
            chaos: Chaos::new(drop, Duration::from_millis(delay_ms)),
        })
    }
}

/// `plan`, if the network is a test network (its authorities file says `test_network`): a
/// build with the feature that found itself on a real network must not misbehave on command.
pub fn allowed(plan: Option<ChaosPlan>, test_network: bool) -> Result<Option<ChaosPlan>, String> {
    match plan {
        Some(_) if !test_network => Err(format!(
            "{CHAOS_ENV} is set but the network is not a test network: refusing to misbehave"
        )),
        plan => Ok(plan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_bad_ones_are_refused() {
        let plan = ChaosPlan::parse("drop=0.5, delay_ms=2000,from_unix_ms=7").unwrap();
        assert_eq!(plan.from_unix_ms, 7);
        assert_eq!(plan.chaos, Chaos::new(0.5, Duration::from_secs(2)));
        assert_eq!(ChaosPlan::parse("").unwrap().chaos, Chaos::default());
        for bad in ["drop=2", "drop=x", "speed=1", "delay_ms", "from_unix_ms=-1"] {
            assert!(ChaosPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_plan_is_refused_on_a_network_that_is_not_a_test_network() {
        let plan = ChaosPlan::parse("drop=1").ok();
        assert!(allowed(plan, false).is_err());
        assert_eq!(allowed(plan, true).unwrap(), plan);
        assert_eq!(allowed(None, false).unwrap(), None);
    }
}
