//! The client as a libp2p `NetworkBehaviour`: what a dApp puts in its own
//! `#[derive(NetworkBehaviour)]` to send and receive through the mixnet.
//!
//! A thin adapter around three sans-IO parts: the [`ClientCore`] (messages, routes, the Poisson
//! schedule, acknowledgements), a fetch-only [`DirectoryClient`] (which consensus to fetch from
//! whom, verified against the pinned authority keys) and the gateway's mailbox (fetched over
//! `/p2pmix/mailbox/2.0.0` at the constant rate the consensus sets, each answer of one size
//! whatever arrived: [`crate::mailbox::fetcher`]). Packets leave through a send-only Sphinx [`Link`] to the client's gateway. The
//! behaviour reads the clock and the operating system's randomness; nothing else here does.
//!
//! Until a verified consensus is in force nothing is sent; messages queue and go out once it
//! is (see [`Event::Consensus`]).
//!
//! With [`Config::store`] the client's state lives in a [`ClientStore`]: the behaviour writes
//! each batch of the core's changes in one transaction on its own turn (a `send` returns once
//! its message is durable; a mailbox batch is acknowledged to the gateway once what its
//! packets changed is durable), and a behaviour started on the same store resumes its outbox.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::FutureExt;
use futures_timer::Delay as Timer;
use libp2p_core::Multiaddr;
use libp2p_core::{Endpoint, transport::PortUse};
use libp2p_identity::PeerId;
use libp2p_request_response::{self as request_response, OutboundRequestId};
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use p2pmix_bootstrap::{default_parameters, directory_behaviour};
use p2pmix_mix::{
    link::Link,
    trace::{Direction, PacketTag, TraceSink, Truth},
};
use p2pmix_proto::v1::{
    DirectoryRequest, GetConsensus, directory_request::Request, directory_response::Response,
};
use rand::{SeedableRng, rngs::StdRng};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::{
    client::{
        Address, ClientConfig, ClientCore, ClientEvent, ClientStats, FailReason, MessageId,
        ReceivedMessage, ReplyHandle, SendError, StaticKey, StreamRates, Topology, Transmitted,
        Unroutable, client_id,
        core::StoreBatch,
        store::{ClientStore, StoreError},
    },
    config::Authorities,
    directory::{Action, DirectoryClient},
    mailbox::{ClientKey, FetchFailure, MailboxFetcher, PullRate, mailbox_behaviour},
    runtime::Now,
};

/// Where a client connects and whom it trusts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The client's gateway.
    pub gateway: PeerId,
    /// Where the gateway listens (more are learnt from the consensus).
    pub gateway_addresses: Vec<Multiaddr>,
    /// The directory authorities: their keys (pinned), addresses and the epoch schedule.
    pub authorities: Authorities,
    /// Limits and choices of the client core.
    pub client: ClientConfig,
    /// Where the client keeps its state (`DATA_DIR/client.redb`); `None`: in memory only, lost
    /// with the process.
    pub store: Option<PathBuf>,
}

impl Config {
    /// A client of the network `authorities` pins, through `gateway` (its addresses are
    /// learnt from the consensus; add the ones known now with
    /// [`Config::with_gateway_addresses`]), with the default [`ClientConfig`] and its state in
    /// memory only.
    pub fn new(authorities: Authorities, gateway: PeerId) -> Self {
        Config {
            gateway,
            gateway_addresses: Vec::new(),
            authorities,
            client: ClientConfig::default(),
            store: None,
        }
    }

    /// Uses `gateway` instead.
    pub fn with_gateway(mut self, gateway: PeerId) -> Self {
        self.gateway = gateway;
        self
    }

    /// Where the gateway listens, before any consensus says so.
    pub fn with_gateway_addresses(mut self, addresses: Vec<Multiaddr>) -> Self {
        self.gateway_addresses = addresses;
        self
    }

    /// The client core's limits and choices.
    pub fn with_client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Keeps the client's state in the database file `path` (`DATA_DIR/client.redb` by
    /// convention, [`crate::client::CLIENT_STORE_FILE`]), so that a restarted client loses
    /// nothing it accepted.
    pub fn with_store(mut self, path: PathBuf) -> Self {
        self.store = Some(path);
        self
    }
}

/// Why a client could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientSetupError {
    /// The authorities file has no `[network]` section.
    #[error("the authorities file gives no epoch schedule ([network] section)")]
    NoSchedule,
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the client behaviour reports (more kinds may come: match with a `_` arm).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The verified consensus of `epoch` is now the one routes are built from.
    Consensus {
        /// Its epoch.
        epoch: u64,
    },
    /// A message arrived (once per message); answer it with [`Behaviour::reply`] and its
    /// `reply` handle, if the sender gave SURBs. With `Acknowledge::WhenAccepted`, accept it
    /// with [`Behaviour::accept`] and its id once the application has it.
    Received(ReceivedMessage),
    /// Every fragment of a sent message was acknowledged by the recipient.
    Delivered(MessageId),
    /// A sent message could not be delivered.
    Failed(MessageId, FailReason),
    /// A fragment of a sent message could not be built into a packet now (no consensus yet,
    /// no route to the recipient's gateway, a bad address): reported at once, and again only
    /// after a packet of the message was built since; the client keeps trying until it fails with
    /// [`FailReason::Unroutable`].
    Unroutable(MessageId, Unroutable),
}

// `pub` in a private module: the handler type names `Inner`, but users never see it.
#[allow(missing_docs, unreachable_pub)] // the derive generates an undocumented event enum
mod inner {
    use libp2p_swarm::NetworkBehaviour;
    use p2pmix_bootstrap::DirectoryBehaviour;
    use p2pmix_mix::link::Link;

    use crate::mailbox::MailboxBehaviour;

    /// The protocols the client speaks.
    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct Inner {
        pub link: Link,
        pub directory: DirectoryBehaviour,
        pub mailbox: MailboxBehaviour,
    }
}
use inner::{Inner, InnerEvent};

/// Who a client is at its gateway: the id its packets are filed under, which its address carries.
#[derive(Debug, Clone)]
pub enum ClientIdentity {
    /// Its own mixnet key (keep it to keep the address): the address says nothing about the
    /// swarm's peer id, and each mailbox fetch proves the key for its connection.
    Key(ClientKey),
    /// The id derived from the swarm's peer id, for an app that explicitly wants one identity:
    /// anyone holding the address can then check which libp2p peer owns it.
    SwarmPeer,
}

/// The client behaviour. See the module documentation.
pub struct Behaviour {
    inner: Inner,
    core: ClientCore,
    directory: DirectoryClient,
    requests: HashMap<OutboundRequestId, u64>,
    gateway: PeerId,
    /// The authorities and their configured addresses, for dialling them.
    authorities: Authorities,
    /// The gateway's configured addresses.
    gateway_addresses: Vec<Multiaddr>,
    installed: Option<u64>,
    /// The client key and its signature every fetch carries (none for [`ClientIdentity::SwarmPeer`]).
    proof: Option<(Vec<u8>, Vec<u8>)>,
    /// The mailbox fetch loop, and the request under way.
    fetcher: MailboxFetcher,
    fetch: Option<OutboundRequestId>,
    timer: Option<(Instant, Timer)>,
    store: Option<ClientStore>,
    /// A batch the store could not write yet (tried again on the next turn).
    unstored: Option<StoreBatch>,
    rng: StdRng,
    events: VecDeque<Event>,
    waker: Option<Waker>,
    /// Where packets sent and what they carried are recorded (test networks only).
    trace: Option<Arc<dyn TraceSink>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("gateway", &self.gateway)
            .field("core", &self.core)
            .field("installed", &self.installed)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A client in the swarm whose identity is `local_peer`, known at its gateway as `identity`
    /// (use [`ClientIdentity::Key`] with a key of its own unless the app wants its address
    /// linked to its peer id), decrypting with `key`.
    pub fn new(
        local_peer: PeerId,
        identity: ClientIdentity,
        key: StaticKey,
        config: Config,
    ) -> Result<Self, ClientSetupError> {
        let schedule = config
            .authorities
            .schedule
            .ok_or(ClientSetupError::NoSchedule)?;
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let now = Now::system();
        let (me, proof) = match &identity {
            ClientIdentity::Key(k) => (k.client_id(), Some(k.prove(&config.gateway, &local_peer))),
            ClientIdentity::SwarmPeer => (client_id(&local_peer), None),
        };
        let mut core = ClientCore::new(
            now.mono,
            config.client,
            me,
            config.gateway,
            key,
            StreamRates::from_parameters(&default_parameters()),
            &mut rng,
        );
        let store = match &config.store {
            Some(path) => {
                let store = ClientStore::open(path)?;
                let (saved, report) = store.load()?;
                if report.damaged > 0 {
                    warn!(damaged = report.damaged, "client store: entries skipped");
                }
                info!(
                    outbox = saved.outbox.len(),
                    partial_fragments = saved.fragments.len(),
                    inbox = saved.inbox.len(),
                    "client store opened"
                );
                core = core.restore(now.mono, now.unix_ms, saved);
                Some(store)
            }
            None => None,
        };
        let mut directory = DirectoryClient::fetch_only(
            now,
            schedule,
            config.authorities.pinned(),
            config.authorities.peer_ids(),
        );
        // Gateways serve the documents they hold.
        directory.add_peer(config.gateway);
        let mut link = Link::default();
        for a in &config.gateway_addresses {
            link.add_address(config.gateway, a.clone());
        }
        Ok(Behaviour {
            inner: Inner {
                link,
                directory: directory_behaviour(false, Duration::from_secs(10)),
                mailbox: mailbox_behaviour(false),
            },
            core,
            directory,
            requests: HashMap::new(),
            gateway: config.gateway,
            authorities: config.authorities,
            gateway_addresses: config.gateway_addresses,
            installed: None,
            proof,
            fetcher: MailboxFetcher::new(
                now.mono,
                PullRate::from_parameters(&default_parameters()),
            ),
            fetch: None,
            timer: None,
            store,
            unstored: None,
            rng,
            events: VecDeque::new(),
            waker: None,
            trace: None,
        })
    }

    /// Records every packet this client sends (the link to its gateway) and what it carried
    /// (the ground truth) in `sink`. For test networks: the caller decides that it is one.
    pub fn set_trace(&mut self, sink: Arc<dyn TraceSink>) {
        self.trace = Some(sink);
    }

    /// Records `packet`, just built by the core, in the trace.
    fn record(&self, packet: &[u8]) {
        let (Some(trace), Some(kind)) = (&self.trace, self.core.last_transmitted()) else {
            return;
        };
        let output = PacketTag::of(packet);
        trace.link(Direction::Out, &self.gateway, output);
        trace.truth(match kind {
            Transmitted::Fragment {
                message,
                index,
                count,
                attempt,
            } => Truth::Fragment {
                output,
                message: message.0,
                index,
                count,
                attempt,
            },
            Transmitted::Reply => Truth::Reply { output },
            Transmitted::LoopCover => Truth::LoopCover { output },
            Transmitted::DropCover => Truth::DropCover { output },
        });
    }

    /// This client's address: give it to those who should write to it.
    pub fn address(&self) -> Address {
        self.core.address()
    }

    /// Counters of the client core.
    pub fn stats(&self) -> ClientStats {
        self.core.stats()
    }

    /// Packets waiting for the send stream; zero once every acknowledgement and reply left.
    pub fn queued(&self) -> usize {
        self.core.queued()
    }

    /// The epoch of the consensus routes are built from, once there is one.
    pub fn consensus_epoch(&self) -> Option<u64> {
        self.installed
    }

    /// Sends `bytes` to `to`; the recipient cannot answer (see [`Behaviour::send_with_replies`]).
    pub fn send(&mut self, to: &Address, bytes: &[u8]) -> Result<MessageId, SendError> {
        self.send_with_replies(to, bytes, 0)
    }

    /// Sends `bytes` to `to` with `reply_surbs` single-use reply blocks, through which the
    /// recipient can answer (up to `reply_surbs` packets) without learning who sent it.
    pub fn send_with_replies(
        &mut self,
        to: &Address,
        bytes: &[u8],
        reply_surbs: usize,
    ) -> Result<MessageId, SendError> {
        let id = self
            .core
            .send(Instant::now(), *to, bytes, reply_surbs, &mut self.rng)?;
        // The message is durable before its id is handed out (a crash after this resumes it).
        self.flush_store();
        self.wake();
        Ok(id)
    }

    /// Whether the application is behind on this behaviour's events (an app that queues them
    /// says so; [`crate::client::Client`] does). While it is, nothing new is taken from the
    /// mailbox, but the send schedule and the fetch pace go on unchanged: the links do not show
    /// that the application is slow, and the gateway keeps what waits.
    pub fn set_backlogged(&mut self, backlogged: bool) {
        self.fetcher.set_backlogged(backlogged);
        self.wake();
    }

    /// The application has the message it was handed as `id` (see [`Event::Received`]): with
    /// `Acknowledge::WhenAccepted` its acknowledgements go out now and the store forgets it.
    /// `false` when nothing waited for that.
    pub fn accept(&mut self, id: MessageId) -> bool {
        let accepted = self.core.accept(id);
        self.flush_store();
        self.wake();
        accepted
    }

    /// Messages being sent (also those resumed from the store), not yet delivered or failed.
    pub fn outbox(&self) -> Vec<MessageId> {
        self.core.outbox()
    }

    /// Whether every change is durable and nothing waits for the store.
    pub fn is_stored(&self) -> bool {
        self.unstored.is_none() && self.core.is_stored()
    }

    /// Writes the core's changes, one transaction a batch, and reports them durable; a batch
    /// that fails is tried again on the next turn (what waits for it waits too).
    fn flush_store(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        loop {
            let Some(batch) = self.unstored.take().or_else(|| self.core.poll_store()) else {
                return;
            };
            match store.apply(&batch.ops) {
                Ok(()) => self.core.handle_stored(batch.through),
                Err(e) => {
                    warn!(%e, ops = batch.ops.len(), "client store: write failed, will retry");
                    self.unstored = Some(batch);
                    return;
                }
            }
        }
    }

    /// Answers a received message through the SURBs it carried.
    pub fn reply(&mut self, handle: ReplyHandle, bytes: &[u8]) -> Result<MessageId, SendError> {
        let id = self.core.reply(handle, bytes, &mut self.rng)?;
        self.wake();
        Ok(id)
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Advances the sans-IO parts to now and turns their output into requests and packets.
    fn drive(&mut self) {
        let clock = Now::system();
        let (now, now_ms) = (clock.mono, clock.unix_ms);
        // Directory: fetch what is due, install what is in force.
        if self.directory.is_due(clock) {
            self.directory.handle_timeout(clock);
        }
        while let Some(action) = self.directory.poll_action() {
            if let Action::Fetch { epoch, from } = action {
                let request = DirectoryRequest {
                    request: Some(Request::GetConsensus(GetConsensus { epoch })),
                };
                let id = self.inner.directory.send_request(&from, request);
                self.requests.insert(id, epoch);
            }
        }
        if let Some(consensus) = self.directory.in_force(now_ms)
            && self.installed != Some(consensus.epoch())
        {
            let epoch = consensus.epoch();
            let topology = Topology::from_consensus(consensus);
            let rates = StreamRates::from_parameters(&consensus.parameters());
            if let Some(gateway) = consensus
                .nodes()
                .iter()
                .find(|n| p2pmix_bootstrap::peer_id(n) == Some(self.gateway))
            {
                for a in gateway.addresses.iter().filter_map(|a| a.parse().ok()) {
                    self.inner.link.add_address(self.gateway, a);
                }
            } else {
                warn!(gateway = %self.gateway, epoch, "the gateway is not in the consensus");
            }
            self.core.set_topology(topology, rates);
            self.fetcher
                .set_rate(PullRate::from_parameters(&consensus.parameters()));
            self.installed = Some(epoch);
            info!(epoch, "client: consensus installed");
            self.events.push_back(Event::Consensus { epoch });
        }
        // The core: retransmissions, then whatever the send schedule says is due.
        if self.core_due().is_some_and(|at| now >= at) {
            self.core.handle_timeout(now);
            // Keys of the SURBs built below are written before their packets leave.
            self.flush_store();
            if self.installed.is_some() {
                let packets: Vec<Vec<u8>> =
                    std::iter::from_fn(|| self.core.poll_transmit(now, &mut self.rng)).collect();
                // One transaction for the keys of every SURB in them, before they leave.
                self.flush_store();
                for packet in packets {
                    self.record(&packet);
                    self.inner.link.send(self.gateway, packet);
                }
            }
        }
        self.flush_store();
        while let Some(event) = self.core.poll_event() {
            self.events.push_back(match event {
                ClientEvent::Received(message) => Event::Received(message),
                ClientEvent::Delivered(id) => Event::Delivered(id),
                ClientEvent::Failed(id, reason) => Event::Failed(id, reason),
                ClientEvent::Unroutable(id, reason) => Event::Unroutable(id, reason),
            });
        }
        // The mailbox: always one fetch under way (the gateway holds it until packets come),
        // acknowledging what is processed and durable.
        self.fetcher.processed(self.core.mailbox_ack());
        self.fetcher.handle_timeout(now);
        if let Some(mut request) = self.fetcher.poll_request() {
            if let Some((key, signature)) = &self.proof {
                request.client_key.clone_from(key);
                request.client_signature.clone_from(signature);
            }
            self.fetch = Some(self.inner.mailbox.send_request(&self.gateway, request));
        }
    }

    /// When [`Behaviour::drive`] next has work, if nothing else happens first.
    fn next_wake(&self) -> Instant {
        // A wall-clock step is noticed within a second.
        let mut at = Instant::now() + Duration::from_secs(1);
        for t in [
            self.directory.poll_timeout(),
            self.core_due(),
            self.fetcher.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            at = at.min(t);
        }
        at
    }

    /// When the core next has work: its send schedule once packets can be built (a
    /// consensus is installed), only its retransmission timers before that (the schedule's
    /// past-due ticks would otherwise wake the behaviour in a loop).
    fn core_due(&self) -> Option<Instant> {
        if self.installed.is_some() {
            self.core.poll_timeout()
        } else {
            self.core.poll_retransmit_timeout()
        }
    }

    fn on_inner(&mut self, event: InnerEvent) {
        let now_ms = Now::system().unix_ms;
        match event {
            InnerEvent::Link(()) => {}
            InnerEvent::Directory(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => {
                let Some(epoch) = self.requests.remove(&request_id) else {
                    return;
                };
                let offered = match response.response {
                    Some(Response::Consensus(c)) => Some(c),
                    _ => None,
                };
                if let Err(e) = self.directory.fetch_done(now_ms, epoch, offered) {
                    warn!(epoch, %e, "a consensus failed verification");
                }
            }
            InnerEvent::Directory(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                if let Some(epoch) = self.requests.remove(&request_id) {
                    debug!(epoch, %error, "consensus fetch failed");
                    let _ = self.directory.fetch_done(now_ms, epoch, None);
                }
            }
            InnerEvent::Mailbox(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) if self.fetch == Some(request_id) => {
                self.fetch = None;
                let now = Instant::now();
                match self.fetcher.handle_response(now, response) {
                    Ok(items) => {
                        let through = items.iter().map(|i| i.seq).max();
                        for mut item in items {
                            self.core.handle_delivery(now, item.label, &mut item.body);
                        }
                        if let Some(seq) = through {
                            self.core.mailbox_processed(seq);
                        }
                        self.flush_store();
                    }
                    Err(FetchFailure::Refused { code, reason }) => {
                        warn!(gateway = %self.gateway, ?code, %reason, "the gateway refused");
                    }
                    Err(failure) => {
                        debug!(gateway = %self.gateway, ?failure, retry_in = ?self.fetcher.backoff(), "mailbox fetch failed");
                    }
                }
            }
            InnerEvent::Mailbox(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) if self.fetch == Some(request_id) => {
                self.fetch = None;
                debug!(gateway = %self.gateway, %error, retry_in = ?self.fetcher.backoff(), "mailbox fetch failed");
                self.fetcher.handle_failure(Instant::now());
            }
            _ => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Inner>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut found = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(peer) = maybe_peer {
            let configured = if peer == self.gateway {
                &self.gateway_addresses[..]
            } else {
                self.authorities.addresses_of(&peer)
            };
            for a in configured {
                if !found.contains(a) {
                    found.push(a.clone());
                }
            }
        }
        Ok(found)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.waker = Some(cx.waker().clone());
        loop {
            self.drive();
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_inner(event);
                    continue;
                }
                Poll::Ready(other) => {
                    // GenerateEvent was taken by the arm above; the closure never runs.
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            let at = self.next_wake();
            let mut timer = match self.timer.take() {
                Some((t, timer)) if t == at => timer,
                _ => Timer::new(at.saturating_duration_since(Instant::now())),
            };
            if timer.poll_unpin(cx).is_ready() {
                continue;
            }
            self.timer = Some((at, timer));
            return Poll::Pending;
        }
    }
}
