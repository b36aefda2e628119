//! The one transport stack every p2pmix process uses.

use std::time::Duration;

use libp2p_core::{
    Multiaddr, Transport,
    muxing::StreamMuxerBox,
    transport::{TransportError, timeout::TransportTimeout},
    upgrade,
};
use libp2p_identity::Keypair;
use libp2p_noise as noise;
use libp2p_swarm::NetworkBehaviour;
use libp2p_swarm::Swarm;
use libp2p_tcp as tcp;
use libp2p_yamux as yamux;
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
    build_swarm_with_idle_timeout(keypair, IDLE_CONNECTION_TIMEOUT, behaviour)
}

/// How long a connection no handler needs stays open ([`build_swarm`]'s default).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// [`build_swarm`] with connections closed after `idle` without use (an authority's are
/// short: an outsider must not hold a slot for free).
pub fn build_swarm_with_idle_timeout<B: NetworkBehaviour>(
    keypair: Keypair,
    idle: Duration,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, SwarmError> {
    // What libp2p's `SwarmBuilder` assembles, from the sub-crates themselves (the facade would
    // bring crates we do not use): TCP, upgraded with Noise and yamux (lazy multistream-select:
    // the first frame goes out with the negotiation), optionally QUIC beside it, DNS around both,
    // and a 10 s bound on every connection's setup.
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(&keypair)?)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    #[cfg(feature = "quic")]
    let tcp = tcp
        .or_transport(
            libp2p_quic::tokio::Transport::new(libp2p_quic::Config::new(&keypair))
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))),
        )
        .map(|either, _| either.into_inner());
    let transport = libp2p_dns::tokio::Transport::system(tcp)?;
    let transport = TransportTimeout::new(transport, CONNECTION_TIMEOUT).boxed();
    let peer = keypair.public().to_peer_id();
    let config = libp2p_swarm::Config::with_tokio_executor().with_idle_connection_timeout(idle);
    Ok(Swarm::new(transport, behaviour(&keypair), peer, config))
}

/// How long a connection's setup (TCP, Noise, yamux) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

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
