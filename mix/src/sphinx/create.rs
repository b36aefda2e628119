//! Building headers and packets (the sender's side).
//!
//! One fresh ephemeral scalar per hop (a KEM-style header, as in Outfox): hop `i` finds its
//! element `E_i = e_i * G` in the clear at the head of the header and gets `E_{i+1}` from its own
//! decrypted routing slot, so each hop costs the sender one fixed-base and one variable-base
//! multiplication and the node one, and the work grows linearly with the route (classic Sphinx:
//! quadratically).
//!
//! The sender draws `h_i` and uses `e_i = 2·h_i` (uniform, as the group order is odd): it computes
//! `h_i·G` and `h_i·X_i` and gets the encodings of `E_i = 2·(h_i·G)` and `s_i = enc(2·(h_i·X_i))`
//! for all hops from one batched double-and-encode (one field inversion for the whole route
//! instead of 2n inverse square roots).

use curve25519_dalek::{ristretto::RistrettoPoint, scalar::Scalar};
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use super::{
    crypto::HopKeys,
    error::BuildError,
    geometry::{
        ELEMENT_SIZE, Geometry, HEADER_VERSION, MAC_SIZE, MAX_ROUTING_SCRATCH, SLOT_SIZE,
        VERSION_SIZE,
    },
    keys::{NodePublicKey, mul_base},
    recipient::{self, REPRESENTATIVE_SIZE, RecipientPublicKey},
    routing::{Delay, Destination, NodeId, Slot},
};

/// One hop of a route: who it is, its Sphinx key for the packet's epoch, and how long it holds
/// the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The node's compact id in the epoch's topology.
    pub node: NodeId,
    /// The node's public Sphinx key for the epoch of the sender's consensus.
    pub key: NodePublicKey,
    /// How long this hop holds the packet before passing it on.
    pub delay: Delay,
}

/// The per-hop shared secrets of a header, kept by a SURB's creator to undo the hops' payload
/// layers. Zeroized on drop.
pub(crate) struct HeaderSecrets(pub(crate) Vec<[u8; 32]>);

impl Drop for HeaderSecrets {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Writes a header for `route` into `out` (exactly `geometry.header_size()` bytes) and returns
/// the per-hop shared secrets.
pub(crate) fn build_header<R: CryptoRng + ?Sized>(
    geometry: &Geometry,
    route: &[Hop],
    destination: &Destination,
    rng: &mut R,
    out: &mut [u8],
) -> Result<HeaderSecrets, BuildError> {
    let r = geometry.max_hops();
    let n = route.len();
    if n == 0 || n > r {
        return Err(BuildError::RouteLength { hops: n, max: r });
    }
    debug_assert_eq!(out.len(), geometry.header_size());
    let routing_len = geometry.routing_size();
    let stream_len = routing_len + SLOT_SIZE;

    // Ephemeral elements and shared secrets, one per hop: the halves `h·G` (elements) and
    // `h·X` (secrets), then every encoding of their doubles in one batch.
    let mut halves: Vec<RistrettoPoint> = Vec::with_capacity(2 * n);
    for hop in route {
        let mut h = Scalar::random(rng);
        halves.push(mul_base(&h));
        halves.push(hop.key.point() * h);
        h.zeroize();
    }
    let encoded = Zeroizing::new(RistrettoPoint::double_and_compress_batch(&halves));
    halves.zeroize();
    let mut elements = Vec::with_capacity(n);
    let mut secrets = HeaderSecrets(Vec::with_capacity(n));
    for pair in encoded.chunks_exact(2) {
        elements.push(pair[0].to_bytes());
        secrets.0.push(pair[1].to_bytes());
    }
    let keys: Vec<HopKeys> = secrets.0.iter().map(HopKeys::derive).collect();

    // Keystreams of (r + 1) slots per hop.
    let mut streams = vec![0u8; n * stream_len];
    for (k, stream) in keys.iter().zip(streams.chunks_exact_mut(stream_len)) {
        k.apply_routing_stream(stream);
    }
    let stream = |i: usize| &streams[i * stream_len..(i + 1) * stream_len];

    // Filler: what the hops before the last shift in at the tail of the routing information.
    let mut filler = Vec::with_capacity((n - 1) * SLOT_SIZE);
    for i in 0..n - 1 {
        filler.extend_from_slice(&[0u8; SLOT_SIZE]);
        let start = stream_len - filler.len();
        for (f, s) in filler.iter_mut().zip(&stream(i)[start..]) {
            *f ^= s;
        }
    }

    // Routing information of the last hop: its slot, random padding, then the filler.
    let mut routing = [0u8; MAX_ROUTING_SCRATCH];
    let routing = &mut routing[..routing_len];
    let last = n - 1;
    routing[..SLOT_SIZE].copy_from_slice(
        &Slot::Final {
            delay: route[last].delay,
            destination: *destination,
        }
        .encode(),
    );
    let pad_end = routing_len - filler.len();
    rng.fill_bytes(&mut routing[SLOT_SIZE..pad_end]);
    for (b, s) in routing[..pad_end].iter_mut().zip(stream(last)) {
        *b ^= s;
    }
    routing[pad_end..].copy_from_slice(&filler);
    let mut mac = keys[last].mac(HEADER_VERSION, &elements[last], routing);

    // Every earlier hop: its slot names the next hop, then the next hop's routing information
    // minus its last slot, all under this hop's keystream.
    for i in (0..last).rev() {
        let slot = Slot::Forward {
            delay: route[i].delay,
            next: route[i + 1].node,
            element: elements[i + 1],
            mac,
        }
        .encode();
        routing.copy_within(0..routing_len - SLOT_SIZE, SLOT_SIZE);
        routing[..SLOT_SIZE].copy_from_slice(&slot);
        for (b, s) in routing.iter_mut().zip(stream(i)) {
            *b ^= s;
        }
        mac = keys[i].mac(HEADER_VERSION, &elements[i], routing);
    }

    let (version, rest) = out.split_at_mut(VERSION_SIZE);
    let (element, rest) = rest.split_at_mut(ELEMENT_SIZE);
    let (mac_out, routing_out) = rest.split_at_mut(MAC_SIZE);
    version[0] = HEADER_VERSION;
    element.copy_from_slice(&elements[0]);
    mac_out.copy_from_slice(&mac);
    routing_out.copy_from_slice(routing);
    streams.zeroize();
    filler.zeroize();
    Ok(secrets)
}

/// Builds a packet that carries `payload` along `route` to `destination`.
///
/// The packet must be sent to `route[0].node`; every hop holds it for its [`Hop::delay`]. The
/// payload is padded with zeros to the geometry's payload size; framing is the caller's.
pub fn build_packet<R: CryptoRng + ?Sized>(
    geometry: &Geometry,
    route: &[Hop],
    destination: &Destination,
    payload: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, BuildError> {
    if payload.len() > geometry.payload_size() {
        return Err(BuildError::PayloadTooLarge {
            got: payload.len(),
            max: geometry.payload_size(),
        });
    }
    let mut packet = vec![0u8; geometry.packet_size()];
    let (header, body) = packet.split_at_mut(geometry.header_size());
    let secrets = build_header(geometry, route, destination, rng, header)?;
    seal_body(payload, body);
    for secret in secrets.0.iter().rev() {
        HopKeys::derive(secret).payload_layer().wrap(body);
    }
    Ok(packet)
}

/// Builds a forward packet that carries `payload` along `route` to `destination`, with the
/// recipient layer keyed to `recipient` innermost (`sphinx/recipient.rs`): the final hop sees
/// uniformly random bytes. The payload holds at most [`Geometry::recipient_payload_size`]
/// bytes; the recipient reads it with [`crate::RecipientKey::open`].
pub fn build_packet_to<R: CryptoRng + ?Sized>(
    geometry: &Geometry,
    route: &[Hop],
    destination: &Destination,
    recipient: &RecipientPublicKey,
    payload: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, BuildError> {
    if payload.len() > geometry.recipient_payload_size() {
        return Err(BuildError::PayloadTooLarge {
            got: payload.len(),
            max: geometry.recipient_payload_size(),
        });
    }
    let mut packet = vec![0u8; geometry.packet_size()];
    let (header, body) = packet.split_at_mut(geometry.header_size());
    let secrets = build_header(geometry, route, destination, rng, header)?;
    seal_body(payload, &mut body[REPRESENTATIVE_SIZE..]);
    recipient::seal(recipient, body, rng);
    for secret in secrets.0.iter().rev() {
        HopKeys::derive(secret).payload_layer().wrap(body);
    }
    Ok(packet)
}

/// Builds a cover packet along `route` to `destination` whose plaintext body is uniformly
/// random bytes: what the final hop sees of it is what it sees of a forward packet under the
/// recipient layer, or of a SURB reply. (Loop cover is recognised by its label on return.)
pub fn build_cover_packet<R: CryptoRng + ?Sized>(
    geometry: &Geometry,
    route: &[Hop],
    destination: &Destination,
    rng: &mut R,
) -> Result<Vec<u8>, BuildError> {
    let mut packet = vec![0u8; geometry.packet_size()];
    let (header, body) = packet.split_at_mut(geometry.header_size());
    let secrets = build_header(geometry, route, destination, rng, header)?;
    rng.fill_bytes(body);
    for secret in secrets.0.iter().rev() {
        HopKeys::derive(secret).payload_layer().wrap(body);
    }
    Ok(packet)
}

/// Lays out the plaintext body: 16 zero bytes of integrity tag, the payload, zero padding.
pub(crate) fn seal_body(payload: &[u8], body: &mut [u8]) {
    body.fill(0);
    let start = super::geometry::PAYLOAD_TAG_SIZE;
    body[start..start + payload.len()].copy_from_slice(payload);
}
