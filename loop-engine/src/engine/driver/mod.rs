//! The run driver: carries one run through SPEC §6 (review passes, implementation with
//! retries and watchdog, verification gate, final verification, merge). Steps, events and
//! artifacts are journaled by the [`Recorder`](crate::engine::report::Recorder) and land in
//! one store transaction before the next agent, command, sleep or merge begins, so a restart
//! always finds the last step that started durable while the path between two agent calls
//! costs one commit.
//!
//! One concern per file: `state` (the driver's state and bookkeeping), `prepare` (worktree,
//! seed, naming), `iteration` (the loop of SPEC §6), `agent` (one agent step with retries),
//! `verify` (verification commands), `setup` (`setup_cmds` in a new worktree), `finish`
//! (merge and the end of a run), `stop` (why a run stops), `worktree` (the worktree and its
//! HEAD).

mod agent;
mod finish;
mod iteration;
mod prepare;
mod setup;
mod state;
mod stop;
mod verify;
mod worktree;

use std::sync::Arc;

use crate::backend::StoreError;
use crate::domain::{EventPayload, ExitReason, NewEvent, Run, RunStatus, payloads};
use crate::engine::inner::{Inner, RunControl};
use state::RunDriver;
use stop::Stop;
pub(crate) use stop::chain;

/// Entry point of a run's task: drives the run and records how it ended.
pub(crate) async fn drive(inner: Arc<Inner>, run: Run, control: RunControl) {
    let run_id = run.id;
    let mut driver = match RunDriver::new(inner.clone(), run, control) {
        Ok(d) => d,
        Err(failed) => {
            let (run, detail) = *failed;
            fail_unstartable(&inner, run, detail).await;
            return;
        }
    };
    let lease = driver.spawn_lease_renewal();
    let result = driver.execute().await;
    lease.abort();
    driver.finish(result).await;
    tracing::debug!(%run_id, "run task ended");
}

/// Ends a pending or paused run that a user canceled.
pub(crate) async fn cancel_idle_run(inner: &Arc<Inner>, run: Run) -> Result<(), StoreError> {
    let control = RunControl {
        cancel: inner.shutdown.child_token(),
        pause: Arc::default(),
    };
    match RunDriver::new(inner.clone(), run, control) {
        Ok(d) => {
            d.finish(Err(Stop::Canceled)).await;
            Ok(())
        }
        Err(failed) => {
            let (mut run, _) = *failed;
            run.status = RunStatus::Canceled;
            run.exit_reason = Some(ExitReason::Canceled);
            inner.store.update_run(&run).await?;
            inner
                .emit(NewEvent::typed(
                    run.id,
                    &EventPayload::RunCanceled(payloads::RunCanceled {
                        run_id: run.id,
                        reason: None,
                    }),
                ))
                .await?;
            Ok(())
        }
    }
}

/// A run whose stored config cannot even be read fails without running anything.
async fn fail_unstartable(inner: &Inner, mut run: Run, detail: String) {
    run.status = RunStatus::Failed;
    run.exit_reason = Some(ExitReason::Failed);
    run.failure = Some(detail.clone());
    if let Err(e) = inner.store.update_run(&run).await {
        tracing::error!(run_id = %run.id, error = %chain(&e), "cannot record run failure");
    }
    let _ = inner
        .emit(NewEvent::typed(
            run.id,
            &EventPayload::RunFailed(payloads::RunFailed::new(
                run.id,
                detail,
                &ExitReason::Failed,
            )),
        ))
        .await;
    let _ = inner
        .store
        .release_run(run.id, &inner.settings.worker_id)
        .await;
    inner.hub.close(run.id);
}
