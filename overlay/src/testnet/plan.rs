//! What [`super::LocalNet::up`] builds: the shape of the network, its epochs and parameters,
//! where its processes run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HostMode, TestnetError};
use crate::config::set_parameter;

/// A test network to start: 3 authorities, `gateways` gateways and `mixes` mixes spread over the
/// three layers (on loopback every node bootstrapping from `gw0`; in namespaces from the other
/// gateways, as genconfig writes it). Defaults: 2 gateways, 6 mixes, 10 s epochs,
/// the first epoch 4 s after the authorities are started, loopback, logs at `info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) gateways: usize,
    pub(crate) mixes: usize,
    pub(crate) epoch_ms: u64,
    pub(crate) genesis_delay_ms: u64,
    pub(crate) parameters: Vec<(String, u64)>,
    pub(crate) authority_log: String,
    pub(crate) node_log: String,
    pub(crate) node_args: Vec<String>,
    pub(crate) hosts: HostMode,
    pub(crate) wan: Option<Wan>,
}

impl Plan {
    /// A network of the `p2pmix` binary at `bin`, in the run directory `dir` (made if missing;
    /// it must not hold another network).
    pub fn new(bin: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Plan {
            bin: bin.into(),
            dir: dir.into(),
            gateways: 2,
            mixes: 6,
            epoch_ms: 10_000,
            genesis_delay_ms: 4_000,
            parameters: Vec::new(),
            authority_log: "info".into(),
            node_log: "info".into(),
            node_args: Vec::new(),
            hosts: HostMode::Loopback,
            wan: None,
        }
    }

    /// How many gateways (at least 1).
    pub fn with_gateways(mut self, n: usize) -> Self {
        self.gateways = n;
        self
    }

    /// How many mixes, spread over three layers by the authorities (at least 3).
    pub fn with_mixes(mut self, n: usize) -> Self {
        self.mixes = n;
        self
    }

    /// The epoch length.
    pub fn with_epoch_ms(mut self, ms: u64) -> Self {
        self.epoch_ms = ms;
        self
    }

    /// How long after the authorities are started the first epoch begins (every node must have
    /// uploaded its descriptor by the first vote).
    pub fn with_genesis_delay_ms(mut self, ms: u64) -> Self {
        self.genesis_delay_ms = ms;
        self
    }

    /// One network parameter the authorities publish (a name of [`crate::config::PARAMETERS`]);
    /// an unknown name fails [`super::LocalNet::up`].
    pub fn with_parameter(mut self, name: &str, value: u64) -> Self {
        self.parameters.push((name.to_string(), value));
        self
    }

    /// `RUST_LOG` of the authorities and of the nodes.
    pub fn with_log(mut self, authorities: &str, nodes: &str) -> Self {
        self.authority_log = authorities.into();
        self.node_log = nodes.into();
        self
    }

    /// Arguments every node gets after the ones the network gives (e.g. trace files).
    pub fn with_node_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.node_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Where the processes run: loopback (the default) or a network namespace each (root).
    pub fn with_hosts(mut self, hosts: HostMode) -> Self {
        self.hosts = hosts;
        self
    }

    /// Delay and loss on every namespace's link (with namespaces only; where the kernel has no
    /// netem the network starts without and [`super::RunDir::wan_applied`] says so).
    pub fn with_wan(mut self, wan: Wan) -> Self {
        self.wan = Some(wan);
        self
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses a network that cannot carry traffic, or parameters no authority knows.
    pub(crate) fn check(&self) -> Result<(), TestnetError> {
        if self.gateways == 0 {
            return Err(TestnetError::Shape("at least 1 gateway"));
        }
        if self.mixes < 3 {
            return Err(TestnetError::Shape("at least 3 mixes (one per layer)"));
        }
        if self.gateways + self.mixes > 4_000 {
            return Err(TestnetError::Shape("at most 4000 nodes"));
        }
        if self.epoch_ms < 1_000 {
            return Err(TestnetError::Shape("epochs of at least 1000 ms"));
        }
        if self.wan.is_some() && self.hosts == HostMode::Loopback {
            return Err(TestnetError::Wan(
                "needs network namespaces (the delay sits on each host's own link)".into(),
            ));
        }
        let mut parameters = p2pmix_bootstrap::default_parameters();
        for (name, value) in &self.parameters {
            if !set_parameter(&mut parameters, name, *value) {
                return Err(TestnetError::UnknownParameter(name.clone()));
            }
        }
        Ok(())
    }
}

/// WAN-like delay and loss put on every host's link with `tc netem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wan {
    delay: String,
    loss: Option<String>,
}

impl Wan {
    /// The arguments of `tc qdisc add … netem`.
    pub(crate) fn netem_args(&self) -> Vec<String> {
        let mut args = vec!["delay".to_string(), self.delay.clone()];
        if let Some(loss) = &self.loss {
            args.extend(["loss".to_string(), loss.clone()]);
        }
        args
    }
}

impl std::fmt::Display for Wan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.loss {
            Some(loss) => write!(f, "{},{loss}", self.delay),
            None => f.write_str(&self.delay),
        }
    }
}

impl std::str::FromStr for Wan {
    type Err = TestnetError;

    /// `DELAY[,LOSS]`: `30ms`, `1.5ms,0.5%`, `1s,2%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (delay, loss) = match s.split_once(',') {
            Some((d, l)) => (d, Some(l)),
            None => (s, None),
        };
        let number = |t: &str| {
            !t.is_empty()
                && t.chars().all(|c| c.is_ascii_digit() || c == '.')
                && t.parse::<f64>().is_ok()
        };
        let unit = ["us", "ms", "s"]
            .iter()
            .find(|u| delay.ends_with(*u) && number(&delay[..delay.len() - u.len()]));
        if unit.is_none() {
            return Err(TestnetError::Wan(format!(
                "the delay must look like 30ms (got {delay:?})"
            )));
        }
        if let Some(l) = loss {
            let ok = l
                .strip_suffix('%')
                .is_some_and(|n| number(n) && n.parse::<f64>().is_ok_and(|p| p <= 100.0));
            if !ok {
                return Err(TestnetError::Wan(format!(
                    "the loss must look like 1% (got {l:?})"
                )));
            }
        }
        Ok(Wan {
            delay: delay.to_string(),
            loss: loss.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_parses_delay_and_loss_and_refuses_the_rest() {
        let w: Wan = "30ms,1%".parse().unwrap();
        assert_eq!(w.netem_args(), ["delay", "30ms", "loss", "1%"]);
        assert_eq!(w.to_string(), "30ms,1%");
        let w: Wan = "1.5s".parse().unwrap();
        assert_eq!(w.netem_args(), ["delay", "1.5s"]);
        for bad in [
            "",
            "30",
            "ms",
            "30 ms",
            "30ms,1",
            "30ms,101%",
            "-1ms",
            "30ms,x%",
            "1e3ms",
        ] {
            assert!(bad.parse::<Wan>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_network_that_cannot_route_is_refused() {
        let plan = Plan::new("p2pmix", "/nonexistent");
        assert!(plan.check().is_ok());
        assert!(matches!(
            plan.clone().with_mixes(2).check(),
            Err(TestnetError::Shape(_))
        ));
        assert!(matches!(
            plan.clone().with_gateways(0).check(),
            Err(TestnetError::Shape(_))
        ));
        assert!(matches!(
            plan.clone().with_parameter("no_such", 1).check(),
            Err(TestnetError::UnknownParameter(_))
        ));
        assert!(matches!(
            plan.with_wan("30ms".parse().unwrap()).check(),
            Err(TestnetError::Wan(_))
        ));
    }
}
