//! The client's side of the mailbox, sans-IO: always one fetch under way at its gateway (which
//! holds it open until packets come), each acknowledging everything the client has processed
//! so far (the driver says so with [`MailboxFetcher::processed`], once what the packets changed
//! is durable); after a failure the next fetch waits, doubling up to [`MAX_FETCH_BACKOFF`].

use std::time::{Duration, Instant};

use p2pmix_mix::Label;
use p2pmix_proto::v1::{
    MailboxRequest, MailboxResponse, RefusalCode, mailbox_response::Response as MailboxAnswer,
};

use super::MAX_WAIT;

/// Packets asked for per fetch.
pub const FETCH_BATCH: u32 = 64;
/// Longest pause between failed fetches.
pub const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(15);
/// The pause after a first failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

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
}

impl MailboxFetcher {
    /// A fetcher that fetches at once.
    pub fn new(now: Instant) -> Self {
        MailboxFetcher {
            in_flight: false,
            ready: None,
            ack_through: 0,
            next_at: now,
            backoff: FIRST_BACKOFF,
            malformed: 0,
        }
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

    /// When the next fetch is due (none while one is under way).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.in_flight()).then_some(self.next_at)
    }

    /// Prepares the next fetch when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.in_flight() && now >= self.next_at {
            self.ready = Some(MailboxRequest {
                ack_through: self.ack_through,
                max: FETCH_BATCH,
                wait_ms: u32::try_from(MAX_WAIT.as_millis()).unwrap_or(u32::MAX),
                // The client key's proof is the behaviour's to add.
                ..MailboxRequest::default()
            });
        }
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
                self.next_at = now;
                let mut out = Vec::with_capacity(batch.items.len());
                for item in batch.items {
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
        self.next_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_FETCH_BACKOFF);
    }

    /// How long the next failure makes the fetcher wait.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
}
