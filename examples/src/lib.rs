//! Runnable programs for p2pmix users; see the `examples/` folder of this package. Each example's
//! first doc comment says how to run it.
//!
//! The examples that talk through a network use one started by `./testnet/run.sh --keep`: its
//! run directory holds the pinned authorities file and every gateway's address.

pub mod anonymity;
pub mod chart;
pub mod plot;

use std::path::Path;

use anyhow::{Context, Result};
use libp2p::{Multiaddr, identity::Keypair, multiaddr::Protocol};
use p2pmix::{
    client::{ClientConfig, Config, StaticKey},
    config::Authorities,
    identity::{IDENTITY_FILE, NOISE_KEY_FILE, load_or_create_identity, load_or_create_static_key},
};

/// The client configuration for gateway number `gateway` of the testnet in `run_dir`.
pub fn testnet_config(run_dir: &Path, gateway: usize) -> Result<Config> {
    let authorities = Authorities::load(&run_dir.join("authorities.toml")).with_context(|| {
        format!(
            "{} is not a testnet run directory (start one with ./testnet/run.sh --keep)",
            run_dir.display()
        )
    })?;
    let listen = run_dir.join(format!("gw{gateway}/data/listen-addrs"));
    let address: Multiaddr = std::fs::read_to_string(&listen)
        .with_context(|| format!("reading {}", listen.display()))?
        .lines()
        .next()
        .context("the gateway has no address yet")?
        .parse()?;
    let Some(Protocol::P2p(peer)) = address.iter().last() else {
        anyhow::bail!("{address} does not end in /p2p/");
    };
    Ok(Config {
        gateway: peer,
        gateway_addresses: vec![address],
        authorities,
        client: ClientConfig::default(),
    })
}

/// The swarm identity and Noise key kept in `dir` (created on first use): the same directory
/// gives the same address every run.
pub fn keys(dir: &Path) -> Result<(Keypair, StaticKey)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((
        load_or_create_identity(&dir.join(IDENTITY_FILE))?,
        load_or_create_static_key(&dir.join(NOISE_KEY_FILE))?,
    ))
}
