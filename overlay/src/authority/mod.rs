//! The authority's driver: the sans-IO [`Authority`] on a libp2p swarm, the clock and the disk.
//!
//! The swarm carries `/p2pmix/dir/1.0.0` (requests from anyone, of at most 16 KiB: uploads and
//! fetches), `/p2pmix/dir-authority/1.0.0` (votes, reveals, signatures and asks between the
//! pinned authorities, of up to 32 MiB, offered to pinned peers alone: `peers_only`) and
//! identify (so that authorities that dialed us can be dialed back). Each request is handed to
//! the core with where it came from (a pinned authority, or the IP address of the connection:
//! outsiders are limited per source); the core's reachability checks are dialled here
//! (`reach`).
//!
//! State is written by a thread of its own (`writer`), at most once per [`DEBOUNCE`], and the
//! answers and messages that must not go out before the state that accepted them is on disk
//! wait for it (docs/consensus.md, "Restarts"): an accepted descriptor, vote, reveal or
//! signature is answered, and this authority's own vote, reveal and signature (and its relays)
//! are sent, only once durable. Each published consensus is written as `consensus-<epoch>.pb`
//! (the encoded `SignedConsensus`); `listen-addrs` holds the addresses the swarm listens on, and
//! with metrics on (`metrics = "ADDR"`), `metrics-addr` where they are served: `/metrics` has
//! the authority's counters (`metrics`), `/health` says the loop turns and `/ready` that it
//! holds this epoch's consensus.
//!
//! Incoming connections are capped (`ConnectionCaps`): at most `max_connections` held from peers
//! that are neither pinned authorities nor nodes of the newest consensus held, and of those at
//! most `MAX_PER_ADDRESS` from one address and `MAX_PER_PREFIX` from one prefix; handshakes
//! (per address too) and connections per peer are bounded, so that throwaway identities cannot
//! take every open file (and with them the other authorities' connections and the state's
//! writes). Exempt peers pass the cap on connections held, and handshakes from the other
//! authorities' pinned IP addresses pass the total and prefix caps on handshakes (before a
//! handshake no identity is known); an authority pinned by a DNS name, or whose connections
//! come from another address than the pinned one, gets no such pass. The open-files limit is raised at start to fit the caps and a full consensus.
//!
//! When the network parameters ask for health measurement, the authority also runs a
//! [`MeasureDriver`] (`measure.rs`: the measurer on a swarm and identity of its own, kept in
//! `measure-identity`, with a client key of its own in `measure-client.key`) on the consensus in
//! force, and hands what it measured to the core before each vote.

mod measure;
mod metrics;
mod peers_only;
mod reach;
mod writer;

pub use peers_only::PeersOnly;

pub use measure::{MeasureBehaviour, MeasureBehaviourEvent, MeasureDriver};

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p_core::Multiaddr;
use libp2p_identify as identify;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use libp2p_request_response as request_response;
use libp2p_swarm::Swarm;
use libp2p_swarm::{ConnectionId, SwarmEvent};
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, EquivocationKind, Event, Now, Origin, directory_behaviour,
    peer_behaviour,
};
use p2pmix_proto::v1::{
    Accepted, AuthorityState, Consensus, DirectoryRequest, DirectoryResponse,
    directory_request::Request, directory_response::Response,
};
use prost::Message;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::{
    config::AuthorityConfigFile,
    directory::not_held,
    identity::IdentityError,
    runtime::{
        ListenError, SwarmError, build_swarm_with_idle_timeout,
        caps::{Caps, ConnectionCaps},
        files::{FileError, create_dir, write_atomic},
        keep_alive::KeepAlive,
        limits, listen_on_all,
        metrics::{self as metrics_endpoint, MetricsError},
        status::{Readiness, Status},
    },
};
use measure::{Measuring, next_measure_event};
use reach::{ReachDialer, ip_of};
use writer::StateWriter;

/// Where requests on connections without an IP address are counted (one source for all).
const UNKNOWN_ORIGIN: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// How long a connection nothing uses stays open: short, so that holding a slot costs an
/// outsider requests (limited per source) rather than nothing; the links with the other
/// authorities stay open however idle (`KeepAlive`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Incoming connections that may be in their handshake at once. Before the handshake nobody is
/// known, the other authorities included, so these slots are many: a pending connection costs a
/// socket and a few KiB, a stalled handshake is cut after 10 s, and one prefix may hold
/// `MAX_PENDING_PER_PREFIX` (64) of them, so filling them takes 64 prefixes.
const MAX_PENDING_INCOMING: usize = 4096;
/// Connections held with one peer, both ways (two authorities dialling each other at once make
/// two; more is a peer holding slots).
const MAX_PER_PEER: usize = 4;
/// Incoming connections held from one address, and from one prefix (IPv4 /24, IPv6 /48), by
/// peers not exempt: new nodes behind one address and clients behind one NAT fetching the
/// consensus, not one host taking every slot under throwaway identities.
const MAX_PER_ADDRESS: usize = 32;
const MAX_PER_PREFIX: usize = 128;
/// The most nodes a consensus lists (each may hold a connection: they are exempt from the cap).
const MAX_CONSENSUS_NODES: u64 = p2pmix_bootstrap::MAX_NODES as u64;

/// At most one state write per this long; what must be durable waits at most this plus a write.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why an authority stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthorityNodeError {
    /// Reading or writing the data directory failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The state could not be written (the authority stops rather than promise what it may
    /// forget).
    #[error("writing the state: {0}")]
    StateWrite(String),
    /// The writer thread could not start.
    #[error("starting the writer thread: {0}")]
    Thread(std::io::Error),
    /// The swarm could not be built.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The swarm could not listen on an address.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The measurer's identity could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// This authority's key is not in the pinned authorities file.
    #[error("this authority ({0}) is not in the authorities file")]
    NotPinned(PeerId),
}

pub use behaviour::{AuthorityBehaviour, AuthorityBehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p_identify as identify;
    use libp2p_swarm::NetworkBehaviour;
    use p2pmix_bootstrap::{DirectoryBehaviour, PeerBehaviour};

    use super::PeersOnly;
    use crate::runtime::{caps::ConnectionCaps, keep_alive::KeepAlive};

    /// Behaviours of an authority's swarm.
    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct AuthorityBehaviour {
        /// Refuses incoming connections past the caps (first, so that nothing else sees them);
        /// pinned authorities and the consensus's nodes are exempt from the total.
        pub limits: ConnectionCaps,
        /// `/p2pmix/dir/1.0.0`, for anyone.
        pub directory: DirectoryBehaviour,
        /// `/p2pmix/dir-authority/1.0.0`, for the other pinned authorities only.
        pub peers: PeersOnly<PeerBehaviour>,
        /// Learns the listen addresses of peers.
        pub identify: identify::Behaviour,
        /// Keeps the links with the other authorities open (every other connection closes
        /// after `IDLE_TIMEOUT` unused).
        pub keep_alive: KeepAlive,
    }
}

/// Which of the authority's two directory behaviours an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `/p2pmix/dir/1.0.0`: anyone's requests.
    Public,
    /// `/p2pmix/dir-authority/1.0.0`: the other authorities, and the asks this one sent.
    Authorities,
}

/// Something that waits for the state of `generation` to be on disk.
enum Held {
    /// An answer to a request the core accepted.
    Answer {
        generation: u64,
        channel: request_response::ResponseChannel<DirectoryResponse>,
        response: DirectoryResponse,
    },
    /// A message for the other authorities.
    Send {
        generation: u64,
        message: DirectoryRequest,
    },
}

impl Held {
    fn generation(&self) -> u64 {
        match self {
            Held::Answer { generation, .. } | Held::Send { generation, .. } => *generation,
        }
    }
}

/// The running authority: the core, its swarm, and what waits for the disk.
struct Driver {
    authority: Authority,
    swarm: Swarm<AuthorityBehaviour>,
    data_dir: PathBuf,
    /// The other authorities.
    peers: Vec<PeerId>,
    pinned_peers: HashSet<PeerId>,
    writer: StateWriter,
    /// Bumped on every change of the core's state.
    generation: u64,
    /// The newest generation handed to the writer, and when.
    submitted: u64,
    last_submit: Option<Instant>,
    held: VecDeque<Held>,
    /// Remote IP of every open connection (where requests come from).
    remotes: HashMap<ConnectionId, IpAddr>,
    /// Requests for a missed document sent to the other authorities: only their answers are
    /// offered to the core (at most two asks a round, each to every other authority; an id
    /// goes with its answer or its failure).
    asked_documents: HashSet<request_response::OutboundRequestId>,
    dialer: ReachDialer,
    /// The health measurement, when the parameters ask for it.
    measuring: Option<Measuring>,
    /// What `/health` and `/ready` say.
    status: Status,
    /// The epoch of the newest consensus held (what readiness is judged on).
    newest: Option<u64>,
}

/// Runs an authority until `shutdown` resolves.
pub async fn run_authority(
    config: AuthorityConfigFile,
    keypair: Keypair,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AuthorityNodeError> {
    let me = keypair.public().to_peer_id();
    let pinned = config.authorities.pinned();
    if !pinned.contains_peer(&me) {
        return Err(AuthorityNodeError::NotPinned(me));
    }
    create_dir(&config.data_dir)?;
    let status = Status::new(Instant::now());
    // Aborted however this function returns.
    let _metrics_task = match config.metrics {
        Some(addr) => Some(AbortOnDrop(
            metrics_endpoint::start(addr, status.clone(), &config.data_dir).await?,
        )),
        None => None,
    };
    let state_path = config.data_dir.join("state.pb");
    let core_config = AuthorityConfig::new(
        keypair.clone(),
        pinned.clone(),
        config.schedule,
        config.parameters,
    );
    let now = Now::system();
    let authority = match std::fs::read(&state_path) {
        Ok(bytes) => match AuthorityState::decode(&bytes[..]) {
            Ok(state) => {
                info!(epoch = state.epoch, "resuming from saved state");
                Authority::restore(core_config, &state, now)
            }
            Err(e) => {
                warn!(%e, "saved state unreadable, starting fresh");
                Authority::new(core_config, now)
            }
        },
        Err(_) => Authority::new(core_config, now),
    };

    let peers: Vec<PeerId> = config
        .authorities
        .entries
        .iter()
        .map(|e| e.peer_id)
        .filter(|p| *p != me)
        .collect();
    let others: HashSet<PeerId> = peers.iter().copied().collect();
    limits::ensure_open_files(
        u64::from(config.max_connections)
            + MAX_PENDING_INCOMING as u64
            + config.authorities.entries.len() as u64 * MAX_PER_PEER as u64
            + MAX_CONSENSUS_NODES
            + limits::RESERVED_FILES,
        "max_connections",
    );
    let mut swarm =
        build_swarm_with_idle_timeout(keypair.clone(), IDLE_TIMEOUT, |key| AuthorityBehaviour {
            limits: ConnectionCaps::new(Caps {
                pending_incoming: MAX_PENDING_INCOMING,
                established_incoming: config.max_connections as usize,
                per_peer: MAX_PER_PEER,
            })
            .with_per_address(MAX_PER_ADDRESS, MAX_PER_PREFIX),
            directory: directory_behaviour(true, Duration::from_secs(10)),
            peers: PeersOnly::new(peer_behaviour(Duration::from_secs(10)), others.clone()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/p2pmix/id/1.0.0".into(),
                key.public(),
            )),
            keep_alive: KeepAlive::new(others.clone()),
        })?;
    listen_on_all(&mut swarm, &config.listen)?;
    for entry in &config.authorities.entries {
        if entry.peer_id != me {
            for addr in &entry.addresses {
                swarm.add_peer_address(entry.peer_id, addr.clone());
            }
        }
    }
    info!(peer_id = %me, epoch = authority.round_epoch(), "authority started");
    let measuring = Measuring::start(&config, pinned, status.replaced_gauges().clone(), now.mono)?;
    let writer = StateWriter::start(state_path).map_err(AuthorityNodeError::Thread)?;
    let newest = newest_epoch(&authority);
    let limits = &mut swarm.behaviour_mut().limits;
    limits.set_exempt(exempt_peers(
        &others,
        held_consensus(&authority, newest).as_ref(),
    ));
    // Before a handshake nobody is known: the other authorities' pinned addresses are what
    // tells them from a flood of stalled handshakes.
    limits.set_trusted_sources(config.authorities.ip_addresses());
    let mut driver = Driver {
        authority,
        swarm,
        data_dir: config.data_dir.clone(),
        pinned_peers: others,
        peers,
        writer,
        generation: 0,
        submitted: 0,
        last_submit: None,
        held: VecDeque::new(),
        remotes: HashMap::new(),
        asked_documents: HashSet::new(),
        dialer: ReachDialer::default(),
        measuring,
        status,
        newest,
    };
    let result = driver.run(&config, shutdown).await;
    let last = driver.authority.state().encode_to_vec();
    driver.writer.finish(&last)?;
    result
}

impl Driver {
    async fn run(
        &mut self,
        config: &AuthorityConfigFile,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AuthorityNodeError> {
        let mut rng = rand::rng();
        let mut listen_addrs: Vec<Multiaddr> = Vec::new();
        let mut known: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut progress = self.writer.watch();
        let mut export = metrics::ExportTimer::new(Instant::now());
        tokio::pin!(shutdown);
        loop {
            let now = Now::system();
            if let Some(measuring) = self.measuring.as_mut() {
                measuring.turn(&mut self.authority, now);
            }
            self.status.turned(now.mono);
            self.authority.handle_timeout(now, &mut rng);
            self.flush(now)?;
            let epoch = config.schedule.epoch_at(now.unix_ms);
            self.status
                .set_readiness(Readiness::of_authority(epoch, self.newest));
            if export.due(now.mono) {
                let connected = self
                    .peers
                    .iter()
                    .filter(|p| self.swarm.is_connected(p))
                    .count();
                metrics::export(&self.authority, epoch, connected, &self.writer.progress());
            }
            let latest = now.mono + Duration::from_secs(60);
            let mut wake = self
                .authority
                .poll_timeout()
                .map_or(latest, |at| at.min(latest))
                .min(export.deadline());
            if let Some(at) = self.submit_deadline(now.mono) {
                wake = wake.min(at);
            }
            if let Some(at) = self.measuring.as_ref().and_then(Measuring::poll_timeout) {
                wake = wake.min(at);
            }
            tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                event = next_measure_event(&mut self.measuring) => {
                    if let Some(measuring) = self.measuring.as_mut() {
                        measuring.handle_event(event, Instant::now());
                    }
                }
                (peer, addresses) = self.dialer.next_resolved() => {
                    if let Some((peer, outcome)) = self.dialer.dial(&mut self.swarm, peer, addresses) {
                        self.authority.handle_reach_result(Now::system(), &peer, outcome);
                    }
                }
                changed = progress.changed() => {
                    if changed.is_err() {
                        return Err(AuthorityNodeError::StateWrite("the writer thread stopped".into()));
                    }
                }
                _ = redial.tick() => {
                    for peer in &self.peers {
                        if !self.swarm.is_connected(peer) && (known.contains_key(peer) || config.authorities.entries.iter().any(|e| e.peer_id == *peer && !e.addresses.is_empty())) {
                            let _ = self.swarm.dial(*peer);
                        }
                    }
                }
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        info!(%address, "listening");
                        listen_addrs.push(address);
                        let text: String = listen_addrs.iter().map(|a| format!("{a}\n")).collect();
                        write_atomic(&config.data_dir.join("listen-addrs"), text.as_bytes())?;
                    }
                    // Only the other authorities' addresses are kept: a node's would be memory
                    // anyone could fill.
                    SwarmEvent::Behaviour(AuthorityBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                        if self.pinned_peers.contains(&peer_id) =>
                    {
                        for addr in &info.listen_addrs {
                            self.swarm.add_peer_address(peer_id, addr.clone());
                        }
                        known.insert(peer_id, info.listen_addrs);
                    }
                    SwarmEvent::Behaviour(AuthorityBehaviourEvent::Directory(event)) => {
                        self.on_directory_event(event, Link::Public)?;
                    }
                    SwarmEvent::Behaviour(AuthorityBehaviourEvent::Peers(event)) => {
                        self.on_directory_event(event, Link::Authorities)?;
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                        debug!(%peer_id, "connected");
                        if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                            self.remotes.insert(connection_id, ip);
                        }
                        if let Some((peer, outcome)) = self.dialer.established(&mut self.swarm, connection_id, peer_id, &endpoint) {
                            debug!(%peer, ?outcome, "reachability check");
                            self.authority.handle_reach_result(Now::system(), &peer, outcome);
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                        if let Some((peer, outcome)) = self.dialer.failed(connection_id) {
                            debug!(%peer, %error, "reachability check: not reached");
                            self.authority.handle_reach_result(Now::system(), &peer, outcome);
                        }
                    }
                    SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                        self.remotes.remove(&connection_id);
                        debug!(%peer_id, "disconnected");
                    }
                    _ => {}
                }
            }
            let progress = self.writer.progress();
            if let Some(e) = progress.failed {
                return Err(AuthorityNodeError::StateWrite(e));
            }
            self.release(progress.durable);
        }
    }

    /// One event of either directory behaviour: a request from anyone (or an authority) is
    /// answered; an answer to an ask of this authority's (sent on [`Link::Authorities`]) is
    /// offered to the core.
    fn on_directory_event(
        &mut self,
        event: request_response::Event<DirectoryRequest, DirectoryResponse>,
        link: Link,
    ) -> Result<(), AuthorityNodeError> {
        // Each behaviour numbers its requests from one: ids are this link's only.
        let asked = link == Link::Authorities;
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => {
                // Read after the wait: the request is judged at the time it arrived.
                let now = Now::system();
                let origin = if self.pinned_peers.contains(&peer) {
                    Origin::Authority
                } else {
                    // A connection whose address is not an IP address (one this authority
                    // dialled by name) shares one limit with every other such connection.
                    Origin::Peer(
                        self.remotes
                            .get(&connection_id)
                            .copied()
                            .unwrap_or(UNKNOWN_ORIGIN),
                    )
                };
                self.answer(now, peer, origin, request, channel);
                self.flush(now)?;
            }
            // Answers to what this authority sent the others: a document it asked for because
            // it missed it is offered to the core; the rest needs nothing.
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } if asked && self.asked_documents.remove(&request_id) => {
                if let Some(Response::Consensus(signed)) = response.response {
                    let now = Now::system();
                    match self.authority.handle_consensus(now, signed) {
                        Ok(outcome) => debug!(%peer, ?outcome, "missed document offered"),
                        Err(e) => debug!(%peer, %e, "document from an authority not adopted"),
                    }
                    self.flush(now)?;
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if asked {
                    self.asked_documents.remove(&request_id);
                }
                if asked
                    && matches!(
                        error,
                        request_response::OutboundFailure::UnsupportedProtocols
                    )
                {
                    // Votes go on the authorities' own protocol since it came in; the pinned
                    // authorities upgrade together (docs/consensus.md).
                    warn!(%peer, "a pinned authority does not speak /p2pmix/dir-authority/1.0.0");
                } else {
                    debug!(%peer, %error, "request to peer failed");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers one directory request: documents and evidence at once, refusals at once, what the
    /// core accepted once the state holding it is durable.
    fn answer(
        &mut self,
        now: Now,
        peer: PeerId,
        origin: Origin,
        request: DirectoryRequest,
        channel: request_response::ResponseChannel<DirectoryResponse>,
    ) {
        let response = match request.request {
            Some(Request::GetConsensus(get)) => {
                let epoch = (get.epoch != 0).then_some(get.epoch);
                let held = self.authority.consensus(epoch);
                metrics::count_consensus_request(held.is_some());
                match held {
                    Some(c) => Response::Consensus(c.clone()),
                    None => not_held(),
                }
            }
            Some(Request::GetEvidence(get)) => Response::Evidence(
                self.authority
                    .evidence((get.epoch != 0).then_some(get.epoch)),
            ),
            _ => {
                let kind = metrics::request_kind(&request);
                let round = self.authority.round_epoch();
                let result = self.authority.handle_request_from(now, origin, request);
                metrics::count_request(kind, &result);
                // Even a refusal may have changed the state (a proof of equivocation kept), but
                // not one past the rate limit: a flood of those must not make the driver write
                // the whole state ten times a second. A request may also have started the
                // next round.
                let unchanged = matches!(&result, Err(e) if e.left_state_alone())
                    && self.authority.round_epoch() == round;
                if !unchanged {
                    self.generation += 1;
                }
                match result {
                    Ok(()) => {
                        self.held.push_back(Held::Answer {
                            generation: self.generation,
                            channel,
                            response: DirectoryResponse {
                                response: Some(Response::Accepted(Accepted {})),
                            },
                        });
                        return;
                    }
                    Err(e) => {
                        debug!(%peer, reason = e.reason(), "refused: {e}");
                        Response::Refused(e.to_refused())
                    }
                }
            }
        };
        // A response channel carries its own way back: one behaviour answers for both.
        let _ = self.swarm.behaviour_mut().directory.send_response(
            channel,
            DirectoryResponse {
                response: Some(response),
            },
        );
    }

    /// Takes what the core wants sent (held for the disk), reports its events, starts its
    /// reachability checks, and hands the state to the writer when due.
    fn flush(&mut self, now: Now) -> Result<(), AuthorityNodeError> {
        let mut changed = false;
        while let Some(message) = self.authority.poll_transmit() {
            changed = true;
            self.held.push_back(Held::Send {
                generation: self.generation + 1,
                message,
            });
        }
        while let Some(event) = self.authority.poll_event() {
            changed = true;
            self.report(event);
        }
        while let Some(check) = self.authority.poll_reach_check() {
            if let Some((peer, outcome)) = self.dialer.start(&mut self.swarm, check) {
                self.authority.handle_reach_result(now, &peer, outcome);
            }
        }
        if changed {
            self.generation += 1;
        }
        if self
            .submit_deadline(now.mono)
            .is_some_and(|at| at <= now.mono)
        {
            self.submit(now.mono);
        }
        self.release(self.writer.progress().durable);
        Ok(())
    }

    /// The consensus of `epoch` is held: if it is the newest, its exclusions are exported and
    /// its nodes are the ones exempt from the connection cap.
    fn held_newer(&mut self, epoch: u64) {
        if self.newest >= Some(epoch) {
            return;
        }
        self.newest = Some(epoch);
        if let Some(c) = held_consensus(&self.authority, Some(epoch)) {
            metrics::set_excluded(&c);
            self.swarm
                .behaviour_mut()
                .limits
                .set_exempt(exempt_peers(&self.pinned_peers, Some(&c)));
        }
    }

    fn report(&mut self, event: Event) {
        metrics::count_event(&event);
        match event {
            Event::Published {
                epoch,
                digest,
                signatures,
            } => {
                info!(epoch, signatures, digest = %hex::encode(&digest[..8]), "consensus published");
                self.held_newer(epoch);
                self.save_consensus(epoch);
            }
            Event::SignaturesAdded { epoch, signatures } => {
                debug!(
                    epoch,
                    signatures, "more signatures on the published consensus"
                );
                self.save_consensus(epoch);
            }
            Event::Adopted {
                epoch,
                digest,
                signatures,
            } => {
                info!(epoch, signatures, digest = %hex::encode(&digest[..8]), "missed consensus fetched from the other authorities and adopted");
                self.held_newer(epoch);
                self.save_consensus(epoch);
            }
            Event::Failed { epoch, reason } => {
                warn!(epoch, "no consensus for epoch {epoch}: {reason}");
            }
            Event::Equivocation {
                epoch,
                authority,
                kind,
            } => {
                let who = libp2p_identity::PublicKey::try_decode_protobuf(&authority)
                    .map(|k| k.to_peer_id().to_string())
                    .unwrap_or_else(|_| hex::encode(&authority));
                let what = match kind {
                    EquivocationKind::Vote => "two different votes",
                    EquivocationKind::Signature => "signatures over two different documents",
                    _ => "something twice",
                };
                error!(epoch, authority = %who, "ALARM: authority equivocation: {what}");
            }
            other => debug!(?other, "authority event"),
        }
    }

    fn save_consensus(&mut self, epoch: u64) {
        if let Some(signed) = self.authority.consensus(Some(epoch)) {
            self.writer.write_file(
                self.data_dir.join(format!("consensus-{epoch}.pb")),
                signed.encode_to_vec(),
            );
        }
    }

    /// When the next state write may be handed over, if one is wanted.
    /// (None while the thread has not started the last one: its progress wakes the loop.)
    fn submit_deadline(&self, now: Instant) -> Option<Instant> {
        (self.generation > self.submitted && !self.writer.has_waiting_snapshot())
            .then(|| self.last_submit.map_or(now, |t| (t + DEBOUNCE).max(now)))
    }

    fn submit(&mut self, now: Instant) {
        self.writer
            .submit(self.generation, self.authority.state().encode_to_vec());
        self.submitted = self.generation;
        self.last_submit = Some(now);
    }

    /// Sends what waited for the state of `durable` or older.
    fn release(&mut self, durable: u64) {
        while self.held.front().is_some_and(|h| h.generation() <= durable) {
            match self.held.pop_front() {
                Some(Held::Answer {
                    channel, response, ..
                }) => {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .directory
                        .send_response(channel, response);
                }
                Some(Held::Send { message, .. }) => {
                    let asks = matches!(message.request, Some(Request::GetConsensus(_)));
                    for peer in &self.peers {
                        let id = self
                            .swarm
                            .behaviour_mut()
                            .peers
                            .inner_mut()
                            .send_request(peer, message.clone());
                        if asks {
                            self.asked_documents.insert(id);
                        }
                    }
                }
                None => break,
            }
        }
    }
}

/// The consensus `authority` holds for `epoch` (the newest for `None`), decoded.
fn held_consensus(authority: &Authority, epoch: Option<u64>) -> Option<Consensus> {
    let signed = authority.consensus(epoch)?;
    Consensus::decode(&signed.consensus[..]).ok()
}

/// Who the connection cap does not count: the other pinned authorities, and the nodes of
/// `consensus` (what this authority admitted itself, so no outsider mints them).
fn exempt_peers(pinned: &HashSet<PeerId>, consensus: Option<&Consensus>) -> HashSet<PeerId> {
    let nodes = consensus
        .into_iter()
        .flat_map(|c| &c.nodes)
        .filter_map(p2pmix_bootstrap::peer_id);
    pinned.iter().copied().chain(nodes).collect()
}

/// The epoch of the newest consensus `authority` holds (a restored state may hold one), its
/// exclusions exported.
fn newest_epoch(authority: &Authority) -> Option<u64> {
    let c = held_consensus(authority, None)?;
    metrics::set_excluded(&c);
    Some(c.epoch)
}

/// Aborts the metrics task however the authority's loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
