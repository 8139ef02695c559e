//! Retrying a failed or canceled run (SPEC §12): it goes back to the queue and the driver
//! continues from its last durable step on the same branch and worktree, as after a resume.
//! The budget is fresh: the run's iteration ceiling is raised to what it has run plus its
//! original `iterations`; steps, events and artifacts of the first attempt stay.

use crate::config::Config;
use crate::domain::payloads::RunRetried;
use crate::domain::{EventKind, EventPayload, NewEvent, Run, RunId, RunStatus};
use crate::engine::core::Engine;
use crate::engine::review::actions::allow;
use crate::engine::review::rules::{self, Action};
use crate::error::EngineError;

/// Events read per page while looking for an earlier retry.
const PAGE: u32 = 1000;

impl Engine {
    /// Queues a failed or canceled run again (`POST /runs/{id}/retry`); it continues from its
    /// last durable step with a fresh iteration budget. Refused for active, completed,
    /// merged and scrapped runs.
    pub async fn retry(&self, id: RunId) -> Result<Run, EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let run = self.inner.store.get_run(id).await?;
        allow(Action::Retry, &run)?;
        let lock = self.inner.prep_lock(&run.workspace_root).await;
        let guard = lock.lock().await;
        let mut run = self.inner.store.get_run(id).await?;
        allow(Action::Retry, &run)?;
        let cfg = Config::from_json(&run.config)?;
        let fresh = self.original_budget(id).await?.unwrap_or(cfg.iterations);
        let ceiling = rules::retry_ceiling(run.iterations_run, fresh);
        let previous_status = run.status;
        let previous_exit_reason = run.exit_reason.as_ref().map(ToString::to_string);
        if let Some(object) = run.config.as_object_mut() {
            object.insert("iterations".into(), serde_json::Value::from(ceiling));
        }
        run.status = RunStatus::Pending;
        run.exit_reason = None;
        run.failure = None;
        self.inner.store.update_run(&run).await?;
        self.inner
            .emit(NewEvent::typed(
                id,
                &EventPayload::RunRetried(RunRetried {
                    run_id: id,
                    previous_status: previous_status.as_str().to_owned(),
                    previous_exit_reason,
                    iterations_before: run.iterations_run,
                    iterations: ceiling - run.iterations_run,
                }),
            ))
            .await?;
        drop(guard);
        self.inner.wake.notify_one();
        Ok(self.inner.store.get_run(id).await?)
    }

    /// The fresh budget an earlier retry gave (the run's original `iterations`), if any.
    async fn original_budget(&self, id: RunId) -> Result<Option<u32>, EngineError> {
        let mut after = 0;
        let mut found = None;
        loop {
            let page = self.inner.store.events_after(id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in page.iter().filter(|e| e.kind == EventKind::RunRetried) {
                if let Ok(EventPayload::RunRetried(r)) =
                    EventPayload::parse(event.kind, &event.payload)
                {
                    found = Some(r.iterations);
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        Ok(found)
    }
}
