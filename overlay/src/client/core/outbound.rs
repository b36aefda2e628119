//! The sending half of the client core: messages cut into fragments, each built into a packet
//! on a tick of the send stream (fresh route, fresh acknowledgement SURB, end-to-end
//! encryption), acknowledgement timers with retransmission over new routes, replies through
//! SURBs, and cover packets.
//!
//! Retransmission: a fragment's acknowledgement is late after the measured round trip
//! ([`RttEstimate`], the smoothed mean plus four deviations, as TCP does; before any
//! measurement, the expected mixing delay three times over plus [`ClientConfig::ack_slack`]).
//! The first [`FLAT_ATTEMPTS`] sends wait that long each (a lost packet is most often a dead
//! mix, and the next route avoids it), the next ones twice as long each time up to 16 round
//! trips, which [`LONG_AFTER`] more sends keep; after that (the recipient is away, or the
//! network is cut) each wait doubles up to [`ClientConfig::max_backoff`]. Every wait is
//! stretched by up to a quarter at random so that many senders do not retransmit in step. A retransmission avoids the mixes of the lost
//! attempt's forward and acknowledgement routes where their layers have another choice. A
//! message fails after [`ClientConfig::max_attempts`] sends of one fragment or once
//! [`ClientConfig::give_up_after`] has passed since it was queued.

use std::{
    cmp::Reverse,
    time::{Duration, Instant},
};

use p2pmix_mix::{
    Destination, Label, NodeId, Surb, SurbKeys, build_cover_packet, build_packet_to, create_surb,
};
use rand::{CryptoRng, RngExt};

#[cfg(doc)]
use super::ClientConfig;
use super::{
    ClientCore, ClientEvent, FailReason, Outgoing, ReplyHandle, SendError, Unroutable,
    durable::{Release, SavedAckLabel, SavedOutbound, SavedReplyLabel, StoreOp},
    fragment_capacity,
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
/// Sends of a fragment that wait one round-trip timeout each before backing off.
pub(super) const FLAT_ATTEMPTS: u32 = 3;
/// Doublings of the timeout after the flat sends (up to 16 round trips).
const SHORT_DOUBLINGS: u32 = 4;
/// Sends at 16 round trips before the waits grow towards the maximum.
const LONG_AFTER: u32 = 6;
/// Added to the measured timeout: the send streams' ticks at both ends.
const RTT_MARGIN: Duration = Duration::from_millis(200);

/// Why [`ClientCore::build_fragment`] built no packet.
#[derive(Debug)]
pub(super) enum NotSent {
    /// The fragment needs no sending any more (acknowledged, or its message is gone).
    Unwanted,
    /// It cannot be built now.
    Unroutable(Unroutable),
}

impl<E: Into<Unroutable>> From<E> for NotSent {
    fn from(e: E) -> Self {
        NotSent::Unroutable(e.into())
    }
}

/// A message being sent: its fragments and how each is doing.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) to: Address,
    pub(super) parts: Vec<Vec<u8>>,
    pub(super) reply_surbs: usize,
    pub(super) acked: Vec<bool>,
    pub(super) attempts: Vec<u32>,
    /// Mixes of each fragment's latest attempt (forward route and acknowledgement route).
    pub(super) routes: Vec<Vec<NodeId>>,
    /// Mixes of each fragment's latest forward route, and of its acknowledgement route: the
    /// next attempt avoids them.
    pub(super) forward: Vec<Vec<NodeId>>,
    pub(super) back: Vec<Vec<NodeId>>,
    pub(super) remaining: usize,
    /// After this the message fails.
    pub(super) deadline: Instant,
    /// Why each fragment's latest attempt could not be built, if it could not.
    pub(super) unroutable: Vec<Option<Unroutable>>,
    /// Whether [`ClientEvent::Unroutable`] was reported since a packet of the message was
    /// last built (one report until then, however the reasons vary: the events a message
    /// causes stay bounded by its sends).
    pub(super) reported: bool,
}

impl Outbound {
    /// A message of `parts` for `to`, queued at `now`, to be given up at `deadline`.
    pub(super) fn new(
        to: Address,
        parts: Vec<Vec<u8>>,
        reply_surbs: usize,
        deadline: Instant,
    ) -> Self {
        let count = parts.len();
        Outbound {
            to,
            parts,
            reply_surbs,
            acked: vec![false; count],
            attempts: vec![0; count],
            routes: vec![Vec::new(); count],
            forward: vec![Vec::new(); count],
            back: vec![Vec::new(); count],
            remaining: count,
            deadline,
            unroutable: vec![None; count],
            reported: false,
        }
    }
}

/// Measured acknowledgement round trips: a smoothed mean and mean deviation (RFC 6298's
/// estimator). Every sample is exact: each attempt has its own label, so an acknowledgement
/// says which send it answers.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimate {
    /// One measured round trip.
    pub(super) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The timeout the samples give: mean plus four deviations.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.srtt.map(|s| s + self.rttvar * 4)
    }
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
    /// When the attempt left.
    pub(super) sent: Instant,
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
        now: Instant,
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
        if self.durability.enabled() {
            self.durability.push(StoreOp::Outbox(SavedOutbound {
                message,
                to,
                parts: parts.clone(),
                reply_surbs,
                created_ms: self.durability.ms(now),
                acked: Vec::new(),
            }));
        }
        let deadline = now + self.config.give_up_after;
        self.outbound
            .insert(message, Outbound::new(to, parts, reply_surbs, deadline));
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

    /// How long the `attempt`-th send of a fragment waits for its acknowledgement before the
    /// jitter (see the module documentation).
    pub(super) fn ack_timeout(&self, attempt: u32) -> Duration {
        let mean = self
            .topology
            .as_ref()
            .map_or(Duration::from_millis(50), |t| t.mean_delay());
        let layers = self.topology.as_ref().map_or(3, |t| t.layers());
        let mixing = mean * (2 * layers);
        let expected = mixing * 3 + self.config.ack_slack;
        let base = match self.rtt.timeout() {
            Some(t) => (t + RTT_MARGIN).clamp(mixing * 2, expected),
            None => expected,
        };
        // Lost round trips are mostly loss and dead mixes, not congestion (the send stream
        // keeps its rate whatever it carries): up to 16 times the round trip for a while, then
        // longer and longer (an absent recipient), up to the configured maximum.
        let doublings = attempt.saturating_sub(FLAT_ATTEMPTS);
        let short = doublings.min(SHORT_DOUBLINGS);
        let long = attempt
            .saturating_sub(FLAT_ATTEMPTS + SHORT_DOUBLINGS + LONG_AFTER)
            .min(20);
        base.saturating_mul(1u32 << short)
            .saturating_mul(1u32 << long)
            .min(self.config.max_backoff.max(base))
    }

    /// [`ClientCore::ack_timeout`] stretched by up to a quarter at random.
    fn jittered_timeout<R: CryptoRng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let t = self.ack_timeout(attempt);
        t + t.mul_f64(rng.random_range(0.0..0.25))
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
                sent,
                ..
            } = timer;
            let Some(out) = self.outbound.get(&message) else {
                continue;
            };
            let out_deadline = out.deadline;
            let i = index as usize;
            if out.acked.get(i).copied().unwrap_or(true)
                || out.attempts.get(i).copied() != Some(attempt)
            {
                continue;
            }
            // Every mix of the lost round trip counts one loss.
            let route = out.routes.get(i).cloned().unwrap_or_default();
            self.health.record(now, &route, false, sent);
            if attempt >= self.config.max_attempts || now >= out_deadline {
                let reason = match out.unroutable.get(i).cloned().flatten() {
                    Some(reason) => FailReason::Unroutable {
                        index,
                        attempts: attempt,
                        reason,
                    },
                    None => FailReason::Unacknowledged {
                        index,
                        attempts: attempt,
                    },
                };
                self.outbound.remove(&message);
                self.acks.retain(|a| a.message != message);
                self.durability.push(StoreOp::OutboxDone { message });
                self.release_when_durable(Release::Event(ClientEvent::Failed(message, reason)));
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
    /// for its acknowledgement; why not when it is not wanted any more or cannot be built now.
    pub(super) fn build_fragment<R: CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        rng: &mut R,
    ) -> Result<Vec<u8>, NotSent> {
        let topology = self.topology.as_ref().ok_or(Unroutable::NoConsensus)?;
        let out = self.outbound.get(&message).ok_or(NotSent::Unwanted)?;
        let i = index as usize;
        if out.acked.get(i).copied().unwrap_or(true) {
            return Err(NotSent::Unwanted);
        }
        let to = out.to;
        let policy = self.config.policy;
        let health = &self.health;
        // The lost attempt's mixes are avoided too, where their layer has another choice.
        let (last_forward, last_back) = (
            out.forward.get(i).ok_or(NotSent::Unwanted)?,
            out.back.get(i).ok_or(NotSent::Unwanted)?,
        );
        let avoid_forward = |n: NodeId| health.suspect(n, now) || last_forward.contains(&n);
        let avoid_back = |n: NodeId| health.suspect(n, now) || last_back.contains(&n);
        let forward = choose_route_avoiding(
            topology,
            &self.gateway,
            &to.gateway,
            &policy,
            &avoid_forward,
            rng,
        )?;
        let surb_for = |rng: &mut R| -> Result<(Surb, SurbKeys, Label, Vec<NodeId>), NotSent> {
            let back = choose_route_avoiding(
                topology,
                &to.gateway,
                &self.gateway,
                &policy,
                &avoid_back,
                rng,
            )?;
            let label = random_label(rng);
            let (surb, keys) = create_surb(&self.geometry, &back, self.me, label, rng)?;
            Ok((surb, keys, label, mixes_of(&back)))
        };
        let (ack_surb, ack_keys, ack_label, back_mixes) = surb_for(rng)?;
        let forward_mixes = mixes_of(&forward);
        let mut round_trip = forward_mixes.clone();
        round_trip.extend(back_mixes.iter().copied());
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
            data: out.parts.get(i).ok_or(NotSent::Unwanted)?,
        };
        let sender = self.config.known_sender.then_some(&self.key);
        let sealed = e2e::seal(&to.noise_key, sender, &frame.encode())?;
        let destination = Destination::Deliver {
            client: to.client,
            label: random_label(rng),
        };
        let packet = build_packet_to(
            &self.geometry,
            &forward,
            &destination,
            &to.recipient_public_key().ok_or(Unroutable::RecipientKey)?,
            &to_payload(&sealed),
            rng,
        )?;
        // Bookkeeping only once the packet exists.
        if self.durability.enabled() {
            self.durability.push(StoreOp::AckKeys(SavedAckLabel {
                label: ack_label,
                message,
                index,
                issued_ms: self.durability.ms(now),
                keys: ack_keys.to_bytes(),
            }));
        }
        let evicted = self.acks.insert(
            ack_label,
            AckLabel {
                message,
                index,
                sent: now,
                keys: ack_keys,
            },
            now,
        );
        if let Some((label, old)) = evicted {
            self.durability.push(StoreOp::ForgetAckKeys {
                message: old.message,
                label,
            });
        }
        for (label, keys) in reply_keys {
            if self.durability.enabled() {
                self.durability.push(StoreOp::ReplyKeys(SavedReplyLabel {
                    label,
                    answered: message,
                    issued_ms: self.durability.ms(now),
                    keys: keys.to_bytes(),
                }));
            }
            if let Some((label, _)) = self.replies.insert(
                label,
                ReplyLabel {
                    answered: message,
                    keys,
                },
                now,
            ) {
                self.durability.push(StoreOp::ForgetReplyKeys { label });
            }
        }
        let attempt = {
            let out = self.outbound.get_mut(&message).ok_or(NotSent::Unwanted)?;
            if let Some(r) = out.routes.get_mut(i) {
                *r = round_trip;
            }
            if let Some(r) = out.forward.get_mut(i) {
                *r = forward_mixes;
            }
            if let Some(r) = out.back.get_mut(i) {
                *r = back_mixes;
            }
            if let Some(u) = out.unroutable.get_mut(i) {
                *u = None;
            }
            out.reported = false;
            let a = out.attempts.get_mut(i).ok_or(NotSent::Unwanted)?;
            *a += 1;
            *a
        };
        self.stats.fragments_sent += 1;
        if attempt > 1 {
            self.stats.retransmissions += 1;
        }
        let wait = self.jittered_timeout(attempt, rng);
        self.timers.push(Reverse(AckTimer {
            deadline: now + wait,
            message,
            index,
            attempt,
            sent: now,
        }));
        Ok(packet)
    }

    /// A fragment that could not be built (`reason`: no consensus, no route to its recipient's
    /// gateway, a bad address): the try counts as an attempt, and the fragment goes back to the
    /// queue after [`UNROUTABLE_RETRY`], so that a message that can never be routed fails
    /// after the configured attempts. The application hears why at once
    /// ([`ClientEvent::Unroutable`], once until a packet of the message is built again), and
    /// the failure names it. Returns whether the fragment was still wanted.
    pub(super) fn retry_unroutable(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        reason: NotSent,
    ) -> bool {
        let NotSent::Unroutable(reason) = reason else {
            return false;
        };
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
        if !out.reported {
            out.reported = true;
            self.events
                .push_back(ClientEvent::Unroutable(message, reason.clone()));
        }
        if let Some(u) = out.unroutable.get_mut(i) {
            *u = Some(reason);
        }
        self.timers.push(Reverse(AckTimer {
            deadline: now + UNROUTABLE_RETRY,
            message,
            index,
            attempt,
            sent: now,
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
        build_cover_packet(&self.geometry, &route, &destination, rng).ok()
    }

    /// Fragment `index` of `message` was acknowledged: its round trip (the attempt sent at
    /// `sent`, when known) worked.
    pub(super) fn acked(
        &mut self,
        now: Instant,
        message: MessageId,
        index: u16,
        sent: Option<Instant>,
    ) {
        let Some(out) = self.outbound.get_mut(&message) else {
            return;
        };
        if let Some(sent) = sent {
            self.rtt.sample(now.saturating_duration_since(sent));
        }
        // The round trip worked: each of its mixes counts one success.
        let route = out.routes.get(index as usize).cloned().unwrap_or_default();
        self.health.record(now, &route, true, sent.unwrap_or(now));
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
                self.durability.push(StoreOp::OutboxDone { message });
                self.release_when_durable(Release::Event(ClientEvent::Delivered(message)));
            } else {
                self.durability
                    .push(StoreOp::FragmentAcked { message, index });
            }
        }
    }
}
