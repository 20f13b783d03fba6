//! When to try again: exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;

/// The wait before the next attempt after attempt number `attempt` (1-based) failed.
///
/// Full jitter: a uniform draw between zero and `min(max, base · 2^(attempt-1))`, which spreads
/// a crowd of retries evenly instead of in synchronized waves. A provider's `retry_after`
/// lengthens the wait, never shortens it; nothing waits longer than `max`.
pub(crate) fn backoff(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    let ceiling = policy.base.saturating_mul(1u32 << exponent).min(policy.max);
    let jittered = Duration::from_nanos(
        rng.random_range(0..=u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX)),
    );
    jittered
        .max(retry_after.unwrap_or_default())
        .min(policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_age: None,
        }
    }

    fn draws(attempt: u32, retry_after: Option<Duration>) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..2000)
            .map(|_| backoff(&policy(), attempt, retry_after, &mut rng))
            .collect()
    }

    #[test]
    fn the_ceiling_doubles_with_each_attempt() {
        for (attempt, ceiling) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            let d = draws(attempt, None);
            let max = d.iter().max().copied().unwrap_or_default();
            assert!(
                max <= Duration::from_secs(ceiling),
                "attempt {attempt}: {max:?}"
            );
            assert!(
                max > Duration::from_secs(ceiling).mul_f64(0.95),
                "attempt {attempt}: {max:?}"
            );
        }
    }

    #[test]
    fn jitter_is_spread_over_the_whole_range() {
        let d = draws(4, None);
        let below_half = d.iter().filter(|x| **x < Duration::from_secs(4)).count();
        assert!(
            (800..1200).contains(&below_half),
            "{below_half} of 2000 below half"
        );
        assert!(d.iter().any(|x| *x < Duration::from_millis(400)));
    }

    #[test]
    fn the_wait_never_exceeds_max() {
        assert!(
            draws(30, None)
                .iter()
                .all(|x| *x <= Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens() {
        assert!(
            draws(1, Some(Duration::from_secs(5)))
                .iter()
                .all(|x| *x == Duration::from_secs(5))
        );
        let d = draws(8, Some(Duration::from_secs(5)));
        assert!(d.iter().all(|x| *x >= Duration::from_secs(5)));
        assert!(d.iter().any(|x| *x > Duration::from_secs(30)));
    }

    #[test]
    fn retry_after_is_capped_by_max() {
        assert!(
            draws(1, Some(Duration::from_secs(3600)))
                .iter()
                .all(|x| *x == Duration::from_secs(60))
        );
    }
}
