//! The sending half of the client core: messages cut into fragments, each built into a packet
//! on a tick of the send stream (fresh route, fresh acknowledgement SURB, end-to-end
//! encryption), acknowledgement timers with retransmission over new routes, replies through
//! SURBs, and cover packets.

use std::{
    cmp::Reverse,
    time::{Duration, Instant},
};

use p2pmix_mix::{
    Destination, KeyId, Label, NodeId, Surb, SurbKeys, build_cover_packet, build_packet_to,
    create_surb,
};
use rand::{CryptoRng, RngExt};

use super::{
    ClientCore, ClientEvent, FailReason, Outgoing, ReplyHandle, SendError, fragment_capacity,
    labels::{AckLabel, ReplyLabel},
    reply_capacity,
};
use crate::client::{
    address::Address,
    e2e,
    frame::{Frame, MessageId, SURB_SIZE, to_payload},
    route::{choose_route, choose_route_avoiding},
};

/// How long a fragment that could not be routed waits before it is queued again.
const UNROUTABLE_RETRY: Duration = Duration::from_secs(1);

/// A message being sent: its fragments and how each is doing.
#[derive(Debug)]
pub(super) struct Outbound {
    to: Address,
    parts: Vec<Vec<u8>>,
    reply_surbs: usize,
    acked: Vec<bool>,
    attempts: Vec<u32>,
    /// Mixes of each fragment's latest attempt (forward route and acknowledgement route).
    routes: Vec<Vec<NodeId>>,
    remaining: usize,
}

impl Outbound {
    /// Fragments of the message.
    pub(super) fn fragments(&self) -> u16 {
        self.parts.len() as u16
    }

    /// Sends of fragment `index` so far.
    pub(super) fn attempts(&self, index: u16) -> u32 {
        self.attempts.get(usize::from(index)).copied().unwrap_or(0)
    }
}

/// When fragment `index` of `message`, sent for the `attempt`-th time, is given up as lost.
/// Ordered by deadline first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AckTimer {
    pub(super) deadline: Instant,
    pub(super) message: MessageId,
    pub(super) index: u16,
    pub(super) attempt: u32,
}

/// The mixes of a route (every hop but the two gateways).
fn mixes_of(route: &[p2pmix_mix::Hop]) -> Vec<NodeId> {
    let n = route.len();
    route
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i + 1 != n)
        .map(|(_, h)| h.node)
        .collect()
}

pub(super) fn random_label<R: CryptoRng + ?Sized>(rng: &mut R) -> Label {
    let mut l = [0u8; 16];
    rng.fill_bytes(&mut l);
    Label(l)
}

fn random_id<R: CryptoRng + ?Sized>(rng: &mut R) -> MessageId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    MessageId(id)
}

impl ClientCore {
    /// Queues `bytes` for `to`, with `reply_surbs` SURBs the recipient may answer through.
    pub fn send<R: CryptoRng + ?Sized>(
        &mut self,
        to: Address,
        bytes: &[u8],
        reply_surbs: usize,
        rng: &mut R,
    ) -> Result<MessageId, SendError> {
        if bytes.len() > self.config.max_message {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max: self.config.max_message,
            });
        }
        if to.recipient_public_key().is_none() {
            return Err(SendError::BadAddress);
        }
        if reply_surbs > self.config.max_reply_surbs {
            return Err(SendError::TooManySurbs {
                asked: reply_surbs,
                max: self.config.max_reply_surbs,
            });
        }
        let first = fragment_capacity(reply_surbs, self.config.known_sender);
        let rest = fragment_capacity(0, self.config.known_sender);
        let mut parts = vec![bytes[..bytes.len().min(first)].to_vec()];
        let mut tail = &bytes[bytes.len().min(first)..];
        while !tail.is_empty() {
            let n = tail.len().min(rest);
            parts.push(tail[..n].to_vec());
            tail = &tail[n..];
        }
        let count = parts.len();
        if count > u16::MAX as usize || self.schedule.queued() + count > self.config.max_queued {
            return Err(SendError::QueueFull);
        }
        let message = random_id(rng);
        for index in 0..count {
            // Capacity was checked above.
            let _ = self.schedule.push(Outgoing::Fragment {
                message,
                index: index as u16,
            });
        }
        self.outbound.insert(
            message,
            Outbound {
                to,
                parts,
                reply_surbs,
                acked: vec![false; count],
                attempts: vec![0; count],
                routes: vec![Vec::new(); count],
                remaining: count,
            },
        );
        Ok(message)
    }

    /// Answers through the SURBs of a received message.
    pub fn reply<R: CryptoRng + ?Sized>(
        &mut self,
        handle: ReplyHandle,
        bytes: &[u8],
        rng: &mut R,
    ) -> Result<MessageId, SendError> {
        let cap = reply_capacity();
        let needed = bytes.len().div_ceil(cap).max(1);
        if needed > handle.surbs.len() {
            return Err(SendError::ReplyTooLarge {
                needed,
                surbs: handle.surbs.len(),
            });
        }
        if self.schedule.queued() + needed > self.config.max_queued {
            return Err(SendError::QueueFull);
        }
        let reply = random_id(rng);
        let mut chunks: Vec<&[u8]> = bytes.chunks(cap).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for ((index, chunk), surb) in chunks.iter().enumerate().zip(handle.surbs) {
            let frame = Frame::Reply {
                message: reply,
                index: index as u16,
                count: needed as u16,
                in_reply_to: handle.message,
                data: chunk,
            };
            if let Ok(packet) = surb.into_reply(&self.geometry, &to_payload(&frame.encode())) {
                self.queue_prebuilt(packet);
            }
        }
        Ok(reply)
    }

    /// Queues a packet built ahead (an acknowledgement, a reply) for the next send tick.
    pub(super) fn queue_prebuilt(&mut self, packet: Vec<u8>) {
        let n = self.next_prebuilt;
        self.next_prebuilt = self.next_prebuilt.wrapping_add(1);
        if self.schedule.push(Outgoing::Prebuilt(n)).is_ok() {
            self.prebuilt.insert(n, packet);
        }
    }

    /// Expected time for a fragment's acknowledgement: there and back through three mixes each
    /// way, two send-stream waits, and the configured slack; doubled per attempt (up to 16x).
    fn ack_timeout(&self, attempt: u32) -> Duration {
        let mean = self
            .topology
            .as_ref()
            .map_or(Duration::from_millis(50), |t| t.mean_delay());
        let layers = self.topology.as_ref().map_or(3, |t| t.layers());
        let base = mean * (2 * layers) * 3 + self.config.ack_slack;
        base * (1u32 << attempt.saturating_sub(1).min(4))
    }

    /// Fragments whose acknowledgement is late go back to the queue (or fail their message).
    pub(super) fn handle_ack_timers(&mut self, now: Instant) {
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.deadline > now {
                break;
            }
            self.timers.pop();
            let AckTimer {
                message,
                index,
                attempt,
                ..
            } = timer;
            let Some(out) = self.outbound.get(&message) else {
                continue;
            };
            let i = index as usize;
            if out.acked.get(i).copied().unwrap_or(true)
                || out.attempts.get(i).copied() != Some(attempt)
            {
                continue;
            }
            // Every mix of the lost round trip counts one loss.
            let route = out.routes.get(i).cloned().unwrap_or_default();
            self.health.record(now, &route, false);
            if attempt >= self.config.max_attempts {
                self.outbound.remove(&message);
                self.acks.retain(|a| a.message != message);
                self.events.push_back(ClientEvent::Failed(
                    message,
                    FailReason::Unacknowledged {
                        index,
                        attempts: attempt,
                    },
                ));
            } else if self
                .schedule
                .push(Outgoing::Fragment { message, index })
                .is_err()
            {
                // The queue is full: try again after another timeout.
                self.timers.push(Reverse(AckTimer {
                    deadline: now + self.ack_timeout(attempt),
                    ..timer
                }));
            }
        }
    }

    /// Builds the packet of fragment `index` of `message` on a fresh route, with a fresh SURB
    /// for its acknowledgement; `None` when it cannot be built now (no route).
    pub(super) fn build_fragment<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        let topology = self.topology.as_ref()?;
        let out = self.outbound.get(&message)?;
        let i = index as usize;
        if out.acked.get(i).copied().unwrap_or(true) {
            return None;
        }
        let to = out.to;
        let key_id = KeyId::for_epoch(topology.epoch());
        let policy = self.config.policy;
        let health = &self.health;
        let avoid = |n: NodeId| health.suspect(n, now);
        let forward =
            choose_route_avoiding(topology, &self.gateway, &to.gateway, &policy, &avoid, rng)
                .ok()?;
        let surb_for = |rng: &mut R| -> Option<(Surb, SurbKeys, Label, Vec<NodeId>)> {
            let back =
                choose_route_avoiding(topology, &to.gateway, &self.gateway, &policy, &avoid, rng)
                    .ok()?;
            let label = random_label(rng);
            let (surb, keys) =
                create_surb(&self.geometry, key_id, &back, self.me, label, rng).ok()?;
            Some((surb, keys, label, mixes_of(&back)))
        };
        let (ack_surb, ack_keys, ack_label, back_mixes) = surb_for(rng)?;
        let mut round_trip = mixes_of(&forward);
        round_trip.extend(back_mixes);
        let mut reply_surbs = Vec::new();
        let mut reply_keys = Vec::new();
        if index == 0 {
            for _ in 0..out.reply_surbs {
                let (s, k, l, _) = surb_for(rng)?;
                reply_surbs.push(s.to_bytes());
                reply_keys.push((l, k));
            }
        }
        let ack_bytes = ack_surb.to_bytes();
        debug_assert_eq!(ack_bytes.len(), SURB_SIZE);
        let frame = Frame::Fragment {
            message,
            index,
            count: out.parts.len() as u16,
            ack: Some(&ack_bytes),
            reply_surbs: reply_surbs.iter().map(Vec::as_slice).collect(),
            data: out.parts.get(i)?,
        };
        let sender = self.config.known_sender.then_some(&self.key);
        let sealed = e2e::seal(&to.noise_key, sender, &frame.encode()).ok()?;
        let destination = Destination::Deliver {
            client: to.client,
            label: random_label(rng),
        };
        let packet = build_packet_to(
            &self.geometry,
            key_id,
            &forward,
            &destination,
            &to.recipient_public_key()?,
            &to_payload(&sealed),
            rng,
        )
        .ok()?;
        // Bookkeeping only once the packet exists.
        self.acks.insert(
            ack_label,
            AckLabel {
                message,
                index,
                keys: ack_keys,
            },
            now,
        );
        for (label, keys) in reply_keys {
            self.replies.insert(
                label,
                ReplyLabel {
                    answered: message,
                    keys,
                },
                now,
            );
        }
        let attempt = {
            let out = self.outbound.get_mut(&message)?;
            if let Some(r) = out.routes.get_mut(i) {
                *r = round_trip;
            }
            let a = out.attempts.get_mut(i)?;
            *a += 1;
            *a
        };
        self.stats.fragments_sent += 1;
        if attempt > 1 {
            self.stats.retransmissions += 1;
        }
        self.timers.push(Reverse(AckTimer {
            deadline: now + self.ack_timeout(attempt),
            message,
            index,
            attempt,
        }));
        Some(packet)
    }

    /// A fragment that could not be built (no topology, no route to its recipient's gateway):
    /// the try counts as an attempt, and the fragment goes back to the queue after
    /// [`UNROUTABLE_RETRY`], so that a message that can never be routed fails after the
    /// configured attempts. Returns whether the fragment was still wanted.
    pub(super) fn retry_unroutable(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
    ) -> bool {
        let Some(out) = self.outbound.get_mut(&message) else {
            return false;
        };
        let i = index as usize;
        if out.acked.get(i).copied().unwrap_or(true) {
            return false;
        }
        let Some(attempt) = out.attempts.get_mut(i) else {
            return false;
        };
        *attempt += 1;
        let attempt = *attempt;
        // Nothing went out: no mix is to blame when the timer fires.
        if let Some(r) = out.routes.get_mut(i) {
            r.clear();
        }
        self.timers.push(Reverse(AckTimer {
            deadline: now + UNROUTABLE_RETRY,
            message,
            index,
            attempt,
        }));
        true
    }

    /// A cover packet: loop cover back to this client, or drop cover ending at a random
    /// gateway.
    pub(super) fn build_cover<R: CryptoRng + ?Sized>(
        &mut self,
        loop_back: bool,
        now: Instant,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        let topology = self.topology.as_ref()?;
        let gateways = topology.gateways();
        let (exit, destination) = if loop_back {
            let label = random_label(rng);
            self.loops.insert(label, (), now);
            (
                self.gateway,
                Destination::Deliver {
                    client: self.me,
                    label,
                },
            )
        } else {
            let g = gateways.get(rng.random_range(0..gateways.len().max(1)))?;
            (g.peer, Destination::Drop)
        };
        let route = choose_route(topology, &self.gateway, &exit, &self.config.policy, rng).ok()?;
        // A random body: at the exit gateway a loop looks like any other delivered packet.
        build_cover_packet(
            &self.geometry,
            KeyId::for_epoch(topology.epoch()),
            &route,
            &destination,
            rng,
        )
        .ok()
    }

    /// Fragment `index` of `message` was acknowledged: its round trip worked.
    pub(super) fn acked(&mut self, now: Instant, message: MessageId, index: u16) {
        let Some(out) = self.outbound.get_mut(&message) else {
            return;
        };
        // The round trip worked: each of its mixes counts one success.
        let route = out.routes.get(index as usize).cloned().unwrap_or_default();
        self.health.record(now, &route, true);
        let Some(out) = self.outbound.get_mut(&message) else {
            return;
        };
        if let Some(a) = out.acked.get_mut(index as usize)
            && !*a
        {
            *a = true;
            out.remaining -= 1;
            if out.remaining == 0 {
                self.outbound.remove(&message);
                self.acks.retain(|a| a.message != message);
                self.events.push_back(ClientEvent::Delivered(message));
            }
        }
    }
}
