//! The one transport stack every p2pmix process uses.

use std::time::Duration;

use libp2p::{
    Multiaddr, Swarm, TransportError, identity::Keypair, noise, swarm::NetworkBehaviour, tcp, yamux,
};
use thiserror::Error;

/// Why a swarm could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The Noise handshake could not be set up with this identity.
    #[error("noise: {0}")]
    Noise(#[from] noise::Error),
    /// The system's DNS configuration could not be read.
    #[error("dns resolver: {0}")]
    Dns(#[from] std::io::Error),
}

/// Builds the swarm every p2pmix process uses: TCP with Noise and yamux (and QUIC with the
/// `quic` feature; listen on `/udp/0/quic-v1` to use it), and DNS multiaddrs (`/dns`, `/dns4`,
/// `/dns6`) resolved with the system's resolver configuration. Connections stay open for an hour
/// of idleness: mix links carry traffic in bursts and redialling costs a handshake.
pub fn build_swarm<B: NetworkBehaviour>(
    keypair: Keypair,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, SwarmError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let builder = builder.with_dns()?;
    let builder = match builder.with_behaviour(|key| behaviour(key)) {
        Ok(b) => b,
        Err(never) => match never {},
    };
    Ok(builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

/// An address a swarm could not listen on.
#[derive(Debug, Error)]
#[error("listen on {address}: {source}")]
pub struct ListenError {
    /// The address.
    pub address: Multiaddr,
    /// Why.
    #[source]
    pub source: TransportError<std::io::Error>,
}

/// Starts listening on every address of `addresses`; the first that fails is the error.
pub fn listen_on_all<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    addresses: &[Multiaddr],
) -> Result<(), ListenError> {
    for address in addresses {
        swarm
            .listen_on(address.clone())
            .map_err(|source| ListenError {
                address: address.clone(),
                source,
            })?;
    }
    Ok(())
}
