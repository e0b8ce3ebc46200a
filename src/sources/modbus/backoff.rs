//! Exponential backoff with jitter for reconnects and for units that stopped answering.
//!
//! The n-th consecutive failure waits `min(initial * 2^n, max)`, then a random part of
//! up to `jitter` of it is taken off (full-delay jitter would let a fleet of pollers
//! reconnect in step after an outage; a fraction spreads them while keeping the
//! schedule predictable). A success resets the sequence. Pure: the caller passes the
//! random source, so tests are deterministic.

use std::time::Duration;

use rand::Rng;

/// How long to wait after consecutive failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Fraction of each wait that is random, 0.0..=1.0 (0.2: 80-100 % of the delay).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// 1 s doubling to 30 s, 20 % jitter.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// The delay before attempt `failures + 1`, without jitter (`failures >= 1`).
    pub fn base_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay with jitter: in `[base * (1 - jitter), base]`.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(failures);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cut: f64 = rng.random_range(0.0..=jitter);
        base.mul_f64(1.0 - cut)
    }
}

/// The state of one backoff sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to wait before the next attempt.
    pub fn fail(&mut self, policy: &BackoffPolicy, rng: &mut impl Rng) -> Duration {
        self.failures = self.failures.saturating_add(1);
        policy.delay(self.failures, rng)
    }

    /// Records a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn doubles_from_one_second_to_thirty() {
        let policy = BackoffPolicy::default();
        let bases: Vec<u64> = (1..=8).map(|n| policy.base_delay(n).as_secs()).collect();
        assert_eq!(bases, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(policy.base_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_reset_restarts() {
        let policy = BackoffPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::default();
        let mut seen = Vec::new();
        for n in 1..=10 {
            let delay = backoff.fail(&policy, &mut rng);
            let base = policy.base_delay(n);
            assert!(
                delay <= base && delay >= base.mul_f64(0.8),
                "{n}: {delay:?}"
            );
            seen.push(delay);
        }
        assert!(seen.windows(2).any(|w| w[0] != w[1]));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.fail(&policy, &mut rng) <= Duration::from_secs(1));
    }
}
