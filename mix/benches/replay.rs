//! The replay filter at line rate and at an hour's load (issue 16).
//!
//! `cargo bench -p p2pmix-mix --bench replay`
//!
//! A node sizes each epoch key's filter for its expected rate over the epoch
//! (`ReplayConfig::for_load`, with 1.5x headroom, at 1e-4). This bench builds the filter for
//! 20 000 packets a second over a one-hour epoch, fills it with one hour of fresh tags (72
//! million), and prints: the time per `check_and_insert` against the time a packet may take at
//! that rate (50 us) and against one unwrap's share of it, the false-positive rate measured
//! with a million fresh tags against the model and the target, the filter's bytes, and the
//! process's resident memory (`VmHWM`: the filter's pages are touched as it fills). A replay
//! costs the same check, so a replay flood runs at the same rate.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use p2pmix_mix::{ReplayBudget, ReplayCache, ReplayConfig};

/// Resident memory now and at its peak (Linux `VmRSS`, `VmHWM`), in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Distinct pseudo-random tags (the filter re-hashes every tag under its secret key, so any
/// distinct inputs spread like real ones).
struct Tags(u64);

impl Tags {
    fn next(&mut self) -> [u8; 32] {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        let mut tag = [0u8; 32];
        for chunk in tag.chunks_mut(8) {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes());
        }
        tag
    }
}

fn main() {
    const RATE: f64 = 20_000.0;
    let epoch = Duration::from_secs(3600);
    let config = ReplayConfig::for_load(RATE, epoch);
    let (rss0, _) = rss_mib();
    let cache = ReplayCache::with_budget(config, [7; 32], ReplayBudget::new(4 << 30));
    println!(
        "replay bench: sized for {RATE} pkt/s over {} s: {} tags a segment at {:e}, {:.1} MiB a segment",
        epoch.as_secs(),
        config.expected_packets,
        config.false_positive_rate,
        config.segment_bytes() as f64 / (1024.0 * 1024.0)
    );
    let hour = (RATE * epoch.as_secs_f64()) as u64;
    let mut tags = Tags(1);
    let mut refused = 0u64;
    let mut per_tenth = Vec::new();
    let start = Instant::now();
    for tenth in 0..10 {
        let t = Instant::now();
        for _ in 0..hour / 10 {
            if cache.check_and_insert(&tags.next()).is_err() {
                refused += 1;
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (hour / 10) as f64;
        per_tenth.push(ns);
        if tenth == 0 || tenth == 9 {
            println!(
                "  tenth {} of the hour: {ns:.0} ns per check_and_insert (fill {:.2})",
                tenth + 1,
                cache.fill_ratio()
            );
        }
    }
    let elapsed = start.elapsed();
    let mean_ns = elapsed.as_nanos() as f64 / hour as f64;
    let budget_ns = 1e9 / RATE;
    println!(
        "  one hour ({hour} tags) in {:.1} s: {mean_ns:.0} ns a tag on average, {:.2}% of the \
         {budget_ns:.0} ns a packet has at {RATE} pkt/s (one core); {:.1} M tags/s",
        elapsed.as_secs_f64(),
        100.0 * mean_ns / budget_ns,
        hour as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "  fresh tags refused as replays while filling: {refused} of {hour} ({:.2e}); segments {}",
        refused as f64 / hour as f64,
        cache.segments()
    );
    // Fresh tags never inserted: any hit is a false positive.
    let probes = 1_000_000u64;
    let mut other = Tags(u64::MAX / 3);
    let hits = (0..probes)
        .filter(|_| cache.contains(&other.next()))
        .count();
    println!(
        "  false positives after the hour: {hits} of {probes} fresh tags = {:.2e} (model {:.2e}, \
         target {:e})",
        hits as f64 / probes as f64,
        cache.false_positive_rate(),
        config.false_positive_rate
    );
    let (rss, peak) = rss_mib();
    println!(
        "  filter memory {:.1} MiB; process resident {rss:.1} MiB (peak {peak:.1} MiB, {rss0:.1} \
         MiB before the filter)",
        cache.memory_bytes() as f64 / (1024.0 * 1024.0)
    );
    // A replay is the same check: time a burst of them.
    let mut again = Tags(1);
    let t = Instant::now();
    let replays = 1_000_000u64;
    let caught = (0..replays)
        .filter(|_| cache.check_and_insert(&again.next()).is_err())
        .count();
    println!(
        "  replays: {caught} of {replays} caught, {:.0} ns each",
        t.elapsed().as_nanos() as f64 / replays as f64
    );
}
