//! A gateway's mailbox store on disk at 10 000 packets a second (issue 16).
//!
//! `cargo bench -p p2pmix --bench mailbox`
//!
//! The gateway's path for a packet that reaches a client's mailbox: `MailboxStore::store`, its
//! `SpoolOp::Save` handed to the `SpoolWriter` thread (redb, one durable commit per batch of
//! whatever waits), and back through `MailboxStore::spooled` once the commit returned; only then
//! may the packet be handed to its client. Then the client's fetches and acknowledgements, whose
//! deletes go the same way.
//!
//! Two runs in a fresh database under the system's temporary directory (removed after): as
//! fast as the store takes packets (the most the disk sustains; batches grow with the load),
//! and paced at 10 000 packets a second, with the time from `store` to durable per packet.
//! 2 KiB bodies (a Sphinx payload), 1000 clients.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use p2pmix::mailbox::{
    DiskSpool, MailboxConfig, MailboxStore, SpoolOp,
    spool::{Handoff, SpoolWriter},
    store::Persistence,
};
use p2pmix::sphinx::{ClientId, Label};

const CLIENTS: u32 = 1000;
const BODY: usize = 2048;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn client(i: u32) -> ClientId {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_le_bytes());
    ClientId(id)
}

struct Gateway {
    store: MailboxStore,
    writer: SpoolWriter,
    dir: std::path::PathBuf,
    stored_at: std::collections::HashMap<(ClientId, u64), Instant>,
    waits: Vec<Duration>,
    batches: u64,
    refused: u64,
}

impl Gateway {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("p2pmix-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spool = DiskSpool::open(&dir.join("mailbox.redb")).unwrap();
        let writer = SpoolWriter::start(spool).unwrap();
        let config = MailboxConfig {
            max_clients: CLIENTS as usize * 2,
            ..MailboxConfig::default()
        };
        let mut store = MailboxStore::new(config, Persistence::Spooled, unix_ms());
        for i in 0..CLIENTS {
            store.register(client(i), unix_ms(), None).unwrap();
        }
        let mut g = Gateway {
            store,
            writer,
            dir,
            stored_at: Default::default(),
            waits: Vec::new(),
            batches: 0,
            refused: 0,
        };
        g.hand_over();
        g.drain_until_done();
        g.waits.clear();
        g.batches = 0;
        g
    }

    /// Hands the store's changes to the writer; a save the full queue refuses is dropped as
    /// the gateway drops it (its sender retransmits) and counted.
    fn hand_over(&mut self) {
        while let Some(op) = self.store.poll_spool() {
            let save = match &op {
                SpoolOp::Save { client, packet } => Some((*client, packet.seq)),
                _ => None,
            };
            if self.writer.submit(op) == Handoff::Full
                && let Some((c, seq)) = save
            {
                self.store.spooled(&c, seq, false);
                self.stored_at.remove(&(c, seq));
                self.refused += 1;
            }
        }
    }

    fn take_reports(&mut self) {
        while let Some(report) = self.writer.try_report() {
            self.batches += 1;
            let now = Instant::now();
            for (c, seq) in report.saves {
                if self.store.spooled(&c, seq, report.written)
                    && let Some(t) = self.stored_at.remove(&(c, seq))
                {
                    self.waits.push(now - t);
                }
            }
        }
    }

    fn drain_until_done(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.stored_at.is_empty() && Instant::now() < deadline {
            self.take_reports();
            std::thread::sleep(Duration::from_micros(200));
        }
        self.take_reports();
    }

    fn store_one(&mut self, n: u64, body: &[u8]) {
        let c = client((n % u64::from(CLIENTS)) as u32);
        let seq = self
            .store
            .store(&c, Label([n as u8; 16]), body, unix_ms())
            .unwrap();
        self.stored_at.insert((c, seq), Instant::now());
        self.hand_over();
    }

    /// Every client fetches what it has and acknowledges it: the deletes go to disk too.
    fn fetch_all(&mut self) -> usize {
        let mut n = 0;
        for i in 0..CLIENTS {
            let got = self.store.fetch(&client(i), 0, usize::MAX);
            if let Some(last) = got.packets.last() {
                n += got.packets.len();
                let _ = self.store.fetch(&client(i), last.seq, 0);
            }
        }
        self.hand_over();
        n
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(what: &str, g: &mut Gateway, offered: u64, elapsed: Duration) {
    g.waits.sort();
    let packets = g.waits.len() as u64;
    println!(
        "  {what}: {packets} of {offered} packets durable in {:.2} s = {:.0} pkt/s ({} refused \
         by the full writer queue, {} not reported); {} commits ({:.0} packets a commit); store \
         to durable p50 {:.1} ms, p99 {:.1} ms",
        elapsed.as_secs_f64(),
        packets as f64 / elapsed.as_secs_f64(),
        g.refused,
        g.stored_at.len(),
        g.batches,
        packets as f64 / g.batches.max(1) as f64,
        percentile(&g.waits, 0.5).as_secs_f64() * 1e3,
        percentile(&g.waits, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let body = vec![0x5a; BODY];
    println!(
        "mailbox bench: {CLIENTS} clients, {BODY}-byte bodies, redb in {}",
        std::env::temp_dir().display()
    );

    // As fast as the store takes them.
    let mut g = Gateway::new("burst");
    const BURST: u64 = 100_000;
    let t = Instant::now();
    for n in 0..BURST {
        g.store_one(n, &body);
        if n % 256 == 0 {
            g.take_reports();
        }
    }
    g.drain_until_done();
    report("as fast as it goes", &mut g, BURST, t.elapsed());
    let t = Instant::now();
    let fetched = g.fetch_all();
    // The deletes' commit: the writer reports only saves, so one more packet follows them and
    // its report says the deletes before it are on disk (the writer keeps the order).
    g.store_one(BURST, &body);
    g.drain_until_done();
    println!(
        "  fetched and acknowledged {fetched} packets (deletes committed) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(g);

    // Paced at 10 000 a second for 5 s: 10 packets every millisecond.
    let mut g = Gateway::new("paced");
    const RATE: u64 = 10_000;
    let total = RATE * 5;
    let start = Instant::now();
    for n in 0..total {
        let due = start + Duration::from_micros(n * 1_000_000 / RATE);
        while Instant::now() < due {
            g.take_reports();
            std::thread::sleep(Duration::from_micros(100));
        }
        g.store_one(n, &body);
    }
    g.drain_until_done();
    report("paced at 10 000 pkt/s", &mut g, total, start.elapsed());
}
