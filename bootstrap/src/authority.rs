//! The directory authority as a sans-IO state machine.
//!
//! The driver (a libp2p behaviour, or a test) feeds it messages with [`Authority::handle_request`]
//! and the time with [`Authority::handle_timeout`], sends whatever [`Authority::poll_transmit`]
//! yields to every other authority, reports [`Authority::poll_event`], and writes
//! [`Authority::state`] to disk after each call so that a restart resumes within the epoch
//! ([`Authority::restore`]).
//!
//! During epoch `c` the authority prepares epoch `c + 1` (the *round*); see [`crate::Phase`].
//! Votes, reveals and signatures of other authorities are relayed once when first seen, so that
//! every authority that can reach any other ends up with the same set and computes the same
//! document even when some direct links are down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use libp2p_identity::{Keypair, PeerId};
use p2pmix_proto::v1::{
    AuthorityState, Consensus, ConsensusSignature, DirectoryRequest, GetConsensus,
    NetworkParameters, RefusalCode, Refused, SignedConsensus, SignedDescriptor, SignedReveal,
    SignedVote, directory_request::Request,
};
use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;

use crate::{
    authorities::PinnedAuthorities,
    consensus::{ComputeError, ConsensusInputs, compute_consensus},
    descriptor::{DescriptorError, VerifiedDescriptor, verify_descriptor},
    schedule::{EpochSchedule, Phase},
    signing::{Context, consensus_digest, sign, verify},
    vote::{
        VerifiedReveal, VerifiedVote, VoteError, build_reveal, build_vote, commitment,
        verify_reveal, verify_vote,
    },
};

/// Consensus documents kept for serving and for layer stability.
const KEPT_CONSENSUSES: usize = 4;
/// Reveals or signatures kept per authority and round (different values are evidence of a
/// buggy or malicious authority; more are refused).
const MAX_PER_AUTHORITY: usize = 4;

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
}

/// Why a signature from another authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not by a pinned authority.
    #[error("not from a pinned authority")]
    UnknownAuthority,
    /// Does not verify.
    #[error("bad signature")]
    BadSignature,
    /// This authority already signed.
    #[error("duplicate")]
    Duplicate,
    /// Malformed digest.
    #[error("malformed")]
    Malformed,
}

/// Why a request was refused. Every refusal is counted by [`Rejection::reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A node descriptor was refused.
    #[error("descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// A vote or reveal was refused.
    #[error("vote: {0}")]
    Vote(#[from] VoteError),
    /// A consensus signature was refused.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The request is empty or not one an authority takes.
    #[error("unsupported request")]
    Unsupported,
}

impl Rejection {
    /// The code a refusal carries on the wire: what the requester acts on.
    pub fn code(&self) -> RefusalCode {
        match self {
            Rejection::Descriptor(e) => match e {
                DescriptorError::Malformed
                | DescriptorError::BadIdentity
                | DescriptorError::NoRole => RefusalCode::Malformed,
                DescriptorError::BadSignature => RefusalCode::BadSignature,
                DescriptorError::WrongEpoch { .. } => RefusalCode::WrongEpoch,
                DescriptorError::KeyTooFarAhead { .. }
                | DescriptorError::BadSphinxKey(_)
                | DescriptorError::VersionTooLow { .. }
                | DescriptorError::BadAddresses => RefusalCode::Invalid,
                DescriptorError::Duplicate => RefusalCode::Duplicate,
                DescriptorError::Late => RefusalCode::Late,
            },
            Rejection::Vote(e) => match e {
                VoteError::Malformed | VoteError::Unsorted => RefusalCode::Malformed,
                VoteError::UnknownAuthority => RefusalCode::UnknownAuthority,
                VoteError::BadSignature => RefusalCode::BadSignature,
                VoteError::WrongEpoch { .. } => RefusalCode::WrongEpoch,
                VoteError::CommitMismatch => RefusalCode::Invalid,
                VoteError::Duplicate => RefusalCode::Duplicate,
                VoteError::Late => RefusalCode::Late,
            },
            Rejection::Signature(e) => match e {
                SignatureError::UnknownAuthority => RefusalCode::UnknownAuthority,
                SignatureError::BadSignature => RefusalCode::BadSignature,
                SignatureError::Duplicate => RefusalCode::Duplicate,
                SignatureError::Malformed => RefusalCode::Malformed,
            },
            Rejection::Unsupported => RefusalCode::Unsupported,
        }
    }

    /// The refusal as it goes on the wire: the code, and the text for people.
    pub fn to_refused(&self) -> Refused {
        Refused {
            reason: self.to_string(),
            code: self.code() as i32,
        }
    }

    /// A short stable label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Descriptor(e) => match e {
                DescriptorError::Malformed => "descriptor_malformed",
                DescriptorError::BadIdentity => "descriptor_bad_identity",
                DescriptorError::BadSignature => "descriptor_bad_signature",
                DescriptorError::WrongEpoch { .. } => "descriptor_wrong_epoch",
                DescriptorError::KeyTooFarAhead { .. } => "descriptor_key_too_far_ahead",
                DescriptorError::BadSphinxKey(_) => "descriptor_bad_sphinx_key",
                DescriptorError::NoRole => "descriptor_no_role",
                DescriptorError::VersionTooLow { .. } => "descriptor_version_too_low",
                DescriptorError::BadAddresses => "descriptor_bad_addresses",
                DescriptorError::Duplicate => "descriptor_duplicate",
                DescriptorError::Late => "descriptor_late",
            },
            Rejection::Vote(e) => match e {
                VoteError::Malformed => "vote_malformed",
                VoteError::UnknownAuthority => "vote_unknown_authority",
                VoteError::BadSignature => "vote_bad_signature",
                VoteError::WrongEpoch { .. } => "vote_wrong_epoch",
                VoteError::Unsorted => "vote_unsorted",
                VoteError::CommitMismatch => "vote_commit_mismatch",
                VoteError::Duplicate => "vote_duplicate",
                VoteError::Late => "vote_late",
            },
            Rejection::Signature(e) => match e {
                SignatureError::UnknownAuthority => "signature_unknown_authority",
                SignatureError::BadSignature => "signature_bad",
                SignatureError::Duplicate => "signature_duplicate",
                SignatureError::Malformed => "signature_malformed",
            },
            Rejection::Unsupported => "unsupported",
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
    /// Computed and signed, but too few authorities signed the same digest.
    #[error("{got} signatures on our digest, {needed} needed")]
    NotEnoughSignatures {
        /// Matching signatures held (ours included).
        got: usize,
        /// The threshold.
        needed: usize,
    },
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
}

/// The work on one upcoming epoch.
#[derive(Debug, Default)]
struct Round {
    epoch: u64,
    descriptors: BTreeMap<PeerId, VerifiedDescriptor>,
    own_random: Option<[u8; 32]>,
    votes: BTreeMap<Vec<u8>, VerifiedVote>,
    /// BLAKE3 of every vote already handled (accepted or used as evidence): replays of public
    /// votes are answered without checking their signatures again.
    seen_votes: BTreeSet<[u8; 32]>,
    /// Authorities caught sending two different votes: their votes do not count this round.
    equivocators: BTreeSet<Vec<u8>>,
    /// Reveals by (authority, value); the one matching the voter's commitment counts.
    reveals: BTreeMap<(Vec<u8>, Vec<u8>), VerifiedReveal>,
    /// Signatures by (authority, digest); only those over our digest count.
    signatures: BTreeMap<(Vec<u8>, Vec<u8>), ConsensusSignature>,
    /// Our vote is sent, or it is too late to send one this round.
    vote_done: bool,
    reveal_done: bool,
    computed: Option<(Vec<u8>, [u8; 32])>,
    compute_failed: bool,
    published: bool,
    publish_failure_reported: bool,
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
}

impl Authority {
    /// A fresh authority at `now_ms`.
    pub fn new(config: AuthorityConfig, now_ms: u64) -> Self {
        let me = config.keypair.public().encode_protobuf();
        let epoch = config.schedule.epoch_at(now_ms).saturating_add(1);
        Authority {
            config,
            me,
            round: Round {
                epoch,
                ..Round::default()
            },
            consensuses: BTreeMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rejections: BTreeMap::new(),
        }
    }

    /// Resumes from persisted `state` at `now_ms`: everything in it is verified again.
    pub fn restore(config: AuthorityConfig, state: &AuthorityState, now_ms: u64) -> Self {
        let mut authority = Authority::new(config, now_ms);
        for signed in &state.consensuses {
            if let Ok(consensus) = Consensus::decode(&signed.consensus[..]) {
                authority
                    .consensuses
                    .insert(consensus.epoch, signed.clone());
            }
        }
        if state.epoch != authority.round.epoch {
            return authority;
        }
        let epoch = state.epoch;
        let min = authority.config.parameters.min_protocol_version;
        for d in &state.descriptors {
            if let Ok(v) = verify_descriptor(d, epoch, min) {
                authority.round.descriptors.insert(v.peer_id, v);
            }
        }
        for v in &state.votes {
            if let Ok(v) = verify_vote(v, &authority.config.authorities, epoch, min) {
                authority
                    .round
                    .seen_votes
                    .insert(*blake3::hash(&v.signed.vote).as_bytes());
                authority.round.votes.insert(v.authority.clone(), v);
            }
        }
        for r in &state.reveals {
            if let Ok(r) = verify_reveal(r, &authority.config.authorities, epoch) {
                authority
                    .round
                    .reveals
                    .insert((r.authority.clone(), r.value.clone()), r);
            }
        }
        // Straight into the round: the published document (if any) already carries its own.
        for s in &state.signatures {
            if authority.check_signature(s).is_ok() {
                authority
                    .round
                    .signatures
                    .insert((s.authority.clone(), s.digest.clone()), s.clone());
            }
        }
        authority.round.own_random = <[u8; 32]>::try_from(state.own_random.as_slice()).ok();
        let me = authority.me.clone();
        authority.round.vote_done = authority.round.votes.contains_key(&me);
        authority.round.reveal_done = authority.round.reveals.keys().any(|(a, _)| *a == me);
        authority.round.published = authority.consensuses.contains_key(&epoch);
        authority
    }

    /// What to persist after every call.
    pub fn state(&self) -> AuthorityState {
        AuthorityState {
            epoch: self.round.epoch,
            descriptors: self
                .round
                .descriptors
                .values()
                .map(|d| d.signed.clone())
                .collect(),
            votes: self
                .round
                .votes
                .values()
                .map(|v| v.signed.clone())
                .collect(),
            reveals: self
                .round
                .reveals
                .values()
                .map(|r| r.signed.clone())
                .collect(),
            own_random: self
                .round
                .own_random
                .map(|r| r.to_vec())
                .unwrap_or_default(),
            signatures: self.round.signatures.values().cloned().collect(),
            consensuses: self.consensuses.values().cloned().collect(),
        }
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

    /// The next message to send to every other authority.
    pub fn poll_transmit(&mut self) -> Option<DirectoryRequest> {
        self.outbox.pop_front()
    }

    /// The next thing to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Authority::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> u64 {
        let s = &self.config.schedule;
        let current = self.round.epoch.saturating_sub(1);
        let r = &self.round;
        if !r.vote_done {
            s.phase_start(current, Phase::Vote)
        } else if !r.reveal_done {
            s.phase_start(current, Phase::Reveal)
        } else if r.computed.is_none() && !r.compute_failed {
            s.phase_start(current, Phase::Sign)
        } else if r.computed.is_some() && !r.published && !r.publish_failure_reported {
            s.phase_start(current, Phase::Publish)
        } else {
            s.start_of(self.round.epoch)
        }
    }

    /// Advances the schedule to `now_ms`: votes, reveals, computes and signs, publishes.
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) {
        self.advance_round(now_ms);
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
            self.try_publish(true);
        }
    }

    /// Takes one request from a node or another authority at `now_ms`. `GetConsensus` is
    /// answered by [`Authority::consensus`], not here.
    pub fn handle_request(
        &mut self,
        now_ms: u64,
        request: DirectoryRequest,
    ) -> Result<(), Rejection> {
        self.advance_round(now_ms);
        let result = match request.request {
            Some(Request::Descriptor(d)) => self.handle_descriptor(now_ms, &d),
            Some(Request::Vote(v)) => self.handle_vote(now_ms, &v),
            Some(Request::Reveal(r)) => self.handle_reveal(now_ms, &r),
            Some(Request::Signature(s)) => self.handle_signature(s),
            Some(Request::GetConsensus(GetConsensus { .. })) | None => Err(Rejection::Unsupported),
        };
        if let Err(e) = &result {
            *self.rejections.entry(e.reason()).or_default() += 1;
        }
        result
    }

    fn handle_descriptor(
        &mut self,
        now_ms: u64,
        signed: &SignedDescriptor,
    ) -> Result<(), Rejection> {
        let verified = verify_descriptor(
            signed,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        )?;
        if self.config.schedule.phase_at(now_ms) != Phase::Descriptors {
            return Err(DescriptorError::Late.into());
        }
        if self.round.descriptors.contains_key(&verified.peer_id) {
            // One descriptor per node and epoch: a second one (even identical) is refused, so a
            // node cannot swap its keys or addresses after the authority has seen it.
            return Err(DescriptorError::Duplicate.into());
        }
        self.round.descriptors.insert(verified.peer_id, verified);
        Ok(())
    }

    fn handle_vote(&mut self, now_ms: u64, signed: &SignedVote) -> Result<(), Rejection> {
        // Replays of a vote already handled cost one hash, not thousands of signature checks.
        let seen = *blake3::hash(&signed.vote).as_bytes();
        if self.round.seen_votes.contains(&seen) {
            return Ok(());
        }
        let vote = verify_vote(
            signed,
            &self.config.authorities,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        )?;
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Reveal) {
            return Err(VoteError::Late.into());
        }
        self.round.seen_votes.insert(seen);
        if self.round.votes.contains_key(&vote.authority) {
            // Two different votes from one authority: equivocation. Relay the second as
            // evidence, so that every authority learns it, and leave that voter out.
            self.round.equivocators.insert(vote.authority.clone());
            self.relay(Request::Vote(signed.clone()));
            return Err(VoteError::Duplicate.into());
        }
        self.round.votes.insert(vote.authority.clone(), vote);
        self.relay(Request::Vote(signed.clone()));
        Ok(())
    }

    fn handle_reveal(&mut self, now_ms: u64, signed: &SignedReveal) -> Result<(), Rejection> {
        let reveal = verify_reveal(signed, &self.config.authorities, self.round.epoch)?;
        let current = self.round.epoch.saturating_sub(1);
        if now_ms >= self.config.schedule.phase_start(current, Phase::Sign) {
            return Err(VoteError::Late.into());
        }
        let key = (reveal.authority.clone(), reveal.value.clone());
        if self.round.reveals.contains_key(&key) {
            return Ok(());
        }
        if let Some(vote) = self.round.votes.get(&reveal.authority)
            && commitment(self.round.epoch, &reveal.authority, &reveal.value).as_slice()
                != vote.commit.as_slice()
        {
            return Err(VoteError::CommitMismatch.into());
        }
        // Kept whatever the order of arrival: the one matching the voter's commitment counts
        // when the consensus is computed. A few per authority at most.
        if self
            .round
            .reveals
            .keys()
            .filter(|(a, _)| *a == reveal.authority)
            .count()
            >= MAX_PER_AUTHORITY
        {
            return Err(VoteError::Duplicate.into());
        }
        self.round.reveals.insert(key, reveal);
        self.relay(Request::Reveal(signed.clone()));
        Ok(())
    }

    fn handle_signature(&mut self, signature: ConsensusSignature) -> Result<(), Rejection> {
        let key = (signature.authority.clone(), signature.digest.clone());
        if self.round.signatures.contains_key(&key) {
            return Ok(());
        }
        self.check_signature(&signature)?;
        if self
            .round
            .signatures
            .keys()
            .filter(|(a, _)| *a == signature.authority)
            .count()
            >= MAX_PER_AUTHORITY
        {
            return Err(SignatureError::Duplicate.into());
        }
        if let Some(published) = self.consensuses.get_mut(&self.round.epoch)
            && consensus_digest(&published.consensus).as_slice() == signature.digest.as_slice()
            && !published
                .signatures
                .iter()
                .any(|s| s.authority == signature.authority)
        {
            published.signatures.push(signature.clone());
            published
                .signatures
                .sort_by(|a, b| a.authority.cmp(&b.authority));
            self.events.push_back(Event::SignaturesAdded {
                epoch: self.round.epoch,
                signatures: published.signatures.len(),
            });
        }
        self.round.signatures.insert(key, signature.clone());
        self.relay(Request::Signature(signature));
        self.try_publish(false);
        Ok(())
    }

    /// Checks that a signature is by a pinned authority and valid over the digest it names.
    /// Signatures over other digests (other epochs, other views) are kept but never counted.
    fn check_signature(&self, signature: &ConsensusSignature) -> Result<(), SignatureError> {
        let key = self
            .config
            .authorities
            .get(&signature.authority)
            .ok_or(SignatureError::UnknownAuthority)?;
        if signature.digest.len() != 32 {
            return Err(SignatureError::Malformed);
        }
        if !verify(
            key,
            Context::Consensus,
            &signature.digest,
            &signature.signature,
        ) {
            return Err(SignatureError::BadSignature);
        }
        Ok(())
    }

    fn relay(&mut self, request: Request) {
        self.outbox.push_back(DirectoryRequest {
            request: Some(request),
        });
    }

    /// Starts a new round when the clock has moved into a later epoch.
    fn advance_round(&mut self, now_ms: u64) {
        let target = self.config.schedule.epoch_at(now_ms).saturating_add(1);
        if target > self.round.epoch {
            let previous = std::mem::take(&mut self.round);
            if !previous.published
                && !previous.publish_failure_reported
                && previous.computed.is_some()
            {
                self.report_publish_failure(&previous);
            }
            self.round.epoch = target;
            while self.consensuses.len() > KEPT_CONSENSUSES {
                self.consensuses.pop_first();
            }
        }
    }

    fn vote<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        let value = *self.round.own_random.get_or_insert_with(|| {
            let mut v = [0u8; 32];
            rng.fill_bytes(&mut v);
            v
        });
        let commit = commitment(self.round.epoch, &self.me, &value);
        let descriptors = self.round.descriptors.values().map(|d| d.signed.clone());
        let previous = self
            .consensuses
            .get(&self.round.epoch.saturating_sub(1))
            .map(|s| consensus_digest(&s.consensus));
        let Some(signed) = build_vote(
            &self.config.keypair,
            self.round.epoch,
            descriptors,
            commit,
            previous,
        ) else {
            return;
        };
        match verify_vote(
            &signed,
            &self.config.authorities,
            self.round.epoch,
            self.config.parameters.min_protocol_version,
        ) {
            Ok(vote) => {
                self.round
                    .seen_votes
                    .insert(*blake3::hash(&signed.vote).as_bytes());
                self.round.votes.insert(self.me.clone(), vote);
                self.relay(Request::Vote(signed));
            }
            // Our own key is not pinned: we cannot take part.
            Err(_) => self.round.compute_failed = true,
        }
    }

    fn reveal(&mut self) {
        let Some(value) = self.round.own_random else {
            return;
        };
        let Some(signed) = build_reveal(&self.config.keypair, self.round.epoch, value) else {
            return;
        };
        if let Ok(reveal) = verify_reveal(&signed, &self.config.authorities, self.round.epoch) {
            self.round
                .reveals
                .insert((self.me.clone(), reveal.value.clone()), reveal);
            self.relay(Request::Reveal(signed));
        }
    }

    fn compute_and_sign(&mut self) {
        let previous = self
            .consensuses
            .get(&self.round.epoch.saturating_sub(1))
            .and_then(|s| {
                let digest = consensus_digest(&s.consensus);
                Consensus::decode(&s.consensus[..])
                    .ok()
                    .map(|c| (digest, c))
            });
        let votes: Vec<VerifiedVote> = self
            .round
            .votes
            .values()
            .filter(|v| !self.round.equivocators.contains(&v.authority))
            .cloned()
            .collect();
        let reveals: Vec<VerifiedReveal> = self.round.reveals.values().cloned().collect();
        let computed = compute_consensus(ConsensusInputs {
            epoch: self.round.epoch,
            schedule: self.config.schedule,
            parameters: &self.config.parameters,
            authorities: &self.config.authorities,
            votes: &votes,
            reveals: &reveals,
            previous: previous.as_ref().map(|(d, c)| (d, c)),
        });
        match computed {
            Ok(consensus) => {
                let bytes = consensus.encode_to_vec();
                let digest = consensus_digest(&bytes);
                if let Some(signature) = sign(&self.config.keypair, Context::Consensus, &digest) {
                    let own = ConsensusSignature {
                        authority: self.me.clone(),
                        digest: digest.to_vec(),
                        signature,
                    };
                    self.round
                        .signatures
                        .insert((self.me.clone(), own.digest.clone()), own.clone());
                    self.relay(Request::Signature(own));
                }
                self.round.computed = Some((bytes, digest));
            }
            Err(e) => {
                self.round.compute_failed = true;
                self.events.push_back(Event::Failed {
                    epoch: self.round.epoch,
                    reason: RoundFailure::Compute(e),
                });
            }
        }
    }

    /// Publishes once a threshold of signatures over our digest is in. `deadline` marks the
    /// publish deadline: a shortfall then is reported (once); later signatures can still
    /// complete the document until the epoch turns.
    fn try_publish(&mut self, deadline: bool) {
        if self.round.published {
            return;
        }
        let Some((bytes, digest)) = &self.round.computed else {
            return;
        };
        let mut signatures: Vec<ConsensusSignature> = self
            .round
            .signatures
            .values()
            .filter(|s| s.digest.as_slice() == digest.as_slice())
            .cloned()
            .collect();
        let needed = self.config.authorities.threshold();
        if signatures.len() >= needed {
            signatures.sort_by(|a, b| a.authority.cmp(&b.authority));
            let count = signatures.len();
            let digest = *digest;
            self.consensuses.insert(
                self.round.epoch,
                SignedConsensus {
                    consensus: bytes.clone(),
                    signatures,
                },
            );
            self.round.published = true;
            self.events.push_back(Event::Published {
                epoch: self.round.epoch,
                digest,
                signatures: count,
            });
        } else if deadline && !self.round.publish_failure_reported {
            self.round.publish_failure_reported = true;
            self.events.push_back(Event::Failed {
                epoch: self.round.epoch,
                reason: RoundFailure::NotEnoughSignatures {
                    got: signatures.len(),
                    needed,
                },
            });
        }
    }

    fn report_publish_failure(&mut self, round: &Round) {
        if let Some((_, digest)) = &round.computed {
            let got = round
                .signatures
                .values()
                .filter(|s| s.digest.as_slice() == digest.as_slice())
                .count();
            self.events.push_back(Event::Failed {
                epoch: round.epoch,
                reason: RoundFailure::NotEnoughSignatures {
                    got,
                    needed: self.config.authorities.threshold(),
                },
            });
        }
    }
}
