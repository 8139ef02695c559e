//! Recovery after a crash: runs this worker (or its dead predecessor on the same data dir)
//! left `RUNNING` go back to the queue, interrupted
//! steps are marked `FAILED` (`interrupted`), and agent processes that outlived their daemon
//! are killed before anything else runs in their worktree. The plan and git are the truth;
//! completed steps are never repeated because the driver decides from them.

use std::sync::Arc;

use crate::backend::RunFilter;
use crate::domain::payloads::RecoveryCleanup;
use crate::domain::{EventPayload, NewEvent, Run, RunStatus, StepStatus, now_ms};
use crate::engine::inner::Inner;
use crate::error::EngineError;
use crate::process;

/// How long recovery lets a git of the previous daemon finish before stopping it.
const VCS_CHILD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Puts this worker's orphaned runs back in the queue (their previous process is gone).
pub(crate) async fn recover(inner: &Arc<Inner>) -> Result<(), EngineError> {
    let running = inner
        .store
        .list_runs(&RunFilter {
            statuses: vec![RunStatus::Running],
            ..RunFilter::default()
        })
        .await?;
    let mine: Vec<Run> = {
        let active = inner.sched();
        running
            .into_iter()
            .filter(|r| {
                r.worker_id.as_deref().is_some_and(|w| {
                    w == inner.settings.worker_id
                        || inner.settings.previous_worker_ids.iter().any(|p| p == w)
                }) && !active.running.contains_key(&r.id)
            })
            .collect()
    };
    for mut run in mine {
        reclaim_steps(inner, &run).await?;
        let holder = run.worker_id.clone().unwrap_or_default();
        inner.store.release_run(run.id, &holder).await?;
        run = inner.store.get_run(run.id).await?;
        run.status = RunStatus::Pending;
        inner.store.update_run(&run).await?;
        inner
            .emit(NewEvent::typed(
                run.id,
                &EventPayload::RecoveryCleanup(RecoveryCleanup::Action {
                    run_id: run.id,
                    action: "requeued after restart".into(),
                }),
            ))
            .await?;
        tracing::info!(run_id = %run.id, "recovered run left running by a previous process");
    }
    inner.wake.notify_one();
    Ok(())
}

/// Marks a run's unfinished steps `FAILED` with reason `interrupted`, killing any agent that
/// survived its daemon (matched by pid and process start time, so a reused pid is spared).
pub(crate) async fn reclaim_steps(inner: &Inner, run: &Run) -> Result<(), EngineError> {
    let steps = inner.store.list_steps(run.id).await?;
    // A git of the previous process (a merge, a commit) may still be running: it is let
    // finish before anything else touches the repository, so no lock it holds is broken and
    // a merge it was landing is found landed.
    let id = run.id.to_string();
    let waited =
        tokio::task::spawn_blocking(move || process::wait_run_vcs_children(&id, VCS_CHILD_WAIT))
            .await
            .unwrap_or_default();
    if !waited.is_empty() {
        inner
            .emit(NewEvent::typed(
                run.id,
                &EventPayload::RecoveryCleanup(RecoveryCleanup::WaitedForGit {
                    run_id: run.id,
                    action: "waited for the git processes of the previous daemon to finish".into(),
                    git_pids: waited,
                }),
            ))
            .await?;
    }
    let mut interrupted_any = false;
    for mut step in steps.into_iter().filter(|s| !s.status.is_terminal()) {
        interrupted_any = true;
        let mut killed = None;
        // Without a start time a recorded pid may belong to an unrelated process by now.
        if let (Some(pid), Some(start)) = (step.agent_pid, step.agent_start_time) {
            let was_alive = tokio::task::spawn_blocking(move || process::kill_survivor(pid, start))
                .await
                .unwrap_or(false);
            if was_alive {
                killed = Some(pid);
            }
        }
        step.status = StepStatus::Failed;
        step.reason = Some("interrupted".into());
        step.ended_at = Some(now_ms());
        step.agent_pid = None;
        step.agent_start_time = None;
        inner.store.update_step(&step).await?;
        inner
            .emit(
                NewEvent::typed(
                    run.id,
                    &EventPayload::RecoveryCleanup(RecoveryCleanup::StepInterrupted {
                        run_id: run.id,
                        step_id: step.id,
                        action: "step marked failed: interrupted".into(),
                        killed_agent_pid: killed,
                    }),
                )
                .with_step(step.id),
            )
            .await?;
    }
    // Every agent of the run ran in a cgroup named after it (where cgroups are used): what a
    // crashed daemon left there is killed in one write each, however it detached.
    let id = run.id.to_string();
    let in_cgroups = tokio::task::spawn_blocking(move || process::kill_run_cgroups(&id))
        .await
        .unwrap_or_default();
    if !in_cgroups.is_empty() {
        inner
            .emit(NewEvent::typed(
                run.id,
                &EventPayload::RecoveryCleanup(RecoveryCleanup::KilledUnrecorded {
                    run_id: run.id,
                    action: "killed the processes left in the run's agent cgroups".into(),
                    killed_pids: in_cgroups,
                }),
            ))
            .await?;
    }
    if interrupted_any {
        // Agents whose pid was never recorded are found by the run id in their environment
        // (the previous daemon may have contained them by process group).
        let id = run.id.to_string();
        let killed = tokio::task::spawn_blocking(move || process::kill_run_survivors(&id))
            .await
            .unwrap_or_default();
        if !killed.is_empty() {
            inner
                .emit(NewEvent::typed(
                    run.id,
                    &EventPayload::RecoveryCleanup(RecoveryCleanup::KilledUnrecorded {
                        run_id: run.id,
                        action: "killed unrecorded agent processes of the run".into(),
                        killed_pids: killed,
                    }),
                ))
                .await?;
        }
    }
    if !run.worktree_path.as_os_str().is_empty()
        && run.worktree_path.exists()
        && inner
            .vcs
            .remove_stale_lock(&run.worktree_path)
            .await
            .unwrap_or(false)
    {
        inner
            .emit(NewEvent::typed(
                run.id,
                &EventPayload::RecoveryCleanup(RecoveryCleanup::Action {
                    run_id: run.id,
                    action: "removed stale index.lock".into(),
                }),
            ))
            .await?;
    }
    // An interrupted step never committed: its half-done edits (say, a task ticked in the
    // plan but not committed) would otherwise count as done on resume and be left out of the
    // merge. They are stashed, so the step re-runs from the last commit and nothing is lost.
    if interrupted_any && !run.worktree_path.as_os_str().is_empty() && run.worktree_path.exists() {
        let message = format!(
            "loop: uncommitted changes of run {} interrupted by a crash",
            run.id
        );
        match inner.vcs.stash_changes(&run.worktree_path, &message).await {
            Ok(true) => {
                inner
                    .emit(NewEvent::typed(
                        run.id,
                        &EventPayload::RecoveryCleanup(RecoveryCleanup::Stashed {
                            run_id: run.id,
                            action: "stashed the uncommitted changes of the interrupted step"
                                .into(),
                            stash_message: message.clone(),
                        }),
                    ))
                    .await?;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "cannot stash the changes of an interrupted step");
            }
        }
    }
    Ok(())
}
