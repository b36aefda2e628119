//! The directory as nodes and clients use it: which consensus to fetch from whom, this node's
//! descriptor uploads, serving held documents to peers, and one-shot fetches for tools.
//!
//! The rules of the consensus itself (authorities, votes, verification) are in the
//! `p2pmix-bootstrap` crate, re-exported as [`crate::bootstrap`]; the verification API a dApp
//! needs is re-exported here.

pub mod client;
pub mod fetch;
pub mod serve;

pub use client::{Action, DirectoryClient, UploadOutcome};
pub use fetch::{FetchError, fetch_consensus, fetch_evidence};
pub use p2pmix_bootstrap::{
    EpochSchedule, PinnedAuthorities, VerifiedConsensus, VerifyError, consensus_digest, peer_id,
    sphinx_key, verify_consensus, verify_equivocation, verify_signed_consensus,
};
pub use serve::{answer_held, not_held};
