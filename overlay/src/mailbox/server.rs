//! The gateway's mailbox server, sans-IO: fetches in, answers out, held open until there is
//! something to hand over.
//!
//! A fetch registers its client (the driver derives the client id from the authenticated peer
//! id), deletes what it acknowledges and is answered at once with what is waiting; when nothing
//! waits and the client asked to wait, it is held (one per client: a newer fetch replaces an
//! older one, which is answered empty) until a packet for the client becomes durable or its wait
//! is over ([`MAX_WAIT`] at most). A padded fetch (the constant-rate link) is answered at once
//! with exactly the items it asked for (at most [`MAX_PADDED_ITEMS`]), dummies filling what is
//! not waiting, each of one size: what does not fit waits for the next fetch. The answer channel
//! is the driver's type `C`, opaque here.
//! Time is passed in ([`Now`]: holds follow the monotonic clock, expiry the wall clock).

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use p2pmix_bootstrap::Now;
use p2pmix_mix::{ClientId, Geometry, Label};
use p2pmix_proto::v1::{
    MailboxBatch, MailboxItem, MailboxRequest, MailboxResponse, RefusalCode, Refused,
    mailbox_response::Response as MailboxAnswer,
};

use super::{
    DUMMY_SEQ, MAX_BATCH, MAX_PADDED_ITEMS, MAX_WAIT, MailboxError,
    store::{MailboxStore, SpoolOp},
};

/// How often expired packets and idle registrations are dropped.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);

/// Counters of a mailbox server, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStats {
    /// Clients that registered.
    pub registered: u64,
    /// Packets stored (durable).
    pub stored: u64,
    /// Packets refused, by [`MailboxError::index`].
    pub refused: [u64; MailboxError::REASONS.len()],
    /// Packets handed to clients (again after a lost answer).
    pub handed: u64,
    /// Packets dropped because their time-to-live was over.
    pub expired: u64,
    /// Registrations refused (the gateway is full, or the address holds its share).
    pub registrations_refused: u64,
    /// Packets evicted from the largest mailboxes to give room to smaller ones.
    pub evicted: u64,
    /// Dummy items sent in padded answers.
    pub dummies: u64,
    /// Fetches that arrived (answered, held or refused): the pace a link observer sees.
    pub fetches: u64,
}

/// A fetch held open until a packet arrives for its client or its wait is over.
#[derive(Debug)]
struct Parked<C> {
    channel: C,
    ack_through: u64,
    max: usize,
    until: Instant,
}

/// What the driver should know about, besides answers (for its logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client registered for the first time.
    Registered(ClientId),
    /// Packets expired.
    Expired(usize),
}

/// The long-poll server. See the module documentation.
#[derive(Debug)]
pub struct MailboxServer<C> {
    store: MailboxStore,
    parked: HashMap<ClientId, Parked<C>>,
    /// The held fetches by the end of their wait, so that the next deadline is found without
    /// a scan (a gateway may hold a fetch for each of many thousands of clients).
    deadlines: BTreeSet<(Instant, ClientId)>,
    answers: VecDeque<(C, MailboxResponse)>,
    events: VecDeque<ServerEvent>,
    next_expiry: Instant,
    stats: MailboxStats,
    /// The size of every body a padded answer carries (the Sphinx body of the network).
    body_size: usize,
}

/// A refusal answer.
pub fn refusal(code: RefusalCode, reason: &str) -> MailboxResponse {
    MailboxResponse {
        response: Some(MailboxAnswer::Refused(Refused {
            reason: reason.into(),
            code: code as i32,
        })),
    }
}

impl<C> MailboxServer<C> {
    /// A server around `store`, starting at `now`.
    pub fn new(store: MailboxStore, now: Now) -> Self {
        MailboxServer {
            store,
            parked: HashMap::new(),
            deadlines: BTreeSet::new(),
            answers: VecDeque::new(),
            events: VecDeque::new(),
            next_expiry: now.mono + EXPIRY_INTERVAL,
            stats: MailboxStats::default(),
            body_size: Geometry::DEFAULT.body_size(),
        }
    }

    /// Padded answers carry bodies of `size` bytes (the network's Sphinx body size; the
    /// default geometry's unless told).
    pub fn with_body_size(mut self, size: usize) -> Self {
        self.body_size = size;
        self
    }

    /// The mailboxes.
    pub fn store(&self) -> &MailboxStore {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> MailboxStats {
        MailboxStats {
            evicted: self.store.evicted(),
            ..self.stats
        }
    }

    /// Fetches held open.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// A client's fetch from `origin` (its connection's address): registers it, deletes what
    /// it acknowledged, and answers with what is waiting, or holds the request until something
    /// arrives.
    pub fn handle_fetch(
        &mut self,
        now: Now,
        client: ClientId,
        origin: Option<IpAddr>,
        request: MailboxRequest,
        channel: C,
    ) {
        self.stats.fetches += 1;
        // A newer fetch replaces a held one (the client gave up on it, or reconnected).
        self.answer_parked(&client);
        match self.store.register(client, now.unix_ms, origin) {
            Ok(true) => {
                self.stats.registered += 1;
                self.events.push_back(ServerEvent::Registered(client));
            }
            Ok(false) => {}
            Err(e) => {
                self.stats.registrations_refused += 1;
                self.answers
                    .push_back((channel, refusal(e.code(), &e.to_string())));
                return;
            }
        }
        let ack_through = request.ack_through.unwrap_or(0);
        if request.padded {
            let items = (request.max as usize).clamp(1, MAX_PADDED_ITEMS);
            let real = if request.hold == Some(true) { 0 } else { items };
            let answer = self.padded_batch(&client, ack_through, real, items);
            self.answers.push_back((channel, answer));
            return;
        }
        let max = (request.max as usize).clamp(1, MAX_BATCH);
        let answer = self.batch(&client, ack_through, max);
        let empty = matches!(
            &answer.response,
            Some(MailboxAnswer::Batch(b)) if b.items.is_empty()
        );
        if empty && request.wait_ms > 0 {
            let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_WAIT);
            let until = now.mono + wait;
            self.deadlines.insert((until, client));
            self.parked.insert(
                client,
                Parked {
                    channel,
                    ack_through,
                    max,
                    until,
                },
            );
        } else {
            self.answers.push_back((channel, answer));
        }
    }

    /// A packet the network delivered for `client`; `Ok` with its sequence number once stored
    /// (it is handed over when durable, see [`MailboxServer::spooled`]).
    pub fn handle_delivery(
        &mut self,
        now: Now,
        client: &ClientId,
        label: Label,
        body: &[u8],
    ) -> Result<u64, MailboxError> {
        match self.store.store(client, label, body, now.unix_ms) {
            Ok(seq) => {
                // A memory-only store holds it durably at once; a spooled one waits for the disk.
                if self.store.is_durable(client, seq) {
                    self.stats.stored += 1;
                    self.answer_parked(client);
                }
                Ok(seq)
            }
            Err(e) => {
                self.stats.refused[e.index()] += 1;
                Err(e)
            }
        }
    }

    /// The next change the disk must see (apply it, then report saves with
    /// [`MailboxServer::spooled`]).
    pub fn poll_spool(&mut self) -> Option<SpoolOp> {
        self.store.poll_spool()
    }

    /// Reports how a [`SpoolOp::Save`] went; a durable packet wakes its client's held fetch.
    pub fn spooled(&mut self, client: &ClientId, seq: u64, written: bool) {
        if self.store.spooled(client, seq, written) {
            self.stats.stored += 1;
            self.answer_parked(client);
        } else if !written {
            self.stats.refused[MailboxError::IO_INDEX] += 1;
        }
    }

    /// The next answer to send on its channel.
    pub fn poll_answer(&mut self) -> Option<(C, MailboxResponse)> {
        self.answers.pop_front()
    }

    /// The next thing worth a log line.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When a held fetch's wait is over or expiry is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parked = self.deadlines.first().map(|(until, _)| *until);
        Some(parked.map_or(self.next_expiry, |p| p.min(self.next_expiry)))
    }

    /// Answers held fetches whose wait is over and drops expired packets.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(&(until, client)) = self.deadlines.first() {
            if until > now.mono {
                break;
            }
            self.deadlines.pop_first();
            self.answer_parked(&client);
        }
        if now.mono >= self.next_expiry {
            self.next_expiry = now.mono + EXPIRY_INTERVAL;
            let expired = self.store.expire(now.unix_ms);
            if expired > 0 {
                self.stats.expired += expired as u64;
                self.events.push_back(ServerEvent::Expired(expired));
            }
        }
    }

    /// Answers `client`'s held fetch with what its mailbox holds (possibly nothing).
    fn answer_parked(&mut self, client: &ClientId) {
        if let Some(parked) = self.parked.remove(client) {
            self.deadlines.remove(&(parked.until, *client));
            let answer = self.batch(client, parked.ack_through, parked.max);
            self.answers.push_back((parked.channel, answer));
        }
    }

    fn batch(&mut self, client: &ClientId, ack_through: u64, max: usize) -> MailboxResponse {
        let fetched = self.store.fetch(client, ack_through, max);
        self.stats.handed += fetched.packets.len() as u64;
        MailboxResponse {
            response: Some(MailboxAnswer::Batch(MailboxBatch {
                items: fetched
                    .packets
                    .into_iter()
                    .map(|p| MailboxItem {
                        seq: p.seq,
                        label: p.label.0.to_vec(),
                        body: p.body,
                    })
                    .collect(),
                remaining: Some(fetched.remaining as u64),
            })),
        }
    }

    /// Exactly `items` items: what waits (up to `real` of them), then dummies of the same size.
    fn padded_batch(
        &mut self,
        client: &ClientId,
        ack_through: u64,
        real: usize,
        items: usize,
    ) -> MailboxResponse {
        let mut answer = self.batch(client, ack_through, real.min(items));
        if let Some(MailboxAnswer::Batch(batch)) = &mut answer.response {
            // A stored body of another size (a gateway whose geometry changed) keeps its size:
            // it is the packet; the dummies are what is made to match.
            let dummies = items - batch.items.len();
            self.stats.dummies += dummies as u64;
            batch.items.extend((0..dummies).map(|_| MailboxItem {
                seq: DUMMY_SEQ,
                label: vec![0; 16],
                body: vec![0; self.body_size],
            }));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use p2pmix_sim::{Actor, ActorId, Ctx, Link, Sim};

    use std::collections::VecDeque;

    use super::*;
    use crate::mailbox::{
        MailboxConfig,
        fetcher::{Delivery, MailboxFetcher, PullRate},
        store::Persistence,
    };

    /// What crosses the client's link (fetches and answers by request number, as
    /// request-response correlates them) and the network's deliveries to the gateway.
    enum Wire {
        Fetch(u64, MailboxRequest),
        Answer(u64, MailboxResponse),
        Deliver(u8),
    }

    fn client_of(actor: ActorId) -> ClientId {
        ClientId([actor.0 as u8; 32])
    }

    /// A disk that takes `write` for every save, and fails them all if `broken`.
    struct SlowDisk {
        write: Duration,
        broken: bool,
        writing: VecDeque<(Instant, SpoolOp)>,
        written: Vec<Instant>,
    }

    struct Gateway {
        server: MailboxServer<(ActorId, u64)>,
        refused: Vec<MailboxError>,
        disk: Option<SlowDisk>,
        /// The size of the bodies the network delivers.
        body: usize,
    }

    impl Gateway {
        fn flush(&mut self, ctx: &mut Ctx<'_, Wire>) {
            if let Some(disk) = &mut self.disk {
                while let Some(op) = self.server.poll_spool() {
                    disk.writing.push_back((ctx.mono() + disk.write, op));
                }
                while disk.writing.front().is_some_and(|(t, _)| *t <= ctx.mono()) {
                    if let Some((t, SpoolOp::Save { client, packet })) = disk.writing.pop_front() {
                        disk.written.push(t);
                        self.server.spooled(&client, packet.seq, !disk.broken);
                    }
                }
            }
            while let Some(((to, id), answer)) = self.server.poll_answer() {
                ctx.send(to, Wire::Answer(id, answer));
            }
        }
    }

    impl Actor<Wire> for Gateway {
        fn poll_timeout(&self) -> Option<Instant> {
            let disk = self
                .disk
                .as_ref()
                .and_then(|d| d.writing.front().map(|(t, _)| *t));
            [self.server.poll_timeout(), disk]
                .into_iter()
                .flatten()
                .min()
        }
        fn handle_timeout(&mut self, ctx: &mut Ctx<'_, Wire>) {
            self.server.handle_timeout(ctx.now);
            self.flush(ctx);
        }
        fn handle_message(&mut self, ctx: &mut Ctx<'_, Wire>, from: ActorId, message: Wire) {
            match message {
                Wire::Fetch(id, request) => {
                    self.server
                        .handle_fetch(ctx.now, client_of(from), None, request, (from, id))
                }
                // The network delivers for the client actor 1.
                Wire::Deliver(n) => {
                    let to = client_of(ActorId(1));
                    let body = vec![n; self.body];
                    if let Err(e) = self
                        .server
                        .handle_delivery(ctx.now, &to, Label([n; 16]), &body)
                    {
                        self.refused.push(e);
                    }
                }
                Wire::Answer(..) => {}
            }
            self.flush(ctx);
        }
    }

    struct Client {
        fetcher: MailboxFetcher,
        gateway: ActorId,
        fetches: u32,
        got: Vec<(Instant, Delivery)>,
        /// What someone watching the link sees of each answer: when it came, and its size on
        /// the wire (the codec's length prefix is a function of it).
        seen: Vec<(Instant, usize)>,
        /// While the application is behind.
        backlog: Option<(Instant, Instant)>,
        /// The size of each fetch sent.
        fetch_sizes: Vec<usize>,
    }

    impl Actor<Wire> for Client {
        fn poll_timeout(&self) -> Option<Instant> {
            self.fetcher.poll_timeout()
        }
        fn handle_timeout(&mut self, ctx: &mut Ctx<'_, Wire>) {
            let now = ctx.mono();
            self.fetcher.set_backlogged(
                self.backlog
                    .is_some_and(|(from, to)| from <= now && now < to),
            );
            self.fetcher.handle_timeout(now);
            if let Some(request) = self.fetcher.poll_request() {
                self.fetch_sizes.push(prost::Message::encoded_len(&request));
                self.fetches += 1;
                ctx.send(self.gateway, Wire::Fetch(self.fetches.into(), request));
            }
        }
        fn handle_message(&mut self, ctx: &mut Ctx<'_, Wire>, _: ActorId, message: Wire) {
            if let Wire::Answer(_, answer) = &message {
                self.seen
                    .push((ctx.mono(), prost::Message::encoded_len(answer)));
            }
            // Only the answer to the fetch under way counts (request-response correlates them).
            if let Wire::Answer(id, answer) = message
                && id == u64::from(self.fetches)
                && let Ok(items) = self.fetcher.handle_response(ctx.mono(), answer)
            {
                let now = ctx.mono();
                if let Some(seq) = items.iter().map(|d| d.seq).max() {
                    self.fetcher.processed(seq);
                }
                self.got.extend(items.into_iter().map(|d| (now, d)));
            }
        }
    }

    const LATENCY: Duration = Duration::from_millis(40);

    /// A gateway (actor 0), its client (actor 1) and the network (actor 2, which only sends).
    fn network() -> (Sim<Wire>, ActorId, ActorId, ActorId) {
        network_with(None)
    }

    /// A gateway (actor 0) with a memory store or, with `disk`, a spooled one, its client
    /// (actor 1) and the network (actor 2, which only sends).
    fn network_with(disk: Option<SlowDisk>) -> (Sim<Wire>, ActorId, ActorId, ActorId) {
        network_paced(disk, PullRate::LongPoll, 1)
    }

    /// [`network_with`], the client pulling at `rate`, the network delivering `body`-byte
    /// bodies.
    fn network_paced(
        disk: Option<SlowDisk>,
        rate: PullRate,
        body: usize,
    ) -> (Sim<Wire>, ActorId, ActorId, ActorId) {
        let mut sim = Sim::new(11);
        sim.set_default_link(Link::fixed(LATENCY));
        let persistence = if disk.is_some() {
            Persistence::Spooled
        } else {
            Persistence::Memory
        };
        let store = MailboxStore::new(MailboxConfig::default(), persistence, sim.now().unix_ms);
        let gateway = sim.add(Gateway {
            server: MailboxServer::new(store, sim.now()).with_body_size(body),
            refused: Vec::new(),
            disk,
            body,
        });
        let client = sim.add(Client {
            fetcher: MailboxFetcher::new(sim.now().mono, rate),
            gateway,
            fetches: 0,
            got: Vec::new(),
            seen: Vec::new(),
            backlog: None,
            fetch_sizes: Vec::new(),
        });
        let net = sim.add(Client {
            fetcher: MailboxFetcher::new(
                sim.now().mono + Duration::from_secs(1 << 30),
                PullRate::LongPoll,
            ),
            gateway,
            fetches: 0,
            got: Vec::new(),
            seen: Vec::new(),
            backlog: None,
            fetch_sizes: Vec::new(),
        });
        (sim, gateway, client, net)
    }

    #[test]
    fn a_held_fetch_is_answered_as_soon_as_a_packet_arrives() {
        let (mut sim, gateway, client, net) = network();
        // Before the client's first fetch arrives it is not registered: the packet is refused.
        sim.set_link(net, gateway, Link::fixed(Duration::from_millis(1)));
        sim.send(net, gateway, Wire::Deliver(9));
        sim.run_for(Duration::from_millis(10));
        assert!(matches!(
            sim.actor::<Gateway>(gateway).refused[..],
            [MailboxError::NotRegistered]
        ));
        sim.run_for(Duration::from_secs(5));
        assert_eq!(
            sim.actor::<Gateway>(gateway).server.parked(),
            1,
            "the fetch is held"
        );
        let sent = sim.now().mono;
        sim.send(net, gateway, Wire::Deliver(1));
        assert!(sim.run_within(Duration::from_secs(30), |s| {
            !s.actor::<Client>(client).got.is_empty()
        }));
        let (at, delivery) = &sim.actor::<Client>(client).got[0];
        assert_eq!(delivery.body, [1]);
        assert_eq!(
            *at - sent,
            Duration::from_millis(1) + LATENCY,
            "to the gateway, then at once the held answer"
        );
        // The next fetch, sent at once, acknowledges it: the gateway deletes it.
        sim.run_for(Duration::from_secs(1));
        assert!(sim.actor::<Gateway>(gateway).server.store().is_empty());
        assert_eq!(sim.actor::<Gateway>(gateway).server.parked(), 1);
        assert_eq!(sim.actor::<Client>(client).got.len(), 1, "handed over once");
    }

    #[test]
    fn a_packet_is_handed_over_only_once_it_is_on_disk_and_never_when_its_write_failed() {
        let write = Duration::from_millis(7);
        for broken in [false, true] {
            let (mut sim, gateway, client, net) = network_with(Some(SlowDisk {
                write,
                broken,
                writing: VecDeque::new(),
                written: Vec::new(),
            }));
            sim.set_link(net, gateway, Link::fixed(Duration::from_millis(1)));
            sim.run_for(Duration::from_secs(5));
            sim.send(net, gateway, Wire::Deliver(3));
            sim.run_for(Duration::from_secs(30));
            let got = &sim.actor::<Client>(client).got;
            let written = &sim.actor::<Gateway>(gateway).disk.as_ref().unwrap().written;
            assert_eq!(written.len(), 1, "one save");
            if broken {
                assert!(
                    got.is_empty(),
                    "a packet that never reached the disk is never handed"
                );
                let stats = sim.actor::<Gateway>(gateway).server.stats();
                assert_eq!(stats.refused[MailboxError::IO_INDEX], 1);
                assert_eq!(stats.stored, 0);
            } else {
                assert_eq!(got.len(), 1);
                assert_eq!(
                    got[0].0 - written[0],
                    LATENCY,
                    "the held answer leaves when the write completes, not before"
                );
            }
        }
    }

    #[test]
    fn a_quiet_mailbox_answers_each_fetch_after_its_wait_and_the_client_asks_again() {
        let (mut sim, gateway, client, _) = network();
        sim.run_for(Duration::from_secs(100) + 2 * LATENCY);
        // Every fetch is held for MAX_WAIT (20 s) and answered empty; the client asks again at
        // once: one fetch per 20 s plus the round trip.
        let fetches = sim.actor::<Client>(client).fetches;
        assert_eq!(fetches, 5, "fetches in 100 s of quiet");
        assert!(sim.actor::<Client>(client).got.is_empty());
        assert_eq!(sim.actor::<Gateway>(gateway).server.stats().handed, 0);
    }

    #[test]
    fn a_newer_fetch_replaces_a_held_one_which_is_answered_empty() {
        let (mut sim, gateway, client, net) = network();
        sim.run_for(Duration::from_secs(1));
        // A second fetch from the same client (it reconnected), while the first is held.
        sim.send(
            client,
            gateway,
            Wire::Fetch(
                999,
                MailboxRequest {
                    ack_through: Some(0),
                    max: 8,
                    wait_ms: 20_000,
                    ..MailboxRequest::default()
                },
            ),
        );
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.actor::<Gateway>(gateway).server.parked(), 1);
        sim.send(net, gateway, Wire::Deliver(5));
        sim.run_for(Duration::from_secs(1));
        let got = &sim.actor::<Client>(client).got;
        assert_eq!(got.len(), 1, "one answer carries the packet, once");
        assert_eq!(got[0].1.body, [5]);
    }

    const PULL: PullRate = PullRate::Constant {
        interval: Duration::from_millis(100),
        items: 4,
    };

    /// What the client's link shows over `run` when the network delivers by `pattern` (a list
    /// of (time from start, packets)), and what the client got.
    fn watch_link(
        rate: PullRate,
        pattern: &[(Duration, u8)],
        run: Duration,
    ) -> (Vec<(Duration, usize)>, Vec<Delivery>) {
        watch_backlogged_link(rate, pattern, run, None).0
    }

    /// [`watch_link`], the application behind for `backlog` (from, to after the start); also
    /// when each packet was handed over.
    #[allow(clippy::type_complexity)]
    fn watch_backlogged_link(
        rate: PullRate,
        pattern: &[(Duration, u8)],
        run: Duration,
        backlog: Option<(Duration, Duration)>,
    ) -> ((Vec<(Duration, usize)>, Vec<Delivery>), Vec<Duration>) {
        let (mut sim, gateway, client, net) = network_paced(None, rate, 1_000);
        let start = sim.now().mono;
        sim.actor_mut::<Client>(client).backlog =
            backlog.map(|(from, to)| (start + from, start + to));
        // Let the client register before anything is delivered.
        sim.run_for(Duration::from_millis(500));
        let mut n = 0u8;
        for &(at, packets) in pattern {
            let wait =
                (start + Duration::from_millis(500) + at).saturating_duration_since(sim.now().mono);
            sim.run_for(wait);
            for _ in 0..packets {
                n = n.wrapping_add(1);
                sim.send(net, gateway, Wire::Deliver(n));
            }
        }
        let left = (start + run).saturating_duration_since(sim.now().mono);
        sim.run_for(left);
        let c = sim.actor::<Client>(client);
        let sizes: std::collections::BTreeSet<usize> = c.fetch_sizes.iter().copied().collect();
        if rate != PullRate::LongPoll {
            assert_eq!(sizes.len(), 1, "every fetch has one size: {sizes:?}");
        }
        (
            (
                c.seen.iter().map(|(t, size)| (*t - start, *size)).collect(),
                c.got.iter().map(|(_, d)| d.clone()).collect(),
            ),
            c.got.iter().map(|(t, _)| *t - start).collect(),
        )
    }

    /// A recipient releasing its senders' acknowledgement SURBs on and off: bursts of packets
    /// in the "on" seconds, nothing in the "off" ones.
    fn on_off() -> Vec<(Duration, u8)> {
        (0..20u64)
            .filter(|s| s % 4 < 2)
            .flat_map(|s| (0..10u64).map(move |k| (Duration::from_millis(s * 1_000 + k * 97), 3)))
            .collect()
    }

    /// The constant-rate link: what someone watching the client's link sees (when each answer
    /// comes and how large it is) is the same, answer for answer, whether nothing arrives or a
    /// recipient releases packets on and off; and nothing is lost (what does not fit waits for
    /// the next pull). With the long poll, the attack works: answers follow arrivals.
    #[test]
    fn the_inbound_link_shows_the_same_sizes_at_the_same_times_with_and_without_traffic() {
        let run = Duration::from_secs(30);
        let (quiet, nothing) = watch_link(PULL, &[], run);
        let pattern = on_off();
        let sent: usize = pattern.iter().map(|(_, n)| usize::from(*n)).sum();
        let (busy, got) = watch_link(PULL, &pattern, run);
        assert!(nothing.is_empty());
        assert_eq!(got.len(), sent, "every packet arrives, none twice");
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        assert_eq!(quiet.len(), busy.len(), "as many answers");
        assert!(quiet.len() >= 290, "one answer per 100 ms: {}", quiet.len());
        assert_eq!(quiet, busy, "the link shows the traffic");
        let sizes: std::collections::BTreeSet<usize> = busy.iter().map(|(_, s)| *s).collect();
        assert_eq!(sizes.len(), 1, "one answer size: {sizes:?}");
        // The attack, against the long poll: the same traffic changes what the link shows.
        let (quiet, _) = watch_link(PullRate::LongPoll, &[], run);
        let (busy, got) = watch_link(PullRate::LongPoll, &pattern, run);
        assert_eq!(got.len(), sent);
        assert_ne!(
            quiet, busy,
            "the long poll hides nothing (or the test sees nothing)"
        );
    }

    /// A client cannot make its gateway send more than [`MAX_PADDED_ITEMS`] items per fetch.
    #[test]
    fn a_padded_fetch_is_capped() {
        let (mut sim, gateway, client, _) = network_paced(None, PULL, 100);
        sim.run_for(Duration::from_secs(1));
        sim.send(
            client,
            gateway,
            Wire::Fetch(
                7,
                MailboxRequest {
                    max: u32::MAX,
                    padded: true,
                    ..MailboxRequest::default()
                },
            ),
        );
        sim.run_for(Duration::from_secs(1));
        let c = sim.actor::<Client>(client);
        let largest = c.seen.iter().map(|(_, s)| *s).max().unwrap();
        let one = c.seen[0].1;
        assert!(largest > one, "the oversized fetch was answered");
        assert!(
            largest <= one / 4 * MAX_PADDED_ITEMS + 64,
            "{largest} bytes for one fetch (a 4-item answer is {one})"
        );
    }

    /// An application that falls behind does not show on the link: the client keeps pulling at
    /// its pace, the answers are all dummies while it is behind, and what waited comes after.
    #[test]
    fn a_backlogged_client_pulls_at_the_same_pace_and_gets_everything_after() {
        let run = Duration::from_secs(30);
        let (quiet, _) = watch_link(PULL, &[], run);
        let pattern = on_off();
        let sent: usize = pattern.iter().map(|(_, n)| usize::from(*n)).sum();
        let backlog = (Duration::from_secs(3), Duration::from_secs(12));
        let ((busy, got), handed) = watch_backlogged_link(PULL, &pattern, run, Some(backlog));
        assert_eq!(quiet, busy, "the link shows the backlog");
        assert_eq!(got.len(), sent, "every packet arrives once");
        // Answers to fetches sent before the backlog began may still carry packets.
        let held = (backlog.0 + Duration::from_millis(200), backlog.1);
        assert!(
            !handed.iter().any(|t| held.0 <= *t && *t < held.1),
            "packets handed over while the application was behind"
        );
    }
}
