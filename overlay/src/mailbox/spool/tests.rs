use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use super::*;
use crate::mailbox::{
    MailboxConfig, MailboxStore,
    store::{Persistence, SEEN_GRANULARITY},
};

const T0: u64 = 1_800_000_000_000;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("p2pmix-mailbox-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn client(n: u8) -> ClientId {
    ClientId([n; 32])
}

/// Applies every pending change in one batch, reporting saves back as the node does.
fn flush(store: &mut MailboxStore, spool: &mut DiskSpool) {
    let ops: Vec<SpoolOp> = std::iter::from_fn(|| store.poll_spool()).collect();
    let written = spool.apply(&ops).is_ok();
    for op in &ops {
        if let SpoolOp::Save { client, packet } = op {
            store.spooled(client, packet.seq, written);
        }
    }
}

#[test]
fn a_restart_keeps_registrations_their_origin_and_last_seen_packets_and_growing_numbers() {
    let file = Scratch::new("restart");
    let mut spool = DiskSpool::open(&file.0).unwrap();
    let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
    let ip: IpAddr = Ipv4Addr::new(198, 51, 100, 7).into();
    store.register(client(1), T0, Some(ip)).unwrap();
    store.register(client(2), T0, None).unwrap();
    let a = store.store(&client(1), Label([1; 16]), b"one", T0).unwrap();
    let b = store.store(&client(1), Label([2; 16]), b"two", T0).unwrap();
    flush(&mut store, &mut spool);
    store.fetch(&client(1), 0, 10); // both handed over
    store.fetch(&client(1), a, 10); // the first one processed
    // Seen again long after: the disk learns it.
    store
        .register(client(2), T0 + SEEN_GRANULARITY + 1, None)
        .unwrap();
    flush(&mut store, &mut spool);
    drop(store);
    drop(spool);

    let spool = DiskSpool::open(&file.0).unwrap();
    let (contents, damaged) = spool.load().unwrap();
    assert_eq!(damaged, 0);
    let reg = |c: ClientId| contents.iter().find(|e| e.0 == c).map(|e| e.1);
    assert_eq!(
        reg(client(1)),
        Some(Registration {
            origin: Some(ip),
            seen_ms: T0
        })
    );
    assert_eq!(
        reg(client(2)).map(|r| r.seen_ms),
        Some(T0 + SEEN_GRANULARITY + 1)
    );
    let mut store = MailboxStore::restore(MailboxConfig::default(), T0 + 1, contents);
    assert_eq!(store.len(), 1);
    assert_eq!(store.registered_from(ip), 1, "the address still counts");
    let held = store.fetch(&client(1), a, 10).packets;
    assert_eq!(
        (held[0].seq, held[0].label, &held[0].body[..]),
        (b, Label([2; 16]), &b"two"[..])
    );
    let c = store
        .store(&client(1), Label([3; 16]), b"three", T0 + 1)
        .unwrap();
    assert!(c > b);
}

#[test]
fn an_idle_registration_expires_after_a_restart_as_it_would_have_without_one() {
    let file = Scratch::new("idle");
    let config = MailboxConfig {
        idle_registration: Duration::from_secs(600),
        ..MailboxConfig::default()
    };
    let mut spool = DiskSpool::open(&file.0).unwrap();
    let mut store = MailboxStore::new(config, Persistence::Spooled, T0);
    store.register(client(1), T0, None).unwrap();
    store.register(client(2), T0, None).unwrap();
    store.store(&client(2), Label([1; 16]), b"x", T0).unwrap();
    flush(&mut store, &mut spool);
    drop(store);
    // The gateway restarts 9 minutes later: the lease is not renewed by the restart.
    let (contents, _) = spool.load().unwrap();
    let mut store = MailboxStore::restore(config, T0 + 540_000, contents);
    store.expire(T0 + 600_000);
    flush(&mut store, &mut spool);
    assert!(!store.is_registered(&client(1)), "idle and empty: gone");
    assert!(store.is_registered(&client(2)), "it holds a packet");
    let (contents, _) = spool.load().unwrap();
    assert_eq!(contents.len(), 1, "forgotten on disk too");
}

#[test]
fn damaged_entries_are_skipped_and_counted() {
    let file = Scratch::new("damaged");
    let mut spool = DiskSpool::open(&file.0).unwrap();
    let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
    store.register(client(1), T0, None).unwrap();
    store.store(&client(1), Label([1; 16]), b"ok", T0).unwrap();
    flush(&mut store, &mut spool);
    let txn = spool.db.begin_write().unwrap();
    {
        let mut p = txn.open_table(PACKETS).unwrap();
        p.insert(&b"short key"[..], &b"x"[..]).unwrap();
        p.insert(&packet_key(&client(1), 9)[..], &b"short"[..])
            .unwrap();
        let mut r = txn.open_table(REGISTRATIONS).unwrap();
        r.insert(&client(3).0[..], &[9u8, 9][..]).unwrap();
    }
    txn.commit().unwrap();
    let (contents, damaged) = spool.load().unwrap();
    assert_eq!(damaged, 3);
    assert_eq!(contents.len(), 1);
    assert_eq!(contents[0].2.len(), 1);
}

#[tokio::test]
async fn the_writer_batches_changes_and_reports_saves_only_once_written() {
    let file = Scratch::new("writer");
    let spool = DiskSpool::open(&file.0).unwrap();
    let mut writer = SpoolWriter::start(spool).unwrap();
    let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
    store.register(client(1), T0, None).unwrap();
    for i in 0..1000u32 {
        store
            .store(&client(1), Label([1; 16]), &i.to_be_bytes(), T0)
            .unwrap();
    }
    while let Some(op) = store.poll_spool() {
        assert_eq!(writer.submit(op), Handoff::Queued);
    }
    let mut saved = 0;
    let mut reports = 0;
    while saved < 1000 {
        let report = tokio::time::timeout(Duration::from_secs(30), writer.next_report())
            .await
            .expect("the writer reports")
            .expect("the writer runs");
        assert!(report.written);
        for (c, seq) in report.saves {
            assert!(store.spooled(&c, seq, true));
            saved += 1;
        }
        reports += 1;
    }
    assert!(reports < 1000, "saves were batched ({reports} reports)");
    drop(writer);
    let (contents, _) = DiskSpool::open(&file.0).unwrap().load().unwrap();
    assert_eq!(contents[0].2.len(), 1000);
}
