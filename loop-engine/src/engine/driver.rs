//! The run driver: carries one run through SPEC §6 (review passes, implementation with
//! retries and watchdog, verification gate, final verification, merge). Steps, events and
//! artifacts are journaled by the [`Recorder`] and land in one store transaction before the
//! next agent, command, sleep or merge begins, so a restart always finds the last step that
//! started durable while the path between two agent calls costs one commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use crate::artifacts::{self, Summary};
use crate::backend::{
    ExecContext, ExecOutcome, ExecPurpose, ExecRequest, ExecSignal, Executor, ExecutorError,
    MergeOutcome, MergeRequest, Notification, NotificationKind, StoreError, StoreWrite,
    Termination, VcsError,
};
use crate::completion::{self, Completion};
use crate::config::Config;
use crate::domain::{
    ArtifactKind, EventKind, ExitReason, MergeStrategy, NameSource, NewEvent, Run, RunStatus, Step,
    StepId, StepPhase, StepStatus, now_ms,
};
use crate::engine::core::{Inner, RunControl};
use crate::engine::create::{assign_branch, implementation_prompt_text, prompt_paths};
use crate::engine::hub::{CurrentOutput, LiveOutput};
use crate::engine::metrics::Metrics;
use crate::engine::report::{Recorder, Row};
use crate::machine::{
    RetryBudget, RetryDecision, RetryPolicy, StepObservation, Watchdog, WatchdogConfig,
    decide_retry,
};
use crate::outcome::{FailureKind, Verdict, judge};
use crate::plan::{self, PlanCounts};
use crate::process::Cmd;
use crate::{naming, prompt};

/// How long after an agent's start the journal is flushed (see `run_agent`).
const FLUSH_AFTER_SPAWN: Duration = Duration::from_millis(3);

/// Why the driver stopped before the run completed.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A user paused the run.
    Paused,
    /// A user canceled the run.
    Canceled,
    /// The engine is shutting down; the run goes back to the queue.
    Shutdown,
    /// Another worker holds the run now; leave it alone.
    LostLease,
    /// The run failed.
    Fail { reason: ExitReason, detail: String },
}

impl Stop {
    fn failed(detail: impl Into<String>) -> Self {
        Self::Fail {
            reason: ExitReason::Failed,
            detail: detail.into(),
        }
    }
}

/// The error and its sources, joined by ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::failed(format!("store error: {}", chain(&e)))
    }
}

impl From<VcsError> for Stop {
    fn from(e: VcsError) -> Self {
        Self::failed(format!("git error: {}", chain(&e)))
    }
}

impl From<crate::error::EngineError> for Stop {
    fn from(e: crate::error::EngineError) -> Self {
        Self::failed(chain(&e))
    }
}

/// Which verification this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VerifyKind {
    /// After an implementation step.
    Gate,
    /// After a review pass that moved HEAD.
    Review,
    /// Before declaring the plan done.
    Final,
}

/// What an agent step produced, once accepted.
struct AgentDone {
    step_id: StepId,
    text: String,
}

/// A snapshot for the watchdog.
struct Before {
    head: Option<String>,
    plan_text: String,
    open_task: Option<String>,
}

pub(crate) struct RunDriver {
    inner: Arc<Inner>,
    run: Run,
    cfg: Config,
    control: RunControl,
    executor: Option<Arc<dyn Executor>>,
    rec: Recorder,
    worktree: PathBuf,
    plan_in_worktree: PathBuf,
    step_seq: u32,
    watchdog: Watchdog,
    rewrites_used: u32,
    prompt_override: Option<(String, PathBuf)>,
    last_verified: Option<(Option<String>, bool)>,
    consecutive_verify_failures: u32,
    start_ms: i64,
    lost_lease: Arc<std::sync::atomic::AtomicBool>,
    iter_duration_sum: u64,
    iter_count: u64,
    last_exit_code: Option<i32>,
    last_iter_log: Option<PathBuf>,
    last_iter_tail: Option<PathBuf>,
    completed_iteration: Option<u32>,
    completion_seen: bool,
    /// HEAD of the worktree as last read, while nothing that may move it has run since.
    known_head: Option<Option<String>>,
}

/// Entry point of a run's task: drives the run and records how it ended.
pub(crate) async fn drive(inner: Arc<Inner>, run: Run, control: RunControl) {
    let run_id = run.id;
    let mut driver = match RunDriver::new(inner.clone(), run, control) {
        Ok(d) => d,
        Err(failed) => {
            let (run, detail) = *failed;
            fail_unstartable(&inner, run, detail).await;
            return;
        }
    };
    let lease = driver.spawn_lease_renewal();
    let result = driver.execute().await;
    lease.abort();
    driver.finish(result).await;
    tracing::debug!(%run_id, "run task ended");
}

/// Ends a pending or paused run that a user canceled.
pub(crate) async fn cancel_idle_run(inner: &Arc<Inner>, run: Run) -> Result<(), StoreError> {
    let control = RunControl {
        cancel: inner.shutdown.child_token(),
        pause: Arc::default(),
        workspace: run.workspace_root.clone(),
    };
    match RunDriver::new(inner.clone(), run, control) {
        Ok(d) => {
            d.finish(Err(Stop::Canceled)).await;
            Ok(())
        }
        Err(failed) => {
            let (mut run, _) = *failed;
            run.status = RunStatus::Canceled;
            run.exit_reason = Some(ExitReason::Canceled);
            inner.store.update_run(&run).await?;
            inner
                .emit(NewEvent::new(
                    run.id,
                    EventKind::RunCanceled,
                    serde_json::json!({"run_id": run.id}),
                ))
                .await?;
            Ok(())
        }
    }
}

/// A run whose stored config cannot even be read fails without running anything.
async fn fail_unstartable(inner: &Inner, mut run: Run, detail: String) {
    run.status = RunStatus::Failed;
    run.exit_reason = Some(ExitReason::Failed);
    run.failure = Some(detail.clone());
    if let Err(e) = inner.store.update_run(&run).await {
        tracing::error!(run_id = %run.id, error = %chain(&e), "cannot record run failure");
    }
    let _ = inner
        .emit(NewEvent::new(
            run.id,
            EventKind::RunFailed,
            serde_json::json!({"run_id": run.id, "reason": detail, "exit_reason": "failed"}),
        ))
        .await;
    let _ = inner
        .store
        .release_run(run.id, &inner.settings.worker_id)
        .await;
    inner.hub.close(run.id);
}

impl RunDriver {
    fn new(inner: Arc<Inner>, run: Run, control: RunControl) -> Result<Self, Box<(Run, String)>> {
        let cfg = match Config::from_json(&run.config) {
            Ok(c) => c,
            Err(e) => {
                let detail = format!(
                    "run {}: stored configuration is invalid: {}",
                    run.id,
                    chain(&e)
                );
                return Err(Box::new((run, detail)));
            }
        };
        let rec = Recorder::new(
            run.id,
            &run.workspace_root,
            &cfg,
            inner.settings.global_log_dir.as_deref(),
        );
        let plan_in_worktree = rebase(&run.plan_path, &run.workspace_root, &run.worktree_path);
        Ok(Self {
            worktree: run.worktree_path.clone(),
            plan_in_worktree,
            inner,
            cfg,
            control,
            executor: None,
            rec,
            step_seq: 0,
            watchdog: Watchdog::new(),
            rewrites_used: 0,
            prompt_override: None,
            last_verified: None,
            consecutive_verify_failures: 0,
            start_ms: now_ms(),
            lost_lease: Arc::default(),
            iter_duration_sum: 0,
            iter_count: 0,
            last_exit_code: None,
            last_iter_log: None,
            known_head: None,
            last_iter_tail: None,
            completed_iteration: None,
            completion_seen: false,
            run,
        })
    }

    fn spawn_lease_renewal(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let run_id = self.run.id;
        let cancel = self.control.cancel.clone();
        let lost = self.lost_lease.clone();
        let lease = inner.settings.lease;
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                let until = now_ms() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
                match inner
                    .store
                    .renew_lease(run_id, &inner.settings.worker_id, until)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict { detail }) => {
                        tracing::error!(%run_id, %detail, "lease lost; stopping this run here");
                        lost.store(true, Ordering::SeqCst);
                        cancel.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%run_id, error = %chain(&e), "cannot renew lease; will retry");
                    }
                }
            }
        })
    }

    fn tasks(&self) -> (u32, u32) {
        (self.run.tasks_done, self.run.tasks_total)
    }

    /// Queues a report-kind event (store, report.tsv, run.log); see [`Recorder`].
    async fn report(&self, step: Option<StepId>, kind: EventKind, row: Row) -> Result<(), Stop> {
        self.rec.report(step, kind, row, self.tasks());
        self.flush_if_full().await
    }

    /// Queues an event.
    async fn event(
        &self,
        step: Option<StepId>,
        kind: EventKind,
        payload: serde_json::Value,
    ) -> Result<(), Stop> {
        let mut ev = NewEvent::new(self.run.id, kind, payload);
        ev.step_id = step;
        self.rec.event(ev);
        self.flush_if_full().await
    }

    /// Queues the run row.
    async fn save_run(&mut self) -> Result<(), Stop> {
        self.run.updated_at = now_ms();
        self.rec.write(StoreWrite::UpdateRun(self.run.clone()));
        self.flush_if_full().await
    }

    /// Lands every queued write: called before anything that takes time or must find the
    /// run's state durable (an agent, a command, a sleep, a merge, the end of the run).
    async fn flush(&self) -> Result<(), Stop> {
        self.rec.flush(&self.inner).await.map_err(Stop::from)
    }

    async fn flush_if_full(&self) -> Result<(), Stop> {
        if self.rec.is_full() {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Step boundary: honour shutdown, cancel and pause.
    fn checkpoint(&self) -> Result<(), Stop> {
        if self.lost_lease.load(Ordering::SeqCst) {
            return Err(Stop::LostLease);
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(Stop::Shutdown);
        }
        if self.control.cancel.is_cancelled() {
            return Err(Stop::Canceled);
        }
        if self.control.pause.load(Ordering::SeqCst) {
            return Err(Stop::Paused);
        }
        Ok(())
    }

    /// Maps a fired cancel token to the right stop.
    fn interrupted(&self) -> Stop {
        if self.lost_lease.load(Ordering::SeqCst) {
            Stop::LostLease
        } else if self.inner.shutdown.is_cancelled() {
            Stop::Shutdown
        } else {
            Stop::Canceled
        }
    }

    fn read_plan(&mut self) -> Result<(String, PlanCounts), Stop> {
        let text = std::fs::read_to_string(&self.plan_in_worktree).map_err(|e| {
            Stop::failed(format!(
                "cannot read the plan {} in the run's worktree: {e}",
                self.plan_in_worktree.display()
            ))
        })?;
        let counts = plan::counts(&text);
        self.run.tasks_done = counts.done;
        self.run.tasks_total = counts.total;
        Ok((text, counts))
    }

    /// HEAD of the worktree. Every read is a `git rev-parse` process on the path between two
    /// agent calls, so the value is remembered until something that may move HEAD runs (an
    /// agent, a verification command, the naming model, a merge) or a new iteration starts
    /// (a user may have committed while the run was paused): an iteration then reads it
    /// twice instead of four times.
    async fn head(&mut self) -> Result<Option<String>, Stop> {
        if let Some(head) = &self.known_head {
            return Ok(head.clone());
        }
        let head = self.inner.vcs.head(&self.worktree).await?;
        self.known_head = Some(head.clone());
        Ok(head)
    }

    /// Forgets the remembered HEAD: something that may move it is about to run.
    fn forget_head(&mut self) {
        self.known_head = None;
    }

    async fn execute(&mut self) -> Result<ExitReason, Stop> {
        self.checkpoint()?;
        self.load_history().await?;
        self.prepare().await?;
        // Preparing may have committed the seed.
        self.forget_head();
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

    /// Restores the counters a resumed run needs from its stored steps.
    async fn load_history(&mut self) -> Result<(), Stop> {
        let steps = self.inner.store.list_steps(self.run.id).await?;
        self.step_seq = steps.iter().map(|s| s.seq).max().unwrap_or(0);
        self.rewrites_used = u32::try_from(
            steps
                .iter()
                .filter(|s| s.phase == StepPhase::Watchdog)
                .count(),
        )
        .unwrap_or(u32::MAX);
        // A verification cut short by a crash or a stop (recovery marks it `interrupted`)
        // says nothing about the code: counting it as failed would make every later
        // verification at that HEAD a skipped failure, and the run would never complete.
        let mut verdicts = steps.iter().filter(|s| {
            s.phase == StepPhase::Verification
                && s.reason.as_deref() != Some("interrupted")
                && matches!(s.status, StepStatus::Failed | StepStatus::Succeeded)
        });
        let mut consecutive = 0;
        for s in verdicts.clone() {
            match s.status {
                StepStatus::Failed => consecutive += 1,
                StepStatus::Succeeded => consecutive = 0,
                _ => {}
            }
        }
        self.consecutive_verify_failures = consecutive;
        if let Some(v) = verdicts.next_back() {
            self.last_verified = Some((v.head_before.clone(), v.status == StepStatus::Succeeded));
        }
        // A watchdog rewrite stays in force after a restart.
        if let Some(w) = steps.iter().rev().find(|s| s.phase == StepPhase::Watchdog)
            && let Some(p) = &w.prompt_path
            && let Ok(text) = std::fs::read_to_string(p)
        {
            self.prompt_override = Some((text, p.clone()));
        }
        Ok(())
    }

    fn new_step(&mut self, iteration: u32, label: &str, phase: StepPhase, attempt: u32) -> Step {
        self.step_seq += 1;
        Step {
            id: StepId::new(),
            run_id: self.run.id,
            seq: self.step_seq,
            iteration,
            label: label.to_owned(),
            phase,
            status: StepStatus::InProgress,
            attempt,
            started_at: Some(now_ms()),
            ended_at: None,
            exit_code: None,
            reason: None,
            prompt_path: None,
            output_path: None,
            head_before: None,
            head_after: None,
            agent_pid: None,
            agent_start_time: None,
            usage: None,
        }
    }

    async fn start_step(&self, step: &Step) -> Result<(), Stop> {
        self.rec.write(StoreWrite::InsertStep(step.clone()));
        self.event(
            Some(step.id),
            EventKind::StepStarted,
            serde_json::json!({
                "step_id": step.id,
                "phase": step.phase,
                "attempt": step.attempt,
                "label": step.label,
                "iteration": step.iteration,
            }),
        )
        .await
    }

    async fn end_step(
        &self,
        step: &mut Step,
        status: StepStatus,
        duration_ms: u64,
    ) -> Result<(), Stop> {
        step.status = status;
        step.ended_at = Some(now_ms());
        step.agent_pid = None;
        step.agent_start_time = None;
        self.rec.write(StoreWrite::UpdateStep(step.clone()));
        self.event(
            Some(step.id),
            EventKind::StepFinished,
            serde_json::json!({
                "step_id": step.id,
                "phase": step.phase,
                "status": step.status,
                "exit_code": step.exit_code,
                "duration_ms": duration_ms,
                "output_path": step.output_path,
                "reason": step.reason,
            }),
        )
        .await
    }

    // ----- preparation -------------------------------------------------------------------

    async fn prepare(&mut self) -> Result<(), Stop> {
        if let Err(e) = self.rec.create_dirs() {
            return Err(Stop::failed(format!(
                "cannot create the run folder {}: {e}",
                self.rec.folder.root().display()
            )));
        }
        let fresh = self.step_seq == 0;
        if fresh {
            self.report(
                None,
                EventKind::RunStart,
                Row::msg("", format!("run {} ({})", self.run.name, self.run.id)),
            )
            .await?;
        }
        if self.run.run_branch.is_empty() {
            if self.run.name_source == NameSource::Haiku {
                self.name_with_model().await?;
            }
            assign_branch(&self.inner, &mut self.run, &self.cfg).await?;
            self.worktree = self.run.worktree_path.clone();
            self.plan_in_worktree = rebase(
                &self.run.plan_path,
                &self.run.workspace_root,
                &self.worktree,
            );
        }
        // RUN_START (and the naming step) reach followers before git works on the worktree.
        self.flush().await?;
        let wt = {
            let lock = self.inner.prep_lock(&self.run.workspace_root).await;
            let _guard = lock.lock().await;
            self.inner
                .vcs
                .prepare_worktree(
                    &self.run.workspace_root,
                    &self.worktree,
                    &self.run.run_branch,
                    &self.run.base_branch,
                )
                .await
                .map_err(|e| {
                    Stop::failed(format!(
                        "cannot prepare worktree {} on branch {}: {}",
                        self.worktree.display(),
                        self.run.run_branch,
                        chain(&e)
                    ))
                })?
        };
        self.event(
            None,
            EventKind::WorktreeReady,
            serde_json::json!({
                "path": self.worktree,
                "branch": self.run.run_branch,
                "base_branch": self.run.base_branch,
                "created_branch": wt.created_branch,
                "created_worktree": wt.created_worktree,
            }),
        )
        .await?;
        if !wt.cleaned.is_empty() {
            self.event(
                None,
                EventKind::RecoveryCleanup,
                serde_json::json!({"cleaned": wt.cleaned}),
            )
            .await?;
        }
        self.seed(wt.created_worktree).await?;
        // The prompt snapshot is what the agent gets; written once per start.
        let text = self.implementation_prompt()?;
        let path = self.rec.folder.prompt();
        // Not synced: it is rebuilt from the spec and plan at every start.
        artifacts::write_derived(&path, text.as_bytes())
            .map_err(|e| Stop::failed(format!("cannot write {}: {e}", path.display())))?;
        self.rec.record(ArtifactKind::Prompt, &path).await;
        self.read_plan()?;
        self.save_run().await?;
        self.report(
            None,
            EventKind::PromptSnapshot,
            Row {
                output_path: Some(path),
                ..Row::msg("", "prompt snapshot")
            },
        )
        .await
    }

    /// Copies a spec or plan that is missing or different at the base branch into the
    /// worktree and commits it, so the agent only ever works inside its worktree.
    async fn seed(&mut self, created_worktree: bool) -> Result<(), Stop> {
        let mut to_commit = Vec::new();
        for (path, what) in [(&self.run.spec_path, "spec"), (&self.run.plan_path, "plan")] {
            let rel = match path.strip_prefix(&self.run.workspace_root) {
                Ok(r) => r.to_path_buf(),
                Err(_) => {
                    return Err(Stop::failed(format!(
                        "the {what} {} is outside the workspace",
                        path.display()
                    )));
                }
            };
            let target = self.worktree.join(&rel);
            let in_worktree = std::fs::read(&target).ok();
            if !created_worktree && in_worktree.is_some() {
                continue;
            }
            let primary = std::fs::read(path).map_err(|e| {
                Stop::failed(format!("cannot read the {what} {}: {e}", path.display()))
            })?;
            if in_worktree.as_deref() == Some(primary.as_slice()) {
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Stop::failed(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            std::fs::write(&target, &primary)
                .map_err(|e| Stop::failed(format!("cannot write {}: {e}", target.display())))?;
            to_commit.push(rel);
        }
        let learnings = self.prompt_paths().learnings;
        match prompt::ensure_learnings(&learnings) {
            Ok(true) => {
                if let Ok(rel) = learnings.strip_prefix(&self.worktree) {
                    to_commit.push(rel.to_path_buf());
                }
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Stop::failed(format!(
                    "cannot create the learnings file {}: {e}",
                    learnings.display()
                )));
            }
        }
        if to_commit.is_empty() {
            return Ok(());
        }
        let commit = self
            .inner
            .vcs
            .commit_paths(
                &self.worktree,
                &to_commit,
                &format!("loop: seed spec and plan for run {}", self.run.name),
            )
            .await?;
        self.event(
            None,
            EventKind::SeedCommitted,
            serde_json::json!({"paths": to_commit, "commit": commit}),
        )
        .await
    }

    /// Asks the naming model for a name; falls back to the spec slug on any failure.
    async fn name_with_model(&mut self) -> Result<(), Stop> {
        let spec_text = std::fs::read_to_string(&self.run.spec_path).unwrap_or_default();
        let excerpt: String = spec_text.chars().take(4000).collect();
        let mut step = self.new_step(0, "naming", StepPhase::Naming, 1);
        let log = self.rec.folder.root().join("naming.log");
        step.output_path = Some(log.clone());
        self.start_step(&step).await?;
        let started = Instant::now();
        let result = match self.executor() {
            Ok(executor) => {
                let req = ExecRequest {
                    run_id: self.run.id,
                    step_id: step.id,
                    purpose: ExecPurpose::Naming,
                    label: "naming".into(),
                    prompt: naming::naming_prompt(&excerpt),
                    model: self.cfg.run_naming_model.clone(),
                    // The run folder, not the primary checkout: the naming agent must not
                    // touch the user's files.
                    workdir: self.rec.folder.root().to_path_buf(),
                    log_path: log,
                    timeout: Some(Duration::from_secs(120)),
                    idle_timeout: None,
                    env: self.agent_env(),
                };
                let ctx = ExecContext::detached(self.control.cancel.child_token());
                self.forget_head();
                self.flush().await?;
                match executor.execute(req, ctx).await {
                    Ok(outcome) => {
                        step.exit_code = Some(outcome.exit_code);
                        match judge(&outcome, self.inner.expects_result_line(&self.cfg)) {
                            Verdict::Success => naming::sanitize_name(&outcome.output_text)
                                .ok_or_else(|| {
                                    "the naming model answered no usable name".to_owned()
                                }),
                            Verdict::Failure { message, .. } => Err(message),
                        }
                    }
                    Err(e) => Err(chain(&e)),
                }
            }
            Err(e) => Err(e),
        };
        if self.control.cancel.is_cancelled() {
            step.reason = Some("interrupted".into());
            self.end_step(&mut step, StepStatus::Canceled, ms(started))
                .await?;
            return Err(self.interrupted());
        }
        let payload = match result {
            Ok(name) => {
                self.run.name = name;
                self.run.name_source = NameSource::Haiku;
                self.end_step(&mut step, StepStatus::Succeeded, ms(started))
                    .await?;
                serde_json::json!({"name": self.run.name, "name_source": "haiku"})
            }
            Err(reason) => {
                step.reason = Some(reason.clone());
                self.run.name_source = NameSource::SpecSlug;
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                serde_json::json!({
                    "name": self.run.name,
                    "name_source": "spec_slug",
                    "fallback_reason": reason,
                })
            }
        };
        self.save_run().await?;
        self.event(Some(step.id), EventKind::RunNamed, payload)
            .await
    }

    fn executor(&mut self) -> Result<Arc<dyn Executor>, String> {
        if let Some(e) = &self.executor {
            return Ok(e.clone());
        }
        let e = self.inner.executor_for(&self.cfg)?;
        self.executor = Some(e.clone());
        Ok(e)
    }

    fn agent_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        )];
        if let Some(n) = self.cfg.claude_max_retries {
            env.push(("CLAUDE_CODE_MAX_RETRIES".into(), n.to_string()));
        }
        env.push(("LOOP_RUN_ID".into(), self.run.id.to_string()));
        env
    }

    fn prompt_paths(&self) -> prompt::PromptPaths {
        prompt_paths(
            &self.cfg,
            &self.run.workspace_root,
            &self.run.spec_path,
            Some(&self.run.plan_path),
            &self.worktree,
            Some(&self.rec.folder.runner_notes()),
        )
    }

    fn implementation_prompt(&self) -> Result<String, Stop> {
        if let Some((text, _)) = &self.prompt_override {
            return Ok(text.clone());
        }
        implementation_prompt_text(&self.cfg, &self.prompt_paths(), &self.worktree)
            .map_err(Stop::from)
    }

    // ----- the loop ------------------------------------------------------------------------

    async fn iteration(&mut self, i: u32) -> Result<Option<ExitReason>, Stop> {
        self.forget_head();
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
    async fn implementation(&mut self, i: u32) -> Result<bool, Stop> {
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
    async fn maybe_rewrite(&mut self, step_id: Option<StepId>) -> Result<bool, Stop> {
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
    async fn completion(
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
    async fn review_pass(&mut self, i: u32) -> Result<Option<ExitReason>, Stop> {
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
                &self.worktree,
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

    #[expect(
        clippy::too_many_lines,
        reason = "one step's life in one place reads best"
    )]
    async fn agent_step(
        &mut self,
        iteration: u32,
        review: Option<u32>,
        purpose: ExecPurpose,
        prompt_text: &str,
        prompt_path: &Path,
        attempt: &mut u32,
    ) -> Result<AgentDone, Stop> {
        let executor = self.executor().map_err(|e| Stop::Fail {
            reason: ExitReason::ClaudeFailed,
            detail: e,
        })?;
        let policy = RetryPolicy {
            retries: self.cfg.claude_retries,
            backoff: Duration::from_secs(self.cfg.claude_retry_backoff_sec),
            transient_retries: self.cfg.claude_transient_retries,
            transient_backoff_max: Duration::from_secs(self.cfg.claude_transient_backoff_max_sec),
        };
        let mut budget = RetryBudget::default();
        let phase = match purpose {
            ExecPurpose::Review => StepPhase::Review,
            _ => StepPhase::Implementation,
        };
        loop {
            self.checkpoint()?;
            *attempt += 1;
            let show_attempt = self.cfg.claude_retries > 0 || *attempt > 1;
            let label =
                naming::iteration_label(iteration, review, show_attempt.then_some(*attempt));
            let slug = naming::iteration_slug(&label);
            let log_path = self.rec.folder.iteration_log(&slug);
            let tail_path = self.rec.folder.iteration_tail(&slug);
            let mut step = self.new_step(iteration, &label, phase, *attempt);
            step.prompt_path = Some(prompt_path.to_path_buf());
            step.output_path = Some(log_path.clone());
            step.head_before = self.head().await?;
            self.start_step(&step).await?;
            self.report(
                Some(step.id),
                EventKind::IterationStart,
                Row {
                    output_path: Some(log_path.clone()),
                    ..Row::msg(label.clone(), format!("{} attempt {}", phase, *attempt))
                },
            )
            .await?;
            let req = ExecRequest {
                run_id: self.run.id,
                step_id: step.id,
                purpose,
                label: label.clone(),
                prompt: prompt_text.to_owned(),
                model: self.cfg.model.clone(),
                workdir: self.worktree.clone(),
                log_path: log_path.clone(),
                timeout: secs(self.cfg.claude_timeout_sec),
                idle_timeout: secs(self.cfg.claude_idle_timeout_sec),
                env: self.agent_env(),
            };
            let started = Instant::now();
            self.forget_head();
            let (result, store_error) = self.run_agent(&executor, req, &mut step).await;
            self.forget_head();
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
                        self.end_step(&mut step, StepStatus::Failed, duration)
                            .await?;
                        return Err(Stop::Fail {
                            reason: ExitReason::ClaudeFailed,
                            detail: format!(
                                "run {} step {} ({label}): {detail}",
                                self.run.id, step.id
                            ),
                        });
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
            // An agent that left the run branch or rewrote its history would have its work
            // (or earlier steps' work) silently dropped by the merge: stop here instead.
            match self
                .inner
                .vcs
                .check_branch(
                    &self.worktree,
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
                    EventKind::WarnOutputLarge,
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
                    EventKind::IterationTimeout,
                    Row {
                        duration_ms: Some(duration),
                        exit_code: Some(outcome.exit_code),
                        ..Row::msg(label.clone(), what)
                    },
                )
                .await?;
            }
            let verdict = if step.reason.is_some() {
                Verdict::Failure {
                    kind: FailureKind::Transient { status: None },
                    message: step.reason.clone().unwrap_or_default(),
                }
            } else {
                judge(&outcome, self.inner.expects_result_line(&self.cfg))
            };
            let message = match &verdict {
                Verdict::Success => "ok".to_owned(),
                Verdict::Failure { message, .. } => message.clone(),
            };
            self.report(
                Some(step.id),
                EventKind::IterationEnd,
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
                    EventKind::IterationTail,
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
                    return Ok(AgentDone {
                        step_id: step.id,
                        text: outcome.output_text,
                    });
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
                    match decide_retry(&policy, &mut budget, &kind, jitter) {
                        RetryDecision::Retry { delay, transient } => {
                            self.end_step(&mut step, StepStatus::Retrying, duration)
                                .await?;
                            Metrics::inc(&self.inner.metrics.claude_retries);
                            self.report(
                                Some(step.id),
                                EventKind::ClaudeRetry,
                                Row {
                                    duration_ms: Some(
                                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                                    ),
                                    exit_code: Some(outcome.exit_code),
                                    ..Row::msg(
                                        label.clone(),
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
                                () = tokio::time::sleep(delay) => {}
                                () = self.control.cancel.cancelled() => return Err(self.interrupted()),
                            }
                        }
                        RetryDecision::GiveUp => {
                            self.end_step(&mut step, StepStatus::Failed, duration)
                                .await?;
                            return Err(Stop::Fail {
                                reason: ExitReason::ClaudeFailed,
                                detail: format!(
                                    "run {} step {} ({label}): {message}",
                                    self.run.id, step.id
                                ),
                            });
                        }
                    }
                }
            }
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
    async fn run_agent(
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
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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
                _ = heartbeat.tick() => {
                    self.rec.report(Some(step.id), EventKind::Heartbeat, Row::msg(step.label.clone(), format!("running for {} s", started.elapsed().as_secs())), self.tasks());
                }
                () = &mut long, if !warned => {
                    warned = true;
                    self.rec.report(Some(step.id), EventKind::WarnIterationLong, Row::msg(step.label.clone(), format!("step running past {} s", self.cfg.warn_iteration_sec)), self.tasks());
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
    fn on_signal(&self, step: &mut Step, sig: ExecSignal) {
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
                let mut ev = NewEvent::new(
                    self.run.id,
                    EventKind::ClaudeApiRetry,
                    serde_json::json!({
                        "attempt": attempt,
                        "max_retries": max_retries,
                        "delay_ms": delay_ms,
                        "error_status": error_status,
                        "error": error,
                    }),
                );
                ev.step_id = Some(step.id);
                self.rec.event(ev);
            }
        }
    }

    // ----- verification --------------------------------------------------------------------

    async fn verify(&mut self, i: u32, kind: VerifyKind) -> Result<bool, Stop> {
        if self.cfg.verify_cmds.is_empty() {
            return Ok(true);
        }
        let head = self.head().await?;
        let clean = self.inner.vcs.is_clean(&self.worktree).await?;
        let label = match kind {
            VerifyKind::Gate => i.to_string(),
            VerifyKind::Review => format!("{i}-review"),
            VerifyKind::Final => format!("{i}-final"),
        };
        if clean
            && let Some((h, passed)) = &self.last_verified
            && *h == head
        {
            let passed = *passed;
            self.report(
                None,
                EventKind::VerifySkip,
                Row::msg(
                    label,
                    format!(
                        "HEAD unchanged since the last verification ({})",
                        if passed { "passed" } else { "failed" }
                    ),
                ),
            )
            .await?;
            return Ok(passed);
        }
        let slug = verify_slug(i, kind);
        let mut step = self.new_step(i, &label, StepPhase::Verification, 1);
        step.head_before = head.clone();
        self.start_step(&step).await?;
        let started = Instant::now();
        self.report(
            Some(step.id),
            EventKind::VerifyStart,
            Row::msg(
                label.clone(),
                format!("{} commands", self.cfg.verify_cmds.len()),
            ),
        )
        .await?;
        let mut failure = None;
        for (n, cmd) in self.cfg.verify_cmds.clone().iter().enumerate() {
            self.checkpoint()?;
            self.forget_head();
            let n = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let log = self.rec.folder.verify_log(&slug, n);
            self.report(
                Some(step.id),
                EventKind::VerifyCmdStart,
                Row {
                    output_path: Some(log.clone()),
                    ..Row::msg(label.clone(), cmd.clone())
                },
            )
            .await?;
            self.flush().await?;
            let t = Instant::now();
            let run = Cmd::new("bash", &self.worktree)
                .args(["-lc", cmd.as_str()])
                .timeout(secs(self.cfg.verify_timeout_sec));
            let out = tokio::select! {
                out = run.output() => out,
                () = self.control.cancel.cancelled() => {
                    step.reason = Some("canceled".into());
                    self.end_step(&mut step, StepStatus::Canceled, ms(started)).await?;
                    return Err(self.interrupted());
                }
            };
            // The command may have committed.
            self.forget_head();
            let (code, bytes) = match out {
                Ok(o) => {
                    let mut all = o.stdout;
                    all.extend_from_slice(&o.stderr);
                    let len = all.len() as u64;
                    if let Err(e) = std::fs::write(&log, &all) {
                        tracing::warn!(run_id = %self.run.id, error = %e, "cannot write verification log");
                    }
                    (o.code, len)
                }
                Err(e) => {
                    let text = format!("cannot run verification command `{cmd}`: {}", chain(&e));
                    let _ = std::fs::write(&log, text.as_bytes());
                    (127, text.len() as u64)
                }
            };
            self.rec.record(ArtifactKind::VerifyLog, &log).await;
            self.report(
                Some(step.id),
                EventKind::VerifyCmdEnd,
                Row {
                    duration_ms: Some(ms(t)),
                    exit_code: Some(code),
                    output_bytes: Some(bytes),
                    output_path: Some(log.clone()),
                    ..Row::msg(label.clone(), cmd.clone())
                },
            )
            .await?;
            if code != 0 {
                failure = Some((cmd.clone(), code, log));
                break;
            }
        }
        let passed = failure.is_none();
        step.exit_code = Some(failure.as_ref().map_or(0, |f| f.1));
        self.report(
            Some(step.id),
            EventKind::VerifyEnd,
            Row {
                duration_ms: Some(ms(started)),
                exit_code: step.exit_code,
                ..Row::msg(label.clone(), if passed { "passed" } else { "failed" })
            },
        )
        .await?;
        self.last_verified = Some((head, passed));
        let notes = self.rec.folder.runner_notes();
        match failure {
            None => {
                Metrics::inc(&self.inner.metrics.verification_pass);
                self.consecutive_verify_failures = 0;
                self.end_step(&mut step, StepStatus::Succeeded, ms(started))
                    .await?;
                if notes.exists() {
                    let _ = artifacts::write_atomic(&notes, b"");
                }
                Ok(true)
            }
            Some((cmd, code, log)) => {
                Metrics::inc(&self.inner.metrics.verification_fail);
                self.consecutive_verify_failures += 1;
                let tail = artifacts::tail_lines(&log, 120).unwrap_or_default();
                let failure_text = format!(
                    "command: {cmd}\nexit code: {code}\nlog: {}\n\nlast 120 lines:\n{tail}\n",
                    log.display()
                );
                let failure_path = self.rec.folder.verify_failure(&slug);
                let _ = artifacts::write_atomic(&failure_path, failure_text.as_bytes());
                self.rec
                    .record(ArtifactKind::VerifyFailure, &failure_path)
                    .await;
                let text = prompt::runner_notes_for_failure(&cmd, code, &log, &tail);
                if let Err(e) = artifacts::write_atomic(&notes, text.as_bytes()) {
                    tracing::warn!(run_id = %self.run.id, error = %e, "cannot write runner notes");
                }
                self.rec.record(ArtifactKind::RunnerNotes, &notes).await;
                step.reason = Some(format!("`{cmd}` exited with {code}"));
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                let limit = self.cfg.max_consecutive_verification_failures;
                if limit > 0 && self.consecutive_verify_failures >= limit {
                    return Err(Stop::Fail {
                        reason: ExitReason::MaxConsecutiveFailures {
                            kind: "verification".into(),
                            limit,
                        },
                        detail: format!(
                            "run {}: verification failed {limit} times in a row (last: `{cmd}` exited with {code}, log {})",
                            self.run.id,
                            log.display()
                        ),
                    });
                }
                Ok(false)
            }
        }
    }

    // ----- the end -------------------------------------------------------------------------

    async fn merge(&mut self) -> Result<(), Stop> {
        let Some(target) = self.run.merge_target_branch.clone() else {
            return Ok(());
        };
        if self.run.merge_strategy == MergeStrategy::None {
            return Ok(());
        }
        // The merge takes the run branch only: uncommitted work in the worktree would be
        // dropped from the target without a word.
        if !self.inner.vcs.is_clean(&self.worktree).await? {
            return Err(Stop::failed(format!(
                "run {}: the worktree {} has uncommitted changes; nothing was merged into \
                 {target} and the run branch {} is kept: commit or discard them and merge by hand",
                self.run.id,
                self.worktree.display(),
                self.run.run_branch
            )));
        }
        let iteration = self.run.iterations_run;
        let mut step = self.new_step(iteration, "merge", StepPhase::Merge, 1);
        step.head_before = self.head().await?;
        self.start_step(&step).await?;
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
        self.forget_head();
        self.flush().await?;
        // A merge reads the repository's worktree list, which another run's worktree being
        // added at that moment leaves half-written: merges and worktree preparation of one
        // workspace take turns.
        let merged = {
            let lock = self.inner.prep_lock(&self.run.workspace_root).await;
            let _guard = lock.lock().await;
            self.inner.vcs.merge(&req).await
        };
        match merged {
            Ok(outcome) => {
                let (what, commit) = match &outcome {
                    MergeOutcome::Merged { commit } => ("merged", Some(commit.clone())),
                    MergeOutcome::AlreadyMerged { commit } => {
                        ("already_merged", Some(commit.clone()))
                    }
                    MergeOutcome::NothingToMerge => ("nothing_to_merge", None),
                };
                step.head_after = commit.clone();
                step.exit_code = Some(0);
                self.end_step(&mut step, StepStatus::Succeeded, ms(started))
                    .await?;
                self.event(
                    Some(step.id),
                    EventKind::MergeDone,
                    serde_json::json!({
                        "target": target,
                        "strategy": self.run.merge_strategy,
                        "outcome": what,
                        "commit": commit,
                    }),
                )
                .await
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
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                Err(Stop::failed(detail))
            }
        }
    }

    async fn finish(mut self, result: Result<ExitReason, Stop>) {
        let result = match result {
            Ok(reason) => match self.merge().await {
                Ok(()) => Ok(reason),
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
                        EventKind::RunPaused,
                        serde_json::json!({"run_id": run_id, "at": "step_boundary"}),
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
        let _ = self
            .report(
                None,
                EventKind::RunEnd,
                Row::msg("", format!("reason={reason_text}")),
            )
            .await;
        let (kind, payload, note) = match status {
            RunStatus::Completed => (
                EventKind::RunCompleted,
                serde_json::json!({"run_id": run_id, "mode": reason_text}),
                NotificationKind::RunCompleted,
            ),
            RunStatus::Canceled => (
                EventKind::RunCanceled,
                serde_json::json!({"run_id": run_id, "reason": "canceled"}),
                NotificationKind::RunCanceled,
            ),
            _ => (
                EventKind::RunFailed,
                serde_json::json!({"run_id": run_id, "reason": detail.clone().unwrap_or_else(|| reason_text.clone()), "exit_reason": reason_text}),
                NotificationKind::RunFailed,
            ),
        };
        self.write_summary(exit_reason.as_ref().unwrap_or(&ExitReason::Failed))
            .await;
        let _ = self.event(None, kind, payload).await;
        if let Err(e) = self.flush().await {
            tracing::error!(%run_id, error = ?e, "cannot record the last events of the run");
        }
        let total = u64::try_from(now_ms() - self.start_ms).unwrap_or(0);
        self.inner.metrics.run_duration.record(total);
        let notification = Notification {
            kind: note,
            run: self.run.clone(),
            reason: detail.or(Some(reason_text)),
        };
        if let Err(e) = self.inner.notifier.notify(&notification).await {
            tracing::warn!(%run_id, error = %chain(&e), "notifier failed");
        }
        self.inner.hub.close(run_id);
    }

    async fn write_summary(&self, reason: &ExitReason) {
        let end = now_ms();
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
            last_exit_code: self.last_exit_code,
            completion_mode: self.completion_seen.then_some(self.cfg.completion_mode),
            model: self.cfg.model.clone(),
            exit_reason: reason.clone(),
            run_log: self.rec.folder.run_log().display().to_string(),
            run_report: self.rec.folder.report().display().to_string(),
            prompt_snapshot: self.rec.folder.prompt().display().to_string(),
            last_iteration_tail: self
                .last_iter_tail
                .as_ref()
                .map(|p| p.display().to_string()),
            last_iteration_log: self.last_iter_log.as_ref().map(|p| p.display().to_string()),
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

fn rebase(path: &Path, workspace: &Path, worktree: &Path) -> PathBuf {
    match path.strip_prefix(workspace) {
        Ok(rel) if !worktree.as_os_str().is_empty() => worktree.join(rel),
        _ => path.to_path_buf(),
    }
}

fn verify_slug(i: u32, kind: VerifyKind) -> String {
    let base = naming::iteration_slug(&i.to_string());
    match kind {
        VerifyKind::Gate => base,
        VerifyKind::Review => format!("{base}-review"),
        VerifyKind::Final => format!("{base}-final"),
    }
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
