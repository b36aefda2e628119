//! What every p2pmix process runs on: the swarm, the clocks, files in the data directory, the
//! metrics endpoint and the health status it serves, and (test networks only) trace files. The
//! drivers (node, authority, client behaviour) use these; the sans-IO cores never do.

pub mod caps;
pub mod files;
pub mod keep_alive;
pub mod limits;
#[cfg(feature = "metrics-endpoint")]
pub mod metrics;
#[cfg(not(feature = "metrics-endpoint"))]
#[path = "metrics_off.rs"]
pub mod metrics;
pub mod replaced;
pub mod status;
mod swarm;
pub mod trace;

pub use p2pmix_bootstrap::{Now, unix_ms};
pub use swarm::{
    IDLE_CONNECTION_TIMEOUT, ListenError, SwarmError, build_swarm, build_swarm_with_idle_timeout,
    listen_on_all,
};
