//! Sender-chosen per-hop delays for Poisson mixing (Loopix): each hop holds a packet for an
//! exponentially distributed time, so that the order packets leave a node says nothing about
//! the order they came in (the exponential distribution is memoryless).

use std::time::Duration;

use rand_core::CryptoRng;

use super::routing::Delay;

/// Draws a delay from the exponential distribution with the given mean, by inversion.
///
/// Results saturate at `u32::MAX` microseconds (about 71 minutes); nodes cap delays far lower.
/// The generator must be cryptographic: delays an observer could predict would not mix.
pub fn sample_exponential<R: CryptoRng + ?Sized>(mean: Duration, rng: &mut R) -> Delay {
    // A uniform in (0, 1]: 53 random bits, shifted away from zero.
    let u = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let micros = -u.ln() * mean.as_secs_f64() * 1e6;
    if micros >= f64::from(u32::MAX) {
        Delay::from_micros(u32::MAX)
    } else {
        Delay::from_micros(micros as u32)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};

    use super::*;

    #[test]
    fn mean_and_spread_match_the_exponential() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let mean = Duration::from_millis(20);
        let n = 100_000;
        let samples: Vec<f64> = (0..n)
            .map(|_| f64::from(sample_exponential(mean, &mut rng).as_micros()))
            .collect();
        let avg = samples.iter().sum::<f64>() / n as f64;
        assert!((avg - 20_000.0).abs() < 20_000.0 * 0.02, "mean {avg}");
        // P(X > mean) = 1/e for the exponential.
        let above = samples.iter().filter(|&&s| s > 20_000.0).count() as f64 / n as f64;
        assert!((above - (-1.0f64).exp()).abs() < 0.01, "tail {above}");
    }

    #[test]
    fn zero_mean_gives_zero() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        assert_eq!(sample_exponential(Duration::ZERO, &mut rng), Delay::ZERO);
    }
}
