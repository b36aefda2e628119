//! The mix node: a swarm with Kademlia discovery, the directory client and the Sphinx relay.
//!
//! Kademlia (`/p2pmix/kad/1.0.0`, server mode) finds peers and their addresses, starting from the
//! bootstrap list; identify feeds each peer's listen addresses into it. Only the verified
//! consensus decides who may carry traffic: it sets the relay's topology (node id -> peer) and
//! keys for each epoch. The mix behaviour does the Sphinx work on its own threads.
//!
//! This file is the node's loop, which only dispatches: it reads the clocks once per turn
//! ([`Now`]), runs the machines whose timer is due, waits for the earliest next timer or a swarm
//! event, and hands each event to the machine it is for. The machines, one a file:
//! - [`bootstrap`]: dials the bootstrap list with backoff until each address answered once;
//! - [`keys`]: the epoch keys on disk and their rotation in the relay's key ring;
//! - [`replay`]: each key's replay filter on disk (journal and snapshots), read back at a restart;
//! - the [`DirectoryClient`] (in [`crate::directory`]): descriptor uploads, consensus fetches;
//!   `directory` turns its actions into requests and serves held documents to peers;
//! - [`install`]: what a verified consensus means for this node (a pure function);
//! - [`cover`]: the node's own loop cover;
//! - [`gateway`]: a gateway's mailboxes ([`crate::mailbox`]) served over `/p2pmix/mailbox/2.0.0`;
//! - [`gauges`]: the metrics, exported on a timer.
//!
//! Files in the data directory: `identity.key`, `keys/sphinx-<epoch>.key`,
//! `replay/<epoch>/{journal,snapshot}-<generation>`, `consensus-<epoch>.pb`
//! (verified documents, reused at restart), `listen-addrs` (full multiaddrs with `/p2p/`, usable
//! as bootstrap addresses), on gateways `mailbox.redb` and, with metrics on, `metrics-addr`.

pub mod bootstrap;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod cover;
mod directory;
pub mod gateway;
pub mod gauges;
pub mod install;
pub mod keys;
pub mod replay;
mod start;
mod swarm;

pub use crate::runtime::caps::{CapExceeded, Caps, ConnectionCaps};
pub use start::{NodeError, run_node};

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identify as identify;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use libp2p_kad as kad;
use libp2p_ping as ping;
use libp2p_request_response as request_response;
use libp2p_swarm::Swarm;
use libp2p_swarm::{SwarmEvent, dial_opts::DialOpts};
use metrics::counter;
use p2pmix_bootstrap::{DIRECTORY_PROTOCOL, peer_id};
use p2pmix_mix::{Relay, behaviour::Event as MixEvent};
use p2pmix_proto::v1::{RefusalCode, Role};
use tracing::{debug, info, warn};

pub use self::swarm::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, NodeBehaviour, NodeBehaviourEvent};
use self::{
    bootstrap::BootstrapDialer,
    cover::LoopCover,
    gateway::Gateway,
    gauges::{ConsensusGauges, Gauges, ReplayFilterGauge, Snapshot},
    keys::KeyRotation,
};
use crate::{
    config::NodeConfig,
    directory::{Action, DirectoryClient},
    mailbox::{refusal, registered_client},
    runtime::{Now, files::write_atomic, status::Status},
};

/// Longest the loop sleeps without looking at the clock (a wall-clock step is noticed within it).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A running node: its swarm and its machines.
struct Node {
    config: NodeConfig,
    keypair: Keypair,
    me: PeerId,
    swarm: Swarm<NodeBehaviour>,
    relay: Arc<Relay<PeerId>>,
    keys: KeyRotation,
    directory: DirectoryClient,
    /// Directory requests under way, by request id.
    requests: HashMap<request_response::OutboundRequestId, Action>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: BootstrapDialer,
    /// Epochs whose topology is installed.
    installed: HashSet<u64>,
    /// Per installed epoch: its last-layer mixes (a gateway takes deliveries only from them).
    final_senders: HashMap<u64, HashSet<PeerId>>,
    rng: rand::rngs::ThreadRng,
    /// Gateways: the mailboxes of registered clients.
    gateway: Option<Gateway>,
    cover: LoopCover,
    gauges: Gauges,
    /// Misbehaviour to start (tests and drills only).
    #[cfg(feature = "chaos")]
    chaos: Option<chaos::ChaosPlan>,
    /// What `/health` and `/ready` answer.
    status: Status,
}

impl Node {
    /// The loop: run due timers, wait for the next timer or event, read the clocks, dispatch.
    async fn run(
        &mut self,
        mut now: Now,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        loop {
            self.status.turned(now.mono);
            self.handle_timeouts(now)?;
            let wake = self
                .poll_timeout()
                .map_or(now.mono + MAX_SLEEP, |t| t.min(now.mono + MAX_SLEEP));
            let gateway = &mut self.gateway;
            let spooled = async {
                match gateway {
                    Some(g) => g.next_report().await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                _ = tokio::time::sleep_until(wake.into()) => None,
                event = self.swarm.select_next_some() => Some(Ok(event)),
                Some(report) = spooled => Some(Err(report)),
            };
            now = Now::system();
            match event {
                Some(Ok(event)) => self.handle_event(now, event)?,
                Some(Err(report)) => {
                    if let Some(g) = &mut self.gateway {
                        g.handle_report(report, &mut self.swarm.behaviour_mut().mailbox);
                    }
                }
                None => {}
            }
        }
    }

    /// The earliest timer of any machine.
    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.directory.poll_timeout(),
            self.keys.poll_timeout(),
            self.bootstrap.poll_timeout(),
            self.cover.poll_timeout(),
            self.gauges.poll_timeout(),
            self.gateway
                .as_ref()
                .and_then(|g| g.server().poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every machine whose timer is due at `now`.
    fn handle_timeouts(&mut self, now: Now) -> Result<(), NodeError> {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now.mono);
        #[cfg(feature = "chaos")]
        if let Some(plan) = self.chaos.take_if(|p| now.unix_ms >= p.from_unix_ms) {
            warn!(?plan, "chaos: misbehaving from now on");
            self.swarm.behaviour_mut().mix.set_chaos(plan.chaos);
        }
        // Machines that follow the wall clock say themselves whether they are due: their
        // instants are mapped from the last reading, and a wall-clock step would make them late.
        if self.keys.is_due(now) {
            let rotated = self
                .relay
                .with_keys(|ring| self.keys.handle_timeout(now, ring))?;
            if let Some(epoch) = rotated.advanced_to {
                info!(epoch, "new epoch");
            }
            if !rotated.restored.is_empty() {
                info!(epochs = ?rotated.restored, "epoch keys taken back with their replay filters");
            }
            for (epoch, error) in rotated.lost {
                warn!(
                    epoch,
                    %error,
                    "epoch key retired: its replay filter did not survive, and it may have \
                     unwrapped packets; relaying resumes with the next key"
                );
            }
            for key in rotated.unusable {
                warn!(epoch = key.epoch, error = %key.error, "epoch key unusable");
            }
        }
        if self.directory.is_due(now) {
            self.directory.handle_timeout(now);
        }
        self.send_directory_requests(now);
        if due(self.bootstrap.poll_timeout()) {
            self.bootstrap.handle_timeout(now.mono);
            self.dial_bootstrap(now);
        }
        if due(self.cover.poll_timeout()) {
            self.send_loop_cover(now);
        }
        if let Some(gateway) = &mut self.gateway
            && due(gateway.server().poll_timeout())
        {
            gateway.handle_timeout(now, &mut self.swarm.behaviour_mut().mailbox);
        }
        if self.gauges.handle_timeout(now.mono) {
            let snapshot = self.snapshot(now);
            self.gauges.export(&snapshot);
            self.status.set_readiness(snapshot.readiness());
        }
        Ok(())
    }

    fn dial_bootstrap(&mut self, now: Now) {
        while let Some((index, address)) = self.bootstrap.poll_dial() {
            let opts = DialOpts::unknown_peer_id().address(address.clone()).build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.bootstrap.dialing(index, id),
                Err(e) => {
                    warn!(%address, %e, "bootstrap peer: cannot dial");
                    self.bootstrap.dial_failed(index, now.mono);
                }
            }
        }
    }

    /// Keeps the loop stream on the consensus in force, and sends what is due.
    fn send_loop_cover(&mut self, now: Now) {
        self.cover.follow(self.directory.in_force(now.unix_ms));
        self.cover.handle_timeout(now.mono, &mut self.rng);
        if let Some(loop_packet) = self.cover.poll_transmit() {
            self.swarm
                .behaviour_mut()
                .mix
                .send(loop_packet.to, loop_packet.packet);
        }
    }

    fn snapshot(&mut self, now: Now) -> Snapshot {
        let kad_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let me = self.me;
        let epoch = self.config.schedule.epoch_at(now.unix_ms);
        Snapshot {
            epoch,
            connected_peers: self.swarm.connected_peers().count(),
            kad_peers,
            consensus: self.directory.in_force(now.unix_ms).map(|c| {
                let entry = c.nodes().iter().find(|n| peer_id(n) == Some(me));
                ConsensusGauges {
                    epoch: c.epoch(),
                    age_seconds: now.unix_ms.saturating_sub(c.consensus().valid_after_ms) as f64
                        / 1e3,
                    admitted: entry.is_some(),
                    layer: entry
                        .filter(|n| n.role == Role::Mix as i32)
                        .map(|n| n.layer),
                }
            }),
            has_epoch_key: self.relay.read_keys(|ring| ring.for_epoch(epoch).is_some()),
            cover: self.cover.stats(),
            mailbox: self.gateway.as_ref().map(Gateway::snapshot),
            replay: self.relay.read_keys(|ring| {
                ring.keys()
                    .map(|k| {
                        let cache = k.replay_cache();
                        ReplayFilterGauge {
                            epoch: k.epoch(),
                            fill_ratio: cache.fill_ratio(),
                            bytes: cache.memory_bytes(),
                            tags: cache.len(),
                        }
                    })
                    .collect()
            }),
            replay_memory: self.relay.read_keys(|ring| {
                let budget = ring.replay_budget();
                (budget.used(), budget.limit())
            }),
            replay_backlog: (
                self.relay
                    .read_keys(|ring| ring.replay_log().map_or(0, |l| l.pending())),
                self.swarm.behaviour().mix.awaiting_journal(),
            ),
        }
    }

    fn handle_event(
        &mut self,
        now: Now,
        event: SwarmEvent<NodeBehaviourEvent>,
    ) -> Result<(), NodeError> {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.push(address);
                let text: String = self
                    .listen_addrs
                    .iter()
                    .map(|a| format!("{}\n", a.clone().with(Protocol::P2p(self.me))))
                    .collect();
                write_atomic(&self.config.data_dir.join("listen-addrs"), text.as_bytes())?;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                debug!(%peer_id, "connected");
                if let Some(gateway) = &mut self.gateway {
                    gateway.connected(peer_id, endpoint.get_remote_address());
                }
                if let Some(address) = self.bootstrap.handle_connected(connection_id) {
                    info!(%address, %peer_id, "reached bootstrap peer");
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    kad.add_address(&peer_id, endpoint.get_remote_address().clone());
                    if let Err(e) = kad.bootstrap() {
                        debug!(%e, "kademlia bootstrap");
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(u) = self.bootstrap.handle_dial_failure(connection_id, now.mono) {
                    warn!(
                        address = %u.address,
                        retry_in = ?u.retry_in,
                        "bootstrap peer unreachable: {error}"
                    );
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.directory.remove_peer(&peer_id);
                if let Some(gateway) = &mut self.gateway {
                    gateway.disconnected(&peer_id);
                }
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour_event(now, event),
            _ => {}
        }
        Ok(())
    }

    fn handle_behaviour_event(&mut self, now: Now, event: NodeBehaviourEvent) {
        match event {
            NodeBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let behaviour = self.swarm.behaviour_mut();
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in &info.listen_addrs {
                        behaviour.kad.add_address(&peer_id, addr.clone());
                    }
                }
                for addr in &info.listen_addrs {
                    behaviour.mix.add_address(peer_id, addr.clone());
                }
                if info.protocols.contains(&DIRECTORY_PROTOCOL) {
                    self.directory.add_peer(peer_id);
                }
            }
            NodeBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(Ok(ok)),
                ..
            }) if ok.num_remaining == 0 => debug!("kademlia bootstrap done"),
            NodeBehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                debug!(%peer, "kademlia: routing table updated");
            }
            NodeBehaviourEvent::Directory(event) => self.handle_directory_event(now, event),
            NodeBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
            }) if !matches!(error, ping::Failure::Unsupported) => {
                // A neighbour that stopped answering would otherwise hold its mix link (and
                // the frames queued on it) until TCP gives up.
                debug!(%peer, %error, "ping failed, closing the connection");
                self.swarm.close_connection(connection);
            }
            NodeBehaviourEvent::Mix(MixEvent::Delivered {
                client,
                label,
                body,
            }) => {
                if self.cover.is_loop(&client) {
                    return;
                }
                match &mut self.gateway {
                    Some(gateway) => gateway.handle_delivery(
                        now,
                        &client,
                        label,
                        &body,
                        &mut self.swarm.behaviour_mut().mailbox,
                    ),
                    None => {
                        counter!("p2pmix_mailbox_refused_total", "reason" => "not_gateway")
                            .increment(1);
                    }
                }
            }
            NodeBehaviourEvent::Mailbox(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => {
                if let Some(gateway) = &mut self.gateway {
                    let mailbox = &mut self.swarm.behaviour_mut().mailbox;
                    match registered_client(&self.me, &peer, &request) {
                        Ok(client) => {
                            gateway.handle_fetch(now, &peer, client, request, channel, mailbox)
                        }
                        Err(e) => {
                            debug!(%peer, %e, "mailbox fetch refused");
                            let _ = mailbox.send_response(
                                channel,
                                refusal(RefusalCode::BadSignature, &e.to_string()),
                            );
                        }
                    }
                }
            }
            NodeBehaviourEvent::Mix(MixEvent::PeerBanned(peer)) => {
                warn!(%peer, "cut off a peer for invalid traffic");
            }
            _ => {}
        }
    }
}
