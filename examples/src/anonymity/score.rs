//! Scoring the adversary's beliefs against the ground truth: per message the Shannon entropy of
//! its sender distribution, the effective anonymity set, whether the most likely sender is the
//! true one, and epsilon; over a run their distributions against the ideal.
//!
//! Definitions (over the *active senders*: the clients seen sending into a gateway):
//! - the distribution is the posterior's weight on each active sender, renormalised (weight on
//!   nodes, their own cover, is what the adversary rules out for a client's message); a
//!   posterior with no weight on any client says nothing and counts as uniform;
//! - a message of several fragments combines them as the product of their distributions,
//!   renormalised: the adversary is given which packets form one message (the worst case);
//! - entropy `H = -Σ p log2 p` bits, anonymity set `2^H`, ideal `log2(senders)`;
//! - top-1: 1 if the true sender alone has the highest probability, `1/k` if it ties with
//!   `k - 1` others (a guess among them), else 0; chance is `1/senders`;
//! - epsilon: `ln(max p / min p)` over the active senders, the largest log-ratio of two
//!   candidates' probabilities; infinite when the adversary rules some sender out (`p = 0`),
//!   printed as `null` in JSON.

use super::model::PeerIx;

/// One delivered message, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageScore {
    /// Its true sender.
    pub sender: PeerIx,
    /// Fragments it had.
    pub fragments: u16,
    /// Entropy of the adversary's sender distribution, bits.
    pub entropy_bits: f64,
    /// The adversary's top-1 credit (0, 1, or 1/k on a k-way tie).
    pub top1: f64,
    /// Largest natural-log ratio of two candidates' probabilities (infinite: one ruled out).
    pub epsilon: f64,
    /// From the client handing its (last) fragment to the gateway to its arrival at the exit.
    pub network_latency_ms: f64,
}

/// The posterior's weight on the active senders, summing to one (uniform when it has none).
pub fn sender_distribution(weights: &[f64], senders: &[PeerIx]) -> Vec<f64> {
    let mut d: Vec<f64> = senders
        .iter()
        .map(|s| weights.get(*s).copied().unwrap_or(0.0).max(0.0))
        .collect();
    normalise(&mut d);
    d
}

fn normalise(d: &mut [f64]) {
    let total: f64 = d.iter().sum();
    if total > 0.0 && total.is_finite() {
        d.iter_mut().for_each(|p| *p /= total);
    } else {
        let n = d.len().max(1) as f64;
        d.iter_mut().for_each(|p| *p = 1.0 / n);
    }
}

/// Combines the distributions of one message's fragments (see the module documentation).
pub fn combine(fragments: &[Vec<f64>]) -> Vec<f64> {
    let Some(first) = fragments.first() else {
        return Vec::new();
    };
    let mut d = first.clone();
    for f in &fragments[1..] {
        for (p, q) in d.iter_mut().zip(f) {
            *p *= q;
        }
        // Fragments that contradict each other (no common sender): keep the first's view.
        if d.iter().sum::<f64>() <= 0.0 {
            d = first.clone();
        }
        normalise(&mut d);
    }
    d
}

/// Entropy in bits.
pub fn entropy_bits(d: &[f64]) -> f64 {
    d.iter()
        .filter(|p| **p > 0.0)
        .map(|p| -p * p.log2())
        .sum::<f64>()
        .max(0.0)
}

/// Top-1 credit of the guess "the most likely sender" when the truth is `truth` (an index into
/// `d`).
pub fn top1(d: &[f64], truth: Option<usize>) -> f64 {
    let Some(truth) = truth else {
        return 0.0;
    };
    let best = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Ties within rounding are ties.
    let tied = d.iter().filter(|p| **p >= best * (1.0 - 1e-9)).count();
    if d.get(truth).is_some_and(|p| *p >= best * (1.0 - 1e-9)) {
        1.0 / tied as f64
    } else {
        0.0
    }
}

/// Epsilon: `ln(max / min)` over `d` (infinite if some entry is zero).
pub fn epsilon(d: &[f64]) -> f64 {
    let max = d.iter().copied().fold(0.0, f64::max);
    let min = d.iter().copied().fold(f64::INFINITY, f64::min);
    if d.is_empty() || max <= 0.0 {
        return 0.0;
    }
    if min <= 0.0 {
        return f64::INFINITY;
    }
    (max / min).ln()
}

/// The `q` quantile (nearest rank) of `values`, which it sorts; `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    Some(values[i])
}

/// A run's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Active senders.
    pub senders: usize,
    /// Messages scored.
    pub messages: usize,
    /// Median entropy, bits.
    pub entropy_bits_p50: f64,
    /// 10th percentile of entropy, bits.
    pub entropy_bits_p10: f64,
    /// `log2(senders)`.
    pub ideal_bits: f64,
    /// Median `2^H`.
    pub anonymity_set_p50: f64,
    /// Mean top-1 credit: the adversary's success rate.
    pub top1_success: f64,
    /// `1/senders`.
    pub chance: f64,
    /// Median epsilon (infinite: over half had a sender ruled out).
    pub epsilon_p50: f64,
    /// Share of messages with some sender ruled out.
    pub ruled_out: f64,
    /// Median network latency (client to exit gateway), ms.
    pub network_latency_ms_p50: f64,
}

impl Summary {
    /// The figures of `messages` among `senders` active senders.
    pub fn of(messages: &[MessageScore], senders: usize) -> Self {
        let n = messages.len();
        let mut h: Vec<f64> = messages.iter().map(|m| m.entropy_bits).collect();
        let mut eps: Vec<f64> = messages.iter().map(|m| m.epsilon).collect();
        let mut lat: Vec<f64> = messages.iter().map(|m| m.network_latency_ms).collect();
        let h50 = quantile(&mut h, 0.5).unwrap_or(0.0);
        Summary {
            senders,
            messages: n,
            entropy_bits_p50: h50,
            entropy_bits_p10: quantile(&mut h, 0.1).unwrap_or(0.0),
            ideal_bits: (senders.max(1) as f64).log2(),
            anonymity_set_p50: h50.exp2(),
            top1_success: messages.iter().map(|m| m.top1).sum::<f64>() / n.max(1) as f64,
            chance: 1.0 / senders.max(1) as f64,
            epsilon_p50: quantile(&mut eps, 0.5).unwrap_or(0.0),
            ruled_out: messages.iter().filter(|m| m.epsilon.is_infinite()).count() as f64
                / n.max(1) as f64,
            network_latency_ms_p50: quantile(&mut lat, 0.5).unwrap_or(0.0),
        }
    }

    /// The JSON object of the testnet report's `anonymity` field.
    pub fn json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".into()
            }
        };
        format!(
            "{{\"senders\":{},\"messages\":{},\"entropy_bits_p50\":{},\"entropy_bits_p10\":{},\"ideal_bits\":{},\"anonymity_set_p50\":{},\"top1_success\":{},\"chance\":{},\"epsilon_p50\":{},\"ruled_out\":{},\"network_latency_ms_p50\":{}}}",
            self.senders,
            self.messages,
            num(self.entropy_bits_p50),
            num(self.entropy_bits_p10),
            num(self.ideal_bits),
            num(self.anonymity_set_p50),
            num(self.top1_success),
            num(self.chance),
            num(self.epsilon_p50),
            num(self.ruled_out),
            num(self.network_latency_ms_p50),
        )
    }

    /// Lines for people.
    pub fn human(&self) -> String {
        format!(
            "anonymity           {} messages from {} active senders\n\
             entropy (bits)      p50 {:.2}  p10 {:.2}  ideal log2({}) = {:.2}  ({:.0}% of ideal)\n\
             anonymity set       p50 {:.1} of {}\n\
             adversary top-1     {:.1}%  chance {:.1}%  ({:.2}x chance)\n\
             epsilon (ln)        p50 {}  ruled a sender out for {:.0}% of messages\n\
             network latency     p50 {:.0} ms (from the sender's link to the exit gateway)\n",
            self.messages,
            self.senders,
            self.entropy_bits_p50,
            self.entropy_bits_p10,
            self.senders,
            self.ideal_bits,
            100.0 * self.entropy_bits_p50 / self.ideal_bits.max(1e-9),
            self.anonymity_set_p50,
            self.senders,
            100.0 * self.top1_success,
            100.0 * self.chance,
            self.top1_success / self.chance.max(1e-9),
            if self.epsilon_p50.is_finite() {
                format!("{:.2}", self.epsilon_p50)
            } else {
                "infinite".into()
            },
            100.0 * self.ruled_out,
            self.network_latency_ms_p50,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distributions_score_as_defined() {
        let uniform = vec![0.25; 4];
        assert!((entropy_bits(&uniform) - 2.0).abs() < 1e-12);
        assert_eq!(top1(&uniform, Some(2)), 0.25, "a four-way tie");
        assert_eq!(epsilon(&uniform), 0.0);
        let certain = vec![0.0, 1.0, 0.0];
        assert_eq!(entropy_bits(&certain), 0.0);
        assert_eq!(top1(&certain, Some(1)), 1.0);
        assert_eq!(top1(&certain, Some(0)), 0.0);
        assert!(epsilon(&certain).is_infinite());
        let skewed = vec![0.5, 0.25, 0.25];
        assert!((entropy_bits(&skewed) - 1.5).abs() < 1e-12);
        assert!((epsilon(&skewed) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(top1(&skewed, Some(1)), 0.0);
    }

    #[test]
    fn weight_on_nodes_is_ruled_out_and_fragments_multiply() {
        // Peers 0 and 2 are clients, 1 a node.
        let d = sender_distribution(&[0.2, 0.6, 0.2], &[0, 2]);
        assert_eq!(d, vec![0.5, 0.5]);
        assert_eq!(
            sender_distribution(&[0.0, 1.0, 0.0], &[0, 2]),
            vec![0.5, 0.5]
        );
        let c = combine(&[vec![0.5, 0.5], vec![0.8, 0.2]]);
        assert!((c[0] - 0.8).abs() < 1e-12);
        let c = combine(&[vec![0.9, 0.1], vec![0.9, 0.1]]);
        assert!((c[0] - 81.0 / 82.0).abs() < 1e-12);
        // Contradicting fragments fall back on the first.
        assert_eq!(combine(&[vec![1.0, 0.0], vec![0.0, 1.0]]), vec![1.0, 0.0]);
    }

    #[test]
    fn the_summary_and_its_json() {
        let m = |h: f64, top1: f64, epsilon: f64| MessageScore {
            sender: 0,
            fragments: 1,
            entropy_bits: h,
            top1,
            epsilon,
            network_latency_ms: 100.0,
        };
        let s = Summary::of(
            &[
                m(2.0, 0.0, 1.0),
                m(1.0, 1.0, f64::INFINITY),
                m(1.5, 0.5, 2.0),
            ],
            4,
        );
        assert_eq!(s.entropy_bits_p50, 1.5);
        assert_eq!(s.ideal_bits, 2.0);
        assert_eq!(s.chance, 0.25);
        assert!((s.top1_success - 0.5).abs() < 1e-12);
        assert_eq!(s.epsilon_p50, 2.0);
        assert!((s.ruled_out - 1.0 / 3.0).abs() < 1e-12);
        let json: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        for field in [
            "senders",
            "entropy_bits_p50",
            "ideal_bits",
            "top1_success",
            "chance",
            "epsilon_p50",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        let all_ruled_out = Summary::of(&[m(0.0, 1.0, f64::INFINITY)], 4);
        let json: serde_json::Value = serde_json::from_str(&all_ruled_out.json()).unwrap();
        assert!(json["epsilon_p50"].is_null());
    }
}
