//! Preparing a run: its folder, the naming model, the branch and worktree, the seed commit
//! and the prompt snapshot.

use std::time::{Duration, Instant};

/// The naming call's timeout when neither `claude_timeout_sec` nor `claude_idle_timeout_sec`
/// is set.
const NAMING_TIMEOUT_WITHOUT_CONFIG: Duration = Duration::from_secs(120);

use crate::artifacts;
use crate::backend::{ExecPurpose, ExecRequest};
use crate::config::{MAX_DOC_FILE_BYTES, read_user_file};
use crate::domain::{
    ArtifactKind, EventPayload, NameSource, ReportKind, StepPhase, StepStatus, payloads,
};
use crate::engine::create::assign_branch;
use crate::engine::driver::state::{RunDriver, ms, rebase, secs};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::driver::worktree::Worktree;
use crate::engine::report::Row;
use crate::outcome::Verdict;
use crate::{naming, prompt};

impl RunDriver {
    pub(super) async fn prepare(&mut self) -> Result<(), Stop> {
        if let Err(e) = self.rec.create_dirs() {
            return Err(Stop::failed(format!(
                "cannot create the run folder {}: {e}",
                self.rec.folder.root().display()
            )));
        }
        let fresh = self.step_seq == 0;
        if fresh {
            self.rec
                .log(format!("run {} ({})", self.run.name, self.run.id));
            self.report(
                None,
                ReportKind::RunStart,
                Row::msg("", self.run_start_message()),
            )
            .await?;
        }
        if self.run.run_branch.is_empty() {
            if self.run.name_source == NameSource::Haiku {
                self.name_with_model().await?;
            }
            assign_branch(&self.inner, &mut self.run, &self.cfg).await?;
            self.worktree = Worktree::new(self.run.worktree_path.clone());
            self.plan_in_worktree = rebase(
                &self.run.plan_path,
                &self.run.workspace_root,
                self.worktree.path(),
            );
        }
        // RUN_START (and the naming step) reach followers before git works on the worktree.
        self.flush().await?;
        let wt = {
            let lock = self.inner.prep_lock(&self.run.workspace_root).await;
            let _guard = lock.lock().await;
            let worktree = self.worktree.lend();
            self.inner
                .vcs
                .prepare_worktree(
                    &self.run.workspace_root,
                    worktree.path(),
                    &self.run.run_branch,
                    &self.run.base_branch,
                )
                .await
                .map_err(|e| {
                    Stop::failed(format!(
                        "cannot prepare worktree {} on branch {}: {}",
                        worktree.path().display(),
                        self.run.run_branch,
                        chain(&e)
                    ))
                })?
        };
        self.event(
            None,
            EventPayload::WorktreeReady(payloads::WorktreeReady {
                path: self.worktree.path().to_path_buf(),
                branch: self.run.run_branch.clone(),
                base_branch: self.run.base_branch.clone(),
                created_branch: wt.created_branch,
                created_worktree: wt.created_worktree,
            }),
        )
        .await?;
        if !wt.cleaned.is_empty() {
            self.event(
                None,
                EventPayload::RecoveryCleanup(payloads::RecoveryCleanup::Worktree {
                    cleaned: wt.cleaned.clone(),
                }),
            )
            .await?;
        }
        // Without a git identity the agent's commits would fail; it gets the engine's.
        match self.inner.vcs.identity_env(self.worktree.path()).await {
            Ok(env) => {
                if let Some((_, name)) = env.iter().find(|(k, _)| k.ends_with("_EMAIL")) {
                    self.rec.log(format!(
                        "git has no identity configured (user.name/user.email); the agent \
                         commits as {name}"
                    ));
                }
                self.identity_env = env;
            }
            Err(e) => {
                tracing::warn!(run_id = %self.run.id, error = %chain(&e), "cannot check the git identity");
            }
        }
        self.seed(wt.created_worktree).await?;
        self.setup(wt.created_worktree).await?;
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
            ReportKind::PromptSnapshot,
            Row {
                output_path: Some(path),
                ..Row::msg("", "prompt")
            },
        )
        .await
    }

    /// The RUN_START message in the seed's words (SPEC §7), split on spaces by its readers:
    /// `spec=<path> plan=<path> iterations=<n> model=<model> mode=<completion mode>`.
    pub(super) fn run_start_message(&self) -> String {
        format!(
            "spec={} plan={} iterations={} model={} mode={}",
            self.run.spec_path.display(),
            self.run.plan_path.display(),
            self.cfg.iterations,
            self.cfg.model,
            self.cfg.completion_mode
        )
    }

    /// Copies a spec or plan that is missing or different at the base branch into the
    /// worktree and commits it, so the agent only ever works inside its worktree. The plan is
    /// the run's snapshot (`plan.snapshot.md`, taken at creation), so a run queued behind
    /// another run of the same spec does not start from that run's ticks.
    pub(super) async fn seed(&mut self, created_worktree: bool) -> Result<(), Stop> {
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
            let target = self.worktree.path().join(&rel);
            let in_worktree = std::fs::read(&target).ok();
            if !created_worktree && in_worktree.is_some() {
                continue;
            }
            // The plan comes from the snapshot taken when the run was created (runs created
            // before snapshots existed fall back to the workspace's plan).
            let snapshot = self.rec.folder.plan_snapshot();
            let source = if what == "plan" && snapshot.is_file() {
                snapshot
            } else {
                path.clone()
            };
            let key = if what == "plan" {
                "plan_path"
            } else {
                "spec_path"
            };
            let primary = read_user_file(key, &source, MAX_DOC_FILE_BYTES)
                .map_err(|e| Stop::failed(format!("cannot read the {what}: {}", chain(&e))))?
                .ok_or_else(|| {
                    Stop::failed(format!(
                        "cannot read the {what} {}: it is gone",
                        source.display()
                    ))
                })?
                .into_bytes();
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
                if let Ok(rel) = learnings.strip_prefix(self.worktree.path()) {
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
        let worktree = self.worktree.lend();
        let commit = self
            .inner
            .vcs
            .commit_paths(
                worktree.path(),
                &to_commit,
                &format!("loop: seed spec and plan for run {}", self.run.name),
            )
            .await?;
        self.event(
            None,
            EventPayload::SeedCommitted(payloads::SeedCommitted {
                paths: to_commit,
                commit,
            }),
        )
        .await
    }

    /// Asks the naming model for a name; falls back to the spec slug on any failure, and
    /// records why (the step's reason, `RUN_NAMED`'s `fallback_reason`).
    ///
    /// The call is an agent step like the others (issue 13): it obeys `claude_timeout_sec`
    /// and `claude_idle_timeout_sec` (with neither set it is cut after
    /// [`NAMING_TIMEOUT_WITHOUT_CONFIG`]: a name is not worth a longer wait), its output is
    /// live for `tail`, its log `naming.log` is a recorded (and mirrored) artifact, and its
    /// cost counts against the run's budgets. The executor runs it without tools
    /// ([`ExecPurpose::Naming`]), and only a short label of plain words is taken as a name.
    pub(super) async fn name_with_model(&mut self) -> Result<(), Stop> {
        let spec_text = std::fs::read_to_string(&self.run.spec_path).unwrap_or_default();
        let excerpt: String = spec_text.chars().take(4000).collect();
        let mut step = self.new_step(0, "naming", StepPhase::Naming, 1);
        let log = self.rec.folder.root().join("naming.log");
        step.output_path = Some(log.clone());
        self.start_step(&step).await?;
        let started = Instant::now();
        let (timeout, idle_timeout) = match (
            secs(self.cfg.claude_timeout_sec),
            secs(self.cfg.claude_idle_timeout_sec),
        ) {
            (None, None) => (Some(NAMING_TIMEOUT_WITHOUT_CONFIG), None),
            set => set,
        };
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
                    log_path: log.clone(),
                    timeout,
                    idle_timeout,
                    env: self.agent_env(),
                    limits: self.cfg.agent_limits().unwrap_or_default(),
                };
                let (outcome, store_error) = self.run_agent(&executor, req, &mut step).await;
                self.inner.hub.set_current_output(self.run.id, None);
                if let Some(e) = store_error {
                    return Err(e.into());
                }
                match outcome {
                    Ok(outcome) => {
                        step.exit_code = Some(outcome.exit_code);
                        step.usage = outcome.result.as_ref().map(|r| r.usage.clone());
                        if let Some(u) = step.usage.clone() {
                            self.add_usage(&u);
                        }
                        match executor.judge(&outcome) {
                            Verdict::Success => naming::validate_label(&outcome.output_text),
                            Verdict::Failure { message, .. } => Err(message),
                        }
                    }
                    Err(e) => Err(chain(&e)),
                }
            }
            Err(e) => Err(e),
        };
        if log.exists() {
            self.rec.record(ArtifactKind::NamingLog, &log).await;
        }
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
                payloads::RunNamed {
                    name: self.run.name.clone(),
                    name_source: NameSource::Haiku,
                    fallback_reason: None,
                }
            }
            Err(reason) => {
                step.reason = Some(reason.clone());
                self.run.name_source = NameSource::SpecSlug;
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                payloads::RunNamed {
                    name: self.run.name.clone(),
                    name_source: NameSource::SpecSlug,
                    fallback_reason: Some(reason),
                }
            }
        };
        self.save_run().await?;
        self.event(Some(step.id), EventPayload::RunNamed(payload))
            .await
    }
}
