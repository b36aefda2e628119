//! What travels inside a Sphinx payload between clients: message fragments (end-to-end
//! encrypted), acknowledgements and replies (inside SURB replies, readable only by the SURB's
//! creator). Decoding checks every length and never panics: the bytes come from strangers.

use std::fmt;

use p2pmix_mix::{Geometry, Surb};
use thiserror::Error;

/// Version byte of every frame.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of an encoded SURB at the default geometry.
pub const SURB_SIZE: usize = Surb::encoded_size(&Geometry::DEFAULT);

const KIND_FRAGMENT: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_REPLY: u8 = 3;

/// Identifies one message end to end (random, chosen by its sender).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", hex::encode(self.0))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// One decoded frame, borrowing from the buffer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Part `index` of `count` of a message, with the SURB to acknowledge it and (usually in
    /// part 0) SURBs the recipient may reply through.
    Fragment {
        /// The message.
        message: MessageId,
        /// Which part.
        index: u16,
        /// How many parts.
        count: u16,
        /// An encoded SURB for the acknowledgement.
        ack: Option<&'a [u8]>,
        /// Encoded SURBs for replies.
        reply_surbs: Vec<&'a [u8]>,
        /// The part's bytes.
        data: &'a [u8],
    },
    /// Part `index` of `message` arrived.
    Ack {
        /// The message.
        message: MessageId,
        /// Which part.
        index: u16,
    },
    /// Part `index` of `count` of a reply to `in_reply_to`.
    Reply {
        /// The reply's own id.
        message: MessageId,
        /// Which part.
        index: u16,
        /// How many parts.
        count: u16,
        /// The message answered.
        in_reply_to: MessageId,
        /// The part's bytes.
        data: &'a [u8],
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its fields say.
    #[error("truncated frame")]
    Truncated,
    /// Unknown version or kind.
    #[error("unknown frame version {0} or kind {1}")]
    Unknown(u8, u8),
    /// Inconsistent values (index beyond count, zero count, trailing bytes).
    #[error("malformed frame")]
    Malformed,
}

/// Bytes a fragment frame adds around its data.
pub const fn fragment_overhead(reply_surbs: usize) -> usize {
    2 + 16 + 2 + 2 + 1 + SURB_SIZE + 1 + reply_surbs * SURB_SIZE + 2
}

/// Bytes a reply frame adds around its data.
pub const REPLY_OVERHEAD: usize = 2 + 16 + 2 + 2 + 16 + 2;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn id(&mut self) -> Result<MessageId, FrameError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16)?);
        Ok(MessageId(id))
    }
}

impl<'a> Frame<'a> {
    /// Decodes one frame; the whole buffer must be the frame.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let mut r = Reader(bytes);
        let (version, kind) = (r.u8()?, r.u8()?);
        if version != FRAME_VERSION {
            return Err(FrameError::Unknown(version, kind));
        }
        let frame = match kind {
            KIND_FRAGMENT => {
                let message = r.id()?;
                let (index, count) = (r.u16()?, r.u16()?);
                let ack = match r.u8()? {
                    0 => None,
                    1 => Some(r.take(SURB_SIZE)?),
                    _ => return Err(FrameError::Malformed),
                };
                let n = r.u8()? as usize;
                let reply_surbs = (0..n)
                    .map(|_| r.take(SURB_SIZE))
                    .collect::<Result<_, _>>()?;
                let len = r.u16()? as usize;
                let data = r.take(len)?;
                if index >= count {
                    return Err(FrameError::Malformed);
                }
                Frame::Fragment {
                    message,
                    index,
                    count,
                    ack,
                    reply_surbs,
                    data,
                }
            }
            KIND_ACK => Frame::Ack {
                message: r.id()?,
                index: r.u16()?,
            },
            KIND_REPLY => {
                let message = r.id()?;
                let (index, count) = (r.u16()?, r.u16()?);
                let in_reply_to = r.id()?;
                let len = r.u16()? as usize;
                let data = r.take(len)?;
                if index >= count {
                    return Err(FrameError::Malformed);
                }
                Frame::Reply {
                    message,
                    index,
                    count,
                    in_reply_to,
                    data,
                }
            }
            other => return Err(FrameError::Unknown(version, other)),
        };
        if !r.0.is_empty() {
            return Err(FrameError::Malformed);
        }
        Ok(frame)
    }

    /// Encodes the frame. Lengths beyond the wire format's fields are a caller bug and are
    /// truncated to what fits (the client never builds such frames).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FRAME_VERSION];
        let len16 = |n: usize| (n.min(u16::MAX as usize) as u16).to_be_bytes();
        match self {
            Frame::Fragment {
                message,
                index,
                count,
                ack,
                reply_surbs,
                data,
            } => {
                out.push(KIND_FRAGMENT);
                out.extend_from_slice(&message.0);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                match ack {
                    Some(a) => {
                        out.push(1);
                        out.extend_from_slice(a);
                    }
                    None => out.push(0),
                }
                out.push(reply_surbs.len().min(255) as u8);
                for s in reply_surbs.iter().take(255) {
                    out.extend_from_slice(s);
                }
                out.extend_from_slice(&len16(data.len()));
                out.extend_from_slice(&data[..data.len().min(u16::MAX as usize)]);
            }
            Frame::Ack { message, index } => {
                out.push(KIND_ACK);
                out.extend_from_slice(&message.0);
                out.extend_from_slice(&index.to_be_bytes());
            }
            Frame::Reply {
                message,
                index,
                count,
                in_reply_to,
                data,
            } => {
                out.push(KIND_REPLY);
                out.extend_from_slice(&message.0);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&in_reply_to.0);
                out.extend_from_slice(&len16(data.len()));
                out.extend_from_slice(&data[..data.len().min(u16::MAX as usize)]);
            }
        }
        out
    }
}

/// Puts `bytes` in a Sphinx payload with a length prefix (payloads are padded).
pub fn to_payload(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Takes the length-prefixed bytes back out of an opened payload.
pub fn from_payload(payload: &[u8]) -> Result<&[u8], FrameError> {
    let mut r = Reader(payload);
    let len = r.u16()? as usize;
    r.take(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let surb = vec![7u8; SURB_SIZE];
        let frames = [
            Frame::Fragment {
                message: MessageId([1; 16]),
                index: 2,
                count: 3,
                ack: Some(&surb),
                reply_surbs: vec![&surb, &surb],
                data: b"hello",
            },
            Frame::Fragment {
                message: MessageId([1; 16]),
                index: 0,
                count: 1,
                ack: None,
                reply_surbs: vec![],
                data: b"",
            },
            Frame::Ack {
                message: MessageId([2; 16]),
                index: 9,
            },
            Frame::Reply {
                message: MessageId([3; 16]),
                index: 0,
                count: 1,
                in_reply_to: MessageId([4; 16]),
                data: b"re",
            },
        ];
        for f in frames {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes), Ok(f));
        }
    }

    #[test]
    fn fragment_overhead_is_exact() {
        let surb = vec![7u8; SURB_SIZE];
        let f = Frame::Fragment {
            message: MessageId([1; 16]),
            index: 0,
            count: 1,
            ack: Some(&surb),
            reply_surbs: vec![&surb],
            data: b"12345",
        };
        assert_eq!(f.encode().len(), fragment_overhead(1) + 5);
    }

    #[test]
    fn bad_frames_are_errors() {
        let ok = Frame::Ack {
            message: MessageId([2; 16]),
            index: 9,
        }
        .encode();
        assert_eq!(Frame::decode(&ok[..5]), Err(FrameError::Truncated));
        let mut extra = ok.clone();
        extra.push(0);
        assert_eq!(Frame::decode(&extra), Err(FrameError::Malformed));
        assert_eq!(Frame::decode(&[9, 1]), Err(FrameError::Unknown(9, 1)));
        let beyond = Frame::Reply {
            message: MessageId([3; 16]),
            index: 1,
            count: 1,
            in_reply_to: MessageId([4; 16]),
            data: b"",
        }
        .encode();
        assert_eq!(Frame::decode(&beyond), Err(FrameError::Malformed));
        assert_eq!(from_payload(&[0, 5, 1]), Err(FrameError::Truncated));
        assert_eq!(from_payload(&to_payload(b"abc")), Ok(&b"abc"[..]));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = Frame::decode(&bytes);
            let _ = from_payload(&bytes);
        }
    }
}
