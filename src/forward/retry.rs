//! When a failed attempt is tried again: exponential backoff with full jitter above a floor,
//! a `Retry-After` honoured within the same bounds, and no attempt after `FORWARD_MAX_AGE`.

use std::time::Duration;

use crate::config::ForwardSettings;
use crate::store::deliveries::NextStep;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's wait, and the least any retry waits.
    pub min: Duration,
    /// The most any retry waits.
    pub max: Duration,
    /// No attempt is made this long after the delivery was queued.
    pub max_age: Duration,
}

impl RetryPolicy {
    pub fn from_settings(settings: &ForwardSettings) -> RetryPolicy {
        RetryPolicy {
            min: settings.backoff_min,
            max: settings.backoff_max,
            max_age: settings.max_age,
        }
    }

    /// The longest wait after the `failures`-th failed attempt in a row: `min × 2^(failures−1)`,
    /// at most `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(40);
        self.min.saturating_mul(1 << doublings.min(31)).min(self.max)
    }

    /// What follows a failed attempt, the `failures`-th in a row, made at `now_ms` on a delivery
    /// queued at `enqueued_ms`. The wait is drawn between `min` and the ceiling by `jitter`
    /// (in `[0, 1)`), unless the destination asked for one with `Retry-After`; either way it is
    /// kept within `[min, max]`. The last attempt is made at the deadline, not after it.
    pub fn after_failure(
        &self,
        failures: u32,
        enqueued_ms: i64,
        now_ms: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> NextStep {
        let deadline = enqueued_ms.saturating_add(millis(self.max_age));
        if now_ms >= deadline {
            return NextStep::Failed;
        }
        let wait = match retry_after {
            Some(asked) => asked.clamp(self.min, self.max),
            None => {
                let spread = self.ceiling(failures).saturating_sub(self.min);
                self.min + spread.mul_f64(jitter.clamp(0.0, 1.0))
            }
        };
        NextStep::RetryAt(now_ms.saturating_add(millis(wait)).min(deadline))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3_600);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min: SECOND,
            max: HOUR,
            max_age: 24 * HOUR,
        }
    }

    #[test]
    fn the_ceiling_doubles_from_a_second_to_an_hour() {
        let ceilings: Vec<u64> = (1..=14)
            .map(|failures| policy().ceiling(failures).as_secs())
            .collect();
        assert_eq!(
            ceilings,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(policy().ceiling(u32::MAX), HOUR);
    }

    #[test]
    fn jitter_spreads_the_wait_between_the_floor_and_the_ceiling() {
        let at = |jitter| policy().after_failure(5, 0, 1_000, None, jitter);
        assert_eq!(at(0.0), NextStep::RetryAt(1_000 + 1_000));
        assert_eq!(at(0.5), NextStep::RetryAt(1_000 + 1_000 + 7_500));
        assert_eq!(at(1.0), NextStep::RetryAt(1_000 + 16_000));
    }

    #[test]
    fn retry_after_is_honoured_within_the_bounds() {
        let asked = |seconds| policy().after_failure(1, 0, 0, Some(Duration::from_secs(seconds)), 0.9);
        assert_eq!(asked(120), NextStep::RetryAt(120_000));
        assert_eq!(asked(0), NextStep::RetryAt(1_000));
        assert_eq!(asked(86_400), NextStep::RetryAt(3_600_000));
    }

    #[test]
    fn the_last_attempt_is_at_the_deadline_and_then_the_delivery_fails() {
        let day_ms = 86_400_000;
        assert_eq!(
            policy().after_failure(30, 0, day_ms - 10, None, 0.99),
            NextStep::RetryAt(day_ms)
        );
        assert_eq!(policy().after_failure(31, 0, day_ms, None, 0.0), NextStep::Failed);
        assert_eq!(
            policy().after_failure(1, 5, day_ms + 4, None, 0.0),
            NextStep::RetryAt(day_ms + 5)
        );
    }

    proptest! {
        #[test]
        fn every_retry_is_within_its_bounds_and_the_deadline(
            failures in 1u32..100,
            enqueued_ms in 0i64..1_000_000_000,
            elapsed_ms in 0i64..200_000_000,
            retry_after in proptest::option::of(0u64..1_000_000),
            jitter in 0.0f64..1.0,
        ) {
            let policy = policy();
            let now_ms = enqueued_ms + elapsed_ms;
            let deadline = enqueued_ms + 86_400_000;
            let step = policy.after_failure(failures, enqueued_ms, now_ms, retry_after.map(Duration::from_secs), jitter);
            match step {
                NextStep::Failed => prop_assert!(now_ms >= deadline),
                NextStep::RetryAt(at) => {
                    prop_assert!(now_ms < deadline);
                    prop_assert!(at <= deadline);
                    prop_assert!(at - now_ms <= 3_600_000);
                    prop_assert!(at - now_ms >= 1_000 || at == deadline);
                    if retry_after.is_none() {
                        prop_assert!(at - now_ms <= i64::try_from(policy.ceiling(failures).as_millis()).expect("small"));
                    }
                }
                NextStep::Delivered => prop_assert!(false, "a failure never delivers"),
            }
        }
    }
}
