//! The client's side of the mailbox, sans-IO. Each fetch acknowledges everything the client has
//! processed so far (the driver says so with [`MailboxFetcher::processed`], once what the
//! packets changed is durable); after a failure the next fetch waits, doubling up to
//! [`MAX_FETCH_BACKOFF`].
//!
//! Two paces ([`PullRate`], from the consensus): the constant-rate link, where a fetch leaves
//! once per interval whatever came back, and is answered at once with a fixed number of items
//! of one size (dummies fill: see [`DUMMY_SEQ`]), so that someone watching the client's link
//! sees the same sizes at the same times whether or not anything arrives; or the long poll,
//! always one fetch under way, held by the gateway until packets come (answers follow
//! arrivals: only for networks that turned the constant rate off).

use std::time::{Duration, Instant};

use p2pmix_mix::Label;
use p2pmix_proto::v1::{
    MailboxRequest, MailboxResponse, RefusalCode, mailbox_response::Response as MailboxAnswer,
};

use p2pmix_proto::v1::NetworkParameters;

use super::{DUMMY_SEQ, MAX_PADDED_ITEMS, MAX_WAIT};

/// Packets asked for per fetch.
pub const FETCH_BATCH: u32 = 64;
/// Longest pause between failed fetches.
pub const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(15);
/// The pause after a first failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How the client pulls from its gateway, from the consensus parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRate {
    /// One fetch per `interval`, each answered with exactly `items` packets (dummies fill).
    Constant {
        /// Time between fetches.
        interval: Duration,
        /// Packets in every answer (at most [`MAX_PADDED_ITEMS`]).
        items: u32,
    },
    /// Always one fetch under way, held until packets come.
    LongPoll,
}

/// The shortest pull interval a consensus may set (a client would flood its gateway).
pub const MIN_PULL_INTERVAL: Duration = Duration::from_millis(10);

impl PullRate {
    /// The pace `parameters` set: the constant rate when both its fields are set, the long
    /// poll otherwise; the interval is at least [`MIN_PULL_INTERVAL`], the items at most
    /// [`MAX_PADDED_ITEMS`].
    pub fn from_parameters(parameters: &NetworkParameters) -> Self {
        match (
            parameters.mailbox_pull_interval_us,
            parameters.mailbox_pull_items,
        ) {
            (0, _) | (_, 0) => PullRate::LongPoll,
            (us, items) => PullRate::Constant {
                interval: Duration::from_micros(us).max(MIN_PULL_INTERVAL),
                items: items.min(MAX_PADDED_ITEMS as u32),
            },
        }
    }

    /// Packets per second the link carries (constant rate), for the bandwidth budget.
    pub fn packets_per_second(&self) -> Option<f64> {
        match self {
            PullRate::Constant { interval, items } => {
                Some(f64::from(*items) / interval.as_secs_f64())
            }
            PullRate::LongPoll => None,
        }
    }
}

/// Why a fetch brought nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The gateway refused (not a gateway, full, ...).
    Refused {
        /// What the refusal means.
        code: RefusalCode,
        /// The gateway's words, for logs.
        reason: String,
    },
    /// The answer held neither a batch nor a refusal.
    Empty,
    /// No answer: the connection failed or the request timed out.
    NoAnswer,
}

/// A packet body the gateway handed over, under the label its creator chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its sequence number in the mailbox (acknowledge it with [`MailboxFetcher::processed`]).
    pub seq: u64,
    /// The label (routes it to an acknowledgement, a reply or the message path).
    pub label: Label,
    /// The Sphinx body.
    pub body: Vec<u8>,
}

/// The fetch loop. See the module documentation.
#[derive(Debug)]
pub struct MailboxFetcher {
    in_flight: bool,
    ready: Option<MailboxRequest>,
    ack_through: u64,
    next_at: Instant,
    backoff: Duration,
    malformed: u64,
    rate: PullRate,
    /// When the last constant-rate fetch was due (the next is one interval later, whatever
    /// the answers did).
    last_due: Option<Instant>,
    /// The application is behind: fetch nothing real (see [`MailboxFetcher::set_backlogged`]).
    backlogged: bool,
}

impl MailboxFetcher {
    /// A fetcher that fetches at once, at `rate`.
    pub fn new(now: Instant, rate: PullRate) -> Self {
        MailboxFetcher {
            in_flight: false,
            ready: None,
            ack_through: 0,
            next_at: now,
            backoff: FIRST_BACKOFF,
            malformed: 0,
            rate,
            last_due: None,
            backlogged: false,
        }
    }

    /// Whether the application is behind on the client's events. While it is, constant-rate
    /// fetches go on at their pace but ask for nothing real (the answers are all dummies, which
    /// the link does not tell from any other), and the long poll stops fetching; the gateway
    /// keeps what arrives, and senders' retransmissions wait for the acknowledgements.
    pub fn set_backlogged(&mut self, backlogged: bool) {
        self.backlogged = backlogged;
    }

    /// The pace changes (a new consensus): it applies from the next fetch.
    pub fn set_rate(&mut self, rate: PullRate) {
        self.rate = rate;
    }

    /// The pace in force.
    pub fn rate(&self) -> PullRate {
        self.rate
    }

    /// The highest sequence number processed (acknowledged with the next fetch).
    pub fn ack_through(&self) -> u64 {
        self.ack_through
    }

    /// Every packet up to `seq` is processed: the next fetch lets the gateway delete them.
    pub fn processed(&mut self, seq: u64) {
        self.ack_through = self.ack_through.max(seq);
    }

    /// Items whose label was not a label.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Whether a fetch is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight || self.ready.is_some()
    }

    /// When the next fetch is due (none while one is under way, or while a backlogged long
    /// poll waits for the application).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.backlogged && self.rate == PullRate::LongPoll;
        (!self.in_flight() && !waiting).then_some(self.next_at)
    }

    /// Prepares the next fetch when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.in_flight() || now < self.next_at {
            return;
        }
        let ack_through = Some(self.ack_through);
        // The client key's proof is the behaviour's to add.
        self.ready = Some(match self.rate {
            PullRate::Constant { interval, items } => {
                // On the grid of due times, not when the last answer came (a slow answer does
                // not shift the next fetch; one later than a whole interval skips a slot).
                let due = match self.last_due {
                    Some(last) if now < last + 2 * interval => last + interval,
                    _ => now,
                };
                self.last_due = Some(due);
                self.next_at = due + interval;
                MailboxRequest {
                    ack_through,
                    max: items,
                    wait_ms: 0,
                    padded: true,
                    hold: Some(self.backlogged),
                    ..MailboxRequest::default()
                }
            }
            PullRate::LongPoll if self.backlogged => return,
            PullRate::LongPoll => MailboxRequest {
                ack_through,
                max: FETCH_BATCH,
                wait_ms: u32::try_from(MAX_WAIT.as_millis()).unwrap_or(u32::MAX),
                ..MailboxRequest::default()
            },
        });
    }

    /// The fetch to send now; it is under way until its answer or failure is reported.
    pub fn poll_request(&mut self) -> Option<MailboxRequest> {
        let request = self.ready.take()?;
        self.in_flight = true;
        Some(request)
    }

    /// The gateway's answer: the packets it handed over (the next fetch goes out at once and
    /// acknowledges what [`MailboxFetcher::processed`] was told), or why there are none.
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: MailboxResponse,
    ) -> Result<Vec<Delivery>, FetchFailure> {
        match response.response {
            Some(MailboxAnswer::Batch(batch)) => {
                self.in_flight = false;
                self.backoff = FIRST_BACKOFF;
                if self.rate == PullRate::LongPoll {
                    self.next_at = now;
                }
                let mut out = Vec::with_capacity(batch.items.len());
                for item in batch.items {
                    if item.seq == DUMMY_SEQ {
                        continue;
                    }
                    match <[u8; 16]>::try_from(item.label.as_slice()) {
                        Ok(label) => out.push(Delivery {
                            seq: item.seq,
                            label: Label(label),
                            body: item.body,
                        }),
                        // Nothing to process: acknowledged with the next fetch.
                        Err(_) => {
                            self.malformed += 1;
                            self.ack_through = self.ack_through.max(item.seq);
                        }
                    }
                }
                Ok(out)
            }
            Some(MailboxAnswer::Refused(r)) => {
                let failure = FetchFailure::Refused {
                    code: r.code(),
                    reason: r.reason,
                };
                self.handle_failure(now);
                Err(failure)
            }
            None => {
                self.handle_failure(now);
                Err(FetchFailure::Empty)
            }
        }
    }

    /// The fetch got no answer: the next one waits for the backoff.
    pub fn handle_failure(&mut self, now: Instant) {
        self.in_flight = false;
        self.last_due = None;
        self.next_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_FETCH_BACKOFF);
    }

    /// How long the next failure makes the fetcher wait.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
}
