//! p2pmix: a peer-to-peer mixnet overlay built on libp2p.
//!
//! This is the crate applications depend on. Today it re-exports the Sphinx packet format
//! ([`sphinx`]); the node (swarm, Kademlia discovery, directory client, the mix behaviour), its
//! configuration and the `p2pmix` command line will live here as they are built.

/// The Sphinx packet format, SURBs, replay protection and epoch key handling.
pub use p2pmix_mix as sphinx;
