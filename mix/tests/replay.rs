//! The replay filter at production volume: a key that sees far more packets than its first
//! segment was sized for keeps its false-positive rate under its target.

use std::time::Duration;

use p2pmix_mix::{ReplayBudget, ReplayCache, ReplayConfig, ReplayRefusal};

fn tag(i: u64) -> [u8; 32] {
    let mut t = [0u8; 32];
    t[..8].copy_from_slice(&i.to_le_bytes());
    *blake3::hash(&t).as_bytes()
}

/// 20 million tags in one key's life (a mix at 2,800 pkt/s for two hours, or an attacker
/// pushing one key on purpose), into a filter sized as nodes size it for 1,200 pkt/s and
/// one-hour epochs, within the node's default budget. With a fixed filter of that first size
/// (the node's filter before this change held one million tags: 98% false positives at
/// 20 million), honest packets would be dropped as replays.
#[test]
fn twenty_million_tags_in_one_key_stay_under_the_target_rate() {
    let config = ReplayConfig::for_load(1_200.0, Duration::from_secs(3600));
    let target = config.false_positive_rate;
    let cache = ReplayCache::with_budget(
        config,
        [42; 32],
        ReplayBudget::new(ReplayBudget::NODE_DEFAULT_BYTES),
    );
    let tags = 20_000_000;
    let mut taken_for_replays = 0u64;
    for i in 0..tags {
        match cache.check_and_insert(&tag(i)) {
            Ok(()) => {}
            Err(ReplayRefusal::Replay) => taken_for_replays += 1,
            Err(ReplayRefusal::Full) => panic!("the filter refused tag {i} within its budget"),
        }
    }
    assert!(cache.segments() > 1, "the filter grew");
    assert!(!cache.is_saturated());
    // Fresh packets probed once the 20 million are in: the rate a new honest packet sees.
    let probes = 4_000_000;
    let false_hits = (tags..tags + probes)
        .filter(|&i| cache.contains(&tag(i)))
        .count();
    let rate = false_hits as f64 / probes as f64;
    eprintln!(
        "{} segments, {} MiB, measured false-positive rate {rate:.2e} (model {:.2e}), \
         {taken_for_replays} of {tags} honest tags taken for replays on the way",
        cache.segments(),
        cache.memory_bytes() >> 20,
        cache.false_positive_rate()
    );
    assert!(
        rate < target,
        "false-positive rate {rate} above the target {target}"
    );
    assert!(cache.false_positive_rate() < target);
    assert!((taken_for_replays as f64) < target * tags as f64);
    // And every tag is still remembered.
    for i in (0..tags).step_by(997) {
        assert!(cache.contains(&tag(i)), "tag {i} forgotten");
    }
}
