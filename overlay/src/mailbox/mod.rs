//! Gateway mailboxes on `/p2pmix/mailbox/2.0.0`: packets the network delivers for a gateway's
//! registered clients wait there until the client fetches and acknowledges them.
//!
//! The rooms, from the wire inwards:
//! - this file: the protocol (name, codec, sizes), the limits ([`MailboxConfig`]) and why a
//!   packet or a registration is refused ([`MailboxError`]);
//! - [`server`]: the gateway's long-poll server, sans-IO: fetches are held open until a packet
//!   arrives or their wait is over, and acknowledged cumulatively by the next fetch;
//! - [`store`]: the mailboxes in memory, sans-IO: registration, quota, expiry, sequence numbers;
//!   what must reach the disk leaves it as [`SpoolOp`] values;
//! - [`limits`]: what is limited per address, prefix and mailbox, and the fair share of a full
//!   gateway;
//! - [`spool`]: the disk (`DATA_DIR/mailbox.redb`), which applies those values in batched
//!   transactions on a thread of its own and loads them back after a restart (driven by the
//!   node);
//! - [`fetcher`]: the client's side, sans-IO: one fetch under way at a time, acknowledgements,
//!   backoff after failures;
//! - [`registration`]: who a fetch registers (the client's own key, proved per connection).

pub mod fetcher;
pub mod limits;
pub mod registration;
pub mod server;
pub mod spool;
pub mod store;

use std::{io, time::Duration};

use libp2p_request_response::{self as request_response, ProtocolSupport};
use libp2p_swarm::StreamProtocol;
use p2pmix_bootstrap::ProtoCodec;
use p2pmix_proto::v1::{MailboxRequest, MailboxResponse, RefusalCode};
use thiserror::Error;

pub use fetcher::{FetchFailure, MailboxFetcher, PullRate};
pub use registration::{ClientKey, RegistrationError, registered_client};
pub use server::{MailboxServer, MailboxStats, refusal};
pub use spool::{DiskSpool, SpoolContents};
pub use store::{MailboxStore, Registration, SpoolOp, StoredPacket};

/// The protocol name (2: fixed-width sequence numbers and padded answers, for the
/// constant-rate inbound link).
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/mailbox/2.0.0");

/// The sequence number of a dummy item in a padded answer (no stored packet has it: sequence
/// numbers start from the gateway's clock and count up by one).
pub const DUMMY_SEQ: u64 = u64::MAX;

/// Most items in a padded answer: what a client may make its gateway send per fetch (dummies
/// included) whatever it asks.
pub const MAX_PADDED_ITEMS: usize = 32;

/// Largest mailbox message either side reads: a batch of [`MAX_BATCH`] packets fits easily.
pub const MAX_MAILBOX_MESSAGE: usize = 1 << 20;

/// Most packets in one answer.
pub const MAX_BATCH: usize = 256;

/// Longest a gateway holds a fetch open when nothing is waiting.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// Length-prefixed protobuf codec for the mailbox protocol.
pub type MailboxCodec =
    ProtoCodec<MailboxRequest, MailboxResponse, MAX_MAILBOX_MESSAGE, MAX_MAILBOX_MESSAGE>;

/// The mailbox protocol on a swarm.
pub type MailboxBehaviour = request_response::Behaviour<MailboxCodec>;

/// A mailbox behaviour that serves fetches (`serve = true`: gateways) or makes them (clients).
/// Requests may be held open for [`MAX_WAIT`], so the timeout is longer than that.
pub fn mailbox_behaviour(serve: bool) -> MailboxBehaviour {
    let support = if serve {
        ProtocolSupport::Inbound
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        MailboxCodec::default(),
        [(MAILBOX_PROTOCOL, support)],
        request_response::Config::default()
            .with_request_timeout(MAX_WAIT + Duration::from_secs(20)),
    )
}

/// Limits of a gateway's mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Packets held for one client (a 1 MiB message is about 600 packets).
    pub quota: usize,
    /// How long a packet waits for its client.
    pub ttl: Duration,
    /// Bytes held for all clients together (in memory and on disk).
    pub max_bytes: usize,
    /// Bytes held for one client at most (well below `max_bytes`: a few identities cannot
    /// fill the gateway; beyond that the fair share of [`limits`] holds).
    pub max_client_bytes: usize,
    /// Registered clients at most.
    pub max_clients: usize,
    /// Registrations held that were made from one IP address.
    pub max_per_address: usize,
    /// Registrations held that were made from one prefix (IPv4 /24, IPv6 /48).
    pub max_per_prefix: usize,
    /// A registration with an empty mailbox and no fetch for this long is forgotten (also
    /// across restarts).
    pub idle_registration: Duration,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            quota: 8_192,
            ttl: Duration::from_secs(24 * 3600),
            max_bytes: 512 << 20,
            max_client_bytes: 8 << 20,
            max_clients: 100_000,
            max_per_address: 32,
            max_per_prefix: 256,
            idle_registration: Duration::from_secs(3600),
        }
    }
}

/// Why a packet was not stored, or a client not registered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The client never fetched from this gateway.
    #[error("client is not registered here")]
    NotRegistered,
    /// The client's mailbox holds its quota.
    #[error("the client's mailbox is full")]
    QuotaFull,
    /// The gateway holds its byte limit or its number of clients.
    #[error("the gateway's mailboxes are full")]
    Full,
    /// The packet could not be written.
    #[error("mailbox storage: {0}")]
    Io(#[from] io::Error),
    /// The address or prefix the registration comes from holds its share of registrations.
    #[error("too many registrations from this address")]
    AddressLimit,
}

impl MailboxError {
    /// Every reason, in the order of [`MailboxError::index`] (for counters).
    pub const REASONS: [&'static str; 5] = ["not_registered", "quota", "full", "io", "address"];

    /// [`MailboxError::index`] of [`MailboxError::Io`].
    pub const IO_INDEX: usize = 3;

    /// The code a refusal carries on the wire.
    pub fn code(&self) -> RefusalCode {
        match self {
            MailboxError::NotRegistered => RefusalCode::NotRegistered,
            MailboxError::QuotaFull | MailboxError::Full => RefusalCode::Full,
            MailboxError::Io(_) => RefusalCode::Unspecified,
            MailboxError::AddressLimit => RefusalCode::RateLimited,
        }
    }

    /// This reason's position in [`MailboxError::REASONS`].
    pub fn index(&self) -> usize {
        match self {
            MailboxError::NotRegistered => 0,
            MailboxError::QuotaFull => 1,
            MailboxError::Full => 2,
            MailboxError::Io(_) => Self::IO_INDEX,
            MailboxError::AddressLimit => 4,
        }
    }

    /// A short name for metrics labels.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}
