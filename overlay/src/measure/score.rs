//! Scores from measurement outcomes: a pure function from what became of each probe to each
//! node's delivery ratio and added delay.
//!
//! **Delivery.** A probe that came back clears every node of its route; one that did not counts
//! against every node of its route. A node's raw rate is the share of its probes that came back.
//! Routes pick one mix per layer independently (and one gateway), so the other hops of the
//! probes through a mix are drawn from the same distribution as those of any other mix of its
//! layer: losses caused elsewhere lower every member of the layer alike, and the ratio of two
//! members' rates is the ratio of what they themselves deliver. A node's score is therefore its
//! rate relative to the upper quartile of its layer's rates (gateways form a layer of their
//! own), capped at 1: loss common to every route (the measurer's own links, loss spread evenly
//! over the network) counts against nobody. A layer whose upper quartile is zero says nothing
//! about its members and gets no score. What is reported is not the node's rate itself but the
//! upper end of its one-sided 99.5% confidence interval (Wilson's score interval over its
//! probes): a node is reported below a threshold only when sampling noise is an unlikely
//! explanation (`docs/consensus.md` works out how many probes give what confidence).
//!
//! **Delay.** For a probe that came back, the *excess* is its round trip minus the delays its
//! headers asked for. Within each time bucket (probes sent close together), the excess is
//! modelled as a baseline plus what each node of the route added; the per-node additions are
//! fitted by least squares (coordinate descent, each kept at zero or above), so that a slow
//! node's delay is attributed to it and not to the nodes that shared routes with it, also when
//! it turned slow halfway through the window. A node's reported added delay is the 90th
//! percentile, over its probes, of the excess left once the baseline and the other hops' fitted
//! additions (of the probe's bucket) are taken off.

/// What became of one probe whose fate is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The nodes it crossed (indices into the caller's node table, each once).
    pub route: Vec<u32>,
    /// Its excess delay in microseconds if it came back in time; `None` if lost.
    pub excess_us: Option<i64>,
    /// Its time bucket: the delay fit is made per bucket, so that a node that changes within
    /// the window is judged by what it did when.
    pub bucket: u32,
}

/// One node's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeScore {
    /// The node (its index).
    pub node: u32,
    /// Probes through it whose fate is known.
    pub probes: u32,
    /// Of those, the ones that came back.
    pub returned: u32,
    /// Delivery relative to the upper quartile of its layer, per mille (at most 1000): the
    /// upper end of its 99.5% confidence interval ([`DELIVERY_Z`]).
    pub delivery_permille: u32,
    /// The 90th percentile of the delay it added, milliseconds.
    pub delay_p90_ms: u32,
}

/// The normal quantile of the one-sided confidence bound reported for delivery (99.5%).
pub const DELIVERY_Z: f64 = 2.576;

/// The upper end of Wilson's one-sided score interval for `successes` out of `trials` at
/// normal quantile `z`.
pub fn wilson_upper(successes: u32, trials: u32, z: f64) -> f64 {
    if trials == 0 {
        return 1.0;
    }
    let n = f64::from(trials);
    let p = f64::from(successes) / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z2 / n)).min(1.0)
}

/// Coordinate-descent sweeps of the delay fit (each sweep costs one pass over the outcomes).
const DELAY_SWEEPS: usize = 24;

/// Scores every node with a layer in `layers` (indexed by node; `None`: not in the topology any
/// more, its probes still inform the others) and at least `min_probes` probes.
pub fn score(outcomes: &[Outcome], layers: &[Option<u32>], min_probes: u32) -> Vec<NodeScore> {
    let n = layers.len();
    let mut probes = vec![0u32; n];
    let mut returned = vec![0u32; n];
    for o in outcomes {
        for &i in &o.route {
            let Some(slot) = probes.get_mut(i as usize) else {
                continue;
            };
            *slot += 1;
            if o.excess_us.is_some() {
                returned[i as usize] += 1;
            }
        }
    }
    let min = min_probes.max(1);
    let scored = |i: usize| layers[i].is_some() && probes[i] >= min;
    let rate = |i: usize| f64::from(returned[i]) / f64::from(probes[i]);

    // The upper quartile of each layer's rates.
    let mut by_layer: std::collections::BTreeMap<u32, Vec<f64>> = Default::default();
    for i in (0..n).filter(|&i| scored(i)) {
        if let Some(l) = layers[i] {
            by_layer.entry(l).or_default().push(rate(i));
        }
    }
    let reference: std::collections::BTreeMap<u32, f64> = by_layer
        .into_iter()
        .map(|(l, mut rates)| (l, quantile(&mut rates, 0.75)))
        .collect();

    let residuals = delay_residuals(outcomes, layers);
    (0..n)
        .filter(|&i| scored(i))
        .filter_map(|i| {
            let reference = *reference.get(&layers[i]?)?;
            if reference <= 0.0 {
                return None;
            }
            let upper = wilson_upper(returned[i], probes[i], DELIVERY_Z);
            let delivery = (upper / reference).min(1.0);
            let mut own = residuals[i].clone();
            let p90_us = if own.is_empty() {
                0.0
            } else {
                quantile(&mut own, 0.9).max(0.0)
            };
            Some(NodeScore {
                node: i as u32,
                probes: probes[i],
                returned: returned[i],
                delivery_permille: (delivery * 1000.0).round() as u32,
                delay_p90_ms: (p90_us / 1000.0).round().min(f64::from(u32::MAX)) as u32,
            })
        })
        .collect()
}

/// For each node, over the probes through it that came back: the excess left once the fitted
/// baseline and the other hops' fitted additions are taken off (microseconds).
fn delay_residuals(outcomes: &[Outcome], layers: &[Option<u32>]) -> Vec<Vec<f64>> {
    let n = layers.len();
    let mut buckets: std::collections::BTreeMap<u32, Vec<(&[u32], f64)>> = Default::default();
    for o in outcomes {
        if let Some(x) = o.excess_us
            && o.route.iter().all(|&i| (i as usize) < n)
        {
            buckets
                .entry(o.bucket)
                .or_default()
                .push((o.route.as_slice(), x as f64));
        }
    }
    let mut residuals: Vec<Vec<f64>> = vec![Vec::new(); n];
    for back in buckets.values() {
        for (i, r) in fit_bucket(back, layers).into_iter().enumerate() {
            residuals[i].extend(r);
        }
    }
    residuals
}

/// The residuals of one bucket's fit (see [`delay_residuals`]).
///
/// Every route has one node of each layer, so the fit cannot tell the baseline from a constant
/// shared by a whole layer (adding it to every member and taking it off the baseline fits as
/// well). After the fit each layer's lower quartile of additions goes to the baseline: what a
/// node is said to add is what it adds beyond most of its layer.
fn fit_bucket(back: &[(&[u32], f64)], layers: &[Option<u32>]) -> Vec<Vec<f64>> {
    let n = layers.len();
    let mut through: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, (route, _)) in back.iter().enumerate() {
        for &i in *route {
            through[i as usize].push(k);
        }
    }
    let mut added = vec![0.0f64; n];
    let mut sums = vec![0.0f64; back.len()];
    let mut baseline = 0.0;
    if !back.is_empty() {
        for _ in 0..DELAY_SWEEPS {
            baseline =
                back.iter().zip(&sums).map(|((_, x), s)| x - s).sum::<f64>() / back.len() as f64;
            for i in 0..n {
                let ks = &through[i];
                if ks.is_empty() {
                    continue;
                }
                let mean = ks
                    .iter()
                    .map(|&k| back[k].1 - baseline - (sums[k] - added[i]))
                    .sum::<f64>()
                    / ks.len() as f64;
                let change = mean.max(0.0) - added[i];
                shift(&mut added, &mut sums, &through, i, change);
            }
        }
        let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
        for i in (0..n).filter(|&i| !through[i].is_empty()) {
            if let Some(l) = layers[i] {
                groups.entry(l).or_default().push(i);
            }
        }
        for members in groups.values() {
            let mut values: Vec<f64> = members.iter().map(|&i| added[i]).collect();
            let common = quantile(&mut values, 0.25);
            for &i in members {
                shift(&mut added, &mut sums, &through, i, -common);
            }
            baseline += common;
        }
    }
    (0..n)
        .map(|i| {
            through[i]
                .iter()
                .map(|&k| back[k].1 - baseline - (sums[k] - added[i]))
                .collect()
        })
        .collect()
}

/// Changes node `i`'s fitted addition by `change`, and the fitted sums of its routes with it.
fn shift(added: &mut [f64], sums: &mut [f64], through: &[Vec<usize>], i: usize, change: f64) {
    if change != 0.0 {
        for &k in &through[i] {
            sums[k] += change;
        }
        added[i] += change;
    }
}

/// The `q` quantile of `values` (linear interpolation between order statistics); reorders them.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    values[lo] + (values[hi] - values[lo]) * frac
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    use super::*;

    /// A network of one gateway layer (nodes 0..3; routes use 0 and 1) and three mix layers of
    /// three (3..12), and
    /// probes through one node of each, with `fate(route)` deciding each probe's excess.
    fn probes(count: usize, fate: impl Fn(&[u32], &mut StdRng) -> Option<i64>) -> Vec<Outcome> {
        probes_in_time(count, |r, _, rng| fate(r, rng))
    }

    /// [`probes`], the fate knowing the probe's place in time (0..count); 16 buckets.
    fn probes_in_time(
        count: usize,
        fate: impl Fn(&[u32], usize, &mut StdRng) -> Option<i64>,
    ) -> Vec<Outcome> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..count)
            .map(|k| {
                let route = vec![
                    rng.random_range(0..2u32),
                    3 + rng.random_range(0..3u32),
                    6 + rng.random_range(0..3u32),
                    9 + rng.random_range(0..3u32),
                ];
                let excess_us = fate(&route, k, &mut rng);
                Outcome {
                    route,
                    excess_us,
                    bucket: (k * 16 / count) as u32,
                }
            })
            .collect()
    }

    fn layers() -> Vec<Option<u32>> {
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
            .into_iter()
            .map(Some)
            .collect()
    }

    fn of(scores: &[NodeScore], node: u32) -> NodeScore {
        *scores.iter().find(|s| s.node == node).expect("scored")
    }

    #[test]
    fn a_black_hole_scores_near_zero_and_its_route_mates_are_cleared() {
        let outcomes = probes(3_000, |r, _| (!r.contains(&7)).then_some(5_000));
        let scores = score(&outcomes, &layers(), 50);
        // None of its ~1,000 probes came back: the upper confidence bound is z²/(n+z²).
        let s = of(&scores, 7);
        assert_eq!(s.returned, 0);
        assert!(s.delivery_permille <= 10, "{s:?}");
        for node in [0, 1, 3, 4, 5, 6, 8, 9, 10, 11] {
            let s = of(&scores, node);
            // Every node shares a third of its routes with the black hole, as do all the others
            // of its layer: relative to them it delivers everything.
            assert!(s.delivery_permille >= 900, "{s:?}");
        }
    }

    #[test]
    fn uniform_loss_counts_against_nobody_and_a_lossy_node_stands_out() {
        // 5% loss on each of six links, and node 10 loses half of what it carries.
        let outcomes = probes(6_000, |r, rng| {
            let mut ok = (0..6).all(|_| rng.random::<f64>() >= 0.05);
            if r.contains(&10) {
                ok &= rng.random::<f64>() >= 0.5;
            }
            ok.then_some(5_000)
        });
        let scores = score(&outcomes, &layers(), 50);
        let half = of(&scores, 10).delivery_permille;
        // Its rate is half the others'; what is reported is the upper confidence bound.
        assert!((450..650).contains(&half), "node 10: {half}");
        for s in scores.iter().filter(|s| s.node != 10) {
            assert!(s.delivery_permille >= 900, "{s:?}");
        }
    }

    #[test]
    fn added_delay_is_attributed_to_the_node_that_adds_it() {
        // Node 4 holds every packet 2 s longer; everyone adds a few ms of noise.
        let outcomes = probes(3_000, |r, rng| {
            let noise = rng.random_range(0..8_000);
            Some(3_000 + noise + if r.contains(&4) { 2_000_000 } else { 0 })
        });
        let scores = score(&outcomes, &layers(), 50);
        let slow = of(&scores, 4).delay_p90_ms;
        assert!((1_900..2_100).contains(&slow), "node 4 adds {slow} ms");
        for s in scores.iter().filter(|s| s.node != 4) {
            assert!(s.delay_p90_ms < 50, "{s:?}");
            assert_eq!(s.delivery_permille, 1000);
        }
    }

    #[test]
    fn a_node_that_turns_slow_halfway_is_blamed_and_its_route_mates_are_not() {
        // Node 7 holds every packet 2 s longer from the second half of the window on: for
        // the whole window, the mean it adds is 1 s, but its route mates must not carry that.
        let outcomes = probes_in_time(6_000, |r, k, rng| {
            let slow = k >= 3_000 && r.contains(&7);
            Some(3_000 + rng.random_range(0..8_000) + if slow { 2_000_000 } else { 0 })
        });
        let scores = score(&outcomes, &layers(), 50);
        let slow = of(&scores, 7).delay_p90_ms;
        assert!((1_900..2_100).contains(&slow), "node 7 adds {slow} ms");
        for s in scores.iter().filter(|s| s.node != 7) {
            assert!(s.delay_p90_ms < 50, "{s:?}");
        }
    }

    #[test]
    fn the_confidence_bound_is_wilsons() {
        // Textbook values: 0 of 100 at z = 1.96 gives 0.037; 50 of 100 gives 0.596.
        assert!((wilson_upper(0, 100, 1.96) - 0.0370).abs() < 1e-3);
        assert!((wilson_upper(50, 100, 1.96) - 0.5958).abs() < 1e-3);
        assert!((wilson_upper(100, 100, 1.96) - 1.0).abs() < 1e-9);
        // More probes, a tighter bound.
        assert!(wilson_upper(500, 1000, DELIVERY_Z) < wilson_upper(50, 100, DELIVERY_Z));
    }

    #[test]
    fn nodes_out_of_the_topology_or_with_few_probes_get_no_score() {
        let outcomes = probes(600, |_, _| Some(1_000));
        let mut layers = layers();
        layers[5] = None;
        let scores = score(&outcomes, &layers, 60);
        assert!(scores.iter().all(|s| s.node != 5));
        // About 300 probes per gateway, 200 per mix: a minimum of 400 leaves nobody scored.
        assert!(!score(&outcomes, &layers, 250).is_empty());
        assert!(score(&outcomes, &layers, 400).is_empty());
        // A layer where nothing came back says nothing about its members.
        let lost = probes(600, |_, _| None);
        assert!(score(&lost, &layers, 10).is_empty());
    }
}
