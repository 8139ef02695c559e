//! What users do to a run: pause, resume and cancel.

use std::sync::atomic::Ordering;

use crate::domain::{EventPayload, NewEvent, Run, RunId, RunStatus, payloads};
use crate::engine::core::Engine;
use crate::engine::driver::cancel_idle_run;
use crate::error::EngineError;

impl Engine {
    /// Pauses a run: a pending run is paused at once, a running one at its next step boundary.
    pub async fn pause(&self, id: RunId) -> Result<Run, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Pending => {
                let mut run = run;
                run.status = RunStatus::Paused;
                self.inner.store.update_run(&run).await?;
                self.inner
                    .emit(NewEvent::typed(
                        id,
                        &EventPayload::RunPaused(payloads::RunPaused {
                            run_id: id,
                            at: "queue".into(),
                        }),
                    ))
                    .await?;
                Ok(self.inner.store.get_run(id).await?)
            }
            RunStatus::Running => {
                let control = self.inner.sched().running.get(&id).cloned();
                match control {
                    Some(c) => {
                        c.pause.store(true, Ordering::SeqCst);
                        Ok(run)
                    }
                    None => Err(EngineError::InvalidState {
                        run_id: id,
                        detail: "run is executing on another worker".into(),
                    }),
                }
            }
            RunStatus::Paused => Ok(run),
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot pause a run that is {status}"),
            }),
        }
    }

    /// Resumes a paused run (it goes back to the queue and continues from its last durable
    /// step). A pending pause request on a running run is withdrawn.
    pub async fn resume(&self, id: RunId) -> Result<Run, EngineError> {
        let mut run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Paused => {
                run.status = RunStatus::Pending;
                self.inner.store.update_run(&run).await?;
                self.inner
                    .emit(NewEvent::typed(
                        id,
                        &EventPayload::RunResumed(payloads::RunResumed { run_id: id }),
                    ))
                    .await?;
                self.inner.wake.notify_one();
                Ok(self.inner.store.get_run(id).await?)
            }
            RunStatus::Running | RunStatus::Pending => {
                if let Some(c) = self.inner.sched().running.get(&id) {
                    c.pause.store(false, Ordering::SeqCst);
                }
                Ok(run)
            }
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot resume a run that is {status}"),
            }),
        }
    }

    /// Cancels a run: a running agent is stopped, the run ends `CANCELED`.
    pub async fn cancel(&self, id: RunId) -> Result<Run, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Running => {
                let control = self.inner.sched().running.get(&id).cloned();
                match control {
                    Some(c) => {
                        c.cancel.cancel();
                        Ok(run)
                    }
                    None => Err(EngineError::InvalidState {
                        run_id: id,
                        detail: "run is executing on another worker".into(),
                    }),
                }
            }
            RunStatus::Pending | RunStatus::Paused => {
                // Not executing: end it here. A claim racing with this sees CANCELED and stops.
                cancel_idle_run(&self.inner, run).await?;
                Ok(self.inner.store.get_run(id).await?)
            }
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot cancel a run that is {status}"),
            }),
        }
    }
}
