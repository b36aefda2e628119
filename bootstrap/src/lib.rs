//! The root of trust of a p2pmix network: directory authorities and the consensus they sign.
//!
//! Kademlia only finds addresses; who may carry traffic, under which Sphinx keys, in which layer
//! and with which parameters is decided here, by a small set of authorities whose keys every node
//! and client pins. Per epoch they collect signed node descriptors, exchange votes (accepted
//! descriptors plus a commitment to a random value) and reveals, each compute the same consensus
//! deterministically ([`compute_consensus`]) and sign its digest; a consensus counts only with
//! signatures of more than half of the pinned keys ([`verify_consensus`]).
//!
//! Everything here is sans-IO: time is passed in (the [`Authority`] takes a [`Now`], one reading
//! of both clocks; the rules and [`verify_consensus`] take milliseconds since the UNIX epoch) and
//! randomness as a `rand_core::CryptoRng`. Rules and the canonical encoding: `docs/consensus.md`.

pub mod address;
mod authorities;
mod authority;
mod consensus;
mod descriptor;
mod directory;
mod health;
mod params;
mod rank;
mod schedule;
mod signing;
mod time;
mod verify;
mod vote;

pub use authorities::PinnedAuthorities;
pub use authority::{
    AdoptError, Adoption, Authority, AuthorityConfig, AuthorityLimits, AuthorityStats,
    EquivocationKind, Event, MEMORY_BUDGET_BYTES, Origin, ReachCheck, ReachLimits, ReachOutcome,
    ReachStats, Rejection, RoundFailure, SignatureError, SourceLimits, StoreLimits,
};
pub use consensus::{ComputeError, ConsensusInputs, MAX_NODES, compute_consensus};
pub use descriptor::{
    DescriptorError, MAX_ADDRESSES, MAX_DESCRIPTOR_BYTES, MAX_KEYS_AHEAD, VerifiedDescriptor,
    sign_descriptor, verify_descriptor,
};
pub use directory::{
    AUTHORITY_PROTOCOL, CacheBehaviour, CacheCodec, DIRECTORY_PROTOCOL, DirectoryBehaviour,
    DirectoryCodec, MAX_CACHE_REQUEST_BYTES, MAX_MESSAGE_BYTES, MAX_PUBLIC_REQUEST_BYTES,
    PeerBehaviour, PeerCodec, ProtoCodec, cache_behaviour, directory_behaviour, peer_behaviour,
};
pub use health::MAX_HOLD_EPOCHS;
pub use params::{
    DEFAULT_MAILBOX_PULL_INTERVAL_US, DEFAULT_MAILBOX_PULL_ITEMS, DEFAULT_MAX_PER_FAMILY,
    DEFAULT_MAX_PER_IPV4, DEFAULT_MAX_PER_IPV4_24, DEFAULT_MAX_PER_IPV6_48, default_parameters,
    mean_delay, test_network_parameters,
};
pub use rank::{Rank, RankBasis};
pub use schedule::{EpochSchedule, Phase};
pub use signing::{
    Context, consensus_digest, encode_and_sign, sign, sign_consensus, verify,
    verify_consensus_signature,
};
pub use time::{Now, unix_ms};
pub use verify::{
    MAX_CONSENSUS_BYTES, VerifiedConsensus, VerifyError, peer_id, sphinx_key, verify_consensus,
    verify_equivocation, verify_signed_consensus,
};
pub use vote::{
    MAX_MEASUREMENT_BYTES, MAX_VOTE_BYTES, VOTE_HEADER_BYTES, VerifiedReveal, VerifiedVote,
    VoteError, build_measured_vote, build_reveal, build_vote, commitment, open_vote, verify_reveal,
    verify_vote, verify_vote_reusing, vote_author, vote_entry_bytes, vote_measurement_bytes,
};

/// Version of the p2pmix protocol suite this build speaks; the consensus sets a minimum.
pub const PROTOCOL_VERSION: u32 = 1;
