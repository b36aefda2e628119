//! A node's side of the directory, sans-IO: when to upload its descriptor, when and from whom to
//! fetch the next consensus, and which verified documents it holds (and serves to others).
//!
//! Time is passed in ([`Now`]; the rules follow the wall clock, in milliseconds since the UNIX
//! epoch); the driver turns [`Action`]s into requests and reports their outcomes back. During the descriptor phase of epoch `e` the
//! descriptor for `e + 1` goes to every authority until each has accepted it (an authority that
//! answers "duplicate" already holds it, e.g. from before a restart). From the publish phase of
//! `e` on, the consensus of `e + 1` is fetched, and the one of `e` whenever it is missing:
//! authorities first, then any peer that serves the directory protocol, one source at a time, with
//! a retry interval that doubles up to an eighth of the epoch.
//!
//! A document held for an epoch is never replaced by another one for that epoch, however valid:
//! two documents with a threshold of signatures each mean that some authority signed both (two
//! thresholds of more than half overlap), and a network whose members switch between them
//! partitions and makes its clients fingerprintable by the document they use. The first one
//! taken stays; the other is counted ([`DirectoryClient::conflicts`]), raised as an alarm in the
//! log, and kept as evidence ([`DirectoryClient::evidence`]: both documents' signatures, and for
//! each authority that signed both, the pair that proves it) for whoever asks.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Instant,
};

use libp2p_identity::PeerId;
use p2pmix_bootstrap::{
    EpochSchedule, Now, Phase, PinnedAuthorities, VerifiedConsensus, VerifyError,
    verify_signed_consensus,
};
use p2pmix_proto::v1::{ConsensusConflict, Equivocation, Evidence, SignedConsensus};
use tracing::error;

/// Consensus documents kept (the current epoch's, the next one's and the previous one's).
const KEPT: usize = 3;

/// A request the driver should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Upload this node's descriptor for `epoch` to the authority `to`.
    Upload {
        /// The epoch the descriptor is for.
        epoch: u64,
        /// The authority.
        to: PeerId,
    },
    /// Ask `from` for the consensus of `epoch`.
    Fetch {
        /// The epoch wanted.
        epoch: u64,
        /// An authority or a peer serving the directory.
        from: PeerId,
    },
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The authority holds the descriptor (accepted now, or a duplicate of one it holds).
    Held,
    /// The authority refused it for a reason that will not go away this epoch (late, invalid).
    Refused(String),
    /// No answer (unreachable, timed out): try again.
    Failed(String),
}

#[derive(Debug, Default)]
struct Retry {
    next_at: u64,
    interval: u64,
    in_flight: bool,
}

/// One epoch's fetch: its retries, and which source is asked next.
#[derive(Debug)]
struct Fetch {
    retry: Retry,
    next_source: usize,
}

/// The directory client state machine. See the module documentation.
#[derive(Debug)]
pub struct DirectoryClient {
    schedule: EpochSchedule,
    pinned: PinnedAuthorities,
    authorities: Vec<PeerId>,
    /// Peers (not authorities) known to serve the directory protocol.
    peers: BTreeSet<PeerId>,
    /// Per (epoch, authority): the upload's progress; `None` once settled.
    uploads: BTreeMap<(u64, PeerId), Option<Retry>>,
    /// Per epoch: the fetch's progress.
    fetches: BTreeMap<u64, Fetch>,
    consensus: BTreeMap<u64, VerifiedConsensus>,
    /// Per epoch, the first other valid document offered (kept as evidence, never used).
    conflicts: BTreeMap<u64, ConsensusConflict>,
    /// Offers of a different valid document for an epoch already held.
    conflicts_seen: u64,
    actions: VecDeque<Action>,
    /// Whether this client uploads a descriptor (nodes) or only fetches (mixnet clients).
    uploads_enabled: bool,
    /// The time of the last call that passed it in: wall-clock deadlines become instants
    /// through it.
    last: Now,
}

impl DirectoryClient {
    /// A client for the network of `schedule`, trusting `pinned`, whose authorities are
    /// `authorities`, starting at `now`.
    pub fn new(
        now: Now,
        schedule: EpochSchedule,
        pinned: PinnedAuthorities,
        authorities: Vec<PeerId>,
    ) -> Self {
        DirectoryClient {
            last: now,
            schedule,
            pinned,
            authorities,
            peers: BTreeSet::new(),
            uploads: BTreeMap::new(),
            fetches: BTreeMap::new(),
            consensus: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            conflicts_seen: 0,
            actions: VecDeque::new(),
            uploads_enabled: true,
        }
    }

    /// A client that only fetches and verifies consensus documents (a mixnet client, which has
    /// no descriptor to upload).
    pub fn fetch_only(
        now: Now,
        schedule: EpochSchedule,
        pinned: PinnedAuthorities,
        authorities: Vec<PeerId>,
    ) -> Self {
        DirectoryClient {
            uploads_enabled: false,
            ..DirectoryClient::new(now, schedule, pinned, authorities)
        }
    }

    /// The epoch schedule.
    pub fn schedule(&self) -> &EpochSchedule {
        &self.schedule
    }

    fn base_interval(&self) -> u64 {
        (self.schedule.period_ms() / 64).clamp(100, 5_000)
    }

    fn max_interval(&self) -> u64 {
        (self.schedule.period_ms() / 8).max(self.base_interval())
    }

    /// A peer that serves the directory protocol (a source of consensus documents).
    pub fn add_peer(&mut self, peer: PeerId) {
        if !self.authorities.contains(&peer) {
            self.peers.insert(peer);
        }
    }

    /// Forgets a peer (disconnected).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Advances to `now`: queues the uploads and fetches that are due.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last = now;
        let now_ms = now.unix_ms;
        let epoch = self.schedule.epoch_at(now_ms);
        let base = self.base_interval();
        // Uploads for the next epoch, during this epoch's descriptor phase.
        if self.uploads_enabled && self.schedule.phase_at(now_ms) == Phase::Descriptors {
            let next = epoch + 1;
            for authority in &self.authorities {
                let slot = self
                    .uploads
                    .entry((next, *authority))
                    .or_insert_with(|| Some(Retry::default()));
                if let Some(retry) = slot
                    && !retry.in_flight
                    && retry.next_at <= now_ms
                {
                    retry.in_flight = true;
                    self.actions.push_back(Action::Upload {
                        epoch: next,
                        to: *authority,
                    });
                }
            }
        }
        // Outside the descriptor phase nothing more can be uploaded: forget the retries so that
        // they do not wake the driver.
        if self.schedule.phase_at(now_ms) != Phase::Descriptors {
            self.uploads.clear();
        }
        self.uploads.retain(|(e, _), _| *e > epoch);
        // Fetches: the current epoch's document if missing, the next one's once published.
        let mut wanted = vec![epoch];
        if now_ms >= self.schedule.phase_start(epoch, Phase::Publish) {
            wanted.push(epoch + 1);
        }
        let sources: Vec<PeerId> = self
            .authorities
            .iter()
            .chain(self.peers.iter())
            .copied()
            .collect();
        self.fetches.retain(|e, _| wanted.contains(e));
        for e in wanted {
            // Epoch 0 is the genesis epoch: no consensus is made for it (descriptors are for the
            // next epoch), and 0 in a request means "the newest".
            if e == 0 || self.consensus.contains_key(&e) || sources.is_empty() {
                continue;
            }
            let Fetch { retry, next_source } = self.fetches.entry(e).or_insert_with(|| Fetch {
                retry: Retry {
                    interval: base,
                    ..Retry::default()
                },
                next_source: 0,
            });
            if !retry.in_flight && retry.next_at <= now_ms {
                retry.in_flight = true;
                let from = sources[*next_source % sources.len()];
                *next_source += 1;
                self.actions.push_back(Action::Fetch { epoch: e, from });
            }
        }
        self.fetches.retain(|e, _| !self.consensus.contains_key(e));
    }

    /// When [`DirectoryClient::handle_timeout`] should next run: the next phase that matters,
    /// or the next retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.last.instant_at(self.next_deadline_ms()))
    }

    /// Whether [`DirectoryClient::handle_timeout`] has work at `now`, judged on the wall clock
    /// the rules follow: unlike [`DirectoryClient::poll_timeout`] (an instant mapped from the
    /// last reading), this notices a wall-clock step or a resume from suspend at once.
    pub fn is_due(&self, now: Now) -> bool {
        now.unix_ms >= self.next_deadline_ms()
    }

    /// Whether [`DirectoryClient::handle_timeout`] would start something at `now_ms` that it
    /// has not started yet (a fetch or an upload it has no retry state for).
    fn has_unstarted_work(&self, now_ms: u64) -> bool {
        let epoch = self.schedule.epoch_at(now_ms);
        if self.uploads_enabled
            && self.schedule.phase_at(now_ms) == Phase::Descriptors
            && self
                .authorities
                .iter()
                .any(|a| !self.uploads.contains_key(&(epoch + 1, *a)))
        {
            return true;
        }
        if self.authorities.is_empty() && self.peers.is_empty() {
            return false;
        }
        let mut wanted = vec![epoch];
        if now_ms >= self.schedule.phase_start(epoch, Phase::Publish) {
            wanted.push(epoch + 1);
        }
        wanted
            .into_iter()
            .any(|e| e != 0 && !self.consensus.contains_key(&e) && !self.fetches.contains_key(&e))
    }

    /// [`DirectoryClient::poll_timeout`] on the wall clock, in milliseconds.
    fn next_deadline_ms(&self) -> u64 {
        let now_ms = self.last.unix_ms;
        if self.has_unstarted_work(now_ms) {
            return now_ms;
        }
        let epoch = self.schedule.epoch_at(now_ms);
        let publish = self.schedule.phase_start(epoch, Phase::Publish);
        let mut at = if publish > now_ms {
            publish
        } else {
            self.schedule.start_of(epoch + 1)
        };
        for retry in self.uploads.values().flatten() {
            if !retry.in_flight {
                at = at.min(retry.next_at.max(now_ms + 1));
            }
        }
        for Fetch { retry, .. } in self.fetches.values() {
            if !retry.in_flight {
                at = at.min(retry.next_at.max(now_ms + 1));
            }
        }
        at.max(now_ms + 1)
    }

    /// The next request to make.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Reports how an [`Action::Upload`] ended.
    pub fn upload_done(&mut self, now_ms: u64, epoch: u64, to: PeerId, outcome: UploadOutcome) {
        let (base, max) = (self.base_interval(), self.max_interval());
        let Some(slot) = self.uploads.get_mut(&(epoch, to)) else {
            return;
        };
        match outcome {
            UploadOutcome::Held | UploadOutcome::Refused(_) => *slot = None,
            UploadOutcome::Failed(_) => {
                if let Some(retry) = slot {
                    retry.in_flight = false;
                    retry.interval = (retry.interval * 2).clamp(base, max);
                    retry.next_at = now_ms + retry.interval;
                }
            }
        }
    }

    /// Whether every authority holds this node's descriptor for `epoch` (or refused it for
    /// good); only meaningful during the descriptor phase.
    pub fn uploads_settled(&self, epoch: u64) -> bool {
        self.authorities
            .iter()
            .all(|a| matches!(self.uploads.get(&(epoch, *a)), Some(None)))
    }

    /// Reports an answer to an [`Action::Fetch`] (`None`: no document, or no answer). A
    /// document is verified against the pinned authorities at `now_ms`; returns the epoch of a
    /// newly held document, or why the one offered was refused.
    pub fn fetch_done(
        &mut self,
        now_ms: u64,
        epoch: u64,
        offered: Option<SignedConsensus>,
    ) -> Result<Option<u64>, VerifyError> {
        let mut result = Ok(None);
        if let Some(signed) = offered {
            match self.offer(now_ms, signed, Some(epoch)) {
                Ok(got) => result = Ok(got),
                Err(e) => result = Err(e),
            }
        }
        let (base, max) = (self.base_interval(), self.max_interval());
        if let Some(Fetch { retry, .. }) = self.fetches.get_mut(&epoch) {
            retry.in_flight = false;
            if !self.consensus.contains_key(&epoch) {
                // The next source is tried at once after a refusal, the same one later.
                retry.next_at = now_ms + retry.interval;
                retry.interval = (retry.interval * 2).clamp(base, max);
            }
        }
        result
    }

    /// Takes a consensus from anywhere (a fetch, a file, a peer's push) after verifying it;
    /// returns its epoch if it is new. A valid document for an epoch already held under another
    /// digest is not taken (the held one stays): it is counted and kept as evidence, and
    /// `Ok(None)` is returned.
    pub fn offer(
        &mut self,
        now_ms: u64,
        signed: SignedConsensus,
        expected_epoch: Option<u64>,
    ) -> Result<Option<u64>, VerifyError> {
        // The next epoch's document is published before that epoch begins: verify it as of the
        // start of the next epoch (its signatures and expiry are checked all the same).
        let next_epoch_start = self
            .schedule
            .start_of(self.schedule.epoch_at(now_ms).saturating_add(1));
        let verified =
            match verify_signed_consensus(signed.clone(), &self.pinned, now_ms, expected_epoch) {
                Err(VerifyError::NotYetValid { valid_after_ms, .. })
                    if valid_after_ms <= next_epoch_start =>
                {
                    verify_signed_consensus(signed, &self.pinned, valid_after_ms, expected_epoch)?
                }
                other => other?,
            };
        let epoch = verified.epoch();
        if let Some(held) = self.consensus.get_mut(&epoch) {
            if held.digest() == verified.digest() {
                // The same document: keep whichever copy carries more signatures.
                if verified.signed().signatures.len() > held.signed().signatures.len() {
                    *held = verified;
                }
            } else {
                let conflict = conflict_of(held, &verified);
                self.record_conflict(conflict);
            }
            return Ok(None);
        }
        self.consensus.insert(epoch, verified);
        while self.consensus.len() > KEPT {
            self.consensus.pop_first();
        }
        if let Some(&oldest) = self.consensus.keys().next() {
            self.conflicts.retain(|e, _| *e >= oldest);
        }
        Ok(Some(epoch))
    }

    fn record_conflict(&mut self, conflict: ConsensusConflict) {
        self.conflicts_seen += 1;
        let both = double_signers(&conflict);
        error!(
            epoch = conflict.epoch,
            held = %hex::encode(&conflict.held_digest[..8.min(conflict.held_digest.len())]),
            refused = %hex::encode(&conflict.refused_digest[..8.min(conflict.refused_digest.len())]),
            double_signers = both.len(),
            "ALARM: two valid consensus documents for one epoch; keeping the first (authorities \
             that signed both are equivocating: see `p2pmix consensus show --from` this peer)"
        );
        self.conflicts.entry(conflict.epoch).or_insert(conflict);
    }

    /// How many times a different valid document was offered for an epoch already held.
    pub fn conflicts(&self) -> u64 {
        self.conflicts_seen
    }

    /// What this node or client knows of equivocation for `epoch` (every epoch kept, for
    /// `None`): the conflicting documents it was offered, and the double signatures in them.
    pub fn evidence(&self, epoch: Option<u64>) -> Evidence {
        let conflicts: Vec<ConsensusConflict> = self
            .conflicts
            .iter()
            .filter(|(e, _)| epoch.is_none_or(|want| **e == want))
            .map(|(_, c)| c.clone())
            .collect();
        Evidence {
            equivocations: conflicts.iter().flat_map(double_signers).collect(),
            conflicts,
        }
    }

    /// The verified consensus of `epoch`.
    pub fn consensus(&self, epoch: u64) -> Option<&VerifiedConsensus> {
        self.consensus.get(&epoch)
    }

    /// The newest verified consensus held.
    pub fn newest(&self) -> Option<&VerifiedConsensus> {
        self.consensus.values().next_back()
    }

    /// The consensus that governs `now_ms`: that of the current epoch, or else the newest older
    /// one still within its validity window (the network keeps using a document one more epoch
    /// when the next one fails).
    pub fn in_force(&self, now_ms: u64) -> Option<&VerifiedConsensus> {
        let epoch = self.schedule.epoch_at(now_ms);
        self.consensus
            .range(..=epoch)
            .rev()
            .map(|(_, c)| c)
            .find(|c| c.consensus().valid_until_ms > now_ms)
    }
}

/// The conflict between the document held and another valid one for its epoch.
fn conflict_of(held: &VerifiedConsensus, refused: &VerifiedConsensus) -> ConsensusConflict {
    ConsensusConflict {
        epoch: held.epoch(),
        held_digest: held.digest().to_vec(),
        held_signatures: held.signed().signatures.clone(),
        refused_digest: refused.digest().to_vec(),
        refused_signatures: refused.signed().signatures.clone(),
    }
}

/// For each authority that signed both documents of `conflict`, the pair of signatures that
/// proves it.
fn double_signers(conflict: &ConsensusConflict) -> Vec<Equivocation> {
    conflict
        .held_signatures
        .iter()
        .filter_map(|a| {
            conflict
                .refused_signatures
                .iter()
                .find(|b| b.authority == a.authority)
                .map(|b| Equivocation {
                    first: Some(a.clone()),
                    second: Some(b.clone()),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{sync::OnceLock, time::Duration};

    use super::*;

    /// One monotonic origin for the tests: wall-clock millisecond `ms` is `T0 + ms`.
    fn origin() -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn at(ms: u64) -> Now {
        Now::new(origin() + Duration::from_millis(ms), ms)
    }

    /// The wall-clock millisecond of a deadline.
    fn ms_of(c: &DirectoryClient) -> u64 {
        let deadline = c
            .poll_timeout()
            .expect("the directory client always has a deadline");
        deadline.duration_since(origin()).as_millis() as u64
    }

    fn client(authorities: usize) -> (DirectoryClient, Vec<PeerId>) {
        let keys: Vec<_> = (0..authorities)
            .map(|_| libp2p_identity::Keypair::generate_ed25519())
            .collect();
        let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        let pinned = PinnedAuthorities::new(keys.iter().map(|k| k.public()));
        (
            DirectoryClient::new(at(0), EpochSchedule::new(0, 8_000), pinned, peers.clone()),
            peers,
        )
    }

    fn drain(c: &mut DirectoryClient) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn uploads_once_per_authority_and_retries_failures_with_backoff() {
        let (mut c, auths) = client(3);
        c.handle_timeout(at(8_000));
        let first = drain(&mut c);
        assert_eq!(first.len(), 3 + 1, "three uploads and a fetch of epoch 1");
        assert!(first.contains(&Action::Upload {
            epoch: 2,
            to: auths[0]
        }));
        // Nothing new while requests are in flight.
        c.handle_timeout(at(8_010));
        assert!(drain(&mut c).is_empty());
        c.upload_done(8_020, 2, auths[0], UploadOutcome::Held);
        c.upload_done(8_020, 2, auths[1], UploadOutcome::Refused("late".into()));
        c.upload_done(
            8_020,
            2,
            auths[2],
            UploadOutcome::Failed("unreachable".into()),
        );
        assert!(!c.uploads_settled(2));
        c.handle_timeout(at(8_030));
        assert!(
            !drain(&mut c)
                .iter()
                .any(|a| matches!(a, Action::Upload { .. })),
            "a failed upload waits for its retry interval"
        );
        let retry_at = ms_of(&c);
        assert!(retry_at > 8_030 && retry_at <= 8_000 + 1_000, "{retry_at}");
        c.handle_timeout(at(retry_at));
        assert_eq!(
            drain(&mut c)
                .into_iter()
                .filter(|a| matches!(a, Action::Upload { .. }))
                .collect::<Vec<_>>(),
            vec![Action::Upload {
                epoch: 2,
                to: auths[2]
            }]
        );
        c.upload_done(retry_at, 2, auths[2], UploadOutcome::Held);
        assert!(c.uploads_settled(2));
        // After the descriptor phase, no more uploads.
        c.handle_timeout(at(8_000 + 2_000));
        assert!(
            !drain(&mut c)
                .iter()
                .any(|a| matches!(a, Action::Upload { .. }))
        );
    }

    #[test]
    fn fetches_rotate_through_authorities_then_peers() {
        let (mut c, auths) = client(2);
        let helper = PeerId::random();
        c.add_peer(helper);
        let publish = 5_000; // 5/8 of epoch 0
        let mut sources = Vec::new();
        let mut now = publish;
        for _ in 0..6 {
            c.handle_timeout(at(now));
            for a in drain(&mut c) {
                if let Action::Fetch { epoch: 1, from } = a {
                    sources.push(from);
                    c.fetch_done(now, 1, None).unwrap();
                }
            }
            now = ms_of(&c).max(now + 1);
        }
        assert!(sources.len() >= 3, "{sources:?}");
        assert_eq!(&sources[..3], &[auths[0], auths[1], helper]);
    }

    #[test]
    fn a_forged_consensus_is_refused_and_not_held() {
        let (mut c, _) = client(3);
        let forged = SignedConsensus {
            consensus: vec![1, 2, 3],
            signatures: vec![],
        };
        assert!(c.offer(1_000, forged, None).is_err());
        assert!(c.newest().is_none());
        assert!(c.in_force(1_000).is_none());
    }

    #[test]
    fn work_not_yet_started_is_due_at_once() {
        let (c, auths) = client(2);
        let (schedule, pinned) = (c.schedule, c.pinned);
        let start = at(9_000); // epoch 1, descriptor phase
        let mut c = DirectoryClient::new(start, schedule, pinned.clone(), auths);
        assert_eq!(
            c.poll_timeout(),
            Some(start.mono),
            "uploads and a fetch to start"
        );
        c.handle_timeout(start);
        assert_eq!(drain(&mut c).len(), 2 + 1);
        assert!(
            c.poll_timeout().unwrap() > start.mono,
            "everything under way"
        );
        // A client with no source has nothing to do until a peer that serves documents shows up.
        let mut lonely = DirectoryClient::fetch_only(start, schedule, pinned, Vec::new());
        assert!(lonely.poll_timeout().unwrap() > start.mono);
        lonely.add_peer(PeerId::random());
        assert_eq!(lonely.poll_timeout(), Some(start.mono));
        lonely.handle_timeout(start);
        assert!(matches!(
            drain(&mut lonely)[..],
            [Action::Fetch { epoch: 1, .. }]
        ));
    }

    #[test]
    fn a_wall_clock_step_makes_the_client_due_at_once() {
        let (mut c, _) = client(2);
        c.handle_timeout(at(8_000));
        drain(&mut c);
        // One millisecond later on the monotonic clock, but the wall clock stepped into epoch 3:
        // the fetch of its document is due now, whatever instant the last reading mapped.
        let stepped = Now::new(at(8_000).mono + Duration::from_millis(1), 24_100);
        assert!(c.poll_timeout().unwrap() > stepped.mono);
        assert!(c.is_due(stepped));
        c.handle_timeout(stepped);
        assert!(drain(&mut c).contains(&Action::Fetch {
            epoch: 3,
            from: c.authorities[0]
        }));
    }

    #[test]
    fn a_fetch_only_client_never_uploads() {
        let (c, auths) = client(3);
        let mut c = DirectoryClient::fetch_only(at(0), c.schedule, c.pinned, auths);
        c.handle_timeout(at(8_000));
        let actions = drain(&mut c);
        assert!(!actions.iter().any(|a| matches!(a, Action::Upload { .. })));
        assert!(actions.contains(&Action::Fetch {
            epoch: 1,
            from: c.authorities[0]
        }));
    }
}
