//! Starting a node: its identity and keys from the data directory, the metrics endpoint, the
//! relay, the swarm and every machine, then the loop of [`super`].

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use p2pmix_bootstrap::{MAX_NODES, default_parameters};
use p2pmix_mix::{
    Geometry, KeyRing, Relay, RelayConfig, ReplayBudget, ReplayLog, behaviour::Config as MixConfig,
};
use thiserror::Error;
use tracing::{info, warn};

use super::{
    Node,
    bootstrap::BootstrapDialer,
    cover::LoopCover,
    gateway::{Gateway, GatewayError},
    gauges::Gauges,
    install::ClientRate,
    keys::{EpochKeyError, EpochKeyStore, KeyRotation},
    replay::{
        ReplayStore, sizing,
        writer::{JournalWriter, SnapshotPolicy},
    },
    swarm,
};
use crate::{
    config::{NodeConfig, NodeRole},
    directory::DirectoryClient,
    identity::{IDENTITY_FILE, IdentityError, load_or_create_identity, read_identity},
    mailbox::{MailboxConfig, spool::MAILBOX_DB_FILE},
    runtime::{
        ListenError, Now, SwarmError,
        files::{FileError, create_dir},
        limits, listen_on_all,
        metrics::{self as metrics_endpoint, MetricsError},
        status::Status,
        trace::{self, TraceSetupError},
    },
};

/// Why a node stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Reading or writing the data directory failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The identity key could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// An epoch key could not be read or written.
    #[error(transparent)]
    Keys(#[from] EpochKeyError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The swarm could not be built.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// Tracing was asked for and could not start (not a test network, or a file).
    #[error(transparent)]
    Trace(#[from] TraceSetupError),
    /// A trace file could not be written.
    #[error(transparent)]
    TraceWrite(#[from] p2pmix_mix::trace::TraceError),
    /// The swarm could not listen on an address.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A gateway's mailboxes could not be opened.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The misbehaviour plan is malformed (feature `chaos`).
    #[cfg(feature = "chaos")]
    #[error("{0}")]
    Chaos(String),
}

/// How long the previous epoch's key keeps working after a boundary: a whole epoch. Packets built
/// just before the boundary are still in flight, and when the next consensus fails clients keep
/// using the previous one (valid one more epoch) with its keys.
fn key_grace(period_ms: u64) -> Duration {
    Duration::from_millis(period_ms.max(1_000))
}

/// Fresh tags the Sphinx workers may hand over before the journal writer took them (8 MiB; at
/// 20,000 packets a second, 13 s of a stalled disk before fresh packets are refused).
const REPLAY_BACKLOG: usize = 1 << 18;

/// Runs a node until `shutdown` resolves. It raises the process's soft open-files limit toward
/// what its connections need (never past the hard limit, never lower).
pub async fn run_node(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    create_dir(&config.data_dir)?;
    // An identity configured elsewhere (a credential, a secret volume) must exist; only the
    // default one in the data directory is created at the first start.
    let keypair = match &config.identity {
        Some(path) => read_identity(path)?,
        None => load_or_create_identity(&config.data_dir.join(IDENTITY_FILE))?,
    };
    let me = keypair.public().to_peer_id();

    // The recorder goes in before the mix behaviour takes its metric handles.
    let status = Status::new(std::time::Instant::now());
    let metrics_task = match config.metrics {
        Some(addr) => Some(metrics_endpoint::start(addr, status.clone(), &config.data_dir).await?),
        None => None,
    };

    // Each connection is an open file: take what the hard limit allows, and say so now if that
    // is short rather than when accept starts failing.
    limits::ensure_open_files(
        u64::from(config.max_connections) + MAX_NODES as u64 + limits::RESERVED_FILES,
        "max_connections",
    );
    let now = Now::system();
    let epoch = config.schedule.epoch_at(now.unix_ms);
    let (store, _) = EpochKeyStore::open(&config.data_dir, epoch)?;
    let replay_store = ReplayStore::open(&config.data_dir)?;
    let replay_log = Arc::new(ReplayLog::new(REPLAY_BACKLOG));
    let epoch_length = Duration::from_millis(config.schedule.period_ms());
    let defaults = default_parameters();
    let ring = KeyRing::new(
        epoch,
        key_grace(config.schedule.period_ms()),
        sizing(config.replay.min_rate, epoch_length),
    )
    .with_replay_budget(ReplayBudget::new(config.replay.memory_bytes))
    .with_replay_log(replay_log.clone());
    let relay = Arc::new(Relay::new(
        Geometry::DEFAULT,
        RelayConfig {
            max_delay: Duration::from_micros(defaults.max_delay_us),
        },
        ring,
    ));
    let journal = {
        let relay = relay.clone();
        JournalWriter::start(
            replay_store.dir().to_path_buf(),
            replay_log,
            Box::new(move || {
                relay.read_keys(|ring| {
                    ring.keys()
                        .map(|k| (k.epoch(), k.replay_handle()))
                        .collect()
                })
            }),
            SnapshotPolicy::default(),
        )
        .map_err(|e| FileError::on(replay_store.dir())(e))?
    };
    let rate = ClientRate::from_parameters(&defaults);
    let defaults_mix = MixConfig::default();
    let mix_config = MixConfig {
        client_rate: rate.rate,
        client_burst: rate.burst,
        workers: config.sphinx_workers.unwrap_or(defaults_mix.workers),
        ..defaults_mix
    };
    info!(workers = mix_config.workers, "Sphinx workers");
    let tracer = config.trace.open(&config.authorities, me)?;
    let mut swarm = swarm::build_node_swarm(
        keypair.clone(),
        relay.clone(),
        mix_config,
        config.role == NodeRole::Gateway,
        config.max_connections,
    )?;
    // The authorities' reachability dials must get past a flood of stalled handshakes, and
    // before a handshake only their pinned addresses tell them apart.
    swarm
        .behaviour_mut()
        .limits
        .set_trusted_sources(config.authorities.ip_addresses());
    if let Some(tracer) = &tracer {
        swarm
            .behaviour_mut()
            .mix
            .set_trace(Arc::new(tracer.clone()));
    }
    listen_on_all(&mut swarm, &config.listen)?;
    for entry in &config.authorities.entries {
        for addr in &entry.addresses {
            swarm.add_peer_address(entry.peer_id, addr.clone());
        }
    }
    let directory = DirectoryClient::new(
        now,
        config.schedule,
        config.authorities.pinned(),
        config.authorities.peer_ids(),
    );
    let gateway = match config.role {
        NodeRole::Gateway => {
            if config.data_dir.join("mailbox").is_dir() {
                warn!(
                    "DATA_DIR/mailbox/ (one file a packet) is no longer read: mailboxes live in mailbox.redb"
                );
            }
            // No delivery to a client is taken before a consensus says who the last layer is.
            swarm
                .behaviour_mut()
                .mix
                .set_final_senders(Some(Default::default()));
            Some(Gateway::open(
                &config.data_dir.join(MAILBOX_DB_FILE),
                MailboxConfig::default(),
                now,
            )?)
        }
        NodeRole::Mix => None,
    };
    info!(peer_id = %me, role = ?config.role, epoch, "node started");
    #[cfg(feature = "chaos")]
    let test_network = config.authorities.test_network;
    let mut node = Node {
        keys: KeyRotation::new(store, replay_store, config.schedule, now),
        bootstrap: BootstrapDialer::new(config.bootstrap.iter().cloned(), now.mono),
        config,
        keypair,
        me,
        swarm,
        relay,
        directory,
        requests: HashMap::new(),
        listen_addrs: Vec::new(),
        installed: HashSet::new(),
        final_senders: HashMap::new(),
        rng: rand::rng(),
        gateway,
        cover: LoopCover::new(me, now.mono),
        gauges: Gauges::new(now.mono),
        #[cfg(feature = "chaos")]
        chaos: super::chaos::ChaosPlan::from_env()
            .and_then(|plan| super::chaos::allowed(plan, test_network))
            .map_err(NodeError::Chaos)?,
        status,
    };
    node.load_cached_consensus(now);
    let result = node.run(now, shutdown).await;
    // The last tags on disk and every key's filter in one snapshot, so that the next start reads
    // little (a crash instead of a shutdown loses nothing either: see node/replay/).
    journal.shutdown();
    if let Some(task) = metrics_task {
        task.abort();
    }
    result?;
    if let Some(tracer) = &tracer {
        trace::finish(tracer)?;
    }
    Ok(())
}
