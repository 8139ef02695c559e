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
            Row {
                output_path: Some(log_path.clone()),
                ..Row::msg(label.clone(), format!("{} attempt {}", phase, attempt))
            },
        )
        .await?;
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
        if outcome.output_bytes > self.cfg.warn_output_bytes {
            self.report(
                Some(step.id),
                ReportKind::WarnOutputLarge,
                Row {
                    output_bytes: Some(outcome.output_bytes),
                    ..Row::msg(
                        label.clone(),
                        format!("step printed {} bytes", outcome.output_bytes),
                    )
                },
            )
            .await?;
        }
        if matches!(
            outcome.termination,
            Some(Termination::TimedOut | Termination::IdleTimedOut)
        ) {
            let what = if outcome.termination == Some(Termination::IdleTimedOut) {
                format!("no output for {} s", self.cfg.claude_idle_timeout_sec)
            } else {
                format!("ran past {} s", self.cfg.claude_timeout_sec)
            };
            self.report(
                Some(step.id),
                ReportKind::IterationTimeout,
                Row {
                    duration_ms: Some(duration),
                    exit_code: Some(outcome.exit_code),
                    ..Row::msg(label.clone(), what)
                },
            )
            .await?;
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
        let message = match &verdict {
            Verdict::Success => "ok".to_owned(),
            Verdict::Failure { message, .. } => message.clone(),
        };
        self.report(
            Some(step.id),
            ReportKind::IterationEnd,
            Row {
                iteration: label.clone(),
                duration_ms: Some(duration),
                exit_code: Some(outcome.exit_code),
                output_bytes: Some(outcome.output_bytes),
                output_lines: Some(outcome.output_lines),
                output_path: Some(log_path.clone()),
                message,
            },
        )
        .await?;
        // The tail is written and both files checksummed at the next flush, which runs
        // while the next agent starts; the log is complete now, so the tail will be too.
        if log_path.exists() {
            let (log, tail) = (log_path.clone(), tail_path.clone());
            self.rec.defer_record(
                vec![
                    (ArtifactKind::IterationTail, tail_path.clone()),
                    (ArtifactKind::IterationLog, log_path.clone()),
                ],
                move || {
                    if let Err(e) = artifacts::write_tail(&log, &tail, 200) {
                        tracing::warn!(error = %e, "cannot write the tail of {}", log.display());
                    }
                },
            );
            self.report(
                Some(step.id),
                ReportKind::IterationTail,
                Row {
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
                duration_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                exit_code,
                ..Row::msg(
                    label,
                    format!(
                        "{} retry after {} ms: {message}",
                        if transient { "transient" } else { "plain" },
                        delay.as_millis()
                    ),
                )
            },
        )
        .await?;
        self.flush().await?;
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.control.cancel.cancelled() => Err(self.interrupted()),
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
                    self.rec.report(Some(step.id), ReportKind::Heartbeat, Row::msg(step.label.clone(), format!("running for {} s", started.elapsed().as_secs())), self.tasks());
                }
                () = &mut long, if !warned => {
                    warned = true;
                    self.rec.report(Some(step.id), ReportKind::WarnIterationLong, Row::msg(step.label.clone(), format!("step running past {} s", self.cfg.warn_iteration_sec)), self.tasks());
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
