//! The driver's state for one run and its bookkeeping: the journal (steps, events, the run
//! row), step boundaries, the plan, the history a resumed run restores, prompt inputs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::backend::{Executor, StoreError, StoreWrite};
use crate::config::Config;
use crate::domain::{
    EventPayload, NewEvent, ReportKind, Run, RunStatus, Step, StepId, StepPhase, StepStatus,
    now_ms, payloads,
};
use crate::engine::create::{implementation_prompt_text, prompt_paths};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::driver::worktree::Worktree;
use crate::engine::inner::{Inner, RunControl};
use crate::engine::metrics::Metrics;
use crate::engine::report::{Recorder, Row};
use crate::machine::History;
use crate::plan::{self, PlanCounts};
use crate::prompt;

/// A failed agent attempt's step, open until the loop decides (retry or give up).
pub(super) struct OpenAttempt {
    pub(super) step: Step,
    pub(super) label: String,
    pub(super) duration: u64,
    pub(super) exit_code: Option<i32>,
    pub(super) message: String,
}

/// What an implementation call started from: the watchdog compares the step's result with it,
/// and its retries start from it again.
pub(super) struct Before {
    pub(super) head: Option<String>,
    pub(super) plan_text: String,
    pub(super) open_task: Option<String>,
    pub(super) prompt_text: String,
    pub(super) prompt_path: PathBuf,
}

/// One run being driven: its row, config, journal, worktree and the counters of SPEC §6.
pub(crate) struct RunDriver {
    pub(super) inner: Arc<Inner>,
    pub(super) run: Run,
    pub(super) cfg: Config,
    pub(super) control: RunControl,
    pub(super) executor: Option<Arc<dyn Executor>>,
    pub(super) rec: Recorder,
    pub(super) worktree: Worktree,
    pub(super) plan_in_worktree: PathBuf,
    pub(super) step_seq: u32,
    pub(super) prompt_override: Option<(String, PathBuf)>,
    pub(super) last_verified: Option<(Option<String>, bool)>,
    /// The failed attempt whose step waits for the loop's decision.
    pub(super) open_attempt: Option<OpenAttempt>,
    /// The last agent step that succeeded (events of the loop's decisions point at it).
    pub(super) last_agent_step: Option<StepId>,
    /// What the current implementation call started from (kept for its retries).
    pub(super) before_implementation: Option<Before>,
    /// The labels of the run's verification steps so far (history included).
    pub(super) verify_labels: HashSet<String>,
    /// The last failed verification command, for the consecutive-failure message.
    pub(super) last_verify_failure: Option<String>,
    pub(super) start_ms: i64,
    pub(super) lost_lease: Arc<std::sync::atomic::AtomicBool>,
    pub(super) iter_duration_sum: u64,
    pub(super) iter_count: u64,
    pub(super) last_exit_code: Option<i32>,
    pub(super) last_iter_log: Option<PathBuf>,
    pub(super) last_iter_tail: Option<PathBuf>,
    pub(super) completed_iteration: Option<u32>,
    pub(super) completion_seen: bool,
    /// The engine's fallback git identity for the agent when git has none (asked once per
    /// run, at preparation).
    pub(super) identity_env: Vec<(String, String)>,
    /// Dollars spent by every agent call of the run (history included; SPEC §15).
    pub(super) spent_cost_usd: f64,
    /// Input + output tokens of every agent call of the run.
    pub(super) spent_tokens: u64,
    /// When the run's first step started (its wall-clock budget counts from there).
    pub(super) first_step_ms: Option<i64>,
    /// A usage-limit wait a restart cut short: when it ends.
    pub(super) resume_wait_until: Option<i64>,
    /// The last API error the agent CLI retried on during the current attempt (a timeout's
    /// reason names it).
    pub(super) last_api_error: std::sync::Mutex<Option<String>>,
    /// `setup_cmds` succeeded in this run's worktree (history included).
    pub(super) setup_done: bool,
}

impl RunDriver {
    pub(super) fn new(
        inner: Arc<Inner>,
        run: Run,
        control: RunControl,
    ) -> Result<Self, Box<(Run, String)>> {
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
        // A run this worker claimed: its writes are fenced by the claim's epoch.
        let rec = if run.status == RunStatus::Running
            && run.worker_id.as_deref() == Some(inner.settings.worker_id.as_str())
        {
            rec.fenced(run.lease_epoch)
        } else {
            rec
        };
        let plan_in_worktree = rebase(&run.plan_path, &run.workspace_root, &run.worktree_path);
        Ok(Self {
            worktree: Worktree::new(run.worktree_path.clone()),
            plan_in_worktree,
            inner,
            cfg,
            control,
            executor: None,
            rec,
            step_seq: 0,
            prompt_override: None,
            last_verified: None,
            open_attempt: None,
            last_agent_step: None,
            before_implementation: None,
            last_verify_failure: None,
            verify_labels: HashSet::new(),
            start_ms: now_ms(),
            lost_lease: Arc::default(),
            iter_duration_sum: 0,
            iter_count: 0,
            last_exit_code: None,
            last_iter_log: None,
            last_iter_tail: None,
            completed_iteration: None,
            completion_seen: false,
            identity_env: Vec::new(),
            spent_cost_usd: 0.0,
            spent_tokens: 0,
            first_step_ms: None,
            resume_wait_until: None,
            last_api_error: std::sync::Mutex::new(None),
            setup_done: false,
            run,
        })
    }

    /// Renews the run's lease every third of its length while the run executes. A renewal
    /// the store refuses (another worker holds the run) stops the run at once; so does a
    /// store that cannot be reached for so long that the lease would lapse before the next
    /// attempt (self-fencing, SPEC §14): the agent is killed while the lease still holds, so
    /// it is gone before another worker can claim the run.
    pub(super) fn spawn_lease_renewal(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let run_id = self.run.id;
        let cancel = self.control.cancel.clone();
        let lost = self.lost_lease.clone();
        let lease = inner.settings.lease;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        // The claim's lease holds until its stored expiry.
        let left = self
            .run
            .lease_expires_at
            .map_or(lease_ms, |until| until.saturating_sub(now_ms()));
        let first_valid_until = tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(0));
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(100));
            let mut valid_until = first_valid_until;
            let stop = |why: &str| {
                tracing::error!(%run_id, "{why}; stopping this run here");
                if !lost.swap(true, Ordering::SeqCst) {
                    Metrics::inc(&inner.metrics.leases_lost);
                }
                cancel.cancel();
            };
            loop {
                tokio::time::sleep(every).await;
                let started = tokio::time::Instant::now();
                let until = now_ms().saturating_add(lease_ms);
                // A call that hangs (a cut network) must not outlive the lease: it is given
                // up half a period before the lease would lapse and counts as a failed
                // renewal. A slow store (a loaded machine) gets the rest of that time.
                let patience = valid_until
                    .saturating_duration_since(started)
                    .saturating_sub(every / 2)
                    .max(Duration::from_millis(50));
                let renewed = tokio::time::timeout(
                    patience,
                    inner
                        .store
                        .renew_lease(run_id, &inner.settings.worker_id, until),
                )
                .await;
                match renewed {
                    Ok(Ok(())) => valid_until = started + lease,
                    Ok(Err(StoreError::Conflict { detail })) => {
                        // The renewal is a write of this worker that the store refused
                        // because another worker holds the run now: fencing at work.
                        Metrics::inc(&inner.metrics.fenced_writes_rejected);
                        stop(&format!("lease lost ({detail})"));
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%run_id, error = %chain(&e), "cannot renew lease; will retry");
                    }
                    Err(_) => {
                        tracing::warn!(%run_id, "lease renewal did not answer within {} ms; will retry", patience.as_millis());
                    }
                }
                if tokio::time::Instant::now() + every >= valid_until {
                    stop("the lease could not be renewed and lapses before the next attempt");
                    return;
                }
            }
        })
    }

    /// The plan's counts as last read: the `tasks_done`/`tasks_total` of report rows.
    pub(super) fn tasks(&self) -> (u32, u32) {
        (self.run.tasks_done, self.run.tasks_total)
    }

    /// Re-counts the plan in the worktree after a step, so the step's rows carry the counts
    /// it left (SPEC §7). A plan that cannot be read keeps the last counts: the loop reads it
    /// again and says what is wrong ([`RunDriver::read_plan`]).
    pub(super) fn refresh_tasks(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.plan_in_worktree) {
            let counts = plan::counts(&text);
            self.run.tasks_done = counts.done;
            self.run.tasks_total = counts.total;
        }
    }

    /// Queues a report-kind event (store, report.tsv, run.log); see [`Recorder`].
    pub(super) async fn report(
        &self,
        step: Option<StepId>,
        kind: ReportKind,
        row: Row,
    ) -> Result<(), Stop> {
        self.rec.report(step, kind, row, self.tasks());
        self.flush_if_full().await
    }

    /// Queues an event.
    pub(super) async fn event(
        &self,
        step: Option<StepId>,
        payload: EventPayload,
    ) -> Result<(), Stop> {
        let mut ev = NewEvent::typed(self.run.id, &payload);
        ev.step_id = step;
        self.rec.event(ev);
        self.flush_if_full().await
    }

    /// Queues the run row.
    pub(super) async fn save_run(&mut self) -> Result<(), Stop> {
        self.run.updated_at = now_ms();
        self.rec.write(StoreWrite::UpdateRun(self.run.clone()));
        self.flush_if_full().await
    }

    /// Lands every queued write: called before anything that takes time or must find the
    /// run's state durable (an agent, a command, a sleep, a merge, the end of the run).
    pub(super) async fn flush(&self) -> Result<(), Stop> {
        match self.rec.flush(&self.inner).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { detail }) if self.taken_over().await => {
                Metrics::inc(&self.inner.metrics.fenced_writes_rejected);
                tracing::error!(run_id = %self.run.id, %detail, "the store refused this worker's writes: another worker took the run over; stopping here");
                self.lose_lease();
                Err(Stop::LostLease)
            }
            Err(e) => Err(Stop::from(e)),
        }
    }

    /// True when the store says another worker claimed the run since this worker did (its
    /// epoch moved past the one this driver's writes are fenced with).
    async fn taken_over(&self) -> bool {
        let Some(epoch) = self.rec.fence() else {
            return false;
        };
        match self.inner.store.get_run(self.run.id).await {
            Ok(run) => run.lease_epoch != epoch,
            Err(_) => false,
        }
    }

    /// Stops the run here at once: marks the lease lost and cancels the running step, which
    /// kills its agent.
    pub(super) fn lose_lease(&self) {
        if !self.lost_lease.swap(true, Ordering::SeqCst) {
            Metrics::inc(&self.inner.metrics.leases_lost);
        }
        self.control.cancel.cancel();
    }

    pub(super) async fn flush_if_full(&self) -> Result<(), Stop> {
        if self.rec.is_full() {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Step boundary: honour shutdown, cancel and pause.
    pub(super) fn checkpoint(&self) -> Result<(), Stop> {
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
    pub(super) fn interrupted(&self) -> Stop {
        if self.lost_lease.load(Ordering::SeqCst) {
            Stop::LostLease
        } else if self.inner.shutdown.is_cancelled() {
            Stop::Shutdown
        } else {
            Stop::Canceled
        }
    }

    /// HEAD of the worktree; see [`Worktree::head`].
    pub(super) async fn head(&mut self) -> Result<Option<String>, Stop> {
        Ok(self.worktree.head(self.inner.vcs.as_ref()).await?)
    }

    pub(super) fn read_plan(&mut self) -> Result<(String, PlanCounts), Stop> {
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

    /// Restores the counters a resumed run needs from its stored steps.
    pub(super) async fn load_history(&mut self) -> Result<History, Stop> {
        let steps = self.inner.store.list_steps(self.run.id).await?;
        self.step_seq = steps.iter().map(|s| s.seq).max().unwrap_or(0);
        self.verify_labels = steps
            .iter()
            .filter(|s| s.phase == StepPhase::Verification)
            .map(|s| s.label.clone())
            .collect();
        let rewrites_used = u32::try_from(
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
        if let Some(v) = verdicts.next_back() {
            self.last_verified = Some((v.head_before.clone(), v.status == StepStatus::Succeeded));
        }
        // The last agent process's exit code (RUN_END and summary.json report it).
        self.last_exit_code = steps
            .iter()
            .rev()
            .filter(|s| matches!(s.phase, StepPhase::Implementation | StepPhase::Review))
            .find_map(|s| s.exit_code);
        // Budgets survive restarts: what the stored steps spent counts (retries included).
        for s in &steps {
            if let Some(u) = &s.usage {
                self.add_usage(u);
            }
        }
        self.first_step_ms = steps.iter().filter_map(|s| s.started_at).min();
        self.setup_done = steps
            .iter()
            .any(|s| s.phase == StepPhase::Setup && s.status == StepStatus::Succeeded);
        // A usage-limit wait a restart cut short goes on until its reset: the agent is not
        // called before it.
        if let Some(last) = steps.iter().max_by_key(|s| s.seq)
            && last.phase == StepPhase::UsageWait
            && let Some(until) = last.ended_at
            && until > now_ms()
        {
            self.resume_wait_until = Some(until);
        }
        // A watchdog rewrite stays in force after a restart.
        if let Some(w) = steps.iter().rev().find(|s| s.phase == StepPhase::Watchdog)
            && let Some(p) = &w.prompt_path
            && let Ok(text) = std::fs::read_to_string(p)
        {
            self.prompt_override = Some((text, p.clone()));
        }
        Ok(History {
            first_iteration: first_iteration(self.run.iterations_run, &steps),
            rewrites_used,
            consecutive_verification_failures: consecutive,
            unstarted: self.run.iterations_run == 0,
        })
    }

    /// Adds one agent call's accounting to what the run spent.
    pub(super) fn add_usage(&mut self, usage: &crate::domain::AgentUsage) {
        self.spent_cost_usd += usage.cost_usd.unwrap_or(0.0).max(0.0);
        self.spent_tokens = self.spent_tokens.saturating_add(
            usage
                .input_tokens
                .unwrap_or(0)
                .saturating_add(usage.output_tokens.unwrap_or(0)),
        );
    }

    /// What the run has spent so far (SPEC §15).
    pub(super) fn spent(&self) -> crate::machine::Spent {
        let since = self.first_step_ms.unwrap_or(self.start_ms);
        crate::machine::Spent {
            cost_usd: self.spent_cost_usd,
            tokens: self.spent_tokens,
            wall: Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0)),
        }
    }

    pub(super) fn new_step(
        &mut self,
        iteration: u32,
        label: &str,
        phase: StepPhase,
        attempt: u32,
    ) -> Step {
        self.step_seq += 1;
        self.first_step_ms.get_or_insert_with(now_ms);
        if phase == StepPhase::Verification {
            self.verify_labels.insert(label.to_owned());
        }
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
            resources: None,
        }
    }

    pub(super) async fn start_step(&self, step: &Step) -> Result<(), Stop> {
        self.rec.write(StoreWrite::InsertStep(step.clone()));
        self.event(
            Some(step.id),
            EventPayload::StepStarted(payloads::StepStarted {
                step_id: step.id,
                phase: step.phase,
                attempt: step.attempt,
                label: step.label.clone(),
                iteration: step.iteration,
            }),
        )
        .await
    }

    pub(super) async fn end_step(
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
            EventPayload::StepFinished(payloads::StepFinished {
                step_id: step.id,
                phase: step.phase,
                status: step.status,
                exit_code: step.exit_code,
                duration_ms,
                output_path: step.output_path.clone(),
                reason: step.reason.clone(),
            }),
        )
        .await
    }

    pub(super) fn executor(&mut self) -> Result<Arc<dyn Executor>, String> {
        if let Some(e) = &self.executor {
            return Ok(e.clone());
        }
        let e = self.inner.executor_for(&self.cfg)?;
        self.executor = Some(e.clone());
        Ok(e)
    }

    pub(super) fn agent_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        )];
        if let Some(n) = self.cfg.claude_max_retries {
            env.push(("CLAUDE_CODE_MAX_RETRIES".into(), n.to_string()));
        }
        env.push(("LOOP_RUN_ID".into(), self.run.id.to_string()));
        env.extend(self.identity_env.iter().cloned());
        env.extend(self.configured_env());
        env
    }

    /// What `agent_env` adds to the allow-listed environment of agents and verification
    /// commands (validated when the run was created).
    pub(super) fn configured_env(&self) -> Vec<(String, String)> {
        match crate::process::parse_agent_env(self.cfg.agent_env.as_deref().unwrap_or_default()) {
            Ok(entries) => crate::process::agent_env_vars(&entries),
            Err(e) => {
                tracing::warn!(run_id = %self.run.id, error = %e, "agent_env ignored");
                Vec::new()
            }
        }
    }

    /// A project command (a setup or verification command) in `dir`: `bash -lc`, like an
    /// agent the allow-listed environment plus `agent_env`, and the run marker.
    pub(super) fn project_cmd(
        &self,
        dir: &Path,
        cmd: &str,
        timeout_sec: u64,
    ) -> crate::process::Cmd {
        crate::process::Cmd::new("bash", dir)
            .args(["-lc", cmd])
            .allowed_env_only()
            .envs(self.configured_env())
            .env("LOOP_RUN_ID", self.run.id.to_string())
            .timeout(secs(timeout_sec))
    }

    pub(super) fn prompt_paths(&self) -> prompt::PromptPaths {
        prompt_paths(
            &self.cfg,
            &self.run.workspace_root,
            &self.run.spec_path,
            Some(&self.run.plan_path),
            self.worktree.path(),
            Some(&self.rec.folder.runner_notes()),
        )
    }

    pub(super) fn implementation_prompt(&self) -> Result<String, Stop> {
        if let Some((text, _)) = &self.prompt_override {
            return Ok(text.clone());
        }
        implementation_prompt_text(&self.cfg, &self.prompt_paths(), self.worktree.path())
            .map_err(Stop::from)
    }

    // ----- the loop ------------------------------------------------------------------------
}

pub(super) fn rebase(path: &Path, workspace: &Path, worktree: &Path) -> PathBuf {
    match path.strip_prefix(workspace) {
        Ok(rel) if !worktree.as_os_str().is_empty() => worktree.join(rel),
        _ => path.to_path_buf(),
    }
}

pub(super) fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

pub(super) fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The iteration a run (re)starts with: a new one after any iteration that already has steps,
/// so a resumed or recovered run never reuses a step label or overwrites a step's log, and
/// `iterations_run` counts every iteration begun (SPEC §6 budget).
pub(super) fn first_iteration(iterations_run: u32, steps: &[Step]) -> u32 {
    let last_with_steps = steps
        .iter()
        .filter(|s| s.phase != StepPhase::Naming)
        .map(|s| s.iteration)
        .max();
    match last_with_steps {
        Some(last) if last >= iterations_run => last.saturating_add(1),
        _ => iterations_run.max(1),
    }
}

/// `now + after`, or `None` when that is past what an `Instant` can hold: "no deadline".
pub(super) fn deadline(now: tokio::time::Instant, after: Duration) -> Option<tokio::time::Instant> {
    now.checked_add(after)
}
