//! p2pmix: a peer-to-peer mixnet overlay built on libp2p.
//!
//! This is the crate applications and operators depend on. A dApp needs [`client`] (the
//! `NetworkBehaviour` it adds to its swarm, or the [`client::Client`] handle that runs one of its
//! own) and [`build_swarm`]; operators run [`node`] and [`authority`] through the `p2pmix`
//! binary. The rooms (`docs/architecture.md` has the map):
//! - [`client`]: the mixnet client (sans-IO core, behaviour, handle);
//! - [`node`]: the mix node and gateway (a loop that dispatches to one machine a concern);
//! - [`mailbox`]: gateway mailboxes, server and fetcher;
//! - [`directory`]: fetching, verifying and serving the consensus;
//! - [`measure`]: the authorities' measurement traffic and the health scores drawn from it;
//! - [`authority`]: the directory authority's driver;
//! - [`runtime`]: swarm building, clocks, files, the metrics endpoint;
//! - [`config`] and [`identity`]: files an operator writes or keeps.
//!
//! The Sphinx packet format ([`sphinx`]) and the consensus rules ([`bootstrap`]) live in their
//! own crates, re-exported here.

pub mod authority;
pub mod client;
pub mod config;
pub mod directory;
pub mod identity;
pub mod mailbox;
pub mod measure;
pub mod node;
pub mod runtime;

pub use runtime::{Now, build_swarm};

/// The Sphinx packet format, SURBs, replay protection, epoch keys and the mix core.
pub use p2pmix_mix as sphinx;

/// Directory authorities, the consensus and its verification.
pub use p2pmix_bootstrap as bootstrap;

/// Wire types of the directory and mailbox protocols.
pub use p2pmix_proto as proto;
