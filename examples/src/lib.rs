//! Runnable programs for p2pmix users; see the `examples/` folder of this package. Each example's
//! first doc comment says how to run it.
//!
//! The examples that talk through a network use one started by `./testnet/run.sh --keep` or
//! `p2pmix testnet up --dir DIR`: its run directory holds the pinned authorities file and every
//! gateway's address ([`p2pmix::testnet::RunDir`]).

pub mod anonymity;
pub mod chart;
pub mod plot;

use std::path::Path;

use anyhow::{Context, Result};
use libp2p::{Multiaddr, identity::Keypair, multiaddr::Protocol};
use p2pmix::{
    client::{self, ClientConfig, ClientIdentity, Config, StaticKey},
    config::Authorities,
    identity::{
        CLIENT_KEY_FILE, IDENTITY_FILE, NOISE_KEY_FILE, load_or_create_client_key,
        load_or_create_identity, load_or_create_static_key,
    },
    testnet::RunDir,
};

/// The client configuration for gateway number `gateway` of the test network in `run_dir`
/// (started by `./testnet/run.sh --keep` or `p2pmix testnet up`), found through
/// `p2pmix::testnet::RunDir`, the one place that knows a run directory's layout.
pub fn testnet_config(run_dir: &Path, gateway: usize) -> Result<Config> {
    let run = RunDir::open(run_dir).with_context(|| {
        format!(
            "{} is not a test network (start one with ./testnet/run.sh --keep or p2pmix testnet up)",
            run_dir.display()
        )
    })?;
    let authorities = Authorities::load(&run.authorities_file())?;
    let name = run
        .gateways()
        .into_iter()
        .nth(gateway)
        .with_context(|| format!("the network has no gateway {gateway}"))?;
    let address: Multiaddr = run
        .listen_addr(&name)
        .with_context(|| format!("{name} has no address yet"))?
        .parse()?;
    let Some(Protocol::P2p(peer)) = address.iter().last() else {
        anyhow::bail!("{address} does not end in /p2p/");
    };
    Ok(Config {
        gateway: peer,
        gateway_addresses: vec![address],
        authorities,
        client: ClientConfig::default(),
        // Examples keep their state in memory: each run starts afresh.
        store: None,
    })
}

/// How many gateways the test network in `run_dir` has.
pub fn testnet_gateways(run_dir: &Path) -> Result<usize> {
    Ok(RunDir::open(run_dir)?.gateways().len())
}

/// The keys kept in `dir` (created on first use): the swarm identity, the client's own mixnet
/// key (its id at the gateway; kept apart from the swarm identity so that the address does not
/// name the dApp's peer) and the Noise key. The same directory gives the same address every run.
pub struct Keys {
    /// The swarm's libp2p identity.
    pub swarm: Keypair,
    /// Who the client is at its gateway.
    pub client: ClientIdentity,
    /// The end-to-end key.
    pub noise: StaticKey,
}

/// The mixnet client behaviour a dApp puts in its own swarm (what `examples/embed.rs` does),
/// with the keys in `dir`: returns the swarm identity to build the swarm with and the
/// behaviour. The dApp's swarm identity is its public name; the mixnet client has a key of its
/// own, so the behaviour's address does not say which peer owns it (the gateway still sees
/// which peer fetches the mailbox: a dApp that must hide that too runs
/// `p2pmix::client::Client` on a swarm with an identity of its own).
pub fn dapp_mixnet(dir: &Path, config: Config) -> Result<(Keypair, client::Behaviour)> {
    let k = keys(dir)?;
    let mixnet = client::Behaviour::new(k.swarm.public().to_peer_id(), k.client, k.noise, config)?;
    Ok((k.swarm, mixnet))
}

/// Loads or creates the [`Keys`] in `dir`.
pub fn keys(dir: &Path) -> Result<Keys> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Keys {
        swarm: load_or_create_identity(&dir.join(IDENTITY_FILE))?,
        client: ClientIdentity::Key(load_or_create_client_key(&dir.join(CLIENT_KEY_FILE))?),
        noise: load_or_create_static_key(&dir.join(NOISE_KEY_FILE))?,
    })
}
