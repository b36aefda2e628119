//! Packet geometry: how many hops a header can route and how many bytes a packet carries.
//!
//! Every packet on the wire has exactly [`Geometry::packet_size`] bytes, whatever its route length
//! or content, so that size never tells packets apart. Nodes and clients must agree on the
//! geometry; the consensus names it by [`Geometry::id`].

use super::error::GeometryError;

/// Bytes of the group element (a compressed Ristretto point) at the head of every header.
pub const ELEMENT_SIZE: usize = 32;
/// Bytes of a header MAC (128-bit security).
pub const MAC_SIZE: usize = 16;
/// Bytes of the format version at the head of every header.
pub const VERSION_SIZE: usize = 1;
/// The header format version every packet carries in clear, the same for every packet and every
/// epoch: a node finds the epoch key by trying its live keys ([`crate::KeyRing`]), so nothing
/// in a header says which consensus its sender used. Covered by every hop's MAC.
pub const HEADER_VERSION: u8 = crate::FORMAT_VERSION;
/// Bytes of one hop's routing slot inside the encrypted routing information.
pub const SLOT_SIZE: usize = 55;
/// Bytes of the all-zero integrity tag in front of the plaintext payload.
pub const PAYLOAD_TAG_SIZE: usize = 16;
/// Upper bound on [`Geometry::max_hops`]; packet building keeps its scratch space on the stack.
pub const MAX_HOPS_LIMIT: usize = 16;
/// Bytes of routing information for [`MAX_HOPS_LIMIT`] hops plus one slot of keystream tail.
pub(crate) const MAX_ROUTING_SCRATCH: usize = (MAX_HOPS_LIMIT + 1) * SLOT_SIZE;

/// Shape of every packet in one network: maximum route length and payload capacity.
///
/// The header size is derived: `1 + 32 + 16 + max_hops * 55` bytes. The body is the payload plus
/// a 16-byte zero tag, all under the wide-block cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    max_hops: usize,
    payload_size: usize,
}

impl Geometry {
    /// Entry gateway, three mix layers, exit gateway; 2 KiB of payload.
    pub const DEFAULT: Geometry = Geometry {
        max_hops: 5,
        payload_size: 2048,
    };

    /// Smallest payload accepted; the wide-block cipher needs more than one 32-byte half.
    pub const MIN_PAYLOAD: usize = 32;
    /// Largest payload accepted (64 KiB); bigger messages are fragmented by the client.
    pub const MAX_PAYLOAD: usize = 65536;

    /// A geometry with `max_hops` in `1..=16` and `payload_size` in `32..=65536` bytes.
    pub fn new(max_hops: usize, payload_size: usize) -> Result<Self, GeometryError> {
        if !(1..=MAX_HOPS_LIMIT).contains(&max_hops) {
            return Err(GeometryError::Hops(max_hops));
        }
        if !(Self::MIN_PAYLOAD..=Self::MAX_PAYLOAD).contains(&payload_size) {
            return Err(GeometryError::Payload(payload_size));
        }
        Ok(Self {
            max_hops,
            payload_size,
        })
    }

    /// Longest route a header can carry.
    pub const fn max_hops(&self) -> usize {
        self.max_hops
    }

    /// Plaintext bytes a packet carries to its final hop.
    pub const fn payload_size(&self) -> usize {
        self.payload_size
    }

    /// Plaintext bytes a forward packet under the recipient layer carries (`build_packet_to`):
    /// the payload less the layer's 32-byte representative.
    pub const fn recipient_payload_size(&self) -> usize {
        self.payload_size - crate::sphinx::recipient::REPRESENTATIVE_SIZE
    }

    /// Bytes of the encrypted routing information (one slot per possible hop).
    pub const fn routing_size(&self) -> usize {
        self.max_hops * SLOT_SIZE
    }

    /// Bytes of a header: version, group element, MAC, routing information.
    pub const fn header_size(&self) -> usize {
        VERSION_SIZE + ELEMENT_SIZE + MAC_SIZE + self.routing_size()
    }

    /// Bytes of the body: zero tag plus payload, encrypted as one wide block.
    pub const fn body_size(&self) -> usize {
        PAYLOAD_TAG_SIZE + self.payload_size
    }

    /// Bytes of every packet on the wire.
    pub const fn packet_size(&self) -> usize {
        self.header_size() + self.body_size()
    }

    /// A stable identifier for the consensus: format version, max hops and payload size.
    pub fn id(&self) -> u64 {
        // Layout: 8 bits format version | 8 bits max_hops | 32 bits payload size.
        (u64::from(crate::FORMAT_VERSION) << 40)
            | ((self.max_hops as u64) << 32)
            | (self.payload_size as u64)
    }
}

impl Default for Geometry {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes() {
        let g = Geometry::DEFAULT;
        assert_eq!(g.header_size(), 1 + 32 + 16 + 5 * 55);
        assert_eq!(g.header_size(), 324);
        assert_eq!(g.body_size(), 2064);
        assert_eq!(g.packet_size(), 2388);
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(Geometry::new(0, 2048), Err(GeometryError::Hops(0)));
        assert_eq!(Geometry::new(17, 2048), Err(GeometryError::Hops(17)));
        assert_eq!(Geometry::new(5, 31), Err(GeometryError::Payload(31)));
        assert!(Geometry::new(16, 65536).is_ok());
        assert_ne!(
            Geometry::new(4, 2048).map(|g| g.id()),
            Ok(Geometry::DEFAULT.id())
        );
    }
}
