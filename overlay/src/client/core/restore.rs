//! A client core back from its store: the outbox resumes (every fragment not acknowledged goes
//! out again, the keys of earlier attempts still read their acknowledgements), incomplete
//! incoming messages keep their fragments, the delivered set keeps dropping duplicates, and
//! messages the application had not accepted are handed over again.

use std::{collections::HashMap, time::Instant};

use p2pmix_mix::{Surb, SurbKeys};

use super::{
    Acknowledge, ClientCore, ClientEvent, Outgoing, ReceivedMessage, ReplyHandle,
    durable::{Durability, SavedFragment, SavedState, StoreOp},
    fragment_capacity,
    inbound::Partial,
    labels::{AckLabel, ReplyLabel},
    outbound::Outbound,
};
use crate::client::frame::MessageId;

impl ClientCore {
    /// Makes this (fresh) core keep its state in a store from now on, starting from what the
    /// store held (`saved`, empty for a new store); `now_ms` is `now` on the wall clock.
    /// Damaged entries are counted as undecodable and dropped.
    pub fn restore(mut self, now: Instant, now_ms: u64, saved: SavedState) -> Self {
        self.durability = Durability::stored(now, now_ms);
        self.mailbox_ack = saved.mailbox_ack;
        for &(message, at_ms) in &saved.delivered {
            self.delivered
                .insert(message, self.durability.instant(at_ms, now));
        }
        self.restore_outbox(now, now_ms, &saved);
        self.restore_labels(now, &saved);
        self.restore_partials(now, saved.fragments, saved.partial_surbs);
        for received in saved.inbox {
            let message = received.message;
            self.delivered
                .insert(message, self.durability.instant(received.at_ms, now));
            let surbs: Vec<Surb> = received
                .surbs
                .iter()
                .filter_map(|s| Surb::from_bytes(&self.geometry, s).ok())
                .collect();
            if self.config.acknowledge == Acknowledge::WhenAccepted {
                self.inbox.add(message);
            } else {
                // Kept by a run that waited for acceptance; this one accepts on hand-over.
                self.durability.push(StoreOp::Accepted { message });
            }
            self.events
                .push_back(ClientEvent::Received(ReceivedMessage {
                    id: message,
                    bytes: received.bytes,
                    from: received.from,
                    in_reply_to: received.in_reply_to,
                    reply: (!surbs.is_empty()).then_some(ReplyHandle { message, surbs }),
                }));
        }
        self
    }

    /// Messages of the outbox (being sent, not delivered or failed yet).
    pub fn outbox(&self) -> Vec<MessageId> {
        self.outbound.keys().copied().collect()
    }

    fn restore_outbox(&mut self, now: Instant, now_ms: u64, saved: &SavedState) {
        let give_up_ms = u64::try_from(self.config.give_up_after.as_millis()).unwrap_or(u64::MAX);
        for entry in &saved.outbox {
            let message = entry.message;
            let age_ms = now_ms.saturating_sub(entry.created_ms);
            let left = std::time::Duration::from_millis(give_up_ms.saturating_sub(age_ms));
            let mut out =
                Outbound::new(entry.to, entry.parts.clone(), entry.reply_surbs, now + left);
            for &index in &entry.acked {
                if let Some(a) = out.acked.get_mut(index as usize)
                    && !*a
                {
                    *a = true;
                    out.remaining -= 1;
                }
            }
            if out.remaining == 0 || out.parts.is_empty() {
                // Acknowledged whole just before the stop: done now.
                self.durability.push(StoreOp::OutboxDone { message });
                self.events.push_back(ClientEvent::Delivered(message));
                continue;
            }
            for (index, acked) in out.acked.iter().enumerate() {
                if !acked {
                    // The queue was checked when the message was accepted; a full queue
                    // leaves the fragment to its acknowledgement timer.
                    if self
                        .schedule
                        .push(Outgoing::Fragment {
                            message,
                            index: index as u16,
                        })
                        .is_err()
                    {
                        self.timers.push(std::cmp::Reverse(super::AckTimer {
                            deadline: now + self.ack_timeout(1),
                            message,
                            index: index as u16,
                            attempt: 0,
                            sent: now,
                        }));
                    }
                }
            }
            self.outbound.insert(message, out);
        }
    }

    fn restore_labels(&mut self, now: Instant, saved: &SavedState) {
        let mut acks: Vec<_> = saved.ack_labels.iter().collect();
        acks.sort_by_key(|a| a.issued_ms);
        for a in acks {
            let keys = SurbKeys::from_bytes(&a.keys);
            match keys {
                Ok(keys) if self.outbound.contains_key(&a.message) => {
                    let issued = self.durability.instant(a.issued_ms, now);
                    self.acks.insert(
                        a.label,
                        AckLabel {
                            message: a.message,
                            index: a.index,
                            sent: issued,
                            keys,
                        },
                        issued,
                    );
                }
                other => {
                    if other.is_err() {
                        self.stats.undecodable += 1;
                    }
                    self.durability.push(StoreOp::ForgetAckKeys {
                        message: a.message,
                        label: a.label,
                    });
                }
            }
        }
        let mut replies: Vec<_> = saved.reply_labels.iter().collect();
        replies.sort_by_key(|r| r.issued_ms);
        for r in replies {
            match SurbKeys::from_bytes(&r.keys) {
                Ok(keys) => {
                    let issued = self.durability.instant(r.issued_ms, now);
                    self.replies.insert(
                        r.label,
                        ReplyLabel {
                            answered: r.answered,
                            keys,
                        },
                        issued,
                    );
                }
                Err(_) => {
                    self.stats.undecodable += 1;
                    self.durability
                        .push(StoreOp::ForgetReplyKeys { label: r.label });
                }
            }
        }
    }

    fn restore_partials(
        &mut self,
        now: Instant,
        fragments: Vec<SavedFragment>,
        surbs: Vec<(MessageId, Vec<zeroize::Zeroizing<Vec<u8>>>)>,
    ) {
        let capacity = fragment_capacity(0, false).max(1);
        let mut surbs: HashMap<MessageId, Vec<Surb>> = surbs
            .into_iter()
            .map(|(message, encoded)| {
                let decoded = encoded
                    .iter()
                    .filter_map(|s| Surb::from_bytes(&self.geometry, s).ok())
                    .collect();
                (message, decoded)
            })
            .collect();
        let mut by_message: HashMap<MessageId, Vec<SavedFragment>> = HashMap::new();
        for f in fragments {
            by_message.entry(f.message).or_default().push(f);
        }
        for (message, parts) in by_message {
            if self.delivered.contains_key(&message) {
                self.durability.push(StoreOp::PartialExpired { message });
                continue;
            }
            let Some(first) = parts.first() else {
                continue;
            };
            let count = first.count as usize;
            let mut partial = Partial {
                parts: vec![None; count],
                missing: count,
                // Its fragments were acknowledged: it is held even beyond the memory bound.
                reserved: count * capacity,
                first_seen: self.durability.instant(first.first_seen_ms, now),
                from: first.from,
                in_reply_to: first.in_reply_to,
                surbs: surbs.remove(&message).unwrap_or_default(),
            };
            for f in parts {
                match partial.parts.get_mut(f.index as usize) {
                    Some(slot) if slot.is_none() && f.count as usize == count => {
                        *slot = Some(f.data);
                        partial.missing -= 1;
                    }
                    _ => self.stats.undecodable += 1,
                }
            }
            self.partial_bytes += partial.reserved;
            let complete = partial.missing == 0;
            self.partials.insert(message, partial);
            if complete {
                self.complete(now, message);
            }
        }
    }
}
