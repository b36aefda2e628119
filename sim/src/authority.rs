//! Directory authorities on the simulated network: an [`AuthorityActor`] is one authority's
//! sans-IO [`Authority`], driven the way the authority node drives it, with no swarm and no
//! disk.
//!
//! Every request that arrives is answered to its sender, as the node answers on
//! `/p2pmix/dir/1.0.0` (`GetConsensus` from the documents held, anything else by
//! [`Authority::handle_request`]); whatever the authority wants sent to the other authorities
//! ([`Authority::poll_transmit`]) goes to each of its peers, and what it reports
//! ([`Authority::poll_event`]) is kept with the time; documents that come back in answer are
//! offered to it ([`Authority::handle_consensus`]), as the node offers them. The message type is the test's: anything
//! that implements [`DirectoryMessage`] ([`AuthorityMessage`] is the plain one), so that nodes,
//! clients or a test's own actors can upload descriptors and fetch documents over the same
//! links as the authorities' votes, next to relays carrying packets.
//!
//! An actor can be stopped and started again ([`AuthorityActor::stop`],
//! [`AuthorityActor::start`]): a stopped authority runs no timers and drops what arrives, while
//! its generator and its record of events live on, like a process that restarts on the same
//! machine.
//!
//! The authority's reachability checks ([`Authority::poll_reach_check`]) are answered at once by
//! the actor's [`Reachability`] (every node answers unless the test says otherwise), with the
//! first literal IP address of the node as the address reached. Requests from other authorities
//! come with [`Origin::Authority`]; from an actor given an address with
//! [`AuthorityActor::set_source`] with that address; from any other with [`Origin::Local`].

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use libp2p_identity::PeerId;
use p2pmix_bootstrap::{
    Authority, AuthorityConfig, Event, Now, Origin, ReachOutcome, Rejection, address::literal_ip,
};
use p2pmix_proto::v1::{
    Accepted, DirectoryRequest, DirectoryResponse, RefusalCode, Refused,
    directory_request::Request, directory_response::Response,
};
use rand_chacha::ChaCha20Rng;

use crate::{Actor, ActorId, Ctx, Sim};

/// A message type that carries directory requests and their answers. [`AuthorityMessage`] is
/// the plain one; a test with more kinds of message (Sphinx packets, say) implements this for
/// its own enum.
pub trait DirectoryMessage: Sized + 'static {
    /// A request, for an authority.
    fn request(request: DirectoryRequest) -> Self;
    /// An authority's answer to a request, for whoever sent it.
    fn response(response: DirectoryResponse) -> Self;
    /// The request, if this message is one.
    fn into_request(self) -> Result<DirectoryRequest, Self>;
    /// The answer, if this message is one.
    fn into_response(self) -> Option<DirectoryResponse>;
}

/// Directory requests and their answers: what crosses `/p2pmix/dir/1.0.0`.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthorityMessage {
    /// A request (a descriptor from a node; a vote, reveal or signature from an authority; a
    /// fetch of a document).
    Request(DirectoryRequest),
    /// The answer to a request.
    Response(DirectoryResponse),
}

impl DirectoryMessage for AuthorityMessage {
    fn request(request: DirectoryRequest) -> Self {
        AuthorityMessage::Request(request)
    }
    fn response(response: DirectoryResponse) -> Self {
        AuthorityMessage::Response(response)
    }
    fn into_request(self) -> Result<DirectoryRequest, Self> {
        match self {
            AuthorityMessage::Request(r) => Ok(r),
            other => Err(other),
        }
    }
    fn into_response(self) -> Option<DirectoryResponse> {
        match self {
            AuthorityMessage::Response(r) => Some(r),
            AuthorityMessage::Request(_) => None,
        }
    }
}

/// The answer an authority node gives to `request` from `origin` at `now`: a document for
/// `GetConsensus` (epoch 0 asks for the newest), the evidence held for `GetEvidence`,
/// [`Authority::handle_request_from`]'s verdict for anything else.
pub fn answer(
    authority: &mut Authority,
    now: Now,
    origin: Origin,
    request: DirectoryRequest,
) -> DirectoryResponse {
    let response = match request.request {
        Some(Request::GetEvidence(get)) => {
            Response::Evidence(authority.evidence((get.epoch != 0).then_some(get.epoch)))
        }
        Some(Request::GetConsensus(get)) => {
            let epoch = (get.epoch != 0).then_some(get.epoch);
            match authority.consensus(epoch) {
                Some(c) => Response::Consensus(c.clone()),
                None => Response::Refused(Refused {
                    reason: "no consensus held for that epoch".into(),
                    code: RefusalCode::NotHeld as i32,
                }),
            }
        }
        _ => match authority.handle_request_from(now, origin, request) {
            Ok(()) => Response::Accepted(Accepted {}),
            Err(e) => Response::Refused(e.to_refused()),
        },
    };
    DirectoryResponse {
        response: Some(response),
    }
}

/// Which nodes answer an authority's reachability dials in a simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Every node answers.
    #[default]
    All,
    /// Only these nodes answer.
    Only(BTreeSet<PeerId>),
    /// Every node but these answers.
    AllBut(BTreeSet<PeerId>),
}

impl Reachability {
    /// Whether `peer` answers.
    pub fn answers(&self, peer: &PeerId) -> bool {
        match self {
            Reachability::All => true,
            Reachability::Only(set) => set.contains(peer),
            Reachability::AllBut(set) => !set.contains(peer),
        }
    }
}

/// One directory authority on the simulated network. See the module documentation.
#[derive(Debug)]
pub struct AuthorityActor {
    authority: Option<Authority>,
    rng: ChaCha20Rng,
    peers: Vec<ActorId>,
    sources: HashMap<ActorId, IpAddr>,
    /// Which nodes answer this authority's reachability dials.
    pub reachability: Reachability,
    /// What the authority reported, and when: the record a test asserts on.
    pub events: Vec<(Now, Event)>,
}

impl AuthorityActor {
    /// Runs `authority` with its own generator `rng` (so that its random values do not depend
    /// on what else the simulation draws, such as link jitter), broadcasting to `peers`.
    pub fn new(authority: Authority, rng: ChaCha20Rng, peers: Vec<ActorId>) -> Self {
        AuthorityActor {
            authority: Some(authority),
            rng,
            peers,
            sources: HashMap::new(),
            reachability: Reachability::All,
            events: Vec::new(),
        }
    }

    /// Requests from `actor` come from `ip` (per-source limits apply to them).
    pub fn set_source(&mut self, actor: ActorId, ip: IpAddr) {
        self.sources.insert(actor, ip);
    }

    fn origin_of(&self, actor: ActorId) -> Origin {
        if self.peers.contains(&actor) {
            Origin::Authority
        } else {
            self.sources
                .get(&actor)
                .map_or(Origin::Local, |ip| Origin::Peer(*ip))
        }
    }

    /// The authority, unless stopped.
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref()
    }

    /// The authority, mutably, unless stopped. What a direct call queues goes out at the
    /// actor's next turn; [`AuthorityActor::request`] sends it at once.
    pub fn authority_mut(&mut self) -> Option<&mut Authority> {
        self.authority.as_mut()
    }

    /// Whether an authority runs here.
    pub fn is_running(&self) -> bool {
        self.authority.is_some()
    }

    /// The other authorities this one sends its votes, reveals and signatures to.
    pub fn peers(&self) -> &[ActorId] {
        &self.peers
    }

    /// Stops the authority (a crash: nothing is saved unless the caller saves the
    /// [`Authority::state`] of what is returned).
    pub fn stop(&mut self) -> Option<Authority> {
        self.authority.take()
    }

    /// Runs `authority` here from now on (a restart, fresh or restored), replacing any that
    /// runs.
    pub fn start(&mut self, authority: Authority) {
        self.authority = Some(authority);
    }

    /// Hands `request` to the authority at `ctx.now` as if it had come from outside the
    /// simulation (a test injecting a forged vote, say) and sends what that causes at once.
    /// `None` when stopped.
    pub fn request<M: DirectoryMessage>(
        &mut self,
        ctx: &mut Ctx<'_, M>,
        request: DirectoryRequest,
    ) -> Option<Result<(), Rejection>> {
        self.request_from(ctx, Origin::Local, request)
    }

    /// [`AuthorityActor::request`] from `origin`.
    pub fn request_from<M: DirectoryMessage>(
        &mut self,
        ctx: &mut Ctx<'_, M>,
        origin: Origin,
        request: DirectoryRequest,
    ) -> Option<Result<(), Rejection>> {
        let result = self
            .authority
            .as_mut()?
            .handle_request_from(ctx.now, origin, request);
        self.flush(ctx);
        Some(result)
    }

    /// Sends what the authority queued to every peer, answers its reachability checks and
    /// records what it reported.
    fn flush<M: DirectoryMessage>(&mut self, ctx: &mut Ctx<'_, M>) {
        let Some(authority) = self.authority.as_mut() else {
            return;
        };
        while let Some(check) = authority.poll_reach_check() {
            let outcome = if self.reachability.answers(&check.peer) {
                let observed = check
                    .addresses
                    .iter()
                    .find_map(|a| literal_ip(&a.to_string()));
                ReachOutcome::Reached { observed }
            } else {
                ReachOutcome::Unreachable
            };
            authority.handle_reach_result(ctx.now, &check.peer, outcome);
        }
        while let Some(message) = authority.poll_transmit() {
            for peer in &self.peers {
                ctx.send(*peer, M::request(message.clone()));
            }
        }
        while let Some(event) = authority.poll_event() {
            self.events.push((ctx.now, event));
        }
    }
}

impl<M: DirectoryMessage> Actor<M> for AuthorityActor {
    fn poll_timeout(&self) -> Option<Instant> {
        self.authority.as_ref()?.poll_timeout()
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, M>) {
        if let Some(authority) = self.authority.as_mut() {
            authority.handle_timeout(ctx.now, &mut self.rng);
        }
        self.flush(ctx);
    }

    fn handle_message(&mut self, ctx: &mut Ctx<'_, M>, from: ActorId, message: M) {
        let request = match message.into_request() {
            Ok(request) => request,
            Err(answer) => {
                // Answers to our own broadcasts: a document is offered, as the node offers it
                // (the one missed, if that is what it is); the rest the node ignores too.
                if let (Some(Response::Consensus(signed)), Some(authority)) = (
                    answer.into_response().and_then(|r| r.response),
                    self.authority.as_mut(),
                ) {
                    let _ = authority.handle_consensus(ctx.now, signed);
                    self.flush(ctx);
                }
                return;
            }
        };
        let origin = self.origin_of(from);
        let Some(authority) = self.authority.as_mut() else {
            return;
        };
        let response = answer(authority, ctx.now, origin, request);
        self.flush(ctx);
        ctx.send(from, M::response(response));
    }
}

/// Adds one authority per config to `sim`, all started at the simulation's time and each
/// broadcasting to all the others; authority `i` draws from `crate::rng(seed + i)`. Returns
/// their ids, in the order of `configs`.
pub fn add_authorities<M: DirectoryMessage>(
    sim: &mut Sim<M>,
    configs: impl IntoIterator<Item = AuthorityConfig>,
    seed: u64,
) -> Vec<ActorId> {
    let configs: Vec<AuthorityConfig> = configs.into_iter().collect();
    let first = sim.next_id().0;
    let ids: Vec<ActorId> = (first..first + configs.len()).map(ActorId).collect();
    for (i, config) in configs.into_iter().enumerate() {
        let peers = ids.iter().copied().filter(|p| p.0 != first + i).collect();
        let authority = Authority::new(config, sim.now());
        let rng = crate::rng(seed.wrapping_add(i as u64));
        sim.add(AuthorityActor::new(authority, rng, peers));
    }
    ids
}
