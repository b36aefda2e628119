//! p2pmix: a peer-to-peer mixnet overlay built on libp2p.
//!
//! This is the crate applications and operators depend on. It re-exports the Sphinx packet format
//! ([`sphinx`]) and the directory layer ([`directory`]), and holds what runs them on a swarm:
//! identity files, configuration files, the authority driver and consensus fetching. The `p2pmix`
//! binary (`src/main.rs`) is a thin command line over this library.

pub mod authority_node;
pub mod client;
pub mod config;
pub mod directory_client;
pub mod epoch_keys;
pub mod fetch;
pub mod identity;
pub mod mailbox;
pub mod metrics_endpoint;
pub mod node;

/// The Sphinx packet format, SURBs, replay protection and epoch key handling.
pub use p2pmix_mix as sphinx;

/// Directory authorities, the consensus and its verification.
pub use p2pmix_bootstrap as directory;

/// Wire types of the directory protocol.
pub use p2pmix_proto as proto;
