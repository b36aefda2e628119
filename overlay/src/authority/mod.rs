//! The authority's driver: the sans-IO [`Authority`] on a libp2p swarm and the clock.
//!
//! The swarm carries `/p2pmix/dir/1.0.0` (requests from nodes and from other authorities) and
//! identify (so that authorities that dialed us can be dialed back). State is written to the
//! data directory after every change; each published consensus is written as
//! `consensus-<epoch>.pb` (the encoded `SignedConsensus`), and `listen-addrs` holds the
//! addresses the swarm listens on. With a metrics address, `/metrics` has the authority's
//! counters ([`metrics`]), `/health` says the loop turns and `/ready` that it holds this epoch's
//! consensus.

pub mod metrics;

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, identify, identity::Keypair, request_response, swarm::SwarmEvent,
};
use p2pmix_bootstrap::{Authority, AuthorityConfig, Event, Now, directory_behaviour};
use p2pmix_proto::v1::{
    Accepted, AuthorityState, Consensus, DirectoryRequest, DirectoryResponse,
    directory_request::Request, directory_response::Response,
};
use prost::Message;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::{
    config::AuthorityConfigFile,
    directory::not_held,
    runtime::{
        ListenError, SwarmError, build_swarm,
        files::{FileError, create_dir, write_atomic},
        listen_on_all,
        metrics::{self as metrics_endpoint, MetricsError},
        status::{Readiness, Status},
    },
};

/// Why an authority stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthorityNodeError {
    /// Reading or writing the data directory failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The swarm could not be built.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The swarm could not listen on an address.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// This authority's key is not in the pinned authorities file.
    #[error("this authority ({0}) is not in the authorities file")]
    NotPinned(PeerId),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

pub use behaviour::{AuthorityBehaviour, AuthorityBehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p::{identify, swarm::NetworkBehaviour};
    use p2pmix_bootstrap::DirectoryBehaviour;

    /// Behaviours of an authority's swarm.
    #[derive(NetworkBehaviour)]
    pub struct AuthorityBehaviour {
        /// `/p2pmix/dir/1.0.0`.
        pub directory: DirectoryBehaviour,
        /// Learns the listen addresses of peers.
        pub identify: identify::Behaviour,
    }
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
    let mut metrics_task = None;
    if let Some(addr) = config.metrics {
        let handle = metrics_endpoint::install_recorder()?;
        metrics_endpoint::export_build_info();
        let (bound, task) = metrics_endpoint::serve(addr, handle, status.clone()).await?;
        write_atomic(
            &config.data_dir.join("metrics-addr"),
            format!("{bound}\n").as_bytes(),
        )?;
        info!(%bound, "metrics at http://{bound}/metrics, status at /health and /ready");
        metrics_task = Some(AbortOnDrop(task));
    }
    let _metrics_task = metrics_task;
    let state_path = config.data_dir.join("state.pb");
    let core_config = AuthorityConfig {
        keypair: keypair.clone(),
        authorities: pinned,
        schedule: config.schedule,
        parameters: config.parameters,
    };
    let now = Now::system();
    let mut authority = match std::fs::read(&state_path) {
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

    let mut swarm = build_swarm(keypair.clone(), |key| AuthorityBehaviour {
        directory: directory_behaviour(true, Duration::from_secs(10)),
        identify: identify::Behaviour::new(identify::Config::new(
            "/p2pmix/id/1.0.0".into(),
            key.public(),
        )),
    })?;
    listen_on_all(&mut swarm, &config.listen)?;
    let peers: Vec<PeerId> = config
        .authorities
        .entries
        .iter()
        .map(|e| e.peer_id)
        .filter(|p| *p != me)
        .collect();
    for entry in &config.authorities.entries {
        if entry.peer_id != me {
            for addr in &entry.addresses {
                swarm.add_peer_address(entry.peer_id, addr.clone());
            }
        }
    }
    info!(peer_id = %me, epoch = authority.round_epoch(), "authority started");

    let mut rng = rand::rng();
    let mut listen_addrs: Vec<Multiaddr> = Vec::new();
    let mut known: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    let mut redial = tokio::time::interval(Duration::from_secs(2));
    // Decoded again only when the core reported something (a consensus may have been published).
    let mut newest = newest_epoch(&authority);
    tokio::pin!(shutdown);
    loop {
        let now = Now::system();
        status.turned(now.mono);
        authority.handle_timeout(now, &mut rng);
        if flush(
            &mut authority,
            &mut swarm,
            &peers,
            &config.data_dir,
            &state_path,
        )? {
            newest = newest_epoch(&authority);
        }
        let epoch = config.schedule.epoch_at(now.unix_ms);
        status.set_readiness(Readiness::of_authority(epoch, newest));
        let connected = peers.iter().filter(|p| swarm.is_connected(p)).count();
        metrics::export(&authority, epoch, connected);
        let latest = now.mono + Duration::from_secs(60);
        let wake = authority.poll_timeout().map_or(latest, |at| at.min(latest));
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down");
                write_state(&state_path, &authority)?;
                return Ok(());
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = redial.tick() => {
                for peer in &peers {
                    if !swarm.is_connected(peer) && (known.contains_key(peer) || config.authorities.entries.iter().any(|e| e.peer_id == *peer && !e.addresses.is_empty())) {
                        let _ = swarm.dial(*peer);
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    info!(%address, "listening");
                    listen_addrs.push(address);
                    let text: String = listen_addrs.iter().map(|a| format!("{a}\n")).collect();
                    write_atomic(&config.data_dir.join("listen-addrs"), text.as_bytes())?;
                }
                SwarmEvent::Behaviour(AuthorityBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in &info.listen_addrs {
                        swarm.add_peer_address(peer_id, addr.clone());
                    }
                    known.insert(peer_id, info.listen_addrs);
                }
                SwarmEvent::Behaviour(AuthorityBehaviourEvent::Directory(request_response::Event::Message {
                    peer,
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => {
                    // Read after the wait: the request is judged at the time it arrived.
                    let response = answer(&mut authority, Now::system(), peer, request);
                    if matches!(response.response, Some(Response::Accepted(_))) {
                        write_state(&state_path, &authority)?;
                    }
                    let _ = swarm.behaviour_mut().directory.send_response(channel, response);
                }
                SwarmEvent::Behaviour(AuthorityBehaviourEvent::Directory(request_response::Event::OutboundFailure { peer, error, .. })) => {
                    debug!(%peer, %error, "request to peer failed");
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => debug!(%peer_id, "connected"),
                SwarmEvent::ConnectionClosed { peer_id, .. } => debug!(%peer_id, "disconnected"),
                _ => {}
            }
        }
    }
}

/// Answers one directory request.
fn answer(
    authority: &mut Authority,
    now: Now,
    peer: PeerId,
    request: DirectoryRequest,
) -> DirectoryResponse {
    let response = match request.request {
        Some(Request::GetConsensus(get)) => {
            let epoch = (get.epoch != 0).then_some(get.epoch);
            let held = authority.consensus(epoch);
            metrics::count_consensus_request(held.is_some());
            match held {
                Some(c) => Response::Consensus(c.clone()),
                None => not_held(),
            }
        }
        _ => {
            let kind = metrics::request_kind(&request);
            let result = authority.handle_request(now, request);
            metrics::count_request(kind, &result);
            match result {
                Ok(()) => Response::Accepted(Accepted {}),
                Err(e) => {
                    debug!(%peer, reason = e.reason(), "refused: {e}");
                    Response::Refused(e.to_refused())
                }
            }
        }
    };
    DirectoryResponse {
        response: Some(response),
    }
}

/// Sends what the core wants sent, reports its events, persists its state; says whether there
/// was anything.
fn flush(
    authority: &mut Authority,
    swarm: &mut Swarm<AuthorityBehaviour>,
    peers: &[PeerId],
    data_dir: &Path,
    state_path: &Path,
) -> Result<bool, AuthorityNodeError> {
    let mut changed = false;
    while let Some(message) = authority.poll_transmit() {
        changed = true;
        for peer in peers {
            swarm
                .behaviour_mut()
                .directory
                .send_request(peer, message.clone());
        }
    }
    while let Some(event) = authority.poll_event() {
        changed = true;
        metrics::count_event(&event);
        match event {
            Event::Published {
                epoch,
                digest,
                signatures,
            } => {
                info!(epoch, signatures, digest = %hex::encode(&digest[..8]), "consensus published");
                if let Some(signed) = authority.consensus(Some(epoch)) {
                    write_atomic(
                        &data_dir.join(format!("consensus-{epoch}.pb")),
                        &signed.encode_to_vec(),
                    )?;
                }
            }
            Event::SignaturesAdded { epoch, signatures } => {
                debug!(
                    epoch,
                    signatures, "more signatures on the published consensus"
                );
                if let Some(signed) = authority.consensus(Some(epoch)) {
                    write_atomic(
                        &data_dir.join(format!("consensus-{epoch}.pb")),
                        &signed.encode_to_vec(),
                    )?;
                }
            }
            Event::Failed { epoch, reason } => {
                warn!(epoch, "no consensus for epoch {epoch}: {reason}");
            }
            other => debug!(?other, "authority event"),
        }
    }
    if changed {
        write_state(state_path, authority)?;
    }
    Ok(changed)
}

/// The epoch of the newest consensus the authority holds.
fn newest_epoch(authority: &Authority) -> Option<u64> {
    let signed = authority.consensus(None)?;
    Consensus::decode(&signed.consensus[..])
        .ok()
        .map(|c| c.epoch)
}

/// Writes the authority's state (counted in the metrics).
fn write_state(path: &Path, authority: &Authority) -> Result<(), FileError> {
    let bytes = authority.state().encode_to_vec();
    write_atomic(path, &bytes)?;
    metrics::count_state_write(bytes.len());
    Ok(())
}

/// Aborts the metrics task however the authority's loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
