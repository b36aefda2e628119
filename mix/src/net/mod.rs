//! The libp2p side: thin adapters that carry Sphinx packets on `/p2pmix/sphinx/1.0.0` and leave
//! every decision to the sans-IO cores.
//!
//! - [`behaviour`]: a node's mix `NetworkBehaviour`: admits frames ([`crate::Admission`]), hands
//!   them to worker threads for the [`crate::Relay`], holds decisions in the
//!   [`crate::DelayQueue`] and sends them on.
//! - [`link`]: a client's send-only link to its entry node; it never relays.
//! - [`handler`]: the connection handler both use: one long-lived stream each way, fixed-size
//!   frames, bounded queues.
//! - `outbox`: what both write to the swarm: connections, addresses, packets waiting for a dial.
//! - `workers`: the behaviour's Sphinx worker threads (one job queue each, batched unwrapping).

pub mod behaviour;
pub mod handler;
pub mod link;
mod outbox;
mod workers;
