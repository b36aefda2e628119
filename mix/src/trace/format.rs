//! The trace line format (text, one record a line, fields separated by one space), written by
//! [`super::TraceFile`] and read back by [`parse_line`].
//!
//! ```text
//! # p2pmix-trace v1 links 12D3KooW…        header: kind (links or truth) and the recording peer
//! p 3 12D3KooW…                            peer number 3 (defined before its first use)
//! i 1764000000123456 3 9f8e7d6c5b4a3928    a packet with this tag arrived from peer 3 (µs)
//! o 1764000000123999 4 0a1b2c3d4e5f6071    a packet with this tag left for peer 4
//! f 9f8e7d6c5b4a3928 0a1b2c3d4e5f6071      truth: forwarded input as output
//! d 9f8e…   x 9f8e…   r 9f8e… replay        truth: delivered, cover ended, dropped (reason)
//! n 0a1b…                                  truth: this node built the packet (its loop)
//! m 0a1b… <message, 32 hex> 0 1 1          truth: a client's fragment index 0 of 1, attempt 1
//! a 0a1b…   l 0a1b…   c 0a1b…               truth: a client's reply or ack, loop, drop cover
//! # end written=N dropped=N capped=N       trailer: what was written and what was not
//! ```
//!
//! Peers are numbered per file so that a line costs about 40 bytes instead of 140.

use libp2p_identity::PeerId;
use thiserror::Error;

use super::{Direction, PacketTag, Truth};
use crate::relay::DropReason;

/// The first word after `#` in a header.
pub const MAGIC: &str = "p2pmix-trace";
/// The format version a header names.
pub const VERSION: &str = "v1";

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The header: which kind of file, recorded by whom.
    Header {
        /// `links` or `truth`.
        kind: super::TraceKind,
        /// The recording peer.
        local: PeerId,
    },
    /// Peer number `index` is `peer`.
    Peer {
        /// Its number in this file.
        index: u32,
        /// The peer.
        peer: PeerId,
    },
    /// A packet crossed a link.
    Link {
        /// In or out, seen from the recording peer.
        direction: Direction,
        /// Microseconds since the UNIX epoch.
        at_us: u64,
        /// The neighbour's number.
        peer: u32,
        /// The packet.
        tag: PacketTag,
    },
    /// A ground-truth record.
    Truth(Truth),
    /// The trailer.
    End {
        /// Records written.
        written: u64,
        /// Records lost because the writer fell behind.
        dropped: u64,
        /// Records not written because the file reached its cap.
        capped: u64,
    },
}

/// Why a line does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("trace line {line:?}: {reason}")]
pub struct FormatError {
    /// The line (at most 80 characters of it).
    pub line: String,
    /// What is wrong.
    pub reason: &'static str,
}

fn tag(s: &str) -> Option<PacketTag> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(PacketTag)
}

fn message(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn kv(s: &str, key: &str) -> Option<u64> {
    s.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<Line, FormatError> {
    let fail = |reason| FormatError {
        line: line.chars().take(80).collect(),
        reason,
    };
    let mut words = line.split(' ');
    let first = words.next().unwrap_or_default();
    let mut next = || words.next().ok_or_else(|| fail("too few fields"));
    let parsed = match first {
        "#" => match next()? {
            MAGIC => {
                if next()? != VERSION {
                    return Err(fail("unknown version"));
                }
                let kind = match next()? {
                    "links" => super::TraceKind::Links,
                    "truth" => super::TraceKind::Truth,
                    _ => return Err(fail("unknown kind")),
                };
                let local = next()?.parse().map_err(|_| fail("bad peer id"))?;
                Line::Header { kind, local }
            }
            "end" => {
                let written = kv(next()?, "written").ok_or_else(|| fail("bad written"))?;
                let dropped = kv(next()?, "dropped").ok_or_else(|| fail("bad dropped"))?;
                let capped = kv(next()?, "capped").ok_or_else(|| fail("bad capped"))?;
                Line::End {
                    written,
                    dropped,
                    capped,
                }
            }
            _ => return Err(fail("unknown comment")),
        },
        "p" => {
            let index = next()?.parse().map_err(|_| fail("bad peer number"))?;
            let peer = next()?.parse().map_err(|_| fail("bad peer id"))?;
            Line::Peer { index, peer }
        }
        "i" | "o" => {
            let at_us = next()?.parse().map_err(|_| fail("bad time"))?;
            let peer = next()?.parse().map_err(|_| fail("bad peer number"))?;
            let tag = tag(next()?).ok_or_else(|| fail("bad tag"))?;
            Line::Link {
                direction: if first == "i" {
                    Direction::In
                } else {
                    Direction::Out
                },
                at_us,
                peer,
                tag,
            }
        }
        "f" | "d" | "x" | "r" | "n" | "m" | "a" | "l" | "c" => {
            let t = tag(next()?).ok_or_else(|| fail("bad tag"))?;
            Line::Truth(match first {
                "f" => Truth::Forwarded {
                    input: t,
                    output: tag(next()?).ok_or_else(|| fail("bad tag"))?,
                },
                "d" => Truth::Delivered { input: t },
                "x" => Truth::CoverEnded { input: t },
                "r" => {
                    let label = next()?;
                    let reason = DropReason::ALL
                        .into_iter()
                        .find(|r| r.label() == label)
                        .ok_or_else(|| fail("unknown drop reason"))?;
                    Truth::Dropped { input: t, reason }
                }
                "n" => Truth::Originated { output: t },
                "m" => Truth::Fragment {
                    output: t,
                    message: message(next()?).ok_or_else(|| fail("bad message id"))?,
                    index: next()?.parse().map_err(|_| fail("bad index"))?,
                    count: next()?.parse().map_err(|_| fail("bad count"))?,
                    attempt: next()?.parse().map_err(|_| fail("bad attempt"))?,
                },
                "a" => Truth::Reply { output: t },
                "l" => Truth::LoopCover { output: t },
                _ => Truth::DropCover { output: t },
            })
        }
        _ => return Err(fail("unknown record")),
    };
    if words.next().is_some() {
        return Err(fail("too many fields"));
    }
    Ok(parsed)
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Header { kind, local } => {
                let kind = match kind {
                    super::TraceKind::Links => "links",
                    super::TraceKind::Truth => "truth",
                };
                write!(f, "# {MAGIC} {VERSION} {kind} {local}")
            }
            Line::Peer { index, peer } => write!(f, "p {index} {peer}"),
            Line::Link {
                direction,
                at_us,
                peer,
                tag,
            } => {
                let d = match direction {
                    Direction::In => 'i',
                    Direction::Out => 'o',
                };
                write!(f, "{d} {at_us} {peer} {tag}")
            }
            Line::Truth(t) => match t {
                Truth::Forwarded { input, output } => write!(f, "f {input} {output}"),
                Truth::Delivered { input } => write!(f, "d {input}"),
                Truth::CoverEnded { input } => write!(f, "x {input}"),
                Truth::Dropped { input, reason } => write!(f, "r {input} {}", reason.label()),
                Truth::Originated { output } => write!(f, "n {output}"),
                Truth::Fragment {
                    output,
                    message,
                    index,
                    count,
                    attempt,
                } => {
                    write!(f, "m {output} ")?;
                    for b in message {
                        write!(f, "{b:02x}")?;
                    }
                    write!(f, " {index} {count} {attempt}")
                }
                Truth::Reply { output } => write!(f, "a {output}"),
                Truth::LoopCover { output } => write!(f, "l {output}"),
                Truth::DropCover { output } => write!(f, "c {output}"),
            },
            Line::End {
                written,
                dropped,
                capped,
            } => write!(
                f,
                "# end written={written} dropped={dropped} capped={capped}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::trace::TraceKind;

    fn every_kind() -> Vec<Line> {
        let peer = PeerId::random();
        let t = PacketTag(0x0123_4567_89ab_cdef);
        let u = PacketTag(u64::MAX);
        vec![
            Line::Header {
                kind: TraceKind::Links,
                local: peer,
            },
            Line::Header {
                kind: TraceKind::Truth,
                local: peer,
            },
            Line::Peer { index: 7, peer },
            Line::Link {
                direction: Direction::In,
                at_us: 1_764_000_000_123_456,
                peer: 7,
                tag: t,
            },
            Line::Link {
                direction: Direction::Out,
                at_us: 0,
                peer: 0,
                tag: u,
            },
            Line::Truth(Truth::Forwarded {
                input: t,
                output: u,
            }),
            Line::Truth(Truth::Delivered { input: t }),
            Line::Truth(Truth::CoverEnded { input: t }),
            Line::Truth(Truth::Dropped {
                input: t,
                reason: DropReason::Replay,
            }),
            Line::Truth(Truth::Originated { output: t }),
            Line::Truth(Truth::Fragment {
                output: t,
                message: [0xa5; 16],
                index: 3,
                count: 9,
                attempt: 2,
            }),
            Line::Truth(Truth::Reply { output: t }),
            Line::Truth(Truth::LoopCover { output: t }),
            Line::Truth(Truth::DropCover { output: t }),
            Line::End {
                written: 10,
                dropped: 2,
                capped: 0,
            },
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        for line in every_kind() {
            let text = line.to_string();
            assert_eq!(parse_line(&text), Ok(line), "{text}");
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        for bad in [
            "",
            "i 12 3",
            "i 12 3 xyz",
            "i -1 3 0123456789abcdef",
            "i 1 3 0123456789abcdef extra",
            "r 0123456789abcdef no_such_reason",
            "m 0123456789abcdef 00 1 1 1",
            "# p2pmix-trace v9 links x",
            "# end written=1 dropped=x capped=0",
            "z 1",
            "m 0123456789abcdef ééééééééééééééé 0 1 1",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        /// Arbitrary text never panics the parser, and whatever parses prints back to itself.
        #[test]
        fn parse_is_total_and_canonical(s in "[ -~é]{0,120}") {
            if let Ok(line) = parse_line(&s) {
                prop_assert_eq!(parse_line(&line.to_string()), Ok(line));
            }
        }
    }
}
