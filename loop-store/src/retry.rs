//! Retrying a call that met a busy or locked database, shared by the store's methods and the
//! append queue.

use std::future::Future;
use std::time::Duration;

use loop_engine::backend::StoreError;

/// How many times a call that met a busy or locked database is tried in all. SQLite already
/// waited `busy_timeout` inside each attempt; the retries cover a lock held across that wait
/// (a long checkpoint, another process's long transaction) before `Retryable` reaches the
/// engine.
const ATTEMPTS: u32 = 4;

/// The pause before the first retry; it doubles after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// Runs `op` until it returns anything but [`StoreError::Retryable`], at most [`ATTEMPTS`]
/// times. Retrying is safe because a `Retryable` write was not applied (busy and locked
/// errors abort the statement or transaction, and a pool timeout never reached SQLite).
pub(crate) async fn retry<T, F, Fut>(what: &'static str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(StoreError::Retryable(e)) if attempt < ATTEMPTS => {
                tracing::debug!(operation = what, attempt, error = %e, "database busy, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(StoreError::Retryable(e)) => {
                tracing::warn!(operation = what, attempts = attempt, error = %e, "database stayed busy");
                return Err(StoreError::Retryable(e));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn busy() -> StoreError {
        StoreError::Retryable("database is locked".into())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_the_first_non_retryable_result() {
        let calls = AtomicU32::new(0);
        let result = retry("test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(busy())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_with_retryable_after_all_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = retry("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(busy())
        })
        .await;
        assert!(matches!(result, Err(StoreError::Retryable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = retry("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict {
                detail: "duplicate".into(),
            })
        })
        .await;
        assert!(matches!(result, Err(StoreError::Conflict { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
