//! p2pmix's mix layer: the Sphinx packet format and the relay that carries it.
//!
//! The core is sans-IO: the packet format (building, unwrapping, replying) and the mix core
//! ([`Admission`] limits, [`Relay`] decides, [`DelayQueue`] holds) have no sockets and no clock.
//! The libp2p adapters are thin: [`behaviour::Behaviour`] (nodes) and [`link::Link`] (clients,
//! send-only) with [`handler::Handler`] carry packets on `/p2pmix/sphinx/1.0.0`.
//!
//! A packet is a fixed-size header plus a fixed-size body ([`Geometry`]). The sender picks a
//! route of up to `max_hops` nodes and a delay per hop, and builds the packet with
//! [`build_packet`]; each node removes one layer with [`KeyRing::process`] (or [`unwrap_packet`]),
//! learning only the next hop and its delay, and the final hop learns the destination. Replies go
//! through single-use reply blocks ([`create_surb`]). The design and the exact byte layout are in
//! `docs/sphinx.md` at the repository root.
//!
//! Layout of the source: `sphinx/` (the packet format, one concern a file), `admission.rs` (rate
//! limits and bans), `relay.rs` (the mix core), `stats.rs` (counters), `pool.rs` (recycled
//! buffers), [`trace`] (test-network link traces and ground truth, for measuring anonymity),
//! and [`net`] (the libp2p adapters).
//!
//! Randomness is passed in (`rand_core::CryptoRng`) and time too (`std::time::Instant`), so every
//! function of the core is deterministic given its inputs, which the tests and the known-answer
//! vectors rely on.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admission;
pub mod net;
mod pool;
mod relay;
mod sphinx;
mod stats;
pub mod trace;

// The adapters' old paths (`p2pmix_mix::behaviour::Behaviour`, `p2pmix_mix::link::Link`), which
// the overlay uses.
pub use admission::{
    AddressShare, Admission, AdmissionConfig, ConnectionCounts, ConnectionRefusal, FairQueue,
    FairRefusal, Fault, MAX_PENDING_PER_ADDRESS, MAX_PENDING_PER_PREFIX, MAX_TRACKED_ADDRESSES,
    MAX_TRACKED_PEERS, Origin, Prefix, Rate, TokenBucket, Verdict, canonical_ip,
};
pub use net::{behaviour, handler, link};
pub use pool::PacketPool;
pub use relay::{Decision, DelayQueue, DropReason, QueueLimits, Relay, RelayConfig, ShareKey};
pub use sphinx::{
    create::{Hop, build_cover_packet, build_packet, build_packet_to},
    delay::sample_exponential,
    error::{BuildError, GeometryError, OpenError, SurbError, SurbKeysError, UnwrapError},
    geometry::{
        ELEMENT_SIZE, Geometry, HEADER_VERSION, MAC_SIZE, MAX_HOPS_LIMIT, PAYLOAD_TAG_SIZE,
        SLOT_SIZE, VERSION_SIZE,
    },
    keyring::{EpochKey, KeyRing, KeyRingError},
    keys::{NodePublicKey, NodeSecretKey},
    peel::{Processed, body, open_payload, unwrap_batch, unwrap_packet, unwrap_with_ring},
    recipient::{REPRESENTATIVE_SIZE, RecipientKey, RecipientPublicKey},
    replay::{
        PersistError, ReplayBudget, ReplayCache, ReplayConfig, ReplayRefusal, TagIndex,
        log::{ReplayBatch, ReplayLog, ReplayRecord},
        persist::{JOURNAL_HEADER_BYTES, JOURNAL_RECORD_BYTES, encode_records, journal_records},
    },
    routing::{ClientId, Delay, Destination, Label, NodeId},
    surb::{SURB_KEYS_VERSION, Surb, SurbKeys, create_surb},
};

/// Version of the packet format; part of [`Geometry::id`]. Every key-derivation context string
/// of the packet names it too ("... sphinx v2 ..."): a new version must change them.
///
/// v2: HCTR2-AES-256 payload layers, an AES-256-CTR routing stream and a one-time POLYVAL header
/// MAC (v1: Lioness over ChaCha20 and BLAKE3, ChaCha20, keyed BLAKE3), and this version as the
/// header's first byte where v1 had a key id (nodes find the epoch key by trial, so the header
/// does not show which consensus its sender used). Not yet released, so issue 14's changes
/// (the recipient layer, the version byte) joined v2 without another bump.
pub const FORMAT_VERSION: u8 = 2;

/// Entry points for the fuzz targets in `mix/fuzz/` and the benches (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use crate::sphinx::{geometry::SLOT_SIZE, routing::Slot};

    /// Decodes a routing slot; returns the re-encoding of whatever decodes, which must equal
    /// the input (the encoding is canonical).
    pub fn decode_slot(bytes: &[u8]) -> Option<[u8; SLOT_SIZE]> {
        let slot = <&[u8; SLOT_SIZE]>::try_from(bytes).ok()?;
        Slot::decode(slot).ok().map(|s| s.encode())
    }

    /// What a node holding `secret` derives for `packet`: the shared secret `enc(x·E)` and the
    /// 128 bytes of hop key material (for the known-answer vectors). `None` if `E` does not
    /// decode.
    pub fn hop_secrets(
        secret: &crate::NodeSecretKey,
        packet: &[u8],
    ) -> Option<([u8; 32], [u8; 128])> {
        let element = packet.get(crate::VERSION_SIZE..crate::VERSION_SIZE + crate::ELEMENT_SIZE)?;
        let point = curve25519_dalek::ristretto::CompressedRistretto::from_slice(element)
            .ok()?
            .decompress()?;
        let shared = (point * secret.scalar()).compress().to_bytes();
        Some((shared, crate::sphinx::crypto::HopKeys::material(&shared)))
    }

    /// HCTR2-AES-256 encryption in place (the body cipher), key schedule included.
    pub fn hctr2_encrypt(key: &[u8; 32], tweak: &[u8], data: &mut [u8]) {
        crate::sphinx::hctr2::Hctr2::new(key).encrypt(tweak, data);
    }

    /// HCTR2-AES-256 decryption in place, key schedule included.
    pub fn hctr2_decrypt(key: &[u8; 32], tweak: &[u8], data: &mut [u8]) {
        crate::sphinx::hctr2::Hctr2::new(key).decrypt(tweak, data);
    }
}
