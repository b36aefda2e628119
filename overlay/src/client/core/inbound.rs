//! The receiving half of the client core: a packet body the gateway delivered is, by its label,
//! an acknowledgement, a reply, a returning loop, or a message fragment. Fragments are
//! decrypted, acknowledged (every copy: an earlier acknowledgement may have been lost) and
//! reassembled within bounded memory and time; a message is handed over exactly once.

use std::time::Instant;

use p2pmix_mix::Surb;

use super::{ClientCore, ClientEvent, ReceivedMessage, ReplyHandle, fragment_capacity};
use crate::client::{
    e2e,
    frame::{Frame, MessageId, from_payload, to_payload},
};

/// An incomplete incoming message.
#[derive(Debug)]
pub(super) struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    pub(super) bytes: usize,
    pub(super) first_seen: Instant,
    from: Option<[u8; 32]>,
    in_reply_to: Option<MessageId>,
    surbs: Vec<Surb>,
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

impl ClientCore {
    /// Takes the body of a packet the gateway delivered to this client under `label`.
    pub fn handle_delivery(&mut self, now: Instant, label: p2pmix_mix::Label, body: &mut [u8]) {
        if let Some(ack) = self.acks.take(&label) {
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
                    self.acked(now, message, index);
                }
                _ => self.stats.undecodable += 1,
            }
            return;
        }
        if let Some(reply) = self.replies.take(&label) {
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
        // Acknowledge every copy: an earlier acknowledgement may have been lost.
        if let Some(surb) = ack.and_then(|a| Surb::from_bytes(&self.geometry, a).ok()) {
            let ack = Frame::Ack { message, index }.encode();
            if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&ack)) {
                self.queue_prebuilt(packet);
            }
        }
        let surbs = reply_surbs
            .iter()
            .filter_map(|s| Surb::from_bytes(&self.geometry, s).ok())
            .collect();
        self.reassemble(
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
    }

    fn reassemble(&mut self, now: Instant, piece: Piece<'_>) {
        let Piece {
            message,
            index,
            count,
            data,
            ..
        } = piece;
        if self.delivered.contains_key(&message) {
            self.stats.duplicates += 1;
            return;
        }
        let max_parts = self.config.max_message / fragment_capacity(0, true).max(1) + 2;
        if count as usize > max_parts {
            self.stats.undecodable += 1;
            return;
        }
        // Make room: drop the oldest incomplete messages beyond the byte bound.
        while self.partial_bytes + data.len() > self.config.max_reassembly_bytes {
            let Some(oldest) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.first_seen)
                .map(|(id, _)| *id)
            else {
                return;
            };
            if let Some(p) = self.partials.remove(&oldest) {
                self.partial_bytes -= p.bytes;
            }
        }
        let partial = self.partials.entry(message).or_insert_with(|| Partial {
            parts: vec![None; count as usize],
            missing: count as usize,
            bytes: 0,
            first_seen: now,
            from: piece.from,
            in_reply_to: piece.in_reply_to,
            surbs: Vec::new(),
        });
        if partial.parts.len() != count as usize {
            self.stats.undecodable += 1;
            return;
        }
        if !piece.surbs.is_empty() {
            partial.surbs = piece.surbs;
        }
        let Some(slot) = partial.parts.get_mut(index as usize) else {
            return;
        };
        if slot.is_some() {
            self.stats.duplicates += 1;
            return;
        }
        *slot = Some(data.to_vec());
        partial.missing -= 1;
        partial.bytes += data.len();
        self.partial_bytes += data.len();
        if partial.missing > 0 {
            return;
        }
        let Some(done) = self.partials.remove(&message) else {
            return;
        };
        self.partial_bytes -= done.bytes;
        let bytes: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
        self.delivered.insert(message, now);
        let reply = (!done.surbs.is_empty()).then_some(ReplyHandle {
            message,
            surbs: done.surbs,
        });
        self.events
            .push_back(ClientEvent::Received(ReceivedMessage {
                id: message,
                bytes,
                from: done.from,
                in_reply_to: done.in_reply_to,
                reply,
            }));
    }
}
