//! The supervisor of driver tasks: a run's driver runs in a task of its own, and when that
//! task dies (a panic anywhere in the driver, an executor, a store or a notifier it calls),
//! the run is failed with the reason, its interrupted steps are closed, surviving agents are
//! killed and its lease is released, so its concurrency slot frees, a cancel answers from a
//! terminal state and a restart does not pick the run up again.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinError};

use crate::domain::payloads::RunFailed;
use crate::domain::{EventPayload, ExitReason, NewEvent, RunId, RunStatus, now_ms};
use crate::engine::driver::chain;
use crate::engine::inner::Inner;
use crate::engine::recovery;

/// Aborts the supervised task when the supervisor itself is dropped (e.g. aborted at the end
/// of a shutdown's grace period), so no driver outlives its supervisor.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `driver` (the future that drives run `run_id`) in its own task and waits for it; if
/// the task panics, fails the run with the panic's message.
pub(crate) async fn supervise<F>(inner: &Arc<Inner>, run_id: RunId, driver: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(driver);
    let _guard = AbortOnDrop(handle.abort_handle());
    if let Err(e) = handle.await {
        fail_dead_run(inner, run_id, &death_reason(e)).await;
    }
}

/// What killed a driver task, for the run's failure reason.
fn death_reason(e: JoinError) -> String {
    if e.is_panic() {
        format!("panicked: {}", panic_message(e.into_panic().as_ref()))
    } else {
        "was cancelled".to_owned()
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// The first wait before a failed store call of [`fail_dead_run`] is tried again; it doubles
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two tries of a store call of [`fail_dead_run`].
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Runs the store call `call` until it succeeds while the store is failing (its health check
/// fails), waiting longer after each failure; `None` if a healthy store refuses the call or
/// the engine shuts down first. A driver often dies of the store failing (a full disk):
/// its run's end must land once the store works again, or the run would stay RUNNING and
/// keep its lease for good.
async fn until_stored<T, E, Fut>(
    inner: &Inner,
    run_id: RunId,
    what: &str,
    mut call: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error,
{
    let mut wait = RETRY_FIRST;
    loop {
        match call().await {
            Ok(v) => return Some(v),
            // A refusal by a working store (the run moved on, say) is final: only an
            // outage is waited out.
            Err(e) if inner.store.check_health().await.is_ok() => {
                tracing::error!(%run_id, error = %chain(&e), "cannot {what} of a dead run");
                return None;
            }
            Err(e) => {
                tracing::warn!(%run_id, error = %chain(&e), "cannot {what} of a dead run; trying again in {} ms", wait.as_millis());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.shutdown.cancelled() => return None,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Ends a run whose driver died: FAILED with `reason` (unless it already ended), its
/// unfinished steps closed as interrupted (agents still alive are killed), its lease released
/// and its followers told. Store calls that fail are tried again until they land (or the
/// engine shuts down; the next start then recovers the run).
async fn fail_dead_run(inner: &Inner, run_id: RunId, reason: &str) {
    let detail = format!("the run's driver task {reason}; the run was stopped here");
    tracing::error!(%run_id, %detail, "driver task died");
    let run = until_stored(inner, run_id, "read the run", || {
        inner.store.get_run(run_id)
    })
    .await;
    if let Some(mut run) = run.filter(|r| !r.status.is_terminal()) {
        if let Err(e) = recovery::reclaim_steps(inner, &run).await {
            tracing::warn!(%run_id, error = %chain(&e), "cannot close the steps of a dead run");
        }
        run.status = RunStatus::Failed;
        run.exit_reason = Some(ExitReason::Failed);
        run.failure = Some(detail.clone());
        run.updated_at = now_ms();
        let failed = until_stored(inner, run_id, "record the failure", || {
            inner.store.update_run(&run)
        })
        .await;
        if failed.is_some() {
            let event = NewEvent::typed(
                run_id,
                &EventPayload::RunFailed(RunFailed {
                    run_id,
                    reason: detail,
                    exit_reason: ExitReason::Failed.to_string(),
                }),
            );
            until_stored(inner, run_id, "record RUN_FAILED", || {
                inner.emit(event.clone())
            })
            .await;
        }
    }
    until_stored(inner, run_id, "release the lease", || {
        inner.store.release_run(run_id, &inner.settings.worker_id)
    })
    .await;
    inner.hub.close(run_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let text: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(text.as_ref()), "boom");
        let owned: Box<dyn Any + Send> = Box::new(String::from("boom 2"));
        assert_eq!(panic_message(owned.as_ref()), "boom 2");
        let other: Box<dyn Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(other.as_ref()), "a panic without a message");
    }
}
