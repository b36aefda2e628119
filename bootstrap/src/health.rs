//! Health in the consensus: which admitted nodes are left out for what the authorities'
//! measurements found, and what the document records of each node's score.
//!
//! A pure, deterministic function of the votes and the previous (agreed) document, like the rest
//! of the consensus (rules in `docs/consensus.md`, "Health"):
//! - a node's score is the median over the pinned authorities of what each reported (the
//!   `t`-th lowest delivery and the `t`-th highest added delay, `t` the threshold), an authority
//!   that reported nothing counting as one that found nothing wrong; so a node is left out only
//!   when a threshold of authorities found it below the minimum, and kept in only when fewer
//!   than a threshold did: one authority alone can do neither;
//! - a node reported by fewer than a threshold of authorities is on probation: in, unscored;
//! - a node left out gets a strike and stays out for `2^(strikes - 1)` epochs (at most
//!   [`MAX_HOLD_EPOCHS`]), then comes back on probation; a node measured at or above the good
//!   delivery (and within the delay bound) earns one strike back. Strikes carry over through
//!   the previous document, so a node that flaps between good and bad is out for longer each
//!   time instead of going in and out every epoch;
//! - at most a third of the mixes and a third of the gateways are out for health at once (the
//!   worst first), so that a measurement failure cannot take the network down.

use std::collections::BTreeMap;

use p2pmix_proto::v1::{
    Consensus, ExcludedNode, ExclusionReason, HealthStatus, NetworkParameters, NodeHealth,
    NodeMeasurement, Role,
};

use crate::{
    MAX_NODES,
    descriptor::VerifiedDescriptor,
    vote::{MAX_MEASUREMENT_BYTES, VerifiedVote, vote_measurement_bytes},
};

/// Longest a node is held out for health, in epochs.
pub const MAX_HOLD_EPOCHS: u64 = 16;
/// Longest identity encoding accepted in a measurement.
pub(crate) const MAX_IDENTITY_BYTES: usize = 128;

/// Whether a vote's measurements follow the rules: sorted by identity and unique, scores within
/// their ranges, at most [`MAX_NODES`] and [`MAX_MEASUREMENT_BYTES`].
pub(crate) fn measurements_valid(measurements: &[NodeMeasurement]) -> bool {
    measurements.len() <= MAX_NODES
        && measurements.iter().all(well_formed)
        && measurements
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.identity < b.identity))
        && measurements
            .iter()
            .map(vote_measurement_bytes)
            .sum::<usize>()
            <= MAX_MEASUREMENT_BYTES
}

fn well_formed(m: &NodeMeasurement) -> bool {
    m.delivery_permille <= 1000 && !m.identity.is_empty() && m.identity.len() <= MAX_IDENTITY_BYTES
}

/// `measurements` as a vote may carry them ([`measurements_valid`]): malformed ones left out,
/// deliveries clamped to 1000, one per identity, and when they exceed [`MAX_NODES`] or
/// [`MAX_MEASUREMENT_BYTES`] the least healthy kept (lowest delivery, then highest delay: a
/// report left out counts as finding nothing wrong, so what is dropped is what changes least),
/// sorted by identity.
pub(crate) fn bound_measurements(mut measurements: Vec<NodeMeasurement>) -> Vec<NodeMeasurement> {
    for m in &mut measurements {
        m.delivery_permille = m.delivery_permille.min(1000);
    }
    measurements.retain(well_formed);
    measurements.sort_by(|a, b| a.identity.cmp(&b.identity));
    measurements.dedup_by(|a, b| a.identity == b.identity);
    let bytes: usize = measurements.iter().map(vote_measurement_bytes).sum();
    if measurements.len() > MAX_NODES || bytes > MAX_MEASUREMENT_BYTES {
        measurements.sort_by(|a, b| {
            (
                a.delivery_permille,
                std::cmp::Reverse(a.delay_p90_ms),
                &a.identity,
            )
                .cmp(&(
                    b.delivery_permille,
                    std::cmp::Reverse(b.delay_p90_ms),
                    &b.identity,
                ))
        });
        let mut room = MAX_MEASUREMENT_BYTES;
        let mut keep = 0;
        for m in measurements.iter().take(MAX_NODES) {
            let size = vote_measurement_bytes(m);
            if size > room {
                break;
            }
            room -= size;
            keep += 1;
        }
        measurements.truncate(keep);
        measurements.sort_by(|a, b| a.identity.cmp(&b.identity));
    }
    measurements
}

/// What the health rules decide for one consensus.
#[derive(Debug, Default)]
pub(crate) struct Judgement<'a> {
    /// The admitted nodes that stay in, in the order they were given.
    pub(crate) kept: Vec<&'a VerifiedDescriptor>,
    /// The health recorded for each node kept, by identity encoding (empty when the network
    /// measures nothing).
    pub(crate) health: BTreeMap<Vec<u8>, NodeHealth>,
    /// Nodes left out, sorted by identity.
    pub(crate) excluded: Vec<ExcludedNode>,
}

/// The median over the pinned authorities of the reports on one node, as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scores {
    reports: u32,
    delivery_permille: u32,
    delay_p90_ms: u32,
}

/// Applies the health rules to the nodes a threshold of votes admitted.
pub(crate) fn judge<'a>(
    admitted: Vec<&'a VerifiedDescriptor>,
    votes: &BTreeMap<&[u8], &VerifiedVote>,
    previous: Option<&Consensus>,
    parameters: &NetworkParameters,
    threshold: usize,
    epoch: u64,
) -> Judgement<'a> {
    if parameters.health_probes_per_node == 0 {
        return Judgement {
            kept: admitted,
            ..Judgement::default()
        };
    }
    let strikes_before: BTreeMap<&[u8], u32> = previous
        .map(|c| {
            let in_it = c
                .nodes
                .iter()
                .filter_map(|n| Some((n.identity.as_slice(), n.health?.strikes)));
            let out = c
                .excluded
                .iter()
                .map(|e| (e.identity.as_slice(), e.strikes));
            in_it.chain(out).collect()
        })
        .unwrap_or_default();
    let held: BTreeMap<&[u8], &ExcludedNode> = previous
        .map(|c| {
            c.excluded
                .iter()
                .filter(|e| e.until_epoch > epoch)
                .map(|e| (e.identity.as_slice(), e))
                .collect()
        })
        .unwrap_or_default();

    let mut judgement = Judgement::default();
    // Held-out nodes stay out whether or not they uploaded a descriptor this epoch, so that
    // their strikes are remembered while they are away.
    let mut out: BTreeMap<Vec<u8>, ExcludedNode> = held
        .iter()
        .map(|(id, e)| (id.to_vec(), (*e).clone()))
        .collect();
    let mut candidates: Vec<(Scores, ExclusionReason, &VerifiedDescriptor)> = Vec::new();
    let mut in_role = [0usize; 2];
    for d in &admitted {
        let identity = d.descriptor.identity.as_slice();
        in_role[role_index(d)] += 1;
        if held.contains_key(identity) {
            continue;
        }
        let strikes = strikes_before.get(identity).copied().unwrap_or(0);
        let Some(scores) = scores_of(identity, votes, parameters, threshold) else {
            judgement.health.insert(
                identity.to_vec(),
                NodeHealth {
                    status: HealthStatus::Probation as i32,
                    delivery_permille: 0,
                    delay_p90_ms: 0,
                    reports: reported_by(identity, votes, parameters),
                    strikes,
                },
            );
            continue;
        };
        let slow = scores.delay_p90_ms > parameters.health_max_delay_p90_ms;
        let lossy = scores.delivery_permille < parameters.health_min_delivery_permille;
        if lossy || slow {
            let reason = if lossy {
                ExclusionReason::LowDelivery
            } else {
                ExclusionReason::Slow
            };
            candidates.push((scores, reason, d));
            continue;
        }
        let good = scores.delivery_permille >= parameters.health_good_delivery_permille;
        judgement.health.insert(
            identity.to_vec(),
            measured(scores, strikes.saturating_sub(good as u32)),
        );
    }

    // The worst first, up to a third of each role (those held out count), always leaving a mix
    // for every layer and one gateway.
    let caps = [
        (in_role[0] / 3).min(in_role[0].saturating_sub(parameters.layers as usize)),
        (in_role[1] / 3).min(in_role[1].saturating_sub(1)),
    ];
    let mut out_in_role = [0usize; 2];
    for e in out.values() {
        if let Some(d) = admitted
            .iter()
            .find(|d| d.descriptor.identity == e.identity)
        {
            out_in_role[role_index(d)] += 1;
        }
    }
    candidates.sort_by(|(a, _, x), (b, _, y)| {
        (
            a.delivery_permille,
            std::cmp::Reverse(a.delay_p90_ms),
            &x.descriptor.identity,
        )
            .cmp(&(
                b.delivery_permille,
                std::cmp::Reverse(b.delay_p90_ms),
                &y.descriptor.identity,
            ))
    });
    for (scores, reason, d) in candidates {
        let identity = d.descriptor.identity.clone();
        let strikes = strikes_before
            .get(identity.as_slice())
            .copied()
            .unwrap_or(0);
        let role = role_index(d);
        if out_in_role[role] >= caps[role] {
            // Over the cap: it stays in, scored, without a new strike.
            judgement.health.insert(identity, measured(scores, strikes));
            continue;
        }
        out_in_role[role] += 1;
        let strikes = strikes.saturating_add(1);
        let hold = 1u64 << (strikes.clamp(1, 5) - 1);
        out.insert(
            identity.clone(),
            ExcludedNode {
                identity,
                reason: reason as i32,
                delivery_permille: scores.delivery_permille,
                delay_p90_ms: scores.delay_p90_ms,
                strikes,
                since_epoch: epoch,
                until_epoch: epoch.saturating_add(hold.min(MAX_HOLD_EPOCHS)),
            },
        );
    }
    let kept: Vec<&VerifiedDescriptor> = admitted
        .iter()
        .copied()
        .filter(|d| !out.contains_key(&d.descriptor.identity))
        .collect();
    judgement.kept = kept;
    judgement.excluded = out.into_values().collect();
    judgement
}

fn measured(scores: Scores, strikes: u32) -> NodeHealth {
    NodeHealth {
        status: HealthStatus::Measured as i32,
        delivery_permille: scores.delivery_permille,
        delay_p90_ms: scores.delay_p90_ms,
        reports: scores.reports,
        strikes,
    }
}

/// 0 for mixes, 1 for gateways (the roles the caps apply to).
fn role_index(d: &VerifiedDescriptor) -> usize {
    usize::from(d.role() == Role::Gateway)
}

/// The reports on `identity` with enough probes, one per voter.
fn reports<'v>(
    identity: &[u8],
    votes: &'v BTreeMap<&[u8], &VerifiedVote>,
    parameters: &NetworkParameters,
) -> impl Iterator<Item = &'v NodeMeasurement> {
    let identity = identity.to_vec();
    let min = parameters.health_min_probes;
    votes.values().filter_map(move |v| {
        let i = v
            .measurements
            .binary_search_by(|m| m.identity.as_slice().cmp(&identity))
            .ok()?;
        v.measurements.get(i).filter(|m| m.probes >= min)
    })
}

fn reported_by(
    identity: &[u8],
    votes: &BTreeMap<&[u8], &VerifiedVote>,
    parameters: &NetworkParameters,
) -> u32 {
    reports(identity, votes, parameters).count() as u32
}

/// The median over the pinned authorities, or `None` when fewer than `threshold` reported.
fn scores_of(
    identity: &[u8],
    votes: &BTreeMap<&[u8], &VerifiedVote>,
    parameters: &NetworkParameters,
    threshold: usize,
) -> Option<Scores> {
    let mut deliveries: Vec<u32> = Vec::new();
    let mut delays: Vec<u32> = Vec::new();
    for m in reports(identity, votes, parameters) {
        deliveries.push(m.delivery_permille);
        delays.push(m.delay_p90_ms);
    }
    let t = threshold.max(1);
    if deliveries.len() < t {
        return None;
    }
    deliveries.sort_unstable();
    delays.sort_unstable_by(|a, b| b.cmp(a));
    Some(Scores {
        reports: deliveries.len() as u32,
        delivery_permille: deliveries[t - 1],
        delay_p90_ms: delays[t - 1],
    })
}
