//! One virtual-time simulator for every sans-IO core of p2pmix, in the style of quinn-proto's
//! test `Pair`: no sockets, no real clock, deterministic from a seed.
//!
//! A [`Sim`] holds actors (any [`Actor`]: a relay, an authority, a client core, a mailbox
//! server, a node machine, or a test's own) and the messages in flight between them. Each
//! [`Sim::step`] jumps the virtual clock to the earliest of the next message arrival and the
//! actors' `poll_timeout`, delivers what has arrived and runs the timers that are due; nothing
//! waits in real time, so an hour of network time takes milliseconds. Links have a latency, a
//! jitter (which also reorders) and a loss rate, per pair if wanted; actors can be taken down and
//! brought back. Every loop is bounded: a simulation that never settles fails with a message
//! instead of hanging.
//!
//! Adapters for the cores of the lower crates live here ([`mix::RelayActor`] for the mix core);
//! the cores of the `p2pmix` crate get theirs beside their tests (this crate cannot depend on it
//! without a dependency cycle).

pub mod authority;
pub mod mix;

use std::{
    any::Any,
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use p2pmix_bootstrap::Now;
use rand_chacha::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};

/// A seeded generator, the same one everywhere in the simulations.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Which actor of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(pub usize);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor {}", self.0)
    }
}

/// A sans-IO machine on the simulated network: the one timer shape, plus messages.
pub trait Actor<M>: Any {
    /// When the actor next has work if no message arrives first.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Does the work that is due at `ctx.now`.
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, M>);
    /// Takes a message that arrived from `from` at `ctx.now`.
    fn handle_message(&mut self, ctx: &mut Ctx<'_, M>, from: ActorId, message: M);
}

/// What an actor sees of the simulation while it runs: the time, its own id, the shared
/// generator, and a way to send.
pub struct Ctx<'a, M> {
    /// The virtual time.
    pub now: Now,
    /// The actor being run.
    pub me: ActorId,
    /// The simulation's generator (deterministic from the seed).
    pub rng: &'a mut ChaCha20Rng,
    sends: &'a mut Vec<(ActorId, M)>,
}

impl<M> Ctx<'_, M> {
    /// Sends `message` to `to` over the link between them (latency, jitter, loss).
    pub fn send(&mut self, to: ActorId, message: M) {
        self.sends.push((to, message));
    }

    /// The monotonic part of the time.
    pub fn mono(&self) -> Instant {
        self.now.mono
    }
}

/// How a link carries messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Time from send to arrival.
    pub latency: Duration,
    /// A uniform extra in `[0, jitter)` per message; nonzero jitter reorders messages.
    pub jitter: Duration,
    /// Chance that a message is lost.
    pub loss: f64,
}

impl Link {
    /// A link of `latency` with no jitter and no loss.
    pub const fn fixed(latency: Duration) -> Self {
        Link {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

impl Default for Link {
    /// 2 ms, no jitter, no loss.
    fn default() -> Self {
        Link::fixed(Duration::from_millis(2))
    }
}

/// One message as it crossed a link: the view of a global passive observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    /// When it was sent.
    pub sent: Instant,
    /// When it arrived.
    pub arrived: Instant,
    /// From whom.
    pub from: ActorId,
    /// To whom.
    pub to: ActorId,
}

struct InFlight<M> {
    from: ActorId,
    to: ActorId,
    sent: Instant,
    message: M,
}

/// Most steps one [`Sim::run_until`] takes by default before it gives up (a simulation that
/// keeps waking at one instant, or never settles, fails instead of hanging).
pub const MAX_STEPS: u64 = 10_000_000;

/// The simulator. See the crate documentation.
pub struct Sim<M> {
    /// When the simulation began: the wall clock is derived from it, never accumulated step by
    /// step (which would drop the sub-millisecond part of every step and stall it).
    start: Now,
    now: Now,
    rng: ChaCha20Rng,
    actors: Vec<Option<Box<dyn Actor<M>>>>,
    down: HashSet<ActorId>,
    default_link: Link,
    links: HashMap<(ActorId, ActorId), Link>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, InFlight<M>>,
    seq: u64,
    trace: Option<Vec<Crossing>>,
    lost: u64,
    steps: u64,
    max_steps: u64,
}

impl<M> fmt::Debug for Sim<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("actors", &self.actors.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// The wall-clock time a simulation starts at unless told otherwise (2027-01-15).
pub const DEFAULT_START_UNIX_MS: u64 = 1_800_000_000_000;

impl<M: 'static> Sim<M> {
    /// An empty simulation at [`DEFAULT_START_UNIX_MS`], deterministic from `seed`.
    pub fn new(seed: u64) -> Self {
        Sim::starting_at(seed, DEFAULT_START_UNIX_MS)
    }

    /// An empty simulation whose wall clock starts at `unix_ms`.
    pub fn starting_at(seed: u64, unix_ms: u64) -> Self {
        let start = Now::new(Instant::now(), unix_ms);
        Sim {
            start,
            now: start,
            rng: rng(seed),
            actors: Vec::new(),
            down: HashSet::new(),
            default_link: Link::default(),
            links: HashMap::new(),
            heap: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            trace: None,
            lost: 0,
            steps: 0,
            max_steps: MAX_STEPS,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// The simulation's generator, for a test's own draws between steps.
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.rng
    }

    /// The id the next [`Sim::add`] returns.
    pub fn next_id(&self) -> ActorId {
        ActorId(self.actors.len())
    }

    /// Adds an actor; returns its id.
    pub fn add(&mut self, actor: impl Actor<M>) -> ActorId {
        self.actors.push(Some(Box::new(actor)));
        ActorId(self.actors.len() - 1)
    }

    /// Replaces actor `id` (a restart with fresh state), bringing it up.
    pub fn replace(&mut self, id: ActorId, actor: impl Actor<M>) {
        if let Some(slot) = self.actors.get_mut(id.0) {
            *slot = Some(Box::new(actor));
            self.down.remove(&id);
        }
    }

    /// The actor `id` as its concrete type.
    ///
    /// # Panics
    /// If there is no such actor or it is of another type (a test's mistake).
    pub fn actor<T: 'static>(&self, id: ActorId) -> &T {
        let actor: &dyn Any = self
            .actors
            .get(id.0)
            .and_then(Option::as_deref)
            .unwrap_or_else(|| panic!("no {id}"));
        actor
            .downcast_ref()
            .unwrap_or_else(|| panic!("{id} is not a {}", std::any::type_name::<T>()))
    }

    /// The actor `id` as its concrete type, mutably.
    ///
    /// # Panics
    /// If there is no such actor or it is of another type (a test's mistake).
    pub fn actor_mut<T: 'static>(&mut self, id: ActorId) -> &mut T {
        let actor: &mut dyn Any = self
            .actors
            .get_mut(id.0)
            .and_then(Option::as_deref_mut)
            .unwrap_or_else(|| panic!("no {id}"));
        actor
            .downcast_mut()
            .unwrap_or_else(|| panic!("{id} is not a {}", std::any::type_name::<T>()))
    }

    /// Runs `f` on actor `id` with a context, as if it were the actor's turn (a test calling
    /// into a machine: a client sending a message, say); what it sends goes out at once.
    pub fn with_actor<T: 'static, R>(
        &mut self,
        id: ActorId,
        f: impl FnOnce(&mut T, &mut Ctx<'_, M>) -> R,
    ) -> R {
        let mut sends = Vec::new();
        let mut slot = self.actors.get_mut(id.0).and_then(Option::take);
        let result = {
            let actor: &mut dyn Any = slot.as_deref_mut().unwrap_or_else(|| panic!("no {id}"));
            let actor = actor
                .downcast_mut::<T>()
                .unwrap_or_else(|| panic!("{id} is not a {}", std::any::type_name::<T>()));
            let mut ctx = Ctx {
                now: self.now,
                me: id,
                rng: &mut self.rng,
                sends: &mut sends,
            };
            f(actor, &mut ctx)
        };
        if let Some(s) = self.actors.get_mut(id.0) {
            *s = slot;
        }
        self.dispatch(id, sends);
        result
    }

    /// The link every pair uses unless [`Sim::set_link`] says otherwise.
    pub fn set_default_link(&mut self, link: Link) {
        self.default_link = link;
    }

    /// The link from `a` to `b` and back.
    pub fn set_link(&mut self, a: ActorId, b: ActorId, link: Link) {
        self.links.insert((a, b), link);
        self.links.insert((b, a), link);
    }

    /// Takes actor `id` down: it runs no timers and what arrives for it is lost.
    pub fn take_down(&mut self, id: ActorId) {
        self.down.insert(id);
    }

    /// Brings actor `id` back with the state it had.
    pub fn bring_up(&mut self, id: ActorId) {
        self.down.remove(&id);
    }

    /// Whether actor `id` is down.
    pub fn is_down(&self, id: ActorId) -> bool {
        self.down.contains(&id)
    }

    /// Records every message that arrives (see [`Sim::crossings`]).
    pub fn record_crossings(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// The messages that arrived since [`Sim::record_crossings`].
    pub fn crossings(&self) -> &[Crossing] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// Messages lost on links or sent to actors that were down.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Messages on their way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `message` from `from` to `to` now, over their link (a test injecting traffic).
    pub fn send(&mut self, from: ActorId, to: ActorId, message: M) {
        self.dispatch(from, vec![(to, message)]);
    }

    fn dispatch(&mut self, from: ActorId, sends: Vec<(ActorId, M)>) {
        for (to, message) in sends {
            let link = self
                .links
                .get(&(from, to))
                .copied()
                .unwrap_or(self.default_link);
            if link.loss > 0.0 && unit(&mut self.rng) < link.loss {
                self.lost += 1;
                continue;
            }
            let jitter = if link.jitter.is_zero() {
                Duration::ZERO
            } else {
                link.jitter.mul_f64(unit(&mut self.rng))
            };
            let at = self.now.mono + link.latency + jitter;
            self.seq += 1;
            self.heap.push(Reverse((at, self.seq)));
            self.in_flight.insert(
                self.seq,
                InFlight {
                    from,
                    to,
                    sent: self.now.mono,
                    message,
                },
            );
        }
    }

    /// When the next thing happens: a message arrives or an actor's timer is due.
    pub fn next_event(&self) -> Option<Instant> {
        let message = self.heap.peek().map(|Reverse((t, _))| *t);
        let timer = self
            .actors
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.down.contains(&ActorId(*i)))
            .filter_map(|(_, a)| a.as_ref()?.poll_timeout())
            .min();
        match (message, timer) {
            (Some(m), Some(t)) => Some(m.min(t)),
            (m, t) => m.or(t),
        }
    }

    fn advance_to(&mut self, at: Instant) {
        if at > self.now.mono {
            self.now = Now::new(at, self.start.later(at - self.start.mono).unix_ms);
        }
    }

    /// Jumps to the next event and handles everything due then: arrivals first (in the order
    /// they arrive), then every due timer. Returns `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        self.advance_to(at);
        self.steps += 1;
        let now = self.now.mono;
        while let Some(Reverse((t, seq))) = self.heap.peek().copied() {
            if t > now {
                break;
            }
            self.heap.pop();
            let Some(flight) = self.in_flight.remove(&seq) else {
                continue;
            };
            if self.down.contains(&flight.to) {
                self.lost += 1;
                continue;
            }
            if let Some(trace) = &mut self.trace {
                trace.push(Crossing {
                    sent: flight.sent,
                    arrived: now,
                    from: flight.from,
                    to: flight.to,
                });
            }
            self.run_actor(flight.to, |actor, ctx| {
                actor.handle_message(ctx, flight.from, flight.message)
            });
        }
        for i in 0..self.actors.len() {
            let id = ActorId(i);
            let due = !self.down.contains(&id)
                && self.actors[i]
                    .as_ref()
                    .and_then(|a| a.poll_timeout())
                    .is_some_and(|t| t <= now);
            if due {
                self.run_actor(id, |actor, ctx| actor.handle_timeout(ctx));
            }
        }
        true
    }

    fn run_actor(&mut self, id: ActorId, f: impl FnOnce(&mut dyn Actor<M>, &mut Ctx<'_, M>)) {
        let Some(mut actor) = self.actors.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        let mut sends = Vec::new();
        let mut ctx = Ctx {
            now: self.now,
            me: id,
            rng: &mut self.rng,
            sends: &mut sends,
        };
        f(actor.as_mut(), &mut ctx);
        self.actors[id.0] = Some(actor);
        self.dispatch(id, sends);
    }

    /// Steps until `done` holds (checked before every step) or the virtual clock reaches
    /// `deadline`; returns whether `done` held. Time never passes `deadline`.
    ///
    /// # Panics
    /// After [`MAX_STEPS`] steps: the simulation does not settle (a timer that stays due).
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        let mut steps = 0u64;
        loop {
            if done(self) {
                return true;
            }
            match self.next_event() {
                Some(at) if at <= deadline => {}
                _ => {
                    self.advance_to(deadline);
                    return done(self);
                }
            }
            self.step();
            steps += 1;
            assert!(
                steps < self.max_steps,
                "the simulation did not settle: {steps} steps, now {:?}",
                self.now
            );
        }
    }

    /// Runs for `duration` of virtual time (or until nothing is left to happen, then lets the
    /// clock reach the end anyway).
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now.mono + duration;
        self.run_until(deadline, |_| false);
    }

    /// Runs for at most `limit` of virtual time until `done` holds; returns whether it did.
    pub fn run_within(&mut self, limit: Duration, done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = self.now.mono + limit;
        self.run_until(deadline, done)
    }

    /// Changes how many steps one run may take before it fails (default [`MAX_STEPS`]).
    pub fn set_max_steps(&mut self, steps: u64) {
        self.max_steps = steps;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// A uniform draw in `[0, 1)`.
pub fn unit(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}
