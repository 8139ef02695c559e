//! One agent step: the executor run with live output, heartbeats, the step's records, the
//! verdict and the retries of SPEC §6.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use crate::artifacts;
use crate::backend::{
    ExecContext, ExecOutcome, ExecPurpose, ExecRequest, ExecSignal, Executor, ExecutorError,
    StoreError, StoreWrite, Termination, VcsError,
};
use crate::domain::{
    ArtifactKind, EventPayload, ExitReason, NewEvent, ReportKind, Step, StepId, StepPhase,
    StepStatus, payloads,
};
use crate::engine::driver::state::{OpenAttempt, RunDriver, deadline, ms, secs};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::hub::{CurrentOutput, LiveOutput};
use crate::engine::metrics::Metrics;
use crate::engine::report::Row;
use crate::naming;
use crate::outcome::{FailureKind, Verdict};

/// How long after an agent's start the journal is flushed (see `run_agent`).
const FLUSH_AFTER_SPAWN: Duration = Duration::from_millis(3);

/// How one agent attempt ended, when it did not stop the run.
pub(super) enum Attempt {
    /// The agent succeeded.
    Done(AgentDone),
    /// The verdict is a failure of this kind; the step stays open.
    Failed { kind: FailureKind, jitter: f64 },
    /// The executor could not run the agent; the step stays open.
    Broken,
}

/// What an agent step produced, once accepted.
pub(super) struct AgentDone {
    pub(super) step_id: StepId,
    pub(super) text: String,
}

impl RunDriver {
    /// One attempt of an agent call. A failed attempt leaves its step open for the loop's
    /// decision: [`RunDriver::retry_agent`] or [`RunDriver::agent_failure`].
    #[expect(
        clippy::too_many_lines,
        reason = "one step's life in one place reads best"
    )]
    pub(super) async fn agent_attempt(
        &mut self,
        iteration: u32,
        review: Option<u32>,
        purpose: ExecPurpose,
        prompt_text: &str,
        prompt_path: &Path,
        attempt: u32,
    ) -> Result<Attempt, Stop> {
        let executor = self.executor().map_err(|e| Stop::Fail {
            reason: ExitReason::ClaudeFailed,
            detail: e,
        })?;
        let phase = match purpose {
            ExecPurpose::Review => StepPhase::Review,
            _ => StepPhase::Implementation,
        };
        self.checkpoint()?;
        let show_attempt = self.cfg.claude_retries > 0 || attempt > 1;
        let label = naming::iteration_label(iteration, review, show_attempt.then_some(attempt));
        let slug = naming::iteration_slug(&label);
        let log_path = self.rec.folder.iteration_log(&slug);
        let tail_path = self.rec.folder.iteration_tail(&slug);
        let mut step = self.new_step(iteration, &label, phase, attempt);
        step.prompt_path = Some(prompt_path.to_path_buf());
        step.output_path = Some(log_path.clone());
        step.head_before = self.head().await?;
        self.start_step(&step).await?;
        self.report(
            Some(step.id),
            ReportKind::IterationStart,
            Row::msg(label.clone(), ""),
        )
        .await?;
        self.rec
            .log(format!("step {label}: {phase} attempt {attempt}"));
        // The agent may commit: HEAD is read afresh once it is done.
        let workdir = self.worktree.lend();
        let req = ExecRequest {
            run_id: self.run.id,
            step_id: step.id,
            purpose,
            label: label.clone(),
            prompt: prompt_text.to_owned(),
            model: self.cfg.model.clone(),
            workdir: workdir.path().to_path_buf(),
            log_path: log_path.clone(),
            timeout: secs(self.cfg.claude_timeout_sec),
            idle_timeout: secs(self.cfg.claude_idle_timeout_sec),
            env: self.agent_env(),
            // Checked when the run was created.
            limits: self.cfg.agent_limits().unwrap_or_default(),
        };
        let started = Instant::now();
        self.set_last_api_error(None);
        let (result, store_error) = self.run_agent(&executor, req, &mut step).await;
        drop(workdir);
        if let Some(e) = store_error {
            return Err(e.into());
        }
        let duration = ms(started);
        self.inner.hub.set_current_output(self.run.id, None);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                let transient = matches!(e, ExecutorError::Retryable(_));
                let detail = chain(&e);
                step.reason = Some(detail.clone());
                if transient {
                    ExecOutcome {
                        exit_code: -1,
                        stderr_tail: detail,
                        ..ExecOutcome::default()
                    }
                } else {
                    step.exit_code = None;
                    // No agent process ran: the row says why, with no exit code.
                    self.refresh_tasks();
                    self.report(
                        Some(step.id),
                        ReportKind::IterationEnd,
                        Row {
                            duration_ms: Some(duration),
                            output_path: log_path.exists().then(|| log_path.clone()),
                            ..Row::msg(label.clone(), format!("reason={detail}"))
                        },
                    )
                    .await?;
                    self.open_attempt = Some(OpenAttempt {
                        step,
                        label,
                        duration,
                        exit_code: None,
                        message: detail,
                    });
                    return Ok(Attempt::Broken);
                }
            }
        };
        self.iter_duration_sum += duration;
        self.iter_count += 1;
        self.inner.metrics.iteration_duration.record(duration);
        self.last_exit_code = Some(outcome.exit_code);
        step.exit_code = Some(outcome.exit_code);
        step.head_after = self.head().await?;
        step.usage = outcome.result.as_ref().map(|r| r.usage.clone());
        step.resources.clone_from(&outcome.resources);
        if let Some(u) = &step.usage {
            // Every call counts against the budgets, failed and retried ones included.
            self.add_usage(&u.clone());
        }
        // An agent that left the run branch or rewrote its history would have its work
        // (or earlier steps' work) silently dropped by the merge: stop here instead.
        match self
            .inner
            .vcs
            .check_branch(
                self.worktree.path(),
                &self.run.run_branch,
                step.head_before.clone(),
            )
            .await
        {
            Ok(()) => {}
            Err(VcsError::Conflict { detail }) => {
                step.reason = Some(detail.clone());
                self.end_step(&mut step, StepStatus::Failed, duration)
                    .await?;
                return Err(Stop::failed(format!(
                    "run {} step {} ({label}): {detail}",
                    self.run.id, step.id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        // The rows of this step carry the plan's counts as the step left them.
        self.refresh_tasks();
        // The columns every row about the finished step carries (SPEC §7).
        let finished = Row {
            iteration: label.clone(),
            duration_ms: Some(duration),
            exit_code: Some(outcome.exit_code),
            output_bytes: Some(outcome.output_bytes),
            output_lines: Some(outcome.output_lines),
            output_path: Some(log_path.clone()),
            message: String::new(),
        };
        if outcome.output_bytes > self.cfg.warn_output_bytes {
            self.report(
                Some(step.id),
                ReportKind::WarnOutputLarge,
                Row {
                    message: format!("threshold={}", self.cfg.warn_output_bytes),
                    ..finished.clone()
                },
            )
            .await?;
        }
        if matches!(
            outcome.termination,
            Some(Termination::TimedOut | Termination::IdleTimedOut)
        ) {
            let (limit, what) = if outcome.termination == Some(Termination::IdleTimedOut) {
                (self.cfg.claude_idle_timeout_sec, "no output for")
            } else {
                (self.cfg.claude_timeout_sec, "ran past")
            };
            self.report(
                Some(step.id),
                ReportKind::IterationTimeout,
                Row {
                    exit_code: Some(outcome.exit_code),
                    output_path: Some(log_path.clone()),
                    ..Row::msg(label.clone(), format!("timeout_sec={limit}"))
                },
            )
            .await?;
            self.rec
                .log(format!("step {label}: {what} {limit} s; stopped"));
        }
        let limit_hit = outcome.resources.as_ref().and_then(|r| r.limit_hit.clone());
        let verdict = if step.reason.is_some() {
            Verdict::Failure {
                kind: FailureKind::Transient { status: None },
                message: step.reason.clone().unwrap_or_default(),
            }
        } else if let Some(key) = limit_hit {
            // The agent's cgroup refused it more processes or memory: whatever it printed,
            // the step did not do its work.
            Verdict::Failure {
                kind: if outcome.exit_code == 0 {
                    FailureKind::AgentError
                } else {
                    FailureKind::ExitCode(outcome.exit_code)
                },
                message: format!(
                    "the agent hit its {key} limit ({}) and was stopped by it",
                    match key.as_str() {
                        "agent_pids_max" => self
                            .cfg
                            .agent_pids_max
                            .map(|n| format!("{n} processes"))
                            .unwrap_or_default(),
                        _ => self.cfg.agent_memory_max.clone().unwrap_or_default(),
                    }
                ),
            }
        } else {
            // The executor that ran the step says what its outcome means.
            executor.judge(&outcome)
        };
        // A timeout hides what the agent was waiting for: the API error it kept retrying on
        // says it (issue 13: a bad key looked like a slow model).
        let verdict = match verdict {
            Verdict::Failure {
                kind: FailureKind::Timeout,
                message,
            } => Verdict::Failure {
                kind: FailureKind::Timeout,
                message: match self.take_last_api_error() {
                    Some(api) => format!("{message}; last API error: {api}"),
                    None => message,
                },
            },
            other => other,
        };
        // Empty when the step succeeded; a failure says why (SPEC §7).
        let message = match &verdict {
            Verdict::Success => String::new(),
            Verdict::Failure { message, .. } => format!("reason={message}"),
        };
        self.report(
            Some(step.id),
            ReportKind::IterationEnd,
            Row {
                message,
                ..finished
            },
        )
        .await?;
        // The tail is small and written now (its row gives its size); the log and the tail
        // are checksummed at the next flush, which runs while the next agent starts.
        if log_path.exists() {
            let (tail_bytes, tail_lines) = match write_tail(&log_path, &tail_path).await {
                Ok(size) => (Some(size.bytes), Some(size.lines)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the tail of {}", log_path.display());
                    (None, None)
                }
            };
            self.rec.defer_record(
                vec![
                    (ArtifactKind::IterationTail, tail_path.clone()),
                    (ArtifactKind::IterationLog, log_path.clone()),
                ],
                || {},
            );
            self.report(
                Some(step.id),
                ReportKind::IterationTail,
                Row {
                    output_bytes: tail_bytes,
                    output_lines: tail_lines,
                    output_path: Some(tail_path.clone()),
                    ..Row::msg(label.clone(), "last 200 lines")
                },
            )
            .await?;
            self.last_iter_tail = Some(tail_path.clone());
            self.last_iter_log = Some(log_path.clone());
        }
        match verdict {
            Verdict::Success => {
                self.end_step(&mut step, StepStatus::Succeeded, duration)
                    .await?;
                Ok(Attempt::Done(AgentDone {
                    step_id: step.id,
                    text: outcome.output_text,
                }))
            }
            Verdict::Failure { kind, message } => {
                if kind == FailureKind::Canceled || self.control.cancel.is_cancelled() {
                    step.reason = Some(if self.inner.shutdown.is_cancelled() {
                        "interrupted".to_owned()
                    } else {
                        "canceled".to_owned()
                    });
                    self.end_step(&mut step, StepStatus::Canceled, duration)
                        .await?;
                    return Err(self.interrupted());
                }
                step.reason = Some(message.clone());
                let jitter = f64::from(step.id.0.as_u128() as u16) / 65536.0;
                self.open_attempt = Some(OpenAttempt {
                    step,
                    label,
                    duration,
                    exit_code: Some(outcome.exit_code),
                    message,
                });
                Ok(Attempt::Failed { kind, jitter })
            }
        }
    }

    /// The loop retries the failed attempt: its step ends `retrying`, the retry is reported,
    /// and the driver waits `delay` (a cancel cuts the wait short).
    pub(super) async fn retry_agent(
        &mut self,
        delay: Duration,
        transient: bool,
    ) -> Result<(), Stop> {
        let Some(OpenAttempt {
            mut step,
            label,
            duration,
            exit_code,
            message,
        }) = self.open_attempt.take()
        else {
            return Err(Stop::failed(format!(
                "run {}: no failed agent attempt to retry",
                self.run.id
            )));
        };
        self.end_step(&mut step, StepStatus::Retrying, duration)
            .await?;
        Metrics::inc(&self.inner.metrics.claude_retries);
        self.report(
            Some(step.id),
            ReportKind::ClaudeRetry,
            Row {
                exit_code,
                output_path: step.output_path.clone(),
                ..Row::msg(label.clone(), format!("attempt={}", step.attempt))
            },
        )
        .await?;
        self.rec.log(format!(
            "step {label}: {} retry after {} ms: {message}",
            if transient { "transient" } else { "plain" },
            delay.as_millis()
        ));
        self.flush().await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.control.cancel.cancelled() => Err(self.interrupted()),
        }
    }

    fn set_last_api_error(&self, value: Option<String>) {
        if let Ok(mut last) = self.last_api_error.lock() {
            *last = value;
        }
    }

    fn take_last_api_error(&self) -> Option<String> {
        self.last_api_error.lock().ok().and_then(|mut l| l.take())
    }

    /// Ends the failed attempt that waits for the loop's decision as `failed` (the run ends
    /// for another reason). `Some` when the store failed.
    pub(super) async fn close_open_attempt(&mut self) -> Option<Stop> {
        let OpenAttempt {
            mut step, duration, ..
        } = self.open_attempt.take()?;
        self.end_step(&mut step, StepStatus::Failed, duration)
            .await
            .err()
    }

    /// The loop waits for the account's usage limit to reset (SPEC §15): the failed
    /// attempt's step ends `retrying`, a `usage_wait` step records the wait with its end as
    /// `ended_at` (durable before the wait begins, so a restarted daemon waits for the rest),
    /// `USAGE_LIMIT_WAIT` is reported, and the driver sleeps; a cancel cuts the wait short.
    /// The run stays `RUNNING`.
    pub(super) async fn wait_usage_limit(&mut self, wait: Duration) -> Result<(), Stop> {
        let (label, message) = match self.open_attempt.take() {
            Some(OpenAttempt {
                mut step,
                label,
                duration,
                message,
                ..
            }) => {
                self.end_step(&mut step, StepStatus::Retrying, duration)
                    .await?;
                (label, message)
            }
            None => (self.run.iterations_run.to_string(), String::new()),
        };
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        let until = crate::domain::now_ms().saturating_add(wait_ms);
        let iteration = self.run.iterations_run;
        let mut step = self.new_step(
            iteration,
            &format!("{label}-usage-wait"),
            StepPhase::UsageWait,
            1,
        );
        step.status = StepStatus::Succeeded;
        step.ended_at = Some(until);
        step.reason = Some(message);
        self.rec.write(StoreWrite::InsertStep(step.clone()));
        self.report(
            Some(step.id),
            ReportKind::UsageLimitWait,
            Row {
                duration_ms: Some(u64::try_from(wait_ms).unwrap_or(0)),
                ..Row::msg(
                    label,
                    format!(
                        "until={} wait_sec={}",
                        crate::artifacts::rfc3339(until),
                        wait.as_secs()
                    ),
                )
            },
        )
        .await?;
        self.flush().await?;
        self.sleep_until(until).await
    }

    /// Waits for the rest of a usage-limit wait a restart cut short.
    pub(super) async fn resume_usage_wait(&mut self, until: i64) -> Result<(), Stop> {
        let left = until.saturating_sub(crate::domain::now_ms()).max(0);
        self.report(
            None,
            ReportKind::UsageLimitWait,
            Row {
                duration_ms: Some(u64::try_from(left).unwrap_or(0)),
                ..Row::msg(
                    "",
                    format!(
                        "until={} wait_sec={} resumed=true",
                        crate::artifacts::rfc3339(until),
                        left / 1000
                    ),
                )
            },
        )
        .await?;
        self.flush().await?;
        self.sleep_until(until).await
    }

    async fn sleep_until(&self, until: i64) -> Result<(), Stop> {
        let left = until.saturating_sub(crate::domain::now_ms()).max(0);
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep(left) => Ok(()),
            () = self.control.cancel.cancelled() => Err(self.interrupted()),
        }
    }

    /// The loop gives up on a usage limit it cannot wait for: the attempt's step and the run
    /// fail (`claude_failed`) saying when the limit resets and why the run did not wait.
    pub(super) async fn usage_limit_failure(&mut self, wait: Option<Duration>) -> Stop {
        let why = match wait {
            None => "the agent gave no reset time to wait for".to_owned(),
            Some(w) if w.as_secs() > self.cfg.usage_limit_wait_max_sec => format!(
                "it resets in {} s, past usage_limit_wait_max_sec={}",
                w.as_secs(),
                self.cfg.usage_limit_wait_max_sec
            ),
            Some(_) => format!(
                "it was still reached after {} waits for its reset",
                crate::machine::MAX_USAGE_LIMIT_WAITS
            ),
        };
        match self.agent_failure().await {
            Stop::Fail { reason, detail } => Stop::Fail {
                reason,
                detail: format!("{detail}; the run did not wait: {why}"),
            },
            other => other,
        }
    }

    /// The loop gives up on the failed attempt: its step ends `failed` and so does the run
    /// (`claude_failed`).
    pub(super) async fn agent_failure(&mut self) -> Stop {
        let Some(OpenAttempt {
            mut step,
            label,
            duration,
            message,
            ..
        }) = self.open_attempt.take()
        else {
            return Stop::failed(format!(
                "run {}: no failed agent attempt to end",
                self.run.id
            ));
        };
        if let Err(stop) = self.end_step(&mut step, StepStatus::Failed, duration).await {
            return stop;
        }
        Stop::Fail {
            reason: ExitReason::ClaudeFailed,
            detail: format!("run {} step {} ({label}): {message}", self.run.id, step.id),
        }
    }

    /// Runs the executor while forwarding its live output, persisting its pid, turning its
    /// API retries into events and sending heartbeats.
    ///
    /// The journal (the step's start, the previous step's end, ...) is flushed while the agent
    /// starts rather than before: the two overlap, so the store costs nothing on the path
    /// between two agent calls. Flushes run one at a time in journal order. If the store
    /// fails, the agent is stopped and the store error is returned next to its outcome; a
    /// crash before the flush lands is recovered like a crash during the agent (the step is
    /// not durable yet, so the last durable step is redone and the agent is found by its
    /// `LOOP_RUN_ID`).
    pub(super) async fn run_agent(
        &self,
        executor: &Arc<dyn Executor>,
        req: ExecRequest,
        step: &mut Step,
    ) -> (Result<ExecOutcome, ExecutorError>, Option<StoreError>) {
        let (out_tx, out_rx) = broadcast::channel(256);
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel();
        let cancel = self.control.cancel.child_token();
        self.inner.hub.set_current_output(
            self.run.id,
            Some(CurrentOutput {
                step_id: step.id,
                log_path: req.log_path.clone(),
            }),
        );
        let forward = tokio::spawn(forward_output(
            out_rx,
            self.inner.hub.output_sender(self.run.id),
        ));
        let ctx = ExecContext {
            output: out_tx,
            signals: sig_tx,
            cancel: cancel.clone(),
        };
        let log_path = req.log_path.clone();
        let exec = executor.execute(req, ctx);
        tokio::pin!(exec);
        // The first flush waits a moment: the agent's own start is the latency that counts,
        // and on a small machine the store work would compete with it for a core.
        let mut flushing = Some(Box::pin(async {
            tokio::time::sleep(FLUSH_AFTER_SPAWN).await;
            self.rec.flush(&self.inner).await
        })
            as std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>);
        let mut store_error = None;
        let period = Duration::from_secs(self.cfg.heartbeat_sec.max(1));
        // A period too long for the clock (a huge heartbeat_sec) means no heartbeat at all.
        let mut heartbeat = deadline(tokio::time::Instant::now(), period)
            .map(|first| tokio::time::interval_at(first, period));
        let long = tokio::time::sleep(Duration::from_secs(self.cfg.warn_iteration_sec.max(1)));
        tokio::pin!(long);
        let mut warned = false;
        let started = Instant::now();
        let result = loop {
            tokio::select! {
                res = &mut exec => break res,
                flushed = async { match flushing.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if flushing.is_some() => {
                    flushing = None;
                    if let Err(e) = flushed {
                        tracing::error!(run_id = %self.run.id, step_id = %step.id, error = %chain(&e), "the store failed while the agent ran; stopping it");
                        store_error.get_or_insert(e);
                        cancel.cancel();
                    }
                }
                Some(sig) = sig_rx.recv() => self.on_signal(step, sig),
                () = async {
                    match heartbeat.as_mut() {
                        Some(h) => {
                            h.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    let elapsed = ms(started);
                    let row = Row {
                        duration_ms: Some(elapsed),
                        output_path: Some(log_path.clone()),
                        ..Row::msg(step.label.clone(), format!("elapsed_ms={elapsed}"))
                    };
                    self.rec.report(Some(step.id), ReportKind::Heartbeat, row, self.tasks());
                }
                () = &mut long, if !warned => {
                    warned = true;
                    let threshold = self.cfg.warn_iteration_sec.max(1).saturating_mul(1000);
                    let row = Row {
                        duration_ms: Some(ms(started)),
                        output_path: Some(log_path.clone()),
                        ..Row::msg(step.label.clone(), format!("threshold_ms={threshold}"))
                    };
                    self.rec.report(Some(step.id), ReportKind::WarnIterationLong, row, self.tasks());
                }
            }
            // What the branches queued (the agent's pid, a heartbeat) is flushed at once, one
            // flush at a time so batches land in journal order.
            if flushing.is_none() && store_error.is_none() && self.rec.has_pending() {
                flushing = Some(Box::pin(self.rec.flush(&self.inner)));
            }
        };
        // A flush still in flight finishes; what is queued now goes with the step's end.
        if let Some(f) = flushing.take()
            && let Err(e) = f.await
        {
            store_error.get_or_insert(e);
        }
        // Signals sent just before the executor returned still count.
        while let Ok(sig) = sig_rx.try_recv() {
            self.on_signal(step, sig);
        }
        // The executor dropped its sender; the forwarder drains what is left and ends on its
        // own (waiting for it would add a task wake-up between two agent calls; the log file
        // holds every byte regardless).
        drop(forward);
        // Orphans of the agent re-parented to us (we are a subreaper) must not stay zombies.
        crate::process::reap_orphans();
        (result, store_error)
    }

    /// Queues what an executor signal records (the caller flushes at once).
    pub(super) fn on_signal(&self, step: &mut Step, sig: ExecSignal) {
        match sig {
            ExecSignal::Spawned { pid, start_time } => {
                step.agent_pid = Some(pid);
                step.agent_start_time = start_time;
                // Recovery after a crash finds the agent by it.
                self.rec.write(StoreWrite::UpdateStep(step.clone()));
            }
            ExecSignal::ApiRetry {
                attempt,
                max_retries,
                delay_ms,
                error_status,
                error,
            } => {
                let what = match (&error, error_status) {
                    (Some(e), Some(s)) => format!("{e} (HTTP {s})"),
                    (Some(e), None) => e.clone(),
                    (None, Some(s)) => format!("HTTP {s}"),
                    (None, None) => "unknown".to_owned(),
                };
                self.set_last_api_error(Some(match attempt {
                    Some(n) => format!("{what}, retry {n} by the CLI"),
                    None => what,
                }));
                let mut ev = NewEvent::typed(
                    self.run.id,
                    &EventPayload::ClaudeApiRetry(payloads::ClaudeApiRetry {
                        attempt,
                        max_retries,
                        delay_ms,
                        error_status,
                        error,
                    }),
                );
                ev.step_id = Some(step.id);
                self.rec.event(ev);
            }
        }
    }
}

/// Writes the last 200 lines of an agent step's log to its tail file: in place for a log of
/// a usual size (a hop to the blocking pool would cost more, between two agent calls), on the
/// blocking pool for a big one (its last lines may be one huge line).
async fn write_tail(log: &Path, tail: &Path) -> std::io::Result<artifacts::TailSize> {
    const IN_PLACE_BYTES: u64 = 1024 * 1024;
    let big = std::fs::metadata(log).map_or(true, |m| m.len() > IN_PLACE_BYTES);
    if !big {
        return artifacts::write_tail(log, tail, 200);
    }
    let (log, tail) = (log.to_path_buf(), tail.to_path_buf());
    tokio::task::spawn_blocking(move || artifacts::write_tail(&log, &tail, 200))
        .await
        .map_err(std::io::Error::other)?
}

/// Forwards executor output to the run's live channel. Offsets come from the executor, so a
/// lag here only leaves a gap that followers fill from the log file.
async fn forward_output(
    mut rx: broadcast::Receiver<crate::backend::OutputChunk>,
    tx: broadcast::Sender<LiveOutput>,
) {
    loop {
        match rx.recv().await {
            Ok(chunk) => {
                let _ = tx.send(LiveOutput {
                    step_id: chunk.step_id,
                    offset: chunk.offset,
                    stream: chunk.stream,
                    data: chunk.data,
                });
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
