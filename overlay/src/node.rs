//! The mix node: a swarm with Kademlia discovery, the directory client and the Sphinx relay.
//!
//! Kademlia (`/p2pmix/kad/1.0.0`, server mode) finds peers and their addresses, starting from the
//! bootstrap list; identify feeds each peer's listen addresses into it. Only the verified
//! consensus decides who may carry traffic: it sets the relay's topology (node id -> peer) and
//! keys for each epoch. The [`DirectoryClient`] decides when to upload this node's descriptor and
//! fetch the next consensus; the node serves the documents it holds to anyone who asks. The mix
//! behaviour does the Sphinx work on its own threads.
//!
//! A gateway also keeps mailboxes ([`MailboxStore`]): packets the network delivers for its
//! registered clients wait there, on disk, until the client fetches and acknowledges them over
//! `/p2pmix/mailbox/1.0.0` (a fetch waits up to [`MAX_WAIT`] for something to arrive). Every
//! admitted node sends its own loop cover (a Poisson stream at the consensus's mix rate) through
//! one mix per layer and back to itself, and counts what returns.
//!
//! Files in the data directory: `identity.key`, `keys/sphinx-<epoch>.key`, `consensus-<epoch>.pb`
//! (verified documents, reused at restart), `listen-addrs` (full multiaddrs with `/p2p/`, usable
//! as bootstrap addresses), on gateways `mailbox/` and, with metrics on, `metrics-addr`.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    multiaddr::Protocol,
    ping, request_response,
    swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts},
};
use metrics::{counter, gauge};
use p2pmix_bootstrap::{
    DIRECTORY_PROTOCOL, PROTOCOL_VERSION, default_parameters, directory_behaviour, peer_id,
    sign_descriptor,
};
use p2pmix_mix::{
    ClientId, Destination, Geometry, KeyId, KeyRing, Label, NodeId, Relay, RelayConfig,
    ReplayConfig,
    behaviour::{Behaviour as MixBehaviour, Config as MixConfig, Event as MixEvent},
    build_packet, sample_exponential,
};
use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, EpochKey, GetConsensus, MailboxBatch, MailboxItem,
    MailboxRequest, MailboxResponse, NetworkParameters, NodeDescriptor, RefusalCode, Refused, Role,
    SignedConsensus, directory_request::Request, directory_response::Response,
    mailbox_response::Response as MailboxAnswer,
};
use prost::Message;
use rand::RngExt;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::{
    authority_node::{build_swarm, unix_ms},
    client::{RoutePolicy, Topology, choose_loop, client_id},
    config::{NodeConfig, NodeRole},
    directory_client::{Action, DirectoryClient, UploadOutcome},
    epoch_keys::{EpochKeyError, EpochKeyStore},
    identity::{IDENTITY_FILE, IdentityError, load_or_create_identity},
    mailbox::{
        MAX_BATCH, MAX_WAIT, MailboxBehaviour, MailboxConfig, MailboxStore, mailbox_behaviour,
    },
    metrics_endpoint::{self, MetricsError},
};

/// The Kademlia protocol of p2pmix networks (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pmix/kad/1.0.0");
/// The identify protocol version p2pmix peers announce.
pub const IDENTIFY_PROTOCOL: &str = "/p2pmix/id/1.0.0";

/// Why a node stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Reading or writing the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The identity key could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// An epoch key could not be read or written.
    #[error(transparent)]
    Keys(#[from] EpochKeyError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The swarm could not be built or could not listen.
    #[error("network: {0}")]
    Network(String),
}

pub use behaviour::{NodeBehaviour, NodeBehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p::{identify, kad, ping, swarm::NetworkBehaviour};
    use p2pmix_bootstrap::DirectoryBehaviour;
    use p2pmix_mix::behaviour::Behaviour as MixBehaviour;

    /// Behaviours of a node's swarm.
    #[derive(NetworkBehaviour)]
    pub struct NodeBehaviour {
        /// `/p2pmix/sphinx/1.0.0`: the packets.
        pub mix: MixBehaviour,
        /// `/p2pmix/kad/1.0.0`: peers and their addresses.
        pub kad: kad::Behaviour<kad::store::MemoryStore>,
        /// Listen addresses and protocols of peers.
        pub identify: identify::Behaviour,
        /// Liveness of connections.
        pub ping: ping::Behaviour,
        /// `/p2pmix/dir/1.0.0`: descriptors up, consensus documents down and served.
        pub directory: DirectoryBehaviour,
        /// `/p2pmix/mailbox/1.0.0`: clients fetch what arrived for them (gateways serve it).
        pub mailbox: super::MailboxBehaviour,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// How long the previous epoch's key keeps working after a boundary: a whole epoch. Packets built
/// just before the boundary are still in flight, and when the next consensus fails clients keep
/// using the previous one (valid one more epoch) with its keys.
fn key_grace(period_ms: u64) -> Duration {
    Duration::from_millis(period_ms.max(1_000))
}

/// The rate one client may send at: its three Poisson streams (real-or-drop, loop, drop) with
/// four times headroom, and a burst of two seconds of it (at least 100 packets).
fn client_rate(p: &NetworkParameters) -> (f64, f64) {
    let per_second = |interval_us: u64| 1e6 / (interval_us.max(1) as f64);
    let rate = 4.0
        * (per_second(p.client_send_interval_us)
            + per_second(p.client_loop_interval_us)
            + per_second(p.client_drop_interval_us));
    (rate, (2.0 * rate).max(100.0))
}

/// Retries of one bootstrap address.
#[derive(Debug)]
struct BootstrapPeer {
    address: Multiaddr,
    next_attempt: Instant,
    backoff: Duration,
    dialing: Option<ConnectionId>,
    reached: bool,
}

const MAX_BOOTSTRAP_BACKOFF: Duration = Duration::from_secs(60);

/// A client's fetch held open until a packet arrives for it or its wait is over.
struct ParkedFetch {
    channel: request_response::ResponseChannel<MailboxResponse>,
    ack_through: u64,
    max: usize,
    until: Instant,
}

/// How often expired mailbox packets are dropped.
const MAILBOX_EXPIRY_INTERVAL: Duration = Duration::from_secs(10);

/// A running node's state around its swarm.
struct Node {
    config: NodeConfig,
    keypair: Keypair,
    me: PeerId,
    swarm: Swarm<NodeBehaviour>,
    relay: Arc<Relay<PeerId>>,
    keys: EpochKeyStore,
    directory: DirectoryClient,
    requests: HashMap<request_response::OutboundRequestId, Action>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<BootstrapPeer>,
    /// Epochs whose topology is installed.
    applied: HashSet<u64>,
    rng: rand::rngs::ThreadRng,
    /// Gateways: the mailboxes of registered clients.
    mailboxes: Option<MailboxStore>,
    /// Fetches waiting for packets, one per client.
    parked: HashMap<ClientId, ParkedFetch>,
    next_expiry: Instant,
    /// The client id this node's own loop cover is addressed to.
    loop_id: ClientId,
    /// The topology loop cover is routed through, and when the next loop packet leaves.
    cover_topology: Option<Topology>,
    next_loop: Instant,
}

/// Runs a node until `shutdown` resolves.
pub async fn run_node(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(&config.data_dir))?;
    let keypair = load_or_create_identity(&config.data_dir.join(IDENTITY_FILE))?;
    let me = keypair.public().to_peer_id();

    // The recorder goes in before the mix behaviour takes its metric handles.
    let mut metrics_task = None;
    if let Some(addr) = config.metrics {
        let handle = metrics_endpoint::install_recorder()?;
        let (bound, task) = metrics_endpoint::serve(addr, handle).await?;
        write_atomic(
            &config.data_dir.join("metrics-addr"),
            format!("{bound}\n").as_bytes(),
        )?;
        info!(%bound, "metrics at http://{bound}/metrics");
        metrics_task = Some(task);
    }

    let now = unix_ms();
    let epoch = config.schedule.epoch_at(now);
    let (keys, retired) = EpochKeyStore::open(&config.data_dir, epoch)?;
    if !retired.is_empty() {
        info!(
            ?retired,
            "retired the keys of epochs that had begun (their replay caches did not survive the \
             restart); relaying resumes with the next epoch's key"
        );
    }
    let defaults = default_parameters();
    let relay = Arc::new(Relay::new(
        Geometry::DEFAULT,
        RelayConfig {
            max_delay: Duration::from_micros(defaults.max_delay_us),
        },
        KeyRing::new(
            epoch,
            key_grace(config.schedule.period_ms()),
            ReplayConfig::default(),
        ),
    ));
    let (rate, burst) = client_rate(&defaults);
    let mix_config = MixConfig {
        client_rate: rate,
        client_burst: burst,
        ..MixConfig::default()
    };
    let mut swarm = build_swarm(keypair.clone(), |key| {
        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_periodic_bootstrap_interval(Some(Duration::from_secs(60)));
        // The DHT finds peers and addresses only; p2pmix stores no records in it, so records and
        // provider announcements from others are handed to us (and dropped) instead of filling
        // the store.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(me, MemoryStore::new(me), kad_config);
        // On loopback or behind NAT no external address is ever confirmed, so kad would stay a
        // client; nodes are servers by definition.
        kad.set_mode(Some(kad::Mode::Server));
        NodeBehaviour {
            mix: MixBehaviour::new(relay.clone(), mix_config),
            kad,
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("p2pmix/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            directory: directory_behaviour(true, Duration::from_secs(10)),
            mailbox: mailbox_behaviour(config.role == NodeRole::Gateway),
        }
    })
    .map_err(|e| NodeError::Network(e.to_string()))?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Network(format!("listen on {addr}: {e}")))?;
    }
    for entry in &config.authorities.entries {
        for addr in &entry.addresses {
            swarm.add_peer_address(entry.peer_id, addr.clone());
        }
    }
    let directory = DirectoryClient::new(
        config.schedule,
        config.authorities.pinned(),
        config.authorities.peer_ids(),
    );
    let bootstrap = config
        .bootstrap
        .iter()
        .map(|address| BootstrapPeer {
            address: address.clone(),
            next_attempt: Instant::now(),
            backoff: Duration::from_secs(1),
            dialing: None,
            reached: false,
        })
        .collect();
    let mailboxes = match config.role {
        NodeRole::Gateway => {
            let dir = config.data_dir.join("mailbox");
            let (store, held) =
                MailboxStore::open(Some(dir.clone()), MailboxConfig::default(), now)
                    .map_err(io_error(&dir))?;
            info!(clients = store.clients(), held, "mailboxes opened");
            Some(store)
        }
        NodeRole::Mix => None,
    };
    info!(peer_id = %me, role = ?config.role, epoch, "node started");
    let mut node = Node {
        config,
        keypair,
        me,
        swarm,
        relay,
        keys,
        directory,
        requests: HashMap::new(),
        listen_addrs: Vec::new(),
        bootstrap,
        applied: HashSet::new(),
        rng: rand::rng(),
        mailboxes,
        parked: HashMap::new(),
        next_expiry: Instant::now() + MAILBOX_EXPIRY_INTERVAL,
        loop_id: client_id(&me),
        cover_topology: None,
        next_loop: Instant::now(),
    };
    node.load_cached_consensus();
    let result = node.run(shutdown).await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    result
}

impl Node {
    async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let now = unix_ms();
            self.directory.handle_timeout(now);
            self.send_requests(now);
            let wait = self
                .directory
                .poll_timeout(now)
                .saturating_sub(now)
                .min(1_000);
            tokio::select! {
                _ = &mut shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = tick.tick() => {
                    self.maintain_keys(unix_ms())?;
                    self.redial_bootstrap();
                    self.maintain_mailboxes();
                    self.export_gauges(unix_ms());
                }
                _ = tokio::time::sleep_until(self.next_loop.into()) => self.send_loop_cover(),
                event = self.swarm.select_next_some() => self.handle_event(event)?,
            }
        }
    }

    /// Offers the documents saved by an earlier run (each is verified again; stale ones fail).
    fn load_cached_consensus(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("consensus-") && n.ends_with(".pb"))
            })
            .collect();
        files.sort();
        for path in files {
            let offered = std::fs::read(&path)
                .ok()
                .and_then(|b| SignedConsensus::decode(&b[..]).ok());
            match offered.map(|s| self.directory.offer(unix_ms(), s, None)) {
                Some(Ok(Some(epoch))) => {
                    debug!(epoch, "using the saved consensus");
                    self.apply_consensus(epoch);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    fn send_requests(&mut self, now: u64) {
        while let Some(action) = self.directory.poll_action() {
            // Request-response forgets an address after a failed dial; the configured
            // addresses of authorities must survive an authority's restart.
            let target = match &action {
                Action::Upload { to, .. } => *to,
                Action::Fetch { from, .. } => *from,
            };
            if let Some(entry) = self
                .config
                .authorities
                .entries
                .iter()
                .find(|e| e.peer_id == target)
            {
                for addr in &entry.addresses {
                    self.swarm.add_peer_address(target, addr.clone());
                }
            }
            let request = match &action {
                Action::Upload { epoch, to } => match self.descriptor(*epoch) {
                    Ok(signed) => Request::Descriptor(signed),
                    Err(reason) => {
                        debug!(epoch, %reason, "descriptor not ready");
                        self.directory
                            .upload_done(now, *epoch, *to, UploadOutcome::Failed(reason));
                        continue;
                    }
                },
                Action::Fetch { epoch, .. } => {
                    Request::GetConsensus(GetConsensus { epoch: *epoch })
                }
            };
            let peer = match &action {
                Action::Upload { to, .. } => *to,
                Action::Fetch { from, .. } => *from,
            };
            let id = self.swarm.behaviour_mut().directory.send_request(
                &peer,
                DirectoryRequest {
                    request: Some(request),
                },
            );
            self.requests.insert(id, action);
        }
    }

    /// This node's signed descriptor for `epoch` (creating and saving that epoch's key).
    fn descriptor(&mut self, epoch: u64) -> Result<p2pmix_proto::v1::SignedDescriptor, String> {
        let mut addresses: Vec<String> = self.listen_addrs.iter().map(|a| a.to_string()).collect();
        addresses.sort();
        addresses.dedup();
        addresses.truncate(p2pmix_bootstrap::MAX_ADDRESSES);
        if addresses.is_empty() {
            return Err("no listen address yet".into());
        }
        let key = self
            .keys
            .load_or_create(epoch, &mut self.rng)
            .map_err(|e| e.to_string())?;
        let descriptor = NodeDescriptor {
            epoch,
            identity: self.keypair.public().encode_protobuf(),
            addresses,
            role: Role::from(self.config.role) as i32,
            sphinx_keys: vec![EpochKey {
                epoch,
                sphinx_public_key: key.public_key().to_bytes().to_vec(),
            }],
            software_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            family: self.config.family.clone(),
        };
        sign_descriptor(&self.keypair, &descriptor).ok_or_else(|| "signing failed".into())
    }

    /// Rotates the key ring at epoch boundaries and loads the keys it may use now.
    fn maintain_keys(&mut self, now_ms: u64) -> Result<(), NodeError> {
        let epoch = self.config.schedule.epoch_at(now_ms);
        let keys = &self.keys;
        let advanced = self.relay.with_keys(|ring| {
            let now = Instant::now();
            let advanced = ring.current_epoch() < epoch;
            if advanced {
                ring.advance(epoch, now);
            }
            ring.handle_timeout(now);
            for e in [epoch, epoch + 1] {
                if ring.for_epoch(e).is_some() {
                    continue;
                }
                match keys.load(e) {
                    // Only keys of the current and next epoch are offered: insert cannot fail
                    // on the window, and a duplicate was ruled out above.
                    Ok(Some(secret)) => {
                        let _ = ring.insert(e, secret);
                    }
                    Ok(None) => {}
                    // A damaged key file costs that epoch, not the node.
                    Err(error) => warn!(epoch = e, %error, "epoch key unusable"),
                }
            }
            advanced
        });
        if advanced {
            // The previous key stays in memory for its grace period; on disk it is no longer
            // needed (a restart retires it anyway).
            self.keys.retire_through(epoch.saturating_sub(1))?;
            info!(epoch, "new epoch");
        }
        Ok(())
    }

    /// Installs the topology, addresses and parameters of the consensus of `epoch`.
    fn apply_consensus(&mut self, epoch: u64) {
        let Some(consensus) = self.directory.consensus(epoch) else {
            return;
        };
        let mut topology = HashMap::new();
        let mut addresses = Vec::new();
        let mut me = None;
        for node in consensus.nodes() {
            let (Some(peer), Ok(id)) = (peer_id(node), u16::try_from(node.node_id)) else {
                continue;
            };
            topology.insert(NodeId(id), peer);
            if peer == self.me {
                me = Some(node.layer);
            }
            for a in &node.addresses {
                if let Ok(addr) = a.parse::<Multiaddr>() {
                    addresses.push((peer, addr));
                }
            }
        }
        let parameters = consensus.parameters();
        let signed = consensus.signed().encode_to_vec();
        let (mixes, gateways) = (
            consensus
                .nodes()
                .iter()
                .filter(|n| n.role == Role::Mix as i32)
                .count(),
            consensus.gateways().count(),
        );
        self.relay.set_topology(epoch, topology);
        if self.applied.insert(epoch) {
            match me {
                Some(layer) => info!(epoch, mixes, gateways, layer, "consensus: admitted"),
                None => info!(epoch, mixes, gateways, "consensus: this node is not in it"),
            }
        }
        self.applied.retain(|e| *e + 3 > epoch);
        let behaviour = self.swarm.behaviour_mut();
        // Addresses of peers that left every held consensus are no longer needed for relaying.
        let relay = self.relay.clone();
        behaviour.mix.retain_addresses(|p| relay.is_node(p));
        for (peer, addr) in addresses {
            if peer != self.me {
                behaviour.mix.add_address(peer, addr.clone());
                behaviour.kad.add_address(&peer, addr);
            }
        }
        // Parameters come from the newest document.
        if self.directory.newest().map(|c| c.epoch()) == Some(epoch) {
            self.relay
                .set_max_delay(Duration::from_micros(parameters.max_delay_us));
            let (rate, burst) = client_rate(&parameters);
            behaviour.mix.set_client_rate(rate, burst);
        }
        let path = self.config.data_dir.join(format!("consensus-{epoch}.pb"));
        if let Err(e) = write_atomic(&path, &signed) {
            warn!(%e, "could not save the consensus");
        }
        for old in
            self.config.schedule.epoch_at(unix_ms()).saturating_sub(3)..epoch.saturating_sub(3)
        {
            let _ = std::fs::remove_file(self.config.data_dir.join(format!("consensus-{old}.pb")));
        }
    }

    /// Sends one loop-cover packet (when admitted) and draws the next send time.
    fn send_loop_cover(&mut self) {
        let now_ms = unix_ms();
        let Some(consensus) = self.directory.in_force(now_ms) else {
            self.next_loop = Instant::now() + Duration::from_secs(1);
            return;
        };
        let parameters = consensus.parameters();
        if parameters.mix_loop_interval_us == 0 {
            // The network runs without node loop cover; look again with the next consensus.
            self.next_loop = Instant::now() + Duration::from_secs(1);
            return;
        }
        let mean = Duration::from_micros(parameters.mix_loop_interval_us.max(1_000));
        self.next_loop = Instant::now() + sample_exponential(mean, &mut self.rng).as_duration();
        if self.cover_topology.as_ref().map(Topology::epoch) != Some(consensus.epoch()) {
            self.cover_topology = Some(Topology::from_consensus(consensus));
        }
        let Some(topology) = &self.cover_topology else {
            return;
        };
        // Not admitted, or no independent mix in some layer: no loop this time.
        let Ok(route) = choose_loop(topology, &self.me, &RoutePolicy::default(), &mut self.rng)
        else {
            return;
        };
        let Some(first) = route
            .first()
            .and_then(|h| topology.layer(1).iter().find(|n| n.id == h.node))
            .map(|n| n.peer)
        else {
            return;
        };
        let destination = Destination::Deliver {
            client: self.loop_id,
            label: Label(self.rng.random()),
        };
        match build_packet(
            &Geometry::DEFAULT,
            KeyId::for_epoch(topology.epoch()),
            &route,
            &destination,
            &[],
            &mut self.rng,
        ) {
            Ok(packet) => {
                self.swarm.behaviour_mut().mix.send(first, packet);
                counter!("p2pmix_loop_cover_sent_total").increment(1);
            }
            Err(e) => debug!(%e, "could not build a loop-cover packet"),
        }
    }

    /// Answers held fetches whose wait is over and drops expired mailbox packets.
    fn maintain_mailboxes(&mut self) {
        let now = Instant::now();
        let due: Vec<ClientId> = self
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(c, _)| *c)
            .collect();
        for client in due {
            self.answer_parked(&client);
        }
        if now >= self.next_expiry {
            self.next_expiry = now + MAILBOX_EXPIRY_INTERVAL;
            if let Some(store) = &mut self.mailboxes {
                let expired = store.expire(unix_ms());
                if expired > 0 {
                    counter!("p2pmix_mailbox_expired_total").increment(expired as u64);
                    info!(expired, "mailbox packets expired");
                }
            }
        }
    }

    /// Answers `client`'s held fetch with what its mailbox holds (possibly nothing).
    fn answer_parked(&mut self, client: &ClientId) {
        if let Some(parked) = self.parked.remove(client) {
            let response = self.batch(client, parked.ack_through, parked.max);
            let _ = self
                .swarm
                .behaviour_mut()
                .mailbox
                .send_response(parked.channel, response);
        }
    }

    fn batch(&mut self, client: &ClientId, ack_through: u64, max: usize) -> MailboxResponse {
        let Some(store) = &mut self.mailboxes else {
            return refusal(RefusalCode::Unsupported, "not a gateway");
        };
        let (packets, remaining) = store.fetch(client, ack_through, max);
        counter!("p2pmix_mailbox_handed_total").increment(packets.len() as u64);
        MailboxResponse {
            response: Some(MailboxAnswer::Batch(MailboxBatch {
                items: packets
                    .into_iter()
                    .map(|p| MailboxItem {
                        seq: p.seq,
                        label: p.label.0.to_vec(),
                        body: p.body,
                    })
                    .collect(),
                remaining: remaining as u64,
            })),
        }
    }

    /// A client's fetch: registers it, deletes what it acknowledged, and answers with what is
    /// waiting, or holds the request until something arrives.
    fn handle_fetch(
        &mut self,
        peer: PeerId,
        request: MailboxRequest,
        channel: request_response::ResponseChannel<MailboxResponse>,
    ) {
        let client = client_id(&peer);
        // A newer fetch replaces a held one (the client gave up on it, or reconnected).
        self.answer_parked(&client);
        let response = match &mut self.mailboxes {
            None => Some(refusal(RefusalCode::Unsupported, "not a gateway")),
            Some(store) => match store.register(client, unix_ms()) {
                Ok(new) => {
                    if new {
                        info!(%peer, "client registered");
                        counter!("p2pmix_mailbox_registered_total").increment(1);
                    }
                    None
                }
                Err(e) => Some(refusal(e.code(), &e.to_string())),
            },
        };
        let max = (request.max as usize).clamp(1, MAX_BATCH);
        let response = response.unwrap_or_else(|| self.batch(&client, request.ack_through, max));
        let empty = matches!(
            &response.response,
            Some(MailboxAnswer::Batch(b)) if b.items.is_empty()
        );
        if empty && request.wait_ms > 0 {
            let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_WAIT);
            self.parked.insert(
                client,
                ParkedFetch {
                    channel,
                    ack_through: request.ack_through,
                    max,
                    until: Instant::now() + wait,
                },
            );
        } else {
            let _ = self
                .swarm
                .behaviour_mut()
                .mailbox
                .send_response(channel, response);
        }
    }

    /// A packet the network delivered here: this node's own loop cover, or a client's packet
    /// for its mailbox.
    fn delivered(&mut self, client: ClientId, label: Label, body: &[u8]) {
        if client == self.loop_id {
            counter!("p2pmix_loop_cover_returned_total").increment(1);
            return;
        }
        let Some(store) = &mut self.mailboxes else {
            counter!("p2pmix_mailbox_refused_total", "reason" => "not_gateway").increment(1);
            return;
        };
        match store.store(&client, label, body, unix_ms()) {
            Ok(_) => {
                counter!("p2pmix_mailbox_stored_total").increment(1);
                if self.parked.contains_key(&client) {
                    self.answer_parked(&client);
                }
            }
            Err(e) => {
                counter!("p2pmix_mailbox_refused_total", "reason" => e.reason()).increment(1);
                debug!(client = %hex::encode(&client.0[..8]), %e, "packet not stored");
            }
        }
    }

    fn redial_bootstrap(&mut self) {
        let now = Instant::now();
        for peer in &mut self.bootstrap {
            if peer.reached || peer.dialing.is_some() || peer.next_attempt > now {
                continue;
            }
            let opts = DialOpts::unknown_peer_id()
                .address(peer.address.clone())
                .build();
            peer.dialing = Some(opts.connection_id());
            if let Err(e) = self.swarm.dial(opts) {
                warn!(address = %peer.address, %e, "bootstrap peer: cannot dial");
                peer.dialing = None;
                peer.next_attempt = now + peer.backoff;
                peer.backoff = (peer.backoff * 2).min(MAX_BOOTSTRAP_BACKOFF);
            }
        }
    }

    fn export_gauges(&mut self, now_ms: u64) {
        let epoch = self.config.schedule.epoch_at(now_ms);
        gauge!("p2pmix_epoch").set(epoch as f64);
        gauge!("p2pmix_connected_peers").set(self.swarm.connected_peers().count() as f64);
        let kad_peers: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        gauge!("p2pmix_kad_peers").set(kad_peers as f64);
        if let Some(store) = &self.mailboxes {
            gauge!("p2pmix_mailbox_clients").set(store.clients() as f64);
            gauge!("p2pmix_mailbox_packets").set(store.len() as f64);
            gauge!("p2pmix_mailbox_bytes").set(store.bytes() as f64);
        }
        match self.directory.in_force(now_ms) {
            Some(c) => {
                gauge!("p2pmix_consensus_epoch").set(c.epoch() as f64);
                let age = now_ms.saturating_sub(c.consensus().valid_after_ms);
                gauge!("p2pmix_consensus_age_seconds").set(age as f64 / 1e3);
                let admitted = c.nodes().iter().any(|n| peer_id(n) == Some(self.me));
                gauge!("p2pmix_admitted").set(if admitted { 1.0 } else { 0.0 });
            }
            None => gauge!("p2pmix_admitted").set(0.0),
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) -> Result<(), NodeError> {
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
                if let Some(b) = self
                    .bootstrap
                    .iter_mut()
                    .find(|b| b.dialing == Some(connection_id))
                {
                    info!(address = %b.address, %peer_id, "reached bootstrap peer");
                    b.dialing = None;
                    b.reached = true;
                    let address = endpoint.get_remote_address().clone();
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    kad.add_address(&peer_id, address);
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
                if let Some(b) = self
                    .bootstrap
                    .iter_mut()
                    .find(|b| b.dialing == Some(connection_id))
                {
                    warn!(
                        address = %b.address,
                        retry_in = ?b.backoff,
                        "bootstrap peer unreachable: {error}"
                    );
                    b.dialing = None;
                    b.next_attempt = Instant::now() + b.backoff;
                    b.backoff = (b.backoff * 2).min(MAX_BOOTSTRAP_BACKOFF);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.directory.remove_peer(&peer_id);
            }
            SwarmEvent::Behaviour(event) => self.handle_behaviour_event(event),
            _ => {}
        }
        Ok(())
    }

    fn handle_behaviour_event(&mut self, event: NodeBehaviourEvent) {
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
            }) if ok.num_remaining == 0 => {
                debug!(peers = ok.num_remaining, "kademlia bootstrap done");
            }
            NodeBehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                debug!(%peer, "kademlia: routing table updated");
            }
            NodeBehaviourEvent::Directory(event) => self.handle_directory_event(event),
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
            }) => self.delivered(client, label, &body),
            NodeBehaviourEvent::Mailbox(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => self.handle_fetch(peer, request, channel),
            NodeBehaviourEvent::Mix(MixEvent::PeerBanned(peer)) => {
                warn!(%peer, "cut off a peer for invalid traffic");
            }
            _ => {}
        }
    }

    fn handle_directory_event(
        &mut self,
        event: request_response::Event<DirectoryRequest, DirectoryResponse>,
    ) {
        let now = unix_ms();
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = match request.request {
                    Some(Request::GetConsensus(get)) => {
                        let held = if get.epoch == 0 {
                            self.directory.newest()
                        } else {
                            self.directory.consensus(get.epoch)
                        };
                        match held {
                            Some(c) => Response::Consensus(c.signed().clone()),
                            None => Response::Refused(Refused {
                                reason: "no consensus held for that epoch".into(),
                                code: RefusalCode::NotHeld as i32,
                            }),
                        }
                    }
                    _ => Response::Refused(Refused {
                        reason: "this node is not an authority".into(),
                        code: RefusalCode::Unsupported as i32,
                    }),
                };
                debug!(%peer, "answered a directory request");
                let _ = self.swarm.behaviour_mut().directory.send_response(
                    channel,
                    DirectoryResponse {
                        response: Some(response),
                    },
                );
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match self.requests.remove(&request_id) {
                Some(Action::Upload { epoch, to }) => {
                    let outcome = match response.response {
                        Some(Response::Accepted(_)) => {
                            info!(epoch, authority = %to, "descriptor accepted");
                            UploadOutcome::Held
                        }
                        Some(Response::Refused(r)) if r.code() == RefusalCode::Duplicate => {
                            UploadOutcome::Held
                        }
                        Some(Response::Refused(r)) => {
                            // Retried with backoff while the phase lasts: a refusal may come
                            // from clocks that disagree about the epoch.
                            warn!(epoch, authority = %to, reason = %r.reason, "descriptor refused");
                            UploadOutcome::Failed(r.reason)
                        }
                        _ => UploadOutcome::Failed("unexpected answer".into()),
                    };
                    self.directory.upload_done(now, epoch, to, outcome);
                }
                Some(Action::Fetch { epoch, .. }) => {
                    let offered = match response.response {
                        Some(Response::Consensus(c)) => Some(c),
                        _ => None,
                    };
                    match self.directory.fetch_done(now, epoch, offered) {
                        Ok(Some(e)) => {
                            info!(epoch = e, from = %peer, "consensus fetched and verified");
                            self.apply_consensus(e);
                        }
                        Ok(None) => {}
                        Err(e) => warn!(epoch, from = %peer, "consensus refused: {e}"),
                    }
                }
                None => {}
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => match self.requests.remove(&request_id) {
                Some(Action::Upload { epoch, to }) => {
                    warn!(epoch, authority = %to, "descriptor upload failed: {error}");
                    self.directory.upload_done(
                        now,
                        epoch,
                        to,
                        UploadOutcome::Failed(error.to_string()),
                    );
                }
                Some(Action::Fetch { epoch, .. }) => {
                    debug!(epoch, %peer, "consensus fetch failed: {error}");
                    let _ = self.directory.fetch_done(now, epoch, None);
                }
                None => {}
            },
            _ => {}
        }
    }
}

fn refusal(code: RefusalCode, reason: &str) -> MailboxResponse {
    MailboxResponse {
        response: Some(MailboxAnswer::Refused(Refused {
            reason: reason.into(),
            code: code as i32,
        })),
    }
}
