//! Wire types of p2pmix's control plane.
//!
//! This crate will hold the protobuf schemas (`.proto`) and the prost-generated Rust types for
//! everything the directory protocol `/p2pmix/dir/1.0.0` carries: node descriptors and their
//! signed form, authority votes and reveals, the network consensus and its signed form, and
//! directory requests and responses. Sphinx packets are not protobuf: their fixed-size binary
//! layout lives in `p2pmix-mix`.
