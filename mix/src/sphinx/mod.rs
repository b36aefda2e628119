//! The Sphinx packet format (version [`crate::FORMAT_VERSION`]): building, unwrapping and
//! replying, with no sockets and no clock. Everything here is re-exported at the crate root.
//!
//! ```text
//! packet  = header ‖ body                                    2388 B at the default geometry
//! header  = version (1) ‖ E (32) ‖ MAC (16) ‖ routing (max_hops · 55)
//! body    = payload layers (HCTR2-AES-256) over: tag (16 zero bytes) ‖ payload, zero-padded
//! ```
//! Every hop finds its own ephemeral element `E` in the clear, derives its keys from `x · E`,
//! checks the MAC, decrypts its 55-byte routing slot (next hop, its `E` and MAC, or the final
//! destination; and the delay) and takes its payload layer off the body. Every packet has the
//! same size whatever its route. The exact bytes and the reasons are in `docs/sphinx.md`.
//!
//! What lives where, one concern a file:
//! - [`geometry`]: the sizes (hops, payload) every node and client agree on;
//! - [`keys`]: node key pairs (Ristretto255); [`keyring`]: a node's keys across epoch
//!   boundaries, each with its replay cache;
//! - [`crypto`]: per-hop key derivation, routing stream cipher, header MAC; [`payload`]: the
//!   body's layers (the one boundary a payload-layer change touches), over [`hctr2`], the
//!   wide-block cipher;
//! - [`routing`]: what a hop learns (the routing slot and its encoding), node and client names;
//! - [`recipient`]: the recipient layer, the innermost layer of a forward packet, keyed to the
//!   recipient client (what the exit gateway sees is uniformly random);
//! - [`create`]: the sender's side; [`peel`]: a node's side (one layer off, in place; a batch of
//!   packets sharing the key agreement's encoding step);
//!   [`surb`]: single-use reply blocks;
//! - [`replay`]: the replay filter; [`delay`]: sender-chosen exponential delays;
//! - [`error`]: one typed error per rejection, so that nodes count drops by reason.

pub(crate) mod create;
pub(crate) mod crypto;
pub(crate) mod delay;
pub(crate) mod error;
pub(crate) mod geometry;
pub(crate) mod hctr2;
pub(crate) mod keyring;
pub(crate) mod keys;
pub(crate) mod payload;
pub(crate) mod peel;
pub(crate) mod recipient;
pub(crate) mod replay;
pub(crate) mod routing;
pub(crate) mod surb;
