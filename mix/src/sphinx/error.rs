//! Typed errors of the Sphinx layer. Every rejection has its own variant so that nodes can count
//! drops by reason.

use thiserror::Error;

/// A geometry outside the supported bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// `max_hops` must lie in `1..=16`.
    #[error("max hops {0} outside 1..=16")]
    Hops(usize),
    /// `payload_size` must lie in `32..=65536`.
    #[error("payload size {0} outside 32..=65536 bytes")]
    Payload(usize),
}

/// Why a node refused to unwrap a packet. Each is a counted drop, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UnwrapError {
    /// The frame does not have the geometry's packet size (truncated or oversize).
    #[error("packet is {got} bytes, expected {expected}")]
    WrongSize {
        /// The geometry's packet size.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// The header does not carry this format's version byte ([`crate::HEADER_VERSION`]).
    #[error("header format version {0} is not supported")]
    UnknownVersion(u8),
    /// No live key's MAC verifies and the node holds no key for the current epoch (its key was
    /// retired at a restart, or none installed yet): the packet may well be honest, built for a
    /// key this node lost, so it is not told apart as a forgery ([`UnwrapError::Mac`]).
    #[error("no epoch key for the current epoch")]
    UnknownKey,
    /// The group element is not a valid encoding, or yields the identity.
    #[error("invalid group element")]
    InvalidElement,
    /// The header MAC does not verify under any live key: the header was tampered with, or built
    /// for a key this node does not hold (a forgery, or an honest packet for a retired key: the
    /// two look the same).
    #[error("header MAC mismatch")]
    Mac,
    /// The packet was seen before under this epoch key.
    #[error("replayed packet")]
    Replay,
    /// The key's replay filter cannot record another tag (its memory budget is spent, or the
    /// journal that makes it survive a restart is behind): the packet is refused rather than
    /// accepted without replay protection.
    #[error("replay filter full")]
    ReplayFilterFull,
    /// The authenticated routing slot does not decode (a malicious or buggy sender).
    #[error("malformed routing information")]
    Routing,
}

/// Why a packet or SURB could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route needs at least one hop and at most the geometry's `max_hops`.
    #[error("route has {hops} hops, the geometry allows 1..={max}")]
    RouteLength {
        /// Hops given.
        hops: usize,
        /// The geometry's `max_hops`.
        max: usize,
    },
    /// The payload exceeds the geometry's payload size.
    #[error("payload is {got} bytes, at most {max} fit")]
    PayloadTooLarge {
        /// Bytes given.
        got: usize,
        /// The geometry's payload size.
        max: usize,
    },
}

/// Why a final payload could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The body does not have the geometry's body size.
    #[error("body is {got} bytes, expected {expected}")]
    WrongSize {
        /// The geometry's body size.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The integrity tag is not zero: some hop or link changed the payload.
    #[error("payload was tampered with")]
    Tampered,
}

/// Why a SURB could not be decoded or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SurbError {
    /// The encoding has the wrong length for the geometry.
    #[error("SURB is {got} bytes, expected {expected}")]
    WrongSize {
        /// Expected encoded size.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The reply does not fit in one packet.
    #[error("reply is {got} bytes, at most {max} fit")]
    PayloadTooLarge {
        /// Bytes given.
        got: usize,
        /// The geometry's payload size.
        max: usize,
    },
}

/// Why stored [`crate::SurbKeys`] could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SurbKeysError {
    /// Shorter or longer than its fields say.
    #[error("truncated SURB keys")]
    Truncated,
    /// An encoding this version does not know.
    #[error("unknown SURB keys version {0}")]
    Version(u8),
    /// A hop count outside 1..=MAX_HOPS_LIMIT.
    #[error("SURB keys for {0} hops")]
    Hops(usize),
}
