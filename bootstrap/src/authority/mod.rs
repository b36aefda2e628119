//! The directory authority as a sans-IO state machine.
//!
//! The driver (a libp2p behaviour, a simulator, or a test) feeds it messages with
//! [`Authority::handle_request`] and the time with [`Authority::handle_timeout`], sends whatever
//! [`Authority::poll_transmit`] yields to every other authority, reports
//! [`Authority::poll_event`], and writes [`Authority::state`] to disk after each call so that a
//! restart resumes within the epoch ([`Authority::restore`]).
//!
//! Time comes in as a [`Now`], one reading of both clocks. The rules follow the wall clock (the
//! epoch schedule is in milliseconds since the UNIX epoch, and every authority must agree on
//! it); [`Authority::poll_timeout`] turns the next wall-clock deadline into an [`Instant`] with
//! the last [`Now`] the authority was given, so a driver sleeps on its monotonic clock like for
//! every other core.
//!
//! During epoch `c` the authority prepares epoch `c + 1` (the *round*, [`round`]); see
//! [`crate::Phase`]. Votes, reveals and signatures of other authorities are relayed once when
//! first seen, so that every authority that can reach any other ends up with the same set and
//! computes the same document even when some direct links are down.
//!
//! Before voting for a node the authority has its announced address dialled
//! ([`Authority::poll_reach_check`], `reach`); what outsiders may send is bounded per source
//! (`sources`) and what the round holds is bounded in count, bytes and per prefix (`store`).
//!
//! Files: this one holds the type, its timers and the dispatch of requests; `round` the state of
//! one round; `store` its descriptors; `requests` what is taken from others; `phases` this
//! authority's own steps; `reach` reachability; `sources` per-source limits; `evidence` the
//! equivocations caught; `measurements` the health measurements the driver hands in for the
//! vote; `persist` saving and restoring; `rejection` the refusals.

mod catch_up;
mod evidence;
mod measurements;
mod persist;
mod phases;
mod reach;
mod rejection;
mod requests;
mod round;
mod sources;
mod store;

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p_identity::{Keypair, PeerId};
use p2pmix_proto::v1::{
    Consensus, DirectoryRequest, Evidence, GetConsensus, NetworkParameters, NodeMeasurement,
    SignedConsensus, directory_request::Request,
};
use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;

pub use catch_up::{AdoptError, Adoption};
pub use reach::{ReachCheck, ReachLimits, ReachOutcome, ReachStats};
pub use rejection::{Rejection, SignatureError};
pub use sources::{Origin, SourceLimits};
pub use store::StoreLimits;

use crate::{
    authorities::PinnedAuthorities,
    consensus::ComputeError,
    rank::RankBasis,
    schedule::{EpochSchedule, Phase},
    time::Now,
    vote::VoteError,
};
use evidence::EvidenceLog;
use reach::Reachability;
use round::Round;
use sources::SourceLimiter;

/// Consensus documents kept for serving and for layer stability.
const KEPT_CONSENSUSES: usize = 4;
/// Reveals kept per authority and round (different values are evidence of a buggy or malicious
/// authority; more are refused).
const MAX_PER_AUTHORITY: usize = 4;

/// What one round of an authority may hold in memory, as charged by
/// [`Authority::memory_bytes`], with the default limits and up to 9 authorities: the store's
/// bytes twice (signed and decoded) plus its per-entry overhead, own and others' votes (their
/// descriptors shared with the store where they agree), and the documents kept. The bench
/// (`cargo bench -p p2pmix-bootstrap --bench consensus`) measures the process as well.
pub const MEMORY_BUDGET_BYTES: usize = 200 * 1024 * 1024;

/// Bounds on what an authority takes and does; the defaults are a production network's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AuthorityLimits {
    /// The round's descriptor store.
    pub store: StoreLimits,
    /// Reachability checks.
    pub reach: ReachLimits,
    /// Requests from outsiders, per source.
    pub sources: SourceLimits,
}

/// What an authority needs to know.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// This authority's identity and signing key (ed25519).
    pub keypair: Keypair,
    /// All authorities, this one included.
    pub authorities: PinnedAuthorities,
    /// The network's epochs.
    pub schedule: EpochSchedule,
    /// Parameters to publish (all authorities must agree on them, or their digests differ).
    pub parameters: NetworkParameters,
    /// Bounds on what it takes and does (local: authorities may differ).
    pub limits: AuthorityLimits,
}

impl AuthorityConfig {
    /// A configuration with the default limits.
    pub fn new(
        keypair: Keypair,
        authorities: PinnedAuthorities,
        schedule: EpochSchedule,
        parameters: NetworkParameters,
    ) -> Self {
        AuthorityConfig {
            keypair,
            authorities,
            schedule,
            parameters,
            limits: AuthorityLimits::default(),
        }
    }
}

/// Why an epoch ended without a consensus from this authority.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RoundFailure {
    /// Not enough votes to compute one.
    #[error("cannot compute: {0}")]
    Compute(ComputeError),
    /// Computed and signed, but too few authorities signed the same digest (and nothing else).
    #[error("{got} signatures on our digest, {needed} needed")]
    NotEnoughSignatures {
        /// Matching signatures held (ours included).
        got: usize,
        /// The threshold.
        needed: usize,
    },
    /// This authority could not vote: its own vote does not check (its key is not pinned).
    #[error("our own vote does not check: {0}")]
    OwnVote(VoteError),
    /// This authority already signed another digest this round (before a restart, from inputs
    /// it no longer holds): it does not sign a second one.
    #[error("we signed another digest for this epoch already")]
    AlreadySigned,
}

/// What an authority was caught doing twice in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EquivocationKind {
    /// Two different votes.
    Vote,
    /// Signatures over two different digests.
    Signature,
}

/// What the authority reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A consensus with a threshold of signatures is ready to serve.
    Published {
        /// Its epoch.
        epoch: u64,
        /// Its digest.
        digest: [u8; 32],
        /// Signatures attached.
        signatures: usize,
    },
    /// More signatures arrived for an already published consensus (store it again).
    SignaturesAdded {
        /// Its epoch.
        epoch: u64,
        /// Signatures now attached.
        signatures: usize,
    },
    /// No consensus for `epoch` from this authority, and why.
    Failed {
        /// The epoch that gets none.
        epoch: u64,
        /// Why.
        reason: RoundFailure,
    },
    /// An authority was caught equivocating in the round of `epoch` (reported once per
    /// authority, kind and round); the evidence is relayed to the other authorities and served
    /// ([`Authority::evidence`]).
    Equivocation {
        /// The round.
        epoch: u64,
        /// The authority (protobuf encoding of its key).
        authority: Vec<u8>,
        /// What it did twice.
        kind: EquivocationKind,
    },
    /// The previous consensus, missed, was fetched from another authority and adopted
    /// ([`Authority::handle_consensus`]): store it, this round builds on it.
    Adopted {
        /// Its epoch.
        epoch: u64,
        /// Its digest.
        digest: [u8; 32],
        /// Signatures attached.
        signatures: usize,
    },
}

/// What an authority can tell its operator about the round under way and what it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityStats {
    /// The epoch being prepared.
    pub round: u64,
    /// Descriptors held for it.
    pub descriptors: usize,
    /// Their bytes.
    pub descriptor_bytes: usize,
    /// Descriptors displaced from the round's store by better-ranked ones.
    pub evicted: u64,
    /// What the round holds, as charged against [`MEMORY_BUDGET_BYTES`].
    pub memory_bytes: usize,
    /// What this round's vote left out, by reason.
    pub left_out: BTreeMap<&'static str, u64>,
    /// Reachability checks so far.
    pub reach: ReachStats,
    /// Equivocations caught so far (every round).
    pub equivocations: u64,
}

/// A directory authority. See the module documentation.
#[derive(Debug)]
pub struct Authority {
    config: AuthorityConfig,
    me: Vec<u8>,
    round: Round,
    consensuses: BTreeMap<u64, SignedConsensus>,
    outbox: VecDeque<DirectoryRequest>,
    events: VecDeque<Event>,
    rejections: BTreeMap<&'static str, u64>,
    reach: Reachability,
    sources: SourceLimiter,
    evidence: EvidenceLog,
    /// The health measurements for the next vote (taken by it).
    measurements: Vec<NodeMeasurement>,
    /// The last time given: maps the wall-clock deadlines onto the monotonic clock.
    now: Now,
}

impl Authority {
    /// A fresh authority at `now`.
    pub fn new(config: AuthorityConfig, now: Now) -> Self {
        let me = config.keypair.public().encode_protobuf();
        let epoch = config.schedule.epoch_at(now.unix_ms).saturating_add(1);
        let period = Duration::from_millis(config.schedule.period_ms());
        Authority {
            reach: Reachability::new(config.limits.reach),
            sources: SourceLimiter::new(config.limits.sources, period),
            evidence: EvidenceLog::default(),
            config,
            me,
            round: Round::new(epoch, RankBasis::default()),
            consensuses: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rejections: BTreeMap::new(),
            measurements: Vec::new(),
            now,
        }
    }

    /// The rank basis of round `epoch`: the previous consensus held.
    fn basis_for(&self, epoch: u64) -> RankBasis {
        let previous = self
            .consensuses
            .get(&epoch.saturating_sub(1))
            .and_then(|s| Consensus::decode(&s.consensus[..]).ok());
        RankBasis::new(previous.as_ref())
    }

    /// The epoch being prepared.
    pub fn round_epoch(&self) -> u64 {
        self.round.epoch
    }

    /// The newest consensus held, or the one for `epoch`.
    pub fn consensus(&self, epoch: Option<u64>) -> Option<&SignedConsensus> {
        match epoch {
            Some(e) => self.consensuses.get(&e),
            None => self.consensuses.values().next_back(),
        }
    }

    /// Refusals so far, by reason.
    pub fn rejections(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejections
    }

    /// Descriptors accepted for the round.
    pub fn descriptor_count(&self) -> usize {
        self.round.descriptors.len()
    }

    /// What the authority holds in memory for the round and the documents it keeps, as charged
    /// against [`MEMORY_BUDGET_BYTES`].
    pub fn memory_bytes(&self) -> usize {
        let documents: usize = self.consensuses.values().map(|c| c.encoded_len()).sum();
        self.round.memory_bytes()
            + documents
            + self.reach.len() * 128
            + self.sources.len() * 64
            + self.evidence.memory_bytes()
            + self
                .measurements
                .iter()
                .map(|m| m.identity.len() + round::MEASUREMENT_OVERHEAD_BYTES)
                .sum::<usize>()
    }

    /// The round under way and what was refused or left out, for operators.
    pub fn stats(&self) -> AuthorityStats {
        AuthorityStats {
            round: self.round.epoch,
            descriptors: self.round.descriptors.len(),
            descriptor_bytes: self.round.descriptors.bytes(),
            evicted: self.round.descriptors.evicted(),
            memory_bytes: self.memory_bytes(),
            left_out: self.round.left_out.clone(),
            reach: self.reach.stats(),
            equivocations: self.evidence.caught(),
        }
    }

    /// The equivocations caught for `epoch` (every one kept, for `None`): what `GetEvidence`
    /// is answered with.
    pub fn evidence(&self, epoch: Option<u64>) -> Evidence {
        Evidence {
            equivocations: self.evidence.equivocations(epoch),
            conflicts: Vec::new(),
        }
    }

    /// The next reachability check to make: dial the node and report with
    /// [`Authority::handle_reach_result`]. Drain it after every call, like
    /// [`Authority::poll_transmit`]; checks are handed out only during the descriptor phase,
    /// paced and bounded in number.
    pub fn poll_reach_check(&mut self) -> Option<ReachCheck> {
        if !self.in_descriptor_phase() {
            return None;
        }
        let cap = Duration::from_millis(self.config.schedule.period_ms() / 8);
        self.reach.poll_check(self.now.mono, cap)
    }

    /// How the check of `peer` ended, at `now`.
    pub fn handle_reach_result(&mut self, now: Now, peer: &PeerId, outcome: ReachOutcome) {
        self.now = now;
        self.advance_round(now.unix_ms);
        self.reach.handle_result(
            peer,
            outcome,
            self.round.epoch,
            self.config.parameters.test_network,
        );
    }

    /// Whether the clock is in the descriptor phase of the round under way.
    fn in_descriptor_phase(&self) -> bool {
        let schedule = &self.config.schedule;
        schedule.epoch_at(self.now.unix_ms).saturating_add(1) == self.round.epoch
            && schedule.phase_at(self.now.unix_ms) == Phase::Descriptors
    }

    /// The next message to send to every other authority.
    pub fn poll_transmit(&mut self) -> Option<DirectoryRequest> {
        self.outbox.pop_front()
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Authority::handle_timeout`] must next be called: the next deadline of the epoch
    /// schedule this authority has work at, on the monotonic clock of the last [`Now`] it was
    /// given. A deadline already past is due at that reading. Always `Some`: there is always a
    /// next round.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.round.next_deadline_ms(&self.config.schedule);
        let round = self.now.instant_at(deadline);
        let reach = self
            .in_descriptor_phase()
            .then(|| self.reach.next_deadline(self.now.mono))
            .flatten();
        Some(reach.map_or(round, |r| r.min(round)))
    }

    /// Advances the schedule to `now`: votes, reveals, computes and signs, publishes.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now: Now, rng: &mut R) {
        self.now = now;
        let now_ms = now.unix_ms;
        self.advance_round(now_ms);
        self.reach.expire(now.mono);
        let phase = self.config.schedule.phase_at(now_ms);
        if phase >= Phase::Vote && !self.round.vote_done {
            // A vote sent after the vote phase would reach some authorities in time and others
            // not, splitting them; an authority that starts late sits this vote out (it still
            // computes from the others' votes and signs).
            if phase == Phase::Vote {
                self.vote(rng);
            }
            self.round.vote_done = true;
        }
        if phase >= Phase::Reveal && !self.round.reveal_done {
            if phase == Phase::Reveal {
                self.reveal();
            }
            self.round.reveal_done = true;
        }
        if phase >= Phase::Sign && self.round.computed.is_none() && !self.round.compute_failed {
            self.compute_and_sign();
        }
        if phase >= Phase::Publish {
            self.try_publish(now_ms, true);
        }
    }

    /// Takes one request at `now` from a caller that does not say where it came from (tests,
    /// tools): [`Authority::handle_request_from`] with [`Origin::Local`].
    pub fn handle_request(&mut self, now: Now, request: DirectoryRequest) -> Result<(), Rejection> {
        self.handle_request_from(now, Origin::Local, request)
    }

    /// Takes one request from a node or another authority at `now`; `origin` is where it came
    /// from (outsiders are limited per source). `GetConsensus` and `GetEvidence` are answered
    /// by [`Authority::consensus`] and [`Authority::evidence`], not here.
    pub fn handle_request_from(
        &mut self,
        now: Now,
        origin: Origin,
        request: DirectoryRequest,
    ) -> Result<(), Rejection> {
        self.now = now;
        let now_ms = now.unix_ms;
        self.advance_round(now_ms);
        let result = if !self
            .sources
            .allow(now.mono, origin, self.config.parameters.test_network)
        {
            Err(Rejection::RateLimited)
        } else {
            match request.request {
                Some(Request::Descriptor(d)) => self.handle_descriptor(now_ms, &d),
                Some(Request::Vote(v)) => self.handle_vote(now_ms, &v),
                Some(Request::Reveal(r)) => self.handle_reveal(now_ms, &r),
                Some(Request::Signature(s)) => self.handle_signature(now_ms, s),
                Some(Request::GetConsensus(GetConsensus { .. }) | Request::GetEvidence(_))
                | None => Err(Rejection::Unsupported),
            }
        };
        if let Err(e) = &result {
            *self.rejections.entry(e.reason()).or_default() += 1;
        }
        result
    }

    /// Queues `request` for every other authority.
    fn relay(&mut self, request: Request) {
        self.outbox.push_back(DirectoryRequest {
            request: Some(request),
        });
    }

    /// Starts a new round when the clock has moved into a later epoch.
    fn advance_round(&mut self, now_ms: u64) {
        let target = self.config.schedule.epoch_at(now_ms).saturating_add(1);
        if target > self.round.epoch {
            let basis = self.basis_for(target);
            let previous = std::mem::replace(&mut self.round, Round::new(target, basis));
            if !previous.published
                && !previous.publish_failure_reported
                && previous.computed.is_some()
            {
                self.report_publish_failure(&previous);
            }
            while self.consensuses.len() > KEPT_CONSENSUSES {
                self.consensuses.pop_first();
            }
            self.reach.new_round(target);
            self.sources.prune(self.now.mono);
            self.evidence
                .forget_before(target.saturating_sub(KEPT_CONSENSUSES as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    use super::*;
    use crate::params::default_parameters;

    const PERIOD: u64 = 8_000;

    fn schedule() -> EpochSchedule {
        EpochSchedule::new(0, PERIOD)
    }

    /// The only pinned authority: it reaches the threshold on its own.
    fn alone(now: Now) -> Authority {
        let keypair = Keypair::ed25519_from_bytes([7; 32]).expect("32 bytes");
        Authority::new(
            AuthorityConfig::new(
                keypair.clone(),
                PinnedAuthorities::new([keypair.public()]),
                schedule(),
                default_parameters(),
            ),
            now,
        )
    }

    /// `now` moved on to the wall-clock time `unix_ms`.
    fn at(now: Now, unix_ms: u64) -> Now {
        now.later(Duration::from_millis(unix_ms - now.unix_ms))
    }

    #[test]
    fn the_timer_is_the_next_phase_deadline_on_the_monotonic_clock() {
        let s = schedule();
        // The two clocks share no origin: the mapping goes through the reading.
        let start = Now::new(Instant::now(), s.start_of(1) + 123);
        let mut a = alone(start);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let deadlines = [
            s.phase_start(1, Phase::Vote),
            s.phase_start(1, Phase::Reveal),
            s.phase_start(1, Phase::Sign),
            s.phase_start(1, Phase::Publish),
            s.start_of(2),
            s.phase_start(2, Phase::Vote),
        ];
        let mut now = start;
        for deadline in deadlines {
            let expected = now.mono + Duration::from_millis(deadline - now.unix_ms);
            assert_eq!(a.poll_timeout(), Some(expected), "deadline {deadline}");
            now = at(now, deadline);
            a.handle_timeout(now, &mut rng);
        }
        assert!(
            std::iter::from_fn(|| a.poll_event())
                .any(|e| matches!(e, Event::Published { epoch: 2, .. })),
            "the walk went through a whole round"
        );
    }

    #[test]
    fn the_timer_follows_the_last_reading_and_a_missed_deadline_is_due_at_once() {
        let s = schedule();
        let start = Now::new(Instant::now(), s.start_of(1));
        let mut a = alone(start);
        // A request long after the vote deadline, before any timer ran: due at that reading.
        let late = at(start, s.phase_start(1, Phase::Reveal) + 10);
        let empty = DirectoryRequest { request: None };
        assert_eq!(a.handle_request(late, empty), Err(Rejection::Unsupported));
        assert_eq!(a.poll_timeout(), Some(late.mono));
        // Too late to vote: it sits the round out and waits for the sign deadline.
        a.handle_timeout(late, &mut ChaCha20Rng::seed_from_u64(2));
        assert_eq!(
            a.poll_timeout(),
            Some(late.mono + Duration::from_millis(s.phase_start(1, Phase::Sign) - late.unix_ms))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whenever the timer runs, the next one is strictly later: a driver never spins.
        #[test]
        fn after_a_timer_the_next_one_is_in_the_future(
            first in 0..3 * PERIOD,
            steps in proptest::collection::vec(0..PERIOD, 1..12),
        ) {
            let mut now = Now::new(Instant::now(), first);
            let mut a = alone(now);
            let mut rng = ChaCha20Rng::seed_from_u64(first);
            for step in steps {
                now = now.later(Duration::from_millis(step));
                a.handle_timeout(now, &mut rng);
                let next = a.poll_timeout();
                prop_assert!(next.is_some_and(|t| t > now.mono), "{next:?} at {now:?}");
            }
        }
    }
}
