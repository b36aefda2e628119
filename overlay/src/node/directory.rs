//! The node's side of the directory protocol: the [`DirectoryClient`]'s actions become requests
//! (descriptor uploads, consensus fetches), answers go back to it, verified documents are
//! installed and saved, and peers are served the documents the node holds.
//!
//! [`DirectoryClient`]: crate::directory::DirectoryClient

use std::{path::PathBuf, time::Duration};

use libp2p_request_response as request_response;
use metrics::counter;
use p2pmix_bootstrap::{MAX_ADDRESSES, PROTOCOL_VERSION, address::is_usable, sign_descriptor};
use p2pmix_proto::v1::{
    DirectoryRequest, DirectoryResponse, EpochKey, GetConsensus, NodeDescriptor, RefusalCode, Role,
    SignedConsensus, SignedDescriptor, directory_request::Request, directory_response::Response,
};
use prost::Message;
use tracing::{debug, info, warn};

use super::{
    Node,
    install::Installation,
    replay::{expected_rate, sizing},
};
use crate::{
    directory::{Action, UploadOutcome, answer_held},
    runtime::{Now, files::write_atomic},
};

/// Why no descriptor could be made for an upload (it is retried).
#[derive(Debug)]
enum NotReady {
    /// No address to announce: none given with `--announce`, and no public listen address
    /// (loopback and private ones count only on a test network).
    NoAddress,
    /// The epoch key could not be created.
    Key(super::keys::EpochKeyError),
    /// Signing failed.
    Signing,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoAddress => write!(
                f,
                "no address to announce: no public listen address (give --announce)"
            ),
            NotReady::Key(e) => write!(f, "epoch key: {e}"),
            NotReady::Signing => write!(f, "signing failed"),
        }
    }
}

impl Node {
    fn consensus_path(&self, epoch: u64) -> PathBuf {
        self.config.data_dir.join(format!("consensus-{epoch}.pb"))
    }

    /// Offers the documents saved by an earlier run (each is verified again; stale ones fail).
    pub(super) fn load_cached_consensus(&mut self, now: Now) {
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
            let conflicts = self.directory.conflicts();
            let outcome = offered.map(|s| self.directory.offer(now.unix_ms, s, None));
            self.count_conflicts(conflicts);
            match outcome {
                Some(Ok(Some(epoch))) => {
                    debug!(epoch, "using the saved consensus");
                    self.apply_consensus(now, epoch);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    /// Turns the directory client's actions into requests.
    pub(super) fn send_directory_requests(&mut self, now: Now) {
        while let Some(action) = self.directory.poll_action() {
            let target = match &action {
                Action::Upload { to, .. } => *to,
                Action::Fetch { from, .. } => *from,
            };
            // Request-response forgets an address after a failed dial; the configured
            // addresses of authorities must survive an authority's restart.
            for addr in self.config.authorities.addresses_of(&target) {
                self.swarm.add_peer_address(target, addr.clone());
            }
            let request = match &action {
                Action::Upload { epoch, to } => match self.descriptor(*epoch) {
                    Ok(signed) => Request::Descriptor(signed),
                    Err(reason) => {
                        debug!(epoch, %reason, "descriptor not ready");
                        self.directory.upload_done(
                            now.unix_ms,
                            *epoch,
                            *to,
                            UploadOutcome::Failed(reason.to_string()),
                        );
                        continue;
                    }
                },
                Action::Fetch { epoch, .. } => {
                    Request::GetConsensus(GetConsensus { epoch: *epoch })
                }
            };
            let id = self.swarm.behaviour_mut().directory.send_request(
                &target,
                DirectoryRequest {
                    request: Some(request),
                },
            );
            self.requests.insert(id, action);
        }
    }

    /// The addresses this node's descriptor carries: the announced ones, or else the listen
    /// addresses that other nodes can dial (public ones; on a test network loopback and
    /// private ones too). Never an unspecified, unsupported or (off a test network) local one.
    pub(super) fn announced_addresses(&self) -> Vec<String> {
        let test_network = self.config.authorities.test_network;
        let source = if self.config.announce.is_empty() {
            &self.listen_addrs
        } else {
            &self.config.announce
        };
        let mut addresses: Vec<String> = source
            .iter()
            .filter(|a| is_usable(a, test_network))
            .map(|a| a.to_string())
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses.truncate(MAX_ADDRESSES);
        addresses
    }

    /// This node's signed descriptor for `epoch` (creating and saving that epoch's key).
    fn descriptor(&mut self, epoch: u64) -> Result<SignedDescriptor, NotReady> {
        let addresses = self.announced_addresses();
        if addresses.is_empty() {
            return Err(NotReady::NoAddress);
        }
        let key = self
            .keys
            .public_key_for(epoch, &mut self.rng)
            .map_err(NotReady::Key)?;
        let descriptor = NodeDescriptor {
            epoch,
            identity: self.keypair.public().encode_protobuf(),
            addresses,
            role: Role::from(self.config.role) as i32,
            sphinx_keys: vec![EpochKey {
                epoch,
                sphinx_public_key: key.to_bytes().to_vec(),
            }],
            software_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            family: self.config.family.clone(),
        };
        sign_descriptor(&self.keypair, &descriptor).ok_or(NotReady::Signing)
    }

    /// Exports the conflicts the directory client met since it counted `before`.
    fn count_conflicts(&self, before: u64) {
        let new = self.directory.conflicts().saturating_sub(before);
        if new > 0 {
            counter!("p2pmix_consensus_conflicts_total").increment(new);
        }
    }

    /// Installs the consensus of `epoch` (see [`Installation`]) and saves it.
    fn apply_consensus(&mut self, now: Now, epoch: u64) {
        let Some(consensus) = self.directory.consensus(epoch) else {
            return;
        };
        let newest = self.directory.newest().map(|c| c.epoch()) == Some(epoch);
        let installation = Installation::of(consensus, &self.me, newest);
        let replay_rate = expected_rate(
            &self.config.replay,
            &consensus.parameters(),
            installation.topology.len(),
            installation.mixes,
            self.observed_rate(now),
        );
        let signed = consensus.signed().encode_to_vec();
        self.relay.set_topology(epoch, installation.topology);
        if self.installed.insert(epoch) {
            let (mixes, gateways) = (installation.mixes, installation.gateways);
            match installation.layer {
                Some(layer) => info!(epoch, mixes, gateways, layer, "consensus: admitted"),
                None => info!(epoch, mixes, gateways, "consensus: this node is not in it"),
            }
        }
        self.installed.retain(|e| *e + 3 > epoch);
        self.final_senders
            .insert(epoch, installation.last_layer.clone());
        let installed = &self.installed;
        self.final_senders.retain(|e, _| installed.contains(e));
        let behaviour = self.swarm.behaviour_mut();
        if self.gateway.is_some() {
            // Deliveries to clients come from the last layer of a consensus in use, or not at
            // all.
            let senders = self.final_senders.values().flatten().copied().collect();
            behaviour.mix.set_final_senders(Some(senders));
        }
        // Addresses of peers that left every held consensus are no longer needed for relaying.
        let relay = self.relay.clone();
        behaviour.mix.retain_addresses(|p| relay.is_node(p));
        // Nodes of a held consensus always get in: a flood of throwaway identities may fill the
        // cap on incoming connections, but not keep the mix layers apart.
        behaviour.limits.set_exempt(relay.nodes());
        for (peer, addr) in installation.addresses {
            behaviour.mix.add_address(peer, addr.clone());
            behaviour.kad.add_address(&peer, addr);
        }
        if let Some(limits) = installation.limits {
            self.relay.set_max_delay(limits.max_delay);
            behaviour
                .mix
                .set_client_rate(limits.client_rate.rate, limits.client_rate.burst);
            // Filters of keys made from now on carry what this consensus and this node's own
            // traffic say a key will see.
            let epoch_length = Duration::from_millis(self.config.schedule.period_ms());
            self.relay
                .with_keys(|ring| ring.set_replay_config(sizing(replay_rate, epoch_length)));
            debug!(epoch, rate = replay_rate, "replay filters sized");
        }
        if let Err(e) = write_atomic(&self.consensus_path(epoch), &signed) {
            warn!(%e, "could not save the consensus");
        }
        let current = self.config.schedule.epoch_at(now.unix_ms);
        for old in current.saturating_sub(3)..epoch.saturating_sub(3) {
            let _ = std::fs::remove_file(self.consensus_path(old));
        }
    }

    /// Fresh packets per second under the current key so far this epoch, once a tenth of the
    /// epoch has passed.
    fn observed_rate(&self, now: Now) -> Option<f64> {
        let schedule = &self.config.schedule;
        let epoch = schedule.epoch_at(now.unix_ms);
        let elapsed_ms = now.unix_ms.saturating_sub(schedule.start_of(epoch));
        if elapsed_ms < schedule.period_ms() / 10 || elapsed_ms == 0 {
            return None;
        }
        let tags = self
            .relay
            .read_keys(|ring| ring.for_epoch(epoch).map(|k| k.replay_cache().len()))?;
        Some(tags as f64 / (elapsed_ms as f64 / 1e3))
    }

    /// Requests from peers (documents served from what this node holds) and answers to this
    /// node's own requests.
    pub(super) fn handle_directory_event(
        &mut self,
        now: Now,
        event: request_response::Event<DirectoryRequest, DirectoryResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = answer_held(&self.directory, request);
                debug!(%peer, "answered a directory request");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .directory
                    .send_response(channel, response);
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
                            warn!(epoch, authority = %to, code = ?r.code(), reason = %r.reason, "descriptor refused");
                            UploadOutcome::Failed(r.reason)
                        }
                        _ => UploadOutcome::Failed("unexpected answer".into()),
                    };
                    self.directory.upload_done(now.unix_ms, epoch, to, outcome);
                }
                Some(Action::Fetch { epoch, .. }) => {
                    let offered = match response.response {
                        Some(Response::Consensus(c)) => Some(c),
                        _ => None,
                    };
                    let conflicts = self.directory.conflicts();
                    let outcome = self.directory.fetch_done(now.unix_ms, epoch, offered);
                    self.count_conflicts(conflicts);
                    match outcome {
                        Ok(Some(e)) => {
                            info!(epoch = e, from = %peer, "consensus fetched and verified");
                            self.apply_consensus(now, e);
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
                        now.unix_ms,
                        epoch,
                        to,
                        UploadOutcome::Failed(error.to_string()),
                    );
                }
                Some(Action::Fetch { epoch, .. }) => {
                    debug!(epoch, %peer, "consensus fetch failed: {error}");
                    let _ = self.directory.fetch_done(now.unix_ms, epoch, None);
                }
                None => {}
            },
            _ => {}
        }
    }
}
