//! Epochs and the deadlines inside them, in milliseconds since the UNIX epoch (time is passed in).
//!
//! During epoch `e` the authorities prepare the consensus of `e + 1`, in phases at fixed fractions
//! of the epoch length `P` (as in Katzenpost's voting PKI):
//!
//! | from | phase | what happens |
//! |---|---|---|
//! | 0 | descriptors | nodes upload descriptors for `e + 1` |
//! | P/4 | vote | each authority sends its vote (accepted descriptors + commitment) |
//! | 3P/8 | reveal | each authority reveals its random value |
//! | P/2 | sign | each authority computes the consensus and sends its signature |
//! | 5P/8 | publish | a consensus with a threshold of signatures is published |
//!
//! Messages that arrive after their phase are rejected as late.

/// Where in its epoch a moment falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Descriptors for the next epoch are accepted.
    Descriptors,
    /// Votes are exchanged.
    Vote,
    /// Reveals are exchanged.
    Reveal,
    /// The consensus is computed and signatures exchanged.
    Sign,
    /// The consensus is published (signatures still accepted).
    Publish,
}

/// The network's clock: when epoch 0 started and how long each epoch lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSchedule {
    genesis_ms: u64,
    period_ms: u64,
}

impl EpochSchedule {
    /// Epochs of `period_ms` (at least 8 ms so every phase has a length) from `genesis_ms`.
    pub fn new(genesis_ms: u64, period_ms: u64) -> Self {
        EpochSchedule {
            genesis_ms,
            period_ms: period_ms.max(8),
        }
    }

    /// Epoch length in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// The epoch `now_ms` falls in (epoch 0 before genesis).
    pub fn epoch_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.genesis_ms) / self.period_ms
    }

    /// When `epoch` starts.
    pub fn start_of(&self, epoch: u64) -> u64 {
        self.genesis_ms
            .saturating_add(epoch.saturating_mul(self.period_ms))
    }

    /// When `phase` of `epoch` starts.
    pub fn phase_start(&self, epoch: u64, phase: Phase) -> u64 {
        let eighths = match phase {
            Phase::Descriptors => 0,
            Phase::Vote => 2,
            Phase::Reveal => 3,
            Phase::Sign => 4,
            Phase::Publish => 5,
        };
        self.start_of(epoch)
            .saturating_add(self.period_ms / 8 * eighths)
    }

    /// The phase `now_ms` falls in.
    pub fn phase_at(&self, now_ms: u64) -> Phase {
        let epoch = self.epoch_at(now_ms);
        [Phase::Publish, Phase::Sign, Phase::Reveal, Phase::Vote]
            .into_iter()
            .find(|&p| now_ms >= self.phase_start(epoch, p))
            .unwrap_or(Phase::Descriptors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_schedule() {
        let s = EpochSchedule::new(1_000, 800);
        assert_eq!(s.epoch_at(0), 0);
        assert_eq!(s.epoch_at(1_799), 0);
        assert_eq!(s.epoch_at(1_800), 1);
        assert_eq!(s.start_of(2), 2_600);
        assert_eq!(s.phase_at(1_800), Phase::Descriptors);
        assert_eq!(s.phase_at(1_800 + 200), Phase::Vote);
        assert_eq!(s.phase_at(1_800 + 300), Phase::Reveal);
        assert_eq!(s.phase_at(1_800 + 400), Phase::Sign);
        assert_eq!(s.phase_at(1_800 + 500), Phase::Publish);
        assert_eq!(s.phase_at(1_800 + 799), Phase::Publish);
    }
}
