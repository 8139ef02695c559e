//! The interpreter of the run loop: performs each [`Decision`] of [`RunLoop`] (SPEC §6) and
//! feeds back what it observed. The rules live in `machine/run.rs`; here is only how a
//! decision is carried out (agent steps, verification, rewrites, warnings).

use crate::artifacts;
use crate::backend::ExecPurpose;
use crate::completion::{self, Completion};
use crate::domain::{
    ArtifactKind, EventPayload, ExitReason, ReportKind, StepId, StepPhase, StepStatus, payloads,
};
use crate::engine::driver::agent::Attempt;
use crate::engine::driver::state::{Before, RunDriver};
use crate::engine::driver::stop::Stop;
use crate::engine::metrics::Metrics;
use crate::engine::report::Row;
use crate::machine::{
    Budget, BudgetKind, Decision, Failure, LoopConfig, Observation, RetryPolicy, RunLoop,
    StepObservation, Token, Warning, WatchdogConfig, WatchdogSignal,
};
use crate::outcome::FailureKind;
use crate::plan;
use crate::{naming, prompt};

impl RunDriver {
    /// The loop settings of the run's config.
    fn loop_config(&self) -> LoopConfig {
        let cfg = &self.cfg;
        LoopConfig {
            iterations: cfg.iterations,
            reviewer: cfg.reviewer,
            max_review_passes: cfg.max_review_passes,
            verify: !cfg.verify_cmds.is_empty(),
            max_consecutive_verification_failures: cfg.max_consecutive_verification_failures,
            watchdog: WatchdogConfig {
                no_progress_steps: cfg.watchdog_no_progress_steps,
                repeat_task_steps: cfg.watchdog_repeat_task_steps,
                verification_failures: 2,
            },
            max_rewrites: cfg.watchdog_max_rewrites,
            max_no_progress_steps: cfg.max_no_progress_steps,
            budget: Budget {
                cost_usd: cfg.max_cost_usd,
                tokens: cfg.max_tokens,
                wall: (cfg.max_wall_sec > 0)
                    .then(|| std::time::Duration::from_secs(cfg.max_wall_sec)),
            },
            usage_limit_wait_max: std::time::Duration::from_secs(cfg.usage_limit_wait_max_sec),
            retry: RetryPolicy {
                retries: cfg.claude_retries,
                backoff: std::time::Duration::from_secs(cfg.claude_retry_backoff_sec),
                transient_retries: cfg.claude_transient_retries,
                transient_backoff_max: std::time::Duration::from_secs(
                    cfg.claude_transient_backoff_max_sec,
                ),
            },
        }
    }

    /// Prepares the run, then performs the loop's decisions until one ends the run.
    pub(super) async fn execute(&mut self) -> Result<ExitReason, Stop> {
        self.checkpoint()?;
        let history = self.load_history().await?;
        self.prepare().await?;
        if let Some(until) = self.resume_wait_until.take() {
            // A restart cut a usage-limit wait short: the rest of it comes first.
            self.resume_usage_wait(until).await?;
        }
        let mut run_loop = RunLoop::new(self.loop_config(), history);
        let mut decision = run_loop.start();
        loop {
            let observation = match decision {
                Decision::StartIteration { iteration } => {
                    self.checkpoint()?;
                    self.run.iterations_run = iteration;
                    self.save_run().await?;
                    Observation::Done
                }
                Decision::ReadPlan => {
                    let (_, counts) = self.read_plan()?;
                    self.save_run().await?;
                    Observation::Plan(counts)
                }
                Decision::ReadHead => Observation::Head(self.head().await?),
                Decision::Review {
                    iteration,
                    pass,
                    attempt,
                    retry,
                } => self.review_step(iteration, pass, attempt, retry).await?,
                Decision::Implement {
                    iteration,
                    attempt,
                    retry,
                } => self.implementation_step(iteration, attempt, retry).await?,
                Decision::RetryAgent { delay, transient } => {
                    self.retry_agent(delay, transient).await?;
                    Observation::Done
                }
                Decision::CheckBudget => Observation::Spent(self.spent()),
                Decision::WaitUsageLimit { wait } => {
                    self.wait_usage_limit(wait).await?;
                    Observation::Done
                }
                Decision::Verify { iteration, kind } => {
                    let (passed, skipped) = self.verify(iteration, kind).await?;
                    Observation::Verified { passed, skipped }
                }
                Decision::Rewrite {
                    signal,
                    rewrite,
                    after_agent,
                } => {
                    let step = if after_agent {
                        self.last_agent_step
                    } else {
                        None
                    };
                    Observation::Rewritten {
                        ok: self.rewrite(signal, rewrite, step).await?,
                    }
                }
                Decision::Warn { iteration, warning } => {
                    self.warn(iteration, warning).await?;
                    Observation::Done
                }
                Decision::Complete { iteration, reason } => {
                    self.completed_iteration = Some(iteration);
                    return Ok(reason);
                }
                Decision::Fail(failure) => return Err(self.failure(failure).await),
            };
            decision = run_loop.next(observation);
        }
    }

    /// The stop for a failure the loop decided.
    async fn failure(&mut self, failure: Failure) -> Stop {
        match failure {
            Failure::Agent => self.agent_failure().await,
            Failure::IterationsExhausted => Stop::Fail {
                reason: ExitReason::IterationsExhausted,
                detail: format!(
                    "run {}: all {} iterations used and the plan is not done ({} of {} tasks done)",
                    self.run.id, self.cfg.iterations, self.run.tasks_done, self.run.tasks_total
                ),
            },
            Failure::Verification { limit } => Stop::Fail {
                reason: ExitReason::MaxConsecutiveFailures {
                    kind: "verification".into(),
                    limit,
                },
                detail: format!(
                    "run {}: verification failed {limit} times in a row (last: {})",
                    self.run.id,
                    self.last_verify_failure.as_deref().unwrap_or("unknown")
                ),
            },
            Failure::PlanAlreadyDone { done, total } => Stop::Fail {
                reason: ExitReason::PlanAlreadyDone,
                detail: format!(
                    "the plan {} had no open task when the run was created ({done} of {total} tasks done{}): nothing to do, no agent step ran; add or reopen tasks and start a new run",
                    self.run.plan_path.display(),
                    if self.cfg.reviewer {
                        ", none left to review"
                    } else {
                        ""
                    },
                ),
            },
            Failure::NoProgress { steps } => {
                // The last step's failure-free end stays as it is; the run says why it stops.
                Stop::Fail {
                    reason: ExitReason::NoProgress,
                    detail: format!(
                        "run {}: {steps} implementation steps in a row changed neither the plan nor HEAD (empty or ineffective answers) and the watchdog's {} rewrites are used up ({} of {} tasks done); max_no_progress_steps={}",
                        self.run.id,
                        self.cfg.watchdog_max_rewrites,
                        self.run.tasks_done,
                        self.run.tasks_total,
                        self.cfg.max_no_progress_steps
                    ),
                }
            }
            Failure::Budget { kind, spent } => {
                let (name, detail) = match kind {
                    BudgetKind::Cost => (
                        "cost",
                        format!(
                            "spent ${:.4} of max_cost_usd=${:.4}",
                            spent.cost_usd,
                            self.cfg.max_cost_usd.unwrap_or_default()
                        ),
                    ),
                    BudgetKind::Tokens => (
                        "tokens",
                        format!(
                            "used {} tokens of max_tokens={}",
                            spent.tokens,
                            self.cfg.max_tokens.unwrap_or_default()
                        ),
                    ),
                    BudgetKind::Wall => (
                        "wall",
                        format!(
                            "ran {} s of max_wall_sec={}",
                            spent.wall.as_secs(),
                            self.cfg.max_wall_sec
                        ),
                    ),
                };
                // A failed attempt waiting for the loop's decision ends with the run.
                if let Some(stop) = self.close_open_attempt().await {
                    return stop;
                }
                Stop::Fail {
                    reason: ExitReason::BudgetExhausted {
                        kind: name.to_owned(),
                    },
                    detail: format!(
                        "run {}: budget exhausted: {detail} ({} of {} tasks done)",
                        self.run.id, self.run.tasks_done, self.run.tasks_total
                    ),
                }
            }
            Failure::UsageLimit { wait } => self.usage_limit_failure(wait).await,
            Failure::Protocol { detail } => {
                Stop::failed(format!("run {}: internal error: {detail}", self.run.id))
            }
        }
    }

    /// Records a warning of the loop.
    async fn warn(&mut self, iteration: u32, warning: Warning) -> Result<(), Stop> {
        match warning {
            Warning::CompleteWithPending { pending } => {
                self.report(
                    self.last_agent_step,
                    ReportKind::WarnCompleteWithPending,
                    Row {
                        output_path: self.last_iter_log.clone(),
                        ..Row::msg(iteration.to_string(), format!("pending={pending}"))
                    },
                )
                .await
            }
            Warning::ReviewerCompleteWithPending {
                pass,
                pending,
                to_review,
            } => {
                let label = naming::iteration_label(iteration, Some(pass), None);
                self.rec.log(format!(
                    "step {label}: the reviewer sent the completion token with {pending} tasks pending and {to_review} awaiting review"
                ));
                // For the reviewer, every task not through review is still pending.
                self.report(
                    self.last_agent_step,
                    ReportKind::WarnReviewerCompleteWithPending,
                    Row {
                        output_path: self.last_iter_log.clone(),
                        ..Row::msg(label, format!("pending={}", pending + to_review))
                    },
                )
                .await
            }
        }
    }

    /// The observation of an agent attempt that did not succeed.
    fn attempt_failed(attempt: Attempt) -> Observation {
        match attempt {
            Attempt::Failed {
                kind: FailureKind::UsageLimit { resets_at },
                ..
            } => Observation::UsageLimited {
                // The time left until the reset (a reset in the past: none).
                wait: resets_at.map(|at| {
                    let ms = at
                        .saturating_mul(1000)
                        .saturating_sub(crate::domain::now_ms());
                    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                }),
            },
            Attempt::Failed { kind, jitter } => Observation::AgentFailed { kind, jitter },
            Attempt::Broken | Attempt::Done(_) => Observation::AgentBroken,
        }
    }

    /// One review step (attempt `attempt` of review step `pass`).
    async fn review_step(
        &mut self,
        i: u32,
        pass: u32,
        attempt: u32,
        retry: bool,
    ) -> Result<Observation, Stop> {
        let text = prompt::reviewer_prompt(
            &self.prompt_paths(),
            self.worktree.path(),
            self.cfg.completion_mode,
        );
        let path = self.rec.folder.root().join("prompt.review.txt");
        if !retry {
            // Rebuilt before every review step: atomic, not synced.
            if let Err(e) = artifacts::write_derived(&path, text.as_bytes()) {
                tracing::warn!(run_id = %self.run.id, error = %e, "cannot write the reviewer prompt file");
            }
        }
        let done = match self
            .agent_attempt(i, Some(pass), ExecPurpose::Review, &text, &path, attempt)
            .await?
        {
            Attempt::Done(done) => done,
            failed => return Ok(Self::attempt_failed(failed)),
        };
        self.last_agent_step = Some(done.step_id);
        let label = naming::iteration_label(i, Some(pass), None);
        let token = self.completion(label, done.step_id, &done.text).await?;
        let (_, plan) = self.read_plan()?;
        self.save_run().await?;
        Ok(Observation::Reviewed {
            token,
            returning: done.text.contains("Returning to implementation"),
            plan,
        })
    }

    /// What an implementation call starts from: HEAD, the plan and the prompt.
    async fn before(&mut self) -> Result<Before, Stop> {
        let head = self.head().await?;
        let (text, _) = self.read_plan()?;
        let open_task = plan::first_open_task(&text).map(|t| plan::task_key(&t));
        let (prompt_text, prompt_path) = match &self.prompt_override {
            Some((t, p)) => (t.clone(), p.clone()),
            None => (self.implementation_prompt()?, self.rec.folder.prompt()),
        };
        Ok(Before {
            head,
            plan_text: text,
            open_task,
            prompt_text,
            prompt_path,
        })
    }

    /// One implementation step (attempt `attempt`); a retry starts from the same snapshot.
    async fn implementation_step(
        &mut self,
        i: u32,
        attempt: u32,
        retry: bool,
    ) -> Result<Observation, Stop> {
        let before = match self.before_implementation.take() {
            Some(before) if retry => before,
            _ => self.before().await?,
        };
        let outcome = self
            .agent_attempt(
                i,
                None,
                ExecPurpose::Implementation,
                &before.prompt_text,
                &before.prompt_path,
                attempt,
            )
            .await?;
        let done = match outcome {
            Attempt::Done(done) => done,
            failed => {
                self.before_implementation = Some(before);
                return Ok(Self::attempt_failed(failed));
            }
        };
        self.last_agent_step = Some(done.step_id);
        let token = self
            .completion(i.to_string(), done.step_id, &done.text)
            .await?;
        let head_after = self.head().await?;
        let (text_after, plan_after) = self.read_plan()?;
        // One task, one commit: a tick that no commit carries is flagged at its step.
        let ticked = ticked_tasks(&before.plan_text, &text_after);
        if ticked > 0 && head_after == before.head {
            self.report(
                Some(done.step_id),
                ReportKind::WarnTickWithoutCommit,
                Row::msg(i.to_string(), format!("tasks={ticked}")),
            )
            .await?;
        }
        self.save_run().await?;
        Ok(Observation::Implemented {
            token,
            plan: plan_after,
            progress: StepObservation {
                head_changed: head_after != before.head,
                plan_changed: text_after != before.plan_text,
                open_task_before: before.open_task,
                open_task_after: plan::first_open_task(&text_after).map(|t| plan::task_key(&t)),
                malformed_complete: token == Token::Malformed,
                verification_passed: None,
            },
        })
    }

    /// Rewrites the prompt for the watchdog's `signal` (rewrite number `n`), after the agent
    /// step `step_id` or a failed gate. Returns whether the rewritten prompt is in force: a
    /// watchdog error is logged and the loop goes on unchanged.
    async fn rewrite(
        &mut self,
        signal: WatchdogSignal,
        n: u32,
        step_id: Option<StepId>,
    ) -> Result<bool, Stop> {
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
        let detail = match signal {
            WatchdogSignal::NoProgress => format!(
                "no new commit and no plan change for {} steps",
                self.cfg.watchdog_no_progress_steps
            ),
            WatchdogSignal::RepeatedTask => format!(
                "the same task was worked {} times without being ticked",
                self.cfg.watchdog_repeat_task_steps
            ),
            WatchdogSignal::VerificationFailed => "verification failed repeatedly".to_owned(),
            WatchdogSignal::MalformedComplete => format!(
                "the completion token must be sent exactly as {}",
                completion::COMPLETION_TOKEN
            ),
        };
        let rewritten = prompt::watchdog_rewrite(&base, signal.as_str(), &detail, n);
        let path = self.rec.folder.prompt_rewrite(n);
        if let Err(e) = artifacts::write_atomic(&path, rewritten.as_bytes()) {
            tracing::warn!(run_id = %self.run.id, error = %e, "watchdog cannot write the rewritten prompt");
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
            EventPayload::WatchdogRewrite(payloads::WatchdogRewrite {
                step_id: step_id.unwrap_or(step.id),
                signal: signal.as_str().to_owned(),
                detail,
                prompt_before: before_path,
                prompt_after: path.clone(),
                rewrite: n,
            }),
        )
        .await?;
        Metrics::inc(&self.inner.metrics.watchdog_rewrites);
        self.rec.log(format!(
            "WATCHDOG_REWRITE signal={} rewrite={n}",
            signal.as_str()
        ));
        self.prompt_override = Some((rewritten, path));
        Ok(true)
    }

    /// Detects the completion token in an agent's answer and records what was seen.
    async fn completion(&mut self, label: String, step: StepId, text: &str) -> Result<Token, Stop> {
        let c = completion::detect(text, self.cfg.completion_mode);
        let log = self.last_iter_log.clone();
        match &c {
            Completion::Accepted => {
                self.completion_seen = true;
                // The token in the accepted form, whatever the plan says: whether the run is
                // done is decided by the plan (a WARN_*_PENDING row says when it is not).
                self.report(
                    Some(step),
                    ReportKind::CompleteDetected,
                    Row {
                        output_path: log,
                        ..Row::msg(label, format!("mode={}", self.cfg.completion_mode))
                    },
                )
                .await?;
            }
            Completion::Malformed { .. } => {
                self.report(
                    Some(step),
                    ReportKind::WarnMalformedComplete,
                    Row {
                        output_path: log,
                        ..Row::msg(
                            label,
                            format!("output_head={}", completion::output_head(text)),
                        )
                    },
                )
                .await?;
            }
            Completion::Absent => {}
        }
        Ok(match c {
            Completion::Accepted => Token::Accepted,
            Completion::Malformed { .. } => Token::Malformed,
            Completion::Absent => Token::Absent,
        })
    }
}

/// How many tasks open (`[ ]` or `[~]`) in `before` are implemented (`[x]`, `[r]`) in
/// `after`, matched by their text.
fn ticked_tasks(before: &str, after: &str) -> usize {
    let open: std::collections::HashSet<String> = plan::tasks(before)
        .iter()
        .filter(|t| t.marker.is_pending())
        .map(plan::task_key)
        .collect();
    plan::tasks(after)
        .iter()
        .filter(|t| !t.marker.is_pending() && open.contains(&plan::task_key(t)))
        .count()
}
