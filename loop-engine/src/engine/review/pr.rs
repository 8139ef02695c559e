//! Opening a pull request for a finished run (SPEC §12), with a default body that says what
//! the run did: tasks, iterations, cost and verification.

use std::path::PathBuf;

use crate::backend::{PullRequest, VcsError};
use crate::domain::payloads::ReviewActionKind;
use crate::domain::{ReviewStatus, Run, RunId, Step, StepPhase, StepStatus};
use crate::engine::core::Engine;
use crate::engine::review::actions::{ReviewOutcome, action_payload, allow, record};
use crate::engine::review::rules::Action;
use crate::error::EngineError;

/// What a pull request action asks for; everything has a default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrOptions {
    /// Its title (default: `loop: <run name> (<done> of <total> tasks)`).
    pub title: Option<String>,
    /// Its body (default: a summary of the run).
    pub body: Option<String>,
    /// Open it as a draft.
    pub draft: bool,
    /// The branch it merges into (default: the run's base branch).
    pub base: Option<String>,
}

/// The default title of a run's pull request.
pub(crate) fn default_title(run: &Run) -> String {
    format!(
        "loop: {} ({} of {} tasks)",
        run.name, run.tasks_done, run.tasks_total
    )
}

/// The default body: what the run did, from the run and its steps.
pub(crate) fn default_body(run: &Run, steps: &[Step]) -> String {
    let costs: Vec<f64> = steps
        .iter()
        .filter_map(|s| s.usage.as_ref()?.cost_usd)
        .collect();
    let cost = if costs.is_empty() {
        "not reported by the agent".to_owned()
    } else {
        format!("${:.2}", costs.iter().sum::<f64>())
    };
    let verifications: Vec<&Step> = steps
        .iter()
        .filter(|s| {
            s.phase == StepPhase::Verification && s.reason.as_deref() != Some("interrupted")
        })
        .collect();
    let passed = verifications
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .count();
    let failed = verifications
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .count();
    let verification = match verifications.last() {
        None => "none ran (no `verify_cmds`)".to_owned(),
        Some(last) => format!(
            "{passed} passed, {failed} failed; the last one {}",
            if last.status == StepStatus::Succeeded {
                "passed"
            } else {
                "failed"
            }
        ),
    };
    let outcome = match &run.exit_reason {
        Some(reason) => format!("{} ({reason})", run.status),
        None => run.status.to_string(),
    };
    let agent_steps = steps
        .iter()
        .filter(|s| matches!(s.phase, StepPhase::Implementation | StepPhase::Review))
        .count();
    format!(
        "Work of the agent-loop run `{name}` (`{id}`).\n\n\
         | | |\n| --- | --- |\n\
         | Spec | `{spec}` |\n\
         | Tasks | {done} of {total} done |\n\
         | Iterations | {iterations} ({agent_steps} agent steps) |\n\
         | Cost | {cost} |\n\
         | Verification | {verification} |\n\
         | Outcome | {outcome} |\n\
         | Branch | `{branch}` from `{base}` |\n",
        name = run.name,
        id = run.id,
        spec = run.spec_path.display(),
        done = run.tasks_done,
        total = run.tasks_total,
        iterations = run.iterations_run,
        branch = run.run_branch,
        base = run.base_branch,
    )
}

impl Engine {
    /// Opens a pull request of the run branch (`POST /runs/{id}/create-pr`) with the code
    /// host's CLI through the [`Vcs`](crate::backend::Vcs) (`gh pr create`); without it,
    /// [`EngineError::ToolMissing`] naming `gh`. At most once per run.
    pub async fn create_pr(
        &self,
        id: RunId,
        options: PrOptions,
    ) -> Result<ReviewOutcome, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        allow(Action::CreatePr, &run)?;
        let lock = self.inner.prep_lock(&run.workspace_root).await;
        let _guard = lock.lock().await;
        let mut run = self.inner.store.get_run(id).await?;
        allow(Action::CreatePr, &run)?;
        let repo = run.workspace_root.clone();
        let branch_ref = format!("refs/heads/{}", run.run_branch);
        if self
            .inner
            .vcs
            .resolve_commit(&repo, &branch_ref)
            .await?
            .is_none()
        {
            return Err(EngineError::NotFound {
                what: format!("run {id}: run branch `{}`", run.run_branch),
            });
        }
        let body = match options.body {
            Some(body) => body,
            None => default_body(&run, &self.inner.store.list_steps(id).await?),
        };
        let base = options.base.unwrap_or_else(|| run.base_branch.clone());
        let dir: PathBuf = if run.worktree_path.is_dir() {
            run.worktree_path.clone()
        } else {
            repo
        };
        let req = PullRequest {
            dir,
            head: run.run_branch.clone(),
            base: base.clone(),
            title: options.title.unwrap_or_else(|| default_title(&run)),
            body,
            draft: options.draft,
        };
        let url = self
            .inner
            .vcs
            .create_pull_request(&req)
            .await
            .map_err(|e| match e {
                VcsError::ToolMissing { tool, detail } => EngineError::ToolMissing { tool, detail },
                other => other.into(),
            })?;
        run.pr_url = Some(url.clone());
        let details = vec![format!(
            "pull request of {} into {base}{}: {url}",
            run.run_branch,
            if options.draft { " (draft)" } else { "" }
        )];
        let mut payload = action_payload(&run, ReviewActionKind::CreatePr);
        payload.target = Some(base);
        payload.pr_url = Some(url);
        payload.details = details.clone();
        record(&self.inner, &mut run, ReviewStatus::PrCreated, payload).await?;
        Ok(ReviewOutcome {
            run: self.inner.store.get_run(id).await?,
            details,
        })
    }
}
