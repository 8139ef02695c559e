//! Carries out one postmortem: the `POSTMORTEM_START` row, the git snapshot, the three
//! prompts and (unless `prompt_only`) their answers through the run's executor with
//! read-only tools, the artifacts and the `POSTMORTEM_END` row. Best effort throughout: every
//! failure ends up in `POSTMORTEM_END` (`status=failed reason=...`), none is raised, and
//! nothing here touches the run's status, branch or merge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::prompts::{self, Facts};
use crate::backend::{ExecContext, ExecPurpose, ExecRequest, Executor};
use crate::config::Config;
use crate::domain::{ArtifactKind, ReportKind, Run, RunId, RunStatus, StepId};
use crate::engine::inner::Inner;
use crate::engine::report::{Recorder, Row};
use crate::error::chain;
use crate::outcome::Verdict;

/// How long each postmortem agent call may take when `claude_timeout_sec` is 0 (no limit for
/// the run's own steps): a postmortem is never unbounded.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Writes one analysis's prompt from the run's facts.
type PromptFn = fn(&Facts) -> String;

/// How long past its timeout a postmortem call is waited for before it is dropped.
const OVERRUN: Duration = Duration::from_secs(30);

/// The analyses, in the order they run: `(name, prompt builder)`. The summary reads the
/// answers of the first two.
const ANALYSES: [(&str, PromptFn); 3] = [
    ("spec-compliance", prompts::spec_compliance),
    ("run-quality", prompts::run_quality),
    ("summary", prompts::summary),
];

/// How a postmortem is run (`loopctl analyze` flags, the body of `POST /runs/{id}/postmortem`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostmortemOptions {
    /// The model the analyses ask for (default: the run's `model`).
    pub model: Option<String>,
    /// Write the snapshot and the prompts, run no agent.
    pub prompt_only: bool,
}

/// How a postmortem ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostmortemStatus {
    /// Every file was written.
    Ok,
    /// Something failed (see [`PostmortemReport::failure`]); what could be written was.
    Failed,
}

/// A file of a run's `analysis/` folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisFile {
    /// The file name (`summary.md`, `git-diff.patch`, ...).
    pub name: String,
    /// Its absolute path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a postmortem did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostmortemReport {
    /// The run analysed.
    pub run_id: RunId,
    /// `<run folder>/analysis/`.
    pub dir: PathBuf,
    /// `ok` or `failed`.
    pub status: PostmortemStatus,
    /// What failed, when something did.
    pub failure: Option<String>,
    /// The files of the folder afterwards.
    pub files: Vec<AnalysisFile>,
    /// What the agent calls cost, as their `result` lines said.
    pub cost_usd: Option<f64>,
    /// Wall time.
    pub duration_ms: u64,
}

/// True when a run that ended with `status` gets an automatic postmortem: `postmortem=true`
/// and the run completed or failed (a canceled run was stopped on purpose: `loopctl
/// analyze` still analyses it on request).
pub(crate) fn applies_after(status: RunStatus, cfg: &Config) -> bool {
    cfg.postmortem && matches!(status, RunStatus::Completed | RunStatus::Failed)
}

/// The automatic postmortem at a run's end, with the driver's recorder; stops with the engine.
/// Skipped when one of the same run is already under way.
pub(crate) async fn after_run(inner: &Arc<Inner>, rec: &Recorder, run: &Run, cfg: &Config) {
    let Some(_running) = Running::claim(inner, run.id) else {
        return;
    };
    let cancel = inner.shutdown.child_token();
    analyse(inner, rec, run, cfg, &PostmortemOptions::default(), cancel).await;
}

/// Marks a run's postmortem as under way for as long as it lives (one at a time per run).
pub(super) struct Running {
    inner: Arc<Inner>,
    run_id: RunId,
}

impl Running {
    /// `None` when a postmortem of `run_id` is already under way.
    pub(super) fn claim(inner: &Arc<Inner>, run_id: RunId) -> Option<Self> {
        inner.postmortems().insert(run_id).then(|| Self {
            inner: inner.clone(),
            run_id,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.postmortems().remove(&self.run_id);
    }
}

/// Runs the postmortem of `run` (terminal) into `rec`'s run folder.
pub(super) async fn analyse(
    inner: &Inner,
    rec: &Recorder,
    run: &Run,
    cfg: &Config,
    opts: &PostmortemOptions,
    cancel: CancellationToken,
) -> PostmortemReport {
    let started = Instant::now();
    let reason = run
        .exit_reason
        .as_ref()
        .map_or_else(|| run.status.to_string(), ToString::to_string);
    let model = opts.model.clone().unwrap_or_else(|| cfg.model.clone());
    let tasks = (run.tasks_done, run.tasks_total);
    let mut start = format!("reason={reason} model={model}");
    if opts.prompt_only {
        start.push_str(" prompt_only=true");
    }
    rec.report(
        None,
        ReportKind::PostmortemStart,
        Row::msg("postmortem", start),
        tasks,
    );
    if let Err(e) = rec.flush(inner).await {
        tracing::warn!(run_id = %run.id, error = %chain(&e), "cannot record POSTMORTEM_START");
    }
    let dir = rec.folder.root().join("analysis");
    let mut work = Work {
        failures: Vec::new(),
        cost: None,
    };
    if let Err(e) = create_private_dir(&dir) {
        work.fail(format!("cannot create {}: {e}", dir.display()));
    } else {
        work.run_all(inner, run, cfg, opts, &model, rec, &dir, cancel)
            .await;
    }
    let files = list_files(&dir);
    let paths: Vec<(ArtifactKind, PathBuf)> = files
        .iter()
        .map(|f| (ArtifactKind::Analysis, f.path.clone()))
        .collect();
    rec.record_with(paths, || {}).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let failure = (!work.failures.is_empty()).then(|| work.failures.join("; "));
    let mut message = match &failure {
        None => format!("status=ok files={}", files.len()),
        Some(why) => format!("status=failed files={} reason={why}", files.len()),
    };
    if let Some(cost) = work.cost {
        message.push_str(&format!(" cost_usd={cost:.4}"));
    }
    rec.report(
        None,
        ReportKind::PostmortemEnd,
        Row {
            iteration: "postmortem".into(),
            duration_ms: Some(duration_ms),
            exit_code: Some(i32::from(failure.is_some())),
            output_path: Some(dir.clone()),
            message,
            ..Row::default()
        },
        tasks,
    );
    if let Err(e) = rec.flush(inner).await {
        tracing::warn!(run_id = %run.id, error = %chain(&e), "cannot record POSTMORTEM_END");
    }
    match &failure {
        None => tracing::info!(run_id = %run.id, dir = %dir.display(), "postmortem written"),
        Some(why) => tracing::warn!(run_id = %run.id, reason = %why, "postmortem failed"),
    }
    PostmortemReport {
        run_id: run.id,
        dir,
        status: if failure.is_some() {
            PostmortemStatus::Failed
        } else {
            PostmortemStatus::Ok
        },
        failure,
        files,
        cost_usd: work.cost,
        duration_ms,
    }
}

/// What went wrong so far, and what the calls cost.
struct Work {
    failures: Vec<String>,
    cost: Option<f64>,
}

impl Work {
    fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the postmortem's inputs, passed once from `analyse`"
    )]
    async fn run_all(
        &mut self,
        inner: &Inner,
        run: &Run,
        cfg: &Config,
        opts: &PostmortemOptions,
        model: &str,
        rec: &Recorder,
        dir: &Path,
        cancel: CancellationToken,
    ) {
        let worktree = run.worktree_path.clone();
        let has_worktree = worktree.is_dir();
        let before = if has_worktree {
            if let Err(e) = inner.vcs.write_snapshot(&worktree, dir).await {
                self.fail(format!("git snapshot: {}", chain(&e)));
            }
            worktree_state(inner, &worktree).await
        } else {
            self.fail(format!(
                "the worktree {} is gone: no git snapshot",
                worktree.display()
            ));
            None
        };
        // The answers of an earlier postmortem would read as this one's.
        for (name, _) in ANALYSES {
            for ext in ["md", "log"] {
                let stale = dir.join(format!("{name}.{ext}"));
                if let Err(e) = std::fs::remove_file(&stale)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    self.fail(format!("cannot remove {}: {e}", stale.display()));
                }
            }
        }
        let facts = facts(run, cfg, rec, dir, has_worktree);
        let prompts: Vec<(&str, String)> = ANALYSES
            .iter()
            .map(|(name, build)| (*name, build(&facts)))
            .collect();
        for (name, prompt) in &prompts {
            let path = dir.join(format!("{name}-prompt.txt"));
            if let Err(e) = crate::artifacts::write_private(&path, prompt.as_bytes()) {
                self.fail(format!("cannot write {}: {e}", path.display()));
            }
        }
        if opts.prompt_only {
            return;
        }
        let executor = match inner.executor_for(cfg) {
            Ok(e) => e,
            Err(e) => {
                self.fail(format!("no executor: {e}"));
                return;
            }
        };
        let workdir = if has_worktree {
            worktree.clone()
        } else {
            rec.folder.root().to_path_buf()
        };
        for (name, prompt) in prompts {
            if cancel.is_cancelled() {
                self.fail(format!("{name}: not run, the engine is shutting down"));
                continue;
            }
            let req = ExecRequest {
                run_id: run.id,
                step_id: StepId::new(),
                purpose: ExecPurpose::Postmortem,
                label: format!("postmortem-{name}"),
                prompt,
                model: model.to_owned(),
                workdir: workdir.clone(),
                log_path: dir.join(format!("{name}.log")),
                timeout: Some(secs(cfg.claude_timeout_sec).unwrap_or(DEFAULT_CALL_TIMEOUT)),
                idle_timeout: secs(cfg.claude_idle_timeout_sec),
                env: agent_env(run, cfg),
                limits: cfg.agent_limits().unwrap_or_default(),
            };
            match ask(&executor, req, cancel.clone()).await {
                Ok((text, cost)) => {
                    if let Some(c) = cost {
                        self.cost = Some(self.cost.unwrap_or(0.0) + c);
                    }
                    let path = dir.join(format!("{name}.md"));
                    if let Err(e) = crate::artifacts::write_private(&path, text.as_bytes()) {
                        self.fail(format!("cannot write {}: {e}", path.display()));
                    }
                }
                Err(why) => self.fail(format!("{name}: {why}")),
            }
        }
        // The agent had read-only tools where the executor allows; where it does not (an
        // `agent_cmd`), a change it made anyway is reported, never kept quiet.
        if let Some(before) = before
            && let Some(after) = worktree_state(inner, &worktree).await
            && after != before
        {
            self.fail(format!(
                "the postmortem agent changed the worktree {} (HEAD {} → {}, clean {} → {})",
                worktree.display(),
                before.0.as_deref().unwrap_or("-"),
                after.0.as_deref().unwrap_or("-"),
                before.1,
                after.1
            ));
        }
    }
}

/// HEAD and cleanliness of the worktree, `None` when git cannot tell.
async fn worktree_state(inner: &Inner, worktree: &Path) -> Option<(Option<String>, bool)> {
    let head = inner.vcs.head(worktree).await.ok()?;
    let clean = inner.vcs.is_clean(worktree).await.ok()?;
    Some((head, clean))
}

/// One agent call: its answer text and cost, or why it failed.
async fn ask(
    executor: &Arc<dyn Executor>,
    req: ExecRequest,
    cancel: CancellationToken,
) -> Result<(String, Option<f64>), String> {
    // The executor stops the agent at `timeout` by contract; should one not, the call is
    // dropped (which stops its agent) a little later all the same.
    let bound = req.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT) + OVERRUN;
    let outcome = tokio::time::timeout(bound, executor.execute(req, ExecContext::detached(cancel)))
        .await
        .map_err(|_| format!("no answer within {} s", bound.as_secs()))?
        .map_err(|e| chain(&e))?;
    match executor.judge(&outcome) {
        Verdict::Success => {
            let cost = outcome.result.as_ref().and_then(|r| r.usage.cost_usd);
            let text = match outcome.result {
                Some(r) => r.text,
                None => outcome.output_text,
            };
            Ok((text, cost))
        }
        Verdict::Failure { message, .. } => Err(message),
    }
}

/// The agent's environment: what the run's own agent steps get (`agent_env` on top of the
/// allow-list), minus a commit identity: a postmortem commits nothing.
fn agent_env(run: &Run, cfg: &Config) -> Vec<(String, String)> {
    let mut env = vec![(
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
        "1".to_owned(),
    )];
    if let Some(n) = cfg.claude_max_retries {
        env.push(("CLAUDE_CODE_MAX_RETRIES".into(), n.to_string()));
    }
    env.push(("LOOP_RUN_ID".into(), run.id.to_string()));
    match crate::process::parse_agent_env(cfg.agent_env.as_deref().unwrap_or_default()) {
        Ok(entries) => env.extend(crate::process::agent_env_vars(&entries)),
        Err(e) => tracing::warn!(run_id = %run.id, error = %e, "agent_env ignored"),
    }
    env
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// What the prompts say: the run's facts, the spec and plan as the agent saw them, and the
/// last agent step and accepted completion from report.tsv.
fn facts(run: &Run, cfg: &Config, rec: &Recorder, dir: &Path, has_worktree: bool) -> Facts {
    let (spec, plan) = if has_worktree {
        let paths = crate::engine::create::prompt_paths(
            cfg,
            &run.workspace_root,
            &run.spec_path,
            Some(&run.plan_path),
            &run.worktree_path,
            None,
        );
        let plan = paths.plan.unwrap_or_else(|| paths.spec.clone());
        (paths.spec, plan)
    } else {
        (run.spec_path.clone(), run.plan_path.clone())
    };
    let report = std::fs::read_to_string(rec.folder.report()).unwrap_or_default();
    let mut f = Facts {
        run_id: run.id.to_string(),
        name: run.name.clone(),
        status: run.status.to_string(),
        reason: run
            .exit_reason
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string),
        failure: run.failure.clone(),
        iterations: run.iterations_run,
        tasks_done: run.tasks_done,
        tasks_total: run.tasks_total,
        model: cfg.model.clone(),
        run_branch: run.run_branch.clone(),
        base_branch: run.base_branch.clone(),
        worktree: run.worktree_path.clone(),
        spec,
        plan,
        run_folder: rec.folder.root().to_path_buf(),
        analysis: dir.to_path_buf(),
        ..Facts::default()
    };
    // report.tsv columns: timestamp_ms, kind, iteration, duration_ms, exit_code,
    // output_bytes, output_lines, output_path, message.
    for line in report.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(kind), Some(iteration)) = (cols.get(1), cols.get(2)) else {
            continue;
        };
        let path = cols
            .get(7)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(*p));
        match *kind {
            "COMPLETE_DETECTED" => f.completed_iteration = Some((*iteration).to_owned()),
            "ITERATION_TAIL" => f.last_tail = path.or(f.last_tail.take()),
            "ITERATION_END" => f.last_log = path.or(f.last_log.take()),
            _ => {}
        }
    }
    f
}

/// Creates `dir` (and parents) private to its owner.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The regular files of `dir`, by name.
pub(super) fn list_files(dir: &Path) -> Vec<AnalysisFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<AnalysisFile> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| AnalysisFile {
                name: e.file_name().to_string_lossy().into_owned(),
                path: e.path(),
                bytes: meta.len(),
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}
