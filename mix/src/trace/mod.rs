//! Test-network traces: what a global passive observer sees of the packets, and the ground truth
//! that only the process handling a packet knows, so that an anonymity analysis can be run on a
//! live network and scored.
//!
//! Two kinds of record, kept in separate files:
//! - **links** (the adversary's view): one line per packet per link end, with the time, the
//!   neighbour and a [`PacketTag`], no keys and no contents. The tag names one packet on one
//!   link, as an observer of that link can (it sees each frame go by); every hop re-randomises
//!   the header, so a tag says nothing about the packet's other hops.
//! - **truth**: which incoming packet a node turned into which outgoing one (or delivered, or
//!   dropped), and which message fragment, acknowledgement or cover packet a client sent in
//!   which packet. Only used to score the analysis, never by it.
//!
//! Recording goes through a [`TraceSink`]; the mix behaviour and the client call it when a sink
//! is set and never otherwise. [`Tracer`] is the file-backed sink ([`TraceFile`]: a bounded
//! channel to a writer thread, a line cap with a counted stop). The line format and its parser
//! are in [`format`](mod@format). Turning tracing on is a test-network decision of the caller (the node and
//! client refuse it unless the pinned authorities file declares a test network).

pub mod file;
pub mod format;

pub use file::{TraceError, TraceFile, TraceKind, TraceLimits, TraceSummary, Tracer};
pub use format::{FormatError, Line};

use libp2p_identity::PeerId;

use crate::{
    relay::{Decision, DropReason},
    sphinx::routing::Destination,
};

/// Bytes of a packet that its tag covers: the version byte, the hop's fresh group element and more of
/// the header, which no two packets (and no two hops of one packet) share.
const TAGGED_BYTES: usize = 64;

/// One packet on one link, as an observer of that link can name it (see the module
/// documentation): a 64-bit FNV-1a hash of the packet's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketTag(pub u64);

impl PacketTag {
    /// The tag of `packet` (as it is on the wire).
    pub fn of(packet: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in packet.iter().take(TAGGED_BYTES) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        PacketTag(h)
    }
}

impl std::fmt::Display for PacketTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which way a packet crossed the link, seen from the recording process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// It arrived here from the neighbour.
    In,
    /// It left here for the neighbour.
    Out,
}

/// Ground truth: what the recording process alone knows about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// A node unwrapped `input` and will send it on as `output`.
    Forwarded {
        /// The packet that arrived.
        input: PacketTag,
        /// The packet it became.
        output: PacketTag,
    },
    /// A node was the final hop of `input`, for one of its clients.
    Delivered {
        /// The packet that arrived.
        input: PacketTag,
    },
    /// A node was the final hop of `input`, a drop-cover packet, and dropped it.
    CoverEnded {
        /// The packet that arrived.
        input: PacketTag,
    },
    /// A node dropped `input` for `reason`.
    Dropped {
        /// The packet that arrived.
        input: PacketTag,
        /// Why.
        reason: DropReason,
    },
    /// A node built `output` itself (its loop cover).
    Originated {
        /// The packet it sent.
        output: PacketTag,
    },
    /// A client sent fragment `index` of `count` of `message`, for the `attempt`-th time.
    Fragment {
        /// The packet it sent.
        output: PacketTag,
        /// The message id.
        message: [u8; 16],
        /// The fragment.
        index: u16,
        /// Fragments of the message.
        count: u16,
        /// Sends of this fragment so far, this one included.
        attempt: u32,
    },
    /// A client sent an acknowledgement or a reply (through a SURB).
    Reply {
        /// The packet it sent.
        output: PacketTag,
    },
    /// A client sent loop cover (back to itself).
    LoopCover {
        /// The packet it sent.
        output: PacketTag,
    },
    /// A client sent drop cover (ending at a gateway).
    DropCover {
        /// The packet it sent.
        output: PacketTag,
    },
}

impl Truth {
    /// The ground truth of a relay's decision on the packet tagged `input`.
    pub fn of_decision<P>(input: PacketTag, decision: &Result<Decision<P>, DropReason>) -> Self {
        match decision {
            Ok(Decision::Forward { packet, .. }) => Truth::Forwarded {
                input,
                output: PacketTag::of(packet),
            },
            Ok(Decision::Final {
                destination: Destination::Deliver { .. },
                ..
            }) => Truth::Delivered { input },
            Ok(Decision::Final {
                destination: Destination::Drop,
                ..
            }) => Truth::CoverEnded { input },
            Err(reason) => Truth::Dropped {
                input,
                reason: *reason,
            },
        }
    }
}

/// Where traces go. Implementations stamp the time themselves and must not block: they are
/// called on the packet path.
pub trait TraceSink: Send + Sync + std::fmt::Debug {
    /// A packet with `tag` crossed the link to or from `peer`.
    fn link(&self, direction: Direction, peer: &PeerId, tag: PacketTag);
    /// A ground-truth record.
    fn truth(&self, record: Truth);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_first_bytes_only() {
        let mut a = vec![7u8; 2048];
        let b = a.clone();
        assert_eq!(PacketTag::of(&a), PacketTag::of(&b));
        a[100] ^= 1; // beyond the tagged bytes
        assert_eq!(PacketTag::of(&a), PacketTag::of(&b));
        a[5] ^= 1;
        assert_ne!(PacketTag::of(&a), PacketTag::of(&b));
        assert_eq!(PacketTag(0xab).to_string(), "00000000000000ab");
    }
}
