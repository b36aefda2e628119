//! Unwrapping one layer of a packet (a node's side), in place and without heap allocation.
//!
//! Order of checks: size, key id, group element, shared secret, header MAC (constant time),
//! replay tag (recorded only for authentic packets, so forged packets cannot poison the cache; a
//! full filter refuses rather than guess);
//! then the routing information is decrypted, one Lioness layer comes off the body, and the
//! routing slot is decoded.

use chacha20::cipher::StreamCipher;
use curve25519_dalek::ristretto::CompressedRistretto;
use zeroize::Zeroizing;

use super::{
    crypto::HopKeys,
    error::{OpenError, UnwrapError},
    geometry::{ELEMENT_SIZE, Geometry, KEY_ID_SIZE, MAC_SIZE, PAYLOAD_TAG_SIZE, SLOT_SIZE},
    keys::{KeyId, NodeSecretKey},
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

/// Removes one layer of `packet` with `secret`, the key named by `key_id`.
///
/// On success the buffer holds the packet for the next hop (or the final body), and the replay
/// tag is recorded in `replay`. On error the buffer's content is unspecified and must be dropped.
pub fn unwrap_packet(
    geometry: &Geometry,
    key_id: KeyId,
    secret: &NodeSecretKey,
    replay: &ReplayCache,
    packet: &mut [u8],
) -> Result<Processed, UnwrapError> {
    if packet.len() != geometry.packet_size() {
        return Err(UnwrapError::WrongSize {
            expected: geometry.packet_size(),
            got: packet.len(),
        });
    }
    let (header, body) = packet.split_at_mut(geometry.header_size());
    let (id, rest) = header.split_at_mut(KEY_ID_SIZE);
    let (element, rest) = rest.split_at_mut(ELEMENT_SIZE);
    let (mac, routing) = rest.split_at_mut(MAC_SIZE);
    if id[0] != key_id.0 {
        return Err(UnwrapError::UnknownKey(id[0]));
    }

    // The identity (all-zero encoding) would give a shared secret everyone knows. E is public,
    // and the group has prime order, so checking E here is enough and costs nothing secret.
    if element.iter().all(|&b| b == 0) {
        return Err(UnwrapError::InvalidElement);
    }
    let point = CompressedRistretto::from_slice(element)
        .ok()
        .and_then(|c| c.decompress())
        .ok_or(UnwrapError::InvalidElement)?;
    let shared = Zeroizing::new((point * secret.scalar()).compress().to_bytes());
    let keys = HopKeys::derive(&shared);
    if !keys.verify_mac(id[0], element, routing, mac) {
        return Err(UnwrapError::Mac);
    }
    replay
        .check_and_insert(&keys.tag)
        .map_err(|refusal| match refusal {
            ReplayRefusal::Replay => UnwrapError::Replay,
            ReplayRefusal::Full => UnwrapError::ReplayFilterFull,
        })?;

    // Decrypt the routing information and shift it one slot left; the keystream fills the tail.
    let mut cipher = keys.routing_cipher();
    cipher.apply_keystream(routing);
    let mut slot = [0u8; SLOT_SIZE];
    slot.copy_from_slice(&routing[..SLOT_SIZE]);
    let tail_start = routing.len() - SLOT_SIZE;
    routing.copy_within(SLOT_SIZE.., 0);
    routing[tail_start..].fill(0);
    cipher.apply_keystream(&mut routing[tail_start..]);

    keys.payload.decrypt(body);

    match Slot::decode(&slot).map_err(|_| UnwrapError::Routing)? {
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
