//! Single-use reply blocks: a recipient-to-be prepares the header of a route back to itself and
//! hands it out; whoever holds it can send one reply without learning where it goes.
//!
//! The creator keeps [`SurbKeys`] (the per-hop secrets of the return route and the reply key);
//! the holder gets a [`Surb`] (first hop, header, reply key). A SURB used twice carries the same
//! header, so its first hop derives the same replay tag and drops the second copy.
//!
//! Encoding of a [`Surb`]: `first hop (u16 BE) | header (geometry.header_size()) | reply key (32)`.
//!
//! Encoding of [`SurbKeys`] (for the creator's own disk, so that a reply or an acknowledgement
//! can still be read after a restart; never sent): `version (1) = 1 | label (16) | reply key
//! (32) | hops (u8, 1..=MAX_HOPS_LIMIT) | hops x shared secret (32)`. The encoding is held in a
//! [`Zeroizing`] buffer: it is as secret as the keys.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    create::{HeaderSecrets, Hop, build_header, seal_body},
    crypto::HopKeys,
    error::{BuildError, OpenError, SurbError, SurbKeysError},
    geometry::{Geometry, MAX_HOPS_LIMIT},
    payload::PayloadLayer,
    peel::open_payload,
    routing::{ClientId, Destination, Label, NodeId},
};

/// A reply block as handed to the replier.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Surb {
    #[zeroize(skip)]
    first_hop: NodeId,
    header: Vec<u8>,
    reply_key: [u8; 32],
}

impl std::fmt::Debug for Surb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surb")
            .field("first_hop", &self.first_hop)
            .finish_non_exhaustive()
    }
}

/// What the SURB's creator keeps to read the reply. Zeroized on drop.
pub struct SurbKeys {
    label: Label,
    secrets: HeaderSecrets,
    reply_key: [u8; 32],
}

impl Drop for SurbKeys {
    fn drop(&mut self) {
        self.reply_key.zeroize();
    }
}

impl std::fmt::Debug for SurbKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SurbKeys")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Creates a SURB whose reply travels `route` and is delivered to `client` with `label`.
///
/// `route[0]` is where the replier sends the reply; the last hop is the creator's gateway.
pub fn create_surb<R: CryptoRng + ?Sized>(
    geometry: &Geometry,
    route: &[Hop],
    client: ClientId,
    label: Label,
    rng: &mut R,
) -> Result<(Surb, SurbKeys), BuildError> {
    let first_hop = route
        .first()
        .ok_or(BuildError::RouteLength {
            hops: 0,
            max: geometry.max_hops(),
        })?
        .node;
    let mut header = vec![0u8; geometry.header_size()];
    let destination = Destination::Deliver { client, label };
    let secrets = build_header(geometry, route, &destination, rng, &mut header)?;
    let mut reply_key = [0u8; 32];
    rng.fill_bytes(&mut reply_key);
    Ok((
        Surb {
            first_hop,
            header,
            reply_key,
        },
        SurbKeys {
            label,
            secrets,
            reply_key,
        },
    ))
}

impl Surb {
    /// Bytes of an encoded SURB for `geometry`.
    pub const fn encoded_size(geometry: &Geometry) -> usize {
        2 + geometry.header_size() + 32
    }

    /// Where the reply must be sent.
    pub fn first_hop(&self) -> NodeId {
        self.first_hop
    }

    /// The encoding to carry inside a message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.header.len() + 32);
        out.extend_from_slice(&self.first_hop.0.to_be_bytes());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.reply_key);
        out
    }

    /// Decodes a SURB received from anyone; only its length can be checked here (a forged
    /// header fails at its first hop's MAC).
    pub fn from_bytes(geometry: &Geometry, bytes: &[u8]) -> Result<Self, SurbError> {
        let expected = Self::encoded_size(geometry);
        if bytes.len() != expected {
            return Err(SurbError::WrongSize {
                expected,
                got: bytes.len(),
            });
        }
        let (hop, rest) = bytes.split_at(2);
        let (header, key) = rest.split_at(geometry.header_size());
        let mut reply_key = [0u8; 32];
        reply_key.copy_from_slice(key);
        Ok(Surb {
            first_hop: NodeId(u16::from_be_bytes([hop[0], hop[1]])),
            header: header.to_vec(),
            reply_key,
        })
    }

    /// Builds the reply packet, to be sent to [`Surb::first_hop`]. Consumes the SURB: it is
    /// single-use (a second use would be dropped as a replay anyway).
    pub fn into_reply(self, geometry: &Geometry, payload: &[u8]) -> Result<Vec<u8>, SurbError> {
        if payload.len() > geometry.payload_size() {
            return Err(SurbError::PayloadTooLarge {
                got: payload.len(),
                max: geometry.payload_size(),
            });
        }
        if self.header.len() != geometry.header_size() {
            return Err(SurbError::WrongSize {
                expected: Self::encoded_size(geometry),
                got: 2 + self.header.len() + 32,
            });
        }
        let mut packet = vec![0u8; geometry.packet_size()];
        let (header, body) = packet.split_at_mut(geometry.header_size());
        header.copy_from_slice(&self.header);
        seal_body(payload, body);
        PayloadLayer::reply(&self.reply_key).wrap(body);
        Ok(packet)
    }
}

/// Version byte of the [`SurbKeys`] encoding.
pub const SURB_KEYS_VERSION: u8 = 1;

impl SurbKeys {
    /// Bytes of the encoding of keys for a route of `hops` hops.
    pub const fn encoded_size(hops: usize) -> usize {
        1 + 16 + 32 + 1 + 32 * hops
    }

    /// The encoding, for the creator's own store (see the module documentation). Zeroized when
    /// dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let hops = self.secrets.0.len();
        let mut out = Zeroizing::new(Vec::with_capacity(Self::encoded_size(hops)));
        out.push(SURB_KEYS_VERSION);
        out.extend_from_slice(&self.label.0);
        out.extend_from_slice(&self.reply_key);
        // Routes are at most MAX_HOPS_LIMIT hops (checked when the header was built).
        out.push(hops.min(u8::MAX as usize) as u8);
        for secret in &self.secrets.0 {
            out.extend_from_slice(secret);
        }
        out
    }

    /// Decodes keys written by [`SurbKeys::to_bytes`]; every length is checked (a damaged store
    /// is an error, never a panic). Intermediate copies of the secrets are zeroized.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SurbKeysError> {
        let (&version, rest) = bytes.split_first().ok_or(SurbKeysError::Truncated)?;
        if version != SURB_KEYS_VERSION {
            return Err(SurbKeysError::Version(version));
        }
        if rest.len() < 16 + 32 + 1 {
            return Err(SurbKeysError::Truncated);
        }
        let (label, rest) = rest.split_at(16);
        let (key, rest) = rest.split_at(32);
        let (&hops, rest) = rest.split_first().ok_or(SurbKeysError::Truncated)?;
        let hops = usize::from(hops);
        if hops == 0 || hops > MAX_HOPS_LIMIT {
            return Err(SurbKeysError::Hops(hops));
        }
        if rest.len() != 32 * hops {
            return Err(SurbKeysError::Truncated);
        }
        let mut secrets = HeaderSecrets(Vec::with_capacity(hops));
        for chunk in rest.chunks_exact(32) {
            let mut secret = [0u8; 32];
            secret.copy_from_slice(chunk);
            secrets.0.push(secret);
        }
        let mut label_bytes = [0u8; 16];
        label_bytes.copy_from_slice(label);
        let mut reply_key = [0u8; 32];
        reply_key.copy_from_slice(key);
        Ok(SurbKeys {
            label: Label(label_bytes),
            secrets,
            reply_key,
        })
    }

    /// The label the reply arrives with; the creator looks these keys up by it.
    pub fn label(&self) -> Label {
        self.label
    }

    /// Reads a reply's final body in place: undoes every hop's layer and the reply key, then
    /// checks the integrity tag. Returns the payload.
    pub fn open_reply<'a>(
        &self,
        geometry: &Geometry,
        body: &'a mut [u8],
    ) -> Result<&'a [u8], OpenError> {
        if body.len() != geometry.body_size() {
            return Err(OpenError::WrongSize {
                expected: geometry.body_size(),
                got: body.len(),
            });
        }
        for secret in self.secrets.0.iter().rev() {
            HopKeys::derive(secret).payload_layer().wrap(body);
        }
        PayloadLayer::reply(&self.reply_key).peel(body);
        open_payload(geometry, body)
    }
}
