//! What of the client must survive a restart, as values: the core says what must become durable
//! ([`StoreOp`], taken with [`ClientCore::poll_store`]), the driver writes it (one transaction a
//! batch, see [`crate::client::store`]) and reports back ([`ClientCore::handle_stored`]); what
//! may only happen once something is durable waits for that report (`Release`): an
//! end-to-end acknowledgement of a fragment waits for the fragment, the mailbox acknowledgement
//! for everything its packets changed, a [`ClientEvent::Received`] for its message. A restarted
//! client comes back from a [`SavedState`] ([`ClientCore::restore`]).
//!
//! A core without a store ([`ClientCore::new`]) emits nothing and releases at once: the
//! virtual-time tests run without a disk.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use p2pmix_mix::Label;
use zeroize::Zeroizing;

use super::{ClientCore, ClientEvent};
use crate::client::{address::Address, frame::MessageId};

/// A change the client's store must see, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// A message to send: the outbox keeps it until it is delivered or fails.
    Outbox(SavedOutbound),
    /// Fragment `index` of the outgoing `message` was acknowledged.
    FragmentAcked {
        /// The message.
        message: MessageId,
        /// The fragment.
        index: u16,
    },
    /// The outgoing `message` is done (delivered or failed): it leaves the outbox with the keys
    /// of its acknowledgement SURBs.
    OutboxDone {
        /// The message.
        message: MessageId,
    },
    /// The keys of an acknowledgement SURB handed out with a fragment.
    AckKeys(SavedAckLabel),
    /// An acknowledgement label of `message` is no longer needed.
    ForgetAckKeys {
        /// The message.
        message: MessageId,
        /// The label.
        label: Label,
    },
    /// The keys of a reply SURB handed out with a message.
    ReplyKeys(SavedReplyLabel),
    /// A reply label is no longer needed (used, or expired).
    ForgetReplyKeys {
        /// The label.
        label: Label,
    },
    /// A fragment of an incoming message.
    Fragment(SavedFragment),
    /// Reply SURBs that came with the incoming `message` (encoded SURBs, secret).
    ReplySurbs {
        /// The message.
        message: MessageId,
        /// The encoded SURBs.
        surbs: Vec<Zeroizing<Vec<u8>>>,
    },
    /// The incoming `message` is whole: its fragments become one entry of the inbox (kept
    /// until the application accepts it, when `keep`) and its id joins the delivered set.
    Completed {
        /// The message.
        message: MessageId,
        /// When it was completed (milliseconds since the UNIX epoch).
        at_ms: u64,
        /// Keep it in the inbox until [`StoreOp::Accepted`].
        keep: bool,
    },
    /// The application accepted `message`: it leaves the inbox.
    Accepted {
        /// The message.
        message: MessageId,
    },
    /// An incomplete incoming message expired: its fragments go.
    PartialExpired {
        /// The message.
        message: MessageId,
    },
    /// A delivered id left the window in which duplicates are recognised.
    ForgetDelivered {
        /// The message.
        message: MessageId,
    },
    /// Every mailbox packet up to `through` was processed (acknowledged with the next fetch).
    MailboxAck {
        /// The highest sequence number processed.
        through: u64,
    },
}

/// A message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedOutbound {
    /// Its id.
    pub message: MessageId,
    /// The recipient.
    pub to: Address,
    /// Its fragments' data.
    pub parts: Vec<Vec<u8>>,
    /// Reply SURBs asked for (they go in fragment 0).
    pub reply_surbs: usize,
    /// When it was queued (milliseconds since the UNIX epoch).
    pub created_ms: u64,
    /// Fragments already acknowledged (restored outboxes only).
    pub acked: Vec<u16>,
}

/// The keys of an acknowledgement SURB, encoded ([`p2pmix_mix::SurbKeys::to_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedAckLabel {
    /// The label the acknowledgement comes back with.
    pub label: Label,
    /// The fragment it acknowledges.
    pub message: MessageId,
    /// The fragment's index.
    pub index: u16,
    /// When it was handed out (milliseconds since the UNIX epoch).
    pub issued_ms: u64,
    /// The encoded keys (secret).
    pub keys: Zeroizing<Vec<u8>>,
}

/// The keys of a reply SURB, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedReplyLabel {
    /// The label the reply comes back with.
    pub label: Label,
    /// The message it answers.
    pub answered: MessageId,
    /// When it was handed out (milliseconds since the UNIX epoch).
    pub issued_ms: u64,
    /// The encoded keys (secret).
    pub keys: Zeroizing<Vec<u8>>,
}

/// One fragment of an incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFragment {
    /// The message.
    pub message: MessageId,
    /// Which fragment.
    pub index: u16,
    /// How many the message has.
    pub count: u16,
    /// Its data.
    pub data: Vec<u8>,
    /// The sender's static key, when it chose to be known.
    pub from: Option<[u8; 32]>,
    /// For a reply: the message it answers.
    pub in_reply_to: Option<MessageId>,
    /// When the message's first fragment arrived (milliseconds since the UNIX epoch).
    pub first_seen_ms: u64,
}

/// A whole incoming message the application has not accepted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedReceived {
    /// The message.
    pub message: MessageId,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The sender's static key, when it chose to be known.
    pub from: Option<[u8; 32]>,
    /// For a reply: the message it answers.
    pub in_reply_to: Option<MessageId>,
    /// Reply SURBs that came with it (encoded, secret).
    pub surbs: Vec<Zeroizing<Vec<u8>>>,
    /// When it was completed (milliseconds since the UNIX epoch).
    pub at_ms: u64,
}

/// Everything a store held at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedState {
    /// Messages being sent.
    pub outbox: Vec<SavedOutbound>,
    /// Outstanding acknowledgement SURBs.
    pub ack_labels: Vec<SavedAckLabel>,
    /// Outstanding reply SURBs.
    pub reply_labels: Vec<SavedReplyLabel>,
    /// Fragments of incomplete incoming messages.
    pub fragments: Vec<SavedFragment>,
    /// Reply SURBs of incomplete incoming messages.
    pub partial_surbs: Vec<(MessageId, Vec<Zeroizing<Vec<u8>>>)>,
    /// Whole messages not accepted yet.
    pub inbox: Vec<SavedReceived>,
    /// Ids of delivered messages and when (milliseconds since the UNIX epoch).
    pub delivered: Vec<(MessageId, u64)>,
    /// The mailbox acknowledgement.
    pub mailbox_ack: u64,
}

/// What waits for the store.
#[derive(Debug)]
pub(super) enum Release {
    /// An acknowledgement packet for the send stream.
    Ack(Vec<u8>),
    /// An event for the application.
    Event(ClientEvent),
    /// The mailbox acknowledgement may go out.
    MailboxAck(u64),
}

/// The store's side of the core: ops not yet taken, what waits for them, the wall clock.
#[derive(Debug)]
pub(super) struct Durability {
    enabled: bool,
    ops: VecDeque<StoreOp>,
    /// Ops emitted so far; op `n` is the `n`-th (from 1).
    emitted: u64,
    /// Ops reported durable.
    durable: u64,
    waiting: VecDeque<(u64, Release)>,
    /// The monotonic and the wall clock at one moment: times the store keeps are wall clock.
    anchor: (Instant, u64),
}

impl Durability {
    pub(super) fn memory(now: Instant) -> Self {
        Durability {
            enabled: false,
            ops: VecDeque::new(),
            emitted: 0,
            durable: 0,
            waiting: VecDeque::new(),
            anchor: (now, 0),
        }
    }

    pub(super) fn stored(now: Instant, now_ms: u64) -> Self {
        Durability {
            enabled: true,
            anchor: (now, now_ms),
            ..Durability::memory(now)
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// `t` on the wall clock (milliseconds since the UNIX epoch).
    pub(super) fn ms(&self, t: Instant) -> u64 {
        let (mono, ms) = self.anchor;
        if t >= mono {
            ms.saturating_add(u64::try_from((t - mono).as_millis()).unwrap_or(u64::MAX))
        } else {
            ms.saturating_sub(u64::try_from((mono - t).as_millis()).unwrap_or(u64::MAX))
        }
    }

    /// The monotonic instant of wall-clock time `ms` (clamped to `now`: nothing from the
    /// future).
    pub(super) fn instant(&self, ms: u64, now: Instant) -> Instant {
        let (mono, anchor_ms) = self.anchor;
        let at = if ms >= anchor_ms {
            mono.checked_add(Duration::from_millis(ms - anchor_ms))
        } else {
            mono.checked_sub(Duration::from_millis(anchor_ms - ms))
        };
        at.unwrap_or(now).min(now)
    }

    pub(super) fn push(&mut self, op: StoreOp) {
        if self.enabled {
            self.ops.push_back(op);
            self.emitted += 1;
        }
    }

    /// Holds `release` until everything emitted so far is durable; `Some` when it may go now.
    pub(super) fn after_durable(&mut self, release: Release) -> Option<Release> {
        if self.durable >= self.emitted && self.waiting.is_empty() {
            return Some(release);
        }
        self.waiting.push_back((self.emitted, release));
        None
    }
}

impl ClientCore {
    /// The next batch of changes for the store: write them in one transaction, then report
    /// with [`ClientCore::handle_stored`] and the batch's `through`. Empty for a core without a
    /// store.
    pub fn poll_store(&mut self) -> Option<StoreBatch> {
        if self.durability.ops.is_empty() {
            return None;
        }
        let ops: Vec<StoreOp> = self.durability.ops.drain(..).collect();
        Some(StoreBatch {
            through: self.durability.emitted,
            ops,
        })
    }

    /// Reports that every batch up to `through` is durable: what waited for it goes out.
    pub fn handle_stored(&mut self, through: u64) {
        let d = &mut self.durability;
        d.durable = d.durable.max(through.min(d.emitted));
        let durable = d.durable;
        while self
            .durability
            .waiting
            .front()
            .is_some_and(|(n, _)| *n <= durable)
        {
            if let Some((_, release)) = self.durability.waiting.pop_front() {
                self.release(release);
            }
        }
    }

    /// Whether every change is durable and nothing waits for the store.
    pub fn is_stored(&self) -> bool {
        self.durability.ops.is_empty() && self.durability.waiting.is_empty()
    }

    /// Does what `release` was held for.
    pub(super) fn release(&mut self, release: Release) {
        match release {
            Release::Ack(packet) => self.queue_prebuilt(packet),
            Release::Event(event) => self.events.push_back(event),
            Release::MailboxAck(seq) => self.mailbox_ack = self.mailbox_ack.max(seq),
        }
    }

    /// Holds `release` until everything so far is durable (at once without a store).
    pub(super) fn release_when_durable(&mut self, release: Release) {
        if let Some(release) = self.durability.after_durable(release) {
            self.release(release);
        }
    }

    /// Every mailbox packet up to `seq` was handed to [`ClientCore::handle_delivery`]: once
    /// what they changed is durable, [`ClientCore::mailbox_ack`] says the gateway may delete
    /// them.
    pub fn mailbox_processed(&mut self, seq: u64) {
        self.durability.push(StoreOp::MailboxAck { through: seq });
        self.release_when_durable(Release::MailboxAck(seq));
    }

    /// The highest mailbox sequence number whose packets are processed and durable: what the
    /// next fetch acknowledges.
    pub fn mailbox_ack(&self) -> u64 {
        self.mailbox_ack
    }
}

/// Changes for the store, to write in one transaction.
#[derive(Debug)]
pub struct StoreBatch {
    /// Report this number to [`ClientCore::handle_stored`] once written.
    pub through: u64,
    /// The changes, in order.
    pub ops: Vec<StoreOp>,
}
