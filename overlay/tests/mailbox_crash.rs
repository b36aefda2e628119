//! A gateway's mailbox database under SIGKILL. A child process (this test binary run again)
//! drives the mailbox store and its writer thread as the node does, with a client fetching and
//! acknowledging all the time, and prints what it did: `D id` once a packet's save was reported
//! durable (from then on it may be handed over), `H id` when it was handed to the client, `A id`
//! when the client acknowledged it. The parent kills it with SIGKILL in full flow, opens the
//! database as a restarted gateway would, and checks that nothing durable and unacknowledged is
//! lost, that nothing is held twice, and that acknowledgements reached the disk in order (what
//! comes back already acknowledged is only the newest of them, which the client's dedupe drops).
#![allow(missing_docs, unreachable_pub)]

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use p2pmix::{
    mailbox::{
        MailboxConfig, MailboxStore, SpoolOp,
        spool::{DiskSpool, Handoff, SpoolWriter},
        store::Persistence,
    },
    sphinx::{ClientId, Label},
};

const CHILD_ENV: &str = "P2PMIX_MAILBOX_CRASH_CHILD";
const T0: u64 = 1_800_000_000_000;
const CLIENT: ClientId = ClientId([5; 32]);
/// Durable packets the parent waits for before it kills the child.
const KILL_AFTER: usize = 3_000;

fn body(id: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(&id.to_be_bytes());
    b
}

fn id_of(body: &[u8]) -> u32 {
    u32::from_be_bytes(body[..4].try_into().unwrap())
}

/// The gateway: stores, spools, hands over and deletes until it is killed.
fn child(path: PathBuf) -> ! {
    let spool = DiskSpool::open(&path).unwrap();
    let writer = SpoolWriter::start(spool).unwrap();
    let mut writer = writer;
    let mut store = MailboxStore::new(MailboxConfig::default(), Persistence::Spooled, T0);
    store.register(CLIENT, T0, None).unwrap();
    let mut out = std::io::stdout().lock();
    let mut next_id = 0u32;
    let mut ids: BTreeMap<u64, u32> = BTreeMap::new();
    let mut handed: BTreeMap<u64, u32> = BTreeMap::new();
    let mut ack = 0u64;
    loop {
        for _ in 0..16 {
            match store.store(&CLIENT, Label([1; 16]), &body(next_id), T0) {
                Ok(seq) => {
                    ids.insert(seq, next_id);
                    next_id += 1;
                }
                Err(_) => break,
            }
        }
        while let Some(op) = store.poll_spool() {
            let save = match &op {
                SpoolOp::Save { client, packet } => Some((*client, packet.seq)),
                _ => None,
            };
            if let (refused, Some((client, seq))) = (writer.submit(op), save)
                && refused != Handoff::Queued
            {
                store.spooled(&client, seq, false);
            }
        }
        while let Some(report) = writer.try_report() {
            for (client, seq) in report.saves {
                if store.spooled(&client, seq, report.written) {
                    writeln!(out, "D {}", ids[&seq]).unwrap();
                }
            }
        }
        // The client acknowledges everything it was handed by its next fetch.
        let rest = handed.split_off(&(ack + 1));
        for id in std::mem::replace(&mut handed, rest).values() {
            writeln!(out, "A {id}").unwrap();
        }
        for packet in store.fetch(&CLIENT, ack, 16).packets {
            writeln!(out, "H {}", id_of(&packet.body)).unwrap();
            handed.insert(packet.seq, id_of(&packet.body));
            ack = packet.seq;
        }
        out.flush().unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_gateway_killed_with_spooled_mail_loses_nothing_and_keeps_nothing_twice() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(PathBuf::from(path));
    }
    let path =
        std::env::temp_dir().join(format!("p2pmix-mailbox-crash-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(path.clone());
    let mut gateway = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_gateway_killed_with_spooled_mail_loses_nothing_and_keeps_nothing_twice",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let (mut durable, mut handed, mut acked) = (Vec::new(), HashSet::new(), Vec::new());
    let mut record = |line: &str| {
        let (kind, id) = line.split_once(' ').unwrap_or(("", ""));
        let Ok(id) = id.parse::<u32>() else { return };
        match kind {
            "D" => durable.push(id),
            "H" => {
                handed.insert(id);
            }
            "A" => acked.push(id),
            _ => {}
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "the child made {seen} packets durable in 120 s"
        );
        let line = lines.next().expect("the child runs").unwrap();
        seen += usize::from(line.starts_with("D "));
        record(&line);
    }
    // SIGKILL in full flow: batches are being written.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    for line in lines {
        record(&line.unwrap());
    }

    let (contents, damaged) = DiskSpool::open(&path).unwrap().load().unwrap();
    assert_eq!(damaged, 0);
    let mut held: Vec<u32> = contents
        .iter()
        .flat_map(|(_, _, packets)| packets.iter().map(|p| id_of(&p.body)))
        .collect();
    let on_disk: HashSet<u32> = held.iter().copied().collect();
    held.sort_unstable();
    held.dedup();
    assert_eq!(held.len(), on_disk.len());
    assert_eq!(
        contents.iter().map(|(_, _, p)| p.len()).sum::<usize>(),
        on_disk.len(),
        "no packet is held twice"
    );
    let acked_set: HashSet<u32> = acked.iter().copied().collect();
    let lost: Vec<u32> = durable
        .iter()
        .copied()
        .filter(|id| !acked_set.contains(id) && !on_disk.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} durable, unacknowledged packets lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // Acknowledgements are written in order: those that come back are the newest ones.
    let first_back = acked.iter().position(|id| on_disk.contains(id));
    if let Some(first) = first_back {
        assert!(
            acked[first..].iter().all(|id| on_disk.contains(id)),
            "an older acknowledgement was lost while a newer one was kept"
        );
    }
    // A restarted gateway hands over what it holds; the client, which processed everything it
    // was handed, keeps by its (durable) delivered set only what is new: every durable packet
    // reaches it once.
    let mut store = MailboxStore::restore(MailboxConfig::default(), T0 + 1, contents);
    let again = store.fetch(&CLIENT, 0, usize::MAX).packets;
    let mut delivered = handed.clone();
    for p in &again {
        delivered.insert(id_of(&p.body));
    }
    assert!(durable.iter().all(|id| delivered.contains(id)));
    eprintln!(
        "durable {}, acknowledged {}, on disk after SIGKILL {} (of them already acknowledged {})",
        durable.len(),
        acked.len(),
        on_disk.len(),
        first_back.map_or(0, |f| acked.len() - f)
    );
}
