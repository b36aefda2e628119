//! What one hop learns: the per-hop routing slot and its fixed 55-byte encoding.
//!
//! ```text
//! forward:  0x01 | delay u32 BE (µs) | next NodeId u16 BE | next element (32) | next MAC (16)
//! deliver:  0x02 | delay u32 BE (µs) | ClientId (32) | Label (16) | 0x0000
//! drop:     0x03 | delay u32 BE (µs) | 50 zero bytes
//! ```
//! The slot is authenticated by the hop's header MAC before it is decoded, so a decoding error
//! means the packet's creator was buggy or malicious; it is still an error, never a panic.

use std::time::Duration;

use super::geometry::{ELEMENT_SIZE, MAC_SIZE, SLOT_SIZE};

/// A compact node name: the node's index in the epoch's topology, which maps it to a libp2p
/// `PeerId`. Two bytes keep the header small (a consensus holds at most 65 536 nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u16);

/// How long a hop holds a packet before passing it on, chosen by the sender, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Delay(u32);

impl Delay {
    /// No delay.
    pub const ZERO: Delay = Delay(0);

    /// A delay of `micros` microseconds (at most about 71 minutes).
    pub const fn from_micros(micros: u32) -> Self {
        Delay(micros)
    }

    /// A delay from a duration, saturating at `u32::MAX` microseconds.
    pub fn from_duration(d: Duration) -> Self {
        Delay(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
    }

    /// The delay in microseconds.
    pub const fn as_micros(&self) -> u32 {
        self.0
    }

    /// The delay as a duration.
    pub const fn as_duration(&self) -> Duration {
        Duration::from_micros(self.0 as u64)
    }
}

/// Names a client of a gateway (in p2pmix: the hash of the client's identity key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub [u8; 32]);

/// A 16-byte value the packet's creator puts in the final slot for the recipient: a SURB's id for
/// replies, random bytes for forward messages. The recipient uses it to find the SURB's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(pub [u8; 16]);

/// What the final hop does with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Deliver the body to one of this gateway's clients.
    Deliver {
        /// The client.
        client: ClientId,
        /// The creator's label for the recipient.
        label: Label,
    },
    /// Discard it: the packet was drop-cover traffic.
    Drop,
}

/// One decoded routing slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Forward {
        delay: Delay,
        next: NodeId,
        element: [u8; ELEMENT_SIZE],
        mac: [u8; MAC_SIZE],
    },
    Final {
        delay: Delay,
        destination: Destination,
    },
}

const FLAG_FORWARD: u8 = 0x01;
const FLAG_DELIVER: u8 = 0x02;
const FLAG_DROP: u8 = 0x03;

/// Why a routing slot did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotError;

impl Slot {
    pub(crate) fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut out = [0u8; SLOT_SIZE];
        match self {
            Slot::Forward {
                delay,
                next,
                element,
                mac,
            } => {
                out[0] = FLAG_FORWARD;
                out[1..5].copy_from_slice(&delay.0.to_be_bytes());
                out[5..7].copy_from_slice(&next.0.to_be_bytes());
                out[7..39].copy_from_slice(element);
                out[39..55].copy_from_slice(mac);
            }
            Slot::Final {
                delay,
                destination: Destination::Deliver { client, label },
            } => {
                out[0] = FLAG_DELIVER;
                out[1..5].copy_from_slice(&delay.0.to_be_bytes());
                out[5..37].copy_from_slice(&client.0);
                out[37..53].copy_from_slice(&label.0);
            }
            Slot::Final {
                delay,
                destination: Destination::Drop,
            } => {
                out[0] = FLAG_DROP;
                out[1..5].copy_from_slice(&delay.0.to_be_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8; SLOT_SIZE]) -> Result<Self, SlotError> {
        let (flag, rest) = bytes.split_first().ok_or(SlotError)?;
        let (delay, body) = rest.split_first_chunk::<4>().ok_or(SlotError)?;
        let delay = Delay(u32::from_be_bytes(*delay));
        match *flag {
            FLAG_FORWARD => {
                let (next, body) = body.split_first_chunk::<2>().ok_or(SlotError)?;
                let (element, mac) = body.split_first_chunk::<ELEMENT_SIZE>().ok_or(SlotError)?;
                let mac: [u8; MAC_SIZE] = mac.try_into().map_err(|_| SlotError)?;
                Ok(Slot::Forward {
                    delay,
                    next: NodeId(u16::from_be_bytes(*next)),
                    element: *element,
                    mac,
                })
            }
            FLAG_DELIVER => {
                let (client, body) = body.split_first_chunk::<32>().ok_or(SlotError)?;
                let (label, reserved) = body.split_first_chunk::<16>().ok_or(SlotError)?;
                if reserved.iter().any(|&b| b != 0) {
                    return Err(SlotError);
                }
                Ok(Slot::Final {
                    delay,
                    destination: Destination::Deliver {
                        client: ClientId(*client),
                        label: Label(*label),
                    },
                })
            }
            FLAG_DROP if body.iter().all(|&b| b == 0) => Ok(Slot::Final {
                delay,
                destination: Destination::Drop,
            }),
            _ => Err(SlotError),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_slot() -> impl Strategy<Value = Slot> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u16>(),
                any::<[u8; 32]>(),
                any::<[u8; 16]>()
            )
                .prop_map(|(d, n, element, mac)| Slot::Forward {
                    delay: Delay(d),
                    next: NodeId(n),
                    element,
                    mac
                }),
            (any::<u32>(), any::<[u8; 32]>(), any::<[u8; 16]>()).prop_map(|(d, c, l)| {
                Slot::Final {
                    delay: Delay(d),
                    destination: Destination::Deliver {
                        client: ClientId(c),
                        label: Label(l),
                    },
                }
            }),
            any::<u32>().prop_map(|d| Slot::Final {
                delay: Delay(d),
                destination: Destination::Drop
            }),
        ]
    }

    proptest! {
        #[test]
        fn slots_round_trip(slot in any_slot()) {
            prop_assert_eq!(Slot::decode(&slot.encode()), Ok(slot));
        }

        #[test]
        fn slot_sized_bytes_decode_canonically(flag in 0u8..5, rest in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], SLOT_SIZE - 1)) {
            let mut bytes = vec![flag];
            bytes.extend(rest);
            if let Ok(slot) = Slot::decode(&<[u8; SLOT_SIZE]>::try_from(&bytes[..]).unwrap()) {
                prop_assert_eq!(&slot.encode()[..], &bytes[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(slot) = <&[u8; SLOT_SIZE]>::try_from(&bytes[..]) && let Ok(decoded) = Slot::decode(slot) {
                prop_assert_eq!(&decoded.encode(), slot);
            }
        }
    }

    #[test]
    fn unknown_flags_and_dirty_padding_are_rejected() {
        let mut bytes = [0u8; SLOT_SIZE];
        bytes[0] = 0x04;
        assert_eq!(Slot::decode(&bytes), Err(SlotError));
        bytes[0] = FLAG_DROP;
        bytes[54] = 1;
        assert_eq!(Slot::decode(&bytes), Err(SlotError));
        bytes[0] = FLAG_DELIVER;
        assert_eq!(Slot::decode(&bytes), Err(SlotError));
        bytes[54] = 0;
        assert!(Slot::decode(&bytes).is_ok());
    }

    #[test]
    fn delay_conversions() {
        assert_eq!(
            Delay::from_duration(Duration::from_millis(15)).as_micros(),
            15_000
        );
        assert_eq!(
            Delay::from_duration(Duration::from_secs(1 << 40)).as_micros(),
            u32::MAX
        );
        assert_eq!(
            Delay::from_micros(7).as_duration(),
            Duration::from_micros(7)
        );
    }
}
