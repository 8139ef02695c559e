//! A simulated agent: an `Executor` that works the plan the way a real coding agent would
//! (tick the first open task and commit, review an implemented task, answer the completion
//! token when nothing is left) without any model. It powers the demo, the benchmarks and the
//! engine tests, and lets users rehearse a loop configuration offline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::backend::{
    ExecContext, ExecOutcome, ExecPurpose, ExecRequest, Executor, ExecutorError, OutputChunk,
    OutputStream, Termination,
};
use crate::completion::COMPLETION_TOKEN;
use crate::plan::{self, Marker};
use crate::process::Cmd;

/// Works the plan like an agent would, instantly or with a fixed delay per call.
#[derive(Clone, Debug, Default)]
pub struct SimulatedAgent {
    delay: Duration,
    git_env: Vec<(String, String)>,
}

/// What one simulated call did (also used by scripted test executors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimResult {
    /// The agent's answer.
    pub text: String,
    /// The commit it made, if any.
    pub commit: Option<String>,
}

impl SimulatedAgent {
    /// An agent that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each call takes `delay` (cancellable), like a slow model.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Extra environment for its git commands (e.g. an isolated git config in tests).
    pub fn with_git_env(mut self, env: Vec<(String, String)>) -> Self {
        self.git_env = env;
        self
    }

    /// The plan file named in the prompt: the first `@path` whose file has checklist items.
    pub fn plan_from_prompt(prompt: &str, workdir: &Path) -> Option<PathBuf> {
        prompt
            .split_whitespace()
            .filter_map(|w| w.strip_prefix('@'))
            .map(|p| {
                let p = Path::new(p);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    workdir.join(p)
                }
            })
            .find(|p| {
                std::fs::read_to_string(p)
                    .map(|t| !plan::tasks(&t).is_empty())
                    .unwrap_or(false)
            })
    }

    async fn git(&self, workdir: &Path, args: &[&str]) -> Result<String, String> {
        let mut cmd = Cmd::new("git", workdir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "loop-sim")
            .env("GIT_AUTHOR_EMAIL", "loop-sim@localhost")
            .env("GIT_COMMITTER_NAME", "loop-sim")
            .env("GIT_COMMITTER_EMAIL", "loop-sim@localhost");
        for (k, v) in &self.git_env {
            cmd = cmd.env(k, v);
        }
        let out = cmd.output().await.map_err(|e| e.to_string())?;
        if out.success() {
            Ok(out.stdout_text())
        } else {
            Err(format!("git {}: {}", args.join(" "), out.stderr_text()))
        }
    }

    async fn commit(&self, workdir: &Path, message: &str) -> Result<Option<String>, String> {
        self.git(workdir, &["add", "-A"]).await?;
        let staged = self
            .git(workdir, &["diff", "--cached", "--name-only"])
            .await?;
        if staged.is_empty() {
            return Ok(None);
        }
        self.git(workdir, &["commit", "-q", "--no-verify", "-m", message])
            .await?;
        self.git(workdir, &["rev-parse", "HEAD"]).await.map(Some)
    }

    /// Implements the first open task: marks it `[x]`, writes a file for it, commits.
    pub async fn implement(&self, workdir: &Path, plan_path: &Path) -> Result<SimResult, String> {
        let text = std::fs::read_to_string(plan_path)
            .map_err(|e| format!("cannot read plan {}: {e}", plan_path.display()))?;
        let Some(task) = plan::tasks(&text)
            .into_iter()
            .find(|t| t.marker == Marker::Open)
        else {
            let counts = plan::counts(&text);
            return Ok(SimResult {
                text: if counts.pending == 0 {
                    COMPLETION_TOKEN.to_owned()
                } else {
                    format!("Nothing I can do. {} tasks remain.", counts.pending)
                },
                commit: None,
            });
        };
        let updated = plan::set_marker(&text, task.line, Marker::Implemented)
            .ok_or_else(|| "cannot tick the task".to_owned())?;
        std::fs::write(plan_path, updated.as_bytes())
            .map_err(|e| format!("cannot write plan: {e}"))?;
        let work = workdir.join("sim-work");
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        std::fs::write(
            work.join(format!("task-{:03}.txt", task.line + 1)),
            format!("{}\n", task.text),
        )
        .map_err(|e| e.to_string())?;
        let commit = self
            .commit(workdir, &format!("Implement: {}", task.text))
            .await?;
        let remaining = plan::counts(&updated).pending;
        Ok(SimResult {
            text: if remaining == 0 {
                COMPLETION_TOKEN.to_owned()
            } else {
                format!("Completed {}. {remaining} tasks remain.", task.text)
            },
            commit,
        })
    }

    /// Reviews the first implemented task: accepts it (`[x]` → `[R]`) and commits.
    pub async fn review(&self, workdir: &Path, plan_path: &Path) -> Result<SimResult, String> {
        let text = std::fs::read_to_string(plan_path)
            .map_err(|e| format!("cannot read plan {}: {e}", plan_path.display()))?;
        let Some(task) = plan::first_to_review(&text) else {
            let counts = plan::counts(&text);
            return Ok(SimResult {
                text: if counts.pending == 0 {
                    COMPLETION_TOKEN.to_owned()
                } else {
                    "Review complete. Returning to implementation.".to_owned()
                },
                commit: None,
            });
        };
        let updated = plan::set_marker(&text, task.line, Marker::Reviewed)
            .ok_or_else(|| "cannot mark the task reviewed".to_owned())?;
        std::fs::write(plan_path, updated.as_bytes())
            .map_err(|e| format!("cannot write plan: {e}"))?;
        let commit = self
            .commit(workdir, &format!("Review: {}", task.text))
            .await?;
        let counts = plan::counts(&updated);
        let text = if counts.to_review > 0 {
            format!(
                "Reviewed {}. {} awaiting review.",
                task.text, counts.to_review
            )
        } else if counts.pending > 0 {
            "Review complete. Returning to implementation.".to_owned()
        } else {
            COMPLETION_TOKEN.to_owned()
        };
        Ok(SimResult { text, commit })
    }

    /// A postmortem report without a model: the prompt's first line as the title, then every
    /// absolute path the prompt names with its size (or `missing`). It reads, never writes.
    pub fn postmortem(prompt: &str) -> String {
        let title = prompt.lines().next().unwrap_or_default().trim();
        let mut out = format!("# Simulated postmortem\n\n{title}\n\n## Files read\n\n");
        let mut seen = std::collections::BTreeSet::new();
        for word in prompt.split_whitespace() {
            let word = word.trim_end_matches([',', '.', ')', ';']);
            if !word.starts_with('/') || !seen.insert(word) {
                continue;
            }
            match std::fs::metadata(word) {
                Ok(m) => out.push_str(&format!("- `{word}`: {} bytes\n", m.len())),
                Err(_) => out.push_str(&format!("- `{word}`: missing\n")),
            }
        }
        out.push_str("\nNo model was asked: this is the simulated agent's report.\n");
        out
    }

    /// Does what a real agent would do for `req`.
    pub async fn act(&self, req: &ExecRequest) -> Result<SimResult, String> {
        match req.purpose {
            ExecPurpose::Naming => Ok(SimResult {
                text: "Simulated Tidy Loop".to_owned(),
                commit: None,
            }),
            ExecPurpose::Postmortem => Ok(SimResult {
                text: Self::postmortem(&req.prompt),
                commit: None,
            }),
            purpose => {
                let plan_path =
                    Self::plan_from_prompt(&req.prompt, &req.workdir).ok_or_else(|| {
                        "no plan with checklist items is named in the prompt".to_owned()
                    })?;
                if purpose == ExecPurpose::Review {
                    self.review(&req.workdir, &plan_path).await
                } else {
                    self.implement(&req.workdir, &plan_path).await
                }
            }
        }
    }
}

/// Writes `text` to the step's log and live channel, and returns a finished outcome.
pub(crate) async fn finish_outcome(
    req: &ExecRequest,
    ctx: &ExecContext,
    text: &str,
    exit_code: i32,
    started: Instant,
) -> Result<ExecOutcome, ExecutorError> {
    let line = format!("{text}\n");
    let mut f = tokio::fs::File::create(&req.log_path)
        .await
        .map_err(|e| ExecutorError::Fatal {
            detail: format!("cannot write {}", req.log_path.display()),
            source: Some(Box::new(e)),
        })?;
    f.write_all(line.as_bytes())
        .await
        .map_err(|e| ExecutorError::Fatal {
            detail: format!("cannot write {}", req.log_path.display()),
            source: Some(Box::new(e)),
        })?;
    let _ = ctx.output.send(OutputChunk {
        step_id: req.step_id,
        offset: 0,
        stream: OutputStream::Stdout,
        data: Bytes::from(line.clone()),
    });
    Ok(ExecOutcome {
        exit_code,
        termination: Some(Termination::Exited),
        result: None,
        output_text: text.to_owned(),
        stderr_tail: if exit_code == 0 {
            String::new()
        } else {
            text.to_owned()
        },
        output_bytes: line.len() as u64,
        output_lines: 1,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        resources: None,
    })
}

/// Waits `delay`, or returns false when the call is canceled first.
pub(crate) async fn wait_or_cancel(delay: Duration, ctx: &ExecContext) -> bool {
    if delay.is_zero() {
        return !ctx.cancel.is_cancelled();
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = ctx.cancel.cancelled() => false,
    }
}

pub(crate) fn canceled_outcome(started: Instant) -> ExecOutcome {
    ExecOutcome {
        exit_code: 130,
        termination: Some(Termination::Canceled),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..ExecOutcome::default()
    }
}

#[async_trait]
impl Executor for SimulatedAgent {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let started = Instant::now();
        if !wait_or_cancel(self.delay, &ctx).await {
            return Ok(canceled_outcome(started));
        }
        match self.act(&req).await {
            Ok(r) => finish_outcome(&req, &ctx, &r.text, 0, started).await,
            Err(e) => {
                finish_outcome(
                    &req,
                    &ctx,
                    &format!("simulated agent failed: {e}"),
                    1,
                    started,
                )
                .await
            }
        }
    }
}
