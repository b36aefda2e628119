//! The receiving half of the client core: a packet body the gateway delivered is, by its label,
//! an acknowledgement, a reply, a returning loop, or a message fragment. Fragments are
//! decrypted, reassembled within bounded memory, and acknowledged (every copy: an earlier
//! acknowledgement may have been lost) once they are durable or, with
//! [`Acknowledge::WhenAccepted`], once the application accepted the message. A message is
//! handed over exactly once.
//!
//! Memory: a new message is admitted only with room for all its fragments
//! ([`ClientConfig::max_reassembly_bytes`]); otherwise its fragment is refused, counted and not
//! acknowledged (its sender retransmits). An admitted message is never evicted for another:
//! its fragments were acknowledged, so its sender will not send them again. Strangers who know
//! the address can still fill that memory with junk (they are refused new room, not given
//! anyone else's), which delays new messages until the junk expires
//! ([`ClientConfig::reassembly_timeout`]).

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use p2pmix_mix::Surb;
use zeroize::Zeroizing;

#[cfg(doc)]
use super::ClientConfig;
use super::{
    Acknowledge, ClientCore, ClientEvent, ReceivedMessage, ReplyHandle,
    durable::{Release, SavedFragment, StoreOp},
    fragment_capacity,
};
use crate::client::{
    e2e,
    frame::{Frame, MessageId, from_payload, to_payload},
};

/// Acknowledgement SURBs held for the application at most (the newest per fragment).
pub(super) const MAX_HELD_ACKS: usize = 1 << 14;

/// An incomplete incoming message.
#[derive(Debug)]
pub(super) struct Partial {
    pub(super) parts: Vec<Option<Vec<u8>>>,
    pub(super) missing: usize,
    /// Bytes reserved for all its fragments.
    pub(super) reserved: usize,
    pub(super) first_seen: Instant,
    pub(super) from: Option<[u8; 32]>,
    pub(super) in_reply_to: Option<MessageId>,
    pub(super) surbs: Vec<Surb>,
}

/// Messages handed to the application and not accepted yet ([`Acknowledge::WhenAccepted`]),
/// and the acknowledgement SURBs held until they are.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    unaccepted: HashSet<MessageId>,
    held: HashMap<MessageId, HashMap<u16, Surb>>,
    held_count: usize,
}

impl Inbox {
    /// Whether `message` was handed over and waits for acceptance.
    pub(super) fn holds(&self, message: &MessageId) -> bool {
        self.unaccepted.contains(message)
    }

    pub(super) fn add(&mut self, message: MessageId) {
        self.unaccepted.insert(message);
    }

    /// Keeps the newest SURB for fragment `index` of `message`; `false` when full.
    fn hold(&mut self, message: MessageId, index: u16, surb: Surb) -> bool {
        let fragments = self.held.entry(message).or_default();
        if !fragments.contains_key(&index) {
            if self.held_count >= MAX_HELD_ACKS {
                return false;
            }
            self.held_count += 1;
        }
        fragments.insert(index, surb);
        true
    }

    /// `message` was accepted: its held SURBs.
    fn accept(&mut self, message: &MessageId) -> Option<HashMap<u16, Surb>> {
        if !self.unaccepted.remove(message) {
            return None;
        }
        let held = self.held.remove(message).unwrap_or_default();
        self.held_count -= held.len();
        Some(held)
    }

    /// Drops what is held for a message that will not complete.
    fn drop_held(&mut self, message: &MessageId) {
        if let Some(held) = self.held.remove(message) {
            self.held_count -= held.len();
        }
    }
}

/// One fragment on its way into reassembly.
struct Piece<'a> {
    message: MessageId,
    index: u16,
    count: u16,
    data: &'a [u8],
    from: Option<[u8; 32]>,
    in_reply_to: Option<MessageId>,
    surbs: Vec<Surb>,
}

/// What reassembly made of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Kept (the message may be complete now).
    Stored,
    /// Already held, or of a message already delivered.
    Duplicate,
    /// Not kept: no room for a new message, or inconsistent with what is held.
    Refused,
}

impl ClientCore {
    /// Takes the body of a packet the gateway delivered to this client under `label`.
    pub fn handle_delivery(&mut self, now: Instant, label: p2pmix_mix::Label, body: &mut [u8]) {
        if let Some(ack) = self.acks.take(&label) {
            self.durability.push(StoreOp::ForgetAckKeys {
                message: ack.message,
                label,
            });
            match ack
                .keys
                .open_reply(&self.geometry, body)
                .ok()
                .and_then(|p| from_payload(p).ok())
                .and_then(|f| Frame::decode(f).ok())
            {
                Some(Frame::Ack { message, index })
                    if message == ack.message && index == ack.index =>
                {
                    self.acked(now, message, index, Some(ack.sent));
                }
                _ => self.stats.undecodable += 1,
            }
            return;
        }
        if let Some(reply) = self.replies.take(&label) {
            self.durability.push(StoreOp::ForgetReplyKeys { label });
            let frame = reply
                .keys
                .open_reply(&self.geometry, body)
                .ok()
                .and_then(|p| from_payload(p).ok())
                .map(<[u8]>::to_vec);
            match frame.as_deref().map(Frame::decode) {
                Some(Ok(Frame::Reply {
                    message,
                    index,
                    count,
                    in_reply_to,
                    data,
                })) if in_reply_to == reply.answered => {
                    self.reassemble(
                        now,
                        Piece {
                            message,
                            index,
                            count,
                            data,
                            from: None,
                            in_reply_to: Some(in_reply_to),
                            surbs: Vec::new(),
                        },
                    );
                }
                _ => self.stats.undecodable += 1,
            }
            return;
        }
        if self.loops.take(&label).is_some() {
            self.stats.loop_cover_received += 1;
            return;
        }
        let Some(sealed) = self
            .recipient
            .open(&self.geometry, body)
            .ok()
            .and_then(|p| from_payload(p).ok())
        else {
            self.stats.undecodable += 1;
            return;
        };
        let Ok((plain, from)) = e2e::open(&self.key, sealed) else {
            self.stats.undecodable += 1;
            return;
        };
        let Ok(Frame::Fragment {
            message,
            index,
            count,
            ack,
            reply_surbs,
            data,
        }) = Frame::decode(&plain)
        else {
            self.stats.undecodable += 1;
            return;
        };
        let surbs = reply_surbs
            .iter()
            .filter_map(|s| Surb::from_bytes(&self.geometry, s).ok())
            .collect();
        let taken = self.reassemble(
            now,
            Piece {
                message,
                index,
                count,
                data,
                from,
                in_reply_to: None,
                surbs,
            },
        );
        // Acknowledge every copy kept or already held: an earlier acknowledgement may have
        // been lost. A refused one is not: its sender must send it again.
        if taken != Taken::Refused
            && let Some(surb) = ack.and_then(|a| Surb::from_bytes(&self.geometry, a).ok())
        {
            self.acknowledge(message, index, surb);
        }
    }

    /// Acknowledges fragment `index` of `message` through `surb` once that is allowed: when it
    /// is durable, or (with [`Acknowledge::WhenAccepted`]) once the application accepted the
    /// message.
    fn acknowledge(&mut self, message: MessageId, index: u16, surb: Surb) {
        let accepted = self.delivered.contains_key(&message) && !self.inbox.holds(&message);
        if self.config.acknowledge == Acknowledge::WhenAccepted && !accepted {
            if !self.inbox.hold(message, index, surb) {
                self.stats.held_acks_dropped += 1;
            }
            return;
        }
        let ack = Frame::Ack { message, index }.encode();
        if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&ack)) {
            self.release_when_durable(Release::Ack(packet));
        }
    }

    /// The application accepted the message it was handed as `message` (the id of its
    /// [`ReceivedMessage`]): with [`Acknowledge::WhenAccepted`] its acknowledgements go out
    /// now, and a store forgets it. `false` when nothing waited for that (already accepted,
    /// unknown, or accepted automatically).
    pub fn accept(&mut self, message: MessageId) -> bool {
        let Some(held) = self.inbox.accept(&message) else {
            return false;
        };
        self.durability.push(StoreOp::Accepted { message });
        for (index, surb) in held {
            let ack = Frame::Ack { message, index }.encode();
            if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&ack)) {
                self.release_when_durable(Release::Ack(packet));
            }
        }
        true
    }

    fn reassemble(&mut self, now: Instant, piece: Piece<'_>) -> Taken {
        let Piece {
            message,
            index,
            count,
            data,
            ..
        } = piece;
        if self.delivered.contains_key(&message) {
            self.stats.duplicates += 1;
            return Taken::Duplicate;
        }
        let capacity = fragment_capacity(0, false).max(1);
        let max_parts = self.config.max_message / capacity + 2;
        if count as usize > max_parts || data.len() > capacity {
            self.stats.undecodable += 1;
            return Taken::Refused;
        }
        if !self.partials.contains_key(&message) {
            // A new message is admitted with room for all its fragments, or not at all: an
            // admitted one is never evicted (its fragments were acknowledged).
            let reserve = count as usize * capacity;
            if self.partial_bytes + reserve > self.config.max_reassembly_bytes {
                self.stats.partials_refused += 1;
                return Taken::Refused;
            }
            self.partial_bytes += reserve;
            self.partials.insert(
                message,
                Partial {
                    parts: vec![None; count as usize],
                    missing: count as usize,
                    reserved: reserve,
                    first_seen: now,
                    from: piece.from,
                    in_reply_to: piece.in_reply_to,
                    surbs: Vec::new(),
                },
            );
        }
        let first_seen_ms = {
            let Some(partial) = self.partials.get(&message) else {
                return Taken::Refused;
            };
            self.durability.ms(partial.first_seen)
        };
        let Some(partial) = self.partials.get_mut(&message) else {
            return Taken::Refused;
        };
        if partial.parts.len() != count as usize {
            self.stats.undecodable += 1;
            return Taken::Refused;
        }
        let Some(slot) = partial.parts.get_mut(index as usize) else {
            return Taken::Refused;
        };
        if slot.is_some() {
            self.stats.duplicates += 1;
            return Taken::Duplicate;
        }
        *slot = Some(data.to_vec());
        partial.missing -= 1;
        let (from, in_reply_to, missing) = (partial.from, partial.in_reply_to, partial.missing);
        let new_surbs = !piece.surbs.is_empty();
        if new_surbs {
            partial.surbs = piece.surbs;
        }
        if self.durability.enabled() {
            self.durability.push(StoreOp::Fragment(SavedFragment {
                message,
                index,
                count,
                data: data.to_vec(),
                from,
                in_reply_to,
                first_seen_ms,
            }));
            if new_surbs && let Some(p) = self.partials.get(&message) {
                let surbs = p
                    .surbs
                    .iter()
                    .map(|s| Zeroizing::new(s.to_bytes()))
                    .collect();
                self.durability.push(StoreOp::ReplySurbs { message, surbs });
            }
        }
        if missing == 0 {
            self.complete(now, message);
        }
        Taken::Stored
    }

    /// Every fragment of `message` is held: it is handed over (once durable) and remembered.
    pub(super) fn complete(&mut self, now: Instant, message: MessageId) {
        let Some(done) = self.partials.remove(&message) else {
            return;
        };
        self.partial_bytes -= done.reserved;
        let bytes: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
        let keep = self.config.acknowledge == Acknowledge::WhenAccepted;
        self.durability.push(StoreOp::Completed {
            message,
            at_ms: self.durability.ms(now),
            keep,
        });
        self.delivered.insert(message, now);
        if keep {
            self.inbox.add(message);
        }
        let reply = (!done.surbs.is_empty()).then_some(ReplyHandle {
            message,
            surbs: done.surbs,
        });
        self.release_when_durable(Release::Event(ClientEvent::Received(ReceivedMessage {
            id: message,
            bytes,
            from: done.from,
            in_reply_to: done.in_reply_to,
            reply,
        })));
    }

    /// Drops acknowledgements held for `message` (its partial expired).
    pub(super) fn drop_held_acks(&mut self, message: &MessageId) {
        self.inbox.drop_held(message);
    }
}
