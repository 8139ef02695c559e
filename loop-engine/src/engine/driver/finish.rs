//! The end of a run: the merge, the final state (with retries while the store is down), the
//! last events, summary.json, the notification, then the postmortem (SPEC §12).

use std::time::{Duration, Instant};

use crate::artifacts::{self, Summary};
use crate::backend::{MergeOutcome, MergeRequest, Notification, NotificationKind, VcsError};
use crate::config::WorktreeCleanup;
use crate::domain::{
    ArtifactKind, EventPayload, ExitReason, MergeStrategy, ReportKind, ReviewStatus, RunStatus,
    StepPhase, StepStatus, now_ms, payloads,
};
use crate::engine::driver::state::{RunDriver, ms};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::postmortem;
use crate::engine::report::Row;
use crate::engine::review::remove_run_worktree;

/// How often a merge that found a git lock held is tried again (about 16 s in all).
const MERGE_LOCK_RETRIES: u64 = 10;

impl RunDriver {
    /// Merges the finished run branch; `Ok(Some(reason))` when the merge is pending (it
    /// would touch a user's uncommitted work), which leaves the run completed.
    pub(super) async fn merge(&mut self) -> Result<Option<String>, Stop> {
        let Some(target) = self.run.merge_target_branch.clone() else {
            return Ok(None);
        };
        if self.run.merge_strategy == MergeStrategy::None {
            return Ok(None);
        }
        // The merge takes the run branch only: uncommitted work in the worktree would be
        // dropped from the target without a word.
        if !self.inner.vcs.is_clean(self.worktree.path()).await? {
            return Err(Stop::failed(format!(
                "run {}: the worktree {} has uncommitted changes; nothing was merged into \
                 {target} and the run branch {} is kept: commit or discard them and merge by hand",
                self.run.id,
                self.worktree.path().display(),
                self.run.run_branch
            )));
        }
        let iteration = self.run.iterations_run;
        let mut step = self.new_step(iteration, "merge", StepPhase::Merge, 1);
        step.head_before = self.head().await?;
        self.start_step(&step).await?;
        let strategy = self.run.merge_strategy;
        self.report(
            Some(step.id),
            ReportKind::MergeStart,
            Row::msg(
                "merge",
                format!(
                    "target={target} strategy={strategy} run_branch={}",
                    self.run.run_branch
                ),
            ),
        )
        .await?;
        let started = Instant::now();
        let req = MergeRequest {
            run_id: self.run.id,
            repo: self.run.workspace_root.clone(),
            run_branch: self.run.run_branch.clone(),
            target_branch: target.clone(),
            base_branch: self.run.base_branch.clone(),
            strategy: self.run.merge_strategy,
            message: format!(
                "loop: {} ({} of {} tasks)",
                self.run.name, self.run.tasks_done, self.run.tasks_total
            ),
        };
        let worktree = self.worktree.lend();
        self.flush().await?;
        // A merge reads the repository's worktree list, which another run's worktree being
        // added at that moment leaves half-written: merges and worktree preparation of one
        // workspace take turns.
        let merged = {
            let lock = self.inner.prep_lock(&self.run.workspace_root).await;
            let _guard = lock.lock().await;
            // A lock held by a live git (the user's, say) is waited for, a while.
            let mut attempt = 0u64;
            loop {
                match self.inner.vcs.merge(&req).await {
                    Err(VcsError::Retryable { detail }) if attempt < MERGE_LOCK_RETRIES => {
                        attempt += 1;
                        tracing::info!(run_id = %self.run.id, %detail, attempt, "merge waits for a git lock");
                        tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
                    }
                    other => break other,
                }
            }
        };
        drop(worktree);
        match merged {
            Ok(MergeOutcome::Pending { reason }) => {
                step.reason = Some(reason.clone());
                step.exit_code = Some(0);
                let duration = ms(started);
                self.end_step(&mut step, StepStatus::Succeeded, duration)
                    .await?;
                self.merge_end_row(
                    &step,
                    duration,
                    format!("target={target} strategy={strategy} status=pending reason={reason}"),
                )
                .await?;
                self.rec
                    .log(format!("MERGE_PENDING into {target}: {reason}"));
                self.event(
                    Some(step.id),
                    EventPayload::MergePending(payloads::MergePending {
                        target,
                        strategy: self.run.merge_strategy,
                        run_branch: self.run.run_branch.clone(),
                        reason: reason.clone(),
                    }),
                )
                .await?;
                Ok(Some(reason))
            }
            Ok(outcome) => {
                let (what, commit, checkout) = match &outcome {
                    MergeOutcome::Merged { commit, checkout } => {
                        ("merged", Some(commit.clone()), checkout.clone())
                    }
                    MergeOutcome::AlreadyMerged { commit } => {
                        ("already_merged", Some(commit.clone()), None)
                    }
                    _ => ("nothing_to_merge", None, None),
                };
                step.head_after = commit.clone();
                step.exit_code = Some(0);
                if let Some(commit) = &commit {
                    // The work is in the target: the review has nothing left to merge.
                    self.run.review_status = ReviewStatus::Merged;
                    self.run.review_action_at = Some(now_ms());
                    self.run.merge_commit = Some(commit.clone());
                }
                let duration = ms(started);
                self.end_step(&mut step, StepStatus::Succeeded, duration)
                    .await?;
                self.merge_end_row(
                    &step,
                    duration,
                    format!(
                        "target={target} strategy={strategy} status=ok outcome={what} commit={}",
                        commit.as_deref().unwrap_or("-")
                    ),
                )
                .await?;
                // The user's checkout moved only if it already had the target checked out.
                let message = checkout.as_ref().map(|dir| {
                    format!(
                        "your checkout {} is now on {target} at {}",
                        dir.display(),
                        commit.as_deref().unwrap_or_default()
                    )
                });
                if let Some(text) = &message {
                    self.rec.log(text.clone());
                }
                self.event(
                    Some(step.id),
                    EventPayload::MergeDone(payloads::MergeDone {
                        target,
                        strategy: self.run.merge_strategy,
                        outcome: what.to_owned(),
                        commit,
                        checkout,
                        message,
                    }),
                )
                .await?;
                Ok(None)
            }
            Err(e) => {
                let detail = format!(
                    "run {} step {}: merge of {} into {target} failed: {}; the run branch {} is kept",
                    self.run.id,
                    step.id,
                    self.run.run_branch,
                    chain(&e),
                    self.run.run_branch
                );
                step.reason = Some(chain(&e));
                step.exit_code = Some(1);
                let duration = ms(started);
                self.end_step(&mut step, StepStatus::Failed, duration)
                    .await?;
                self.merge_end_row(
                    &step,
                    duration,
                    format!(
                        "target={target} strategy={strategy} status=failed reason={}",
                        chain(&e)
                    ),
                )
                .await?;
                Err(Stop::failed(detail))
            }
        }
    }

    /// The `MERGE_END` row of the merge step (report.tsv, run.log and the event).
    async fn merge_end_row(
        &self,
        step: &crate::domain::Step,
        duration: u64,
        message: String,
    ) -> Result<(), Stop> {
        let row = Row {
            iteration: "merge".into(),
            duration_ms: Some(duration),
            exit_code: step.exit_code,
            message,
            ..Row::default()
        };
        self.report(Some(step.id), ReportKind::MergeEnd, row).await
    }

    pub(super) async fn finish(mut self, result: Result<ExitReason, Stop>) {
        let mut merge_pending = None;
        let result = match result {
            Ok(reason) => match self.merge().await {
                Ok(pending) => {
                    merge_pending = pending;
                    Ok(reason)
                }
                Err(stop) => Err(stop),
            },
            Err(stop) => Err(stop),
        };
        let run_id = self.run.id;
        let (status, exit_reason, detail) = match &result {
            Ok(reason) => (RunStatus::Completed, Some(reason.clone()), None),
            Err(Stop::Fail { reason, detail }) => (
                RunStatus::Failed,
                Some(reason.clone()),
                Some(detail.clone()),
            ),
            Err(Stop::Canceled) => (RunStatus::Canceled, Some(ExitReason::Canceled), None),
            Err(Stop::Paused) => (RunStatus::Paused, None, None),
            Err(Stop::Shutdown) => (RunStatus::Pending, None, None),
            Err(Stop::LostLease) => {
                self.inner.hub.set_current_output(run_id, None);
                return;
            }
        };
        // A store that is failing right now may come back: keep trying for a while so the
        // outcome is recorded, and never drop it silently.
        self.run.status = status;
        self.run.exit_reason = exit_reason.clone();
        self.run.failure = detail.clone();
        let mut saved = false;
        for attempt in 0..20u32 {
            // Everything still queued lands with the final state (a failed flush drops only
            // its own batch, so a retry carries the run row alone).
            let saved_now = match self.save_run().await {
                Ok(()) => self.flush().await,
                Err(e) => Err(e),
            };
            match saved_now {
                Ok(()) => {
                    saved = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(%run_id, error = ?e, attempt, "cannot record the end of the run; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
                }
            }
        }
        if !saved {
            tracing::error!(%run_id, "giving up recording the end of the run; it will be recovered at the next start");
        }
        let _ = self
            .inner
            .store
            .release_run(run_id, &self.inner.settings.worker_id)
            .await;
        match status {
            RunStatus::Paused => {
                let _ = self
                    .event(
                        None,
                        EventPayload::RunPaused(payloads::RunPaused {
                            run_id,
                            at: "step_boundary".into(),
                        }),
                    )
                    .await;
                self.rec.log("RUN_PAUSED".into());
                let _ = self.flush().await;
                return;
            }
            RunStatus::Pending => {
                self.rec
                    .log("engine shutting down; run returns to the queue".into());
                let _ = self.flush().await;
                return;
            }
            _ => {}
        }
        let reason_text = exit_reason
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        // RUN_END keeps the seed's whole message (scripts match it); why the run failed, in
        // words, is the RUN_FAILURE row before it (and the RUN_FAILED line of run.log).
        if let Some(why) = &detail {
            self.rec
                .log(format!("RUN_FAILED reason={reason_text} failure={why}"));
            let _ = self
                .report(
                    None,
                    ReportKind::RunFailure,
                    Row::msg(
                        self.run.iterations_run.to_string(),
                        format!("reason={reason_text} failure={why}"),
                    ),
                )
                .await;
        }
        let _ = self
            .report(
                None,
                ReportKind::RunEnd,
                Row {
                    duration_ms: Some(u64::try_from(now_ms() - self.start_ms).unwrap_or(0)),
                    exit_code: Some(self.end_exit_code()),
                    ..Row::msg(
                        self.run.iterations_run.to_string(),
                        format!("reason={reason_text}"),
                    )
                },
            )
            .await;
        let (payload, note) = match status {
            RunStatus::Completed => (
                EventPayload::RunCompleted(payloads::RunCompleted {
                    run_id,
                    mode: reason_text.clone(),
                    merge_pending: merge_pending.clone(),
                }),
                NotificationKind::RunCompleted,
            ),
            RunStatus::Canceled => (
                EventPayload::RunCanceled(payloads::RunCanceled {
                    run_id,
                    reason: Some("canceled".into()),
                }),
                NotificationKind::RunCanceled,
            ),
            _ => (
                EventPayload::RunFailed(payloads::RunFailed {
                    run_id,
                    reason: detail.clone().unwrap_or_else(|| reason_text.clone()),
                    exit_reason: reason_text.clone(),
                }),
                NotificationKind::RunFailed,
            ),
        };
        self.write_summary(
            exit_reason.as_ref().unwrap_or(&ExitReason::Failed),
            merge_pending.as_deref(),
        )
        .await;
        let _ = self.event(None, payload).await;
        if let Err(e) = self.flush().await {
            tracing::error!(%run_id, error = ?e, "cannot record the last events of the run");
        }
        let total = u64::try_from(now_ms() - self.start_ms).unwrap_or(0);
        self.inner.metrics.run_duration.record(total);
        let notification = Notification {
            kind: note,
            run: self.run.clone(),
            reason: detail.or(Some(reason_text)),
            event: None,
        };
        if let Err(e) = self.inner.notifier.notify(&notification).await {
            tracing::warn!(%run_id, error = %chain(&e), "notifier failed");
        }
        // Last, once nothing of the run needs its worktree any more.
        if status == RunStatus::Completed
            && self.run.review_status == ReviewStatus::Merged
            && self.cfg.worktree_cleanup == WorktreeCleanup::OnMerge
        {
            let what = remove_run_worktree(&self.inner, &self.run).await;
            self.rec.log(format!("WORKTREE_CLEANUP {what}"));
            let _ = self.flush().await;
        }
        self.inner.hub.close(run_id);
        if postmortem::applies_after(status, &self.cfg) {
            // The run has ended for everyone (status, merge, events, notification): its
            // slot goes to the next run while the postmortem, which changes none of that,
            // analyses it.
            self.inner.sched().running.remove(&run_id);
            self.inner.wake.notify_one();
            postmortem::after_run(&self.inner, &self.rec, &self.run, &self.cfg).await;
        }
    }

    /// The run's last exit code (RUN_END's `exit_code`, summary.json's `last_exit_code`): the
    /// last agent process's, or, when no agent process ran (a failure while preparing, an
    /// agent that could not be started), the run's own as `loopctl wait` gives it: 0
    /// completed, 1 failed, 2 canceled.
    pub(super) fn end_exit_code(&self) -> i32 {
        self.last_exit_code.unwrap_or(match self.run.status {
            RunStatus::Completed => 0,
            RunStatus::Canceled => 2,
            _ => 1,
        })
    }

    /// Writes summary.json (the seed's keys, then status, name, failure, tasks, branches and
    /// the agent steps' summed cost and tokens) and records the run's text artifacts.
    pub(super) async fn write_summary(&self, reason: &ExitReason, merge_pending: Option<&str>) {
        let end = now_ms();
        // Every agent step of the run, those of earlier workers included (the store has them
        // all; the end of the run was flushed before this).
        let steps = match self.inner.store.list_steps(self.run.id).await {
            Ok(steps) => steps,
            Err(e) => {
                tracing::warn!(run_id = %self.run.id, error = %chain(&e), "summary.json: cannot list the steps; cost and tokens count none");
                Vec::new()
            }
        };
        let usages: Vec<&crate::domain::AgentUsage> =
            steps.iter().filter_map(|s| s.usage.as_ref()).collect();
        let sum = |f: fn(&crate::domain::AgentUsage) -> Option<u64>| -> u64 {
            usages.iter().filter_map(|u| f(u)).sum()
        };
        let costs: Vec<f64> = usages.iter().filter_map(|u| u.cost_usd).collect();
        // The model the agent said it ran (the last step that said one), else the configured.
        let model = steps
            .iter()
            .rev()
            .filter_map(|s| s.usage.as_ref()?.model.clone())
            .next()
            .unwrap_or_else(|| self.cfg.model.clone());
        let summary = Summary {
            run_id: self.run.id,
            start_ms: self.start_ms,
            end_ms: end,
            total_duration_ms: u64::try_from(end - self.start_ms).unwrap_or(0),
            iterations_run: self.run.iterations_run,
            completed_iteration: self.completed_iteration,
            avg_duration_ms: self
                .iter_duration_sum
                .checked_div(self.iter_count)
                .unwrap_or(0),
            last_exit_code: Some(self.end_exit_code()),
            completion_mode: self.completion_seen.then_some(self.cfg.completion_mode),
            model,
            exit_reason: reason.clone(),
            run_log: self.rec.folder.run_log().display().to_string(),
            run_report: self.rec.folder.report().display().to_string(),
            prompt_snapshot: self.rec.folder.prompt().display().to_string(),
            last_iteration_tail: self
                .last_iter_tail
                .as_ref()
                .map(|p| p.display().to_string()),
            last_iteration_log: self.last_iter_log.as_ref().map(|p| p.display().to_string()),
            status: self.run.status,
            name: self.run.name.clone(),
            failure: self.run.failure.clone(),
            merge_pending: merge_pending.map(str::to_owned),
            tasks_done: self.run.tasks_done,
            tasks_total: self.run.tasks_total,
            run_branch: self.run.run_branch.clone(),
            base_branch: self.run.base_branch.clone(),
            target_branch: self.run.merge_target_branch.clone(),
            cost_usd: (!costs.is_empty()).then(|| costs.iter().sum()),
            input_tokens: sum(|u| u.input_tokens),
            output_tokens: sum(|u| u.output_tokens),
            cache_read_input_tokens: sum(|u| u.cache_read_input_tokens),
            cache_creation_input_tokens: sum(|u| u.cache_creation_input_tokens),
        };
        let path = self.rec.folder.summary();
        if let Err(e) = self
            .rec
            .create_dirs()
            .and_then(|()| artifacts::write_summary(&path, &summary))
        {
            tracing::warn!(run_id = %self.run.id, error = %e, "cannot write summary.json");
            return;
        }
        for (kind, p) in [
            (ArtifactKind::Summary, path),
            (ArtifactKind::Report, self.rec.folder.report()),
            (ArtifactKind::RunLog, self.rec.folder.run_log()),
        ] {
            if p.exists() {
                self.rec.record(kind, &p).await;
            }
        }
    }
}
