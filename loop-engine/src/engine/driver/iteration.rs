//! The loop of SPEC §6: iterations, review passes, implementation steps watched by the
//! watchdog, completion detection, and when verification runs.

use crate::artifacts;
use crate::backend::ExecPurpose;
use crate::completion::{self, Completion};
use crate::domain::{ArtifactKind, EventKind, ExitReason, StepId, StepPhase, StepStatus};
use crate::engine::driver::state::RunDriver;
use crate::engine::driver::stop::Stop;
use crate::engine::driver::verify::VerifyKind;
use crate::engine::metrics::Metrics;
use crate::engine::report::Row;
use crate::machine::{StepObservation, WatchdogConfig};
use crate::plan;
use crate::{naming, prompt};

/// A snapshot for the watchdog.
struct Before {
    head: Option<String>,
    plan_text: String,
    open_task: Option<String>,
}

impl RunDriver {
    pub(super) async fn execute(&mut self) -> Result<ExitReason, Stop> {
        self.checkpoint()?;
        self.load_history().await?;
        self.prepare().await?;
        if self.run.iterations_run == 0 {
            self.refuse_done_plan()?;
        }
        let first = self.run.iterations_run.max(1);
        for iteration in first..=self.cfg.iterations {
            self.checkpoint()?;
            self.run.iterations_run = iteration;
            self.save_run().await?;
            if let Some(reason) = self.iteration(iteration).await? {
                self.completed_iteration = Some(iteration);
                return Ok(reason);
            }
        }
        Err(Stop::Fail {
            reason: ExitReason::IterationsExhausted,
            detail: format!(
                "run {}: all {} iterations used and the plan is not done ({} of {} tasks done)",
                self.run.id, self.cfg.iterations, self.run.tasks_done, self.run.tasks_total
            ),
        })
    }

    /// Ends a run that would start with nothing to do: its plan (seeded from the snapshot
    /// taken at creation) has no open task and nothing for the reviewer. Such a run would
    /// otherwise complete without one agent step; it fails `plan_already_done` instead.
    fn refuse_done_plan(&mut self) -> Result<(), Stop> {
        let (_, counts) = self.read_plan()?;
        let review_left = self.cfg.reviewer && counts.to_review > 0;
        if counts.pending > 0 || review_left {
            return Ok(());
        }
        Err(Stop::Fail {
            reason: ExitReason::PlanAlreadyDone,
            detail: format!(
                "the plan {} had no open task when the run was created ({} of {} tasks done{}): nothing to do, no agent step ran; add or reopen tasks and start a new run",
                self.run.plan_path.display(),
                counts.done,
                counts.total,
                if self.cfg.reviewer {
                    ", none left to review"
                } else {
                    ""
                },
            ),
        })
    }

    pub(super) async fn iteration(&mut self, i: u32) -> Result<Option<ExitReason>, Stop> {
        let reviewer = self.cfg.reviewer;
        if reviewer && let Some(done) = self.review_pass(i).await? {
            return Ok(Some(done));
        }
        let (_, counts) = self.read_plan()?;
        if counts.pending == 0 {
            if reviewer && counts.to_review > 0 {
                // The review backlog is worked in the next iteration; nothing to implement.
                return Ok(None);
            }
            if self.verify(i, VerifyKind::Final).await? {
                return Ok(Some(ExitReason::CompletePlan));
            }
        }
        let accepted = self.implementation(i).await?;
        if !self.cfg.verify_cmds.is_empty() {
            let passed = self.verify(i, VerifyKind::Gate).await?;
            self.watchdog.observe_verification(passed);
            if !passed {
                self.maybe_rewrite(None).await?;
                return Ok(None);
            }
        }
        if reviewer && let Some(done) = self.review_pass(i).await? {
            return Ok(Some(done));
        }
        let (_, counts) = self.read_plan()?;
        self.save_run().await?;
        if counts.pending == 0 && !(reviewer && counts.to_review > 0) {
            if self.verify(i, VerifyKind::Final).await? {
                return Ok(Some(ExitReason::CompletePlan));
            }
        } else if !reviewer && accepted && counts.pending > 0 {
            self.report(
                None,
                EventKind::WarnCompleteWithPending,
                Row::msg(
                    i.to_string(),
                    format!("{} tasks still pending", counts.pending),
                ),
            )
            .await?;
        }
        Ok(None)
    }

    fn before(&mut self, head: Option<String>) -> Result<Before, Stop> {
        let (text, _) = self.read_plan()?;
        let open_task = plan::first_open_task(&text).map(|t| plan::task_key(&t));
        Ok(Before {
            head,
            plan_text: text,
            open_task,
        })
    }

    /// One implementation step (with retries), watched by the watchdog. Returns whether the
    /// agent's completion token was accepted.
    pub(super) async fn implementation(&mut self, i: u32) -> Result<bool, Stop> {
        let mut attempt = 0;
        loop {
            let head = self.head().await?;
            let before = self.before(head)?;
            let (prompt_text, prompt_path) = match &self.prompt_override {
                Some((t, p)) => (t.clone(), p.clone()),
                None => (self.implementation_prompt()?, self.rec.folder.prompt()),
            };
            let done = self
                .agent_step(
                    i,
                    None,
                    ExecPurpose::Implementation,
                    &prompt_text,
                    &prompt_path,
                    &mut attempt,
                )
                .await?;
            let completion = self
                .completion(i.to_string(), done.step_id, &done.text)
                .await?;
            let head_after = self.head().await?;
            let (text_after, _) = self.read_plan()?;
            self.save_run().await?;
            self.watchdog.observe(StepObservation {
                head_changed: head_after != before.head,
                plan_changed: text_after != before.plan_text,
                open_task_before: before.open_task.clone(),
                open_task_after: plan::first_open_task(&text_after).map(|t| plan::task_key(&t)),
                malformed_complete: matches!(completion, Completion::Malformed { .. }),
                verification_passed: None,
            });
            if self.maybe_rewrite(Some(done.step_id)).await? {
                continue;
            }
            return Ok(matches!(completion, Completion::Accepted));
        }
    }

    /// Rewrites the prompt when the watchdog raises a signal and rewrites are left. Returns
    /// true when a rewrite happened (the caller re-runs the phase).
    pub(super) async fn maybe_rewrite(&mut self, step_id: Option<StepId>) -> Result<bool, Stop> {
        let wcfg = WatchdogConfig {
            no_progress_steps: self.cfg.watchdog_no_progress_steps,
            repeat_task_steps: self.cfg.watchdog_repeat_task_steps,
            verification_failures: 2,
        };
        let Some(signal) = self.watchdog.signal(&wcfg) else {
            return Ok(false);
        };
        if self.rewrites_used >= self.cfg.watchdog_max_rewrites {
            return Ok(false);
        }
        let before_path = match &self.prompt_override {
            Some((_, p)) => p.clone(),
            None => self.rec.folder.prompt(),
        };
        let base = match self.implementation_prompt() {
            Ok(t) => t,
            Err(e) => {
                // A watchdog error is logged and the loop goes on unchanged.
                tracing::warn!(run_id = %self.run.id, error = ?e, "watchdog cannot build the prompt");
                return Ok(false);
            }
        };
        self.rewrites_used += 1;
        let n = self.rewrites_used;
        let detail = match signal {
            crate::machine::WatchdogSignal::NoProgress => format!(
                "no new commit and no plan change for {} steps",
                self.cfg.watchdog_no_progress_steps
            ),
            crate::machine::WatchdogSignal::RepeatedTask => format!(
                "the same task was worked {} times without being ticked",
                self.cfg.watchdog_repeat_task_steps
            ),
            crate::machine::WatchdogSignal::VerificationFailed => {
                "verification failed repeatedly".to_owned()
            }
            crate::machine::WatchdogSignal::MalformedComplete => format!(
                "the completion token must be sent exactly as {}",
                completion::COMPLETION_TOKEN
            ),
        };
        let rewritten = prompt::watchdog_rewrite(&base, signal.as_str(), &detail, n);
        let path = self.rec.folder.prompt_rewrite(n);
        if let Err(e) = artifacts::write_atomic(&path, rewritten.as_bytes()) {
            tracing::warn!(run_id = %self.run.id, error = %e, "watchdog cannot write the rewritten prompt");
            self.rewrites_used -= 1;
            return Ok(false);
        }
        let iteration = self.run.iterations_run;
        let mut step = self.new_step(
            iteration,
            &format!("{iteration}W{n}"),
            StepPhase::Watchdog,
            n,
        );
        step.prompt_path = Some(path.clone());
        step.reason = Some(signal.as_str().to_owned());
        self.start_step(&step).await?;
        self.end_step(&mut step, StepStatus::Succeeded, 0).await?;
        self.rec.record(ArtifactKind::PromptRewrite, &path).await;
        self.event(
            step_id.or(Some(step.id)),
            EventKind::WatchdogRewrite,
            serde_json::json!({
                "step_id": step_id.unwrap_or(step.id),
                "signal": signal.as_str(),
                "detail": detail,
                "prompt_before": before_path,
                "prompt_after": path,
                "rewrite": n,
            }),
        )
        .await?;
        Metrics::inc(&self.inner.metrics.watchdog_rewrites);
        self.rec.log(format!(
            "WATCHDOG_REWRITE signal={} rewrite={n}",
            signal.as_str()
        ));
        self.prompt_override = Some((rewritten, path));
        self.watchdog.reset();
        Ok(true)
    }

    /// Detects the completion token in an agent's answer and records what was seen.
    pub(super) async fn completion(
        &mut self,
        label: String,
        step: StepId,
        text: &str,
    ) -> Result<Completion, Stop> {
        let c = completion::detect(text, self.cfg.completion_mode);
        match &c {
            Completion::Accepted => {
                self.completion_seen = true;
                self.report(
                    Some(step),
                    EventKind::CompleteDetected,
                    Row::msg(label, "completion token accepted"),
                )
                .await?;
            }
            Completion::Malformed { snippet } => {
                self.report(
                    Some(step),
                    EventKind::WarnMalformedComplete,
                    Row::msg(label, snippet.clone()),
                )
                .await?;
            }
            Completion::Absent => {}
        }
        Ok(c)
    }

    /// Review steps while `[x]` tasks exist (at most `max_review_passes`). Returns
    /// `complete_reviewer` when the reviewer finished the plan and final verification passed.
    pub(super) async fn review_pass(&mut self, i: u32) -> Result<Option<ExitReason>, Stop> {
        let head_start = self.head().await?;
        let mut result = None;
        for r in 1..=self.cfg.max_review_passes.max(1) {
            self.checkpoint()?;
            let (_, counts) = self.read_plan()?;
            if counts.to_review == 0 {
                break;
            }
            let text = prompt::reviewer_prompt(
                &self.prompt_paths(),
                self.worktree.path(),
                self.cfg.completion_mode,
            );
            let path = self.rec.folder.root().join("prompt.review.txt");
            // Rebuilt before every review step: atomic, not synced.
            if let Err(e) = artifacts::write_derived(&path, text.as_bytes()) {
                tracing::warn!(run_id = %self.run.id, error = %e, "cannot write the reviewer prompt file");
            }
            let mut attempt = 0;
            let done = self
                .agent_step(i, Some(r), ExecPurpose::Review, &text, &path, &mut attempt)
                .await?;
            let label = naming::iteration_label(i, Some(r), None);
            let completion = self
                .completion(label.clone(), done.step_id, &done.text)
                .await?;
            let (_, counts) = self.read_plan()?;
            self.save_run().await?;
            if matches!(completion, Completion::Accepted) {
                if counts.pending == 0 && counts.to_review == 0 {
                    if self.verify(i, VerifyKind::Final).await? {
                        result = Some(ExitReason::CompleteReviewer);
                    }
                    break;
                }
                self.report(
                    Some(done.step_id),
                    EventKind::WarnReviewerCompleteWithPending,
                    Row::msg(
                        label,
                        format!(
                            "{} pending, {} awaiting review",
                            counts.pending, counts.to_review
                        ),
                    ),
                )
                .await?;
                break;
            }
            if done.text.contains("Returning to implementation") || counts.to_review == 0 {
                break;
            }
        }
        if result.is_none() && self.head().await? != head_start && !self.cfg.verify_cmds.is_empty()
        {
            // The reviewer fixed something: check it before implementation goes on.
            self.verify(i, VerifyKind::Review).await?;
        }
        Ok(result)
    }

    // ----- agent steps ---------------------------------------------------------------------
}
