//! The root of trust of a p2pmix network.
//!
//! This crate will hold the sans-IO authority state machine (descriptor registry, commit-and-reveal
//! voting, deterministic layer assignment, signing), the one consensus verification function that
//! nodes and clients share (bytes + pinned authority keys + now -> verified consensus or a typed
//! reason), and the authority's libp2p request-response behaviour on `/p2pmix/dir/1.0.0`.
//! Kademlia only finds addresses; the threshold-signed consensus built here decides who may carry
//! traffic.
