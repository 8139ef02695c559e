//! The scheduler: claims pending runs from the store while slots are free and drives each in
//! its own task. Event-driven: it sleeps on a `Notify` woken by new, resumed and finished runs,
//! never on a timer, so an idle engine costs nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::task::JoinSet;

use crate::backend::{ClaimRequest, Notification, NotificationKind, RunFilter, StoreChange};
use crate::domain::{EventPayload, NewEvent, Run, RunStatus, UnixMs, now_ms, payloads};
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
        // A store shared with other hosts announces their changes: a new or freed run wakes
        // this scheduler, and events of runs executing elsewhere reach this host's followers.
        let feed = inner
            .store
            .changes()
            .map(|changes| tokio::spawn(follow_changes(inner.clone(), changes)));
        let mut tasks = JoinSet::new();
        loop {
            if inner.shutdown.is_cancelled() {
                break;
            }
            let next_expiry = match fill(inner, &mut tasks).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %chain(&e), "scheduler cannot claim runs; waiting for the next wake-up");
                    None
                }
            };
            // No notification tells when another worker's lease lapses: sleep until the
            // earliest one would (a deadline, not a poll; nothing runs while none is due).
            let expiry = next_expiry.map(|at| {
                let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                tokio::time::Instant::now() + std::time::Duration::from_millis(wait + 5)
            });
            tokio::select! {
                () = inner.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = sleep_until(expiry) => {}
                () = inner.shutdown.cancelled() => break,
            }
        }
        if let Some(feed) = feed {
            feed.abort();
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

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Turns a shared store's change feed into wake-ups of the scheduler and events for this
/// host's followers of runs that execute elsewhere.
async fn follow_changes(
    inner: Arc<Inner>,
    mut changes: tokio::sync::broadcast::Receiver<StoreChange>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match changes.recv().await {
            Ok(StoreChange::Run { .. }) => inner.wake.notify_one(),
            Ok(StoreChange::Event { run_id, seq }) => inner.relay_remote_event(run_id, seq).await,
            Ok(StoreChange::Resync) | Err(RecvError::Lagged(_)) => {
                inner.wake.notify_one();
                inner.resync_remote_followers().await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// True while `run` holds a lease that has not expired at `now`.
fn leased(run: &Run, now: UnixMs) -> bool {
    run.status == RunStatus::Running
        && run.worker_id.is_some()
        && run.lease_expires_at.is_some_and(|until| until > now)
}

/// Claims and starts runs while the caps allow. Returns when the earliest lease of a run
/// held by another worker expires (the next moment a claim could find something new).
async fn fill(inner: &Arc<Inner>, tasks: &mut JoinSet<()>) -> Result<Option<UnixMs>, EngineError> {
    let shared = inner.store.changes().is_some();
    loop {
        let (running, running_ids) = {
            let s = inner.sched();
            (
                s.running.len(),
                s.running.keys().copied().collect::<Vec<_>>(),
            )
        };
        let now = now_ms();
        // Runs executing anywhere (every host sharing the store) under a live lease: the
        // per-workspace cap counts them all.
        let live: Vec<Run> = inner
            .store
            .list_runs(&RunFilter {
                statuses: vec![RunStatus::Running],
                ..RunFilter::default()
            })
            .await?;
        let next_expiry = live
            .iter()
            .filter(|r| r.worker_id.as_deref() != Some(inner.settings.worker_id.as_str()))
            .filter_map(|r| r.lease_expires_at.filter(|&until| until > now))
            .min();
        let mut per_ws = std::collections::HashMap::new();
        for r in live.iter().filter(|r| leased(r, now)) {
            *per_ws.entry(r.workspace_root.clone()).or_insert(0usize) += 1;
        }
        let ceiling = usize::try_from(inner.settings.max_concurrency).unwrap_or(usize::MAX);
        if running >= ceiling {
            return Ok(next_expiry);
        }
        // A run's own caps can only hold it back: skip the pending runs whose
        // `max_concurrency` (this host's) or `max_runs_per_workspace` (all hosts) is reached.
        let pending = inner
            .store
            .list_runs(&RunFilter {
                statuses: vec![RunStatus::Pending],
                ..RunFilter::default()
            })
            .await?;
        let mut skip_runs = running_ids;
        let mut skip_workspaces = Vec::new();
        for r in pending
            .iter()
            .chain(live.iter().filter(|r| !leased(r, now)))
        {
            let over_total = cap(r, "max_concurrency").is_some_and(|c| running >= c);
            let over_ws = cap(r, "max_runs_per_workspace")
                .is_some_and(|c| per_ws.get(&r.workspace_root).copied().unwrap_or(0) >= c);
            if over_total || over_ws {
                skip_runs.push(r.id);
            }
            // On a shared store, runs of workspaces this host cannot see are left to the
            // hosts that can (SPEC §14).
            if shared && !skip_workspaces.contains(&r.workspace_root) && !r.workspace_root.is_dir()
            {
                skip_workspaces.push(r.workspace_root.clone());
            }
        }
        let claimed = inner
            .store
            .claim_next_run(&ClaimRequest {
                worker_id: inner.settings.worker_id.clone(),
                now,
                lease_ms: i64::try_from(inner.settings.lease.as_millis()).unwrap_or(30_000),
                order: inner.settings.queue_policy,
                skip_workspaces,
                skip_runs,
            })
            .await?;
        let Some(run) = claimed else {
            return Ok(next_expiry);
        };
        start(inner, tasks, run).await;
    }
}

async fn start(inner: &Arc<Inner>, tasks: &mut JoinSet<()>, run: Run) {
    let control = RunControl {
        cancel: inner.shutdown.child_token(),
        pause: Arc::new(AtomicBool::new(false)),
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
