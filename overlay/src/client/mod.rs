//! The client core, sans-IO: routes from the consensus and the Poisson sending schedule. The
//! client behaviour and handle drive these with a swarm and a clock.

pub mod route;
pub mod schedule;

pub use route::{RouteError, RouteNode, RoutePolicy, Topology, choose_route};
pub use schedule::{Emission, QueueFull, SendingSchedule, StreamRates};
