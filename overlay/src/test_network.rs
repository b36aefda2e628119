//! A whole mixnet inside the test's process, for a dApp's own tests (as `libp2p-swarm-test` is
//! for swarms): [`TestNetwork::start`] runs three authorities, two gateways and three layers of
//! mixes on 127.0.0.1 (port 0 everywhere) with short epochs, waits until they are all in a
//! signed consensus, and hands out what a client needs ([`TestNetwork::client_config`]).
//!
//! Every authority and node runs on a thread of its own with its own tokio runtime (as a
//! process would), so the test's runtime (current-thread under `#[tokio::test]`) only runs the
//! test's clients. The data directories
//! live in a temporary directory that dropping the network removes, after every task stopped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2pmix::{client::Client, test_network::TestNetwork};
//!
//! let net = TestNetwork::start().await?;
//! let (swarm, identity, key) = TestNetwork::client_keys()?;
//! let client = Client::start(swarm, identity, key, net.client_config(0))?;
//! # Ok(()) }
//! ```
//!
//! The crate's front page has the whole exchange (send, receive, a reply through SURBs).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use p2pmix_bootstrap::{EpochSchedule, default_parameters, verify_consensus};
use p2pmix_proto::v1::NetworkParameters;
use thiserror::Error;
use tokio::sync::watch;

use crate::{
    authority::run_authority,
    client::{ClientConfig, ClientIdentity, ClientKey, Config, StaticKey},
    config::{
        Authorities, AuthorityAddress, AuthorityConfigFile, DEFAULT_MAX_CONNECTIONS, NodeConfig,
        NodeRole, ReplaySettings, set_parameter,
    },
    identity::write_identity,
    node::run_node,
    runtime::{trace::TraceConfig, unix_ms},
};

/// Why a test network did not come up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TestNetworkError {
    /// The temporary directory or a file in it.
    #[error("test network files: {0}")]
    Io(#[from] std::io::Error),
    /// An identity could not be written.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// A parameter name is not one of [`crate::config::PARAMETERS`].
    #[error("unknown network parameter {0}")]
    UnknownParameter(String),
    /// An authority or a node stopped while the network was starting.
    #[error("{0} stopped while the network was starting: {1}")]
    Stopped(String, String),
    /// No Noise key could be made for a client.
    #[error(transparent)]
    Key(#[from] crate::client::e2e::E2eError),
    /// Not everyone was in a consensus in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// What [`TestNetwork::start_with`] builds.
#[derive(Debug, Clone)]
pub struct TestNetworkConfig {
    gateways: usize,
    mixes_per_layer: usize,
    epoch: Duration,
    parameters: Vec<(String, u64)>,
    start_timeout: Duration,
}

impl Default for TestNetworkConfig {
    /// Two gateways, two mixes in each of the three layers, 4 s epochs, the default network
    /// parameters but no loop cover from the mixes (a test's CPU goes to its own traffic), at
    /// most 90 s to come up.
    fn default() -> Self {
        TestNetworkConfig {
            gateways: 2,
            mixes_per_layer: 2,
            epoch: Duration::from_secs(4),
            parameters: vec![("mix_loop_interval_us".into(), 0)],
            start_timeout: Duration::from_secs(90),
        }
    }
}

impl TestNetworkConfig {
    /// Gateways to run (at least 1).
    pub fn with_gateways(mut self, n: usize) -> Self {
        self.gateways = n.max(1);
        self
    }

    /// Mixes in each of the three layers (at least 1).
    pub fn with_mixes_per_layer(mut self, n: usize) -> Self {
        self.mixes_per_layer = n.max(1);
        self
    }

    /// The epoch length (at least [`crate::config::MIN_EPOCH_MS`]).
    pub fn with_epoch(mut self, epoch: Duration) -> Self {
        self.epoch = epoch.max(Duration::from_millis(crate::config::MIN_EPOCH_MS));
        self
    }

    /// Sets network parameter `name` (one of [`crate::config::PARAMETERS`]) to `value`.
    pub fn with_parameter(mut self, name: &str, value: u64) -> Self {
        self.parameters.retain(|(n, _)| n != name);
        self.parameters.push((name.into(), value));
        self
    }

    /// How long [`TestNetwork::start_with`] waits for a consensus with every node in it.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}

/// A gateway of the network: who it is and where it listens.
#[derive(Debug, Clone)]
pub struct TestGateway {
    /// Its peer id.
    pub peer: PeerId,
    /// Its address on 127.0.0.1.
    pub address: Multiaddr,
}

/// A running in-process mixnet; see the module documentation. Dropping it stops every
/// authority and node and removes their files.
#[derive(Debug)]
pub struct TestNetwork {
    authorities: Authorities,
    gateways: Vec<TestGateway>,
    mixes: Vec<PeerId>,
    dir: PathBuf,
    stop: watch::Sender<bool>,
    /// One thread an authority or node, each with a runtime of its own (as a process would
    /// have; the node's loop is not `Send`).
    threads: Vec<std::thread::JoinHandle<()>>,
    died: (Died, tokio::sync::mpsc::Receiver<(String, String)>),
}

/// Where a stopped authority or node reports why.
type Died = tokio::sync::mpsc::Sender<(String, String)>;

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        // Bounded: a task that ignores the stop is left behind (and said), not waited for.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stuck = 0;
        for thread in self.threads.drain(..) {
            if thread.is_finished() {
                if thread.join().is_err() {
                    tracing::warn!("a test network task panicked");
                }
            } else {
                stuck += 1;
            }
        }
        if stuck > 0 {
            tracing::warn!(stuck, "test network tasks did not stop within 30 s");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Distinguishes the directories of several networks in one process.
static NETWORKS: AtomicU64 = AtomicU64::new(0);

/// Polls `what` every 50 ms until it gives a value, until `deadline`, failing at once if an
/// authority or node reports that it stopped.
async fn wait_for<T>(
    what: &str,
    deadline: tokio::time::Instant,
    died: &mut tokio::sync::mpsc::Receiver<(String, String)>,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, TestNetworkError> {
    loop {
        if let Ok((who, why)) = died.try_recv() {
            return Err(TestNetworkError::Stopped(who, why));
        }
        if let Some(v) = probe() {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TestNetworkError::Timeout(what.into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first address in `data_dir/listen-addrs`, if the process wrote it.
fn listen_addr(data_dir: &Path) -> Option<Multiaddr> {
    std::fs::read_to_string(data_dir.join("listen-addrs"))
        .ok()?
        .lines()
        .find_map(|l| l.parse().ok())
}

fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

impl TestNetwork {
    /// Starts the default network ([`TestNetworkConfig::default`]) and waits until it routes.
    /// Call within a tokio runtime (any flavour).
    pub async fn start() -> Result<Self, TestNetworkError> {
        Self::start_with(TestNetworkConfig::default()).await
    }

    /// Starts the network `config` describes and waits until a consensus holds every node.
    pub async fn start_with(config: TestNetworkConfig) -> Result<Self, TestNetworkError> {
        // A name nobody can guess, made by us (create_dir fails if it exists).
        let dir = std::env::temp_dir().join(format!(
            "p2pmix-test-network-{}-{}-{:016x}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir)?;
        let (stop, _) = watch::channel(false);
        let mut net = TestNetwork {
            authorities: Authorities {
                entries: Vec::new(),
                schedule: None,
                test_network: true,
            },
            gateways: Vec::new(),
            mixes: Vec::new(),
            dir,
            stop,
            threads: Vec::new(),
            // One report each at most: room for every authority and node.
            died: tokio::sync::mpsc::channel(3 + config.gateways + 3 * config.mixes_per_layer),
        };
        net.bring_up(&config).await?;
        Ok(net)
    }

    /// Runs `task` on a thread of its own until the network stops; `name` is said if it fails.
    fn spawn<F, Fut, E>(&mut self, name: String, task: F) -> Result<(), TestNetworkError>
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()>>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut stop = self.stop.subscribe();
        let died = self.died.0.clone();
        let thread = std::thread::Builder::new()
            .name(format!("p2pmix-test-{}", name.replace(' ', "-")))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = died.try_send((name, e.to_string()));
                        return;
                    }
                };
                let shutdown = Box::pin(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(task(shutdown))
                }));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let _ = died.try_send((name, e.to_string()));
                    }
                    Err(_) => {
                        let _ = died.try_send((name, "panicked".into()));
                    }
                }
            })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Fails if an authority or node stopped.
    fn check(&mut self) -> Result<(), TestNetworkError> {
        match self.died.1.try_recv() {
            Ok((who, why)) => Err(TestNetworkError::Stopped(who, why)),
            Err(_) => Ok(()),
        }
    }

    async fn bring_up(&mut self, config: &TestNetworkConfig) -> Result<(), TestNetworkError> {
        // One deadline for the whole start.
        let deadline = tokio::time::Instant::now() + config.start_timeout;
        let epoch_ms = config.epoch.as_millis() as u64;
        // The first epoch starts once every node had time to upload its descriptor.
        let schedule = EpochSchedule::new(unix_ms() + 2 * epoch_ms, epoch_ms);
        let mut parameters: NetworkParameters = default_parameters();
        for (name, value) in &config.parameters {
            if !set_parameter(&mut parameters, name, *value) {
                return Err(TestNetworkError::UnknownParameter(name.clone()));
            }
        }
        parameters.test_network = true;
        parameters.health_probes_per_node = 0;
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0"
            .parse()
            .map_err(|_| TestNetworkError::Timeout("a listen address".into()))?;
        let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
        let mut entries: Vec<AuthorityAddress> = keys
            .iter()
            .map(|k| AuthorityAddress {
                public_key: k.public(),
                peer_id: k.public().to_peer_id(),
                addresses: Vec::new(),
            })
            .collect();
        // Authorities one after another: each is told where the earlier ones listen.
        for (i, key) in keys.iter().enumerate() {
            let home = self.dir.join(format!("authority{i}"));
            std::fs::create_dir_all(&home)?;
            let identity = home.join("identity.key");
            write_identity(&identity, key)?;
            let data_dir = home.join("data");
            let authority = AuthorityConfigFile {
                identity,
                data_dir: data_dir.clone(),
                authorities_path: home.join("authorities.toml"),
                authorities: Authorities {
                    entries: entries.clone(),
                    schedule: Some(schedule),
                    test_network: true,
                },
                listen: vec![listen.clone()],
                metrics: None,
                schedule,
                parameters,
                max_connections: crate::config::DEFAULT_AUTHORITY_MAX_CONNECTIONS,
            };
            let key = key.clone();
            self.spawn(format!("authority {i}"), move |shutdown| {
                run_authority(authority, key, shutdown)
            })?;
            let address = wait_for("an authority to listen", deadline, &mut self.died.1, || {
                listen_addr(&data_dir)
            })
            .await?;
            entries[i].addresses = vec![address];
            self.check()?;
        }
        self.authorities = Authorities {
            entries,
            schedule: Some(schedule),
            test_network: true,
        };
        // Nodes: gateways first; everyone joins the DHT through the first gateway.
        let nodes = config.gateways + 3 * config.mixes_per_layer;
        let mut bootstrap: Vec<Multiaddr> = Vec::new();
        for i in 0..nodes {
            let role = if i < config.gateways {
                NodeRole::Gateway
            } else {
                NodeRole::Mix
            };
            let data_dir = self.dir.join(format!("node{i}"));
            let node = NodeConfig {
                data_dir: data_dir.clone(),
                identity: None,
                authorities: self.authorities.clone(),
                schedule,
                listen: vec![listen.clone()],
                bootstrap: bootstrap.clone(),
                announce: Vec::new(),
                role,
                metrics: None,
                family: String::new(),
                max_connections: DEFAULT_MAX_CONNECTIONS,
                replay: ReplaySettings {
                    min_rate: 100.0,
                    memory_bytes: 64 << 20,
                },
                sphinx_workers: Some(1),
                trace: TraceConfig::default(),
            };
            self.spawn(format!("node {i}"), move |shutdown| {
                run_node(node, shutdown)
            })?;
            let address = wait_for("a node to listen", deadline, &mut self.died.1, || {
                listen_addr(&data_dir)
            })
            .await?;
            self.check()?;
            let peer = peer_of(&address)
                .ok_or_else(|| TestNetworkError::Timeout("a node's peer id".into()))?;
            if bootstrap.is_empty() {
                bootstrap.push(address.clone());
            }
            if role == NodeRole::Gateway {
                self.gateways.push(TestGateway { peer, address });
            } else {
                self.mixes.push(peer);
            }
        }
        // Ready when one authority's newest consensus verifies and holds every node.
        let pinned = self.authorities.pinned();
        let published = self.dir.join("authority0/data");
        let everyone = nodes;
        wait_for(
            "a consensus with every node",
            deadline,
            &mut self.died.1,
            || {
                let epoch = schedule.epoch_at(unix_ms()) + 1;
                (epoch.saturating_sub(1)..=epoch).rev().find_map(|e| {
                    let bytes = std::fs::read(published.join(format!("consensus-{e}.pb"))).ok()?;
                    let at = unix_ms().max(schedule.start_of(e));
                    let consensus = verify_consensus(&bytes, &pinned, at, Some(e)).ok()?;
                    (consensus.nodes().len() >= everyone).then_some(())
                })
            },
        )
        .await?;
        // And every node had the chance to fetch it (clients retry what they cannot route yet).
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.check()
    }

    /// The pinned authorities, with their addresses and the epoch schedule.
    pub fn authorities(&self) -> &Authorities {
        &self.authorities
    }

    /// The gateways.
    pub fn gateways(&self) -> &[TestGateway] {
        &self.gateways
    }

    /// The mixes' peer ids.
    pub fn mixes(&self) -> &[PeerId] {
        &self.mixes
    }

    /// A client configuration for gateway `gateway` (modulo the gateways there are), keeping
    /// its state in memory.
    pub fn client_config(&self, gateway: usize) -> Config {
        let gateway = &self.gateways[gateway % self.gateways.len()];
        Config::new(self.authorities.clone(), gateway.peer)
            .with_gateway_addresses(vec![gateway.address.clone()])
            .with_client(ClientConfig::default())
    }

    /// Fresh keys for a client: its swarm identity, who it is at its gateway and its Noise
    /// key (what [`crate::client::Client::start`] takes).
    pub fn client_keys() -> Result<(Keypair, ClientIdentity, StaticKey), TestNetworkError> {
        Ok((
            Keypair::generate_ed25519(),
            ClientIdentity::Key(ClientKey::generate()),
            StaticKey::generate()?,
        ))
    }
}
