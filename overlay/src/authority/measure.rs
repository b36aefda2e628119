//! The authority's measurement traffic on the network: the sans-IO [`Measurer`] on a swarm of
//! its own.
//!
//! The measurer has an identity of its own (not the authority's: a mix must not tell an
//! authority's probes from any client's loop cover by who registered the mailbox), kept in
//! `measure-identity` in the data directory, and like a client a client key of its own
//! (`measure-client.key`): its mailboxes are filed under that key's id, and each fetch proves
//! the key for its connection, as a client's does. Like a client it speaks only the client side
//! of two protocols: a send-only Sphinx [`Link`] to gateways, and mailbox fetches at every
//! gateway of the consensus in force (a fetch registers its mailbox there; a gateway takes
//! probes only while a fetch at it is under way, or their returns would be refused and counted
//! against it). Returned probes come back as mailbox items; their labels go to the measurer,
//! and each is acknowledged with the next fetch (the measurer keeps nothing on disk).
//! Before each vote the authority's driver asks [`MeasureDriver::reports`] for what goes into
//! the vote and into the `p2pmix_measure_*{node}` gauges, the latest vote's nodes alone
//! ([`Measuring`]: the glue between the two, one turn before the core's).

use std::{collections::HashMap, time::Instant};

use futures::StreamExt;
use libp2p_core::Multiaddr;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use libp2p_request_response::{self as request_response, OutboundRequestId};
use libp2p_swarm::Swarm;
use libp2p_swarm::SwarmEvent;
use p2pmix_bootstrap::{
    Authority, EpochSchedule, Now, PinnedAuthorities, VerifiedConsensus, peer_id,
    verify_signed_consensus,
};
use p2pmix_mix::link::Link;
use p2pmix_proto::v1::MailboxResponse;
use rand::{SeedableRng, rngs::StdRng};
use tracing::{debug, info};

use super::AuthorityNodeError;
use crate::{
    config::AuthorityConfigFile,
    identity::{load_or_create_client_key, load_or_create_identity},
    mailbox::{ClientKey, MailboxFetcher, PullRate, mailbox_behaviour},
    measure::{MeasureConfig, MeasureStats, MeasuredNetwork, Measurer, NodeReport},
    runtime::{SwarmError, build_swarm, replaced::ReplacedGauges},
};

pub use behaviour::{MeasureBehaviour, MeasureBehaviourEvent};

#[allow(missing_docs)] // the derive generates an undocumented event enum
mod behaviour {
    use libp2p_swarm::NetworkBehaviour;
    use p2pmix_mix::link::Link;

    use crate::mailbox::MailboxBehaviour;

    /// The protocols the measurer speaks: those of a client.
    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct MeasureBehaviour {
        /// Send-only Sphinx to gateways.
        pub link: Link,
        /// Mailbox fetches at gateways.
        pub mailbox: MailboxBehaviour,
    }
}

/// One gateway's mailbox, as the measurer fetches it.
#[derive(Debug)]
struct GatewayMailbox {
    fetcher: MailboxFetcher,
    request: Option<OutboundRequestId>,
}

/// The measurer on its swarm. See the module documentation.
pub struct MeasureDriver {
    swarm: Swarm<MeasureBehaviour>,
    client: ClientKey,
    measurer: Measurer,
    mailboxes: HashMap<PeerId, GatewayMailbox>,
    installed: Option<u64>,
    rng: StdRng,
}

impl std::fmt::Debug for MeasureDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasureDriver")
            .field("installed", &self.installed)
            .field("gateways", &self.mailboxes.len())
            .field("stats", &self.measurer.stats())
            .finish_non_exhaustive()
    }
}

impl MeasureDriver {
    /// A measurer with swarm identity `keypair` and client key `client` (its client id at the
    /// gateways, proved with every fetch).
    pub fn start(
        keypair: Keypair,
        client: ClientKey,
        config: MeasureConfig,
        now: Instant,
    ) -> Result<Self, SwarmError> {
        let me = client.client_id();
        let swarm = build_swarm(keypair, |_| MeasureBehaviour {
            link: Link::default(),
            mailbox: mailbox_behaviour(false),
        })?;
        Ok(MeasureDriver {
            swarm,
            client,
            measurer: Measurer::new(config, me, now),
            mailboxes: HashMap::new(),
            installed: None,
            rng: StdRng::from_rng(&mut rand::rng()),
        })
    }

    /// The measurer's counters.
    pub fn stats(&self) -> MeasureStats {
        self.measurer.stats()
    }

    /// The epoch of the consensus probed, once there is one.
    pub fn installed(&self) -> Option<u64> {
        self.installed
    }

    /// Probes the nodes of `consensus` (the one in force) from now on; its gateways' mailboxes
    /// are fetched, those that left are dropped.
    pub fn install(&mut self, consensus: &VerifiedConsensus, now: Instant) {
        if self.installed == Some(consensus.epoch()) {
            return;
        }
        let network = MeasuredNetwork::from_consensus(consensus);
        let gateways: Vec<PeerId> = network
            .topology()
            .gateways()
            .iter()
            .map(|g| g.peer)
            .collect();
        for node in consensus.nodes() {
            let Some(peer) = peer_id(node) else { continue };
            if !gateways.contains(&peer) {
                continue;
            }
            for a in node
                .addresses
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
            {
                self.swarm.behaviour_mut().link.add_address(peer, a.clone());
                self.swarm.add_peer_address(peer, a);
            }
        }
        self.mailboxes.retain(|peer, _| gateways.contains(peer));
        // Pulled at the pace clients pull at (the consensus's constant rate, or the long poll).
        let rate = PullRate::from_parameters(&consensus.parameters());
        for g in &gateways {
            self.mailboxes
                .entry(*g)
                .or_insert_with(|| GatewayMailbox {
                    fetcher: MailboxFetcher::new(now, rate),
                    request: None,
                })
                .fetcher
                .set_rate(rate);
        }
        self.measurer.set_network(Some(network));
        self.installed = Some(consensus.epoch());
        info!(
            epoch = consensus.epoch(),
            gateways = gateways.len(),
            "measurer: consensus installed"
        );
    }

    /// When [`MeasureDriver::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.mailboxes
            .values()
            .filter_map(|m| m.fetcher.poll_timeout())
            .chain(self.measurer.poll_timeout())
            .min()
    }

    /// Sends the probes and the mailbox fetches that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let local = *self.swarm.local_peer_id();
        for (gateway, mailbox) in &mut self.mailboxes {
            mailbox.fetcher.handle_timeout(now);
            if let Some(mut request) = mailbox.fetcher.poll_request() {
                (request.client_key, request.client_signature) = self.client.prove(gateway, &local);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .mailbox
                    .send_request(gateway, request);
                mailbox.request = Some(id);
                // The fetch registers the mailbox there; a probe sent now reaches the gateway
                // again only after its mix delays, long after the fetch (the gateway holds a
                // fetch open while nothing waits, so its answer is no signal to wait for).
                self.measurer.set_gateway_ready(*gateway, true);
            }
        }
        let before = self.measurer.stats();
        self.measurer.handle_timeout(now, &mut self.rng);
        while let Some((gateway, packet)) = self.measurer.poll_transmit() {
            self.swarm.behaviour_mut().link.send(gateway, packet);
        }
        let sent = self.measurer.stats().sent - before.sent;
        if sent > 0 {
            metrics::counter!("p2pmix_measure_probes_sent_total").increment(sent);
        }
    }

    /// The next event of the measurer's swarm (cancel-safe: for `tokio::select!`).
    pub async fn next_event(&mut self) -> SwarmEvent<MeasureBehaviourEvent> {
        self.swarm.select_next_some().await
    }

    /// Takes one swarm event: mailbox answers (returned probes), failures.
    pub fn handle_event(&mut self, event: SwarmEvent<MeasureBehaviourEvent>, now: Instant) {
        match event {
            SwarmEvent::Behaviour(MeasureBehaviourEvent::Mailbox(
                request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                },
            )) => self.on_answer(peer, request_id, Some(response), now),
            SwarmEvent::Behaviour(MeasureBehaviourEvent::Mailbox(
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                },
            )) => {
                debug!(%peer, %error, "measurer: mailbox fetch failed");
                self.on_answer(peer, request_id, None, now);
            }
            _ => {}
        }
    }

    fn on_answer(
        &mut self,
        gateway: PeerId,
        request_id: OutboundRequestId,
        response: Option<MailboxResponse>,
        now: Instant,
    ) {
        let Some(mailbox) = self.mailboxes.get_mut(&gateway) else {
            return;
        };
        if mailbox.request != Some(request_id) {
            return;
        }
        mailbox.request = None;
        // A gateway whose fetch failed or was refused stays probed: the returns it does not
        // hand over are lost and count against it. Taking it out of the probe routes instead let
        // a gateway that refuses the measurer go unmeasured, on probation for ever.
        let Some(response) = response else {
            mailbox.fetcher.handle_failure(now);
            return;
        };
        match mailbox.fetcher.handle_response(now, response) {
            Ok(items) => {
                let mut returned = 0;
                for item in items {
                    if self.measurer.handle_delivery(now, &item.label) {
                        returned += 1;
                    }
                    // Taken: nothing to make durable first.
                    mailbox.fetcher.processed(item.seq);
                }
                if returned > 0 {
                    metrics::counter!("p2pmix_measure_probes_returned_total").increment(returned);
                }
            }
            Err(failure) => {
                debug!(%gateway, ?failure, "measurer: the gateway did not answer the fetch");
            }
        }
    }

    /// What this authority measured over the window, node by node, for its vote.
    pub fn reports(&mut self, now: Instant) -> Vec<NodeReport> {
        let reports = self.measurer.report(now);
        info!(
            nodes = reports.len(),
            sent = self.measurer.stats().sent,
            returned = self.measurer.stats().returned,
            "measurer: measurements for the vote"
        );
        reports
    }
}

/// The measurer as the authority's driver runs it: it probes the consensus in force, and hands
/// its measurements to the core once per vote, when the vote is due.
#[derive(Debug)]
pub(super) struct Measuring {
    driver: MeasureDriver,
    pinned: PinnedAuthorities,
    schedule: EpochSchedule,
    /// The vote (by its due time) whose measurements were handed in.
    measured_for: Option<u64>,
    /// Where the latest reports are exported, labelled by node.
    gauges: ReplacedGauges,
}

/// The latest reports as `p2pmix_measure_*{node}`: the nodes of this vote's reports alone (a
/// recorder gauge would keep every node ever measured, each churned identity included).
fn export_reports(gauges: &ReplacedGauges, reports: &[NodeReport]) {
    let by_node = |value: fn(&NodeReport) -> u32| {
        reports
            .iter()
            .map(|r| (r.peer.to_string(), f64::from(value(r))))
            .collect()
    };
    gauges.replace(
        "p2pmix_measure_delivery_permille",
        "Delivery through the node relative to the upper quartile of its layer, per mille, as this authority measured it for its latest vote.",
        "node",
        by_node(|r| r.delivery_permille),
    );
    gauges.replace(
        "p2pmix_measure_delay_p90_ms",
        "90th percentile of the delay the node added to this authority's probes, milliseconds, for its latest vote.",
        "node",
        by_node(|r| r.delay_p90_ms),
    );
}

impl Measuring {
    /// The measurer, if the network parameters ask for measurement (its identity is read from
    /// or created in `measure-identity`).
    pub(super) fn start(
        config: &AuthorityConfigFile,
        pinned: PinnedAuthorities,
        gauges: ReplacedGauges,
        now: Instant,
    ) -> Result<Option<Self>, AuthorityNodeError> {
        let Some(measure_config) =
            MeasureConfig::from_parameters(&config.parameters, config.schedule.period_ms())
        else {
            return Ok(None);
        };
        let identity = load_or_create_identity(&config.data_dir.join("measure-identity"))?;
        let client = load_or_create_client_key(&config.data_dir.join("measure-client.key"))?;
        info!(measurer = %identity.public().to_peer_id(), "health measurement on");
        Ok(Some(Measuring {
            driver: MeasureDriver::start(identity, client, measure_config, now)?,
            pinned,
            schedule: config.schedule,
            measured_for: None,
            gauges,
        }))
    }

    /// One turn, before the core's: installs the consensus in force once the core holds it,
    /// hands the measurements in when the vote is due (once per vote), sends what is due.
    pub(super) fn turn(&mut self, authority: &mut Authority, now: Now) {
        let epoch = self.schedule.epoch_at(now.unix_ms);
        if self.driver.installed() != Some(epoch)
            && let Some(signed) = authority.consensus(Some(epoch))
            && let Ok(verified) =
                verify_signed_consensus(signed.clone(), &self.pinned, now.unix_ms, Some(epoch))
        {
            self.driver.install(&verified, now.mono);
        }
        if let Some(due) = authority.vote_due_ms()
            && now.unix_ms >= due
            && self.measured_for != Some(due)
        {
            let reports = self.driver.reports(now.mono);
            export_reports(&self.gauges, &reports);
            authority.set_measurements(NodeReport::to_measurements(&reports));
            self.measured_for = Some(due);
        }
        self.driver.handle_timeout(now.mono);
    }

    /// When [`Measuring::turn`] next has work.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.driver.poll_timeout()
    }

    /// Takes one event of the measurer's swarm.
    pub(super) fn handle_event(&mut self, event: SwarmEvent<MeasureBehaviourEvent>, now: Instant) {
        self.driver.handle_event(event, now);
    }
}

/// The next event of the measurer's swarm, or never without one (for `tokio::select!`).
pub(super) async fn next_measure_event(
    measuring: &mut Option<Measuring>,
) -> SwarmEvent<MeasureBehaviourEvent> {
    match measuring {
        Some(m) => m.driver.next_event().await,
        None => std::future::pending().await,
    }
}
