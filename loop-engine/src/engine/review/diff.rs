//! The diff of a run as a person reviews it (SPEC §12): which two commits are compared is
//! decided here, the comparing is the [`Vcs`](crate::backend::Vcs)'s.

use serde::{Deserialize, Serialize};

use crate::backend::{Diff, DiffLimits, DiffRequest, VcsError};
use crate::domain::{ReviewStatus, RunId};
use crate::engine::core::Engine;
use crate::error::EngineError;

/// A run's diff: the names of what was compared and the comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDiff {
    /// The run.
    pub run_id: RunId,
    /// What the base is: the run's base branch (the diff starts at its merge base with the
    /// head), or, for a merged run, `<target>~` (the target before the merge).
    pub base_ref: String,
    /// What the head is: the merge target when the run was merged into one (at the merge
    /// commit), else the run branch.
    pub head_ref: String,
    /// The comparison.
    #[serde(flatten)]
    pub diff: Diff,
}

impl Engine {
    /// The diff of a run within `limits`. A merged run shows what its merge brought into the
    /// target (the merge commit against its first parent); any other run shows its branch
    /// against the merge base with its base branch. A run whose branch is gone (scrapped) and
    /// was never merged has no diff (`NotFound`).
    pub async fn diff(&self, id: RunId, limits: DiffLimits) -> Result<RunDiff, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        let repo = run.workspace_root.clone();
        let merged = match (&run.review_status, &run.merge_commit) {
            (ReviewStatus::Merged, Some(commit)) => {
                self.inner.vcs.resolve_commit(&repo, commit).await?
            }
            _ => None,
        };
        let (req, base_ref, head_ref) = match merged {
            Some(commit) => {
                let target = run
                    .merge_target_branch
                    .clone()
                    .unwrap_or_else(|| run.base_branch.clone());
                (
                    DiffRequest {
                        repo,
                        base: format!("{commit}^1"),
                        head: commit,
                        merge_base: false,
                        limits,
                    },
                    format!("{target}~"),
                    target,
                )
            }
            None => (
                DiffRequest {
                    repo,
                    base: run.base_branch.clone(),
                    head: format!("refs/heads/{}", run.run_branch),
                    merge_base: true,
                    limits,
                },
                run.base_branch.clone(),
                run.run_branch.clone(),
            ),
        };
        let diff = self.inner.vcs.diff(&req).await.map_err(|e| match e {
            VcsError::NotFound { what } => EngineError::NotFound {
                what: format!("run {id}: {what} (no diff to show)"),
            },
            other => other.into(),
        })?;
        Ok(RunDiff {
            run_id: id,
            base_ref,
            head_ref,
            diff,
        })
    }

    /// What one commit of a run's diff changed: `sha` against its first parent, within
    /// `limits` (the commits are listed by [`Engine::diff`]). A `sha` that is not a full
    /// commit id is refused (`InvalidInput`); one that names no commit is `NotFound`.
    pub async fn commit_diff(
        &self,
        id: RunId,
        sha: &str,
        limits: DiffLimits,
    ) -> Result<Diff, EngineError> {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::InvalidInput {
                field: "commit".into(),
                detail: format!("`{sha}` is not a full commit id of run {id}"),
            });
        }
        let run = self.inner.store.get_run(id).await?;
        let req = DiffRequest {
            repo: run.workspace_root.clone(),
            base: format!("{sha}^1"),
            head: sha.to_owned(),
            merge_base: false,
            limits,
        };
        self.inner.vcs.diff(&req).await.map_err(|e| match e {
            VcsError::NotFound { what } => EngineError::NotFound {
                what: format!("run {id}: commit {sha}: {what}"),
            },
            other => other.into(),
        })
    }
}
