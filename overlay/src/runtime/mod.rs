//! What every p2pmix process runs on: the swarm, the clocks, files in the data directory and the
//! metrics endpoint. The drivers (node, authority, client behaviour) use these; the sans-IO cores
//! never do.

pub mod files;
pub mod metrics;
mod swarm;

pub use p2pmix_bootstrap::{Now, unix_ms};
pub use swarm::{ListenError, SwarmError, build_swarm, listen_on_all};
