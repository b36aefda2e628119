//! A gateway's mailboxes on the node: the sans-IO [`MailboxServer`], its database written by a
//! thread of its own ([`SpoolWriter`], batched commits: the event loop never waits for the
//! disk), the answers going out on the mailbox protocol, and the addresses of connected
//! clients (a registration counts against the address it came from).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::PeerId;
use libp2p_request_response::ResponseChannel;
use p2pmix_bootstrap::Now;
use p2pmix_mix::{ClientId, Label};
use p2pmix_proto::v1::{MailboxRequest, MailboxResponse};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::{
    mailbox::{
        DiskSpool, MailboxBehaviour, MailboxConfig, MailboxServer, MailboxStore, SpoolOp,
        server::ServerEvent,
        spool::{Handoff, SpoolError, SpoolReport, SpoolWriter},
    },
    node::gauges::MailboxGauges,
};

/// Why the mailboxes could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The database could not be opened or read.
    #[error("mailboxes at {path}: {source}")]
    Spool {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: SpoolError,
    },
    /// The writer thread could not start.
    #[error("mailbox writer thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The gateway side of a node. See the module documentation.
pub struct Gateway {
    server: MailboxServer<ResponseChannel<MailboxResponse>>,
    writer: SpoolWriter,
    /// Where each connected peer's connection comes from (the latest one).
    addresses: HashMap<PeerId, IpAddr>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("clients", &self.server.store().clients())
            .field("parked", &self.server.parked())
            .finish_non_exhaustive()
    }
}

/// The IP address a multiaddr starts with.
pub fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

impl Gateway {
    /// Opens the mailboxes kept in the database at `path` (created if missing) at `now`, and
    /// starts its writer.
    pub fn open(path: &Path, config: MailboxConfig, now: Now) -> Result<Self, GatewayError> {
        let spool_err = |source| GatewayError::Spool {
            path: path.to_path_buf(),
            source,
        };
        let spool = DiskSpool::open(path).map_err(spool_err)?;
        let (contents, damaged) = spool.load().map_err(spool_err)?;
        if damaged > 0 {
            warn!(damaged, "mailbox database: entries skipped");
        }
        let store = MailboxStore::restore(config, now.unix_ms, contents);
        info!(
            clients = store.clients(),
            held = store.len(),
            "mailboxes opened"
        );
        let mut gateway = Gateway {
            server: MailboxServer::new(store, now),
            writer: SpoolWriter::start(spool)?,
            addresses: HashMap::new(),
        };
        gateway.apply_spool();
        Ok(gateway)
    }

    /// The server (timers, counters).
    pub fn server(&self) -> &MailboxServer<ResponseChannel<MailboxResponse>> {
        &self.server
    }

    /// Registered clients, packets and bytes held, and counters.
    pub fn snapshot(&self) -> MailboxGauges {
        let store = self.server.store();
        MailboxGauges {
            clients: store.clients(),
            packets: store.len(),
            bytes: store.bytes(),
            stats: self.server.stats(),
        }
    }

    /// A connection of `peer` from `remote` is up (its registrations count against that
    /// address).
    pub fn connected(&mut self, peer: PeerId, remote: &Multiaddr) {
        if let Some(ip) = ip_of(remote) {
            self.addresses.insert(peer, ip);
        }
    }

    /// `peer` has no connection left.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.addresses.remove(peer);
    }

    /// A client's fetch (its client id comes from the authenticated connection of `peer`).
    pub fn handle_fetch(
        &mut self,
        now: Now,
        peer: &PeerId,
        client: ClientId,
        request: MailboxRequest,
        channel: ResponseChannel<MailboxResponse>,
        mailbox: &mut MailboxBehaviour,
    ) {
        let origin = self.addresses.get(peer).copied();
        self.server
            .handle_fetch(now, client, origin, request, channel);
        self.flush(mailbox);
    }

    /// A packet the network delivered for `client`.
    pub fn handle_delivery(
        &mut self,
        now: Now,
        client: &ClientId,
        label: Label,
        body: &[u8],
        mailbox: &mut MailboxBehaviour,
    ) {
        if let Err(e) = self.server.handle_delivery(now, client, label, body) {
            debug!(client = %hex::encode(&client.0[..8]), %e, "packet not stored");
        }
        self.flush(mailbox);
    }

    /// Held fetches whose wait is over, expiry.
    pub fn handle_timeout(&mut self, now: Now, mailbox: &mut MailboxBehaviour) {
        self.server.handle_timeout(now);
        self.flush(mailbox);
    }

    /// The writer's next report (for the node's loop to wait on).
    pub async fn next_report(&mut self) -> Option<SpoolReport> {
        self.writer.next_report().await
    }

    /// The writer made some saves durable (or could not): those packets may now be handed
    /// over (or are dropped).
    pub fn handle_report(&mut self, report: SpoolReport, mailbox: &mut MailboxBehaviour) {
        let mut next = Some(report);
        while let Some(report) = next {
            if !report.written {
                warn!(
                    packets = report.saves.len(),
                    "could not store mailbox packets"
                );
            }
            for (client, seq) in report.saves {
                self.server.spooled(&client, seq, report.written);
            }
            next = self.writer.try_report();
        }
        self.flush(mailbox);
    }

    /// Hands what must reach the disk to the writer, then sends the answers (a packet is
    /// handed over only once the writer reported it durable).
    fn flush(&mut self, mailbox: &mut MailboxBehaviour) {
        self.apply_spool();
        while let Some((channel, answer)) = self.server.poll_answer() {
            // The client may have gone: its fetch is simply lost, nothing was deleted.
            let _ = mailbox.send_response(channel, answer);
        }
        while let Some(event) = self.server.poll_event() {
            match event {
                ServerEvent::Registered(client) => {
                    info!(client = %hex::encode(&client.0[..8]), "client registered")
                }
                ServerEvent::Expired(n) => info!(expired = n, "mailbox packets expired"),
            }
        }
    }

    fn apply_spool(&mut self) {
        while let Some(op) = self.server.poll_spool() {
            let save = match &op {
                SpoolOp::Save { client, packet } => Some((*client, packet.seq)),
                _ => None,
            };
            match (self.writer.submit(op), save) {
                (Handoff::Queued, _) => {}
                (refused, Some((client, seq))) => {
                    warn!(?refused, "mailbox writer cannot take a packet");
                    self.server.spooled(&client, seq, false);
                }
                (refused, None) => warn!(?refused, "mailbox writer cannot take a change"),
            }
        }
    }
}
