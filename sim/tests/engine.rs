//! The simulator's own rules: time jumps from event to event, links take their latency, loss
//! drops, jitter reorders, down actors get nothing, and a machine that never settles fails.
#![allow(missing_docs, unreachable_pub)]

use std::time::{Duration, Instant};

use p2pmix_sim::{Actor, ActorId, Ctx, Link, Sim};

/// Answers every number with the number plus one, until 10; also ticks every 100 ms.
struct Counter {
    peer: Option<ActorId>,
    seen: Vec<(Instant, u32)>,
    next_tick: Instant,
    ticks: u32,
}

impl Actor<u32> for Counter {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_, u32>) {
        self.ticks += 1;
        self.next_tick = ctx.mono() + Duration::from_millis(100);
    }
    fn handle_message(&mut self, ctx: &mut Ctx<'_, u32>, from: ActorId, n: u32) {
        self.seen.push((ctx.mono(), n));
        if n < 10 {
            ctx.send(self.peer.unwrap_or(from), n + 1);
        }
    }
}

fn counter(sim: &Sim<u32>) -> Counter {
    Counter {
        peer: None,
        seen: Vec::new(),
        next_tick: sim.now().mono,
        ticks: 0,
    }
}

#[test]
fn time_jumps_from_event_to_event_and_links_take_their_latency() {
    let mut sim = Sim::new(1);
    sim.set_default_link(Link::fixed(Duration::from_millis(30)));
    let a = sim.add(counter(&sim));
    let b = sim.add(counter(&sim));
    let start = sim.now();
    sim.send(a, b, 0);
    sim.run_for(Duration::from_secs(1));
    let at_b = &sim.actor::<Counter>(b).seen;
    assert_eq!(at_b.len(), 6, "0, 2, 4, 6, 8, 10 arrive at b");
    for (i, (t, n)) in at_b.iter().enumerate() {
        assert_eq!(*n, 2 * i as u32);
        assert_eq!(
            *t - start.mono,
            Duration::from_millis(30 * (2 * i as u64 + 1))
        );
    }
    assert_eq!(
        sim.actor::<Counter>(a).ticks,
        11,
        "a tick every 100 ms, 0 to 1000 ms"
    );
    assert_eq!(sim.now().unix_ms, start.unix_ms + 1_000);
}

#[test]
fn loss_drops_and_down_actors_receive_nothing() {
    let mut sim = Sim::new(2);
    sim.set_default_link(Link {
        latency: Duration::from_millis(1),
        jitter: Duration::ZERO,
        loss: 0.5,
    });
    let a = sim.add(counter(&sim));
    let b = sim.add(counter(&sim));
    for _ in 0..1000 {
        sim.send(a, b, 100);
    }
    sim.run_for(Duration::from_millis(10));
    let got = sim.actor::<Counter>(b).seen.len();
    assert!(
        (400..600).contains(&got),
        "about half of 1000 arrive: {got}"
    );
    sim.take_down(b);
    sim.set_default_link(Link::fixed(Duration::from_millis(1)));
    sim.send(a, b, 100);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.actor::<Counter>(b).seen.len(), got);
    let ticks = sim.actor::<Counter>(b).ticks;
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.actor::<Counter>(b).ticks,
        ticks,
        "a down actor runs no timer"
    );
}

#[test]
fn jitter_reorders_and_the_trace_shows_every_crossing() {
    let mut sim = Sim::new(3);
    sim.set_default_link(Link {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(50),
        loss: 0.0,
    });
    sim.record_crossings();
    let a = sim.add(counter(&sim));
    let b = sim.add(counter(&sim));
    for n in 100..200 {
        sim.send(a, b, n);
    }
    sim.run_for(Duration::from_millis(100));
    let order: Vec<u32> = sim
        .actor::<Counter>(b)
        .seen
        .iter()
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(order.len(), 100);
    assert!(order.windows(2).any(|w| w[1] < w[0]), "reordered");
    assert_eq!(sim.crossings().len(), 100);
    assert!(sim.crossings().iter().all(|c| c.from == a && c.to == b));
}

#[test]
fn the_wall_clock_keeps_pace_through_many_short_steps() {
    let mut sim = Sim::new(5);
    sim.set_default_link(Link {
        latency: Duration::from_micros(300),
        jitter: Duration::from_micros(200),
        loss: 0.0,
    });
    let a = sim.add(counter(&sim));
    let b = sim.add(counter(&sim));
    let start = sim.now();
    // A ping-pong of sub-millisecond steps: 10 round trips take about 8 ms.
    sim.send(a, b, 0);
    sim.run_for(Duration::from_secs(2));
    let elapsed = sim.now().mono - start.mono;
    assert_eq!(
        sim.now().unix_ms - start.unix_ms,
        elapsed.as_millis() as u64
    );
    assert_eq!(sim.now().unix_ms - start.unix_ms, 2_000);
}

/// A timer that stays due would spin forever at one instant.
struct Stuck;
impl Actor<u32> for Stuck {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(Instant::now() - Duration::from_secs(1))
    }
    fn handle_timeout(&mut self, _: &mut Ctx<'_, u32>) {}
    fn handle_message(&mut self, _: &mut Ctx<'_, u32>, _: ActorId, _: u32) {}
}

#[test]
#[should_panic(expected = "did not settle")]
fn a_machine_that_never_settles_fails_the_test() {
    let mut sim = Sim::new(4);
    sim.set_max_steps(1_000);
    sim.add(Stuck);
    sim.run_for(Duration::from_secs(1));
}
