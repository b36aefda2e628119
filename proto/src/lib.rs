//! Wire types of p2pmix's control plane, generated from `proto/dir.proto` by prost.
//!
//! Everything the directory protocol `/p2pmix/dir/1.0.0` carries: node descriptors and their
//! signed form, authority votes and reveals, the network consensus and its signed form, directory
//! requests and responses, and the state an authority persists. Sphinx packets are not protobuf:
//! their fixed-size binary layout lives in `p2pmix-mix`. The canonical-encoding rule that lets
//! independent authorities sign identical bytes is in `docs/consensus.md`.

/// Version 1 of the directory protocol.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/p2pmix.dir.v1.rs"));
}

pub use prost::Message;
