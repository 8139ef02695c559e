//! When a failed agent step is tried again, and after how long (SPEC §6 "Executor retries").

use std::time::Duration;

use crate::outcome::FailureKind;

/// The retry settings of a run (from its config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// `claude_retries`: extra attempts after any failure.
    pub(crate) retries: u32,
    /// `claude_retry_backoff_sec`: pause between those attempts.
    pub(crate) backoff: Duration,
    /// `claude_transient_retries`: extra attempts after transient API failures, on top of
    /// `retries`, with exponential backoff.
    pub(crate) transient_retries: u32,
    /// `claude_transient_backoff_max_sec`: cap of the exponential backoff.
    pub(crate) transient_backoff_max: Duration,
}

/// Retries used so far by one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetryBudget {
    /// Plain retries used.
    pub(crate) plain_used: u32,
    /// Transient retries used.
    pub(crate) transient_used: u32,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RetryDecision {
    /// Try again after `delay`.
    Retry {
        /// How long to wait first.
        delay: Duration,
        /// True when the transient-failure budget was used.
        transient: bool,
    },
    /// Stop: the step (and the run) failed.
    GiveUp,
}

/// Base delay of the exponential backoff for transient failures.
pub(crate) const TRANSIENT_BASE_DELAY: Duration = Duration::from_secs(5);

/// Decides whether a failure of `kind` is retried, updating `budget`. `jitter` is a number in
/// `[0, 1)` that spreads the exponential backoff by up to ±25% (pass a random number).
pub(crate) fn decide_retry(
    policy: &RetryPolicy,
    budget: &mut RetryBudget,
    kind: &FailureKind,
    jitter: f64,
) -> RetryDecision {
    match kind {
        // Retrying cannot help: the user must act, or asked us to stop.
        FailureKind::Canceled | FailureKind::AuthRefused | FailureKind::RootRefused => {
            return RetryDecision::GiveUp;
        }
        _ => {}
    }
    if kind.is_transient() && budget.transient_used < policy.transient_retries {
        let exp = TRANSIENT_BASE_DELAY
            .saturating_mul(1u32 << budget.transient_used.min(16))
            .min(policy.transient_backoff_max.max(Duration::from_millis(1)));
        let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
        budget.transient_used += 1;
        return RetryDecision::Retry {
            delay: exp.mul_f64(factor),
            transient: true,
        };
    }
    if budget.plain_used < policy.retries {
        budget.plain_used += 1;
        return RetryDecision::Retry {
            delay: policy.backoff,
            transient: false,
        };
    }
    RetryDecision::GiveUp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(retries: u32, transient: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            backoff: Duration::from_secs(5),
            transient_retries: transient,
            transient_backoff_max: Duration::from_secs(300),
        }
    }

    #[test]
    fn plain_failures_use_claude_retries_with_fixed_backoff() {
        let p = policy(2, 4);
        let mut b = RetryBudget::default();
        let kind = FailureKind::ExitCode(1);
        for _ in 0..2 {
            assert_eq!(
                decide_retry(&p, &mut b, &kind, 0.5),
                RetryDecision::Retry {
                    delay: Duration::from_secs(5),
                    transient: false
                }
            );
        }
        assert_eq!(decide_retry(&p, &mut b, &kind, 0.5), RetryDecision::GiveUp);
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap() {
        let mut p = policy(0, 10);
        p.transient_backoff_max = Duration::from_secs(30);
        let mut b = RetryBudget::default();
        let kind = FailureKind::Transient { status: Some(529) };
        let delays: Vec<_> = (0..5)
            .map(|_| match decide_retry(&p, &mut b, &kind, 0.5) {
                RetryDecision::Retry { delay, transient } => {
                    assert!(transient);
                    delay.as_secs()
                }
                RetryDecision::GiveUp => panic!("gave up too early"),
            })
            .collect();
        assert_eq!(delays, vec![5, 10, 20, 30, 30]);
    }

    #[test]
    fn transient_budget_then_plain_budget_then_give_up() {
        let p = policy(1, 1);
        let mut b = RetryBudget::default();
        let kind = FailureKind::Transient { status: Some(429) };
        assert!(matches!(
            decide_retry(&p, &mut b, &kind, 0.0),
            RetryDecision::Retry {
                transient: true,
                ..
            }
        ));
        assert!(matches!(
            decide_retry(&p, &mut b, &kind, 0.0),
            RetryDecision::Retry {
                transient: false,
                ..
            }
        ));
        assert_eq!(decide_retry(&p, &mut b, &kind, 0.0), RetryDecision::GiveUp);
    }

    #[test]
    fn jitter_spreads_by_a_quarter_each_way() {
        let p = policy(0, 3);
        let kind = FailureKind::Transient { status: None };
        let low = decide_retry(&p, &mut RetryBudget::default(), &kind, 0.0);
        let high = decide_retry(&p, &mut RetryBudget::default(), &kind, 0.999_999);
        assert_eq!(
            low,
            RetryDecision::Retry {
                delay: Duration::from_millis(3750),
                transient: true
            }
        );
        match high {
            RetryDecision::Retry { delay, .. } => assert!(delay > Duration::from_millis(6240)),
            RetryDecision::GiveUp => panic!("expected a retry"),
        }
    }

    #[test]
    fn refused_credentials_and_cancels_are_never_retried() {
        let p = policy(5, 5);
        for kind in [
            FailureKind::AuthRefused,
            FailureKind::RootRefused,
            FailureKind::Canceled,
        ] {
            assert_eq!(
                decide_retry(&p, &mut RetryBudget::default(), &kind, 0.5),
                RetryDecision::GiveUp
            );
        }
    }
}
