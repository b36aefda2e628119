//! A test network of real `p2pmix` processes on one machine, started, found and stopped in one
//! place. `p2pmix testnet up|start|host|status|send|down`, `testnet/run.sh`, the multi-process
//! tests (`overlay/tests/common/net.rs`) and the examples all go through this module, so the
//! layout of a run directory, the order of the start and the meaning of "admitted" are written
//! once. (The in-process network for a dApp's own tests is [`crate::test_network`].)
//!
//! A run directory holds one directory a process (`auth0`…`auth2`, `gw0`…, `mix0`…, and the
//! clients a script adds), the pinned `authorities.toml`, `pids` (`PID NAME` a line, the newest
//! run of each name) and `testnet.json` (what later commands need: the binary, the epoch
//! schedule, the hosts). With [`HostMode::Spread`] or [`HostMode::Crowded`] every process runs in
//! a network namespace of its own on a bridge the network makes (root only), listed in `netns`,
//! `netns-bridge` and `hosts`; [`down`] removes them. Those processes run on the files
//! `p2pmix testnet genconfig` writes for the namespaces' addresses (`genconfig/`, each process's
//! directory a link to its own there), the operator's path; on loopback, where every process
//! shares one address and must bind port 0, the files are written here.
//!
//! Nothing here needs bash or `/proc`: processes are signalled with `kill(1)`, and whether a
//! listed process id is still one of ours is read from `/proc` where it exists and from `ps`
//! elsewhere.
//!
//! ```no_run
//! # fn demo() -> Result<(), p2pmix::testnet::TestnetError> {
//! use std::time::Duration;
//! use p2pmix::testnet::{LocalNet, Plan};
//!
//! let mut net = LocalNet::up(Plan::new("target/release/p2pmix", "/tmp/my-net").with_mixes(6))?;
//! net.wait_admitted(Duration::from_secs(90))?;
//! println!("gw0 listens on {}", net.run_dir().listen_addr("gw0").unwrap_or_default());
//! // Dropping `net` stops every process; `net.detach()` leaves them running.
//! # Ok(()) }
//! ```

mod error;
mod hosts;
mod layout;
mod net;
mod plan;
mod procs;

pub use error::TestnetError;
pub use hosts::{Host, HostMode};
pub use layout::RunDir;
pub use net::{LocalNet, NodeStart};
pub use plan::{Plan, Wan};
pub use procs::{
    DownReport, ProcessStatus, Signal, down, record_pid, signal, status, stop_starting,
};
