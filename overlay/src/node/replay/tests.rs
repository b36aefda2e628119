use std::time::{Duration, Instant};

use p2pmix_mix::{ReplayLog, ReplayRefusal};

use super::{
    writer::{JournalWriter, SnapshotPolicy},
    *,
};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "p2pmix-replay-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tag(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn config() -> ReplayConfig {
    ReplayConfig {
        expected_packets: 2_000,
        false_positive_rate: 1e-6,
    }
}

/// A key's cache, prepared on disk and handing its tags to `log`.
fn prepared(
    store: &ReplayStore,
    epoch: u64,
    secret: &NodeSecretKey,
    log: &Arc<ReplayLog>,
) -> Arc<ReplayCache> {
    let mut cache = ReplayCache::for_key(config(), secret, ReplayBudget::new(1 << 30));
    store.prepare(epoch, &cache).unwrap();
    cache.attach_log(epoch, log.clone());
    Arc::new(cache)
}

fn writer(
    store: &ReplayStore,
    log: &Arc<ReplayLog>,
    epoch: u64,
    cache: &Arc<ReplayCache>,
    policy: SnapshotPolicy,
) -> JournalWriter {
    let cache = cache.clone();
    JournalWriter::start(
        store.dir().to_path_buf(),
        log.clone(),
        Box::new(move || vec![(epoch, cache.clone())]),
        policy,
    )
    .unwrap()
}

fn wait_durable(log: &ReplayLog, mark: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.is_durable(mark) {
        assert!(
            Instant::now() < deadline,
            "the journal never became durable"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The disk fails (the key's directory is replaced by a file, so its journal cannot be opened):
/// the backlog stays bounded and fresh tags are refused, instead of the writer's retry buffer
/// taking everything for as long as the failure lasts (it did); once the disk works again,
/// everything accepted becomes durable.
#[test]
fn a_failing_disk_refuses_fresh_tags_within_the_backlog_and_recovers() {
    let dir = Dir::new("failing");
    let store = ReplayStore::open(&dir.0).unwrap();
    let secret = NodeSecretKey::random(&mut rand::rng());
    let log = Arc::new(ReplayLog::new(64));
    let cache = prepared(&store, 5, &secret, &log);
    let key_dir = store.dir().join("5");
    fs::remove_dir_all(&key_dir).unwrap();
    fs::write(&key_dir, b"not a directory").unwrap();
    let journal = writer(&store, &log, 5, &cache, SnapshotPolicy::default());
    let mut accepted = 0u64;
    let mut refused = 0u64;
    for i in 0..2_000 {
        match cache.check_and_insert(&tag(i)) {
            Ok(()) => accepted += 1,
            Err(ReplayRefusal::Full) => refused += 1,
            Err(other) => panic!("tag {i}: {other:?}"),
        }
        // Over about a second: the writer retries every 100 ms or so.
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(
        accepted <= 64 + 64,
        "{accepted} accepted while nothing could be written"
    );
    assert!(refused >= 2_000 - 128, "{refused} refused");
    assert!(log.pending() <= 64);
    let mark = log.mark();
    assert!(!log.is_durable(mark));
    // The disk works again.
    fs::remove_file(&key_dir).unwrap();
    fs::create_dir_all(&key_dir).unwrap();
    wait_durable(&log, mark);
    drop(journal);
}

#[test]
fn whatever_was_durable_comes_back_after_a_crash() {
    let dir = Dir::new("crash");
    let store = ReplayStore::open(&dir.0).unwrap();
    let secret = NodeSecretKey::random(&mut rand::rng());
    let log = Arc::new(ReplayLog::new(1 << 16));
    let cache = prepared(&store, 5, &secret, &log);
    let journal = writer(&store, &log, 5, &cache, SnapshotPolicy::default());
    for i in 0..3_000 {
        cache.check_and_insert(&tag(i)).unwrap();
    }
    wait_durable(&log, log.mark());
    // The process dies here: no shutdown, no snapshot (the writer thread is leaked, not
    // stopped). A tag recorded now never becomes durable, and its packet never left.
    std::mem::forget(journal);
    log.nudge();
    let back = store
        .restore(5, &secret, config(), ReplayBudget::new(1 << 30))
        .unwrap();
    for i in 0..3_000 {
        assert_eq!(
            back.check_and_insert(&tag(i)),
            Err(ReplayRefusal::Replay),
            "tag {i}"
        );
    }
    assert_eq!(back.check_and_insert(&tag(9_999)), Ok(()));
    // Another key's secret cannot read it.
    let other = NodeSecretKey::random(&mut rand::rng());
    assert!(
        store
            .restore(5, &other, config(), ReplayBudget::new(1 << 30))
            .is_err()
    );
}

#[test]
fn a_shutdown_snapshot_covers_the_journals_and_restarts_append_a_new_generation() {
    let dir = Dir::new("snapshot");
    let store = ReplayStore::open(&dir.0).unwrap();
    let secret = NodeSecretKey::random(&mut rand::rng());
    let log = Arc::new(ReplayLog::new(1 << 16));
    let cache = prepared(&store, 8, &secret, &log);
    let journal = writer(&store, &log, 8, &cache, SnapshotPolicy::default());
    for i in 0..2_500 {
        cache.check_and_insert(&tag(i)).unwrap();
    }
    journal.shutdown();
    let epoch_dir = store.dir().join("8");
    let listing = list(&epoch_dir).unwrap();
    assert_eq!(listing.snapshots.len(), 1, "{listing:?}");
    assert_eq!(
        listing.journals, listing.snapshots,
        "older journals deleted"
    );
    // Restart: the snapshot, then a new journal generation for what follows.
    let log = Arc::new(ReplayLog::new(1 << 16));
    let mut back = store
        .restore(8, &secret, config(), ReplayBudget::new(1 << 30))
        .unwrap();
    back.attach_log(8, log.clone());
    let back = Arc::new(back);
    assert_eq!(back.len(), cache.len());
    let journal = writer(&store, &log, 8, &back, SnapshotPolicy::default());
    back.check_and_insert(&tag(50_000)).unwrap();
    wait_durable(&log, log.mark());
    drop(journal);
    let again = store
        .restore(8, &secret, config(), ReplayBudget::new(1 << 30))
        .unwrap();
    assert!(again.contains(&tag(1)) && again.contains(&tag(50_000)));
}

#[test]
fn damaged_or_incomplete_state_is_refused() {
    let dir = Dir::new("damaged");
    let store = ReplayStore::open(&dir.0).unwrap();
    let secret = NodeSecretKey::random(&mut rand::rng());
    let log = Arc::new(ReplayLog::new(1 << 16));
    let cache = prepared(&store, 3, &secret, &log);
    let journal = writer(&store, &log, 3, &cache, SnapshotPolicy::default());
    cache.check_and_insert(&tag(1)).unwrap();
    journal.shutdown();
    let epoch_dir = store.dir().join("3");
    let listing = list(&epoch_dir).unwrap();
    let snapshot = snapshot_path(&epoch_dir, listing.snapshots[0]);
    let mut bytes = fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&snapshot, &bytes).unwrap();
    assert!(matches!(
        store.restore(3, &secret, config(), ReplayBudget::new(1 << 30)),
        Err(ReplayStateError::Persist { .. })
    ));
    // Without the snapshot, the journals do not start at generation 0 any more.
    fs::remove_file(&snapshot).unwrap();
    assert!(matches!(
        store.restore(3, &secret, config(), ReplayBudget::new(1 << 30)),
        Err(ReplayStateError::Incomplete(3))
    ));
    store.retire(3).unwrap();
    assert!(!store.has_state(3));
    assert!(store.epochs().is_empty());
}

#[test]
fn the_expected_rate_is_the_most_of_floor_loops_and_measurement() {
    let settings = ReplaySettings::default();
    let p = NetworkParameters {
        mix_loop_interval_us: 1_000,
        layers: 3,
        ..NetworkParameters::default()
    };
    // 1,000 loops a second from each of 600 nodes, over 300 mixes, through one mix of each of 3
    // layers: 6,000 a second at each mix.
    assert_eq!(expected_rate(&settings, &p, 600, 300, None), 6_000.0);
    assert_eq!(expected_rate(&settings, &p, 6, 3, Some(1_500.0)), 6_000.0);
    let quiet = NetworkParameters::default();
    assert_eq!(expected_rate(&settings, &quiet, 8, 6, None), 1_000.0);
    assert_eq!(
        expected_rate(&settings, &quiet, 8, 6, Some(2_345.0)),
        2_345.0
    );
    assert_eq!(
        expected_rate(&settings, &quiet, 8, 6, Some(f64::NAN)),
        1_000.0
    );
    let sized = sizing(1_200.0, Duration::from_secs(3_600));
    assert_eq!(sized.expected_packets, 6_480_000);
}
