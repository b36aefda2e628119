//! Unwrapping one layer of a packet (a node's side), in place.
//!
//! Order of checks: size, format version, group element, then per live key (current epoch
//! first, see [`KeyRing::trial_order`]) shared secret and header MAC (constant time),
//! replay tag (recorded only for authentic packets, so forged packets cannot poison the cache; a
//! full filter refuses rather than guess);
//! then the routing information is decrypted, the payload layer comes off the body, and the
//! routing slot is decoded.
//!
//! [`unwrap_batch`] does the same for the packets a worker took together and shares the key
//! agreement's encoding step across them: it computes `(x/2)·E` per packet and gets every
//! `enc(x·E)` from one batched double-and-encode (curve25519-dalek's
//! `RistrettoPoint::double_and_compress_batch`: one field inversion for the batch instead of one
//! inverse square root per packet). The shared secret is the same bytes as [`unwrap_packet`]'s.
//! Decoding `E` still costs one inverse square root per packet: a square root cannot be shared
//! by Montgomery's trick. Batching cannot let one packet spoil another's secret: Montgomery's
//! trick would spread a zero denominator to the whole batch, but dalek's batch inversion skips
//! zero inputs (in constant time), and no input here has one anyway (the denominator vanishes
//! only for points of order dividing 8; every input is `(x/2)·E` with `E` a decoded,
//! non-identity element of the prime-order group, and `x/2 ≠ 0`). `tests/batch.rs` checks that
//! a batch gives every packet, honest or malformed, what unwrapping it alone gives.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use zeroize::{Zeroize, Zeroizing};

use super::{
    crypto::HopKeys,
    error::{OpenError, UnwrapError},
    geometry::{
        ELEMENT_SIZE, Geometry, HEADER_VERSION, MAC_SIZE, MAX_ROUTING_SCRATCH, PAYLOAD_TAG_SIZE,
        SLOT_SIZE, VERSION_SIZE,
    },
    keyring::{EpochKey, KeyRing},
    keys::NodeSecretKey,
    replay::{ReplayCache, ReplayRefusal},
    routing::{Delay, Destination, NodeId, Slot},
};

/// What a hop does with a packet it unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Hold the packet (now rewritten in place for the next hop) for `delay`, then send it to
    /// `next`.
    Forward {
        /// The next hop.
        next: NodeId,
        /// How long to hold the packet.
        delay: Delay,
    },
    /// This hop is the last: after `delay`, hand the body (see [`body`]) to the destination.
    Final {
        /// Deliver to a client, or drop (cover traffic).
        destination: Destination,
        /// How long to hold the packet.
        delay: Delay,
    },
}

/// Removes one layer of `packet` with `secret`. No heap allocation.
///
/// On success the buffer holds the packet for the next hop (or the final body), and the replay
/// tag is recorded in `replay`. A failed MAC ([`UnwrapError::Mac`]) leaves the buffer as it was
/// (so another key may be tried); on any other error its content is unspecified and it must be
/// dropped.
pub fn unwrap_packet(
    geometry: &Geometry,
    secret: &NodeSecretKey,
    replay: &ReplayCache,
    packet: &mut [u8],
) -> Result<Processed, UnwrapError> {
    check_header(geometry, packet)?;
    let point = decode_element(packet)?;
    unwrap_with(geometry, &point, secret, replay, packet)
}

/// The key agreement with one key, then [`finish`].
fn unwrap_with(
    geometry: &Geometry,
    point: &RistrettoPoint,
    secret: &NodeSecretKey,
    replay: &ReplayCache,
    packet: &mut [u8],
) -> Result<Processed, UnwrapError> {
    let shared = Zeroizing::new((point * secret.scalar()).compress().to_bytes());
    finish(geometry, &shared, replay, packet)
}

/// Removes one layer of `packet` with the first of `ring`'s live keys whose MAC verifies, in
/// the ring's trial order (current epoch first); returns that key's epoch with the result.
///
/// Nothing in the header names the key, so that a packet built from an older (or newer)
/// consensus looks like any other to every observer; the price is one more key agreement per
/// key tried, paid only by packets not under the current key (and by forgeries: at most
/// three). A MAC that fails leaves the buffer untouched, so each try sees the packet as sent.
pub fn unwrap_with_ring(
    geometry: &Geometry,
    ring: &KeyRing,
    packet: &mut [u8],
) -> Result<(u64, Processed), UnwrapError> {
    check_header(geometry, packet)?;
    let point = decode_element(packet)?;
    try_keys(geometry, ring, &point, ring.trial_order(), packet)
}

/// Tries `keys` in order on `packet` (size, version and element already checked).
fn try_keys<'r>(
    geometry: &Geometry,
    ring: &KeyRing,
    point: &RistrettoPoint,
    keys: impl Iterator<Item = &'r EpochKey>,
    packet: &mut [u8],
) -> Result<(u64, Processed), UnwrapError> {
    for key in keys {
        match unwrap_with(geometry, point, key.secret(), key.replay_cache(), packet) {
            Err(UnwrapError::Mac) => continue,
            done => return done.map(|processed| (key.epoch(), processed)),
        }
    }
    Err(no_key_verified(ring))
}

/// What a packet no live key opens is called: [`UnwrapError::Mac`] while the ring holds the
/// current epoch's key, [`UnwrapError::UnknownKey`] when it lost it (operators see the node's
/// own trouble apart). Either may be a forgery or an honest packet for a retired key; neither is
/// a peer fault.
fn no_key_verified(ring: &KeyRing) -> UnwrapError {
    if ring.for_epoch(ring.current_epoch()).is_some() {
        UnwrapError::Mac
    } else {
        UnwrapError::UnknownKey
    }
}

/// Removes one layer from each of `packets` as [`unwrap_with_ring`] would (the result for
/// `packets[i]` is `results[i]`; on error the buffer must be dropped). The key agreement with
/// the ring's first key (the current epoch's) is batched: the encodings of the shared secrets
/// are computed together. A packet that key does not open tries the others alone.
pub fn unwrap_batch(
    geometry: &Geometry,
    ring: &KeyRing,
    packets: &mut [&mut [u8]],
) -> Vec<Result<(u64, Processed), UnwrapError>> {
    let mut order = ring.trial_order();
    let Some(first) = order.next() else {
        // No key: each packet fails as it would alone (bad input first, then no key).
        return packets
            .iter()
            .map(|p| {
                check_header(geometry, p)?;
                decode_element(p)?;
                Err(no_key_verified(ring))
            })
            .collect();
    };
    // Decode every element and multiply by x/2; packets that fail keep their error, the others
    // (`None`) wait for their secret.
    let mut results: Vec<Option<Result<(u64, Processed), UnwrapError>>> =
        Vec::with_capacity(packets.len());
    let mut points: Vec<Option<RistrettoPoint>> = Vec::with_capacity(packets.len());
    let mut halves: Vec<RistrettoPoint> = Vec::with_capacity(packets.len());
    for packet in packets.iter() {
        match check_header(geometry, packet).and_then(|()| decode_element(packet)) {
            Ok(point) => {
                halves.push(point * first.secret().half());
                points.push(Some(point));
                results.push(None);
            }
            Err(e) => {
                points.push(None);
                results.push(Some(Err(e)));
            }
        }
    }
    let mut secrets = Zeroizing::new(match halves.len() {
        0 => Vec::new(),
        // One packet: a plain encoding costs what the batch would, without its allocations.
        1 => vec![(halves[0] + halves[0]).compress()],
        _ => RistrettoPoint::double_and_compress_batch(&halves),
    });
    halves.zeroize();
    let mut secrets = secrets.iter_mut();
    for ((packet, result), point) in packets.iter_mut().zip(results.iter_mut()).zip(&points) {
        if result.is_some() {
            continue;
        }
        // One secret per pending packet, in order; the ring did not change in between.
        let Some(secret) = secrets.next() else {
            *result = Some(Err(UnwrapError::Mac));
            continue;
        };
        let done = finish(geometry, &secret.0, first.replay_cache(), packet);
        secret.zeroize();
        *result = Some(match (done, point) {
            (Err(UnwrapError::Mac), Some(point)) => {
                try_keys(geometry, ring, point, ring.trial_order().skip(1), packet)
            }
            (done, _) => done.map(|processed| (first.epoch(), processed)),
        });
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(UnwrapError::Mac)))
        .collect()
}

/// Size and format version: what is checked before any crypto.
fn check_header(geometry: &Geometry, packet: &[u8]) -> Result<(), UnwrapError> {
    check_size(geometry, packet)?;
    match packet.first() {
        Some(&HEADER_VERSION) => Ok(()),
        Some(&other) => Err(UnwrapError::UnknownVersion(other)),
        None => Err(UnwrapError::WrongSize {
            expected: geometry.packet_size(),
            got: 0,
        }),
    }
}

fn check_size(geometry: &Geometry, packet: &[u8]) -> Result<(), UnwrapError> {
    if packet.len() != geometry.packet_size() {
        return Err(UnwrapError::WrongSize {
            expected: geometry.packet_size(),
            got: packet.len(),
        });
    }
    Ok(())
}

/// The packet's group element `E`, decoded (one inverse square root).
fn decode_element(packet: &[u8]) -> Result<RistrettoPoint, UnwrapError> {
    let element = packet
        .get(VERSION_SIZE..VERSION_SIZE + ELEMENT_SIZE)
        .ok_or(UnwrapError::InvalidElement)?;
    // The identity (all-zero encoding) would give a shared secret everyone knows. E is public,
    // and the group has prime order, so checking E here is enough and costs nothing secret.
    if element.iter().all(|&b| b == 0) {
        return Err(UnwrapError::InvalidElement);
    }
    CompressedRistretto::from_slice(element)
        .ok()
        .and_then(|c| c.decompress())
        .ok_or(UnwrapError::InvalidElement)
}

/// Everything after the key agreement: keys, MAC, replay tag, routing, body, slot.
fn finish(
    geometry: &Geometry,
    shared: &[u8; 32],
    replay: &ReplayCache,
    packet: &mut [u8],
) -> Result<Processed, UnwrapError> {
    let (header, body) = packet.split_at_mut(geometry.header_size());
    let (version, rest) = header.split_at_mut(VERSION_SIZE);
    let (element, rest) = rest.split_at_mut(ELEMENT_SIZE);
    let (mac, routing) = rest.split_at_mut(MAC_SIZE);
    let keys = HopKeys::derive(shared);
    if !keys.verify_mac(version[0], element, routing, mac) {
        return Err(UnwrapError::Mac);
    }
    replay
        .check_and_insert(&keys.tag)
        .map_err(|refusal| match refusal {
            ReplayRefusal::Replay => UnwrapError::Replay,
            ReplayRefusal::Full => UnwrapError::ReplayFilterFull,
        })?;

    // Decrypt the routing information extended by one zero slot; the first slot is ours, the
    // rest (shifted left one slot, its tail from the keystream) is the next hop's.
    let mut scratch = Zeroizing::new([0u8; MAX_ROUTING_SCRATCH]);
    let extended = &mut scratch[..routing.len() + SLOT_SIZE];
    extended[..routing.len()].copy_from_slice(routing);
    keys.apply_routing_stream(extended);
    let mut slot = [0u8; SLOT_SIZE];
    slot.copy_from_slice(&extended[..SLOT_SIZE]);
    routing.copy_from_slice(&extended[SLOT_SIZE..]);

    keys.payload_layer().peel(body);

    let decoded = Slot::decode(&slot).map_err(|_| UnwrapError::Routing);
    slot.zeroize();
    match decoded? {
        Slot::Forward {
            delay,
            next,
            element: next_element,
            mac: next_mac,
        } => {
            element.copy_from_slice(&next_element);
            mac.copy_from_slice(&next_mac);
            Ok(Processed::Forward { next, delay })
        }
        Slot::Final { delay, destination } => Ok(Processed::Final { destination, delay }),
    }
}

/// The body of a packet (everything after the header): what the final hop delivers.
pub fn body<'a>(geometry: &Geometry, packet: &'a [u8]) -> Option<&'a [u8]> {
    packet.get(geometry.header_size()..)
}

/// Checks the integrity tag of a forward message's final body and returns its payload.
///
/// Any change to the body on the way (or a body meant for someone else) fails here with
/// [`OpenError::Tampered`]; the check runs in constant time.
pub fn open_payload<'a>(geometry: &Geometry, body: &'a [u8]) -> Result<&'a [u8], OpenError> {
    use subtle::ConstantTimeEq;
    if body.len() != geometry.body_size() {
        return Err(OpenError::WrongSize {
            expected: geometry.body_size(),
            got: body.len(),
        });
    }
    let (tag, payload) = body.split_at(PAYLOAD_TAG_SIZE);
    if bool::from(tag.ct_eq(&[0u8; PAYLOAD_TAG_SIZE])) {
        Ok(payload)
    } else {
        Err(OpenError::Tampered)
    }
}
