//! A gateway's mailboxes on the node: the sans-IO [`MailboxServer`] with its disk spool, the
//! answers going out on the mailbox protocol.

use std::path::PathBuf;

use libp2p::request_response::ResponseChannel;
use p2pmix_bootstrap::Now;
use p2pmix_mix::{ClientId, Label};
use p2pmix_proto::v1::{MailboxRequest, MailboxResponse};
use tracing::{debug, info, warn};

use crate::{
    mailbox::{
        DiskSpool, MailboxBehaviour, MailboxConfig, MailboxServer, MailboxStore, SpoolOp,
        server::ServerEvent,
    },
    node::gauges::MailboxGauges,
    runtime::files::FileError,
};

/// The gateway side of a node. See the module documentation.
pub struct Gateway {
    server: MailboxServer<ResponseChannel<MailboxResponse>>,
    spool: DiskSpool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("clients", &self.server.store().clients())
            .field("parked", &self.server.parked())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Opens the mailboxes kept in `dir` (created if missing) at `now`.
    pub fn open(dir: PathBuf, config: MailboxConfig, now: Now) -> Result<Self, FileError> {
        let spool = DiskSpool::open(dir.clone()).map_err(FileError::on(&dir))?;
        let contents = spool.load().map_err(FileError::on(&dir))?;
        let store = MailboxStore::restore(config, now.unix_ms, contents);
        info!(
            clients = store.clients(),
            held = store.len(),
            "mailboxes opened"
        );
        let mut gateway = Gateway {
            server: MailboxServer::new(store, now),
            spool,
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

    /// A client's fetch (its client id comes from the authenticated connection).
    pub fn handle_fetch(
        &mut self,
        now: Now,
        client: ClientId,
        request: MailboxRequest,
        channel: ResponseChannel<MailboxResponse>,
        mailbox: &mut MailboxBehaviour,
    ) {
        self.server.handle_fetch(now, client, request, channel);
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

    /// Writes what must reach the disk first, then sends the answers (a packet is handed over
    /// only once it is on disk).
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
            let result = self.spool.apply(&op);
            match (&op, result) {
                (SpoolOp::Save { client, packet }, result) => {
                    if let Err(e) = &result {
                        warn!(%e, "could not store a mailbox packet");
                    }
                    self.server.spooled(client, packet.seq, result.is_ok());
                }
                (_, Err(e)) => warn!(?op, %e, "mailbox storage"),
                (_, Ok(())) => {}
            }
        }
    }
}
