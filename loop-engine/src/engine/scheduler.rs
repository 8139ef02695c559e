//! The scheduler: claims pending runs from the store while slots are free and drives each in
//! its own task. Event-driven: it sleeps on a `Notify` woken by new, resumed and finished runs,
//! never on a timer, so an idle engine costs nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::task::JoinSet;

use crate::backend::{ClaimRequest, Notification, NotificationKind, RunFilter};
use crate::domain::{EventPayload, NewEvent, Run, RunStatus, now_ms, payloads};
use crate::engine::core::Engine;
use crate::engine::driver::{chain, drive};
use crate::engine::inner::{Inner, RunControl};
use crate::engine::{recovery, supervisor};
use crate::error::EngineError;

/// A cap from a run's stored config (`max_concurrency`, `max_runs_per_workspace`).
fn cap(run: &Run, key: &str) -> Option<usize> {
    run.config
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
}

impl Engine {
    /// Runs the engine until [`Engine::shutdown`]: first recovers what a previous process left
    /// behind (interrupted steps, surviving agents, stale locks), then starts pending runs as
    /// slots free up. On shutdown, running agents are stopped (within the settings' grace) and
    /// their runs go back to the queue.
    pub async fn run(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        recovery::recover(inner).await?;
        let mut tasks = JoinSet::new();
        loop {
            if inner.shutdown.is_cancelled() {
                break;
            }
            if let Err(e) = fill(inner, &mut tasks).await {
                tracing::error!(error = %chain(&e), "scheduler cannot claim runs; waiting for the next wake-up");
            }
            tokio::select! {
                () = inner.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = inner.shutdown.cancelled() => break,
            }
        }
        let grace = inner.settings.stop_grace;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = tasks.len(),
                "runs did not stop within the grace period; they will be recovered at the next start"
            );
            tasks.abort_all();
        }
        Ok(())
    }

    /// Drives pending runs until none is left (or the engine shuts down), then returns: for
    /// embedders and tests that want "run this to the end" without a daemon.
    pub async fn run_until_idle(&self) -> Result<(), EngineError> {
        let inner = &self.inner;
        recovery::recover(inner).await?;
        let mut tasks = JoinSet::new();
        loop {
            if inner.shutdown.is_cancelled() {
                break;
            }
            fill(inner, &mut tasks).await?;
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                Some(_) = tasks.join_next() => {}
                () = inner.shutdown.cancelled() => break,
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Claims and starts runs while the caps allow.
async fn fill(inner: &Arc<Inner>, tasks: &mut JoinSet<()>) -> Result<(), EngineError> {
    loop {
        let (running, running_ids, per_ws) = {
            let s = inner.sched();
            let mut per_ws = std::collections::HashMap::new();
            for c in s.running.values() {
                *per_ws.entry(c.workspace.clone()).or_insert(0usize) += 1;
            }
            (
                s.running.len(),
                s.running.keys().copied().collect::<Vec<_>>(),
                per_ws,
            )
        };
        let ceiling = usize::try_from(inner.settings.max_concurrency).unwrap_or(usize::MAX);
        if running >= ceiling {
            return Ok(());
        }
        // A run's own caps can only hold it back: skip the pending runs whose
        // `max_concurrency` or `max_runs_per_workspace` is reached.
        let pending = inner
            .store
            .list_runs(&RunFilter {
                statuses: vec![RunStatus::Pending],
                ..RunFilter::default()
            })
            .await?;
        let mut skip_runs = running_ids;
        for r in &pending {
            let over_total = cap(r, "max_concurrency").is_some_and(|c| running >= c);
            let over_ws = cap(r, "max_runs_per_workspace")
                .is_some_and(|c| per_ws.get(&r.workspace_root).copied().unwrap_or(0) >= c);
            if over_total || over_ws {
                skip_runs.push(r.id);
            }
        }
        let claimed = inner
            .store
            .claim_next_run(&ClaimRequest {
                worker_id: inner.settings.worker_id.clone(),
                now: now_ms(),
                lease_ms: i64::try_from(inner.settings.lease.as_millis()).unwrap_or(30_000),
                order: inner.settings.queue_policy,
                skip_workspaces: Vec::new(),
                skip_runs,
            })
            .await?;
        let Some(run) = claimed else {
            return Ok(());
        };
        start(inner, tasks, run).await;
    }
}

async fn start(inner: &Arc<Inner>, tasks: &mut JoinSet<()>, run: Run) {
    let control = RunControl {
        cancel: inner.shutdown.child_token(),
        pause: Arc::new(AtomicBool::new(false)),
        workspace: run.workspace_root.clone(),
    };
    inner.sched().running.insert(run.id, control.clone());
    let run_id = run.id;
    if let Err(e) = recovery::reclaim_steps(inner, &run).await {
        tracing::warn!(%run_id, error = %chain(&e), "cannot clean up interrupted steps");
    }
    let _ = inner
        .emit(NewEvent::typed(
            run_id,
            &EventPayload::RunStarted(payloads::RunStarted {
                run_id,
                worker_id: inner.settings.worker_id.clone(),
            }),
        ))
        .await;
    let note = Notification {
        kind: NotificationKind::RunStarted,
        run: run.clone(),
        reason: None,
        event: None,
    };
    if let Err(e) = inner.notifier.notify(&note).await {
        tracing::warn!(%run_id, error = %chain(&e), "notifier failed");
    }
    let inner2 = inner.clone();
    tasks.spawn(async move {
        // The driver runs in a task of its own: should it die (a panic), the supervisor
        // fails the run with the reason and the slot below is freed all the same. Every
        // child of the run (git included) carries `LOOP_RUN_ID`, for recovery.
        let marked = crate::process::with_run_marker(
            run_id.to_string(),
            drive(inner2.clone(), run, control),
        );
        supervisor::supervise(&inner2, run_id, marked).await;
        inner2.sched().running.remove(&run_id);
        inner2.forget_unused_prep_locks().await;
        inner2.wake.notify_one();
    });
}
